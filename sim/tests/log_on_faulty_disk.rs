//! The log on the faulty disk, under the simulator, over many seeds. A failing seed is printed
//! with the command that replays it. `FAULTLINE_SIM_SEEDS=A..B` widens or narrows the range.
#![cfg(madsim)]

use sim::log_workload::{run_seed, LogWorkload};

fn seeds(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    std::env::var("FAULTLINE_SIM_SEEDS")
        .ok()
        .and_then(|r| {
            let (a, b) = r.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(default)
}

fn sweep(workload: LogWorkload, default: std::ops::Range<u64>) {
    let mut acknowledged = 0;
    for seed in seeds(default) {
        let result = std::panic::catch_unwind(|| run_seed(seed, &workload));
        let lazy = if workload.lazy { " --lazy" } else { "" };
        let replay = format!(
            "replay: cargo sim log-workload --seeds {seed}..{}{lazy}",
            seed + 1
        );
        match result {
            Ok(Ok(outcome)) => acknowledged += outcome.acknowledged,
            Ok(Err(violations)) => {
                panic!("seed {seed} violated the log's guarantees:\n{violations}\n{replay}")
            }
            Err(_) => panic!("seed {seed} panicked (see above)\n{replay}"),
        }
    }
    assert!(
        acknowledged > 0,
        "the workload acknowledged nothing: it tested nothing"
    );
}

#[test]
fn every_acknowledged_batch_survives_simulated_power_losses_under_the_durable_policy() {
    sweep(LogWorkload::default(), 0..48);
}

#[test]
fn the_lazy_policy_never_reuses_an_offset_across_power_losses() {
    sweep(
        LogWorkload {
            lazy: true,
            ..LogWorkload::default()
        },
        0..48,
    );
}

#[test]
fn the_same_seed_replays_the_same_history() {
    let workload = LogWorkload::default();
    let first = run_seed(7, &workload).expect("seed 7 passes");
    let second = run_seed(7, &workload).expect("seed 7 passes");
    assert_eq!(first, second);
    let other = run_seed(8, &workload).expect("seed 8 passes");
    assert_ne!(first.trace_hash, other.trace_hash, "the seed must matter");
}
