//! The scenario runner: one scenario, one seed, one verdict.
//!
//! A run goes through these phases, all in simulated time on a fresh madsim runtime seeded with
//! the run's seed (so the same scenario and seed replay exactly, trace hash included):
//!
//! 1. **Plan** ([`plan`]). The seed draws every randomized option (the disks' seeds, which swarm
//!    fault kinds are on, their rates and targets, `any-broker` targets); the banner prints them
//!    all. Each concern draws from its own stream ([`crate::random`]): adding a producer never
//!    changes a seed's fault plan.
//! 2. **Boot** (`setup`). Brokers on `10.0.0.<id>:9092`, each on its own faulty disk ([`crate::cluster`]);
//!    client nodes on `10.0.1.<n>`. Topics are created through the admin client.
//! 3. **Fault window** (`fault_window`, `duration-ms`, times in the file count from here). Producers send unique
//!    values (a counter) at their rate; consumers poll every partition. Every operation is
//!    recorded in the [`crate::history::History`] (`workload`) (invoke, then ok / fail / unknown) and in the trace. The nemesis
//!    applies the schedule. Online invariants (`invariants`) are checked every few milliseconds.
//! 4. **Heal** everything; let in-flight sends settle (bounded by the delivery timeout).
//! 5. **Metadata convergence** (`convergence`). Every broker comes back and holds the active
//!    controller's image within a bound made of the quorum's and the sessions' timeouts. Then,
//!    where the scenario opts in (`rejoin`), every replica on a live, unfenced broker must be
//!    back in its partition's ISR within a bound made of every timeout that delays a rejoin.
//! 6. **Liveness** (`liveness`). Within `liveness-timeout-ms`, every acknowledged record must be readable
//!    (when the configuration does not allow lost writes) and every partition readable from its
//!    start to its high watermark. With transactions (`hanging`), every partition's last stable
//!    offset must then reach its high watermark once every transaction can have ended.
//! 7. **Final read** of every partition from the log start, recorded as polls by the final-reader
//!    process ([`FINAL_READER`]); and the log-level check that each partition's batches are
//!    dense (each starts where the previous ended).
//! 8. **Check** the history (`verdict`: the offline checker with the run's allowances) and give
//!    the verdict ([`Report`]).
//!    Anomalies the scenario's expectations allow are reported as allowed, never as a pass or a
//!    violation; any violation fails the run.

mod admin;
mod compacted_replicas;
mod convergence;
mod fault_window;
mod hanging;
mod invariants;
mod liveness;
pub mod plan;
mod rejoin;
mod report;
mod setup;
mod verdict;
mod workload;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::History;
use crate::scenario::Scenario;
use crate::trace::{now_ms, Trace, TraceEvent};

pub use crate::checker::FINAL_READER;
pub use plan::{FaultPlan, Planned};
pub use report::{
    replay_command, Anomaly, Counts, HarnessAnomalyKind, Report, RunOptions, Verdict,
};
pub(crate) use workload::{connect, poll_once_for, record_delivery, record_value, Ctx};

/// Runs `scenario` (loaded from `file`) with `seed` on a fresh simulator, on a fresh thread.
///
/// The fresh thread matters: std's `RandomState` draws its keys once per thread and then
/// increments them for every new map, so a second run on the same thread would see different
/// `HashMap` orders than the first (found by a sweep whose failing seeds passed when rerun
/// alone). On a fresh thread the keys are drawn inside the simulator, from the seed.
pub fn run(scenario: &Scenario, file: &str, seed: u64, options: RunOptions) -> Report {
    let mut report = run_keeping_trace(scenario, file, seed, options)
        .unwrap_or_else(|(panic, _)| std::panic::resume_unwind(panic));
    name_the_plant(&mut report, options);
    report
}

/// A planted run replays only with the same bug planted.
fn name_the_plant(report: &mut Report, options: RunOptions) {
    if let Some(bug) = options.plant {
        report.replay = format!("{} --plant {}", report.replay, bug.name());
        report.options.insert("planted".into(), bug.name().into());
    }
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
    run_keeping_trace_then(scenario, file, seed, options, |report| report)
}

