//! The scenario runner: one scenario, one seed, one verdict.
//!
//! A run goes through these phases, all in simulated time on a fresh madsim runtime seeded with
//! the run's seed (so the same scenario and seed replay exactly, trace hash included):
//!
//! 1. **Plan.** The seed draws every randomized option (the disks' seeds, which swarm fault kinds
//!    are on, their rates and targets, `any-broker` targets); the banner prints them all.
//! 2. **Boot.** Brokers on `10.0.0.<id>:9092`, each on its own faulty disk ([`crate::cluster`]);
//!    client nodes on `10.0.1.<n>`. Topics are created through the admin client.
//! 3. **Fault window** (`duration-ms`, times in the file count from here). Producers send unique
//!    values (a counter) at their rate; consumers poll every partition. Every operation is
//!    recorded in the [`History`] (invoke, then ok / fail / unknown) and in the trace. The nemesis
//!    applies the schedule. Online invariants are checked every few milliseconds.
//! 4. **Heal** everything; let in-flight sends settle (bounded by the delivery timeout).
//! 5. **Liveness.** Within `liveness-timeout-ms`, every acknowledged record must be readable
//!    (when the configuration does not allow lost writes) and every partition readable from its
//!    start to its high watermark.
//! 6. **Final read** of every partition from the log start, recorded as polls by the final-reader
//!    process ([`FINAL_READER`]); and the log-level check that each partition's batches are
//!    dense (each starts where the previous ended).
//! 7. **Check** the history ([`check_history`]: the offline checker's plug) and give the verdict.
//!    Anomalies the scenario's expectations allow are reported as allowed, never as a pass or a
//!    violation; any violation fails the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::config::{BrokerConfig, FlushMode};
use broker::log::batch;
use broker::log::FlushPolicy;
use chaos::nemesis::{Applied, Fault, FaultKind, Nemesis, Node};
use chaos::FaultyDiskConfig;
use client::{
    Acks, Admin, Client, ClientConfig, ConnectionConfig, Consumer, ConsumerConfig,
    CreateTopicError, NewTopic, OffsetReset, PollError, Producer, ProducerConfig, ProducerRecord,
    SeekTo, SendOutcome,
};
use madsim::rand::Rng;
use serde::Serialize;

use crate::checker::{self, Allowance, Allowances, LossAllowance, Status};
use crate::cluster::{BrokerSetup, Cluster};
use crate::history::{History, OpKind, Outcome, Process, Recorder};
use crate::scenario::{AcksSpec, AllowSpec, FlushModeSpec, Scenario, ScriptedFault, TargetSpec};
use crate::trace::{now_ms, Trace, TraceEvent};

pub use crate::checker::FINAL_READER;

/// The kinds of anomaly the harness itself finds (the history checker finds the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HarnessAnomalyKind {
    /// A broker invariant checked online or on the final log (offsets assigned once and
    /// densely, high watermark within the log and, under the durable policy, within what is
    /// durable), or a panic of the simulation.
    Invariant,
    /// A partition, or an acknowledged record, not readable within the liveness bound.
    Unavailable,
}

/// How the runner reports while it runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Print the banner and progress lines to stdout.
    pub progress: bool,
}

/// One finding of the harness.
#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    pub kind: HarnessAnomalyKind,
    /// The scenario's expectations allow it (reported, not a failure).
    pub allowed: bool,
    pub description: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offsets: Vec<i64>,
    pub values: Vec<u64>,
    pub at_ms: Vec<u64>,
}

/// Operation counts of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub operations: usize,
    pub sends: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub unknown: usize,
    pub polls: usize,
    pub records_read: usize,
    pub faults_applied: usize,
    pub broker_boots: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        })
    }
}

/// The result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub file: String,
    pub seed: u64,
    pub verdict: Verdict,
    /// 16 hex digits.
    pub trace_hash: String,
    /// Every option drawn from the seed, by name.
    pub options: BTreeMap<String, String>,
    pub counts: Counts,
    /// What the harness found (online invariants, liveness, the final log).
    pub anomalies: Vec<Anomaly>,
    /// What the offline history checker found.
    pub checker: Option<checker::Report>,
    pub sim_ms: u64,
    pub replay: String,
    #[serde(skip)]
    pub trace: Vec<TraceEvent>,
    #[serde(skip)]
    pub history: History,
}

impl Report {
    /// The last line of `cargo sim run`.
    pub fn verdict_line(&self) -> String {
        format!(
            "verdict: {} scenario={} seed={} trace={}",
            self.verdict, self.scenario, self.seed, self.trace_hash
        )
    }
}

/// The command that replays a run.
pub fn replay_command(file: &str, seed: u64) -> String {
    format!("cargo sim replay {file} --seed {seed} --trace")
}

/// Runs `scenario` (loaded from `file`) with `seed` on a fresh simulator, on a fresh thread.
///
/// The fresh thread matters: std's `RandomState` draws its keys once per thread and then
/// increments them for every new map, so a second run on the same thread would see different
/// `HashMap` orders than the first (found by a sweep whose failing seeds passed when rerun
/// alone). On a fresh thread the keys are drawn inside the simulator, from the seed.
pub fn run(scenario: &Scenario, file: &str, seed: u64, options: RunOptions) -> Report {
    run_keeping_trace(scenario, file, seed, options)
        .unwrap_or_else(|(panic, _)| std::panic::resume_unwind(panic))
}

type Panicked = (Box<dyn std::any::Any + Send>, Vec<TraceEvent>);

/// Runs on a thread of its own; if the simulation panics (a hang past the time limit is one),
/// the panic comes back with the trace recorded up to that point.
fn run_keeping_trace(
    scenario: &Scenario,
    file: &str,
    seed: u64,
    options: RunOptions,
) -> Result<Report, Panicked> {
    let (scenario, file) = (scenario.clone(), file.to_string());
    let trace = Trace::new();
    let inside = trace.clone();
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    // the harness, outside the simulation
    let thread = std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .stack_size(64 << 20)
        .spawn(move || run_here(&scenario, &file, seed, options, inside))
        .expect("spawn the simulation thread");
    thread.join().map_err(|panic| (panic, trace.take()))
}

fn run_here(
    scenario: &Scenario,
    file: &str,
    seed: u64,
    options: RunOptions,
    trace: Trace,
) -> Report {
    let mut runtime =
        madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    // A hang is a finding, not a stuck sweep: bound the simulated time.
    let limit = scenario.duration_ms + scenario.liveness_timeout_ms + 120_000;
    runtime.set_time_limit(Duration::from_millis(limit));
    let scenario = scenario.clone();
    let file = file.to_string();
    runtime.block_on(async move { Run::new(scenario, file, seed, options, trace).go().await })
}

