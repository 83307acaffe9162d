//! Transactions on one partition (issue 12, partition side): markers written by the
//! coordinator's path, client control batches refused, the last stable offset held back by an
//! open transaction, and open transactions rebuilt after a clean restart and after a crash.
#![cfg(not(madsim))]

mod common;

use std::sync::Arc;

use broker::log::batch::{self, builder};
use broker::log::{AppendError, FlushPolicy, LogConfig};
use broker::partition::{Partition, ProduceError};
use broker::txn::marker::{ControlType, Marker};
use broker::txn::producer_state::{CompletedTxn, MarkerRefused, SequenceError};
use chaos::FaultyDiskConfig;
use common::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    }
}

async fn open(f: &Fixture) -> Arc<Partition> {
    Arc::new(
        Partition::open("t".into(), 0, f.open().await, 1)
            .await
            .expect("partition opens"),
    )
}

/// A batch of `records` records from producer `pid` at `seq`, transactional or not.
fn produced(pid: i64, seq: i32, records: usize, transactional: bool) -> Vec<u8> {
    let built = builder::simple(records, 20, b'v', T0);
    let built = if transactional {
        builder::with_attributes(built, batch::TRANSACTIONAL_BIT)
    } else {
        built
    };
    builder::with_producer(built, pid, 0, seq)
}

/// Appends acks=all; returns the base offset.
async fn append(partition: &Arc<Partition>, mut bytes: Vec<u8>) -> u64 {
    let info = partition.append_unexposed(&mut bytes).await.unwrap();
    partition.wait_durable(&info).await.unwrap();
    info.base_offset
}

async fn end_txn(
    partition: &Arc<Partition>,
    pid: i64,
    control: ControlType,
) -> Option<CompletedTxn> {
    let marker = Marker {
        control,
        coordinator_epoch: 0,
    };
    let (info, completed) = partition.write_marker(pid, 0, marker, T0).await.unwrap();
    partition.wait_durable(&info).await.unwrap();
    completed
}

