//! What brokers and admin handlers ask the active controller, and its answers. Errors are values
//! per operation; the protocol handlers map them to Kafka error codes once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::image::{Assignment, Endpoint, PartitionImage};
use super::NodeId;

/// [`ControllerRequest::RegisterBroker`]'s `previous_broker_epoch` of a log directory with no
/// history (Kafka's -1).
pub const NO_BROKER_EPOCH: i64 = -1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// A broker process starts (Kafka's BrokerRegistration).
    RegisterBroker {
        id: NodeId,
        incarnation_id: Uuid,
        endpoint: Endpoint,
        controller_endpoint: Option<Endpoint>,
        rack: Option<String>,
        /// Kafka's `PreviousBrokerEpoch` (KIP-966): the broker epoch of the last registration
        /// whose logs this broker still holds, or [`NO_BROKER_EPOCH`] when its log directory
        /// holds nothing of an earlier registration (new, or its drive wiped and replaced).
        /// The controller then takes it out of every ISR, even as the last member, before it
        /// can lead (see `decide`).
        previous_broker_epoch: i64,
    },
    /// Kafka's BrokerHeartbeat: keeps the session; asks to be unfenced once caught up
    /// (`caught_up_offset` is the metadata offset the broker applied) or for controlled shutdown.
    Heartbeat {
        id: NodeId,
        epoch: i64,
        caught_up_offset: i64,
        want_shutdown: bool,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
    },
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    /// Incremental config changes (IncrementalAlterConfigs): `Some` sets, `None` deletes.
    AlterConfigs {
        resources: Vec<(ConfigResource, BTreeMap<String, Option<String>>)>,
        validate_only: bool,
    },
    /// A block of producer ids for a broker (Kafka's AllocateProducerIds).
    AllocateProducerIds {
        broker: NodeId,
        epoch: i64,
    },
    /// Kafka's AlterPartition (KIP-497): a leader asks to change the ISRs of the partitions it
    /// leads, one entry per partition (Kafka's `AlterPartitionManager` sends every change
    /// queued while its previous request was in flight in one request). A stale broker epoch
    /// refuses the whole request; each partition is decided on its own.
    AlterPartition {
        broker: NodeId,
        broker_epoch: i64,
        partitions: Vec<AlterPartitionItem>,
    },
    /// Kafka's ElectLeaders (KIP-460): elect the preferred replica, or any live replica of an
    /// offline partition, for the partitions named (`None`: every partition of every topic).
    ElectLeaders {
        election: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    /// Kafka's AlterPartitionReassignments (KIP-455): per partition, the replicas to move to,
    /// or `None` to cancel the running reassignment. `allow_replication_factor_change` (v1,
    /// KIP-860; true before v1) refuses a target of another size than the partition's.
    AlterPartitionReassignments {
        topics: Vec<(String, Vec<ReassignmentTarget>)>,
        allow_replication_factor_change: bool,
    },
    /// Kafka's ListPartitionReassignments: the running reassignments of the partitions named
    /// (`None`: of every partition). Decided against the controller's image; commits nothing.
    ListPartitionReassignments {
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    /// One-time import of a single-broker data directory's topics (`meta.toml`). Its topics
    /// are placed on `node`, the importing node; producer ids below `producer_id_floor` (the
    /// single broker's producer-id file) are never handed out again. A retry after the import
    /// was committed changes nothing and answers `Imported`.
    ImportLegacy {
        cluster_id: String,
        topics: Vec<LegacyTopic>,
        node: NodeId,
        producer_id_floor: i64,
    },
}

/// One partition's entry in an AlterPartition. The epochs are what the leader last applied; a
/// change decided against an older image is refused and the leader retries from the newer one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionItem {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The whole new ISR, the leader included.
    pub new_isr: Vec<IsrMember>,
}

/// One partition's outcome in an AlterPartition reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionOutcome {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The partition's registration after the change (or as it stands, if the ISR asked for
    /// is the current one), or why the change was refused.
    pub result: Result<PartitionImage, AlterPartitionError>,
}