/// Runs like [`run`], turning a panic inside the simulation into a failing report that keeps
/// the trace up to the panic (`replay --trace` prints it).
pub fn run_catching(scenario: &Scenario, file: &str, seed: u64, options: RunOptions) -> Report {
    match run_keeping_trace(scenario, file, seed, options) {
        Ok(report) => report,
        Err((panic, trace)) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            let sim_ms = trace.last().map_or(0, |e| e.at_us / 1_000);
            Report {
                scenario: scenario.name.clone(),
                file: file.to_string(),
                seed,
                verdict: Verdict::Fail,
                trace_hash: format!("{:016x}", 0),
                options: BTreeMap::new(),
                counts: Counts::default(),
                anomalies: vec![Anomaly {
                    kind: HarnessAnomalyKind::Invariant,
                    allowed: false,
                    description: format!("the simulation panicked: {message}"),
                    topic: None,
                    partition: None,
                    offsets: vec![],
                    values: vec![],
                    at_ms: vec![sim_ms],
                }],
                checker: None,
                sim_ms,
                replay: replay_command(file, seed),
                trace,
                history: History::default(),
            }
        }
    }
}

/// Runs the offline history checker with the allowances the scenario and the run justify:
/// the file's `allow` list grants a kind only when the configuration can produce it (acks=0/1
/// or the lazy flush policy for lost writes, non-idempotent producers for duplicates), with the
/// crash times of this run. Losses in a partition whose segment took a bit flip are allowed
/// when the file allows lost writes (without replicas, a flipped record is gone); that
/// reclassification happens here, after the checker, and names the flip as the cause.
fn check_history(
    history: &History,
    scenario: &Scenario,
    crashes_ms: &[u64],
    bit_flips: &[(u64, String)],
) -> checker::Report {
    let mut allowances = Allowances::default();
    if scenario.expect.offsets_expire {
        let minutes = scenario
            .cluster
            .offsets_retention_minutes
            .unwrap_or(BrokerConfig::default().offsets_retention_minutes);
        allowances.offsets_expire_after_ms = Some(minutes as u64 * 60_000);
    }
    let producers = &scenario.workload.producers;
    if scenario.allows(AllowSpec::LostWrite) {
        let weak: Vec<String> = producers
            .iter()
            .filter(|p| p.acks != AcksSpec::All)
            .map(|p| format!("acks={} on {}", p.acks, p.topic))
            .collect();
        if !weak.is_empty() {
            allowances.acks0_or_acks1_loss_on_crash = Some(LossAllowance {
                cause: format!("producers use {}", weak.join(", ")),
                crashes_ms: crashes_ms.to_vec(),
                unsynced_window_ms: None,
            });
        }
        if scenario.cluster.flush_mode == FlushModeSpec::Lazy {
            let flush_ms = scenario
                .topics
                .iter()
                .filter_map(|t| {
                    t.configs
                        .get("flush.ms")
                        .and_then(|v| v.parse::<i64>().ok())
                })
                .chain(scenario.cluster.flush_ms)
                .max();
            // The maintenance task checks the flush interval every 250 ms.
            let window = flush_ms.filter(|&ms| ms >= 0).map(|ms| ms as u64 + 500);
            allowances.lazy_flush_loss_on_power_loss = Some(LossAllowance {
                cause: format!("lazy flush (flush.ms={flush_ms:?})"),
                crashes_ms: crashes_ms.to_vec(),
                unsynced_window_ms: window,
            });
        }
    }
    if scenario.allows(AllowSpec::Duplicate) {
        let retrying: Vec<String> = producers
            .iter()
            .filter(|p| !p.idempotent && p.retries > 0)
            .map(|p| format!("{} (retries={})", p.topic, p.retries))
            .collect();
        if !retrying.is_empty() {
            allowances.duplicates_from_non_idempotent_retry = Some(Allowance {
                cause: format!("non-idempotent producers retry: {}", retrying.join(", ")),
            });
        }
    }
    let mut report = checker::check(history, &allowances);
    if scenario.allows(AllowSpec::LostWrite) && !bit_flips.is_empty() {
        use checker::AnomalyKind as K;
        for anomaly in &mut report.anomalies {
            if !anomaly.is_violation()
                || !matches!(
                    anomaly.kind,
                    K::LostWrite | K::NeverSeen | K::SkippedOffset | K::SkippedByGroup
                )
            {
                continue;
            }
            let dir = format!("/{}-{}/", anomaly.topic, anomaly.partition);
            if let Some((at, path)) = bit_flips.iter().find(|(_, path)| path.contains(&dir)) {
                anomaly.status = Status::Allowed {
                    cause: format!(
                        "bit flip at rest in {path} at {at} ms (no replica to repair from)"
                    ),
                };
            }
        }
        // A flipped bit in `__consumer_offsets` destroys the commits stored there: a group may
        // resume from an older one.
        let offsets_dir = format!("/{}-0/", broker::group::offsets::OFFSETS_TOPIC);
        for anomaly in &mut report.anomalies {
            if !anomaly.is_violation() || anomaly.kind != K::CommittedOffsetRegression {
                continue;
            }
            if let Some((at, path)) = bit_flips
                .iter()
                .find(|(_, path)| path.contains(&offsets_dir))
            {
                anomaly.status = Status::Allowed {
                    cause: format!(
                        "bit flip at rest in {path} at {at} ms (no replica to repair from)"
                    ),
                };
            }
        }
        report.violations = report.anomalies.iter().filter(|a| a.is_violation()).count();
        report.allowed = report.anomalies.len() - report.violations;
        report.verdict = if report.violations == 0 {
            checker::Verdict::Pass
        } else {
            checker::Verdict::Fail
        };
    }
    report
}

/// (offset, value, simulated ms) of one acknowledged record.
type OffsetValueAt = (i64, u64, u64);

/// A fault of the schedule, its target still symbolic (roles are resolved when it strikes).
#[derive(Clone, Debug)]
struct Planned {
    at_ms: u64,
    kind: FaultKind,
    target: Option<TargetSpec>,
    to: Option<TargetSpec>,
    /// `split`: one side.
    group: Vec<TargetSpec>,
    for_ms: Option<u64>,
    params: Params,
}

#[derive(Clone, Debug, Default)]
struct Params {
    rate: f64,
    latency_ms: (u64, u64),
    write_rate: f64,
    sync_rate: f64,
    on: bool,
    headroom_bytes: u64,
}

impl std::fmt::Display for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {}ms {}", self.at_ms, self.kind)?;
        if let Some(t) = &self.target {
            write!(f, " {t}")?;
        }
        if let Some(t) = &self.to {
            write!(f, " -> {t}")?;
        }
        if !self.group.is_empty() {
            let names: Vec<String> = self.group.iter().map(|t| t.to_string()).collect();
            write!(f, " {{{}}}", names.join(", "))?;
        }
        let p = &self.params;
        match self.kind {
            FaultKind::PacketLoss => write!(f, " rate={:.3}", p.rate)?,
            FaultKind::Latency => write!(f, " {}..{}ms", p.latency_ms.0, p.latency_ms.1)?,
            FaultKind::DiskEio => write!(f, " write={:.3} sync={:.3}", p.write_rate, p.sync_rate)?,
            FaultKind::DiskTorn => write!(f, " on={}", p.on)?,
            FaultKind::DiskFull => write!(f, " headroom={}B", p.headroom_bytes)?,
            _ => {}
        }
        if let Some(d) = self.for_ms {
            write!(f, " for {d}ms")?;
        }
        Ok(())
    }
}

