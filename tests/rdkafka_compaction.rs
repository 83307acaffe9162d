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

/// Reads `topic`-0 from its start with `isolation` until the record of key `last_key` comes in.
/// Returns (offset, key, value) in offset order.
fn read_until_key(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    last_key: &str,
) -> Vec<(i64, String, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let mut config = client_config(bootstrap);
    config
        .set("group.id", "faultline-rdkafka-compaction-txn")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("isolation.level", isolation);
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "{isolation}: no record of key {last_key} within {WAIT:?}: {} records",
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                let done = key == last_key;
                out.push((m.offset(), key, value));
                if done {
                    return out;
                }
            }
            Some(Err(e)) => panic!("{isolation} consumer: {e}"),
        }
    }
}

fn latest_of(records: &[(i64, String, String)]) -> BTreeMap<String, String> {
    records
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn committed_and_aborted_transactions_on_a_compacted_topic_leave_only_committed_latest_values() {
    // The bugs: a cleaner that keeps aborted records (a read_uncommitted consumer reads an
    // aborted value as a key's latest), lets one shadow an older committed value, drops a
    // marker or an aborted-transaction entry while the consumer still needs it (a
    // read_committed consumer then delivers aborted data or drops committed data), or
    // breaks a read_committed fetch over the gaps it leaves.
    use rdkafka::producer::Producer;
    let broker = TestBroker::start_with(|c| {
        c.log_cleaner_backoff_ms = 50;
    });
    let topic = topic_name("compacted-txn");
    broker.create_topic(
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "2048"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
        ],
    );
    let producer = producer(
        &broker.bootstrap(),
        &[
            ("transactional.id", "compacted-txn"),
            ("transaction.timeout.ms", "60000"),
            ("message.timeout.ms", "60000"),
            ("socket.timeout.ms", "10000"),
            ("linger.ms", "0"),
        ],
    );
    producer.init_transactions(WAIT).expect("init_transactions");
    let send = |pairs: &[(String, String)]| {
        let records: Vec<Outgoing> = pairs
            .iter()
            .map(|(k, v)| Outgoing {
                partition: Some(0),
                key: Some(k.clone().into_bytes()),
                value: Some(v.clone().into_bytes()),
                ..Outgoing::default()
            })
            .collect();
        for delivered in send_all(&producer, &topic, &records) {
            delivered.expect("transactional record");
        }
    };
    let keys = |prefix: &str, round: usize| -> Vec<(String, String)> {
        (0..5)
            .map(|k| {
                (
                    format!("key{k}"),
                    format!("{prefix}{round}-{k}-{}", "x".repeat(60)),
                )
            })
            .collect()
    };
    let mut committed: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..12 {
        producer.begin_transaction().unwrap();
        let values = keys("committed", round);
        send(&values);
        producer.commit_transaction(WAIT).expect("commit");
        committed.extend(values);
        producer.begin_transaction().unwrap();
        send(&keys("aborted", round));
        producer.abort_transaction(WAIT).expect("abort");
    }
    // A last committed transaction large enough to seal the segments above.
    producer.begin_transaction().unwrap();
    let mut tail: Vec<(String, String)> = (0..4)
        .map(|i| (format!("pad{i}"), "p".repeat(1000)))
        .collect();
    tail.push(("end".into(), "end".into()));
    send(&tail);
    producer.commit_transaction(WAIT).expect("commit the tail");
    committed.extend(tail);

    // Before cleaning, read_uncommitted sees aborted values; the cleaner removes them.
    let deadline = Instant::now() + WAIT;
    let uncommitted = loop {
        let records = read_until_key(&broker.bootstrap(), &topic, "read_uncommitted", "end");
        if records.iter().all(|(_, _, v)| !v.starts_with("aborted")) {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the cleaner did not remove the aborted records within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        latest_of(&uncommitted),
        committed,
        "read_uncommitted: every key's latest committed value"
    );
    let read_committed = read_until_key(&broker.bootstrap(), &topic, "read_committed", "end");
    assert!(read_committed
        .iter()
        .all(|(_, _, v)| !v.starts_with("aborted")));
    assert_eq!(
        latest_of(&read_committed),
        committed,
        "read_committed: every key's latest committed value"
    );
    assert!(
        read_committed.len() < 12 * 5,
        "superseded committed values were compacted too: {} records",
        read_committed.len()
    );
}
