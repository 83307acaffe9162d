#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Topic configs Kafka accepts and librdkafka's own tests set: `compression.type` (0081 creates
//! a topic with `lz4`) and `message.format.version` (0092 alters it). Both were refused as
//! unknown configs. `compression.type` is honoured as Kafka does: a batch in another codec is
//! re-encoded by the broker before it is stored; `producer` (the default) keeps the producer's.

mod common_broker;

use std::collections::HashMap;

use broker::log::batch::{self, Compression};
use common_broker::*;
use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::message::Message;
use rdkafka::Timestamp;

/// The codec and producer id of every batch stored in partition 0 of `topic`, read from its
/// segment files.
fn stored_batches(broker: &TestBroker, topic: &str) -> Vec<(Compression, i64)> {
    let dir = broker.dir.path().join(format!("{topic}-0"));
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .expect("partition directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(&segment).expect("segment");
        let mut pos = 0;
        while pos < bytes.len() {
            let header = batch::validate(&bytes[pos..]).expect("a stored batch");
            if header.records_count > 0 {
                out.push((header.compression(), header.producer_id));
            }
            pos += header.size();
        }
    }
    out
}

fn records(count: usize) -> Vec<Outgoing> {
    (0..count)
        .map(|i| Outgoing {
            partition: Some(0),
            key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
            value: Some(format!("value-{i}-{}", "xyz".repeat(i % 50)).into_bytes()),
            headers: vec![
                ("h".into(), Some(format!("first-{i}").into_bytes())),
                ("h".into(), None),
            ],
            timestamp: Some(1_700_000_000_000 + i as i64 * 7),
        })
        .collect()
}

#[test]
fn a_gzip_producer_into_an_lz4_topic_is_stored_as_lz4_and_read_back_intact() {
    let broker = TestBroker::start();
    let topic = topic_name("lz4-topic");
    broker.create_topic(&topic, 1, &[("compression.type", "lz4")]);
    let sent = records(200);
    let producer = producer(
        &broker.bootstrap(),
        &[
            ("compression.type", "gzip"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
        ],
    );
    let offsets: Vec<i64> = send_ok(&producer, &topic, &sent)
        .into_iter()
        .map(|(_, offset)| offset)
        .collect();
    assert_eq!(offsets, (0..sent.len() as i64).collect::<Vec<_>>());

    let stored = stored_batches(&broker, &topic);
    assert!(!stored.is_empty());
    for (codec, producer_id) in &stored {
        assert_eq!(*codec, Compression::Lz4, "stored in the topic's codec");
        assert!(*producer_id >= 0, "the idempotent producer's id is kept");
    }

    let read = read(&broker.bootstrap(), &topic, 0, 0, sent.len());
    for (i, (message, record)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(message.offset(), i as i64);
        assert_eq!(message.key(), record.key.as_deref(), "offset {i}");
        assert_eq!(message.payload(), record.value.as_deref(), "offset {i}");
        assert_eq!(headers_of(message), record.headers, "offset {i}");
        assert_eq!(
            message.timestamp(),
            Timestamp::CreateTime(record.timestamp.unwrap()),
            "offset {i}"
        );
    }

    // The idempotent producer's sequence numbers went through the recompression: its next
    // batches are in sequence. (tests/protocol.rs checks a retry of a recompressed batch.)
    let more = records(10);
    let offsets: Vec<i64> = send_ok(&producer, &topic, &more)
        .into_iter()
        .map(|(_, offset)| offset)
        .collect();
    assert_eq!(offsets, (200..210).collect::<Vec<_>>());
}

#[test]
fn the_default_producer_compression_type_keeps_the_producers_codec() {
    let broker = TestBroker::start();
    let topic = topic_name("producer-codec");
    broker.create_topic(&topic, 1, &[]);
    // librdkafka sends a batch uncompressed when compressing does not make it smaller (a lone
    // short record under load); a long linger keeps the 50 records in batches worth compressing.
    let producer = producer(
        &broker.bootstrap(),
        &[("compression.type", "snappy"), ("linger.ms", "500")],
    );
    send_ok(&producer, &topic, &records(50));
    let stored = stored_batches(&broker, &topic);
    assert!(!stored.is_empty());
    assert!(stored
        .iter()
        .all(|&(codec, _)| codec == Compression::Snappy));
}

#[test]
fn compression_type_and_message_format_version_are_set_altered_and_described() {
    let broker = TestBroker::start();
    let admin = broker.admin();
    let options = AdminOptions::new().operation_timeout(Some(WAIT));
    let topic = topic_name("configs");
    broker.create_topic(&topic, 1, &[("compression.type", "lz4")]);
    let describe = || {
        let described = broker
            .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(&topic)], &options))
            .expect("DescribeConfigs");
        let resource = described[0].as_ref().expect("the topic's configs");
        resource
            .entry_map()
            .into_iter()
            .map(|(name, entry)| {
                (
                    name.to_string(),
                    (
                        entry.value.clone().unwrap_or_default(),
                        format!("{:?}", entry.source),
                    ),
                )
            })
            .collect::<HashMap<_, _>>()
    };
    let configs = describe();
    assert_eq!(
        configs["compression.type"],
        ("lz4".to_string(), "DynamicTopic".to_string())
    );
    assert_eq!(
        configs["message.format.version"],
        ("3.0-IV1".to_string(), "Default".to_string())
    );

    // AlterConfigs (what librdkafka's 0092 sends) replaces the overrides.
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic))
        .set("message.format.version", "0.10.0.0")
        .set("compression.type", "zstd");
    let results = broker
        .block_on(admin.alter_configs([&alter], &options))
        .expect("AlterConfigs");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let configs = describe();
    assert_eq!(
        configs["message.format.version"],
        ("0.10.0.0".to_string(), "DynamicTopic".to_string())
    );
    assert_eq!(
        configs["compression.type"],
        ("zstd".to_string(), "DynamicTopic".to_string())
    );

    // The altered codec applies to what is produced next.
    let producer = producer(&broker.bootstrap(), &[("compression.type", "gzip")]);
    send_ok(&producer, &topic, &records(20));
    let stored = stored_batches(&broker, &topic);
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|&(codec, _)| codec == Compression::Zstd));
    assert_eq!(read(&broker.bootstrap(), &topic, 0, 0, 20).len(), 20);

    // A value Kafka refuses is refused, and nothing changes. (The rdkafka crate drops the
    // per-resource error code of AlterConfigs, so only the unchanged configs are visible.)
    let bad = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("compression.type", "brotli");
    broker
        .block_on(admin.alter_configs([&bad], &options))
        .expect("AlterConfigs");
    assert_eq!(describe()["compression.type"].0, "zstd");
}

