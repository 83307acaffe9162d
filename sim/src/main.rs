//! `cargo sim …`: the simulation command line.
//!
//! - `cargo sim run <scenario.toml> --seed N [--json]`: one run. Prints a banner (scenario, seed,
//!   every option drawn from the seed, the fault plan), progress, the anomalies, and as its last
//!   line `verdict: PASS|FAIL scenario=<name> seed=<n> trace=<16 hex digits>`. `--json` prints one
//!   JSON report instead. Exit 0 on PASS, 1 on FAIL, 2 on a usage or scenario-file error.
//! - `cargo sim replay <scenario.toml> --seed N [--trace]`: reruns the seed; `--trace` prints
//!   every event (simulated time, node, event), byte-identical on every run, then the verdict.
//! - `cargo sim sweep <dir|file> --seeds A..B [--jobs N]`: every scenario over the seed range
//!   (on N worker threads, default 1), a table per scenario with the first failing seed and its
//!   replay command, and the speed per core; exit 1 on any failure.
//! - `cargo sim log-workload [--seeds A..B] [--lazy]`: the log alone on a crashing node.
//! - `cargo sim audit [DIR|FILE…] --seeds A..B --out DIR [--jobs N] [--shard i/n]
//!   [--mutants DIR…]`: every scenario over the seeds on every core; writes report.md,
//!   index.html, junit.xml and summary.json (see `sim::audit`), with cargo-mutants' outcomes
//!   when given `mutants.out` directories (`scripts/mutants.sh`). `run … --html OUT.html` draws
//!   one run the same way.
//! - `cargo sim run|replay … --plant BUG` plants a named bug of the catalogue in the broker
//!   (`broker::planted`); `cargo sim catalogue [DIR] --out DIR [--plant BUG|all]` plants each in
//!   turn and reports which scenario caught it (see `sim::audit::planted`).
//! - `cargo sim shrink <scenario.toml> --seed N [--out FILE] [--max-runs N]`: minimises a
//!   failing run (see `sim::shrink`) and writes a scenario file with explicit `[[faults]]`
//!   that fails on the seed; exit 1 when it does (the failure is kept), 2 on an error.
//!
//! `SIM_LOG=<filter>` (tracing's env-filter syntax, e.g. `info,broker::replica=debug`) prints
//! the brokers' logs on stderr, each line under its node's span (`node{id=2 name="broker-2"}`).
//! It changes no trace: the trace and its hash are the same with and without it (see
//! `sim::logging`).

#[cfg(madsim)]
mod cli {
    use std::path::{Path, PathBuf};

    use broker::protocol::requests_handled;
    use sim::runner::{self, Report, RunOptions, Verdict};
    use sim::scenario::Scenario;

    const USAGE: &str = "usage:
  cargo sim run <scenario.toml> --seed N [--json] [--html OUT.html] [--plant BUG]
  cargo sim replay <scenario.toml> --seed N [--trace] [--plant BUG]
  cargo sim sweep <dir|scenario.toml> --seeds A..B [--jobs N]
  cargo sim log-workload [--seeds A..B] [--lazy]
  cargo sim audit [DIR|FILE...] --seeds A..B --out DIR [--jobs N] [--shard i/n] [--mutants DIR...]
  cargo sim shrink <scenario.toml> --seed N [--out FILE] [--max-runs N]
  cargo sim catalogue [DIR] --out DIR [--plant BUG|all] [--seeds A..B] [--scenarios aimed|all]
                      [--jobs N] [--keep-going]";

    fn usage_error(message: &str) -> ! {
        eprintln!("error: {message}\n{USAGE}");
        std::process::exit(2);
    }

    fn parse_range(r: &str) -> Option<std::ops::Range<u64>> {
        match r.split_once("..") {
            Some((a, b)) => Some(a.parse().ok()?..b.parse().ok()?),
            None => {
                let n: u64 = r.parse().ok()?;
                Some(n..n + 1)
            }
        }
    }

    /// The wall clock, for speed reports only (never in a trace or a verdict).
    #[allow(clippy::disallowed_methods)]
    fn wall() -> std::time::Instant {
        std::time::Instant::now()
    }

    struct Args {
        file: Option<String>,
        seed: Option<u64>,
        seeds: Option<std::ops::Range<u64>>,
        json: bool,
        trace: bool,
        lazy: bool,
        html: Option<String>,
        out: Option<String>,
        max_runs: Option<usize>,
        plant: Option<broker::planted::Bug>,
        jobs: Option<usize>,
    }

