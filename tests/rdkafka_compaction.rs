#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Compacted topics through librdkafka: a topic created with `cleanup.policy=compact`, a keyless
//! record refused with INVALID_RECORD, and the broker's cleaner compacting the log while a
//! consumer from the log start still reads every key's latest value across the gaps
//! compaction leaves.
//!
//! The bugs these guard against: the policy refused at creation; keyless records accepted
//! into a compacted log; a consumer stuck at (or erroring on) a cleaned-away offset; a
//! cleaned log that lost a key's latest value or changed an offset.

mod common_broker;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common_broker::*;
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Message;

#[test]
fn a_compacted_topic_refuses_keyless_records_and_is_cleaned_while_consumers_read_it() {
    let broker = TestBroker::start_with(|c| {
        c.log_cleaner_backoff_ms = 50;
    });
    let topic = topic_name("compacted");
    broker.create_topic(
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "2048"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    let described = broker
        .block_on(broker.admin().describe_configs(
            &[ResourceSpecifier::Topic(&topic)],
            &AdminOptions::new().request_timeout(Some(WAIT)),
        ))
        .expect("DescribeConfigs");
    let configs = described[0].as_ref().expect("configs");
    assert_eq!(
        configs.entry_map()["cleanup.policy"].value.as_deref(),
        Some("compact")
    );

    let producer = producer(&broker.bootstrap(), &[("linger.ms", "0")]);
    let keyless = send_all(
        &producer,
        &topic,
        &[Outgoing {
            partition: Some(0),
            value: Some(b"no key".to_vec()),
            ..Outgoing::default()
        }],
    );
    assert!(
        matches!(
            keyless[0],
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidRecord
            ))
        ),
        "{keyless:?}"
    );

    // 10 keys, 30 values each, one record per request: many small sealed segments.
    let mut written: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for round in 0..30 {
        for k in 0..10 {
            let (key, value) = (format!("key{k}"), format!("value{round}-{k}"));
            let (_, offset) = send_ok(
                &producer,
                &topic,
                &[Outgoing {
                    partition: Some(0),
                    key: Some(key.clone().into_bytes()),
                    value: Some(value.clone().into_bytes()),
                    ..Outgoing::default()
                }],
            )[0];
            written.insert(offset, (key, value));
        }
    }
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in written.values() {
        latest.insert(key.clone(), value.clone());
    }

    // The cleaner runs on its own; wait until it has compacted most of the log.
    let deadline = Instant::now() + WAIT;
    let records = loop {
        let records = read_all(&broker.bootstrap(), &topic, 0);
        if records.len() < written.len() / 2 {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the cleaner did not compact the log within {WAIT:?}: {} records",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut previous = -1;
    for message in &records {
        assert!(message.offset() > previous, "offsets only grow");
        previous = message.offset();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        assert_eq!(
            written.get(&message.offset()),
            Some(&(key.clone(), value.clone())),
            "offset {} holds what was written there",
            message.offset()
        );
        seen.insert(key, value);
    }
    assert_eq!(seen, latest, "every key's latest value is read");
}
