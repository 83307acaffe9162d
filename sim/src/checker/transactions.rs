//! Kafka transactions: how each one ended, and the anomalies Jepsen found in Kafka-compatible
//! systems (Elle's G1a, G1b and G1c, after Adya) plus the exactly-once promise of
//! consume-transform-produce. The exact definitions are in the module docs of
//! [`crate::checker`].
//!
//! A transaction is named by its [`TxnId`] (unique per run). Its records are the sends that
//! carry it; its inputs are the polls that carry it; its group offsets are its
//! send-offsets-to-transaction operations; its end is its commit or abort.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::history::{History, Op, OpKind, Outcome, Process, TxnId, TxnResult};

use super::allowances::Allowances;
use super::log::anomaly;
use super::model::{Model, Poll, Send};
use super::report::{Anomaly, AnomalyKind, Evidence, Status, TopicPartition};
use super::FINAL_READER;

/// At most this many polls (or inputs) are listed as evidence of one anomaly.
const SHOWN: usize = 3;

/// How a transaction ended, as far as the history tells.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fate<'a> {
    /// Its commit (or an abort that found it committed) was answered Committed.
    Committed(&'a Op),
    /// Its commit ended fenced, unknown or pending, and a read_committed poll (index into
    /// [`Model::polls`]) returned one of its records: it committed, or that read is wrong.
    RevealedCommitted(usize),
    /// It never committed: an end was answered Aborted (that op), or no commit was ever asked
    /// for (`None`: the producer aborted without an answer, or stopped inside it).
    Aborted(Option<&'a Op>),
    /// Its commit ended fenced, unknown or pending, and no read_committed poll returned any of
    /// its records: it may have committed or not.
    Indefinite,
}

impl Fate<'_> {
    pub fn committed(&self) -> bool {
        matches!(self, Fate::Committed(_) | Fate::RevealedCommitted(_))
    }
}

/// One transaction: its operations and fate.
pub(crate) struct Txn<'a> {
    pub producer: Process,
    /// Indexes into [`Model::sends`].
    pub sends: Vec<usize>,
    /// Indexes into [`Model::polls`]: the polls that fed it (its inputs).
    pub inputs: Vec<usize>,
    /// Its send-offsets-to-transaction operations.
    pub offsets: Vec<&'a Op>,
    /// Its commits and aborts, in invocation order.
    pub ends: Vec<&'a Op>,
    pub fate: Fate<'a>,
}

impl<'a> Txn<'a> {
    /// The first commit asked for, if one was.
    fn first_commit(&self) -> Option<&Op> {
        self.ends
            .iter()
            .copied()
            .find(|op| matches!(op.kind, OpKind::EndTxn { commit: true, .. }))
    }

    /// The offset this transaction committed for `group` and `tp`, if it sent one (the
    /// highest, if it sent several).
    fn offset_for(&self, group: &str, tp: &TopicPartition) -> Option<i64> {
        self.offsets
            .iter()
            .filter_map(|op| match &op.kind {
                OpKind::SendOffsetsToTxn {
                    group: g, offsets, ..
                } if g == group => offsets
                    .iter()
                    .filter(|(t, p, _)| *t == tp.topic && *p == tp.partition)
                    .map(|&(_, _, o)| o)
                    .max(),
                _ => None,
            })
            .max()
    }

    /// The operation that shows its fate, for evidence.
    fn fate_op<'m>(&'m self, model: &'m Model<'a>) -> Option<(&'m Op, &'static str)> {
        match self.fate {
            Fate::Committed(op) => Some((op, "the commit")),
            Fate::RevealedCommitted(poll) => Some((
                model.polls[poll].op,
                "read_committed poll that shows it committed",
            )),
            Fate::Aborted(op) => op
                .or(self.ends.last().copied())
                .map(|op| (op, "the end of the transaction")),
            Fate::Indefinite => self
                .ends
                .last()
                .map(|&op| (op, "the end of the transaction")),
        }
    }

    /// How its fate reads in an explanation.
    fn fate_text(&self) -> String {
        match self.fate {
            Fate::Committed(op) => format!("committed (op {})", op.id),
            Fate::RevealedCommitted(_) => {
                "committed (its end was not answered, a read_committed poll returned it)"
                    .to_string()
            }
            Fate::Aborted(Some(op)) => format!("aborted (op {})", op.id),
            Fate::Aborted(None) if self.ends.is_empty() => {
                "never committed (no commit was asked for)".to_string()
            }
            Fate::Aborted(None) => "never committed (only an abort was asked for)".to_string(),
            Fate::Indefinite => "of unknown outcome".to_string(),
        }
    }
}

