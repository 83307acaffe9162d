//! The active controller's decisions, pure: a request against the image and the time gives the
//! records to commit and the reply; expired broker sessions give fencing records that move
//! leaderships away. The raft layer commits the records and sends the reply.
//!
//! Kafka's controller managers are the model, rule for rule and message for message:
//! `ClusterControlManager` and `BrokerHeartbeatManager` (registration, sessions, fencing,
//! controlled shutdown), `ReplicationControlManager` (topics, partitions, leader moves),
//! `ConfigurationControlManager` and `ProducerIdControlManager`.
//!
//! Leadership moves (fencing, controlled shutdown, a new incarnation replacing a live-looking
//! one) follow Kafka's `generateLeaderAndIsrUpdates`: the broker leaves every ISR it is in
//! unless it is the last member (the last member stays, so the partition can come back when it
//! does); where it led, the first live ISR member in replica order leads instead, or nobody
//! (offline). When a broker is unfenced, the offline partitions whose ISR holds it get it as
//! leader. Every change bumps the partition epoch; every leader change the leader epoch.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::image::{Assignment, ClusterImage, MetadataRecord, PartitionImage, TopicImage};
use super::placement::{self, UsableBroker};
use super::request::{
    AlterPartitionError, AlterPartitionOutcome, ConfigResource, ControllerError, ControllerReply,
    ControllerRequest, CreatedTopic, ElectionError, ElectionResults, ElectionType, IsrMember,
    LegacyTopic, NewPartitions, NewTopic, OngoingReassignment, ReassignmentError,
    ReassignmentResults, ReassignmentTarget, TopicError, TopicRef, NO_BROKER_EPOCH,
};
use super::{NodeId, NO_NODE};
use crate::broker::MAX_PARTITIONS_PER_TOPIC;
use crate::config::{parse_bool, TopicConfigs, TOPIC_CONFIG_NAMES};
use crate::planted::{self, Bug};
use crate::topic_name::{colliding_topic, validate_topic_name};

/// The controller's settings, Kafka's names.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// `broker.session.timeout.ms` (Kafka: 9000).
    pub broker_session_timeout_ms: i64,
    /// `num.partitions` (Kafka: 1).
    pub default_num_partitions: i32,
    /// `default.replication.factor` (Kafka: 1).
    pub default_replication_factor: i16,
    /// Producer ids per AllocateProducerIds block (Kafka: 1000).
    pub producer_id_block_size: i64,
    /// `unclean.leader.election.enable`, the broker default (Kafka: false); a topic's config
    /// and the cluster-wide dynamic config override it.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable` (Kafka: true): the active controller moves leaderships
    /// back to preferred replicas every `leader_imbalance_check_interval_ms`.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms (Kafka: 300 s).
    pub leader_imbalance_check_interval_ms: i64,
    /// `eligible.leader.replicas.enable` (KIP-966; Kafka's `eligible.leader.replicas.version`
    /// feature, off by default): replicas leaving an ISR smaller than `min.insync.replicas`
    /// become eligible leaders, and an empty ISR elects one of them cleanly. Cluster-wide:
    /// every node must run with the same value (the leaders' high-watermark rule depends on
    /// it too, see `replica::state`).
    pub eligible_leader_replicas_enable: bool,
    /// `min.insync.replicas`, the broker default of the topic config (Kafka: 1): ELR's bound.
    pub min_insync_replicas: usize,
}

impl Default for ControllerSettings {
    fn default() -> ControllerSettings {
        ControllerSettings {
            broker_session_timeout_ms: 9_000,
            default_num_partitions: 1,
            default_replication_factor: 1,
            producer_id_block_size: 1_000,
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            eligible_leader_replicas_enable: false,
            min_insync_replicas: 1,
        }
    }
}

/// What the controller decided for one request: records to commit as one batch (possibly none,
/// e.g. a heartbeat that changes nothing or `validate_only`), and the reply to send once they
/// are committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub records: Vec<MetadataRecord>,
    pub reply: ControllerReply,
}

/// Randomness the decisions need (topic ids, placement's start), drawn by the caller from the
/// runtime's seeded source so decisions stay pure and replayable.
pub trait Entropy {
    fn next_u128(&mut self) -> u128;
}

/// Decides `request` against `image` at time `now_ms`. The caller commits `records` and applies
/// them to its image before deciding the next request (or decides against a working copy with
/// the pending records applied), so every decision sees the ones before it.
pub fn decide(
    image: &ClusterImage,
    request: &ControllerRequest,
    sessions: &mut Sessions,
    settings: &ControllerSettings,
    now_ms: i64,
    entropy: &mut dyn Entropy,
) -> Result<Decision, ControllerError> {
    match request {
        ControllerRequest::RegisterBroker {
            id,
            incarnation_id,
            endpoint,
            controller_endpoint,
            rack,
            previous_broker_epoch,
        } => {
            if let Some(existing) = image.brokers.get(id) {
                if existing.incarnation_id == *incarnation_id {
                    // A retry of a registration already decided: same epoch, nothing new.
                    sessions.touch(*id, now_ms);
                    return Ok(Decision {
                        records: Vec::new(),
                        reply: ControllerReply::Registered {
                            epoch: existing.epoch,
                        },
                    });
                }
                if sessions.has_valid_session(image, *id, settings, now_ms) {
                    return Err(ControllerError::DuplicateRegistration(*id));
                }
            }
            let epoch = image.next_broker_epoch;
            let mut records = Vec::new();
            let leaving = BTreeSet::from([*id]);
            if let (Some(existing), NO_BROKER_EPOCH) =
                (image.brokers.get(id), *previous_broker_epoch)
            {
                // KIP-966's unclean registration, for a log directory that lost everything:
                // its replicas are empty, so the ISR memberships the old incarnation earned
                // are void, the last member's too (an ISR left empty keeps the partition
                // offline rather than electing an empty log; unclean elections aside).
                tracing::warn!(
                    broker = id,
                    old_epoch = existing.epoch,
                    "broker registers with an empty log directory: it leaves every ISR"
                );
                let last = if planted::is(Bug::WipedReplicaStaysInIsr) {
                    LastMember::Stays
                } else {
                    LastMember::Leaves
                };
                records.extend(leave_isrs(image, settings, &leaving, last));
            } else if image.brokers.get(id).is_some_and(|b| !b.fenced) {
                // The old incarnation's session expired but it was not fenced yet: its
                // leaderships go before the new registration (which starts fenced) replaces it.
                records.extend(move_leaderships(image, settings, &leaving));
            }
            records.push(MetadataRecord::RegisterBroker {
                id: *id,
                incarnation_id: *incarnation_id,
                epoch,
                endpoint: endpoint.clone(),
                controller_endpoint: controller_endpoint.clone(),
                rack: rack.clone(),
            });
            sessions.touch(*id, now_ms);
            Ok(Decision {
                records,
                reply: ControllerReply::Registered { epoch },
            })
        }
        ControllerRequest::Heartbeat { .. } => {
            heartbeat(image, sessions, settings, now_ms, request)
        }
        ControllerRequest::CreateTopics {
            topics,
            validate_only,
        } => Ok(create_topics(
            image,
            settings,
            topics,
            *validate_only,
            entropy,
        )),
        ControllerRequest::DeleteTopics { topics } => Ok(delete_topics(image, topics)),
        ControllerRequest::CreatePartitions {
            topics,
            validate_only,
        } => Ok(create_partitions(image, topics, *validate_only, entropy)),
        ControllerRequest::AlterConfigs {
            resources,
            validate_only,
        } => Ok(alter_configs(image, resources, *validate_only)),
        ControllerRequest::AllocateProducerIds { broker, epoch } => {
            check_broker_epoch(image, *broker, *epoch)?;
            let first = image.next_producer_id;
            let count = settings.producer_id_block_size;
            assert!(count > 0, "producer_id_block_size must be positive");
            // Kafka's rule: the block's end must fit in an int64.
            if first > i64::MAX - count {
                return Err(ControllerError::ProducerIdsExhausted);
            }
            Ok(Decision {
                records: vec![MetadataRecord::AllocateProducerIds {
                    broker: *broker,
                    first,
                    count,
                }],
                reply: ControllerReply::ProducerIds { first, count },
            })
        }
        ControllerRequest::AlterPartition {
            broker,
            broker_epoch,
            partitions,
        } => {
            check_broker_epoch(image, *broker, *broker_epoch)?;
            let mut records = Vec::new();
            let mut seen = BTreeSet::new();
            let mut outcomes = Vec::with_capacity(partitions.len());
            for item in partitions {
                let result = if !seen.insert((item.topic_id, item.partition)) {
                    // Two changes of one partition in one request: both would be decided on the
                    // same image. The sender never does it (one entry per partition).
                    Err(AlterPartitionError::InvalidRequest(format!(
                        "partition {} of topic {} appears twice",
                        item.partition, item.topic_id
                    )))
                } else {
                    alter_partition(
                        image,
                        settings,
                        *broker,
                        item.topic_id,
                        item.partition,
                        (item.leader_epoch, item.partition_epoch),
                        &item.new_isr,
                    )
                    .map(|(record, changed)| {
                        records.extend(record);
                        changed
                    })
                };
                if let Err(e) = &result {
                    tracing::info!(broker, topic = %item.topic_id, partition = item.partition,
                        error = %e, "AlterPartition refused");
                }
                outcomes.push(AlterPartitionOutcome {
                    topic_id: item.topic_id,
                    partition: item.partition,
                    result,
                });
            }
            Ok(Decision {
                records,
                reply: ControllerReply::AlterPartition(outcomes),
            })
        }
        ControllerRequest::ElectLeaders {
            election,
            partitions,
        } => Ok(elect_leaders(
            image,
            settings,
            *election,
            partitions.as_deref(),
        )),
        ControllerRequest::AlterPartitionReassignments {
            topics,
            allow_replication_factor_change,
        } => Ok(alter_partition_reassignments(
            image,
            settings,
            topics,
            *allow_replication_factor_change,
        )),
        ControllerRequest::ListPartitionReassignments { topics } => Ok(Decision {
            records: Vec::new(),
            reply: ControllerReply::ListPartitionReassignments(list_partition_reassignments(
                image,
                topics.as_deref(),
            )),
        }),
        ControllerRequest::ImportLegacy {
            cluster_id,
            topics,
            node,
            producer_id_floor,
        } => Ok(import_legacy(
            image,
            cluster_id,
            topics,
            *node,
            *producer_id_floor,
        )),
    }
}

/// The broker's registration at exactly `epoch` (Kafka's `checkBrokerEpoch`).
fn check_broker_epoch(image: &ClusterImage, id: NodeId, epoch: i64) -> Result<(), ControllerError> {
    let broker = image
        .brokers
        .get(&id)
        .ok_or(ControllerError::NotRegistered(id))?;
    if broker.epoch != epoch {
        return Err(ControllerError::StaleBrokerEpoch {
            got: epoch,
            current: broker.epoch,
        });
    }
    Ok(())
}

/// Kafka's `ReplicationControlManager.alterPartition` for one partition, its checks in Kafka's
/// order (`validateAlterPartitionData`): the partition exists; epochs newer than the image
/// mean this controller is behind (NOT_CONTROLLER); an older leader epoch is a deposed leader
/// (FENCED_LEADER_EPOCH); only the leader of this epoch may ask; an older partition epoch is a
/// change decided on a stale ISR (INVALID_UPDATE_VERSION); the new ISR is a subset of the
/// replicas holding the leader; and every member is registered, unfenced, not shutting down and
/// at the broker epoch the leader names (KIP-841, KIP-903: INELIGIBLE_REPLICA). An accepted
/// change keeps the leader and its epoch and bumps the partition epoch; the ISR is kept in
/// replica order. The record, if the ISR changes, and the partition's registration after it.
fn alter_partition(
    image: &ClusterImage,
    settings: &ControllerSettings,
    broker: NodeId,
    topic_id: Uuid,
    index: i32,
    (leader_epoch, partition_epoch): (i32, i32),
    new_isr: &[IsrMember],
) -> Result<(Option<MetadataRecord>, PartitionImage), AlterPartitionError> {
    let topic = image
        .topic_by_id(topic_id)
        .ok_or(AlterPartitionError::UnknownTopicOrPartition)?;
    let partition = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(AlterPartitionError::UnknownTopicOrPartition)?;
    if leader_epoch > partition.leader_epoch || partition_epoch > partition.partition_epoch {
        return Err(AlterPartitionError::NotController);
    }
    if leader_epoch < partition.leader_epoch {
        return Err(AlterPartitionError::FencedLeaderEpoch {
            got: leader_epoch,
            current: partition.leader_epoch,
        });
    }
    if broker != partition.leader {
        return Err(AlterPartitionError::InvalidRequest(format!(
            "broker {broker} does not lead {}-{index} in leader epoch {leader_epoch} (leader: {})",
            topic.name, partition.leader
        )));
    }
    if partition_epoch < partition.partition_epoch {
        return Err(AlterPartitionError::InvalidUpdateVersion {
            got: partition_epoch,
            current: partition.partition_epoch,
        });
    }
    let ids: BTreeSet<NodeId> = new_isr.iter().map(|m| m.id).collect();
    if ids.len() != new_isr.len() || !ids.iter().all(|id| partition.replicas.contains(id)) {
        return Err(AlterPartitionError::InvalidRequest(format!(
            "the ISR {:?} is not a set of the replicas {:?}",
            new_isr.iter().map(|m| m.id).collect::<Vec<_>>(),
            partition.replicas
        )));
    }
    if !ids.contains(&partition.leader) {
        return Err(AlterPartitionError::InvalidRequest(format!(
            "the ISR {ids:?} does not hold the leader {}",
            partition.leader
        )));
    }
    let ineligible: Vec<(NodeId, String)> = new_isr
        .iter()
        .filter_map(|member| {
            let why = match image.brokers.get(&member.id) {
                None => "not registered".to_string(),
                Some(b) if b.shutting_down => "shutting down".to_string(),
                Some(b) if b.fenced => "fenced".to_string(),
                Some(b) if member.broker_epoch != -1 && member.broker_epoch != b.epoch => format!(
                    "broker epoch mismatch: requested={} VS expected={}",
                    member.broker_epoch, b.epoch
                ),
                Some(_) => return None,
            };
            Some((member.id, why))
        })
        .collect();
    if !ineligible.is_empty() {
        return Err(AlterPartitionError::IneligibleReplica(ineligible));
    }
    let isr: Vec<NodeId> = partition
        .replicas
        .iter()
        .copied()
        .filter(|r| ids.contains(r))
        .collect();
    if ids == partition.isr.iter().copied().collect() {
        return Ok((None, partition.clone()));
    }
    let index = usize::try_from(index).expect("checked above");
    // The ISR this leader asked for may complete a running reassignment (Kafka's
    // `PartitionChangeBuilder.completeReassignmentIfNeeded`); then the leader itself may be
    // removed and another elected. The leader learns it from the image it gets back (Kafka
    // answers NEW_LEADER_ELECTED with the same record committed).
    let mut record = complete_reassignment(image, topic.id, index, partition, &isr, None)
        .unwrap_or_else(|| change_partition(topic.id, index, partition, partition.leader, isr));
    if let MetadataRecord::ChangePartition { image: changed, .. } = &mut record {
        // A member leaving an ISR below min.insync.replicas becomes eligible (KIP-966).
        let rule = elr_rule(settings, topic);
        settle_elr(rule, partition, changed, &BTreeSet::new());
    }
    let MetadataRecord::ChangePartition { image: changed, .. } = &record else {
        unreachable!("change_partition makes a ChangePartition");
    };
    assert!(changed.leader == partition.leader || partition.is_reassigning());
    assert_eq!(changed.partition_epoch, partition.partition_epoch + 1);
    let changed = changed.clone();
    Ok((Some(record), changed))
}

/// The record that completes `partition`'s running reassignment with `isr` as its new ISR, if
/// it can complete (Kafka's `PartitionReassignmentReplicas.maybeCompleteReassignment`): every
/// target replica (the adding ones and those kept) is in the ISR. Then replicas = the target,
/// ISR = ISR ∩ target, and a leader being removed (or none) gives way to the first target
/// replica that can lead, in a new leader epoch.
fn complete_reassignment(
    image: &ClusterImage,
    topic_id: Uuid,
    index: usize,
    partition: &PartitionImage,
    isr: &[NodeId],
    elected: Option<NodeId>,
) -> Option<MetadataRecord> {
    if !partition.is_reassigning() {
        return None;
    }
    let target = partition.target_replicas();
    let new_isr: Vec<NodeId> = target.iter().copied().filter(|r| isr.contains(r)).collect();
    if new_isr.is_empty() || new_isr.len() != target.len() {
        return None;
    }
    let none = BTreeSet::new();
    let leader = if let Some(elected) = elected.filter(|l| new_isr.contains(l)) {
        // Chosen by the election in this same batch, which may also unfence it: the image
        // does not show it live yet.
        elected
    } else if new_isr.contains(&partition.leader) {
        partition.leader
    } else {
        // Kafka's electAnyLeader over the target replicas (a clean election: the ISR only).
        target
            .iter()
            .copied()
            .find(|r| new_isr.contains(r) && can_lead(image, &none, *r))
            .unwrap_or(NO_NODE)
    };
    let MetadataRecord::ChangePartition {
        image: mut changed, ..
    } = change_partition(topic_id, index, partition, leader, new_isr)
    else {
        unreachable!("change_partition makes a ChangePartition");
    };
    changed.replicas = target;
    changed.adding_replicas.clear();
    changed.removing_replicas.clear();
    // The replicas removed are no longer eligible for anything.
    let replicas = changed.replicas.clone();
    changed.elr.retain(|r| replicas.contains(r));
    changed.last_known_elr.retain(|r| replicas.contains(r));
    tracing::info!(topic = %topic_id, partition = index, replicas = ?changed.replicas,
        isr = ?changed.isr, leader = changed.leader, "partition reassignment completed");
    Some(MetadataRecord::ChangePartition {
        topic_id,
        partition: i32::try_from(index).expect("partition indexes fit in i32"),
        image: changed,
    })
}

/// Kafka's `BrokerHeartbeatManager.calculateNextBrokerState`, with controlled shutdown done in
/// one step: the leaderships move in the same batch that marks the broker shutting down, so it
/// leads nothing once that batch is committed and is fenced at once (Kafka's SHUTDOWN_NOW).
fn heartbeat(
    image: &ClusterImage,
    sessions: &mut Sessions,
    settings: &ControllerSettings,
    now_ms: i64,
    request: &ControllerRequest,
) -> Result<Decision, ControllerError> {
    let &ControllerRequest::Heartbeat {
        id,
        epoch,
        caught_up_offset,
        want_shutdown,
    } = request
    else {
        unreachable!("heartbeat() decides heartbeats");
    };
    check_broker_epoch(image, id, epoch)?;
    sessions.touch(id, now_ms);
    let broker = &image.brokers[&id];
    let mut records = Vec::new();
    let (fenced, shutdown_complete) = if broker.fenced {
        if want_shutdown || broker.shutting_down {
            // A fenced broker leads nothing: it may go at once.
            (true, true)
        } else if caught_up_offset >= broker.registered_offset {
            records.push(MetadataRecord::UnfenceBroker { id, epoch });
            records.extend(elect_unfenced(image, settings, id));
            (false, false)
        } else {
            (true, false)
        }
    } else if want_shutdown || broker.shutting_down {
        if !broker.shutting_down {
            records.push(MetadataRecord::BrokerShuttingDown { id, epoch });
        }
        records.extend(move_leaderships(image, settings, &BTreeSet::from([id])));
        records.push(MetadataRecord::FenceBroker { id, epoch });
        (true, true)
    } else {
        (false, false)
    };
    Ok(Decision {
        records,
        reply: ControllerReply::Heartbeat {
            fenced,
            shutdown_complete,
        },
    })
}

/// Can `id` lead now: registered, unfenced, not shutting down, and not about to lose that.
fn can_lead(image: &ClusterImage, leaving: &BTreeSet<NodeId>, id: NodeId) -> bool {
    !leaving.contains(&id)
        && image
            .brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && !b.shutting_down)
}

/// `unclean.leader.election.enable` for `topic`: its override, else the cluster-wide dynamic
/// config, else the broker default (Kafka's `ConfigurationControlManager` lookup order).
fn unclean_enabled(
    image: &ClusterImage,
    settings: &ControllerSettings,
    topic: &TopicImage,
) -> bool {
    const KEY: &str = "unclean.leader.election.enable";
    topic
        .configs
        .get(KEY)
        .or_else(|| image.broker_configs.get(&None).and_then(|c| c.get(KEY)))
        .and_then(|v| parse_bool(v))
        .unwrap_or(settings.unclean_leader_election_enable)
}

