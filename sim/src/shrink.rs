//! `cargo sim shrink FILE --seed N`: minimises a failing run into a scenario file a developer
//! reads first.
//!
//! The failing run's fault plan (swarm draws and repeats included) is written out as explicit
//! `[[faults]]`, then, greedily and on the same seed, faults are dropped (halves first, then
//! one by one), the window is shortened, and producers, consumers, partitions and clients are
//! cut, each change kept only when the run still fails with a violation of the same kind (the
//! first violation's kind of the original run). Every candidate is a whole scenario file
//! parsed and validated like any other, so what is written is exactly what was run.

use std::path::Path;

use toml::{Table, Value};

use crate::runner::plan::{plan, Planned};
use crate::runner::{self, Report, RunOptions, Verdict};
use crate::scenario::{Scenario, TargetSpec};

use chaos::nemesis::FaultKind;

/// The result of a shrink.
pub struct Shrunk {
    /// The shrunk scenario file.
    pub text: String,
    /// The violation kind kept throughout.
    pub kind: String,
    /// The shrunk file's failing run.
    pub report: Report,
    /// Runs spent, the original's included.
    pub runs: usize,
}

/// The kind a shrink keeps: the checker's first violation, else the harness's.
pub fn target_kind(report: &Report) -> Option<String> {
    report
        .checker
        .as_ref()
        .and_then(|c| c.violations().next().map(|a| a.kind.name().to_string()))
        .or_else(|| {
            report
                .anomalies
                .iter()
                .find(|a| !a.allowed)
                .map(|a| a.kind.name().to_string())
        })
}

/// One planned fault as a `[[faults]]` table.
fn fault_table(f: &Planned) -> Table {
    let mut t = Table::new();
    t.insert("at-ms".into(), Value::Integer(f.at_ms as i64));
    t.insert("fault".into(), Value::String(f.kind.to_string()));
    let target = |t: &TargetSpec| Value::String(t.to_string());
    if let Some(x) = &f.target {
        t.insert("target".into(), target(x));
    }
    if let Some(x) = &f.to {
        t.insert("to".into(), target(x));
    }
    if !f.group.is_empty() {
        t.insert(
            "group".into(),
            Value::Array(f.group.iter().map(target).collect()),
        );
    }
    if let Some(ms) = f.for_ms {
        t.insert("for-ms".into(), Value::Integer(ms as i64));
    }
    let p = &f.params;
    match f.kind {
        FaultKind::PacketLoss => {
            t.insert("rate".into(), Value::Float(p.rate));
        }
        FaultKind::Latency => {
            t.insert("min-ms".into(), Value::Integer(p.latency_ms.0 as i64));
            t.insert("max-ms".into(), Value::Integer(p.latency_ms.1 as i64));
        }
        FaultKind::DiskEio => {
            t.insert("write-rate".into(), Value::Float(p.write_rate));
            t.insert("sync-rate".into(), Value::Float(p.sync_rate));
        }
        FaultKind::DiskTorn => {
            t.insert("on".into(), Value::Boolean(p.on));
        }
        FaultKind::DiskFull => {
            t.insert(
                "headroom-bytes".into(),
                Value::Integer(p.headroom_bytes as i64),
            );
        }
        FaultKind::ClockSkew => {
            t.insert("offset-ms".into(), Value::Integer(p.offset_ms));
        }
        FaultKind::SlowDisk => {
            t.insert(
                "latency-ms".into(),
                Value::Integer(p.disk_latency_ms as i64),
            );
        }
        FaultKind::Hold => {
            t.insert("api".into(), Value::String(p.api.clone()));
            if p.transactional {
                t.insert("transactional".into(), Value::Boolean(true));
            }
            if let Some(n) = p.count {
                t.insert("count".into(), Value::Integer(i64::from(n)));
            }
        }
        _ => {}
    }
    t
}

/// The scenario being shrunk, as a TOML document, with what a candidate run needs.
struct Shrinker<'a> {
    file: &'a str,
    seed: u64,
    kind: String,
    runs: usize,
    max_runs: usize,
    log: &'a mut dyn FnMut(&str),
}

