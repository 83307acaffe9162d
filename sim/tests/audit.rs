//! `cargo sim audit`: shards that add up to the whole seed range, parallel runs that trace the
//! same as serial ones, and report files that name a planted failure.
//!
//! The bug stories: a CI matrix whose shards skip or repeat seeds audits less than it claims;
//! madsim runtimes on several threads that share some state would make a parallel audit's
//! verdicts irreproducible (its replay commands would lie); and a report that loses a failure
//! on the way to HTML, JUnit or JSON hides exactly what the audit is for.
#![cfg(madsim)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use sim::audit::{cli, run_all, Shard, Target};
use sim::scenario::Scenario;

const PLANTED: &str = "tests/fixtures/audit/planted-lost-write.toml";

fn target(file: &str) -> Target {
    let scenario = Scenario::load(std::path::Path::new(file)).unwrap_or_else(|e| panic!("{e}"));
    Target {
        file: file.to_string(),
        scenario,
    }
}

proptest! {
    #[test]
    fn the_shards_together_run_exactly_the_unsharded_seeds_each_once(
        start in 0u64..1_000,
        len in 0u64..300,
        count in 1u64..12,
    ) {
        let seeds = start..start + len;
        let mut all = Vec::new();
        for index in 1..=count {
            let shard = Shard::parse(&format!("{index}/{count}")).expect("a valid shard");
            let mine = shard.seeds(seeds.clone());
            // Round-robin: no shard holds more than one seed more than another.
            prop_assert!(mine.len() as u64 >= len / count && mine.len() as u64 <= len.div_ceil(count));
            all.extend(mine);
        }
        let unique: BTreeSet<u64> = all.iter().copied().collect();
        prop_assert_eq!(unique.len(), all.len(), "a seed ran in two shards");
        prop_assert_eq!(unique.into_iter().collect::<Vec<_>>(), seeds.collect::<Vec<_>>());
    }
}

#[test]
fn a_shard_outside_one_to_n_is_refused() {
    for bad in ["0/3", "4/3", "1/0", "3", "a/b", ""] {
        assert!(Shard::parse(bad).is_err(), "{bad:?} was accepted");
    }
    assert_eq!(Shard::parse("3/3"), Ok(Shard { index: 3, count: 3 }));
}

#[test]
fn runs_on_several_worker_threads_trace_the_same_as_serial_runs() {
    let targets = [target(PLANTED), target("../scenarios/acks-0-crashes.toml")];
    let seeds = [1, 2];
    let key = |runs: Vec<sim::audit::RunSummary>| -> Vec<(String, u64, String)> {
        runs.into_iter()
            .map(|r| (r.file, r.seed, r.trace_hash))
            .collect()
    };
    let serial = key(run_all(&targets, &seeds, 1, |_, _| {}));
    let parallel = key(run_all(&targets, &seeds, 3, |_, _| {}));
    assert_eq!(serial.len(), 4);
    assert!(
        serial.iter().all(|(_, _, hash)| hash != "0000000000000000"),
        "a run panicked: {serial:?}"
    );
    assert_eq!(serial, parallel);
}

/// A sweep summarises each run on the run's own thread (which frees the history and trace it
/// allocated): the summary is the one of the report `run_catching` hands back.
#[test]
fn a_run_summarised_on_its_own_thread_is_summarised_as_the_report_handed_back() {
    use sim::audit::RunSummary;
    use sim::runner::{run_catching, run_catching_then, RunOptions};
    let t = target(PLANTED);
    let key = |r: &RunSummary| {
        (
            r.verdict,
            r.trace_hash.clone(),
            r.operations,
            r.broker_requests,
            r.violations.clone(),
            r.findings_total,
        )
    };
    let (thread, inside) =
        run_catching_then(&t.scenario, &t.file, 1, RunOptions::default(), |report| {
            let thread = std::thread::current().name().map(str::to_string);
            (thread, RunSummary::of(&report, 0.0))
        });
    let handed_back = RunSummary::of(
        &run_catching(&t.scenario, &t.file, 1, RunOptions::default()),
        0.0,
    );
    assert_eq!(thread.as_deref(), Some("sim-seed-1"));
    assert_eq!(key(&inside), key(&handed_back));
    assert_ne!(inside.trace_hash, "0000000000000000", "the run panicked");
}

/// A minimal XML well-formedness check: tags nest and close, and the names of the elements.
fn xml_elements(xml: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("every tag closes") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "tags nest");
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .expect("a tag name")
            .trim_end_matches('/');
        names.push(name.to_string());
        if !tag.ends_with('/') {
            stack.push(name.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    names
}

#[test]
fn the_audit_of_a_planted_failure_exits_1_and_every_report_file_names_it_with_its_replay() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-planted");
    let args: Vec<String> = [
        "tests/fixtures/audit",
        "--seeds",
        "1..3",
        "--jobs",
        "2",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(cli::main(&args), 1, "a violation exits 1");
    #[allow(clippy::disallowed_methods)] // the test's output directory
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect(name);
    let replay = format!("cargo sim replay {PLANTED} --seed 1 --trace");

    let html = read("index.html");
    assert!(html.contains("planted-lost-write"));
    assert!(html.contains(&replay), "index.html names the replay");
    assert!(html.contains("<svg"), "index.html draws the failure");
    assert!(html.contains("Operations per client and partition"));
    for remote in ["<link", "<script", "src=", "@import", "url("] {
        assert!(
            !html.contains(remote),
            "index.html loads nothing ({remote})"
        );
    }

    let md = read("report.md");
    assert!(md.starts_with("# Simulation audit: FAIL"));
    assert!(md.contains(&replay));

    let summary: serde_json::Value = serde_json::from_str(&read("summary.json")).expect("JSON");
    assert_eq!(summary["runs_total"], 2);
    assert_eq!(summary["runs_failed"], 2);
    assert_eq!(summary["scenarios"][0]["name"], "planted-lost-write");
    assert_eq!(
        summary["scenarios"][0]["failing_seeds"],
        serde_json::json!([1, 2])
    );
    assert_eq!(summary["runs"][0]["verdict"], "FAIL");
    assert!(
        summary["runs"][0]["faults"]["crash"].as_u64() > Some(0),
        "the crashes struck"
    );
    assert!(summary["runs"][0]["violations"]["lost_write"].as_u64() > Some(0));
    assert!(summary["scenarios"][0]["violations"]["lost_write"].as_u64() > Some(0));

    let junit = read("junit.xml");
    let elements = xml_elements(&junit);
    assert_eq!(elements.iter().filter(|e| *e == "testcase").count(), 2);
    assert_eq!(elements.iter().filter(|e| *e == "failure").count(), 2);
    assert!(junit.contains("name=\"seed 2\""));
    assert!(junit.contains(&replay));
}

#[test]
fn a_passing_audit_exits_0() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-passing");
    let args: Vec<String> = [
        "../scenarios/acks-0-crashes.toml",
        "--seeds",
        "1..3",
        "--shard",
        "2/2",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(cli::main(&args), 0);
    #[allow(clippy::disallowed_methods)] // the test's output directory
    let summary = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("JSON");
    assert_eq!(
        summary["runs"].as_array().map(Vec::len),
        Some(1),
        "shard 2/2 of 1..3 is seed 2"
    );
    assert_eq!(summary["runs"][0]["seed"], 2);
    assert_eq!(summary["runs"][0]["verdict"], "PASS");
}
