//! The test command of mutation testing (`scripts/mutants.sh`, issue 13): the durability
//! scenarios over a seed budget, stopping at the first failing run.
//!
//! The bug story: a suite that passes whatever the broker does proves nothing. cargo-mutants
//! breaks one spot of the durability-critical code at a time (`.cargo/mutants.toml`) and runs
//! this test in the simulation build; a mutant is caught when some scenario fails on some seed.
//! The panic message names that scenario and seed on one `MUTANT CAUGHT` line, which
//! `cargo sim audit --mutants mutants.out` reads back into the report's mutants table.
//!
//! Ignored in the ordinary suite (it is the long sweep `scripts/mutants.sh` asks for);
//! `FAULTLINE_MUTANTS_SCENARIOS` (comma-separated scenario names) and `FAULTLINE_MUTANTS_SEEDS`
//! (`A..B`) change the budget.
#![cfg(madsim)]

use std::path::Path;

use sim::runner::{run_catching, RunOptions, Verdict};
use sim::scenario::Scenario;

/// The default scenarios, cheapest first so a caught mutant costs little: single-broker
/// durability (acks, recovery, torn writes, corruption, idempotence), then replication, group
/// offsets and transactions.
pub const SCENARIOS: &[&str] = &[
    "acks-all-durable-crashes",
    "idempotent-partitions",
    "pair-retry-duplicate-violation",
    "disk-corruption",
    "lazy-flush-power-loss",
    "group-commit-durability",
    "replication-leader-crash",
    "replication-power-loss-durable",
    "replication-idempotent-failover",
    "read-committed-crashes",
    "txn-coordinator-crash-mid-commit",
];

/// Seeds per scenario by default.
pub const SEEDS: std::ops::Range<u64> = 1..3;

fn budget() -> (Vec<String>, std::ops::Range<u64>) {
    let scenarios = match std::env::var("FAULTLINE_MUTANTS_SCENARIOS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    let seeds = match std::env::var("FAULTLINE_MUTANTS_SEEDS") {
        Ok(r) => {
            let (a, b) = r
                .split_once("..")
                .unwrap_or_else(|| panic!("FAULTLINE_MUTANTS_SEEDS takes A..B, not {r:?}"));
            let parse = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("FAULTLINE_MUTANTS_SEEDS takes A..B, not {r:?}"))
            };
            parse(a)..parse(b)
        }
        Err(_) => SEEDS,
    };
    (scenarios, seeds)
}

#[test]
#[ignore = "the mutation-testing sweep: scripts/mutants.sh runs it under cargo-mutants"]
fn the_durability_scenarios_pass_every_seed_of_the_mutation_budget() {
    let (scenarios, seeds) = budget();
    for name in &scenarios {
        let file = format!("scenarios/{name}.toml");
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let scenario = Scenario::load(Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
        for seed in seeds.clone() {
            // run_catching: a mutant that makes the broker panic is a failed run, caught here
            // with its scenario and seed like any violation.
            let report = run_catching(&scenario, &file, seed, RunOptions::default());
            eprintln!("mutants: {file} seed {seed}: {}", report.verdict_line());
            if report.verdict == Verdict::Pass {
                continue;
            }
            let mut kinds: Vec<String> = report
                .anomalies
                .iter()
                .filter(|a| !a.allowed)
                .map(|a| a.kind.name().to_string())
                .chain(
                    report
                        .checker
                        .iter()
                        .flat_map(|c| c.violations().map(|a| a.kind.name().to_string())),
                )
                .collect();
            kinds.sort();
            kinds.dedup();
            if kinds.is_empty() {
                // Fail without a violation of its own: an `[expect] violations` scenario that
                // no longer finds what it must.
                kinds.push("expected_violation_missing".into());
            }
            let first = report
                .anomalies
                .iter()
                .filter(|a| !a.allowed)
                .map(|a| a.description.clone())
                .chain(
                    report
                        .checker
                        .iter()
                        .flat_map(|c| c.violations().map(|a| a.to_string())),
                )
                .next()
                .unwrap_or_default();
            panic!(
                "\nMUTANT CAUGHT scenario={file} seed={seed} violations={} replay={}\n{}\n{}",
                kinds.join(","),
                report.replay,
                report.verdict_line(),
                first.replace('\n', " ")
            );
        }
    }
}
