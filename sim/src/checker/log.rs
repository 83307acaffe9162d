//! Analyses of what each partition's log holds: phantom reads, inconsistent offsets,
//! duplicates, lost writes and records never seen.

use std::collections::{BTreeMap, BTreeSet};

use super::allowances::Allowances;
use super::model::{FinalRead, Model, Partition, Placed, SendClass, Source};
use super::report::{Anomaly, AnomalyKind, Evidence, Status, TopicPartition};

/// At most this many reads of one value are listed as evidence; the explanation gives the count.
const READS_SHOWN: usize = 3;

pub(crate) fn anomaly(
    kind: AnomalyKind,
    status: Status,
    tp: &TopicPartition,
    offsets: impl IntoIterator<Item = i64>,
    values: impl IntoIterator<Item = u64>,
    explanation: String,
    evidence: Vec<Evidence>,
) -> Anomaly {
    // Vectors sorted or deduplicated in place, not sets: a run with a bit flip at rest makes
    // thousands of anomalies of one or two offsets and values each.
    let mut offsets: Vec<i64> = offsets.into_iter().collect();
    offsets.sort_unstable();
    offsets.dedup();
    Anomaly {
        kind,
        status,
        topic: tp.topic.clone(),
        partition: tp.partition,
        offsets,
        values: first_occurrences(values),
        explanation,
        evidence,
    }
}

/// `values` without repeats, each where it first occurs.
fn first_occurrences(values: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut values: Vec<u64> = values.into_iter().collect();
    if values.len() > 16 {
        let mut seen = BTreeSet::new();
        values.retain(|v| seen.insert(*v));
        return values;
    }
    // Most anomalies name one or two values: a scan in place beats a set there.
    let mut kept = 0;
    for i in 0..values.len() {
        let v = values[i];
        if !values[..kept].contains(&v) {
            values[kept] = v;
            kept += 1;
        }
    }
    values.truncate(kept);
    values
}

/// The evidence of one source placing `value` at `offset`.
pub(crate) fn source_evidence(
    model: &Model<'_>,
    source: Source,
    offset: i64,
    value: u64,
) -> Evidence {
    match source {
        Source::Ack(i) => Evidence::of(
            model.sends[i].op,
            "acknowledged send",
            Some(offset),
            Some(value),
        ),
        Source::Read(i) => Evidence::of(
            model.polls[i].op,
            "poll that returned it",
            Some(offset),
            Some(value),
        ),
    }
}

/// Evidence for the sources of `value` at `offset`: every ack, and the first few reads.
fn sources_evidence(
    model: &Model<'_>,
    sources: &[Source],
    offset: i64,
    value: u64,
) -> Vec<Evidence> {
    let acks = sources.iter().filter(|s| matches!(s, Source::Ack(_)));
    let reads = sources
        .iter()
        .filter(|s| matches!(s, Source::Read(_)))
        .take(READS_SHOWN);
    acks.chain(reads)
        .map(|&s| source_evidence(model, s, offset, value))
        .collect()
}

/// A poll returned a value that no send wrote into this partition, or whose send definitely
/// failed (an aborted read). One anomaly per partition and value.
pub(crate) fn phantom_reads(model: &Model<'_>, out: &mut Vec<Anomaly>) {
    for (tp, part) in &model.partitions {
        for (&value, reads) in &part.reads {
            let writer = model.writer_of.get(&value).map(|&i| &model.sends[i]);
            let why = match writer {
                None => "no send ever wrote it".to_string(),
                Some(send) if send.tp != *tp => {
                    format!("its send (op {}) went to {}", send.op.id, send.tp)
                }
                Some(send) if send.class == SendClass::Failed => {
                    format!(
                        "its send (op {}) definitely failed (aborted read)",
                        send.op.id
                    )
                }
                Some(_) => continue,
            };
            let mut evidence: Vec<Evidence> = writer
                .map(|send| {
                    Evidence::of(
                        send.op,
                        "the send of this value",
                        send.acked_offset(),
                        Some(value),
                    )
                })
                .into_iter()
                .collect();
            evidence.extend(reads.iter().take(READS_SHOWN).map(|&(poll, offset)| {
                Evidence::of(
                    model.polls[poll].op,
                    "poll that returned it",
                    Some(offset),
                    Some(value),
                )
            }));
            out.push(anomaly(
                AnomalyKind::PhantomRead,
                Status::Violation,
                tp,
                reads.iter().map(|&(_, offset)| offset),
                [value],
                format!("value {value} was read {} time(s) but {why}", reads.len()),
                evidence,
            ));
        }
    }
}

