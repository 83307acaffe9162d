//! Consumer groups: the classic group protocol's coordinator and committed offsets.
//!
//! Groups live in the partitions of `__consumer_offsets` (Kafka's placement: the group id's Java
//! hash modulo the partition count); this broker coordinates the groups of the partitions it
//! leads. The pieces, bottom up:
//!
//! - [`machine`]: one group's membership as a pure state machine. [`machine::Group::step`]
//!   takes an input and the time and returns outputs (answers, the membership record to store,
//!   the next deadline); it is tested step by step with no runtime.
//! - [`registry`]: the groups by id. [`offset_cache`]: committed offsets and the writes in
//!   flight. [`timer`]: each group's next deadline and the task that ticks due groups.
//! - [`offsets`]: the records of `__consumer_offsets` (committed offsets and group membership).
//! - [`shard::GroupShard`]: the groups of one offsets partition. Runs requests through the
//!   machine under one lock and carries out the outputs. Every record it writes gets its place
//!   in the log's append order while that lock is held, in the order the decisions were made, so
//!   what a group decided (a commit allowed in generation N, a generation stored, an emptied
//!   group) reaches the log in that order; durability is awaited after the lock is released, so
//!   one slow sync holds back no other group's decisions.
//! - [`coordinator::GroupCoordinator`]: the shards of the partitions this broker leads, loaded
//!   and unloaded with leadership (Kafka's `onElection`/`onResignation`); routes each request to
//!   its group's shard, or answers COORDINATOR_LOAD_IN_PROGRESS or NOT_COORDINATOR.
//!
//! What is durable: a commit is applied to memory and acknowledged once its record is synced; a
//! generation's assignments are stored before any member learns them; a LeaveGroup or a session
//! expiry that empties a group, and a static member's takeover, are stored before they are
//! answered (as Kafka's `storeGroup` callbacks do), so a restart never brings back a member that
//! left. When a shard loads, its partition is replayed: groups come back in their last stored generation
//! (members' sessions restart), and groups with only committed offsets come back Empty.
//!
//! Offsets expire as KIP-211 says ([`offset_cache::OffsetCache::expired`]): those of an empty
//! group `offsets.retention.minutes` after it became empty, never while members remain; in a
//! stable consumer group, only those of topics no member subscribes to any more. An empty group
//! with no offsets left is removed, and its stored membership with it (a tombstone).

pub mod consumer_protocol;
pub mod coordinator;
pub mod machine;
pub mod offset_cache;
pub mod offsets;
pub mod registry;
pub mod shard;
pub mod timer;

pub use coordinator::GroupCoordinator;

use machine::GroupError;
use offsets::{CommittedOffset, OffsetKey};

use crate::partition::ProduceError;

/// One offset change to write: a commit, or a deletion (tombstone) when the value is `None`.
pub type OffsetWrite = (OffsetKey, Option<CommittedOffset>);

/// Why a write to `__consumer_offsets` (a commit, tombstones, a stored group) was not
/// acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The group's shard refused it, or is no longer here (unloaded while the write was in
    /// flight: NOT_COORDINATOR, whatever became of the write).
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The offsets partition did not take it.
    #[error(transparent)]
    Storage(#[from] ProduceError),
}

/// The coordinator's settings, with Kafka's names.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// OffsetCommits in flight at once (decided, not yet durable). At the limit the next one
    /// waits for room before it is read into a write, holding up its connection: memory stays
    /// bounded however far the disk's syncs fall behind, and nothing is dropped.
    pub max_pending_writes: usize,
    /// `offsets.topic.num.partitions`: partitions `__consumer_offsets` is created with. Once
    /// it exists, groups are placed among the partitions it has.
    pub offsets_topic_num_partitions: i32,
}

impl Default for GroupConfig {
    /// Kafka's defaults: 3 s, 7 days and 50 partitions.
    fn default() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            max_pending_writes: 1_000,
            offsets_topic_num_partitions: 50,
        }
    }
}
