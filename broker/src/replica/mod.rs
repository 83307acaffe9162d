//! A partition's replica, beside its log: who leads, in which epoch, how far consumers may
//! read, and who waits for it to move.
//!
//! - [`state`]: [`ReplicaState`], the pure replica state (role, leader epoch, high watermark
//!   distinct from the log end, the followers' log ends and the ISR as the leader sees them).
//!   No I/O and no clock: tested step by step without a runtime.
//! - [`isr`]: the leader's ISR changes (shrink the members that lag, expand with the followers
//!   that caught up) and the task that asks the controller for them (AlterPartition).
//! - [`watch`]: one notification per partition for parked fetches, woken when the partition's
//!   high watermark (consumers) or log end (followers) moves.
//! - [`fetcher`]: followers fetching from their leaders, one task per source broker, with
//!   reconciliation by leader epochs (KIP-101, KIP-279) before fetching.
//!
//! A [`crate::partition::Partition`] is a log plus this state. With one broker, as today, every
//! partition is led by this broker with ISR = {itself}, so the high watermark is what its own
//! log counts: the log end, or the durable end under the durable flush policy.

pub mod fetcher;
pub mod isr;
pub mod state;
pub mod watch;

pub use state::{BrokerId, FollowerProgress, HighWatermarkBasis, LocalLog, ReplicaState, Role};
pub use watch::{FetchBound, PartitionWatch, Wakeups};