/// Shared state of the workload tasks.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) recorder: Recorder,
    pub(crate) trace: Trace,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) inflight: Arc<AtomicUsize>,
    next_value: Arc<AtomicU64>,
    pub(crate) invariants: Arc<Mutex<Invariants>>,
    bootstrap: String,
    /// Consumer ids handed to group members' walks (one per assignment), counting down from
    /// below [`FINAL_READER`] so they never meet the workload's process ids.
    pub(crate) next_walk: Arc<AtomicU32>,
}

/// (value, simulated ms, how it was seen) of the first claim on an offset.
type Claim = (u64, u64, &'static str);

/// What the online checks have seen.
#[derive(Default)]
pub(crate) struct Invariants {
    /// topic → (partition, offset) → (value, simulated ms, how it was seen). Keyed by topic
    /// first so that a claim finds its entry without allocating the topic's name.
    offsets: BTreeMap<String, BTreeMap<(i32, i64), Claim>>,
    /// (broker, incarnation, topic, partition) → highest high watermark seen (durable policy).
    high_watermarks: BTreeMap<(u32, u32, String, i32), u64>,
    violations: Vec<Anomaly>,
}

impl Invariants {
    /// Offsets are assigned once: a (partition, offset) never holds two different values.
    pub(crate) fn claim(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        value: u64,
        how: &'static str,
    ) {
        let now = now_ms();
        if !self.offsets.contains_key(topic) {
            self.offsets.insert(topic.to_string(), BTreeMap::new());
        }
        let of_topic = self.offsets.get_mut(topic).expect("inserted above");
        let (seen, at, seen_how) = *of_topic
            .entry((partition, offset))
            .or_insert((value, now, how));
        if seen != value && self.violations.len() < 100 {
            self.violations.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed: false,
                description: format!(
                    "offset {offset} of {topic}-{partition} held value {seen} ({seen_how} at {at}ms) and then value {value} ({how} at {now}ms)"
                ),
                topic: Some(topic.to_string()),
                partition: Some(partition),
                offsets: vec![offset],
                values: vec![seen, value],
                at_ms: vec![at, now],
            });
        }
    }
}

struct Run {
    scenario: Scenario,
    file: String,
    seed: u64,
    options: RunOptions,
    trace: Trace,
    report_options: BTreeMap<String, String>,
}

