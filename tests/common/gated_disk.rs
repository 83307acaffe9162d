//! A disk with a gate in front of the faulty one: while the gate is closed, the operations it
//! holds (every sync, or every append to a segment file) wait until it opens, and the test
//! learns when one is waiting. A test uses it to stop a write at a chosen step and make
//! something else happen meanwhile, deterministically.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use broker::disk::{Disk, DiskFile, OpenMode};
use tokio::sync::Notify;

/// Holds operations until opened, and says when one is waiting.
#[derive(Debug, Default)]
pub struct Gate {
    /// Operations still to hold: `ALL`, or a count.
    holds: AtomicUsize,
    /// Bumped by every `open`; a held operation waits for it to change.
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

    /// Holds every operation from now on.
    pub fn close(&self) {
        self.holds.store(ALL, Ordering::SeqCst);
    }

    /// Holds only the next operation; the ones after it pass.
    pub fn hold_next(&self) {
        self.holds.store(1, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.holds.store(0, Ordering::SeqCst);
        self.openings.fetch_add(1, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Returns once an operation is held at the gate.
    pub async fn one_is_waiting(&self) {
        self.parked.notified().await;
    }
}

/// What the gate of a [`GatedDisk`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Every file and directory sync.
    Syncs,
    /// Every append to a segment file (`*.log`): the write of a batch's bytes.
    SegmentAppends,
}

#[derive(Debug)]
pub struct GatedDisk {
    inner: Arc<dyn Disk>,
    gate: Arc<Gate>,
    held: Held,
}

impl GatedDisk {
    pub fn new(inner: Arc<dyn Disk>, gate: Arc<Gate>, held: Held) -> GatedDisk {
        GatedDisk { inner, gate, held }
    }
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn DiskFile>,
    gate: Arc<Gate>,
    held_appends: bool,
    held_syncs: bool,
}

#[async_trait]
impl DiskFile for GatedFile {
    async fn append(&self, buf: &[u8]) -> io::Result<u64> {
        if self.held_appends {
            self.gate.pass().await;
        }
        self.inner.append(buf).await
    }
    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(pos, buf).await
    }
    async fn sync(&self) -> io::Result<()> {
        if self.held_syncs {
            self.gate.pass().await;
        }
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
        let segment = path.extension().is_some_and(|e| e == "log");
        Ok(Arc::new(GatedFile {
            inner,
            gate: Arc::clone(&self.gate),
            held_appends: self.held == Held::SegmentAppends && segment,
            held_syncs: self.held == Held::Syncs,
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
        if self.held == Held::Syncs {
            self.gate.pass().await;
        }
        self.inner.sync_dir(dir).await
    }
}
