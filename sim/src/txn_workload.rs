//! Transactional producers of a simulated workload (`transactional = true`), recorded for the
//! transactions checker ([`crate::checker`], "Transactions").
//!
//! Each process runs Faultline's [`TransactionalProducer`] in a loop of transactions:
//! - `begin` (a [`OpKind::BeginTxn`]);
//! - with `input` (consume-transform-produce): read_committed polls of the input partitions
//!   this process's transactional id owns (input partition `p` belongs to id `p % ids`), each a
//!   [`OpKind::Poll`] naming the transaction it feeds, and one output record per input record;
//!   without `input`: `records-per-transaction` records on random partitions. Every record is a
//!   [`OpKind::Send`] naming its transaction, with a value unique in the run;
//! - with `input`, `send_offsets_to_transaction` of the next input offsets for the group (a
//!   [`OpKind::SendOffsetsToTxn`]);
//! - commit, or abort with probability `abort-rate` (an [`OpKind::EndTxn`] with the
//!   [`TxnResult`] the producer learned).
//!
//! After an abort the inputs are read again from where the last commit left them. A producer
//! that is fenced, or whose transaction ended unknown or whose begin failed, starts over as a
//! new producer of the same id: InitProducerId (which completes or aborts whatever its
//! predecessor left), the group's committed offsets, then transactions again. Processes that
//! share a transactional id (`transactional-ids` below `count`) fence each other that way:
//! each one is the other's zombie, and a replacement takes over while the other is stuck.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use client::{
    Admin, Client, Consumer, ConsumerConfig, OffsetReset, ProducerConfig, ProducerRecord, SeekTo,
    TransactionError, TransactionOutcome, TransactionalProducer,
};
use madsim::rand::Rng;

use crate::history::{OpKind, Outcome, Process, TxnId, TxnResult};
use crate::random::Stream;
use crate::runner::{connect, poll_once_for, record_delivery, Ctx};
use crate::scenario::ProducerSpec;
use crate::trace::now_ms;

/// Where a process sits in the scenario file, and the topics' sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place {
    /// Index of its `[[workload.producers]]` entry.
    pub spec: usize,
    /// Which of the entry's `count` processes.
    pub copy: u32,
    /// Partitions of the output topic.
    pub partitions: i32,
    /// Partitions of the input topic (0 without one).
    pub input_partitions: i32,
}

/// How long a poll, an offsets fetch or an init may take before it counts as timed out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A transactional producer process: transactions until the fault window ends.
pub(crate) async fn producer(
    ctx: Ctx,
    process: Process,
    spec: ProducerSpec,
    place: Place,
    mut rng: Stream,
) {
    let ids = spec.transactional_ids.unwrap_or(spec.count).max(1);
    let slot = place.copy % ids;
    let transactional_id = format!("{}-txn-{}-{slot}", spec.topic, place.spec);
    let mut incarnation = 0u32;
    while !ctx.stop.load(Ordering::SeqCst) {
        incarnation += 1;
        let who = format!("t{process}.{incarnation}");
        let ended = run(
            &ctx,
            &who,
            process,
            &spec,
            place,
            (&transactional_id, slot, ids),
            &mut rng,
        )
        .await;
        ctx.trace.event(&who, format!("starts over: {ended}"));
        // A fenced producer's replacement has taken over: give it room before taking over
        // in turn (a whole transaction at least).
        let pause = spec.transaction_timeout_ms.min(2_000) as f64 * rng.gen_range(0.25..0.75);
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
    }
}

