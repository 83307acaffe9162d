#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Consumer groups through librdkafka's high-level consumer: members share a topic's partitions,
//! a leaving member's partitions move to the others, a member killed with SIGKILL loses its
//! partitions when its session expires, cooperative-sticky rebalances incrementally, and
//! committed offsets outlive the broker.
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
    consumer_with(bootstrap, group, "range,roundrobin")
}

/// A manually committing member of `group` with `partition.assignment.strategy`.
fn consumer_with(bootstrap: &str, group: &str, strategy: &str) -> BaseConsumer {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", group)
        .set("partition.assignment.strategy", strategy)
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

/// Set in the child process of the session-expiry test: `BOOTSTRAP|TOPIC|GROUP`.
const CHILD_MEMBER_ENV: &str = "FAULTLINE_CHILD_GROUP_MEMBER";

/// The other half of the self-exec trick: when asked, this process is a group member that
/// polls until it is killed.
#[test]
fn child_group_member_process() {
    let Ok(spec) = std::env::var(CHILD_MEMBER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let consumer = group_consumer(parts[0], parts[2]);
    consumer.subscribe(&[parts[1]]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(50));
    }
}

/// A child process; SIGKILLed and reaped on drop, so a failing test leaves none behind.
struct ChildMember(std::process::Child);

impl Drop for ChildMember {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_member_killed_without_leaving_loses_its_partitions_when_its_session_expires() {
    let broker = TestBroker::start_with(|c| c.group_initial_rebalance_delay_ms = 0);
    let topic = topic_name("expiry");
    broker.create_topic(&topic, 4, &[]);
    let group = topic_name("group");
    let survivor = group_consumer(&broker.bootstrap(), &group);
    survivor.subscribe(&[&topic]).expect("subscribe");
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["child_group_member_process", "--exact", "--nocapture"])
        .env(
            CHILD_MEMBER_ENV,
            format!("{}|{topic}|{group}", broker.bootstrap()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child member");
    let mut child = ChildMember(child);

    // Both members hold partitions: the survivor has some, not all.
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = survivor.poll(Duration::from_millis(50));
        let mine = assigned(&survivor);
        if !mine.is_empty() && mine.len() < 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two members never shared: {mine:?}"
        );
    }

    // kill -9: no LeaveGroup, no more heartbeats. The session timeout (6 s) must hand the
    // child's partitions to the survivor.
    let _ = child.0.kill();
    let _ = child.0.wait();
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = survivor.poll(Duration::from_millis(50));
        if assigned(&survivor) == (0..4).collect() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed member's partitions were never reassigned: {:?}",
            assigned(&survivor)
        );
    }
}

fn cooperative_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    consumer_with(bootstrap, group, "cooperative-sticky")
}

#[test]
fn cooperative_sticky_members_share_partitions_and_the_first_keeps_its_share_when_another_joins() {
    let broker = TestBroker::start_with(|c| c.group_initial_rebalance_delay_ms = 0);
    let topic = topic_name("coop");
    broker.create_topic(&topic, 6, &[]);
    let group = topic_name("group");
    let first = cooperative_consumer(&broker.bootstrap(), &group);
    first.subscribe(&[&topic]).expect("subscribe");
    let deadline = Instant::now() + WAIT;
    while assigned(&first) != (0..6).collect() {
        let _ = first.poll(Duration::from_millis(50));
        assert!(
            Instant::now() < deadline,
            "the first member never got all six"
        );
    }
    assert!(
        matches!(
            first.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        ),
        "the group runs the cooperative protocol"
    );

    let second = cooperative_consumer(&broker.bootstrap(), &group);
    second.subscribe(&[&topic]).expect("subscribe");
    let sets = wait_for_balanced(&[&first, &second], 6);
    assert_eq!(sets[0].len(), 3, "sticky: an even split, {sets:?}");
    assert!(
        sets[0].iter().all(|p| (0..6).contains(p)),
        "the first member kept a subset of what it had"
    );

    // Incremental: the second leaves and the first gets its partitions back without losing
    // its own in between.
    drop(second);
    let deadline = Instant::now() + WAIT;
    while assigned(&first) != (0..6).collect() {
        let _ = first.poll(Duration::from_millis(50));
        assert!(
            sets[0].is_subset(&assigned(&first)),
            "the first member's own partitions were revoked during an incremental rebalance"
        );
        assert!(Instant::now() < deadline, "the partitions never came back");
    }
}
