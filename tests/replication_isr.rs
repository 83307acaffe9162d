// Real sockets, threads and wall-clock time, and a real librdkafka: the determinism rules in
// clippy.toml are for broker code, not for these tests.
#![allow(clippy::disallowed_methods)]
//! The ISR with real brokers: three brokers in one process, each on its own tokio runtime and
//! loopback listener, sharing one in-memory metadata plane (a `SoloPlane` owned by no broker),
//! followers fetching from the leader over real TCP, `replica.lag.time.max.ms` small.
//!
//! The bug stories: a stopped follower that stays in the ISR until the controller fences it
//! (every acks=all produce waits for it meanwhile); a follower that never comes back into the
//! ISR after it caught up, so the partition runs on fewer copies than it has; a follower let
//! back in before it holds what the others acknowledged.
//!
//! A stopped broker is its runtime shut down: its tasks and sockets die at once, without a
//! controlled shutdown, and its files stay as they were.
#![cfg(not(madsim))]

mod in_process;
mod replicated_cluster;

use std::time::Duration;

use broker::controller::plane::MetadataPlane;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use replicated_cluster::{Cluster, Settings};

/// `replica.lag.time.max.ms` here: small, so a stopped follower leaves the ISR long before
/// its session expires.
const LAG_MS: u64 = 1_000;
/// `broker.session.timeout.ms` here: long enough that the shrink is the ISR manager's doing,
/// short enough that a restarted broker's new incarnation registers soon after.
const SESSION_MS: u64 = 5_000;

/// Brokers 1, 2 and 3 with this `replica.lag.time.max.ms` and `broker.session.timeout.ms`.
fn start_with(lag_ms: u64, session_ms: u64) -> Cluster {
    Cluster::start(Settings {
        lag_ms,
        session_ms,
        offsets_partitions: 1,
    })
}

/// Produces `count` records with acks=all, each acknowledged before the next is sent.
fn produce(cluster: &Cluster, topic: &str, count: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "50")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    cluster.driver.block_on(async {
        for i in 0..count {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic)
                        .partition(0)
                        .payload(&format!("record-{i}")),
                    Duration::from_secs(60),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("record {i} not acknowledged: {e}"));
        }
    });
}

#[test]
fn a_stopped_follower_leaves_the_isr_after_the_lag_time_and_rejoins_once_caught_up() {
    let mut cluster = start_with(LAG_MS, SESSION_MS);
    cluster
        .driver
        .block_on(cluster.broker(1).create_topic("i", 1, 3, &[], false))
        .unwrap();
    cluster.eventually("i-0 open on every broker", || {
        (1..=3).all(|id| cluster.broker(id).partition("i", 0).is_some())
    });
    produce(&cluster, "i", 20);
    let leader = cluster.leader("i");
    assert_eq!(
        cluster.isr("i"),
        vec![1, 2, 3],
        "followers that keep up stay"
    );
    assert_eq!(cluster.broker(leader).isr_manager().changes_committed(), 0);

    // A follower stops: it leaves the ISR at the leader's request while its session lives.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(follower);
    cluster.eventually("the ISR without the stopped follower", || {
        !cluster.isr("i").contains(&follower)
    });
    assert!(
        !cluster.fenced(follower),
        "the follower left the ISR by its lag, not by fencing"
    );
    assert!(cluster.broker(leader).isr_manager().changes_committed() >= 1);
    assert_eq!(cluster.leader("i"), leader, "a shrink keeps the leader");
    cluster.eventually(
        "the leader's own replica state without the follower",
        || {
            let state = cluster
                .broker(leader)
                .partition("i", 0)
                .unwrap()
                .replica_state();
            !state.isr().contains(&follower)
        },
    );
    // acks=all goes on with the two in-sync replicas.
    produce(&cluster, "i", 30);
    let leader_end = cluster
        .broker(leader)
        .partition("i", 0)
        .unwrap()
        .log
        .log_end_offset();
    assert_eq!(leader_end, 50);

    // It comes back (a new incarnation, once its old session expired), catches up from the
    // leader and is let back in.
    cluster.start_node(follower);
    cluster.eventually("the ISR with the follower again", || {
        cluster.isr("i").contains(&follower)
    });
    let rejoined = cluster.broker(follower).partition("i", 0).unwrap();
    assert_eq!(
        rejoined.log.log_end_offset(),
        leader_end,
        "let back in only once it held everything the others acknowledged"
    );
    assert_eq!(cluster.leader("i"), leader);
    assert!(cluster.broker(leader).isr_manager().changes_committed() >= 2);
    // Its expansion is over: it no longer holds the high watermark back as a pending joiner
    // but as a member.
    cluster.eventually("no expansion pending on the leader", || {
        let state = cluster
            .broker(leader)
            .partition("i", 0)
            .unwrap()
            .replica_state();
        state.pending_isr_expansion().is_empty() && state.isr().contains(&follower)
    });
}

