//! Analyses of consumer groups: committed offsets that go back in time, and records a group
//! committed past without any member returning them.
//!
//! A group's committed offset of a partition is a register written by OffsetCommit (the last
//! commit applied wins; Kafka lets a member commit a lower offset than before) and read by
//! OffsetFetch. A fetch may return the offset of any commit that could have been applied last,
//! but never one that an acknowledged commit had already replaced before the fetch began.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, Op, OpKind, Outcome};

use super::allowances::Allowances;
use super::log::anomaly;
use super::model::{classify, Model, SendClass};
use super::report::{Anomaly, AnomalyKind, Evidence, Status, TopicPartition};
use super::FINAL_READER;

/// One partition's offset in one commit operation.
struct Commit<'a> {
    op: &'a Op,
    offset: i64,
}

impl Commit<'_> {
    fn acknowledged(&self) -> bool {
        matches!(self.op.outcome, Outcome::Ok { .. })
    }

    /// Not definitely refused: acknowledged, unknown, pending or an indefinite failure.
    fn maybe_applied(&self) -> bool {
        classify(&self.op.outcome) != SendClass::Failed
    }

    /// Unknown, pending or an indefinite failure: it may take effect at any later moment.
    fn indefinite(&self) -> bool {
        self.maybe_applied() && !self.acknowledged()
    }
}

/// A committed-offset fetch that completed ok.
struct Fetch<'a> {
    op: &'a Op,
    /// What it returned; `None`: nothing committed.
    offset: Option<i64>,
    by_final_reader: bool,
}

/// One group's commits and ok fetches of one partition, in history (invocation) order.
#[derive(Default)]
struct GroupPartition<'a> {
    commits: Vec<Commit<'a>>,
    fetches: Vec<Fetch<'a>>,
}

/// Everything the history says about the groups.
struct Groups<'a> {
    partitions: BTreeMap<(&'a str, TopicPartition), GroupPartition<'a>>,
    /// group → its commits and its members' polls, of any outcome (when was the group active).
    activity: BTreeMap<&'a str, Vec<&'a Op>>,
}

