//! The cluster image: what every broker knows about the cluster, rebuilt on every node by applying
//! the same committed [`MetadataRecord`]s in the same order (Kafka's `MetadataImage` and its
//! `MetadataDelta`s).
//!
//! Invariants `apply` keeps (asserted in `ClusterImage::check_invariants`): a partition's leader,
//! when there is one, is in its ISR and its replicas; the ISR is a non-empty subset of the
//! replicas unless the partition is offline; an online partition's ISR holds no fenced broker;
//! leader epochs and partition epochs only rise; a fenced broker leads nothing;
//! `metadata_offset` only rises; topic ids and names map one to one.

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
    /// The metadata offset of the batch that holds this registration: the broker is unfenced
    /// once it has applied the log up to here (Kafka's rule: it has caught up with its own
    /// registration).
    #[serde(default)]
    pub registered_offset: i64,
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
    /// While a reassignment runs (KIP-455): the replicas it adds, which `replicas` holds already
    /// (they fetch like any follower); it completes once they are all in the ISR. Empty
    /// otherwise, and in images and records written before reassignments existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<NodeId>,
    /// While a reassignment runs: the replicas it removes, still in `replicas` (and serving)
    /// until it completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<NodeId>,
    /// Eligible leader replicas (KIP-966, only with `eligible.leader.replicas.enable`): replicas
    /// that left the ISR while it was below `min.insync.replicas`. The high watermark does not
    /// move while the ISR is that small, so each holds everything committed and may lead
    /// cleanly once the ISR is empty. Never in the ISR; empty while the ISR is large enough.
    /// Empty in images and records written before (or without) ELR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<NodeId>,
    /// KIP-966's last known ELR: former ISR and ELR members that are in neither now (e.g. an
    /// ELR member whose log was lost), kept for an operator's recovery; cleared with the ELR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_known_elr: Vec<NodeId>,
}

impl PartitionImage {
    pub fn is_online(&self) -> bool {
        self.leader != NO_NODE
    }