/// The bug story: a leader that had many ISRs to change at once (a follower of all its
/// partitions stopped) sent one AlterPartition per partition; they queued behind one another
/// on its controller connection and cost one metadata commit each. Kafka's
/// `AlterPartitionManager` keeps one request in flight and sends what queued meanwhile
/// together, one entry per partition.
#[test]
fn a_leader_sends_the_isr_changes_of_many_partitions_together_and_applies_each() {
    const PARTITIONS: i32 = 30;
    let mut cluster = start_with(LAG_MS, SESSION_MS);
    cluster
        .driver
        .block_on(
            cluster
                .broker(1)
                .create_topic("m", PARTITIONS, 3, &[], false),
        )
        .unwrap();
    cluster.eventually("m open on every broker", || {
        (1..=3).all(|id| (0..PARTITIONS).all(|p| cluster.broker(id).partition("m", p).is_some()))
    });
    let leaders: Vec<i32> = (0..PARTITIONS)
        .map(|p| cluster.plane.image().partition("m", p).unwrap().leader)
        .collect();
    let stopped = 3;
    let before: Vec<(u64, u64)> = (1..=2)
        .map(|id| {
            let broker = cluster.broker(id);
            let manager = broker.isr_manager();
            (manager.changes_committed(), manager.requests_sent())
        })
        .collect();
    cluster.stop(stopped);
    let led_by_live = |p: &i32| leaders[*p as usize] != stopped;
    cluster.eventually(
        "every ISR a live broker leads without the stopped follower",
        || {
            let image = cluster.plane.image();
            (0..PARTITIONS)
                .filter(led_by_live)
                .all(|p| !image.partition("m", p).unwrap().isr.contains(&stopped))
        },
    );
    assert!(
        !cluster.fenced(stopped),
        "shrunk by the leaders, not by fencing"
    );
    for id in 1..=2 {
        let led = leaders.iter().filter(|&&l| l == id).count() as u64;
        assert!(
            led >= 2,
            "broker {id} leads {led} partitions: placement spreads leaders"
        );
        let broker = cluster.broker(id);
        let manager = broker.isr_manager();
        let changes = manager.changes_committed() - before[id as usize - 1].0;
        let requests = manager.requests_sent() - before[id as usize - 1].1;
        assert!(
            changes >= led,
            "broker {id}: {changes} changes for {led} partitions"
        );
        assert!(
            requests < changes,
            "broker {id}: {requests} requests for {changes} changes: not batched"
        );
    }
    // Each partition's result reached its leader's replica state.
    cluster.eventually(
        "each leader's replica state without the stopped follower",
        || {
            (0..PARTITIONS).filter(led_by_live).all(|p| {
                let state = cluster
                    .broker(leaders[p as usize])
                    .partition("m", p)
                    .unwrap()
                    .replica_state();
                !state.isr().contains(&stopped) && state.isr().len() == 2
            })
        },
    );
}

/// Topic "u" (RF 3, `unclean.leader.election.enable` as given) whose followers stopped and fell
/// out of the ISR while the leader took 10 more records; then the leader stops and one
/// follower comes back (an out-of-sync replica, live again). Returns the cluster, the stopped
/// leader and the follower back, once the leader is fenced (the batch that fences it decides
/// the election).
fn last_isr_member_dies(unclean: bool) -> (Cluster, i32, i32) {
    let mut cluster = start_with(LAG_MS, SESSION_MS);
    let value = unclean.to_string();
    let configs = [("unclean.leader.election.enable".to_string(), value)];
    cluster
        .driver
        .block_on(cluster.broker(1).create_topic("u", 1, 3, &configs, false))
        .unwrap();
    cluster.eventually("u-0 open on every broker", || {
        (1..=3).all(|id| cluster.broker(id).partition("u", 0).is_some())
    });
    produce(&cluster, "u", 10);
    let leader = cluster.leader("u");
    let followers: Vec<i32> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &followers {
        cluster.stop(id);
    }
    cluster.eventually("the leader alone in the ISR", || {
        cluster.isr("u") == vec![leader]
    });
    produce(&cluster, "u", 10);
    cluster.stop(leader);
    // Its registration and heartbeats are what the controller (a plane with no tick of its
    // own) decides sessions on: the leader is fenced while it comes back.
    let back = followers[0];
    cluster.start_node(back);
    cluster.eventually("the stopped leader fenced", || cluster.fenced(leader));
    (cluster, leader, back)
}