pub(crate) fn value_of(bytes: Option<&[u8]>) -> u64 {
    // Values are decimal counters from 1; 0 marks bytes that are not one of ours.
    bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Run {
    fn new(scenario: Scenario, file: String, seed: u64, options: RunOptions, trace: Trace) -> Run {
        Run {
            scenario,
            file,
            seed,
            options,
            trace,
            report_options: BTreeMap::new(),
        }
    }

    fn say(&self, line: impl AsRef<str>) {
        if self.options.progress {
            println!("{}", line.as_ref());
        }
    }

    fn broker_config(&self) -> BrokerConfig {
        let c = &self.scenario.cluster;
        BrokerConfig {
            data_dir: "/faultline/data".into(),
            auto_create_topics: false,
            flush_mode: match c.flush_mode {
                FlushModeSpec::Durable => FlushMode::Durable,
                FlushModeSpec::Lazy => FlushMode::Lazy,
            },
            log_flush_interval_messages: c.flush_messages,
            log_flush_interval_ms: c.flush_ms,
            log_segment_bytes: c.segment_bytes.unwrap_or(64 * 1024),
            log_level: "warn".into(),
            // Groups form at once: the simulated members all start together anyway.
            group_initial_rebalance_delay_ms: 0,
            offsets_retention_minutes: c
                .offsets_retention_minutes
                .unwrap_or(BrokerConfig::default().offsets_retention_minutes),
            offsets_retention_check_interval_ms: c
                .offsets_retention_check_interval_ms
                .unwrap_or(BrokerConfig::default().offsets_retention_check_interval_ms),
            ..BrokerConfig::default()
        }
    }

    fn disk_config(&self) -> FaultyDiskConfig {
        let d = &self.scenario.cluster.disk;
        FaultyDiskConfig {
            torn_writes: d.torn_writes,
            write_eio_rate: d.write_eio_rate,
            sync_eio_rate: d.sync_eio_rate,
            capacity_bytes: d.capacity_bytes,
            latency: d
                .latency_us
                .map(|[a, b]| (Duration::from_micros(a), Duration::from_micros(b.max(a)))),
        }
    }

    /// The fault schedule: the scripted faults (repeats expanded, `any-*` targets drawn) and the
    /// swarm's, sorted by time. Draws from the seed.
    fn plan(&mut self) -> Vec<Planned> {
        let mut rng = madsim::rand::thread_rng();
        let brokers = self.scenario.cluster.brokers;
        let clients = self.scenario.cluster.clients;
        let end = self.scenario.duration_ms;
        let mut plan = Vec::new();
        let draw = |t: &Option<TargetSpec>, rng: &mut madsim::rand::GlobalRng| match t {
            Some(TargetSpec::AnyBroker) => Some(TargetSpec::Broker(rng.gen_range(1..=brokers))),
            Some(TargetSpec::AnyClient) => Some(TargetSpec::Client(rng.gen_range(1..=clients))),
            other => other.clone(),
        };
        for spanned in &self.scenario.faults {
            let f: &ScriptedFault = spanned.get_ref();
            let until = f.until_ms.unwrap_or(end);
            let mut at = f.at_ms;
            loop {
                plan.push(Planned {
                    at_ms: at,
                    kind: f.fault.0,
                    target: draw(&f.target, &mut rng),
                    to: draw(&f.to, &mut rng),
                    group: f
                        .group
                        .iter()
                        .flatten()
                        .map(|t| draw(&Some(t.clone()), &mut rng).expect("a target"))
                        .collect(),
                    for_ms: f.for_ms,
                    params: Params {
                        rate: f.rate.unwrap_or(0.0),
                        latency_ms: (f.min_ms.unwrap_or(0), f.max_ms.unwrap_or(0)),
                        write_rate: f.write_rate.unwrap_or(0.0),
                        sync_rate: f.sync_rate.unwrap_or(0.0),
                        on: f.on.unwrap_or(true),
                        headroom_bytes: f.headroom_bytes.unwrap_or(0),
                    },
                });
                match f.every_ms {
                    Some(every) if at + every < until => at += every,
                    _ => break,
                }
            }
        }
        if let Some(swarm) = &self.scenario.swarm {
            let mut kinds: Vec<FaultKind> = swarm
                .kinds
                .iter()
                .map(|k| k.0)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            if kinds.is_empty() {
                let all: Vec<FaultKind> = swarm.kinds.iter().map(|k| k.0).collect();
                kinds.push(all[rng.gen_range(0..all.len())]);
            }
            let interval = (swarm.mean_interval_ms as f64 * rng.gen_range(0.5..2.0)) as u64;
            let interval = interval.max(1);
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            self.report_options
                .insert("swarm.kinds".into(), names.join(","));
            self.report_options
                .insert("swarm.interval_ms".into(), interval.to_string());
            let swarm_end = swarm.end_ms.unwrap_or(end).min(end);
            let mut at = swarm.start_ms;
            loop {
                at += rng.gen_range(1..=2 * interval);
                if at >= swarm_end {
                    break;
                }
                let kind = kinds[rng.gen_range(0..kinds.len())];
                let broker = TargetSpec::Broker(rng.gen_range(1..=brokers));
                let client = TargetSpec::Client(rng.gen_range(1..=clients));
                let for_ms = Some(rng.gen_range(20..=swarm.max_fault_ms.max(21)));
                let mut p = Planned {
                    at_ms: at,
                    kind,
                    target: Some(broker.clone()),
                    to: None,
                    group: Vec::new(),
                    for_ms,
                    params: Params::default(),
                };
                match kind {
                    FaultKind::Crash => p.for_ms = Some(rng.gen_range(1..=500)),
                    FaultKind::Restart | FaultKind::BitFlip | FaultKind::Heal => {
                        p.for_ms = None;
                        if kind == FaultKind::Heal {
                            p.target = None;
                        }
                    }
                    FaultKind::Resume => continue, // every pause is resumed after its duration
                    FaultKind::Pause | FaultKind::Isolate => {
                        if rng.gen_bool(0.3) {
                            p.target = Some(client.clone());
                        }
                    }
                    FaultKind::Split => {
                        // The broker keeps one client; the other clients are cut off.
                        p.target = None;
                        p.group = vec![broker.clone(), client.clone()];
                    }
                    FaultKind::CutLink => {
                        if rng.gen_bool(0.5) {
                            p.target = Some(client.clone());
                            p.to = Some(broker.clone());
                        } else {
                            p.to = Some(client.clone());
                        }
                    }
                    FaultKind::PacketLoss => {
                        p.target = None;
                        p.params.rate = rng.gen_range(0.01..0.3);
                    }
                    FaultKind::Latency => {
                        p.target = None;
                        let min = rng.gen_range(1..20u64);
                        p.params.latency_ms = (min, min + rng.gen_range(1..100u64));
                    }
                    FaultKind::DiskEio => {
                        p.params.write_rate = rng.gen_range(0.0..0.05);
                        p.params.sync_rate = rng.gen_range(0.0..0.1);
                    }
                    FaultKind::DiskTorn => p.params.on = rng.gen_bool(0.5),
                    FaultKind::DiskFull => p.params.headroom_bytes = rng.gen_range(0..64 * 1024),
                }
                plan.push(p);
            }
        }
        plan.sort_by_key(|p| p.at_ms);
        plan
    }

    /// The concrete fault a planned one is now, or why it cannot strike.
    fn resolve(&self, p: &Planned, cluster: &Cluster) -> Result<Fault, String> {
        let node = |t: &Option<TargetSpec>| -> Result<Node, String> {
            match t {
                Some(TargetSpec::Broker(id)) => Ok(Node::Broker(*id)),
                Some(TargetSpec::Client(n)) => Ok(Node::Client(*n)),
                Some(TargetSpec::Leader { topic, partition }) => cluster
                    .leader_of(topic, *partition)
                    .map(Node::Broker)
                    .ok_or_else(|| format!("no leader of {topic}/{partition} is up")),
                Some(TargetSpec::AnyBroker | TargetSpec::AnyClient) => {
                    unreachable!("drawn when planned")
                }
                None => Err("no target".into()),
            }
        };
        let ms = Duration::from_millis;
        Ok(match p.kind {
            FaultKind::Crash => Fault::Crash(node(&p.target)?),
            FaultKind::Restart => Fault::Restart(node(&p.target)?),
            FaultKind::Pause => Fault::Pause(node(&p.target)?),
            FaultKind::Resume => Fault::Resume(node(&p.target)?),
            FaultKind::Isolate => Fault::Isolate(node(&p.target)?),
            FaultKind::CutLink => Fault::CutLink {
                from: node(&p.target)?,
                to: node(&p.to)?,
            },
            FaultKind::Heal => Fault::Heal,
            FaultKind::Split => Fault::Split {
                side: p
                    .group
                    .iter()
                    .map(|t| node(&Some(t.clone())))
                    .collect::<Result<Vec<_>, _>>()?,
            },
            FaultKind::PacketLoss => Fault::PacketLoss {
                rate: p.params.rate,
            },
            FaultKind::Latency => Fault::Latency {
                range: Some((ms(p.params.latency_ms.0), ms(p.params.latency_ms.1))),
            },
            FaultKind::DiskEio => Fault::DiskEio {
                node: node(&p.target)?,
                write_rate: p.params.write_rate,
                sync_rate: p.params.sync_rate,
            },
            FaultKind::DiskTorn => Fault::DiskTorn {
                node: node(&p.target)?,
                on: p.params.on,
            },
            FaultKind::BitFlip => Fault::BitFlip(node(&p.target)?),
            FaultKind::DiskFull => Fault::DiskFull {
                node: node(&p.target)?,
                headroom_bytes: Some(p.params.headroom_bytes),
            },
        })
    }

    async fn go(mut self) -> Report {
        let s = self.scenario.clone();
        // 1. Plan: every draw from the seed happens here, in a fixed order.
        let disk_seeds: Vec<u64> = (0..s.cluster.brokers)
            .map(|_| madsim::rand::random())
            .collect();
        for (i, seed) in disk_seeds.iter().enumerate() {
            self.report_options.insert(
                format!("broker-{}.disk_seed", i + 1),
                format!("{seed:#018x}"),
            );
        }
        let plan = self.plan();
        self.report_options
            .insert("faults.planned".into(), plan.len().to_string());

        self.say(format!("scenario: {} ({})", s.name, self.file));
        if !s.description.is_empty() {
            self.say(format!("  {}", s.description));
        }
        self.say(format!("seed: {}", self.seed));
        self.say(format!(
            "cluster: {} broker(s), {} client node(s), flush={:?}, disk: torn={} latency={:?}us",
            s.cluster.brokers,
            s.cluster.clients,
            s.cluster.flush_mode,
            s.cluster.disk.torn_writes,
            s.cluster.disk.latency_us
        ));
        for p in &s.workload.producers {
            self.say(format!(
                "producers: {} x topic={} acks={} idempotent={} keys={} rate={}/s",
                p.count, p.topic, p.acks, p.idempotent, p.keys, p.rate
            ));
        }
        for c in &s.workload.consumers {
            self.say(format!("consumers: {} x topic={}", c.count, c.topic));
        }
        let allowed: Vec<String> = s.expect.allow.iter().map(|a| a.to_string()).collect();
        self.say(format!("allowed anomalies: [{}]", allowed.join(", ")));
        for (k, v) in &self.report_options {
            self.say(format!("option {k} = {v}"));
        }
        for p in &plan {
            self.say(format!("planned: {p}"));
        }

        // 2. Boot.
        let trace = self.trace.clone();
        let setups: Vec<BrokerSetup> = (1..=s.cluster.brokers)
            .map(|id| BrokerSetup {
                id,
                config: self.broker_config(),
                disk: self.disk_config(),
                disk_seed: disk_seeds[id as usize - 1],
            })
            .collect();
        let mut cluster = Cluster::boot(&setups, s.cluster.clients, trace.clone());
        let ctx = Ctx {
            recorder: Recorder::new(),
            trace: trace.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            inflight: Arc::new(AtomicUsize::new(0)),
            next_value: Arc::new(AtomicU64::new(1)),
            invariants: Arc::new(Mutex::new(Invariants::default())),
            bootstrap: cluster.bootstrap_servers(),
            next_walk: Arc::new(AtomicU32::new(crate::group_members::EXPIRY_CHECKER - 1)),
        };
        let setup = cluster.spawn_on_client(1, create_topics(ctx.clone(), s.clone()));
        if let Err(e) = setup.await {
            trace.event("runner", format!("topic setup task failed: {e}"));
        }
        trace.event("runner", "fault window starts");
        let t0 = now_ms();

        // 3. Workload, monitor and nemesis.
        let mut process: Process = 0;
        let mut spread = 0u32;
        let partitions_of = |topic: &str| {
            s.topics
                .iter()
                .find(|t| t.name == topic)
                .map_or(1, |t| t.partitions)
        };
        for spec in &s.workload.producers {
            let partitions = partitions_of(&spec.topic);
            for _ in 0..spec.count {
                process += 1;
                spread += 1;
                let on = (spread - 1) % s.cluster.clients + 1;
                cluster
                    .spawn_on_client(on, producer(ctx.clone(), process, spec.clone(), partitions));
            }
        }
        for spec in &s.workload.consumers {
            let partitions = partitions_of(&spec.topic);
            for _ in 0..spec.count {
                process += 1;
                spread += 1;
                let on = (spread - 1) % s.cluster.clients + 1;
                if spec.group.is_some() {
                    cluster.spawn_on_client(
                        on,
                        crate::group_members::member(ctx.clone(), process, spec.clone()),
                    );
                } else {
                    cluster.spawn_on_client(
                        on,
                        consumer(ctx.clone(), process, spec.clone(), partitions),
                    );
                }
            }
        }

        let mut nemesis = Nemesis::new();
        let mut queue: BTreeMap<(u64, u64), Result<Planned, Fault>> = BTreeMap::new();
        for (seq, p) in plan.into_iter().enumerate() {
            queue.insert((t0 + p.at_ms, seq as u64), Ok(p));
        }
        let mut seq = queue.len() as u64;
        let mut faults_applied = 0usize;
        let mut crashes_ms: Vec<u64> = Vec::new();
        let mut bit_flips: Vec<(u64, String)> = Vec::new();
        let end = t0 + s.duration_ms;
        let mut next_progress = t0 + 5_000;
        loop {
            let now = now_ms();
            let next_at = queue.keys().next().map(|k| k.0).filter(|&at| at < end);
            let wake = next_at.unwrap_or(end).min(now + 10).min(next_progress);
            if wake > now {
                tokio::time::sleep(Duration::from_millis(wake - now)).await;
            }
            check_online(&cluster, &ctx.invariants, &trace);
            let now = now_ms();
            if now >= next_progress {
                let (sends, acked, polls) = ctx.recorder.with(|h| {
                    let acked = h
                        .sends()
                        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
                        .count();
                    (h.sends().count(), acked, h.polls().count())
                });
                self.say(format!(
                    "[{:>7.3}s] progress: {sends} sends, {acked} acknowledged, {polls} polls, {} faults",
                    (now - t0) as f64 / 1000.0,
                    faults_applied
                ));
                next_progress += 5_000;
            }
            if now >= end {
                break;
            }
            while let Some(entry) = queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((at, _), item) = entry.remove_entry();
                let (fault, planned) = match item {
                    Ok(p) => match self.resolve(&p, &cluster) {
                        Ok(f) => (f, Some(p)),
                        Err(why) => {
                            trace.event("nemesis", format!("skipped {p}: {why}"));
                            continue;
                        }
                    },
                    Err(f) => (f, None),
                };
                let applied = nemesis.apply(&fault, &mut cluster);
                let line = match &applied {
                    Applied::Done(how) if how.is_empty() => format!("{fault}"),
                    Applied::Done(how) => format!("{fault}: {how}"),
                    Applied::Skipped(why) => format!("skipped {fault}: {why}"),
                };
                trace.event("nemesis", &line);
                self.say(format!("[{:>7.3}s] {line}", (now - t0) as f64 / 1000.0));
                if let Applied::Done(how) = &applied {
                    faults_applied += 1;
                    match &fault {
                        Fault::Crash(Node::Broker(_)) => crashes_ms.push(now),
                        // A failed fsync loses what was not yet synced, like a power cut: the
                        // broker's log goes offline and recovers from what is on disk. Mark the
                        // start and the end of every EIO window as such a moment, so acks=0/1
                        // and lazy-flush losses inside it are judged like losses to a crash.
                        Fault::DiskEio { .. } => crashes_ms.push(now),
                        Fault::BitFlip(_) => bit_flips.push((now, how.clone())),
                        _ => {}
                    }
                    if let (Some(inverse), Some(d)) =
                        (fault.inverse(), planned.and_then(|p| p.for_ms))
                    {
                        seq += 1;
                        queue.insert((at + d, seq), Err(inverse));
                    }
                }
            }
        }

        // 4. Heal; let in-flight operations settle.
        ctx.stop.store(true, Ordering::SeqCst);
        let applied = nemesis.apply(&Fault::Heal, &mut cluster);
        trace.event("nemesis", format!("{}: {:?}", Fault::Heal, applied));
        self.say(format!(
            "[{:>7.3}s] heal: {applied:?}",
            (now_ms() - t0) as f64 / 1000.0
        ));
        let settle_ms = s
            .workload
            .producers
            .iter()
            .map(|p| p.delivery_timeout_ms + p.request_timeout_ms)
            .max()
            .unwrap_or(0)
            + 1_000;
        let settle_end = now_ms() + settle_ms;
        while ctx.inflight.load(Ordering::SeqCst) > 0 && now_ms() < settle_end {
            tokio::time::sleep(Duration::from_millis(10)).await;
            check_online(&cluster, &ctx.invariants, &trace);
        }
        trace.event(
            "runner",
            format!(
                "settled ({} operations still in flight)",
                ctx.inflight.load(Ordering::SeqCst)
            ),
        );

        // 5. Liveness.
        let mut anomalies = Vec::new();
        let history = ctx.recorder.snapshot();
        let acked: Vec<(String, i32, i64, u64, u64)> = history
            .sends()
            .filter_map(|op| match (&op.kind, &op.outcome) {
                (
                    OpKind::Send {
                        topic,
                        partition,
                        value,
                        ..
                    },
                    Outcome::Ok { offset: Some(o) },
                ) => Some((
                    topic.clone(),
                    *partition,
                    *o,
                    *value,
                    op.complete_ms.unwrap_or(0),
                )),
                _ => None,
            })
            .collect();
        let liveness_start = now_ms();
        let deadline = liveness_start + s.liveness_timeout_ms;
        let lost_allowed = s.allows(AllowSpec::LostWrite) || s.allows(AllowSpec::Unavailable);
        let mut missing: Vec<(String, i32, i64, u64, u64)>;
        let mut unreadable: Vec<(String, i32, String)>;
        let mut passes = 0;
        loop {
            passes += 1;
            let read = cluster
                .spawn_on_client(1, read_all(ctx.clone(), s.clone(), false))
                .await
                .unwrap_or_default();
            check_online(&cluster, &ctx.invariants, &trace);
            unreadable = read.unreadable.clone();
            missing = acked
                .iter()
                .filter(|(t, p, o, v, _)| read.values.get(&(t.clone(), *p, *o)) != Some(v))
                .cloned()
                .collect();
            let stuck = unreadable.iter().any(|(t, p, _)| {
                let dir = format!("/{t}-{p}/");
                !(s.allows(AllowSpec::LostWrite)
                    && bit_flips.iter().any(|(_, path)| path.contains(&dir)))
            });
            let done = !stuck && (missing.is_empty() || lost_allowed);
            if done || now_ms() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        trace.event(
            "runner",
            format!(
                "liveness: {passes} read passes in {}ms, {} acknowledged missing, {} partitions unreadable",
                now_ms() - liveness_start,
                missing.len(),
                unreadable.len()
            ),
        );
        // A partition whose segment took a bit flip may stay stuck at the corrupt batch: the
        // broker must not serve it, and without a replica nothing can repair it.
        let flipped = |topic: &str, partition: i32| {
            let dir = format!("/{topic}-{partition}/");
            bit_flips
                .iter()
                .find(|(_, path)| path.contains(&dir))
                .cloned()
        };
        for (topic, partition, why) in &unreadable {
            let flip = flipped(topic, *partition).filter(|_| s.allows(AllowSpec::LostWrite));
            let cause =
                flip.map(|(at, path)| format!(" (allowed: bit flip at rest in {path} at {at} ms)"));
            anomalies.push(Anomaly {
                kind: HarnessAnomalyKind::Unavailable,
                allowed: s.allows(AllowSpec::Unavailable) || cause.is_some(),
                description: format!(
                    "{topic}-{partition} not readable to its high watermark within {}ms after healing: {why}{}",
                    s.liveness_timeout_ms,
                    cause.unwrap_or_default()
                ),
                topic: Some(topic.clone()),
                partition: Some(*partition),
                offsets: vec![],
                values: vec![],
                at_ms: vec![deadline],
            });
        }
        let mut missing_by_partition: BTreeMap<(String, i32), Vec<OffsetValueAt>> = BTreeMap::new();
        for (t, p, o, v, at) in &missing {
            missing_by_partition
                .entry((t.clone(), *p))
                .or_default()
                .push((*o, *v, *at));
        }
        for ((topic, partition), records) in missing_by_partition {
            let shown: Vec<String> = records
                .iter()
                .take(8)
                .map(|(o, v, _)| format!("{v}@{o}"))
                .collect();
            anomalies.push(Anomaly {
                kind: HarnessAnomalyKind::Unavailable,
                allowed: lost_allowed,
                description: format!(
                    "{} acknowledged record(s) of {topic}-{partition} not readable after healing (value@offset: {}{})",
                    records.len(),
                    shown.join(", "),
                    if records.len() > 8 { ", ..." } else { "" }
                ),
                topic: Some(topic),
                partition: Some(partition),
                offsets: records.iter().map(|r| r.0).collect(),
                values: records.iter().map(|r| r.1).collect(),
                at_ms: records.iter().map(|r| r.2).collect(),
            });
        }

        // 6. The final read, recorded; and the log-level density check.
        let final_read = cluster
            .spawn_on_client(1, read_all(ctx.clone(), s.clone(), true))
            .await
            .unwrap_or_default();
        trace.event(
            "runner",
            format!(
                "final read: {} records, {} partitions unreadable",
                final_read.values.len(),
                final_read.unreadable.len()
            ),
        );
        // 6b. Every group's committed offsets, as the group checks' end point; with expiry
        // expected, once more after the group stayed empty for the retention.
        let groups: BTreeSet<(String, String)> = s
            .workload
            .consumers
            .iter()
            .filter_map(|c| c.group.clone().map(|g| (g, c.topic.clone())))
            .collect();
        for (group, topic) in &groups {
            let partitions = partitions_of(topic);
            let fetched = cluster
                .spawn_on_client(
                    1,
                    crate::group_members::fetch_all_committed(
                        ctx.clone(),
                        FINAL_READER,
                        group.clone(),
                        topic.clone(),
                        partitions,
                    ),
                )
                .await
                .unwrap_or_default();
            if !s.expect.offsets_expire {
                continue;
            }
            let retention_ms = self.broker_config().offsets_retention_minutes as u64 * 60_000;
            let interval_ms = self.broker_config().offsets_retention_check_interval_ms;
            tokio::time::sleep(Duration::from_millis(retention_ms + interval_ms + 1_000)).await;
            let after = cluster
                .spawn_on_client(
                    1,
                    crate::group_members::fetch_all_committed(
                        ctx.clone(),
                        crate::group_members::EXPIRY_CHECKER,
                        group.clone(),
                        topic.clone(),
                        partitions,
                    ),
                )
                .await
                .unwrap_or_default();
            let kept: Vec<(i32, i64)> = after
                .iter()
                .filter_map(|(p, o)| o.map(|o| (*p, o)))
                .collect();
            let had = fetched.iter().filter(|(_, o)| o.is_some()).count();
            trace.event(
                "runner",
                format!(
                    "group {group}: {had} committed offsets at the end, {} left after {retention_ms} ms empty",
                    kept.len()
                ),
            );
            if had == 0 || !kept.is_empty() {
                anomalies.push(Anomaly {
                    kind: HarnessAnomalyKind::Invariant,
                    allowed: false,
                    description: if had == 0 {
                        format!("group {group} had no committed offsets at the end of the run")
                    } else {
                        format!(
                            "group {group}: offsets did not expire after the group stayed empty for offsets.retention.minutes: {kept:?}"
                        )
                    },
                    topic: Some(topic.clone()),
                    partition: None,
                    offsets: kept.iter().map(|k| k.1).collect(),
                    values: Vec::new(),
                    at_ms: vec![now_ms()],
                });
            }
        }
        for id in cluster.broker_ids() {
            if let Some(broker) = cluster.broker(id) {
                for topic in broker.topics() {
                    for partition in &topic.partitions {
                        if let Some(mut a) =
                            check_dense(&partition.log, &topic.name, partition.index).await
                        {
                            // A corrupt batch reads as nothing: the walk stops there.
                            if let Some((at, path)) = flipped(&topic.name, partition.index)
                                .filter(|_| s.allows(AllowSpec::LostWrite))
                            {
                                a.allowed = true;
                                a.description.push_str(&format!(
                                    " (allowed: bit flip at rest in {path} at {at} ms)"
                                ));
                            }
                            anomalies.push(a);
                        }
                    }
                }
            }
        }
        check_online(&cluster, &ctx.invariants, &trace);

        // 7. Check and judge. Nothing awaits from here on, so no task records anything more:
        // the history and the trace move into the report instead of being copied.
        let history = ctx.recorder.take();
        let checked = check_history(&history, &s, &crashes_ms, &bit_flips);
        let violations = std::mem::take(
            &mut ctx
                .invariants
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .violations,
        );
        anomalies.splice(0..0, violations);
        let verdict = if anomalies.iter().any(|a| !a.allowed) || !checked.passed() {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let mut counts = Counts {
            operations: history.ops.len(),
            faults_applied,
            ..Counts::default()
        };
        for op in &history.ops {
            match &op.kind {
                OpKind::Send { .. } => {
                    counts.sends += 1;
                    match op.outcome {
                        Outcome::Ok { .. } => counts.acknowledged += 1,
                        Outcome::Fail { .. } => counts.failed += 1,
                        Outcome::Unknown { .. } | Outcome::Pending => counts.unknown += 1,
                    }
                }
                OpKind::Poll { records, .. } => {
                    counts.polls += 1;
                    counts.records_read += records.len();
                }
                OpKind::Commit { .. } | OpKind::FetchCommitted { .. } => {}
            }
        }
        counts.broker_boots = cluster
            .broker_ids()
            .iter()
            .map(|&id| cluster.incarnations(id))
            .sum();
        trace.event("runner", format!("verdict {verdict}"));
        let sim_ms = now_ms();
        Report {
            scenario: s.name.clone(),
            file: self.file.clone(),
            seed: self.seed,
            verdict,
            trace_hash: format!("{:016x}", trace.hash()),
            options: self.report_options.clone(),
            counts,
            anomalies,
            checker: Some(checked),
            sim_ms,
            replay: replay_command(&self.file, self.seed),
            trace: trace.take(),
            history,
        }
    }
}

/// The broker invariants the simulator can see directly, on every live broker: the high
/// watermark within the log, never beyond what is durable under the durable policy, and never
/// moving back within one incarnation under that policy.
fn check_online(cluster: &Cluster, invariants: &Mutex<Invariants>, trace: &Trace) {
    let now = now_ms();
    let mut inv = invariants.lock().unwrap_or_else(|e| e.into_inner());
    for id in cluster.broker_ids() {
        let Some(broker) = cluster.broker(id) else {
            continue;
        };
        let incarnation = cluster.incarnations(id);
        for topic in broker.topics() {
            for partition in &topic.partitions {
                let o = partition.log.offsets();
                let hw = partition.high_watermark();
                let durable = partition.log.config().flush == FlushPolicy::Durable;
                let mut problems = Vec::new();
                if hw > o.log_end_offset {
                    problems.push(format!(
                        "high watermark {hw} beyond log end {}",
                        o.log_end_offset
                    ));
                }
                if hw < o.log_start_offset {
                    problems.push(format!(
                        "high watermark {hw} below log start {}",
                        o.log_start_offset
                    ));
                }
                if durable && hw > o.durable_end_offset {
                    problems.push(format!(
                        "high watermark {hw} beyond durable end {} under the durable policy",
                        o.durable_end_offset
                    ));
                }
                if durable {
                    let key = (id, incarnation, topic.name.clone(), partition.index);
                    let highest = inv.high_watermarks.entry(key).or_insert(hw);
                    if hw < *highest {
                        problems.push(format!("high watermark went back from {highest} to {hw}"));
                    }
                    *highest = (*highest).max(hw);
                }
                for p in problems {
                    trace.event(
                        format!("broker-{id}"),
                        format!("INVARIANT {}-{}: {p}", topic.name, partition.index),
                    );
                    if inv.violations.len() < 100 {
                        inv.violations.push(Anomaly {
                            kind: HarnessAnomalyKind::Invariant,
                            allowed: false,
                            description: format!(
                                "broker {id}, {}-{}: {p}",
                                topic.name, partition.index
                            ),
                            topic: Some(topic.name.clone()),
                            partition: Some(partition.index),
                            offsets: vec![hw as i64],
                            values: vec![],
                            at_ms: vec![now],
                        });
                    }
                }
            }
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
    let mut config = ClientConfig::new(ctx.bootstrap.clone());
    config.connection = ConnectionConfig {
        client_id: who.to_string(),
        connect_timeout: Duration::from_millis(500),
        request_timeout,
    };
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

/// Creates the scenario's topics through the admin client.
async fn create_topics(ctx: Ctx, scenario: Scenario) {
    let deadline = now_ms() + 30_000;
    let Some(client) = connect(&ctx, "setup", Duration::from_secs(2), || {
        now_ms() > deadline
    })
    .await
    else {
        ctx.trace.event("setup", "gave up connecting");
        return;
    };
    let admin = Admin::new(client.clone());
    for t in &scenario.topics {
        let topic = NewTopic {
            name: t.name.clone(),
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        loop {
            match admin.create_topic(topic.clone()).await {
                Ok(()) | Err(CreateTopicError::AlreadyExists(_)) => break,
                Err(e) if now_ms() < deadline => {
                    ctx.trace
                        .event("setup", format!("create topic {}: {e}; retrying", t.name));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    ctx.trace
                        .event("setup", format!("create topic {}: {e}; giving up", t.name));
                    break;
                }
            }
        }
        ctx.trace.event(
            "setup",
            format!("topic {} ({} partitions) created", t.name, t.partitions),
        );
    }
}

fn to_outcome(outcome: &SendOutcome) -> Outcome {
    match outcome {
        SendOutcome::Acknowledged { offset, .. } => Outcome::Ok {
            offset: Some(*offset),
        },
        SendOutcome::Failed { error } => Outcome::Fail {
            error: error.to_string(),
        },
        SendOutcome::Unknown { reason } => Outcome::Unknown {
            reason: reason.to_string(),
        },
    }
}

/// A producer process: sends unique values at its rate until the fault window ends.
async fn producer(
    ctx: Ctx,
    process: Process,
    spec: crate::scenario::ProducerSpec,
    partitions: i32,
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
    if let Some((id, epoch)) = producer.producer_identity() {
        ctx.trace
            .event(&who, format!("producer id {id} epoch {epoch}"));
    }
    let interval = 1.0 / spec.rate;
    while !ctx.stop.load(Ordering::SeqCst) {
        let value = ctx.next_value.fetch_add(1, Ordering::SeqCst);
        let (key, partition, pause) = {
            let mut rng = madsim::rand::thread_rng();
            let key = (spec.keys > 0).then(|| rng.gen_range(0..spec.keys));
            let partition = match key {
                Some(k) => {
                    client::partitioner::partition_for_key(format!("k{k}").as_bytes(), partitions)
                }
                None => rng.gen_range(0..partitions),
            };
            (key, partition, interval * rng.gen_range(0.5..1.5))
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
        };
        let id = ctx.recorder.invoke(kind, now_ms());
        ctx.trace.event(
            &who,
            format!(
                "invoke #{id} send {}-{partition} value={value} key={key:?}",
                spec.topic
            ),
        );
        let mut record =
            ProducerRecord::new(spec.topic.clone(), value.to_string()).with_partition(partition);
        if let Some(k) = key {
            record = record.with_key(format!("k{k}"));
        }
        ctx.inflight.fetch_add(1, Ordering::SeqCst);
        let delivery = producer.send(record).await;
        let (ctx2, who2, topic) = (ctx.clone(), who.clone(), spec.topic.clone());
        tokio::spawn(async move {
            let outcome = delivery.await;
            let recorded = to_outcome(&outcome);
            if let SendOutcome::Acknowledged {
                partition: p,
                offset,
            } = outcome
            {
                ctx2.invariants
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .claim(&topic, p, offset, value, "acknowledged");
            }
            ctx2.trace
                .event(&who2, format!("complete #{id} {recorded:?}"));
            ctx2.recorder.complete(id, recorded, None, now_ms());
            ctx2.inflight.fetch_sub(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
    }
    producer.flush().await;
}

/// A consumer process: polls every partition of its topic in turn, from the earliest offset.
async fn consumer(
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

/// One recorded poll of one partition. Returns the records, or `None` when the poll failed.
#[allow(clippy::too_many_arguments)]
async fn poll_once(
    ctx: &Ctx,
    who: &str,
    process: Process,
    consumer: &mut Consumer,
    topic: &str,
    partition: i32,
    from: i64,
    request_timeout: Duration,
) -> Option<Vec<(i64, u64)>> {
    let kind = OpKind::Poll {
        consumer: process,
        topic: topic.to_string(),
        partition,
        from_offset: from,
        records: Vec::new(),
        group: None,
    };
    let id = ctx.recorder.invoke(kind, now_ms());
    let result = tokio::time::timeout(request_timeout * 2, consumer.poll()).await;
    match result {
        Ok(Ok(records)) => {
            let records: Vec<(i64, u64)> = records
                .iter()
                .filter(|r| r.partition == partition)
                .map(|r| (r.offset, value_of(r.value.as_deref())))
                .collect();
            {
                let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
                for &(offset, value) in &records {
                    inv.claim(topic, partition, offset, value, "read");
                }
            }
            let span = match (records.first(), records.last()) {
                (Some(a), Some(b)) => format!(" offsets {}..={}", a.0, b.0),
                _ => String::new(),
            };
            ctx.trace.event(
                who,
                format!(
                    "poll #{id} {topic}-{partition} from {from}: {} records{span}",
                    records.len()
                ),
            );
            ctx.recorder.complete(
                id,
                Outcome::Ok { offset: None },
                Some(records.clone()),
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
                Outcome::Fail {
                    error: e.to_string(),
                },
                Some(Vec::new()),
                now_ms(),
            );
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
            let outcome = Outcome::Unknown {
                reason: "poll timed out".into(),
            };
            ctx.recorder
                .complete(id, outcome, Some(Vec::new()), now_ms());
            None
        }
    }
}

/// What a read of every partition found.
#[derive(Clone, Debug, Default)]
struct ReadAll {
    values: BTreeMap<(String, i32, i64), u64>,
    /// (topic, partition or -1 for all, why).
    unreadable: Vec<(String, i32, String)>,
}

/// Reads every partition from its log start to its high watermark. With `record`, the polls go
/// into the history as the final reader's.
async fn read_all(ctx: Ctx, scenario: Scenario, record: bool) -> ReadAll {
    let who = if record { "final-reader" } else { "liveness" };
    let request_timeout = Duration::from_secs(2);
    let mut out = ReadAll::default();
    let deadline = now_ms() + 5_000;
    let Some(client) = connect(&ctx, who, request_timeout, || now_ms() > deadline).await else {
        out.unreadable
            .push(("*".into(), -1, "cannot connect to the cluster".into()));
        return out;
    };
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(5),
        auto_offset_reset: OffsetReset::None,
        ..ConsumerConfig::default()
    };
    for t in &scenario.topics {
        for p in 0..t.partitions {
            let mut consumer = Consumer::new(client.clone(), config.clone());
            consumer.assign([(t.name.clone(), p)]);
            let mut position = None;
            for _ in 0..5 {
                match tokio::time::timeout(
                    request_timeout * 2,
                    consumer.seek(&t.name, p, SeekTo::Earliest),
                )
                .await
                {
                    Ok(Ok(pos)) => {
                        position = Some(pos);
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let Some(mut from) = position else {
                out.unreadable
                    .push((t.name.clone(), p, "cannot find the log start".into()));
                continue;
            };
            let mut stalls = 0;
            loop {
                let records = if record {
                    poll_once(
                        &ctx,
                        who,
                        FINAL_READER,
                        &mut consumer,
                        &t.name,
                        p,
                        from,
                        request_timeout,
                    )
                    .await
                } else {
                    match tokio::time::timeout(request_timeout * 2, consumer.poll()).await {
                        Ok(Ok(rs)) => Some(
                            rs.iter()
                                .map(|r| (r.offset, value_of(r.value.as_deref())))
                                .collect(),
                        ),
                        _ => None,
                    }
                };
                let Some(records) = records else {
                    stalls += 1;
                    if stalls > 5 {
                        out.unreadable.push((
                            t.name.clone(),
                            p,
                            format!("polls fail at offset {from}"),
                        ));
                        break;
                    }
                    continue;
                };
                if !record {
                    let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
                    for &(offset, value) in &records {
                        inv.claim(&t.name, p, offset, value, "read");
                    }
                }
                for (offset, value) in records {
                    out.values.insert((t.name.clone(), p, offset), value);
                }
                let now_at = consumer.position(&t.name, p).unwrap_or(from);
                let hw = consumer.high_watermark(&t.name, p);
                if hw.is_some_and(|hw| now_at >= hw) {
                    break;
                }
                if now_at == from {
                    stalls += 1;
                    if stalls > 20 {
                        out.unreadable.push((
                            t.name.clone(),
                            p,
                            format!("no progress at offset {from} (high watermark {hw:?})"),
                        ));
                        break;
                    }
                } else {
                    stalls = 0;
                }
                from = now_at;
            }
        }
    }
    ctx.trace.event(
        who,
        format!(
            "read {} records, {} partitions unreadable",
            out.values.len(),
            out.unreadable.len()
        ),
    );
    out
}

/// The log holds its offsets densely: from the log start each batch begins where the previous
/// one ended (a crash's skipped offsets are covered by an empty batch), up to the log end.
async fn check_dense(log: &broker::log::Log, topic: &str, partition: i32) -> Option<Anomaly> {
    let offsets = log.offsets();
    let mut expected = offsets.log_start_offset;
    let problem = loop {
        if expected >= offsets.log_end_offset {
            break None;
        }
        let read = match log
            .read(expected, 1 << 20, Some(offsets.log_end_offset))
            .await
        {
            Ok(read) => read,
            // A corrupt batch (bit flip) ends the walk: it must not be served, which the reads
            // check; what lies beyond it is unknown.
            Err(_) => return None,
        };
        if read.records.is_empty() {
            break Some(format!(
                "nothing readable at offset {expected} below log end {}",
                offsets.log_end_offset
            ));
        }
        let mut pos = 0;
        let mut bad = None;
        while pos < read.records.len() {
            let Ok(header) = batch::validate(&read.records[pos..]) else {
                return None;
            };
            let base = header.base_offset as u64;
            if base > expected {
                bad = Some(format!("offsets {expected}..{base} are in no batch"));
                break;
            }
            expected = expected.max(header.last_offset() as u64 + 1);
            pos += header.size();
        }
        if bad.is_some() {
            break bad;
        }
    };
    problem.map(|p| Anomaly {
        kind: HarnessAnomalyKind::Invariant,
        allowed: false,
        description: format!("{topic}-{partition} is not dense: {p}"),
        topic: Some(topic.to_string()),
        partition: Some(partition),
        offsets: vec![expected as i64],
        values: vec![],
        at_ms: vec![now_ms()],
    })
}
