//! A partition as replication will drive it: a follower copies the leader's batches, serves
//! consumers only below the leader's high watermark, truncates where it diverged, and leads
//! later with the idempotent producers' state of the log it really holds.

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use broker::log::batch::builder;
use broker::log::Log;
use broker::partition::{Partition, ProduceError};
use broker::protocol::errors;
use broker::replica::Role;
use chaos::FaultyDiskConfig;
use common::gated_disk::{Gate, GatedDisk, Held};
use common::*;
use kafka_protocol::error::ResponseError;

/// An idempotent batch of `records` records whose values start with `seq`.
fn idempotent_batch(producer_id: i64, seq: i32, records: usize) -> Vec<u8> {
    let recs: Vec<builder::Record> = (0..records)
        .map(|i| builder::Record {
            key: None,
            value: Some(format!("seq-{}", seq as usize + i).into_bytes()),
            timestamp_ms: T0,
        })
        .collect();
    builder::with_producer(builder::batch(&recs), producer_id, 0, seq)
}

async fn partition(f: &Fixture, broker_id: i32) -> Arc<Partition> {
    Arc::new(
        Partition::open("t".into(), 0, f.open().await, broker_id)
            .await
            .unwrap(),
    )
}

/// Broker 1's replica, leading: producer 7's batches of three records at sequences 0, 3 and 6,
/// each synced.
async fn leader_with_three_batches_of_producer_7(f: &Fixture) -> Arc<Partition> {
    let leader = partition(f, 1).await;
    for seq in [0, 3, 6] {
        let info = leader
            .append(&mut idempotent_batch(7, seq, 3))
            .await
            .unwrap();
        leader.wait_durable(&info).await.unwrap();
    }
    leader
}

/// Broker 2's disk, its replica of t-0 in a directory of its own.
fn follower_fixture() -> Fixture {
    let mut f = Fixture::new(2, FaultyDiskConfig::default(), small_segments());
    f.dir = PathBuf::from("/follower/t-0");
    f
}

#[tokio::test]
async fn a_follower_copies_serves_below_the_leader_s_high_watermark_truncates_and_leads() {
    // The bug: a follower whose truncation left the idempotent producers' state as it was, so
    // after it becomes leader a producer's retry of a batch the truncation removed is answered
    // as a duplicate of a batch that is gone: acknowledged, and never stored.
    let leader_fixture = Fixture::new(1, FaultyDiskConfig::default(), small_segments());
    let leader = leader_with_three_batches_of_producer_7(&leader_fixture).await;
    assert_eq!(leader.high_watermark(), 9);
    let fetched = leader.log.read(0, 1 << 20, None).await.unwrap().records;

    let follower_fixture = follower_fixture();
    let follower = partition(&follower_fixture, 2).await;
    follower.become_follower(1, 1);
    assert_eq!(
        follower.replica_state().role(),
        Role::Follower { leader: 1 }
    );
    follower.append_as_follower(&fetched, 1).await.unwrap();
    follower.log.flush().await.unwrap();
    assert_eq!(follower.log.log_end_offset(), 9);
    assert_eq!(
        follower.high_watermark(),
        0,
        "no high watermark from the leader yet"
    );
    follower.update_high_watermark_as_follower(6);
    assert_eq!(follower.high_watermark(), 6);
    let state = follower.producer_state().await.unwrap();
    assert_eq!(state.entry(7).map(|e| e.last_seq()), Some(8));

    // The logs diverged at offset 3 (say): the follower cuts there.
    assert_eq!(follower.truncate_to(3).await.unwrap(), 3);
    assert_eq!(follower.high_watermark(), 3);
    let state = follower.producer_state().await.unwrap();
    assert_eq!(state.entry(7).map(|e| e.last_seq()), Some(2));

    // It leads from epoch 2. The producer's retry of seq 3 is appended, not answered from a
    // batch that is gone; a retry of seq 0 (still held) is a duplicate.
    follower.become_leader(2, &[1, 2], &[2]).await;
    assert_eq!(follower.leader_epoch(), 2);
    let retried = follower
        .append(&mut idempotent_batch(7, 3, 3))
        .await
        .unwrap();
    follower.wait_durable(&retried).await.unwrap();
    assert_eq!((retried.base_offset, retried.last_offset), (3, 5));
    assert_eq!(follower.log.log_end_offset(), 6);
    let duplicate = follower
        .append(&mut idempotent_batch(7, 0, 3))
        .await
        .unwrap();
    assert_eq!(duplicate.base_offset, 0);
    assert_eq!(follower.log.log_end_offset(), 6);
    assert_eq!(
        follower.log.leader_epochs().await.latest_epoch(),
        Some(2),
        "the new leader's batches carry its epoch"
    );
}

