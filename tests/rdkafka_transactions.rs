#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Transactions as librdkafka's transactional producer and its read_committed consumer use
//! them (issue 12): InitProducerId with a transactional id, AddPartitionsToTxn, EndTxn, the
//! markers the coordinator writes, the last stable offset and the aborted transactions a
//! read_committed fetch returns.
//!
//! The bugs these guard against: an abort whose records a read_committed consumer still
//! sees (markers written with the wrong outcome, or aborted ranges not returned), a commit
//! whose records it never sees (markers missing on some partition: the LSO stays behind), a
//! zombie producer that can still write after its replacement started, and a transaction
//! left open by a stuck producer that holds every read_committed consumer back for good.

mod common_broker;
mod replicated_cluster;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common_broker::*;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

fn transactional_producer(bootstrap: &str, id: &str, timeout_ms: &str) -> TestProducer {
    let socket_timeout_ms = timeout_ms.parse::<u32>().unwrap().min(10_000).to_string();
    producer(
        bootstrap,
        &[
            ("transactional.id", id),
            ("transaction.timeout.ms", timeout_ms),
            // librdkafka insists both are at most the transaction timeout.
            ("message.timeout.ms", timeout_ms),
            ("socket.timeout.ms", &socket_timeout_ms),
        ],
    )
}

fn record(partition: i32, value: &str) -> Outgoing {
    Outgoing {
        partition: Some(partition),
        value: Some(value.as_bytes().to_vec()),
        ..Outgoing::default()
    }
}

/// Sends one record per value to each of `partitions` inside the open transaction, and waits
/// until every one is acknowledged.
fn send_in_txn(producer: &TestProducer, topic: &str, partitions: i32, values: &[&str]) {
    let records: Vec<Outgoing> = (0..partitions)
        .flat_map(|p| values.iter().map(move |v| record(p, &format!("{v}-p{p}"))))
        .collect();
    for (i, delivered) in send_all(producer, topic, &records).into_iter().enumerate() {
        delivered.unwrap_or_else(|e| panic!("transactional record {i}: {e}"));
    }
}

fn isolated_consumer(bootstrap: &str, isolation: &str) -> BaseConsumer {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", "faultline-rdkafka-txn-tests")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("isolation.level", isolation);
    config.create().expect("consumer")
}

/// Reads `topic`'s partitions from the beginning with `isolation` until `expected` records
/// came in per partition, then keeps polling a while longer to catch any extra one. Returns
/// the values by partition, in offset order.
fn read_values(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    expected: usize,
) -> BTreeMap<i32, Vec<String>> {
    let consumer = isolated_consumer(bootstrap, isolation);
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut values: BTreeMap<i32, Vec<String>> = (0..partitions).map(|p| (p, Vec::new())).collect();
    let deadline = Instant::now() + WAIT;
    let mut settle_until: Option<Instant> = None;
    loop {
        let done = values.values().all(|v| v.len() >= expected);
        if done && settle_until.is_none() {
            settle_until = Some(Instant::now() + Duration::from_millis(1_000));
        }
        if settle_until.is_some_and(|t| Instant::now() >= t) {
            return values;
        }
        assert!(
            Instant::now() < deadline,
            "{isolation} read {:?} of {expected} records per partition within {WAIT:?}: {values:?}",
            values.values().map(Vec::len).collect::<Vec<_>>()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                values.entry(m.partition()).or_default().push(value);
            }
            Some(Err(e)) => panic!("{isolation} consumer: {e}"),
        }
    }
}

fn expected(partitions: i32, values: &[&str]) -> BTreeMap<i32, Vec<String>> {
    (0..partitions)
        .map(|p| (p, values.iter().map(|v| format!("{v}-p{p}")).collect()))
        .collect()
}

