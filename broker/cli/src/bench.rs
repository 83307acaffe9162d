//! `faultline bench produce|consume`: the end-to-end load benchmark, with its yardstick measured
//! by the same command in the same run (see /work/shared/PERFORMANCE.md).
//!
//! # What `bench produce` drives
//! Not the client's per-record [`client::Producer`]: that API costs a metadata lookup, a
//! lock, a oneshot channel and a record clone per record, and at a million records a second on
//! a 2-core machine shared with the broker it would measure itself, not the broker. Instead the
//! bench encodes a small pool of v2 batches once (`client::records::encode_batch`, exactly
//! `--batch-size` bytes or just under) and sends them as Produce requests, `--in-flight` at a
//! time, pipelined on the client's [`client::Connection`] to each partition's leader,
//! round-robin over the partitions. Latency is per request: written to answered.
//!
//! # The yardstick (`--yardstick`, on by default)
//! A minimal produce pipe in the same process, after the broker run, with the same batches, the
//! same partitions and the same number of requests in flight, for the same duration:
//! - server: one thread reads frames (`[len u32][partition u32][batch]`) from a plain TCP socket
//!   on 127.0.0.1:0 into a reused buffer, validates the batch (header + CRC32C, the broker's
//!   `log::batch::validate_all`), patches its base offset, and appends it with `write(2)` to one
//!   file per partition in a fresh temp directory (fresh pages, as the broker's new segments);
//!   a second thread writes an 8-byte ack per frame, in order.
//! - acks=all: a third thread is the group commit, like the broker's durable policy: whenever
//!   frames were appended since the last sync, it `fdatasync`s every file written since, then
//!   releases the acks of every frame appended before that sync began. acks=1: no sync at all.
//!   acks=0: no acks.
//! - client: one thread writes frames while fewer than `--in-flight` are unacknowledged, one
//!   reads acks and timestamps them.
//!
//! `bench consume` reads the topic from its earliest offset with `--fetch-size` (1 MiB) Fetch
//! requests, one in flight per partition, walking batch headers only (no record decoding). Its
//! yardstick is loopback TCP with the same shape: a request, a `--fetch-size` response from
//! memory, one in flight.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args, Subcommand};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{connect, request_error, ClientArgs};
use broker::clock::{Clock, SystemClock};
use broker::log::batch::BatchHeader;
use client::records::{encode_batch, ProducerIdentity, Record};
use client::{
    Acks, Admin, Client, Connection, Consumer, ConsumerConfig, CreateTopicError, MetadataError,
    NewTopic, SeekError,
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce pre-encoded batches as fast as the broker takes them; report msgs/s, MB/s and
    /// per-request latency, and the same for a minimal produce pipe (the yardstick).
    Produce(ProduceBenchArgs),
    /// Fetch a topic from its earliest offset; report MB/s, and loopback TCP (the yardstick).
    Consume(ConsumeBenchArgs),
    /// Time a broker's start with many partitions (its own broker processes, not
    /// --bootstrap-server's), against a broker with one partition (the yardstick).
    Startup(super::startup_bench::StartupBenchArgs),
    /// Time a broker's start after many offset commits to one group, before and after its
    /// offsets partition is compacted, and the cleaner's MB/s against a plain read of the log.
    Compaction(super::compaction_bench::CompactionBenchArgs),
    /// Transactions per second at 10 and 100 records per transaction, next to the idempotent
    /// producer, and the read_committed read rate next to read_uncommitted.
    Transactions(super::transaction_bench::TransactionBenchArgs),
}

#[derive(Debug, Args)]
pub struct ProduceBenchArgs {
    /// Topic to write to (created with --partitions if missing)
    #[arg(long, default_value = "faultline-bench")]
    pub topic: String,
    /// Bytes of each record's value (no key, no headers)
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Bytes of each batch (as many records as fit; at least one)
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_size: usize,
    /// acks: 0, 1 or all
    #[arg(long, default_value = "1", value_parser = |s: &str| s.parse::<Acks>())]
    pub acks: Acks,
    /// Partitions of the topic when the bench creates it; batches go round-robin over them
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Seconds to produce for (each of broker and yardstick)
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Produce requests in flight at once
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Also measure the minimal produce pipe (raw TCP + file append); --yardstick=false to skip
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub yardstick: bool,
    /// Broker and yardstick runs of --duration each, alternating which goes first; the median
    /// round is reported
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Where the yardstick writes its files (default: the system temp dir); put it on the
    /// broker's data-dir file system
    #[arg(long, value_name = "DIR")]
    pub yardstick_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConsumeBenchArgs {
    /// Topic to read (every partition, from the earliest offset)
    #[arg(long, default_value = "faultline-bench")]
    pub topic: String,
    /// Bytes per Fetch (max_bytes and partition_max_bytes)
    #[arg(long, default_value_t = 1024 * 1024)]
    pub fetch_size: i32,
    /// Stop after this many seconds even if the end was not reached
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Also measure loopback TCP with the same request shape; --yardstick=false to skip
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub yardstick: bool,
}

/// What one measured run did.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub requests: u64,
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Per-request latency in nanoseconds (empty with acks=0).
    pub latencies_ns: Vec<u64>,
    pub errors: u64,
}