#[tokio::test]
async fn a_follower_made_leader_while_it_truncates_leads_from_the_cut_log() {
    // The bug (60 s replication swarm seed 370): the catalog made a follower the leader while
    // its truncation was still cutting the log; the leadership took the log end before the
    // cut for its high watermark, and the cut then left the leader's log end below it (the
    // broker panicked: "a leader's log end 611 fell below its high watermark 613").
    let leader_fixture = Fixture::new(1, FaultyDiskConfig::default(), small_segments());
    let leader = leader_with_three_batches_of_producer_7(&leader_fixture).await;
    let fetched = leader.log.read(0, 1 << 20, None).await.unwrap().records;
    let follower_fixture = follower_fixture();
    let follower = partition(&follower_fixture, 2).await;
    follower.become_follower(1, 1);
    follower.append_as_follower(&fetched, 1).await.unwrap();
    follower.log.flush().await.unwrap();
    follower.update_high_watermark_as_follower(9);
    assert_eq!(follower.high_watermark(), 9);

    // Every disk operation of the truncation now takes a while: it is still cutting when the
    // catalog makes the replica the leader of epoch 2, alone in its ISR.
    follower_fixture.disk.set_config(FaultyDiskConfig {
        latency: Some((Duration::from_millis(20), Duration::from_millis(20))),
        ..follower_fixture.disk.config()
    });
    let truncating = tokio::spawn({
        let follower = Arc::clone(&follower);
        async move { follower.truncate_to(3).await }
    });
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    follower.become_leader(2, &[1, 2], &[2]).await;
    let cut = truncating
        .await
        .expect("the truncation finishes without a panic");
    assert_eq!(
        cut.unwrap(),
        3,
        "the truncation that began as a follower's finishes"
    );
    let state = follower.replica_state();
    assert_eq!(state.role(), Role::Leader);
    assert_eq!(follower.log.log_end_offset(), 3);
    assert!(
        state.high_watermark() <= 3,
        "the leader's high watermark {} is within its log",
        state.high_watermark()
    );
}

#[tokio::test]
async fn a_follower_refuses_batches_fetched_from_the_leader_of_an_epoch_it_no_longer_follows() {
    // The bug (issue 11, txn-swarm seed 3): a fetch from the epoch-1 leader was still on its
    // way when the follower learned of epoch 2 and reconciled with the new leader; the late
    // response was appended after the reconciliation, so the follower held the old leader's
    // batch at an offset where the new leader holds its own, fetched on after it, and joined
    // the ISR with a batch below the high watermark the leader never had.
    let leader_fixture = Fixture::new(3, FaultyDiskConfig::default(), small_segments());
    let leader = partition(&leader_fixture, 1).await;
    for seq in [0, 3] {
        let info = leader
            .append(&mut idempotent_batch(7, seq, 3))
            .await
            .unwrap();
        leader.wait_durable(&info).await.unwrap();
    }
    let fetched = leader.log.read(0, 1 << 20, None).await.unwrap().records;
    let first = broker::log::batch::BatchHeader::parse(&fetched)
        .unwrap()
        .size();

    let mut follower_fixture = Fixture::new(4, FaultyDiskConfig::default(), small_segments());
    follower_fixture.dir = PathBuf::from("/follower/t-0");
    let follower = partition(&follower_fixture, 2).await;
    follower.become_follower(1, 1);
    follower
        .append_as_follower(&fetched[..first], 1)
        .await
        .unwrap();
    assert_eq!(follower.follower_log().await.1, 3);

    // Broker 3 leads from epoch 2; the rest of the epoch-1 fetch arrives only now.
    follower.become_follower(2, 3);
    let late = follower.append_as_follower(&fetched[first..], 1).await;
    assert!(
        matches!(
            late,
            Err(broker::log::FollowerAppendError::StaleLeaderEpoch {
                fetched_in: 1,
                current: 2
            })
        ),
        "a batch fetched in epoch 1 appended while following in epoch 2: {late:?}"
    );
    assert_eq!(
        follower.follower_log().await.1,
        3,
        "the log end moved past what the reconciliation with the new leader saw"
    );
    // What is fetched in the epoch it follows in is appended.
    follower
        .append_as_follower(&fetched[first..], 2)
        .await
        .unwrap();
    assert_eq!(follower.log.log_end_offset(), 6);
}

