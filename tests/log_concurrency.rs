//! The log under concurrency: a group commit never outlives a failed sync.
//!
//! The bug: a group commit's sync that finished after a roll's sync of the same file had
//! failed advanced the durable end over bytes the failure had dropped (fsyncgate), and
//! acknowledged a batch that was gone. The simulator's log workload found it (seeds 49, 94 and
//! 272 of `cargo sim log-workload` once reads stopped waiting for syncs on a branch).

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use broker::clock::ManualClock;
use broker::disk::{Disk, DiskFile, OpenMode};
use broker::log::{FlushPolicy, Log, LogConfig};
use chaos::{FaultyDisk, FaultyDiskConfig};
use common::*;
use tokio::sync::Notify;

/// Holds syncs (file and directory) until opened, and says when one is waiting.
#[derive(Debug, Default)]
struct Gate {
    /// Syncs still to hold: `ALL`, or a count.
    holds: AtomicUsize,
    /// Bumped by every `open`; a held sync waits for it to change.
    openings: AtomicU64,
    parked: Notify,
    opened: Notify,
}

const ALL: usize = usize::MAX;

impl Gate {
    async fn pass(&self) {
        let held = self
            .holds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| match h {
                0 => None,
                ALL => Some(ALL),
                n => Some(n - 1),
            })
            .is_ok();
        if !held {
            return;
        }
        let opening = self.openings.load(Ordering::SeqCst);
        self.parked.notify_one();
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.openings.load(Ordering::SeqCst) != opening {
                return;
            }
            opened.await;
        }
    }

    /// Holds only the next sync; the ones after it pass.
    fn hold_next(&self) {
        self.holds.store(1, Ordering::SeqCst);
    }

    fn open(&self) {
        self.holds.store(0, Ordering::SeqCst);
        self.openings.fetch_add(1, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    async fn a_sync_is_waiting(&self) {
        self.parked.notified().await;
    }
}

#[derive(Debug)]
struct GatedDisk {
    inner: Arc<dyn Disk>,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn DiskFile>,
    gate: Arc<Gate>,
}

#[async_trait]
impl DiskFile for GatedFile {
    async fn append(&self, buf: &[u8]) -> io::Result<u64> {
        self.inner.append(buf).await
    }
    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(pos, buf).await
    }
    async fn sync(&self) -> io::Result<()> {
        self.gate.pass().await;
        self.inner.sync().await
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len).await
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

#[async_trait]
impl Disk for GatedDisk {
    async fn lock_dir(
        &self,
        dir: &Path,
    ) -> Result<broker::disk::DirLock, broker::disk::LockDirError> {
        self.inner.lock_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir).await
    }
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let inner = self.inner.open(path, mode).await?;
        Ok(Arc::new(GatedFile {
            inner,
            gate: Arc::clone(&self.gate),
        }))
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir).await
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path).await
    }
    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(dir).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.gate.pass().await;
        self.inner.sync_dir(dir).await
    }
}

async fn gated_log_on_faulty_disk(config: LogConfig) -> (Arc<Log>, Arc<Gate>, FaultyDisk) {
    let gate = Arc::new(Gate::default());
    let faulty = FaultyDisk::new(7, FaultyDiskConfig::default());
    let disk = GatedDisk {
        inner: Arc::new(faulty.clone()),
        gate: Arc::clone(&gate),
    };
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
    gate.a_sync_is_waiting().await;
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
