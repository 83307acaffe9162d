//! The workload: producers sending unique values (a counter) at their rate, consumers polling
//! every partition, and (in [`crate::group_members`]) consumer-group members. Every operation is
//! recorded in the history (invoke, then ok / fail / unknown) and in the trace.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    Acks, Client, ClientConfig, ConnectionConfig, Consumer, ConsumerConfig, ConsumerRecord, Header,
    OffsetReset, PollError, Producer, ProducerConfig, ProducerRecord, SeekTo, SendOutcome,
};
use madsim::rand::Rng;

use super::invariants::Invariants;
use crate::cluster::Cluster;
use crate::history::{FetchBounds, IsolationLevel, OpKind, Outcome, Process, Recorder};
use crate::random::Stream;
use crate::scenario::{AcksSpec, Scenario};
use crate::trace::{decimal_text, now_ms, Line, Trace};

/// Shared state of the workload tasks.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) recorder: Recorder,
    pub(crate) trace: Trace,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) inflight: Arc<AtomicUsize>,
    pub(crate) invariants: Arc<Mutex<Invariants>>,
    pub(crate) next_value: Arc<AtomicU64>,
    /// Shared, not copied: every task holds a clone of the context.
    pub(super) bootstrap: Arc<str>,
    /// The run's seed, from which each process derives its own random stream.
    pub(super) seed: u64,
    /// Consumer ids handed to group members' walks (one per assignment), counting down from
    /// below [`crate::checker::FINAL_READER`] so they never meet the workload's process ids.
    pub(crate) next_walk: Arc<AtomicU32>,
    /// The admin workload's CreateTopics, checked once the metadata has converged.
    pub(crate) creations: super::admin::Creations,
    /// The network's holds on requests, which every client's connections consult.
    pub(crate) holds: crate::held_requests::Holds,
}

pub(crate) fn value_of(bytes: Option<&[u8]>) -> u64 {
    // Values are decimal counters from 1; 0 marks bytes that are not one of ours.
    bytes.and_then(parse_decimal).unwrap_or(0)
}

/// The bytes as `str::parse::<u64>` reads them (an optional `+`, then one or more decimal
/// digits, no overflow), without the UTF-8 check and the parser's generality: every record
/// read back is parsed.
fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.strip_prefix(b"+").unwrap_or(bytes);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The header naming a tombstone's send: its value is null, so its counter travels here.
const TOMBSTONE_HEADER: &str = "v";

/// The value a record read back stands for: its value's counter, or for a tombstone the
/// counter in its header.
pub(crate) fn record_value(record: &ConsumerRecord) -> u64 {
    match &record.value {
        Some(value) => value_of(Some(value)),
        None => value_of(
            record
                .headers
                .iter()
                .find(|h| h.key == TOMBSTONE_HEADER)
                .and_then(|h| h.value.as_deref()),
        ),
    }
}

/// Starts the workload's processes, spread over the client nodes in turn.
pub(super) fn start(scenario: &Scenario, cluster: &Cluster, ctx: &Ctx) {
    let s = scenario;
    let mut process: Process = 0;
    let mut spread = 0u32;
    let partitions_of = |topic: &str| {
        s.topics
            .iter()
            .find(|t| t.name == topic)
            .map_or(1, |t| t.partitions)
    };
    // Each process's random stream is named by its place in the file (the spec and the copy),
    // not by its process id, which shifts when a producer is added before it.
    for (i, spec) in s.workload.producers.iter().enumerate() {
        let partitions = partitions_of(&spec.topic);
        for n in 0..spec.count {
            process += 1;
            spread += 1;
            let on = (spread - 1) % s.cluster.clients + 1;
            let rng = Stream::new(ctx.seed, &format!("workload/producer-{i}.{n}"));
            if spec.transactional {
                let input_partitions = spec.input.as_deref().map_or(0, partitions_of);
                let place = crate::txn_workload::Place {
                    spec: i,
                    copy: n,
                    partitions,
                    input_partitions,
                };
                cluster.spawn_on_client(
                    on,
                    crate::txn_workload::producer(ctx.clone(), process, spec.clone(), place, rng),
                );
                continue;
            }
            cluster.spawn_on_client(
                on,
                producer(ctx.clone(), process, spec.clone(), partitions, rng),
            );
        }
    }
    for (i, spec) in s.workload.consumers.iter().enumerate() {
        let partitions = partitions_of(&spec.topic);
        for n in 0..spec.count {
            process += 1;
            spread += 1;
            let on = (spread - 1) % s.cluster.clients + 1;
            if spec.scan {
                cluster.spawn_on_client(on, scanner(ctx.clone(), spec.clone(), partitions));
            } else if spec.group.is_some() {
                let rng = Stream::new(ctx.seed, &format!("membership/consumer-{i}.{n}"));
                cluster.spawn_on_client(
                    on,
                    crate::group_members::member(ctx.clone(), process, spec.clone(), rng),
                );
            } else {
                cluster
                    .spawn_on_client(on, consumer(ctx.clone(), process, spec.clone(), partitions));
            }
        }
    }
    let mut admins = 0u32;
    for spec in &s.workload.admins {
        for _ in 0..spec.count {
            admins += 1;
            spread += 1;
            let on = (spread - 1) % s.cluster.clients + 1;
            cluster.spawn_on_client(
                on,
                super::admin::admin(ctx.clone(), ctx.creations.clone(), admins, spec.clone()),
            );
        }
    }
}

