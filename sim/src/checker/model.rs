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
        // The partitions as the ops name them, in order of first appearance, each with what
        // its maps will hold, gathered flat and sorted once at the end: inserting tens of
        // thousands of placements one by one into maps was most of the checker's time.
        let mut gathered: Vec<Gathered<'a>> = Vec::new();
        let mut writers: Vec<(u64, usize)> = Vec::new();
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
                    let at = Gathered::find(&mut gathered, topic, *partition);
                    let index = model.sends.len();
                    let send = Send {
                        op,
                        producer: *producer,
                        tp: gathered[at].tp.clone(),
                        key: *key,
                        value: *value,
                        acks: *acks,
                        class: classify(&op.outcome),
                        txn: *txn,
                    };
                    writers.push((*value, index));
                    let part = &mut gathered[at];
                    part.present = true;
                    part.part.sends.push(index);
                    if let Some(offset) = send.acked_offset() {
                        part.placed.push((offset, *value, Source::Ack(index)));
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
                    let ok = matches!(op.outcome, Outcome::Ok { .. });
                    let at = Gathered::find(&mut gathered, topic, *partition);
                    let part = &mut gathered[at];
                    if *consumer == FINAL_READER {
                        let entry = part.final_polls.get_or_insert_with(Default::default);
                        entry.1 |= !ok;
                        if ok {
                            entry.0.push(model.polls.len());
                        }
                    }
                    if !ok {
                        continue;
                    }
                    let index = model.polls.len();
                    part.present = true;
                    part.part.polls.push(index);
                    part.placed.reserve(records.len());
                    part.reads.reserve(records.len());
                    for &(offset, value) in records {
                        part.placed.push((offset, value, Source::Read(index)));
                        part.reads.push((value, index, offset));
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
        // The first send of a value is its writer (values are unique per run). A stable sort
        // keeps each value's sends in history order.
        writers.sort_by_key(|&(value, _)| value);
        writers.dedup_by_key(|&mut (value, _)| value);
        model.writer_of = writers.into_iter().collect();
        let mut partitions = Vec::with_capacity(gathered.len());
        for gathered in gathered.into_iter().filter(|g| g.present) {
            let (tp, part) = gathered.finish(&model.polls);
            partitions.push((tp, part));
        }
        model.partitions = partitions.into_iter().collect();
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

/// One partition's part of the model while [`Model::build`] reads the history: its placements
/// and reads gathered flat, in history order, and sorted into its maps once at the end.
struct Gathered<'a> {
    topic: &'a str,
    tp: TopicPartition,
    part: Partition,
    /// (offset, value, source): every value placed at an offset.
    placed: Vec<(i64, u64, Source)>,
    /// (value, poll, offset): every read of a value.
    reads: Vec<(u64, usize, i64)>,
    /// The final reader's ok polls here, and whether any of its polls here did not complete
    /// ok (`None`: it never polled this partition).
    final_polls: Option<(Vec<usize>, bool)>,
    /// Whether a send or an ok poll named it: a partition only failed polls named is not in
    /// the model.
    present: bool,
}

impl<'a> Gathered<'a> {
    /// The index in `gathered` of `topic`'s `partition`, added when new. A run has a few
    /// dozen partitions at most: a scan is cheaper than a map keyed by an owned name.
    fn find(gathered: &mut Vec<Gathered<'a>>, topic: &'a str, partition: i32) -> usize {
        if let Some(at) = gathered
            .iter()
            .position(|g| g.tp.partition == partition && g.topic == topic)
        {
            return at;
        }
        gathered.push(Gathered {
            topic,
            tp: TopicPartition::new(topic, partition),
            part: Partition::default(),
            placed: Vec::new(),
            reads: Vec::new(),
            final_polls: None,
            present: false,
        });
        gathered.len() - 1
    }

    /// Sorts what was gathered into the partition's maps: each offset's values ascending, each
    /// value's sources and reads in history order (stable sorts keep it).
    fn finish(mut self, polls: &[Poll<'_>]) -> (TopicPartition, Partition) {
        sort_dense(&mut self.placed, |&(offset, _, _)| i128::from(offset));
        let mut observed = Vec::new();
        let mut rest = self.placed.as_mut_slice();
        while let Some(&(offset, _, _)) = rest.first() {
            let here = rest.iter().take_while(|p| p.0 == offset).count();
            let (at_offset, after) = std::mem::take(&mut rest).split_at_mut(here);
            rest = after;
            // Almost always one value, placed by an acknowledgement and a few reads: an
            // insertion sort (stable) puts them in value order.
            for i in 1..at_offset.len() {
                let mut j = i;
                while j > 0 && at_offset[j - 1].1 > at_offset[j].1 {
                    at_offset.swap(j - 1, j);
                    j -= 1;
                }
            }
            let at_offset = &*at_offset;
            let mut values =
                Vec::with_capacity(1 + at_offset.windows(2).filter(|w| w[0].1 != w[1].1).count());
            let mut by_value = at_offset;
            while let Some(&(_, value, _)) = by_value.first() {
                let same = by_value.iter().take_while(|p| p.1 == value).count();
                let (sources, after) = by_value.split_at(same);
                by_value = after;
                values.push((value, sources.iter().map(|&(_, _, s)| s).collect()));
            }
            observed.push((offset, Placed(values)));
        }
        self.part.observed = observed.into_iter().collect();
        sort_dense(&mut self.reads, |&(value, _, _)| i128::from(value));
        let mut reads = Vec::new();
        let mut rest = self.reads.as_slice();
        while let Some(&(value, _, _)) = rest.first() {
            let same = rest.iter().take_while(|r| r.0 == value).count();
            let (of_value, after) = rest.split_at(same);
            rest = after;
            reads.push((
                value,
                of_value
                    .iter()
                    .map(|&(_, poll, offset)| (poll, offset))
                    .collect(),
            ));
        }
        self.part.reads = reads.into_iter().collect();
        if let Some((final_polls, false)) = self.final_polls {
            let records: BTreeSet<(i64, u64)> = final_polls
                .iter()
                .flat_map(|&i| polls[i].records.iter().copied())
                .collect();
            let values = records.iter().map(|&(_, v)| v).collect();
            let read_committed = final_polls.iter().any(|&i| polls[i].read_committed());
            self.part.final_read = Some(FinalRead {
                values,
                records,
                polls: final_polls,
                read_committed,
            });
        }
        (self.tp, self.part)
    }
}

/// Sorts `items` by `key`, stably. Offsets and values are dense (a partition's offsets run from
/// its log start, values are a run's counter), so a counting sort does it in linear time when
/// the keys span a range not much wider than their number; otherwise a comparison sort.
fn sort_dense<T: Copy>(items: &mut [T], key: impl Fn(&T) -> i128) {
    let (Some(min), Some(max)) = (items.iter().map(&key).min(), items.iter().map(&key).max())
    else {
        return;
    };
    let span = max - min + 1;
    if span > 4 * items.len() as i128 + 64 {
        items.sort_by_key(key);
        return;
    }
    // starts[k]: where the items of key min + k go.
    let mut starts = vec![0usize; span as usize + 1];
    for item in items.iter() {
        starts[(key(item) - min) as usize + 1] += 1;
    }
    for k in 1..starts.len() {
        starts[k] += starts[k - 1];
    }
    let unsorted = items.to_vec();
    for item in unsorted {
        let at = &mut starts[(key(&item) - min) as usize];
        items[*at] = item;
        *at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`Model::build`] indexes, as plain values to compare.
    type Projection = (
        Vec<(u64, usize)>,
        Vec<(TopicPartition, PartitionProjection)>,
    );

    type PartitionProjection = (
        Vec<usize>,
        Vec<usize>,
        Vec<(i64, Vec<(u64, Vec<Source>)>)>,
        Vec<(u64, Vec<(usize, i64)>)>,
        Option<(Vec<u64>, Vec<(i64, u64)>, Vec<usize>, bool)>,
    );

    fn project(model: &Model<'_>) -> Projection {
        let writers = model.writer_of.iter().map(|(&v, &i)| (v, i)).collect();
        let partitions = model
            .partitions
            .iter()
            .map(|(tp, part)| {
                let observed = part
                    .observed
                    .iter()
                    .map(|(&offset, placed)| {
                        let values = placed.iter().map(|(&v, s)| (v, s.clone())).collect();
                        (offset, values)
                    })
                    .collect();
                let reads = part.reads.iter().map(|(&v, r)| (v, r.clone())).collect();
                let final_read = part.final_read.as_ref().map(|f| {
                    (
                        f.values.iter().copied().collect(),
                        f.records.iter().copied().collect(),
                        f.polls.clone(),
                        f.read_committed,
                    )
                });
                let shape = (part.sends.clone(), part.polls.clone(), observed, reads);
                (tp.clone(), (shape.0, shape.1, shape.2, shape.3, final_read))
            })
            .collect();
        (writers, partitions)
    }

    /// Records that `source` places `value` at the offset of `placed`, as the checker first
    /// did.
    fn place(placed: &mut Placed, value: u64, source: Source) {
        match placed.0.binary_search_by_key(&value, |(v, _)| *v) {
            Ok(at) => placed.0[at].1.push(source),
            Err(at) => placed.0.insert(at, (value, vec![source])),
        }
    }

    /// The index as the checker first built it, op by op into maps: the reference the sorted
    /// build must agree with.
    fn reference(history: &History) -> Projection {
        let mut writer_of: BTreeMap<u64, usize> = BTreeMap::new();
        let mut partitions: BTreeMap<TopicPartition, Partition> = BTreeMap::new();
        let mut final_polls: BTreeMap<TopicPartition, (Vec<usize>, bool)> = BTreeMap::new();
        let mut polls: Vec<(&[(i64, u64)], bool)> = Vec::new();
        let mut sends = 0;
        for op in &history.ops {
            match &op.kind {
                OpKind::Send {
                    topic,
                    partition,
                    value,
                    ..
                } => {
                    let tp = TopicPartition::new(topic, *partition);
                    let index = sends;
                    sends += 1;
                    writer_of.entry(*value).or_insert(index);
                    let part = partitions.entry(tp).or_default();
                    part.sends.push(index);
                    if let SendClass::Acked(Some(offset)) = classify(&op.outcome) {
                        place(
                            part.observed.entry(offset).or_default(),
                            *value,
                            Source::Ack(index),
                        );
                    }
                }
                OpKind::Poll {
                    consumer,
                    topic,
                    partition,
                    records,
                    isolation,
                    ..
                } => {
                    let tp = TopicPartition::new(topic, *partition);
                    let ok = matches!(op.outcome, Outcome::Ok { .. });
                    if *consumer == FINAL_READER {
                        let entry = final_polls.entry(tp.clone()).or_default();
                        entry.1 |= !ok;
                        if ok {
                            entry.0.push(polls.len());
                        }
                    }
                    if !ok {
                        continue;
                    }
                    let index = polls.len();
                    let part = partitions.entry(tp).or_default();
                    part.polls.push(index);
                    for &(offset, value) in records {
                        place(
                            part.observed.entry(offset).or_default(),
                            value,
                            Source::Read(index),
                        );
                        part.reads.entry(value).or_default().push((index, offset));
                    }
                    polls.push((records, *isolation == IsolationLevel::ReadCommitted));
                }
                _ => {}
            }
        }
        for (tp, (final_polls, incomplete)) in final_polls {
            if incomplete {
                continue;
            }
            let records: BTreeSet<(i64, u64)> = final_polls
                .iter()
                .flat_map(|&i| polls[i].0.iter().copied())
                .collect();
            let values = records.iter().map(|&(_, v)| v).collect();
            let read_committed = final_polls.iter().any(|&i| polls[i].1);
            partitions.entry(tp).or_default().final_read = Some(FinalRead {
                values,
                records,
                polls: final_polls,
                read_committed,
            });
        }
        let model = Model {
            sends: Vec::new(),
            polls: Vec::new(),
            writer_of,
            partitions,
            txns: Transactions::default(),
            uncommitted: BTreeSet::new(),
        };
        project(&model)
    }

    /// A messy history: values written twice and to two partitions, offsets holding several
    /// values, a value at several offsets, polls that failed (one partition named only by
    /// failed polls), final reads complete, incomplete and read_committed, out of order.
    fn messy(seed: u64) -> History {
        let mut state = seed;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let mut ops = Vec::new();
        let topics = ["a", "b"];
        for i in 0..400 {
            let topic = topics[next(2) as usize].to_string();
            let partition = next(3) as i32;
            let outcome = match next(4) {
                0 => Outcome::Ok { offset: None },
                1 => Outcome::unknown("timed out".into(), None),
                2 => Outcome::fail("refused".into(), None),
                _ => Outcome::Ok {
                    offset: Some(next(12) as i64 - 1),
                },
            };
            let kind = if next(2) == 0 {
                OpKind::Send {
                    producer: 1,
                    topic,
                    partition,
                    key: None,
                    value: next(30),
                    acks: -1,
                    txn: None,
                }
            } else {
                let records = (0..next(5))
                    .map(|_| (next(12) as i64 - 1, next(30)))
                    .collect();
                OpKind::Poll {
                    consumer: if next(3) == 0 { FINAL_READER } else { 2 },
                    topic,
                    partition,
                    from_offset: 0,
                    records,
                    group: None,
                    isolation: if next(2) == 0 {
                        IsolationLevel::ReadCommitted
                    } else {
                        IsolationLevel::ReadUncommitted
                    },
                    txn: None,
                    bounds: None,
                }
            };
            ops.push(Op {
                id: i,
                kind,
                invoke_ms: i as u64,
                complete_ms: Some(i as u64 + 1),
                outcome,
            });
        }
        // An offset far from the rest: the sorts take their comparison path.
        if seed.is_multiple_of(5) {
            ops.push(Op {
                id: ops.len(),
                kind: OpKind::Poll {
                    consumer: 2,
                    topic: "a".into(),
                    partition: 0,
                    from_offset: 0,
                    records: vec![(i64::MAX, u64::MAX), (i64::MIN, 3), (4, u64::MAX)],
                    group: None,
                    isolation: IsolationLevel::ReadUncommitted,
                    txn: None,
                    bounds: None,
                },
                invoke_ms: 499,
                complete_ms: Some(500),
                outcome: Outcome::Ok { offset: None },
            });
        }
        // A partition only failed polls name.
        ops.push(Op {
            id: ops.len(),
            kind: OpKind::Poll {
                consumer: 2,
                topic: "c".into(),
                partition: 0,
                from_offset: 0,
                records: vec![(0, 1)],
                group: None,
                isolation: IsolationLevel::ReadUncommitted,
                txn: None,
                bounds: None,
            },
            invoke_ms: 500,
            complete_ms: Some(501),
            outcome: Outcome::fail("refused".into(), None),
        });
        History {
            ops,
            tombstones: BTreeSet::new(),
        }
    }

    /// Both ways of sorting keep equal keys in their order.
    #[test]
    fn the_dense_sort_is_a_stable_sort() {
        for spread in [1, 3, 1_000, i64::MAX] {
            let items: Vec<(i64, usize)> = (0..500)
                .map(|i| ((i as i64 * 7_919) % 13 * (spread / 13).max(1) - 5, i))
                .collect();
            let mut dense = items.clone();
            sort_dense(&mut dense, |&(k, _)| i128::from(k));
            let mut stable = items;
            stable.sort_by_key(|&(k, _)| k);
            assert_eq!(dense, stable, "spread {spread}");
        }
    }

    #[test]
    fn the_sorted_build_indexes_a_history_as_inserting_op_by_op_did() {
        for seed in 0..50 {
            let history = messy(seed);
            let model = Model::build(&history);
            assert_eq!(project(&model), reference(&history), "seed {seed}");
        }
    }
}
