//! What the history says about each partition's log: who wrote which value, which offsets the
//! acknowledgements and the polls place values at, and the final read. Every analysis reads this
//! index; nothing here judges.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{FetchBounds, History, IsolationLevel, Op, OpKind, Outcome, Process, TxnId};

use super::transactions::Transactions;
use super::{is_indefinite, TopicPartition, FINAL_READER};

/// How a send ended, as far as the checker is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendClass {
    /// Acknowledged, with the offset when the broker gave one (acks=0 gives none).
    Acked(Option<i64>),
    /// Definitely not written.
    Failed,
    /// Maybe written: unknown, pending, or an ambiguous refusal.
    Indefinite,
}

pub(crate) struct Send<'a> {
    pub op: &'a Op,
    pub producer: Process,
    pub tp: TopicPartition,
    pub key: Option<u64>,
    pub value: u64,
    pub acks: i16,
    pub class: SendClass,
    /// The transaction it belongs to, if any.
    pub txn: Option<TxnId>,
}

impl Send<'_> {
    pub fn acked_offset(&self) -> Option<i64> {
        match self.class {
            SendClass::Acked(offset) => offset,
            _ => None,
        }
    }
}

/// A poll that completed ok (only those say anything about the log).
pub(crate) struct Poll<'a> {
    pub op: &'a Op,
    pub consumer: Process,
    /// The consumer group of a member's poll (`None`: a plain consumer or the final read).
    pub group: Option<&'a str>,
    pub from_offset: i64,
    pub records: &'a [(i64, u64)],
    pub isolation: IsolationLevel,
    /// The transaction whose inputs these records are (consume-transform-produce).
    pub txn: Option<TxnId>,
    pub bounds: Option<FetchBounds>,
    /// The highest offset in `records`, computed once: lost-write checks ask for every
    /// unread acknowledged send.
    max_offset: Option<i64>,
}

impl Poll<'_> {
    pub fn read_committed(&self) -> bool {
        self.isolation == IsolationLevel::ReadCommitted
    }

    /// The highest offset this poll returned.
    pub fn max_offset(&self) -> Option<i64> {
        self.max_offset
    }

    /// Whether this poll read over `offset`: it started at or before it and returned a record
    /// at or after it, so a value at `offset` should have been in it.
    pub fn passed_over(&self, offset: i64) -> bool {
        self.from_offset <= offset && self.max_offset().is_some_and(|max| max >= offset)
    }
}

/// Where the checker learned that a value sits at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    /// The acknowledgement of send `sends[i]`.
    Ack(usize),
    /// Poll `polls[i]` returned it.
    Read(usize),
}

/// The values placed at one offset, ascending, each with every source placing it there. Almost
/// always one value: a sorted vector, not a map (a run places tens of thousands of values).
#[derive(Default)]
pub(crate) struct Placed(Vec<(u64, Vec<Source>)>);

impl Placed {
    /// Records that `source` places `value` here.
    fn place(&mut self, value: u64, source: Source) {
        match self.0.binary_search_by_key(&value, |(v, _)| *v) {
            Ok(at) => self.0[at].1.push(source),
            Err(at) => self.0.insert(at, (value, vec![source])),
        }
    }

    /// How many different values are placed here.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The values, ascending.
    pub fn keys(&self) -> impl Iterator<Item = &u64> + '_ {
        self.0.iter().map(|(v, _)| v)
    }

    /// The values, ascending, with their sources.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Vec<Source>)> + '_ {
        self.0.iter().map(|(v, sources)| (v, sources))
    }
}

impl std::ops::Index<&u64> for Placed {
    type Output = Vec<Source>;

    fn index(&self, value: &u64) -> &Vec<Source> {
        let at = self
            .0
            .binary_search_by_key(value, |(v, _)| *v)
            .expect("a value placed at this offset");
        &self.0[at].1
    }
}

#[derive(Default)]
pub(crate) struct Partition {
    /// Indexes into [`Model::sends`] of the sends that targeted this partition.
    pub sends: Vec<usize>,
    /// Indexes into [`Model::polls`], in history (invocation) order.
    pub polls: Vec<usize>,
    /// offset → value → every source placing the value there.
    pub observed: BTreeMap<i64, Placed>,
    /// value → every poll (index into [`Model::polls`]) that returned it, with the offset.
    pub reads: BTreeMap<u64, Vec<(usize, i64)>>,
    /// The final full read, when the run did one and every one of its polls completed ok.
    pub final_read: Option<FinalRead>,
}

pub(crate) struct FinalRead {
    /// The values the final read returned.
    pub values: BTreeSet<u64>,
    /// The same, with their offsets: a value a non-idempotent retry wrote twice may survive at
    /// one offset and be lost at the other.
    pub records: BTreeSet<(i64, u64)>,
    /// Its polls (indexes into [`Model::polls`]).
    pub polls: Vec<usize>,
    /// Whether it read read_committed (then records of transactions that did not commit are
    /// not expected in it).
    pub read_committed: bool,
}

impl Partition {
    /// Every value the model places at `offset`.
    pub fn values_at(&self, offset: i64) -> impl Iterator<Item = u64> + '_ {
        self.observed
            .get(&offset)
            .into_iter()
            .flat_map(|values| values.keys().copied())
    }

    pub fn was_read(&self, value: u64) -> bool {
        self.reads.contains_key(&value)
    }
}

