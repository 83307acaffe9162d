//! The broker's state: its configuration, its topics and their partitions, and the metadata
//! file that makes them survive restarts.
//!
//! Topic metadata (ids, partition counts, config overrides, the cluster id) lives in
//! `<data-dir>/meta.toml`, rewritten atomically on every change; each partition's log is the
//! directory `<data-dir>/<topic>-<partition>`. Deleting a topic first removes it from the
//! metadata, then renames its directories to `…-delete` and removes them, so a crash at any
//! point leaves either the topic or nothing (leftover `-delete` directories are removed at
//! start). The replication work will move this metadata into the openraft quorum.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::{BrokerConfig, InvalidConfig, TopicConfigs};
use crate::disk::{self, Disk};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::GroupCoordinator;
use crate::log::Log;
use crate::partition::Partition;
use crate::txn::producer_id::ProducerIdManager;

const META_FILE: &str = "meta.toml";
const DELETE_SUFFIX: &str = "-delete";
/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
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

/// Kafka's topic name rule: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
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
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.config.node_id)
            .finish()
    }
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
        let data_dir = config.data_dir.clone();
        disk.create_dir_all(&data_dir).await?;
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
        // Finish deletions a crash interrupted.
        for name in disk.list(&data_dir).await? {
            if name.ends_with(DELETE_SUFFIX) {
                disk.remove_dir_all(&data_dir.join(&name)).await?;
                tracing::info!(dir = %name, "removed the leftovers of a deleted topic");
            }
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
        if fresh {
            broker.persist_meta().await?;
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
        self.partition(OFFSETS_TOPIC, 0)
            .ok_or_else(|| CreateTopicError::Storage(format!("{OFFSETS_TOPIC} has no partition 0")))
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
            let partition = self
                .open_partition(name, index, &topic_configs)
                .await
                .map_err(|e| CreateTopicError::Storage(storage(e)))?;
            opened.push(partition);
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
            return Err(CreateTopicError::Storage(storage(e)));
        }
        tracing::info!(topic = name, partitions, id = %id, "topic created");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicChangeError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| TopicChangeError::UnknownTopic(name.to_string()))?;
        if let Err(e) = self.persist_meta().await {
            self.topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), Arc::clone(&topic));
            return Err(TopicChangeError::Storage(storage(e)));
        }
        for partition in &topic.partitions {
            // Reads or appends still in flight fail as offline; nothing else refers to it.
            let _ = partition.log.close().await;
            // Fetches parked on it answer now (with the error) instead of at their deadline.
            partition.watch().high_watermark_moved();
            let dir = self.partition_dir(name, partition.index);
            let doomed = PathBuf::from(format!(
                "{}.{}{DELETE_SUFFIX}",
                dir.display(),
                topic.id.simple()
            ));
            let removal = async {
                self.disk.rename(&dir, &doomed).await?;
                self.disk.sync_dir(&self.config.data_dir).await?;
                self.disk.remove_dir_all(&doomed).await
            };
            if let Err(e) = removal.await {
                // The metadata no longer has the topic: the next start finishes the removal.
                tracing::warn!(topic = name, partition = partition.index, %e, "could not remove partition data yet");
            }
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
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<(), TopicChangeError> {
        for (key, value) in &configs.overrides {
            TopicConfigs::validate(key, value)?;
        }
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicChangeError::UnknownTopic(name.to_string()))?;
        if validate_only {
            return Ok(());
        }
        let log_config = configs.log_config(&self.config);
        for partition in &topic.partitions {
            partition
                .log
                .set_config(log_config.clone())
                .map_err(TopicChangeError::Storage)?;
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
        self.persist_meta()
            .await
            .map_err(|e| TopicChangeError::Storage(storage(e)))?;
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
                if retention {
                    if let Err(e) = partition.log.apply_retention().await {
                        tracing::warn!(topic = %topic.name, partition = partition.index, %e, "retention failed");
                    }
                }
            }
        }
    }

    /// Stores group memberships that changed outside a rebalance, and removed groups'
    /// tombstones; the server calls it every maintenance tick.
    pub async fn store_changed_groups(&self) {
        let Some(partition) = self.partition(OFFSETS_TOPIC, 0) else {
            return;
        };
        if let Err(e) = self.groups.store_changed_groups(&partition).await {
            tracing::warn!(%e, "storing group membership failed; retried next time");
        }
    }

    /// Removes committed offsets that expired (KIP-211); the server calls it every
    /// `offsets.retention.check.interval.ms`.
    pub async fn expire_offsets(&self) {
        let Some(partition) = self.partition(OFFSETS_TOPIC, 0) else {
            return;
        };
        match self.groups.expire_offsets(&partition).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired committed offsets removed"),
            Err(e) => tracing::warn!(%e, "expiring committed offsets failed; retried next time"),
        }
    }

    /// Clean shutdown: sync and close every log, leaving the clean-shutdown markers.
    pub async fn shutdown(&self) {
        let _admin = self.admin.lock().await;
        for topic in self.topics() {
            for partition in &topic.partitions {
                if let Err(e) = partition.log.close().await {
                    tracing::warn!(topic = %topic.name, partition = partition.index, %e, "log did not close cleanly");
                }
            }
        }
        tracing::info!("broker storage closed");
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}