    fn parse(args: &[String]) -> Args {
        let mut parsed = Args {
            file: None,
            seed: None,
            seeds: None,
            json: false,
            trace: false,
            lazy: false,
            html: None,
            out: None,
            max_runs: None,
            plant: None,
            jobs: None,
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--seed" => {
                    let v = rest.next().and_then(|s| s.parse().ok());
                    parsed.seed = Some(v.unwrap_or_else(|| usage_error("--seed takes a number")));
                }
                "--seeds" => {
                    let v = rest.next().and_then(|s| parse_range(s));
                    parsed.seeds =
                        Some(v.unwrap_or_else(|| usage_error("--seeds takes a range like 1..200")));
                }
                "--plant" => {
                    let name = rest.next().cloned().unwrap_or_default();
                    let bug = broker::planted::Bug::from_name(&name).unwrap_or_else(|| {
                        usage_error(&format!(
                            "--plant takes a bug of the catalogue ({}), not {name:?}",
                            sim::audit::planted::names()
                        ))
                    });
                    parsed.plant = Some(bug);
                }
                "--json" => parsed.json = true,
                "--trace" => parsed.trace = true,
                "--lazy" => parsed.lazy = true,
                "--html" => {
                    let v = rest.next().cloned();
                    parsed.html = Some(v.unwrap_or_else(|| usage_error("--html takes a file")));
                }
                "--out" => {
                    let v = rest.next().cloned();
                    parsed.out = Some(v.unwrap_or_else(|| usage_error("--out takes a file")));
                }
                "--jobs" => {
                    let v = rest.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0);
                    parsed.jobs =
                        Some(v.unwrap_or_else(|| usage_error("--jobs takes a positive number")));
                }
                "--max-runs" => {
                    let v = rest.next().and_then(|s| s.parse().ok());
                    parsed.max_runs =
                        Some(v.unwrap_or_else(|| usage_error("--max-runs takes a number")));
                }
                other if other.starts_with("--") => {
                    usage_error(&format!("unknown option {other:?}"))
                }
                other if parsed.file.is_none() => parsed.file = Some(other.to_string()),
                other => usage_error(&format!("unexpected argument {other:?}")),
            }
        }
        parsed
    }

    fn load(file: &str) -> Scenario {
        match Scenario::load(Path::new(file)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }

    fn print_findings(report: &Report) {
        for a in &report.anomalies {
            let status = if a.allowed { "allowed  " } else { "VIOLATION" };
            println!("{status} {:?}: {}", a.kind, a.description);
        }
        if let Some(checked) = &report.checker {
            for a in &checked.anomalies {
                print!("{a}");
            }
        }
    }

    fn summary(report: &Report) -> String {
        let c = &report.counts;
        let (violations, allowed) = report
            .checker
            .as_ref()
            .map_or((0, 0), |r| (r.violations, r.allowed));
        let harness_violations = report.anomalies.iter().filter(|a| !a.allowed).count();
        format!(
            "summary: {} ops ({} sends: {} acknowledged, {} failed, {} unknown; {} polls, {} records read), {} faults, {} broker boots; checker: {} violations, {} allowed; harness: {} violations, {} allowed; {} ms simulated",
            c.operations, c.sends, c.acknowledged, c.failed, c.unknown, c.polls, c.records_read,
            c.faults_applied, c.broker_boots, violations, allowed, harness_violations,
            report.anomalies.len() - harness_violations, report.sim_ms
        )
    }

    fn run(args: &[String]) -> i32 {
        let a = parse(args);
        let file = a
            .file
            .unwrap_or_else(|| usage_error("run needs a scenario file"));
        let seed = a.seed.unwrap_or_else(|| usage_error("run needs --seed N"));
        let scenario = load(&file);
        let start = wall();
        let requests_before = requests_handled();
        let report = runner::run_catching(
            &scenario,
            &file,
            seed,
            RunOptions {
                progress: !a.json,
                plant: a.plant,
            },
        );
        let requests = requests_handled() - requests_before;
        let wall_s = start.elapsed().as_secs_f64();
        if let Some(out) = &a.html {
            #[allow(clippy::disallowed_methods)] // the operator's output file
            if let Err(e) = std::fs::write(out, sim::audit::picture::page(&report)) {
                eprintln!("error: {out}: {e}");
                return 2;
            }
        }
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serializes")
            );
        } else {
            print_findings(&report);
            println!("{}", summary(&report));
            if let Some(line) = report.expectation_line() {
                println!("{line}");
            }
            println!(
                "speed: {:.0} ops and {:.0} broker requests per wall-second ({requests} requests), {:.1}x real time ({:.2} s wall)",
                report.counts.operations as f64 / wall_s,
                requests as f64 / wall_s,
                report.sim_ms as f64 / 1000.0 / wall_s,
                wall_s
            );
            if report.verdict == Verdict::Fail {
                println!("replay: {}", report.replay);
            }
            println!("{}", report.verdict_line());
        }
        i32::from(report.verdict == Verdict::Fail)
    }

    fn replay(args: &[String]) -> i32 {
        let a = parse(args);
        let file = a
            .file
            .unwrap_or_else(|| usage_error("replay needs a scenario file"));
        let seed = a
            .seed
            .unwrap_or_else(|| usage_error("replay needs --seed N"));
        let scenario = load(&file);
        let report = runner::run_catching(
            &scenario,
            &file,
            seed,
            RunOptions {
                progress: false,
                plant: a.plant,
            },
        );
        if a.trace {
            for event in &report.trace {
                println!("{event}");
            }
        }
        print_findings(&report);
        println!("{}", summary(&report));
        if let Some(line) = report.expectation_line() {
            println!("{line}");
        }
        println!("{}", report.verdict_line());
        i32::from(report.verdict == Verdict::Fail)
    }

    fn scenario_files(target: &str) -> Vec<PathBuf> {
        let path = Path::new(target);
        if path.is_file() {
            return vec![path.to_path_buf()];
        }
        #[allow(clippy::disallowed_methods)] // the operator's scenario directory, not broker data
        let entries =
            std::fs::read_dir(path).unwrap_or_else(|e| usage_error(&format!("{target}: {e}")));
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        files
    }

    /// `sweep`: every scenario over the seeds, on `--jobs` worker threads (default one). Each
    /// run is a simulation on a thread of its own, so its trace is the same whatever the jobs.
    fn sweep(args: &[String]) -> i32 {
        let a = parse(args);
        let target = a
            .file
            .unwrap_or_else(|| usage_error("sweep needs a directory or scenario file"));
        let seeds = a
            .seeds
            .unwrap_or_else(|| usage_error("sweep needs --seeds A..B"));
        let jobs = a.jobs.unwrap_or(1);
        let files = scenario_files(&target);
        let targets: Vec<sim::audit::Target> = files
            .iter()
            .map(|f| {
                let file = f.display().to_string();
                sim::audit::Target {
                    scenario: load(&file),
                    file,
                }
            })
            .collect();
        let seeds: Vec<u64> = seeds.collect();
        let total = targets.len() * seeds.len();
        let start = wall();
        let requests_before = requests_handled();
        let runs = sim::audit::run_all(&targets, &seeds, jobs, |run, done| {
            if run.verdict == Verdict::Fail {
                eprintln!(
                    "\rverdict: {} scenario={} seed={} trace={}",
                    run.verdict, run.scenario, run.seed, run.trace_hash
                );
            }
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} {:<32}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                run.scenario
            );
        });
        eprintln!();
        let requests = requests_handled() - requests_before;
        let wall_s = start.elapsed().as_secs_f64();
        let (ops, sim_ms) = runs
            .iter()
            .fold((0usize, 0u64), |(o, s), r| (o + r.operations, s + r.sim_ms));
        println!(
            "{:<36} {:>6} {:>6}  first failing seed",
            "scenario", "seeds", "passed"
        );
        let mut any_failed = false;
        for s in sim::audit::by_scenario(&runs) {
            any_failed |= s.failed > 0;
            let first = runs
                .iter()
                .find(|r| r.file == s.file && r.verdict == Verdict::Fail)
                .map_or("-".to_string(), |r| format!("{} ({})", r.seed, r.replay));
            println!("{:<36} {:>6} {:>6}  {first}", s.name, s.seeds, s.passed);
        }
        // Per core: each run keeps one core busy, so `jobs` runs at once use `jobs` cores.
        let core_s = wall_s * jobs.min(runs.len().max(1)) as f64;
        println!(
            "speed: {} runs on {jobs} job(s), {ops} ops and {requests} broker requests in {wall_s:.1} s wall: {:.0} ops and {:.0} broker requests per wall-second per core, {:.1}x real time per core",
            runs.len(),
            ops as f64 / core_s,
            requests as f64 / core_s,
            sim_ms as f64 / 1000.0 / core_s
        );
        i32::from(any_failed)
    }

    fn log_workload(args: &[String]) -> i32 {
        use sim::log_workload::{run_seed, LogWorkload};
        let a = parse(args);
        let seeds = a.seeds.unwrap_or(0..100);
        let workload = LogWorkload {
            lazy: a.lazy,
            ..LogWorkload::default()
        };
        let (mut passed, mut failed) = (0, 0);
        let (mut acked, mut appends) = (0, 0);
        for seed in seeds.clone() {
            match run_seed(seed, &workload) {
                Ok(outcome) => {
                    passed += 1;
                    acked += outcome.acknowledged;
                    appends += outcome.appends;
                }
                Err(violations) => {
                    failed += 1;
                    let lazy = if workload.lazy { " --lazy" } else { "" };
                    println!(
                        "FAIL seed={seed}\n{violations}\nreplay: cargo sim log-workload --seeds {seed}..{}{lazy}",
                        seed + 1
                    );
                }
            }
        }
        println!(
            "log-workload seeds {}..{}: {passed} passed, {failed} failed ({appends} appends, {acked} acknowledged)",
            seeds.start, seeds.end
        );
        i32::from(failed > 0)
    }

    /// `cargo sim shrink FILE --seed N`: writes the shrunk scenario, then runs the written file
    /// once more to show it fails on the seed.
    fn shrink(args: &[String]) -> i32 {
        let a = parse(args);
        let file = a
            .file
            .unwrap_or_else(|| usage_error("shrink needs a scenario file"));
        let seed = a
            .seed
            .unwrap_or_else(|| usage_error("shrink needs --seed N"));
        let stem = Path::new(&file)
            .file_stem()
            .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
        let out = a
            .out
            .unwrap_or_else(|| format!("{stem}-shrunk-seed{seed}.toml"));
        let mut log = |line: &str| eprintln!("{line}");
        let shrunk = match sim::shrink::shrink(&file, seed, a.max_runs.unwrap_or(120), &mut log) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        #[allow(clippy::disallowed_methods)] // the operator's output file
        if let Err(e) = std::fs::write(&out, &shrunk.text) {
            eprintln!("error: {out}: {e}");
            return 2;
        }
        let written = load(&out);
        let report = runner::run_catching(
            &written,
            &out,
            seed,
            RunOptions {
                progress: false,
                plant: None,
            },
        );
        println!("{}", shrunk.text.trim_end());
        println!(
            "shrunk in {} runs to {out}: {} faults, keeping {}",
            shrunk.runs,
            written.faults.len(),
            shrunk.kind
        );
        print_findings(&report);
        if report.verdict == Verdict::Fail {
            println!("replay: {}", report.replay);
        }
        println!("{}", report.verdict_line());
        // The written file must fail as the shrink's last run did.
        if report.verdict == Verdict::Fail && report.trace_hash == shrunk.report.trace_hash {
            1
        } else {
            eprintln!(
                "error: the written file ran differently from the shrink's last run (trace {} vs {})",
                report.trace_hash, shrunk.report.trace_hash
            );
            2
        }
    }

    pub fn main() {
        sim::logging::init_from_env();
        let args: Vec<String> = std::env::args().skip(1).collect();
        let code = match args.first().map(String::as_str) {
            Some("run") => run(&args[1..]),
            Some("replay") => replay(&args[1..]),
            Some("sweep") => sweep(&args[1..]),
            Some("log-workload") => log_workload(&args[1..]),
            Some("audit") => sim::audit::cli::main(&args[1..]),
            Some("shrink") => shrink(&args[1..]),
            Some("catalogue") => sim::audit::planted::main(&args[1..]),
            _ => usage_error("unknown or missing command"),
        };
        std::process::exit(code);
    }
}

