//! The catalog: this node's partitions, kept in step with the cluster image (Kafka's
//! `ReplicaManager.applyDelta`, driven by `BrokerMetadataPublisher`).
//!
//! Each image the metadata plane applies is applied here in order: the partitions whose
//! replicas include this node are opened (their logs recovered), each local partition is told
//! whether this node leads it and in which leader epoch, topic config changes reach the logs,
//! and the partitions of deleted topics are closed and their directories removed. Applying is
//! idempotent and computed from what is open against the image, so an apply that failed half way
//! (a disk error opening one partition) is finished by the next one.
//!
//! # High-watermark checkpoint
//! Every local partition's high watermark is written now and then (at most every
//! [`HIGH_WATERMARK_CHECKPOINT_INTERVAL`], and at clean shutdown) to
//! `<data-dir>/replication-offset-checkpoint`, in Kafka's format, atomically through the `Disk`
//! trait. A partition opened after a restart starts from its checkpointed HW (capped by its
//! recovered log) instead of 0, so a restarted replica that leads again serves consumers at
//! once instead of waiting for every follower to report.
//!
//! # Directories
//! A partition's log is `<data-dir>/<topic>-<partition>`, as before the cluster, with a
//! `partition.metadata` file naming its topic id (Kafka's file and format): a directory left by
//! an older topic of the same name (deleted while this node was down, then created again) is
//! told apart and removed instead of being served as the new topic's data.
//!
//! Creating a partition writes nothing: its log opens with no directory (`Log::open_unmade`),
//! and a start that finds no directory for a partition of the image opens it the same way, an
//! empty partition (log start and log end 0, high watermark 0), not damage. The first write
//! that must put a byte in the directory (a producer's or a follower's append) makes it whole
//! under a temporary name, `partition.metadata` synced in it, and renames it into place before
//! anything of the log (`Log::make_dir`), so a power loss leaves no directory or a whole one;
//! a `<topic>-<partition>.tmp` leftover is removed at the next start. Kafka makes the directory
//! at creation; here 10,000 of them were most of a creation of 10,000 partitions (the kernel
//! making inodes), and an empty log's directory says nothing the image does not.
//!
//! Directories written by older builds can hold a `partition.metadata` written without a sync:
//! one that is missing, empty or torn in a directory holding no segment file is a creation a
//! power loss interrupted, and the directory is removed (the partition opens without one);
//! beside a segment file it is damage, and the partition is not opened. A whole one beside no
//! segment is synced by the log before its first segment file is made.
//!
//! Removing a partition must work on a full disk and survive a crash at any point: the
//! directory is first renamed `<topic>-<partition>.<topic-id>-delete` (a rename needs no free
//! space), the data directory synced, then the files removed. The deletion itself is already
//! committed in the metadata log, so a crash at any step leaves a `-delete` directory that the
//! next start removes, or a directory the image no longer names, which the stray sweep removes
//! once this node has caught up with the metadata log ([`Catalog::remove_strays`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::clock::Clock;
use crate::config::{BrokerConfig, TopicConfigs};
use crate::controller::image::{ClusterImage, PartitionImage, TopicImage};
use crate::controller::request::NO_BROKER_EPOCH;
use crate::controller::{NodeId, NO_NODE};
use crate::disk::{self, Disk};
use crate::log::{Listing, Log, LogConfig, LogRun, UnmadeDir};
use crate::partition::Partition;
use crate::replica::fetcher::{FetchSizes, FollowTarget, ReplicaFetchers};
use crate::replica::Role;

/// The suffix of a partition directory being removed.
pub const DELETE_SUFFIX: &str = "-delete";
/// Kafka's per-partition file naming the partition's topic id.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// Kafka's high-watermark checkpoint file, one per data directory.
pub const HIGH_WATERMARK_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";
/// The data directory's run (see `log::clean_shutdown`): which partitions' clean-shutdown
/// markers a start trusts without a sync per partition.
pub const LOG_RUN_FILE: &str = "log-run";
/// The broker epoch of the last registration this data directory served (KIP-966's previous
/// broker epoch): its absence means the directory holds nothing of an earlier registration.
pub const BROKER_EPOCH_FILE: &str = "broker-epoch";
/// Kafka's `replica.high.watermark.checkpoint.interval.ms` default.
pub const HIGH_WATERMARK_CHECKPOINT_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(5);

/// Kafka's `replication-offset-checkpoint`: version 0, the entry count, then one
/// `topic partition offset` line per partition.
fn encode_high_watermarks(entries: &BTreeMap<(String, i32), u64>) -> Vec<u8> {
    let mut out = format!("0\n{}\n", entries.len());
    for ((topic, index), hw) in entries {
        out.push_str(&format!("{topic} {index} {hw}\n"));
    }
    out.into_bytes()
}

fn decode_high_watermarks(bytes: &[u8]) -> Option<BTreeMap<(String, i32), u64>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let mut fields = lines.next()?.split(' ');
        let topic = fields.next()?.to_string();
        let index = fields.next()?.parse().ok()?;
        let hw = fields.next()?.parse().ok()?;
        entries.insert((topic, index), hw);
    }
    Some(entries)
}

/// What the catalog knows of the high-watermark checkpoint.
#[derive(Default)]
struct HighWatermarks {
    /// Read once, at the first partition opened: what the last run checkpointed.
    restored: Option<BTreeMap<(String, i32), u64>>,
    /// The last contents written, and when: unchanged contents are not written again.
    written: Option<Vec<u8>>,
    written_at: Option<tokio::time::Instant>,
}

/// Directories under the data directory that are never partitions of a topic (the metadata
/// quorum's own log lives in `__cluster_metadata-0`, as in KRaft).
const RESERVED_DIR_PREFIX: &str = "__cluster_metadata";

/// A topic as this node hosts it: its partitions that have a replica here, by index.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: TopicConfigs,
    /// The local partitions, in index order. With several brokers some indexes are absent:
    /// look one up with [`Topic::partition`].
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// The local partition `index`, if this node holds a replica of it.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions
            .binary_search_by_key(&index, |p| p.index)
            .ok()
            .map(|i| &self.partitions[i])
    }
}

/// The topic id in the name of a deleted partition's directory (`<dir>.<id>-delete`).
pub fn deleted_topic_id(dir_name: &str) -> Option<Uuid> {
    let (_, id) = dir_name.strip_suffix(DELETE_SUFFIX)?.rsplit_once('.')?;
    Uuid::try_parse(id).ok()
}

/// `<topic>-<partition>` of a partition directory's name.
fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    if topic.starts_with(RESERVED_DIR_PREFIX)
        || crate::broker::validate_topic_name(topic).is_err()
        || !index.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((topic, index.parse().ok()?))
}