/// One producer incarnation; returns why it stopped.
async fn run(
    ctx: &Ctx,
    who: &str,
    process: Process,
    spec: &ProducerSpec,
    place: Place,
    (transactional_id, slot, ids): (&str, u32, u32),
    rng: &mut Stream,
) -> String {
    let stop = Arc::clone(&ctx.stop);
    let Some(client) = connect(ctx, who, REQUEST_TIMEOUT, || stop.load(Ordering::SeqCst)).await
    else {
        return "stopped while connecting".into();
    };
    let config = ProducerConfig {
        linger: Duration::from_millis(spec.linger_ms),
        // Kafka's transactional producer retries until delivery.timeout.ms: a record given up
        // early only turns its transaction into an abort.
        retries: u32::MAX,
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(500),
        delivery_timeout: Duration::from_millis(spec.delivery_timeout_ms),
        allow_auto_create_topics: false,
        transactional_id: Some(transactional_id.to_string()),
        transaction_timeout: Duration::from_millis(spec.transaction_timeout_ms),
        max_block: Duration::from_millis(spec.delivery_timeout_ms),
        ..ProducerConfig::default()
    };
    let init = tokio::time::timeout(
        Duration::from_millis(spec.delivery_timeout_ms) * 3,
        TransactionalProducer::new(client.clone(), config),
    )
    .await;
    let mut producer = match init {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return format!("init failed: {e}"),
        Err(_) => return "init timed out".into(),
    };
    let (producer_id, epoch) = producer.producer_identity();
    ctx.trace.event(
        who,
        format!("transactional id {transactional_id}: producer id {producer_id} epoch {epoch}"),
    );
    let group = spec.input_group();
    let mut inputs = match (&spec.input, &group) {
        (Some(topic), Some(group)) => {
            let owned: Vec<i32> = (0..place.input_partitions)
                .filter(|p| *p as u32 % ids == slot)
                .collect();
            match Inputs::open(ctx, who, &client, topic, group, owned).await {
                Some(inputs) => Some(inputs),
                None => return "cannot read the group's committed offsets".into(),
            }
        }
        _ => None,
    };
    while !ctx.stop.load(Ordering::SeqCst) {
        let txn: TxnId = ctx.next_value.fetch_add(1, Ordering::SeqCst);
        let id = ctx.recorder.invoke(
            OpKind::BeginTxn {
                producer: process,
                transactional_id: transactional_id.to_string(),
                txn,
            },
            now_ms(),
        );
        // The whole transaction is an operation in flight: the runner's settle after the heal
        // waits for it (a begin still bumping the epoch, its polls and sends, its end), so
        // the final read comes after its records, not while it still writes them.
        let in_flight = InFlight::new(ctx);
        let begun = producer.begin().await;
        let outcome = match &begun {
            Ok(()) => Outcome::Ok { offset: None },
            Err(e) => txn_error_outcome(e),
        };
        ctx.recorder.complete(id, outcome, None, now_ms());
        if let Err(e) = begun {
            return format!("begin of transaction {txn} failed: {e}");
        }
        // The output partitions of this transaction's records, one per input record.
        let mut records: Vec<i32> = Vec::new();
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut fenced = None;
        match &mut inputs {
            Some(inputs) => {
                let want = spec.records_per_transaction as usize;
                let mut taken = 0;
                for p in inputs.turn() {
                    if taken >= want {
                        break;
                    }
                    let polled = inputs.poll(ctx, who, txn, p).await;
                    taken += polled.len();
                    for offset in polled {
                        records.push(rng.gen_range(0..place.partitions));
                        next_offsets.insert((inputs.topic.clone(), p), offset + 1);
                    }
                    if spec.interleave {
                        // This poll's outputs go out before the next poll.
                        for partition in std::mem::take(&mut records) {
                            if let Err(e) =
                                send(ctx, who, process, spec, &mut producer, txn, partition).await
                            {
                                fenced = Some(e);
                                break;
                            }
                        }
                        if fenced.is_some() {
                            break;
                        }
                    }
                }
            }
            None => {
                for _ in 0..spec.records_per_transaction {
                    records.push(rng.gen_range(0..place.partitions));
                }
            }
        }
        for partition in records {
            if fenced.is_some() {
                break;
            }
            if let Err(e) = send(ctx, who, process, spec, &mut producer, txn, partition).await {
                fenced = Some(e);
            }
        }
        if let (Some(inputs), None) = (&inputs, &fenced) {
            if !next_offsets.is_empty() {
                let group = inputs.group.clone();
                let offsets: Vec<(String, i32, i64)> = next_offsets
                    .iter()
                    .map(|((t, p), o)| (t.clone(), *p, *o))
                    .collect();
                let id = ctx.recorder.invoke(
                    OpKind::SendOffsetsToTxn {
                        producer: process,
                        txn,
                        group: group.clone(),
                        offsets,
                    },
                    now_ms(),
                );
                let sent = producer
                    .send_offsets_to_transaction(&group, &next_offsets)
                    .await;
                let outcome = match &sent {
                    Ok(()) => Outcome::Ok { offset: None },
                    Err(e) => txn_error_outcome(e),
                };
                ctx.trace.event(
                    who,
                    format!("offsets of transaction {txn} {next_offsets:?}: {outcome:?}"),
                );
                ctx.recorder.complete(id, outcome, None, now_ms());
                if let Err(TransactionError::Fenced(e)) = sent {
                    fenced = Some(e.to_string());
                }
            }
        }
        let commit = fenced.is_none() && !rng.gen_bool(spec.abort_rate);
        let id = ctx.recorder.invoke(
            OpKind::EndTxn {
                producer: process,
                txn,
                commit,
                result: None,
            },
            now_ms(),
        );
        let ended = if commit {
            producer.commit().await
        } else {
            producer.abort().await
        };
        let (result, reason) = match &ended {
            TransactionOutcome::Committed => (TxnResult::Committed, String::new()),
            TransactionOutcome::Aborted { reason } => (TxnResult::Aborted, reason.clone()),
            TransactionOutcome::Fenced { error } => (TxnResult::Fenced, error.to_string()),
            TransactionOutcome::Unknown { reason, .. } => (TxnResult::Unknown, reason.clone()),
        };
        ctx.trace.event(
            who,
            format!(
                "{} transaction {txn}: {ended}",
                if commit { "commit" } else { "abort" }
            ),
        );
        ctx.recorder
            .complete_txn(id, result, reason, ended.code(), now_ms());
        match (result, &mut inputs) {
            (TxnResult::Committed, Some(inputs)) => inputs.committed(),
            (TxnResult::Committed, None) => {}
            (TxnResult::Aborted, Some(inputs)) => {
                // Read the inputs again from the last commit.
                if !inputs.rewind().await {
                    return format!("cannot rewind after transaction {txn}");
                }
            }
            (TxnResult::Aborted, None) => {}
            // Whether it committed is the coordinator's to say: a new producer of this id
            // completes it, and the group's offsets say where to read from.
            (TxnResult::Fenced | TxnResult::Unknown, _) => {
                return format!("transaction {txn} ended {result:?}: {ended}");
            }
        }
        drop(in_flight);
        let records = f64::from(spec.records_per_transaction);
        let pause = records / spec.rate * rng.gen_range(0.5..1.5);
        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
    }
    "the fault window ended".into()
}