/// [`run_keeping_trace`], handing the report to `then` on the simulation's thread.
fn run_keeping_trace_then<T: Send + 'static>(
    scenario: &Scenario,
    file: &str,
    seed: u64,
    options: RunOptions,
    then: impl FnOnce(Report) -> T + Send + 'static,
) -> Result<T, Panicked> {
    let (scenario, file) = (scenario.clone(), file.to_string());
    let trace = Trace::new();
    let inside = trace.clone();
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    // the harness, outside the simulation
    let thread = std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .stack_size(64 << 20)
        .spawn(move || then(run_here(&scenario, &file, seed, options, inside)))
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
    // Every node of this simulation runs on this thread, so the plant is this run's alone.
    broker::planted::plant(options.plant);
    let requests_before = broker::protocol::requests_handled_on_this_thread();
    let mut report =
        runtime.block_on(async move { Run::new(scenario, file, seed, options, trace).go().await });
    report.broker_requests = broker::protocol::requests_handled_on_this_thread() - requests_before;
    report
}

/// Runs like [`run`], turning a panic inside the simulation into a failing report that keeps
/// the trace up to the panic (`replay --trace` prints it).
pub fn run_catching(scenario: &Scenario, file: &str, seed: u64, options: RunOptions) -> Report {
    let mut report = run_catching_unnamed(scenario, file, seed, options);
    name_the_plant(&mut report, options);
    report
}

/// Runs like [`run_catching`] and hands the report to `then`, on the simulation's own thread
/// unless the simulation panicked. A sweep keeps a summary: the report's history and trace,
/// allocated on that thread, are then freed there too, which costs the allocator less than
/// freeing them from another thread.
pub fn run_catching_then<T: Send + 'static>(
    scenario: &Scenario,
    file: &str,
    seed: u64,
    options: RunOptions,
    then: impl FnOnce(Report) -> T + Clone + Send + 'static,
) -> T {
    let inside = then.clone();
    let finished = run_keeping_trace_then(scenario, file, seed, options, move |mut report| {
        name_the_plant(&mut report, options);
        inside(report)
    });
    match finished {
        Ok(done) => done,
        Err(panicked) => {
            let mut report = panicked_report(scenario, file, seed, panicked);
            name_the_plant(&mut report, options);
            then(report)
        }
    }
}

fn run_catching_unnamed(scenario: &Scenario, file: &str, seed: u64, options: RunOptions) -> Report {
    match run_keeping_trace(scenario, file, seed, options) {
        Ok(report) => report,
        Err(panicked) => panicked_report(scenario, file, seed, panicked),
    }
}

/// The failing report of a run whose simulation panicked, with the trace up to the panic.
fn panicked_report(scenario: &Scenario, file: &str, seed: u64, (panic, trace): Panicked) -> Report {
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
        // A panic fails the run whatever it expected.
        expected_violations: scenario.expect.violations.clone(),
        broker_requests: 0,
        trace,
        history: History::default(),
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

    /// The run, phase by phase.
    async fn go(mut self) -> Report {
        let fault_plan = plan::plan(&self.scenario, self.seed);
        let disk_seeds = plan::disk_seeds(&self.scenario, self.seed);
        for (i, seed) in disk_seeds.iter().enumerate() {
            self.report_options.insert(
                format!("broker-{}.disk_seed", i + 1),
                format!("{seed:#018x}"),
            );
        }
        self.report_options.extend(fault_plan.options.clone());
        if let Some(bug) = self.options.plant {
            self.report_options
                .insert("planted".into(), bug.name().into());
        }
        self.banner(&fault_plan);
        let (mut cluster, ctx) = self.boot(&disk_seeds).await;
        self.trace.event("runner", "fault window starts");
        let t0 = now_ms();
        workload::start(&self.scenario, &cluster, &ctx);
        let mut faults = self
            .fault_window(&mut cluster, &ctx, fault_plan.faults, t0)
            .await;
        self.heal(&mut cluster, &ctx, &mut faults, t0).await;
        let healed_ms = t0 + self.scenario.duration_ms;
        self.converge(&cluster, &ctx).await;
        self.isr_rejoined(&cluster, &ctx).await;
        self.isr_complete(&cluster, &ctx, &faults).await;
        let mut anomalies = self.liveness(&cluster, &ctx, &faults).await;
        anomalies.extend(self.hanging_transactions(&cluster, &ctx, healed_ms).await);
        anomalies.extend(self.serving_check(&ctx, t0));
        anomalies.extend(self.metadata_checks(&cluster, &ctx, t0));
        anomalies.extend(self.final_read(&cluster, &ctx, &faults).await);
        self.judge(&cluster, ctx, &faults, anomalies)
    }
}
