//! # Faultline's broker
//!
//! A Kafka-compatible message broker whose code runs unchanged on real tokio and inside the
//! madsim deterministic simulator. This crate holds the broker itself; the simulated cluster
//! harness lives in `sim` and fault injection in `chaos`, and this crate depends on neither.
//!
//! The pieces, bottom up:
//! - [`disk`]: the seam between the broker and its files. Everything durable goes through the
//!   [`disk::Disk`] trait, whose contract says exactly what survives a crash. [`disk::FileDisk`]
//!   is the real one; `chaos::FaultyDisk` loses unsynced bytes, tears writes and flips bits.
//! - [`clock`]: wall-clock time, behind a trait so tests and the simulator control it.
//! - [`log`]: a partition's log: segments of raw record batches (magic v2), sparse offset and
//!   time indexes, roll and retention, crash recovery, group commit, the leader-epoch cache.
//! - [`replica`]: a partition's replica state beside its log (role, leader epoch, high
//!   watermark distinct from the log end, followers' log ends, ISR), pure and tested without a
//!   runtime, and the per-partition notifications that parked fetches wait on.
//! - [`group`]: consumer groups: Kafka's classic rebalance protocol per group (a pure state
//!   machine driven by the broker's clock) and committed offsets, stored as records in the
//!   internal `__consumer_offsets` topic and replayed at start.
//! - [`controller`]: the metadata plane: the cluster image, the records that change it, the
//!   active controller's decisions; [`solo_plane`] is the plane of a node that is its own quorum.
//! - [`catalog`]: applies each new cluster image to this node's partitions (open, lead, follow,
//!   remove), which [`broker::Broker`] and the protocol handlers serve from.
//! - [`txn`]: producer ids (InitProducerId) and the idempotent producers' per-partition state
//!   that turns a producer's retries into no-ops and fences zombies; transactions (markers,
//!   the last stable offset, the transaction coordinator); [`txn_host`] is the broker's side
//!   of the coordinator (producer ids, markers written here or with WriteTxnMarkers).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use broker::{clock::SystemClock, disk::FileDisk, log::{Log, LogConfig}};
//!
//! let log = Log::open(Arc::new(FileDisk::new()), Arc::new(SystemClock), "data/t-0".into(),
//!                     LogConfig::default()).await?;
//! let mut batch = broker::log::batch::builder::simple(10, 100, b'x', 1_700_000_000_000);
//! let appended = log.append(&mut batch, 0).await?; // durable when this returns
//! let read = log.read(appended.base_offset, 1 << 20, None).await?;
//! # Ok(()) }
//! ```

pub mod add_partitions_to_txn_manager;
pub mod broker;
pub mod catalog;
pub mod clock;
pub mod compression;
pub mod config;
pub mod controller;
pub mod disk;
pub mod group;
pub mod log;
pub mod partition;
pub mod planted;
pub mod protocol;
pub mod random;
pub mod replica;
pub mod server;
pub mod solo_plane;
pub mod topic_name;
pub mod txn;
pub mod txn_host;
