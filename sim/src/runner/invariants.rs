//! The broker invariants the harness checks online, on live brokers, while the run goes on
//! (offsets assigned once; the high watermark within the log, within what is durable under the
//! durable policy, and never moving back within one incarnation), and on the final logs
//! (batches dense from the log start).

use std::collections::BTreeMap;
use std::sync::Mutex;

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
    pub(super) violations: Vec<Anomaly>,
}

impl Invariants {
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
