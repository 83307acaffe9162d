//! `cargo sim audit`: every scenario over a seed range, on every core, and a report a person
//! reads in a minute (issue 13).
//!
//! - [`run_all`] runs (scenario, seed) pairs on `jobs` worker threads. Each run is one madsim
//!   runtime on a thread of its own ([`runner::run_catching`]), so a run's trace hash does not
//!   depend on how many run beside it; results come back in the order of the pairs, whatever
//!   order they finished in.
//! - [`Shard`] splits the seeds for CI machines; the shards together run exactly the unsharded
//!   seeds.
//! - [`RunSummary`] keeps what the report needs of one run (the full history and trace are
//!   dropped as soon as a failure's picture is drawn: an audit holds thousands of runs).
//! - [`picture`] draws a run (Jepsen's timeline, latency and throughput plots) as inline SVG;
//!   [`output`] writes `report.md`, `index.html`, `junit.xml` and `summary.json`; [`cli`] is
//!   the `cargo sim audit` command; [`mutants`] reads cargo-mutants' `mutants.out` into the
//!   report's mutants table (`--mutants DIR`).

pub mod cli;
pub mod mutants;
pub mod output;
pub mod picture;
pub mod planted;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use serde::Serialize;

use crate::checker::Status;
use crate::runner::{self, Report, RunOptions, Verdict};
use crate::scenario::Scenario;

/// One of `count` deterministic slices of a seed list: `--shard index/count`, `index` from 1
/// (as CI matrices count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Parses `i/n` with 1 <= i <= n.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard takes i/n with 1 <= i <= n, not {text:?}");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// This shard's seeds: every `count`-th seed of `seeds`, starting at the `index`-th. Dealt
    /// round-robin rather than cut in blocks, so each shard gets early and late seeds alike.
    pub fn seeds(&self, seeds: Range<u64>) -> Vec<u64> {
        seeds
            .enumerate()
            .filter(|(i, _)| *i as u64 % self.count == self.index - 1)
            .map(|(_, seed)| seed)
            .collect()
    }
}

/// One finding of a run, from the checker or the harness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// "checker" or "harness".
    pub source: &'static str,
    /// The anomaly kind, snake_case (`lost_write`, `invariant`, ...).
    pub kind: String,
    pub allowed: bool,
    /// Why it is allowed (the checker's allowance, or the scenario's `[expect]` for the
    /// harness's findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub description: String,
}

/// Findings kept per run: a run that lost a partition has hundreds, one per record, and the
/// report is read by a person (the counts by kind are complete).
pub const FINDINGS_KEPT: usize = 12;

/// What the audit keeps of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub scenario: String,
    pub file: String,
    pub seed: u64,
    pub verdict: Verdict,
    pub trace_hash: String,
    pub sim_ms: u64,
    /// Wall time of this run on its worker (a run uses one core).
    pub wall_ms: f64,
    pub operations: usize,
    /// Requests the simulated brokers handled in this run.
    pub broker_requests: u64,
    /// The scenario's `[expect] violations` (a run that found exactly these passed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_violations: Vec<String>,
    /// Fault kinds that struck (applied, not skipped), with how often.
    pub faults: BTreeMap<String, usize>,
    /// Violations by kind.
    pub violations: BTreeMap<String, usize>,
    /// Allowed anomalies by kind, then by cause.
    pub allowed: BTreeMap<String, BTreeMap<String, usize>>,
    /// The first [`FINDINGS_KEPT`] findings, violations first (`replay` shows them all).
    pub findings: Vec<Finding>,
    /// How many findings the run had.
    pub findings_total: usize,
    pub replay: String,
    /// The run drawn as inline SVG: failures only.
    #[serde(skip)]
    pub picture: Option<String>,
}

/// A finding of a run before it is copied out: every finding is counted, but only the kept
/// ones are built (a run with a bit flip at rest has thousands of allowed lost writes).
#[derive(Clone, Copy)]
enum Found<'a> {
    Harness(&'a runner::Anomaly),
    Checker(&'a crate::checker::Anomaly),
}

impl<'a> Found<'a> {
    fn allowed(self) -> bool {
        match self {
            Found::Harness(a) => a.allowed,
            Found::Checker(a) => !a.is_violation(),
        }
    }

    /// The anomaly kind, snake_case.
    fn kind(self) -> Cow<'a, str> {
        match self {
            Found::Harness(a) => Cow::Owned(
                serde_json::to_value(a.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{:?}", a.kind)),
            ),
            Found::Checker(a) => Cow::Borrowed(a.kind.name()),
        }
    }

    /// Why it is allowed; `None` for a violation.
    fn cause(self) -> Option<&'a str> {
        match self {
            Found::Harness(a) => a.allowed.then_some("allowed by the scenario's [expect]"),
            Found::Checker(a) => match &a.status {
                Status::Violation => None,
                Status::Allowed { cause } => Some(cause),
            },
        }
    }

    fn finding(self) -> Finding {
        let (source, description) = match self {
            Found::Harness(a) => ("harness", a.description.clone()),
            Found::Checker(a) => (
                "checker",
                format!("{}/{}: {}", a.topic, a.partition, a.explanation),
            ),
        };
        let cause = self.cause().map(str::to_string);
        Finding {
            source,
            kind: self.kind().into_owned(),
            allowed: cause.is_some(),
            cause,
            description,
        }
    }
}