/// Two different values at one offset, from any mix of acknowledgements and reads.
pub(crate) fn inconsistent_offsets(
    model: &Model<'_>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) {
    for (tp, part) in &model.partitions {
        for (&offset, values) in &part.observed {
            if values.len() < 2 {
                continue;
            }
            let status = match &allowances.offset_reuse_after_loss {
                Some(reuse) => offset_reuse(model, allowances, tp, part, offset, values, reuse),
                None => Status::Violation,
            };
            let evidence = values
                .iter()
                .flat_map(|(&value, sources)| sources_evidence(model, sources, offset, value))
                .collect();
            let list: Vec<String> = values
                .iter()
                .map(|(value, sources)| {
                    let acks = sources
                        .iter()
                        .filter(|s| matches!(s, Source::Ack(_)))
                        .count();
                    format!("{value} ({acks} ack(s), {} read(s))", sources.len() - acks)
                })
                .collect();
            out.push(anomaly(
                AnomalyKind::InconsistentOffset,
                status,
                tp,
                [offset],
                values.keys().copied(),
                format!(
                    "offset {offset} holds {} different values: {}",
                    values.len(),
                    list.join(", ")
                ),
                evidence,
            ));
        }
    }
}

/// Whether the values at `offset` are one offset given again after losses the run allows.
/// With replicas, an allowed loss frees its offset for the next leader's append, so an offset
/// may hold several values: allowed when every value but the one the log kept there lost its
/// copy here to an allowed loss.
///
/// When the final read reached the offset it says which value the log kept: the one it holds
/// *at this offset* (a value a non-idempotent retry wrote twice may survive at its other
/// offset and still have lost this copy), and every other value must be an allowed loss.
/// When it did not (it stopped before, at a bit flip earlier in the partition, or the run has
/// no complete final read), which value was kept is unknown: allowed when every value but one
/// is an allowed loss. Whether the kept value survived is the lost-write checks' question, not
/// this one's. (Session 13, 60 s replication swarm seed 148: an acks=1 loss's offset reused,
/// the final read stopped at an earlier flip, called a violation.)
fn offset_reuse(
    model: &Model<'_>,
    allowances: &Allowances,
    tp: &TopicPartition,
    part: &Partition,
    offset: i64,
    values: &Placed,
    reuse: &str,
) -> Status {
    let loss = |v: u64| {
        let send = model.writer_in(tp, v)?;
        allowances.loss(send, model.appended_by_ms(send))
    };
    let reached = part.final_read.as_ref().filter(|final_read| {
        final_read
            .records
            .last()
            .is_some_and(|&(last, _)| last >= offset)
    });
    let causes: Option<Vec<String>> = match reached {
        Some(final_read) => {
            let survives = |v: u64| final_read.records.contains(&(offset, v));
            let survivors = values.keys().filter(|&&v| survives(v)).count();
            values
                .keys()
                .filter(|&&v| !survives(v))
                .map(|&v| loss(v))
                .collect::<Option<Vec<String>>>()
                .filter(|_| survivors <= 1)
        }
        None => {
            let causes: Vec<String> = values.keys().filter_map(|&v| loss(v)).collect();
            (causes.len() + 1 >= values.len()).then_some(causes)
        }
    };
    match causes {
        Some(causes) => Status::Allowed {
            cause: format!("{reuse}: {}", causes.join("; ")),
        },
        None => Status::Violation,
    }
}

