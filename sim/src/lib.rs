//! # Faultline's simulation harness
//!
//! Runs the real broker code inside the madsim deterministic simulator: simulated nodes,
//! simulated time and network, and each node's disk from `chaos`, kept outside the node so it
//! outlives kill and restart. One seed decides every schedule, delay and fault, so a failing
//! seed replays exactly.
//!
//! - [`scenario`]: declarative TOML scenario files (`scenarios/README.md` is the format).
//! - [`cluster`]: broker and client nodes on simulated IPs; implements the nemesis's harness.
//! - [`held_requests`]: the nemesis's `hold`, requests of a client held in the network and
//!   delivered late, at the client's connection layer.
//! - [`runner`]: one scenario + one seed → plan, boot, fault window, heal, liveness, final
//!   read, verdict, trace hash; one module per phase ([`runner::plan`] is the fault planning).
//! - [`random`]: the run's random streams, one per concern (faults, disks, each workload
//!   process, each group member's churn), so a new workload never changes a seed's faults.
//! - [`checker`]: the offline history checker (lost writes, duplicates, inconsistent offsets,
//!   poll and order anomalies), allowed or violations.
//! - [`history`]: every client operation (invoke → ok | fail | unknown); [`trace`]: every
//!   notable event with its simulated time and node.
//! - [`group_members`]: consumer-group members of the workload (subscribe, poll, commit,
//!   churn), recorded for the group checks.
//! - [`walks`]: which walk over a partition each poll of a group member belongs to (every
//!   assignment starts new ones: positions go back to the committed offsets).
//! - [`txn_workload`]: transactional producers (consume-transform-produce with
//!   send_offsets_to_transaction, aborts at a chosen rate, zombies that share a transactional
//!   id), recorded for the transactions checker.
//! - [`log_workload`]: the partition log alone on a crashing node.
//! - [`compaction_workload`]: a compacted log and its cleaner on a crashing node, with the
//!   compaction checker (latest value per key, offsets never change, tombstones kept).
//! - [`audit`]: `cargo sim audit`, every scenario over a seed range on every core, and its
//!   report (HTML with a picture of every failure, Markdown, JUnit, JSON).
//! - [`logging`]: `SIM_LOG`, the brokers' logs on stderr; logging changes no run.
//! - [`shrink`]: `cargo sim shrink`, a failing run minimised into a scenario file with
//!   explicit faults.
//!
//! Everything here needs the simulation build: `cargo sim run scenarios/<name>.toml --seed 42`,
//! `cargo sim sweep scenarios/ --seeds 1..200`, `cargo simtest -p sim`.

#[cfg(madsim)]
pub mod audit;
pub mod checker;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod compaction_workload;
#[cfg(madsim)]
pub mod group_members;
#[cfg(madsim)]
pub mod held_requests;
pub mod history;
#[cfg(madsim)]
pub mod log_workload;
pub mod logging;
pub mod random;
#[cfg(madsim)]
pub mod runner;
pub mod scenario;
#[cfg(madsim)]
pub mod shrink;
#[cfg(madsim)]
pub mod trace;
#[cfg(madsim)]
pub mod txn_workload;
pub mod walks;
