//! The audit's mutants table: cargo-mutants' `mutants.out` read back (issue 13, "the report lists
//! every mutant, caught or not, and by which scenario").
//!
//! `scripts/mutants.sh` runs cargo-mutants with the simulation as its test command
//! (`sim/tests/mutants.rs`). cargo-mutants records each mutant's outcome in
//! `mutants.out/outcomes.json` and the test's output in `mutants.out/log/<mutant>.log`; the test
//! panics with one `MUTANT CAUGHT scenario=… seed=… violations=… replay=…` line when a run fails.
//! [`load`] joins the two: every mutant with its outcome and, when caught, the scenario and seed
//! that caught it. Several `mutants.out` directories (one per CI shard) merge into one table.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::picture::escape;

/// What became of one mutant, in cargo-mutants' terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MutantOutcome {
    /// Missed: the broker built and every scenario passed. A gap in the suite, or a mutant
    /// that changes nothing a client can see (an equivalent mutant).
    Missed,
    /// The test ran out of time (a mutant that hangs the broker; counted as caught by
    /// cargo-mutants' own summary, kept apart here because no scenario named it).
    Timeout,
    /// Caught: a scenario failed.
    Caught,
    /// The mutated broker did not compile: nothing was tested.
    Unviable,
    /// Something else (cargo-mutants' "Failure", or an outcome this reader does not know).
    Other,
}

impl MutantOutcome {
    fn parse(summary: &str) -> MutantOutcome {
        match summary {
            "CaughtMutant" => MutantOutcome::Caught,
            "MissedMutant" => MutantOutcome::Missed,
            "Unviable" => MutantOutcome::Unviable,
            "Timeout" => MutantOutcome::Timeout,
            _ => MutantOutcome::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MutantOutcome::Caught => "caught",
            MutantOutcome::Missed => "missed",
            MutantOutcome::Unviable => "unviable",
            MutantOutcome::Timeout => "timeout",
            MutantOutcome::Other => "other",
        }
    }
}

/// The run that caught a mutant, from the test's `MUTANT CAUGHT` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaughtBy {
    pub scenario: String,
    pub seed: u64,
    /// Violation kinds, comma-separated as the test printed them.
    pub violations: String,
    pub replay: String,
}

/// One mutant.
#[derive(Clone, Debug, Serialize)]
pub struct Mutant {
    /// cargo-mutants' own name (`file:line:col: replace … with …`).
    pub name: String,
    pub file: String,
    pub line: u64,
    pub function: String,
    pub replacement: String,
    pub outcome: MutantOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_by: Option<CaughtBy>,
    /// Wall seconds cargo-mutants spent on it (build and test).
    pub build_s: f64,
    pub test_s: f64,
    /// The log, relative to its `mutants.out`.
    pub log: String,
}

/// Every mutant of one or more `mutants.out` directories.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MutantsReport {
    pub sources: Vec<String>,
    pub cargo_mutants_version: String,
    pub mutants: Vec<Mutant>,
    /// Mutants by outcome name.
    pub outcomes: BTreeMap<String, usize>,
    /// Caught mutants by catching scenario.
    pub caught_by_scenario: BTreeMap<String, usize>,
    pub wall_s: f64,
}

impl MutantsReport {
    pub fn count(&self, outcome: MutantOutcome) -> usize {
        self.mutants.iter().filter(|m| m.outcome == outcome).count()
    }

    /// Caught over the mutants that built (cargo-mutants' own score counts timeouts as caught).
    pub fn score(&self) -> f64 {
        let caught = self.count(MutantOutcome::Caught) + self.count(MutantOutcome::Timeout);
        let tested = caught + self.count(MutantOutcome::Missed);
        caught as f64 / tested.max(1) as f64
    }
}