    /// Is a reassignment running (Kafka's `isReassignmentInProgress`)?
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the running reassignment moves to: `replicas` without the ones it removes.
    pub fn target_replicas(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
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
    /// Set by the first record of the log; an import of a single-broker data directory into a
    /// cluster with no topics yet keeps that directory's id instead.
    pub cluster_id: String,
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// Shared with older images: applying a record clones only the topic it touches.
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names: BTreeMap<Uuid, String>,
    /// Dynamic broker configs: key `None` holds the cluster-wide defaults (Kafka's `<default>`
    /// broker resource), `Some(id)` one broker's. Stored as a list of pairs: JSON (the quorum's
    /// snapshot and wire format) has no map keys that are not strings.
    #[serde(with = "pairs")]
    pub broker_configs: BTreeMap<Option<NodeId>, BTreeMap<String, String>>,
    /// The first producer id not yet handed to any broker (Kafka's AllocateProducerIds).
    pub next_producer_id: i64,
    /// The topics of a single-broker data directory (`meta.toml`) were imported; never twice.
    pub legacy_imported: bool,
    /// The first broker epoch not yet given: epochs rise across all registrations of all
    /// brokers, so an epoch names one registration (Kafka uses the record's offset).
    #[serde(default)]
    pub next_broker_epoch: i64,
    /// Unclean leader elections committed since the log began (Kafka's
    /// `UncleanLeaderElectionsPerSec`): a replica outside the ISR was made leader, losing
    /// whatever it lacked.
    #[serde(default)]
    pub unclean_leader_elections: u64,
}

/// A map (de)serialized as a list of `(key, value)` pairs.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

fn apply_configs(
    current: &mut BTreeMap<String, String>,
    changes: &BTreeMap<String, Option<String>>,
) {
    for (key, value) in changes {
        match value {
            Some(value) => {
                current.insert(key.clone(), value.clone());
            }
            None => {
                current.remove(key);
            }
        }
    }
}

fn check_partition(
    brokers: &BTreeMap<NodeId, BrokerRegistration>,
    topic: &str,
    index: usize,
    partition: &PartitionImage,
) {
    let at = || format!("{topic}-{index}");
    assert!(!partition.replicas.is_empty(), "{} has no replicas", at());
    for (i, replica) in partition.replicas.iter().enumerate() {
        assert!(
            !partition.replicas[..i].contains(replica),
            "{} lists replica {replica} twice",
            at()
        );
    }
    for (i, member) in partition.isr.iter().enumerate() {
        assert!(
            partition.replicas.contains(member),
            "{}'s ISR member {member} is not a replica",
            at()
        );
        assert!(
            !partition.isr[..i].contains(member),
            "{} lists ISR member {member} twice",
            at()
        );
    }
    for (what, list) in [
        ("adding", &partition.adding_replicas),
        ("removing", &partition.removing_replicas),
    ] {
        for (i, r) in list.iter().enumerate() {
            assert!(
                partition.replicas.contains(r) && !list[..i].contains(r),
                "{}'s {what} replica {r} is not one replica of {:?}",
                at(),
                partition.replicas
            );
        }
    }
    assert!(
        !partition
            .adding_replicas
            .iter()
            .any(|r| partition.removing_replicas.contains(r)),
        "{} both adds and removes a replica: adding {:?}, removing {:?}",
        at(),
        partition.adding_replicas,
        partition.removing_replicas
    );
    assert!(
        partition.removing_replicas.len() < partition.replicas.len(),
        "{} removes every replica",
        at()
    );
    // KIP-966: the ELR and the last known ELR are sets of replicas, apart from the ISR and
    // from each other.
    for (what, list) in [
        ("ELR", &partition.elr),
        ("last known ELR", &partition.last_known_elr),
    ] {
        for (i, r) in list.iter().enumerate() {
            assert!(
                partition.replicas.contains(r) && !list[..i].contains(r),
                "{}'s {what} member {r} is not one replica of {:?}",
                at(),
                partition.replicas
            );
            assert!(
                !partition.isr.contains(r),
                "{}'s {what} member {r} is in the ISR {:?}",
                at(),
                partition.isr
            );
        }
    }
    assert!(
        !partition
            .last_known_elr
            .iter()
            .any(|r| partition.elr.contains(r)),
        "{}'s last known ELR {:?} overlaps its ELR {:?}",
        at(),
        partition.last_known_elr,
        partition.elr
    );
    assert!(
        partition.leader_epoch >= 0,
        "{}: negative leader epoch",
        at()
    );
    assert!(
        partition.partition_epoch >= 0,
        "{}: negative partition epoch",
        at()
    );
    if partition.leader == NO_NODE {
        return;
    }
    assert!(
        partition.isr.contains(&partition.leader),
        "{}'s leader {} is not in its ISR {:?}",
        at(),
        partition.leader,
        partition.isr
    );
    let leader = brokers
        .get(&partition.leader)
        .unwrap_or_else(|| panic!("{}'s leader {} is not registered", at(), partition.leader));
    assert!(
        !leader.fenced,
        "{}'s leader {} is fenced",
        at(),
        partition.leader
    );
    // A fenced broker leaves every ISR but as the last member of an offline partition (KIP-841).
    for member in &partition.isr {
        assert!(
            brokers.get(member).is_some_and(|b| !b.fenced),
            "{} is online with the fenced or unknown broker {member} in its ISR {:?}",
            at(),
            partition.isr
        );
    }
}

/// A replica assignment for one new partition: its replicas, the preferred leader first.
pub type Assignment = Vec<NodeId>;

/// A change to the image. Records are decided by the active controller (`decide`) against the
/// image they will apply to, so applying one never fails; the quorum commits a batch of records
/// as one log entry, applied all or nothing (a CreateTopics is never half made).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// The log's first record.
    SetClusterId {
        cluster_id: String,
    },
    /// A broker (re)registers: replaces its previous registration, starts fenced.
    RegisterBroker {
        id: NodeId,
        incarnation_id: Uuid,
        epoch: i64,
        endpoint: Endpoint,
        controller_endpoint: Option<Endpoint>,
        rack: Option<String>,
    },
    UnfenceBroker {
        id: NodeId,
        epoch: i64,
    },
    FenceBroker {
        id: NodeId,
        epoch: i64,
    },
    /// Controlled shutdown began.
    BrokerShuttingDown {
        id: NodeId,
        epoch: i64,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        /// One per partition; leader = the first unfenced replica, ISR = the replicas, epochs 0.
        partitions: Vec<PartitionImage>,
    },
    DeleteTopic {
        id: Uuid,
    },
    /// New partitions appended to a topic.
    CreatePartitions {
        topic_id: Uuid,
        partitions: Vec<PartitionImage>,
    },
    /// A partition's leader and/or ISR change (fencing, election, AlterPartition). Carries the
    /// whole new registration; its epochs must be above the current ones.
    ChangePartition {
        topic_id: Uuid,
        partition: i32,
        image: PartitionImage,
    },
    /// The ChangePartition before it in the batch was an unclean election: `leader`, outside
    /// the ISR, leads (counted in [`ClusterImage::unclean_leader_elections`]).
    UncleanLeaderElection {
        topic_id: Uuid,
        partition: i32,
        leader: NodeId,
    },
    /// Config changes: `Some` sets, `None` removes an override.
    SetTopicConfigs {
        topic_id: Uuid,
        configs: BTreeMap<String, Option<String>>,
    },
    SetBrokerConfigs {
        broker: Option<NodeId>,
        configs: BTreeMap<String, Option<String>>,
    },
    /// Producer ids `[first, first + count)` go to `broker`.
    AllocateProducerIds {
        broker: NodeId,
        first: i64,
        count: i64,
    },
    /// No producer id below `floor` is handed out (the imported single broker used them).
    RaiseProducerIdFloor {
        floor: i64,
    },
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
    /// breaks (a record the controller should never have decided). The batch's records apply
    /// in order and the invariants hold after the whole batch (a leadership may move away from
    /// a broker in the same batch that fences it).
    pub fn apply(&mut self, offset: i64, records: &[MetadataRecord]) {
        assert!(
            offset > self.metadata_offset,
            "metadata offset {offset} does not rise above {}",
            self.metadata_offset
        );
        for record in records {
            self.apply_one(offset, record);
        }
        self.metadata_offset = offset;
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    fn apply_one(&mut self, offset: i64, record: &MetadataRecord) {
        match record {
            MetadataRecord::SetClusterId { cluster_id } => {
                assert!(
                    self.cluster_id.is_empty() || self.topics.is_empty(),
                    "cluster id {cluster_id:?} would replace {:?} under existing topics",
                    self.cluster_id
                );
                assert!(!cluster_id.is_empty(), "an empty cluster id");
                self.cluster_id.clone_from(cluster_id);
            }
            MetadataRecord::RegisterBroker {
                id,
                incarnation_id,
                epoch,
                endpoint,
                controller_endpoint,
                rack,
            } => {
                assert!(
                    *epoch >= self.next_broker_epoch,
                    "broker {id}'s epoch {epoch} was given before (next is {})",
                    self.next_broker_epoch
                );
                self.next_broker_epoch = epoch + 1;
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        incarnation_id: *incarnation_id,
                        epoch: *epoch,
                        endpoint: endpoint.clone(),
                        controller_endpoint: controller_endpoint.clone(),
                        rack: rack.clone(),
                        fenced: true,
                        shutting_down: false,
                        registered_offset: offset,
                    },
                );
            }
            MetadataRecord::UnfenceBroker { id, epoch } => {
                let broker = self.registration_mut(*id, *epoch);
                broker.fenced = false;
            }
            MetadataRecord::FenceBroker { id, epoch } => {
                let broker = self.registration_mut(*id, *epoch);
                broker.fenced = true;
            }
            MetadataRecord::BrokerShuttingDown { id, epoch } => {
                let broker = self.registration_mut(*id, *epoch);
                broker.shutting_down = true;
            }
            MetadataRecord::CreateTopic {
                name,
                id,
                configs,
                partitions,
            } => {
                assert!(!self.topics.contains_key(name), "topic {name} exists");
                assert!(!self.topic_names.contains_key(id), "topic id {id} exists");
                assert!(!partitions.is_empty(), "topic {name} without partitions");
                self.topic_names.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        id: *id,
                        configs: configs.clone(),
                        partitions: partitions.clone(),
                    }),
                );
            }
            MetadataRecord::DeleteTopic { id } => {
                let name = self
                    .topic_names
                    .remove(id)
                    .unwrap_or_else(|| panic!("deleting unknown topic id {id}"));
                self.topics.remove(&name);
            }
            MetadataRecord::CreatePartitions {
                topic_id,
                partitions,
            } => {
                assert!(!partitions.is_empty(), "no partitions to add");
                self.topic_mut(*topic_id)
                    .partitions
                    .extend(partitions.iter().cloned());
            }
            MetadataRecord::ChangePartition {
                topic_id,
                partition,
                image,
            } => {
                let topic = self.topic_mut(*topic_id);
                let current = usize::try_from(*partition)
                    .ok()
                    .and_then(|index| topic.partitions.get_mut(index))
                    .unwrap_or_else(|| panic!("changing unknown partition {topic_id}/{partition}"));
                assert!(
                    image.partition_epoch > current.partition_epoch,
                    "partition epoch {} does not rise above {}",
                    image.partition_epoch,
                    current.partition_epoch
                );
                assert!(
                    image.leader_epoch >= current.leader_epoch,
                    "leader epoch {} falls below {}",
                    image.leader_epoch,
                    current.leader_epoch
                );
                assert!(
                    image.leader == current.leader || image.leader_epoch > current.leader_epoch,
                    "the leader changes from {} to {} without a new leader epoch",
                    current.leader,
                    image.leader
                );
                // KIP-966: a replica becomes eligible only by leaving the ISR (it then holds
                // everything committed); staying eligible needs no ISR membership.
                for r in &image.elr {
                    assert!(
                        current.isr.contains(r) || current.elr.contains(r),
                        "replica {r} joins the ELR {:?} of {topic_id}/{partition} from outside \
                         its ISR {:?} and ELR {:?}",
                        image.elr,
                        current.isr,
                        current.elr
                    );
                }
                *current = image.clone();
            }
            MetadataRecord::UncleanLeaderElection {
                topic_id,
                partition,
                leader,
            } => {
                let current = self
                    .topic_by_id(*topic_id)
                    .and_then(|t| t.partitions.get(usize::try_from(*partition).ok()?))
                    .unwrap_or_else(|| panic!("unknown partition {topic_id}/{partition}"));
                assert_eq!(
                    (current.leader, current.isr.as_slice()),
                    (*leader, [*leader].as_slice()),
                    "an unclean election leaves its leader alone in the ISR"
                );
                assert!(
                    current.elr.is_empty() && current.last_known_elr.is_empty(),
                    "an unclean election clears the ELR (KIP-966): {current:?}"
                );
                self.unclean_leader_elections += 1;
            }
            MetadataRecord::SetTopicConfigs { topic_id, configs } => {
                let topic = self.topic_mut(*topic_id);
                apply_configs(&mut topic.configs, configs);
            }
            MetadataRecord::SetBrokerConfigs { broker, configs } => {
                let current = self.broker_configs.entry(*broker).or_default();
                apply_configs(current, configs);
                if current.is_empty() {
                    // Equal images must not differ by an empty entry.
                    self.broker_configs.remove(broker);
                }
            }
            MetadataRecord::AllocateProducerIds {
                broker,
                first,
                count,
            } => {
                assert_eq!(
                    *first, self.next_producer_id,
                    "producer ids for broker {broker} do not start at the next free id"
                );
                assert!(*count > 0, "an empty block of producer ids");
                self.next_producer_id = first
                    .checked_add(*count)
                    .expect("producer ids past i64::MAX");
            }
            MetadataRecord::RaiseProducerIdFloor { floor } => {
                self.next_producer_id = self.next_producer_id.max(*floor);
            }
            MetadataRecord::LegacyImported => {
                assert!(
                    !self.legacy_imported,
                    "the legacy data directory was imported twice"
                );
                self.legacy_imported = true;
            }
        }
    }

    /// The registration of `id` at `epoch`: a record for another epoch was decided against a
    /// registration that no longer exists.
    fn registration_mut(&mut self, id: NodeId, epoch: i64) -> &mut BrokerRegistration {
        let broker = self
            .brokers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("broker {id} is not registered"));
        assert_eq!(broker.epoch, epoch, "broker {id}'s epoch");
        broker
    }

    /// The topic with this id, cloned out of older images that share it.
    fn topic_mut(&mut self, id: Uuid) -> &mut TopicImage {
        let name = self
            .topic_names
            .get(&id)
            .unwrap_or_else(|| panic!("unknown topic id {id}"));
        Arc::make_mut(
            self.topics
                .get_mut(name)
                .expect("topic names and ids agree"),
        )
    }

    /// Asserts the invariants of the module doc that one image can show (epochs and offsets
    /// rising are asserted by `apply` itself). Called after every batch in debug builds; tests
    /// and the simulator call it directly.
    pub fn check_invariants(&self) {
        assert_eq!(
            self.topics.len(),
            self.topic_names.len(),
            "topic names and ids are not one to one"
        );
        for (id, broker) in &self.brokers {
            assert_eq!(*id, broker.id, "broker {id} is filed under another id");
            assert!(
                broker.epoch < self.next_broker_epoch,
                "broker {id}'s epoch {} is not below the next epoch {}",
                broker.epoch,
                self.next_broker_epoch
            );
        }
        for (name, topic) in &self.topics {
            assert_eq!(
                *name, topic.name,
                "topic {name} is filed under another name"
            );
            assert_eq!(
                self.topic_names.get(&topic.id),
                Some(name),
                "topic {name}'s id {} does not map back to it",
                topic.id
            );
            assert!(
                !topic.partitions.is_empty(),
                "topic {name} has no partitions"
            );
            for (index, partition) in topic.partitions.iter().enumerate() {
                check_partition(&self.brokers, name, index, partition);
            }
        }
        assert!(self.next_producer_id >= 0, "negative next producer id");
    }

    /// Asserts what must hold between an earlier image and this later one of the same log (the
    /// simulator's online checks; `apply` asserts the same one batch at a time): the metadata
    /// offset does not fall, no broker's epoch falls, and no surviving partition's leader or
    /// partition epoch falls.
    pub fn check_successor_of(&self, earlier: &ClusterImage) {
        assert!(
            self.metadata_offset >= earlier.metadata_offset,
            "metadata offset fell from {} to {}",
            earlier.metadata_offset,
            self.metadata_offset
        );
        for (id, before) in &earlier.brokers {
            if let Some(now) = self.brokers.get(id) {
                assert!(
                    now.epoch >= before.epoch,
                    "broker {id}'s epoch fell from {} to {}",
                    before.epoch,
                    now.epoch
                );
            }
        }
        for before in earlier.topics.values() {
            let Some(now) = self.topic_by_id(before.id) else {
                continue;
            };
            assert!(
                now.partitions.len() >= before.partitions.len(),
                "topic {} lost partitions",
                now.name
            );
            for (index, (old, new)) in before.partitions.iter().zip(&now.partitions).enumerate() {
                assert!(
                    new.leader_epoch >= old.leader_epoch,
                    "{}-{index}'s leader epoch fell from {} to {}",
                    now.name,
                    old.leader_epoch,
                    new.leader_epoch
                );
                assert!(
                    new.partition_epoch >= old.partition_epoch,
                    "{}-{index}'s partition epoch fell from {} to {}",
                    now.name,
                    old.partition_epoch,
                    new.partition_epoch
                );
            }
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicImage>> {
        self.topics.get(self.topic_names.get(&id)?)
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionImage> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(index).ok()?)
    }

    /// Brokers that are registered, unfenced and not shutting down.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn register(id: NodeId, epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id,
            incarnation_id: Uuid::from_u128(id as u128 * 1000 + epoch as u128),
            epoch,
            endpoint: endpoint(9092),
            controller_endpoint: None,
            rack: None,
        }
    }

    fn partition(replicas: &[NodeId], leader: NodeId) -> PartitionImage {
        PartitionImage {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        }
    }

    fn create(name: &str, id: u128, partitions: Vec<PartitionImage>) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            id: Uuid::from_u128(id),
            configs: BTreeMap::new(),
            partitions,
        }
    }

    /// An image with brokers 1 and 2 registered and unfenced.
    fn two_brokers() -> ClusterImage {
        let mut image = ClusterImage::empty();
        image.apply(
            0,
            &[
                MetadataRecord::SetClusterId {
                    cluster_id: "c".into(),
                },
                register(1, 0),
                register(2, 1),
            ],
        );
        image.apply(
            1,
            &[
                MetadataRecord::UnfenceBroker { id: 1, epoch: 0 },
                MetadataRecord::UnfenceBroker { id: 2, epoch: 1 },
            ],
        );
        image
    }

    #[test]
    fn a_registration_starts_fenced_and_remembers_the_offset_of_its_batch() {
        let mut image = ClusterImage::empty();
        image.apply(4, &[register(7, 0)]);
        let broker = &image.brokers[&7];
        assert!(broker.fenced);
        assert!(!broker.shutting_down);
        assert_eq!(broker.registered_offset, 4);
        assert_eq!(image.metadata_offset, 4);
        assert_eq!(image.next_broker_epoch, 1);
        assert_eq!(image.live_brokers().count(), 0);
    }

    #[test]
    fn a_topic_is_found_by_name_and_by_id_until_it_is_deleted() {
        let mut image = two_brokers();
        image.apply(
            2,
            &[create("t", 5, vec![partition(&[1], 1), partition(&[2], 2)])],
        );
        assert_eq!(image.topic("t").unwrap().partitions.len(), 2);
        assert_eq!(image.topic_by_id(Uuid::from_u128(5)).unwrap().name, "t");
        assert_eq!(image.partition("t", 1).unwrap().leader, 2);
        assert!(image.partition("t", 2).is_none());
        image.apply(
            3,
            &[MetadataRecord::DeleteTopic {
                id: Uuid::from_u128(5),
            }],
        );
        assert!(image.topic("t").is_none());
        assert!(image.topic_names.is_empty());
    }

    #[test]
    fn applying_a_record_leaves_an_older_image_sharing_the_topic_unchanged() {
        let mut image = two_brokers();
        image.apply(2, &[create("t", 5, vec![partition(&[1], 1)])]);
        let before = image.clone();
        image.apply(
            3,
            &[MetadataRecord::CreatePartitions {
                topic_id: Uuid::from_u128(5),
                partitions: vec![partition(&[2], 2)],
            }],
        );
        assert_eq!(before.topic("t").unwrap().partitions.len(), 1);
        assert_eq!(image.topic("t").unwrap().partitions.len(), 2);
    }

    #[test]
    fn fencing_a_leader_and_moving_its_leadership_in_one_batch_keeps_the_invariants() {
        let mut image = two_brokers();
        image.apply(2, &[create("t", 5, vec![partition(&[1, 2], 1)])]);
        image.apply(
            3,
            &[
                MetadataRecord::ChangePartition {
                    topic_id: Uuid::from_u128(5),
                    partition: 0,
                    image: PartitionImage {
                        replicas: vec![1, 2],
                        isr: vec![2],
                        leader: 2,
                        leader_epoch: 1,
                        partition_epoch: 1,
                        adding_replicas: Vec::new(),
                        removing_replicas: Vec::new(),
                        elr: Vec::new(),
                        last_known_elr: Vec::new(),
                    },
                },
                MetadataRecord::FenceBroker { id: 1, epoch: 0 },
            ],
        );
        assert_eq!(image.partition("t", 0).unwrap().leader, 2);
        assert!(image.brokers[&1].fenced);
    }

    #[test]
    #[should_panic(expected = "is fenced")]
    fn fencing_a_broker_that_still_leads_breaks_an_invariant() {
        let mut image = two_brokers();
        image.apply(2, &[create("t", 5, vec![partition(&[1], 1)])]);
        image.apply(3, &[MetadataRecord::FenceBroker { id: 1, epoch: 0 }]);
        // Release builds skip the check in apply; the test asks for it either way.
        image.check_invariants();
    }

    #[test]
    #[should_panic(expected = "does not rise")]
    fn a_batch_at_an_offset_already_applied_is_refused() {
        let mut image = two_brokers();
        image.apply(1, &[]);
    }

    #[test]
    #[should_panic(expected = "without a new leader epoch")]
    fn a_leader_change_without_a_new_leader_epoch_is_refused() {
        let mut image = two_brokers();
        image.apply(2, &[create("t", 5, vec![partition(&[1, 2], 1)])]);
        image.apply(
            3,
            &[MetadataRecord::ChangePartition {
                topic_id: Uuid::from_u128(5),
                partition: 0,
                image: PartitionImage {
                    leader: 2,
                    partition_epoch: 1,
                    ..partition(&[1, 2], 1)
                },
            }],
        );
    }

    #[test]
    #[should_panic(expected = "was given before")]
    fn a_broker_epoch_is_never_given_twice() {
        let mut image = two_brokers();
        image.apply(2, &[register(3, 1)]);
    }

    #[test]
    fn config_changes_set_and_remove_overrides_and_leave_no_empty_broker_entry() {
        let mut image = two_brokers();
        image.apply(2, &[create("t", 5, vec![partition(&[1], 1)])]);
        let set = |k: &str, v: Option<&str>| BTreeMap::from([(k.to_string(), v.map(String::from))]);
        image.apply(
            3,
            &[
                MetadataRecord::SetTopicConfigs {
                    topic_id: Uuid::from_u128(5),
                    configs: set("retention.ms", Some("10")),
                },
                MetadataRecord::SetBrokerConfigs {
                    broker: None,
                    configs: set("log.retention.ms", Some("20")),
                },
            ],
        );
        assert_eq!(image.topic("t").unwrap().configs["retention.ms"], "10");
        assert_eq!(image.broker_configs[&None]["log.retention.ms"], "20");
        image.apply(
            4,
            &[
                MetadataRecord::SetTopicConfigs {
                    topic_id: Uuid::from_u128(5),
                    configs: set("retention.ms", None),
                },
                MetadataRecord::SetBrokerConfigs {
                    broker: None,
                    configs: set("log.retention.ms", None),
                },
            ],
        );
        assert!(image.topic("t").unwrap().configs.is_empty());
        assert!(image.broker_configs.is_empty());
    }

    #[test]
    fn an_image_survives_a_json_round_trip_with_broker_configs_for_the_default_and_one_broker() {
        let mut image = two_brokers();
        image.apply(2, &[create("t", 5, vec![partition(&[1], 1)])]);
        let set = BTreeMap::from([("log.retention.ms".to_string(), Some("1".to_string()))]);
        image.apply(
            3,
            &[
                MetadataRecord::SetBrokerConfigs {
                    broker: None,
                    configs: set.clone(),
                },
                MetadataRecord::SetBrokerConfigs {
                    broker: Some(2),
                    configs: set,
                },
            ],
        );
        let text = serde_json::to_vec(&image).unwrap();
        let back: ClusterImage = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn a_partition_written_before_reassignments_existed_loads_with_none_running() {
        // A record as older brokers wrote it: no adding or removing replicas.
        let old =
            r#"{"replicas":[1,2],"isr":[1,2],"leader":1,"leader_epoch":3,"partition_epoch":4}"#;
        let p: PartitionImage = serde_json::from_str(old).unwrap();
        assert_eq!(p.replicas, vec![1, 2]);
        assert!(!p.is_reassigning());
        // And an image without a reassignment is written as before.
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
        let moving = PartitionImage {
            replicas: vec![3, 1, 2],
            adding_replicas: vec![3],
            removing_replicas: vec![1],
            ..p
        };
        let text = serde_json::to_string(&moving).unwrap();
        assert_eq!(
            serde_json::from_str::<PartitionImage>(&text).unwrap(),
            moving
        );
        assert_eq!(moving.target_replicas(), vec![3, 2]);
    }

    #[test]
    #[should_panic(expected = "both adds and removes")]
    fn a_replica_both_added_and_removed_breaks_an_invariant() {
        let mut image = two_brokers();
        image.apply(
            2,
            &[create(
                "t",
                5,
                vec![PartitionImage {
                    adding_replicas: vec![2],
                    removing_replicas: vec![2],
                    ..partition(&[1, 2], 1)
                }],
            )],
        );
        image.check_invariants();
    }

    #[test]
    #[should_panic(expected = "leader epoch fell")]
    fn an_image_whose_leader_epoch_fell_is_no_successor() {
        let mut earlier = two_brokers();
        earlier.apply(2, &[create("t", 5, vec![partition(&[1, 2], 1)])]);
        let mut later = earlier.clone();
        later.apply(
            3,
            &[MetadataRecord::ChangePartition {
                topic_id: Uuid::from_u128(5),
                partition: 0,
                image: PartitionImage {
                    leader: 2,
                    leader_epoch: 1,
                    partition_epoch: 1,
                    ..partition(&[1, 2], 1)
                },
            }],
        );
        later.check_successor_of(&earlier);
        // The earlier partition at a later offset: its leader epoch went back.
        let mut stale = earlier;
        stale.metadata_offset = later.metadata_offset;
        stale.check_successor_of(&later);
    }

    #[test]
    fn producer_id_blocks_follow_each_other() {
        let mut image = ClusterImage::empty();
        image.apply(
            0,
            &[
                MetadataRecord::AllocateProducerIds {
                    broker: 1,
                    first: 0,
                    count: 1000,
                },
                MetadataRecord::AllocateProducerIds {
                    broker: 2,
                    first: 1000,
                    count: 1000,
                },
            ],
        );
        assert_eq!(image.next_producer_id, 2000);
    }
}
