//! The broker's state: its configuration, its topics and their partitions, and the metadata
//! file that makes them survive restarts.
//!
//! Topic metadata (ids, partition counts, config overrides, the cluster id) lives in
//! `<data-dir>/meta.toml`, rewritten atomically on every change; each partition's log is the
//! directory `<data-dir>/<topic>-<partition>`. Deleting a topic must work on a full disk (it is
//! how an operator frees space), so it needs no byte free: renaming the first partition's
//! directory to `<topic>-<partition>.<topic-id>-delete` commits the deletion; the other
//! directories follow, the data files go (freeing space), then the metadata is rewritten and
//! the emptied first directory, the marker, goes last. A crash at any point leaves either the
//! topic or nothing: at start, a `-delete` directory naming a topic id that the metadata still
//! holds finishes that topic's deletion, and leftover `-delete` directories are removed. The
//! replication work will move this metadata into the openraft quorum.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::{BrokerConfig, InvalidConfig, TopicConfigs};
use crate::disk::{self, DirLock, Disk, LockDirError};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::GroupCoordinator;
use crate::log::Log;
use crate::partition::Partition;
use crate::txn::producer_id::ProducerIdManager;

const META_FILE: &str = "meta.toml";
const DELETE_SUFFIX: &str = "-delete";
pub use crate::topic_name::{validate_topic_name, MAX_TOPIC_NAME_LEN};
/// Partitions one topic may have. Each is a directory of files, so a request for two billion
/// (found by the protocol fuzzer) must be refused, not attempted.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// A topic: immutable once built; changes replace the whole `Arc<Topic>` in the catalog.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: TopicConfigs,
    pub partitions: Vec<Arc<Partition>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredMeta {
    format_version: u32,
    cluster_id: String,
    #[serde(default)]
    topics: BTreeMap<String, StoredTopic>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredTopic {
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// Why a topic could not be created. Mapped to Kafka codes at the protocol boundary.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    /// INVALID_TOPIC_EXCEPTION
    #[error("invalid topic name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// INVALID_TOPIC_EXCEPTION: Kafka keeps `.` and `_` apart in topic names but not in metric
    /// names, so it refuses a name that differs from an existing one only there.
    #[error("Topic '{name}' collides with existing topic '{existing}'")]
    Collides { name: String, existing: String },
    /// TOPIC_ALREADY_EXISTS
    #[error("topic {0:?} already exists")]
    Exists(String),
    /// INVALID_PARTITIONS
    #[error("invalid number of partitions {0}")]
    InvalidPartitions(i32),
    /// INVALID_REPLICATION_FACTOR
    #[error("replication factor {0} is larger than the number of brokers (1)")]
    InvalidReplicationFactor(i16),
    /// INVALID_CONFIG
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    /// KAFKA_STORAGE_ERROR
    #[error("storage error: {0}")]
    Storage(String),
}

/// Why a topic could not be deleted or changed.
#[derive(Debug, thiserror::Error)]
pub enum TopicChangeError {
    /// UNKNOWN_TOPIC_OR_PARTITION (or UNKNOWN_TOPIC_ID)
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// INVALID_PARTITIONS
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_CONFIG
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    /// KAFKA_STORAGE_ERROR
    #[error("storage error: {0}")]
    Storage(String),
}

/// A flag that is set once and can be awaited (a Notify, not a watch channel: watch picks
/// notifiers with a thread-local RNG, which the simulator cannot seed).
#[derive(Default)]
pub struct Latch {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Latch {
    /// Sets the latch and wakes every waiter; later waits return at once.
    pub fn set(&self) {
        self.set.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once the latch is set.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `set` in between is not missed.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// The broker: configuration plus the catalog of topics.
pub struct Broker {
    pub config: BrokerConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic creation, deletion and changes, and the metadata writes they make.
    admin: tokio::sync::Mutex<()>,
    producer_ids: ProducerIdManager,
    groups: Arc<GroupCoordinator>,
    /// True once shutdown began: parked requests are answered at once, none park any more.
    stopping: Latch,
    /// Connections closed at once because a `max.connections` limit was reached.
    connections_refused: std::sync::atomic::AtomicU64,
    /// The data directory's `.lock`, held until the broker is dropped or shut down: a second
    /// broker on the same directory would append to the same logs and lose acknowledged records.
    dir_lock: std::sync::Mutex<Option<DirLock>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

/// The topic id in the name of a deleted partition's directory (`<dir>.<id>-delete`).
fn deleted_topic_id(dir_name: &str) -> Option<Uuid> {
    let (_, id) = dir_name.strip_suffix(DELETE_SUFFIX)?.rsplit_once('.')?;
    Uuid::try_parse(id).ok()
}

/// Removes the files in `dir`, keeping the directory (a deletion's marker). Needs no space.
async fn remove_dir_contents(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
    for name in disk.list(dir).await? {
        disk.remove(&dir.join(name)).await?;
    }
    disk.sync_dir(dir).await
}

fn storage(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Broker {
    /// Opens the data directory: loads the metadata, recovers every partition's log.
    pub async fn open(
        config: BrokerConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Arc<Broker>> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let data_dir = config.data_dir.clone();
        match disk.create_dir_all(&data_dir).await {
            Ok(()) => {}
            // EEXIST from mkdir: the name is taken by something that is not a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!(
                        "data directory {} exists and is not a directory",
                        data_dir.display()
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
        // Before reading anything: another broker may be rewriting what we would read.
        let dir_lock = disk.lock_dir(&data_dir).await.map_err(|e| {
            let kind = match e {
                LockDirError::InUse { .. } => io::ErrorKind::ResourceBusy,
                LockDirError::Io { ref source, .. } => source.kind(),
            };
            io::Error::new(kind, e)
        })?;
        let meta_path = data_dir.join(META_FILE);
        let (meta, fresh) = match disk::read_file(disk.as_ref(), &meta_path).await {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    io::Error::other(format!("{} is not UTF-8", meta_path.display()))
                })?;
                let meta: StoredMeta = toml::from_str(&text)
                    .map_err(|e| io::Error::other(format!("{}: {e}", meta_path.display())))?;
                (meta, false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (
                StoredMeta {
                    format_version: 1,
                    cluster_id: Uuid::from_u128(crate::random::random_u128())
                        .simple()
                        .to_string(),
                    topics: BTreeMap::new(),
                },
                true,
            ),
            Err(e) => return Err(e),
        };
        // Deletions a crash interrupted: a `-delete` directory commits its topic's deletion.
        let doomed_dirs: Vec<String> = disk
            .list(&data_dir)
            .await?
            .into_iter()
            .filter(|name| name.ends_with(DELETE_SUFFIX))
            .collect();
        let doomed_ids: std::collections::BTreeSet<Uuid> = doomed_dirs
            .iter()
            .filter_map(|n| deleted_topic_id(n))
            .collect();
        let mut meta = meta;
        let mut finished_deletions = false;
        let stored_ids: Vec<(String, Uuid, i32)> = meta
            .topics
            .iter()
            .filter_map(|(name, t)| {
                Some((name.clone(), Uuid::parse_str(&t.id).ok()?, t.partitions))
            })
            .collect();
        for (name, id, partitions) in stored_ids {
            if !doomed_ids.contains(&id) {
                continue;
            }
            for index in 0..partitions {
                let dir = data_dir.join(format!("{name}-{index}"));
                match disk.remove_dir_all(&dir).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            meta.topics.remove(&name);
            finished_deletions = true;
            tracing::info!(topic = %name, %id, "finished deleting a topic a restart interrupted");
        }
        for name in &doomed_dirs {
            remove_dir_contents(disk.as_ref(), &data_dir.join(name)).await?;
        }
        let producer_ids = ProducerIdManager::open(Arc::clone(&disk), &data_dir).await?;
        let groups = GroupCoordinator::new(Arc::clone(&clock), config.group_config());
        let broker = Broker {
            config,
            disk,
            clock,
            cluster_id: meta.cluster_id.clone(),
            topics: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            producer_ids,
            groups,
            stopping: Latch::default(),
            connections_refused: std::sync::atomic::AtomicU64::new(0),
            dir_lock: std::sync::Mutex::new(Some(dir_lock)),
        };
        let mut topics = BTreeMap::new();
        for (name, stored) in &meta.topics {
            let id = Uuid::parse_str(&stored.id)
                .map_err(|e| io::Error::other(format!("topic {name}: bad id: {e}")))?;
            let configs = TopicConfigs {
                overrides: stored.configs.clone(),
            };
            let mut partitions = Vec::new();
            for index in 0..stored.partitions {
                partitions.push(broker.open_partition(name, index, &configs).await?);
            }
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    name: name.clone(),
                    id,
                    configs,
                    partitions,
                }),
            );
        }
        *broker.topics.write().unwrap_or_else(|e| e.into_inner()) = topics;
        if fresh || finished_deletions {
            broker.persist_meta().await?;
        }
        // The metadata no longer names the deleted topics: the markers can go.
        for name in &doomed_dirs {
            broker.disk.remove_dir_all(&data_dir.join(name)).await?;
            tracing::info!(dir = %name, "removed the leftovers of a deleted topic");
        }
        if !doomed_dirs.is_empty() {
            broker.disk.sync_dir(&data_dir).await?;
        }
        // Committed offsets, if any group ever committed (the topic is created on first use).
        if let Some(partition) = broker.partition(OFFSETS_TOPIC, 0) {
            let loaded = broker
                .groups
                .load(&partition)
                .await
                .map_err(|e| io::Error::other(format!("loading {OFFSETS_TOPIC}: {e}")))?;
            tracing::info!(records = loaded, "committed offsets and groups loaded");
            // Restored members' sessions run from now: their timers must too.
            broker.groups.ensure_timers();
        }
        tracing::info!(node_id = broker.config.node_id, cluster_id = %broker.cluster_id,
            topics = meta.topics.len(), data_dir = %data_dir.display(), "broker storage open");
        Ok(Arc::new(broker))
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Hands out producer ids (InitProducerId).
    pub fn producer_ids(&self) -> &ProducerIdManager {
        &self.producer_ids
    }

    /// Partition 0 of `__consumer_offsets`, creating the topic on first use as Kafka does (one
    /// partition; retention off, since without compaction it would delete live offsets).
    pub async fn offsets_partition(&self) -> Result<Arc<Partition>, CreateTopicError> {
        if let Some(partition) = self.partition(OFFSETS_TOPIC, 0) {
            self.groups.set_offsets_partition(&partition);
            return Ok(partition);
        }
        let configs = [("retention.ms".to_string(), "-1".to_string())];
        match self
            .create_topic(OFFSETS_TOPIC, 1, -1, &configs, false)
            .await
        {
            Ok(_) | Err(CreateTopicError::Exists(_)) => {}
            Err(e) => return Err(e),
        }
        let partition = self.partition(OFFSETS_TOPIC, 0).ok_or_else(|| {
            CreateTopicError::Storage(format!("{OFFSETS_TOPIC} has no partition 0"))
        })?;
        self.groups.set_offsets_partition(&partition);
        Ok(partition)
    }

    /// The group coordinator (every group is coordinated by this broker).
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    async fn open_partition(
        &self,
        topic: &str,
        index: i32,
        configs: &TopicConfigs,
    ) -> io::Result<Arc<Partition>> {
        let log = Log::open(
            Arc::clone(&self.disk),
            Arc::clone(&self.clock),
            self.partition_dir(topic, index),
            configs.log_config(&self.config),
        )
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        let partition = Partition::open(topic.to_string(), index, log, self.config.node_id)
            .await
            .map_err(|e| io::Error::other(format!("partition {topic}-{index}: {e}")))?;
        Ok(Arc::new(partition))
    }

    /// All topics, by name.
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
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let topic = self.topic(topic)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i).cloned())
    }

    async fn persist_meta(&self) -> io::Result<()> {
        let topics = self.topics();
        let meta = StoredMeta {
            format_version: 1,
            cluster_id: self.cluster_id.clone(),
            topics: topics
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        StoredTopic {
                            id: t.id.to_string(),
                            partitions: t.partitions.len() as i32,
                            configs: t.configs.overrides.clone(),
                        },
                    )
                })
                .collect(),
        };
        let text = toml::to_string(&meta).map_err(io::Error::other)?;
        disk::write_file_atomic(
            self.disk.as_ref(),
            &self.config.data_dir.join(META_FILE),
            text.as_bytes(),
        )
        .await
    }

    /// Creates a topic. `partitions` and `replication_factor` of -1 mean the broker default.
    /// With `validate_only`, checks everything and changes nothing.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<Arc<Topic>, CreateTopicError> {
        validate_topic_name(name)
            .map_err(|why| CreateTopicError::InvalidName(name.to_string(), why))?;
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(CreateTopicError::InvalidPartitions(partitions));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(CreateTopicError::InvalidReplicationFactor(
                replication_factor,
            ));
        }
        let mut topic_configs = TopicConfigs::default();
        for (key, value) in configs {
            topic_configs.set(key, value)?;
        }
        let _admin = self.admin.lock().await;
        if self.topic(name).is_some() {
            return Err(CreateTopicError::Exists(name.to_string()));
        }
        if let Some(existing) = self.colliding_topic(name) {
            return Err(CreateTopicError::Collides {
                name: name.to_string(),
                existing,
            });
        }
        let id = Uuid::from_u128(crate::random::random_u128());
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.to_string(),
                id,
                configs: topic_configs,
                partitions: Vec::new(),
            }));
        }
        let mut opened = Vec::new();
        for index in 0..partitions {
            match self.open_partition(name, index, &topic_configs).await {
                Ok(partition) => opened.push(partition),
                Err(e) => {
                    self.discard_partitions(name, &opened, index + 1).await;
                    return Err(CreateTopicError::Storage(storage(e)));
                }
            }
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            configs: topic_configs,
            partitions: opened,
        });
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::clone(&topic));
        if let Err(e) = self.persist_meta().await {
            self.topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
            self.discard_partitions(name, &topic.partitions, partitions)
                .await;
            return Err(CreateTopicError::Storage(storage(e)));
        }
        tracing::info!(topic = name, partitions, id = %id, "topic created");
        Ok(topic)
    }

    /// Undoes a failed creation: closes the partitions opened so far and removes the
    /// directories of the first `dirs` partitions, so nothing of the topic stays behind (a
    /// later creation of the same name starts from empty directories either way). Best effort:
    /// a directory that cannot be removed now is only logged.
    async fn discard_partitions(&self, name: &str, opened: &[Arc<Partition>], dirs: i32) {
        for partition in opened {
            let _ = partition.log.close().await;
        }
        for index in 0..dirs {
            let dir = self.partition_dir(name, index);
            match self.disk.remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(topic = name, partition = index, %e, "could not remove the directory of a topic whose creation failed");
                }
            }
        }
    }

    /// An existing topic whose name equals `name` once `.` is read as `_` (Kafka's
    /// `Topic.hasCollision`), other than `name` itself.
    fn colliding_topic(&self, name: &str) -> Option<String> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        crate::topic_name::colliding_topic(name, topics.keys().map(String::as_str))
            .map(String::from)
    }

    /// Deletes a topic and its data; works on a full disk (see the module doc).
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicChangeError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicChangeError::UnknownTopic(name.to_string()))?;
        let data_dir = &self.config.data_dir;
        let dirs: Vec<(PathBuf, PathBuf)> = topic
            .partitions
            .iter()
            .map(|partition| {
                let dir = self.partition_dir(name, partition.index);
                let doomed = PathBuf::from(format!(
                    "{}.{}{DELETE_SUFFIX}",
                    dir.display(),
                    topic.id.simple()
                ));
                (dir, doomed)
            })
            .collect();
        let (first_dir, marker) = dirs.first().expect("a topic has partitions");
        // The commit point: a rename needs no free space.
        let committed = async {
            self.disk.rename(first_dir, marker).await?;
            self.disk.sync_dir(data_dir).await
        }
        .await;
        if let Err(e) = committed {
            if let Err(undo) = self.disk.rename(marker, first_dir).await {
                tracing::warn!(topic = name, %undo, "could not undo a failed topic deletion");
            }
            return Err(TopicChangeError::Storage(storage(e)));
        }
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        for partition in &topic.partitions {
            // Reads or appends still in flight fail as offline; nothing else refers to it.
            partition.log.retire().await;
            // Fetches parked on it answer now (with the error) instead of at their deadline.
            partition.watch().high_watermark_moved();
        }
        // From here on the deletion stands: what fails now, the next start finishes.
        let removal = async {
            for (dir, doomed) in &dirs[1..] {
                self.disk.rename(dir, doomed).await?;
            }
            self.disk.sync_dir(data_dir).await?;
            for (_, doomed) in &dirs[1..] {
                self.disk.remove_dir_all(doomed).await?;
            }
            remove_dir_contents(self.disk.as_ref(), marker).await?;
            self.persist_meta().await?;
            self.disk.remove_dir_all(marker).await?;
            self.disk.sync_dir(data_dir).await
        };
        if let Err(e) = removal.await {
            tracing::warn!(topic = name, %e, "topic deleted; its files go at the next start");
        }
        tracing::info!(topic = name, id = %topic.id, "topic deleted");
        Ok(topic.id)
    }

    /// CreatePartitions: grows a topic to `total` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), TopicChangeError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicChangeError::UnknownTopic(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        if total <= current {
            return Err(TopicChangeError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count {total} must be larger"
            )));
        }
        if total > MAX_PARTITIONS_PER_TOPIC {
            return Err(TopicChangeError::InvalidPartitions(format!(
                "{total} partitions exceed the limit of {MAX_PARTITIONS_PER_TOPIC} per topic"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let mut partitions = topic.partitions.clone();
        for index in current..total {
            let partition = self
                .open_partition(name, index, &topic.configs)
                .await
                .map_err(|e| TopicChangeError::Storage(storage(e)))?;
            partitions.push(partition);
        }
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            configs: topic.configs.clone(),
            partitions,
        });
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), grown);
        if let Err(e) = self.persist_meta().await {
            self.topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), topic);
            return Err(TopicChangeError::Storage(storage(e)));
        }
        tracing::info!(
            topic = name,
            from = current,
            to = total,
            "partitions created"
        );
        Ok(())
    }

    /// Replaces a topic's config overrides (IncrementalAlterConfigs computes the new set).
    /// All or nothing: everything is validated before anything changes, and if storing the
    /// metadata fails, the topic and its logs are rolled back to the configs they had, so no
    /// failed change stays half applied in memory (or applied in memory but not on disk).
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<(), TopicChangeError> {
        for (key, value) in &configs.overrides {
            TopicConfigs::validate(key, value)?;
        }
        let log_config = configs.log_config(&self.config);
        log_config.validate().map_err(|reason| InvalidConfig {
            name: "topic configs".into(),
            value: format!("{:?}", configs.overrides),
            reason,
        })?;
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicChangeError::UnknownTopic(name.to_string()))?;
        if validate_only {
            return Ok(());
        }
        let previous: Vec<_> = topic.partitions.iter().map(|p| p.log.config()).collect();
        for partition in &topic.partitions {
            partition
                .log
                .set_config(log_config.clone())
                .expect("validated above");
        }
        let changed = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            configs,
            partitions: topic.partitions.clone(),
        });
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), changed);
        if let Err(e) = self.persist_meta().await {
            for (partition, config) in topic.partitions.iter().zip(previous) {
                partition
                    .log
                    .set_config(config)
                    .expect("the config it had is valid");
            }
            self.topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), Arc::clone(&topic));
            tracing::warn!(topic = name, %e, "topic configs not changed: storing them failed");
            return Err(TopicChangeError::Storage(storage(e)));
        }
        tracing::info!(topic = name, "topic configs changed");
        Ok(())
    }

    /// Runs retention and lazy flushes on every partition, and recovers partitions whose log
    /// went offline after a disk error; the server calls it periodically.
    pub async fn run_maintenance(&self, retention: bool) {
        for topic in self.topics() {
            for partition in &topic.partitions {
                if partition.recover_if_offline().await {
                    tracing::info!(topic = %topic.name, partition = partition.index,
                        "partition back online after a disk error");
                }
                let _ = partition.log.flush_if_due().await;
                partition.log.tidy_checkpoint().await;
                if retention {
                    if let Err(e) = partition.log.apply_retention().await {
                        tracing::warn!(topic = %topic.name, partition = partition.index, %e, "retention failed");
                    }
                }
            }
        }
    }

    /// Stores group memberships whose store failed earlier; the server calls it every
    /// maintenance tick.
    pub async fn store_changed_groups(&self) {
        if self.partition(OFFSETS_TOPIC, 0).is_none() {
            return;
        }
        if let Err(e) = self.groups.store_dirty_groups().await {
            tracing::warn!(%e, "storing group membership failed; retried next time");
        }
    }

    /// Removes committed offsets that expired (KIP-211); the server calls it every
    /// `offsets.retention.check.interval.ms`.
    pub async fn expire_offsets(&self) {
        if self.partition(OFFSETS_TOPIC, 0).is_none() {
            return;
        }
        match self.groups.expire_offsets().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired committed offsets removed"),
            Err(e) => tracing::warn!(%e, "expiring committed offsets failed; retried next time"),
        }
    }

    /// The first step of a shutdown: parked requests are answered now, with what Kafka answers
    /// when a broker stops (a parked fetch with the data there is, a parked JoinGroup or
    /// SyncGroup with NOT_COORDINATOR, as when the coordinator unloads the group), and requests
    /// that arrive later are not parked. Logs stay open, so acks=all produces still complete.
    pub fn begin_shutdown(&self) {
        self.stopping.set();
        let answered = self.groups.unload();
        tracing::info!(
            parked_group_requests = answered,
            "shutdown begun: parked requests answered"
        );
    }

    /// Has shutdown begun ([`Broker::begin_shutdown`])?
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_set()
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub async fn stopping(&self) {
        self.stopping.wait().await;
    }

    /// Counts a connection closed at once for being over a connection limit.
    pub fn count_refused_connection(&self) {
        self.connections_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections closed at once because `max.connections` or `max.connections.per.ip` was
    /// reached, since start.
    pub fn connections_refused(&self) -> u64 {
        self.connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Clean shutdown: sync and close every log, leaving the clean-shutdown markers.
    pub async fn shutdown(&self) {
        let _admin = self.admin.lock().await;
        for topic in self.topics() {
            for partition in &topic.partitions {
                if let Err(e) = partition.close().await {
                    tracing::warn!(topic = %topic.name, partition = partition.index, %e, "log did not close cleanly");
                }
            }
        }
        tracing::info!("broker storage closed");
        // Every log is closed: the directory is free for the next broker (as Kafka releases
        // its `.lock` at the end of a shutdown).
        drop(
            self.dir_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}