impl Shrinker<'_> {
    /// Whether `doc` parses and still fails with the kind; its report when it does.
    fn fails(&mut self, doc: &Table, what: &str) -> Option<Report> {
        if self.runs >= self.max_runs {
            return None;
        }
        let text = toml::to_string(doc).ok()?;
        let scenario = Scenario::parse(&text, self.file, "shrunk").ok()?;
        self.runs += 1;
        let report = runner::run_catching(
            &scenario,
            self.file,
            self.seed,
            RunOptions {
                progress: false,
                plant: None,
            },
        );
        let kept = report.verdict == Verdict::Fail
            && report.violation_kinds().contains(self.kind.as_str());
        (self.log)(&format!(
            "run {:>3}: {what}: {}",
            self.runs,
            if kept {
                "still fails, kept"
            } else {
                "passes or fails otherwise, undone"
            }
        ));
        kept.then_some(report)
    }
}

fn faults_of(doc: &Table) -> Vec<Value> {
    doc.get("faults")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn with_faults(doc: &Table, faults: Vec<Value>) -> Table {
    let mut d = doc.clone();
    if faults.is_empty() {
        d.remove("faults");
    } else {
        d.insert("faults".into(), Value::Array(faults));
    }
    d
}

/// Mutable access to `doc[section][i][key]` of an array of tables (`workload.producers`, ...).
fn int_at(doc: &Table, path: &[&str], i: usize, key: &str) -> Option<i64> {
    let mut v = doc.get(path[0])?;
    for p in &path[1..] {
        v = v.get(p)?;
    }
    v.as_array()?.get(i)?.get(key)?.as_integer()
}

fn array_mut<'a>(doc: &'a mut Table, path: &[&str]) -> Option<&'a mut Vec<Value>> {
    let mut v = doc.get_mut(path[0])?;
    for p in &path[1..] {
        v = v.get_mut(p)?;
    }
    v.as_array_mut()
}

