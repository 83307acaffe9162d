//! The log as replication drives it: a follower's append (offsets and leader epochs kept as the
//! leader assigned them) and truncation to an offset, on `chaos::FaultyDisk`, power loss
//! included. Each test tells the bug it guards against.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use broker::disk::{Disk, DiskFile, OpenMode};
use broker::log::batch;
use broker::log::leader_epoch::EpochEntry;
use broker::log::{FollowerAppendError, Log, LogConfig, TruncateError};
use chaos::{FaultyDisk, FaultyDiskConfig};
use common::*;

/// A leader's log holding 12 batches of 3 records (ids 0..12) in leader epochs 1, 1, 1, 1, 3,
/// 3, 3, 3, 4, 4, 4, 4, over several small segments; returns the stored bytes of each batch.
async fn leader_log(f: &Fixture) -> (Log, Vec<Vec<u8>>) {
    let log = f.open().await;
    for id in 0..12u64 {
        let epoch = match id {
            0..4 => 1,
            4..8 => 3,
            _ => 4,
        };
        log.append(&mut batch_with_id(id, 3, 300, T0), epoch)
            .await
            .unwrap();
    }
    let stored = Fixture::read_all(&log)
        .await
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    (log, stored)
}

fn follower_fixture(seed: u64) -> Fixture {
    let mut f = Fixture::new(seed, FaultyDiskConfig::default(), small_segments());
    f.dir = PathBuf::from("/follower/topic-0");
    f
}

fn ids(log_batches: &[(batch::BatchHeader, Vec<u8>)]) -> Vec<u64> {
    log_batches.iter().map(|(_, b)| id_of(b)).collect()
}

#[tokio::test]
async fn a_follower_holds_exactly_the_leader_s_batches_offsets_and_epochs() {
    // The bug: a follower's append assigning its own offsets or epochs, so the replicas'
    // logs differ and OffsetsForLeaderEpoch answers differently on each.
    let leader = Fixture::new(1, FaultyDiskConfig::default(), small_segments());
    let (leader_log, stored) = leader_log(&leader).await;
    let f = follower_fixture(2);
    let follower = f.open().await;
    // Fetched in pieces of several batches, as a fetch response brings them.
    for chunk in stored.chunks(5) {
        let records: Vec<u8> = chunk.concat();
        let info = follower.append_as_follower(&records).await.unwrap();
        assert_eq!(info.last_offset + 1, follower.log_end_offset());
    }
    assert_eq!(follower.log_end_offset(), leader_log.log_end_offset());
    let copied: Vec<Vec<u8>> = Fixture::read_all(&follower)
        .await
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        copied, stored,
        "the follower's batches are the leader's bytes"
    );
    assert_eq!(
        follower.leader_epochs().await,
        leader_log.leader_epochs().await
    );
    assert_eq!(
        follower.leader_epochs().await.entries(),
        &[
            EpochEntry {
                epoch: 1,
                start_offset: 0
            },
            EpochEntry {
                epoch: 3,
                start_offset: 12
            },
            EpochEntry {
                epoch: 4,
                start_offset: 24
            },
        ]
    );
    // And it survives power loss once synced.
    follower.flush().await.unwrap();
    drop(follower);
    f.disk.crash();
    let follower = f.open().await;
    let after: Vec<Vec<u8>> = Fixture::read_all(&follower)
        .await
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(after, stored);
    assert_eq!(
        follower.leader_epochs().await,
        leader_log.leader_epochs().await
    );
}

#[tokio::test]
async fn a_follower_append_that_skips_offsets_or_goes_back_in_epoch_appends_nothing() {
    // The bug: a hole in a follower's log (a consumer of the follower, once it leads, would
    // wait at the hole forever), or an epoch older than the log's accepted as if current.
    let leader = Fixture::new(1, FaultyDiskConfig::default(), small_segments());
    let (_, stored) = leader_log(&leader).await;
    let f = follower_fixture(2);
    let follower = f.open().await;
    follower.append_as_follower(&stored[0]).await.unwrap();
    let end = follower.log_end_offset();
    match follower.append_as_follower(&stored[2]).await {
        Err(FollowerAppendError::NotContiguous { expected, found }) => {
            assert_eq!((expected, found), (3, 6));
        }
        other => panic!("a gap was not refused: {other:?}"),
    }
    let out_of_order = [stored[1].clone(), stored[3].clone()].concat();
    assert!(matches!(
        follower.append_as_follower(&out_of_order).await,
        Err(FollowerAppendError::NotContiguous {
            expected: 6,
            found: 9
        })
    ));
    // Batches 1..4 in epoch 1 are fine; an epoch-0 batch after epoch 3 is not.
    follower
        .append_as_follower(&stored[1..5].concat())
        .await
        .unwrap();
    let mut stale = stored[5].clone();
    batch::set_partition_leader_epoch(&mut stale, 2);
    assert!(matches!(
        follower.append_as_follower(&stale).await,
        Err(FollowerAppendError::EpochWentBack {
            epoch: 2,
            latest: 3,
            ..
        })
    ));
    assert_eq!(follower.log_end_offset(), 15);
    assert!(end < follower.log_end_offset());
    assert_eq!(
        ids(&Fixture::read_all(&follower).await),
        vec![0, 1, 2, 3, 4]
    );
}