/// An ISR member as the leader names it in an AlterPartition (KIP-903's `BrokerState`): the
/// broker epoch the leader saw in its fetches, so a replica that restarted since (and may have
/// lost unsynced data) does not join on the strength of its previous incarnation's fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrMember {
    pub id: NodeId,
    /// -1: not known, not checked (Kafka's rule for requests without epochs).
    pub broker_epoch: i64,
}

impl IsrMember {
    /// A member whose broker epoch the leader does not know.
    pub fn unchecked(id: NodeId) -> IsrMember {
        IsrMember {
            id,
            broker_epoch: -1,
        }
    }
}

/// ElectLeaders' election type (Kafka's `ElectionType`; its wire values 0 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// The first replica, if it is in the ISR and can lead.
    Preferred,
    /// For a partition without a leader: an ISR member, else any live replica (data may be
    /// lost, as `unclean.leader.election.enable` would allow).
    Unclean,
}

/// Why one partition's election was not done. Kafka's codes in brackets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ElectionError {
    /// UNKNOWN_TOPIC_OR_PARTITION
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    /// ELECTION_NOT_NEEDED: the preferred replica leads already (preferred), or the partition
    /// has a leader (unclean).
    #[error("Leader election not needed for topic partition.")]
    ElectionNotNeeded,
    /// PREFERRED_LEADER_NOT_AVAILABLE: the preferred replica is out of the ISR, fenced or
    /// shutting down.
    #[error("The preferred leader was not available.")]
    PreferredLeaderNotAvailable,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE: no replica of the offline partition is alive.
    #[error("Eligible topic partition leaders are not available.")]
    EligibleLeadersNotAvailable,
}

/// Why one partition's reassignment (or its cancellation) was refused. Kafka's codes in
/// brackets, its messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReassignmentError {
    /// UNKNOWN_TOPIC_OR_PARTITION
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    /// INVALID_REPLICA_ASSIGNMENT: empty, a broker twice, an unregistered broker, or a cancel
    /// that would need an unclean election.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_REPLICATION_FACTOR: another size while `allow_replication_factor_change` is off.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// NO_REASSIGNMENT_IN_PROGRESS: a cancel where none runs.
    #[error("No partition reassignment is in progress.")]
    NoReassignmentInProgress,
}

/// One partition and the replicas to move it to (`None`: cancel its running reassignment).
pub type ReassignmentTarget = (i32, Option<Vec<NodeId>>);

/// AlterPartitionReassignments' outcome per partition, per topic, in request order.
pub type ReassignmentResults = Vec<(String, Vec<(i32, Result<(), ReassignmentError>)>)>;

/// A running reassignment as ListPartitionReassignments answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OngoingReassignment {
    pub partition: i32,
    pub replicas: Vec<NodeId>,
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
}

