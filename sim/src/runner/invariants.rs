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

use super::report::{Anomaly, HarnessAnomalyKind};
use crate::cluster::Cluster;
use crate::trace::{now_ms, Trace};

/// (value, simulated ms, how it was seen) of the first claim on an offset.
type Claim = (u64, u64, &'static str);

/// What the online checks have seen.
#[derive(Default)]
pub(crate) struct Invariants {
    /// topic → (partition, offset) → (value, simulated ms, how it was seen). Keyed by topic
    /// first so that a claim finds its entry without allocating the topic's name.
    offsets: BTreeMap<String, BTreeMap<(i32, i64), Claim>>,
    /// (broker, incarnation, topic, partition) → highest high watermark seen (durable policy).
    high_watermarks: BTreeMap<(u32, u32, String, i32), u64>,
    pub(super) metadata: MetadataChecks,
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
}

impl MetadataInvariant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MetadataInvariant::OneControllerPerTerm => "one-controller-per-term",
            MetadataInvariant::LeaderEpochRises => "leader-epoch-rises",
            MetadataInvariant::FencedBrokerNeverLeads => "fenced-broker-never-leads",
            MetadataInvariant::MetadataOffsetRises => "metadata-offset-rises",
            MetadataInvariant::OneImagePerOffset => "one-image-per-offset",
            MetadataInvariant::CommittedOffsetKept => "committed-offset-kept",
            MetadataInvariant::ImagesConverge => "images-converge",
            MetadataInvariant::TopicCreations => "topic-creations-whole",
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
    /// (node, incarnation, topic id, partition) → the last leader epoch seen.
    leader_epochs: BTreeMap<(u32, u32, Uuid, i32), i32>,
    /// metadata offset → (the first image seen at it, the node it was seen on, ms).
    images: BTreeMap<i64, (Arc<ClusterImage>, u32, u64)>,
    /// The highest metadata offset any node applied.
    pub(crate) highest_offset: i64,
    /// One report per invariant and subject is enough: a broken invariant stays broken.
    reported: std::collections::BTreeSet<(MetadataInvariant, String)>,
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
            let (leader, at) = *self
                .controllers
                .entry(status.term)
                .or_insert((id, now));
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
                if let Some(before) = self.leader_epochs.insert(key, epoch) {
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
    /// Records a breach of a metadata invariant, named.
    pub(crate) fn metadata_violation(
        &mut self,
        kind: MetadataInvariant,
        what: String,
        now: u64,
        trace: &Trace,
    ) {
        trace.event("invariants", format!("INVARIANT {}: {what}", kind.name()));
        if self.violations.len() < 100 {
            self.violations.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed: false,
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
        if !self.offsets.contains_key(topic) {
            self.offsets.insert(topic.to_string(), BTreeMap::new());
        }
        let of_topic = self.offsets.get_mut(topic).expect("inserted above");
        let (seen, at, seen_how) = *of_topic
            .entry((partition, offset))
            .or_insert((value, now, how));
        if seen != value && self.violations.len() < 100 {
            self.violations.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed: false,
                description: format!(
                    "offset {offset} of {topic}-{partition} held value {seen} ({seen_how} at {at}ms) and then value {value} ({how} at {now}ms)"
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
    for view in cluster.planes() {
        let seen = (view.status.active_controller, view.status.term);
        if inv.metadata.views.insert(view.id, seen) != Some(seen) {
            let leader = seen.0.map_or("none".to_string(), |l| format!("broker-{l}"));
            trace.event(
                format!("broker-{}", view.id),
                format!("quorum term {}: controller {leader}", seen.1),
            );
        }
        let found = inv.metadata.observe(&view, now);
        for (kind, what) in found {
            inv.metadata_violation(kind, what, now, trace);
        }
    }
    for id in cluster.broker_ids() {
        let Some(broker) = cluster.broker(id) else {
            continue;
        };
        let incarnation = cluster.incarnations(id);
        for topic in broker.topics() {
            for partition in &topic.partitions {
                let o = partition.log.offsets();
                let hw = partition.high_watermark();
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
                if durable {
                    let key = (id, incarnation, topic.name.clone(), partition.index);
                    let highest = inv.high_watermarks.entry(key).or_insert(hw);
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