impl RunStats {
    fn merge(&mut self, other: RunStats) {
        self.requests += other.requests;
        self.records += other.records;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.latencies_ns.extend(other.latencies_ns);
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn msgs_per_s(&self) -> f64 {
        self.records as f64 / self.secs()
    }

    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs() / 1e6
    }

    fn percentiles(&mut self) -> Option<[u64; 4]> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        self.latencies_ns.sort_unstable();
        let l = &self.latencies_ns;
        let at = |q: f64| l[((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1];
        Some([at(0.50), at(0.99), at(0.999), l[l.len() - 1]])
    }

    fn json(&mut self) -> serde_json::Value {
        let latency = self.percentiles().map(|[p50, p99, p999, max]| {
            json!({"p50": p50 as f64 / 1e3, "p99": p99 as f64 / 1e3, "p99.9": p999 as f64 / 1e3, "max": max as f64 / 1e3})
        });
        json!({
            "msgs_per_s": self.msgs_per_s().round(),
            "mb_per_s": (self.mb_per_s() * 10.0).round() / 10.0,
            "requests": self.requests,
            "records": self.records,
            "bytes": self.bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "errors": self.errors,
            "latency_us": latency,
        })
    }

    fn line(&mut self, name: &str) -> String {
        let latency = match self.percentiles() {
            Some([p50, p99, p999, max]) => format!(
                "  latency p50 {}  p99 {}  p99.9 {}  max {}",
                fmt_ns(p50),
                fmt_ns(p99),
                fmt_ns(p999),
                fmt_ns(max)
            ),
            None => "  latency n/a (no acks)".to_string(),
        };
        format!(
            "  {name:<10} {:>10.0} msgs/s  {:>8.1} MB/s  {:>8.0} req/s{latency}",
            self.msgs_per_s(),
            self.mb_per_s(),
            self.requests as f64 / self.secs(),
        )
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

/// Runs a `bench` subcommand; returns the exit code (1 when anything failed).
pub async fn run(args: BenchArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let result = match args.command {
        BenchCommand::Produce(p) => produce(&args.client, p, out, err).await,
        BenchCommand::Consume(c) => consume(&args.client, c, out, err).await,
        BenchCommand::Startup(s) => super::startup_bench::run(s, args.client.json, out, err).await,
        BenchCommand::Compaction(c) => {
            super::compaction_bench::run(c, args.client.json, out, err).await
        }
        BenchCommand::Transactions(t) => {
            super::transaction_bench::run(&args.client, t, out, err).await
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

pub(crate) fn duration(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "--duration must be a positive number of seconds, not {secs}"
        ))
    }
}

/// A pool of distinct batches, each as many `record_size` records as fit in `batch_size` bytes
/// (at least one); returns them and the records per batch.
pub fn make_batches(record_size: usize, batch_size: usize, pool: usize) -> (Vec<Bytes>, usize) {
    let now = SystemClock.now_ms();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut fill = |n: usize| -> Bytes {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.extend_from_slice(&seed.to_le_bytes());
        }
        v.truncate(n);
        Bytes::from(v)
    };
    let value = fill(record_size);
    let encode = |n: usize, value: &Bytes| {
        let records: Vec<Record> = (0..n)
            .map(|_| Record {
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
                timestamp_ms: now,
            })
            .collect();
        encode_batch(&records, ProducerIdentity::NONE)
    };
    let mut n = (batch_size.saturating_sub(61) / (record_size + 12)).max(1);
    while n > 1 && encode(n, &value).len() > batch_size {
        n -= 1;
    }
    while encode(n + 1, &value).len() <= batch_size {
        n += 1;
    }
    let batches = (0..pool.max(1))
        .map(|_| Bytes::from(encode(n, &fill(record_size))))
        .collect();
    (batches, n)
}

/// Creates the topic if needed and waits until every partition has a leader; returns its
/// partition count.
pub(crate) async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: i32,
    err: &mut dyn Write,
) -> Result<i32, String> {
    match Admin::new(client.clone())
        .create_topic(NewTopic::new(topic, partitions))
        .await
    {
        Ok(()) | Err(CreateTopicError::AlreadyExists(_)) => {}
        Err(CreateTopicError::Request(e)) => return Err(request_error(&e)),
        Err(e) => return Err(e.to_string()),
    }
    for _ in 0..50 {
        match client.refresh_topic(topic, false).await {
            Ok(meta)
                if !meta.partitions.is_empty() && meta.partitions.iter().all(|p| p.leader >= 0) =>
            {
                let n = meta.partitions.len() as i32;
                if n != partitions {
                    let _ = writeln!(
                        err,
                        "note: topic {topic} already exists with {n} partitions; using them all"
                    );
                }
                return Ok(n);
            }
            Ok(_) | Err(MetadataError::UnknownTopic(_)) => {}
            Err(MetadataError::Request(e)) => return Err(request_error(&e)),
            Err(e) => return Err(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("topic {topic} has no leader for every partition"))
}

struct ProduceJob {
    topic: TopicName,
    acks: Acks,
    batches: Vec<Bytes>,
    records_per_batch: u64,
    leaders: Vec<Arc<Connection>>,
    deadline: tokio::time::Instant,
    next: AtomicU64,
}

/// One of `--in-flight` senders: sends the next batch until the deadline.
async fn produce_worker(job: Arc<ProduceJob>) -> Result<(RunStats, Option<String>), String> {
    let mut stats = RunStats::default();
    let mut first_error = None;
    let timeout_ms = 30_000;
    while client::now() < job.deadline {
        let n = job.next.fetch_add(1, Ordering::Relaxed);
        let partition = (n % job.leaders.len() as u64) as usize;
        let batch = &job.batches[(n / job.leaders.len() as u64) as usize % job.batches.len()];
        let connection = &job.leaders[partition];
        let request = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(job.acks.code())
            .with_timeout_ms(timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(job.topic.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition as i32)
                    .with_records(Some(batch.clone()))])]);
        let start = client::now();
        if job.acks == Acks::None {
            connection
                .send_without_response(&request)
                .await
                .map_err(|e| request_error(&e))?;
            stats.requests += 1;
            stats.records += job.records_per_batch;
            stats.bytes += batch.len() as u64;
            continue;
        }
        let response = connection
            .send(&request)
            .await
            .map_err(|e| request_error(&e))?;
        stats.latencies_ns.push(start.elapsed().as_nanos() as u64);
        stats.requests += 1;
        let result = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition as i32);
        match result.map(|p| (p.error_code, p.error_message.as_ref())) {
            Some((0, _)) => {
                stats.records += job.records_per_batch;
                stats.bytes += batch.len() as u64;
            }
            Some((code, message)) => {
                stats.errors += 1;
                let error = ResponseError::try_from_code(code)
                    .map_or_else(|| format!("error code {code}"), |e| e.to_string());
                first_error.get_or_insert_with(|| match message {
                    Some(m) => format!("partition {partition}: {error}: {}", m.as_str()),
                    None => format!("partition {partition}: {error}"),
                });
            }
            None => {
                stats.errors += 1;
                first_error.get_or_insert_with(|| {
                    format!("partition {partition}: missing from the response")
                });
            }
        }
    }
    Ok((stats, first_error))
}

