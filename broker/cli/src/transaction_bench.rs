//! `faultline bench transactions`: what exactly-once costs, measured in one run against one
//! broker (issue 12's "Measured"):
//!
//! 1. For each `--records-per-txn` (10 and 100 by default): one [`TransactionalProducer`]
//!    runs transactions back to back for `--duration` (begin, that many records round-robin
//!    over the topic's partitions, commit; Kafka's protocol: AddPartitionsToTxn, idempotent
//!    transactional batches, EndTxn, and the coordinator's markers). Transactions per second,
//!    records and MB per second, the commit latency, and how many did not commit.
//! 2. The yardstick of the same run: the idempotent producer ([`Producer`] with
//!    `enable.idempotence`, acks=all, the same records, up to `--in-flight` records
//!    unacknowledged) for the same duration.
//! 3. The topic read from its start to its end by the client's [`Consumer`] with
//!    read_uncommitted, then with read_committed (stops at the last stable offset, drops
//!    aborted records): records and MB per second of each, and their ratio. Both decode every
//!    record.
//!
//! The producers are the Rust client's, with Kafka's defaults (`linger.ms` 5, `batch.size`
//! 16 KiB), so a transaction of 10 records is one batch per partition it touches and the
//! numbers are what an application sees, client included.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use serde_json::json;

use super::{connect, request_error, ClientArgs};
use client::{
    Client, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, SeekTo, TransactionOutcome, TransactionalProducer,
};

#[derive(Debug, Args)]
pub struct TransactionBenchArgs {
    /// Topic to write to and read (created with --partitions if missing)
    #[arg(long, default_value = "faultline-bench-txn")]
    pub topic: String,
    /// Partitions of the topic when the bench creates it
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Bytes of each record's value
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per transaction, one measured phase each (comma-separated)
    #[arg(long, value_delimiter = ',', default_values_t = vec![10usize, 100])]
    pub records_per_txn: Vec<usize>,
    /// Seconds of each produce phase (the reads go to the end, for at most a minute or this)
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Records the idempotent producer keeps unacknowledged
    #[arg(long, default_value_t = 1000)]
    pub in_flight: usize,
    /// The producers' `retry.backoff.ms`. The first AddPartitionsToTxn of a transaction often
    /// finds the previous one still writing its markers (CONCURRENT_TRANSACTIONS) and waits
    /// this long; Kafka's default is 100 (its Java client waits 20 in exactly this case)
    #[arg(long, default_value_t = 100)]
    pub retry_backoff_ms: u64,
}

#[derive(Default)]
struct Phase {
    transactions: u64,
    not_committed: u64,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    /// Commit latencies (the end of the transaction: flush, EndTxn), nanoseconds.
    commits_ns: Vec<u64>,
    first_error: Option<String>,
}