/// Counts one operation in flight (`Ctx::inflight`) while it lives.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(ctx: &Ctx) -> InFlight {
        ctx.inflight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(&ctx.inflight))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn txn_error_outcome(e: &TransactionError) -> Outcome {
    if e.maybe_applied() {
        Outcome::unknown(e.to_string(), e.code())
    } else {
        Outcome::fail(e.to_string(), e.code())
    }
}

/// Sends one record of transaction `txn` and records it; its outcome is recorded when it
/// arrives (before the commit or abort returns: they wait for every record). `Err` when the
/// producer is fenced.
async fn send(
    ctx: &Ctx,
    who: &str,
    process: Process,
    spec: &ProducerSpec,
    producer: &mut TransactionalProducer,
    txn: TxnId,
    partition: i32,
) -> Result<(), String> {
    let value = ctx.next_value.fetch_add(1, Ordering::SeqCst);
    let id = ctx.recorder.invoke(
        OpKind::Send {
            producer: process,
            topic: spec.topic.clone(),
            partition,
            key: None,
            value,
            acks: -1,
            txn: Some(txn),
        },
        now_ms(),
    );
    let record =
        ProducerRecord::new(spec.topic.clone(), value.to_string()).with_partition(partition);
    ctx.inflight.fetch_add(1, Ordering::SeqCst);
    let delivery = match producer.send(record).await {
        Ok(delivery) => delivery,
        Err(e) => {
            ctx.recorder
                .complete(id, Outcome::fail(e.to_string(), e.code()), None, now_ms());
            ctx.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(e.to_string());
        }
    };
    let (ctx, who, topic) = (ctx.clone(), who.to_string(), spec.topic.clone());
    tokio::spawn(async move {
        let outcome = delivery.await;
        record_delivery(&ctx, &who, id, (&topic, value, Some(txn)), &outcome);
    });
    Ok(())
}

/// The input partitions a process owns, read read_committed from the group's committed
/// offsets.
struct Inputs {
    topic: String,
    group: String,
    /// One consumer per owned partition: a poll returns one partition's records, and no
    /// other partition's position moves under it.
    consumers: BTreeMap<i32, Consumer>,
    /// Where the last commit (or the group's offsets at the start) left each partition.
    committed: BTreeMap<i32, Option<i64>>,
    /// The partition the last read started with.
    turn: usize,
    /// The consumer id of this incarnation's polls: a new producer of the id starts from the
    /// group's offsets, where the other one left them, so its polls are a new walk over each
    /// partition (as a group member's after an assignment, see [`crate::walks`]).
    walk: Process,
}

