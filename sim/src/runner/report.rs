//! The report of a run: its verdict, trace hash, drawn options, counts and findings.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checker;
use crate::history::History;
use crate::trace::TraceEvent;

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
    /// A partition whose last stable offset stays below its high watermark after every
    /// transaction can have ended: a transaction on it that nobody will end holds every
    /// read_committed consumer back for good.
    HangingTransaction,
}

impl HarnessAnomalyKind {
    /// The kind as reports name it (one of [`crate::scenario::HARNESS_KINDS`]).
    pub fn name(self) -> &'static str {
        match self {
            HarnessAnomalyKind::Invariant => "invariant",
            HarnessAnomalyKind::Unavailable => "unavailable",
            HarnessAnomalyKind::HangingTransaction => "hanging_transaction",
        }
    }
}

/// How the runner reports while it runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Print the banner and progress lines to stdout.
    pub progress: bool,
    /// The bug planted in the broker for this run (`--plant`, see [`broker::planted`]).
    pub plant: Option<broker::planted::Bug>,
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
    /// The scenario's `[expect] violations`: the kinds this run had to find (the verdict is
    /// PASS only when it found each and no other).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_violations: Vec<String>,
    /// Requests the simulated brokers handled in this run (for speed lines; kept out of the
    /// JSON report, whose snapshots would move with every protocol change).
    #[serde(skip)]
    pub broker_requests: u64,
    #[serde(skip)]
    pub trace: Vec<TraceEvent>,
    #[serde(skip)]
    pub history: History,
}

impl Report {
    /// The kinds of the violations found (harness and checker), each once, sorted.
    pub fn violation_kinds(&self) -> std::collections::BTreeSet<&'static str> {
        self.anomalies
            .iter()
            .filter(|a| !a.allowed)
            .map(|a| a.kind.name())
            .chain(
                self.checker
                    .iter()
                    .flat_map(|c| c.violations().map(|a| a.kind.name())),
            )
            .collect()
    }

    /// For a scenario with `[expect] violations`: what was expected, and what was missing or
    /// not expected. `None` for other scenarios.
    pub fn expectation_line(&self) -> Option<String> {
        if self.expected_violations.is_empty() {
            return None;
        }
        let found = self.violation_kinds();
        let missing: Vec<&str> = self
            .expected_violations
            .iter()
            .map(String::as_str)
            .filter(|k| !found.contains(k))
            .collect();
        let unexpected: Vec<&str> = found
            .iter()
            .copied()
            .filter(|k| !self.expected_violations.iter().any(|e| e == k))
            .collect();
        Some(format!(
            "expected violations {:?}: {}",
            self.expected_violations,
            if missing.is_empty() && unexpected.is_empty() {
                "all found, no other".to_string()
            } else {
                format!("missing {missing:?}, not expected {unexpected:?}")
            }
        ))
    }

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
