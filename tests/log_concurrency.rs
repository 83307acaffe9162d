//! The log under concurrency: readers never wait for the disk's syncs, and a group commit
//! never outlives a failed sync (issue 9, defect 9).
//!
//! The first bug: the log's state lock was held across the fsyncs of a segment roll (the old
//! segment, its two index files, the directory, the checkpoint) and of an offset-reservation
//! checkpoint, and every read took the same lock. A consumer fetching at the tail stalled for
//! the whole roll at every segment boundary: a latency spike of several fsyncs, on every
//! partition that rolled.
//!
//! These tests hold every sync of the disk open (a gate in front of the faulty disk, see
//! [`common::gated_disk`]), start the write that must sync, and then demand that a read
//! completes before the gate opens.
//!
//! The second: a group commit's sync that finished after a roll's sync of the same file had
//! failed advanced the durable end over bytes the failure had dropped (fsyncgate), and
//! acknowledged a batch that was gone. The simulator's log workload found it (seeds 49, 94 and
//! 272 of `cargo sim log-workload` once reads stopped waiting for syncs on a branch).

mod common;

use std::sync::Arc;
use std::time::Duration;

use broker::clock::ManualClock;
use broker::log::{FlushPolicy, Log, LogConfig};
use chaos::{FaultyDisk, FaultyDiskConfig};
use common::gated_disk::{Gate, GatedDisk, Held};
use common::*;

async fn gated_log(config: LogConfig) -> (Arc<Log>, Arc<Gate>) {
    let (log, gate, _) = gated_log_on_faulty_disk(config).await;
    (log, gate)
}

async fn gated_log_on_faulty_disk(config: LogConfig) -> (Arc<Log>, Arc<Gate>, FaultyDisk) {
    let gate = Arc::new(Gate::default());
    let faulty = FaultyDisk::new(7, FaultyDiskConfig::default());
    let disk = GatedDisk::new(Arc::new(faulty.clone()), Arc::clone(&gate), Held::Syncs);
    let log = Log::open(
        Arc::new(disk),
        Arc::new(ManualClock::new(T0)),
        "/data/topic-0".into(),
        config,
    )
    .await
    .expect("log opens");
    (Arc::new(log), gate, faulty)
}

/// Not a timing assertion: with every sync held, a read that needs one never finishes. The
/// bound only turns that hang into a failure.
const HANG: Duration = Duration::from_secs(10);

/// Appends `batch` in a task while the gate is closed; returns once the append waits on a sync.
async fn append_blocked_on_a_sync(
    log: &Arc<Log>,
    gate: &Gate,
    batch: Vec<u8>,
) -> tokio::task::JoinHandle<u64> {
    gate.close();
    let appender = {
        let log = Arc::clone(log);
        tokio::spawn(async move {
            let mut batch = batch;
            log.append(&mut batch, 0).await.expect("append").base_offset
        })
    };
    gate.one_is_waiting().await;
    appender
}

#[tokio::test]
async fn a_read_at_the_tail_is_served_while_a_segment_roll_waits_for_its_syncs() {
    let (log, gate) = gated_log(LogConfig {
        segment_bytes: 4096,
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    })
    .await;
    let first = batch_with_id(1, 3, 1000, T0);
    log.append(&mut first.clone(), 0).await.expect("append");
    assert_eq!(log.segment_count().await, 1);

    // The second batch does not fit: its append rolls, and the roll's first sync is held.
    let appender = append_blocked_on_a_sync(&log, &gate, batch_with_id(2, 3, 1000, T0)).await;
    let read = tokio::time::timeout(HANG, log.read(0, 1 << 20, None))
        .await
        .expect("a read must not wait for the roll's sync")
        .expect("read");
    assert_eq!(
        batches(&read.records).len(),
        1,
        "the sealed segment's batch"
    );
    assert_eq!(id_of(&batches(&read.records)[0].1), 1);
    assert_eq!(
        read.log_end_offset, 3,
        "the second batch is not published yet"
    );

    gate.open();
    assert_eq!(appender.await.expect("appender"), 3);
    assert_eq!(log.segment_count().await, 2, "the append rolled");
    let tail = log.read(3, 1 << 20, None).await.expect("read");
    assert_eq!(id_of(&batches(&tail.records)[0].1), 2);
}