#[tokio::test]
async fn observing_a_partition_as_served_leaves_its_own_high_watermark_alone() {
    // The bug (issue 13): the simulator's online check read `high_watermark()`, which brings
    // the HW up to date with the log first, so checking a run moved its HW and a run with the
    // checks was not the run without them.
    let fixture = Fixture::new(4, FaultyDiskConfig::default(), small_segments());
    let partition = partition(&fixture, 1).await;
    let info = partition
        .append(&mut idempotent_batch(7, 0, 3))
        .await
        .unwrap();
    partition.wait_durable(&info).await.unwrap();
    assert_eq!(partition.high_watermark(), 3);
    // Appended (and synced) behind the partition's back: its replica state has not seen it.
    let epoch = partition.leader_epoch();
    partition
        .log
        .append(&mut idempotent_batch(8, 0, 3), epoch)
        .await
        .unwrap();
    assert_eq!(
        partition.replica_state_as_served().high_watermark(),
        6,
        "as the next fetch will find it"
    );
    assert_eq!(
        partition.replica_state().high_watermark(),
        3,
        "looking did not move the partition's HW"
    );
    assert_eq!(partition.high_watermark(), 6);
}

#[tokio::test]
async fn a_produce_that_passed_the_leader_check_as_the_replica_became_a_follower_is_refused() {
    // The bug (60 s replication swarm seed 38, fixed by 5d5974c): a produce checked the role
    // only before it took any lock, and a plain one appended without the producers' lock. One
    // that passed the check while the catalog made the replica a follower appended into the
    // follower's log after the reconciliation with the new leader had read its log end: a
    // batch no truncation cuts, and the follower's next append fell below its log end.
    let fixture = Fixture::new(5, FaultyDiskConfig::default(), small_segments());
    let gate = Arc::new(Gate::default());
    let disk = GatedDisk::new(
        Arc::new(fixture.disk.clone()),
        Arc::clone(&gate),
        Held::SegmentAppends,
    );
    let log = Log::open(
        Arc::new(disk),
        fixture.clock.clone(),
        fixture.dir.clone(),
        fixture.config.clone(),
    )
    .await
    .unwrap();
    let replica = Arc::new(Partition::open("t".into(), 0, log, 1).await.unwrap());
    let info = replica
        .append(&mut batch_with_id(1, 3, 10, T0))
        .await
        .unwrap();
    replica.wait_durable(&info).await.unwrap();

    // Produce 2 leads: the gate holds the write of its bytes, under the producers' lock.
    gate.hold_next();
    let second = tokio::spawn({
        let replica = Arc::clone(&replica);
        async move { replica.append(&mut batch_with_id(2, 3, 10, T0)).await }
    });
    gate.one_is_waiting().await;
    // Produce 3 finds the replica leading and waits for produce 2 to finish.
    let mut third_batch = batch_with_id(3, 3, 10, T0);
    let third = replica.append(&mut third_batch);
    tokio::pin!(third);
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(third.as_mut().poll(cx))).await;
    assert!(
        first_poll.is_pending(),
        "produce 3 passed the leader check and waits: {first_poll:?}"
    );

    // The catalog makes the replica a follower of broker 2 in epoch 1; then produce 2's write
    // completes.
    replica.become_follower(1, 2);
    gate.open();
    let second = second.await.expect("produce 2's task");
    assert_eq!(
        second.expect("produce 2 appended as leader").base_offset,
        3,
        "produce 2 checked the role under the lock before the change, as Kafka's append \
         under leaderIsrUpdateLock finishes before makeFollower"
    );
    let refused = third.await;
    assert!(
        matches!(refused, Err(ProduceError::NotLeader)),
        "a follower took a client's produce: {refused:?}"
    );
    assert_eq!(
        errors::produce(&refused.unwrap_err()),
        ResponseError::NotLeaderOrFollower
    );

    let (epochs, log_end) = replica.follower_log().await;
    assert_eq!(
        log_end, 6,
        "the follower's log holds only what its leadership appended"
    );
    assert_eq!(epochs.latest_epoch(), Some(0));
    let ids: Vec<u64> = Fixture::read_all(&replica.log)
        .await
        .iter()
        .map(|(_, bytes)| id_of(bytes))
        .collect();
    assert_eq!(ids, [1, 2]);
}