/// One broker phase: `in_flight` senders until the job's deadline.
async fn produce_phase(
    job: Arc<ProduceJob>,
    in_flight: usize,
) -> Result<(RunStats, Option<String>), String> {
    let start = client::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| tokio::spawn(produce_worker(Arc::clone(&job))))
        .collect();
    let mut stats = RunStats::default();
    let mut first_error = None;
    let mut failure = None;
    for w in workers {
        match w.await {
            Ok(Ok((s, error))) => {
                stats.merge(s);
                if first_error.is_none() {
                    first_error = error;
                }
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(format!("bench task failed: {e}")),
        }
    }
    stats.elapsed = start.elapsed();
    match failure {
        Some(e) => Err(e),
        None => Ok((stats, first_error)),
    }
}

async fn run_yardstick(
    args: &ProduceBenchArgs,
    batches: &[Bytes],
    records_per_batch: usize,
    partitions: i32,
    run_for: Duration,
) -> Result<RunStats, String> {
    yardstick::produce_pipe(yardstick::PipeConfig {
        batches: batches.to_vec(),
        records_per_batch: records_per_batch as u64,
        partitions: partitions as usize,
        in_flight: args.in_flight,
        acks: args.acks,
        duration: run_for,
        dir: args
            .yardstick_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
    })
    .await
}

