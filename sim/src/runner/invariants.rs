//! The broker invariants the harness checks online, on live brokers, while the run goes on
//! (offsets assigned once; the high watermark within the log, within what is durable under the
//! durable policy, and never moving back within one incarnation), and on the final logs
//! (batches dense from the log start).
//!
//! The metadata quorum's invariants, checked online on every node whose plane runs, each a
//! named violation ([`MetadataInvariant`]): at most one active controller per term; a
//! partition's leader epoch only rises in a node's image; a fenced broker never leads; a node's
//! metadata offset only rises; one image per metadata offset across all nodes and incarnations
//! (the image is a function of the committed log, so a lost or rewritten committed entry
//! shows as two images at one offset, or as an offset that the quorum no longer reaches). After
//! the heal, [`MetadataChecks::converged`] says whether every broker's image equals the active
//! controller's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use broker::controller::image::ClusterImage;
use broker::controller::NO_NODE;
use uuid::Uuid;

use broker::log::batch;
use broker::log::FlushPolicy;
use broker::partition::Partition;

use super::report::{Anomaly, HarnessAnomalyKind};
use crate::cluster::Cluster;
use crate::trace::{now_ms, Trace};

/// (value, simulated ms, how it was seen) of the first claim on an offset.
type Claim = (u64, u64, &'static str);

/// What the online checks have seen.
#[derive(Default)]
pub(crate) struct Invariants {
    /// topic → partition → offset → (value, simulated ms, how it was seen). Keyed by topic
    /// first so that a claim finds its entry without allocating the topic's name.
    offsets: BTreeMap<String, BTreeMap<i32, Claims>>,
    /// topic → (broker, incarnation, partition) → highest high watermark seen (durable
    /// policy). Keyed by topic first, as `offsets`: the check runs every few simulated ms.
    high_watermarks: ByTopic<(u32, u32, i32), u64>,
    pub(super) metadata: MetadataChecks,
    pub(super) replication: ReplicationChecks,
    /// Replicated topics may lose writes here, and a new leader then reuses their offsets
    /// (Kafka does): two values at one offset are for the history checker to judge, which
    /// knows which losses are allowed ([`super::verdict::offset_reuse_after_loss`]).
    pub(super) offset_reuse_allowed: bool,
    pub(super) violations: Vec<Anomaly>,
}

/// The metadata quorum's invariants, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MetadataInvariant {
    /// Two nodes led the quorum in the same term.
    OneControllerPerTerm,
    /// A partition's leader epoch went down in one node's image.
    LeaderEpochRises,
    /// A fenced broker leads a partition in some image.
    FencedBrokerNeverLeads,
    /// A partition's leader is outside its ISR, or its ISR outside its replicas, in some image.
    LeaderInIsr,
    /// A partition's partition epoch went down in one node's image.
    PartitionEpochRises,
    /// A node's metadata offset went down within one incarnation.
    MetadataOffsetRises,
    /// Two images at one metadata offset differ (a committed entry lost or rewritten).
    OneImagePerOffset,
    /// A metadata offset once applied is no longer reached after the heal (a committed entry
    /// lost).
    CommittedOffsetKept,
    /// After the heal, a broker's image does not equal the active controller's within the bound.
    ImagesConverge,
    /// An acknowledged CreateTopics is missing after the heal, or a topic is half made.
    TopicCreations,
    /// A broker the scenario expects to be fenced and to rejoin was never seen fenced, or is
    /// still fenced (or gone) after the heal.
    FencedAndRejoined,
    /// A broker the scenario expects to be shrunk out of an ISR (`out-of-isr`) was never seen
    /// out of one while registered and unfenced, or is not back in every ISR of its partitions
    /// after the heal.
    ShrunkAndRejoined,
    /// With `isr-complete-at-end`: after the heal, a replica on a live, unfenced broker is
    /// still outside its partition's ISR when every timeout that delays its rejoin has passed.
    ReplicaNeverRejoined,
}

impl MetadataInvariant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MetadataInvariant::OneControllerPerTerm => "one-controller-per-term",
            MetadataInvariant::LeaderEpochRises => "leader-epoch-rises",
            MetadataInvariant::FencedBrokerNeverLeads => "fenced-broker-never-leads",
            MetadataInvariant::LeaderInIsr => "leader-in-isr",
            MetadataInvariant::PartitionEpochRises => "partition-epoch-rises",
            MetadataInvariant::MetadataOffsetRises => "metadata-offset-rises",
            MetadataInvariant::OneImagePerOffset => "one-image-per-offset",
            MetadataInvariant::CommittedOffsetKept => "committed-offset-kept",
            MetadataInvariant::ImagesConverge => "images-converge",
            MetadataInvariant::TopicCreations => "topic-creations-whole",
            MetadataInvariant::FencedAndRejoined => "fenced-and-rejoined",
            MetadataInvariant::ShrunkAndRejoined => "shrunk-and-rejoined",
            MetadataInvariant::ReplicaNeverRejoined => "replica-never-rejoined",
        }
    }
}

/// What the metadata checks have seen.
#[derive(Default)]
pub(crate) struct MetadataChecks {
    /// term → (the node that led in it, simulated ms first seen).
    controllers: BTreeMap<u64, (u32, u64)>,
    /// (node, incarnation) → the last metadata offset seen.
    offsets: BTreeMap<(u32, u32), i64>,
    /// node → the leader and term it last reported (traced when it changes).
    views: BTreeMap<u32, (Option<i32>, u64)>,
    /// (node, incarnation, topic id, partition) → the last leader and partition epochs seen.
    leader_epochs: BTreeMap<(u32, u32, Uuid, i32), (i32, i32)>,
    /// metadata offset → (the first image seen at it, the node it was seen on, ms).
    images: BTreeMap<i64, (Arc<ClusterImage>, u32, u64)>,
    /// The highest metadata offset any node applied.
    pub(crate) highest_offset: i64,
    /// broker id → the first broker epoch any image showed for it.
    pub(crate) first_epochs: BTreeMap<i32, i64>,
    /// Brokers some image showed fenced after they had been seen unfenced (a fencing, not the
    /// fenced start of a registration).
    pub(crate) fenced_seen: std::collections::BTreeSet<i32>,
    /// Brokers some image showed unfenced.
    unfenced_seen: std::collections::BTreeSet<i32>,
    /// Brokers some image showed in their first registration, unfenced and not shutting down,
    /// yet outside the ISR of a led partition they replicate: shrunk by its leader for lagging,
    /// not fenced (nor restarted).
    pub(crate) shrunk_seen: std::collections::BTreeSet<i32>,
    /// One report per invariant and subject is enough: a broken invariant stays broken.
    reported: std::collections::BTreeSet<(MetadataInvariant, String)>,
    /// (node, incarnation, topic id, partition) → whether the node led it in its last image.
    led: BTreeMap<(u32, u32, Uuid, i32), bool>,
    /// When a node's image first showed that another replica (or none) leads a partition the
    /// node led: a deposed leader (cut off, say) takes acks=1 writes until then, and loses
    /// what its followers had not fetched, as in Kafka (a leader change's moment for the
    /// history checker's allowance, besides the one the controller's image shows).
    pub(crate) deposed_learned_ms: Vec<u64>,
}