impl RunSummary {
    /// Keeps what the report needs of `report`; draws the picture when the run failed.
    pub fn of(report: &Report, wall_ms: f64) -> RunSummary {
        let found: Vec<Found<'_>> = report
            .anomalies
            .iter()
            .map(Found::Harness)
            .chain(
                report
                    .checker
                    .iter()
                    .flat_map(|checked| checked.anomalies.iter().map(Found::Checker)),
            )
            .collect();
        let mut violations: BTreeMap<Cow<'_, str>, usize> = BTreeMap::new();
        let mut allowed: BTreeMap<Cow<'_, str>, BTreeMap<&str, usize>> = BTreeMap::new();
        for f in &found {
            match f.cause() {
                Some(cause) => {
                    *allowed
                        .entry(f.kind())
                        .or_default()
                        .entry(cause)
                        .or_insert(0) += 1
                }
                None => *violations.entry(f.kind()).or_insert(0) += 1,
            }
        }
        let violations: BTreeMap<String, usize> = violations
            .into_iter()
            .map(|(kind, n)| (kind.into_owned(), n))
            .collect();
        let allowed: BTreeMap<String, BTreeMap<String, usize>> = allowed
            .into_iter()
            .map(|(kind, causes)| {
                let causes = causes
                    .into_iter()
                    .map(|(cause, n)| (cause.to_string(), n))
                    .collect();
                (kind.into_owned(), causes)
            })
            .collect();
        let findings_total = found.len();
        // Violations first; the checker's and the harness's own orders stay within each group.
        let findings: Vec<Finding> = found
            .iter()
            .filter(|f| !f.allowed())
            .chain(found.iter().filter(|f| f.allowed()))
            .take(FINDINGS_KEPT)
            .map(|f| f.finding())
            .collect();
        let mut faults = BTreeMap::new();
        for window in picture::fault_windows(&report.trace, report.sim_ms) {
            *faults.entry(window.kind.to_string()).or_insert(0) += 1;
        }
        let picture = (report.verdict == Verdict::Fail).then(|| picture::draw(report));
        RunSummary {
            scenario: report.scenario.clone(),
            file: report.file.clone(),
            seed: report.seed,
            verdict: report.verdict,
            trace_hash: report.trace_hash.clone(),
            sim_ms: report.sim_ms,
            wall_ms,
            operations: report.counts.operations,
            broker_requests: report.broker_requests,
            expected_violations: report.expected_violations.clone(),
            faults,
            violations,
            allowed,
            findings,
            findings_total,
            replay: report.replay.clone(),
            picture,
        }
    }

    pub fn violations(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.allowed)
    }
}

/// A scenario to audit: the path as given (it goes into replay commands) and the parsed file.
#[derive(Clone, Debug)]
pub struct Target {
    pub file: String,
    pub scenario: Scenario,
}

/// The wall clock, for speed reports only (never in a trace or a verdict).
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall() -> std::time::Instant {
    std::time::Instant::now()
}

