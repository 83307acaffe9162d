#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Reading back through librdkafka: offsets, keys, values, headers and timestamps exactly as
//! produced, LogAppendTime topics, and ListOffsets by time.
//!
//! The bugs these guard against: a broker that re-encodes batches and so merges duplicate header
//! keys or loses null-versus-empty (PROTOCOL-NOTES: the codec crate does both), a CreateTime
//! rewritten by the broker, a LogAppendTime topic that keeps the producer's clock, and a
//! ListOffsets-by-time that returns the wrong record or one past the end.

mod common_broker;

use std::time::{SystemTime, UNIX_EPOCH};

use common_broker::*;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

#[test]
fn records_read_back_with_offsets_keys_values_headers_and_timestamps_intact() {
    let broker = TestBroker::start();
    let topic = topic_name("roundtrip");
    broker.create_topic(&topic, 2, &[]);
    let base_ts = 1_600_000_000_000;
    let header = |k: &str, v: Option<&[u8]>| (k.to_string(), v.map(<[u8]>::to_vec));
    let records = vec![
        Outgoing {
            partition: Some(1),
            key: Some(b"k0".to_vec()),
            value: Some(b"plain".to_vec()),
            timestamp: Some(base_ts),
            ..Outgoing::default()
        },
        Outgoing {
            partition: Some(1),
            key: None,
            value: Some(b"no key".to_vec()),
            timestamp: Some(base_ts + 5),
            ..Outgoing::default()
        },
        Outgoing {
            partition: Some(1),
            key: Some(b"tombstone".to_vec()),
            value: None,
            // Timestamps need not grow; CreateTime is the producer's to choose.
            timestamp: Some(base_ts - 1_000),
            ..Outgoing::default()
        },
        Outgoing {
            partition: Some(1),
            key: Some(Vec::new()),
            value: Some(Vec::new()),
            timestamp: Some(base_ts + 10),
            ..Outgoing::default()
        },
        Outgoing {
            partition: Some(1),
            key: Some(b"headers".to_vec()),
            value: Some(vec![0, 1, 2, 255]),
            headers: vec![
                header("trace", Some(b"a")),
                header("dup", Some(b"first")),
                header("null", None),
                header("dup", Some(b"second")),
                header("empty", Some(b"")),
                header("dup", Some(b"third")),
            ],
            timestamp: Some(base_ts + 20),
        },
    ];
    // Two producer requests, so the second batch's offsets continue the first's.
    let producer = producer(
        &broker.bootstrap(),
        &[("acks", "all"), ("compression.type", "lz4")],
    );
    let mut reports = send_ok(&producer, &topic, &records[..2]);
    reports.extend(send_ok(&producer, &topic, &records[2..]));
    assert_eq!(
        reports,
        (0..records.len() as i64)
            .map(|o| (1, o))
            .collect::<Vec<_>>()
    );

    let read = read_all(&broker.bootstrap(), &topic, 1);
    assert_eq!(read.len(), records.len());
    for (i, (message, sent)) in read.iter().zip(&records).enumerate() {
        assert_eq!(message.offset(), i as i64);
        assert_eq!(message.partition(), 1);
        assert_eq!(message.key(), sent.key.as_deref(), "key at offset {i}");
        assert_eq!(
            message.payload(),
            sent.value.as_deref(),
            "value at offset {i}"
        );
        assert_eq!(
            headers_of(message),
            sent.headers,
            "headers at offset {i}: order and duplicates kept"
        );
        assert_eq!(
            message.timestamp(),
            Timestamp::CreateTime(sent.timestamp.expect("set")),
            "timestamp at offset {i}"
        );
    }
    assert_eq!(
        watermarks(&broker.bootstrap(), &topic, 0),
        (0, 0),
        "nothing leaked into partition 0"
    );
}

#[test]
fn a_log_append_time_topic_returns_the_broker_time_instead_of_the_producer_time() {
    let broker = TestBroker::start();
    let topic = topic_name("log-append-time");
    broker.create_topic(&topic, 1, &[("message.timestamp.type", "LogAppendTime")]);
    let producer = producer(&broker.bootstrap(), &[("acks", "all")]);
    let records: Vec<Outgoing> = (0..10)
        .map(|i| Outgoing {
            partition: Some(0),
            value: Some(format!("v{i}").into_bytes()),
            timestamp: Some(1_000 + i),
            ..Outgoing::default()
        })
        .collect();
    let before = now_ms();
    send_ok(&producer, &topic, &records);
    let after = now_ms();
    for message in read_all(&broker.bootstrap(), &topic, 0) {
        match message.timestamp() {
            // The broker stamps its own clock (this process's clock: the broker runs here).
            Timestamp::LogAppendTime(ts) => {
                assert!(
                    (before..=after).contains(&ts),
                    "LogAppendTime {ts} outside [{before}, {after}]"
                )
            }
            other => panic!(
                "offset {}: expected LogAppendTime, got {other:?}",
                message.offset()
            ),
        }
    }
}

#[test]
fn offsets_for_times_finds_the_first_record_at_or_after_each_timestamp() {
    let broker = TestBroker::start();
    let topic = topic_name("offsets-for-times");
    broker.create_topic(&topic, 1, &[]);
    let base_ts = 1_700_000_000_000;
    // Timestamps 0, 100, ..., 900 past base_ts, in three separate batches.
    let records: Vec<Outgoing> = (0..10)
        .map(|i| Outgoing {
            partition: Some(0),
            value: Some(format!("at-{i}").into_bytes()),
            timestamp: Some(base_ts + 100 * i),
            ..Outgoing::default()
        })
        .collect();
    let producer = producer(&broker.bootstrap(), &[("acks", "all")]);
    for chunk in records.chunks(4) {
        send_ok(&producer, &topic, chunk);
    }
    let consumer = consumer(&broker.bootstrap());
    let lookup = |ts: i64| -> Offset {
        let mut wanted = TopicPartitionList::new();
        wanted
            .add_partition_offset(&topic, 0, Offset::Offset(ts))
            .expect("add");
        let found = consumer
            .offsets_for_times(wanted, WAIT)
            .expect("ListOffsets by timestamp");
        let element = found
            .find_partition(&topic, 0)
            .expect("partition in answer");
        element.error().expect("no per-partition error");
        element.offset()
    };
    assert_eq!(
        lookup(base_ts - 1),
        Offset::Offset(0),
        "before everything: the first record"
    );
    assert_eq!(lookup(base_ts), Offset::Offset(0));
    assert_eq!(
        lookup(base_ts + 1),
        Offset::Offset(1),
        "between records: the next one"
    );
    assert_eq!(
        lookup(base_ts + 400),
        Offset::Offset(4),
        "first record of the second batch"
    );
    assert_eq!(lookup(base_ts + 750), Offset::Offset(8));
    assert_eq!(lookup(base_ts + 900), Offset::Offset(9));
    // Past the last timestamp there is no such record: Kafka answers offset -1, which
    // librdkafka reports as the end.
    assert_eq!(lookup(base_ts + 901), Offset::End);
}