/// An unclean election (Kafka's `PartitionChangeBuilder` with `Election.UNCLEAN`): `leader`,
/// a live replica outside the ISR, leads with an ISR of itself; whatever the ISR held that it
/// lacks is lost. Logged loudly and counted in the image.
fn elect_unclean(
    image: &ClusterImage,
    leaving: &BTreeSet<NodeId>,
    topic: &TopicImage,
    index: usize,
    partition: &PartitionImage,
    leader: NodeId,
) -> [MetadataRecord; 2] {
    assert!(
        !partition.isr.contains(&leader),
        "an unclean election picks a replica outside the ISR"
    );
    let states: Vec<String> = partition
        .replicas
        .iter()
        .map(|r| {
            let state = match image.brokers.get(r) {
                _ if leaving.contains(r) => "leaving (fenced or shutting down now)",
                None => "unregistered",
                Some(b) if b.fenced => "fenced",
                Some(b) if b.shutting_down => "shutting down",
                Some(_) => "live",
            };
            let member = if partition.isr.contains(r) {
                "in ISR"
            } else {
                "out of sync"
            };
            format!("{r}: {state}, {member}")
        })
        .collect();
    tracing::warn!(
        topic = %topic.name,
        partition = index,
        leader,
        isr = ?partition.isr,
        replicas = %states.join("; "),
        "UNCLEAN leader election: no ISR member is alive and unclean.leader.election.enable is \
         true; the new leader was out of sync, so records it lacks are lost"
    );
    // The new ISR of one may be what a running reassignment waited for.
    let mut change =
        complete_reassignment(image, topic.id, index, partition, &[leader], Some(leader))
            .unwrap_or_else(|| change_partition(topic.id, index, partition, leader, vec![leader]));
    if let MetadataRecord::ChangePartition { image: changed, .. } = &mut change {
        // Kafka's `maybeUpdateRecordElr`: an unclean election clears the ELR, whose members
        // may hold records the new leader lacks.
        changed.elr.clear();
        changed.last_known_elr.clear();
    }
    [
        change,
        MetadataRecord::UncleanLeaderElection {
            topic_id: topic.id,
            partition: i32::try_from(index).expect("partition indexes fit in i32"),
            leader,
        },
    ]
}

/// ChangePartition records taking the `leaving` brokers out of every ISR (but the last member)
/// and giving their leaderships to the first live ISR member in replica order, or, where none
/// is left and the topic allows it, to the first live replica outside the ISR (an unclean
/// election), or to nobody.
fn move_leaderships(
    image: &ClusterImage,
    settings: &ControllerSettings,
    leaving: &BTreeSet<NodeId>,
) -> Vec<MetadataRecord> {
    leave_isrs(image, settings, leaving, LastMember::Stays)
}

/// Whether the last ISR member stays when it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LastMember {
    /// It holds everything committed (fenced, shutting down): the partition comes back when it
    /// does.
    Stays,
    /// Its log is gone (KIP-966's unclean shutdown): the ISR is left empty.
    Leaves,
}

/// [`move_leaderships`], with the last member staying or leaving as `last` says.
fn leave_isrs(
    image: &ClusterImage,
    settings: &ControllerSettings,
    leaving: &BTreeSet<NodeId>,
    last: LastMember,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    // A broker whose log is gone also leaves every ELR: it no longer holds what made it
    // eligible (KIP-966's unclean shutdown).
    let unclean_shutdown = match last {
        LastMember::Leaves => leaving.clone(),
        LastMember::Stays => BTreeSet::new(),
    };
    for topic in image.topics.values() {
        let rule = elr_rule(settings, topic);
        for (index, partition) in topic.partitions.iter().enumerate() {
            let leads = leaving.contains(&partition.leader);
            if !leads
                && !partition.isr.iter().any(|m| leaving.contains(m))
                && !partition.elr.iter().any(|m| unclean_shutdown.contains(m))
            {
                continue;
            }
            let mut isr: Vec<NodeId> = partition
                .isr
                .iter()
                .copied()
                .filter(|m| !leaving.contains(m))
                .collect();
            if isr.is_empty() && last == LastMember::Stays && rule.is_none() {
                // The last member stays: it holds everything committed, and the partition
                // comes back when it does. The last leader before any other. (With ELR the
                // ISR may empty: the members it loses below min.insync.replicas stay
                // eligible instead.)
                let last = if partition.isr.contains(&partition.leader) {
                    partition.leader
                } else {
                    partition.isr[0]
                };
                isr.push(last);
            }
            let leader = if leads {
                partition
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| isr.contains(r) && can_lead(image, leaving, *r))
                    .unwrap_or(NO_NODE)
            } else {
                partition.leader
            };
            let MetadataRecord::ChangePartition {
                image: mut changed, ..
            } = change_partition(topic.id, index, partition, leader, isr)
            else {
                unreachable!("change_partition makes a ChangePartition");
            };
            settle_elr(rule, partition, &mut changed, &unclean_shutdown);
            if rule.is_some()
                && elect_from_elr(topic, index, partition, &mut changed, |r| {
                    can_lead(image, leaving, r)
                })
            {
                records.push(elr_election_record(
                    image,
                    rule,
                    topic,
                    index,
                    partition,
                    changed,
                    &unclean_shutdown,
                ));
                continue;
            }
            if changed.leader == NO_NODE && unclean_enabled(image, settings, topic) {
                let unclean = partition
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| !partition.isr.contains(r) && can_lead(image, leaving, *r));
                if let Some(unclean) = unclean {
                    records.extend(elect_unclean(
                        image, leaving, topic, index, partition, unclean,
                    ));
                    continue;
                }
            }
            if same_registration(&changed, partition) {
                continue;
            }
            records.push(MetadataRecord::ChangePartition {
                topic_id: topic.id,
                partition: i32::try_from(index).expect("partition indexes fit in i32"),
                image: changed,
            });
        }
    }
    records
}

/// Do two registrations of a partition differ only in their partition epoch (a change that
/// changes nothing)?
fn same_registration(a: &PartitionImage, b: &PartitionImage) -> bool {
    a.leader == b.leader && a.isr == b.isr && a.elr == b.elr && a.last_known_elr == b.last_known_elr
}

/// KIP-966's bound for `topic`: its `min.insync.replicas` (override, else the broker default)
/// when eligible leader replicas are on, `None` when they are off.
fn elr_rule(settings: &ControllerSettings, topic: &TopicImage) -> Option<usize> {
    if !settings.eligible_leader_replicas_enable {
        return None;
    }
    let min_isr = topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(settings.min_insync_replicas);
    Some(min_isr.max(1))
}

/// The ELR and last known ELR of `changed` (whose ISR is decided), from `current`: Kafka's
/// `PartitionChangeBuilder.maybePopulateTargetElr`. With ELR off, or an ISR of at least
/// `min.insync.replicas`, both are empty (the high watermark moves, so a replica outside the
/// ISR may lack what is committed). Below it, every member of the current ISR or ELR that is
/// not in the new ISR is eligible: the high watermark stood still since the ISR fell below
/// the bound, so each holds everything committed. Those whose log is gone
/// (`unclean_shutdown`) are not, and go to the last known ELR with every other former member.
fn settle_elr(
    rule: Option<usize>,
    current: &PartitionImage,
    changed: &mut PartitionImage,
    unclean_shutdown: &BTreeSet<NodeId>,
) {
    let Some(min_isr) = rule else {
        changed.elr.clear();
        changed.last_known_elr.clear();
        return;
    };
    if changed.isr.len() >= min_isr {
        changed.elr.clear();
        changed.last_known_elr.clear();
        return;
    }
    let was_member = |r: &NodeId| current.isr.contains(r) || current.elr.contains(r);
    let elr: Vec<NodeId> = changed
        .replicas
        .iter()
        .copied()
        .filter(|r| was_member(r) && !changed.isr.contains(r) && !unclean_shutdown.contains(r))
        .collect();
    let last_known_elr: Vec<NodeId> = changed
        .replicas
        .iter()
        .copied()
        .filter(|r| {
            (was_member(r) || current.last_known_elr.contains(r))
                && !changed.isr.contains(r)
                && !elr.contains(r)
        })
        .collect();
    changed.elr = elr;
    changed.last_known_elr = last_known_elr;
}

/// KIP-966's clean election from the ELR (Kafka's `isValidNewLeader`: an ELR member may lead
/// once the ISR is empty): if `changed` has no leader and an empty ISR, the first ELR member
/// in replica order that `live` accepts leads, alone in the ISR, in a new leader epoch. No
/// record is lost: every ELR member holds everything below the high watermark. Returns
/// whether it elected.
fn elect_from_elr(
    topic: &TopicImage,
    index: usize,
    current: &PartitionImage,
    changed: &mut PartitionImage,
    live: impl Fn(NodeId) -> bool,
) -> bool {
    if changed.leader != NO_NODE || !changed.isr.is_empty() {
        return false;
    }
    let Some(leader) = changed
        .replicas
        .iter()
        .copied()
        .find(|r| changed.elr.contains(r) && live(*r))
    else {
        return false;
    };
    tracing::info!(topic = %topic.name, partition = index, leader, elr = ?changed.elr,
        "no ISR member is left: an eligible leader replica leads (KIP-966), nothing lost");
    changed.leader = leader;
    changed.leader_epoch = current.leader_epoch + 1;
    changed.isr = vec![leader];
    changed.elr.retain(|r| *r != leader);
    changed.last_known_elr.retain(|r| *r != leader);
    true
}

/// The record of `changed`, `partition` with a leader just elected from its ELR (alone in the
/// ISR): as after an unclean election, that ISR of one may be what a running reassignment
/// waited for (Kafka's builder completes it in the same record); the ELR is then settled
/// again over the reassignment's target replicas.
fn elr_election_record(
    image: &ClusterImage,
    rule: Option<usize>,
    topic: &TopicImage,
    index: usize,
    partition: &PartitionImage,
    changed: PartitionImage,
    unclean_shutdown: &BTreeSet<NodeId>,
) -> MetadataRecord {
    let completed = complete_reassignment(
        image,
        topic.id,
        index,
        partition,
        &changed.isr,
        Some(changed.leader),
    );
    match completed {
        Some(MetadataRecord::ChangePartition {
            topic_id,
            partition: slot,
            image: mut done,
        }) => {
            settle_elr(rule, partition, &mut done, unclean_shutdown);
            MetadataRecord::ChangePartition {
                topic_id,
                partition: slot,
                image: done,
            }
        }
        Some(other) => unreachable!("complete_reassignment makes a ChangePartition: {other:?}"),
        None => MetadataRecord::ChangePartition {
            topic_id: topic.id,
            partition: i32::try_from(index).expect("partition indexes fit in i32"),
            image: changed,
        },
    }
}

/// `list` without the members of `gone`.
fn without(list: &[NodeId], gone: &[NodeId]) -> Vec<NodeId> {
    list.iter().copied().filter(|r| !gone.contains(r)).collect()
}

/// ChangePartition records making `id` (being unfenced) the leader of every offline partition
/// whose ISR holds it, and, where the topic allows unclean elections, of every offline
/// partition it is a replica of whose ISR has no live member.
fn elect_unfenced(
    image: &ClusterImage,
    settings: &ControllerSettings,
    id: NodeId,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    let none = BTreeSet::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader != NO_NODE {
                continue;
            }
            if partition.isr.contains(&id) {
                records.push(change_partition(
                    topic.id,
                    index,
                    partition,
                    id,
                    partition.isr.clone(),
                ));
            } else if let Some(record) =
                elect_from_elr_now(image, settings, topic, index, partition, id)
            {
                records.push(record);
            } else if partition.replicas.contains(&id)
                && !partition.isr.iter().any(|m| can_lead(image, &none, *m))
                && unclean_enabled(image, settings, topic)
            {
                records.extend(elect_unclean(image, &none, topic, index, partition, id));
            }
        }
    }
    records
}

/// The record electing `candidate` from `partition`'s ELR, if ELR is on, the partition has no
/// leader and an empty ISR, and `candidate` is in its ELR (and about to be live).
fn elect_from_elr_now(
    image: &ClusterImage,
    settings: &ControllerSettings,
    topic: &TopicImage,
    index: usize,
    partition: &PartitionImage,
    candidate: NodeId,
) -> Option<MetadataRecord> {
    let rule = elr_rule(settings, topic);
    rule?;
    let MetadataRecord::ChangePartition {
        image: mut changed, ..
    } = change_partition(topic.id, index, partition, NO_NODE, Vec::new())
    else {
        unreachable!("change_partition makes a ChangePartition");
    };
    if !partition.isr.is_empty()
        || !elect_from_elr(topic, index, partition, &mut changed, |r| r == candidate)
    {
        return None;
    }
    Some(elr_election_record(
        image,
        rule,
        topic,
        index,
        partition,
        changed,
        &BTreeSet::new(),
    ))
}

/// Unclean elections for every offline partition whose topic allows them and which has a live
/// replica (Kafka's periodic `maybeElectUncleanLeaders`, which also acts when the config is
/// turned on), and before those, clean elections of live eligible leader replicas (KIP-966).
/// The active controller runs it on its tick.
pub fn unclean_elections(
    image: &ClusterImage,
    settings: &ControllerSettings,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    let none = BTreeSet::new();
    for topic in image.topics.values() {
        let unclean = unclean_enabled(image, settings, topic);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader != NO_NODE
                || partition.isr.iter().any(|m| can_lead(image, &none, *m))
            {
                // Led, or an ISR member can lead: elect_unfenced will elect it cleanly.
                continue;
            }
            // A live eligible leader replica leads cleanly (KIP-966), before any unclean
            // election (Kafka's `electAnyLeader` tries the ELR first).
            let eligible = partition
                .replicas
                .iter()
                .copied()
                .find(|r| partition.elr.contains(r) && can_lead(image, &none, *r));
            if let Some(record) = eligible
                .and_then(|r| elect_from_elr_now(image, settings, topic, index, partition, r))
            {
                records.push(record);
                continue;
            }
            if !unclean {
                continue;
            }
            let candidate = partition
                .replicas
                .iter()
                .copied()
                .find(|r| !partition.isr.contains(r) && can_lead(image, &none, *r));
            if let Some(leader) = candidate {
                records.extend(elect_unclean(image, &none, topic, index, partition, leader));
            }
        }
    }
    records
}

/// Preferred-leader elections (Kafka's `maybeBalancePartitionLeaders`): every partition not led
/// by its preferred replica (the first of its replicas) while that replica is in the ISR and can
/// lead gets it back as leader, in a new leader epoch, with the same ISR. The active controller
/// runs it every `leader.imbalance.check.interval.seconds` when `auto.leader.rebalance.enable`.
pub fn preferred_leader_elections(image: &ClusterImage) -> Vec<MetadataRecord> {
    let none = BTreeSet::new();
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let preferred = partition.replicas[0];
            if partition.leader != preferred
                && partition.isr.contains(&preferred)
                && can_lead(image, &none, preferred)
            {
                records.push(change_partition(
                    topic.id,
                    index,
                    partition,
                    preferred,
                    partition.isr.clone(),
                ));
            }
        }
    }
    records
}

/// ElectLeaders (Kafka's `ReplicationControlManager.electLeaders`): one election per partition
/// named, or per partition of every topic when `partitions` is `None` (then the partitions that
/// needed none are left out of the answer, as Kafka does).
fn elect_leaders(
    image: &ClusterImage,
    settings: &ControllerSettings,
    election: ElectionType,
    partitions: Option<&[(String, Vec<i32>)]>,
) -> Decision {
    let mut records = Vec::new();
    let mut results: ElectionResults = Vec::new();
    // A partition named twice is elected once; the second time it needs no election.
    let mut elected = BTreeSet::new();
    let mut one = |topic: &str, index: i32, records: &mut Vec<MetadataRecord>| {
        if elected.contains(&(topic.to_string(), index)) {
            return Err(ElectionError::ElectionNotNeeded);
        }
        let changes = elect_leader(image, settings, election, topic, index)?;
        elected.insert((topic.to_string(), index));
        records.extend(changes);
        Ok(())
    };
    match partitions {
        Some(partitions) => {
            for (topic, indexes) in partitions {
                let outcomes = indexes
                    .iter()
                    .map(|&index| (index, one(topic, index, &mut records)))
                    .collect();
                results.push((topic.clone(), outcomes));
            }
        }
        None => {
            for topic in image.topics.values() {
                let outcomes = (0..topic.partitions.len())
                    .map(|index| i32::try_from(index).expect("partition indexes fit in i32"))
                    .map(|index| (index, one(&topic.name, index, &mut records)))
                    .filter(|(_, outcome)| *outcome != Err(ElectionError::ElectionNotNeeded))
                    .collect();
                results.push((topic.name.clone(), outcomes));
            }
        }
    }
    Decision {
        records,
        reply: ControllerReply::ElectLeaders(results),
    }
}

/// One partition's election (Kafka's `electLeader` with `PartitionChangeBuilder`'s
/// `electPreferredLeader` / `electAnyLeader`): the records that change its leader (an unclean
/// election is also counted), or why none.
fn elect_leader(
    image: &ClusterImage,
    settings: &ControllerSettings,
    election: ElectionType,
    topic_name: &str,
    index: i32,
) -> Result<Vec<MetadataRecord>, ElectionError> {
    let topic = image.topic(topic_name).ok_or_else(|| {
        ElectionError::UnknownTopicOrPartition(format!("No such topic as {topic_name}"))
    })?;
    let partition = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or_else(|| {
            ElectionError::UnknownTopicOrPartition(format!(
                "No such partition as {topic_name}-{index}"
            ))
        })?;
    let slot = usize::try_from(index).expect("a found partition has a valid index");
    let none = BTreeSet::new();
    // Kafka's isValidNewLeader: in the ISR (or, with the ISR empty, in the ELR: KIP-966),
    // and registered, unfenced, not shutting down.
    let valid = |id: NodeId| {
        (partition.isr.contains(&id) || (partition.isr.is_empty() && partition.elr.contains(&id)))
            && can_lead(image, &none, id)
    };
    let change = |leader: NodeId| {
        if !partition.isr.contains(&leader) {
            // From the ELR: it leads alone in the ISR.
            let MetadataRecord::ChangePartition {
                image: mut changed, ..
            } = change_partition(topic.id, slot, partition, NO_NODE, Vec::new())
            else {
                unreachable!("change_partition makes a ChangePartition");
            };
            let elected = elect_from_elr(topic, slot, partition, &mut changed, |r| r == leader);
            assert!(elected, "a valid leader outside the ISR is an ELR member");
            let rule = elr_rule(settings, topic);
            let record = elr_election_record(
                image,
                rule,
                topic,
                slot,
                partition,
                changed,
                &BTreeSet::new(),
            );
            return vec![record];
        }
        vec![change_partition(
            topic.id,
            slot,
            partition,
            leader,
            partition.isr.clone(),
        )]
    };
    match election {
        ElectionType::Preferred => {
            let preferred = partition.replicas[0];
            if partition.leader == preferred {
                return Err(ElectionError::ElectionNotNeeded);
            }
            if valid(preferred) {
                return Ok(change(preferred));
            }
            if partition.leader != NO_NODE && valid(partition.leader) {
                // The current leader stays: nothing changes.
                return Err(ElectionError::PreferredLeaderNotAvailable);
            }
            partition
                .replicas
                .iter()
                .skip(1)
                .copied()
                .find(|r| valid(*r))
                .map(change)
                .ok_or(ElectionError::PreferredLeaderNotAvailable)
        }
        ElectionType::Unclean => {
            if partition.leader != NO_NODE {
                return Err(ElectionError::ElectionNotNeeded);
            }
            if let Some(clean) = partition.replicas.iter().copied().find(|r| valid(*r)) {
                return Ok(change(clean));
            }
            // No ISR member can lead: the first live replica, whatever it lacks. Asked for by
            // the operator, so the topic's unclean.leader.election.enable does not matter.
            let unclean = partition
                .replicas
                .iter()
                .copied()
                .find(|r| can_lead(image, &none, *r))
                .ok_or(ElectionError::EligibleLeadersNotAvailable)?;
            Ok(elect_unclean(image, &none, topic, slot, partition, unclean).to_vec())
        }
    }
}

fn change_partition(
    topic_id: Uuid,
    index: usize,
    current: &PartitionImage,
    leader: NodeId,
    isr: Vec<NodeId>,
) -> MetadataRecord {
    let leader_epoch = if leader == current.leader {
        current.leader_epoch
    } else {
        current.leader_epoch + 1
    };
    MetadataRecord::ChangePartition {
        topic_id,
        partition: i32::try_from(index).expect("partition indexes fit in i32"),
        image: PartitionImage {
            replicas: current.replicas.clone(),
            leader,
            leader_epoch,
            partition_epoch: current.partition_epoch + 1,
            adding_replicas: current.adding_replicas.clone(),
            removing_replicas: current.removing_replicas.clone(),
            // Kept as they are, but for members back in the ISR; the callers that apply
            // KIP-966's rules settle them (`settle_elr`).
            elr: without(&current.elr, &isr),
            last_known_elr: without(&current.last_known_elr, &isr),
            isr,
        },
    }
}