/// ElectLeaders' outcome per partition, per topic, in request order (for `None`: every topic by
/// name, without the partitions that needed no election, as Kafka answers).
pub type ElectionResults = Vec<(String, Vec<(i32, Result<(), ElectionError>)>)>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default (`num.partitions`). Must be -1 when `assignments` is not empty
    /// (Kafka: INVALID_REQUEST otherwise).
    pub num_partitions: i32,
    /// -1: the broker default (`default.replication.factor`). Must be -1 when `assignments`
    /// is not empty.
    pub replication_factor: i16,
    /// Explicit replica assignment per partition (kafka-topics.sh --replica-assignment).
    pub assignments: Vec<Assignment>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPartitions {
    pub topic: String,
    /// The new total.
    pub count: i32,
    /// Empty: placed by the controller; else one per new partition.
    pub assignments: Vec<Assignment>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    /// `None`: the cluster-wide default broker resource.
    Broker(Option<NodeId>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyTopic {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    Registered {
        epoch: i64,
    },
    Heartbeat {
        fenced: bool,
        shutdown_complete: bool,
    },
    /// Per topic, in request order.
    CreateTopics(Vec<(String, Result<CreatedTopic, TopicError>)>),
    DeleteTopics(Vec<(TopicRef, Result<Uuid, TopicError>)>),
    CreatePartitions(Vec<(String, Result<(), TopicError>)>),
    AlterConfigs(Vec<(ConfigResource, Result<(), TopicError>)>),
    ProducerIds {
        first: i64,
        count: i64,
    },
    Imported,
    ElectLeaders(ElectionResults),
    AlterPartitionReassignments(ReassignmentResults),
    /// Per topic with a running reassignment, by name, its reassigning partitions.
    ListPartitionReassignments(Vec<(String, Vec<OngoingReassignment>)>),
    /// Per partition, in request order.
    AlterPartition(Vec<AlterPartitionOutcome>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// Why one topic (or config resource) in a request was refused. Kafka's codes in brackets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TopicError {
    /// INVALID_TOPIC_EXCEPTION
    #[error("{0}")]
    InvalidTopic(String),
    /// TOPIC_ALREADY_EXISTS
    #[error("Topic '{0}' already exists.")]
    AlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID
    #[error("This server does not host this topic-partition.")]
    UnknownTopic,
    /// INVALID_PARTITIONS
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// INVALID_REPLICA_ASSIGNMENT
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_CONFIG
    #[error("{0}")]
    InvalidConfig(String),
    /// INVALID_REQUEST
    #[error("{0}")]
    InvalidRequest(String),
}

/// Why an AlterPartition was refused (Kafka's `validateAlterPartitionData`). Kafka's codes in
/// brackets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AlterPartitionError {
    /// UNKNOWN_TOPIC_ID / UNKNOWN_TOPIC_OR_PARTITION: deleted, or never existed.
    #[error("unknown topic id or partition")]
    UnknownTopicOrPartition,
    /// NOT_CONTROLLER: the request carries epochs newer than this controller's image (Kafka's
    /// hint that another node now controls); retriable.
    #[error("the request's epochs are newer than this controller's image")]
    NotController,
    /// FENCED_LEADER_EPOCH: sent by a leader of an older epoch; the leader waits for the newer
    /// image (where it may lead no more).
    #[error("leader epoch {got} is older than the current {current}")]
    FencedLeaderEpoch { got: i32, current: i32 },
    /// INVALID_UPDATE_VERSION: the partition changed since the image the leader decided on;
    /// it retries from the newer one.
    #[error("partition epoch {got} is older than the current {current}")]
    InvalidUpdateVersion { got: i32, current: i32 },
    /// INVALID_REQUEST: not the leader of this epoch, an ISR that is not a subset of the
    /// replicas, or one without the leader.
    #[error("{0}")]
    InvalidRequest(String),
    /// INELIGIBLE_REPLICA (KIP-841, KIP-903): a member is not registered, fenced, shutting
    /// down, or named with a broker epoch that is not its current one.
    #[error("ineligible replicas: {0:?}")]
    IneligibleReplica(Vec<(NodeId, String)>),
}

/// Why a whole request failed. Kafka's codes in brackets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ControllerError {
    /// NOT_CONTROLLER: this node is not the active controller (the hint names who is).
    #[error("not the active controller (leader hint: {0:?})")]
    NotController(Option<NodeId>),
    /// The quorum has no leader or lost it before committing (REQUEST_TIMED_OUT; retriable:
    /// nothing of the request was committed, or all of it was and a retry sees it).
    #[error("the metadata quorum is unavailable: {0}")]
    Unavailable(String),
    /// STALE_BROKER_EPOCH: the broker registered again since (KIP-903).
    #[error("stale broker epoch {got}, current {current}")]
    StaleBrokerEpoch { got: i64, current: i64 },
    /// The broker is not registered (BROKER_ID_NOT_REGISTERED).
    #[error("broker {0} is not registered")]
    NotRegistered(NodeId),
    /// DUPLICATE_BROKER_REGISTRATION: another live incarnation holds this id.
    #[error("broker {0} is registered by another live process")]
    DuplicateRegistration(NodeId),
    /// Producer ids are exhausted (UNKNOWN_SERVER_ERROR in Kafka).
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
}
