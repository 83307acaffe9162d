//! A broker's start, topic creation and clean stop with many partitions (issue 10's start-up
//! target), on `chaos::FaultyDisk`: partition logs open and close several at once, and a power
//! loss at any point of a start or a clean stop loses no acknowledged record and never skips
//! the recovery a log needs.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use broker::catalog::Catalog;
use broker::clock::ManualClock;
use broker::config::BrokerConfig;
use broker::controller::image::{ClusterImage, PartitionImage, TopicImage};
use broker::disk::{DirLock, Disk, DiskFile, LockDirError, OpenMode};
use broker::log::batch::builder;
use chaos::{FaultyDisk, FaultyDiskConfig};
use uuid::Uuid;

const T0: i64 = 1_700_000_000_000;
const DATA_DIR: &str = "/data";

/// Which disk operation [`GateDisk`] holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gated {
    /// Listing a partition's directory: the first thing a log's recovery does.
    ListPartition,
    /// Syncing a partition's directory: what a log's clean close ends with.
    SyncPartitionDir,
}

/// A disk that parks the gated operation until the gate opens, counting the operations parked
/// at once: how many partitions the catalog works on concurrently.
#[derive(Debug)]
struct GateDisk {
    inner: FaultyDisk,
    gated: Mutex<Option<Gated>>,
    gate: tokio::sync::Semaphore,
    parked: AtomicUsize,
    most_parked: AtomicUsize,
}

impl GateDisk {
    fn new(inner: FaultyDisk) -> Arc<GateDisk> {
        Arc::new(GateDisk {
            inner,
            gated: Mutex::new(None),
            gate: tokio::sync::Semaphore::new(0),
            parked: AtomicUsize::new(0),
            most_parked: AtomicUsize::new(0),
        })
    }

    fn close_gate(&self, op: Gated) {
        *self.gated.lock().unwrap() = Some(op);
        self.gate.forget_permits(self.gate.available_permits());
    }

    fn open_gate(&self) {
        *self.gated.lock().unwrap() = None;
        self.gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// Parks the caller while `op` is gated and `path` is a partition's directory.
    async fn pass(&self, op: Gated, path: &Path) {
        let partition_dir = path.parent() == Some(Path::new(DATA_DIR));
        if !partition_dir || *self.gated.lock().unwrap() != Some(op) {
            return;
        }
        let now = self.parked.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_parked.fetch_max(now, Ordering::SeqCst);
        self.gate.acquire().await.unwrap().forget();
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Disk for GateDisk {
    async fn lock_dir(&self, dir: &Path) -> Result<DirLock, LockDirError> {
        self.inner.lock_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir).await
    }
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        self.inner.open(path, mode).await
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.pass(Gated::ListPartition, dir).await;
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
        self.pass(Gated::SyncPartitionDir, dir).await;
        self.inner.sync_dir(dir).await
    }
}

fn config(concurrency: u32) -> BrokerConfig {
    BrokerConfig {
        data_dir: PathBuf::from(DATA_DIR),
        node_id: 1,
        num_recovery_threads_per_data_dir: concurrency,
        ..BrokerConfig::default()
    }
}

fn catalog(disk: Arc<dyn Disk>, concurrency: u32) -> Arc<Catalog> {
    Arc::new(Catalog::new(
        config(concurrency),
        disk,
        Arc::new(ManualClock::new(T0)),
    ))
}

/// `topics` topics of `partitions` partitions each, every one led by node 1 alone.
fn image(topics: usize, partitions: usize) -> Arc<ClusterImage> {
    let mut image = ClusterImage::empty();
    image.metadata_offset = 1;
    for t in 0..topics {
        let name = format!("t{t}");
        let id = Uuid::from_u128(t as u128 + 1);
        let partitions = (0..partitions)
            .map(|_| PartitionImage {
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            })
            .collect();
        image.topics.insert(
            name.clone(),
            Arc::new(TopicImage {
                name: name.clone(),
                id,
                configs: BTreeMap::new(),
                partitions,
            }),
        );
        image.topic_names.insert(id, name);
    }
    Arc::new(image)
}

/// Lets the spawned apply or close run until it parks (the disk needs no real time).
async fn settle() {
    for _ in 0..10_000 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn partitions_open_and_close_several_at_once_and_never_more_than_configured() {
    // The bug (issue 10): the catalog opened and closed partition logs one after another, so a
    // start or a clean stop with 10,000 partitions waited on some 30,000 syncs in a row.
    let gate = GateDisk::new(FaultyDisk::new(1, FaultyDiskConfig::default()));
    let catalog = catalog(gate.clone(), 4);

    gate.close_gate(Gated::ListPartition);
    let applying = tokio::spawn({
        let catalog = Arc::clone(&catalog);
        async move { catalog.apply(image(3, 4)).await }
    });
    settle().await;
    assert_eq!(gate.parked.load(Ordering::SeqCst), 4, "opens at once");
    gate.open_gate();
    applying.await.unwrap().unwrap();
    assert_eq!(gate.most_parked.load(Ordering::SeqCst), 4);
    assert_eq!(catalog.local_partitions().len(), 12);

    gate.most_parked.store(0, Ordering::SeqCst);
    gate.close_gate(Gated::SyncPartitionDir);
    let closing = tokio::spawn({
        let catalog = Arc::clone(&catalog);
        async move { catalog.close_all().await }
    });
    settle().await;
    assert_eq!(gate.parked.load(Ordering::SeqCst), 4, "closes at once");
    gate.open_gate();
    closing.await.unwrap();
    assert_eq!(gate.most_parked.load(Ordering::SeqCst), 4);
}

/// Appends one record to `topic`-`index` and waits until it is durable (acks=all).
async fn append_durable(catalog: &Catalog, topic: &str, index: i32, value: u8) {
    let partition = catalog.partition(topic, index).unwrap();
    let info = partition
        .append_unexposed(&mut builder::simple(1, 10, value, T0))
        .await
        .unwrap();
    partition.wait_durable(&info).await.unwrap();
}