impl Inputs {
    async fn open(
        ctx: &Ctx,
        who: &str,
        client: &Client,
        topic: &str,
        group: &str,
        owned: Vec<i32>,
    ) -> Option<Inputs> {
        let admin = Admin::new(client.clone());
        let wanted: Vec<(String, i32)> = owned.iter().map(|&p| (topic.to_string(), p)).collect();
        let mut found = None;
        for _ in 0..10 {
            match tokio::time::timeout(
                REQUEST_TIMEOUT * 2,
                admin.list_group_offsets(group, Some(&wanted)),
            )
            .await
            {
                Ok(Ok(offsets)) => {
                    found = Some(offsets);
                    break;
                }
                Ok(Err(e)) => ctx.trace.event(who, format!("offsets of {group}: {e}")),
                Err(_) => ctx
                    .trace
                    .event(who, format!("offsets of {group} timed out")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let found = found?;
        let committed: BTreeMap<i32, Option<i64>> = owned
            .iter()
            .map(|&p| {
                let offset = found
                    .get(&(topic.to_string(), p))
                    .map(|o| o.offset)
                    .filter(|&o| o >= 0);
                (p, offset)
            })
            .collect();
        ctx.trace.event(
            who,
            format!("group {group} on {topic}: committed {committed:?}"),
        );
        let config = ConsumerConfig {
            max_wait: Duration::from_millis(50),
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: client::IsolationLevel::ReadCommitted,
            ..ConsumerConfig::default()
        };
        let consumers = owned
            .iter()
            .map(|&p| {
                let mut consumer = Consumer::new(client.clone(), config.clone());
                consumer.assign([(topic.to_string(), p)]);
                (p, consumer)
            })
            .collect();
        let mut inputs = Inputs {
            topic: topic.to_string(),
            group: group.to_string(),
            consumers,
            committed,
            turn: 0,
            walk: ctx.next_walk.fetch_sub(1, Ordering::SeqCst),
        };
        inputs.rewind().await.then_some(inputs)
    }

    /// Moves every position back to the last commit.
    async fn rewind(&mut self) -> bool {
        for (&p, &offset) in &self.committed {
            let to = offset.map_or(SeekTo::Earliest, SeekTo::Offset);
            let consumer = self
                .consumers
                .get_mut(&p)
                .expect("a consumer per owned partition");
            let mut done = false;
            for _ in 0..5 {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(REQUEST_TIMEOUT * 2, consumer.seek(&self.topic, p, to))
                        .await
                {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !done {
                return false;
            }
        }
        true
    }

    /// The transaction committed: its positions are the group's offsets now.
    fn committed(&mut self) {
        for (p, offset) in self.committed.iter_mut() {
            if let Some(position) = self.consumers[p].position(&self.topic, *p) {
                *offset = Some(position);
            }
        }
    }

    /// The owned partitions in the order this transaction polls them: each transaction starts
    /// after the partition the last one started with, so none starves.
    fn turn(&mut self) -> Vec<i32> {
        let count = self.consumers.len().max(1);
        self.turn = (self.turn + 1) % count;
        let owned: Vec<i32> = self.consumers.keys().copied().collect();
        owned[self.turn.min(owned.len())..]
            .iter()
            .chain(&owned[..self.turn.min(owned.len())])
            .copied()
            .collect()
    }

    /// Polls owned partition `p` once (recorded as an input of `txn`); returns the offsets of
    /// the records it took (every record the poll returned: all of them are transformed) and
    /// leaves the position just past them.
    async fn poll(&mut self, ctx: &Ctx, who: &str, txn: TxnId, p: i32) -> Vec<i64> {
        let consumer = self
            .consumers
            .get_mut(&p)
            .expect("a consumer per owned partition");
        let Some(from) = consumer.position(&self.topic, p) else {
            return Vec::new();
        };
        poll_once_for(
            ctx,
            who,
            self.walk,
            consumer,
            (&self.topic, p),
            from,
            REQUEST_TIMEOUT,
            (Some(&self.group), Some(txn)),
        )
        .await
        .map(|records| records.into_iter().map(|(offset, _)| offset).collect())
        .unwrap_or_default()
    }
}