/// AlterPartitionReassignments (Kafka's `ReplicationControlManager.alterPartitionReassignments`):
/// one outcome per partition named; each accepted change is one ChangePartition, all committed
/// in one batch.
fn alter_partition_reassignments(
    image: &ClusterImage,
    settings: &ControllerSettings,
    topics: &[(String, Vec<ReassignmentTarget>)],
    allow_replication_factor_change: bool,
) -> Decision {
    // Each partition is decided against the image with the changes before it applied, so a
    // partition named twice is changed twice in order, as Kafka's records would be.
    let mut working = image.clone();
    let mut records = Vec::new();
    let mut results: ReassignmentResults = Vec::new();
    for (topic, partitions) in topics {
        let mut outcomes = Vec::new();
        for (index, target) in partitions {
            let outcome = reassign(
                &working,
                settings,
                topic,
                *index,
                target.as_deref(),
                allow_replication_factor_change,
            )
            .map(|record| {
                let offset = working.metadata_offset + 1;
                working.apply(offset, std::slice::from_ref(&record));
                records.push(record);
            });
            outcomes.push((*index, outcome));
        }
        results.push((topic.clone(), outcomes));
    }
    Decision {
        records,
        reply: ControllerReply::AlterPartitionReassignments(results),
    }
}

/// One partition's reassignment (`target`) or its cancellation (`None`), Kafka's
/// `alterPartitionReassignment` with `changePartitionReassignment` / `cancelPartitionReassignment`.
fn reassign(
    image: &ClusterImage,
    settings: &ControllerSettings,
    topic_name: &str,
    index: i32,
    target: Option<&[NodeId]>,
    allow_replication_factor_change: bool,
) -> Result<MetadataRecord, ReassignmentError> {
    let topic = image.topic(topic_name).ok_or_else(|| {
        ReassignmentError::UnknownTopicOrPartition(format!(
            "Unable to find a topic named {topic_name}."
        ))
    })?;
    let slot = usize::try_from(index)
        .ok()
        .filter(|&i| i < topic.partitions.len())
        .ok_or_else(|| {
            ReassignmentError::UnknownTopicOrPartition(format!(
                "Unable to find partition {topic_name}:{index}."
            ))
        })?;
    let partition = &topic.partitions[slot];
    let none = BTreeSet::new();
    let Some(target) = target else {
        // Cancel (Kafka's PartitionReassignmentRevert): the adding replicas go, the removing
        // ones stay; an ISR left empty takes the first remaining replica back, which is an
        // unclean election and needs the topic's consent.
        if !partition.is_reassigning() {
            return Err(ReassignmentError::NoReassignmentInProgress);
        }
        let adding = &partition.adding_replicas;
        let replicas: Vec<NodeId> = partition
            .replicas
            .iter()
            .copied()
            .filter(|r| !adding.contains(r))
            .collect();
        let mut isr: Vec<NodeId> = partition
            .isr
            .iter()
            .copied()
            .filter(|r| !adding.contains(r))
            .collect();
        let mut unclean = false;
        if isr.is_empty() {
            if !unclean_enabled(image, settings, topic) {
                return Err(ReassignmentError::InvalidReplicaAssignment(format!(
                    "Unable to revert partition assignment for {topic_name}:{index} because it \
                     would require an unclean leader election."
                )));
            }
            unclean = true;
            isr.push(replicas[0]);
        }
        let leader = if isr.contains(&partition.leader) {
            partition.leader
        } else {
            replicas
                .iter()
                .copied()
                .find(|r| isr.contains(r) && can_lead(image, &none, *r))
                .unwrap_or(NO_NODE)
        };
        if unclean {
            tracing::warn!(topic = topic_name, partition = index, ?isr,
                "UNCLEAN: cancelling the reassignment leaves no ISR member of the original replicas");
        }
        let MetadataRecord::ChangePartition {
            image: mut changed, ..
        } = change_partition(topic.id, slot, partition, leader, isr)
        else {
            unreachable!("change_partition makes a ChangePartition");
        };
        changed.replicas = replicas;
        changed.adding_replicas.clear();
        changed.removing_replicas.clear();
        let replicas = changed.replicas.clone();
        changed.elr.retain(|r| replicas.contains(r));
        changed.last_known_elr.retain(|r| replicas.contains(r));
        tracing::info!(topic = topic_name, partition = index, replicas = ?changed.replicas,
            "partition reassignment cancelled");
        return Ok(MetadataRecord::ChangePartition {
            topic_id: topic.id,
            partition: index,
            image: changed,
        });
    };
    // Kafka's validateManualPartitionAssignment, its checks and messages in its order.
    if target.is_empty() {
        return Err(ReassignmentError::InvalidReplicaAssignment(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    let mut sorted = target.to_vec();
    sorted.sort_unstable();
    for (i, id) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(id) {
            return Err(ReassignmentError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes broker {id}, but no such broker is \
                 registered."
            )));
        }
        if i > 0 && sorted[i - 1] == *id {
            return Err(ReassignmentError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes the broker {id} more than once."
            )));
        }
    }
    // KIP-860: the size the partition has outside any running reassignment.
    let current_factor = partition.replicas.len() - partition.adding_replicas.len();
    if !allow_replication_factor_change && target.len() != current_factor {
        return Err(ReassignmentError::InvalidReplicationFactor(format!(
            "The replication factor is changed from {current_factor} to {} but \
             allowReplicationFactorChange is false.",
            target.len()
        )));
    }
    // Kafka's PartitionReassignmentReplicas against the current replicas (those of a running
    // reassignment included): replicas = target, then the current ones not in it. A target
    // replica that a running reassignment was adding is still being added (Kafka keeps the
    // adding list when the new one is empty; this keeps it per replica).
    // Both sorted, as Kafka's sets are.
    let removing: BTreeSet<NodeId> = partition
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let adding: BTreeSet<NodeId> = target
        .iter()
        .copied()
        .filter(|r| !partition.replicas.contains(r) || partition.adding_replicas.contains(r))
        .collect();
    let (removing, adding): (Vec<NodeId>, Vec<NodeId>) =
        (removing.into_iter().collect(), adding.into_iter().collect());
    let replicas: Vec<NodeId> = target.iter().copied().chain(removing.clone()).collect();
    let started = PartitionImage {
        replicas,
        adding_replicas: adding,
        removing_replicas: removing,
        ..partition.clone()
    };
    // Already complete when nothing is added (a smaller or reordered target): Kafka's
    // PartitionChangeBuilder completes it in the same record.
    let record = complete_reassignment(image, topic.id, slot, &started, &partition.isr, None)
        .unwrap_or_else(|| {
            let MetadataRecord::ChangePartition { image: changed, .. } = change_partition(
                topic.id,
                slot,
                &started,
                partition.leader,
                partition.isr.clone(),
            ) else {
                unreachable!("change_partition makes a ChangePartition");
            };
            assert_eq!(changed.replicas, started.replicas);
            MetadataRecord::ChangePartition {
                topic_id: topic.id,
                partition: index,
                image: changed,
            }
        });
    if let MetadataRecord::ChangePartition { image: changed, .. } = &record {
        tracing::info!(topic = topic_name, partition = index, replicas = ?changed.replicas,
            adding = ?changed.adding_replicas, removing = ?changed.removing_replicas,
            leader = changed.leader, "partition reassignment started");
    }
    Ok(record)
}

/// ListPartitionReassignments (Kafka's `listPartitionReassignments`): the partitions named (or
/// every partition) with a reassignment running; unknown topics and partitions, and topics
/// with none running, are left out.
fn list_partition_reassignments(
    image: &ClusterImage,
    topics: Option<&[(String, Vec<i32>)]>,
) -> Vec<(String, Vec<OngoingReassignment>)> {
    let ongoing = |topic: &TopicImage, index: i32| {
        let p = topic.partitions.get(usize::try_from(index).ok()?)?;
        p.is_reassigning().then(|| OngoingReassignment {
            partition: index,
            replicas: p.replicas.clone(),
            adding: p.adding_replicas.clone(),
            removing: p.removing_replicas.clone(),
        })
    };
    let mut out = Vec::new();
    let mut list = |topic: &TopicImage, indexes: &mut dyn Iterator<Item = i32>| {
        let found: Vec<OngoingReassignment> = indexes.filter_map(|i| ongoing(topic, i)).collect();
        if !found.is_empty() {
            out.push((topic.name.clone(), found));
        }
    };
    match topics {
        None => {
            for topic in image.topics.values() {
                let count = i32::try_from(topic.partitions.len()).expect("fits in i32");
                list(topic, &mut (0..count));
            }
        }
        Some(topics) => {
            for (name, indexes) in topics {
                if let Some(topic) = image.topic(name) {
                    list(topic, &mut indexes.iter().copied());
                }
            }
        }
    }
    out
}

/// A new topic id: random (drawn from the caller's entropy, version 4), never nil, never one
/// in use or already given in this request.
fn new_topic_id(image: &ClusterImage, taken: &BTreeSet<Uuid>, entropy: &mut dyn Entropy) -> Uuid {
    loop {
        let id = uuid::Builder::from_random_bytes(entropy.next_u128().to_be_bytes()).into_uuid();
        if !id.is_nil() && !image.topic_names.contains_key(&id) && !taken.contains(&id) {
            return id;
        }
    }
}

/// New partitions on `assignments`: ISR = the replicas that can lead, leader = the first of
/// them, epochs 0 (Kafka's `buildPartitionRegistration`). `None` when no replica can lead.
fn new_partitions(image: &ClusterImage, assignments: &[Assignment]) -> Option<Vec<PartitionImage>> {
    let none = BTreeSet::new();
    assignments
        .iter()
        .map(|replicas| {
            let isr: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|r| can_lead(image, &none, *r))
                .collect();
            Some(PartitionImage {
                replicas: replicas.clone(),
                leader: *isr.first()?,
                isr,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
                elr: Vec::new(),
                last_known_elr: Vec::new(),
            })
        })
        .collect()
}

fn usable(image: &ClusterImage) -> Vec<UsableBroker> {
    placement::usable_brokers(image)
}

fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), TopicError> {
    for (name, value) in configs {
        TopicConfigs::validate(name, value)
            .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
    }
    let lag = |name: &str| configs.get(name).and_then(|v| v.trim().parse::<i64>().ok());
    if let (Some(min), Some(max)) = (lag("min.compaction.lag.ms"), lag("max.compaction.lag.ms")) {
        if max < min {
            return Err(TopicError::InvalidConfig(format!(
                "conflict topic config setting max.compaction.lag.ms ({max}) < min.compaction.lag.ms ({min})"
            )));
        }
    }
    Ok(())
}

fn create_topics(
    image: &ClusterImage,
    settings: &ControllerSettings,
    topics: &[NewTopic],
    validate_only: bool,
    entropy: &mut dyn Entropy,
) -> Decision {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for topic in topics {
        *seen.entry(topic.name.as_str()).or_default() += 1;
    }
    let mut records = Vec::new();
    let mut created_names: Vec<&str> = Vec::new();
    let mut ids = BTreeSet::new();
    let mut results = Vec::with_capacity(topics.len());
    for topic in topics {
        let outcome = if seen[topic.name.as_str()] > 1 {
            Err(TopicError::InvalidRequest(
                "Duplicate topic name.".to_string(),
            ))
        } else {
            create_topic(image, settings, topic, &created_names, &mut ids, entropy)
        };
        let outcome = outcome.map(|(record, created)| {
            records.push(record);
            created_names.push(topic.name.as_str());
            created
        });
        results.push((topic.name.clone(), outcome));
    }
    if validate_only {
        records.clear();
    }
    Decision {
        records,
        reply: ControllerReply::CreateTopics(results),
    }
}

/// One topic of a CreateTopics, checked in Kafka's order: name, existence, collision, configs,
/// then partitions, replication factor and placement.
fn create_topic(
    image: &ClusterImage,
    settings: &ControllerSettings,
    topic: &NewTopic,
    created: &[&str],
    ids: &mut BTreeSet<Uuid>,
    entropy: &mut dyn Entropy,
) -> Result<(MetadataRecord, CreatedTopic), TopicError> {
    let name = topic.name.as_str();
    validate_topic_name(name).map_err(|why| {
        TopicError::InvalidTopic(format!("Topic name \"{name}\" is invalid: {why}"))
    })?;
    if image.topics.contains_key(name) || created.contains(&name) {
        return Err(TopicError::AlreadyExists(name.to_string()));
    }
    let existing = image
        .topics
        .keys()
        .map(String::as_str)
        .chain(created.iter().copied());
    if let Some(other) = colliding_topic(name, existing) {
        return Err(TopicError::InvalidTopic(format!(
            "Topic '{name}' collides with existing topic: {other}"
        )));
    }
    validate_topic_configs(&topic.configs)?;
    let assignments = if !topic.assignments.is_empty() {
        if topic.replication_factor != -1 {
            return Err(TopicError::InvalidRequest(
                "A manual partition assignment was specified, but replication factor was not set to -1."
                    .to_string(),
            ));
        }
        if topic.num_partitions != -1 {
            return Err(TopicError::InvalidRequest(
                "A manual partition assignment was specified, but numPartitions was not set to -1."
                    .to_string(),
            ));
        }
        check_partition_count(topic.assignments.len())?;
        let factor = topic.assignments[0].len();
        for (index, replicas) in topic.assignments.iter().enumerate() {
            placement::validate_assignment(image, replicas, Some(factor))
                .map_err(TopicError::InvalidReplicaAssignment)?;
            all_fenced_check(image, index, replicas)?;
        }
        topic.assignments.clone()
    } else {
        if topic.replication_factor < -1 || topic.replication_factor == 0 {
            return Err(TopicError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value."
                    .to_string(),
            ));
        }
        if topic.num_partitions < -1 || topic.num_partitions == 0 {
            return Err(TopicError::InvalidPartitions(
                "Number of partitions was set to an invalid non-positive value.".to_string(),
            ));
        }
        let num_partitions = if topic.num_partitions == -1 {
            settings.default_num_partitions
        } else {
            topic.num_partitions
        };
        let factor = if topic.replication_factor == -1 {
            settings.default_replication_factor
        } else {
            topic.replication_factor
        };
        check_partition_count(usize::try_from(num_partitions).unwrap_or(0))?;
        let assignments = placement::place(
            &usable(image),
            num_partitions as usize,
            factor.into(),
            entropy,
        )
        .map_err(|e| {
            TopicError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {factor} time(s): {e}"
            ))
        })?;
        assignments
    };
    let partitions = new_partitions(image, &assignments).ok_or_else(|| {
        TopicError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {} time(s): All brokers are currently fenced or in controlled shutdown.",
            assignments[0].len()
        ))
    })?;
    let id = new_topic_id(image, ids, entropy);
    ids.insert(id);
    let created = CreatedTopic {
        id,
        num_partitions: partitions.len() as i32,
        replication_factor: partitions[0].replicas.len() as i16,
    };
    Ok((
        MetadataRecord::CreateTopic {
            name: name.to_string(),
            id,
            configs: topic.configs.clone(),
            partitions,
        },
        created,
    ))
}

fn check_partition_count(count: usize) -> Result<(), TopicError> {
    if count == 0 || count > MAX_PARTITIONS_PER_TOPIC as usize {
        return Err(TopicError::InvalidPartitions(format!(
            "{count} partitions exceed the limit of {MAX_PARTITIONS_PER_TOPIC} per topic"
        )));
    }
    Ok(())
}

/// Kafka refuses an explicit assignment none of whose brokers can lead.
fn all_fenced_check(
    image: &ClusterImage,
    index: usize,
    replicas: &[NodeId],
) -> Result<(), TopicError> {
    let none = BTreeSet::new();
    if replicas.iter().any(|r| can_lead(image, &none, *r)) {
        return Ok(());
    }
    Err(TopicError::InvalidReplicaAssignment(format!(
        "All brokers specified in the manual partition assignment for partition {index} are fenced or in controlled shutdown."
    )))
}

fn delete_topics(image: &ClusterImage, topics: &[TopicRef]) -> Decision {
    let mut seen: BTreeMap<&TopicRef, usize> = BTreeMap::new();
    for topic in topics {
        *seen.entry(topic).or_default() += 1;
    }
    let mut records = Vec::new();
    let mut deleted = BTreeSet::new();
    let mut results = Vec::with_capacity(topics.len());
    for topic in topics {
        let outcome = if seen[topic] > 1 {
            Err(TopicError::InvalidRequest(
                match topic {
                    TopicRef::Name(_) => "Duplicate topic name.",
                    TopicRef::Id(_) => "Duplicate topic id.",
                }
                .to_string(),
            ))
        } else {
            let found = match topic {
                TopicRef::Name(name) => image.topic(name),
                TopicRef::Id(id) => image.topic_by_id(*id),
            };
            match found {
                // Named twice, once by name and once by id: the second finds it gone.
                Some(t) if deleted.insert(t.id) => {
                    records.push(MetadataRecord::DeleteTopic { id: t.id });
                    Ok(t.id)
                }
                _ => Err(TopicError::UnknownTopic),
            }
        };
        results.push((topic.clone(), outcome));
    }
    Decision {
        records,
        reply: ControllerReply::DeleteTopics(results),
    }
}

fn create_partitions(
    image: &ClusterImage,
    topics: &[NewPartitions],
    validate_only: bool,
    entropy: &mut dyn Entropy,
) -> Decision {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for topic in topics {
        *seen.entry(topic.topic.as_str()).or_default() += 1;
    }
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(topics.len());
    for topic in topics {
        let outcome = if seen[topic.topic.as_str()] > 1 {
            Err(TopicError::InvalidRequest(
                "Duplicate topic name.".to_string(),
            ))
        } else {
            grow_topic(image, topic, entropy).map(|record| records.push(record))
        };
        results.push((topic.topic.clone(), outcome));
    }
    if validate_only {
        records.clear();
    }
    Decision {
        records,
        reply: ControllerReply::CreatePartitions(results),
    }
}

/// One topic of a CreatePartitions (Kafka's `createPartitions`).
fn grow_topic(
    image: &ClusterImage,
    request: &NewPartitions,
    entropy: &mut dyn Entropy,
) -> Result<MetadataRecord, TopicError> {
    let name = request.topic.as_str();
    let topic = image.topic(name).ok_or(TopicError::UnknownTopic)?;
    let current = topic.partitions.len();
    let count = usize::try_from(request.count).unwrap_or(0);
    if count == current {
        return Err(TopicError::InvalidPartitions(format!(
            "Topic already has {current} partition(s)."
        )));
    }
    if count < current {
        return Err(TopicError::InvalidPartitions(format!(
            "The topic {name} currently has {current} partition(s); {} would not be an increase.",
            request.count
        )));
    }
    check_partition_count(count)?;
    let additional = count - current;
    let factor = topic.partitions[0].replicas.len();
    let assignments = if request.assignments.is_empty() {
        placement::place(&usable(image), additional, factor as i32, entropy).map_err(|e| {
            TopicError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {factor} time(s): {e}"
            ))
        })?
    } else {
        if request.assignments.len() != additional {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.",
                request.assignments.len()
            )));
        }
        for (i, replicas) in request.assignments.iter().enumerate() {
            placement::validate_assignment(image, replicas, Some(factor))
                .map_err(TopicError::InvalidReplicaAssignment)?;
            all_fenced_check(image, current + i, replicas)?;
        }
        request.assignments.clone()
    };
    let partitions = new_partitions(image, &assignments).ok_or_else(|| {
        TopicError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {factor} time(s): All brokers are currently fenced or in controlled shutdown."
        ))
    })?;
    Ok(MetadataRecord::CreatePartitions {
        topic_id: topic.id,
        partitions,
    })
}

/// The broker configs that can change at run time, with the topic config each is the
/// cluster-wide default of (Kafka's `LogConfig` synonyms), whose rules check its value.
pub const DYNAMIC_BROKER_CONFIGS: &[(&str, Option<&str>)] = &[
    ("compression.type", Some("compression.type")),
    ("log.cleanup.policy", Some("cleanup.policy")),
    ("log.flush.interval.messages", Some("flush.messages")),
    ("log.flush.interval.ms", Some("flush.ms")),
    ("log.message.timestamp.type", Some("message.timestamp.type")),
    ("log.retention.bytes", Some("retention.bytes")),
    ("log.retention.ms", Some("retention.ms")),
    ("log.roll.ms", Some("segment.ms")),
    ("log.segment.bytes", Some("segment.bytes")),
    ("max.connections", None),
    ("max.connections.per.ip", None),
    ("message.max.bytes", Some("max.message.bytes")),
    ("min.insync.replicas", Some("min.insync.replicas")),
    (
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
    ),
];

fn validate_broker_config(name: &str, value: Option<&str>) -> Result<(), TopicError> {
    let Some((_, synonym)) = DYNAMIC_BROKER_CONFIGS.iter().find(|(key, _)| *key == name) else {
        return Err(TopicError::InvalidConfig(format!(
            "Cannot update these configs dynamically: {name}"
        )));
    };
    let Some(value) = value else {
        return Ok(());
    };
    match synonym {
        Some(topic_config) => TopicConfigs::validate(topic_config, value)
            .map_err(|e| TopicError::InvalidConfig(format!("{name}: {}", e.reason))),
        None => match value.trim().parse::<i32>() {
            Ok(v) if v >= 0 => Ok(()),
            _ => Err(TopicError::InvalidConfig(format!(
                "Invalid value {value} for configuration {name}: Value must be at least 0"
            ))),
        },
    }
}

