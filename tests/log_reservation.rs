//! The offset reservation (issue 9, defect 2): after an unclean restart the log skips only the
//! offsets that could have been shown before the crash, not a fixed million. See
//! `broker::log::reservation` for the argument; the model test (`log_model.rs`) checks that no
//! offset is ever reused.
#![cfg(not(madsim))]

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use broker::log::{FlushPolicy, Log, LogConfig};
use chaos::{FaultyDisk, FaultyDiskConfig};
use common::*;

fn lazy() -> FlushPolicy {
    FlushPolicy::Lazy {
        flush_messages: None,
        flush_ms: None,
    }
}

#[tokio::test]
async fn an_idle_partition_keeps_its_log_end_across_an_unclean_restart() {
    // The bug: every unclean restart skipped the whole reservation ahead of the log end (about
    // a million offsets), so a partition holding one record showed LOG-END-OFFSET 1048576 and a
    // lag of 1048575 that did not exist, and again after every further crash.
    for flush in [FlushPolicy::Durable, lazy()] {
        let f = Fixture::new(
            11,
            FaultyDiskConfig::default(),
            LogConfig {
                flush,
                ..LogConfig::default()
            },
        );
        let log = f.open().await;
        log.append(&mut batch_with_id(0, 1, 100, T0), 0)
            .await
            .unwrap();
        // An acks=1 append shows its offsets before the sync.
        log.append_unsynced(&mut batch_with_id(1, 3, 100, T0), 0)
            .await
            .unwrap();
        log.flush().await.unwrap();
        // The broker's maintenance tick, once everything is durable.
        log.tidy_checkpoint().await;
        let end = log.log_end_offset();
        assert_eq!(end, 4);
        drop(log);
        for crash in 0..3 {
            f.disk.crash();
            let log = f.open().await;
            assert!(!log.recovery().clean);
            assert_eq!(
                log.log_end_offset(),
                end,
                "{flush:?}: crash {crash} moved an idle log"
            );
            assert_eq!(log.recovery().offsets_skipped, 0);
        }
    }
}

#[tokio::test]
async fn an_acknowledged_offset_shown_before_its_sync_is_not_reused_after_a_crash() {
    // The other side of the idle test: what was shown unsynced and lost must be skipped.
    let f = Fixture::new(12, FaultyDiskConfig::default(), LogConfig::default());
    let log = f.open().await;
    log.append(&mut batch_with_id(0, 2, 100, T0), 0)
        .await
        .unwrap();
    // A trickle: the reservation grows by its smallest step.
    f.clock.advance_ms(10_000);
    let shown = log
        .append_unsynced(&mut batch_with_id(1, 5, 100, T0), 0)
        .await
        .unwrap();
    drop(log);
    f.disk.crash();
    let log = f.open().await;
    assert!(
        log.log_end_offset() > shown.last_offset,
        "log end {} would reuse offset {} an acks=1 producer was told",
        log.log_end_offset(),
        shown.last_offset
    );
    assert!(log.recovery().offsets_skipped <= 5 + broker::log::reservation::MIN_STEP);
}

