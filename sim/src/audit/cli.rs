//! `cargo sim audit [DIR|FILE…] --seeds A..B --out DIR [--jobs N] [--shard i/n] [--mutants DIR…]`.
//!
//! `--mutants DIR` (repeatable: one per CI shard) adds cargo-mutants' outcomes to the report;
//! with `--mutants` and no `--seeds` the audit runs no scenario and writes the mutants table.
//!
//! Exit 0 when every run passed, 1 on any violation, 2 on a usage or scenario-file error.

use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use broker::protocol::requests_handled;

use super::{output, run_all, wall, Audit, RunSummary, Shard, Target};
use crate::runner::Verdict;
use crate::scenario::Scenario;

pub const USAGE: &str =
    "cargo sim audit [DIR|FILE...] --seeds A..B --out DIR [--jobs N] [--shard i/n] [--mutants DIR...]";

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub targets: Vec<String>,
    pub seeds: Range<u64>,
    pub out: PathBuf,
    pub jobs: usize,
    pub shard: Option<Shard>,
    /// cargo-mutants output directories to report.
    pub mutants: Vec<PathBuf>,
}

pub(crate) fn parse_range(r: &str) -> Option<Range<u64>> {
    match r.split_once("..") {
        Some((a, b)) => Some(a.parse().ok()?..b.parse().ok()?),
        None => {
            let n: u64 = r.parse().ok()?;
            Some(n..n + 1)
        }
    }
}

/// Every core by default.
pub(crate) fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let (mut targets, mut seeds, mut out, mut jobs, mut shard) =
        (Vec::new(), None, None, default_jobs(), None);
    let mut mutants = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |name: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--seeds" => {
                seeds = Some(
                    parse_range(&value("--seeds")?).ok_or("--seeds takes a range like 1..1000")?,
                )
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--jobs" => {
                jobs = value("--jobs")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--jobs takes a positive number")?
            }
            "--shard" => shard = Some(Shard::parse(&value("--shard")?)?),
            "--mutants" => mutants.push(PathBuf::from(value("--mutants")?)),
            other if other.starts_with("--") => return Err(format!("unknown option {other:?}")),
            other => targets.push(other.to_string()),
        }
    }
    if targets.is_empty() {
        targets.push("scenarios".into());
    }
    let seeds = match seeds {
        Some(seeds) => seeds,
        // The mutants table alone: no scenario runs.
        None if !mutants.is_empty() => 0..0,
        None => return Err("audit needs --seeds A..B".into()),
    };
    Ok(Options {
        targets,
        seeds,
        out: out.ok_or("audit needs --out DIR")?,
        jobs,
        shard,
        mutants,
    })
}

/// The scenario files of the targets: a file as given, a directory's `*.toml` sorted by name.
pub fn targets(names: &[String]) -> Result<Vec<Target>, String> {
    let mut files = Vec::new();
    for name in names {
        let path = Path::new(name);
        if path.is_dir() {
            #[allow(clippy::disallowed_methods)] // the operator's scenario directory
            let entries = std::fs::read_dir(path).map_err(|e| format!("{name}: {e}"))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found.into_iter().map(|p| p.display().to_string()));
        } else {
            files.push(name.clone());
        }
    }
    files
        .into_iter()
        .map(|file| {
            let scenario = Scenario::load(Path::new(&file)).map_err(|e| e.to_string())?;
            Ok(Target { file, scenario })
        })
        .collect()
}

/// Runs the audit and writes its files.
pub fn audit(
    options: &Options,
    progress: impl FnMut(&RunSummary, usize, usize),
) -> Result<Audit, String> {
    let mutants = if options.mutants.is_empty() {
        None
    } else {
        Some(super::mutants::load(&options.mutants)?)
    };
    // The mutants table alone (no seeds) reads no scenario file.
    let targets = if options.seeds.is_empty() && !options.mutants.is_empty() {
        Vec::new()
    } else {
        targets(&options.targets)?
    };
    let seeds: Vec<u64> = match options.shard {
        Some(shard) => shard.seeds(options.seeds.clone()),
        None => options.seeds.clone().collect(),
    };
    let total = targets.len() * seeds.len();
    let mut progress = progress;
    let start = wall();
    let requests_before = requests_handled();
    let runs = run_all(&targets, &seeds, options.jobs, |run, done| {
        progress(run, done, total)
    });
    let mut audit = Audit::new(
        options.seeds.clone(),
        options.shard,
        options.jobs,
        start.elapsed().as_secs_f64(),
        requests_handled() - requests_before,
        runs,
    );
    audit.mutants = mutants;
    output::write_all(&audit, &options.out)
        .map_err(|e| format!("{}: {e}", options.out.display()))?;
    Ok(audit)
}

/// A progress bar with an ETA on a terminal; a plain line every twentieth of the way otherwise.
struct Progress {
    terminal: bool,
    start: std::time::Instant,
    step: usize,
}

impl Progress {
    fn show(&self, run: &RunSummary, done: usize, total: usize) {
        let mut err = std::io::stderr().lock();
        if run.verdict == Verdict::Fail {
            let clear = if self.terminal { "\r\x1b[2K" } else { "" };
            let _ = writeln!(
                err,
                "{clear}FAIL {} seed {}: {}",
                run.scenario, run.seed, run.replay
            );
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = elapsed / done as f64 * (total - done) as f64;
        let line = format!(
            "{done}/{total} runs, {:.0} s elapsed, ETA {:.0} s",
            elapsed, eta
        );
        if self.terminal {
            let width = 30;
            let filled = done * width / total.max(1);
            let _ = write!(
                err,
                "\r\x1b[2K[{}{}] {line}",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            if done == total {
                let _ = writeln!(err);
            }
        } else if done.is_multiple_of(self.step) || done == total {
            let _ = writeln!(err, "audit: {line}");
        }
    }
}

/// `cargo sim audit …`: the exit code.
pub fn main(args: &[String]) -> i32 {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\nusage: {USAGE}");
            return 2;
        }
    };
    let bar = Progress {
        terminal: std::io::stderr().is_terminal(),
        start: wall(),
        step: 1,
    };
    let mut bar = bar;
    let mut first = true;
    let result = audit(&options, |run, done, total| {
        if first {
            bar.step = (total / 20).max(1);
            first = false;
        }
        bar.show(run, done, total)
    });
    match result {
        Ok(audit) => {
            for s in &audit.scenarios {
                println!(
                    "{:<36} {:>5} seeds {:>5} passed {:>4} failed  {:.1}x real time",
                    s.name,
                    s.seeds,
                    s.passed,
                    s.failed,
                    s.speedup()
                );
            }
            println!(
                "audit: {} runs, {} failed, {:.1} s wall on {} workers, {:.0} broker requests per wall-second per core; report: {}",
                audit.runs_total,
                audit.runs_failed,
                audit.wall_s,
                audit.jobs,
                audit.broker_requests_per_core_second,
                options.out.join("index.html").display()
            );
            if let Some(m) = &audit.mutants {
                println!(
                    "mutants: {} tried, {} caught, {} missed, {} timeout, {} unviable",
                    m.mutants.len(),
                    m.count(super::mutants::MutantOutcome::Caught),
                    m.count(super::mutants::MutantOutcome::Missed),
                    m.count(super::mutants::MutantOutcome::Timeout),
                    m.count(super::mutants::MutantOutcome::Unviable)
                );
            }
            i32::from(!audit.passed())
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