fn alter_configs(
    image: &ClusterImage,
    resources: &[(ConfigResource, BTreeMap<String, Option<String>>)],
    validate_only: bool,
) -> Decision {
    let mut seen: BTreeMap<&ConfigResource, usize> = BTreeMap::new();
    for (resource, _) in resources {
        *seen.entry(resource).or_default() += 1;
    }
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(resources.len());
    for (resource, changes) in resources {
        let outcome = if seen[resource] > 1 {
            Err(TopicError::InvalidRequest(
                "Duplicate resource.".to_string(),
            ))
        } else {
            alter_resource(image, resource, changes).map(|record| records.extend(record))
        };
        let changed_min_isr = outcome.is_ok() && changes.contains_key("min.insync.replicas");
        if let (ConfigResource::Topic(name), true) = (resource, changed_min_isr) {
            records.extend(clear_elr(image, name));
        }
        results.push((resource.clone(), outcome));
    }
    if validate_only {
        records.clear();
    }
    Decision {
        records,
        reply: ControllerReply::AlterConfigs(results),
    }
}

/// KIP-966 (Kafka's `getPartitionElrUpdatesForConfigChanges`): a topic whose
/// `min.insync.replicas` changes loses its ELR and last known ELR, whose members were eligible
/// under the old bound (with a lower one, the high watermark may move past them).
fn clear_elr(image: &ClusterImage, topic: &str) -> Vec<MetadataRecord> {
    let Some(topic) = image.topic(topic) else {
        return Vec::new();
    };
    topic
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.elr.is_empty() || !p.last_known_elr.is_empty())
        .map(|(index, p)| {
            let MetadataRecord::ChangePartition {
                topic_id,
                partition,
                image: mut changed,
            } = change_partition(topic.id, index, p, p.leader, p.isr.clone())
            else {
                unreachable!("change_partition makes a ChangePartition");
            };
            changed.elr.clear();
            changed.last_known_elr.clear();
            MetadataRecord::ChangePartition {
                topic_id,
                partition,
                image: changed,
            }
        })
        .collect()
}

fn alter_resource(
    image: &ClusterImage,
    resource: &ConfigResource,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<Option<MetadataRecord>, TopicError> {
    match resource {
        ConfigResource::Topic(name) => {
            let topic = image.topic(name).ok_or(TopicError::UnknownTopic)?;
            for (key, value) in changes {
                match value {
                    Some(value) => TopicConfigs::validate(key, value)
                        .map_err(|e| TopicError::InvalidConfig(e.to_string()))?,
                    None if TOPIC_CONFIG_NAMES.contains(&key.as_str()) => {}
                    None => {
                        return Err(TopicError::InvalidConfig(format!(
                            "Unknown topic config name: {key}"
                        )))
                    }
                }
            }
            Ok(
                (!changes.is_empty()).then(|| MetadataRecord::SetTopicConfigs {
                    topic_id: topic.id,
                    configs: changes.clone(),
                }),
            )
        }
        ConfigResource::Broker(broker) => {
            for (key, value) in changes {
                validate_broker_config(key, value.as_deref())?;
            }
            Ok(
                (!changes.is_empty()).then(|| MetadataRecord::SetBrokerConfigs {
                    broker: *broker,
                    configs: changes.clone(),
                }),
            )
        }
    }
}

/// The single broker's topics become the cluster's, on the importing node, once. The cluster
/// keeps the data directory's id when nothing was created under another yet, so clients see
/// the same cluster as before.
fn import_legacy(
    image: &ClusterImage,
    cluster_id: &str,
    topics: &[LegacyTopic],
    node: NodeId,
    producer_id_floor: i64,
) -> Decision {
    let reply = ControllerReply::Imported;
    if image.legacy_imported {
        return Decision {
            records: Vec::new(),
            reply,
        };
    }
    let mut records = Vec::new();
    if !cluster_id.is_empty() && image.cluster_id != cluster_id && image.topics.is_empty() {
        records.push(MetadataRecord::SetClusterId {
            cluster_id: cluster_id.to_string(),
        });
    }
    let leader = if can_lead(image, &BTreeSet::new(), node) {
        node
    } else {
        // Led once the node is unfenced (its ISR holds it).
        NO_NODE
    };
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for topic in topics {
        let fresh = !image.topics.contains_key(&topic.name)
            && !image.topic_names.contains_key(&topic.id)
            && names.insert(topic.name.as_str())
            && ids.insert(topic.id);
        if !fresh || topic.partitions < 1 || topic.id.is_nil() {
            tracing::warn!(topic = topic.name, id = %topic.id, partitions = topic.partitions, "not importing a legacy topic that exists already or has no partitions");
            continue;
        }
        let partition = PartitionImage {
            replicas: vec![node],
            isr: vec![node],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        };
        records.push(MetadataRecord::CreateTopic {
            name: topic.name.clone(),
            id: topic.id,
            configs: topic.configs.clone(),
            partitions: vec![partition; topic.partitions as usize],
        });
    }
    if producer_id_floor > image.next_producer_id {
        records.push(MetadataRecord::RaiseProducerIdFloor {
            floor: producer_id_floor,
        });
    }
    records.push(MetadataRecord::LegacyImported);
    Decision { records, reply }
}

/// Broker sessions, kept by the active controller in memory only (as Kafka's
/// `BrokerHeartbeatManager`): a new active controller starts every session afresh.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    /// Broker id -> time of its last heartbeat (ms).
    pub last_heartbeat_ms: BTreeMap<NodeId, i64>,
    /// The node this controller runs on. Its broker shares the controller's process, so a new
    /// incarnation of it that this controller has not heard from before means the old one is
    /// gone with the previous process: it registers at once instead of waiting out a session
    /// no one holds (Kafka's combined mode waits `broker.session.timeout.ms` there).
    pub own_node: Option<NodeId>,
    /// Registered brokers this controller has not heard from: when it first looked at each
    /// (their session runs from there, as Kafka's new active controller touches every
    /// registered broker). Kept apart from heartbeats so that looking at the own node's
    /// registration does not count as hearing from it.
    pub first_look_ms: BTreeMap<NodeId, i64>,
}

impl Sessions {
    /// Sessions of a controller running on `node`.
    pub fn for_node(node: NodeId) -> Sessions {
        Sessions {
            own_node: Some(node),
            ..Sessions::default()
        }
    }

    /// A heartbeat or registration from `id` at `now_ms`.
    pub fn touch(&mut self, id: NodeId, now_ms: i64) {
        self.last_heartbeat_ms.insert(id, now_ms);
    }

    /// The time of `id`'s last contact; a broker this controller has not heard from yet starts
    /// its session now.
    fn last_contact(&mut self, id: NodeId, now_ms: i64) -> i64 {
        match self.last_heartbeat_ms.get(&id) {
            Some(&at) => at,
            None => *self.first_look_ms.entry(id).or_insert(now_ms),
        }
    }

    /// Kafka's `hasValidSession`, asked of a registration: is another live incarnation holding
    /// `id`? (Unfenced and heard from within the session timeout; the own node's broker only
    /// once this controller heard from it.)
    pub fn has_valid_session(
        &mut self,
        image: &ClusterImage,
        id: NodeId,
        settings: &ControllerSettings,
        now_ms: i64,
    ) -> bool {
        if self.own_node == Some(id) && !self.last_heartbeat_ms.contains_key(&id) {
            return false;
        }
        self.unexpired(image, id, settings, now_ms)
    }

    /// Unfenced, and its last contact (or this controller's first look at it) within the
    /// session timeout. The own node counts like any other here: a new controller fencing its
    /// own, live broker before its next heartbeat would move every leadership it holds.
    fn unexpired(
        &mut self,
        image: &ClusterImage,
        id: NodeId,
        settings: &ControllerSettings,
        now_ms: i64,
    ) -> bool {
        match image.brokers.get(&id) {
            Some(broker) if !broker.fenced => {
                self.last_contact(id, now_ms)
                    .saturating_add(settings.broker_session_timeout_ms)
                    >= now_ms
            }
            _ => false,
        }
    }

    /// Records that expire sessions older than `broker.session.timeout.ms` at `now_ms`: each
    /// such unfenced broker is fenced and its leaderships move to another ISR member (or to no
    /// leader when none is left). Like every decision, the records must be applied before the
    /// next one is made (a second call on the same image would fence the same brokers again).
    pub fn expire(
        &mut self,
        image: &ClusterImage,
        settings: &ControllerSettings,
        now_ms: i64,
    ) -> Vec<MetadataRecord> {
        let expired: BTreeSet<NodeId> = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect::<Vec<_>>()
            .into_iter()
            .filter(|id| !self.unexpired(image, *id, settings, now_ms))
            .collect();
        if expired.is_empty() {
            return Vec::new();
        }
        let mut records = move_leaderships(image, settings, &expired);
        for id in &expired {
            tracing::info!(broker = id, "broker session expired; fencing it");
            records.push(MetadataRecord::FenceBroker {
                id: *id,
                epoch: image.brokers[id].epoch,
            });
        }
        records
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::controller::image::Endpoint;
    use crate::controller::request::AlterPartitionItem;

    /// splitmix64: a fixed, well-spread sequence.
    pub(crate) struct Seeded(pub u64);

    impl Entropy for Seeded {
        fn next_u128(&mut self) -> u128 {
            let mut next = || {
                self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            (u128::from(next()) << 64) | u128::from(next())
        }
    }

    /// The active controller as the raft loop drives it: decide, then apply the records as the
    /// next batch (asserting every invariant), then decide the next.
    pub(crate) struct Controller {
        pub image: ClusterImage,
        pub sessions: Sessions,
        pub settings: ControllerSettings,
        pub now_ms: i64,
        pub entropy: Seeded,
        pub incarnations: u128,
        /// Every committed batch, for replaying onto another image.
        pub batches: Vec<(i64, Vec<MetadataRecord>)>,
    }

    impl Controller {
        pub fn new() -> Controller {
            let mut controller = Controller {
                image: ClusterImage::empty(),
                sessions: Sessions::default(),
                settings: ControllerSettings::default(),
                now_ms: 1_000_000,
                entropy: Seeded(42),
                incarnations: 0,
                batches: Vec::new(),
            };
            controller.commit(vec![MetadataRecord::SetClusterId {
                cluster_id: "cluster".into(),
            }]);
            controller
        }

        pub fn commit(&mut self, records: Vec<MetadataRecord>) {
            if records.is_empty() {
                return;
            }
            let offset = self.image.metadata_offset + 1;
            self.image.apply(offset, &records);
            self.image.check_invariants();
            self.batches.push((offset, records));
        }

        pub fn ask(
            &mut self,
            request: ControllerRequest,
        ) -> Result<ControllerReply, ControllerError> {
            let decision = decide(
                &self.image,
                &request,
                &mut self.sessions,
                &self.settings,
                self.now_ms,
                &mut self.entropy,
            )?;
            self.commit(decision.records);
            Ok(decision.reply)
        }

        pub fn expire(&mut self) -> usize {
            let records = self
                .sessions
                .expire(&self.image, &self.settings, self.now_ms);
            let fenced = records
                .iter()
                .filter(|r| matches!(r, MetadataRecord::FenceBroker { .. }))
                .count();
            self.commit(records);
            fenced
        }

        pub fn fresh_incarnation(&mut self) -> Uuid {
            self.incarnations += 1;
            Uuid::from_u128(self.incarnations)
        }

        pub fn register_as(
            &mut self,
            id: NodeId,
            incarnation_id: Uuid,
        ) -> Result<i64, ControllerError> {
            // The broker's last registration, as a log directory that survived knows it.
            let previous = self
                .image
                .brokers
                .get(&id)
                .map_or(NO_BROKER_EPOCH, |b| b.epoch);
            self.register_with(id, incarnation_id, previous)
        }

        pub fn register_with(
            &mut self,
            id: NodeId,
            incarnation_id: Uuid,
            previous_broker_epoch: i64,
        ) -> Result<i64, ControllerError> {
            let rack = None;
            match self.ask(ControllerRequest::RegisterBroker {
                id,
                incarnation_id,
                endpoint: Endpoint {
                    host: "127.0.0.1".into(),
                    port: 9000 + id as u16,
                },
                controller_endpoint: None,
                rack,
                previous_broker_epoch,
            })? {
                ControllerReply::Registered { epoch } => Ok(epoch),
                other => panic!("unexpected reply {other:?}"),
            }
        }

        pub fn register(&mut self, id: NodeId) -> i64 {
            let incarnation = self.fresh_incarnation();
            self.register_as(id, incarnation).unwrap()
        }

        /// (fenced, shutdown_complete)
        pub fn heartbeat(
            &mut self,
            id: NodeId,
            epoch: i64,
            caught_up_offset: i64,
            want_shutdown: bool,
        ) -> Result<(bool, bool), ControllerError> {
            match self.ask(ControllerRequest::Heartbeat {
                id,
                epoch,
                caught_up_offset,
                want_shutdown,
            })? {
                ControllerReply::Heartbeat {
                    fenced,
                    shutdown_complete,
                } => Ok((fenced, shutdown_complete)),
                other => panic!("unexpected reply {other:?}"),
            }
        }

        /// Registers `id` and unfences it with a caught-up heartbeat; its epoch.
        pub fn up(&mut self, id: NodeId) -> i64 {
            let epoch = self.register(id);
            let offset = self.image.metadata_offset;
            assert_eq!(self.heartbeat(id, epoch, offset, false), Ok((false, false)));
            epoch
        }

        pub fn create_with(
            &mut self,
            topic: NewTopic,
            validate_only: bool,
        ) -> Result<CreatedTopic, TopicError> {
            match self.ask(ControllerRequest::CreateTopics {
                topics: vec![topic],
                validate_only,
            }) {
                Ok(ControllerReply::CreateTopics(mut results)) => results.remove(0).1,
                other => panic!("unexpected reply {other:?}"),
            }
        }

        pub fn create(
            &mut self,
            name: &str,
            partitions: i32,
            replication_factor: i16,
        ) -> Result<CreatedTopic, TopicError> {
            self.create_with(new_topic(name, partitions, replication_factor), false)
        }

        pub fn partition(&self, name: &str, index: i32) -> PartitionImage {
            self.image.partition(name, index).unwrap().clone()
        }
    }

    pub(crate) fn new_topic(name: &str, num_partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        }
    }

    // --- Registration -------------------------------------------------------------------

    #[test]
    fn broker_epochs_rise_across_every_registration_of_every_broker() {
        let mut c = Controller::new();
        let a = c.register(1);
        let b = c.register(2);
        c.now_ms += 60_000;
        c.expire();
        let a2 = c.register(1);
        assert!(a < b && b < a2, "{a} {b} {a2}");
        assert_eq!(c.image.brokers[&1].epoch, a2);
    }

    #[test]
    fn the_same_incarnation_retrying_gets_the_same_epoch_and_changes_nothing() {
        let mut c = Controller::new();
        let incarnation = c.fresh_incarnation();
        let epoch = c.register_as(1, incarnation).unwrap();
        let offset = c.image.metadata_offset;
        assert_eq!(c.register_as(1, incarnation), Ok(epoch));
        assert_eq!(c.image.metadata_offset, offset);
    }

    #[test]
    fn a_new_incarnation_while_the_old_session_is_alive_is_a_duplicate_registration() {
        let mut c = Controller::new();
        c.up(1);
        c.now_ms += c.settings.broker_session_timeout_ms;
        let incarnation = c.fresh_incarnation();
        assert_eq!(
            c.register_as(1, incarnation),
            Err(ControllerError::DuplicateRegistration(1))
        );
    }

    #[test]
    fn a_new_incarnation_replaces_one_whose_session_expired_and_takes_its_leaderships_away() {
        let mut c = Controller::new();
        let old = c.up(1);
        c.create("t", 2, 1).unwrap();
        c.now_ms += c.settings.broker_session_timeout_ms + 1;
        // Not fenced yet (expire has not run): the registration itself moves the leaderships.
        let new = c.register(1);
        assert!(new > old);
        let broker = &c.image.brokers[&1];
        assert!(broker.fenced);
        assert_eq!(c.partition("t", 0).leader, NO_NODE);
        assert_eq!(c.partition("t", 0).leader_epoch, 1);
        // Caught up, it leads its partitions again, with a new leader epoch.
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(1, new, offset, false), Ok((false, false)));
        assert_eq!(c.partition("t", 1).leader, 1);
        assert_eq!(c.partition("t", 1).leader_epoch, 2);
    }

    #[test]
    fn a_new_incarnation_replaces_a_fenced_one_at_once() {
        let mut c = Controller::new();
        c.register(1);
        // Registered but never unfenced: no valid session.
        let incarnation = c.fresh_incarnation();
        assert!(c.register_as(1, incarnation).is_ok());
    }

    #[test]
    fn a_new_active_controller_starts_every_session_afresh() {
        let mut c = Controller::new();
        c.up(1);
        c.now_ms += 60_000;
        c.sessions = Sessions::default();
        assert_eq!(c.expire(), 0, "a new controller must not fence at once");
        let incarnation = c.fresh_incarnation();
        assert_eq!(
            c.register_as(1, incarnation),
            Err(ControllerError::DuplicateRegistration(1))
        );
        c.now_ms += c.settings.broker_session_timeout_ms + 1;
        assert_eq!(c.expire(), 1);
    }