/// One value at two or more offsets of a partition.
pub(crate) fn duplicates(model: &Model<'_>, allowances: &Allowances, out: &mut Vec<Anomaly>) {
    for (tp, part) in &model.partitions {
        let mut offsets_of: BTreeMap<u64, BTreeSet<i64>> = BTreeMap::new();
        for (&offset, values) in &part.observed {
            for &value in values.keys() {
                offsets_of.entry(value).or_default().insert(offset);
            }
        }
        for (value, offsets) in offsets_of {
            if offsets.len() < 2 {
                continue;
            }
            let evidence = offsets
                .iter()
                .flat_map(|&offset| {
                    sources_evidence(model, &part.observed[&offset][&value], offset, value)
                })
                .collect();
            let list: Vec<String> = offsets.iter().map(i64::to_string).collect();
            out.push(anomaly(
                AnomalyKind::Duplicate,
                Status::from_cause(allowances.duplicate()),
                tp,
                offsets.iter().copied(),
                [value],
                format!(
                    "value {value} is at {} offsets: {}",
                    offsets.len(),
                    list.join(", ")
                ),
                evidence,
            ));
        }
    }
}

/// For each unread acknowledged offset of `part`, the first poll (in history order) that passed
/// over it and should have returned its value there, if any did (a read_committed poll is not
/// expected to return an uncommitted transaction's). One sweep over the polls, each taking the
/// offsets still unanswered in its range: a run with thousands of unread acknowledged sends (a
/// bit flip at rest, say) would otherwise scan every poll once per send.
struct PollsPassingOver {
    /// offset → first poll passing over it, for values of committed (or no) transactions.
    any: BTreeMap<i64, usize>,
    /// The same among polls that read uncommitted, for values of uncommitted transactions.
    read_uncommitted: BTreeMap<i64, usize>,
}

impl PollsPassingOver {
    fn of(model: &Model<'_>, part: &Partition) -> PollsPassingOver {
        let mut committed = BTreeSet::new();
        let mut uncommitted = BTreeSet::new();
        for send in part.sends.iter().map(|&i| &model.sends[i]) {
            let SendClass::Acked(Some(offset)) = send.class else {
                continue;
            };
            if part.was_read(send.value) {
                continue;
            }
            if model.uncommitted.contains(&send.value) {
                uncommitted.insert(offset);
            } else {
                committed.insert(offset);
            }
        }
        PollsPassingOver {
            any: first_polls_over(model, part, committed, |_| true),
            read_uncommitted: first_polls_over(model, part, uncommitted, |p| !p.read_committed()),
        }
    }

    /// The first poll that passed over `offset` and should have returned `value` there.
    fn get(&self, model: &Model<'_>, offset: i64, value: u64) -> Option<usize> {
        let polls = if model.uncommitted.contains(&value) {
            &self.read_uncommitted
        } else {
            &self.any
        };
        polls.get(&offset).copied()
    }
}