impl MetadataChecks {
    /// Checks one node's plane as it is now; returns the violations found (named).
    pub(crate) fn observe(
        &mut self,
        view: &crate::cluster::PlaneView,
        now: u64,
    ) -> Vec<(MetadataInvariant, String)> {
        let mut found = Vec::new();
        let (id, incarnation) = (view.id, view.incarnation);
        let status = &view.status;
        if status.active_controller == Some(id as i32) {
            let (leader, at) = *self.controllers.entry(status.term).or_insert((id, now));
            if leader != id {
                found.push((
                    MetadataInvariant::OneControllerPerTerm,
                    format!(
                        "term {}: broker {leader} led it (seen at {at}ms) and broker {id} leads it too",
                        status.term
                    ),
                ));
            }
        }
        let image = &view.image;
        let offset = image.metadata_offset;
        let last = self.offsets.insert((id, incarnation), offset);
        if let Some(last) = last {
            if offset < last {
                found.push((
                    MetadataInvariant::MetadataOffsetRises,
                    format!("broker {id}: metadata offset went back from {last} to {offset}"),
                ));
            }
        }
        if last == Some(offset) {
            // Nothing applied since the last look: the image is the one checked then.
            return found;
        }
        self.highest_offset = self.highest_offset.max(offset);
        for b in image.brokers.values() {
            self.first_epochs.entry(b.id).or_insert(b.epoch);
            if !b.fenced {
                self.unfenced_seen.insert(b.id);
            } else if self.unfenced_seen.contains(&b.id) {
                self.fenced_seen.insert(b.id);
            }
        }
        match self.images.get(&offset) {
            Some((first, seen_on, at)) => {
                if **first != **image {
                    found.push((
                        MetadataInvariant::OneImagePerOffset,
                        format!(
                            "metadata offset {offset}: broker {id}'s image differs from broker {seen_on}'s (seen at {at}ms)"
                        ),
                    ));
                }
            }
            None => {
                self.images.insert(offset, (Arc::clone(image), id, now));
            }
        }
        for topic in image.topics.values() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let index = index as i32;
                let key = (id, incarnation, topic.id, index);
                let epoch = partition.leader_epoch;
                let partition_epoch = partition.partition_epoch;
                let last = self.leader_epochs.insert(key, (epoch, partition_epoch));
                let leads = partition.leader == id as i32;
                if self.led.insert(key, leads) == Some(true) && !leads {
                    self.deposed_learned_ms.push(now);
                }
                if let Some((_, before)) = last {
                    if partition_epoch < before {
                        found.push((
                            MetadataInvariant::PartitionEpochRises,
                            format!(
                                "broker {id}'s image at offset {offset}: {}-{index}'s partition epoch went back from {before} to {partition_epoch}",
                                topic.name
                            ),
                        ));
                    }
                }
                let outside = partition
                    .isr
                    .iter()
                    .find(|m| !partition.replicas.contains(m));
                let leader_outside =
                    partition.leader != NO_NODE && !partition.isr.contains(&partition.leader);
                if leader_outside || outside.is_some() {
                    found.push((
                        MetadataInvariant::LeaderInIsr,
                        format!(
                            "broker {id}'s image at offset {offset}: {}-{index} has leader {}, ISR {:?}, replicas {:?}",
                            topic.name, partition.leader, partition.isr, partition.replicas
                        ),
                    ));
                }
                if let Some((before, _)) = last {
                    if epoch < before {
                        found.push((
                            MetadataInvariant::LeaderEpochRises,
                            format!(
                                "broker {id}'s image at offset {offset}: {}-{index}'s leader epoch went back from {before} to {epoch}",
                                topic.name
                            ),
                        ));
                    }
                }
                if partition.leader != NO_NODE {
                    for &r in &partition.replicas {
                        // Its first registration: a restarted broker catching up is outside
                        // the ISR too, without any shrink.
                        let live = image.brokers.get(&r).is_some_and(|b| {
                            !b.fenced
                                && !b.shutting_down
                                && self.first_epochs.get(&r) == Some(&b.epoch)
                        });
                        if live && !partition.isr.contains(&r) {
                            self.shrunk_seen.insert(r);
                        }
                    }
                    let fenced = image
                        .brokers
                        .get(&partition.leader)
                        .is_none_or(|b| b.fenced);
                    if fenced {
                        found.push((
                            MetadataInvariant::FencedBrokerNeverLeads,
                            format!(
                                "broker {id}'s image at offset {offset}: {}-{index} is led by broker {}, which is fenced or unregistered",
                                topic.name, partition.leader
                            ),
                        ));
                    }
                }
            }
        }
        found
            .into_iter()
            .filter(|(kind, what)| {
                // One report per invariant and subject (the text up to its first colon).
                let subject = what.split(':').next().unwrap_or(what).to_string();
                self.reported.insert((*kind, subject))
            })
            .collect()
    }
}

/// Whether every broker is open and every view is at the active controller's image, in which
/// each broker is registered by its live incarnation (its incarnation id and broker epoch) and
/// unfenced; `Err` says who is not, and why. `brokers`: each broker's id and, when it is open,
/// its incarnation id and broker epoch.
pub(crate) fn converged(
    views: &[crate::cluster::PlaneView],
    brokers: &[(u32, Option<(Uuid, i64)>)],
    controller: Option<(u32, u64)>,
) -> Result<i64, String> {
    let Some((leader, term)) = controller else {
        return Err("no active controller".into());
    };
    let Some(reference) = views.iter().find(|v| v.id == leader) else {
        return Err(format!("the active controller {leader} has no plane"));
    };
    let image = &reference.image;
    for (id, open) in brokers {
        let Some(view) = views.iter().find(|v| v.id == *id) else {
            return Err(format!("broker {id} is not up"));
        };
        let Some((incarnation_id, epoch)) = open else {
            return Err(format!("broker {id} has not opened"));
        };
        if view.image.metadata_offset != image.metadata_offset {
            return Err(format!(
                "broker {id} is at metadata offset {}, the active controller {leader} (term {term}) at {}",
                view.image.metadata_offset, image.metadata_offset
            ));
        }
        if *view.image != **image {
            return Err(format!(
                "broker {id}'s image at offset {} differs from the active controller's",
                image.metadata_offset
            ));
        }
        match image.brokers.get(&(*id as i32)) {
            Some(b) if b.incarnation_id != *incarnation_id || b.epoch != *epoch => {
                return Err(format!(
                    "broker {id} is registered with epoch {} by another incarnation than the live one (epoch {epoch})",
                    b.epoch
                ))
            }
            Some(b) if !b.fenced => {}
            Some(_) => return Err(format!("broker {id} is fenced")),
            None => return Err(format!("broker {id} is not registered")),
        }
    }
    Ok(image.metadata_offset)
}

impl Invariants {
    pub(super) fn new(offset_reuse_allowed: bool) -> Invariants {
        Invariants {
            offset_reuse_allowed,
            ..Invariants::default()
        }
    }