#[tokio::test]
async fn offsets_after_a_crash_under_load_exceed_the_acknowledged_count_by_at_most_one_percent() {
    // The bug: a kill -9 with 20,000 acknowledged records in three partitions left high
    // watermarks adding up to 3,145,728. Here 24 producers (8 per partition) append with
    // acks=all on a disk with latency until 20,000 records are acknowledged, and the power
    // fails with appends in flight.
    let disk = FaultyDisk::new(
        13,
        FaultyDiskConfig {
            latency: Some((Duration::ZERO, Duration::from_micros(300))),
            ..FaultyDiskConfig::default()
        },
    );
    let clock = Arc::new(broker::clock::ManualClock::new(T0));
    let open = |p: usize| {
        Log::open(
            Arc::new(disk.clone()),
            clock.clone(),
            format!("/data/t-{p}").into(),
            LogConfig {
                segment_bytes: 64 * 1024,
                ..LogConfig::default()
            },
        )
    };
    let mut logs = Vec::new();
    for p in 0..3 {
        logs.push(Rc::new(open(p).await.unwrap()));
    }
    let acknowledged = Rc::new(Cell::new(0u64));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let mut producers = Vec::new();
            for (p, log) in logs.iter().enumerate() {
                for producer in 0..8u64 {
                    let log = Rc::clone(log);
                    let acknowledged = Rc::clone(&acknowledged);
                    producers.push(tokio::task::spawn_local(async move {
                        for i in 0u64.. {
                            let id = ((p as u64) << 40) | (producer << 32) | i;
                            let mut batch = batch_with_id(id, 10, 50, T0);
                            let Ok(info) = log.append_unexposed(&mut batch, 0).await else {
                                return;
                            };
                            if log.wait_append_durable(&info).await.is_err() {
                                return;
                            }
                            acknowledged.set(acknowledged.get() + 10);
                        }
                    }));
                }
            }
            while acknowledged.get() < 20_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            disk.crash();
            for producer in producers {
                producer.await.unwrap();
            }
        })
        .await;
    drop(logs);
    let acknowledged = acknowledged.get();
    let mut high_watermarks = 0;
    for p in 0..3 {
        let log = open(p).await.unwrap();
        high_watermarks += log.log_end_offset();
    }
    assert!(
        high_watermarks >= acknowledged,
        "lost acknowledged records: {high_watermarks} < {acknowledged}"
    );
    assert!(
        high_watermarks <= acknowledged + acknowledged / 100,
        "high watermarks add up to {high_watermarks} for {acknowledged} acknowledged records"
    );
}

#[tokio::test]
async fn a_log_that_goes_offline_and_back_does_not_jump() {
    // The bug: each EIO or full disk took the log offline, and each in-place recovery skipped
    // another reservation: a topic holding 11,221 records reached a log end of 59,768,833.
    let f = Fixture::new(14, FaultyDiskConfig::default(), LogConfig::default());
    let log = f.open().await;
    log.append(&mut batch_with_id(0, 2, 100, T0), 0)
        .await
        .unwrap();
    let mut end = log.log_end_offset();
    for round in 0..3u64 {
        if round % 2 == 0 {
            f.disk.fail_next_sync();
        } else {
            f.disk.set_capacity(Some(f.disk.used_bytes()));
        }
        assert!(log
            .append(&mut batch_with_id(1 + round, 2, 100, T0), 0)
            .await
            .is_err());
        // The failed sync's batch was assigned offsets (kept from reuse within the process);
        // the full disk's append was refused before any.
        let assigned_end = log.log_end_offset();
        assert!(assigned_end <= end + 2);
        // A full disk must not keep the log offline: recovery needs no free space.
        assert!(
            log.reopen().await.unwrap(),
            "round {round}: log stays offline"
        );
        f.disk.set_capacity(None);
        assert_eq!(
            log.log_end_offset(),
            assigned_end,
            "round {round}: the log end jumped"
        );
        end = assigned_end;
    }
    let info = log
        .append(&mut batch_with_id(9, 2, 100, T0), 0)
        .await
        .unwrap();
    assert_eq!(info.base_offset, end);
}

