//! `cargo sim shrink`: a failing run minimised into a scenario file that fails the same way.
//!
//! The bug story: a shrinker that keeps "some failure" rather than the same anomaly hands the
//! developer another bug, and a written file that does not run as the shrink's last candidate
//! (a fault dropped in the writing, a swarm left in) fails differently or not at all.
#![cfg(madsim)]

use sim::runner::{run, RunOptions, Verdict};
use sim::scenario::Scenario;

const PLANTED: &str = "tests/fixtures/audit/planted-lost-write.toml";

#[test]
fn a_shrunk_scenario_has_fewer_explicit_faults_and_fails_with_the_same_kind_on_the_seed() {
    let original = Scenario::load(std::path::Path::new(PLANTED)).expect("the fixture loads");
    let planned = sim::runner::plan::plan(&original, 1).faults.len();
    assert_eq!(
        planned, 3,
        "the fixture's repeated crash plans three faults"
    );
    let mut lines = Vec::new();
    let shrunk = sim::shrink::shrink(PLANTED, 1, 25, &mut |l: &str| lines.push(l.to_string()))
        .expect("seed 1 of the fixture fails");
    assert_eq!(shrunk.kind, "lost_write");
    let written = Scenario::parse(&shrunk.text, "shrunk.toml", "shrunk").expect("it parses");
    assert!(written.swarm.is_none());
    assert!(
        !written.faults.is_empty() && written.faults.len() < planned,
        "{}\n{}",
        shrunk.text,
        lines.join("\n")
    );
    assert!(written
        .faults
        .iter()
        .all(|f| f.get_ref().every_ms.is_none()));
    assert!(written.duration_ms <= original.duration_ms);
    let report = run(&written, "shrunk.toml", 1, RunOptions::default());
    assert_eq!(report.verdict, Verdict::Fail, "{}", shrunk.text);
    assert!(report.violation_kinds().contains("lost_write"));
    assert_eq!(
        report.trace_hash, shrunk.report.trace_hash,
        "the written file runs as the shrink's last candidate"
    );
}

#[test]
fn a_passing_seed_is_not_shrunk() {
    let err = sim::shrink::shrink(
        "../scenarios/pair-retry-duplicate-allowed.toml",
        1,
        5,
        &mut |_: &str| {},
    )
    .err()
    .expect("a passing run has nothing to shrink");
    assert!(err.contains("passes on seed 1"), "{err}");
}