#[tokio::test]
async fn a_read_is_served_while_an_append_syncs_its_offset_reservation() {
    let (log, gate) = gated_log(LogConfig {
        offset_reservation: 1,
        flush: FlushPolicy::Lazy {
            flush_messages: None,
            flush_ms: None,
        },
        ..LogConfig::default()
    })
    .await;
    log.append(&mut batch_with_id(1, 3, 100, T0), 0)
        .await
        .expect("append");

    // Offsets 3..=5 pass the reservation (4: a step of at most 1 past the first batch): the
    // append writes and syncs a new checkpoint.
    let appender = append_blocked_on_a_sync(&log, &gate, batch_with_id(2, 3, 100, T0)).await;
    let read = tokio::time::timeout(HANG, log.read(0, 1 << 20, None))
        .await
        .expect("a read must not wait for the reservation's sync")
        .expect("read");
    assert_eq!(id_of(&batches(&read.records)[0].1), 1);
    assert_eq!(read.log_end_offset, 3);
    assert_eq!(
        tokio::time::timeout(HANG, log.offset_for_timestamp(T0))
            .await
            .expect("a ListOffsets must not wait for the sync")
            .expect("lookup"),
        Some((0, T0))
    );

    gate.open();
    assert_eq!(appender.await.expect("appender"), 3);
    assert_eq!(log.log_end_offset(), 6);
}

#[tokio::test]
async fn a_read_is_served_while_retention_syncs_the_deletion_of_segments() {
    let (log, gate) = gated_log(LogConfig {
        segment_bytes: 4096,
        retention_bytes: Some(4096),
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    })
    .await;
    for id in 0..3 {
        log.append(&mut batch_with_id(id, 3, 1000, T0), 0)
            .await
            .expect("append");
    }
    assert_eq!(log.segment_count().await, 3);

    gate.close();
    let retention = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { log.apply_retention().await.expect("retention") })
    };
    gate.one_is_waiting().await;
    let read = tokio::time::timeout(HANG, log.read(6, 1 << 20, None))
        .await
        .expect("a read must not wait for retention's syncs")
        .expect("read");
    assert_eq!(id_of(&batches(&read.records)[0].1), 2);

    gate.open();
    assert_eq!(retention.await.expect("retention task"), 1);
    assert_eq!(log.log_start_offset(), 3);
}

#[tokio::test]
async fn a_group_commit_that_ends_after_a_failed_roll_sync_does_not_acknowledge_the_dropped_batch()
{
    let (log, gate, disk) = gated_log_on_faulty_disk(LogConfig {
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    })
    .await;
    log.append(&mut batch_with_id(1, 3, 100, T0), 0)
        .await
        .expect("append");

    // The batch's group commit reaches its sync and is held there.
    gate.hold_next();
    let appender = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut batch = batch_with_id(2, 3, 100, T0);
            log.append(&mut batch, 0).await
        })
    };
    gate.one_is_waiting().await;
    // A roll syncs the same segment first, and that sync fails: the batch's bytes are gone.
    disk.fail_next_sync();
    assert!(log.roll().await.is_err(), "the roll's sync failed");
    // Then the held sync completes, on a file that no longer holds the batch.
    gate.open();
    let outcome = appender.await.expect("appender");
    assert!(
        outcome.is_err(),
        "a batch whose bytes a failed sync dropped was acknowledged: {outcome:?}"
    );
    drop(log);
    let reopened = Log::open(
        Arc::new(disk.clone()),
        Arc::new(ManualClock::new(T0)),
        "/data/topic-0".into(),
        LogConfig::default(),
    )
    .await
    .expect("log reopens");
    let kept: Vec<u64> = Fixture::read_all(&reopened)
        .await
        .iter()
        .map(|(_, bytes)| id_of(bytes))
        .collect();
    assert_eq!(kept, [1], "only the acknowledged batch survives");
}
