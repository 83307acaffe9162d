//! `cargo sim catalogue`: plants each named bug of [`broker::planted`] in turn and runs the
//! scenarios over the seed budget until one catches it (issue 13: proof that the suite is
//! sharp).
//!
//! - Each bug names the scenarios aimed at it ([`aimed_at`]), so the default budget stays
//!   small; `--scenarios all` runs every scenario of the directory instead.
//! - Runs go seed-major (every aimed scenario on the first seed, then the next), `jobs` at a
//!   time, each on a thread of its own with the bug planted on that thread alone
//!   ([`RunOptions::plant`]): concurrent runs never see each other's bug.
//! - A planted run that fails is a catch only if the same scenario and seed pass unplanted:
//!   a scenario that fails anyway proves nothing about the bug.
//! - A bug stops at its first catch (`--keep-going` runs its whole budget). A bug no run
//!   caught has escaped, and the command exits 1.
//!
//! The report section ([`markdown`], [`html`], [`junit`]) is its own: `cargo sim catalogue
//! --out DIR` writes it as `report.md`, `index.html`, `junit.xml` and `summary.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use broker::planted::Bug;
use serde::Serialize;

use super::picture::escape;
use super::{wall, RunSummary, Target};
use crate::runner::{self, RunOptions, Verdict};

pub const USAGE: &str = "cargo sim catalogue [DIR] [--out DIR] [--plant BUG|all] [--seeds A..B] [--scenarios aimed|all] [--jobs N] [--keep-going]";

/// The seeds each aimed scenario runs by default.
pub const DEFAULT_SEEDS: std::ops::Range<u64> = 1..4;

/// The scenario files (stems, in `scenarios/`) aimed at `bug`, the likeliest catcher first.
pub fn aimed_at(bug: Bug) -> &'static [&'static str] {
    match bug {
        Bug::AckBeforeSync => &["acks-all-durable-crashes", "replication-power-loss-durable"],
        Bug::SkipCrcCheck => &["disk-corruption"],
        // A single broker's log reserves what it shows past its durable end (skipped after a
        // crash), so only a replicated log shows this bug: a leader split off with its client
        // takes writes its followers never get, and truncates them after the heal.
        Bug::ServeAboveHighWatermark => &["replication-leader-split-with-client"],
        Bug::ReuseOffsetsAfterCrash => &["acks-1-crashes", "lazy-flush-power-loss"],
        Bug::OffsetCommitBeforeDurable => &["group-commit-durability"],
        Bug::NoDuplicateDetection => &["idempotent-partitions"],
        Bug::IsrShrinkDisabled => &["replication-slow-disk-follower"],
        Bug::WipedReplicaStaysInIsr => &["replication-wiped-replica"],
        Bug::CleanerKeepsFirstRecord => &["compaction-crashes"],
        Bug::TombstonesRemovedAtOnce => &["compaction-crashes"],
        // Caught by `isr-complete-at-end` (the returning replica never truncates, so never
        // catches up nor rejoins): replication-catch-up-power-loss seed 1 and
        // replication-power-loss-durable seed 4 (replication-double-failover seeds 1-3 have
        // nothing to truncate).
        Bug::FollowerSkipsTruncation => &[
            "replication-power-loss-durable",
            "replication-leader-crash",
            "replication-catch-up-power-loss",
        ],
        Bug::MarkersAlwaysCommit => &["txn-aborts-broker-crashes", "txn-swarm"],
        Bug::ReadCommittedBoundedByHighWatermark => {
            &["txn-lso-boundary-batch-by-batch", "read-committed-crashes"]
        }
        Bug::ElrHighWatermarkIgnoresMinIsr => &["replication-elr-last-isr-member-lost"],
    }
}