/// offset → the first poll of `part` that `counts` and passed over it, for each of `open`.
fn first_polls_over(
    model: &Model<'_>,
    part: &Partition,
    mut open: BTreeSet<i64>,
    counts: impl Fn(&super::model::Poll<'_>) -> bool,
) -> BTreeMap<i64, usize> {
    let mut first = BTreeMap::new();
    for &p in &part.polls {
        if open.is_empty() {
            break;
        }
        let poll = &model.polls[p];
        let Some(max) = poll.max_offset() else {
            continue;
        };
        if poll.from_offset > max || !counts(poll) {
            continue;
        }
        while let Some(&offset) = open.range(poll.from_offset..=max).next() {
            debug_assert!(poll.passed_over(offset));
            open.remove(&offset);
            first.insert(offset, p);
        }
    }
    first
}

/// Whether the final read should return `value` if the log holds it: a read_committed final
/// read does not return an uncommitted transaction's records.
fn final_read_expects(model: &Model<'_>, final_read: &FinalRead, value: u64) -> bool {
    !(final_read.read_committed && model.uncommitted.contains(&value))
}

/// Lost writes and records never seen (see the module docs for the exact definitions).
pub(crate) fn lost_and_never_seen(
    model: &Model<'_>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) {
    for (tp, part) in &model.partitions {
        let passing = PollsPassingOver::of(model, part);
        for send in part.sends.iter().map(|&i| &model.sends[i]) {
            let SendClass::Acked(acked_offset) = send.class else {
                continue;
            };
            if part.was_read(send.value) {
                continue;
            }
            let status = || Status::from_cause(allowances.loss(send, model.appended_by_ms(send)));
            let value = send.value;
            let ack = Evidence::of(send.op, "acknowledged send", acked_offset, Some(value));
            let passed = acked_offset
                .and_then(|offset| passing.get(model, offset, value).map(|p| (offset, p)));
            if let Some((offset, poll)) = passed {
                let poll = &model.polls[poll];
                let others: Vec<String> = part.values_at(offset).map(|v| v.to_string()).collect();
                let there = if others.is_empty() {
                    "nothing".to_string()
                } else {
                    others.join(", ")
                };
                out.push(anomaly(
                    AnomalyKind::LostWrite,
                    status(),
                    tp,
                    [offset],
                    [value],
                    format!(
                        "value {value} was acknowledged at offset {offset} and never read, although poll op {} \
                         read from {} over it (found {there} at offset {offset})",
                        poll.op.id, poll.from_offset
                    ),
                    vec![ack, Evidence::of(poll.op, "poll that read past its offset", Some(offset), None)],
                ));
            } else if let Some(final_read) = part
                .final_read
                .as_ref()
                .filter(|f| final_read_expects(model, f, value))
            {
                let mut evidence = vec![ack];
                evidence.extend(
                    final_read
                        .polls
                        .iter()
                        .take(READS_SHOWN)
                        .map(|&p| Evidence::of(model.polls[p].op, "final read", None, None)),
                );
                let at = acked_offset.map_or("without an offset".to_string(), |o| {
                    format!("at offset {o}")
                });
                out.push(anomaly(
                    AnomalyKind::NeverSeen,
                    status(),
                    tp,
                    acked_offset,
                    [value],
                    format!("value {value} was acknowledged {at} and no poll ever returned it, not even the final read"),
                    evidence,
                ));
            }
        }
        // Values that were read, then missing from the final read.
        let Some(final_read) = &part.final_read else {
            continue;
        };
        for (&value, reads) in &part.reads {
            if final_read.values.contains(&value) || !final_read_expects(model, final_read, value) {
                continue;
            }
            let Some(send) = model.writer_in(tp, value) else {
                continue;
            }; // a phantom read
            let status = Status::from_cause(allowances.read_loss(send, model.appended_by_ms(send)));
            let mut evidence = vec![Evidence::of(
                send.op,
                "the send of this value",
                send.acked_offset(),
                Some(value),
            )];
            evidence.extend(reads.iter().take(READS_SHOWN).map(|&(poll, offset)| {
                Evidence::of(
                    model.polls[poll].op,
                    "poll that returned it",
                    Some(offset),
                    Some(value),
                )
            }));
            evidence.extend(
                final_read
                    .polls
                    .iter()
                    .take(READS_SHOWN)
                    .map(|&p| Evidence::of(model.polls[p].op, "final read", None, None)),
            );
            out.push(anomaly(
                AnomalyKind::LostWrite,
                status,
                tp,
                reads.iter().map(|&(_, offset)| offset),
                [value],
                format!(
                    "value {value} was read {} time(s), then the final read did not return it",
                    reads.len()
                ),
                evidence,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anomaly_lists_its_offsets_ascending_and_its_values_once_in_first_seen_order() {
        let tp = TopicPartition::new("t", 0);
        let a = anomaly(
            AnomalyKind::InconsistentOffset,
            Status::Violation,
            &tp,
            [9, 3, 9, 1],
            [5, 2, 5, 7, 2],
            String::new(),
            vec![],
        );
        assert_eq!(a.offsets, vec![1, 3, 9]);
        assert_eq!(a.values, vec![5, 2, 7]);
    }

    #[test]
    fn many_values_are_deduplicated_in_first_seen_order_too() {
        // Past the scan's limit: the set path.
        let values: Vec<u64> = (0..40).rev().chain(0..40).chain([100, 39]).collect();
        let expected: Vec<u64> = (0..40).rev().chain([100]).collect();
        assert_eq!(first_occurrences(values), expected);
        assert_eq!(first_occurrences([3, 3, 3]), vec![3]);
        assert_eq!(first_occurrences([]), Vec::<u64>::new());
    }
}
