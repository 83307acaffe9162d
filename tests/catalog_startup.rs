//! A broker's start, topic creation and clean stop with many partitions (issue 10's start-up
//! target), on `chaos::FaultyDisk`: partition logs open and close several at once, and a power
//! loss at any point of a start or a clean stop loses no acknowledged record and never skips
//! the recovery a log needs.
#![cfg(not(madsim))]

use std::collections::{BTreeMap, BTreeSet};
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
    /// Every creation, listing, open, removal, rename and directory sync in or of a
    /// partition's directory (or of one being made, `<dir>.tmp`), and every sync of the data
    /// directory: a crash can be placed between any two of them.
    AnyInPartition,
}

/// A disk that parks the gated operation until the gate opens, counting the operations parked
/// at once (how many partitions the catalog works on concurrently) and the syncs of files and
/// directories under partition directories.
#[derive(Debug)]
struct GateDisk {
    inner: FaultyDisk,
    gated: Mutex<Option<Gated>>,
    gate: tokio::sync::Semaphore,
    parked: AtomicUsize,
    most_parked: AtomicUsize,
    partition_syncs: Arc<AtomicUsize>,
    /// Calls that make partition directories: `create_dir_all` or `create_dir` of one,
    /// `create_dirs` of many.
    dir_creations: AtomicUsize,
}

/// A file whose syncs [`GateDisk`] counts.
#[derive(Debug)]
struct CountedFile {
    inner: Arc<dyn DiskFile>,
    syncs: Arc<AtomicUsize>,
}

#[async_trait]
impl DiskFile for CountedFile {
    async fn append(&self, buf: &[u8]) -> io::Result<u64> {
        self.inner.append(buf).await
    }
    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(pos, buf).await
    }
    async fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync().await
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len).await
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// Is `path` a partition's directory (`/data/<topic>-<partition>`, or `.tmp` while its first
/// write makes it)?
fn is_partition_dir(path: &Path) -> bool {
    path.parent() == Some(Path::new(DATA_DIR))
}

impl GateDisk {
    fn new(inner: FaultyDisk) -> Arc<GateDisk> {
        Arc::new(GateDisk {
            inner,
            gated: Mutex::new(None),
            gate: tokio::sync::Semaphore::new(0),
            parked: AtomicUsize::new(0),
            most_parked: AtomicUsize::new(0),
            partition_syncs: Arc::default(),
            dir_creations: AtomicUsize::new(0),
        })
    }

    fn close_gate(&self, op: Gated) {
        *self.gated.lock().unwrap() = Some(op);
        self.gate.forget_permits(self.gate.available_permits());
    }

