#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Producing with librdkafka: every compression codec at every acks level, and keyed records
//! in the partition Kafka's default (Java) partitioner picks.
//!
//! The bugs these guard against: a codec whose batches the broker refuses or mangles (the broker
//! stores batches as raw bytes, so a wrong CRC region or a re-encoded batch shows up here), an
//! acks=0 request that gets an unexpected response and desynchronises the connection, an acks=1
//! or acks=all answer with the wrong base offset, and metadata that makes the client's
//! partitioner disagree with Java clients about where a key lives.

mod common_broker;

use common_broker::*;
use rdkafka::message::Message;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const ACKS: [&str; 3] = ["0", "1", "all"];

fn keyed(i: usize) -> Outgoing {
    Outgoing {
        partition: Some(0),
        key: Some(format!("key-{i}").into_bytes()),
        // Compressible and not all the same size.
        value: Some(format!("value-{i}-{}", "abc".repeat(i % 40)).into_bytes()),
        ..Outgoing::default()
    }
}

#[test]
fn every_compression_codec_at_every_acks_level_round_trips() {
    let broker = TestBroker::start();
    let count = 60;
    let records: Vec<Outgoing> = (0..count).map(keyed).collect();
    for codec in CODECS {
        for acks in ACKS {
            let topic = topic_name(&format!("codec-{codec}-acks-{acks}"));
            broker.create_topic(&topic, 1, &[]);
            let producer = producer(
                &broker.bootstrap(),
                &[("compression.type", codec), ("acks", acks)],
            );
            let reports = send_ok(&producer, &topic, &records);
            if acks != "0" {
                // With acks, the broker's answer gives each record its offset: 0, 1, 2, ...
                let offsets: Vec<i64> = reports.iter().map(|&(_, offset)| offset).collect();
                assert_eq!(
                    offsets,
                    (0..count as i64).collect::<Vec<_>>(),
                    "{codec} acks={acks}"
                );
            }
            let read = read(&broker.bootstrap(), &topic, 0, 0, count);
            for (i, message) in read.iter().enumerate() {
                assert_eq!(message.offset(), i as i64, "{codec} acks={acks}");
                assert_eq!(
                    message.key(),
                    records[i].key.as_deref(),
                    "{codec} acks={acks} offset {i}"
                );
                assert_eq!(
                    message.payload(),
                    records[i].value.as_deref(),
                    "{codec} acks={acks} offset {i}"
                );
            }
            assert_eq!(
                watermarks(&broker.bootstrap(), &topic, 0),
                (0, count as i64),
                "{codec} acks={acks}"
            );
        }
    }
}

/// Kafka's `Utils.murmur2`, the hash of Java's default partitioner.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("four bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `BuiltInPartitioner.partitionForKey`: `toPositive(murmur2(key)) % numPartitions`.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[test]
fn keyed_records_land_in_the_partition_the_java_default_partitioner_picks() {
    // The model first: Kafka's own test vectors (clients' UtilsTest.testMurmur2).
    assert_eq!(murmur2(b"21"), -973_932_308);
    assert_eq!(murmur2(b"foobar"), -790_332_482);
    assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
    assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58_897_971
    );
    assert_eq!(murmur2(b"abc"), 479_470_107);

    let broker = TestBroker::start();
    let partitions = 7;
    let topic = topic_name("keyed");
    broker.create_topic(&topic, partitions, &[]);
    // librdkafka's murmur2_random is Java's partitioner (random only for null keys).
    let producer = producer(
        &broker.bootstrap(),
        &[("partitioner", "murmur2_random"), ("acks", "all")],
    );
    let records: Vec<Outgoing> = (0..200)
        .map(|i| Outgoing {
            partition: None,
            key: Some(format!("customer-{}", i % 50).into_bytes()),
            value: Some(format!("order-{i}").into_bytes()),
            ..Outgoing::default()
        })
        .collect();
    let reports = send_ok(&producer, &topic, &records);
    for (record, &(partition, _)) in records.iter().zip(&reports) {
        let key = record.key.as_deref().expect("keyed");
        assert_eq!(
            partition,
            java_partition(key, partitions),
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    // And the broker kept each record where it was sent, in the order it was sent.
    let mut seen = 0;
    for partition in 0..partitions {
        let stored = read_all(&broker.bootstrap(), &topic, partition);
        let expected: Vec<&Outgoing> = records
            .iter()
            .filter(|r| java_partition(r.key.as_deref().expect("keyed"), partitions) == partition)
            .collect();
        assert_eq!(
            stored.len(),
            expected.len(),
            "records in partition {partition}"
        );
        for (message, record) in stored.iter().zip(expected) {
            assert_eq!(message.key(), record.key.as_deref());
            assert_eq!(message.payload(), record.value.as_deref());
        }
        seen += stored.len();
    }
    assert_eq!(seen, records.len());
}
