//! Analyses of each consumer's walk through a partition: non-monotonic polls and skipped
//! offsets.

use std::collections::BTreeMap;

use crate::history::Process;

use super::allowances::Allowances;
use super::log::{anomaly, source_evidence};
use super::model::{Model, Partition, Poll};
use super::report::{Anomaly, AnomalyKind, Evidence, Status, TopicPartition};

/// At most this many skipped values are listed as evidence; the explanation names them all.
const SKIPPED_SHOWN: usize = 5;

/// Where a consumer stands after `poll`: past its last record, and never before its start.
fn end_of(poll: &Poll<'_>) -> i64 {
    poll.records
        .last()
        .map_or(poll.from_offset, |&(offset, _)| {
            (offset + 1).max(poll.from_offset)
        })
}

pub(crate) fn consumer_walks(model: &Model<'_>, allowances: &Allowances, out: &mut Vec<Anomaly>) {
    for (tp, part) in &model.partitions {
        let mut by_consumer: BTreeMap<Process, Vec<usize>> = BTreeMap::new();
        for &p in &part.polls {
            by_consumer
                .entry(model.polls[p].consumer)
                .or_default()
                .push(p);
        }
        for polls in by_consumer.values() {
            let mut previous: Option<&Poll<'_>> = None;
            for poll in polls.iter().map(|&p| &model.polls[p]) {
                non_monotonic(tp, previous, poll, out);
                if let Some(prev) = previous {
                    let prev_end = end_of(prev);
                    if poll.from_offset > prev_end {
                        let why = format!(
                            "consumer {} moved from {prev_end} (the end of poll op {}) to {} (the start of poll op {})",
                            poll.consumer, prev.op.id, poll.from_offset, poll.op.id
                        );
                        skipped(
                            model,
                            allowances,
                            tp,
                            part,
                            (prev_end, poll.from_offset),
                            why,
                            &[prev, poll],
                            out,
                        );
                    }
                }
                let mut last: Option<i64> = None;
                for &(offset, _) in poll.records {
                    let start = last.map_or(poll.from_offset, |l| l + 1);
                    if offset > start {
                        let why = match last {
                            None => format!(
                                "poll op {} started at {} but its first record is at {offset}",
                                poll.op.id, poll.from_offset
                            ),
                            Some(l) => {
                                format!("poll op {} returned offset {l} then {offset}", poll.op.id)
                            }
                        };
                        skipped(
                            model,
                            allowances,
                            tp,
                            part,
                            (start, offset),
                            why,
                            &[poll],
                            out,
                        );
                    }
                    if last.is_none_or(|l| offset > l) {
                        last = Some(offset);
                    }
                }
                previous = Some(poll);
            }
        }
    }
}

/// Offsets that go backwards inside one poll: below where it started, or not above the
/// previous record. A poll starting before the previous one's end is a seek back (its
/// `from_offset` is the consumer's position), which is fine.
fn non_monotonic(
    tp: &TopicPartition,
    previous: Option<&Poll<'_>>,
    poll: &Poll<'_>,
    out: &mut Vec<Anomaly>,
) {
    let mut before = poll.from_offset - 1;
    for (i, &(offset, value)) in poll.records.iter().enumerate() {
        if offset > before {
            before = offset;
            continue;
        }
        let mut evidence = vec![Evidence::of(
            poll.op,
            "poll whose offsets go backwards",
            Some(offset),
            Some(value),
        )];
        let explanation = if i == 0 {
            let mut why = format!(
                "poll op {} by consumer {} started at {} but returned offset {offset} first",
                poll.op.id, poll.consumer, poll.from_offset
            );
            if let Some(prev) =
                previous.filter(|prev| offset < end_of(prev) && poll.from_offset >= end_of(prev))
            {
                why.push_str(&format!(
                    ", before the end {} of its previous poll op {}",
                    end_of(prev),
                    prev.op.id
                ));
                evidence.push(Evidence::of(
                    prev.op,
                    "the consumer's previous poll",
                    None,
                    None,
                ));
            }
            why
        } else {
            format!(
                "poll op {} by consumer {} returned offset {} then offset {offset}",
                poll.op.id,
                poll.consumer,
                poll.records[i - 1].0
            )
        };
        let offsets = if i == 0 {
            vec![poll.from_offset, offset]
        } else {
            vec![poll.records[i - 1].0, offset]
        };
        let values = if i == 0 {
            vec![value]
        } else {
            vec![poll.records[i - 1].1, value]
        };
        out.push(anomaly(
            AnomalyKind::NonMonotonicPoll,
            Status::Violation,
            tp,
            offsets,
            values,
            explanation,
            evidence,
        ));
        return; // one per poll: the first place it goes backwards
    }
}

/// The consumer jumped over the offsets `range.0..range.1`; an anomaly if a value exists there.
#[allow(clippy::too_many_arguments)]
fn skipped(
    model: &Model<'_>,
    allowances: &Allowances,
    tp: &TopicPartition,
    part: &Partition,
    range: (i64, i64),
    why: String,
    polls: &[&Poll<'_>],
    out: &mut Vec<Anomaly>,
) {
    // A read_committed consumer rightly skips the records of transactions that did not commit.
    let read_committed = polls.iter().any(|poll| poll.read_committed());
    let present: Vec<(i64, u64)> = part
        .observed
        .range(range.0..range.1)
        .flat_map(|(&offset, values)| values.keys().map(move |&v| (offset, v)))
        .filter(|(_, v)| !(read_committed && model.uncommitted.contains(v)))
        .collect();
    if present.is_empty() {
        return; // an empty offset range: nothing was there to skip
    }
    // Skipping a record is allowed only when losing it was: it is gone from the final read (or
    // there is none) and the configuration permits its loss. Gone at its offset: a value a
    // non-idempotent retry wrote at two offsets may survive at the other one.
    let causes: Option<Vec<String>> = present
        .iter()
        .map(|&(offset, value)| {
            let send = model.writer_in(tp, value)?;
            if part
                .final_read
                .as_ref()
                .is_some_and(|f| f.records.contains(&(offset, value)))
            {
                return None;
            }
            allowances.loss(send, model.appended_by_ms(send))
        })
        .collect();
    let status = Status::from_cause(causes.map(|mut causes| {
        causes.dedup();
        format!(
            "the skipped records may have been lost: {}",
            causes.join("; ")
        )
    }));
    let mut evidence: Vec<Evidence> = polls
        .iter()
        .map(|poll| Evidence::of(poll.op, "poll of the consumer that skipped", None, None))
        .collect();
    for &(offset, value) in present.iter().take(SKIPPED_SHOWN) {
        if let Some(&source) = part.observed[&offset][&value].first() {
            evidence.push(source_evidence(model, source, offset, value));
        }
    }
    let list: Vec<String> = present.iter().map(|(o, v)| format!("{v}@{o}")).collect();
    out.push(anomaly(
        AnomalyKind::SkippedOffset,
        status,
        tp,
        present.iter().map(|&(o, _)| o),
        present.iter().map(|&(_, v)| v),
        format!(
            "{why}, skipping {} record(s) that exist: {}",
            present.len(),
            list.join(", ")
        ),
        evidence,
    ));
}
