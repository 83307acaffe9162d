//! A compacted log and its cleaner on the faulty disk, under the simulator: crashes with power
//! loss, torn writes and EIO land in the middle of cleanings. A failing seed is printed with
//! the command that replays it. `FAULTLINE_SIM_SEEDS=A..B` widens or narrows the range (CI runs
//! seeds 1..3).
#![cfg(madsim)]

use sim::compaction_workload::{run_seed, CompactionWorkload};

fn seeds(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    std::env::var("FAULTLINE_SIM_SEEDS")
        .ok()
        .and_then(|r| {
            let (a, b) = r.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(default)
}

#[test]
fn a_compacted_log_keeps_every_keys_latest_value_and_its_offsets_through_crashes_mid_clean() {
    let workload = CompactionWorkload::default();
    let (mut acknowledged, mut cleanings, mut scans) = (0, 0, 0);
    for seed in seeds(1..4) {
        let result = std::panic::catch_unwind(|| run_seed(seed, &workload));
        let replay = format!(
            "replay: FAULTLINE_SIM_SEEDS={seed}..{} cargo simtest -p sim --test compaction_on_faulty_disk",
            seed + 1
        );
        match result {
            Ok(Ok(outcome)) => {
                acknowledged += outcome.acknowledged;
                cleanings += outcome.cleanings;
                scans += outcome.scans;
            }
            Ok(Err(violations)) => {
                panic!("seed {seed} violated compaction's guarantees:\n{violations}\n{replay}")
            }
            Err(_) => panic!("seed {seed} panicked (see above)\n{replay}"),
        }
    }
    eprintln!("{acknowledged} records acknowledged, {cleanings} cleanings, {scans} scans checked");
    assert!(acknowledged > 0 && cleanings > 0 && scans > 0,
        "the workload tested nothing: {acknowledged} acknowledged, {cleanings} cleanings, {scans} scans");
}

#[test]
fn the_same_seed_replays_the_same_compaction_history() {
    let workload = CompactionWorkload::default();
    let first = run_seed(2, &workload).expect("seed 2 passes");
    let second = run_seed(2, &workload).expect("seed 2 passes");
    assert_eq!(first, second);
}
