//! Compacted topics: Kafka's compaction guarantees, judged on the scans of the history.
//!
//! On a topic whose `cleanup.policy` lists `compact` ([`Allowances::compacted_topics`]) the
//! cleaner removes every record of a key but the latest (below the high watermark), and a
//! tombstone (a key with a null value) once `delete.retention.ms` passed. Kafka's guarantees
//! (the documentation's "Log Compaction Basics") and how each is judged:
//!
//! - **Offsets never change**: an offset read or acknowledged with a value always holds that
//!   value, and a value sits at one offset. The cleaner keeps offsets, so this is the general
//!   checker's `inconsistent_offset` (an offset with two values) and `duplicate` (a value at
//!   two offsets), which stay on for compacted partitions: a cleaner that renumbers records
//!   puts a value read at one offset at another.
//! - **A scan from the log start sees the final state.** A *scan* is the walk of one consumer
//!   id over a partition (not a group member's) whose first poll starts at offset 0 (the log
//!   start: compaction never moves it), cut where the walk seeks back. Its *point* `P` is one
//!   past the highest offset it returned; every offset below `P` existed when the scan passed
//!   over it, at the poll with the highest start at or below it. For each key, let `b` be its
//!   latest *known* record below `P` (acknowledged there, or returned there by any poll, by a
//!   send invoked before the scan ended). The cleaner removes `b` only when a newer record
//!   of the key exists (it would be at or past `P`, else it would be `b`), or `b` is a
//!   tombstone past its retention. So when the scan did not return `b`, and no send of the key
//!   that could be such a newer record (not definitely failed, invoked before the scan passed
//!   over `b`, with no known offset below `P`) exists:
//!   - **stale_value** — the scan returned an older record of the key instead;
//!   - **latest_value_missing** — the scan returned nothing of the key;
//!   - each allowed only when the loss of `b`'s send is (the general loss rules).
//! - **A tombstone is kept `delete.retention.ms`.** When `b` is a tombstone the scan did not
//!   return, it must have been removed no sooner than `delete.retention.ms` after its send was
//!   invoked (KIP-534: its delete horizon is set when a cleaning first keeps it): gone from a
//!   poll that completed earlier is **tombstone_removed_early**. Always a violation.
//! - **Lost writes.** The general `lost_write`, `never_seen` and `skipped_offset` stay on; in a
//!   compacted partition a missing record is no anomaly when a newer record of its key is
//!   known at a higher offset (it was cleaned away), or when it is a tombstone (judged by the
//!   rule above). Every other missing acknowledged record is judged as on any topic.
//! - **not_compacted** — the scenario expects cleanings and no scan of the topic passed over
//!   a known record without returning it: the cleaner never ran, so the run proved nothing.
//!
//! Consumer-group members' polls and the other checks read compacted partitions as before.

use std::collections::{BTreeMap, BTreeSet};

use super::allowances::{Allowances, CompactedTopic};
use super::log::anomaly;
use super::model::{Model, Partition, Poll, SendClass};
use super::report::{Anomaly, AnomalyKind, Evidence, Status, TopicPartition};
use crate::history::History;

/// At most this many keys of one scan are named as evidence; the explanation lists them all.
const KEYS_SHOWN: usize = 4;

/// Judges every compacted partition; returns, by topic, how many records scans saw removed.
pub(crate) fn check_compaction(
    history: &History,
    model: &Model<'_>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) -> BTreeMap<String, usize> {
    let mut cleaned: BTreeMap<String, usize> = BTreeMap::new();
    if allowances.compacted_topics.is_empty() {
        return cleaned;
    }
    let view = View { history, model };
    out.retain(|a| !view.cleaned_away(allowances, a));
    for (tp, part) in &model.partitions {
        let Some(topic) = allowances.compacted_topics.get(&tp.topic) else {
            continue;
        };
        let mut removed: BTreeSet<i64> = BTreeSet::new();
        for scan in scans(model, part) {
            view.judge_scan(allowances, topic, tp, part, &scan, &mut removed, out);
        }
        *cleaned.entry(tp.topic.clone()).or_default() += removed.len();
    }
    for (name, topic) in &allowances.compacted_topics {
        if topic.expect_cleaning && cleaned.get(name).copied().unwrap_or(0) == 0 {
            out.push(anomaly(
                AnomalyKind::NotCompacted,
                Status::Violation,
                &TopicPartition::new(name, -1),
                [],
                [],
                format!(
                    "no scan of compacted topic {name} found a record removed: the cleaner never \
                     cleaned it during the run, so the compaction guarantees were not exercised"
                ),
                vec![],
            ));
        }
    }
    cleaned
}