#[tokio::test]
async fn an_open_transaction_holds_the_lso_until_its_commit_marker_is_written() {
    let f = Fixture::new(1, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    append(&partition, produced(1, 0, 2, false)).await;
    assert_eq!(partition.last_stable_offset().await.unwrap(), 2);
    let first = append(&partition, produced(7, 0, 3, true)).await;
    append(&partition, produced(7, 3, 3, true)).await;
    append(&partition, produced(1, 2, 2, false)).await;
    assert_eq!(partition.high_watermark(), 10);
    assert_eq!(partition.last_stable_offset().await.unwrap(), first);
    let completed = end_txn(&partition, 7, ControlType::Commit).await.unwrap();
    assert_eq!(
        (
            completed.first_offset,
            completed.last_offset,
            completed.aborted
        ),
        (first, 10, false)
    );
    assert_eq!(partition.last_stable_offset().await.unwrap(), 11);
}

#[tokio::test]
async fn an_abort_marker_is_stored_as_a_control_batch_and_reports_the_aborted_transaction() {
    let f = Fixture::new(2, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    let first = append(&partition, produced(7, 0, 3, true)).await;
    let completed = end_txn(&partition, 7, ControlType::Abort).await.unwrap();
    assert!(completed.aborted);
    let log = Fixture::read_all(&partition.log).await;
    let (header, bytes) = log.last().unwrap();
    assert!(header.is_control() && header.is_transactional());
    assert_eq!(header.base_offset, 3);
    assert_eq!(
        broker::txn::marker::decode(bytes).unwrap().unwrap().control,
        ControlType::Abort
    );
    assert_eq!(completed.first_offset, first);
    assert_eq!(partition.last_stable_offset().await.unwrap(), 4);
}

#[tokio::test]
async fn a_client_produce_of_a_control_batch_is_refused_as_an_invalid_record() {
    let f = Fixture::new(3, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    let mut forged = broker::txn::marker::encode(
        7,
        0,
        Marker {
            control: ControlType::Commit,
            coordinator_epoch: 0,
        },
        T0,
    );
    let refused = partition.append(&mut forged).await;
    assert!(
        matches!(
            refused,
            Err(ProduceError::Append(AppendError::InvalidRecords(_)))
        ),
        "{refused:?}"
    );
    assert_eq!(partition.log.log_end_offset(), 0);
}

#[tokio::test]
async fn a_non_transactional_write_inside_an_open_transaction_is_invalid_txn_state() {
    let f = Fixture::new(4, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    append(&partition, produced(7, 0, 1, true)).await;
    let refused = partition.append(&mut produced(7, 1, 1, false)).await;
    assert!(matches!(
        refused,
        Err(ProduceError::Sequence(SequenceError::InvalidTxnState {
            producer_id: 7
        }))
    ));
}

#[tokio::test]
async fn a_marker_from_an_older_coordinator_epoch_is_fenced() {
    let f = Fixture::new(5, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    append(&partition, produced(7, 0, 1, true)).await;
    let marker = |coordinator_epoch| Marker {
        control: ControlType::Commit,
        coordinator_epoch,
    };
    partition.write_marker(7, 0, marker(3), T0).await.unwrap();
    let end = partition.log.log_end_offset();
    let refused = partition.write_marker(7, 0, marker(2), T0).await;
    assert!(matches!(
        refused,
        Err(ProduceError::Marker(
            MarkerRefused::CoordinatorFenced { .. }
        ))
    ));
    assert_eq!(
        partition.log.log_end_offset(),
        end,
        "a refused marker is not written"
    );
}

#[tokio::test]
async fn an_open_transaction_and_the_lso_come_back_after_a_clean_restart_and_after_a_crash() {
    let f = Fixture::new(6, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    // Enough data to roll segments (and write roll snapshots) while the transaction is open.
    append(&partition, produced(7, 0, 1, true)).await;
    for seq in 0..80 {
        append(&partition, produced(1, seq * 5, 5, false)).await;
    }
    assert!(partition.log.segment_count().await > 2);
    assert_eq!(partition.last_stable_offset().await.unwrap(), 0);
    partition.close().await.unwrap();
    drop(partition);

    let partition = open(&f).await;
    assert!(partition.producer_state_snapshot().is_some());
    assert_eq!(
        partition.last_stable_offset().await.unwrap(),
        0,
        "after a clean restart"
    );
    drop(partition);
    f.disk.crash();

    let partition = open(&f).await;
    assert_eq!(
        partition.last_stable_offset().await.unwrap(),
        0,
        "after a crash"
    );
    let completed = end_txn(&partition, 7, ControlType::Commit).await.unwrap();
    assert_eq!(completed.first_offset, 0);
    let end = partition.log.log_end_offset();
    assert_eq!(partition.last_stable_offset().await.unwrap(), end);
}

#[tokio::test]
async fn a_transaction_committed_before_a_crash_stays_closed_after_it() {
    // The rebuild must replay markers, not only data batches: otherwise the committed
    // transaction comes back open and holds the LSO forever.
    let f = Fixture::new(7, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    append(&partition, produced(7, 0, 2, true)).await;
    end_txn(&partition, 7, ControlType::Commit).await.unwrap();
    append(&partition, produced(1, 0, 2, false)).await;
    let end = partition.log.log_end_offset();
    assert_eq!(partition.last_stable_offset().await.unwrap(), end);
    drop(partition);
    f.disk.crash();
    let partition = open(&f).await;
    assert_eq!(partition.log.log_end_offset(), end);
    assert_eq!(partition.last_stable_offset().await.unwrap(), end);
    let state = partition.producer_state().await.unwrap();
    assert_eq!(state.ongoing_transactions().count(), 0);
}

/// (producer id, first offset, marker offset) of the aborted transactions a read_committed
/// fetch of `[from, to)` reports.
fn aborted(partition: &Partition, from: u64, to: u64) -> Vec<(i64, u64, u64)> {
    partition
        .aborted_transactions(from, to)
        .iter()
        .map(|t| (t.producer_id, t.first_offset, t.last_offset))
        .collect()
}

#[tokio::test]
async fn aborted_transactions_are_listed_for_the_fetch_ranges_they_meet() {
    let f = Fixture::new(8, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    append(&partition, produced(7, 0, 2, true)).await; // 0..=1
    append(&partition, produced(8, 0, 2, true)).await; // 2..=3
    end_txn(&partition, 8, ControlType::Commit).await; // 4
    append(&partition, produced(7, 2, 2, true)).await; // 5..=6
    end_txn(&partition, 7, ControlType::Abort).await; // 7
    append(&partition, produced(1, 0, 2, false)).await; // 8..=9
    assert_eq!(aborted(&partition, 0, 10), vec![(7, 0, 7)]);
    assert_eq!(
        aborted(&partition, 2, 4),
        vec![(7, 0, 7)],
        "it spans the range"
    );
    assert_eq!(aborted(&partition, 8, 10), vec![]);
    assert_eq!(partition.last_stable_offset().await.unwrap(), 10);
}

#[tokio::test]
async fn aborted_transactions_come_back_after_a_clean_restart_and_after_a_crash() {
    let f = Fixture::new(9, FaultyDiskConfig::default(), config());
    let partition = open(&f).await;
    append(&partition, produced(7, 0, 2, true)).await;
    end_txn(&partition, 7, ControlType::Abort).await; // 2
                                                      // Rolls (and roll snapshots past the marker), then a second abort after the last one.
    for seq in 0..80 {
        append(&partition, produced(1, seq * 5, 5, false)).await;
    }
    assert!(partition.log.segment_count().await > 2);
    let snapshot_base = partition.log.active_segment_base();
    append(&partition, produced(8, 0, 1, true)).await;
    let second = end_txn(&partition, 8, ControlType::Abort).await.unwrap();
    assert!(second.last_offset > snapshot_base);
    let end = partition.log.log_end_offset();
    let expected = vec![(7, 0, 2), (8, second.first_offset, second.last_offset)];
    assert_eq!(aborted(&partition, 0, end), expected);
    drop(partition);

    // A crash: the first from its (synced) file below the roll snapshot, the second replayed.
    f.disk.crash();
    let partition = open(&f).await;
    assert!(partition.producer_state_snapshot().unwrap() > 2);
    assert_eq!(aborted(&partition, 0, end), expected, "after a crash");
    partition.close().await.unwrap();
    drop(partition);

    let partition = open(&f).await;
    assert_eq!(
        aborted(&partition, 0, end),
        expected,
        "after a clean restart"
    );
}
