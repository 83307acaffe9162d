//! `cargo sim …`: the simulation command line.
//!
//! `cargo sim log-workload [--seeds A..B] [--lazy]` sweeps the log workload over a seed range
//! and prints one line per failing seed with the command that replays it.

#[cfg(madsim)]
fn main() {
    use sim::log_workload::{run_seed, LogWorkload};

    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: cargo sim log-workload [--seeds A..B] [--lazy]";
    if args.first().map(String::as_str) != Some("log-workload") {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let mut seeds = 0u64..100;
    let mut workload = LogWorkload::default();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seeds" => {
                let range = rest.next().and_then(|r| {
                    let (a, b) = r.split_once("..")?;
                    Some(a.parse().ok()?..b.parse().ok()?)
                });
                match range {
                    Some(r) => seeds = r,
                    None => {
                        eprintln!("error: --seeds takes a range like 0..1000\n{usage}");
                        std::process::exit(2);
                    }
                }
            }
            "--lazy" => workload.lazy = true,
            other => {
                eprintln!("error: unknown argument {other:?}\n{usage}");
                std::process::exit(2);
            }
        }
    }
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
                println!("FAIL seed={seed}\n{violations}\nreplay: cargo sim log-workload --seeds {seed}..{}{lazy}", seed + 1);
            }
        }
    }
    println!(
        "log-workload seeds {}..{}: {passed} passed, {failed} failed ({appends} appends, {acked} acknowledged)",
        seeds.start, seeds.end
    );
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulator needs the simulation build: run it as `cargo sim …`");
    std::process::exit(2);
}