/// Reads the test's `MUTANT CAUGHT` line from a log.
pub fn caught_by(log: &str) -> Option<CaughtBy> {
    let line = log
        .lines()
        .find_map(|l| l.split_once("MUTANT CAUGHT ").map(|(_, rest)| rest))?;
    // replay= is last and holds spaces; the other fields are single words.
    let (head, replay) = line.split_once(" replay=")?;
    let mut fields = BTreeMap::new();
    for word in head.split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            fields.insert(k, v);
        }
    }
    Some(CaughtBy {
        scenario: fields.get("scenario")?.to_string(),
        seed: fields.get("seed")?.parse().ok()?,
        violations: fields.get("violations").unwrap_or(&"").to_string(),
        replay: replay.trim().to_string(),
    })
}

fn phase_seconds(outcome: &Value, phase: &str) -> f64 {
    outcome["phase_results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["phase"] == phase)
        .filter_map(|p| p["duration"].as_f64())
        .sum()
}

/// Reads one `mutants.out` directory into `report`.
fn load_one(dir: &Path, report: &mut MutantsReport) -> Result<(), String> {
    // The operator's cargo-mutants output, outside any simulation: plain std::fs.
    #[allow(clippy::disallowed_methods)]
    let read = |p: &Path| std::fs::read_to_string(p);
    let json = read(&dir.join("outcomes.json"))
        .map_err(|e| format!("{}: {e}", dir.join("outcomes.json").display()))?;
    let lab: Value = serde_json::from_str(&json)
        .map_err(|e| format!("{}: {e}", dir.join("outcomes.json").display()))?;
    if let Some(v) = lab["cargo_mutants_version"].as_str() {
        report.cargo_mutants_version = v.to_string();
    }
    for outcome in lab["outcomes"].as_array().into_iter().flatten() {
        let Some(m) = outcome["scenario"].get("Mutant") else {
            continue; // the baseline
        };
        let log = outcome["log_path"].as_str().unwrap_or_default().to_string();
        let mutant_outcome = MutantOutcome::parse(outcome["summary"].as_str().unwrap_or(""));
        let caught = if mutant_outcome == MutantOutcome::Caught {
            read(&dir.join(&log)).ok().as_deref().and_then(caught_by)
        } else {
            None
        };
        let build_s = phase_seconds(outcome, "Build");
        let test_s = phase_seconds(outcome, "Test");
        report.wall_s += build_s + test_s;
        report.mutants.push(Mutant {
            name: m["name"].as_str().unwrap_or_default().to_string(),
            file: m["file"].as_str().unwrap_or_default().to_string(),
            line: m["span"]["start"]["line"].as_u64().unwrap_or(0),
            function: m["function"]["function_name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            replacement: m["replacement"].as_str().unwrap_or_default().to_string(),
            outcome: mutant_outcome,
            caught_by: caught,
            build_s,
            test_s,
            log,
        });
    }
    Ok(())
}

/// Reads and merges the `mutants.out` directories.
pub fn load(dirs: &[impl AsRef<Path>]) -> Result<MutantsReport, String> {
    let mut report = MutantsReport::default();
    for dir in dirs {
        load_one(dir.as_ref(), &mut report)?;
        report.sources.push(dir.as_ref().display().to_string());
    }
    report
        .mutants
        .sort_by(|a, b| (&a.file, a.line, &a.name).cmp(&(&b.file, b.line, &b.name)));
    for m in &report.mutants {
        *report
            .outcomes
            .entry(m.outcome.name().to_string())
            .or_insert(0) += 1;
        if let Some(c) = &m.caught_by {
            *report
                .caught_by_scenario
                .entry(c.scenario.clone())
                .or_insert(0) += 1;
        }
    }
    Ok(report)
}

fn headline(r: &MutantsReport) -> String {
    format!(
        "{} mutants (cargo-mutants {}): {} caught, {} missed, {} timeout, {} unviable; {:.0}% of the mutants that built were caught. {:.0} s of builds and tests, {:.1} min per mutant.",
        r.mutants.len(),
        r.cargo_mutants_version,
        r.count(MutantOutcome::Caught),
        r.count(MutantOutcome::Missed),
        r.count(MutantOutcome::Timeout),
        r.count(MutantOutcome::Unviable),
        r.score() * 100.0,
        r.wall_s,
        r.wall_s / 60.0 / r.mutants.len().max(1) as f64
    )
}

fn by(m: &Mutant) -> String {
    match &m.caught_by {
        Some(c) => format!("{} seed {} ({})", c.scenario, c.seed, c.violations),
        None if m.outcome == MutantOutcome::Caught => {
            "the test failed without a scenario verdict (see its log)".into()
        }
        None => "-".into(),
    }
}

/// The mutation in words: cargo-mutants' name without its `file:line:col: ` prefix.
fn mutation(m: &Mutant) -> &str {
    m.name
        .split_once(": ")
        .map_or(m.replacement.as_str(), |(_, what)| what)
}

/// Missed mutants first (they are what a reader acts on), then timeouts, caught, unviable.
fn ordered(r: &MutantsReport) -> Vec<&Mutant> {
    let mut rows: Vec<&Mutant> = r.mutants.iter().collect();
    rows.sort_by_key(|m| m.outcome);
    rows
}

/// The mutants section of `report.md`.
pub fn markdown(r: &MutantsReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n## Mutants\n\n{}\n", headline(r));
    if !r.caught_by_scenario.is_empty() {
        let by: Vec<String> = r
            .caught_by_scenario
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        let _ = writeln!(md, "Caught by: {}.\n", by.join(", "));
    }
    let _ = writeln!(
        md,
        "| outcome | file:line | function | mutation | caught by (scenario, seed, violations) | build + test |\n|---|---|---|---|---|---|"
    );
    for m in ordered(r) {
        let _ = writeln!(
            md,
            "| {} | {}:{} | `{}` | `{}` | {} | {:.0} + {:.0} s |",
            m.outcome.name(),
            m.file,
            m.line,
            m.function.replace('|', "\\|"),
            mutation(m).replace('|', "\\|").replace('`', "'"),
            by(m).replace('|', "\\|"),
            m.build_s,
            m.test_s
        );
    }
    md
}

/// The mutants section of `index.html`.
pub fn html(r: &MutantsReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<section id=\"mutants\"><h2>Mutants</h2>\n<p>{}</p>\n<table><tr><th>outcome</th><th>file:line</th><th>function</th><th>mutation</th><th>caught by (scenario, seed, violations)</th><th>build + test</th></tr>\n",
        escape(&headline(r))
    );
    for m in ordered(r) {
        let class = match m.outcome {
            MutantOutcome::Missed => " class=\"fail\"",
            MutantOutcome::Caught | MutantOutcome::Timeout => " class=\"pass\"",
            _ => "",
        };
        let replay = m.caught_by.as_ref().map_or(String::new(), |c| {
            format!(" title=\"{}\"", escape(&c.replay))
        });
        let _ = writeln!(
            h,
            "<tr><td{class}>{}</td><td>{}:{}</td><td><code>{}</code></td><td><code>{}</code></td><td{replay}>{}</td><td>{:.0} + {:.0} s</td></tr>",
            m.outcome.name(),
            escape(&m.file),
            m.line,
            escape(&m.function),
            escape(mutation(m)),
            escape(&by(m)),
            m.build_s,
            m.test_s
        );
    }
    h.push_str("</table></section>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caught_line_gives_the_scenario_the_seed_and_a_replay_with_spaces() {
        let log = "running 1 test\nthread panicked at sim/tests/mutants.rs:99:\n\
            MUTANT CAUGHT scenario=scenarios/disk-corruption.toml seed=7 violations=lost_write,invariant replay=cargo sim run scenarios/disk-corruption.toml --seed 7\nverdict: FAIL\n";
        assert_eq!(
            caught_by(log),
            Some(CaughtBy {
                scenario: "scenarios/disk-corruption.toml".into(),
                seed: 7,
                violations: "lost_write,invariant".into(),
                replay: "cargo sim run scenarios/disk-corruption.toml --seed 7".into(),
            })
        );
        assert_eq!(caught_by("test result: ok. 1 passed"), None);
    }
}