impl<'a> Groups<'a> {
    fn build(history: &'a History) -> Groups<'a> {
        let mut groups = Groups {
            partitions: BTreeMap::new(),
            activity: BTreeMap::new(),
        };
        for op in &history.ops {
            match &op.kind {
                OpKind::Commit { group, offsets, .. } => {
                    groups.activity.entry(group).or_default().push(op);
                    for (topic, partition, offset) in offsets {
                        let key = (group.as_str(), TopicPartition::new(topic, *partition));
                        groups
                            .partitions
                            .entry(key)
                            .or_default()
                            .commits
                            .push(Commit {
                                op,
                                offset: *offset,
                            });
                    }
                }
                OpKind::FetchCommitted {
                    consumer,
                    group,
                    topic,
                    partition,
                    offset,
                } => {
                    if !matches!(op.outcome, Outcome::Ok { .. }) {
                        continue; // only an answered fetch says what was committed
                    }
                    let key = (group.as_str(), TopicPartition::new(topic, *partition));
                    groups
                        .partitions
                        .entry(key)
                        .or_default()
                        .fetches
                        .push(Fetch {
                            op,
                            offset: *offset,
                            by_final_reader: *consumer == FINAL_READER,
                        });
                }
                OpKind::Poll {
                    group: Some(group), ..
                } => groups.activity.entry(group).or_default().push(op),
                OpKind::Poll { group: None, .. }
                | OpKind::Send { .. }
                | OpKind::BeginTxn { .. }
                | OpKind::SendOffsetsToTxn { .. }
                | OpKind::EndTxn { .. } => {}
            }
        }
        groups
    }

    /// The longest stretch before `fetch_ms` in which `group` had no commit or poll running,
    /// after its last acknowledged commit that completed before `fetch_ms` (a later commit
    /// would have stored an offset again): `(from, to)`, the completion of the op before the
    /// stretch and the invocation of the op after it (or `fetch_ms`). An op that never
    /// completed runs for ever. Expiry (KIP-211) counts the retention from the moment the group
    /// empties, and a group with nothing running for that long may have been empty that long;
    /// the offsets stay gone once expired, until a commit stores one again.
    fn longest_idle_ms(&self, group: &str, fetch_ms: u64) -> Option<(u64, u64)> {
        let mut ops: Vec<&Op> = self
            .activity
            .get(group)
            .into_iter()
            .flatten()
            .copied()
            .filter(|op| op.invoke_ms < fetch_ms)
            .collect();
        ops.sort_by_key(|op| op.invoke_ms);
        let last_commit_ms = ops
            .iter()
            .filter(|op| {
                matches!(op.kind, OpKind::Commit { .. }) && matches!(op.outcome, Outcome::Ok { .. })
            })
            .filter_map(|op| op.complete_ms.filter(|&done| done < fetch_ms))
            .max();
        let mut busy_until: Option<u64> = None;
        let mut longest: Option<(u64, u64)> = None;
        let mut consider = |from: u64, to: u64| {
            if last_commit_ms.is_none_or(|c| from >= c)
                && to > from
                && longest.is_none_or(|(f, t)| to - from > t - f)
            {
                longest = Some((from, to));
            }
        };
        for op in ops {
            if let Some(from) = busy_until.filter(|&b| b < op.invoke_ms) {
                consider(from, op.invoke_ms);
            }
            let done = op.complete_ms.unwrap_or(u64::MAX);
            busy_until = Some(busy_until.map_or(done, |b| b.max(done)));
        }
        if let Some(from) = busy_until.filter(|&b| b < fetch_ms) {
            consider(from, fetch_ms);
        }
        longest
    }
}

/// Both group analyses (see the module docs of [`crate::checker`] for the exact definitions).
pub(crate) fn check_groups(
    history: &History,
    model: &Model<'_>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) {
    let groups = Groups::build(history);
    for ((group, tp), gp) in &groups.partitions {
        for fetch in &gp.fetches {
            regression(&groups, group, tp, gp, fetch, allowances, out);
        }
        skipped_by_group(model, group, tp, gp, allowances, out);
    }
}

/// Evidence of a commit, about partition `tp` (a commit may cover several partitions).
fn commit_evidence(commit: &Commit<'_>, tp: &TopicPartition, role: &'static str) -> Evidence {
    let mut evidence = Evidence::of(commit.op, role, Some(commit.offset), None);
    evidence.topic = tp.topic.clone();
    evidence.partition = tp.partition;
    evidence
}

/// A fetch that returned less than a commit acknowledged before the fetch was invoked, when no
/// commit that could have been applied after that one committed what the fetch returned.
fn regression(
    groups: &Groups<'_>,
    group: &str,
    tp: &TopicPartition,
    gp: &GroupPartition<'_>,
    fetch: &Fetch<'_>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) {
    // Nothing committed reads as -1: below every commit.
    let fetched = fetch.offset.unwrap_or(-1);
    let fetch_done_ms = fetch.op.complete_ms.unwrap_or(u64::MAX);
    // A commit that may have been applied after `replaced` (it was not done before `replaced`
    // began) and before the fetch answered (it began before then), and wrote what was fetched.
    // An indefinite commit may take effect at any moment after it began (a request the client
    // gave up on can still reach the coordinator later), so it is never "done".
    let explains = |replaced: &Commit<'_>| {
        gp.commits.iter().any(|c| {
            c.op.id != replaced.op.id
                && c.offset == fetched
                && c.maybe_applied()
                && (c.indefinite()
                    || c.op
                        .complete_ms
                        .is_none_or(|done| done >= replaced.op.invoke_ms))
                && c.op.invoke_ms <= fetch_done_ms
        })
    };
    let Some(replaced) = gp
        .commits
        .iter()
        .filter(|c| {
            c.acknowledged()
                && c.offset > fetched
                && c.op
                    .complete_ms
                    .is_some_and(|done| done < fetch.op.invoke_ms)
        })
        .filter(|c| !explains(c))
        .max_by_key(|c| (c.offset, c.op.id))
    else {
        return;
    };
    let status = match fetch.offset {
        None => Status::from_cause(
            groups
                .longest_idle_ms(group, fetch.op.invoke_ms)
                .and_then(|(from, to)| allowances.offsets_expired(from, to, fetch.op.invoke_ms)),
        ),
        Some(_) => Status::Violation,
    };
    let found = fetch
        .offset
        .map_or("nothing committed".to_string(), |o| format!("offset {o}"));
    let done = replaced.op.complete_ms.unwrap_or_default();
    out.push(anomaly(
        AnomalyKind::CommittedOffsetRegression,
        status,
        tp,
        [replaced.offset].into_iter().chain(fetch.offset),
        [],
        format!(
            "group {group}: fetch op {} invoked at {} ms found {found}, but commit op {} had \
             been acknowledged at offset {} by {done} ms, and no commit that could have been \
             applied after it committed what the fetch found",
            fetch.op.id, fetch.op.invoke_ms, replaced.op.id, replaced.offset
        ),
        vec![
            commit_evidence(replaced, tp, "acknowledged commit"),
            Evidence::of(fetch.op, "fetch that went back", fetch.offset, None),
        ],
    ));
}