/// Runs every target over every seed on `jobs` worker threads (at least one) and returns the
/// summaries in target-major, seed-minor order. `done` is called on the calling thread after
/// each run, in completion order, with the number of runs finished so far.
pub fn run_all(
    targets: &[Target],
    seeds: &[u64],
    jobs: usize,
    mut done: impl FnMut(&RunSummary, usize),
) -> Vec<RunSummary> {
    let pairs: Vec<(usize, u64)> = (0..targets.len())
        .flat_map(|t| seeds.iter().map(move |&seed| (t, seed)))
        .collect();
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<RunSummary>> = vec![None; pairs.len()];
    let (tx, rx) = mpsc::channel::<(usize, RunSummary)>();
    // The workers are harness threads outside any simulation; each run still gets a fresh
    // thread of its own inside `run_catching` (its HashMap keys are drawn from the seed there).
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, pairs.len().max(1)) {
            let (tx, next, pairs) = (tx.clone(), &next, &pairs);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(t, seed)) = pairs.get(i) else {
                    break;
                };
                let target = &targets[t];
                let start = wall();
                // Summarised and dropped on the run's own thread (`run_catching_then`).
                let summary = runner::run_catching_then(
                    &target.scenario,
                    &target.file,
                    seed,
                    RunOptions {
                        progress: false,
                        plant: None,
                    },
                    move |report| {
                        let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
                        RunSummary::of(&report, wall_ms)
                    },
                );
                if tx.send((i, summary)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (finished, (i, summary)) in rx.iter().enumerate() {
            done(&summary, finished + 1);
            results[i] = Some(summary);
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every run reports back (a worker that panicked would have re-raised)"))
        .collect()
}

/// What one scenario came to over the audited seeds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScenarioSummary {
    pub name: String,
    pub file: String,
    pub seeds: usize,
    pub passed: usize,
    pub failed: usize,
    pub failing_seeds: Vec<u64>,
    /// Violations by kind.
    pub violations: BTreeMap<String, usize>,
    /// Allowed anomalies by kind, then by cause.
    pub allowed: BTreeMap<String, BTreeMap<String, usize>>,
    /// Fault kinds that struck, over all seeds.
    pub faults: BTreeMap<String, usize>,
    pub sim_ms: u64,
    pub wall_ms: f64,
    pub operations: usize,
    pub broker_requests: u64,
    /// The scenario's `[expect] violations`: its violations of these kinds were required.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_violations: Vec<String>,
}

impl ScenarioSummary {
    /// Broker requests per wall second of one core (each run uses one).
    pub fn requests_per_core_second(&self) -> f64 {
        self.broker_requests as f64 * 1000.0 / self.wall_ms.max(1e-9)
    }

    /// Simulated seconds per wall second of one core.
    pub fn speedup(&self) -> f64 {
        self.sim_ms as f64 / self.wall_ms.max(1e-9)
    }

    /// Client operations per wall second of one core.
    pub fn ops_per_core_second(&self) -> f64 {
        self.operations as f64 * 1000.0 / self.wall_ms.max(1e-9)
    }
}

/// Groups the runs by scenario file, in the order the files first appear.
pub fn by_scenario(runs: &[RunSummary]) -> Vec<ScenarioSummary> {
    let mut out: Vec<ScenarioSummary> = Vec::new();
    for run in runs {
        let i = match out.iter().position(|s| s.file == run.file) {
            Some(i) => i,
            None => {
                out.push(ScenarioSummary {
                    name: run.scenario.clone(),
                    file: run.file.clone(),
                    expected_violations: run.expected_violations.clone(),
                    ..ScenarioSummary::default()
                });
                out.len() - 1
            }
        };
        let s = &mut out[i];
        s.seeds += 1;
        match run.verdict {
            Verdict::Pass => s.passed += 1,
            Verdict::Fail => {
                s.failed += 1;
                s.failing_seeds.push(run.seed);
            }
        }
        for (kind, n) in &run.violations {
            *s.violations.entry(kind.clone()).or_insert(0) += n;
        }
        for (kind, causes) in &run.allowed {
            let mine = s.allowed.entry(kind.clone()).or_default();
            for (cause, n) in causes {
                *mine.entry(cause.clone()).or_insert(0) += n;
            }
        }
        for (kind, n) in &run.faults {
            *s.faults.entry(kind.clone()).or_insert(0) += n;
        }
        s.sim_ms += run.sim_ms;
        s.wall_ms += run.wall_ms;
        s.operations += run.operations;
        s.broker_requests += run.broker_requests;
    }
    out
}

/// The whole audit, as `summary.json` holds it.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    pub seeds: Range<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    pub jobs: usize,
    pub runs_total: usize,
    pub runs_failed: usize,
    pub wall_s: f64,
    /// Requests every simulated broker handled, over the whole audit.
    pub broker_requests: u64,
    /// `broker_requests` per wall second per worker.
    pub broker_requests_per_core_second: f64,
    pub scenarios: Vec<ScenarioSummary>,
    pub runs: Vec<RunSummary>,
    /// Mutation testing's outcomes (`--mutants DIR`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutants: Option<mutants::MutantsReport>,
}