/// Shrinks `file`'s failing run at `seed`; `log` hears one line per candidate run.
pub fn shrink(
    file: &str,
    seed: u64,
    max_runs: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Shrunk, String> {
    #[allow(clippy::disallowed_methods)] // the operator's scenario file
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let scenario = Scenario::load(Path::new(file)).map_err(|e| e.to_string())?;
    let original = runner::run_catching(
        &scenario,
        file,
        seed,
        RunOptions {
            progress: false,
            plant: None,
        },
    );
    if original.verdict == Verdict::Pass {
        return Err(format!("{file} passes on seed {seed}: nothing to shrink"));
    }
    let kind = target_kind(&original)
        .ok_or_else(|| format!("{file} seed {seed} fails without a violation of a known kind"))?;
    log(&format!(
        "run   1: {file} seed {seed} fails with {kind}; shrinking, keeping {kind}"
    ));
    let mut doc: Table = toml::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    doc.remove("swarm");
    // Named as written from the first candidate on, so the written file runs as the last one.
    doc.insert(
        "name".into(),
        Value::String(format!("{}-shrunk", scenario.name)),
    );
    doc.insert(
        "description".into(),
        Value::String(format!(
            "Shrunk by `cargo sim shrink {file} --seed {seed}`: fails on seed {seed} with {kind}"
        )),
    );
    let explicit: Vec<Value> = plan(&scenario, seed)
        .faults
        .iter()
        .map(|f| Value::Table(fault_table(f)))
        .collect();
    doc = with_faults(&doc, explicit);
    let mut s = Shrinker {
        file,
        seed,
        kind,
        runs: 1,
        max_runs,
        log,
    };
    let mut last = s
        .fails(&doc, "the fault plan written out as explicit [[faults]]")
        .ok_or_else(|| {
            "the run with its fault plan written out as explicit [[faults]] no longer fails the same way"
                .to_string()
        })?;

    loop {
        let before = toml::to_string(&doc).unwrap_or_default();
        // 1. Drop faults: halves, quarters, ... single ones.
        let mut chunk = faults_of(&doc).len().div_ceil(2).max(1);
        loop {
            let faults = faults_of(&doc);
            let mut start = 0;
            while start < faults_of(&doc).len() {
                let current = faults_of(&doc);
                let end = (start + chunk).min(current.len());
                let mut fewer = current.clone();
                fewer.drain(start..end);
                let candidate = with_faults(&doc, fewer);
                let what = format!("drop faults {}..{} of {}", start + 1, end, current.len());
                match s.fails(&candidate, &what) {
                    Some(r) => {
                        doc = candidate;
                        last = r;
                    }
                    None => start += chunk,
                }
            }
            if chunk == 1 || faults.is_empty() {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
        // 2. A shorter window: halve it while it keeps failing (faults after it go).
        while let Some(duration) = doc.get("duration-ms").and_then(Value::as_integer) {
            let shorter = duration / 2;
            if shorter < 500 {
                break;
            }
            let mut candidate = doc.clone();
            candidate.insert("duration-ms".into(), Value::Integer(shorter));
            let kept: Vec<Value> = faults_of(&doc)
                .into_iter()
                .filter(|f| f.get("at-ms").and_then(Value::as_integer) < Some(shorter))
                .collect();
            candidate = with_faults(&candidate, kept);
            match s.fails(&candidate, &format!("duration-ms {duration} -> {shorter}")) {
                Some(r) => {
                    doc = candidate;
                    last = r;
                }
                None => break,
            }
        }
        // 3. Fewer producers and consumers: drop whole entries, then counts down to 1.
        for path in [
            &["workload", "producers"][..],
            &["workload", "consumers"][..],
        ] {
            let mut i = 0;
            while i < array_mut(&mut doc.clone(), path).map_or(0, |a| a.len()) {
                let mut candidate = doc.clone();
                let len = array_mut(&mut candidate, path).map_or(0, |a| a.len());
                // The last producer stays (a run without one checks nothing).
                let dropped = if path[1] == "producers" && len <= 1 {
                    None
                } else {
                    if let Some(a) = array_mut(&mut candidate, path) {
                        a.remove(i);
                    }
                    s.fails(&candidate, &format!("drop {} entry {}", path[1], i + 1))
                };
                match dropped {
                    Some(r) => {
                        doc = candidate;
                        last = r;
                    }
                    None => {
                        let count = int_at(&doc, path, i, "count").unwrap_or(1);
                        if count > 1 {
                            let mut candidate = doc.clone();
                            if let Some(Value::Table(t)) =
                                array_mut(&mut candidate, path).and_then(|a| a.get_mut(i))
                            {
                                t.insert("count".into(), Value::Integer(count / 2));
                            }
                            let what = format!(
                                "{} entry {} count {count} -> {}",
                                path[1],
                                i + 1,
                                count / 2
                            );
                            if let Some(r) = s.fails(&candidate, &what) {
                                doc = candidate;
                                last = r;
                                continue;
                            }
                        }
                        i += 1;
                    }
                }
            }
        }
        // 4. Fewer partitions per topic, and fewer client nodes.
        let topics = doc
            .get("topics")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..topics {
            while let Some(n) = int_at(&doc, &["topics"], i, "partitions").filter(|&n| n > 1) {
                let mut candidate = doc.clone();
                if let Some(Value::Table(t)) =
                    array_mut(&mut candidate, &["topics"]).and_then(|a| a.get_mut(i))
                {
                    t.insert("partitions".into(), Value::Integer(n / 2));
                }
                match s.fails(
                    &candidate,
                    &format!("topic {} partitions {n} -> {}", i + 1, n / 2),
                ) {
                    Some(r) => {
                        doc = candidate;
                        last = r;
                    }
                    None => break,
                }
            }
        }
        while let Some(n) = doc
            .get("cluster")
            .and_then(|c| c.get("clients"))
            .and_then(Value::as_integer)
            .filter(|&n| n > 1)
        {
            let mut candidate = doc.clone();
            if let Some(Value::Table(c)) = candidate.get_mut("cluster") {
                c.insert("clients".into(), Value::Integer(n - 1));
            }
            match s.fails(&candidate, &format!("clients {n} -> {}", n - 1)) {
                Some(r) => {
                    doc = candidate;
                    last = r;
                }
                None => break,
            }
        }
        if toml::to_string(&doc).unwrap_or_default() == before || s.runs >= s.max_runs {
            break;
        }
    }
    let body = toml::to_string(&doc).map_err(|e| e.to_string())?;
    Ok(Shrunk {
        text: format!(
            "# Shrunk from {file} seed {seed}: fails with {} on seed {seed}.\n# Replay: cargo sim run <this file> --seed {seed}\n{body}",
            s.kind
        ),
        kind: s.kind,
        report: last,
        runs: s.runs,
    })
}