/// The median round by msgs/s, with the latencies and errors of every round. With an even
/// number of rounds the median is the mean of the two middle ones (two rounds: their mean, not
/// the faster one), so its rates are the mean of theirs over their mean length.
pub fn median_round(mut runs: Vec<RunStats>) -> Option<RunStats> {
    if runs.is_empty() {
        return None;
    }
    runs.sort_by(|a, b| a.msgs_per_s().total_cmp(&b.msgs_per_s()));
    let mut latencies = Vec::new();
    for r in &mut runs {
        latencies.append(&mut r.latencies_ns);
    }
    let errors = runs.iter().map(|r| r.errors).sum();
    let upper = runs.len() / 2;
    let mut median = if runs.len() % 2 == 1 {
        runs.swap_remove(upper)
    } else {
        let (a, b) = (&runs[upper - 1], &runs[upper]);
        let elapsed = (a.elapsed + b.elapsed) / 2;
        let secs = elapsed.as_secs_f64();
        let mean = |x: f64, y: f64| (x + y) / 2.0;
        RunStats {
            requests: (a.requests + b.requests) / 2,
            records: (mean(a.msgs_per_s(), b.msgs_per_s()) * secs).round() as u64,
            bytes: (mean(a.mb_per_s(), b.mb_per_s()) * 1e6 * secs).round() as u64,
            elapsed,
            latencies_ns: Vec::new(),
            errors: 0,
        }
    };
    median.latencies_ns = latencies;
    median.errors = errors;
    Some(median)
}

/// One line on stderr as each phase ends, so a long benchmark shows it is alive.
fn progress(err: &mut dyn Write, what: &str, round: usize, rounds: usize, stats: &RunStats) {
    let _ = writeln!(
        err,
        "round {}/{rounds}: {what} {:.0} msgs/s, {:.1} MB/s",
        round + 1,
        stats.msgs_per_s(),
        stats.mb_per_s()
    );
    let _ = err.flush();
}