#[test]
fn with_unclean_election_off_a_partition_whose_isr_died_stays_offline_when_a_lagging_replica_returns(
) {
    let (cluster, leader, back) = last_isr_member_dies(false);
    assert!(!cluster.fenced(back));
    assert_eq!(cluster.leader("u"), broker::controller::NO_NODE);
    assert_eq!(
        cluster.isr("u"),
        vec![leader],
        "the last member stays, to come back"
    );
    assert_eq!(cluster.plane.image().unclean_leader_elections, 0);
}

#[test]
fn with_unclean_election_on_a_lagging_replica_leads_alone_and_the_election_is_counted() {
    let (cluster, _, back) = last_isr_member_dies(true);
    assert!(!cluster.fenced(back));
    assert_eq!(cluster.leader("u"), back);
    assert_eq!(cluster.isr("u"), vec![back]);
    assert_eq!(cluster.plane.image().unclean_leader_elections, 1);
    // It leads, in the epoch of the election, with what it had (the 10 records it missed are
    // lost, as the config allows).
    let epoch = cluster
        .plane
        .image()
        .partition("u", 0)
        .unwrap()
        .leader_epoch;
    cluster.eventually("the new leader leading in the election's epoch", || {
        let state = cluster
            .broker(back)
            .partition("u", 0)
            .unwrap()
            .replica_state();
        state.is_leader() && state.leader_epoch() == epoch
    });
}

/// The bug: the last ISR member of an offline partition came back on a replaced, empty drive
/// and was elected from that membership (its followers would truncate to its empty log). Its
/// data directory now holds no broker epoch, so it registers with none (KIP-966) and the
/// controller takes it out of the ISR: the partition stays offline.
#[test]
fn the_last_isr_member_back_on_a_wiped_drive_leaves_the_isr_and_is_not_elected() {
    let (mut cluster, leader, _) = last_isr_member_dies(false);
    assert_eq!(cluster.isr("u"), vec![leader]);
    let dir = cluster.data_dir(leader);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    cluster.start_node(leader);
    assert!(!cluster.fenced(leader), "open returns once unfenced");
    assert_eq!(cluster.leader("u"), broker::controller::NO_NODE);
    assert_eq!(cluster.isr("u"), Vec::<i32>::new());
    assert_eq!(cluster.plane.image().unclean_leader_elections, 0);
}

/// The same broker back on its own drive names the broker epoch it recorded there: it is the
/// last ISR member still, holds everything committed, and leads again.
#[test]
fn the_last_isr_member_back_on_its_own_drive_leads_again() {
    let (mut cluster, leader, _) = last_isr_member_dies(false);
    cluster.start_node(leader);
    assert_eq!(cluster.isr("u"), vec![leader]);
    cluster.eventually("the last ISR member leading again", || {
        cluster.leader("u") == leader
    });
}