/// Every transaction of the history.
#[derive(Default)]
pub(crate) struct Transactions<'a> {
    pub txns: BTreeMap<TxnId, Txn<'a>>,
}

impl<'a> Transactions<'a> {
    /// Indexes the transactions and decides their fates; `model` has every send and poll.
    pub fn build(history: &'a History, model: &Model<'a>) -> Transactions<'a> {
        let mut txns: BTreeMap<TxnId, Txn<'a>> = BTreeMap::new();
        fn entry<'t, 'a>(
            txns: &'t mut BTreeMap<TxnId, Txn<'a>>,
            txn: TxnId,
            producer: Process,
        ) -> &'t mut Txn<'a> {
            txns.entry(txn).or_insert_with(|| Txn {
                producer,
                sends: Vec::new(),
                inputs: Vec::new(),
                offsets: Vec::new(),
                ends: Vec::new(),
                fate: Fate::Indefinite,
            })
        }
        for (i, send) in model.sends.iter().enumerate() {
            if let Some(txn) = send.txn {
                entry(&mut txns, txn, send.producer).sends.push(i);
            }
        }
        for op in &history.ops {
            match &op.kind {
                OpKind::BeginTxn { producer, txn, .. } => {
                    entry(&mut txns, *txn, *producer);
                }
                OpKind::SendOffsetsToTxn { producer, txn, .. } => {
                    entry(&mut txns, *txn, *producer).offsets.push(op);
                }
                OpKind::EndTxn { producer, txn, .. } => {
                    entry(&mut txns, *txn, *producer).ends.push(op)
                }
                _ => {}
            }
        }
        for (i, poll) in model.polls.iter().enumerate() {
            if let Some(txn) = poll.txn {
                // A poll's consumer is not the producer; the transaction exists by its
                // begin or its sends, or is created here with no producer known.
                entry(&mut txns, txn, Process::MAX).inputs.push(i);
            }
        }
        for txn in txns.values_mut() {
            txn.fate = answered_fate(txn);
        }
        // An unanswered commit is revealed by a read_committed read of any of its records.
        for (i, poll) in model.polls.iter().enumerate() {
            if !poll.read_committed() {
                continue;
            }
            for &(_, value) in poll.records {
                let Some(txn) = model
                    .writer_of
                    .get(&value)
                    .and_then(|&s| model.sends[s].txn)
                else {
                    continue;
                };
                if let Some(t) = txns.get_mut(&txn) {
                    if matches!(t.fate, Fate::Indefinite) {
                        t.fate = Fate::RevealedCommitted(i);
                    }
                }
            }
        }
        Transactions { txns }
    }

    pub fn fate(&self, txn: TxnId) -> Option<Fate<'a>> {
        self.txns.get(&txn).map(|t| t.fate)
    }
}

/// The fate the answers to a transaction's commits and aborts give it, before reads reveal
/// anything. An answer Committed wins (an abort answered so found it committed); then an
/// answer Aborted; then a commit that may have taken effect (fenced, unknown, pending) leaves
/// it indefinite; without one it never committed.
fn answered_fate<'a>(txn: &Txn<'a>) -> Fate<'a> {
    let result = |op: &Op| match &op.kind {
        OpKind::EndTxn { commit, result, .. } => (*commit, *result),
        _ => (false, None),
    };
    if let Some(op) = txn
        .ends
        .iter()
        .find(|op| result(op).1 == Some(TxnResult::Committed))
    {
        return Fate::Committed(op);
    }
    if let Some(op) = txn
        .ends
        .iter()
        .find(|op| result(op).1 == Some(TxnResult::Aborted))
    {
        return Fate::Aborted(Some(op));
    }
    let may_commit = txn.ends.iter().any(|op| result(op).0);
    if may_commit {
        Fate::Indefinite
    } else {
        Fate::Aborted(None)
    }
}