#[tokio::test]
async fn a_bit_flip_in_the_last_acknowledged_batch_does_not_let_its_offsets_be_reused() {
    // The bug (found by the swarm scenario, seed 8): recovery took a flipped bit in the tail's
    // last batch for a torn write and cut it, and with nothing reserved under the durable
    // policy the next appends got the offsets of records already acknowledged and read: two
    // values at one offset. The cut bytes' offsets are skipped instead.
    let len = batch_with_id(0, 2, 100, T0).len() as u64;
    // A flip in the payload (inside the CRC), in the base offset (outside it), and in the
    // batch length (the scan cannot step over it).
    for (byte, bit) in [(len * 4 + 90, 3u8), (len * 4 + 7, 0), (len * 4 + 10, 6)] {
        let f = Fixture::new(15, FaultyDiskConfig::default(), LogConfig::default());
        let log = f.open().await;
        let mut last = None;
        for id in 0..5 {
            last = Some(
                log.append(&mut batch_with_id(id, 2, 100, T0), 0)
                    .await
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        let read = log.read(last.base_offset, 1 << 20, None).await.unwrap();
        assert_eq!(
            id_of(&batches(&read.records)[0].1),
            4,
            "the batch was shown"
        );
        drop(log);
        f.disk.flip_bit(&f.segment_path(0), byte, bit).unwrap();
        f.disk.crash();
        let log = f.open().await;
        assert!(
            log.log_end_offset() > last.last_offset,
            "flip at byte {byte}: log end {} would reuse offset {}",
            log.log_end_offset(),
            last.last_offset
        );
        let next = log
            .append(&mut batch_with_id(9, 1, 10, T0), 0)
            .await
            .unwrap();
        assert!(next.base_offset > last.last_offset);
        assert!(
            next.base_offset <= last.last_offset + 1 + 2,
            "skipped too far"
        );
    }
}

#[tokio::test]
async fn a_replicated_log_reserves_no_offsets_and_continues_from_what_it_recovered() {
    // The bug: the reservation, a single-replica policy, stayed on for replicated partitions:
    // a follower reserved at every append and a leader at every read for its followers and
    // every acks=1 answer, so after a power loss each replica wrote its own filler batch and
    // jumped about 2^20 offsets, and replicas held different batches at one offset. With
    // replicas, leader epochs and truncation keep an offset to one value, as in Kafka.
    let leader_fixture = Fixture::new(13, FaultyDiskConfig::default(), LogConfig::default());
    let follower_fixture = Fixture::new(14, FaultyDiskConfig::default(), LogConfig::default());
    let leader = leader_fixture.open().await;
    let follower = follower_fixture.open().await;
    leader.set_replicated(true);
    follower.set_replicated(true);
    leader
        .append(&mut batch_with_id(0, 2, 100, T0), 0)
        .await
        .unwrap();
    // An acks=1 answer and a follower's fetch both show offsets before the leader's sync.
    leader
        .append_unsynced(&mut batch_with_id(1, 5, 100, T0), 0)
        .await
        .unwrap();
    let fetched = leader.read(0, 1 << 20, None).await.unwrap().records;
    assert_eq!(
        batches(&fetched).len(),
        2,
        "the follower reads to the log end"
    );
    follower.append_as_follower(&fetched).await.unwrap();
    assert_eq!(follower.log_end_offset(), 7);
    let durable = [leader.durable_end_offset(), follower.durable_end_offset()];
    drop(leader);
    drop(follower);
    for (fixture, durable) in [(leader_fixture, durable[0]), (follower_fixture, durable[1])] {
        fixture.disk.crash();
        let log = fixture.open().await;
        assert_eq!(log.recovery().offsets_skipped, 0, "a replica jumped ahead");
        assert!(
            log.log_end_offset() >= durable && log.log_end_offset() <= 7,
            "log end {} after a crash of a log durable to {durable}",
            log.log_end_offset()
        );
    }
}

#[tokio::test]
async fn a_followers_log_recovered_in_place_skips_nothing_and_fetches_the_leaders_batches_again() {
    // The bug (issue 11, replication-swarm seed 3): a follower's log that went offline after an
    // EIO was recovered in place as a single replica's, so the offsets it had fetched but not
    // synced were covered by a filler batch of its own. The leader had its own batches there;
    // the follower fetched on from after the filler and, once the high watermark passed it, an
    // ISR member held a batch the leader never had below the high watermark. A follower's log
    // is a copy of the leader's: it continues from what survived and fetches the rest again.
    use broker::partition::Partition;
    let config = LogConfig {
        flush: lazy(),
        ..LogConfig::default()
    };
    let leader = Fixture::new(16, FaultyDiskConfig::default(), config.clone());
    let follower = Fixture::new(17, FaultyDiskConfig::default(), config);
    let leader_log = leader.open().await;
    leader_log.set_replicated(true);
    for id in 0..3 {
        leader_log
            .append(&mut batch_with_id(id, 2, 100, T0), 0)
            .await
            .unwrap();
    }
    let fetched = leader_log.read(0, 1 << 20, None).await.unwrap().records;
    let leaders = batches(&fetched);
    assert_eq!(leaders.len(), 3);
    let first_len = leaders[0].1.len();
    let log = Log::open_replicated(
        Arc::new(follower.disk.clone()),
        follower.clock.clone(),
        follower.dir.clone(),
        follower.config.clone(),
    )
    .await
    .unwrap();
    let partition = Partition::open_unassigned("t".into(), 0, log, 2)
        .await
        .unwrap();
    partition.become_follower(0, 1);
    partition
        .append_as_follower(&fetched[..first_len], 0)
        .await
        .unwrap();
    partition.log.flush().await.unwrap();
    // Fetched, not synced: lost when the next sync fails and the log goes offline.
    partition
        .append_as_follower(&fetched[first_len..], 0)
        .await
        .unwrap();
    assert_eq!(partition.log.log_end_offset(), 6);
    follower.disk.fail_next_sync();
    assert!(partition.log.flush().await.is_err());
    assert!(
        partition.recover_if_offline().await,
        "the log stays offline"
    );
    assert_eq!(
        (
            partition.log.log_end_offset(),
            partition.replica_state().role()
        ),
        (2, broker::replica::Role::Follower { leader: 1 }),
        "the follower's log does not continue from what survived"
    );
    // The fetch from the new log end takes the leader's batches again: one log.
    let refetched = leader_log.read(2, 1 << 20, None).await.unwrap().records;
    partition.append_as_follower(&refetched, 0).await.unwrap();
    let held: Vec<Vec<u8>> = Fixture::read_all(&partition.log)
        .await
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    let led: Vec<Vec<u8>> = leaders.into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(
        held, led,
        "the follower holds other batches than its leader"
    );
}

#[tokio::test]
async fn a_replicated_log_still_skips_the_offsets_of_damage_at_rest_that_cut_whole_batches() {
    // The regression a first fix for issue 11 had (replication-swarm seed 6): a replicated
    // log skipping nothing after a crash also dropped the offsets of a bit flip in the middle
    // of its tail segment, with whole batches after it; the replica, the only one in sync,
    // led again and gave those acknowledged offsets to other records. Damage at rest is not a
    // torn write: its offsets stay skipped (the bytes stay in the segment).
    let f = Fixture::new(18, FaultyDiskConfig::default(), LogConfig::default());
    let open = || async {
        Log::open_replicated(
            Arc::new(f.disk.clone()),
            f.clock.clone(),
            f.dir.clone(),
            f.config.clone(),
        )
        .await
        .unwrap()
    };
    let log = open().await;
    let len = batch_with_id(0, 2, 100, T0).len() as u64;
    for id in 0..5 {
        log.append(&mut batch_with_id(id, 2, 100, T0), 0)
            .await
            .unwrap();
    }
    drop(log);
    // A flipped bit in the third batch's length (offsets 4 and 5): the scan cannot step over
    // it to the two whole batches after it, so the tail is cut from there.
    f.disk
        .flip_bit(&f.segment_path(0), len * 2 + 10, 6)
        .unwrap();
    f.disk.crash();
    let log = open().await;
    assert_eq!(
        log.log_end_offset(),
        10,
        "acknowledged offsets after damage at rest would be given again"
    );
}