async fn produce(
    client_args: &ClientArgs,
    args: ProduceBenchArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, String> {
    let run_for = duration(args.duration)?;
    if args.record_size == 0 || args.record_size > 64 * 1024 * 1024 {
        return Err("--record-size must be between 1 and 64 MiB".into());
    }
    if args.batch_size > 64 * 1024 * 1024 {
        return Err("--batch-size must be at most 64 MiB".into());
    }
    if args.partitions < 1 || args.in_flight < 1 || args.in_flight > 1024 {
        return Err("--partitions must be ≥ 1 and --in-flight between 1 and 1024".into());
    }
    let (batches, records_per_batch) = make_batches(args.record_size, args.batch_size, 8);
    let batch_bytes = batches[0].len();
    let client = connect(client_args).await?;
    let partitions = ensure_topic(&client, &args.topic, args.partitions, err).await?;
    let mut leaders = Vec::new();
    for p in 0..partitions {
        let leader = client.leader(&args.topic, p).await.map_err(|e| match e {
            MetadataError::Request(r) => request_error(&r),
            other => other.to_string(),
        })?;
        leaders.push(leader);
    }
    let rounds = async {
        let mut broker_rounds = Vec::new();
        let mut yardstick_rounds = Vec::new();
        let mut first_error = None;
        let rounds = args.rounds.max(1);
        for round in 0..rounds {
            // Alternate which goes first: whoever runs second writes while the first one's dirty
            // pages are being written back, and gets whatever pages the kernel freed meanwhile.
            let yardstick_first = round % 2 == 1;
            if args.yardstick && yardstick_first {
                let stats =
                    run_yardstick(&args, &batches, records_per_batch, partitions, run_for).await?;
                progress(err, "yardstick", round, rounds, &stats);
                yardstick_rounds.push(stats);
            }
            let job = Arc::new(ProduceJob {
                topic: TopicName(StrBytes::from_string(args.topic.clone())),
                acks: args.acks,
                batches: batches.clone(),
                records_per_batch: records_per_batch as u64,
                leaders: leaders.clone(),
                deadline: client::now() + run_for,
                next: AtomicU64::new(0),
            });
            let (stats, error) = produce_phase(job, args.in_flight).await?;
            progress(err, "faultline", round, rounds, &stats);
            broker_rounds.push(stats);
            if first_error.is_none() {
                first_error = error;
            }
            if args.yardstick && !yardstick_first {
                let stats =
                    run_yardstick(&args, &batches, records_per_batch, partitions, run_for).await?;
                progress(err, "yardstick", round, rounds, &stats);
                yardstick_rounds.push(stats);
            }
        }
        Ok::<_, String>((broker_rounds, yardstick_rounds, first_error))
    }
    .await;
    yardstick::remove_files().await;
    let (broker_rounds, yardstick_rounds, first_error) = rounds?;
    let rounds_msgs = |runs: &[RunStats]| {
        runs.iter()
            .map(|r| r.msgs_per_s().round())
            .collect::<Vec<_>>()
    };
    let broker_msgs = rounds_msgs(&broker_rounds);
    let yardstick_msgs = rounds_msgs(&yardstick_rounds);
    let mut broker = median_round(broker_rounds).expect("at least one round");
    let mut yardstick = median_round(yardstick_rounds);
    let ratio = yardstick
        .as_ref()
        .map(|y| broker.msgs_per_s() / y.msgs_per_s().max(1e-9));
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    if client_args.json {
        let value = json!({
            "bench": "produce",
            "topic": args.topic,
            "partitions": partitions,
            "acks": acks_name(args.acks),
            "record_size": args.record_size,
            "batch_size": args.batch_size,
            "records_per_batch": records_per_batch,
            "batch_bytes": batch_bytes,
            "in_flight": args.in_flight,
            "duration_s": run_for.as_secs_f64(),
            "driver": "pre-encoded batches as pipelined Produce requests on client::Connection",
            "broker": broker.json(),
            "yardstick": yardstick.as_mut().map(|y| y.json()),
            "ratio": ratio.map(|r| (r * 1000.0).round() / 1000.0),
            "rounds": args.rounds.max(1),
            "broker_rounds_msgs_per_s": broker_msgs,
            "yardstick_rounds_msgs_per_s": yardstick_msgs,
        });
        writeln!(out, "{value}").map_err(io)?;
    } else {
        writeln!(
            out,
            "bench produce: topic {}, {partitions} partition(s), acks={}, {} B records, {} B batches ({records_per_batch} records, {batch_bytes} B), {} in flight, {:.1} s",
            args.topic,
            acks_name(args.acks),
            args.record_size,
            args.batch_size,
            args.in_flight,
            run_for.as_secs_f64()
        )
        .map_err(io)?;
        writeln!(out, "{}", broker.line("faultline")).map_err(io)?;
        match (&mut yardstick, ratio) {
            (Some(y), Some(r)) => {
                writeln!(out, "{}", y.line("yardstick")).map_err(io)?;
                writeln!(out, "  ratio      {r:.2} (faultline / yardstick, msgs/s)").map_err(io)?;
            }
            _ => writeln!(out, "  yardstick  skipped").map_err(io)?,
        }
        if args.rounds > 1 {
            writeln!(
                out,
                "  rounds     faultline {broker_msgs:?}  yardstick {yardstick_msgs:?} msgs/s (median shown; latency over all rounds)"
            )
            .map_err(io)?;
        }
    }
    if broker.errors > 0 {
        let _ = writeln!(
            err,
            "error: {} of {} produce requests failed; first: {}",
            broker.errors,
            broker.requests,
            first_error.unwrap_or_default()
        );
        return Ok(1);
    }
    Ok(0)
}

async fn consume(
    client_args: &ClientArgs,
    args: ConsumeBenchArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, String> {
    let run_for = duration(args.duration)?;
    if args.fetch_size < 1 {
        return Err("--fetch-size must be positive".into());
    }
    let client = connect(client_args).await?;
    let meta = client
        .refresh_topic(&args.topic, false)
        .await
        .map_err(|e| match e {
            MetadataError::Request(r) => request_error(&r),
            other => other.to_string(),
        })?;
    let seek = |e: SeekError| match e {
        SeekError::Request(r) => request_error(&r),
        other => other.to_string(),
    };
    let lookup = Consumer::new(client.clone(), ConsumerConfig::default());
    let mut tasks = Vec::new();
    let start = client::now();
    let deadline = start + run_for;
    let topic = TopicName(StrBytes::from_string(args.topic.clone()));
    for p in &meta.partitions {
        let from = lookup
            .list_offset(&args.topic, p.index, -2)
            .await
            .map_err(seek)?;
        let to = lookup
            .list_offset(&args.topic, p.index, -1)
            .await
            .map_err(seek)?;
        let connection = client
            .leader(&args.topic, p.index)
            .await
            .map_err(|e| match e {
                MetadataError::Request(r) => request_error(&r),
                other => other.to_string(),
            })?;
        tasks.push(tokio::spawn(fetch_partition(
            connection,
            topic.clone(),
            p.index,
            from,
            to,
            args.fetch_size,
            deadline,
        )));
    }
    let mut broker = RunStats::default();
    for t in tasks {
        match t.await {
            Ok(Ok(stats)) => broker.merge(stats),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("bench task failed: {e}")),
        }
    }
    broker.elapsed = start.elapsed();
    progress(err, "faultline", 0, 1, &broker);
    if broker.records == 0 {
        let _ = writeln!(
            err,
            "note: topic {} is empty; run `faultline bench produce` first",
            args.topic
        );
    }
    let mut yardstick = if args.yardstick {
        // As long as the broker run took (it may have hit the end of the topic early).
        let length = broker.elapsed.max(Duration::from_millis(200)).min(run_for);
        Some(yardstick::fetch_pipe(args.fetch_size as usize, length).await?)
    } else {
        None
    };
    let ratio = yardstick
        .as_ref()
        .map(|y| broker.mb_per_s() / y.mb_per_s().max(1e-9));
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    if client_args.json {
        let value = json!({
            "bench": "consume",
            "topic": args.topic,
            "partitions": meta.partitions.len(),
            "fetch_size": args.fetch_size,
            "duration_s": run_for.as_secs_f64(),
            "broker": broker.json(),
            "yardstick": yardstick.as_mut().map(|y| y.json()),
            "ratio": ratio.map(|r| (r * 1000.0).round() / 1000.0),
        });
        writeln!(out, "{value}").map_err(io)?;
    } else {
        writeln!(
            out,
            "bench consume: topic {}, {} partition(s), {} B fetches, at most {:.1} s, {} records / {} B read",
            args.topic,
            meta.partitions.len(),
            args.fetch_size,
            run_for.as_secs_f64(),
            broker.records,
            broker.bytes
        )
        .map_err(io)?;
        writeln!(out, "{}", broker.line("faultline")).map_err(io)?;
        match (&mut yardstick, ratio) {
            (Some(y), Some(r)) => {
                writeln!(out, "{}", y.line("yardstick")).map_err(io)?;
                writeln!(out, "  ratio      {r:.2} (faultline / yardstick, MB/s)").map_err(io)?;
            }
            _ => writeln!(out, "  yardstick  skipped").map_err(io)?,
        }
    }
    Ok(0)
}

/// Fetches one partition from `from` to `to` (or the deadline), one request in flight.
async fn fetch_partition(
    connection: Arc<Connection>,
    topic: TopicName,
    partition: i32,
    from: i64,
    to: i64,
    fetch_size: i32,
    deadline: tokio::time::Instant,
) -> Result<RunStats, String> {
    let mut stats = RunStats::default();
    let mut offset = from;
    while offset < to && client::now() < deadline {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(fetch_size)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(fetch_size)])]);
        let start = client::now();
        let response = connection
            .send(&request)
            .await
            .map_err(|e| request_error(&e))?;
        stats.latencies_ns.push(start.elapsed().as_nanos() as u64);
        stats.requests += 1;
        let Some(data) = response
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
        else {
            return Err(format!(
                "partition {partition} missing from the fetch response"
            ));
        };
        if data.error_code != 0 {
            let error = ResponseError::try_from_code(data.error_code).map_or_else(
                || format!("error code {}", data.error_code),
                |e| e.to_string(),
            );
            return Err(format!(
                "fetch of partition {partition} at {offset}: {error}"
            ));
        }
        let records = data.records.as_deref().unwrap_or_default();
        let mut pos = 0;
        let before = offset;
        while let Ok(header) = BatchHeader::parse(&records[pos..]) {
            if records.len() - pos < header.size() {
                break;
            }
            if header.last_offset() >= offset {
                stats.records += header.records_count.max(0) as u64;
                offset = header.last_offset() + 1;
            }
            stats.bytes += header.size() as u64;
            pos += header.size();
        }
        if offset == before {
            // Nothing whole came back: the end of what is readable.
            break;
        }
    }
    Ok(stats)
}

