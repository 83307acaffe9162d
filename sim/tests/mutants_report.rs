//! `cargo sim audit --mutants DIR…`: cargo-mutants' outcomes in the audit report.
//!
//! The bug story: mutation testing is only worth its hours if the report shows every mutant,
//! the missed ones first, and for a caught one the scenario and seed that caught it (a
//! developer replays that run). A reader that drops a shard's mutants, or loses the catching
//! scenario between the test's log and the table, makes the suite look sharper or blunter
//! than it is.
//!
//! Fixtures: `shard-1` is one real mutant of `broker/src/log/checkpoint.rs` from
//! `scripts/mutants.sh` (its outcomes.json entry and its log without the build lines);
//! `shard-2` holds a missed and an unviable mutant written by hand in the same format.
#![cfg(madsim)]

use sim::audit::cli;
use sim::audit::mutants::{self, MutantOutcome};

const SHARD_1: &str = "tests/fixtures/mutants/shard-1";
const SHARD_2: &str = "tests/fixtures/mutants/shard-2";

#[test]
fn two_shards_merge_into_every_mutant_with_the_scenario_and_seed_that_caught_it() {
    let report = mutants::load(&[SHARD_1, SHARD_2]).expect("the fixtures load");
    assert_eq!(report.cargo_mutants_version, "27.1.0");
    assert_eq!(report.mutants.len(), 3, "the baseline is not a mutant");
    assert_eq!(report.count(MutantOutcome::Caught), 1);
    assert_eq!(report.count(MutantOutcome::Missed), 1);
    assert_eq!(report.count(MutantOutcome::Unviable), 1);
    let caught = report
        .mutants
        .iter()
        .find(|m| m.outcome == MutantOutcome::Caught)
        .expect("the caught mutant");
    assert_eq!(caught.file, "broker/src/log/checkpoint.rs");
    assert_eq!(caught.line, 24);
    assert_eq!(caught.function, "Checkpoint::encode");
    let by = caught
        .caught_by
        .as_ref()
        .expect("the log names its catcher");
    assert_eq!(by.scenario, "scenarios/lazy-flush-power-loss.toml");
    assert_eq!(by.seed, 1);
    assert!(by.violations.contains("inconsistent_offset"), "{by:?}");
    assert!(by
        .replay
        .starts_with("cargo sim replay scenarios/lazy-flush-power-loss.toml"));
    assert!(caught.build_s > 0.0 && caught.test_s > 0.0);
    // Caught over caught + missed: the unviable one tested nothing.
    assert_eq!(report.score(), 0.5);
}

#[test]
fn the_audit_with_only_mutants_writes_the_table_missed_first_into_every_report_file() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-mutants");
    let args: Vec<String> = [
        "--mutants",
        SHARD_1,
        "--mutants",
        SHARD_2,
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(cli::main(&args), 0, "no scenario ran, none failed");
    #[allow(clippy::disallowed_methods)] // the test's output directory
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect(name);

    let md = read("report.md");
    let table = md.split("## Mutants").nth(1).expect("a mutants section");
    assert!(table.contains("3 mutants (cargo-mutants 27.1.0): 1 caught, 1 missed"));
    let missed = table.find("| missed |").expect("the missed row");
    let caught = table.find("| caught |").expect("the caught row");
    assert!(missed < caught, "missed mutants come first");
    assert!(table.contains("scenarios/lazy-flush-power-loss.toml seed 1"));
    assert!(table.contains("broker/src/txn/producer_state.rs:83"));
    assert!(table.contains("`replace in_sequence -> bool with true`"));

    let html = read("index.html");
    assert!(html.contains("<section id=\"mutants\">"));
    assert!(html.contains("scenarios/lazy-flush-power-loss.toml seed 1"));
    assert!(
        html.contains("title=\"cargo sim replay scenarios/lazy-flush-power-loss.toml"),
        "the catching run's replay command is on its cell"
    );

    let summary: serde_json::Value = serde_json::from_str(&read("summary.json")).expect("JSON");
    assert_eq!(summary["runs_total"], 0);
    let rows = summary["mutants"]["mutants"].as_array().expect("mutants");
    assert_eq!(rows.len(), 3);
    assert_eq!(summary["mutants"]["outcomes"]["caught"], 1);
    assert_eq!(
        summary["mutants"]["caught_by_scenario"]["scenarios/lazy-flush-power-loss.toml"],
        1
    );
}

#[test]
fn a_missing_mutants_directory_is_a_usage_error() {
    let args: Vec<String> = [
        "--mutants",
        "tests/fixtures/mutants/absent",
        "--out",
        "unused",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(cli::main(&args), 2);
}