/// One scan: a consumer's contiguous walk of a partition from offset 0.
struct Scan<'m, 'a> {
    polls: Vec<&'m Poll<'a>>,
    /// One past the highest offset it returned.
    point: i64,
}

impl Scan<'_, '_> {
    /// The poll that passed over `offset`: the one with the highest start at or below it.
    fn poll_over(&self, offset: i64) -> &Poll<'_> {
        self.polls
            .iter()
            .rev()
            .find(|p| p.from_offset <= offset)
            .unwrap_or(&self.polls[0])
    }

    fn returned(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.polls.iter().flat_map(|p| p.records.iter().copied())
    }
}

/// The scans of a partition: each non-group consumer's walk from offset 0, cut where it seeks
/// back.
fn scans<'m, 'a>(model: &'m Model<'a>, part: &Partition) -> Vec<Scan<'m, 'a>> {
    let mut walks: BTreeMap<u32, Vec<&'m Poll<'a>>> = BTreeMap::new();
    for &p in &part.polls {
        let poll = &model.polls[p];
        if poll.group.is_none() {
            walks.entry(poll.consumer).or_default().push(poll);
        }
    }
    let mut out = Vec::new();
    for polls in walks.into_values() {
        if polls.first().is_none_or(|p| p.from_offset != 0) {
            continue;
        }
        let mut walk: Vec<&Poll<'_>> = Vec::new();
        let mut end = 0;
        for poll in polls {
            if poll.from_offset < end {
                break; // a seek back: what follows is another walk
            }
            end = poll.max_offset().map_or(poll.from_offset, |m| m + 1);
            walk.push(poll);
        }
        let point = walk
            .iter()
            .filter_map(|p| p.max_offset())
            .max()
            .map_or(0, |m| m + 1);
        if point > 0 {
            out.push(Scan { polls: walk, point });
        }
    }
    out
}

struct View<'h, 'm, 'a> {
    history: &'h History,
    model: &'m Model<'a>,
}

/// What is known to lie below a scan's point.
struct Below {
    point: i64,
    /// The latest invocation of a send whose record is known below the point.
    last_invoked_ms: u64,
}

/// One key a scan got wrong.
struct Miss {
    key: u64,
    /// The latest known record below the point, and its value.
    offset: i64,
    value: u64,
    /// The older record the scan returned instead, if any.
    returned: Option<(i64, u64)>,
    status: Status,
}