/// The minimal pipes, on OS threads, sockets and files: bench code, not broker code, so the
/// broker's determinism bans (clippy.toml) do not apply here; they stay in force everywhere else.
#[cfg(not(madsim))]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod yardstick {
    use std::collections::VecDeque;
    use std::fs::{File, OpenOptions};
    use std::io::{self, BufReader, IoSlice, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::RunStats;
    use broker::log::batch;
    use client::Acks;

    pub struct PipeConfig {
        pub batches: Vec<Bytes>,
        pub records_per_batch: u64,
        pub partitions: usize,
        pub in_flight: usize,
        pub acks: Acks,
        pub duration: Duration,
        pub dir: PathBuf,
    }

    /// Runs `f` on its own thread and awaits it without blocking the runtime.
    async fn off_runtime<T: Send + 'static>(
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("yardstick".into())
            .spawn(move || {
                let _ = tx.send(f());
            })
            .map_err(|e| format!("yardstick: cannot start a thread: {e}"))?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("yardstick failed: {e}")),
            Err(_) => Err("yardstick thread panicked".into()),
        }
    }

    pub async fn produce_pipe(config: PipeConfig) -> Result<RunStats, String> {
        off_runtime(move || produce_pipe_blocking(config)).await
    }

    pub async fn fetch_pipe(fetch_size: usize, duration: Duration) -> Result<RunStats, String> {
        off_runtime(move || fetch_pipe_blocking(fetch_size, duration)).await
    }

    fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !bufs.is_empty() {
            match w.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Appended and synced frame counts, and which files have unsynced bytes.
    struct Durability {
        appended: u64,
        durable: u64,
        dirty: Vec<bool>,
        done: bool,
    }

    struct GroupCommit {
        state: Mutex<Durability>,
        changed: Condvar,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every directory the yardstick wrote, removed by [`remove_files`] at the end of the
    /// command, not after each round: freed page-cache pages would make the next round's
    /// writes (the broker's or the yardstick's) cheaper than fresh ones.
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub async fn remove_files() {
        let dirs = std::mem::take(&mut *lock(&DIRS));
        for dir in dirs {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    fn produce_pipe_blocking(config: PipeConfig) -> io::Result<RunStats> {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let dir = config.dir.join(format!(
            "faultline-yardstick-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        lock(&DIRS).push(dir.clone());
        produce_pipe_in(&config, &dir)
    }

    fn produce_pipe_in(config: &PipeConfig, dir: &std::path::Path) -> io::Result<RunStats> {
        let files = (0..config.partitions)
            .map(|p| {
                OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(dir.join(format!("{p:05}.log")))
                    .map(Arc::new)
            })
            .collect::<io::Result<Vec<Arc<File>>>>()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let acks = config.acks;
        let server = std::thread::spawn(move || -> io::Result<()> {
            let (stream, _) = listener.accept()?;
            serve_produce(stream, files, acks)
        });
        let client = produce_client(config, addr);
        let served = server
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("yardstick server panicked")));
        let stats = client?;
        served?;
        Ok(stats)
    }

    /// The broker side of the pipe. See the module doc of `cli::bench`.
    fn serve_produce(stream: TcpStream, files: Vec<Arc<File>>, acks: Acks) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let mut writer = stream.try_clone()?;
        let sync = Arc::new(GroupCommit {
            state: Mutex::new(Durability {
                appended: 0,
                durable: 0,
                dirty: vec![false; files.len()],
                done: false,
            }),
            changed: Condvar::new(),
        });
        let syncer = (acks == Acks::All).then(|| {
            let sync = Arc::clone(&sync);
            let files = files.clone();
            std::thread::spawn(move || -> io::Result<()> {
                loop {
                    let (target, dirty) = {
                        let mut st = lock(&sync.state);
                        while st.appended == st.durable && !st.done {
                            st = sync.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        if st.appended == st.durable {
                            return Ok(());
                        }
                        let dirty = std::mem::replace(&mut st.dirty, vec![false; files.len()]);
                        (st.appended, dirty)
                    };
                    for (file, _) in files.iter().zip(&dirty).filter(|(_, d)| **d) {
                        file.sync_data()?;
                    }
                    lock(&sync.state).durable = target;
                    sync.changed.notify_all();
                }
            })
        });
        let (ack_tx, ack_rx) = mpsc::channel::<u64>();
        let ack_sync = Arc::clone(&sync);
        let acker = (acks != Acks::None).then(|| {
            std::thread::spawn(move || -> io::Result<()> {
                for seq in ack_rx {
                    if acks == Acks::All {
                        let mut st = lock(&ack_sync.state);
                        while st.durable < seq {
                            st = ack_sync.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    writer.write_all(&seq.to_be_bytes())?;
                }
                Ok(())
            })
        });
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut buf = Vec::new();
        let mut next_offset = vec![0i64; files.len()];
        let mut seq = 0u64;
        let read_result = loop {
            let mut len = [0u8; 4];
            match reader.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
                Err(e) => break Err(e),
            }
            let len = u32::from_be_bytes(len) as usize;
            buf.resize(len, 0);
            if let Err(e) = reader.read_exact(&mut buf) {
                break Err(e);
            }
            if len < 4 {
                break Err(io::Error::other("short frame"));
            }
            let (p, records) = buf.split_at_mut(4);
            let p = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            let Some(file) = files.get(p) else {
                break Err(io::Error::other("bad partition"));
            };
            let headers = match batch::validate_all(records) {
                Ok(h) => h,
                Err(e) => break Err(io::Error::other(e.to_string())),
            };
            let mut at = 0;
            for h in &headers {
                batch::set_base_offset(&mut records[at..], next_offset[p]);
                next_offset[p] += i64::from(h.last_offset_delta) + 1;
                at += h.size();
            }
            if let Err(e) = (&**file).write_all(records) {
                break Err(e);
            }
            seq += 1;
            if acks == Acks::All {
                let mut st = lock(&sync.state);
                st.appended = seq;
                st.dirty[p] = true;
                drop(st);
                sync.changed.notify_all();
            }
            if acks != Acks::None && ack_tx.send(seq).is_err() {
                break Err(io::Error::other("ack writer stopped"));
            }
        };
        drop(ack_tx);
        lock(&sync.state).done = true;
        sync.changed.notify_all();
        let acked = acker.map_or(Ok(()), |a| {
            a.join()
                .unwrap_or_else(|_| Err(io::Error::other("acker panicked")))
        });
        let synced = syncer.map_or(Ok(()), |s| {
            s.join()
                .unwrap_or_else(|_| Err(io::Error::other("syncer panicked")))
        });
        read_result?;
        acked?;
        synced
    }

    struct InFlight {
        sent: VecDeque<Instant>,
    }

    /// The client side: the same batches, round-robin over the partitions, `in_flight` at once.
    fn produce_client(config: &PipeConfig, addr: std::net::SocketAddr) -> io::Result<RunStats> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let shared = Arc::new((
            Mutex::new(InFlight {
                sent: VecDeque::new(),
            }),
            Condvar::new(),
        ));
        let ack_stream = stream.try_clone()?;
        let reader = (config.acks != Acks::None).then(|| {
            let mut stream = ack_stream;
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || -> io::Result<(u64, Vec<u64>)> {
                let mut latencies = Vec::new();
                let mut acked = 0u64;
                let mut ack = [0u8; 8];
                loop {
                    match stream.read_exact(&mut ack) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e),
                    }
                    let sent = lock(&shared.0).sent.pop_front();
                    shared.1.notify_all();
                    if let Some(sent) = sent {
                        latencies.push(sent.elapsed().as_nanos() as u64);
                    }
                    acked += 1;
                }
                Ok((acked, latencies))
            })
        });
        let start = Instant::now();
        let deadline = start + config.duration;
        let mut n = 0u64;
        let mut bytes = 0u64;
        let partitions = config.partitions.max(1) as u64;
        let written = (|| -> io::Result<()> {
            while Instant::now() < deadline {
                if config.acks != Acks::None {
                    let mut st = lock(&shared.0);
                    while st.sent.len() >= config.in_flight {
                        st = shared.1.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    st.sent.push_back(Instant::now());
                }
                let p = (n % partitions) as u32;
                let batch = &config.batches[(n / partitions) as usize % config.batches.len()];
                let len = (batch.len() + 4) as u32;
                let mut head = [0u8; 8];
                head[..4].copy_from_slice(&len.to_be_bytes());
                head[4..].copy_from_slice(&p.to_be_bytes());
                write_all_vectored(&mut stream, &mut [IoSlice::new(&head), IoSlice::new(batch)])?;
                n += 1;
                bytes += batch.len() as u64;
            }
            // Wait for the acks of everything sent.
            let mut st = lock(&shared.0);
            while !st.sent.is_empty() {
                st = shared.1.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            Ok(())
        })();
        let elapsed = start.elapsed();
        let _ = stream.shutdown(Shutdown::Write);
        let read = reader.map(|r| {
            r.join()
                .unwrap_or_else(|_| Err(io::Error::other("ack reader panicked")))
        });
        written?;
        let latencies_ns = match read {
            Some(r) => r?.1,
            None => Vec::new(),
        };
        Ok(RunStats {
            requests: n,
            records: n * config.records_per_batch,
            bytes,
            elapsed,
            latencies_ns,
            errors: 0,
        })
    }

    /// Loopback TCP shaped like a fetch: an 8-byte request, a `fetch_size` response from memory.
    fn fetch_pipe_blocking(fetch_size: usize, duration: Duration) -> io::Result<RunStats> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<()> {
            let (mut stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            let mut response = vec![0x5au8; fetch_size + 4];
            response[..4].copy_from_slice(&(fetch_size as u32).to_be_bytes());
            let mut request = [0u8; 8];
            loop {
                match stream.read_exact(&mut request) {
                    Ok(()) => stream.write_all(&response)?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        });
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; fetch_size + 4];
        let mut stats = RunStats::default();
        let start = Instant::now();
        while start.elapsed() < duration {
            let sent = Instant::now();
            stream.write_all(&stats.requests.to_be_bytes())?;
            stream.read_exact(&mut buf)?;
            stats.latencies_ns.push(sent.elapsed().as_nanos() as u64);
            stats.requests += 1;
            stats.bytes += fetch_size as u64;
        }
        stats.elapsed = start.elapsed();
        stream.shutdown(Shutdown::Write)?;
        server
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("fetch yardstick server panicked")))?;
        Ok(stats)
    }
}

/// The simulation build has no OS threads or files: the yardstick is not available there.
#[cfg(madsim)]
mod yardstick {
    use std::path::PathBuf;
    use std::time::Duration;

    use bytes::Bytes;

    use super::RunStats;
    use client::Acks;

    pub struct PipeConfig {
        pub batches: Vec<Bytes>,
        pub records_per_batch: u64,
        pub partitions: usize,
        pub in_flight: usize,
        pub acks: Acks,
        pub duration: Duration,
        pub dir: PathBuf,
    }

    pub async fn produce_pipe(config: PipeConfig) -> Result<RunStats, String> {
        let _ = (
            config.batches,
            config.records_per_batch,
            config.partitions,
            config.in_flight,
            config.acks,
            config.duration,
            config.dir,
        );
        Err("the yardstick needs OS threads and files: not in the simulation build".into())
    }

    pub async fn remove_files() {}

    pub async fn fetch_pipe(_fetch_size: usize, _duration: Duration) -> Result<RunStats, String> {
        Err("the yardstick needs OS threads and files: not in the simulation build".into())
    }
}
