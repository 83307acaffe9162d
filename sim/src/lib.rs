//! # Faultline's simulation harness
//!
//! Runs the real broker code inside the madsim deterministic simulator: simulated nodes,
//! simulated time and network, and each node's disk from `chaos`, kept outside the node so it
//! outlives kill and restart. One seed decides every schedule, delay and fault, so a failing
//! seed replays exactly.
//!
//! Today it holds the log workload ([`log_workload`]): the partition log driven by concurrent
//! appenders and a reader on a node that is killed with power loss at random moments. The
//! scenario runner, workloads over the Kafka protocol and the history checkers come next.
//!
//! Everything here needs the simulation build: `cargo simtest -p sim`, or the sweep
//! `cargo sim log-workload --seeds 0..1000`.

pub mod history;
#[cfg(madsim)]
pub mod log_workload;
