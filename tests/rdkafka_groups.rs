#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Consumer groups through librdkafka's high-level consumer: members share a topic's partitions,
//! a leaving member's partitions move to the others, and committed offsets outlive the broker.
//!
//! The bugs these guard against: a rebalance that hands one partition to two members or none,
//! a LeaveGroup that leaves the others waiting on a member that is gone, and an OffsetCommit
//! acknowledged before its record is durable (or never replayed), so a restarted broker sends a
//! new member back to the start of the partition.

mod common_broker;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common_broker::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .set("enable.partition.eof", "false");
    config.create().expect("group consumer")
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Polls every consumer until their assignments are disjoint, non-empty and cover `0..total`.
fn wait_for_balanced(consumers: &[&BaseConsumer], total: i32) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + WAIT;
    loop {
        for consumer in consumers {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        let sets: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let count: usize = sets.iter().map(BTreeSet::len).sum();
        if union == (0..total).collect()
            && count == total as usize
            && sets.iter().all(|s| !s.is_empty())
        {
            return sets;
        }
        assert!(
            Instant::now() < deadline,
            "assignments never balanced: {sets:?}"
        );
    }
}

#[test]
fn three_consumers_share_six_partitions_and_the_others_take_over_when_one_leaves() {
    let broker = TestBroker::start();
    let topic = topic_name("shared");
    broker.create_topic(&topic, 6, &[]);
    let group = topic_name("group");
    let consumers: Vec<BaseConsumer> = (0..3)
        .map(|_| group_consumer(&broker.bootstrap(), &group))
        .collect();
    for consumer in &consumers {
        consumer.subscribe(&[&topic]).expect("subscribe");
    }
    let sets = wait_for_balanced(&consumers.iter().collect::<Vec<_>>(), 6);
    assert!(
        sets.iter().all(|s| s.len() == 2),
        "range over 6 partitions and 3 members: {sets:?}"
    );

    let mut consumers = consumers;
    let leaving = consumers.pop().expect("three");
    leaving.unsubscribe();
    drop(leaving); // close(): LeaveGroup
    let sets = wait_for_balanced(&consumers.iter().collect::<Vec<_>>(), 6);
    assert!(
        sets.iter().all(|s| s.len() == 3),
        "the two left share all six: {sets:?}"
    );
}

#[test]
fn committed_offsets_survive_a_restart_and_a_new_member_resumes_right_after_them() {
    let data = tempfile::tempdir().expect("data dir");
    let topic = topic_name("resume");
    let group = topic_name("group");
    {
        let broker = TestBroker::start_with(|c| c.data_dir = data.path().to_path_buf());
        broker.create_topic(&topic, 1, &[]);
        let producer = producer(&broker.bootstrap(), &[("acks", "all")]);
        let records: Vec<Outgoing> = (0..10)
            .map(|i| Outgoing {
                partition: Some(0),
                value: Some(format!("r{i}").into_bytes()),
                ..Outgoing::default()
            })
            .collect();
        send_ok(&producer, &topic, &records);
        let consumer = group_consumer(&broker.bootstrap(), &group);
        consumer.subscribe(&[&topic]).expect("subscribe");
        let deadline = Instant::now() + WAIT;
        let mut seen = 0;
        while seen < 4 {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.expect("message");
                assert_eq!(message.offset(), seen);
                seen += 1;
            }
            assert!(Instant::now() < deadline, "read only {seen} records");
        }
        let mut commit = TopicPartitionList::new();
        commit
            .add_partition_offset(&topic, 0, Offset::Offset(4))
            .expect("offset");
        consumer.commit(&commit, CommitMode::Sync).expect("commit");
        drop(consumer);
        drop(producer);
    } // the broker shuts down here

    let broker = TestBroker::start_with(|c| c.data_dir = data.path().to_path_buf());
    let consumer = group_consumer(&broker.bootstrap(), &group);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    let committed = consumer.committed_offsets(wanted, WAIT).expect("committed");
    assert_eq!(
        committed
            .find_partition(&topic, 0)
            .expect("partition")
            .offset(),
        Offset::Offset(4)
    );
    consumer.subscribe(&[&topic]).expect("subscribe");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("message");
            assert_eq!(
                message.offset(),
                4,
                "resumes right after the committed offset"
            );
            assert_eq!(message.payload(), Some(&b"r4"[..]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing consumed after the restart"
        );
    }
}