pub(crate) struct Model<'a> {
    pub sends: Vec<Send<'a>>,
    pub polls: Vec<Poll<'a>>,
    /// value → index into `sends` of the send that wrote it (values are unique per run).
    pub writer_of: BTreeMap<u64, usize>,
    pub partitions: BTreeMap<TopicPartition, Partition>,
    /// Every transaction, with how it ended.
    pub txns: Transactions<'a>,
    /// The values of transactions that did not commit (aborted, or not known to have
    /// committed): a read_committed reader must not return them, so it is never expected to.
    pub uncommitted: BTreeSet<u64>,
}

pub(crate) fn classify(outcome: &Outcome) -> SendClass {
    match outcome {
        Outcome::Ok { offset } => SendClass::Acked(*offset),
        outcome if is_indefinite(outcome) => SendClass::Indefinite,
        _ => SendClass::Failed,
    }
}

impl<'a> Model<'a> {
    pub fn build(history: &'a History) -> Model<'a> {
        let mut model = Model {
            sends: Vec::new(),
            polls: Vec::new(),
            writer_of: BTreeMap::new(),
            partitions: BTreeMap::new(),
            txns: Transactions::default(),
            uncommitted: BTreeSet::new(),
        };
        // Final-reader polls per partition, and whether any of them did not complete ok.
        let mut final_polls: BTreeMap<TopicPartition, (Vec<usize>, bool)> = BTreeMap::new();
        for op in &history.ops {
            match &op.kind {
                OpKind::Send {
                    producer,
                    topic,
                    partition,
                    key,
                    value,
                    acks,
                    txn,
                } => {
                    let tp = TopicPartition::new(topic, *partition);
                    let index = model.sends.len();
                    let send = Send {
                        op,
                        producer: *producer,
                        tp: tp.clone(),
                        key: *key,
                        value: *value,
                        acks: *acks,
                        class: classify(&op.outcome),
                        txn: *txn,
                    };
                    model.writer_of.entry(*value).or_insert(index);
                    let part = model.partitions.entry(tp).or_default();
                    part.sends.push(index);
                    if let Some(offset) = send.acked_offset() {
                        part.observed
                            .entry(offset)
                            .or_default()
                            .place(*value, Source::Ack(index));
                    }
                    model.sends.push(send);
                }
                OpKind::Poll {
                    consumer,
                    topic,
                    partition,
                    from_offset,
                    records,
                    group,
                    isolation,
                    txn,
                    bounds,
                } => {
                    let tp = TopicPartition::new(topic, *partition);
                    let ok = matches!(op.outcome, Outcome::Ok { .. });
                    if *consumer == FINAL_READER {
                        let entry = final_polls.entry(tp.clone()).or_default();
                        entry.1 |= !ok;
                        if ok {
                            entry.0.push(model.polls.len());
                        }
                    }
                    if !ok {
                        continue;
                    }
                    let index = model.polls.len();
                    let part = model.partitions.entry(tp).or_default();
                    part.polls.push(index);
                    for &(offset, value) in records {
                        part.observed
                            .entry(offset)
                            .or_default()
                            .place(value, Source::Read(index));
                        part.reads.entry(value).or_default().push((index, offset));
                    }
                    model.polls.push(Poll {
                        op,
                        consumer: *consumer,
                        group: group.as_deref(),
                        from_offset: *from_offset,
                        records: records.as_slice(),
                        isolation: *isolation,
                        txn: *txn,
                        bounds: *bounds,
                        max_offset: records.iter().map(|&(offset, _)| offset).max(),
                    });
                }
                // Group commits and fetches are checked by `groups`, transactions by
                // `transactions`, not here.
                OpKind::Commit { .. }
                | OpKind::FetchCommitted { .. }
                | OpKind::BeginTxn { .. }
                | OpKind::SendOffsetsToTxn { .. }
                | OpKind::EndTxn { .. } => {}
            }
        }
        for (tp, (polls, incomplete)) in final_polls {
            if incomplete {
                continue;
            }
            let records: BTreeSet<(i64, u64)> = polls
                .iter()
                .flat_map(|&i| model.polls[i].records.iter().copied())
                .collect();
            let values = records.iter().map(|&(_, v)| v).collect();
            let read_committed = polls.iter().any(|&i| model.polls[i].read_committed());
            model.partitions.entry(tp).or_default().final_read = Some(FinalRead {
                values,
                records,
                polls,
                read_committed,
            });
        }
        model.txns = Transactions::build(history, &model);
        model.uncommitted = model
            .sends
            .iter()
            .filter(|send| {
                send.txn
                    .is_some_and(|txn| !model.txns.fate(txn).is_some_and(|f| f.committed()))
            })
            .map(|send| send.value)
            .collect();
        model
    }

    /// The send that wrote `value` into `tp`, if one did.
    pub fn writer_in(&self, tp: &TopicPartition, value: u64) -> Option<&Send<'a>> {
        self.writer_of
            .get(&value)
            .map(|&i| &self.sends[i])
            .filter(|send| &send.tp == tp)
    }

    /// The latest time by which `send` was certainly appended, if it certainly was: its
    /// acknowledgement, or the completion of the first poll that returned it.
    pub fn appended_by_ms(&self, send: &Send<'_>) -> Option<u64> {
        let acked = match send.class {
            SendClass::Acked(_) => send.op.complete_ms,
            _ => None,
        };
        let read = self
            .partitions
            .get(&send.tp)
            .and_then(|part| part.reads.get(&send.value))
            .into_iter()
            .flatten()
            .filter_map(|&(poll, _)| self.polls[poll].op.complete_ms)
            .min();
        match (acked, read) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }
}