#[tokio::test]
async fn a_follower_append_below_the_log_end_is_refused_as_not_contiguous_and_changes_nothing() {
    // The log end can move between the fetcher's read of it and its append (a recovery in
    // place after an I/O error): the append is refused, so the fetcher reconciles.
    let leader = Fixture::new(1, FaultyDiskConfig::default(), small_segments());
    let (_, stored) = leader_log(&leader).await;
    let follower = follower_fixture(2).open().await;
    follower
        .append_as_follower(&stored[..2].concat())
        .await
        .unwrap();
    let end = follower.log_end_offset();
    let before = ids(&Fixture::read_all(&follower).await);
    let refused = follower.append_as_follower(&stored[1]).await;
    assert!(
        matches!(refused, Err(FollowerAppendError::NotContiguous { .. })),
        "{refused:?}"
    );
    assert_eq!(follower.log_end_offset(), end);
    assert_eq!(ids(&Fixture::read_all(&follower).await), before);
}

#[tokio::test]
async fn truncation_cuts_segments_and_epochs_and_the_follower_continues_from_the_new_end() {
    // The bug: truncated batches still served, an epoch entry left past the cut (a later
    // OffsetsForLeaderEpoch would claim data the log no longer holds), or the next append
    // refused or misplaced after the cut.
    let leader = Fixture::new(1, FaultyDiskConfig::default(), small_segments());
    let (_, stored) = leader_log(&leader).await;
    let f = follower_fixture(2);
    let follower = f.open().await;
    for batch in &stored {
        follower.append_as_follower(batch).await.unwrap();
    }
    let segments_before = follower.segment_count().await;
    assert!(
        segments_before >= 3,
        "the test needs several segments: {segments_before}"
    );

    // Offset 16 is inside batch 5 (offsets 15..18): the whole batch goes.
    assert_eq!(follower.truncate_to(16).await.unwrap(), 15);
    assert_eq!(follower.log_end_offset(), 15);
    assert!(follower.durable_end_offset() <= 15);
    assert_eq!(
        ids(&Fixture::read_all(&follower).await),
        vec![0, 1, 2, 3, 4]
    );
    assert!(follower.segment_count().await < segments_before);
    assert_eq!(follower.leader_epochs().await.latest_epoch(), Some(3));
    assert!(matches!(
        follower.read(15, 1 << 20, None).await,
        Ok(read) if read.records.is_empty()
    ));
    assert!(matches!(
        follower.read(16, 1 << 20, None).await,
        Err(broker::log::ReadError::OffsetOutOfRange { .. })
    ));
    // A target at or past the log end changes nothing.
    assert_eq!(follower.truncate_to(40).await.unwrap(), 15);

    // The new leader's epoch 5 continues from 15.
    let mut next = batch_with_id(100, 2, 300, T0);
    batch::set_base_offset(&mut next, 15);
    batch::set_partition_leader_epoch(&mut next, 5);
    follower.append_as_follower(&next).await.unwrap();
    assert_eq!(follower.log_end_offset(), 17);
    assert_eq!(
        follower.leader_epochs().await.entries().last(),
        Some(&EpochEntry {
            epoch: 5,
            start_offset: 15
        })
    );

    // Truncation to the very start of a segment leaves it empty and active.
    let base = *follower.segment_bases().await.last().unwrap();
    assert_eq!(follower.truncate_to(base).await.unwrap(), base);
    assert_eq!(follower.log_end_offset(), base);

    // The cut survives a clean restart and a crash.
    let expected = ids(&Fixture::read_all(&follower).await);
    let epochs = follower.leader_epochs().await;
    follower.close().await.unwrap();
    drop(follower);
    let reopened = f.open().await;
    assert_eq!(ids(&Fixture::read_all(&reopened).await), expected);
    assert_eq!(reopened.leader_epochs().await, epochs);
    drop(reopened);
    f.disk.crash();
    let reopened = f.open().await;
    assert_eq!(ids(&Fixture::read_all(&reopened).await), expected);
    assert_eq!(reopened.leader_epochs().await, epochs);
}

#[tokio::test]
async fn truncation_below_the_log_start_is_refused() {
    let leader = Fixture::new(1, FaultyDiskConfig::default(), small_segments());
    let (log, _) = leader_log(&leader).await;
    log.delete_records_before(10).await.unwrap();
    assert!(matches!(
        log.truncate_to(5).await,
        Err(TruncateError::BelowLogStart {
            offset: 5,
            log_start_offset: 10
        })
    ));
    assert_eq!(log.log_end_offset(), 36);
}