/// Runs every transactional analysis.
pub(crate) fn check_transactions(
    history: &History,
    model: &Model<'_>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) {
    // The LSO bounds every read_committed fetch, transactions or not.
    reads_past_lso(model, out);
    if model.txns.txns.is_empty() {
        return;
    }
    uncommitted_reads(model, out);
    circular_information_flow(model, out);
    partial_transactions(model, allowances, out);
    inputs(history, model, out);
}

fn tp_of(poll: &Poll<'_>) -> TopicPartition {
    match &poll.op.kind {
        OpKind::Poll {
            topic, partition, ..
        } => TopicPartition::new(topic, *partition),
        _ => unreachable!("a model poll is a poll operation"),
    }
}

fn isolation_name(poll: &Poll<'_>) -> &'static str {
    if poll.read_committed() {
        "read_committed"
    } else {
        "read_uncommitted"
    }
}

/// The transaction of the send that wrote `value` into `tp`, with the send.
fn txn_of<'m, 'a>(
    model: &'m Model<'a>,
    tp: &TopicPartition,
    value: u64,
) -> Option<(TxnId, &'m Txn<'a>, &'m Send<'a>)> {
    let send = model.writer_in(tp, value)?;
    let id = send.txn?;
    Some((id, model.txns.txns.get(&id)?, send))
}

/// What one group of uncommitted reads (one transaction, partition and kind of reader) saw.
#[derive(Default)]
struct Reads {
    /// (poll index, offset, value), in history order.
    seen: Vec<(usize, i64, u64)>,
}

/// Aborted reads (G1a) and intermediate reads (G1b); one anomaly per transaction, partition,
/// kind and isolation level.
fn uncommitted_reads(model: &Model<'_>, out: &mut Vec<Anomaly>) {
    // (kind, read_committed, txn, tp) → reads
    let mut found: BTreeMap<(AnomalyKind, bool, TxnId, TopicPartition), Reads> = BTreeMap::new();
    for (i, poll) in model.polls.iter().enumerate() {
        let tp = tp_of(poll);
        for &(offset, value) in poll.records {
            let Some((id, txn, _)) = txn_of(model, &tp, value) else {
                continue;
            };
            let kind = match txn.fate {
                Fate::Aborted(_) => AnomalyKind::AbortedRead,
                // Only read_committed promises not to show an open transaction.
                _ if !poll.read_committed() => continue,
                _ => {
                    let read_done = poll.op.complete_ms.unwrap_or(u64::MAX);
                    let before_commit = txn
                        .first_commit()
                        .is_none_or(|commit| read_done < commit.invoke_ms);
                    if !before_commit {
                        continue;
                    }
                    AnomalyKind::IntermediateRead
                }
            };
            found
                .entry((kind, poll.read_committed(), id, tp.clone()))
                .or_default()
                .seen
                .push((i, offset, value));
        }
    }
    for ((kind, read_committed, id, tp), reads) in found {
        let txn = &model.txns.txns[&id];
        let first = &model.polls[reads.seen[0].0];
        let readers: BTreeSet<Process> = reads
            .seen
            .iter()
            .map(|&(p, _, _)| model.polls[p].consumer)
            .collect();
        let readers: Vec<String> = readers.iter().map(|c| c.to_string()).collect();
        let values: Vec<String> = reads
            .seen
            .iter()
            .map(|&(_, o, v)| format!("{v}@{o}"))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (status, explanation) = match kind {
            AnomalyKind::AbortedRead if !read_committed => (
                Status::Allowed {
                    cause: format!(
                        "consumer(s) {} read read_uncommitted, which returns aborted records",
                        readers.join(", ")
                    ),
                },
                format!(
                    "read_uncommitted consumer(s) {} returned {} of transaction {id} of producer \
                     {}, which {}",
                    readers.join(", "),
                    values.join(", "),
                    txn.producer,
                    txn.fate_text()
                ),
            ),
            AnomalyKind::AbortedRead => (
                Status::Violation,
                format!(
                    "read_committed consumer(s) {} returned {} of transaction {id} of producer \
                     {}, which {}: read_committed never returns a record of a transaction that \
                     did not commit",
                    readers.join(", "),
                    values.join(", "),
                    txn.producer,
                    txn.fate_text()
                ),
            ),
            _ => {
                let commit = txn
                    .first_commit()
                    .map_or("no commit was ever asked for".to_string(), |c| {
                        format!("its commit (op {}) was invoked at {} ms", c.id, c.invoke_ms)
                    });
                (
                    Status::Violation,
                    format!(
                        "read_committed consumer(s) {} returned {} of transaction {id} of \
                         producer {} by {} ms, but {commit}: the transaction was still open \
                         when read",
                        readers.join(", "),
                        values.join(", "),
                        txn.producer,
                        first.op.complete_ms.unwrap_or_default()
                    ),
                )
            }
        };
        let mut evidence: Vec<Evidence> = Vec::new();
        let mut shown = BTreeSet::new();
        for &(p, offset, value) in &reads.seen {
            if shown.len() == SHOWN {
                break;
            }
            if shown.insert(p) {
                evidence.push(Evidence::of(
                    model.polls[p].op,
                    format!("{} poll that returned it", isolation_name(&model.polls[p])),
                    Some(offset),
                    Some(value),
                ));
            }
        }
        if let Some(commit) = txn
            .first_commit()
            .filter(|_| kind == AnomalyKind::IntermediateRead)
        {
            evidence.push(Evidence::of(
                commit,
                "the commit, invoked later",
                None,
                None,
            ));
        } else if let Some((op, role)) = txn.fate_op(model) {
            evidence.push(Evidence::of(op, role, None, None));
        }
        out.push(anomaly(
            kind,
            status,
            &tp,
            reads.seen.iter().map(|&(_, o, _)| o),
            reads.seen.iter().map(|&(_, _, v)| v),
            explanation,
            evidence,
        ));
    }
}

/// A read_committed poll that returned records at or past the last stable offset its own
/// fetch answer reported. One per poll.
fn reads_past_lso(model: &Model<'_>, out: &mut Vec<Anomaly>) {
    for poll in &model.polls {
        let Some(lso) = poll.bounds.and_then(|b| b.last_stable_offset) else {
            continue;
        };
        if !poll.read_committed() {
            continue;
        }
        let past: Vec<(i64, u64)> = poll
            .records
            .iter()
            .copied()
            .filter(|&(o, _)| o >= lso)
            .collect();
        let Some(&(first, value)) = past.first() else {
            continue;
        };
        let tp = tp_of(poll);
        out.push(anomaly(
            AnomalyKind::ReadPastLastStableOffset,
            Status::Violation,
            &tp,
            past.iter().map(|&(o, _)| o),
            past.iter().map(|&(_, v)| v),
            format!(
                "read_committed consumer {}'s poll op {} from {} returned {} record(s) at or past \
                 the last stable offset {lso} its own fetch reported (the first at offset \
                 {first}): read_committed reads only below the LSO",
                poll.consumer,
                poll.op.id,
                poll.from_offset,
                past.len()
            ),
            vec![Evidence::of(
                poll.op,
                "read_committed poll past its LSO",
                Some(first),
                Some(value),
            )],
        ));
    }
}

/// A write-read dependency: `reader`'s input poll `poll` returned `value`, written by the
/// transaction the edge comes from.
#[derive(Clone, Copy)]
struct Edge {
    poll: usize,
    offset: i64,
    value: u64,
    read_committed: bool,
}

/// Committed transactions that read each other's writes in a cycle (G1c over write-read
/// dependencies). A cycle whose reads are all read_committed is a violation; one that needs a
/// read_uncommitted read is allowed.
fn circular_information_flow(model: &Model<'_>, out: &mut Vec<Anomaly>) {
    // writer → reader → the first read that makes the edge (of each isolation level).
    let mut graph: BTreeMap<TxnId, BTreeMap<TxnId, Vec<Edge>>> = BTreeMap::new();
    for (&reader, txn) in &model.txns.txns {
        if !txn.fate.committed() {
            continue;
        }
        for &p in &txn.inputs {
            let poll = &model.polls[p];
            let tp = tp_of(poll);
            for &(offset, value) in poll.records {
                let Some((writer, wtxn, _)) = txn_of(model, &tp, value) else {
                    continue;
                };
                if writer == reader || !wtxn.fate.committed() {
                    continue;
                }
                let edges = graph.entry(writer).or_default().entry(reader).or_default();
                if !edges
                    .iter()
                    .any(|e| e.read_committed == poll.read_committed())
                {
                    edges.push(Edge {
                        poll: p,
                        offset,
                        value,
                        read_committed: poll.read_committed(),
                    });
                }
            }
        }
    }
    let edge_of = |from: TxnId, to: TxnId, committed_only: bool| -> Option<Edge> {
        let edges = graph.get(&from)?.get(&to)?;
        edges
            .iter()
            .copied()
            .find(|e| e.read_committed)
            .or_else(|| edges.first().copied().filter(|_| !committed_only))
    };
    let mut reported: BTreeSet<TxnId> = BTreeSet::new();
    for committed_only in [true, false] {
        let successors = |t: TxnId| -> Vec<TxnId> {
            graph
                .get(&t)
                .into_iter()
                .flat_map(|m| m.keys().copied())
                .filter(|&u| edge_of(t, u, committed_only).is_some())
                .collect()
        };
        for component in strongly_connected(&graph, &successors) {
            if component.len() < 2 || component.iter().any(|t| reported.contains(t)) {
                continue;
            }
            reported.extend(component.iter().copied());
            let cycle = cycle_in(&component, &successors);
            let edges: Vec<(TxnId, TxnId, Edge)> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .filter_map(|(&a, &b)| edge_of(a, b, committed_only).map(|e| (a, b, e)))
                .collect();
            let Some(&(_, _, first)) = edges.first() else {
                continue;
            };
            let steps: Vec<String> = edges
                .iter()
                .map(|&(a, b, e)| {
                    format!(
                        "transaction {b} (producer {}) read {}@{} written by transaction {a} \
                         ({})",
                        model.txns.txns[&b].producer,
                        e.value,
                        e.offset,
                        isolation_name(&model.polls[e.poll])
                    )
                })
                .collect();
            let uncommitted_reader = edges
                .iter()
                .find(|(_, _, e)| !e.read_committed)
                .map(|(_, _, e)| model.polls[e.poll].consumer);
            let status = match uncommitted_reader {
                None => Status::Violation,
                Some(consumer) => Status::Allowed {
                    cause: format!(
                        "consumer {consumer} reads read_uncommitted: it may read a transaction \
                         before it commits"
                    ),
                },
            };
            let tp = tp_of(&model.polls[first.poll]);
            let mut evidence = Vec::new();
            for &(a, _, e) in &edges {
                evidence.push(Evidence::of(
                    model.polls[e.poll].op,
                    "input poll of the reading transaction",
                    Some(e.offset),
                    Some(e.value),
                ));
                if let Some(send) = model.writer_in(&tp_of(&model.polls[e.poll]), e.value) {
                    evidence.push(Evidence::of(
                        send.op,
                        format!("send of transaction {a}"),
                        send.acked_offset(),
                        Some(e.value),
                    ));
                }
            }
            let names: Vec<String> = cycle.iter().map(|t| t.to_string()).collect();
            out.push(anomaly(
                AnomalyKind::CircularInformationFlow,
                status,
                &tp,
                edges
                    .iter()
                    .filter(|(_, _, e)| tp_of(&model.polls[e.poll]) == tp)
                    .map(|(_, _, e)| e.offset),
                edges.iter().map(|(_, _, e)| e.value),
                format!(
                    "committed transactions {} read each other's writes in a cycle: {}; each \
                     read a write of the other before committing, so neither came first",
                    names.join(" → "),
                    steps.join("; ")
                ),
                evidence,
            ));
        }
    }
}

/// The strongly connected components of `graph` under `successors` (Kosaraju, iterative: a
/// consume-transform-produce chain makes long paths).
fn strongly_connected(
    graph: &BTreeMap<TxnId, BTreeMap<TxnId, Vec<Edge>>>,
    successors: &dyn Fn(TxnId) -> Vec<TxnId>,
) -> Vec<Vec<TxnId>> {
    let nodes: BTreeSet<TxnId> = graph
        .iter()
        .flat_map(|(&a, m)| std::iter::once(a).chain(m.keys().copied()))
        .collect();
    let mut order = Vec::new();
    let mut visited = BTreeSet::new();
    for &start in &nodes {
        if !visited.insert(start) {
            continue;
        }
        let mut stack = vec![(start, successors(start), 0usize)];
        while let Some((node, next, i)) = stack.last_mut() {
            if let Some(&u) = next.get(*i) {
                *i += 1;
                if visited.insert(u) {
                    stack.push((u, successors(u), 0));
                }
            } else {
                order.push(*node);
                stack.pop();
            }
        }
    }
    let mut reverse: BTreeMap<TxnId, Vec<TxnId>> = BTreeMap::new();
    for &a in &nodes {
        for b in successors(a) {
            reverse.entry(b).or_default().push(a);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut components = Vec::new();
    for &root in order.iter().rev() {
        if !assigned.insert(root) {
            continue;
        }
        let mut component = vec![root];
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            for &u in reverse.get(&node).into_iter().flatten() {
                if assigned.insert(u) {
                    component.push(u);
                    stack.push(u);
                }
            }
        }
        component.sort_unstable();
        components.push(component);
    }
    components.sort();
    components
}

/// A shortest cycle through the smallest node of a strongly connected `component`.
fn cycle_in(component: &[TxnId], successors: &dyn Fn(TxnId) -> Vec<TxnId>) -> Vec<TxnId> {
    let inside: BTreeSet<TxnId> = component.iter().copied().collect();
    let start = component[0];
    let mut parent: BTreeMap<TxnId, TxnId> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for u in successors(node) {
            if !inside.contains(&u) {
                continue;
            }
            if u == start {
                let mut path = vec![node];
                while let Some(&p) = parent.get(path.last().expect("non-empty")) {
                    path.push(p);
                }
                path.reverse();
                return path;
            }
            if u != start && !parent.contains_key(&u) {
                parent.insert(u, node);
                queue.push_back(u);
            }
        }
    }
    component.to_vec()
}

/// Committed transactions some of whose records a poll returned while a poll passed over the
/// offset of another of its records without returning it. One per transaction and partition.
fn partial_transactions(model: &Model<'_>, allowances: &Allowances, out: &mut Vec<Anomaly>) {
    for (&id, txn) in &model.txns.txns {
        if !txn.fate.committed() {
            continue;
        }
        // Some record of it was read: the transaction is visible.
        let visible = txn.sends.iter().find_map(|&s| {
            let send = &model.sends[s];
            let part = model.partitions.get(&send.tp)?;
            let &(poll, offset) = part.reads.get(&send.value)?.first()?;
            Some((send, poll, offset))
        });
        let Some((seen_send, seen_poll, seen_offset)) = visible else {
            continue;
        };
        // tp → (offset, send, the poll that passed over it)
        let mut missing: BTreeMap<TopicPartition, Vec<(i64, &Send<'_>, usize)>> = BTreeMap::new();
        for &s in &txn.sends {
            let send = &model.sends[s];
            let Some(part) = model.partitions.get(&send.tp) else {
                continue;
            };
            let reads = part.reads.get(&send.value);
            let Some(offset) = send
                .acked_offset()
                .or_else(|| reads.and_then(|r| r.first()).map(|&(_, o)| o))
            else {
                continue;
            };
            let passed = part.polls.iter().copied().find(|&p| {
                let poll = &model.polls[p];
                poll.passed_over(offset) && !poll.records.contains(&(offset, send.value))
            });
            if let Some(p) = passed {
                missing
                    .entry(send.tp.clone())
                    .or_default()
                    .push((offset, send, p));
            }
        }
        for (tp, records) in missing {
            let causes: Option<Vec<String>> = records
                .iter()
                .map(|&(_, send, _)| {
                    let appended = model.appended_by_ms(send);
                    if model
                        .partitions
                        .get(&tp)
                        .is_some_and(|part| part.was_read(send.value))
                    {
                        allowances.read_loss(send, appended)
                    } else {
                        allowances.loss(send, appended)
                    }
                })
                .collect();
            let status = Status::from_cause(causes.map(|mut causes| {
                causes.dedup();
                format!(
                    "the missing records may have been lost: {}",
                    causes.join("; ")
                )
            }));
            let list: Vec<String> = records
                .iter()
                .map(|&(o, send, p)| {
                    format!(
                        "{}@{o} (poll op {} of consumer {} passed over it)",
                        send.value, model.polls[p].op.id, model.polls[p].consumer
                    )
                })
                .collect();
            let mut evidence = Vec::new();
            if let Some((op, role)) = txn.fate_op(model) {
                evidence.push(Evidence::of(op, role, None, None));
            }
            evidence.push(Evidence::of(
                model.polls[seen_poll].op,
                "poll that returned a record of it",
                Some(seen_offset),
                Some(seen_send.value),
            ));
            for &(offset, send, p) in records.iter().take(SHOWN) {
                evidence.push(Evidence::of(
                    send.op,
                    "send of the missing record",
                    send.acked_offset(),
                    Some(send.value),
                ));
                evidence.push(Evidence::of(
                    model.polls[p].op,
                    "poll that passed over it",
                    Some(offset),
                    None,
                ));
            }
            out.push(anomaly(
                AnomalyKind::PartialTransaction,
                status,
                &tp,
                records.iter().map(|&(o, _, _)| o),
                records.iter().map(|&(_, s, _)| s.value),
                format!(
                    "transaction {id} of producer {} {}, and poll op {} returned its record \
                     {}@{seen_offset}, but in {tp} {}: a committed transaction is visible whole \
                     or not at all",
                    txn.producer,
                    txn.fate_text(),
                    model.polls[seen_poll].op.id,
                    seen_send.value,
                    list.join(", ")
                ),
                evidence,
            ));
        }
    }
}

/// Input record (offset, value) → the transactions that consumed it.
type Consumers = BTreeMap<(i64, u64), Vec<TxnId>>;

/// Consume-transform-produce: a group's committed offset past inputs whose outputs never
/// committed, and inputs whose outputs committed twice. Judged against the group's final
/// committed offsets (the runner's last fetch, as for `skipped_by_group`).
fn inputs(history: &History, model: &Model<'_>, out: &mut Vec<Anomaly>) {
    // (group, tp) → the final committed offset, with its fetch.
    let mut finals: BTreeMap<(&str, TopicPartition), (i64, &Op)> = BTreeMap::new();
    for op in &history.ops {
        if let OpKind::FetchCommitted {
            consumer: FINAL_READER,
            group,
            topic,
            partition,
            offset,
        } = &op.kind
        {
            if !matches!(op.outcome, Outcome::Ok { .. }) {
                continue;
            }
            let key = (group.as_str(), TopicPartition::new(topic, *partition));
            match offset {
                Some(o) => finals.insert(key, (*o, op)),
                None => finals.remove(&key),
            };
        }
    }
    // (group, tp) → input (offset, value) → the transactions of that group that consumed it.
    let mut consumed: BTreeMap<(&str, TopicPartition), Consumers> = BTreeMap::new();
    for (&id, txn) in &model.txns.txns {
        let groups: BTreeSet<&str> = txn
            .offsets
            .iter()
            .filter_map(|op| match &op.kind {
                OpKind::SendOffsetsToTxn { group, .. } => Some(group.as_str()),
                _ => None,
            })
            .collect();
        for &p in &txn.inputs {
            let poll = &model.polls[p];
            let tp = tp_of(poll);
            for &group in &groups {
                let inputs = consumed.entry((group, tp.clone())).or_default();
                for &record in poll.records {
                    let txns = inputs.entry(record).or_default();
                    if !txns.contains(&id) {
                        txns.push(id);
                    }
                }
            }
        }
    }
    for ((group, tp), inputs) in &consumed {
        for (&(offset, value), txns) in inputs {
            let poll_of = |id: TxnId| {
                model.txns.txns[&id]
                    .inputs
                    .iter()
                    .copied()
                    .find(|&p| model.polls[p].records.contains(&(offset, value)))
            };
            // Without output: the final committed offset is past it, and every transaction
            // that consumed it never committed.
            if let Some(&(committed, fetch)) = finals.get(&(*group, tp.clone())) {
                let all_aborted = txns
                    .iter()
                    .all(|id| matches!(model.txns.txns[id].fate, Fate::Aborted(_)));
                if offset < committed && all_aborted {
                    let mut evidence = vec![Evidence::of(
                        fetch,
                        "the group's final committed offset",
                        Some(committed),
                        None,
                    )];
                    let mut names = Vec::new();
                    for &id in txns.iter().take(SHOWN) {
                        let txn = &model.txns.txns[&id];
                        names.push(format!("{id} ({})", txn.fate_text()));
                        if let Some(p) = poll_of(id) {
                            evidence.push(Evidence::of(
                                model.polls[p].op,
                                format!("input poll of transaction {id}"),
                                Some(offset),
                                Some(value),
                            ));
                        }
                        if let Some((op, role)) = txn.fate_op(model) {
                            evidence.push(Evidence::of(op, role, None, None));
                        }
                    }
                    out.push(anomaly(
                        AnomalyKind::InputCommittedWithoutOutput,
                        Status::Violation,
                        tp,
                        [offset],
                        [value],
                        format!(
                            "group {group} ended with committed offset {committed} (fetch op {}), \
                             past input {value}@{offset}, but the only transactions that \
                             consumed it, {}, never committed: its output was never committed",
                            fetch.id,
                            names.join(", ")
                        ),
                        evidence,
                    ));
                }
            }
            // Twice: two committed transactions consumed it and committed offsets past it.
            let committers: Vec<TxnId> = txns
                .iter()
                .copied()
                .filter(|id| {
                    let txn = &model.txns.txns[id];
                    txn.fate.committed() && txn.offset_for(group, tp).is_some_and(|o| o > offset)
                })
                .collect();
            if committers.len() >= 2 {
                let mut evidence = Vec::new();
                let mut names = Vec::new();
                for &id in &committers {
                    let txn = &model.txns.txns[&id];
                    names.push(format!(
                        "{id} of producer {} (offset {}, {})",
                        txn.producer,
                        txn.offset_for(group, tp).unwrap_or_default(),
                        txn.fate_text()
                    ));
                    if let Some(p) = poll_of(id) {
                        evidence.push(Evidence::of(
                            model.polls[p].op,
                            format!("input poll of transaction {id}"),
                            Some(offset),
                            Some(value),
                        ));
                    }
                    if let Some((op, role)) = txn.fate_op(model) {
                        evidence.push(Evidence::of(op, role, None, None));
                    }
                }
                out.push(anomaly(
                    AnomalyKind::InputCommittedTwice,
                    Status::Violation,
                    tp,
                    [offset],
                    [value],
                    format!(
                        "group {group}: input {value}@{offset} was consumed by committed \
                         transactions {}, each committing the group's offset past it: its \
                         output was committed twice",
                        names.join(" and ")
                    ),
                    evidence,
                ));
            }
        }
    }
}