/// Kafka's `partition.metadata`: `version: 0` and `topic_id: <base64 of the uuid>`.
fn encode_partition_metadata(id: Uuid) -> String {
    format!("version: 0\ntopic_id: {}\n", base64_url(id.as_bytes()))
}

fn decode_partition_metadata(text: &str) -> Option<Uuid> {
    let line = text.lines().find_map(|l| l.strip_prefix("topic_id: "))?;
    let bytes = unbase64_url(line.trim())?;
    Some(Uuid::from_bytes(bytes.try_into().ok()?))
}

const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 without padding, as Kafka prints topic ids.
fn base64_url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(BASE64_URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64_url(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = BASE64_URL.iter().position(|&b| b == c)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// This node's partitions and the image they reflect.
pub struct Catalog {
    node_id: NodeId,
    config: BrokerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// The last image applied in full.
    applied: RwLock<Arc<ClusterImage>>,
    /// One apply at a time, so images are applied in order and partitions opened once. Held
    /// by an apply and by every task it spawned until the last of them ends, so a cancelled
    /// apply's opens still running keep the next apply from opening the same logs.
    applying: Arc<tokio::sync::Mutex<()>>,
    /// The followers' fetchers, one per leader this node follows partitions of; set to the
    /// image's leaderships at every apply.
    fetchers: ReplicaFetchers,
    high_watermarks: tokio::sync::Mutex<HighWatermarks>,
    /// This start's run of the data directory, once [`Catalog::begin_run`] made it durable.
    run: std::sync::Mutex<Option<LogRun>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("node_id", &self.node_id)
            .field("applied_offset", &self.applied_image().metadata_offset)
            .finish()
    }
}

/// An apply that did not finish: the partitions named could not be opened or removed. What
/// could be applied was; the next apply retries the rest.
#[derive(Debug, thiserror::Error)]
#[error("{failures} partition change(s) failed, first: {first}")]
pub struct ApplyError {
    pub failures: usize,
    pub first: String,
}

impl Catalog {
    pub fn new(config: BrokerConfig, disk: Arc<dyn Disk>, clock: Arc<dyn Clock>) -> Catalog {
        let node_id = config.node_id;
        let fetch_max_wait =
            crate::replica::fetcher::fetch_max_wait(config.replica_lag_time_max_ms);
        let fetch_sizes = FetchSizes {
            partition_max_bytes: config.replica_fetch_max_bytes,
            response_max_bytes: config.replica_fetch_response_max_bytes,
        };
        Catalog {
            node_id,
            config,
            disk,
            clock,
            topics: RwLock::new(BTreeMap::new()),
            applied: RwLock::new(Arc::new(ClusterImage::empty())),
            applying: Arc::new(tokio::sync::Mutex::new(())),
            fetchers: ReplicaFetchers::new(node_id, fetch_max_wait, fetch_sizes),
            high_watermarks: tokio::sync::Mutex::new(HighWatermarks::default()),
            run: std::sync::Mutex::new(None),
        }
    }

    /// Starts a new run of the data directory before any partition opens: writes a fresh run id
    /// to `log-run`, durably, so that the partitions' clean-shutdown markers of the previous run
    /// can be removed without a sync each (see `log::clean_shutdown`). On a full disk the start
    /// goes on without a run: each marker's removal is then synced on its own.
    pub async fn begin_run(&self) -> io::Result<()> {
        let path = self.config.data_dir.join(LOG_RUN_FILE);
        let previous = match disk::read_file(self.disk.as_ref(), &path).await {
            Ok(bytes) => LogRun::decode(&bytes).or_else(|| {
                tracing::warn!(path = %path.display(), "unreadable log run: no clean-shutdown marker is trusted without its own sync");
                None
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let run = LogRun::after(previous);
        match disk::write_file_atomic(self.disk.as_ref(), &path, &run.encode()).await {
            Ok(()) => {
                *self.run.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
                Ok(())
            }
            Err(e) if disk::is_storage_full(&e) => {
                tracing::warn!(path = %path.display(), "disk full: starting without a log run");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The broker epoch [`Catalog::record_broker_epoch`] last recorded in this data directory,
    /// or [`NO_BROKER_EPOCH`] when there is none (a new directory, or a wiped drive) or it is
    /// unreadable.
    pub async fn recorded_broker_epoch(&self) -> i64 {
        let path = self.config.data_dir.join(BROKER_EPOCH_FILE);
        match disk::read_file(self.disk.as_ref(), &path).await {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|&e| e >= 0)
                .unwrap_or_else(|| {
                    tracing::warn!(path = %path.display(), "unreadable broker epoch: registering as a new log directory");
                    NO_BROKER_EPOCH
                }),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %e, "unreadable broker epoch: registering as a new log directory");
                }
                NO_BROKER_EPOCH
            }
        }
    }

    /// Records, durably, that this data directory serves the registration at `epoch`.
    pub async fn record_broker_epoch(&self, epoch: i64) -> io::Result<()> {
        let path = self.config.data_dir.join(BROKER_EPOCH_FILE);
        disk::write_file_atomic(self.disk.as_ref(), &path, format!("{epoch}\n").as_bytes()).await
    }

    fn run(&self) -> Option<LogRun> {
        *self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The HW the checkpoint holds for `topic`-`index`, read from the file at the first call.
    /// An unreadable checkpoint restores nothing (every HW starts at 0, which is safe).
    async fn checkpointed_high_watermark(&self, topic: &str, index: i32) -> Option<u64> {
        let mut hws = self.high_watermarks.lock().await;
        if hws.restored.is_none() {
            let path = self.config.data_dir.join(HIGH_WATERMARK_CHECKPOINT_FILE);
            let restored = match disk::read_file(self.disk.as_ref(), &path).await {
                Ok(bytes) => decode_high_watermarks(&bytes).unwrap_or_else(|| {
                    tracing::warn!(path = %path.display(), "high-watermark checkpoint unreadable; ignored");
                    BTreeMap::new()
                }),
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), %e, "high-watermark checkpoint unreadable; ignored");
                    }
                    BTreeMap::new()
                }
            };
            hws.restored = Some(restored);
        }
        hws.restored
            .as_ref()
            .and_then(|r| r.get(&(topic.to_string(), index)))
            .copied()
    }

    /// Writes every local partition's HW to the checkpoint if it changed and the interval has
    /// passed since the last write (or `force`: clean shutdown). A failure is logged and
    /// retried at the next call: the checkpoint only saves a restarted replica some waiting.
    pub async fn checkpoint_high_watermarks(&self, force: bool) {
        let mut hws = self.high_watermarks.lock().await;
        let now = crate::replica::fetcher::monotonic_now();
        let due = hws.written_at.is_none_or(|at| {
            now.saturating_duration_since(at) >= HIGH_WATERMARK_CHECKPOINT_INTERVAL
        });
        if !force && !due {
            return;
        }
        let entries: BTreeMap<(String, i32), u64> = self
            .topics()
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| !p.log.is_offline())
                    .map(|p| {
                        (
                            (t.name.clone(), p.index),
                            p.replica_state().high_watermark(),
                        )
                    })
            })
            .collect();
        let contents = encode_high_watermarks(&entries);
        if hws.written.as_ref() == Some(&contents) {
            return;
        }
        let path = self.config.data_dir.join(HIGH_WATERMARK_CHECKPOINT_FILE);
        match disk::write_file_atomic(self.disk.as_ref(), &path, &contents).await {
            Ok(()) => {
                hws.written = Some(contents);
                hws.written_at = Some(now);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), %e, "high-watermark checkpoint not written")
            }
        }
    }

    /// The replica fetchers (for tests and diagnostics).
    pub fn fetchers(&self) -> &ReplicaFetchers {
        &self.fetchers
    }

    /// Points the fetchers at the leaders `image` gives the partitions this node follows and
    /// holds open. A partition with no leader (NO_NODE) is fetched by no one until it has one.
    fn follow_leaders(&self, image: &ClusterImage) {
        let mut targets = Vec::new();
        for topic in self.topics() {
            let Some(wanted) = image.topic(&topic.name).filter(|t| t.id == topic.id) else {
                continue;
            };
            for partition in &topic.partitions {
                let Some(assignment) = usize::try_from(partition.index)
                    .ok()
                    .and_then(|i| wanted.partitions.get(i))
                else {
                    continue;
                };
                if assignment.leader == self.node_id || assignment.leader == NO_NODE {
                    continue;
                }
                if !partition.is_follower() {
                    continue;
                }
                targets.push(FollowTarget {
                    topic: topic.name.clone(),
                    topic_id: topic.id,
                    index: partition.index,
                    partition: Arc::clone(partition),
                    leader: assignment.leader,
                    leader_epoch: assignment.leader_epoch,
                });
            }
        }
        let addrs = image
            .brokers
            .values()
            .map(|b| (b.id, format!("{}:{}", b.endpoint.host, b.endpoint.port)))
            .collect();
        self.fetchers.update(targets, &addrs);
    }

    /// The image the local partitions reflect.
    pub fn applied_image(&self) -> Arc<ClusterImage> {
        Arc::clone(&self.applied.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        let name = self.applied_image().topic_names.get(&id)?.clone();
        self.topic(&name).filter(|t| t.id == id)
    }

    /// The local partition, if this node holds a replica of it.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.topic(topic)?.partition(index).cloned()
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(partition_dir_name(topic, index))
    }

    /// Applies `image` to this node's partitions. Images must come in metadata-offset order; an
    /// image at or below the one applied changes nothing unless an earlier apply failed.
    pub async fn apply(&self, image: Arc<ClusterImage>) -> Result<(), ApplyError> {
        let applying = Arc::new(Arc::clone(&self.applying).lock_owned().await);
        let previous = self.applied_image();
        assert!(
            image.metadata_offset >= previous.metadata_offset,
            "metadata offsets only rise: applied {}, given {}",
            previous.metadata_offset,
            image.metadata_offset
        );
        let mut failures: Vec<String> = Vec::new();
        // Deleted topics first: a topic deleted and created again under the same name has a
        // new id, and its old partitions must be gone before the new ones open in their place.
        for topic in self.topics() {
            let kept = image.topic(&topic.name).is_some_and(|t| t.id == topic.id);
            if !kept {
                self.topics
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&topic.name);
                for partition in &topic.partitions {
                    if let Err(e) = self.remove_partition(partition, topic.id).await {
                        failures.push(format!("removing {partition:?}: {e}"));
                    }
                }
                tracing::info!(topic = %topic.name, id = %topic.id, "topic deleted: local partitions removed");
            }
        }
        // A topic whose image is the one the last full apply applied (images share what a
        // record did not touch) has nothing to change here: skipping it keeps an apply's cost
        // to the topics that changed, not all of them (a creation of 1,000 topics is ~1,000
        // applies).
        let unchanged = |name: &String, wanted: &Arc<TopicImage>| {
            previous
                .topics
                .get(name)
                .is_some_and(|applied| Arc::ptr_eq(applied, wanted))
        };
        // The partitions new to this node, opened several at once, each in a task of its own
        // (Kafka's `num.recovery.threads.per.data.dir` at a time): an open is system calls and
        // waits on the disk, and tasks spread them over the runtime's threads. The rest of the
        // apply runs in image order on the results.
        let mut to_open = Vec::new();
        for (name, wanted) in &image.topics {
            if unchanged(name, wanted) {
                continue;
            }
            let current = self.topic(name);
            for (index, assignment) in wanted.partitions.iter().enumerate() {
                let index = i32::try_from(index).expect("a topic's partition count fits an i32");
                let open = current.as_ref().and_then(|t| t.partition(index)).is_some();
                if assignment.replicas.contains(&self.node_id) && !open {
                    let configs = TopicConfigs {
                        overrides: wanted.configs.clone(),
                    };
                    let replicated = assignment.replicas.len() > 1;
                    to_open.push((name.clone(), index, wanted.id, configs, replicated));
                }
            }
        }
        let found = self.found_partition_dirs(&to_open).await;
        let opener = Arc::new(Opener {
            disk: Arc::clone(&self.disk),
            clock: Arc::clone(&self.clock),
            data_dir: self.config.data_dir.clone(),
            node_id: self.node_id,
            run: self.run(),
        });
        let mut opened: BTreeMap<(String, i32), io::Result<Arc<Partition>>> = self
            .spawn_bounded(
                &applying,
                to_open
                    .into_iter()
                    .map(|(name, index, id, configs, replicated)| {
                        let opener = Arc::clone(&opener);
                        let log_config = configs.log_config(&self.config);
                        let found = found
                            .as_ref()
                            .is_none_or(|found| found.contains(&partition_dir_name(&name, index)));
                        async move {
                            let result = opener
                                .open(&name, index, id, log_config, replicated, found)
                                .await;
                            ((name, index), result)
                        }
                    })
                    .collect(),
            )
            .await
            .into_iter()
            .collect();
        for (name, wanted) in &image.topics {
            if unchanged(name, wanted) {
                continue;
            }
            let current = self.topic(name);
            let configs = TopicConfigs {
                overrides: wanted.configs.clone(),
            };
            let mut partitions: Vec<Arc<Partition>> = Vec::new();
            let mut changed = current.is_none();
            // KIP-966: with eligible leader replicas on, a leader's HW waits for an ISR of
            // min.insync.replicas.
            let hw_min_isr = self
                .config
                .eligible_leader_replicas_enable
                .then(|| configs.min_insync_replicas(&self.config));
            for (index, assignment) in wanted.partitions.iter().enumerate() {
                let index = i32::try_from(index).expect("a topic's partition count fits an i32");
                let local = assignment.replicas.contains(&self.node_id);
                let open = current.as_ref().and_then(|t| t.partition(index)).cloned();
                match (local, open) {
                    (true, Some(partition)) => {
                        partition.set_min_isr_for_high_watermark(hw_min_isr);
                        apply_role(&partition, assignment, self.node_id).await;
                        partitions.push(partition);
                    }
                    (true, None) => {
                        let result = opened
                            .remove(&(name.clone(), index))
                            .expect("every partition new to this node was opened above");
                        match result {
                            Ok(partition) => {
                                if let Some(hw) =
                                    self.checkpointed_high_watermark(name, index).await
                                {
                                    partition.restore_high_watermark(hw);
                                }
                                partition.set_min_isr_for_high_watermark(hw_min_isr);
                                apply_role(&partition, assignment, self.node_id).await;
                                partitions.push(partition);
                                changed = true;
                            }
                            Err(e) => failures.push(format!("opening {name}-{index}: {e}")),
                        }
                    }
                    (false, Some(partition)) => {
                        // Moved away (reassignment): this node no longer holds a replica.
                        changed = true;
                        if let Err(e) = self.remove_partition(&partition, wanted.id).await {
                            failures.push(format!("removing {partition:?}: {e}"));
                        }
                    }
                    (false, None) => {}
                }
            }
            let configs_changed = current.as_ref().is_some_and(|t| t.configs != configs);
            if configs_changed {
                let log_config = configs.log_config(&self.config);
                for partition in &partitions {
                    if let Err(reason) = partition.log.set_config(log_config.clone()) {
                        // The controller validated them; a broker default may make the
                        // combination invalid here. Keep the log's config, say why.
                        tracing::warn!(partition = ?partition, %reason, "topic configs not applied to a log");
                    }
                }
            }
            if changed || configs_changed {
                self.topics
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        name.clone(),
                        Arc::new(Topic {
                            name: name.clone(),
                            id: wanted.id,
                            configs,
                            partitions,
                        }),
                    );
            }
        }
        // Whatever part of the image was applied: the fetchers follow its leaderships.
        self.follow_leaders(&image);
        if !failures.is_empty() {
            for failure in &failures {
                tracing::warn!(%failure, "catalog change failed; retried at the next apply");
            }
            return Err(ApplyError {
                failures: failures.len(),
                first: failures[0].clone(),
            });
        }
        *self.applied.write().unwrap_or_else(|e| e.into_inner()) = image;
        Ok(())
    }

    /// Closes a partition and removes its directory (see the module doc). Reads, appends and
    /// fetches still in flight fail as offline.
    async fn remove_partition(&self, partition: &Partition, topic_id: Uuid) -> io::Result<()> {
        partition.log.retire().await;
        // Fetches parked on it answer now (with the error) instead of at their deadline.
        partition.watch().high_watermark_moved();
        self.remove_dir(
            &self.partition_dir(&partition.topic, partition.index),
            topic_id,
        )
        .await
    }

    /// Renames `dir` to its `-delete` name, syncs the data directory, then removes it.
    async fn remove_dir(&self, dir: &Path, topic_id: Uuid) -> io::Result<()> {
        remove_dir(self.disk.as_ref(), &self.config.data_dir, dir, topic_id).await
    }

    /// The directories of the partitions in `to_open` that the data directory holds, from one
    /// listing of it: a new partition has none (its log makes it at its first write), and its
    /// open then looks at nothing on disk. `None` (the listing failed): each open looks.
    async fn found_partition_dirs<T>(
        &self,
        to_open: &[(String, i32, Uuid, T, bool)],
    ) -> Option<BTreeSet<String>> {
        if to_open.is_empty() {
            return Some(BTreeSet::new());
        }
        let data_dir = &self.config.data_dir;
        let existing = match self.disk.list(data_dir).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(dir = %data_dir.display(), %e, "data directory not listed: each partition's open looks for its directory");
                return None;
            }
        };
        Some(
            to_open
                .iter()
                .map(|(name, index, ..)| partition_dir_name(name, *index))
                .filter(|dir| existing.binary_search(dir).is_ok())
                .collect(),
        )
    }

    /// Removes, at a start before any partition opens, the leftovers a crash left of removals
    /// (`-delete` directories) and of first writes making a partition's directory (`.tmp`
    /// directories, see `Log::make_dir`): neither is ever served.
    pub async fn remove_deleted_leftovers(&self) -> io::Result<usize> {
        let data_dir = &self.config.data_dir;
        let mut removed = 0;
        for name in self.disk.list(data_dir).await? {
            let in_making = name
                .strip_suffix(crate::log::DIR_IN_MAKING_SUFFIX)
                .is_some_and(|dir| parse_partition_dir(dir).is_some());
            if name.ends_with(DELETE_SUFFIX) {
                remove_doomed(self.disk.as_ref(), &data_dir.join(&name)).await?;
                tracing::info!(dir = %name, "removed the leftovers of a deleted partition");
                removed += 1;
            } else if in_making {
                remove_doomed(self.disk.as_ref(), &data_dir.join(&name)).await?;
                tracing::info!(dir = %name, "removed a partition directory a crash left unfinished");
                removed += 1;
            }
        }
        if removed > 0 {
            self.disk.sync_dir(data_dir).await?;
        }
        Ok(removed)
    }

    /// Removes partition directories the applied image does not give this node (topics deleted
    /// while it was down, or whose deletion a crash interrupted). Only once this node has caught
    /// up with the metadata log: an image behind it would take a live partition for a stray.
    pub async fn remove_strays(&self) -> io::Result<usize> {
        let _applying = self.applying.lock().await;
        let image = self.applied_image();
        let data_dir = &self.config.data_dir;
        let mut removed = 0;
        for name in self.disk.list(data_dir).await? {
            let Some((topic, index)) = parse_partition_dir(&name) else {
                continue;
            };
            let assigned = image
                .partition(topic, index)
                .is_some_and(|p| p.replicas.contains(&self.node_id));
            if assigned {
                continue;
            }
            let dir = data_dir.join(&name);
            let id = match disk::read_file(self.disk.as_ref(), &dir.join(PARTITION_METADATA_FILE))
                .await
            {
                Ok(bytes) => std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(decode_partition_metadata),
                Err(_) => None,
            };
            tracing::info!(dir = %name, "removing a partition directory the cluster does not assign here");
            self.remove_dir(&dir, id.unwrap_or(Uuid::nil())).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Closes every local partition cleanly (producer snapshots, clean-shutdown markers).
    pub async fn close_all(&self) {
        // No follower appends into logs being closed; the HWs are final.
        self.fetchers.stop_all();
        self.checkpoint_high_watermarks(true).await;
        self.close_partitions().await;
    }

    /// Closes the partitions a start that failed had opened, and stops their fetchers: no
    /// writer of this broker is left on a log once the data directory is let go. Unlike
    /// [`Self::close_all`] it writes no high-watermark checkpoint: an apply that failed or was
    /// cancelled leaves only some of this node's partitions here, and the checkpoint would
    /// drop the others' high watermarks.
    pub async fn close_after_failed_start(&self) {
        self.fetchers.stop_all();
        self.close_partitions().await;
    }

    /// Closes every partition held here (their fetchers stopped by the caller).
    async fn close_partitions(&self) {
        let applying = Arc::new(Arc::clone(&self.applying).lock_owned().await);
        let partitions: Vec<Arc<Partition>> = self
            .topics()
            .iter()
            .flat_map(|topic| topic.partitions.iter().cloned())
            .collect();
        // Several at once: each close is a few syncs, which overlap on the disk.
        self.spawn_bounded(
            &applying,
            partitions
                .into_iter()
                .map(|partition| async move {
                    if let Err(e) = partition.close().await {
                        tracing::warn!(partition = ?partition, %e, "log did not close cleanly");
                    }
                })
                .collect(),
        )
        .await;
    }

    /// Runs `work`, each in a task of its own, at most `num-recovery-threads-per-data-dir` at
    /// once, and returns their outputs in the order given. Dropping this future aborts the
    /// tasks, and every task holds `applying` until it ends, so an apply or close that is
    /// cancelled leaves no other one to start while a task of it is still in a poll. Tasks are spawned, and their permits taken, in the order given, and
    /// joined in that order: the simulation's seed alone decides how they interleave.
    async fn spawn_bounded<F>(
        &self,
        applying: &Arc<tokio::sync::OwnedMutexGuard<()>>,
        work: Vec<F>,
    ) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let limit = usize::try_from(self.config.num_recovery_threads_per_data_dir)
            .unwrap_or(usize::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let permits = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut tasks = AbortOnDrop(Vec::new());
        tasks.0 = work
            .into_iter()
            .map(|work| {
                let permits = Arc::clone(&permits);
                let applying = Arc::clone(applying);
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let output = work.await;
                    drop(applying);
                    output
                })
            })
            .collect();
        let mut outputs = Vec::with_capacity(tasks.0.len());
        for task in tasks.0.iter_mut() {
            match task.await {
                Ok(output) => outputs.push(output),
                Err(e) => panic!("a partition's open or close task failed: {e}"),
            }
        }
        outputs
    }

    /// The local partitions' topic names and indexes, for tests and the simulator's checks.
    pub fn local_partitions(&self) -> BTreeSet<(String, i32)> {
        self.topics()
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.index)))
            .collect()
    }
}