/// Records the final read found below the group's final committed offset that no poll of the
/// group returned: the group committed past them unprocessed.
fn skipped_by_group(
    model: &Model<'_>,
    group: &str,
    tp: &TopicPartition,
    gp: &GroupPartition<'_>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) {
    let Some(final_fetch) = gp.fetches.iter().rev().find(|f| f.by_final_reader) else {
        return;
    };
    let Some(committed) = final_fetch.offset else {
        return; // nothing committed: nothing the group vouched for
    };
    let Some(part) = model.partitions.get(tp) else {
        return;
    };
    let Some(final_read) = &part.final_read else {
        return;
    };
    // A group reading read_committed rightly skips the records of transactions that did not
    // commit.
    let group_reads_committed = part
        .polls
        .iter()
        .any(|&p| model.polls[p].group == Some(group) && model.polls[p].read_committed());
    let mut reported = BTreeSet::new();
    for &p in &final_read.polls {
        let poll = &model.polls[p];
        for &(offset, value) in poll.records {
            if offset >= committed
                || !reported.insert(value)
                || (group_reads_committed && model.uncommitted.contains(&value))
            {
                continue;
            }
            let read_by_group = part
                .reads
                .get(&value)
                .into_iter()
                .flatten()
                .any(|&(q, _)| model.polls[q].group == Some(group));
            if read_by_group {
                continue;
            }
            let Some(send) = model.writer_in(tp, value) else {
                continue; // a phantom read, reported as such
            };
            let status = Status::from_cause(allowances.loss(send, model.appended_by_ms(send)));
            out.push(anomaly(
                AnomalyKind::SkippedByGroup,
                status,
                tp,
                [offset],
                [value],
                format!(
                    "group {group} ended with committed offset {committed} (fetch op {}), but no \
                     poll of its members returned value {value}, which the final read found at \
                     offset {offset}",
                    final_fetch.op.id
                ),
                vec![
                    Evidence::of(
                        final_fetch.op,
                        "the group's final committed offset",
                        None,
                        None,
                    ),
                    Evidence::of(
                        poll.op,
                        "final read that returned it",
                        Some(offset),
                        Some(value),
                    ),
                    Evidence::of(
                        send.op,
                        "the send of this value",
                        send.acked_offset(),
                        Some(value),
                    ),
                ],
            ));
        }
    }
}