    fn open_gate(&self) {
        *self.gated.lock().unwrap() = None;
        self.gate
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// Lets `n` parked or future gated operations through, keeping the gate closed after.
    fn let_through(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Parks the caller while `op` is gated and `path` is a partition's directory (or, for
    /// [`Gated::AnyInPartition`], is one or is in one).
    async fn pass(&self, op: Gated, path: &Path) {
        let gated = *self.gated.lock().unwrap();
        let parks = if gated == Some(Gated::AnyInPartition) {
            is_partition_dir(path)
                || path.parent().is_some_and(is_partition_dir)
                || path == Path::new(DATA_DIR)
        } else {
            is_partition_dir(path) && gated == Some(op)
        };
        if !parks {
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
        if is_partition_dir(dir) {
            self.dir_creations.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.create_dir_all(dir).await
    }
    async fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.pass(Gated::AnyInPartition, dir).await;
        if is_partition_dir(dir) {
            self.dir_creations.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.create_dir(dir).await
    }
    async fn create_dirs(&self, dir: &Path, names: &[String]) -> io::Result<()> {
        self.dir_creations.fetch_add(1, Ordering::SeqCst);
        self.inner.create_dirs(dir, names).await
    }
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        self.pass(Gated::AnyInPartition, path).await;
        let file = self.inner.open(path, mode).await?;
        if !path.parent().is_some_and(is_partition_dir) {
            return Ok(file);
        }
        Ok(Arc::new(CountedFile {
            inner: file,
            syncs: Arc::clone(&self.partition_syncs),
        }))
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.pass(Gated::ListPartition, dir).await;
        self.inner.list(dir).await
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.pass(Gated::AnyInPartition, path).await;
        self.inner.remove(path).await
    }
    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(dir).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.pass(Gated::AnyInPartition, from).await;
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.pass(Gated::SyncPartitionDir, dir).await;
        if is_partition_dir(dir) {
            self.partition_syncs.fetch_add(1, Ordering::SeqCst);
        }
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
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
                elr: Vec::new(),
                last_known_elr: Vec::new(),
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
    // (A created partition has no directory to list, see below: the partitions are written
    // and closed first, and the start after opens them.)
    let gate = GateDisk::new(FaultyDisk::new(1, FaultyDiskConfig::default()));
    let (image, _) = written(gate.clone()).await;
    let catalog = catalog(gate.clone(), 4);

    gate.close_gate(Gated::ListPartition);
    let applying = tokio::spawn({
        let catalog = Arc::clone(&catalog);
        async move { catalog.apply(image).await }
    });
    settle().await;
    assert_eq!(gate.parked.load(Ordering::SeqCst), 4, "opens at once");
    gate.open_gate();
    applying.await.unwrap().unwrap();
    assert_eq!(gate.most_parked.load(Ordering::SeqCst), 4);
    assert_eq!(catalog.local_partitions().len(), 12);
    // Something to close: each close then writes its indexes (a directory sync).
    for (topic, index) in catalog.local_partitions() {
        append_durable(&catalog, &topic, index, 1).await;
    }

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

#[tokio::test]
async fn a_created_partition_has_no_directory_until_its_first_append_makes_it_whole() {
    // The bug (issue 10): creating 10,000 partitions took a median of 12.6 s on this VM's disk
    // (target 10 s), nearly all of it the kernel making 10,000 directories and 10,000
    // `partition.metadata` files. Before that (sessions 6-10) a creation synced the partition's
    // directory, its empty first segment, its checkpoint and `partition.metadata`, one fewer
    // each session. An empty log's directory says nothing the cluster image does not: a new
    // partition now touches no disk until its first append.
    let faulty = FaultyDisk::new(6, FaultyDiskConfig::default());
    let gate = GateDisk::new(faulty.clone());
    gate.close_gate(Gated::ListPartition);
    let catalog = start(gate.clone(), 4, &image(3, 4)).await;
    gate.open_gate();
    assert_eq!(catalog.local_partitions().len(), 12);
    assert_eq!(
        gate.most_parked.load(Ordering::SeqCst),
        0,
        "a partition directory listed"
    );
    assert_eq!(gate.dir_creations.load(Ordering::SeqCst), 0);
    assert_eq!(gate.partition_syncs.load(Ordering::SeqCst), 0);
    assert_eq!(partition_dirs(&gate.inner).await, Vec::<String>::new());
    for (topic, index) in catalog.local_partitions() {
        let log = &catalog.partition(&topic, index).unwrap().log;
        assert!(!log.is_dir_made(), "{topic}-{index}");
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    }

    // The first append makes the directory, whole, before its record: `partition.metadata`
    // synced in it, then its name durable; the others stay as they were.
    append_durable(&catalog, "t0", 0, 9).await;
    let dir = Path::new(DATA_DIR).join("t0-0");
    assert_eq!(partition_dirs(&gate.inner).await, ["t0-0"]);
    assert_eq!(gate.dir_creations.load(Ordering::SeqCst), 1);
    assert_eq!(
        metadata_topic_id(&faulty, &dir),
        Some(Uuid::from_u128(1)),
        "the first append left partition.metadata undurable"
    );
    assert!(faulty
        .durable_len(&dir.join(format!("{:020}.log", 0)))
        .is_some_and(|len| len > 0));
    append_durable(&catalog, "t0", 0, 10).await;
    assert_eq!(gate.dir_creations.load(Ordering::SeqCst), 1, "made once");

    // A clean stop writes nothing for the partitions never written, and a start after it,
    // or after a power loss, finds them empty and takes their appends.
    catalog.close_all().await;
    assert_eq!(partition_dirs(&gate.inner).await, ["t0-0"]);
    let catalog = start(gate.clone(), 4, &image(3, 4)).await;
    assert_eq!(clean_and_recovered(&catalog), (12, 0));
    drop(catalog);
    faulty.crash();
    let catalog = start(gate.clone(), 4, &image(3, 4)).await;
    assert_eq!(partition_dirs(&gate.inner).await, ["t0-0"]);
    let found = contents(&catalog).await;
    assert_eq!(found[&("t0".to_string(), 0)], [9, 10]);
    assert_eq!(found.values().filter(|v| v.is_empty()).count(), 11);
    for (topic, index) in catalog.local_partitions() {
        append_durable(&catalog, &topic, index, 3).await;
    }
    let expected = contents(&catalog).await;
    drop(catalog);
    faulty.crash();
    let catalog = start(gate.clone(), 4, &image(3, 4)).await;
    assert_eq!(contents(&catalog).await, expected);
    assert_eq!(partition_dirs(&gate.inner).await.len(), 12);
    assert_eq!(gate.dir_creations.load(Ordering::SeqCst), 12);
}

#[tokio::test]
async fn a_partition_never_written_is_deleted_and_created_again_under_its_name_without_a_directory()
{
    let faulty = FaultyDisk::new(12, FaultyDiskConfig::default());
    let gate = GateDisk::new(faulty.clone());
    let first = image(1, 2);
    let catalog = start(gate.clone(), 4, &first).await;
    append_durable(&catalog, "t0", 1, 1).await;
    // Deleted: the written partition's directory goes, the other had none.
    let mut none = ClusterImage::empty();
    none.metadata_offset = 2;
    catalog.apply(Arc::new(none)).await.unwrap();
    assert!(catalog.local_partitions().is_empty());
    assert_eq!(partition_dirs(&gate.inner).await, Vec::<String>::new());
    // Created again under the same name, with a new id: both partitions empty.
    let mut again = (*image(1, 2)).clone();
    again.metadata_offset = 3;
    let topic = Arc::make_mut(again.topics.get_mut("t0").unwrap());
    topic.id = Uuid::from_u128(77);
    again.topic_names = [(topic.id, "t0".to_string())].into();
    catalog.apply(Arc::new(again)).await.unwrap();
    let found = contents(&catalog).await;
    assert!(found.values().all(Vec::is_empty), "{found:?}");
    append_durable(&catalog, "t0", 0, 2).await;
    drop(catalog);
    faulty.crash();
    assert_eq!(
        metadata_topic_id(&faulty, &Path::new(DATA_DIR).join("t0-0")),
        Some(Uuid::from_u128(77))
    );
}

#[tokio::test]
async fn a_partition_deleted_while_its_first_append_makes_its_directory_leaves_no_directory() {
    // The race this guards against: the deletion found no directory to remove while the
    // first append was still making it under its temporary name, and the rename then put a
    // directory of a deleted topic in place.
    let faulty = FaultyDisk::new(13, FaultyDiskConfig::default());
    let gate = GateDisk::new(faulty.clone());
    let catalog = start(gate.clone(), 4, &image(1, 1)).await;
    let partition = catalog.partition("t0", 0).unwrap();
    // Parked at the temporary directory's sync, `partition.metadata` written in it.
    gate.close_gate(Gated::SyncPartitionDir);
    let appending = tokio::spawn(async move {
        partition
            .append_unexposed(&mut builder::simple(1, 10, 1, T0))
            .await
    });
    settle().await;
    assert_eq!(gate.parked.load(Ordering::SeqCst), 1);
    let deleting = tokio::spawn({
        let catalog = Arc::clone(&catalog);
        async move {
            let mut none = ClusterImage::empty();
            none.metadata_offset = 2;
            catalog.apply(Arc::new(none)).await
        }
    });
    settle().await;
    gate.open_gate();
    deleting.await.unwrap().unwrap();
    // The append may have gone in before the log was retired, or been refused after.
    let _ = appending.await.unwrap();
    let left = gate.inner.list(Path::new(DATA_DIR)).await.unwrap();
    assert!(
        left.iter().all(|n| !n.starts_with("t0-")),
        "left behind: {left:?}"
    );
}

#[tokio::test]
async fn a_partition_appended_before_a_power_loss_keeps_its_partition_metadata_and_its_records() {
    // The bug this guards against: `partition.metadata` is written without a sync at creation;
    // had the first append not synced it before the first segment file, a power loss after an
    // acknowledged record would leave the record beside an empty `partition.metadata`, and the
    // partition would never open again (damaged metadata beside a log).
    let faulty = FaultyDisk::new(
        9,
        FaultyDiskConfig {
            torn_writes: true,
            ..FaultyDiskConfig::default()
        },
    );
    let gate = GateDisk::new(faulty.clone());
    let image = image(3, 4);
    let catalog = start(gate.clone(), 4, &image).await;
    for (topic, index) in catalog.local_partitions() {
        append_durable(&catalog, &topic, index, 10 + index as u8).await;
    }
    let expected = contents(&catalog).await;
    drop(catalog);
    faulty.crash();

    for t in 0..3 {
        for index in 0..4 {
            let dir = Path::new(DATA_DIR).join(format!("t{t}-{index}"));
            assert_eq!(
                metadata_topic_id(&faulty, &dir),
                Some(Uuid::from_u128(t + 1)),
                "t{t}-{index}"
            );
        }
    }
    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(contents(&catalog).await, expected);
}

#[tokio::test]
async fn directories_left_of_an_interrupted_creation_are_removed_and_the_partitions_open_empty() {
    // Builds before this one made a partition's directory at its creation and wrote its
    // `partition.metadata` without a sync. A power loss then left the file missing, or its
    // name durable with its contents lost (through a later sync of its directory, such as a
    // clean stop's checkpoint of the empty log), or, on a file system that does not order data
    // before metadata (ext4 without a journal, as on this VM, or with data=writeback), zeros
    // over its length or a part of it. Beside no segment file each is a directory of nothing:
    // removed, and the partition opens without one. Written here by hand, as those builds did.
    let faulty = FaultyDisk::new(10, FaultyDiskConfig::default());
    let gate = GateDisk::new(faulty.clone());
    let image = image(1, 4);
    let dir = |index: i32| Path::new(DATA_DIR).join(format!("t0-{index}"));
    // (44 bytes: `version: 0`, `topic_id: ` and 22 characters of base64, each on its line.)
    let metadata: [Option<Vec<u8>>; 4] = [
        Some(Vec::new()),
        Some(vec![0; 44]),
        Some(b"version: 0\ntopic_".to_vec()),
        None,
    ];
    faulty.create_dir_all(Path::new(DATA_DIR)).await.unwrap();
    for (index, contents) in metadata.iter().enumerate() {
        let dir = dir(index as i32);
        faulty.create_dir_all(&dir).await.unwrap();
        broker::disk::write_file_atomic(&faulty, &dir.join("log.checkpoint"), b"0\n0\n0\n")
            .await
            .unwrap();
        if let Some(contents) = contents {
            let file = faulty
                .open(&dir.join("partition.metadata"), OpenMode::CreateNew)
                .await
                .unwrap();
            file.append(contents).await.unwrap();
            file.sync().await.unwrap();
            faulty.sync_dir(&dir).await.unwrap();
        }
    }

    // And what this build can leave: a directory in the making that another task's sync of
    // the data directory made durable before a power loss (here with its file, unsynced).
    let making = Path::new(DATA_DIR).join("t0-1.tmp");
    faulty.create_dir(&making).await.unwrap();
    drop(
        faulty
            .open(&making.join("partition.metadata"), OpenMode::CreateNew)
            .await
            .unwrap(),
    );
    faulty.sync_dir(Path::new(DATA_DIR)).await.unwrap();
    faulty.crash();

    gate.partition_syncs.store(0, Ordering::SeqCst);
    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(catalog.local_partitions().len(), 4);
    assert_eq!(gate.partition_syncs.load(Ordering::SeqCst), 0);
    assert_eq!(partition_dirs(&gate.inner).await, Vec::<String>::new());
    for index in 0..4 {
        let log = &catalog.partition("t0", index).unwrap().log;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        append_durable(&catalog, "t0", index, 5).await;
    }
    drop(catalog);
    faulty.crash();
    for index in 0..4 {
        assert_eq!(
            metadata_topic_id(&faulty, &dir(index)),
            Some(Uuid::from_u128(1)),
            "t0-{index}"
        );
    }
    let catalog = start(gate.clone(), 4, &image).await;
    assert!(contents(&catalog).await.values().all(|v| *v == [5]));
}

#[tokio::test]
async fn a_damaged_partition_metadata_beside_records_is_refused_not_created_again() {
    // Synced before the first segment file, `partition.metadata` is whole beside any record: an
    // unreadable one there is damage, and the records may be another topic's.
    let faulty = FaultyDisk::new(11, FaultyDiskConfig::default());
    let gate = GateDisk::new(faulty.clone());
    let image = image(1, 2);
    let before = start(gate.clone(), 4, &image).await;
    append_durable(&before, "t0", 0, 1).await;
    append_durable(&before, "t0", 1, 1).await;
    before.close_all().await;
    let path = Path::new(DATA_DIR).join("t0-1").join("partition.metadata");
    faulty.flip_bit(&path, 12, 7).unwrap();

    let catalog = catalog(gate.clone(), 4);
    catalog.begin_run().await.unwrap();
    let error = catalog.apply(Arc::clone(&image)).await.unwrap_err();
    assert_eq!(error.failures, 1);
    assert!(
        error.first.contains("damaged partition metadata"),
        "{}",
        error.first
    );
    assert!(catalog.partition("t0", 0).is_some());
    assert!(catalog.partition("t0", 1).is_none());
    let dir = gate
        .inner
        .list(&Path::new(DATA_DIR).join("t0-1"))
        .await
        .unwrap();
    assert!(dir.iter().any(|n| n.ends_with(".log")), "{dir:?}");
}

#[tokio::test]
async fn a_partition_created_and_never_written_opens_after_a_power_loss_empty_and_takes_appends() {
    let faulty = FaultyDisk::new(
        8,
        FaultyDiskConfig {
            torn_writes: true,
            ..FaultyDiskConfig::default()
        },
    );
    let gate = GateDisk::new(faulty.clone());
    let image = image(3, 4);
    let catalog = start(gate.clone(), 4, &image).await;
    drop(catalog);
    faulty.crash();

    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(catalog.local_partitions().len(), 12);
    assert!(contents(&catalog).await.values().all(Vec::is_empty));
    for (topic, index) in catalog.local_partitions() {
        let log = &catalog.partition(&topic, index).unwrap().log;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        append_durable(&catalog, &topic, index, 3).await;
    }
    // And what it took survives the next power loss, after a clean stop of empty logs too.
    drop(catalog);
    faulty.crash();
    let catalog = start(gate.clone(), 4, &image).await;
    assert!(contents(&catalog).await.values().all(|v| *v == [3]));
    let fresh = crate::image(1, 2);
    let mut both = (*image).clone();
    for (name, topic) in &fresh.topics {
        let name = format!("new-{name}");
        let mut topic = (**topic).clone();
        topic.name = name.clone();
        topic.id = Uuid::from_u128(1000);
        both.topic_names.insert(topic.id, name.clone());
        both.topics.insert(name, Arc::new(topic));
    }
    both.metadata_offset += 1;
    let both = Arc::new(both);
    catalog.apply(Arc::clone(&both)).await.unwrap();
    catalog.close_all().await;
    let catalog = start(gate.clone(), 4, &both).await;
    assert_eq!(clean_and_recovered(&catalog), (14, 0));
    append_durable(&catalog, "new-t0", 1, 4).await;
    drop(catalog);
    faulty.crash();
    let catalog = start(gate.clone(), 4, &both).await;
    assert_eq!(contents(&catalog).await[&("new-t0".to_string(), 1)], [4]);
    assert!(contents(&catalog).await[&("new-t0".to_string(), 0)].is_empty());
}

#[tokio::test]
async fn a_power_loss_at_any_point_of_a_creation_and_first_append_leaves_no_partition_directory_or_a_whole_one(
) {
    // Between any two operations on the partitions' directories and the data directory: the
    // data directory's listing (the creation touches nothing else), then each first append's
    // steps: the temporary directory's creation, `partition.metadata`'s creation in it (its
    // contents synced), the temporary directory's sync, its rename into place, the data
    // directory's sync, the leader-epoch checkpoint (its temporary file, rename and directory
    // sync), the first segment's file and the directory's sync. What a power loss leaves of a
    // partition is no directory (maybe a temporary one, removed at the start) or a whole one:
    // never a directory without a whole `partition.metadata`, never a record beside one.
    let image = image(1, 3);
    let mut steps_seen = 0;
    let mut states = BTreeSet::new();
    for step in 0..100 {
        let faulty = FaultyDisk::new(
            100 + step as u64,
            FaultyDiskConfig {
                torn_writes: true,
                ..FaultyDiskConfig::default()
            },
        );
        let gate = GateDisk::new(faulty.clone());
        gate.inner
            .create_dir_all(Path::new(DATA_DIR))
            .await
            .unwrap();
        let catalog = catalog(gate.clone(), 2);
        catalog.begin_run().await.unwrap();
        gate.close_gate(Gated::AnyInPartition);
        gate.let_through(step);
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let creating = tokio::spawn({
            let catalog = Arc::clone(&catalog);
            let image = Arc::clone(&image);
            let acknowledged = Arc::clone(&acknowledged);
            async move {
                catalog.apply(image).await.unwrap();
                // The first appends, acknowledged once durable.
                for index in 0..3 {
                    append_durable(&catalog, "t0", index, 1).await;
                    acknowledged.lock().unwrap().push(index);
                }
            }
        });
        settle().await;
        let finished = creating.is_finished();
        creating.abort();
        let _ = creating.await;
        if !finished {
            steps_seen = step;
        }
        let acknowledged = acknowledged.lock().unwrap().clone();
        drop(catalog);
        faulty.crash();
        gate.open_gate();
        // After the crash the live tree is the durable one.
        let left = gate.inner.list(Path::new(DATA_DIR)).await.unwrap();
        for index in 0..3 {
            let name = format!("t0-{index}");
            let dir = Path::new(DATA_DIR).join(&name);
            // (A temporary directory survives only a sync of the data directory by another
            // task while it is being made: see the test of the older build's leftovers.)
            if !left.contains(&name) {
                assert!(!acknowledged.contains(&index), "step {step}: {name} lost");
                states.insert("no directory");
                continue;
            }
            let names = gate.inner.list(&dir).await.unwrap();
            assert_eq!(
                metadata_topic_id(&faulty, &dir),
                Some(Uuid::from_u128(1)),
                "step {step}: {name} holds {names:?} without a whole partition.metadata"
            );
            let segment = faulty
                .durable_len(&dir.join(format!("{:020}.log", 0)))
                .is_some();
            states.insert(if segment {
                "a whole directory with a segment"
            } else {
                "a whole directory, no segment yet"
            });
        }

        let catalog = start(gate.clone(), 2, &image).await;
        assert_eq!(catalog.local_partitions().len(), 3, "step {step}");
        let left = gate.inner.list(Path::new(DATA_DIR)).await.unwrap();
        assert!(
            left.iter().all(|n| !n.ends_with(".tmp")),
            "step {step}: the start left {left:?}"
        );
        let found = contents(&catalog).await;
        for ((_, index), values) in &found {
            if acknowledged.contains(index) {
                assert_eq!(*values, [1], "step {step}: t0-{index}");
            } else {
                // Not acknowledged: a crash may keep it (synced, unanswered) or not.
                assert!(
                    values.is_empty() || *values == [1],
                    "step {step}: t0-{index}"
                );
            }
        }
        for index in 0..3 {
            append_durable(&catalog, "t0", index, 2).await;
        }
        let after = contents(&catalog).await;
        drop(catalog);
        faulty.crash();
        for index in 0..3 {
            let dir = Path::new(DATA_DIR).join(format!("t0-{index}"));
            assert_eq!(
                metadata_topic_id(&faulty, &dir),
                Some(Uuid::from_u128(1)),
                "step {step}: t0-{index}"
            );
        }
        let catalog = start(gate.clone(), 2, &image).await;
        assert_eq!(contents(&catalog).await, after, "step {step}");
        if finished {
            break;
        }
    }
    assert!(
        steps_seen >= 20,
        "the sweep crashed creations at {steps_seen} points only"
    );
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        [
            "a whole directory with a segment",
            "a whole directory, no segment yet",
            "no directory",
        ],
        "the sweep missed a state a power loss leaves"
    );
}

/// The partition directories (and directories being made) in the data directory, live.
async fn partition_dirs(disk: &FaultyDisk) -> Vec<String> {
    disk.list(Path::new(DATA_DIR))
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with('t') || n.starts_with("new-"))
        .collect()
}

/// The topic id that the durable `partition.metadata` in `dir` names, if it is whole.
fn metadata_topic_id(faulty: &FaultyDisk, dir: &Path) -> Option<Uuid> {
    let bytes = faulty.durable_content(&dir.join("partition.metadata"))?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.lines().find_map(|l| l.strip_prefix("topic_id: "))?;
    // Kafka's form: URL-safe base64 of the 16 bytes, no padding.
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in id.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(Uuid::from_bytes(out.try_into().ok()?))
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

/// A broker's start on `disk`: a new run of the data directory, then this node's partitions.
async fn start(disk: Arc<dyn Disk>, concurrency: u32, image: &Arc<ClusterImage>) -> Arc<Catalog> {
    disk.create_dir_all(Path::new(DATA_DIR)).await.unwrap();
    let catalog = catalog(disk, concurrency);
    catalog.remove_deleted_leftovers().await.unwrap();
    catalog.begin_run().await.unwrap();
    catalog.apply(Arc::clone(image)).await.unwrap();
    catalog
}

/// Every partition's records, by value, in offset order (the values `append_durable` wrote).
async fn contents(catalog: &Catalog) -> BTreeMap<(String, i32), Vec<u8>> {
    let mut all = BTreeMap::new();
    for (topic, index) in catalog.local_partitions() {
        let partition = catalog.partition(&topic, index).unwrap();
        let mut values = Vec::new();
        let mut offset = partition.log.log_start_offset();
        while offset < partition.log.log_end_offset() {
            let read = partition.log.read(offset, 1 << 20, None).await.unwrap();
            let mut at = 0;
            while at < read.records.len() {
                let header = broker::log::batch::BatchHeader::parse(&read.records[at..]).unwrap();
                if header.records_count > 0 {
                    // `builder::simple`'s one record ends with its value's fill byte and a
                    // header count of 0.
                    values.push(read.records[at + header.size() - 2]);
                }
                offset = u64::try_from(header.last_offset()).unwrap() + 1;
                at += header.size();
            }
        }
        all.insert((topic, index), values);
    }
    all
}

/// The partitions whose last open found them closed cleanly, and those it recovered.
fn clean_and_recovered(catalog: &Catalog) -> (usize, usize) {
    let clean = catalog
        .local_partitions()
        .iter()
        .filter(|(t, i)| catalog.partition(t, *i).unwrap().log.recovery().clean)
        .count();
    (clean, catalog.local_partitions().len() - clean)
}

/// 12 partitions, each holding the acknowledged records 1, 2 and its own partition index.
async fn written(disk: Arc<dyn Disk>) -> (Arc<ClusterImage>, BTreeMap<(String, i32), Vec<u8>>) {
    let image = image(3, 4);
    let catalog = start(disk, 4, &image).await;
    for (topic, index) in catalog.local_partitions() {
        for value in [1, 2, 10 + index as u8] {
            append_durable(&catalog, &topic, index, value).await;
        }
    }
    let expected = contents(&catalog).await;
    assert_eq!(expected.len(), 12);
    assert!(expected.values().all(|v| v.len() == 3));
    catalog.close_all().await;
    (image, expected)
}

#[tokio::test]
async fn a_start_after_a_clean_stop_trusts_the_markers_and_syncs_nothing_per_partition() {
    // The bug (issue 10): every log's open removed its clean-shutdown marker with a directory
    // sync of its own and wrote its unchanged checkpoint again (two syncs more): three syncs
    // per partition, one partition after another, 45 s for 10,000 partitions.
    let faulty = FaultyDisk::new(2, FaultyDiskConfig::default());
    let gate = GateDisk::new(faulty.clone());
    let (image, expected) = written(gate.clone()).await;

    gate.partition_syncs.store(0, Ordering::SeqCst);
    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(gate.partition_syncs.load(Ordering::SeqCst), 0);
    assert_eq!(clean_and_recovered(&catalog), (12, 0));
    assert_eq!(contents(&catalog).await, expected);

    // Nothing changed, so a clean stop writes nothing again (indexes, checkpoint, producer
    // snapshot) but each log's marker: one sync per partition, where there were nine.
    gate.partition_syncs.store(0, Ordering::SeqCst);
    catalog.close_all().await;
    assert_eq!(gate.partition_syncs.load(Ordering::SeqCst), 12);
    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(clean_and_recovered(&catalog), (12, 0));

    // A power loss now: the markers' removals were never synced, and they name a run that the
    // data directory has durably moved past, so no log is trusted without its recovery.
    for (topic, index) in catalog.local_partitions() {
        append_durable(&catalog, &topic, index, 3).await;
    }
    let mut expected = contents(&catalog).await;
    drop(catalog);
    faulty.crash();
    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(clean_and_recovered(&catalog), (0, 12));
    assert_eq!(contents(&catalog).await, expected);

    // A clean stop in this run and a start: trusted again.
    for (topic, index) in catalog.local_partitions() {
        append_durable(&catalog, &topic, index, 4).await;
        expected.get_mut(&(topic, index)).unwrap().push(4);
    }
    catalog.close_all().await;
    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(clean_and_recovered(&catalog), (12, 0));
    assert_eq!(contents(&catalog).await, expected);
}

#[tokio::test]
async fn a_power_loss_in_the_middle_of_a_start_recovers_every_partition_and_loses_nothing() {
    let faulty = FaultyDisk::new(
        3,
        FaultyDiskConfig {
            torn_writes: true,
            ..FaultyDiskConfig::default()
        },
    );
    let gate = GateDisk::new(faulty.clone());
    let (image, expected) = written(gate.clone()).await;

    // Six partitions open (their markers removed, unsynced), four are opening, two wait.
    gate.close_gate(Gated::ListPartition);
    let catalog = catalog(gate.clone(), 4);
    catalog.begin_run().await.unwrap();
    let applying = tokio::spawn({
        let catalog = Arc::clone(&catalog);
        let image = Arc::clone(&image);
        async move { catalog.apply(image).await }
    });
    gate.let_through(6);
    settle().await;
    assert_eq!(gate.parked.load(Ordering::SeqCst), 4);
    applying.abort();
    let _ = applying.await;
    drop(catalog);
    faulty.crash();
    gate.open_gate();

    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(clean_and_recovered(&catalog), (0, 12));
    assert_eq!(contents(&catalog).await, expected);
}

/// Stops the broker in the middle of a clean stop: some logs closed, some closing, some not
/// yet. The process dies (`power_loss`: the machine too) and the broker starts again.
async fn interrupted_stop(seed: u64, power_loss: bool) -> (usize, usize) {
    let faulty = FaultyDisk::new(
        seed,
        FaultyDiskConfig {
            torn_writes: true,
            ..FaultyDiskConfig::default()
        },
    );
    let gate = GateDisk::new(faulty.clone());
    let (image, mut expected) = written(gate.clone()).await;
    let catalog = start(gate.clone(), 4, &image).await;
    for (topic, index) in catalog.local_partitions() {
        append_durable(&catalog, &topic, index, 5).await;
        expected.get_mut(&(topic, index)).unwrap().push(5);
    }

    gate.close_gate(Gated::SyncPartitionDir);
    let closing = tokio::spawn({
        let catalog = Arc::clone(&catalog);
        async move { catalog.close_all().await }
    });
    // Enough directory syncs for some closes to finish, not all.
    gate.let_through(8);
    settle().await;
    assert_eq!(gate.parked.load(Ordering::SeqCst), 4);
    closing.abort();
    let _ = closing.await;
    drop(catalog);
    if power_loss {
        faulty.crash();
    } else {
        faulty.release_locks();
    }
    gate.open_gate();

    let catalog = start(gate.clone(), 4, &image).await;
    assert_eq!(contents(&catalog).await, expected);
    clean_and_recovered(&catalog)
}

#[tokio::test]
async fn a_broker_killed_in_the_middle_of_a_clean_stop_trusts_only_the_logs_it_closed() {
    let (clean, recovered) = interrupted_stop(4, false).await;
    assert!(
        clean > 0 && recovered > 0,
        "{clean} clean, {recovered} recovered"
    );
}

#[tokio::test]
async fn a_power_loss_in_the_middle_of_a_clean_stop_loses_nothing() {
    // A marker's name is left for the file system to make durable: after a power loss the
    // logs closed just before it may be recovered too, at the cost of a scan.
    let (clean, recovered) = interrupted_stop(5, true).await;
    assert_eq!(clean + recovered, 12);
}