    /// A consumer could not decode a batch it was served (its CRC or its records): the broker
    /// checks every stored batch before it serves it, so this is damage served as data.
    pub(crate) fn corrupt_batch_served(
        &mut self,
        (topic, partition): (&str, i32),
        what: String,
        now: u64,
        trace: &Trace,
    ) {
        trace.event(
            "invariants",
            format!("INVARIANT corrupt batch served: {topic}-{partition}: {what}"),
        );
        if self.violations.len() < 100 {
            self.violations.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed: false,
                description: format!(
                    "{topic}-{partition}: a consumer was served a corrupt batch: {what}"
                ),
                topic: Some(topic.to_string()),
                partition: Some(partition),
                offsets: vec![],
                values: vec![],
                at_ms: vec![now],
            });
        }
    }

    /// Records a breach of a replication invariant, named.
    pub(crate) fn replication_violation(
        &mut self,
        kind: ReplicationInvariant,
        what: String,
        now: u64,
        trace: &Trace,
    ) {
        trace.event("invariants", format!("INVARIANT {}: {what}", kind.name()));
        if self.violations.len() < 100 {
            self.violations.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed: false,
                description: format!("replication invariant {}: {what}", kind.name()),
                topic: None,
                partition: None,
                offsets: vec![],
                values: vec![],
                at_ms: vec![now],
            });
        }
    }

    /// Records a breach of a metadata invariant, named.
    pub(crate) fn metadata_violation(
        &mut self,
        kind: MetadataInvariant,
        what: String,
        now: u64,
        trace: &Trace,
    ) {
        self.metadata_anomaly(kind, what, false, now, trace);
    }

    /// A metadata invariant broken for a reason the scenario allows, named in `what`.
    pub(crate) fn metadata_allowed(
        &mut self,
        kind: MetadataInvariant,
        what: String,
        now: u64,
        trace: &Trace,
    ) {
        self.metadata_anomaly(kind, what, true, now, trace);
    }

    fn metadata_anomaly(
        &mut self,
        kind: MetadataInvariant,
        what: String,
        allowed: bool,
        now: u64,
        trace: &Trace,
    ) {
        trace.event("invariants", format!("INVARIANT {}: {what}", kind.name()));
        if self.violations.len() < 100 {
            self.violations.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed,
                description: format!("metadata invariant {}: {what}", kind.name()),
                topic: None,
                partition: None,
                offsets: vec![],
                values: vec![],
                at_ms: vec![now],
            });
        }
    }

    /// Offsets are assigned once: a (partition, offset) never holds two different values.
    pub(crate) fn claim(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        value: u64,
        how: &'static str,
    ) {
        let now = now_ms();
        let (seen, at, seen_how) = of_topic(&mut self.offsets, topic)
            .entry(partition)
            .or_default()
            .first_or_insert(offset, (value, now, how));
        if seen != value && self.violations.len() < 100 {
            let judged = if self.offset_reuse_allowed {
                " (allowed here only if the history checker allows the loss of all but one value)"
            } else {
                ""
            };
            self.violations.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed: self.offset_reuse_allowed,
                description: format!(
                    "offset {offset} of {topic}-{partition} held value {seen} ({seen_how} at {at}ms) and then value {value} ({how} at {now}ms){judged}"
                ),
                topic: Some(topic.to_string()),
                partition: Some(partition),
                offsets: vec![offset],
                values: vec![seen, value],
                at_ms: vec![at, now],
            });
        }
    }
}

/// The broker invariants the simulator can see directly, on every live broker: the high
/// watermark within the log, never beyond what is durable under the durable policy, and never
/// moving back within one incarnation under that policy.
pub(super) fn check_online(cluster: &Cluster, invariants: &Mutex<Invariants>, trace: &Trace) {
    let now = now_ms();
    let mut inv = invariants.lock().unwrap_or_else(|e| e.into_inner());
    // Once per check: each view asks the node's raft for its quorum status.
    let planes = cluster.planes();
    for view in &planes {
        let seen = (view.status.active_controller, view.status.term);
        if inv.metadata.views.insert(view.id, seen) != Some(seen) {
            let leader = seen.0.map_or("none".to_string(), |l| format!("broker-{l}"));
            trace.event(
                format!("broker-{}", view.id),
                format!("quorum term {}: controller {leader}", seen.1),
            );
        }
        let found = inv.metadata.observe(view, now);
        for (kind, what) in found {
            inv.metadata_violation(kind, what, now, trace);
        }
    }
    if let Some(view) = planes.iter().max_by_key(|v| v.image.metadata_offset) {
        inv.replication.trace_leadership(&view.image, trace);
    }
    for id in cluster.broker_ids() {
        let Some(broker) = cluster.broker(id) else {
            continue;
        };
        let incarnation = cluster.incarnations(id);
        for topic in broker.topics() {
            for partition in &topic.partitions {
                // As served, computed on a copy: a check must not move the HW itself.
                let state = partition.replica_state_as_served();
                let replica =
                    ReplicaView::of(id, incarnation, &topic.name, partition.index, &state);
                // A replicated partition's HW may fall with a leader change (a follower takes
                // the new leader's): only a sole replica's must never go back, per incarnation.
                // Replicas are held to `hw-never-falls-while-leading` instead. Sole by
                // assignment, not by role: a replica whose log went offline after an I/O error
                // has neither followers nor a leader until it is recovered, and kept the HW of
                // its last role, a lower one as a follower of a new leader than as the old
                // leader (60 s replication swarm seed 124: 520 as leader of epoch 7, 519 as a
                // follower in epoch 8, both seen while offline).
                let sole = !partition.log.is_replicated();
                // An ISR member's own replica, as its broker holds it now (see `observe_with`).
                let held = |member: i32| {
                    let p = cluster
                        .broker(u32::try_from(member).ok()?)?
                        .partition(&topic.name, partition.index)?;
                    Some(countable_end(&p))
                };
                let found = inv.replication.observe_with(&replica, now, &held);
                for (kind, what) in found {
                    inv.replication_violation(kind, what, now, trace);
                }
                let o = partition.log.offsets();
                let hw = state.high_watermark();
                let durable = partition.log.config().flush == FlushPolicy::Durable;
                let mut problems = Vec::new();
                if hw > o.log_end_offset {
                    problems.push(format!(
                        "high watermark {hw} beyond log end {}",
                        o.log_end_offset
                    ));
                }
                if hw < o.log_start_offset {
                    problems.push(format!(
                        "high watermark {hw} below log start {}",
                        o.log_start_offset
                    ));
                }
                if durable && hw > o.durable_end_offset {
                    problems.push(format!(
                        "high watermark {hw} beyond durable end {} under the durable policy",
                        o.durable_end_offset
                    ));
                }
                if durable && sole {
                    let key = (id, incarnation, partition.index);
                    let highest = of_topic(&mut inv.high_watermarks, &topic.name)
                        .entry(key)
                        .or_insert(hw);
                    if hw < *highest {
                        problems.push(format!("high watermark went back from {highest} to {hw}"));
                    }
                    *highest = (*highest).max(hw);
                }
                for p in problems {
                    trace.event(
                        format!("broker-{id}"),
                        format!("INVARIANT {}-{}: {p}", topic.name, partition.index),
                    );
                    if inv.violations.len() < 100 {
                        inv.violations.push(Anomaly {
                            kind: HarnessAnomalyKind::Invariant,
                            allowed: false,
                            description: format!(
                                "broker {id}, {}-{}: {p}",
                                topic.name, partition.index
                            ),
                            topic: Some(topic.name.clone()),
                            partition: Some(partition.index),
                            offsets: vec![hw as i64],
                            values: vec![],
                            at_ms: vec![now],
                        });
                    }
                }
            }
        }
    }
}

/// What a replica's own log holds as it counts for the high watermark: its synced end under the
/// durable policy (a follower syncs a fetch offset before the leader may count it), else its
/// log end.
fn countable_end(partition: &Partition) -> u64 {
    let o = partition.log.offsets();
    if partition.log.config().flush == FlushPolicy::Durable {
        o.durable_end_offset
    } else {
        o.log_end_offset
    }
}

/// One partition's claims by offset: a claim is made for every acknowledged send and every
/// record read, so offsets from 0 up (where a run's partitions live) sit in a vector indexed by
/// offset; any other offset in a map.
#[derive(Default)]
struct Claims {
    dense: Vec<Option<Claim>>,
    sparse: BTreeMap<i64, Claim>,
}

impl Claims {
    /// Offsets below this go in `dense` (a few MiB at most for one partition).
    const DENSE: i64 = 1 << 16;

    /// The first claim on `offset`, made now with `claim` if there was none.
    fn first_or_insert(&mut self, offset: i64, claim: Claim) -> Claim {
        match usize::try_from(offset) {
            Ok(at) if offset < Self::DENSE => {
                if at >= self.dense.len() {
                    self.dense.resize((at + 1).next_power_of_two(), None);
                }
                *self.dense[at].get_or_insert(claim)
            }
            _ => *self.sparse.entry(offset).or_insert(claim),
        }
    }
}

/// A map keyed by topic first, then by `K`.
type ByTopic<K, V> = BTreeMap<String, BTreeMap<K, V>>;

