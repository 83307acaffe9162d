//! The cluster image: what every broker knows about the cluster, rebuilt on every node by applying
//! the same committed [`MetadataRecord`]s in the same order (Kafka's `MetadataImage` and its
//! `MetadataDelta`s).
//!
//! Invariants `apply` keeps (asserted in `ClusterImage::check_invariants`): a partition's leader,
//! when there is one, is in its ISR and its replicas; the ISR is a non-empty subset of the
//! replicas unless the partition is offline; leader epochs and partition epochs only rise; a fenced
//! broker leads nothing; `metadata_offset` only rises; topic ids and names map one to one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{NodeId, NO_NODE};

/// Where clients reach a broker (its advertised Kafka listener).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// A broker as the cluster knows it (Kafka's `BrokerRegistration`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: NodeId,
    /// Fresh at every start of the broker process: tells a restart from a retry.
    pub incarnation_id: Uuid,
    /// Given by the controller at registration; rises with every registration of this id.
    /// Requests carrying an older epoch are refused (KIP-903's lesson).
    pub epoch: i64,
    pub endpoint: Endpoint,
    /// The quorum address this node's metadata replica listens on (raft RPC).
    pub controller_endpoint: Option<Endpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are not placed on; a new registration starts fenced
    /// and is unfenced by its first heartbeat once it has caught up with the metadata log.
    pub fenced: bool,
    /// In controlled shutdown: leads nothing, takes no new replicas.
    pub shutting_down: bool,
}

/// One partition's replica set and leadership (Kafka's `PartitionRegistration`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// [`NO_NODE`] when no replica can lead (the partition is offline: LEADER_NOT_AVAILABLE).
    pub leader: NodeId,
    /// Rises with every leader change (including to and from no leader).
    pub leader_epoch: i32,
    /// Rises with every change of this partition's registration (leader, ISR, replicas).
    pub partition_epoch: i32,
}

impl PartitionImage {
    pub fn is_online(&self) -> bool {
        self.leader != NO_NODE
    }
}

/// A topic: its id, configs and partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Per-topic config overrides, Kafka's names (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

/// The whole cluster, as of `metadata_offset`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImage {
    /// The metadata log offset (raft log index) of the last record applied; -1 before any.
    pub metadata_offset: i64,
    /// Set once, by the first record of the log.
    pub cluster_id: String,
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// Shared with older images: applying a record clones only the topic it touches.
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names: BTreeMap<Uuid, String>,
    /// Dynamic broker configs: key `None` holds the cluster-wide defaults (Kafka's `<default>`
    /// broker resource), `Some(id)` one broker's.
    pub broker_configs: BTreeMap<Option<NodeId>, BTreeMap<String, String>>,
    /// The first producer id not yet handed to any broker (Kafka's AllocateProducerIds).
    pub next_producer_id: i64,
    /// The topics of a single-broker data directory (`meta.toml`) were imported; never twice.
    pub legacy_imported: bool,
}

/// A replica assignment for one new partition: its replicas, the preferred leader first.
pub type Assignment = Vec<NodeId>;

/// A change to the image. Records are decided by the active controller (`decide`) against the
/// image they will apply to, so applying one never fails; the quorum commits a batch of records
/// as one log entry, applied all or nothing (a CreateTopics is never half made).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// The log's first record.
    SetClusterId { cluster_id: String },
    /// A broker (re)registers: replaces its previous registration, starts fenced.
    RegisterBroker {
        id: NodeId,
        incarnation_id: Uuid,
        epoch: i64,
        endpoint: Endpoint,
        controller_endpoint: Option<Endpoint>,
        rack: Option<String>,
    },
    UnfenceBroker { id: NodeId, epoch: i64 },
    FenceBroker { id: NodeId, epoch: i64 },
    /// Controlled shutdown began.
    BrokerShuttingDown { id: NodeId, epoch: i64 },
    CreateTopic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        /// One per partition; leader = the first unfenced replica, ISR = the replicas, epochs 0.
        partitions: Vec<PartitionImage>,
    },
    DeleteTopic { id: Uuid },
    /// New partitions appended to a topic.
    CreatePartitions { topic_id: Uuid, partitions: Vec<PartitionImage> },
    /// A partition's leader and/or ISR change (fencing, election, AlterPartition). Carries the
    /// whole new registration; its epochs must be above the current ones.
    ChangePartition { topic_id: Uuid, partition: i32, image: PartitionImage },
    /// Config changes: `Some` sets, `None` removes an override.
    SetTopicConfigs { topic_id: Uuid, configs: BTreeMap<String, Option<String>> },
    SetBrokerConfigs { broker: Option<NodeId>, configs: BTreeMap<String, Option<String>> },
    /// Producer ids `[first, first + count)` go to `broker`.
    AllocateProducerIds { broker: NodeId, first: i64, count: i64 },
    /// The single-broker data directory's topics were imported (their CreateTopic records are in
    /// the same batch).
    LegacyImported,
}

impl ClusterImage {
    /// An image before any record.
    pub fn empty() -> ClusterImage {
        ClusterImage {
            metadata_offset: -1,
            ..ClusterImage::default()
        }
    }

    /// Applies one committed batch at `offset`. Pure and total; panics only if an invariant
    /// breaks (a record the controller should never have decided).
    pub fn apply(&mut self, offset: i64, records: &[MetadataRecord]) {
        let _ = (offset, records);
        todo!("controller-image helper")
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicImage>> {
        self.topics.get(self.topic_names.get(&id)?)
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionImage> {
        self.topics.get(topic)?.partitions.get(usize::try_from(index).ok()?)
    }

    /// Brokers that are registered, unfenced and not shutting down.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down)
    }
}