/// Connects a client, retrying with backoff until `give_up` says so.
pub(crate) async fn connect(
    ctx: &Ctx,
    who: &str,
    request_timeout: Duration,
    give_up: impl Fn() -> bool,
) -> Option<Client> {
    let mut config = ClientConfig::new(ctx.bootstrap.to_string());
    config.connection = ConnectionConfig {
        client_id: who.to_string(),
        connect_timeout: Duration::from_millis(500),
        request_timeout,
    };
    config.hold = Some(ctx.holds.hook());
    loop {
        if give_up() {
            return None;
        }
        match tokio::time::timeout(request_timeout * 2, Client::connect(config.clone())).await {
            Ok(Ok(client)) => return Some(client),
            Ok(Err(e)) => ctx.trace.event(who, format!("connect failed: {e}")),
            Err(_) => ctx.trace.event(who, "connect timed out"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn to_outcome(outcome: &SendOutcome) -> Outcome {
    match outcome {
        SendOutcome::Acknowledged { offset, .. } => Outcome::Ok {
            offset: Some(*offset),
        },
        SendOutcome::Failed { error } => Outcome::fail(error.to_string(), error.code()),
        SendOutcome::Unknown { reason } => Outcome::unknown(reason.to_string(), reason.code()),
    }
}

/// Records how send `id` of `value` to `topic` (of transaction `txn`, if any) ended: an
/// acknowledged offset is claimed for the value (two values at one offset are caught here), the
/// trace and the history get the outcome, and the send is no longer in flight.
pub(crate) fn record_delivery(
    ctx: &Ctx,
    who: &str,
    id: usize,
    (topic, value, txn): (&str, u64, Option<crate::history::TxnId>),
    outcome: &SendOutcome,
) {
    let recorded = to_outcome(outcome);
    if let SendOutcome::Acknowledged {
        partition: p,
        offset,
    } = *outcome
    {
        ctx.invariants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .claim(topic, p, offset, value, "acknowledged");
    }
    // The wording of each kind of send is the trace's, unchanged (the trace hash is locked).
    let line = match (txn, &recorded) {
        // The common line, written without `Debug`'s struct machinery: the same text.
        (
            None,
            Outcome::Ok {
                offset: Some(offset),
            },
        ) => acknowledged_line(id, *offset),
        (Some(txn), _) => format!("complete #{id} txn {txn} value={value} {recorded:?}"),
        (None, _) => format!("complete #{id} {recorded:?}"),
    };
    ctx.trace.event(who, line);
    ctx.recorder.complete(id, recorded, None, now_ms());
    ctx.inflight.fetch_sub(1, Ordering::SeqCst);
}

/// `format!("complete #{id} Ok {{ offset: Some({offset}) }}")`, the `Debug` text of the
/// outcome, written by hand: one line per acknowledged send.
fn acknowledged_line(id: usize, offset: i64) -> String {
    Line::with_capacity(48)
        .str("complete #")
        .u64(id as u64)
        .str(" Ok { offset: Some(")
        .i64(offset)
        .str(") }")
        .done()
}

/// `format!("invoke #{id} send {topic}-{partition} value={value} key={key:?}{tombstone}")`
/// (` tombstone` when it is one), written by hand: one line per send.
fn invoke_send_line(
    id: usize,
    (topic, partition): (&str, i32),
    value: u64,
    key: Option<u64>,
    tombstone: bool,
) -> String {
    let line = Line::with_capacity(64 + topic.len())
        .str("invoke #")
        .u64(id as u64)
        .str(" send ")
        .str(topic)
        .str("-")
        .i64(i64::from(partition))
        .str(" value=")
        .u64(value)
        .str(" key=")
        .option_u64(key);
    if tombstone {
        line.str(" tombstone").done()
    } else {
        line.done()
    }
}

/// `format!("poll #{id} {topic}-{partition} from {from}: {n} records{span}")`, where `span`
/// is ` offsets {first}..={last}` of the records when there are any, written by hand: one
/// line per poll.
fn poll_line(
    id: usize,
    (topic, partition): (&str, i32),
    from: i64,
    records: &[(i64, u64)],
) -> String {
    let line = Line::with_capacity(96 + topic.len())
        .str("poll #")
        .u64(id as u64)
        .str(" ")
        .str(topic)
        .str("-")
        .i64(i64::from(partition))
        .str(" from ")
        .i64(from)
        .str(": ")
        .u64(records.len() as u64)
        .str(" records");
    match (records.first(), records.last()) {
        (Some(a), Some(b)) => line.str(" offsets ").i64(a.0).str("..=").i64(b.0).done(),
        _ => line.done(),
    }
}

/// `format!("k{k}")`: a key's bytes.
fn key_text(k: u64) -> String {
    Line::with_capacity(21).str("k").u64(k).done()
}

/// A producer process: sends unique values at its rate until the fault window ends.
pub(super) async fn producer(
    ctx: Ctx,
    process: Process,
    spec: crate::scenario::ProducerSpec,
    partitions: i32,
    mut rng: Stream,
) {
    let who = format!("p{process}");
    let request_timeout = Duration::from_millis(spec.request_timeout_ms);
    let stop = Arc::clone(&ctx.stop);
    let Some(client) = connect(&ctx, &who, request_timeout, || stop.load(Ordering::SeqCst)).await
    else {
        return;
    };
    let config = ProducerConfig {
        acks: match spec.acks {
            AcksSpec::None => Acks::None,
            AcksSpec::Leader => Acks::Leader,
            AcksSpec::All => Acks::All,
        },
        linger: Duration::from_millis(spec.linger_ms),
        retries: spec.retries,
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(500),
        delivery_timeout: Duration::from_millis(spec.delivery_timeout_ms),
        enable_idempotence: spec.idempotent,
        allow_auto_create_topics: false,
        ..ProducerConfig::default()
    };
    let producer = loop {
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
        match tokio::time::timeout(
            request_timeout * 2,
            Producer::new(client.clone(), config.clone()),
        )
        .await
        {
            Ok(Ok(p)) => break p,
            Ok(Err(e)) => ctx.trace.event(&who, format!("producer init failed: {e}")),
            Err(_) => ctx.trace.event(&who, "producer init timed out"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut identity = producer.producer_identity();
    if let Some((id, epoch)) = identity {
        ctx.trace
            .event(&who, format!("producer id {id} epoch {epoch}"));
    }
    let interval = 1.0 / spec.rate;
    // What every delivery's callback needs, shared rather than copied per record.
    let delivered = Arc::new((ctx.clone(), who.clone(), spec.topic.clone()));
    while !ctx.stop.load(Ordering::SeqCst) {
        // An idempotent producer moves to a new epoch after a gap in a partition's sequences
        // (KIP-360): the trace shows when.
        let now = producer.producer_identity();
        if now != identity {
            if let Some((id, epoch)) = now {
                ctx.trace.event(
                    &who,
                    format!("producer id {id} epoch {epoch} after a sequence gap"),
                );
            }
            identity = now;
        }
        let value = ctx.next_value.fetch_add(1, Ordering::SeqCst);
        let (key, key_bytes, partition, tombstone, pause) = {
            let key = (spec.keys > 0).then(|| rng.gen_range(0..spec.keys));
            let key_bytes = key.map(key_text);
            let partition = match &key_bytes {
                Some(k) => client::partitioner::partition_for_key(k.as_bytes(), partitions),
                None => rng.gen_range(0..partitions),
            };
            // Drawn only when tombstones are on, so other scenarios' streams stay as they were.
            let tombstone = spec.tombstone_rate > 0.0 && rng.gen_bool(spec.tombstone_rate);
            (
                key,
                key_bytes,
                partition,
                tombstone,
                interval * rng.gen_range(0.5..1.5),
            )
        };
        let acks = match spec.acks {
            AcksSpec::None => 0,
            AcksSpec::Leader => 1,
            AcksSpec::All => -1,
        };
        let kind = OpKind::Send {
            producer: process,
            topic: spec.topic.clone(),
            partition,
            key,
            value,
            acks,
            txn: None,
        };
        if tombstone {
            ctx.recorder.tombstone(value);
        }
        let id = ctx.recorder.invoke(kind, now_ms());
        ctx.trace.event(
            &who,
            invoke_send_line(id, (&spec.topic, partition), value, key, tombstone),
        );
        let mut record =
            ProducerRecord::new(spec.topic.clone(), decimal_text(value)).with_partition(partition);
        if tombstone {
            record.value = None;
            record.headers = vec![Header::new(TOMBSTONE_HEADER, decimal_text(value))];
        }
        if let Some(k) = key_bytes {
            record = record.with_key(k);
        }
        ctx.inflight.fetch_add(1, Ordering::SeqCst);
        // Recorded by the producer's task that learns the outcome: no task per delivery.
        let on = Arc::clone(&delivered);
        producer
            .send_with_callback(record, move |outcome| {
                let (ctx, who, topic) = &*on;
                record_delivery(ctx, who, id, (topic, value, None), &outcome);
            })
            .await;
        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
    }
    producer.flush().await;
}

/// A consumer process: polls every partition of its topic in turn, from the earliest offset.
pub(super) async fn consumer(
    ctx: Ctx,
    process: Process,
    spec: crate::scenario::ConsumerSpec,
    partitions: i32,
) {
    let who = format!("c{process}");
    let request_timeout = Duration::from_secs(2);
    let stop = Arc::clone(&ctx.stop);
    let Some(client) = connect(&ctx, &who, request_timeout, || stop.load(Ordering::SeqCst)).await
    else {
        return;
    };
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(spec.max_wait_ms),
        auto_offset_reset: OffsetReset::Earliest,
        isolation_level: spec.isolation_level.client(),
        partition_max_bytes: spec
            .max_partition_fetch_bytes
            .unwrap_or(ConsumerConfig::default().partition_max_bytes),
        ..ConsumerConfig::default()
    };
    let mut consumers: Vec<Consumer> = (0..partitions)
        .map(|p| {
            let mut c = Consumer::new(client.clone(), config.clone());
            c.assign([(spec.topic.clone(), p)]);
            c
        })
        .collect();
    let topic = spec.topic.clone();
    while !ctx.stop.load(Ordering::SeqCst) {
        for (p, consumer) in consumers.iter_mut().enumerate() {
            let p = p as i32;
            if ctx.stop.load(Ordering::SeqCst) {
                break;
            }
            let from = match consumer.position(&topic, p) {
                Some(pos) => pos,
                None => match tokio::time::timeout(
                    request_timeout * 2,
                    consumer.seek(&topic, p, SeekTo::Earliest),
                )
                .await
                {
                    Ok(Ok(pos)) => pos,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            poll_once(
                &ctx,
                &who,
                process,
                consumer,
                &topic,
                p,
                from,
                request_timeout,
            )
            .await;
        }
    }
}

/// A scanning consumer: reads every partition of its topic from the log start up to the high
/// watermark the scan found, again and again, `scan-pause-ms` apart. Each scan of a partition
/// is a walk of a fresh consumer id (counting down like group members' walks), abandoned at
/// its first failed poll, so a walk in the history is one contiguous read from the log start:
/// what the compaction checker judges a compacted log by.
pub(super) async fn scanner(ctx: Ctx, spec: crate::scenario::ConsumerSpec, partitions: i32) {
    let who = "scanner".to_string();
    let request_timeout = Duration::from_secs(2);
    let stop = Arc::clone(&ctx.stop);
    let Some(client) = connect(&ctx, &who, request_timeout, || stop.load(Ordering::SeqCst)).await
    else {
        return;
    };
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(spec.max_wait_ms),
        auto_offset_reset: OffsetReset::Earliest,
        isolation_level: spec.isolation_level.client(),
        ..ConsumerConfig::default()
    };
    let topic = spec.topic.clone();
    while !ctx.stop.load(Ordering::SeqCst) {
        for p in 0..partitions {
            if ctx.stop.load(Ordering::SeqCst) {
                break;
            }
            let walk = ctx.next_walk.fetch_sub(1, Ordering::SeqCst);
            let mut consumer = Consumer::new(client.clone(), config.clone());
            consumer.assign([(topic.clone(), p)]);
            let Ok(Ok(mut from)) = tokio::time::timeout(
                request_timeout * 2,
                consumer.seek(&topic, p, SeekTo::Earliest),
            )
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // The scan reads to the high watermark its first answer reports.
            let mut until: Option<i64> = None;
            let mut stalls = 0;
            loop {
                let polled = poll_once(
                    &ctx,
                    &who,
                    walk,
                    &mut consumer,
                    &topic,
                    p,
                    from,
                    request_timeout,
                )
                .await;
                if polled.is_none() || ctx.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Some(position) = consumer.position(&topic, p) else {
                    break;
                };
                let end = *until.get_or_insert(consumer.high_watermark(&topic, p).unwrap_or(0));
                if position >= end {
                    break;
                }
                // A leader that answers nothing for long: start over rather than spin.
                stalls = if position == from { stalls + 1 } else { 0 };
                if stalls > 20 {
                    break;
                }
                from = position;
            }
        }
        tokio::time::sleep(Duration::from_millis(spec.scan_pause_ms)).await;
    }
}

/// One recorded poll of one partition. Returns the records, or `None` when the poll failed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn poll_once(
    ctx: &Ctx,
    who: &str,
    process: Process,
    consumer: &mut Consumer,
    topic: &str,
    partition: i32,
    from: i64,
    request_timeout: Duration,
) -> Option<Vec<(i64, u64)>> {
    poll_once_for(
        ctx,
        who,
        process,
        consumer,
        (topic, partition),
        from,
        request_timeout,
        (None, None),
    )
    .await
}

/// [`poll_once`] as a consumer of `group` feeding transaction `txn` (its inputs), if any.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn poll_once_for(
    ctx: &Ctx,
    who: &str,
    process: Process,
    consumer: &mut Consumer,
    (topic, partition): (&str, i32),
    from: i64,
    request_timeout: Duration,
    (group, txn): (Option<&str>, Option<crate::history::TxnId>),
) -> Option<Vec<(i64, u64)>> {
    let kind = OpKind::Poll {
        consumer: process,
        topic: topic.to_string(),
        partition,
        from_offset: from,
        records: Vec::new(),
        group: group.map(str::to_string),
        isolation: match consumer.isolation_level() {
            client::IsolationLevel::ReadUncommitted => IsolationLevel::ReadUncommitted,
            client::IsolationLevel::ReadCommitted => IsolationLevel::ReadCommitted,
        },
        txn,
        bounds: None,
    };
    let id = ctx.recorder.invoke(kind, now_ms());
    let result = tokio::time::timeout(request_timeout * 2, consumer.poll()).await;
    match result {
        Ok(Ok(records)) => {
            let records: Vec<(i64, u64)> = records
                .iter()
                .filter(|r| r.partition == partition)
                .map(|r| (r.offset, record_value(r)))
                .collect();
            {
                let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
                for &(offset, value) in &records {
                    inv.claim(topic, partition, offset, value, "read");
                }
            }
            ctx.trace
                .event(who, poll_line(id, (topic, partition), from, &records));
            // A read_committed poll that returned records records the bounds of the fetch that
            // returned them (the LSO it must stay below); other polls record none, as before.
            let bounds = match (consumer.isolation_level(), records.is_empty()) {
                (client::IsolationLevel::ReadCommitted, false) => consumer
                    .high_watermark(topic, partition)
                    .map(|high_watermark| FetchBounds {
                        high_watermark,
                        last_stable_offset: consumer.last_stable_offset(topic, partition),
                    }),
                _ => None,
            };
            ctx.recorder.complete_poll(
                id,
                Outcome::Ok { offset: None },
                records.clone(),
                bounds,
                now_ms(),
            );
            Some(records)
        }
        Ok(Err(e)) => {
            ctx.trace.event(
                who,
                format!("poll #{id} {topic}-{partition} from {from} failed: {e}"),
            );
            ctx.recorder.complete(
                id,
                Outcome::fail(e.to_string(), None),
                Some(Vec::new()),
                now_ms(),
            );
            if let PollError::Decode {
                error: error @ client::records::DecodeError::Corrupt { .. },
                ..
            } = &e
            {
                // Kafka's consumers check each batch's CRC (check.crcs) for this: flipped bits
                // the broker served rather than refused.
                ctx.invariants
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .corrupt_batch_served(
                        (topic, partition),
                        format!("from offset {from}: {error}"),
                        now_ms(),
                        &ctx.trace,
                    );
            }
            if matches!(e, PollError::OffsetOutOfRange { .. }) {
                let _ = tokio::time::timeout(
                    request_timeout * 2,
                    consumer.seek(topic, partition, SeekTo::Earliest),
                )
                .await;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        }
        Err(_) => {
            ctx.trace.event(
                who,
                format!("poll #{id} {topic}-{partition} from {from} timed out"),
            );
            let outcome = Outcome::unknown("poll timed out".into(), None);
            ctx.recorder
                .complete(id, outcome, Some(Vec::new()), now_ms());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `record_delivery` writes an acknowledgement's trace line by hand: it must be the line
    /// `Debug` gives (the trace hash covers it).
    #[test]
    fn an_acknowledgements_trace_line_is_the_debug_text() {
        for offset in [0, 7, 1_234_567, i64::MAX, -1] {
            let outcome = Outcome::Ok {
                offset: Some(offset),
            };
            assert_eq!(
                format!("complete #3 Ok {{ offset: Some({offset}) }}"),
                format!("complete #3 {outcome:?}")
            );
        }
    }

    /// Values read back parse as `str::parse::<u64>` parses them, 0 for what it refuses.
    #[test]
    fn a_value_reads_as_the_standard_parser_reads_it() {
        let std_value = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut cases: Vec<Vec<u8>> = [
            "",
            "0",
            "1",
            "+",
            "+1",
            "++1",
            "-1",
            "-0",
            " 1",
            "1 ",
            "01",
            "007",
            "1a",
            "a1",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "+18446744073709551615",
            "0000000000000000000000018",
            "\u{661}",
            "1.0",
            "1e3",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        cases.push(vec![0xff, b'1']);
        cases.push(vec![b'1', 0xc3]);
        // Every short string over a small alphabet, and numbers around the edges.
        let alphabet = [b'0', b'1', b'9', b'+', b'-', b'/', b':', b' '];
        for len in 1..=4u32 {
            for code in 0..alphabet.len().pow(len) {
                let mut rest = code;
                let bytes = (0..len)
                    .map(|_| {
                        let b = alphabet[rest % alphabet.len()];
                        rest /= alphabet.len();
                        b
                    })
                    .collect();
                cases.push(bytes);
            }
        }
        for n in (0..20)
            .map(|p| 10u64.pow(p))
            .chain([u64::MAX / 10, u64::MAX])
        {
            for m in [n.saturating_sub(1), n, n.saturating_add(1)] {
                cases.push(m.to_string().into_bytes());
                cases.push(format!("{m}0").into_bytes());
            }
        }
        for bytes in cases {
            assert_eq!(
                value_of(Some(&bytes)),
                std_value(&bytes),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(value_of(None), 0);
    }

    /// The trace lines the workload writes by hand are the `format!` text they replaced (the
    /// trace hash covers them), at awkward values.
    #[test]
    fn hand_written_trace_lines_are_the_formatted_text() {
        let ids = [0, 1, 12_345, usize::MAX];
        let offsets = [0, 1, -1, 99, i64::MAX, i64::MIN];
        let partitions = [0, 7, -1, i32::MAX, i32::MIN];
        for id in ids {
            for offset in offsets {
                assert_eq!(
                    acknowledged_line(id, offset),
                    format!("complete #{id} Ok {{ offset: Some({offset}) }}")
                );
            }
            for partition in partitions {
                for topic in ["t", "", "a-long-topic-name"] {
                    for (value, key, tombstone) in [
                        (0, None, false),
                        (1, Some(0), true),
                        (u64::MAX, Some(u64::MAX), false),
                        (42, Some(7), true),
                    ] {
                        assert_eq!(
                            invoke_send_line(id, (topic, partition), value, key, tombstone),
                            format!(
                                "invoke #{id} send {topic}-{partition} value={value} key={key:?}{}",
                                if tombstone { " tombstone" } else { "" }
                            )
                        );
                    }
                    for from in offsets {
                        for records in [
                            &[][..],
                            &[(from, 3)][..],
                            &[(0, 1), (-5, 2), (i64::MAX, u64::MAX)][..],
                            &[(i64::MIN, 0), (7, 0)][..],
                        ] {
                            let span = match (records.first(), records.last()) {
                                (Some(a), Some(b)) => format!(" offsets {}..={}", a.0, b.0),
                                _ => String::new(),
                            };
                            assert_eq!(
                                poll_line(id, (topic, partition), from, records),
                                format!(
                                    "poll #{id} {topic}-{partition} from {from}: {} records{span}",
                                    records.len()
                                )
                            );
                        }
                    }
                }
            }
        }
        for k in [0, 9, 10, u64::MAX] {
            assert_eq!(key_text(k), format!("k{k}"));
        }
    }
}