/// The entry of `topic` in a map keyed by topic first, made on first use: looked up by `&str`,
/// so the online checks allocate no topic name per replica and check.
fn of_topic<'m, V: Default>(map: &'m mut BTreeMap<String, V>, topic: &str) -> &'m mut V {
    if !map.contains_key(topic) {
        map.insert(topic.to_string(), V::default());
    }
    map.get_mut(topic).expect("inserted above")
}

/// One live broker's replica of a partition: its state as seen, and the partition to read.
type LiveReplica = (ReplicaView, Arc<Partition>);

/// The log-level replication invariants ([`compare_replicas`]) over every partition's live
/// replicas, once the cluster is quiet (after the liveness phase). A follower may still be a
/// fetch behind its leader, so a finding is looked at again a few times before it is reported.
/// Returns the findings as (topic, partition, invariant, what) for the caller to judge (a bit
/// flip at rest may excuse one).
pub(super) async fn check_replicas(
    cluster: &Cluster,
    trace: &Trace,
    compacted: &std::collections::BTreeSet<String>,
) -> Vec<(String, i32, ReplicationInvariant, String)> {
    let mut found = Vec::new();
    for attempt in 0..10 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        // The state first, then the log: the log only grows past what the state names.
        let mut partitions: BTreeMap<(String, i32), Vec<LiveReplica>> = BTreeMap::new();
        for id in cluster.broker_ids() {
            let Some(broker) = cluster.broker(id) else {
                continue;
            };
            let incarnation = cluster.incarnations(id);
            for topic in broker.topics() {
                for partition in &topic.partitions {
                    let view = ReplicaView::of(
                        id,
                        incarnation,
                        &topic.name,
                        partition.index,
                        &partition.replica_state(),
                    );
                    partitions
                        .entry((topic.name.clone(), partition.index))
                        .or_default()
                        .push((view, Arc::clone(partition)));
                }
            }
        }
        found.clear();
        // Only partitions with replicas to compare are read: reading takes simulated disk
        // time, and a single-broker run's trace stays what it was.
        for ((topic, index), replicas) in partitions.into_iter().filter(|(_, r)| r.len() > 1) {
            let mut logs = Vec::new();
            for (view, partition) in replicas {
                let batches = stored_batches(&partition.log).await;
                logs.push(ReplicaLog { view, batches });
            }
            // Each replica of a compacted topic cleans its own log: compare records instead.
            let compare = if compacted.contains(&topic) {
                super::compacted_replicas::compare
            } else {
                compare_replicas
            };
            found.extend(
                compare(&logs)
                    .into_iter()
                    .map(|(kind, what)| (topic.clone(), index, kind, what)),
            );
        }
        if found.is_empty() {
            break;
        }
    }
    for (_, _, kind, what) in &found {
        trace.event("invariants", format!("INVARIANT {}: {what}", kind.name()));
    }
    found
}

/// The log holds its offsets densely: from the log start each batch begins where the previous
/// one ended (a crash's skipped offsets are covered by an empty batch), up to the log end.
pub(super) async fn check_dense(
    log: &broker::log::Log,
    topic: &str,
    partition: i32,
) -> Option<Anomaly> {
    let offsets = log.offsets();
    let mut expected = offsets.log_start_offset;
    let problem = loop {
        if expected >= offsets.log_end_offset {
            break None;
        }
        let read = match log
            .read(expected, 1 << 20, Some(offsets.log_end_offset))
            .await
        {
            Ok(read) => read,
            // A corrupt batch (bit flip) ends the walk: it must not be served, which the reads
            // check; what lies beyond it is unknown.
            Err(_) => return None,
        };
        if read.records.is_empty() {
            break Some(format!(
                "nothing readable at offset {expected} below log end {}",
                offsets.log_end_offset
            ));
        }
        let mut pos = 0;
        let mut bad = None;
        while pos < read.records.len() {
            let Ok(header) = batch::validate(&read.records[pos..]) else {
                return None;
            };
            let base = header.base_offset as u64;
            if base > expected {
                bad = Some(format!("offsets {expected}..{base} are in no batch"));
                break;
            }
            expected = expected.max(header.last_offset() as u64 + 1);
            pos += header.size();
        }
        if bad.is_some() {
            break bad;
        }
    };
    problem.map(|p| Anomaly {
        kind: HarnessAnomalyKind::Invariant,
        allowed: false,
        description: format!("{topic}-{partition} is not dense: {p}"),
        topic: Some(topic.to_string()),
        partition: Some(partition),
        offsets: vec![expected as i64],
        values: vec![],
        at_ms: vec![now_ms()],
    })
}

/// The replication invariants, by name. Online ones are checked on every live broker's replica
/// state as the run goes ([`ReplicationChecks::observe`]); the log ones at the end, once the
/// cluster is quiet ([`compare_replicas`]). (The leader being in its ISR is a property of the
/// image: [`MetadataInvariant::LeaderInIsr`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ReplicationInvariant {
    /// A leader's high watermark rose above the log end (as it counts for the HW) of an ISR
    /// member it counts: acks=all and consumers would see data that member lacks.
    HighWatermarkWithinIsr,
    /// A leader's high watermark fell while it led in one epoch.
    HighWatermarkNeverFallsWhileLeading,
    /// A follower's high watermark is above its own log end.
    FollowerHighWatermarkWithinLog,
    /// Two brokers led one partition in the same leader epoch.
    OneLeaderPerEpoch,
    /// A batch below the leader's high watermark is missing on an ISR member, or differs there.
    IsrHoldsCommitted,
    /// Two replicas hold different batches at one offset with the same leader epoch: batches
    /// of one epoch come from one leader, so they must be the same bytes everywhere.
    OneLogPerEpoch,
    /// A replicated partition's leader whose log went offline (an I/O error) led again in the
    /// same leader epoch: it recovered in place instead of stepping down, so its recovered log
    /// (which may lack a tail its followers hold) is served and extended in an epoch whose
    /// batches its followers already have.
    StepsDownAfterLogFailure,
}

impl ReplicationInvariant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ReplicationInvariant::HighWatermarkWithinIsr => "hw-within-isr",
            ReplicationInvariant::HighWatermarkNeverFallsWhileLeading => {
                "hw-never-falls-while-leading"
            }
            ReplicationInvariant::FollowerHighWatermarkWithinLog => "follower-hw-within-log-end",
            ReplicationInvariant::OneLeaderPerEpoch => "one-leader-per-epoch",
            ReplicationInvariant::IsrHoldsCommitted => "isr-holds-committed",
            ReplicationInvariant::OneLogPerEpoch => "one-log-per-epoch",
            ReplicationInvariant::StepsDownAfterLogFailure => "steps-down-after-log-failure",
        }
    }
}

/// One broker's replica of one partition as the checks see it: a plain copy of its
/// [`ReplicaState`](broker::replica::state::ReplicaState), so tests can build broken ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplicaView {
    pub broker: u32,
    pub incarnation: u32,
    pub topic: String,
    pub partition: i32,
    pub leader: bool,
    pub follower: bool,
    /// Its log failed and is not served (neither leading nor following).
    pub offline: bool,
    /// It has other replicas, as a leader (or a leader gone offline) knows them.
    pub replicated: bool,
    pub epoch: i32,
    pub high_watermark: u64,
    pub log_end_offset: u64,
    /// Leading: each ISR member (itself included) and its log end as the leader counts it for
    /// the HW (its own durable end under the durable policy; a follower's from its last fetch).
    pub isr: BTreeMap<i32, u64>,
}