#[test]
fn a_read_committed_consumer_sees_exactly_the_committed_transactions_over_three_partitions() {
    let broker = TestBroker::start();
    let topic = topic_name("txn-commit-abort");
    broker.create_topic(&topic, 3, &[]);
    let producer = transactional_producer(&broker.bootstrap(), "txn-commit-abort", "60000");
    producer.init_transactions(WAIT).expect("init_transactions");

    producer.begin_transaction().expect("begin 1");
    send_in_txn(&producer, &topic, 3, &["c1", "c2"]);
    producer.commit_transaction(WAIT).expect("commit 1");

    producer.begin_transaction().expect("begin 2");
    send_in_txn(&producer, &topic, 3, &["a1", "a2", "a3"]);
    producer.abort_transaction(WAIT).expect("abort 2");

    producer.begin_transaction().expect("begin 3");
    send_in_txn(&producer, &topic, 3, &["c3"]);
    producer.commit_transaction(WAIT).expect("commit 3");

    let committed = read_values(&broker.bootstrap(), &topic, 3, "read_committed", 3);
    assert_eq!(committed, expected(3, &["c1", "c2", "c3"]));
    let uncommitted = read_values(&broker.bootstrap(), &topic, 3, "read_uncommitted", 6);
    assert_eq!(
        uncommitted,
        expected(3, &["c1", "c2", "a1", "a2", "a3", "c3"]),
        "read_uncommitted sees the aborted records too"
    );
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let broker = TestBroker::start();
    let topic = topic_name("txn-fencing");
    broker.create_topic(&topic, 2, &[]);
    let zombie = transactional_producer(&broker.bootstrap(), "txn-fencing", "60000");
    zombie.init_transactions(WAIT).expect("init zombie");
    zombie.begin_transaction().expect("begin zombie");
    send_in_txn(&zombie, &topic, 2, &["zombie"]);

    // The replacement's InitProducerId aborts the zombie's open transaction and bumps the
    // epoch past it.
    let replacement = transactional_producer(&broker.bootstrap(), "txn-fencing", "60000");
    replacement
        .init_transactions(WAIT)
        .expect("init replacement");
    replacement.begin_transaction().expect("begin replacement");
    send_in_txn(&replacement, &topic, 2, &["fresh"]);
    replacement
        .commit_transaction(WAIT)
        .expect("commit replacement");

    let refused = zombie.commit_transaction(WAIT);
    let error = refused.expect_err("the zombie's commit must fail");
    let fatal = match &error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    };
    assert!(fatal, "the zombie is fenced for good: {error:?}");

    let committed = read_values(&broker.bootstrap(), &topic, 2, "read_committed", 1);
    assert_eq!(
        committed,
        expected(2, &["fresh"]),
        "nothing of the zombie is visible"
    );
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_stops_holding_back_read_committed_consumers() {
    let broker = TestBroker::start_with(|c| {
        c.transaction_abort_timed_out_transaction_cleanup_interval_ms = 200;
    });
    let topic = topic_name("txn-timeout");
    broker.create_topic(&topic, 1, &[]);
    let stuck = transactional_producer(&broker.bootstrap(), "txn-timeout", "2000");
    stuck.init_transactions(WAIT).expect("init");
    stuck.begin_transaction().expect("begin");
    send_in_txn(&stuck, &topic, 1, &["stuck"]);
    // The producer never ends it. A plain record after it is invisible to read_committed until
    // the coordinator aborts the transaction.
    let plain = producer(&broker.bootstrap(), &[]);
    send_ok(&plain, &topic, &[record(0, "after-p0")]);

    let committed = read_values(&broker.bootstrap(), &topic, 1, "read_committed", 1);
    assert_eq!(
        committed,
        expected(1, &["after"]),
        "the stuck record was aborted"
    );
    let uncommitted = read_values(&broker.bootstrap(), &topic, 1, "read_uncommitted", 2);
    assert_eq!(uncommitted, expected(1, &["stuck", "after"]));
}

/// The group's committed offset of `topic`-0 (OffsetFetch), or `None`.
fn committed_offset(consumer: &BaseConsumer, topic: &str) -> Option<i64> {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, 0);
    let committed = consumer.committed_offsets(list, WAIT).expect("OffsetFetch");
    match committed.find_partition(topic, 0)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn send_offsets(producer: &TestProducer, topic: &str, next: i64, group: &ConsumerGroupMetadata) {
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, Offset::Offset(next))
        .expect("offset");
    producer
        .send_offsets_to_transaction(&offsets, group, WAIT)
        .expect("send_offsets_to_transaction");
}