/// mimalloc instead of glibc's malloc: a sweep spends much of its time allocating and freeing
/// small buffers (frames, records, trace lines), and glibc's free lists cost a quarter of it.
/// Allocation addresses feed nothing the simulation or the trace depends on.
#[cfg(madsim)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(madsim)]
fn main() {
    // Every run gets a fresh thread (see `runner::run`), whose heap mimalloc would hand back to
    // the OS 10 ms after the thread ends, only for the next run to fault the same pages in
    // again (the VM clears fresh pages slowly). Keep them: a sweep's memory stays what one
    // run needs. 15 is `mi_option_purge_delay` (mimalloc.h; libmimalloc-sys names no
    // constant for it); -1 means never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide mimalloc option before any simulation thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // No transparent huge pages for this process. mimalloc asks for them on its arenas (on a
    // kernel set to `madvise` or `always`), and then every first touch of a fresh 2 MiB region
    // clears all of it (and may compact memory first), of which a run uses a little. What that
    // costs depends on the machine's memory state: on one swarm sweep it was a quarter of the
    // CPU (`clear_page_erms`) and 4 KiB pages cut the CPU by 28 %, on another nothing (README,
    // session 15). mimalloc's own `allow_thp` option is read before `main`, so it can only be
    // set by the environment (MIMALLOC_ALLOW_THP=0); the kernel flag set here has the same effect
    // and holds for every mapping, old and new, at its next fault.
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
    };
    cli::main();
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulator needs the simulation build: run it as `cargo sim …`");
    std::process::exit(2);
}
