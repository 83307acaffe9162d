//! `SIM_LOG` changes no run (`sim::logging`): a scenario seed gives the same trace with no
//! subscriber and with the `SIM_LOG` subscriber at its most verbose level (`trace`, every span
//! and event of the broker, the client, openraft and madsim formatted).
//!
//! The bug story: session 9 measured `cargo sim replay scenarios/disk-corruption.toml --seed 1`
//! giving one trace hash with `SIM_LOG=warn` and another without, although the command line
//! promised otherwise; a log line whose field evaluation draws from the simulation (its
//! randomness, its clock, its schedule, std's per-thread hash keys) makes replays depend on
//! the log level. Planted (never committed): a `tracing::debug!` in the broker's request path
//! whose field draws `madsim::rand::random::<u8>()` fails this test on the first scenario.
//!
//! Its own test binary: the subscriber is installed for the whole process (each run is on a
//! thread of its own), after the runs without it.
#![cfg(madsim)]

use std::path::Path;

use sim::runner::{run, RunOptions};
use sim::scenario::Scenario;

/// One scenario per kind of cluster: a single broker on a faulty disk (the session-9
/// measurement), three brokers failing over with replicated group offsets, and transactions
/// with a coordinator crash.
const RUNS: [(&str, u64); 3] = [
    ("disk-corruption", 1),
    ("replication-coordinator-failover", 1),
    ("txn-coordinator-crash-mid-commit", 1),
];

fn trace_hashes() -> Vec<String> {
    RUNS.iter()
        .map(|(name, seed)| {
            let file = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            let s = Scenario::load(Path::new(&file)).unwrap_or_else(|e| panic!("{e}"));
            let report = run(&s, &file, *seed, RunOptions::default());
            format!("{name} seed {seed}: {}", report.trace_hash)
        })
        .collect()
}

#[test]
fn a_seed_gives_the_same_trace_with_and_without_sim_log_at_trace_level() {
    let without = trace_hashes();
    // Formatted in full (the sink only drops the finished lines), so every field is evaluated.
    tracing::subscriber::set_global_default(sim::logging::subscriber("trace", std::io::sink))
        .expect("the only subscriber of this process");
    let with = trace_hashes();
    assert_eq!(without, with);
}