/// The catalogue's names, for usage errors.
pub fn names() -> String {
    Bug::ALL
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One run that caught a bug.
#[derive(Clone, Debug, Serialize)]
pub struct Catch {
    pub scenario: String,
    pub file: String,
    pub seed: u64,
    /// Violations by kind.
    pub violations: BTreeMap<String, usize>,
    /// `cargo sim run FILE --seed N --plant BUG`.
    pub replay: String,
}

/// What planting one bug came to.
#[derive(Clone, Debug, Serialize)]
pub struct BugOutcome {
    pub bug: &'static str,
    pub breaks: &'static str,
    pub caught: bool,
    /// In the order the runs were scheduled (seed-major).
    pub catches: Vec<Catch>,
    /// Planted runs that failed, but whose scenario and seed fail unplanted too.
    pub unattributable: Vec<String>,
    /// The scenario files it ran.
    pub scenarios: Vec<String>,
    pub runs: usize,
    pub wall_s: f64,
}

/// The whole catalogue run, as `summary.json` holds it.
#[derive(Clone, Debug, Serialize)]
pub struct Catalogue {
    pub seeds: std::ops::Range<u64>,
    pub jobs: usize,
    pub all_scenarios: bool,
    pub bugs: Vec<BugOutcome>,
    pub wall_s: f64,
}

impl Catalogue {
    pub fn escaped(&self) -> impl Iterator<Item = &BugOutcome> {
        self.bugs.iter().filter(|b| !b.caught)
    }
}

/// How to run the catalogue.
#[derive(Clone, Debug)]
pub struct Options {
    /// The directory holding the scenarios (`scenarios` by default).
    pub dir: PathBuf,
    pub bugs: Vec<Bug>,
    pub seeds: std::ops::Range<u64>,
    /// Every scenario of `dir` instead of the aimed ones.
    pub all_scenarios: bool,
    pub jobs: usize,
    /// Run each bug's whole budget instead of stopping at its first catch.
    pub keep_going: bool,
    pub out: Option<PathBuf>,
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        dir: PathBuf::from("scenarios"),
        bugs: Bug::ALL.to_vec(),
        seeds: DEFAULT_SEEDS,
        all_scenarios: false,
        jobs: super::cli::default_jobs(),
        keep_going: false,
        out: None,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |name: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--plant" => {
                let name = value("--plant")?;
                options.bugs = if name == "all" {
                    Bug::ALL.to_vec()
                } else {
                    name.split(',')
                        .map(|n| {
                            Bug::from_name(n.trim()).ok_or_else(|| {
                                format!(
                                    "--plant takes all or bugs of the catalogue ({}), not {n:?}",
                                    names()
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?
                };
            }
            "--seeds" => {
                options.seeds = super::cli::parse_range(&value("--seeds")?)
                    .ok_or("--seeds takes a range like 1..4")?;
            }
            "--scenarios" => {
                options.all_scenarios = match value("--scenarios")?.as_str() {
                    "all" => true,
                    "aimed" => false,
                    other => return Err(format!("--scenarios takes aimed or all, not {other:?}")),
                }
            }
            "--jobs" => {
                options.jobs = value("--jobs")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--jobs takes a positive number")?
            }
            "--keep-going" => options.keep_going = true,
            "--out" => options.out = Some(PathBuf::from(value("--out")?)),
            other if other.starts_with("--") => return Err(format!("unknown option {other:?}")),
            other => options.dir = PathBuf::from(other),
        }
    }
    if options.seeds.is_empty() {
        return Err("--seeds is an empty range".into());
    }
    Ok(options)
}

/// The scenarios `bug` runs: its aimed files in `dir`, or every file of `dir`.
fn targets_for(bug: Bug, options: &Options) -> Result<Vec<Target>, String> {
    if options.all_scenarios {
        return super::cli::targets(&[options.dir.display().to_string()]);
    }
    let files: Vec<String> = aimed_at(bug)
        .iter()
        .map(|stem| {
            options
                .dir
                .join(format!("{stem}.toml"))
                .display()
                .to_string()
        })
        .collect();
    super::cli::targets(&files)
}

/// Runs `pairs` (target, seed) with `plant`, all at once, each on its own thread (the runner
/// gives each run a fresh thread; these only wait for it).
fn run_wave(targets: &[Target], pairs: &[(usize, u64)], plant: Option<Bug>) -> Vec<RunSummary> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|&(t, seed)| {
                let target = &targets[t];
                scope.spawn(move || {
                    let start = wall();
                    // Summarised and dropped on the run's own thread (`run_catching_then`).
                    runner::run_catching_then(
                        &target.scenario,
                        &target.file,
                        seed,
                        RunOptions {
                            progress: false,
                            plant,
                        },
                        move |report| {
                            RunSummary::of(&report, start.elapsed().as_secs_f64() * 1000.0)
                        },
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .expect("run_catching catches the simulation's panics")
            })
            .collect()
    })
}

/// The command that replays a catch.
pub fn replay(file: &str, seed: u64, bug: Bug) -> String {
    format!("cargo sim run {file} --seed {seed} --plant {}", bug.name())
}

/// Plants `bug` and runs its scenarios over the seeds until one catches it (all of them with
/// `keep_going`). `progress` hears of every planted run.
pub fn hunt(
    bug: Bug,
    options: &Options,
    progress: &mut dyn FnMut(&RunSummary),
) -> Result<BugOutcome, String> {
    let targets = targets_for(bug, options)?;
    let start = wall();
    let pairs: Vec<(usize, u64)> = options
        .seeds
        .clone()
        .flat_map(|seed| (0..targets.len()).map(move |t| (t, seed)))
        .collect();
    let mut outcome = BugOutcome {
        bug: bug.name(),
        breaks: bug.breaks(),
        caught: false,
        catches: vec![],
        unattributable: vec![],
        scenarios: targets.iter().map(|t| t.file.clone()).collect(),
        runs: 0,
        wall_s: 0.0,
    };
    for wave in pairs.chunks(options.jobs.max(1)) {
        let planted = run_wave(&targets, wave, Some(bug));
        outcome.runs += planted.len();
        for run in &planted {
            progress(run);
        }
        let failed: Vec<((usize, u64), &RunSummary)> = wave
            .iter()
            .copied()
            .zip(&planted)
            .filter(|(_, run)| run.verdict == Verdict::Fail)
            .collect();
        if failed.is_empty() {
            continue;
        }
        let again: Vec<(usize, u64)> = failed.iter().map(|(pair, _)| *pair).collect();
        let unplanted = run_wave(&targets, &again, None);
        outcome.runs += unplanted.len();
        for ((_, run), control) in failed.iter().zip(&unplanted) {
            if control.verdict == Verdict::Fail {
                outcome.unattributable.push(format!(
                    "{} seed {} (fails unplanted too)",
                    run.file, run.seed
                ));
                continue;
            }
            outcome.catches.push(Catch {
                scenario: run.scenario.clone(),
                file: run.file.clone(),
                seed: run.seed,
                violations: run.violations.clone(),
                replay: replay(&run.file, run.seed, bug),
            });
        }
        if !outcome.catches.is_empty() && !options.keep_going {
            break;
        }
    }
    outcome.caught = !outcome.catches.is_empty();
    outcome.wall_s = start.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Every bug of `options`, in catalogue order.
pub fn run(
    options: &Options,
    progress: &mut dyn FnMut(&RunSummary),
    mut finished: impl FnMut(&BugOutcome),
) -> Result<Catalogue, String> {
    let start = wall();
    let mut bugs = Vec::new();
    for &bug in &options.bugs {
        let outcome = hunt(bug, options, progress)?;
        finished(&outcome);
        bugs.push(outcome);
    }
    Ok(Catalogue {
        seeds: options.seeds.clone(),
        jobs: options.jobs,
        all_scenarios: options.all_scenarios,
        bugs,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

fn kinds(map: &BTreeMap<String, usize>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn caught_by(b: &BugOutcome) -> String {
    match b.catches.first() {
        Some(c) if b.catches.len() == 1 => format!("{} seed {}", c.scenario, c.seed),
        Some(c) => format!(
            "{} seed {} (caught by {} runs)",
            c.scenario,
            c.seed,
            b.catches.len()
        ),
        None => "ESCAPED".into(),
    }
}

/// The "planted bugs" section of `report.md`.
pub fn markdown(catalogue: &Catalogue) -> String {
    let mut md = String::new();
    let caught = catalogue.bugs.iter().filter(|b| b.caught).count();
    let _ = writeln!(
        md,
        "## Planted bugs\n\n{caught} of {} caught, seeds {}..{} of the {} scenarios, {:.0} s wall on {} workers.\n",
        catalogue.bugs.len(),
        catalogue.seeds.start,
        catalogue.seeds.end,
        if catalogue.all_scenarios { "directory's" } else { "aimed" },
        catalogue.wall_s,
        catalogue.jobs
    );
    let _ = writeln!(
        md,
        "| bug | breaks | caught by | violations | runs | wall | replay |\n|---|---|---|---|---|---|---|"
    );
    for b in &catalogue.bugs {
        let first = b.catches.first();
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {:.0} s | {} |",
            b.bug,
            b.breaks,
            caught_by(b),
            first.map_or("-".into(), |c| kinds(&c.violations)),
            b.runs,
            b.wall_s,
            first.map_or("-".into(), |c| format!("`{}`", c.replay)),
        );
    }
    for b in catalogue
        .bugs
        .iter()
        .filter(|b| !b.unattributable.is_empty())
    {
        let _ = writeln!(
            md,
            "\n`{}`: not counted: {}",
            b.bug,
            b.unattributable.join("; ")
        );
    }
    md
}

/// The "planted bugs" section of `index.html`.
pub fn html(catalogue: &Catalogue) -> String {
    let mut h = String::new();
    let caught = catalogue.bugs.iter().filter(|b| b.caught).count();
    let _ = write!(
        h,
        "<section><h2>Planted bugs</h2><p>{caught} of {} caught, seeds {}..{}, {:.0} s wall.</p>\
         <table><tr><th>bug</th><th>breaks</th><th>caught by</th><th>violations</th><th>runs</th><th>wall</th><th>replay</th></tr>",
        catalogue.bugs.len(),
        catalogue.seeds.start,
        catalogue.seeds.end,
        catalogue.wall_s
    );
    for b in &catalogue.bugs {
        let first = b.catches.first();
        let class = if b.caught { "pass" } else { "fail" };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{:.0} s</td><td><code>{}</code></td></tr>",
            escape(b.bug),
            escape(b.breaks),
            escape(&caught_by(b)),
            escape(&first.map_or("-".into(), |c| kinds(&c.violations))),
            b.runs,
            b.wall_s,
            escape(&first.map_or("-".into(), |c| c.replay.clone())),
        );
    }
    h.push_str("</table></section>");
    h
}

/// One JUnit testcase per bug: a failure when it escaped.
pub fn junit(catalogue: &Catalogue) -> String {
    let mut x = String::new();
    let _ = write!(
        x,
        "<testsuite name=\"planted-bugs\" tests=\"{}\" failures=\"{}\">",
        catalogue.bugs.len(),
        catalogue.escaped().count()
    );
    for b in &catalogue.bugs {
        let _ = write!(
            x,
            "<testcase classname=\"planted\" name=\"{}\" time=\"{:.3}\">",
            escape(b.bug),
            b.wall_s
        );
        if !b.caught {
            let _ = write!(
                x,
                "<failure message=\"escaped: no run of {} caught it\"/>",
                escape(&b.scenarios.join(", "))
            );
        }
        x.push_str("</testcase>");
    }
    x.push_str("</testsuite>");
    x
}

/// Writes `report.md`, `index.html`, `junit.xml` and `summary.json` into `dir`.
pub fn write_all(catalogue: &Catalogue, dir: &Path) -> std::io::Result<()> {
    #[allow(clippy::disallowed_methods)] // the operator's report directory
    {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.md"),
            format!(
                "# Faultline planted-bug catalogue\n\n{}",
                markdown(catalogue)
            ),
        )?;
        std::fs::write(
            dir.join("index.html"),
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Faultline planted bugs</title><style>{}</style></head><body><h1>Faultline planted-bug catalogue</h1>{}</body></html>",
                super::output::CSS,
                html(catalogue)
            ),
        )?;
        std::fs::write(
            dir.join("junit.xml"),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>{}</testsuites>\n",
                junit(catalogue)
            ),
        )?;
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(catalogue).expect("the catalogue serializes"),
        )?;
    }
    Ok(())
}

/// `cargo sim catalogue …`: 0 when every bug was caught, 1 when one escaped, 2 on an error.
pub fn main(args: &[String]) -> i32 {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\nusage: {USAGE}");
            return 2;
        }
    };
    let mut progress = |run: &RunSummary| {
        eprintln!(
            "  {} seed {}: {} {}",
            run.scenario,
            run.seed,
            run.verdict,
            kinds(&run.violations)
        );
    };
    let result = run(&options, &mut progress, |b| {
        eprintln!(
            "{:<36} {} ({} runs, {:.0} s)",
            b.bug,
            caught_by(b),
            b.runs,
            b.wall_s
        );
    });
    let catalogue = match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    println!("{}", markdown(&catalogue));
    if let Some(out) = &options.out {
        if let Err(e) = write_all(&catalogue, out) {
            eprintln!("error: {}: {e}", out.display());
            return 2;
        }
        println!("report: {}", out.join("index.html").display());
    }
    let escaped = catalogue.escaped().count();
    i32::from(escaped > 0)
}