impl ReplicaView {
    pub(crate) fn of(
        broker: u32,
        incarnation: u32,
        topic: &str,
        partition: i32,
        state: &broker::replica::state::ReplicaState,
    ) -> ReplicaView {
        use broker::replica::state::{HighWatermarkBasis, Role};
        let local = state.local_log();
        let own = match state.basis() {
            HighWatermarkBasis::LogEnd => local.log_end_offset,
            HighWatermarkBasis::DurableEnd => local.durable_end_offset,
        };
        let leader = state.is_leader();
        let isr = if leader {
            state
                .isr()
                .iter()
                .map(|&m| {
                    let counted = if m == state.local_id() {
                        own
                    } else {
                        state.followers().get(&m).map_or(0, |f| f.log_end_offset)
                    };
                    (m, counted)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        ReplicaView {
            broker,
            incarnation,
            topic: topic.to_string(),
            partition,
            leader,
            follower: matches!(state.role(), Role::Follower { .. }),
            offline: state.role() == Role::Offline,
            replicated: !state.followers().is_empty(),
            epoch: state.leader_epoch(),
            high_watermark: state.high_watermark(),
            log_end_offset: local.log_end_offset,
            isr,
        }
    }
}

/// A partition's leader, leader epoch, ISR and ELR (KIP-966), as the trace shows them.
type Leadership = (i32, i32, Vec<i32>, Vec<i32>);

/// What the online replication checks have seen.
#[derive(Default)]
pub(crate) struct ReplicationChecks {
    // Keyed by topic first (see `of_topic`): these are looked up for every replica every few
    // simulated milliseconds.
    /// topic → (partition, leader epoch) → the broker first seen leading in it, and when.
    leaders: ByTopic<(i32, i32), (u32, u64)>,
    /// topic → (broker, incarnation, partition, epoch) → the HW last seen while it led.
    leader_hws: ByTopic<(u32, u32, i32, i32), u64>,
    /// topic → partition → its leadership (leader, leader epoch, ISR, ELR) last traced, from
    /// the most advanced image.
    traced: ByTopic<usize, Leadership>,
    /// The image `traced` was last brought up to date from.
    traced_image: Option<Arc<ClusterImage>>,
    /// Simulated ms of every leader change (a replicated partition's leader epoch rising):
    /// what an acks=1 loss or an unclean election's loss is allowed by.
    pub(crate) leader_changes_ms: Vec<u64>,
    /// topic → (broker, incarnation, partition, epoch) of replicated leaderships: whether the
    /// leader was seen offline in that epoch since.
    led: ByTopic<(u32, u32, i32, i32), bool>,
    /// One report per invariant and subject: a broken invariant stays broken.
    reported: std::collections::BTreeSet<(ReplicationInvariant, String)>,
}

impl ReplicationChecks {
    /// Checks one replica as it is now; returns the violations found (named). Knows nothing of
    /// the other replicas' own logs: [`ReplicationChecks::observe_with`] with none.
    #[cfg(test)]
    pub(crate) fn observe(
        &mut self,
        r: &ReplicaView,
        now: u64,
    ) -> Vec<(ReplicationInvariant, String)> {
        self.observe_with(r, now, &|_| None)
    }

    /// Checks one replica as it is now; returns the violations found (named). `held` tells what
    /// an ISR member's own replica holds now, as it counts for the HW (`None`: unknown, its
    /// broker is down): asked only when the leader's HW rose past the member's progress as the
    /// leader counts it, which can have moved back since the HW was computed (see below).
    pub(crate) fn observe_with(
        &mut self,
        r: &ReplicaView,
        now: u64,
        held: &dyn Fn(i32) -> Option<u64>,
    ) -> Vec<(ReplicationInvariant, String)> {
        let mut found = Vec::new();
        // Formatted only for a finding: this runs for every replica every few milliseconds.
        let at = || format!("{}-{} on broker {}", r.topic, r.partition, r.broker);
        if r.follower && r.high_watermark > r.log_end_offset {
            found.push((
                ReplicationInvariant::FollowerHighWatermarkWithinLog,
                format!(
                    "{}: follower HW {} beyond its log end {}",
                    at(),
                    r.high_watermark,
                    r.log_end_offset
                ),
            ));
        }
        if r.replicated && (r.leader || r.offline) {
            let key = (r.broker, r.incarnation, r.partition, r.epoch);
            let led = of_topic(&mut self.led, &r.topic);
            match led.get_mut(&key) {
                Some(went_offline) if r.offline => *went_offline = true,
                Some(true) => found.push((
                    ReplicationInvariant::StepsDownAfterLogFailure,
                    format!(
                        "{}: leads epoch {} again after its log went offline in it",
                        at(),
                        r.epoch
                    ),
                )),
                Some(false) => {}
                None if r.leader => {
                    led.insert(key, false);
                }
                None => {}
            }
        }
        if r.leader {
            let key = (r.partition, r.epoch);
            let (first, since) = *of_topic(&mut self.leaders, &r.topic)
                .entry(key)
                .or_insert((r.broker, now));
            if first != r.broker {
                found.push((
                    ReplicationInvariant::OneLeaderPerEpoch,
                    format!(
                        "{}-{} epoch {}: broker {first} led it (seen at {since}ms) and broker {} leads it too",
                        r.topic, r.partition, r.epoch, r.broker
                    ),
                ));
            }
            let key = (r.broker, r.incarnation, r.partition, r.epoch);
            let last = of_topic(&mut self.leader_hws, &r.topic).insert(key, r.high_watermark);
            match last {
                Some(last) if r.high_watermark < last => found.push((
                    ReplicationInvariant::HighWatermarkNeverFallsWhileLeading,
                    format!(
                        "{}: HW fell from {last} to {} in leader epoch {}",
                        at(),
                        r.high_watermark,
                        r.epoch
                    ),
                )),
                // The HW moved in this leadership: the leader computed it, so it must lie
                // within every member it counts. (A new leader's first HW is the one it had
                // as a follower, a lower bound it keeps until its followers report.)
                //
                // The member's progress is sampled after the HW was computed, and may have
                // moved back since: a fetch the member sent long ago, held up in a partition on
                // a connection it has since given up, reaches the leader late and is recorded
                // (Kafka's `updateFollowerFetchState` takes the fetch offset as it comes; same
                // incarnation, so KIP-903's broker epoch does not refuse it). That undercounts
                // the member, which is safe; only a member whose own replica lacks the HW was
                // counted for more than it holds (60 s replication swarm seed 267: t-1's
                // leader saw broker 3 at 503, then a fetch from 207 sent 16 s before).
                Some(last) if r.high_watermark > last => {
                    for (&member, &end) in &r.isr {
                        if r.high_watermark <= end {
                            continue;
                        }
                        let own = if member == r.broker as i32 {
                            None
                        } else {
                            held(member)
                        };
                        if own.is_some_and(|own| own >= r.high_watermark) {
                            continue;
                        }
                        let own = own.map_or(String::new(), |own| {
                            format!(" (its own replica ends at {own})")
                        });
                        found.push((
                            ReplicationInvariant::HighWatermarkWithinIsr,
                            format!(
                                "{}: HW rose to {} in epoch {} beyond ISR member {member}'s log end {end}{own}",
                                at(),
                                r.high_watermark,
                                r.epoch
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        if found.is_empty() {
            return found;
        }
        self.dedup(found)
    }

    /// Traces each replicated partition's leader, epoch and ISR when they change in `image`
    /// (the most advanced one): the story a replication scenario's trace tells.
    fn trace_leadership(&mut self, image: &Arc<ClusterImage>, trace: &Trace) {
        // The same image as last time traces nothing: every partition's leadership is as traced.
        if self
            .traced_image
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, image))
        {
            return;
        }
        self.traced_image = Some(Arc::clone(image));
        for topic in image.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if p.replicas.len() < 2 {
                    continue;
                }
                let traced = of_topic(&mut self.traced, &topic.name);
                let before = traced.get(&index);
                if before.is_some_and(|b| b.1 != p.leader_epoch) {
                    self.leader_changes_ms.push(now_ms());
                }
                // Compared in place: the ISR and ELR are copied only when they are traced.
                let unchanged = before.is_some_and(|b| {
                    (b.0, b.1, &b.2[..], &b.3[..])
                        == (p.leader, p.leader_epoch, &p.isr[..], &p.elr[..])
                });
                if !unchanged {
                    // The ELR (KIP-966) only where there is one: runs without it trace as
                    // before.
                    let elr = if p.elr.is_empty() {
                        String::new()
                    } else {
                        format!(" elr {:?}", p.elr)
                    };
                    trace.event(
                        "metadata",
                        format!(
                            "{}-{index}: leader {} epoch {} isr {:?}{elr}",
                            topic.name, p.leader, p.leader_epoch, p.isr
                        ),
                    );
                    traced.insert(
                        index,
                        (p.leader, p.leader_epoch, p.isr.clone(), p.elr.clone()),
                    );
                }
            }
        }
    }

    fn dedup(
        &mut self,
        found: Vec<(ReplicationInvariant, String)>,
    ) -> Vec<(ReplicationInvariant, String)> {
        found
            .into_iter()
            .filter(|(kind, what)| {
                let subject = what.split(':').next().unwrap_or(what).to_string();
                self.reported.insert((*kind, subject))
            })
            .collect()
    }
}

/// One batch of a replica's log: (base offset, last offset, leader epoch, its bytes).
pub(crate) type StoredBatch = (i64, i64, i32, Vec<u8>);

/// One replica's log at the end of a run, with its role.
pub(crate) struct ReplicaLog {
    pub view: ReplicaView,
    pub batches: Vec<StoredBatch>,
}

/// The log-level replication invariants over every replica of one partition: the leader (the
/// one leading in the highest epoch) holds nothing below its HW that an ISR member lacks or
/// holds differently; and no two replicas hold different batches at one offset in one leader
/// epoch.
pub(crate) fn compare_replicas(replicas: &[ReplicaLog]) -> Vec<(ReplicationInvariant, String)> {
    let mut found = Vec::new();
    // Per replica: base offset → (leader epoch, last offset, bytes).
    type Index<'a> = BTreeMap<i64, (i32, i64, &'a [u8])>;
    let indexes: Vec<Index<'_>> = replicas
        .iter()
        .map(|r| {
            r.batches
                .iter()
                .map(|(base, last, epoch, bytes)| (*base, (*epoch, *last, bytes.as_slice())))
                .collect()
        })
        .collect();
    for (i, a) in replicas.iter().enumerate() {
        for (j, b) in replicas.iter().enumerate().skip(i + 1) {
            for (base, (epoch, _, bytes)) in &indexes[i] {
                if let Some((other_epoch, _, other)) = indexes[j].get(base) {
                    if other_epoch == epoch && other != bytes {
                        found.push((
                            ReplicationInvariant::OneLogPerEpoch,
                            format!(
                                "{}-{}: brokers {} and {} hold different batches at offset {base} in leader epoch {epoch}",
                                a.view.topic, a.view.partition, a.view.broker, b.view.broker
                            ),
                        ));
                        break;
                    }
                }
            }
        }
    }
    let leader = replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| r.view.leader)
        .max_by_key(|(_, r)| r.view.epoch);
    if let Some((l, leader)) = leader {
        let hw = leader.view.high_watermark as i64;
        for &member in leader.view.isr.keys() {
            let Some(m) = replicas.iter().position(|r| r.view.broker as i32 == member) else {
                continue; // not up: nothing to compare
            };
            if m == l {
                continue;
            }
            for (base, last, epoch, bytes) in &leader.batches {
                if *last >= hw {
                    break;
                }
                let same = indexes[m]
                    .get(base)
                    .is_some_and(|(e, _, b)| e == epoch && b == &bytes.as_slice());
                if !same {
                    found.push((
                        ReplicationInvariant::IsrHoldsCommitted,
                        format!(
                            "{}-{}: the batch at offset {base} (epoch {epoch}) below leader {}'s HW {hw} is {} on ISR member {member}",
                            leader.view.topic,
                            leader.view.partition,
                            leader.view.broker,
                            if indexes[m].contains_key(base) { "different" } else { "missing" }
                        ),
                    ));
                    break;
                }
            }
        }
    }
    found
}

/// Every batch of `log` from its start to its end, in order; a corrupt batch ends the walk.
pub(crate) async fn stored_batches(log: &broker::log::Log) -> Vec<StoredBatch> {
    let offsets = log.offsets();
    let mut out = Vec::new();
    let mut next = offsets.log_start_offset;
    while next < offsets.log_end_offset {
        let Ok(read) = log.read(next, 1 << 20, Some(offsets.log_end_offset)).await else {
            break;
        };
        if read.records.is_empty() {
            break;
        }
        let mut pos = 0;
        while pos < read.records.len() {
            let Ok(h) = batch::validate(&read.records[pos..]) else {
                if pos == 0 {
                    return out;
                }
                break; // a batch cut by the read's size: read again from it
            };
            let bytes = read.records[pos..pos + h.size()].to_vec();
            if h.last_offset() as u64 >= next {
                out.push((
                    h.base_offset,
                    h.last_offset(),
                    h.partition_leader_epoch,
                    bytes,
                ));
            }
            next = next.max(h.last_offset() as u64 + 1);
            pos += h.size();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Each metadata invariant catches the state its bug would leave: the checks are fed views
    //! built from real images (ClusterImage::apply), then broken the way a bug would break them.

    use super::Claims;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use broker::controller::image::{ClusterImage, Endpoint, MetadataRecord, PartitionImage};
    use broker::controller::plane::QuorumStatus;
    use uuid::Uuid;

    use super::{
        compare_replicas, converged, MetadataChecks, MetadataInvariant, ReplicaLog, ReplicaView,
        ReplicationChecks, ReplicationInvariant,
    };
    use crate::cluster::PlaneView;

    const TOPIC: Uuid = Uuid::from_u128(7);

    /// Brokers 1..=3 registered and unfenced, topic `t` with one partition led by broker 1.
    fn image() -> ClusterImage {
        let mut image = ClusterImage::empty();
        image.apply(
            0,
            &[MetadataRecord::SetClusterId {
                cluster_id: "c".into(),
            }],
        );
        for id in 1..=3 {
            let offset = i64::from(id) * 2 - 1;
            image.apply(
                offset,
                &[MetadataRecord::RegisterBroker {
                    id,
                    incarnation_id: Uuid::from_u128(id as u128),
                    epoch: offset,
                    endpoint: Endpoint {
                        host: format!("10.0.0.{id}"),
                        port: 9092,
                    },
                    controller_endpoint: None,
                    rack: None,
                }],
            );
            image.apply(
                offset + 1,
                &[MetadataRecord::UnfenceBroker { id, epoch: offset }],
            );
        }
        image.apply(
            7,
            &[MetadataRecord::CreateTopic {
                name: "t".into(),
                id: TOPIC,
                configs: BTreeMap::new(),
                partitions: vec![PartitionImage {
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                    elr: Vec::new(),
                    last_known_elr: Vec::new(),
                }],
            }],
        );
        image
    }

    fn view(
        id: u32,
        incarnation: u32,
        leader: Option<i32>,
        term: u64,
        image: &ClusterImage,
    ) -> PlaneView {
        PlaneView {
            id,
            incarnation,
            status: QuorumStatus {
                active_controller: leader,
                term,
                voters: vec![1, 2, 3],
                committed_offset: image.metadata_offset,
                applied_offset: image.metadata_offset,
            },
            image: Arc::new(image.clone()),
        }
    }

    fn kinds(found: Vec<(MetadataInvariant, String)>) -> Vec<MetadataInvariant> {
        found.into_iter().map(|(k, _)| k).collect()
    }

    /// The first claim on an offset stands, wherever the offset sits (the vector from 0, the
    /// map for a negative or very high offset): a second value there is what `claim` reports.
    #[test]
    fn the_first_claim_on_an_offset_stands_in_the_vector_and_in_the_map() {
        let mut claims = Claims::default();
        for offset in [0, 5, 1, Claims::DENSE - 1, Claims::DENSE, i64::MAX, -1] {
            let first = (offset as u64 ^ 7, 10, "acknowledged");
            assert_eq!(claims.first_or_insert(offset, first), first);
            assert_eq!(
                claims.first_or_insert(offset, (99, 20, "read")),
                first,
                "offset {offset}"
            );
        }
        assert_eq!(claims.first_or_insert(2, (3, 30, "read")), (3, 30, "read"));
    }

    #[test]
    fn a_healthy_quorum_breaks_no_metadata_invariant() {
        let mut checks = MetadataChecks::default();
        let image = image();
        for id in 1..=3 {
            assert_eq!(
                kinds(checks.observe(&view(id, 0, Some(1), 1, &image), 0)),
                vec![]
            );
        }
    }

    #[test]
    fn two_nodes_leading_in_one_term_is_caught() {
        let mut checks = MetadataChecks::default();
        let image = image();
        assert_eq!(
            kinds(checks.observe(&view(1, 0, Some(1), 3, &image), 0)),
            vec![]
        );
        assert_eq!(
            kinds(checks.observe(&view(2, 0, Some(2), 3, &image), 5)),
            vec![MetadataInvariant::OneControllerPerTerm]
        );
        // A new term may have a new leader.
        assert_eq!(
            kinds(checks.observe(&view(2, 0, Some(2), 4, &image), 6)),
            vec![]
        );
    }

    #[test]
    fn a_leader_epoch_going_back_in_a_nodes_image_is_caught() {
        let mut checks = MetadataChecks::default();
        let mut image = image();
        let topic = Arc::make_mut(image.topics.get_mut("t").unwrap());
        topic.partitions[0].leader_epoch = 5;
        checks.observe(&view(1, 0, Some(1), 1, &image), 0);
        let topic = Arc::make_mut(image.topics.get_mut("t").unwrap());
        topic.partitions[0].leader_epoch = 4;
        image.metadata_offset += 1;
        assert!(kinds(checks.observe(&view(1, 0, Some(1), 1, &image), 1))
            .contains(&MetadataInvariant::LeaderEpochRises));
    }

    #[test]
    fn a_fenced_broker_leading_a_partition_is_caught() {
        let mut checks = MetadataChecks::default();
        let mut image = image();
        image.brokers.get_mut(&1).unwrap().fenced = true;
        assert_eq!(
            kinds(checks.observe(&view(2, 0, Some(1), 1, &image), 0)),
            vec![MetadataInvariant::FencedBrokerNeverLeads]
        );
    }

    #[test]
    fn a_leader_outside_its_isr_or_a_partition_epoch_going_back_is_caught() {
        let mut checks = MetadataChecks::default();
        let mut image = image();
        let topic = Arc::make_mut(image.topics.get_mut("t").unwrap());
        topic.partitions[0].replicas = vec![1, 2];
        topic.partitions[0].partition_epoch = 3;
        assert_eq!(
            kinds(checks.observe(&view(1, 0, Some(1), 1, &image), 0)),
            vec![]
        );
        let topic = Arc::make_mut(image.topics.get_mut("t").unwrap());
        topic.partitions[0].isr = vec![2];
        topic.partitions[0].partition_epoch = 2;
        image.metadata_offset += 1;
        assert_eq!(
            kinds(checks.observe(&view(1, 0, Some(1), 1, &image), 1)),
            vec![
                MetadataInvariant::PartitionEpochRises,
                MetadataInvariant::LeaderInIsr
            ]
        );
    }

    #[test]
    fn a_metadata_offset_going_back_is_caught_but_a_fresh_replica_starts_over() {
        let mut checks = MetadataChecks::default();
        let image = image();
        let empty = ClusterImage::empty();
        checks.observe(&view(2, 0, Some(1), 1, &image), 0);
        assert!(kinds(checks.observe(&view(2, 0, Some(1), 1, &empty), 1))
            .contains(&MetadataInvariant::MetadataOffsetRises));
        // A restarted node's new replica rebuilds its image from its log: not a regression.
        assert_eq!(
            kinds(checks.observe(&view(3, 0, Some(1), 1, &image), 2)),
            vec![]
        );
        assert_eq!(
            kinds(checks.observe(&view(3, 1, Some(1), 1, &empty), 3)),
            vec![]
        );
    }

    #[test]
    fn a_node_whose_apply_skipped_a_record_is_caught_by_the_image_at_that_offset() {
        let mut checks = MetadataChecks::default();
        let image = image();
        // Node 3 applied the batch at offset 7 without its CreateTopic record.
        let mut skipped = image.clone();
        skipped.topics.clear();
        skipped.topic_names.clear();
        checks.observe(&view(1, 0, Some(1), 1, &image), 0);
        assert_eq!(
            kinds(checks.observe(&view(3, 0, Some(1), 1, &skipped), 1)),
            vec![MetadataInvariant::OneImagePerOffset]
        );
    }

    #[test]
    fn convergence_waits_for_a_lagging_node_and_for_each_brokers_live_registration() {
        let image = image();
        let mut behind = image.clone();
        behind.metadata_offset = 6;
        let live = |id: u32| {
            (
                id,
                Some((Uuid::from_u128(id as u128), i64::from(id) * 2 - 1)),
            )
        };
        let views = |third: &ClusterImage| {
            vec![
                view(1, 0, Some(1), 1, &image),
                view(2, 0, Some(1), 1, &image),
                view(3, 0, Some(1), 1, third),
            ]
        };
        let brokers = [live(1), live(2), live(3)];
        assert_eq!(converged(&views(&image), &brokers, Some((1, 1))), Ok(7));
        assert!(converged(&views(&behind), &brokers, Some((1, 1))).is_err());
        assert!(converged(&views(&image), &brokers, None).is_err());
        // Broker 3 restarted: its new incarnation is not the one the image holds yet.
        let restarted = [live(1), live(2), (3, Some((Uuid::from_u128(99), 9)))];
        assert!(converged(&views(&image), &restarted, Some((1, 1))).is_err());
        let down = [live(1), live(2), (3, None)];
        assert!(converged(&views(&image), &down, Some((1, 1))).is_err());
    }

    fn replica(broker: u32, leader: bool, epoch: i32, hw: u64, leo: u64) -> ReplicaView {
        ReplicaView {
            broker,
            incarnation: 0,
            topic: "t".into(),
            partition: 0,
            leader,
            follower: !leader,
            offline: false,
            replicated: leader,
            epoch,
            high_watermark: hw,
            log_end_offset: leo,
            isr: if leader {
                [(broker as i32, leo)].into_iter().collect()
            } else {
                BTreeMap::new()
            },
        }
    }

    fn replication_kinds(found: Vec<(ReplicationInvariant, String)>) -> Vec<ReplicationInvariant> {
        found.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn a_leader_and_followers_in_step_break_no_replication_invariant() {
        let mut checks = ReplicationChecks::default();
        let mut leader = replica(1, true, 3, 10, 12);
        leader.isr.insert(2, 12);
        leader.isr.insert(3, 11);
        assert_eq!(replication_kinds(checks.observe(&leader, 0)), vec![]);
        leader.high_watermark = 11;
        assert_eq!(replication_kinds(checks.observe(&leader, 1)), vec![]);
        assert_eq!(
            replication_kinds(checks.observe(&replica(2, false, 3, 11, 12), 1)),
            vec![]
        );
        // A new leader in a new epoch may start lower (its HW as a follower).
        assert_eq!(
            replication_kinds(checks.observe(&replica(2, true, 4, 9, 12), 2)),
            vec![]
        );
    }

    #[test]
    fn a_leader_whose_hw_rises_past_an_isr_members_log_end_is_caught() {
        let mut checks = ReplicationChecks::default();
        let mut leader = replica(1, true, 3, 10, 20);
        leader.isr.insert(2, 12);
        checks.observe(&leader, 0);
        // The HW computed from the leader's own log end only.
        leader.high_watermark = 20;
        assert_eq!(
            replication_kinds(checks.observe(&leader, 1)),
            vec![ReplicationInvariant::HighWatermarkWithinIsr]
        );
    }

    #[test]
    fn a_members_progress_moved_back_by_a_delayed_fetch_after_the_hw_rose_is_caught_only_if_its_replica_lacks_the_hw(
    ) {
        // Seed 267 of the 60 s replication swarm: the leader counted member 2 at 20 and moved
        // the HW to 20, then a fetch 2 had sent from 12 long before arrived and moved its
        // progress back, all between two samples.
        let mut checks = ReplicationChecks::default();
        let mut leader = replica(1, true, 3, 10, 30);
        leader.isr.insert(2, 10);
        checks.observe_with(&leader, 0, &|_| Some(10));
        leader.high_watermark = 20;
        leader.isr.insert(2, 12);
        // Member 2's own replica holds the HW: undercounted, nothing at risk.
        assert_eq!(
            replication_kinds(checks.observe_with(&leader, 1, &|m| (m == 2).then_some(20))),
            vec![]
        );
        // It does not: the leader counted it for more than it holds.
        leader.high_watermark = 21;
        let found = checks.observe_with(&leader, 2, &|m| (m == 2).then_some(19));
        assert_eq!(
            replication_kinds(found.clone()),
            vec![ReplicationInvariant::HighWatermarkWithinIsr]
        );
        assert!(
            found[0].1.contains("its own replica ends at 19"),
            "{found:?}"
        );
        // Its broker is down (unknown): judged by the leader's count alone, as before.
        let mut other = ReplicationChecks::default();
        leader.high_watermark = 10;
        other.observe_with(&leader, 0, &|_| None);
        leader.high_watermark = 20;
        assert_eq!(
            replication_kinds(other.observe_with(&leader, 1, &|_| None)),
            vec![ReplicationInvariant::HighWatermarkWithinIsr]
        );
    }

    #[test]
    fn a_leaders_hw_falling_within_one_epoch_is_caught_but_not_across_epochs() {
        let mut checks = ReplicationChecks::default();
        checks.observe(&replica(1, true, 3, 10, 20), 0);
        assert_eq!(
            replication_kinds(checks.observe(&replica(1, true, 3, 8, 20), 1)),
            vec![ReplicationInvariant::HighWatermarkNeverFallsWhileLeading]
        );
        let mut other = ReplicationChecks::default();
        other.observe(&replica(1, true, 3, 10, 20), 0);
        assert_eq!(
            replication_kinds(other.observe(&replica(1, true, 5, 8, 20), 1)),
            vec![]
        );
    }

    #[test]
    fn a_replicated_leader_leading_again_in_its_epoch_after_its_log_went_offline_is_caught() {
        let mut checks = ReplicationChecks::default();
        let mut leader = replica(1, true, 3, 10, 20);
        leader.isr.insert(2, 20);
        checks.observe(&leader, 0);
        let mut offline = leader.clone();
        (offline.leader, offline.follower, offline.offline) = (false, false, true);
        offline.isr.clear();
        assert_eq!(replication_kinds(checks.observe(&offline, 1)), vec![]);
        assert_eq!(
            replication_kinds(checks.observe(&leader, 2)),
            vec![ReplicationInvariant::StepsDownAfterLogFailure]
        );
        // Stepping down and leading again in a newer epoch is what must happen.
        let mut other = ReplicationChecks::default();
        other.observe(&leader, 0);
        other.observe(&offline, 1);
        assert_eq!(
            replication_kinds(other.observe(&replica(1, true, 5, 10, 20), 2)),
            vec![]
        );
    }

    #[test]
    fn a_follower_hw_beyond_its_log_end_is_caught() {
        let mut checks = ReplicationChecks::default();
        assert_eq!(
            replication_kinds(checks.observe(&replica(2, false, 3, 13, 12), 0)),
            vec![ReplicationInvariant::FollowerHighWatermarkWithinLog]
        );
    }

    #[test]
    fn two_brokers_leading_in_one_epoch_is_caught() {
        let mut checks = ReplicationChecks::default();
        checks.observe(&replica(1, true, 3, 10, 20), 0);
        assert_eq!(
            replication_kinds(checks.observe(&replica(2, true, 3, 10, 20), 1)),
            vec![ReplicationInvariant::OneLeaderPerEpoch]
        );
        // The zombie of epoch 3 may still think it leads while broker 2 leads epoch 4.
        assert_eq!(
            replication_kinds(checks.observe(&replica(2, true, 4, 10, 20), 2)),
            vec![]
        );
    }

    fn log(view: ReplicaView, batches: &[(i64, i64, i32, u8)]) -> ReplicaLog {
        ReplicaLog {
            view,
            batches: batches
                .iter()
                .map(|&(base, last, epoch, byte)| (base, last, epoch, vec![byte; 4]))
                .collect(),
        }
    }

    #[test]
    fn replicas_holding_the_leaders_log_below_its_hw_pass_even_with_a_divergent_tail_above() {
        let mut leader = replica(1, true, 2, 10, 15);
        leader.isr.insert(2, 15);
        let logs = [
            log(leader, &[(0, 4, 0, 1), (5, 9, 1, 2), (10, 14, 2, 3)]),
            log(
                replica(2, false, 2, 10, 15),
                &[(0, 4, 0, 1), (5, 9, 1, 2), (10, 14, 2, 3)],
            ),
            // Out of the ISR: behind, with an old epoch's tail not yet truncated.
            log(replica(3, false, 1, 5, 12), &[(0, 4, 0, 1), (5, 11, 0, 9)]),
        ];
        assert_eq!(replication_kinds(compare_replicas(&logs)), vec![]);
    }

    #[test]
    fn an_isr_member_missing_or_differing_below_the_hw_is_caught() {
        let mut leader = replica(1, true, 2, 10, 15);
        leader.isr.insert(2, 15);
        let missing = [
            log(leader.clone(), &[(0, 4, 0, 1), (5, 9, 1, 2)]),
            log(replica(2, false, 2, 5, 5), &[(0, 4, 0, 1)]),
        ];
        assert_eq!(
            replication_kinds(compare_replicas(&missing)),
            vec![ReplicationInvariant::IsrHoldsCommitted]
        );
        // Truncated to its own HW and refilled from another epoch: a different batch.
        let differing = [
            log(leader, &[(0, 4, 0, 1), (5, 9, 1, 2)]),
            log(replica(2, false, 2, 10, 10), &[(0, 4, 0, 1), (5, 9, 2, 7)]),
        ];
        assert_eq!(
            replication_kinds(compare_replicas(&differing)),
            vec![ReplicationInvariant::IsrHoldsCommitted]
        );
    }

    #[test]
    fn two_replicas_with_different_batches_at_one_offset_in_one_epoch_are_caught() {
        let logs = [
            log(replica(1, false, 2, 0, 10), &[(0, 4, 0, 1), (5, 9, 1, 2)]),
            log(replica(2, false, 2, 0, 10), &[(0, 4, 0, 1), (5, 9, 1, 3)]),
        ];
        assert_eq!(
            replication_kinds(compare_replicas(&logs)),
            vec![ReplicationInvariant::OneLogPerEpoch]
        );
    }
}