    #[test]
    fn the_controllers_own_node_restarting_registers_at_once() {
        let mut c = Controller::new();
        let old = c.up(1);
        c.create("t", 1, 1).unwrap();
        // The process of node 1 (broker and controller) restarts: a new controller, a new
        // incarnation, and no time passed.
        c.sessions = Sessions::for_node(1);
        let incarnation = c.fresh_incarnation();
        let new = c.register_as(1, incarnation).unwrap();
        assert!(new > old);
        assert_eq!(
            c.partition("t", 0).leader,
            NO_NODE,
            "the old incarnation's leadership went"
        );
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(1, new, offset, false), Ok((false, false)));
        assert_eq!(c.partition("t", 0).leader, 1);
        // Once heard from, another incarnation claiming node 1 is a duplicate as for any broker.
        let impostor = c.fresh_incarnation();
        assert_eq!(
            c.register_as(1, impostor),
            Err(ControllerError::DuplicateRegistration(1))
        );
    }

    #[test]
    fn another_nodes_broker_waits_for_its_old_session_under_a_new_controller() {
        let mut c = Controller::new();
        c.up(2);
        c.sessions = Sessions::for_node(1);
        let incarnation = c.fresh_incarnation();
        assert_eq!(
            c.register_as(2, incarnation),
            Err(ControllerError::DuplicateRegistration(2))
        );
    }

    #[test]
    fn a_new_controller_does_not_fence_its_own_nodes_live_broker_before_its_next_heartbeat() {
        let mut c = Controller::new();
        c.up(1);
        c.create("t", 1, 1).unwrap();
        // Node 1's controller takes over (a failover): its broker lives on in the same process.
        c.sessions = Sessions::for_node(1);
        assert_eq!(c.expire(), 0, "the own node was fenced at the first look");
        assert_eq!(c.partition("t", 0).leader, 1);
        // Silent for a whole session from that first look, it is fenced like any broker.
        c.now_ms += c.settings.broker_session_timeout_ms + 1;
        assert_eq!(c.expire(), 1);
        assert_eq!(c.partition("t", 0).leader, NO_NODE);
    }

    // --- Heartbeats and sessions --------------------------------------------------------

    #[test]
    fn a_heartbeat_from_an_unknown_broker_is_refused_as_not_registered() {
        let mut c = Controller::new();
        assert_eq!(
            c.heartbeat(5, 0, 0, false),
            Err(ControllerError::NotRegistered(5))
        );
    }

    #[test]
    fn a_heartbeat_carrying_an_older_epoch_is_refused_as_stale() {
        let mut c = Controller::new();
        let old = c.register(1);
        let incarnation = c.fresh_incarnation();
        let new = c.register_as(1, incarnation).unwrap();
        assert_eq!(
            c.heartbeat(1, old, 100, false),
            Err(ControllerError::StaleBrokerEpoch {
                got: old,
                current: new
            })
        );
        assert!(c.image.brokers[&1].fenced);
    }

    #[test]
    fn a_broker_is_unfenced_only_once_it_caught_up_with_its_registration() {
        let mut c = Controller::new();
        let epoch = c.register(1);
        let registered = c.image.brokers[&1].registered_offset;
        assert_eq!(
            c.heartbeat(1, epoch, registered - 1, false),
            Ok((true, false))
        );
        assert!(c.image.brokers[&1].fenced);
        assert_eq!(c.heartbeat(1, epoch, registered, false), Ok((false, false)));
        assert!(!c.image.brokers[&1].fenced);
    }

    #[test]
    fn a_heartbeat_within_the_session_timeout_keeps_the_broker_unfenced() {
        let mut c = Controller::new();
        let epoch = c.up(1);
        for _ in 0..5 {
            c.now_ms += c.settings.broker_session_timeout_ms;
            assert_eq!(c.expire(), 0);
            let offset = c.image.metadata_offset;
            assert_eq!(c.heartbeat(1, epoch, offset, false), Ok((false, false)));
        }
        c.now_ms += c.settings.broker_session_timeout_ms + 1;
        assert_eq!(c.expire(), 1);
        assert!(c.image.brokers[&1].fenced);
    }

    #[test]
    fn an_expired_session_fences_the_broker_and_its_only_replica_partitions_go_offline() {
        let mut c = Controller::new();
        let e1 = c.up(1);
        c.create("t", 4, 1).unwrap();
        let led: Vec<i32> = (0..4)
            .filter(|p| c.partition("t", *p).leader == 1)
            .collect();
        assert_eq!(led.len(), 4);
        c.now_ms += c.settings.broker_session_timeout_ms + 1;
        assert_eq!(c.expire(), 1);
        for p in 0..4 {
            let partition = c.partition("t", p);
            assert_eq!(partition.leader, NO_NODE);
            assert_eq!(partition.isr, vec![1], "the last ISR member stays");
            assert_eq!(partition.leader_epoch, 1);
            assert_eq!(partition.partition_epoch, 1);
        }
        // Heard from again and caught up: unfenced, leads again.
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(1, e1, offset, false), Ok((false, false)));
        assert_eq!(c.partition("t", 3).leader, 1);
        assert_eq!(c.partition("t", 3).leader_epoch, 2);
    }

    /// Two brokers and a topic whose one partition has replicas [1, 2], led by 1 (written as a
    /// record: this issue's CreateTopics refuses more than one replica).
    fn replicated() -> (Controller, Uuid) {
        let mut c = Controller::new();
        c.up(1);
        c.up(2);
        let id = Uuid::from_u128(77);
        c.commit(vec![MetadataRecord::CreateTopic {
            name: "r".into(),
            id,
            configs: BTreeMap::new(),
            partitions: vec![PartitionImage {
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
                elr: Vec::new(),
                last_known_elr: Vec::new(),
            }],
        }]);
        (c, id)
    }

    #[test]
    fn an_expired_leader_hands_its_leadership_to_a_live_isr_member() {
        let (mut c, _) = replicated();
        let e2 = c.image.brokers[&2].epoch;
        c.now_ms += c.settings.broker_session_timeout_ms;
        let offset = c.image.metadata_offset;
        c.heartbeat(2, e2, offset, false).unwrap();
        c.now_ms += 1;
        assert_eq!(c.expire(), 1);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
    }

    #[test]
    fn brokers_expiring_together_leave_the_partition_offline_with_its_last_leader_in_the_isr() {
        let (mut c, _) = replicated();
        c.now_ms += c.settings.broker_session_timeout_ms + 1;
        assert_eq!(c.expire(), 2);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (NO_NODE, vec![1]));
    }

    #[test]
    fn controlled_shutdown_moves_leaderships_away_and_completes_once_it_leads_nothing() {
        let (mut c, _) = replicated();
        let e1 = c.image.brokers[&1].epoch;
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(1, e1, offset, true), Ok((true, true)));
        let broker = &c.image.brokers[&1];
        assert!(broker.shutting_down && broker.fenced);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
        // Its next start registers a new incarnation at once (no live session blocks it).
        let incarnation = c.fresh_incarnation();
        assert!(c.register_as(1, incarnation).is_ok());
    }

    #[test]
    fn a_fenced_broker_asking_to_shut_down_may_go_at_once() {
        let mut c = Controller::new();
        let epoch = c.register(1);
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(1, epoch, -1, true), Ok((true, true)));
        assert_eq!(c.image.metadata_offset, offset);
    }

    // --- CreateTopics -------------------------------------------------------------------

    #[test]
    fn a_topic_with_default_partitions_and_replication_is_led_by_a_live_broker() {
        let mut c = Controller::new();
        c.up(1);
        c.settings.default_num_partitions = 3;
        let created = c.create("orders", -1, -1).unwrap();
        assert_eq!((created.num_partitions, created.replication_factor), (3, 1));
        let topic = c.image.topic("orders").unwrap();
        assert_eq!(topic.id, created.id);
        for p in &topic.partitions {
            assert_eq!(
                (p.replicas.clone(), p.isr.clone(), p.leader),
                (vec![1], vec![1], 1)
            );
            assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        }
    }

    #[test]
    fn partitions_of_a_new_topic_spread_over_the_live_brokers_only() {
        let mut c = Controller::new();
        c.up(1);
        c.up(2);
        c.up(3);
        c.register(4); // fenced: never a leader
        c.create("t", 30, 1).unwrap();
        let mut per_broker = BTreeMap::new();
        for p in &c.image.topic("t").unwrap().partitions {
            *per_broker.entry(p.leader).or_insert(0) += 1;
        }
        assert_eq!(per_broker, BTreeMap::from([(1, 10), (2, 10), (3, 10)]));
    }

    #[test]
    fn a_replication_factor_above_the_registered_brokers_is_refused_with_kafkas_message() {
        let mut c = Controller::new();
        c.up(1);
        assert_eq!(
            c.create("t", 1, 3),
            Err(TopicError::InvalidReplicationFactor(
                "Unable to replicate the partition 3 time(s): The target replication factor of 3 cannot be reached because only 1 broker(s) are registered.".into()
            ))
        );
    }

    #[test]
    fn a_replication_factor_of_three_places_three_replicas_all_in_the_isr() {
        let mut c = Controller::new();
        c.up(1);
        c.up(2);
        c.up(3);
        c.create("t", 2, 3).unwrap();
        let topic = c.image.topic("t").unwrap();
        for p in &topic.partitions {
            let mut replicas = p.replicas.clone();
            replicas.sort_unstable();
            assert_eq!(replicas, vec![1, 2, 3]);
            assert_eq!(p.isr.len(), 3);
            assert!(p.isr.contains(&p.leader));
        }
    }

    #[test]
    fn no_topic_is_created_while_every_broker_is_fenced() {
        let mut c = Controller::new();
        c.register(1);
        assert_eq!(
            c.create("t", 1, 1),
            Err(TopicError::InvalidReplicationFactor(
                "Unable to replicate the partition 1 time(s): All brokers are currently fenced."
                    .into()
            ))
        );
    }

    #[test]
    fn bad_names_existing_names_and_colliding_names_are_refused() {
        let mut c = Controller::new();
        c.up(1);
        c.create("a.b", 1, 1).unwrap();
        assert!(matches!(
            c.create("", 1, 1),
            Err(TopicError::InvalidTopic(_))
        ));
        assert!(matches!(
            c.create("a b", 1, 1),
            Err(TopicError::InvalidTopic(_))
        ));
        assert_eq!(
            c.create("a.b", 1, 1),
            Err(TopicError::AlreadyExists("a.b".into()))
        );
        assert_eq!(
            c.create("a_b", 1, 1),
            Err(TopicError::InvalidTopic(
                "Topic 'a_b' collides with existing topic: a.b".into()
            ))
        );
    }

    #[test]
    fn partition_counts_and_replication_factors_out_of_range_are_refused() {
        let mut c = Controller::new();
        c.up(1);
        assert!(matches!(
            c.create("t", 0, 1),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            c.create("t", -2, 1),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            c.create("t", MAX_PARTITIONS_PER_TOPIC + 1, 1),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            c.create("t", 1, 0),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            c.create("t", 1, -3),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
        assert!(c.image.topics.is_empty());
    }

    #[test]
    fn topic_configs_are_validated_at_creation() {
        let mut c = Controller::new();
        c.up(1);
        let mut topic = new_topic("t", 1, 1);
        topic.configs.insert("retention.ms".into(), "abc".into());
        assert!(matches!(
            c.create_with(topic.clone(), false),
            Err(TopicError::InvalidConfig(_))
        ));
        topic.configs.insert("retention.ms".into(), "1000".into());
        c.create_with(topic, false).unwrap();
        assert_eq!(c.image.topic("t").unwrap().configs["retention.ms"], "1000");
    }

    #[test]
    fn validate_only_checks_everything_and_decides_nothing() {
        let mut c = Controller::new();
        c.up(1);
        let offset = c.image.metadata_offset;
        assert!(c.create_with(new_topic("t", 2, 1), true).is_ok());
        assert!(c.create_with(new_topic("t", 0, 1), true).is_err());
        assert_eq!(c.image.metadata_offset, offset);
        assert!(c.image.topic("t").is_none());
    }

    #[test]
    fn a_topic_named_twice_in_one_request_is_refused_both_times_and_others_are_created() {
        let mut c = Controller::new();
        c.up(1);
        let reply = c
            .ask(ControllerRequest::CreateTopics {
                topics: vec![
                    new_topic("x", 1, 1),
                    new_topic("y", 1, 1),
                    new_topic("x", 1, 1),
                ],
                validate_only: false,
            })
            .unwrap();
        let ControllerReply::CreateTopics(results) = reply else {
            panic!("{reply:?}")
        };
        assert!(matches!(results[0].1, Err(TopicError::InvalidRequest(_))));
        assert!(results[1].1.is_ok());
        assert!(matches!(results[2].1, Err(TopicError::InvalidRequest(_))));
        assert!(c.image.topic("y").is_some() && c.image.topic("x").is_none());
    }

    #[test]
    fn explicit_assignments_are_validated_and_placed_as_given() {
        let mut c = Controller::new();
        c.up(1);
        c.up(2);
        let with = |assignments: Vec<Vec<NodeId>>| NewTopic {
            assignments,
            ..new_topic("t", -1, -1)
        };
        assert!(matches!(
            c.create_with(with(vec![vec![9]]), false),
            Err(TopicError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            c.create_with(with(vec![vec![1, 1]]), false),
            Err(TopicError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            c.create_with(with(vec![vec![1], vec![1, 2]]), false),
            Err(TopicError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            c.create_with(
                NewTopic {
                    replication_factor: 1,
                    ..with(vec![vec![1]])
                },
                false
            ),
            Err(TopicError::InvalidRequest(_))
        ));
        let created = c
            .create_with(with(vec![vec![2], vec![1], vec![2]]), false)
            .unwrap();
        assert_eq!(created.num_partitions, 3);
        let leaders: Vec<NodeId> = c
            .image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert_eq!(leaders, vec![2, 1, 2]);
    }

    #[test]
    fn an_explicit_assignment_on_fenced_brokers_only_is_refused() {
        let mut c = Controller::new();
        c.up(1);
        c.register(2);
        let topic = NewTopic {
            assignments: vec![vec![2]],
            ..new_topic("t", -1, -1)
        };
        assert_eq!(
            c.create_with(topic, false),
            Err(TopicError::InvalidReplicaAssignment(
                "All brokers specified in the manual partition assignment for partition 0 are fenced or in controlled shutdown.".into()
            ))
        );
    }

    // --- DeleteTopics, CreatePartitions, AlterConfigs -----------------------------------

    #[test]
    fn topics_are_deleted_by_name_or_id_and_unknown_ones_are_reported() {
        let mut c = Controller::new();
        c.up(1);
        let a = c.create("a", 1, 1).unwrap().id;
        let b = c.create("b", 1, 1).unwrap().id;
        let reply = c
            .ask(ControllerRequest::DeleteTopics {
                topics: vec![
                    TopicRef::Name("a".into()),
                    TopicRef::Id(b),
                    TopicRef::Name("zzz".into()),
                    TopicRef::Id(a),
                ],
            })
            .unwrap();
        let ControllerReply::DeleteTopics(results) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(results[0].1, Ok(a));
        assert_eq!(results[1].1, Ok(b));
        assert_eq!(results[2].1, Err(TopicError::UnknownTopic));
        assert_eq!(
            results[3].1,
            Err(TopicError::UnknownTopic),
            "already deleted by name"
        );
        assert!(c.image.topics.is_empty());
    }

    fn grow(c: &mut Controller, topic: &str, count: i32) -> Result<(), TopicError> {
        match c.ask(ControllerRequest::CreatePartitions {
            topics: vec![NewPartitions {
                topic: topic.into(),
                count,
                assignments: Vec::new(),
            }],
            validate_only: false,
        }) {
            Ok(ControllerReply::CreatePartitions(mut results)) => results.remove(0).1,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_partitions_only_grows_a_topic() {
        let mut c = Controller::new();
        c.up(1);
        c.up(2);
        c.create("t", 2, 1).unwrap();
        assert_eq!(grow(&mut c, "t", 5), Ok(()));
        let topic = c.image.topic("t").unwrap();
        assert_eq!(topic.partitions.len(), 5);
        assert!(topic
            .partitions
            .iter()
            .all(|p| p.is_online() && p.replicas.len() == 1));
        assert_eq!(
            grow(&mut c, "t", 5),
            Err(TopicError::InvalidPartitions(
                "Topic already has 5 partition(s).".into()
            ))
        );
        assert_eq!(
            grow(&mut c, "t", 3),
            Err(TopicError::InvalidPartitions(
                "The topic t currently has 5 partition(s); 3 would not be an increase.".into()
            ))
        );
        assert_eq!(grow(&mut c, "nope", 3), Err(TopicError::UnknownTopic));
        assert!(matches!(
            grow(&mut c, "t", MAX_PARTITIONS_PER_TOPIC + 1),
            Err(TopicError::InvalidPartitions(_))
        ));
    }

    #[test]
    fn create_partitions_with_too_few_assignments_is_refused() {
        let mut c = Controller::new();
        c.up(1);
        c.create("t", 1, 1).unwrap();
        let reply = c.ask(ControllerRequest::CreatePartitions {
            topics: vec![NewPartitions {
                topic: "t".into(),
                count: 3,
                assignments: vec![vec![1]],
            }],
            validate_only: false,
        });
        let Ok(ControllerReply::CreatePartitions(results)) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            results[0].1,
            Err(TopicError::InvalidReplicaAssignment(
                "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.".into()
            ))
        );
    }

    fn alter(
        c: &mut Controller,
        resource: ConfigResource,
        changes: &[(&str, Option<&str>)],
    ) -> Result<(), TopicError> {
        let changes = changes
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect();
        match c.ask(ControllerRequest::AlterConfigs {
            resources: vec![(resource, changes)],
            validate_only: false,
        }) {
            Ok(ControllerReply::AlterConfigs(mut results)) => results.remove(0).1,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn topic_config_changes_are_validated_and_applied() {
        let mut c = Controller::new();
        c.up(1);
        c.create("t", 1, 1).unwrap();
        let topic = || ConfigResource::Topic("t".into());
        assert_eq!(
            alter(&mut c, topic(), &[("retention.ms", Some("5"))]),
            Ok(())
        );
        assert_eq!(c.image.topic("t").unwrap().configs["retention.ms"], "5");
        assert!(matches!(
            alter(&mut c, topic(), &[("retention.ms", Some("x"))]),
            Err(TopicError::InvalidConfig(_))
        ));
        assert!(matches!(
            alter(&mut c, topic(), &[("no.such", None)]),
            Err(TopicError::InvalidConfig(_))
        ));
        assert_eq!(alter(&mut c, topic(), &[("retention.ms", None)]), Ok(()));
        assert!(c.image.topic("t").unwrap().configs.is_empty());
        assert_eq!(
            alter(&mut c, ConfigResource::Topic("u".into()), &[]),
            Err(TopicError::UnknownTopic)
        );
    }

    #[test]
    fn only_dynamic_broker_configs_change_and_their_values_are_checked() {
        let mut c = Controller::new();
        let all = ConfigResource::Broker(None);
        assert_eq!(
            alter(&mut c, all.clone(), &[("log.retention.ms", Some("60000"))]),
            Ok(())
        );
        assert_eq!(c.image.broker_configs[&None]["log.retention.ms"], "60000");
        assert_eq!(
            alter(
                &mut c,
                ConfigResource::Broker(Some(1)),
                &[("max.connections", Some("10"))]
            ),
            Ok(())
        );
        assert!(matches!(
            alter(&mut c, all.clone(), &[("log.retention.ms", Some("-5"))]),
            Err(TopicError::InvalidConfig(_))
        ));
        assert!(matches!(
            alter(&mut c, all, &[("node.id", Some("3"))]),
            Err(TopicError::InvalidConfig(_))
        ));
    }

    // --- AlterPartition and the ISR -----------------------------------------------------

    /// Three live brokers and topic "r" (id 78) whose partition 0 has replicas [1, 2, 3], all
    /// in the ISR, led by 1 in leader epoch 0 (a record, as CreateTopics may refuse RF 3).
    fn three_replicas(configs: &[(&str, &str)]) -> (Controller, Uuid) {
        let mut c = Controller::new();
        c.up(1);
        c.up(2);
        c.up(3);
        let id = Uuid::from_u128(78);
        c.commit(vec![MetadataRecord::CreateTopic {
            name: "r".into(),
            id,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            partitions: vec![PartitionImage {
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
                elr: Vec::new(),
                last_known_elr: Vec::new(),
            }],
        }]);
        (c, id)
    }

    /// An AlterPartition from `broker` (at its current epoch) for "r"-0 at the partition's
    /// current epochs, naming members without broker epochs.
    fn alter_isr(
        c: &mut Controller,
        broker: NodeId,
        isr: &[NodeId],
    ) -> Result<ControllerReply, ControllerError> {
        let p = c.partition("r", 0);
        let request = ControllerRequest::AlterPartition {
            broker,
            broker_epoch: c.image.brokers[&broker].epoch,
            partitions: vec![AlterPartitionItem {
                topic_id: c.image.topic("r").unwrap().id,
                partition: 0,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: isr.iter().copied().map(IsrMember::unchecked).collect(),
            }],
        };
        c.ask(request)
    }

    fn alter_outcome(
        reply: Result<ControllerReply, ControllerError>,
    ) -> Result<PartitionImage, AlterPartitionError> {
        match reply {
            Ok(ControllerReply::AlterPartition(mut outcomes)) if outcomes.len() == 1 => {
                outcomes.remove(0).result
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_alter_partition_decides_each_of_its_partitions_on_its_own_and_commits_the_accepted_together(
    ) {
        let mut c = Controller::new();
        c.up(1);
        c.up(2);
        c.up(3);
        let id = Uuid::from_u128(79);
        let partition = PartitionImage {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        };
        c.commit(vec![MetadataRecord::CreateTopic {
            name: "m".into(),
            id,
            configs: BTreeMap::new(),
            partitions: vec![partition.clone(); 3],
        }]);
        let item = |index: i32, partition_epoch: i32, isr: &[NodeId]| AlterPartitionItem {
            topic_id: id,
            partition: index,
            leader_epoch: 0,
            partition_epoch,
            new_isr: isr.iter().copied().map(IsrMember::unchecked).collect(),
        };
        let offset = c.image.metadata_offset;
        let reply = c.ask(ControllerRequest::AlterPartition {
            broker: 1,
            broker_epoch: c.image.brokers[&1].epoch,
            partitions: vec![
                item(0, 0, &[1, 2]),
                // Decided on an image that never was: refused alone.
                item(1, 5, &[1, 3]),
                item(2, 0, &[1]),
                item(2, 0, &[1, 2]),
            ],
        });
        let Ok(ControllerReply::AlterPartition(outcomes)) = reply else {
            panic!("{reply:?}");
        };
        let results: Vec<_> = outcomes
            .iter()
            .map(|o| (o.partition, o.result.as_ref().map(|p| p.isr.clone())))
            .collect();
        assert_eq!(results[0], (0, Ok(vec![1, 2])));
        assert_eq!(results[1], (1, Err(&AlterPartitionError::NotController)));
        assert_eq!(results[2], (2, Ok(vec![1])));
        assert!(
            matches!(results[3], (2, Err(AlterPartitionError::InvalidRequest(_)))),
            "a partition named twice: {:?}",
            results[3]
        );
        assert_eq!(c.partition("m", 0).isr, vec![1, 2]);
        assert_eq!(
            c.partition("m", 1),
            partition,
            "the refused one is unchanged"
        );
        assert_eq!(c.partition("m", 2).isr, vec![1]);
        assert_eq!(
            c.image.metadata_offset,
            offset + 1,
            "both changes in one commit"
        );
    }

    #[test]
    fn the_leader_shrinks_the_isr_with_a_new_partition_epoch_and_the_same_leader_epoch() {
        let (mut c, _) = three_replicas(&[]);
        let changed = alter_outcome(alter_isr(&mut c, 1, &[3, 1])).unwrap();
        let expected = PartitionImage {
            replicas: vec![1, 2, 3],
            isr: vec![1, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 1,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        };
        assert_eq!(changed, expected, "the ISR in replica order");
        assert_eq!(c.partition("r", 0), expected, "committed as the reply says");
        // And back: 2 caught up and rejoins.
        let changed = alter_outcome(alter_isr(&mut c, 1, &[1, 2, 3])).unwrap();
        assert_eq!((changed.isr, changed.partition_epoch), (vec![1, 2, 3], 2));
    }

    #[test]
    fn asking_for_the_isr_the_partition_has_commits_nothing_and_answers_its_state() {
        let (mut c, _) = three_replicas(&[]);
        let offset = c.image.metadata_offset;
        let current = alter_outcome(alter_isr(&mut c, 1, &[2, 3, 1])).unwrap();
        assert_eq!(current, c.partition("r", 0));
        assert_eq!(c.image.metadata_offset, offset);
    }

    #[test]
    fn an_alter_partition_with_a_stale_broker_epoch_is_refused_whole() {
        let (mut c, id) = three_replicas(&[]);
        let epoch = c.image.brokers[&1].epoch;
        let reply = c.ask(ControllerRequest::AlterPartition {
            broker: 1,
            broker_epoch: epoch - 1,
            partitions: vec![AlterPartitionItem {
                topic_id: id,
                partition: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![IsrMember::unchecked(1)],
            }],
        });
        assert_eq!(
            reply,
            Err(ControllerError::StaleBrokerEpoch {
                got: epoch - 1,
                current: epoch
            })
        );
        assert_eq!(c.partition("r", 0).isr, vec![1, 2, 3]);
    }

    #[test]
    fn a_deposed_leader_is_fenced_by_its_old_leader_epoch() {
        let (mut c, id) = three_replicas(&[]);
        // Broker 1 shuts down: 2 leads in epoch 1. Broker 1, restarted, still holds epoch 0.
        let e1 = c.image.brokers[&1].epoch;
        let offset = c.image.metadata_offset;
        c.heartbeat(1, e1, offset, true).unwrap();
        let e1 = c.up(1);
        let offset = c.image.metadata_offset;
        let reply = c.ask(ControllerRequest::AlterPartition {
            broker: 1,
            broker_epoch: e1,
            partitions: vec![AlterPartitionItem {
                topic_id: id,
                partition: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![IsrMember::unchecked(1)],
            }],
        });
        assert_eq!(
            alter_outcome(reply),
            Err(AlterPartitionError::FencedLeaderEpoch { got: 0, current: 1 })
        );
        assert_eq!(c.image.metadata_offset, offset, "nothing committed");
    }

    #[test]
    fn only_the_leader_of_the_current_epoch_may_change_the_isr() {
        let (mut c, _) = three_replicas(&[]);
        assert!(matches!(
            alter_outcome(alter_isr(&mut c, 2, &[1, 2])),
            Err(AlterPartitionError::InvalidRequest(m)) if m.contains("does not lead")
        ));
        assert_eq!(c.partition("r", 0).partition_epoch, 0);
    }

    #[test]
    fn a_change_decided_on_a_stale_partition_epoch_is_refused_as_an_invalid_update_version() {
        let (mut c, id) = three_replicas(&[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        // A second change computed from the image before the first one (partition epoch 0).
        let reply = c.ask(ControllerRequest::AlterPartition {
            broker: 1,
            broker_epoch: c.image.brokers[&1].epoch,
            partitions: vec![AlterPartitionItem {
                topic_id: id,
                partition: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![IsrMember::unchecked(1), IsrMember::unchecked(3)],
            }],
        });
        assert_eq!(
            alter_outcome(reply),
            Err(AlterPartitionError::InvalidUpdateVersion { got: 0, current: 1 })
        );
        assert_eq!(c.partition("r", 0).isr, vec![1, 2]);
    }

    #[test]
    fn epochs_newer_than_the_controllers_image_answer_not_controller() {
        let (mut c, id) = three_replicas(&[]);
        for (leader_epoch, partition_epoch) in [(1, 0), (0, 1)] {
            let reply = c.ask(ControllerRequest::AlterPartition {
                broker: 1,
                broker_epoch: c.image.brokers[&1].epoch,
                partitions: vec![AlterPartitionItem {
                    topic_id: id,
                    partition: 0,
                    leader_epoch,
                    partition_epoch,
                    new_isr: vec![IsrMember::unchecked(1)],
                }],
            });
            assert_eq!(
                alter_outcome(reply),
                Err(AlterPartitionError::NotController)
            );
        }
    }

    #[test]
    fn an_isr_outside_the_replicas_or_without_the_leader_or_naming_a_member_twice_is_invalid() {
        let (mut c, _) = three_replicas(&[]);
        c.up(4);
        for isr in [&[1, 4][..], &[2, 3], &[1, 2, 2], &[]] {
            assert!(
                matches!(
                    alter_outcome(alter_isr(&mut c, 1, isr)),
                    Err(AlterPartitionError::InvalidRequest(_))
                ),
                "{isr:?}"
            );
        }
        assert_eq!(c.partition("r", 0).partition_epoch, 0);
    }

    #[test]
    fn an_unknown_topic_or_partition_is_reported_as_such() {
        let (mut c, id) = three_replicas(&[]);
        let epoch = c.image.brokers[&1].epoch;
        for (topic_id, partition) in [(Uuid::from_u128(5), 0), (id, 1), (id, -1)] {
            let reply = c.ask(ControllerRequest::AlterPartition {
                broker: 1,
                broker_epoch: epoch,
                partitions: vec![AlterPartitionItem {
                    topic_id,
                    partition,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    new_isr: vec![IsrMember::unchecked(1)],
                }],
            });
            assert_eq!(
                alter_outcome(reply),
                Err(AlterPartitionError::UnknownTopicOrPartition)
            );
        }
    }

    #[test]
    fn fenced_shutting_down_or_unregistered_brokers_never_join_the_isr() {
        let (mut c, _) = three_replicas(&[]);
        // Broker 3 is fenced (its session expired): it leaves the ISR.
        c.now_ms += c.settings.broker_session_timeout_ms;
        for id in [1, 2] {
            let epoch = c.image.brokers[&id].epoch;
            let offset = c.image.metadata_offset;
            c.heartbeat(id, epoch, offset, false).unwrap();
        }
        c.now_ms += 1;
        assert_eq!(c.expire(), 1);
        assert_eq!(c.partition("r", 0).isr, vec![1, 2]);
        assert_eq!(
            alter_outcome(alter_isr(&mut c, 1, &[1, 2, 3])),
            Err(AlterPartitionError::IneligibleReplica(vec![(
                3,
                "fenced".into()
            )]))
        );
        // Broker 2 begins a controlled shutdown: it leaves the ISR and may not come back.
        let e2 = c.image.brokers[&2].epoch;
        let offset = c.image.metadata_offset;
        c.heartbeat(2, e2, offset, true).unwrap();
        assert_eq!(c.partition("r", 0).isr, vec![1]);
        assert_eq!(
            alter_outcome(alter_isr(&mut c, 1, &[1, 2])),
            Err(AlterPartitionError::IneligibleReplica(vec![(
                2,
                "shutting down".into()
            )]))
        );
        assert_eq!(c.partition("r", 0).isr, vec![1]);
    }

    #[test]
    fn a_member_named_with_a_previous_incarnations_broker_epoch_is_ineligible() {
        let (mut c, id) = three_replicas(&[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        let old = c.image.brokers[&3].epoch;
        // Broker 3 restarts (a new incarnation, a new epoch) after its session expired.
        c.now_ms += c.settings.broker_session_timeout_ms;
        for id in [1, 2] {
            let epoch = c.image.brokers[&id].epoch;
            let offset = c.image.metadata_offset;
            c.heartbeat(id, epoch, offset, false).unwrap();
        }
        c.now_ms += 1;
        c.expire();
        let new = c.up(3);
        let p = c.partition("r", 0);
        let ask = |c: &mut Controller, epoch3| {
            c.ask(ControllerRequest::AlterPartition {
                broker: 1,
                broker_epoch: c.image.brokers[&1].epoch,
                partitions: vec![AlterPartitionItem {
                    topic_id: id,
                    partition: 0,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    new_isr: vec![
                        IsrMember {
                            id: 1,
                            broker_epoch: c.image.brokers[&1].epoch,
                        },
                        IsrMember {
                            id: 3,
                            broker_epoch: epoch3,
                        },
                    ],
                }],
            })
        };
        assert_eq!(
            alter_outcome(ask(&mut c, old)),
            Err(AlterPartitionError::IneligibleReplica(vec![(
                3,
                format!("broker epoch mismatch: requested={old} VS expected={new}")
            )]))
        );
        let changed = alter_outcome(ask(&mut c, new)).unwrap();
        assert_eq!(changed.isr, vec![1, 3]);
    }

    // --- Elections ----------------------------------------------------------------------

    /// Keeps brokers `alive` heartbeating past the session timeout and expires the others;
    /// how many were fenced.
    fn expire_all_but(c: &mut Controller, alive: &[NodeId]) -> usize {
        c.now_ms += c.settings.broker_session_timeout_ms;
        for id in alive {
            let epoch = c.image.brokers[id].epoch;
            let offset = c.image.metadata_offset;
            c.heartbeat(*id, epoch, offset, false).unwrap();
        }
        c.now_ms += 1;
        c.expire()
    }

    /// "r"-0 led by 1 with ISR [1] (2 and 3 fell behind), then broker 1 fenced.
    fn isr_of_one_then_leader_lost(configs: &[(&str, &str)]) -> Controller {
        let (mut c, _) = three_replicas(configs);
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        assert_eq!(expire_all_but(&mut c, &[2, 3]), 1);
        c
    }

    #[test]
    fn fencing_takes_a_broker_out_of_every_isr_and_its_leadership_goes_to_an_isr_member() {
        let (mut c, _) = three_replicas(&[]);
        assert_eq!(expire_all_but(&mut c, &[2, 3]), 1);
        let p = c.partition("r", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (2, vec![2, 3], 1)
        );
        // And a follower fenced leaves the ISR without a leader change.
        assert_eq!(expire_all_but(&mut c, &[2]), 1);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
        assert_eq!(c.image.unclean_leader_elections, 0);
    }

    #[test]
    fn controlled_shutdown_takes_the_broker_out_of_every_isr_of_replication_factor_three() {
        let (mut c, _) = three_replicas(&[]);
        let e3 = c.image.brokers[&3].epoch;
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(3, e3, offset, true), Ok((true, true)));
        let p = c.partition("r", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (1, vec![1, 2], 0)
        );
        let e1 = c.image.brokers[&1].epoch;
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(1, e1, offset, true), Ok((true, true)));
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
    }

    #[test]
    fn with_unclean_election_off_a_partition_whose_isr_is_gone_waits_for_an_isr_member() {
        let mut c = isr_of_one_then_leader_lost(&[]);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (NO_NODE, vec![1]));
        assert!(
            unclean_elections(&c.image, &c.settings).is_empty(),
            "2 and 3 are live but out of sync"
        );
        // Broker 1, the ISR's last member, comes back and leads again.
        c.up(1);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (1, vec![1], 2));
        assert_eq!(c.image.unclean_leader_elections, 0);
    }

    /// Broker `id` registers again from an empty log directory (its drive was wiped) and
    /// heartbeats once caught up; its new epoch.
    fn back_empty(c: &mut Controller, id: NodeId) -> i64 {
        let incarnation = c.fresh_incarnation();
        let epoch = c.register_with(id, incarnation, NO_BROKER_EPOCH).unwrap();
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(id, epoch, offset, false), Ok((false, false)));
        epoch
    }

    #[test]
    fn a_broker_back_with_an_empty_log_leaves_every_isr_even_as_the_last_member_and_leads_nothing()
    {
        // The bug: broker 1, the last ISR member of an offline partition, came back with a
        // wiped drive and was elected from that ISR membership; its followers truncated to
        // its empty log and everything acknowledged was lost.
        let mut c = isr_of_one_then_leader_lost(&[]);
        back_empty(&mut c, 1);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (NO_NODE, vec![]));
        assert!(unclean_elections(&c.image, &c.settings).is_empty());
        assert_eq!(c.image.unclean_leader_elections, 0);
    }

    #[test]
    fn a_live_broker_back_with_an_empty_log_hands_its_leadership_to_an_isr_member() {
        let (mut c, _) = three_replicas(&[]);
        // Broker 1's old incarnation is unfenced but its session ran out: the new one replaces
        // it at once, and its empty replica leaves the ISR it led.
        c.now_ms += c.settings.broker_session_timeout_ms;
        for id in [2, 3] {
            let epoch = c.image.brokers[&id].epoch;
            let offset = c.image.metadata_offset;
            c.heartbeat(id, epoch, offset, false).unwrap();
        }
        c.now_ms += 1;
        back_empty(&mut c, 1);
        let p = c.partition("r", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (2, vec![2, 3], 1)
        );
    }

    #[test]
    fn a_broker_whose_log_directory_survived_comes_back_as_the_last_member_and_leads() {
        // A restart that kept its logs (a crash under the durable policy) keeps the rule of
        // the last member: it holds everything committed.
        let mut c = isr_of_one_then_leader_lost(&[]);
        let previous = c.image.brokers[&1].epoch;
        let incarnation = c.fresh_incarnation();
        let epoch = c.register_with(1, incarnation, previous).unwrap();
        let offset = c.image.metadata_offset;
        c.heartbeat(1, epoch, offset, false).unwrap();
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
    }

    #[test]
    fn with_unclean_election_on_a_live_out_of_sync_replica_leads_alone_and_is_counted() {
        let c = isr_of_one_then_leader_lost(&[("unclean.leader.election.enable", "true")]);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
        assert_eq!(c.image.unclean_leader_elections, 1);
    }

    #[test]
    fn turning_unclean_election_on_elects_a_leader_for_a_partition_already_offline() {
        let mut c = isr_of_one_then_leader_lost(&[]);
        assert_eq!(c.partition("r", 0).leader, NO_NODE);
        assert_eq!(
            alter(
                &mut c,
                ConfigResource::Broker(None),
                &[("unclean.leader.election.enable", Some("true"))]
            ),
            Ok(())
        );
        // The controller's next tick.
        let records = unclean_elections(&c.image, &c.settings);
        c.commit(records);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!(c.image.unclean_leader_elections, 1);
        assert!(unclean_elections(&c.image, &c.settings).is_empty());
    }

    #[test]
    fn a_topic_that_turns_unclean_election_off_overrides_the_broker_default() {
        let (mut r, _) = three_replicas(&[("unclean.leader.election.enable", "false")]);
        r.settings.unclean_leader_election_enable = true;
        alter_outcome(alter_isr(&mut r, 1, &[1])).unwrap();
        assert_eq!(expire_all_but(&mut r, &[2, 3]), 1);
        assert_eq!(r.partition("r", 0).leader, NO_NODE);
        assert!(unclean_elections(&r.image, &r.settings).is_empty());
        // The broker default alone elects.
        let (mut d, _) = three_replicas(&[]);
        d.settings.unclean_leader_election_enable = true;
        alter_outcome(alter_isr(&mut d, 1, &[1])).unwrap();
        assert_eq!(expire_all_but(&mut d, &[2, 3]), 1);
        assert_eq!(d.partition("r", 0).leader, 2);
    }

    #[test]
    fn a_replica_unfenced_after_every_replica_was_down_leads_uncleanly_only_if_allowed() {
        for unclean in [false, true] {
            let value = unclean.to_string();
            let (mut c, _) = three_replicas(&[("unclean.leader.election.enable", &value)]);
            alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
            assert_eq!(expire_all_but(&mut c, &[]), 3);
            assert_eq!(c.partition("r", 0).leader, NO_NODE);
            c.up(3);
            let p = c.partition("r", 0);
            if unclean {
                assert_eq!((p.leader, p.isr.clone()), (3, vec![3]));
                assert_eq!(c.image.unclean_leader_elections, 1);
            } else {
                assert_eq!((p.leader, p.isr.clone()), (NO_NODE, vec![1]));
                assert_eq!(c.image.unclean_leader_elections, 0);
            }
        }
    }

    // --- Eligible leader replicas (KIP-966) ------------------------------------------------

    /// "r"-0 on brokers 1-3 led by 1, with eligible leader replicas on and
    /// `min.insync.replicas` = `min_isr` (the broker default; `topic` adds topic configs).
    fn elr_on(min_isr: usize, topic: &[(&str, &str)]) -> Controller {
        let (mut c, _) = three_replicas(topic);
        c.settings.eligible_leader_replicas_enable = true;
        c.settings.min_insync_replicas = min_isr;
        c
    }

    /// (leader, ISR, ELR, last known ELR) of "r"-0.
    fn elr_state(c: &Controller) -> (NodeId, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
        let p = c.partition("r", 0);
        (p.leader, p.isr, p.elr, p.last_known_elr)
    }

    #[test]
    fn with_elr_off_a_replica_leaving_a_small_isr_is_not_eligible() {
        let (mut c, _) = three_replicas(&[("min.insync.replicas", "2")]);
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        assert_eq!(elr_state(&c), (1, vec![1], vec![], vec![]));
    }

    #[test]
    fn a_replica_leaving_an_isr_that_keeps_min_insync_replicas_is_not_eligible() {
        // The HW still moves with an ISR of two: broker 3 may lack what is committed next.
        let mut c = elr_on(2, &[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        assert_eq!(elr_state(&c), (1, vec![1, 2], vec![], vec![]));
    }

    #[test]
    fn a_replica_leaving_an_isr_below_min_insync_replicas_becomes_eligible() {
        let mut c = elr_on(2, &[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        let changed = alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        assert_eq!(changed.elr, vec![2], "the reply is the committed state");
        assert_eq!(elr_state(&c), (1, vec![1], vec![2], vec![]));
        // The topic's min.insync.replicas overrides the broker default.
        let mut t = elr_on(1, &[("min.insync.replicas", "3")]);
        alter_outcome(alter_isr(&mut t, 1, &[1, 2])).unwrap();
        assert_eq!(elr_state(&t), (1, vec![1, 2], vec![3], vec![]));
    }

    #[test]
    fn a_replica_back_in_the_isr_leaves_the_elr_and_an_isr_back_at_min_insync_replicas_clears_it() {
        let mut c = elr_on(3, &[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        assert_eq!(elr_state(&c), (1, vec![1], vec![2, 3], vec![]));
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        assert_eq!(elr_state(&c), (1, vec![1, 2], vec![3], vec![]));
        alter_outcome(alter_isr(&mut c, 1, &[1, 2, 3])).unwrap();
        assert_eq!(elr_state(&c), (1, vec![1, 2, 3], vec![], vec![]));
    }

    #[test]
    fn when_the_last_isr_member_is_fenced_an_eligible_replica_leads_cleanly() {
        for elr in [false, true] {
            let mut c = elr_on(2, &[]);
            c.settings.eligible_leader_replicas_enable = elr;
            alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
            alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
            assert_eq!(expire_all_but(&mut c, &[2, 3]), 1);
            let p = c.partition("r", 0);
            if elr {
                // Broker 2 left the ISR while it was below min.insync.replicas: the HW stood
                // still since, so it holds everything committed. Broker 3 left earlier and
                // may not: it stays out.
                assert_eq!(elr_state(&c), (2, vec![2], vec![1], vec![]));
                assert_eq!(p.leader_epoch, 1);
            } else {
                // Without ELR the partition waits for its last ISR member.
                assert_eq!(elr_state(&c), (NO_NODE, vec![1], vec![], vec![]));
            }
            assert_eq!(c.image.unclean_leader_elections, 0, "a clean election");
            assert!(unclean_elections(&c.image, &c.settings).is_empty());
        }
    }

    #[test]
    fn the_last_isr_member_shutting_down_hands_its_leadership_to_an_eligible_replica() {
        let mut c = elr_on(2, &[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        let e1 = c.image.brokers[&1].epoch;
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(1, e1, offset, true), Ok((true, true)));
        assert_eq!(elr_state(&c), (2, vec![2], vec![1], vec![]));
    }

    #[test]
    fn an_eligible_replica_that_was_down_leads_once_it_is_unfenced() {
        let mut c = elr_on(2, &[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        // Fencing does not take a replica out of the ELR: its log is as it left it.
        assert_eq!(expire_all_but(&mut c, &[1, 3]), 1);
        assert_eq!(elr_state(&c), (1, vec![1], vec![2], vec![]));
        assert_eq!(expire_all_but(&mut c, &[3]), 1);
        assert_eq!(elr_state(&c), (NO_NODE, vec![], vec![1, 2], vec![]));
        assert!(
            unclean_elections(&c.image, &c.settings).is_empty(),
            "broker 3 is live but not eligible"
        );
        c.up(2);
        assert_eq!(elr_state(&c), (2, vec![2], vec![1], vec![]));
        assert_eq!(c.image.unclean_leader_elections, 0);
    }

    #[test]
    fn an_eligible_replica_back_with_an_empty_log_is_only_last_known() {
        let mut c = elr_on(2, &[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        assert_eq!(expire_all_but(&mut c, &[3]), 2);
        assert_eq!(elr_state(&c), (NO_NODE, vec![], vec![1, 2], vec![]));
        // KIP-966's unclean shutdown: broker 2 lost its log, so it no longer holds what made
        // it eligible; it is kept as last known.
        back_empty(&mut c, 2);
        assert_eq!(elr_state(&c), (NO_NODE, vec![], vec![1], vec![2]));
        back_empty(&mut c, 1);
        assert_eq!(elr_state(&c), (NO_NODE, vec![], vec![], vec![1, 2]));
        assert!(unclean_elections(&c.image, &c.settings).is_empty());
        assert_eq!(c.image.unclean_leader_elections, 0);
    }

    #[test]
    fn an_unclean_election_clears_the_elr() {
        let mut c = elr_on(2, &[("unclean.leader.election.enable", "true")]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        // No eligible replica is live: the out-of-sync broker 3 leads uncleanly.
        assert_eq!(expire_all_but(&mut c, &[1, 3]), 1);
        assert_eq!(expire_all_but(&mut c, &[3]), 1);
        assert_eq!(elr_state(&c), (3, vec![3], vec![], vec![]));
        assert_eq!(c.image.unclean_leader_elections, 1);
    }

    #[test]
    fn an_eligible_replica_leads_before_any_unclean_election() {
        let mut c = elr_on(2, &[("unclean.leader.election.enable", "true")]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        assert_eq!(expire_all_but(&mut c, &[2, 3]), 1);
        assert_eq!(elr_state(&c), (2, vec![2], vec![1], vec![]));
        assert_eq!(c.image.unclean_leader_elections, 0);
    }

    #[test]
    fn a_live_eligible_replica_of_a_leaderless_partition_is_elected_by_the_tick_and_by_elect_leaders(
    ) {
        for tick in [true, false] {
            let mut c = elr_on(2, &[]);
            alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
            alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
            // A leaderless partition with an empty ISR whose eligible replicas are live (as
            // when ELR is turned on after they were unfenced).
            let p = c.partition("r", 0);
            let id = c.image.topic("r").unwrap().id;
            c.commit(vec![MetadataRecord::ChangePartition {
                topic_id: id,
                partition: 0,
                image: PartitionImage {
                    leader: NO_NODE,
                    leader_epoch: p.leader_epoch + 1,
                    partition_epoch: p.partition_epoch + 1,
                    isr: vec![],
                    elr: vec![1, 2],
                    ..p
                },
            }]);
            if tick {
                let records = unclean_elections(&c.image, &c.settings);
                c.commit(records);
            } else {
                let reply = c.ask(ControllerRequest::ElectLeaders {
                    election: ElectionType::Preferred,
                    partitions: Some(vec![("r".into(), vec![0])]),
                });
                assert_eq!(
                    reply,
                    Ok(ControllerReply::ElectLeaders(vec![(
                        "r".into(),
                        vec![(0, Ok(()))]
                    )]))
                );
            }
            assert_eq!(elr_state(&c), (1, vec![1], vec![2], vec![]), "tick: {tick}");
            assert_eq!(c.image.unclean_leader_elections, 0);
        }
    }

    #[test]
    fn changing_a_topics_min_insync_replicas_clears_its_elr() {
        let mut c = elr_on(3, &[]);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        assert_eq!(elr_state(&c), (1, vec![1, 2], vec![3], vec![]));
        // With a bound of 2 the HW moves with an ISR of two: broker 3 would fall behind what
        // is committed, so it is no longer eligible.
        assert_eq!(
            alter(
                &mut c,
                ConfigResource::Topic("r".into()),
                &[("min.insync.replicas", Some("2"))]
            ),
            Ok(())
        );
        assert_eq!(elr_state(&c), (1, vec![1, 2], vec![], vec![]));
    }

    #[test]
    fn a_completed_reassignment_drops_the_replicas_it_removed_from_the_elr() {
        let mut c = elr_on(2, &[]);
        c.up(4);
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        assert_eq!(elr_state(&c), (1, vec![1], vec![2], vec![]));
        let reply = c.ask(ControllerRequest::AlterPartitionReassignments {
            topics: vec![("r".into(), vec![(0, Some(vec![1, 3, 4]))])],
            allow_replication_factor_change: false,
        });
        assert!(reply.is_ok(), "{reply:?}");
        alter_outcome(alter_isr(&mut c, 1, &[1, 3, 4])).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(p.replicas, vec![1, 3, 4]);
        assert!(p.elr.is_empty() && p.last_known_elr.is_empty(), "{p:?}");
    }

    #[test]
    fn a_preferred_replica_back_in_the_isr_gets_its_leadership_back() {
        let (mut c, _) = three_replicas(&[]);
        assert!(preferred_leader_elections(&c.image).is_empty(), "balanced");
        // Broker 1 shuts down: 2 leads. 1 comes back, fenced-free but out of the ISR.
        let e1 = c.image.brokers[&1].epoch;
        let offset = c.image.metadata_offset;
        c.heartbeat(1, e1, offset, true).unwrap();
        c.up(1);
        assert_eq!(c.partition("r", 0).leader, 2);
        assert!(
            preferred_leader_elections(&c.image).is_empty(),
            "not before it is back in the ISR"
        );
        // Caught up: the leader lets it back in; the next check gives it its leadership back.
        alter_outcome(alter_isr(&mut c, 2, &[1, 2, 3])).unwrap();
        let records = preferred_leader_elections(&c.image);
        c.commit(records);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (2, 3));
        assert!(preferred_leader_elections(&c.image).is_empty());
    }

    fn elect(
        c: &mut Controller,
        election: ElectionType,
        partitions: Option<Vec<(&str, Vec<i32>)>>,
    ) -> ElectionResults {
        let request = ControllerRequest::ElectLeaders {
            election,
            partitions: partitions.map(|p| {
                p.into_iter()
                    .map(|(topic, indexes)| (topic.to_string(), indexes))
                    .collect()
            }),
        };
        match c.ask(request) {
            Ok(ControllerReply::ElectLeaders(results)) => results,
            other => panic!("ElectLeaders answered {other:?}"),
        }
    }

    /// "r"-0 on [1, 2, 3], led by 2 after 1 shut down and came back into the ISR (the automatic
    /// election not run yet).
    fn preferred_replica_back_in_the_isr() -> Controller {
        let (mut c, _) = three_replicas(&[]);
        let e1 = c.image.brokers[&1].epoch;
        let offset = c.image.metadata_offset;
        c.heartbeat(1, e1, offset, true).unwrap();
        c.up(1);
        alter_outcome(alter_isr(&mut c, 2, &[1, 2, 3])).unwrap();
        assert_eq!(c.partition("r", 0).leader, 2);
        c
    }

    #[test]
    fn electing_the_preferred_replica_gives_it_the_leadership_in_a_new_leader_epoch() {
        let mut c = preferred_replica_back_in_the_isr();
        let before = c.partition("r", 0);
        let results = elect(&mut c, ElectionType::Preferred, Some(vec![("r", vec![0])]));
        assert_eq!(results, vec![("r".to_string(), vec![(0, Ok(()))])]);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (1, before.isr.clone()));
        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        assert_eq!(p.partition_epoch, before.partition_epoch + 1);
        // Again: the preferred replica leads already.
        let results = elect(&mut c, ElectionType::Preferred, Some(vec![("r", vec![0])]));
        assert_eq!(
            results,
            vec![(
                "r".to_string(),
                vec![(0, Err(ElectionError::ElectionNotNeeded))]
            )]
        );
        assert_eq!(c.partition("r", 0), p, "nothing changed");
    }

    #[test]
    fn a_preferred_replica_outside_the_isr_or_fenced_is_not_elected() {
        // Back and unfenced but not yet in the ISR.
        let (mut c, _) = three_replicas(&[]);
        let e1 = c.image.brokers[&1].epoch;
        let offset = c.image.metadata_offset;
        c.heartbeat(1, e1, offset, true).unwrap();
        c.up(1);
        let before = c.partition("r", 0);
        assert!(!before.isr.contains(&1));
        let results = elect(&mut c, ElectionType::Preferred, Some(vec![("r", vec![0])]));
        assert_eq!(
            results,
            vec![(
                "r".to_string(),
                vec![(0, Err(ElectionError::PreferredLeaderNotAvailable))]
            )]
        );
        assert_eq!(c.partition("r", 0), before);
        // In the ISR (the last member stays when every broker is fenced) but fenced.
        let mut c = isr_of_one_then_leader_lost(&[]);
        assert_eq!(c.partition("r", 0).isr, vec![1]);
        let results = elect(&mut c, ElectionType::Preferred, Some(vec![("r", vec![0])]));
        assert_eq!(
            results[0].1,
            vec![(0, Err(ElectionError::PreferredLeaderNotAvailable))]
        );
        assert_eq!(c.partition("r", 0).leader, NO_NODE);
    }

    #[test]
    fn unknown_topics_and_partitions_are_reported_with_kafkas_messages() {
        let mut c = preferred_replica_back_in_the_isr();
        let results = elect(
            &mut c,
            ElectionType::Preferred,
            Some(vec![("nope", vec![0]), ("r", vec![7, -1])]),
        );
        let unknown = |m: &str| Err(ElectionError::UnknownTopicOrPartition(m.to_string()));
        assert_eq!(
            results,
            vec![
                (
                    "nope".to_string(),
                    vec![(0, unknown("No such topic as nope"))]
                ),
                (
                    "r".to_string(),
                    vec![
                        (7, unknown("No such partition as r-7")),
                        (-1, unknown("No such partition as r--1"))
                    ]
                ),
            ]
        );
        assert_eq!(c.partition("r", 0).leader, 2, "nothing changed");
    }

    #[test]
    fn electing_every_partition_answers_only_the_ones_that_needed_an_election() {
        let mut c = preferred_replica_back_in_the_isr();
        c.create("balanced", 2, 1).unwrap();
        let results = elect(&mut c, ElectionType::Preferred, None);
        assert_eq!(
            results,
            vec![
                ("balanced".to_string(), vec![]),
                ("r".to_string(), vec![(0, Ok(()))]),
            ]
        );
        assert_eq!(c.partition("r", 0).leader, 1);
        assert!(preferred_leader_elections(&c.image).is_empty());
    }

    #[test]
    fn an_unclean_election_makes_a_live_out_of_sync_replica_lead_even_with_the_config_off() {
        let mut c = isr_of_one_then_leader_lost(&[]);
        assert_eq!(c.partition("r", 0).leader, NO_NODE);
        // The partition has no leader: a preferred election finds nobody in the ISR.
        let results = elect(&mut c, ElectionType::Preferred, Some(vec![("r", vec![0])]));
        assert_eq!(
            results[0].1,
            vec![(0, Err(ElectionError::PreferredLeaderNotAvailable))]
        );
        let results = elect(&mut c, ElectionType::Unclean, Some(vec![("r", vec![0])]));
        assert_eq!(results[0].1, vec![(0, Ok(()))]);
        let p = c.partition("r", 0);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!(c.image.unclean_leader_elections, 1, "counted");
        // Led now: no second election.
        let results = elect(&mut c, ElectionType::Unclean, Some(vec![("r", vec![0])]));
        assert_eq!(
            results[0].1,
            vec![(0, Err(ElectionError::ElectionNotNeeded))]
        );
    }

    #[test]
    fn an_unclean_election_with_no_live_replica_finds_no_eligible_leader() {
        let (mut c, _) = three_replicas(&[]);
        assert_eq!(expire_all_but(&mut c, &[]), 3);
        assert_eq!(c.partition("r", 0).leader, NO_NODE);
        let results = elect(&mut c, ElectionType::Unclean, Some(vec![("r", vec![0])]));
        assert_eq!(
            results[0].1,
            vec![(0, Err(ElectionError::EligibleLeadersNotAvailable))]
        );
        assert_eq!(c.image.unclean_leader_elections, 0);
    }

    // --- Partition reassignments (KIP-455) ---------------------------------------------

    fn reassign_one(
        c: &mut Controller,
        topic: &str,
        index: i32,
        target: Option<&[NodeId]>,
        allow_rf_change: bool,
    ) -> Result<(), ReassignmentError> {
        let request = ControllerRequest::AlterPartitionReassignments {
            topics: vec![(topic.to_string(), vec![(index, target.map(<[_]>::to_vec))])],
            allow_replication_factor_change: allow_rf_change,
        };
        match c.ask(request) {
            Ok(ControllerReply::AlterPartitionReassignments(mut results)) => {
                assert_eq!(results.len(), 1);
                let (_, mut outcomes) = results.remove(0);
                assert_eq!(outcomes.len(), 1);
                outcomes.remove(0).1
            }
            other => panic!("AlterPartitionReassignments answered {other:?}"),
        }
    }

    fn listed(
        c: &mut Controller,
        topics: Option<Vec<(&str, Vec<i32>)>>,
    ) -> Vec<(String, Vec<OngoingReassignment>)> {
        let request = ControllerRequest::ListPartitionReassignments {
            topics: topics.map(|t| t.into_iter().map(|(n, p)| (n.to_string(), p)).collect()),
        };
        let before = c.image.metadata_offset;
        let reply = c.ask(request);
        assert_eq!(c.image.metadata_offset, before, "listing commits nothing");
        match reply {
            Ok(ControllerReply::ListPartitionReassignments(list)) => list,
            other => panic!("ListPartitionReassignments answered {other:?}"),
        }
    }

    /// Brokers 1-4 live, "r"-0 on [1, 2, 3] led by 1.
    fn four_brokers_three_replicas() -> Controller {
        let (mut c, _) = three_replicas(&[]);
        c.up(4);
        c
    }

    #[test]
    fn an_unclean_election_that_completes_a_reassignment_keeps_the_leader_it_chose() {
        // Found by the proptest: broker 4 is unfenced and elected in the same batch, so the
        // completion must not look for a live leader in the image of before that batch.
        let (mut c, _) = three_replicas(&[("unclean.leader.election.enable", "true")]);
        let epoch = c.register(4);
        reassign_one(&mut c, "r", 0, Some(&[4]), true).unwrap();
        assert!(c.partition("r", 0).is_reassigning());
        expire_all_but(&mut c, &[]);
        assert_eq!(c.partition("r", 0).leader, NO_NODE);
        let offset = c.image.metadata_offset;
        assert_eq!(c.heartbeat(4, epoch, offset, false), Ok((false, false)));
        let p = c.partition("r", 0);
        assert!(!p.is_reassigning());
        assert_eq!(
            (p.leader, p.replicas.clone(), p.isr.clone()),
            (4, vec![4], vec![4])
        );
        assert_eq!(c.image.unclean_leader_elections, 1);
    }

    #[test]
    fn a_reorder_of_the_same_replicas_applies_at_once_whatever_the_isr() {
        // Found by the proptest in CI: a reorder is no reassignment (nothing adding or
        // removing), so Kafka applies it in one record even with followers out of sync.
        let mut c = four_brokers_three_replicas();
        alter_outcome(alter_isr(&mut c, 1, &[1])).unwrap();
        reassign_one(&mut c, "r", 0, Some(&[3, 2, 1]), false).unwrap();
        let p = c.partition("r", 0);
        assert!(!p.is_reassigning());
        assert_eq!(p.replicas, vec![3, 2, 1]);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
    }

    #[test]
    fn a_reassignment_adds_the_new_replicas_first_and_completes_once_they_are_in_the_isr() {
        let mut c = four_brokers_three_replicas();
        let before = c.partition("r", 0);
        reassign_one(&mut c, "r", 0, Some(&[2, 3, 4]), false).unwrap();
        let p = c.partition("r", 0);
        // Union, target first; the ISR and the leader as they were until 4 catches up.
        assert_eq!(p.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4], vec![1])
        );
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!(p.leader_epoch, before.leader_epoch);
        assert_eq!(p.partition_epoch, before.partition_epoch + 1);
        assert_eq!(
            listed(&mut c, None),
            vec![(
                "r".to_string(),
                vec![OngoingReassignment {
                    partition: 0,
                    replicas: vec![2, 3, 4, 1],
                    adding: vec![4],
                    removing: vec![1],
                }]
            )]
        );
        // An ISR change that does not bring 4 in completes nothing.
        alter_outcome(alter_isr(&mut c, 1, &[1, 2])).unwrap();
        assert!(c.partition("r", 0).is_reassigning());
        // 4 joins, but 3 (kept) is out of the ISR: Kafka completes only once every target
        // replica is in sync.
        alter_outcome(alter_isr(&mut c, 1, &[1, 2, 4])).unwrap();
        assert!(c.partition("r", 0).is_reassigning());
        // 3 back: the reassignment completes in the same record. The leader, 1, is removed:
        // 2 (the first target replica) leads in a new leader epoch.
        let led = c.partition("r", 0);
        let changed = alter_outcome(alter_isr(&mut c, 1, &[1, 2, 3, 4])).unwrap();
        assert_eq!(changed, c.partition("r", 0));
        assert_eq!(changed.replicas, vec![2, 3, 4]);
        assert_eq!(changed.isr, vec![2, 3, 4]);
        assert!(!changed.is_reassigning());
        assert_eq!(changed.leader, 2);
        assert_eq!(
            changed.leader_epoch,
            led.leader_epoch + 1,
            "a new leader, a new epoch"
        );
        assert!(listed(&mut c, None).is_empty());
    }

    #[test]
    fn a_reassignment_that_keeps_the_leader_keeps_its_epoch_and_a_smaller_one_completes_at_once() {
        let mut c = four_brokers_three_replicas();
        // RF 3 -> 1 onto the leader: nothing to add, done in one record.
        reassign_one(&mut c, "r", 0, Some(&[1]), true).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1], vec![1], 1)
        );
        assert_eq!(p.leader_epoch, 0);
        assert!(!p.is_reassigning());
        // RF 1 -> 3: runs until the new replicas join.
        reassign_one(&mut c, "r", 0, Some(&[1, 3, 4]), true).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![3, 4], vec![])
        );
        alter_outcome(alter_isr(&mut c, 1, &[1, 3])).unwrap();
        assert!(
            c.partition("r", 0).is_reassigning(),
            "4 is not in the ISR yet"
        );
        alter_outcome(alter_isr(&mut c, 1, &[1, 3, 4])).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1, 3, 4], vec![1, 3, 4], 1)
        );
        assert_eq!(p.leader_epoch, 0, "the leader stayed");
        // RF 3 -> 1 away from the leader: a new leader at once, in a new epoch.
        reassign_one(&mut c, "r", 0, Some(&[4]), true).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![4], vec![4], 4)
        );
        assert_eq!(p.leader_epoch, 1);
    }

    #[test]
    fn cancelling_reverts_to_the_original_replicas_and_a_cancel_of_nothing_is_refused() {
        let mut c = four_brokers_three_replicas();
        assert_eq!(
            reassign_one(&mut c, "r", 0, None, false),
            Err(ReassignmentError::NoReassignmentInProgress)
        );
        reassign_one(&mut c, "r", 0, Some(&[2, 3, 4]), false).unwrap();
        reassign_one(&mut c, "r", 0, None, false).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2, 3, 1], vec![1, 2, 3], 1)
        );
        assert!(!p.is_reassigning());
        assert_eq!(p.leader_epoch, 0);
        // A new target while one runs: a replica being added stays adding if the new target
        // keeps it, one being removed that the new target keeps is no longer removed, and a
        // cancel reverts to the replicas before the first.
        reassign_one(&mut c, "r", 0, Some(&[4, 2, 3]), false).unwrap();
        reassign_one(&mut c, "r", 0, Some(&[4, 1, 2]), false).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(p.replicas, vec![4, 1, 2, 3]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4], vec![3])
        );
        reassign_one(&mut c, "r", 0, None, false).unwrap();
        let p = c.partition("r", 0);
        assert_eq!(p.replicas, vec![1, 2, 3]);
    }

    #[test]
    fn bad_targets_get_kafkas_errors_and_change_nothing() {
        let mut c = four_brokers_three_replicas();
        let before = c.image.clone();
        let invalid = |m: &str| Err(ReassignmentError::InvalidReplicaAssignment(m.to_string()));
        assert_eq!(
            reassign_one(&mut c, "r", 0, Some(&[]), true),
            invalid("The manual partition assignment includes an empty replica list.")
        );
        assert_eq!(
            reassign_one(&mut c, "r", 0, Some(&[2, 4, 2]), true),
            invalid("The manual partition assignment includes the broker 2 more than once.")
        );
        assert_eq!(
            reassign_one(&mut c, "r", 0, Some(&[2, 9]), true),
            invalid(
                "The manual partition assignment includes broker 9, but no such broker is \
                 registered."
            )
        );
        assert_eq!(
            reassign_one(&mut c, "r", 0, Some(&[2, 4]), false),
            Err(ReassignmentError::InvalidReplicationFactor(
                "The replication factor is changed from 3 to 2 but \
                 allowReplicationFactorChange is false."
                    .into()
            ))
        );
        assert_eq!(
            reassign_one(&mut c, "nope", 0, Some(&[1]), true),
            Err(ReassignmentError::UnknownTopicOrPartition(
                "Unable to find a topic named nope.".into()
            ))
        );
        assert_eq!(
            reassign_one(&mut c, "r", 1, Some(&[1]), true),
            Err(ReassignmentError::UnknownTopicOrPartition(
                "Unable to find partition r:1.".into()
            ))
        );
        assert_eq!(c.image, before, "nothing committed");
        assert!(listed(&mut c, Some(vec![("nope", vec![0]), ("r", vec![0, 5])])).is_empty());
    }

    #[test]
    fn a_cancel_that_would_need_an_unclean_election_is_refused_unless_the_topic_allows_it() {
        for unclean in [false, true] {
            let configs: &[(&str, &str)] = if unclean {
                &[("unclean.leader.election.enable", "true")]
            } else {
                &[]
            };
            let (mut c, _) = three_replicas(configs);
            c.up(4);
            c.up(5);
            // Moving to [4, 5]: 4 joins the ISR, 5 does not yet, then 1-3 die; 4 leads alone.
            reassign_one(&mut c, "r", 0, Some(&[4, 5]), false).unwrap_err();
            reassign_one(&mut c, "r", 0, Some(&[4, 5]), true).unwrap();
            alter_outcome(alter_isr(&mut c, 1, &[1, 2, 3, 4])).unwrap();
            assert!(c.partition("r", 0).is_reassigning());
            assert_eq!(expire_all_but(&mut c, &[4, 5]), 3);
            let p = c.partition("r", 0);
            assert_eq!((p.leader, p.isr.clone()), (4, vec![4]));
            // Reverting leaves no ISR member: 1 would lead without what 4 took since.
            let outcome = reassign_one(&mut c, "r", 0, None, false);
            if !unclean {
                assert_eq!(
                    outcome,
                    Err(ReassignmentError::InvalidReplicaAssignment(
                        "Unable to revert partition assignment for r:0 because it would \
                         require an unclean leader election."
                            .into()
                    ))
                );
                assert_eq!(c.partition("r", 0), p, "nothing changed");
            } else {
                outcome.unwrap();
                let p = c.partition("r", 0);
                // 1 is back in the ISR alone but fenced: the partition waits for it.
                assert_eq!(
                    (p.replicas.clone(), p.isr.clone()),
                    (vec![1, 2, 3], vec![1])
                );
                assert_eq!(p.leader, NO_NODE);
            }
        }
    }

    // --- Producer ids and the legacy import ---------------------------------------------

    #[test]
    fn producer_id_blocks_never_overlap_and_run_out_at_the_end_of_int64() {
        let mut c = Controller::new();
        let epoch = c.up(1);
        let ask = |c: &mut Controller, epoch| {
            c.ask(ControllerRequest::AllocateProducerIds { broker: 1, epoch })
        };
        assert_eq!(
            ask(&mut c, epoch),
            Ok(ControllerReply::ProducerIds {
                first: 0,
                count: 1000
            })
        );
        assert_eq!(
            ask(&mut c, epoch),
            Ok(ControllerReply::ProducerIds {
                first: 1000,
                count: 1000
            })
        );
        assert!(matches!(
            ask(&mut c, epoch - 1),
            Err(ControllerError::StaleBrokerEpoch { .. })
        ));
        c.commit(vec![MetadataRecord::RaiseProducerIdFloor {
            floor: i64::MAX - 1000,
        }]);
        assert_eq!(
            ask(&mut c, epoch),
            Ok(ControllerReply::ProducerIds {
                first: i64::MAX - 1000,
                count: 1000
            })
        );
        assert_eq!(
            ask(&mut c, epoch),
            Err(ControllerError::ProducerIdsExhausted)
        );
    }

    fn import(c: &mut Controller, node: NodeId) -> Result<ControllerReply, ControllerError> {
        c.ask(ControllerRequest::ImportLegacy {
            cluster_id: "legacy-id".into(),
            topics: vec![LegacyTopic {
                name: "old".into(),
                id: Uuid::from_u128(900),
                partitions: 3,
                configs: BTreeMap::from([("retention.ms".into(), "7".into())]),
            }],
            node,
            producer_id_floor: 5_000,
        })
    }

    #[test]
    fn a_legacy_directory_is_imported_once_onto_the_importing_node() {
        let mut c = Controller::new();
        c.up(1);
        assert_eq!(import(&mut c, 1), Ok(ControllerReply::Imported));
        let topic = c.image.topic("old").unwrap().clone();
        assert_eq!(topic.id, Uuid::from_u128(900));
        assert_eq!(topic.configs["retention.ms"], "7");
        assert!(topic
            .partitions
            .iter()
            .all(|p| p.replicas == vec![1] && p.leader == 1));
        assert_eq!(
            c.image.cluster_id, "legacy-id",
            "the data directory's cluster id stays"
        );
        assert_eq!(c.image.next_producer_id, 5_000);
        assert!(c.image.legacy_imported);
        let offset = c.image.metadata_offset;
        assert_eq!(import(&mut c, 1), Ok(ControllerReply::Imported));
        assert_eq!(c.image.metadata_offset, offset, "a retry changes nothing");
    }

    #[test]
    fn topics_imported_before_the_node_is_unfenced_are_led_once_it_is() {
        let mut c = Controller::new();
        let epoch = c.register(1);
        import(&mut c, 1).unwrap();
        assert_eq!(c.partition("old", 0).leader, NO_NODE);
        let offset = c.image.metadata_offset;
        c.heartbeat(1, epoch, offset, false).unwrap();
        assert_eq!(c.partition("old", 2).leader, 1);
    }
}

/// Random request sequences against a model-free oracle: every batch keeps every invariant,
/// leader and partition epochs only rise, and a second image applying the same batches (after
/// a JSON round trip, as a follower receives them) ends equal.
#[cfg(test)]
mod proptests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::tests::Controller;
    use super::*;
    use crate::controller::request::AlterPartitionItem;

    #[derive(Clone, Debug)]
    enum Op {
        /// A broker process starts (a fresh incarnation) or retries (the same one).
        Register {
            id: NodeId,
            retry: bool,
        },
        Heartbeat {
            id: NodeId,
            caught_up: bool,
            want_shutdown: bool,
            stale: bool,
        },
        Advance {
            ms: i64,
        },
        Expire,
        NewController,
        Create {
            topic: u8,
            partitions: i32,
            replication_factor: i16,
        },
        Delete {
            topic: u8,
        },
        Grow {
            topic: u8,
            by: i32,
        },
        AllocateProducerIds {
            id: NodeId,
        },
        /// A topic of two replicas per partition, committed as a record (CreateTopics refuses
        /// more than one replica in this issue; fencing and elections must handle them).
        CreateReplicated {
            topic: u8,
            partitions: usize,
        },
        /// An AlterPartition for a replicated partition, from its leader or another broker, at
        /// the current epochs or stale ones, asking for a subset of the replicas (bit i: the
        /// i-th replica).
        AlterIsr {
            topic: u8,
            partition: usize,
            from_leader: bool,
            stale: bool,
            members: u8,
        },
        /// The broker default `unclean.leader.election.enable` flips.
        ToggleUnclean,
        /// `eligible.leader.replicas.enable` flips (KIP-966).
        ToggleElr,
        /// The broker default `min.insync.replicas` changes.
        MinIsr {
            min: usize,
        },
        /// A broker process starts from a wiped log directory (no previous broker epoch).
        RegisterWiped {
            id: NodeId,
        },
        /// The controller's tick elects uncleanly where allowed.
        UncleanTick,
        /// The controller's leader-imbalance check.
        PreferredElections,
        /// ElectLeaders for every partition.
        Elect {
            unclean: bool,
        },
        /// AlterPartitionReassignments for one partition of a replicated topic: a target of
        /// brokers 1-5 (duplicates and unregistered ones included), or a cancel.
        Reassign {
            topic: u8,
            partition: usize,
            target: Option<Vec<NodeId>>,
            allow_rf_change: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1..=4i32, any::<bool>()).prop_map(|(id, retry)| Op::Register { id, retry }),
            6 => (1..=4i32, any::<bool>(), prop::bool::weighted(0.1), prop::bool::weighted(0.1))
                .prop_map(|(id, caught_up, want_shutdown, stale)| Op::Heartbeat { id, caught_up, want_shutdown, stale }),
            3 => (0..6_000i64).prop_map(|ms| Op::Advance { ms }),
            2 => Just(Op::Expire),
            1 => Just(Op::NewController),
            3 => (0..4u8, -1..4i32, -1..3i16).prop_map(|(topic, partitions, replication_factor)| Op::Create { topic, partitions, replication_factor }),
            1 => (0..4u8).prop_map(|topic| Op::Delete { topic }),
            1 => (0..4u8, 0..3i32).prop_map(|(topic, by)| Op::Grow { topic, by }),
            1 => (1..=4i32).prop_map(|id| Op::AllocateProducerIds { id }),
            2 => (0..3u8, 1..4usize).prop_map(|(topic, partitions)| Op::CreateReplicated { topic, partitions }),
            4 => (0..3u8, 0..3usize, prop::bool::weighted(0.8), prop::bool::weighted(0.2), 0..32u8)
                .prop_map(|(topic, partition, from_leader, stale, members)| Op::AlterIsr { topic, partition, from_leader, stale, members }),
            1 => Just(Op::ToggleUnclean),
            1 => Just(Op::ToggleElr),
            1 => (1..=3usize).prop_map(|min| Op::MinIsr { min }),
            1 => (1..=4i32).prop_map(|id| Op::RegisterWiped { id }),
            2 => Just(Op::UncleanTick),
            1 => Just(Op::PreferredElections),
            1 => any::<bool>().prop_map(|unclean| Op::Elect { unclean }),
            3 => (0..3u8, 0..3usize, prop::option::weighted(0.8, prop::collection::vec(1..=5i32, 0..4)), prop::bool::weighted(0.7))
                .prop_map(|(topic, partition, target, allow_rf_change)| Op::Reassign { topic, partition, target, allow_rf_change }),
        ]
    }

    fn run(c: &mut Controller, op: &Op, last_incarnation: &mut BTreeMap<NodeId, Uuid>) {
        match op {
            Op::Register { id, retry } => {
                let incarnation = match last_incarnation.get(id) {
                    Some(known) if *retry => *known,
                    _ => c.fresh_incarnation(),
                };
                if c.register_as(*id, incarnation).is_ok() {
                    last_incarnation.insert(*id, incarnation);
                }
            }
            Op::Heartbeat {
                id,
                caught_up,
                want_shutdown,
                stale,
            } => {
                let Some(broker) = c.image.brokers.get(id) else {
                    assert_eq!(
                        c.heartbeat(*id, 0, 0, false),
                        Err(ControllerError::NotRegistered(*id))
                    );
                    return;
                };
                let epoch = if *stale {
                    broker.epoch - 1
                } else {
                    broker.epoch
                };
                let offset = if *caught_up {
                    c.image.metadata_offset
                } else {
                    broker.registered_offset - 1
                };
                let before = c.image.clone();
                let reply = c.heartbeat(*id, epoch, offset, *want_shutdown);
                let unfenced =
                    before.brokers[id].fenced && c.image.brokers.get(id).is_some_and(|b| !b.fenced);
                if unfenced && c.settings.eligible_leader_replicas_enable {
                    // KIP-966: an eligible replica unfenced leads every leaderless partition
                    // whose ISR is empty and whose ELR holds it.
                    for (name, topic) in &before.topics {
                        for (i, p) in topic.partitions.iter().enumerate() {
                            if p.leader == NO_NODE && p.isr.is_empty() && p.elr.contains(id) {
                                let now = c.partition(name, i as i32);
                                assert_eq!((now.leader, now.isr.clone()), (*id, vec![*id]));
                                assert!(!now.elr.contains(id));
                            }
                        }
                    }
                }
                if *stale {
                    assert!(
                        matches!(reply, Err(ControllerError::StaleBrokerEpoch { .. })),
                        "{reply:?}"
                    );
                } else {
                    let (fenced, _) = reply.unwrap();
                    assert_eq!(fenced, c.image.brokers[id].fenced);
                }
            }
            Op::Advance { ms } => c.now_ms += ms,
            Op::Expire => {
                c.expire();
            }
            Op::NewController => c.sessions = Sessions::default(),
            Op::Create {
                topic,
                partitions,
                replication_factor,
            } => {
                let _ = c.create(&format!("t{topic}"), *partitions, *replication_factor);
            }
            Op::Delete { topic } => {
                c.ask(ControllerRequest::DeleteTopics {
                    topics: vec![TopicRef::Name(format!("t{topic}"))],
                })
                .unwrap();
            }
            Op::Grow { topic, by } => {
                let name = format!("t{topic}");
                let count = c
                    .image
                    .topic(&name)
                    .map_or(1, |t| t.partitions.len() as i32)
                    + by;
                c.ask(ControllerRequest::CreatePartitions {
                    topics: vec![NewPartitions {
                        topic: name,
                        count,
                        assignments: Vec::new(),
                    }],
                    validate_only: false,
                })
                .unwrap();
            }
            Op::AllocateProducerIds { id } => {
                let epoch = c.image.brokers.get(id).map_or(0, |b| b.epoch);
                let _ = c.ask(ControllerRequest::AllocateProducerIds { broker: *id, epoch });
            }
            Op::CreateReplicated { topic, partitions } => {
                let name = format!("r{topic}");
                if c.image.topic(&name).is_some() {
                    return;
                }
                let usable = placement::usable_brokers(&c.image);
                let Ok(assignments) = placement::place(&usable, *partitions, 2, &mut c.entropy)
                else {
                    return;
                };
                let Some(partitions) = new_partitions(&c.image, &assignments) else {
                    return;
                };
                let id = new_topic_id(&c.image, &BTreeSet::new(), &mut c.entropy);
                c.commit(vec![MetadataRecord::CreateTopic {
                    name,
                    id,
                    configs: BTreeMap::new(),
                    partitions,
                }]);
            }
            Op::AlterIsr {
                topic,
                partition,
                from_leader,
                stale,
                members,
            } => {
                let Some(topic) = c.image.topic(&format!("r{topic}")).cloned() else {
                    return;
                };
                let Some(p) = topic.partitions.get(*partition).cloned() else {
                    return;
                };
                let broker = if *from_leader {
                    p.leader
                } else {
                    p.replicas[0]
                };
                let Some(registration) = c.image.brokers.get(&broker) else {
                    return;
                };
                let mut new_isr: Vec<IsrMember> = p
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| members & (1 << i) != 0)
                    .map(|(_, r)| IsrMember::unchecked(*r))
                    .collect();
                if *from_leader && !new_isr.iter().any(|m| m.id == p.leader) {
                    new_isr.push(IsrMember::unchecked(p.leader));
                }
                let stale_by = i32::from(*stale);
                let reply = c.ask(ControllerRequest::AlterPartition {
                    broker,
                    broker_epoch: registration.epoch,
                    partitions: vec![AlterPartitionItem {
                        topic_id: topic.id,
                        partition: *partition as i32,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch - stale_by,
                        new_isr,
                    }],
                });
                let Ok(ControllerReply::AlterPartition(mut outcomes)) = reply else {
                    panic!("{reply:?}");
                };
                assert_eq!(outcomes.len(), 1, "one outcome per partition asked");
                let outcome = outcomes.remove(0).result;
                let now = c.image.topic_by_id(topic.id).unwrap().partitions[*partition].clone();
                match outcome {
                    Ok(changed) => {
                        assert!(!*stale, "a stale partition epoch is never accepted");
                        assert_eq!(changed, now, "the reply is the committed state");
                        let min_isr = c.settings.min_insync_replicas;
                        if changed == p {
                            // The ISR it has: nothing committed, nothing settled.
                        } else if !c.settings.eligible_leader_replicas_enable {
                            assert!(changed.elr.is_empty() && changed.last_known_elr.is_empty());
                        } else if changed.isr.len() >= min_isr {
                            assert!(changed.elr.is_empty(), "{changed:?}");
                        } else if !p.is_reassigning() {
                            // Every member that left an ISR below min.insync.replicas is
                            // eligible.
                            for r in p.isr.iter().filter(|r| !changed.isr.contains(r)) {
                                assert!(changed.elr.contains(r), "{p:?} -> {changed:?}");
                            }
                        }
                        // Only a reassignment completed by this ISR change moves the leader.
                        assert!(
                            changed.leader_epoch == p.leader_epoch
                                || (p.is_reassigning() && !changed.is_reassigning())
                        );
                        if p.is_reassigning() && !changed.is_reassigning() {
                            // Completed only with every target replica in sync.
                            assert_eq!(changed.isr.len(), changed.replicas.len(), "{changed:?}");
                        }
                    }
                    Err(_) => assert_eq!(now, p, "a refusal changes nothing"),
                }
            }
            Op::ToggleUnclean => {
                c.settings.unclean_leader_election_enable =
                    !c.settings.unclean_leader_election_enable;
            }
            Op::ToggleElr => {
                c.settings.eligible_leader_replicas_enable =
                    !c.settings.eligible_leader_replicas_enable;
            }
            Op::MinIsr { min } => c.settings.min_insync_replicas = *min,
            Op::RegisterWiped { id } => {
                let incarnation = c.fresh_incarnation();
                if c.register_with(*id, incarnation, NO_BROKER_EPOCH).is_ok() {
                    last_incarnation.insert(*id, incarnation);
                    // Its log is gone: it is in no ISR and no ELR it was in (KIP-966); the
                    // partitions it leaves without a leader or ISR stay so unless another
                    // replica could take them.
                    for topic in c.image.topics.values() {
                        for p in &topic.partitions {
                            assert!(!p.isr.contains(id), "{}: {p:?}", topic.name);
                            assert!(!p.elr.contains(id), "{}: {p:?}", topic.name);
                        }
                    }
                }
            }
            Op::UncleanTick => {
                let before = c.image.unclean_leader_elections;
                let records = unclean_elections(&c.image, &c.settings);
                let elected = records
                    .iter()
                    .filter(|r| matches!(r, MetadataRecord::UncleanLeaderElection { .. }))
                    .count() as u64;
                assert!(c.settings.unclean_leader_election_enable || elected == 0);
                c.commit(records);
                assert_eq!(c.image.unclean_leader_elections, before + elected);
                if c.settings.eligible_leader_replicas_enable {
                    let none = BTreeSet::new();
                    for topic in c.image.topics.values() {
                        for p in &topic.partitions {
                            assert!(
                                p.leader != NO_NODE
                                    || !p.isr.is_empty()
                                    || !p.elr.iter().any(|r| can_lead(&c.image, &none, *r)),
                                "{}: a live eligible replica left leaderless: {p:?}",
                                topic.name
                            );
                        }
                    }
                }
            }
            Op::PreferredElections => {
                let records = preferred_leader_elections(&c.image);
                c.commit(records);
                assert!(preferred_leader_elections(&c.image).is_empty());
            }
            Op::Elect { unclean } => {
                let election = if *unclean {
                    ElectionType::Unclean
                } else {
                    ElectionType::Preferred
                };
                let request = ControllerRequest::ElectLeaders {
                    election,
                    partitions: None,
                };
                c.ask(request).unwrap();
                if !unclean {
                    // Every partition whose preferred replica can lead is led by it.
                    assert!(preferred_leader_elections(&c.image).is_empty());
                }
            }
            Op::Reassign {
                topic,
                partition,
                target,
                allow_rf_change,
            } => {
                let name = format!("r{topic}");
                let before = c.image.clone();
                let was = before.partition(&name, *partition as i32).cloned();
                let request = ControllerRequest::AlterPartitionReassignments {
                    topics: vec![(name.clone(), vec![(*partition as i32, target.clone())])],
                    allow_replication_factor_change: *allow_rf_change,
                };
                let Ok(ControllerReply::AlterPartitionReassignments(results)) = c.ask(request)
                else {
                    panic!("AlterPartitionReassignments failed as a whole");
                };
                let outcome = &results[0].1[0].1;
                let Some(was) = was else {
                    assert!(matches!(
                        outcome,
                        Err(ReassignmentError::UnknownTopicOrPartition(_))
                    ));
                    return;
                };
                let now = c.partition(&name, *partition as i32);
                match (outcome, target) {
                    (Err(_), _) => assert_eq!(c.image, before, "a refusal changes nothing"),
                    (Ok(()), Some(target)) => {
                        // Running towards the target, or done and on it.
                        let on = if now.is_reassigning() {
                            now.target_replicas()
                        } else {
                            now.replicas.clone()
                        };
                        assert_eq!(&on, target);
                        let set = |v: &[NodeId]| v.iter().copied().collect::<BTreeSet<_>>();
                        if !now.is_reassigning() && set(&now.replicas) != set(&was.replicas) {
                            // A change of members completed at once only with every target
                            // replica in sync.
                            assert_eq!(now.isr.len(), now.replicas.len(), "{was:?} -> {now:?}");
                        }
                        if !now.is_reassigning() && set(&now.replicas) == set(&was.replicas) {
                            // A reorder of the same members is no reassignment: it applies at
                            // once, whatever the ISR (Kafka's PartitionReassignmentReplicas has
                            // nothing adding or removing), and leaves the ISR as it was.
                            assert_eq!(set(&now.isr), set(&was.isr), "{was:?} -> {now:?}");
                        }
                        // Every replica the target lacks that the partition held is removing
                        // (or gone), every new one adding (or in the ISR, done).
                        for r in &was.replicas {
                            assert!(
                                target.contains(r)
                                    || !now.replicas.contains(r)
                                    || now.removing_replicas.contains(r)
                            );
                        }
                    }
                    (Ok(()), None) => {
                        assert!(was.is_reassigning());
                        assert!(!now.is_reassigning());
                        let original: Vec<NodeId> = was
                            .replicas
                            .iter()
                            .copied()
                            .filter(|r| !was.adding_replicas.contains(r))
                            .collect();
                        assert_eq!(now.replicas, original);
                    }
                }
            }
        }
        // No reassignment lingers that its ISR already completes (Kafka's builder completes
        // one in whichever change makes it complete).
        for topic in c.image.topics.values() {
            for p in &topic.partitions {
                if p.is_reassigning() {
                    let target = p.target_replicas();
                    assert!(
                        !target.iter().all(|r| p.isr.contains(r)),
                        "{}: a complete reassignment still running: {p:?}",
                        topic.name
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_requests_keep_every_invariant_and_replay_to_an_equal_image(
            ops in prop::collection::vec(op(), 1..120)
        ) {
            let mut c = Controller::new();
            let mut incarnations = BTreeMap::new();
            for op in &ops {
                let before = c.image.clone();
                run(&mut c, op, &mut incarnations);
                c.image.check_successor_of(&before);
            }
            let mut replica = ClusterImage::empty();
            for (offset, records) in &c.batches {
                let wire = serde_json::to_vec(records).unwrap();
                let records: Vec<MetadataRecord> = serde_json::from_slice(&wire).unwrap();
                replica.apply(*offset, &records);
            }
            replica.check_invariants();
            prop_assert_eq!(&replica, &c.image);
        }
    }
}