/// librdkafka must read what the broker writes in each codec: xerial-framed snappy, lz4
/// frames, zstd, gzip, and batches decompressed to `uncompressed`.
#[test]
fn librdkafka_reads_back_every_codec_the_broker_recompresses_into() {
    let broker = TestBroker::start();
    let sent = records(100);
    for (topic_codec, stored_codec, producer_codec) in [
        ("uncompressed", Compression::None, "zstd"),
        ("gzip", Compression::Gzip, "none"),
        ("snappy", Compression::Snappy, "lz4"),
        ("lz4", Compression::Lz4, "snappy"),
        ("zstd", Compression::Zstd, "gzip"),
    ] {
        let topic = topic_name(&format!("into-{topic_codec}"));
        broker.create_topic(&topic, 1, &[("compression.type", topic_codec)]);
        let producer = producer(&broker.bootstrap(), &[("compression.type", producer_codec)]);
        send_ok(&producer, &topic, &sent);
        let stored = stored_batches(&broker, &topic);
        assert!(!stored.is_empty());
        assert!(
            stored.iter().all(|&(codec, _)| codec == stored_codec),
            "{producer_codec} into {topic_codec}: {stored:?}"
        );
        let read = read(&broker.bootstrap(), &topic, 0, 0, sent.len());
        for (i, (message, record)) in read.iter().zip(&sent).enumerate() {
            assert_eq!(message.offset(), i as i64, "{topic_codec}");
            assert_eq!(
                message.key(),
                record.key.as_deref(),
                "{topic_codec} offset {i}"
            );
            assert_eq!(
                message.payload(),
                record.value.as_deref(),
                "{topic_codec} offset {i}"
            );
            assert_eq!(
                headers_of(message),
                record.headers,
                "{topic_codec} offset {i}"
            );
        }
    }
}