/// Tasks aborted when the apply or close that spawned them is dropped (cancelled, or its
/// node killed): like the work polled in the caller's own task before, nothing of it goes on.
struct AbortOnDrop<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The name of the directory of `topic`-`index` in the data directory.
fn partition_dir_name(topic: &str, index: i32) -> String {
    format!("{topic}-{index}")
}

/// What opening a partition's log needs, owned, so that opens run as tasks of their own.
struct Opener {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    data_dir: PathBuf,
    node_id: NodeId,
    run: Option<LogRun>,
}

impl Opener {
    /// Opens the log of `topic`-`index` for topic `id`, `replicated` if the partition has
    /// other replicas. `found`: the data directory may hold the partition's directory (its
    /// listing named it, or was not made). Without one, the partition is new or was never
    /// written, and its log opens touching nothing on disk ([`Log::open_unmade`]). A directory
    /// that names another topic id belongs to an older topic of the same name, and one that
    /// holds no record and names no topic id is what an older build's interrupted creation
    /// left: either is removed, and the log opens without a directory.
    async fn open(
        &self,
        topic: &str,
        index: i32,
        id: Uuid,
        log_config: LogConfig,
        replicated: bool,
        found: bool,
    ) -> io::Result<Arc<Partition>> {
        let disk = self.disk.as_ref();
        let dir = self.data_dir.join(partition_dir_name(topic, index));
        // One listing serves this open and the log's recovery.
        let listing = if found {
            match disk.list(&dir).await {
                Ok(names) => Some(names),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let log = match listing {
            None => None,
            Some(names) => {
                self.open_found(&dir, id, &log_config, replicated, names)
                    .await?
            }
        };
        let log = match log {
            Some(log) => log,
            None => Log::open_unmade(
                Arc::clone(&self.disk),
                Arc::clone(&self.clock),
                dir,
                log_config,
                replicated,
                self.run,
                UnmadeDir {
                    files: vec![(
                        PARTITION_METADATA_FILE.to_string(),
                        encode_partition_metadata(id).into_bytes(),
                    )],
                },
            )
            .map_err(|e| io::Error::other(e.to_string()))?,
        };
        let partition = Partition::open_unassigned(topic.to_string(), index, log, self.node_id)
            .await
            .map_err(|e| io::Error::other(format!("partition {topic}-{index}: {e}")))?;
        Ok(Arc::new(partition))
    }

    /// Opens the log in `dir`, which exists and holds `names`, for topic `id`; `None` if the
    /// directory was removed instead (another topic's, or never written), and the log is to
    /// open without one.
    async fn open_found(
        &self,
        dir: &Path,
        id: Uuid,
        log_config: &LogConfig,
        replicated: bool,
        names: Vec<String>,
    ) -> io::Result<Option<Log>> {
        let disk = self.disk.as_ref();
        let metadata_path = dir.join(PARTITION_METADATA_FILE);
        let recorded = if names.iter().any(|n| n == PARTITION_METADATA_FILE) {
            match disk::read_file(disk, &metadata_path).await {
                Ok(bytes) => Some(
                    std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(decode_partition_metadata),
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let holds_segments = crate::log::holds_segments(&names);
        match recorded {
            Some(Some(existing)) if existing != id => {
                tracing::info!(dir = %dir.display(), old = %existing, new = %id,
                    "removing the data of an older topic of the same name");
                remove_dir(disk, &self.data_dir, dir, existing).await?;
                return Ok(None);
            }
            // Synced before the log's first segment file was made: unreadable beside one, it
            // is damage, not a power loss. Refuse rather than serve data that may be another
            // topic's.
            Some(None) if holds_segments => {
                return Err(io::Error::other(format!(
                    "{}: damaged partition metadata",
                    metadata_path.display()
                )))
            }
            // No record and no topic id: an older build made the directory at the partition's
            // creation and wrote `partition.metadata` without a sync, and a power loss cut it
            // short (missing, empty or torn) beside whatever the empty log wrote. Nothing in it
            // is worth keeping. Its removal need not be durable: a crash brings back the same
            // directory, removed again, and the first write's rename replaces it.
            None | Some(None) if !holds_segments => {
                tracing::info!(dir = %dir.display(), files = names.len(),
                    "a partition directory holding no record and no topic id: removed, the log opens without one");
                remove_doomed(disk, dir).await?;
                return Ok(None);
            }
            _ => {}
        }
        // Its contents may be unsynced: an older build wrote it without a sync at creation, or
        // it is read back after a crash of the process, from the page cache. The log syncs it
        // before its first segment file (a log that has one never makes another first one: the
        // sync is never paid again). A directory made by `Log::make_dir` has it synced.
        let metadata_unsynced = recorded == Some(Some(id));
        // Replicated from its first recovery on: the offset reservation's skip is a
        // single-replica policy (see `Log::open_replicated`).
        let log = Log::open_listed(
            Arc::clone(&self.disk),
            Arc::clone(&self.clock),
            dir.to_path_buf(),
            log_config.clone(),
            replicated,
            self.run,
            Listing {
                names,
                partition_metadata: metadata_unsynced.then(|| metadata_path.clone()),
            },
        )
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        if recorded != Some(Some(id)) {
            // A directory from before the cluster (meta.toml): it is this topic's.
            disk::write_file_atomic(
                disk,
                &metadata_path,
                encode_partition_metadata(id).as_bytes(),
            )
            .await?;
        }
        Ok(Some(log))
    }
}

/// Renames `dir` to its `-delete` name, syncs the data directory, then removes it.
async fn remove_dir(
    disk: &dyn Disk,
    data_dir: &Path,
    dir: &Path,
    topic_id: Uuid,
) -> io::Result<()> {
    let doomed = PathBuf::from(format!(
        "{}.{}{DELETE_SUFFIX}",
        dir.display(),
        topic_id.simple()
    ));
    match disk.rename(dir, &doomed).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    disk.sync_dir(data_dir).await?;
    remove_doomed(disk, &doomed).await?;
    disk.sync_dir(data_dir).await
}

/// Removes a `-delete` directory: its files first (needs no free space), then itself.
async fn remove_doomed(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
    match disk.list(dir).await {
        Ok(names) => {
            for name in names {
                disk.remove(&dir.join(name)).await?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    disk.remove_dir_all(dir).await
}

/// Sets the replica's role and leader epoch to the image's, if they differ. Leader epochs only
/// rise, and the image's never fall (asserted by the image), so this never goes back.
async fn apply_role(partition: &Partition, assignment: &PartitionImage, node_id: NodeId) {
    // Before any role: a follower's appends and a leader's reads for followers must not
    // reserve offsets (a single-replica policy).
    partition.log.set_replicated(assignment.replicas.len() > 1);
    let state = partition.replica_state();
    let role = state.role();
    let epoch = assignment.leader_epoch;
    if assignment.leader == node_id {
        // A reassignment changes the replicas alone (same epoch, same ISR): the leader must
        // then take fetches from the replicas it adds and stop counting those it removes.
        let same = role == Role::Leader
            && state.leader_epoch() == epoch
            && state.isr().iter().copied().eq(sorted(&assignment.isr))
            && state
                .followers()
                .keys()
                .copied()
                .eq(sorted(&assignment.replicas)
                    .into_iter()
                    .filter(|&r| r != node_id));
        if !same {
            partition
                .become_leader(epoch, &assignment.replicas, &assignment.isr)
                .await;
            tracing::debug!(partition = ?partition, epoch, "leading");
        }
    } else {
        // Following another broker, or no one (NO_NODE: the partition has no leader until a
        // replica in its ISR comes back); either way this node takes no produce for it.
        let same =
            role == (Role::Follower {
                leader: assignment.leader,
            }) && state.leader_epoch() == epoch;
        if !same {
            partition.become_follower(epoch, assignment.leader);
            tracing::debug!(partition = ?partition, epoch, leader = assignment.leader,
                offline = assignment.leader == NO_NODE, "following");
        }
    }
}

fn sorted(ids: &[NodeId]) -> Vec<NodeId> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::ManualClock;
    use crate::controller::image::TopicImage;
    use crate::disk::FileDisk;
    use crate::log::batch::builder;

    const T0: i64 = 1_700_000_000_000;

    fn catalog(dir: &Path, node_id: NodeId) -> Catalog {
        let config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            node_id,
            ..BrokerConfig::default()
        };
        Catalog::new(
            config,
            Arc::new(FileDisk::new()),
            Arc::new(ManualClock::new(T0)),
        )
    }

    fn partition(replicas: &[NodeId], leader: NodeId, leader_epoch: i32) -> PartitionImage {
        PartitionImage {
            replicas: replicas.to_vec(),
            isr: if leader == NO_NODE {
                vec![]
            } else {
                vec![leader]
            },
            leader,
            leader_epoch,
            partition_epoch: leader_epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        }
    }

    /// An image at `offset` holding `topics` (name, id, partitions), built by hand: the catalog
    /// reads images, it does not make them.
    fn image(offset: i64, topics: &[(&str, Uuid, Vec<PartitionImage>)]) -> Arc<ClusterImage> {
        let mut image = ClusterImage::empty();
        image.metadata_offset = offset;
        for (name, id, partitions) in topics {
            image.topics.insert(
                name.to_string(),
                Arc::new(TopicImage {
                    name: name.to_string(),
                    id: *id,
                    configs: BTreeMap::new(),
                    partitions: partitions.clone(),
                }),
            );
            image.topic_names.insert(*id, name.to_string());
        }
        Arc::new(image)
    }

    /// The names in `dir`, sorted.
    async fn names(dir: &Path) -> Vec<String> {
        FileDisk::new().list(dir).await.unwrap()
    }

    async fn append_one(partition: &Arc<Partition>) {
        let info = partition
            .append_unexposed(&mut builder::simple(1, 10, b'x', T0))
            .await
            .unwrap();
        partition.wait_durable(&info).await.unwrap();
    }

    #[test]
    fn the_high_watermark_checkpoint_is_kafkas_format_and_reads_back() {
        let entries = BTreeMap::from([(("a".to_string(), 0), 7), (("b-c".to_string(), 3), 0)]);
        let bytes = encode_high_watermarks(&entries);
        assert_eq!(bytes, b"0\n2\na 0 7\nb-c 3 0\n");
        assert_eq!(decode_high_watermarks(&bytes), Some(entries));
        assert_eq!(
            decode_high_watermarks(b"0\n2\na 0 7\n"),
            None,
            "an entry missing"
        );
    }

    #[tokio::test]
    async fn a_data_directory_names_the_broker_epoch_it_recorded_and_a_new_or_wiped_one_none() {
        // The bug this guards: a broker back on a replaced, empty drive named the epoch of its
        // last registration, and was elected from the ISR membership its lost logs had earned.
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path(), 1);
        assert_eq!(
            c.recorded_broker_epoch().await,
            NO_BROKER_EPOCH,
            "a new directory"
        );
        c.record_broker_epoch(7).await.unwrap();
        c.record_broker_epoch(12).await.unwrap();
        assert_eq!(catalog(dir.path(), 1).recorded_broker_epoch().await, 12);
        let path = dir.path().join(BROKER_EPOCH_FILE);
        disk::write_file_atomic(c.disk.as_ref(), &path, b"twelve")
            .await
            .unwrap();
        assert_eq!(
            c.recorded_broker_epoch().await,
            NO_BROKER_EPOCH,
            "unreadable"
        );
        c.disk.remove(&path).await.unwrap();
        assert_eq!(c.recorded_broker_epoch().await, NO_BROKER_EPOCH, "wiped");
    }

    #[tokio::test]
    async fn a_reopened_replica_starts_from_its_checkpointed_high_watermark() {
        // The bug: a restarted replica's HW was 0 until every follower reported again, so a
        // leader elected right after its restart served consumers nothing.
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::from_u128(9);
        let follower = |epoch| {
            let mut p = partition(&[1, 2], 2, epoch);
            p.isr = vec![1, 2];
            p
        };
        {
            let catalog = catalog(dir.path(), 1);
            catalog
                .apply(image(1, &[("t", id, vec![partition(&[1], 1, 0)])]))
                .await
                .unwrap();
            let p = catalog.partition("t", 0).unwrap();
            for _ in 0..3 {
                append_one(&p).await;
            }
            assert_eq!(p.high_watermark(), 3);
            catalog.close_all().await;
        }
        let bytes = disk::read_file(
            &FileDisk::new(),
            &dir.path().join(HIGH_WATERMARK_CHECKPOINT_FILE),
        )
        .await
        .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text, "0\n1\nt 0 3\n");
        let catalog = catalog(dir.path(), 1);
        catalog
            .apply(image(2, &[("t", id, vec![follower(1)])]))
            .await
            .unwrap();
        let state = catalog.partition("t", 0).unwrap().replica_state();
        assert_eq!(state.role(), Role::Follower { leader: 2 });
        assert_eq!(state.high_watermark(), 3);
        catalog.fetchers().stop_all();
    }

    #[tokio::test]
    async fn a_replicated_partition_recovers_a_torn_tail_without_a_filler_batch_of_its_own() {
        // The bug (issue 11, replication-power-loss-lazy seeds 3 and 4): the catalog opened
        // every log as a single replica's, so the recovery after a power loss covered the
        // offsets of a torn tail batch with a filler batch (no leader epoch). On a follower
        // that batch sat where the leader had its own batch of the same offsets; reconciliation
        // kept it (its epoch's end was the log end), the follower fetched on from after it, and
        // once the HW passed it an ISR member held a batch the leader never had below the HW.
        // Kafka's recovery cuts the torn tail and continues from there; the leader's batches
        // are fetched again. A single replica keeps its skip (the offset reservation's promise).
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::from_u128(11);
        let mut replicated = partition(&[1, 2], 1, 0);
        replicated.isr = vec![1, 2];
        let parts = vec![replicated, partition(&[1], 1, 0)];
        let batch_len = builder::simple(1, 10, b'x', T0).len();
        {
            let catalog = catalog(dir.path(), 1);
            catalog
                .apply(image(1, &[("t", id, parts.clone())]))
                .await
                .unwrap();
            for index in [0, 1] {
                let p = catalog.partition("t", index).unwrap();
                for _ in 0..3 {
                    append_one(&p).await;
                }
                assert_eq!(p.log.log_end_offset(), 3);
            }
            // A power loss with the next batch half written: no clean shutdown.
            catalog.fetchers().stop_all();
        }
        for index in [0, 1] {
            let mut torn = builder::simple(1, 10, b'x', T0);
            torn[..8].copy_from_slice(&3i64.to_be_bytes());
            let segment = dir
                .path()
                .join(format!("t-{index}"))
                .join("00000000000000000000.log");
            let file = FileDisk::new()
                .open(&segment, disk::OpenMode::Existing)
                .await
                .unwrap();
            // Its header whole (the offsets it held are known), its records cut.
            file.append(&torn[..batch_len - 4]).await.unwrap();
            file.sync().await.unwrap();
        }
        let catalog = catalog(dir.path(), 1);
        catalog.apply(image(2, &[("t", id, parts)])).await.unwrap();
        let replica = catalog.partition("t", 0).unwrap();
        assert!(!replica.log.recovery().clean);
        assert!(
            replica.log.recovery().torn_bytes_cut > 0,
            "nothing was torn"
        );
        assert_eq!(
            (
                replica.log.log_end_offset(),
                replica.log.recovery().offsets_skipped
            ),
            (3, 0),
            "a replicated log covered the torn batch's offsets with a batch of its own"
        );
        let sole = catalog.partition("t", 1).unwrap();
        assert_eq!(
            (
                sole.log.log_end_offset(),
                sole.log.recovery().offsets_skipped
            ),
            (4, 1),
            "a single replica must skip the offset a torn batch may have shown"
        );
        catalog.fetchers().stop_all();
    }

    #[test]
    fn topic_ids_are_written_as_kafka_writes_them_and_read_back() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let text = encode_partition_metadata(id);
        // Kafka's Uuid.toString: URL-safe base64 of the 16 bytes, no padding (22 characters).
        assert_eq!(text, "version: 0\ntopic_id: ASNFZ4mrze_-3LqYdlQyEA\n");
        assert_eq!(decode_partition_metadata(&text), Some(id));
        assert_eq!(decode_partition_metadata("version: 0\n"), None);
    }

    #[tokio::test]
    async fn only_the_partitions_assigned_here_open_each_in_the_role_and_epoch_the_image_gives() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(dir.path(), 1);
        let id = Uuid::from_u128(7);
        let parts = vec![
            partition(&[1], 1, 4),
            partition(&[2], 2, 0),
            partition(&[1], NO_NODE, 3),
        ];
        catalog.apply(image(5, &[("t", id, parts)])).await.unwrap();

        let topic = catalog.topic("t").unwrap();
        assert_eq!(topic.id, id);
        assert_eq!(
            topic.partitions.iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert!(
            catalog.partition("t", 1).is_none(),
            "broker 2's partition opened here"
        );
        let led = catalog.partition("t", 0).unwrap().replica_state();
        assert_eq!((led.role(), led.leader_epoch()), (Role::Leader, 4));
        let offline = catalog.partition("t", 2).unwrap().replica_state();
        assert_eq!(
            (offline.role(), offline.leader_epoch()),
            (Role::Follower { leader: NO_NODE }, 3)
        );
        assert!(!dir.path().join("t-1").exists());
        assert_eq!(catalog.applied_image().metadata_offset, 5);

        // Leadership comes back in a later epoch: the same replica leads, nothing reopens.
        let before = Arc::clone(&catalog.partition("t", 2).unwrap());
        let parts = vec![
            partition(&[1], 1, 4),
            partition(&[2], 2, 0),
            partition(&[1], 1, 4),
        ];
        catalog.apply(image(6, &[("t", id, parts)])).await.unwrap();
        let after = catalog.partition("t", 2).unwrap();
        assert!(Arc::ptr_eq(&before, &after));
        let state = after.replica_state();
        assert_eq!((state.role(), state.leader_epoch()), (Role::Leader, 4));
    }

    #[tokio::test]
    async fn a_deleted_topic_is_closed_and_its_directories_removed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(dir.path(), 1);
        let id = Uuid::from_u128(8);
        let parts = vec![partition(&[1], 1, 0), partition(&[1], 1, 0)];
        catalog
            .apply(image(1, &[("gone", id, parts)]))
            .await
            .unwrap();
        let kept = catalog.partition("gone", 0).unwrap();
        append_one(&kept).await;

        catalog.apply(image(2, &[])).await.unwrap();
        assert!(catalog.topic("gone").is_none());
        assert!(
            kept.log.is_offline(),
            "a deleted partition's log still serves"
        );
        let left = names(dir.path()).await;
        assert!(
            left.iter().all(|n| !n.starts_with("gone")),
            "left behind: {left:?}"
        );
    }

    #[tokio::test]
    async fn a_directory_left_by_an_older_topic_of_the_same_name_is_not_served_as_the_new_one() {
        // The bug this guards against: a topic deleted while this broker was down and created
        // again under the same name would find the old directory and serve its records.
        let dir = tempfile::tempdir().unwrap();
        let old = Uuid::from_u128(1);
        {
            let catalog = catalog(dir.path(), 1);
            catalog
                .apply(image(1, &[("t", old, vec![partition(&[1], 1, 0)])]))
                .await
                .unwrap();
            let p = catalog.partition("t", 0).unwrap();
            append_one(&p).await;
            catalog.close_all().await;
        }
        let catalog = catalog(dir.path(), 1);
        let new = Uuid::from_u128(2);
        catalog
            .apply(image(9, &[("t", new, vec![partition(&[1], 1, 0)])]))
            .await
            .unwrap();
        let p = catalog.partition("t", 0).unwrap();
        assert_eq!(
            p.log.log_end_offset(),
            0,
            "the old topic's records are served"
        );
        assert_eq!(catalog.topic("t").unwrap().id, new);
    }

    #[tokio::test]
    async fn directories_whose_partition_metadata_a_power_loss_emptied_are_strays_or_new_partitions(
    ) {
        // An older build's creation that a power loss cut short left `partition.metadata`
        // empty (its name durable through a later sync of its directory, its contents never
        // synced) beside what the empty log wrote: a stray like any other if the partition is
        // assigned elsewhere, and, if it is assigned here, a directory of nothing: removed,
        // and the partition opens empty, its directory made again at its first write.
        let dir = tempfile::tempdir().unwrap();
        for name in ["gone-0", "kept-0"] {
            let sub = dir.path().join(name);
            FileDisk::new().create_dir_all(&sub).await.unwrap();
            for (file, contents) in [
                (PARTITION_METADATA_FILE, &b""[..]),
                ("leader-epoch-checkpoint", b"0\n1\n3 0\n"),
            ] {
                disk::write_file_atomic(&FileDisk::new(), &sub.join(file), contents)
                    .await
                    .unwrap();
            }
        }
        let catalog = catalog(dir.path(), 1);
        let id = Uuid::from_u128(4);
        catalog
            .apply(image(2, &[("kept", id, vec![partition(&[1], 1, 0)])]))
            .await
            .unwrap();
        assert_eq!(catalog.remove_strays().await.unwrap(), 1);
        assert!(names(dir.path()).await.is_empty());
        let kept = dir.path().join("kept-0");
        let p = catalog.partition("kept", 0).unwrap();
        assert_eq!(p.log.log_end_offset(), 0);
        append_one(&p).await;
        assert_eq!(names(dir.path()).await, vec!["kept-0"]);
        let text = disk::read_file(&FileDisk::new(), &kept.join(PARTITION_METADATA_FILE))
            .await
            .unwrap();
        assert_eq!(
            decode_partition_metadata(std::str::from_utf8(&text).unwrap()),
            Some(id)
        );
        catalog.fetchers().stop_all();
    }

    #[tokio::test]
    async fn strays_and_deletion_leftovers_go_and_the_quorums_directory_stays() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "stray-0",
            "kept-0",
            "kept-1",
            "__cluster_metadata-0",
            "x-0.00000000000000000000000000000005-delete",
        ] {
            let sub = dir.path().join(name);
            FileDisk::new().create_dir_all(&sub).await.unwrap();
            disk::write_file_atomic(&FileDisk::new(), &sub.join("00000000000000000000.log"), b"")
                .await
                .unwrap();
        }
        let catalog = catalog(dir.path(), 1);
        assert_eq!(catalog.remove_deleted_leftovers().await.unwrap(), 1);
        let id = Uuid::from_u128(3);
        // kept-1 belongs to broker 2 now: stray here as well.
        let parts = vec![partition(&[1], 1, 0), partition(&[2], 2, 0)];
        catalog
            .apply(image(4, &[("kept", id, parts)]))
            .await
            .unwrap();
        assert_eq!(catalog.remove_strays().await.unwrap(), 2);
        let left = names(dir.path()).await;
        assert_eq!(left, vec!["__cluster_metadata-0", "kept-0"]);
    }
}