/// KIP-966 with real brokers: with eligible leader replicas on (and min.insync.replicas 2),
/// the follower that leaves an ISR already at the bound becomes eligible, `faultline topics
/// describe` shows it in the Elr column, and when the last ISR member dies it is elected
/// cleanly; once another replica catches up, every acknowledged record is read back from it.
/// Without ELR the partition would wait for the dead leader (the test above with unclean
/// election off).
#[test]
fn with_eligible_leader_replicas_a_replica_that_left_a_small_isr_leads_when_the_last_member_dies() {
    let mut cluster = Cluster::start_with_controller(
        Settings {
            lag_ms: LAG_MS,
            session_ms: SESSION_MS,
            offsets_partitions: 1,
        },
        |_, config| {
            config.eligible_leader_replicas_enable = true;
            config.min_insync_replicas = 2;
        },
        |controller| {
            controller.eligible_leader_replicas_enable = true;
            controller.min_insync_replicas = 2;
        },
    );
    cluster
        .driver
        .block_on(cluster.broker(1).create_topic("e", 1, 3, &[], false))
        .unwrap();
    cluster.eventually("e-0 open on every broker", || {
        (1..=3).all(|id| cluster.broker(id).partition("e", 0).is_some())
    });
    produce(&cluster, "e", 10);
    let leader = cluster.leader("e");
    let followers: Vec<i32> = (1..=3).filter(|&id| id != leader).collect();
    let (first, eligible) = (followers[0], followers[1]);
    cluster.stop(first);
    cluster.eventually("an ISR of two", || cluster.isr("e").len() == 2);
    assert!(
        cluster.elr("e").is_empty(),
        "the HW still moves: none eligible"
    );
    produce(&cluster, "e", 10);
    cluster.stop(eligible);
    cluster.eventually("the leader alone in the ISR", || {
        cluster.isr("e") == vec![leader]
    });
    assert_eq!(cluster.elr("e"), vec![eligible]);
    let described = replicated_cluster::topics(&cluster, leader, &["describe", "--topic", "e"]);
    assert_eq!(described.code, 0, "{}", described.err);
    assert!(
        described
            .out
            .contains(&format!("\tElr: {eligible}\tLastKnownElr: \n")),
        "{}",
        described.out
    );
    // The last ISR member dies; the eligible replica comes back and, once the leader is
    // fenced, leads alone in the ISR: a clean election.
    cluster.stop(leader);
    cluster.start_node(eligible);
    cluster.eventually("the eligible replica elected", || {
        cluster.leader("e") == eligible
    });
    assert_eq!(cluster.isr("e"), vec![eligible]);
    assert_eq!(cluster.plane.image().unclean_leader_elections, 0);
    // The other replica catches up and joins: the ISR is back at min.insync.replicas and the
    // high watermark covers all 20 acknowledged records.
    cluster.start_node(first);
    cluster.eventually("all 20 records below the new leader's HW", || {
        cluster.replica(eligible, "e").high_watermark() == 20
    });
    assert!(cluster.elr("e").is_empty());
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "elr-check")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset("e", 0, rdkafka::Offset::Beginning)
        .unwrap();
    rdkafka::consumer::Consumer::assign(&consumer, &assignment).unwrap();
    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + replicated_cluster::WAIT;
    while read.len() < 20 {
        assert!(std::time::Instant::now() < deadline, "read only {read:?}");
        // Errors are the stopped leader's address failing to connect: librdkafka goes on.
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let payload = rdkafka::Message::payload(&message).unwrap();
            read.push(String::from_utf8(payload.to_vec()).unwrap());
        }
    }
    let expected: Vec<String> = (0..2)
        .flat_map(|_| (0..10).map(|i| format!("record-{i}")))
        .collect();
    assert_eq!(read, expected);
}

/// COORDINATOR_NOT_AVAILABLE: the client retries the commit.
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// An OffsetCommit of offset `offset` for group "g" (a consumer that assigns itself).
fn commit(cluster: &Cluster, coordinator: i32, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)])]);
    let response: OffsetCommitResponse = cluster.driver.block_on(in_process::call(
        &cluster.broker(coordinator),
        ApiKey::OffsetCommit,
        7,
        &request,
    ));
    response.topics[0].partitions[0].error_code
}

#[test]
fn an_offset_commit_is_not_acknowledged_while_an_in_sync_follower_of_its_partition_lacks_it() {
    // Followers stay in the ISR (and unfenced) however long they are away.
    let mut cluster = start_with(600_000, 600_000);
    cluster
        .driver
        // On every broker: OffsetCommit checks the coordinator's local replicas.
        .block_on(cluster.broker(1).create_topic("t", 1, 3, &[], false))
        .unwrap();
    cluster
        .driver
        .block_on(cluster.broker(1).offsets_topic())
        .unwrap();
    let offsets = broker::group::offsets::OFFSETS_TOPIC;
    cluster.eventually("the offsets partition open on every broker", || {
        (1..=3).all(|id| cluster.broker(id).partition(offsets, 0).is_some())
    });
    let replicas = cluster
        .plane
        .image()
        .partition(offsets, 0)
        .unwrap()
        .replicas
        .clone();
    assert_eq!(
        replicas.len(),
        3,
        "offsets.topic.replication.factor 3 on three brokers"
    );
    let coordinator = cluster.leader(offsets);
    cluster.eventually("the coordinator's shard loaded", || {
        cluster
            .broker(coordinator)
            .groups()
            .loaded_shards()
            .contains(&0)
    });
    assert_eq!(
        commit(&cluster, coordinator, 7),
        0,
        "every replica up: acknowledged"
    );

    // Both followers stop: still in the ISR, they hold the high watermark where it is, and a
    // commit the coordinator alone holds is not acknowledged (Kafka's acks=-1 for offsets).
    for id in replicas.iter().copied().filter(|&id| id != coordinator) {
        cluster.stop(id);
    }
    assert_eq!(commit(&cluster, coordinator, 8), COORDINATOR_NOT_AVAILABLE);
}