#[test]
fn consume_transform_produce_commits_its_input_offsets_with_its_output_and_an_abort_commits_neither(
) {
    let broker = TestBroker::start();
    let input = topic_name("ctp-in");
    let output = topic_name("ctp-out");
    broker.create_topic(&input, 1, &[]);
    broker.create_topic(&output, 1, &[]);
    let plain = producer(&broker.bootstrap(), &[]);
    let inputs: Vec<Outgoing> = (0..5).map(|i| record(0, &format!("in{i}"))).collect();
    send_ok(&plain, &input, &inputs);

    let mut config = client_config(&broker.bootstrap());
    config
        .set("group.id", "ctp-group")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let group = consumer.group_metadata().expect("group metadata");
    // While a transaction's offset is pending, a read_committed consumer's OffsetFetch
    // (require_stable) is answered UNSTABLE_OFFSET_COMMIT and retried until the transaction
    // ends (tests/transaction_admin.rs); without require_stable (read_uncommitted) it gets the
    // last stable offset, which is what is checked mid-transaction here.
    config.set("isolation.level", "read_uncommitted");
    let peek: BaseConsumer = config.create().expect("consumer");
    let producer = transactional_producer(&broker.bootstrap(), "ctp", "60000");
    producer.init_transactions(WAIT).expect("init");

    // Transaction 1 transforms in0, in1 and commits input offset 2 with its output.
    producer.begin_transaction().expect("begin 1");
    send_in_txn(&producer, &output, 1, &["out0", "out1"]);
    send_offsets(&producer, &input, 2, &group);
    producer.commit_transaction(WAIT).expect("commit 1");
    // Transaction 2 would move the input to 4, and is aborted: neither its output nor its
    // offsets may ever be seen.
    producer.begin_transaction().expect("begin 2");
    send_in_txn(&producer, &output, 1, &["out2", "out3"]);
    send_offsets(&producer, &input, 4, &group);
    // A transaction's first AddPartitions/AddOffsets waits (CONCURRENT_TRANSACTIONS, retried
    // by librdkafka) until the previous one completed, markers included: transaction 1's
    // offset is visible now, and this one's is not yet.
    assert_eq!(committed_offset(&peek, &input), Some(2));
    producer.abort_transaction(WAIT).expect("abort 2");
    // Transaction 3 reprocesses in2 and commits offset 3.
    producer.begin_transaction().expect("begin 3");
    send_in_txn(&producer, &output, 1, &["again2"]);
    send_offsets(&producer, &input, 3, &group);
    assert_eq!(
        committed_offset(&peek, &input),
        Some(2),
        "the aborted transaction's offset was dropped"
    );
    producer.commit_transaction(WAIT).expect("commit 3");

    // Markers land after EndTxn is answered: wait for the last commit's offset.
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let offset = committed_offset(&consumer, &input);
        if seen.last() != Some(&offset) {
            seen.push(offset);
        }
        if offset == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !seen.contains(&Some(4)),
        "the aborted offset was visible: {seen:?}"
    );
    let out = read_values(&broker.bootstrap(), &output, 1, "read_committed", 3);
    assert_eq!(out, expected(1, &["out0", "out1", "again2"]));
}

#[test]
fn markers_reach_partitions_led_by_other_brokers_through_write_txn_markers() {
    // Three brokers, the topic's three partitions led by different ones: the coordinator
    // writes one marker locally and the others with WriteTxnMarkers to their leaders. The
    // bug: markers only where the coordinator leads, so the other partitions' transactions
    // stay open (read_committed stalls) or, for an abort, their records are never dropped.
    // The leaders that are not the coordinator also verify each transaction's first batch
    // with it (KIP-890 part 1, AddPartitionsToTxn v4): a verification that refused what
    // librdkafka added would fail its sends.
    let cluster = replicated_cluster::Cluster::start(replicated_cluster::Settings {
        lag_ms: 10_000,
        session_ms: 6_000,
        offsets_partitions: 3,
    });
    let bootstrap = cluster.bootstrap();
    let topic = topic_name("txn-cluster");
    let creator = cluster.broker(1);
    cluster
        .driver
        .block_on(creator.create_topic(&topic, 3, 3, &[], false))
        .expect("topic created");
    cluster.eventually("the topic open on every broker", || {
        cluster.open_everywhere(&topic)
    });
    let leaders: std::collections::BTreeSet<i32> = (0..3)
        .map(|p| {
            cluster
                .broker(1)
                .image()
                .partition(&topic, p)
                .expect("partition")
                .leader
        })
        .collect();
    assert!(
        leaders.len() > 1,
        "the partitions are led by several brokers: {leaders:?}"
    );
    let txns = std::sync::Arc::clone(cluster.broker(1).txns());
    cluster
        .driver
        .block_on(cluster.broker(1).transaction_state_topic())
        .expect("__transaction_state created");
    let coordinator = cluster
        .broker(1)
        .image()
        .partition("__transaction_state", txns.partition_for("txn-cluster"))
        .expect("the id's partition")
        .leader;
    assert!(
        leaders.iter().any(|&l| l != coordinator),
        "some partition is led by another broker than the coordinator {coordinator}"
    );

    let producer = transactional_producer(&bootstrap, "txn-cluster", "60000");
    producer.init_transactions(WAIT).expect("init_transactions");
    producer.begin_transaction().expect("begin 1");
    send_in_txn(&producer, &topic, 3, &["c1"]);
    producer.commit_transaction(WAIT).expect("commit 1");
    producer.begin_transaction().expect("begin 2");
    send_in_txn(&producer, &topic, 3, &["a1"]);
    producer.abort_transaction(WAIT).expect("abort 2");
    producer.begin_transaction().expect("begin 3");
    send_in_txn(&producer, &topic, 3, &["c2"]);
    producer.commit_transaction(WAIT).expect("commit 3");

    let committed = read_values(&bootstrap, &topic, 3, "read_committed", 2);
    assert_eq!(committed, expected(3, &["c1", "c2"]));
}