impl Audit {
    pub fn new(
        seeds: Range<u64>,
        shard: Option<Shard>,
        jobs: usize,
        wall_s: f64,
        broker_requests: u64,
        runs: Vec<RunSummary>,
    ) -> Audit {
        let scenarios = by_scenario(&runs);
        Audit {
            seeds,
            shard,
            jobs,
            runs_total: runs.len(),
            runs_failed: runs.iter().filter(|r| r.verdict == Verdict::Fail).count(),
            wall_s,
            broker_requests,
            broker_requests_per_core_second: broker_requests as f64
                / wall_s.max(1e-9)
                / jobs.max(1) as f64,
            scenarios,
            runs,
            mutants: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.runs_failed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{self, AnomalyKind};
    use crate::runner::{Anomaly, Counts, HarnessAnomalyKind};

    fn harness(kind: HarnessAnomalyKind, allowed: bool, description: &str) -> Anomaly {
        Anomaly {
            kind,
            allowed,
            description: description.to_string(),
            topic: None,
            partition: None,
            offsets: vec![],
            values: vec![],
            at_ms: vec![],
        }
    }

    fn checked(kind: AnomalyKind, cause: Option<&str>, offset: i64) -> checker::Anomaly {
        checker::Anomaly {
            kind,
            status: checker::Status::from_cause(cause.map(str::to_string)),
            topic: "t".to_string(),
            partition: 0,
            offsets: vec![offset],
            values: vec![],
            explanation: format!("at {offset}"),
            evidence: vec![],
        }
    }

    /// A run with `harness` findings and `checker` ones (already in the checker's order).
    fn report(harness: Vec<Anomaly>, checker: Vec<checker::Anomaly>) -> Report {
        Report {
            scenario: "s".into(),
            file: "s.toml".into(),
            seed: 1,
            verdict: Verdict::Pass,
            trace_hash: "0".repeat(16),
            options: BTreeMap::new(),
            counts: Counts::default(),
            anomalies: harness,
            checker: Some(checker::Report {
                verdict: checker::Verdict::Pass,
                counts: checker::Counts::default(),
                violations: 0,
                allowed: 0,
                final_read_partitions: vec![],
                anomalies: checker,
            }),
            sim_ms: 0,
            replay: String::new(),
            expected_violations: vec![],
            broker_requests: 0,
            trace: vec![],
            history: Default::default(),
        }
    }

    #[test]
    fn a_summary_counts_every_finding_and_keeps_the_first_violations_then_allowed_ones() {
        let flip = "bit flip at rest";
        let crash = "acks=1, crash";
        let mut from_checker = vec![checked(AnomalyKind::Duplicate, None, 7)];
        from_checker.extend((0..30).map(|o| checked(AnomalyKind::LostWrite, Some(flip), o)));
        from_checker.push(checked(AnomalyKind::LostWrite, Some(crash), 40));
        from_checker.push(checked(AnomalyKind::NeverSeen, Some(flip), 41));
        let from_harness = vec![
            harness(HarnessAnomalyKind::Unavailable, true, "slow"),
            harness(HarnessAnomalyKind::Invariant, false, "broken"),
        ];
        let summary = RunSummary::of(&report(from_harness, from_checker), 0.0);

        assert_eq!(summary.findings_total, 35);
        assert_eq!(
            summary.violations,
            BTreeMap::from([("duplicate".to_string(), 1), ("invariant".to_string(), 1)])
        );
        let causes = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|&(c, n)| (c.to_string(), n)).collect()
        };
        assert_eq!(
            summary.allowed,
            BTreeMap::from([
                ("lost_write".to_string(), causes(&[(flip, 30), (crash, 1)])),
                ("never_seen".to_string(), causes(&[(flip, 1)])),
                (
                    "unavailable".to_string(),
                    causes(&[("allowed by the scenario's [expect]", 1)])
                ),
            ])
        );
        // Violations first (the harness's, then the checker's), then allowed ones in order.
        let kept: Vec<(&str, &str, bool, &str)> = summary
            .findings
            .iter()
            .map(|f| (f.source, f.kind.as_str(), f.allowed, f.description.as_str()))
            .collect();
        assert_eq!(kept.len(), FINDINGS_KEPT);
        assert_eq!(
            kept[..4],
            [
                ("harness", "invariant", false, "broken"),
                ("checker", "duplicate", false, "t/0: at 7"),
                ("harness", "unavailable", true, "slow"),
                ("checker", "lost_write", true, "t/0: at 0"),
            ]
        );
        assert_eq!(kept[11], ("checker", "lost_write", true, "t/0: at 8"));
        assert_eq!(summary.findings[0].cause, None);
        assert_eq!(summary.findings[3].cause.as_deref(), Some(flip));
    }
}