#[tokio::test]
async fn an_unsynced_append_truncated_away_is_never_reported_durable() {
    // The bug: an acks=all produce waiting for the sync of offsets that a truncation removed,
    // answered as durable once other batches reach those offsets.
    let f = Fixture::new(3, FaultyDiskConfig::default(), small_segments());
    let log = f.open().await;
    log.append(&mut batch_with_id(0, 3, 100, T0), 1)
        .await
        .unwrap();
    let doomed = log
        .append_unsynced(&mut batch_with_id(1, 3, 100, T0), 1)
        .await
        .unwrap();
    assert_eq!(log.truncate_to(3).await.unwrap(), 3);
    let mut replacement = batch_with_id(2, 3, 100, T0);
    batch::set_base_offset(&mut replacement, 3);
    batch::set_partition_leader_epoch(&mut replacement, 2);
    log.append_as_follower(&replacement).await.unwrap();
    log.flush().await.unwrap();
    assert!(log.wait_append_durable(&doomed).await.is_err());
}

// ---- Power loss at every step of a truncation ----

/// A disk that performs `budget` more changing operations (appends, syncs, truncations,
/// creations, removals, renames, directory syncs) and then fails every one with `EIO`, before
/// it reaches the disk below: with a power loss right after, that is the process dying
/// between two steps.
#[derive(Debug, Clone)]
struct DyingDisk {
    inner: FaultyDisk,
    budget: Arc<AtomicI64>,
}

impl DyingDisk {
    fn step(&self) -> io::Result<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct DyingFile {
    inner: Arc<dyn DiskFile>,
    disk: DyingDisk,
}

#[async_trait]
impl DiskFile for DyingFile {
    async fn append(&self, buf: &[u8]) -> io::Result<u64> {
        self.disk.step()?;
        self.inner.append(buf).await
    }
    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(pos, buf).await
    }
    async fn sync(&self) -> io::Result<()> {
        self.disk.step()?;
        self.inner.sync().await
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.disk.step()?;
        self.inner.truncate(len).await
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

#[async_trait]
impl Disk for DyingDisk {
    async fn lock_dir(
        &self,
        dir: &Path,
    ) -> Result<broker::disk::DirLock, broker::disk::LockDirError> {
        self.inner.lock_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.create_dir_all(dir).await
    }
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        if mode != OpenMode::Existing {
            self.step()?;
        }
        let inner = self.inner.open(path, mode).await?;
        Ok(Arc::new(DyingFile {
            inner,
            disk: self.clone(),
        }))
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir).await
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.remove(path).await
    }
    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.remove_dir_all(dir).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        self.inner.sync_dir(dir).await
    }
}

#[tokio::test]
async fn power_loss_at_any_step_of_a_truncation_leaves_a_prefix_of_the_log() {
    // The bug: a crash mid-truncation leaving a hole (the cut segment cut, a later one still
    // there), so truncated batches come back after the cut; or the leader-epoch cache losing
    // the entry of data still in the log, so the follower cannot find the divergence again.
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        offset_reservation: 1000,
        ..LogConfig::default()
    };
    let mut completed = false;
    for steps in 0..200 {
        let inner = FaultyDisk::new(steps as u64, FaultyDiskConfig::default());
        let disk = DyingDisk {
            inner: inner.clone(),
            budget: Arc::new(AtomicI64::new(i64::MAX)),
        };
        let clock = Arc::new(broker::clock::ManualClock::new(T0));
        let dir = PathBuf::from("/data/topic-0");
        let log = Log::open(
            Arc::new(disk.clone()),
            clock.clone(),
            dir.clone(),
            config.clone(),
        )
        .await
        .unwrap();
        for id in 0..12u64 {
            let epoch = 1 + (id / 3) as i32;
            log.append(&mut batch_with_id(id, 3, 300, T0), epoch)
                .await
                .unwrap();
        }
        let before = ids(&Fixture::read_all(&log).await);
        // Offset 13 is in batch 4 (offsets 12..15), epoch 2.
        disk.budget.store(steps, Ordering::SeqCst);
        let result = log.truncate_to(13).await;
        drop(log);
        inner.crash();
        let log = Log::open(Arc::new(inner.clone()), clock, dir, config.clone())
            .await
            .unwrap();
        let after = ids(&Fixture::read_all(&log).await);
        assert!(
            after.len() >= 4 && before.starts_with(&after),
            "crash after {steps} steps: {after:?} is not a prefix of {before:?} holding the kept batches"
        );
        // Every epoch of the data that stayed is still in the cache, where it started.
        let epochs = log.leader_epochs().await;
        for (header, _) in Fixture::read_all(&log).await {
            let (epoch, end) = epochs
                .end_offset_for(header.partition_leader_epoch, log.log_end_offset())
                .unwrap_or_else(|| panic!("crash after {steps} steps: epoch of {header:?} lost"));
            assert_eq!(epoch, header.partition_leader_epoch);
            assert!(end > header.last_offset() as u64);
        }
        if result.is_ok() {
            assert_eq!(
                after,
                vec![0, 1, 2, 3],
                "a finished truncation survives power loss"
            );
            assert_eq!(epochs.latest_epoch(), Some(2));
            completed = true;
            break;
        }
    }
    assert!(
        completed,
        "the truncation never finished within the step budget"
    );
}