impl View<'_, '_, '_> {
    fn key_of(&self, tp: &TopicPartition, value: u64) -> Option<u64> {
        self.model.writer_in(tp, value).and_then(|s| s.key)
    }

    fn tombstone(&self, value: u64) -> bool {
        self.history.tombstones.contains(&value)
    }

    /// Every offset the history places `value` at in `part`: its acknowledgement and reads.
    fn offsets_of(&self, part: &Partition, value: u64, acked: Option<i64>) -> BTreeSet<i64> {
        let mut offsets: BTreeSet<i64> = acked.into_iter().collect();
        if let Some(reads) = part.reads.get(&value) {
            offsets.extend(reads.iter().map(|&(_, o)| o));
        }
        offsets
    }

    /// Whether a general anomaly about missing records in a compacted partition only shows
    /// records the cleaner may remove: each is a tombstone or has a newer record of its key
    /// known at a higher offset.
    fn cleaned_away(&self, allowances: &Allowances, a: &Anomaly) -> bool {
        if !allowances.compacted_topics.contains_key(&a.topic)
            || !matches!(
                a.kind,
                AnomalyKind::LostWrite | AnomalyKind::NeverSeen | AnomalyKind::SkippedOffset
            )
        {
            return false;
        }
        let tp = TopicPartition::new(&a.topic, a.partition);
        let Some(part) = self.model.partitions.get(&tp) else {
            return false;
        };
        !a.values.is_empty()
            && a.values.iter().all(|&v| {
                if self.tombstone(v) {
                    return true;
                }
                let Some(send) = self.model.writer_in(&tp, v) else {
                    return false;
                };
                let (Some(key), Some(&lowest)) = (
                    send.key,
                    self.offsets_of(part, v, send.acked_offset()).first(),
                ) else {
                    return false;
                };
                part.observed
                    .range(lowest + 1..)
                    .any(|(_, values)| values.keys().any(|&w| self.key_of(&tp, w) == Some(key)))
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn judge_scan(
        &self,
        allowances: &Allowances,
        topic: &CompactedTopic,
        tp: &TopicPartition,
        part: &Partition,
        scan: &Scan<'_, '_>,
        removed: &mut BTreeSet<i64>,
        out: &mut Vec<Anomaly>,
    ) {
        let model = self.model;
        let ended_ms = scan
            .polls
            .iter()
            .filter_map(|p| p.op.complete_ms)
            .max()
            .unwrap_or(0);
        // The latest record the scan returned per key.
        let mut seen: BTreeMap<u64, (i64, u64)> = BTreeMap::new();
        let returned: BTreeSet<(i64, u64)> = scan.returned().collect();
        for &(offset, value) in &returned {
            if let Some(key) = self.key_of(tp, value) {
                let e = seen.entry(key).or_insert((offset, value));
                if offset > e.0 {
                    *e = (offset, value);
                }
            }
        }
        // The latest known record per key below the point, by a send invoked before the scan
        // ended (an offset reused after an allowed loss may hold a later one).
        let mut latest: BTreeMap<u64, (i64, u64)> = BTreeMap::new();
        let mut last_invoked_below = 0;
        for (&offset, values) in part.observed.range(..scan.point) {
            for &value in values.keys() {
                let Some(send) = model.writer_in(tp, value) else {
                    continue;
                };
                if send.op.invoke_ms > ended_ms {
                    continue;
                }
                last_invoked_below = last_invoked_below.max(send.op.invoke_ms);
                if !returned.contains(&(offset, value)) {
                    removed.insert(offset);
                }
                if let Some(key) = send.key {
                    latest.insert(key, (offset, value)); // ascending offsets: the last wins
                }
            }
        }
        let mut misses: Vec<(AnomalyKind, Miss)> = Vec::new();
        for (&key, &(offset, value)) in &latest {
            let returned = seen.get(&key).copied();
            if returned.is_some_and(|(o, _)| o >= offset) {
                continue;
            }
            let passed = scan.poll_over(offset);
            let removed_by = passed.op.complete_ms.unwrap_or(ended_ms);
            let below = Below {
                point: scan.point,
                last_invoked_ms: last_invoked_below,
            };
            if self.newer_may_exist(part, key, &below, removed_by) {
                continue;
            }
            let Some(send) = model.writer_in(tp, value) else {
                continue;
            };
            if self.tombstone(value) {
                let kept_until = send.op.invoke_ms + topic.delete_retention_ms;
                if removed_by < kept_until {
                    misses.push((
                        AnomalyKind::TombstoneRemovedEarly,
                        Miss {
                            key,
                            offset,
                            value,
                            returned,
                            status: Status::Violation,
                        },
                    ));
                }
                continue;
            }
            let cause = if part.was_read(value) {
                allowances.read_loss(send, model.appended_by_ms(send))
            } else {
                allowances.loss(send, model.appended_by_ms(send))
            };
            let kind = if returned.is_some() {
                AnomalyKind::StaleValue
            } else {
                AnomalyKind::LatestValueMissing
            };
            misses.push((
                kind,
                Miss {
                    key,
                    offset,
                    value,
                    returned,
                    status: Status::from_cause(cause),
                },
            ));
        }
        for kind in [
            AnomalyKind::StaleValue,
            AnomalyKind::LatestValueMissing,
            AnomalyKind::TombstoneRemovedEarly,
        ] {
            let these: Vec<&Miss> = misses
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, m)| m)
                .collect();
            if !these.is_empty() {
                out.push(self.scan_anomaly(kind, topic, tp, scan, &these));
            }
        }
    }

    /// Whether a record of `key` newer than every known one below the point may have existed
    /// by `by_ms`: a send of the key, not definitely failed, invoked by then, whose offset is
    /// not known to be below the point. A send with no known offset that completed before
    /// the send of some known record below the point was invoked is below it, if it landed
    /// at all (its attempts ended before that record was appended).
    fn newer_may_exist(&self, part: &Partition, key: u64, below: &Below, by_ms: u64) -> bool {
        part.sends
            .iter()
            .map(|&i| &self.model.sends[i])
            .any(|send| {
                if send.key != Some(key)
                    || send.class == SendClass::Failed
                    || send.op.invoke_ms > by_ms
                {
                    return false;
                }
                let offsets = self.offsets_of(part, send.value, send.acked_offset());
                if offsets.is_empty() {
                    return send
                        .op
                        .complete_ms
                        .is_none_or(|done| done >= below.last_invoked_ms);
                }
                offsets.iter().all(|&o| o >= below.point)
            })
    }

    fn scan_anomaly(
        &self,
        kind: AnomalyKind,
        topic: &CompactedTopic,
        tp: &TopicPartition,
        scan: &Scan<'_, '_>,
        misses: &[&Miss],
    ) -> Anomaly {
        let model = self.model;
        let first = scan.polls[0];
        let status = if misses.iter().any(|m| m.status == Status::Violation) {
            Status::Violation
        } else {
            let causes: BTreeSet<String> = misses
                .iter()
                .filter_map(|m| match &m.status {
                    Status::Allowed { cause } => Some(cause.clone()),
                    Status::Violation => None,
                })
                .collect();
            Status::Allowed {
                cause: causes.into_iter().collect::<Vec<_>>().join("; "),
            }
        };
        let list: Vec<String> = misses
            .iter()
            .map(|m| {
                let passed = scan.poll_over(m.offset);
                let instead = m
                    .returned
                    .map_or("nothing".to_string(), |(o, v)| format!("{v}@{o}"));
                let age = model.writer_in(tp, m.value).map_or(String::new(), |s| {
                    format!(
                        ", gone {} ms after its send",
                        passed
                            .op
                            .complete_ms
                            .unwrap_or(0)
                            .saturating_sub(s.op.invoke_ms)
                    )
                });
                format!(
                    "k{}: latest {}@{} (poll op {}{age}), returned {instead}",
                    m.key, m.value, m.offset, passed.op.id
                )
            })
            .collect();
        let what = match kind {
            AnomalyKind::StaleValue => "returned an older value instead of the latest".to_string(),
            AnomalyKind::LatestValueMissing => {
                "returned nothing of keys whose latest record is a value nothing replaced"
                    .to_string()
            }
            _ => format!(
                "did not find tombstones younger than delete.retention.ms ({} ms)",
                topic.delete_retention_ms
            ),
        };
        let mut evidence = vec![Evidence::of(
            first.op,
            "first poll of the scan from the log start",
            None,
            None,
        )];
        for m in misses.iter().take(KEYS_SHOWN) {
            if let Some(send) = model.writer_in(tp, m.value) {
                evidence.push(Evidence::of(
                    send.op,
                    "the send of the latest record below the scan's point",
                    send.acked_offset().or(Some(m.offset)),
                    Some(m.value),
                ));
            }
            evidence.push(Evidence::of(
                scan.poll_over(m.offset).op,
                "poll of the scan that passed over it",
                Some(m.offset),
                None,
            ));
        }
        anomaly(
            kind,
            status,
            tp,
            misses.iter().map(|m| m.offset),
            misses.iter().map(|m| m.value),
            format!(
                "the scan by consumer {} from offset 0 to {} {what}: {}",
                first.consumer,
                scan.point,
                list.join("; ")
            ),
            evidence,
        )
    }
}