impl Phase {
    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&mut self) -> serde_json::Value {
        self.commits_ns.sort_unstable();
        let at = |l: &[u64], q: f64| {
            (!l.is_empty()).then(|| {
                l[((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1] as f64 / 1e6
            })
        };
        json!({
            "transactions": self.transactions,
            "transactions_per_s": (self.transactions as f64 / self.secs() * 10.0).round() / 10.0,
            "not_committed": self.not_committed,
            "records": self.records,
            "msgs_per_s": (self.records as f64 / self.secs()).round(),
            "mb_per_s": (self.bytes as f64 / self.secs() / 1e6 * 100.0).round() / 100.0,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "commit_ms_p50": at(&self.commits_ns, 0.5),
            "commit_ms_p99": at(&self.commits_ns, 0.99),
            "first_error": self.first_error,
        })
    }
}

fn value(size: usize, n: u64) -> Bytes {
    let mut v = vec![b'x'; size];
    let tag = n.to_le_bytes();
    let len = tag.len().min(size);
    v[..len].copy_from_slice(&tag[..len]);
    Bytes::from(v)
}

async fn transactions(
    client: &Client,
    args: &TransactionBenchArgs,
    per_txn: usize,
    run_for: Duration,
) -> Result<Phase, String> {
    let config = ProducerConfig {
        transactional_id: Some(format!("faultline-bench-txn-{per_txn}")),
        retry_backoff: Duration::from_millis(args.retry_backoff_ms),
        ..ProducerConfig::default()
    };
    let mut producer = TransactionalProducer::new(client.clone(), config)
        .await
        .map_err(|e| format!("transactional producer: {e}"))?;
    let mut phase = Phase::default();
    let start = client::now();
    let deadline = start + run_for;
    let mut n = 0u64;
    while client::now() < deadline {
        producer.begin().await.map_err(|e| format!("begin: {e}"))?;
        let mut bytes = 0;
        for _ in 0..per_txn {
            let record = ProducerRecord::new(args.topic.clone(), value(args.record_size, n));
            n += 1;
            bytes += args.record_size as u64;
            producer
                .send(record)
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        let ending = client::now();
        let outcome = producer.commit().await;
        phase.commits_ns.push(ending.elapsed().as_nanos() as u64);
        phase.transactions += 1;
        match outcome {
            TransactionOutcome::Committed => {
                phase.records += per_txn as u64;
                phase.bytes += bytes;
            }
            other => {
                phase.not_committed += 1;
                phase
                    .first_error
                    .get_or_insert_with(|| format!("{other:?}"));
                if producer.is_fenced() {
                    break;
                }
            }
        }
    }
    phase.elapsed = start.elapsed();
    Ok(phase)
}

async fn idempotent(
    client: &Client,
    args: &TransactionBenchArgs,
    run_for: Duration,
) -> Result<Phase, String> {
    let config = ProducerConfig {
        enable_idempotence: true,
        retry_backoff: Duration::from_millis(args.retry_backoff_ms),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config)
        .await
        .map_err(|e| format!("idempotent producer: {e}"))?;
    let mut phase = Phase::default();
    let start = client::now();
    let deadline = start + run_for;
    let mut pending = std::collections::VecDeque::new();
    let mut n = 0u64;
    let settle = |phase: &mut Phase, outcome: client::SendOutcome| {
        if outcome.is_acknowledged() {
            phase.records += 1;
            phase.bytes += args.record_size as u64;
        } else {
            phase.not_committed += 1;
            phase
                .first_error
                .get_or_insert_with(|| format!("{outcome:?}"));
        }
    };
    while client::now() < deadline {
        let record = ProducerRecord::new(args.topic.clone(), value(args.record_size, n));
        n += 1;
        pending.push_back(producer.send(record).await);
        if pending.len() >= args.in_flight.max(1) {
            let oldest = pending.pop_front().expect("not empty");
            settle(&mut phase, oldest.await);
        }
    }
    while let Some(delivery) = pending.pop_front() {
        settle(&mut phase, delivery.await);
    }
    phase.elapsed = start.elapsed();
    producer.close().await;
    Ok(phase)
}

/// Reads every partition of the topic from its start to where this isolation level ends
/// (high watermark or last stable offset), or until `run_for` passes.
async fn read(
    client: &Client,
    topic: &str,
    isolation_level: IsolationLevel,
    run_for: Duration,
) -> Result<Phase, String> {
    let config = ConsumerConfig {
        isolation_level,
        auto_offset_reset: OffsetReset::Earliest,
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    let seek = |e: client::SeekError| match e {
        client::SeekError::Request(r) => request_error(&r),
        other => other.to_string(),
    };
    let partitions = consumer.assign_topic(topic).await.map_err(seek)?;
    let mut ends = Vec::new();
    for &p in &partitions {
        consumer
            .seek(topic, p, SeekTo::Earliest)
            .await
            .map_err(seek)?;
        ends.push((p, consumer.list_offset(topic, p, -1).await.map_err(seek)?));
    }
    let mut phase = Phase::default();
    let start = client::now();
    let deadline = start + run_for;
    let mut empty_polls = 0;
    while client::now() < deadline {
        let records = consumer.poll().await.map_err(|e| format!("poll: {e}"))?;
        for r in &records {
            phase.records += 1;
            phase.bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        // Done once every partition is at its end: the high watermark read at the start, or
        // for read_committed the last stable offset the fetches reported.
        let done = ends.iter().all(|&(p, hw)| {
            let position = consumer.position(topic, p).unwrap_or(-1);
            let end = match isolation_level {
                IsolationLevel::ReadUncommitted => hw,
                IsolationLevel::ReadCommitted => {
                    consumer.last_stable_offset(topic, p).unwrap_or(hw).min(hw)
                }
            };
            position >= end
        });
        if done {
            break;
        }
        empty_polls = if records.is_empty() {
            empty_polls + 1
        } else {
            0
        };
        if empty_polls > 50 {
            phase.first_error = Some("no progress for 50 polls".into());
            break;
        }
    }
    phase.elapsed = start.elapsed();
    Ok(phase)
}

/// The 1-minute load average where /proc has it: the machine is shared, so the numbers are
/// reported with it.
#[allow(clippy::disallowed_methods)] // the CLI on the real OS, never in the simulator
fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
}

pub async fn run(
    client_args: &ClientArgs,
    args: TransactionBenchArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, String> {
    let run_for = super::bench::duration(args.duration)?;
    if args.records_per_txn.is_empty() || args.records_per_txn.contains(&0) {
        return Err("--records-per-txn must list positive numbers".into());
    }
    let client = connect(client_args).await?;
    let partitions = super::bench::ensure_topic(&client, &args.topic, args.partitions, err).await?;
    let mut phases: Vec<(String, Phase)> = Vec::new();
    for &per_txn in &args.records_per_txn {
        let phase = transactions(&client, &args, per_txn, run_for).await?;
        let _ = writeln!(
            err,
            "transactions of {per_txn}: {:.1} txn/s",
            phase.transactions as f64 / phase.secs()
        );
        phases.push((format!("transactional_{per_txn}"), phase));
    }
    let phase = idempotent(&client, &args, run_for).await?;
    let _ = writeln!(
        err,
        "idempotent: {:.0} msgs/s",
        phase.records as f64 / phase.secs()
    );
    phases.push(("idempotent".into(), phase));
    // The reads go to the end of what was written: only a stuck read is cut short.
    let read_bound = run_for.max(Duration::from_secs(60));
    let uncommitted = read(
        &client,
        &args.topic,
        IsolationLevel::ReadUncommitted,
        read_bound,
    )
    .await?;
    let committed = read(
        &client,
        &args.topic,
        IsolationLevel::ReadCommitted,
        read_bound,
    )
    .await?;
    let read_ratio = (committed.records as f64 / committed.secs())
        / (uncommitted.records as f64 / uncommitted.secs()).max(1e-9);
    phases.push(("read_uncommitted".into(), uncommitted));
    phases.push(("read_committed".into(), committed));
    let failed = phases
        .iter()
        .any(|(_, p)| p.not_committed > 0 || p.first_error.is_some());
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let load = load_average();
    if client_args.json {
        let mut value = json!({
            "bench": "transactions",
            "topic": args.topic,
            "partitions": partitions,
            "record_size": args.record_size,
            "retry_backoff_ms": args.retry_backoff_ms,
            "duration_s": run_for.as_secs_f64(),
            "read_committed_over_uncommitted": (read_ratio * 1000.0).round() / 1000.0,
            "load_average_1m": load,
        });
        for (name, phase) in &mut phases {
            value[name.as_str()] = phase.json();
        }
        writeln!(out, "{value}").map_err(io)?;
    } else {
        writeln!(
            out,
            "bench transactions: topic {}, {partitions} partition(s), {} B records, retry.backoff.ms {}, {:.1} s per phase{}",
            args.topic,
            args.record_size,
            args.retry_backoff_ms,
            run_for.as_secs_f64(),
            load.map_or(String::new(), |l| format!(", load average {l}"))
        )
        .map_err(io)?;
        for (name, phase) in &mut phases {
            let j = phase.json();
            let txns = if name.starts_with("transactional") {
                format!(
                    "{:>8.1} txn/s  commit p50 {:.2} ms p99 {:.2} ms  ",
                    j["transactions_per_s"].as_f64().unwrap_or(0.0),
                    j["commit_ms_p50"].as_f64().unwrap_or(0.0),
                    j["commit_ms_p99"].as_f64().unwrap_or(0.0)
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {name:<18} {txns}{:>9.0} msgs/s {:>7.2} MB/s{}",
                j["msgs_per_s"].as_f64().unwrap_or(0.0),
                j["mb_per_s"].as_f64().unwrap_or(0.0),
                match (&phase.first_error, phase.not_committed) {
                    (Some(e), n) => format!("  ({n} failed; first: {e})"),
                    (None, _) => String::new(),
                }
            )
            .map_err(io)?;
        }
        writeln!(
            out,
            "  read_committed / read_uncommitted: {read_ratio:.2} (msgs/s)"
        )
        .map_err(io)?;
    }
    Ok(if failed { 1 } else { 0 })
}
