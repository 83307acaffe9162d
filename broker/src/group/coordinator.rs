//! [`GroupCoordinator`]: the groups this broker coordinates, one [`GroupShard`] per partition of
//! `__consumer_offsets` it leads, as Kafka shapes it.
//!
//! A group lives in partition [`partition_for`]`(group id, partition count)` of the offsets topic
//! (Kafka's `Utils.abs(groupId.hashCode) % offsets.topic.num.partitions`, with the count the
//! topic actually has, so a data directory whose offsets topic has one partition keeps its
//! groups where they are). The broker loads a shard when it becomes the partition's leader
//! ([`GroupCoordinator::load_shard`], Kafka's `onElection`: the partition is replayed) and unloads
//! it when it stops being one ([`GroupCoordinator::unload_shard`], Kafka's `onResignation`). Every
//! request is routed to its group's shard: while that shard loads it is answered
//! COORDINATOR_LOAD_IN_PROGRESS, and if this broker does not lead the partition,
//! NOT_COORDINATOR (the client asks FindCoordinator again).
//!
//! Before the offsets topic exists (a broker that never saw a group) nothing is stored
//! anywhere: reads answer as for an unknown group, and the handlers that write create the topic
//! first (on first use, as Kafka does).
//!
//! Shared by every shard: the limit of OffsetCommits in flight (memory stays bounded however the
//! shards are spread) and the one timer task, which ticks the loaded shards in partition order.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::machine::{
    Group, GroupError, JoinOutcome, JoinRequest, Millis, SyncOutcome, SyncRequest,
};
use super::offset_cache::Ticket;
use super::offsets::{CommittedOffset, OffsetKey};
use super::shard::{GroupShard, PendingWrite};
use super::timer;
use super::{GroupConfig, OffsetWrite, WriteError};
use crate::clock::Clock;
use crate::log::ReadError;
use crate::partition::Partition;

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, in
/// wrapping 32-bit arithmetic. Kafka places groups with it, so the same group id lands in the
/// same partition on Kafka and here.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition of `group_id` among `partition_count`: Kafka's
/// `Utils.abs(groupId.hashCode) % partitionCount` (its `abs` maps `i32::MIN` to 0).
pub fn partition_for(group_id: &str, partition_count: i32) -> i32 {
    assert!(partition_count > 0, "the offsets topic has partitions");
    let hash = java_string_hash(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    let partition = abs % partition_count;
    assert!((0..partition_count).contains(&partition));
    partition
}

/// Names one write in flight: its shard (partition and load) and its ticket there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteRef {
    pub partition: i32,
    load: u64,
    ticket: Ticket,
}

enum Slot {
    /// Being replayed: the groups answer COORDINATOR_LOAD_IN_PROGRESS.
    Loading {
        load: u64,
    },
    Loaded(Arc<GroupShard>),
}

struct Shards {
    /// Partitions of `__consumer_offsets`; `None` until the topic exists.
    partition_count: Option<i32>,
    slots: BTreeMap<i32, Slot>,
    /// Numbers the loads, so a load that was overtaken (unloaded, loaded again) does not install
    /// itself.
    next_load: u64,
    /// After [`GroupCoordinator::unload`] (shutdown): nothing loads any more.
    stopped: bool,
}

/// Why a group has no shard to go to.
enum NoShard {
    /// The offsets topic does not exist yet: the group has nothing stored anywhere.
    NoTopic,
    Refused(GroupError),
}

impl NoShard {
    /// What a request that must write is answered.
    fn for_write(self) -> GroupError {
        match self {
            // Its handler tried to create the topic first, and could not.
            NoShard::NoTopic => GroupError::CoordinatorNotAvailable,
            NoShard::Refused(e) => e,
        }
    }
}

/// The groups this broker coordinates, by offsets partition.
pub struct GroupCoordinator {
    clock: Arc<dyn Clock>,
    config: GroupConfig,
    /// The timer task runs from the first group operation on (not before, so a broker that
    /// never sees a group schedules nothing extra).
    timers_started: AtomicBool,
    shards: Mutex<Shards>,
    /// Woken whenever a write finishes or a shard goes (OffsetFetch waits for writes in flight).
    changed: Arc<Notify>,
    /// Room for OffsetCommits in flight ([`GroupConfig::max_pending_writes`]), on every shard.
    write_permits: Arc<tokio::sync::Semaphore>,
}

impl GroupCoordinator {
    pub fn new(clock: Arc<dyn Clock>, config: GroupConfig) -> Arc<GroupCoordinator> {
        assert!(config.max_pending_writes > 0, "room for at least one write");
        assert!(config.offsets_topic_num_partitions > 0);
        let write_permits = Arc::new(tokio::sync::Semaphore::new(config.max_pending_writes));
        Arc::new(GroupCoordinator {
            clock,
            config,
            timers_started: AtomicBool::new(false),
            shards: Mutex::new(Shards {
                partition_count: None,
                slots: BTreeMap::new(),
                next_load: 0,
                stopped: false,
            }),
            changed: Arc::new(Notify::new()),
            write_permits,
        })
    }

    fn shards(&self) -> std::sync::MutexGuard<'_, Shards> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for room for one more OffsetCommit in flight; the room is given back when the
    /// permit is dropped (once the commit is answered). FIFO: waiting commits keep their order.
    pub async fn write_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        Arc::clone(&self.write_permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// OffsetCommits in flight now (holding a [`GroupCoordinator::write_permit`]).
    pub fn pending_writes(&self) -> usize {
        let pending = self.config.max_pending_writes - self.write_permits.available_permits();
        assert!(pending <= self.config.max_pending_writes);
        pending
    }

    /// Starts the session and rebalance timers unless they run already.
    pub fn ensure_timers(self: &Arc<Self>) {
        if !self.timers_started.swap(true, Ordering::AcqRel) {
            timer::spawn(self, Arc::clone(&self.clock));
        }
    }

    // ---- Placement and leadership. ----

    /// The offsets topic exists with `count` partitions: groups are placed among them from now
    /// on. The count is the topic's actual one (Kafka does the same), never re-set to another:
    /// that would move groups away from their committed offsets.
    pub fn set_partition_count(&self, count: i32) {
        assert!(count > 0, "the offsets topic has partitions");
        let mut shards = self.shards();
        if let Some(previous) = shards.partition_count {
            assert_eq!(
                previous, count,
                "the offsets topic's partition count never changes"
            );
        }
        shards.partition_count = Some(count);
    }

    /// Partitions of the offsets topic, once it exists.
    pub fn partition_count(&self) -> Option<i32> {
        self.shards().partition_count
    }

    /// The offsets partition of `group_id`: among the topic's partitions, or among the
    /// `offsets.topic.num.partitions` it will be created with.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        let count = self
            .partition_count()
            .unwrap_or(self.config.offsets_topic_num_partitions);
        partition_for(group_id, count)
    }

    /// This broker leads offsets partition `index` now (Kafka's `onElection`): its groups answer
    /// COORDINATOR_LOAD_IN_PROGRESS from this call on, and the returned future replays the
    /// partition (groups come back in their last stored generation, offsets as last committed)
    /// and then serves them. Returns how many records it read. A shard loaded or loading
    /// already is left as it is (a repeated election); a load overtaken by an unload installs
    /// nothing. If the replay fails, the partition is not served (NOT_COORDINATOR).
    pub fn load_shard(
        self: &Arc<Self>,
        index: i32,
        partition: Arc<Partition>,
    ) -> impl Future<Output = Result<usize, ReadError>> + Send + 'static {
        let load = {
            let mut shards = self.shards();
            let count = shards
                .partition_count
                .expect("the offsets topic's partition count is set before its shards load");
            assert!((0..count).contains(&index), "partition {index} of {count}");
            if shards.stopped || shards.slots.contains_key(&index) {
                None
            } else {
                let load = shards.next_load;
                shards.next_load += 1;
                shards.slots.insert(index, Slot::Loading { load });
                Some(load)
            }
        };
        let this = Arc::clone(self);
        async move {
            let Some(load) = load else {
                return Ok(0);
            };
            let shard = Arc::new(GroupShard::new(
                index,
                load,
                partition,
                Arc::clone(&this.clock),
                this.config.clone(),
                Arc::clone(&this.changed),
            ));
            let replayed = shard.replay().await;
            {
                let mut shards = this.shards();
                let current = matches!(shards.slots.get(&index),
                    Some(Slot::Loading { load: l }) if *l == load);
                if !current {
                    tracing::info!(
                        partition = index,
                        "a load overtaken by an unload is dropped"
                    );
                    return Ok(0);
                }
                match &replayed {
                    Ok(records) => {
                        shards.slots.insert(index, Slot::Loaded(Arc::clone(&shard)));
                        tracing::info!(
                            partition = index,
                            records,
                            "offsets partition loaded: its groups are served here"
                        );
                    }
                    Err(e) => {
                        shards.slots.remove(&index);
                        tracing::error!(partition = index, %e, "offsets partition failed to load");
                    }
                }
            }
            if replayed.is_ok() {
                // Restored members' sessions run from now: their timers must too.
                this.ensure_timers();
            }
            replayed
        }
    }

    /// This broker no longer leads offsets partition `index` (Kafka's `onResignation`): its
    /// groups are dropped, parked requests answered NOT_COORDINATOR now, writes still in flight
    /// answered NOT_COORDINATOR when they end, and later requests for its groups get
    /// NOT_COORDINATOR. A load under way is abandoned. Returns how many parked requests were
    /// answered.
    pub fn unload_shard(&self, index: i32) -> usize {
        let slot = self.shards().slots.remove(&index);
        let answered = match slot {
            Some(Slot::Loaded(shard)) => shard.resign(),
            Some(Slot::Loading { .. }) | None => 0,
        };
        self.changed.notify_waiters();
        answered
    }

    /// The offsets partitions loaded here, in order.
    pub fn loaded_shards(&self) -> Vec<i32> {
        self.shards()
            .slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Loaded(_)))
            .map(|(index, _)| *index)
            .collect()
    }

    /// Are any offsets partitions loading now?
    pub fn is_loading(&self) -> bool {
        self.shards()
            .slots
            .values()
            .any(|slot| matches!(slot, Slot::Loading { .. }))
    }

    fn loaded(&self) -> Vec<Arc<GroupShard>> {
        self.shards()
            .slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Loaded(shard) => Some(Arc::clone(shard)),
                Slot::Loading { .. } => None,
            })
            .collect()
    }

    /// The shard of group `id`, as Kafka's `validateGroupStatus` checks it.
    fn route(&self, id: &str) -> Result<Arc<GroupShard>, NoShard> {
        let shards = self.shards();
        if shards.stopped {
            return Err(NoShard::Refused(GroupError::NotCoordinator));
        }
        let Some(count) = shards.partition_count else {
            return Err(NoShard::NoTopic);
        };
        match shards.slots.get(&partition_for(id, count)) {
            Some(Slot::Loaded(shard)) => Ok(Arc::clone(shard)),
            Some(Slot::Loading { .. }) => {
                Err(NoShard::Refused(GroupError::CoordinatorLoadInProgress))
            }
            None => Err(NoShard::Refused(GroupError::NotCoordinator)),
        }
    }

    /// The shard of group `id` for a read: `None` if nothing is stored anywhere yet.
    fn route_read(&self, id: &str) -> Result<Option<Arc<GroupShard>>, GroupError> {
        match self.route(id) {
            Ok(shard) => Ok(Some(shard)),
            Err(NoShard::NoTopic) => Ok(None),
            Err(NoShard::Refused(e)) => Err(e),
        }
    }

    // ---- Requests, each routed to its group's shard. ----

    /// JoinGroup: the future answers once the group's rebalance does.
    pub fn join(
        self: &Arc<Self>,
        id: &str,
        request: JoinRequest,
        salt: u128,
    ) -> impl Future<Output = JoinOutcome> + Send + 'static {
        self.ensure_timers();
        let joined = self
            .route(id)
            .map(|shard| shard.join(id, request, salt))
            .map_err(NoShard::for_write);
        async move { joined?.await }
    }

    /// SyncGroup: the future answers once the assignments are stored.
    pub fn sync(
        self: &Arc<Self>,
        id: &str,
        request: SyncRequest,
    ) -> impl Future<Output = SyncOutcome> + Send + 'static {
        let synced = match self.route(id) {
            Ok(shard) => Ok(shard.sync(id, request)),
            // No group was ever stored: none has this member.
            Err(NoShard::NoTopic) => Err(GroupError::UnknownMemberId),
            Err(NoShard::Refused(e)) => Err(e),
        };
        async move { synced?.await }
    }

    /// Heartbeat: answered at once.
    pub fn heartbeat(
        self: &Arc<Self>,
        id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        match self.route(id) {
            Ok(shard) => shard.heartbeat(id, member_id, group_instance_id, generation_id),
            Err(NoShard::NoTopic) => Err(GroupError::UnknownMemberId),
            Err(NoShard::Refused(e)) => Err(e),
        }
    }

    /// LeaveGroup of each `(member id, group instance id)`; the future answers each once what
    /// it changed is stored. A group this broker cannot serve is refused as a whole.
    pub fn leave(
        self: &Arc<Self>,
        id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Result<impl Future<Output = Vec<Result<(), GroupError>>> + Send + 'static, GroupError>
    {
        let count = members.len();
        let left = match self.route(id) {
            Ok(shard) => Ok(shard.leave(id, members)),
            // No group was ever stored: none has these members.
            Err(NoShard::NoTopic) => Err(GroupError::UnknownMemberId),
            Err(NoShard::Refused(e)) => return Err(e),
        };
        Ok(async move {
            match left {
                Ok(left) => left.await,
                Err(e) => vec![Err(e); count],
            }
        })
    }

    /// OffsetCommit: allowed by the group's generation and given its place in the log in one
    /// step ([`GroupShard::commit`]); the future resolves once the offsets are durable.
    pub fn commit(
        self: &Arc<Self>,
        id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        writes: Vec<OffsetWrite>,
    ) -> Result<impl Future<Output = Result<(), WriteError>> + Send + 'static, GroupError> {
        if generation_id < 0 {
            self.ensure_timers();
        }
        let shard = self.route(id).map_err(NoShard::for_write)?;
        shard.commit(id, member_id, group_instance_id, generation_id, writes)
    }

    /// TxnOffsetCommit ([`GroupShard::txn_commit`]): the future resolves once the pending
    /// offsets are durable.
    #[allow(clippy::too_many_arguments)]
    pub fn txn_commit(
        self: &Arc<Self>,
        id: &str,
        producer_id: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        writes: Vec<(OffsetKey, CommittedOffset)>,
    ) -> Result<impl Future<Output = Result<(), WriteError>> + Send + 'static, GroupError> {
        let shard = self.route(id).map_err(NoShard::for_write)?;
        shard.txn_commit(
            id,
            producer_id,
            member_id,
            group_instance_id,
            generation_id,
            writes,
        )
    }

    /// A transaction marker of `producer_id` is durable at `marker_offset` of offsets
    /// partition `index`: the offsets its transaction committed there become visible (COMMIT)
    /// or are dropped (ABORT). A partition whose shard is not loaded resolves them when it
    /// loads (the replay meets the marker).
    pub fn complete_txn(&self, index: i32, producer_id: i64, commit: bool, marker_offset: u64) {
        let shard = match self.shards().slots.get(&index) {
            Some(Slot::Loaded(shard)) => Arc::clone(shard),
            _ => return,
        };
        shard.complete_txn(producer_id, commit, marker_offset);
    }

    /// Writes offset changes of group `group` (OffsetDelete's tombstones), in order with every
    /// other decision of its shard, and waits until they are durable and applied.
    pub async fn write(
        self: &Arc<Self>,
        group: &str,
        writes: Vec<OffsetWrite>,
    ) -> Result<(), WriteError> {
        assert!(writes.iter().all(|(key, _)| key.group == group));
        if writes.is_empty() {
            return Ok(());
        }
        let shard = self.route(group).map_err(NoShard::for_write)?;
        shard.write(writes).await
    }

    /// DeleteGroups of one group ([`GroupShard::delete_group`]).
    pub fn delete_group(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<impl Future<Output = Result<(), WriteError>> + Send + 'static, GroupError> {
        match self.route(id) {
            Ok(shard) => shard.delete_group(id),
            Err(NoShard::NoTopic) => Err(GroupError::GroupIdNotFound),
            Err(NoShard::Refused(e)) => Err(e),
        }
    }

    /// Shutdown: every shard's parked requests are answered NOT_COORDINATOR now, and every
    /// later group request too; committed offsets stay readable and writes in flight finish
    /// (the logs stay open until the broker closes them). Returns how many requests were
    /// answered.
    pub fn unload(&self) -> usize {
        let shards = {
            let mut shards = self.shards();
            shards.stopped = true;
            shards
                .slots
                .values()
                .filter_map(|slot| match slot {
                    Slot::Loaded(shard) => Some(Arc::clone(shard)),
                    Slot::Loading { .. } => None,
                })
                .collect::<Vec<_>>()
        };
        shards.iter().map(|shard| shard.unload()).sum()
    }

    // ---- Maintenance, over every loaded shard in partition order. ----

    /// The groups whose deadline passed, stepped; their stores to finish.
    pub(super) fn tick_steps(&self, now: Millis) -> Vec<(Arc<GroupShard>, PendingWrite)> {
        let mut writes = Vec::new();
        for shard in self.loaded() {
            for write in shard.tick_steps(now) {
                writes.push((Arc::clone(&shard), write));
            }
        }
        writes
    }

    /// Steps every group whose deadline passed at `now` and waits for the stores that caused.
    pub async fn tick(&self, now: Millis) {
        for shard in self.loaded() {
            shard.tick(now).await;
        }
    }

    /// Stores every group whose membership differs from its last durable record (a store
    /// failed). The server calls it periodically. Returns how many groups were stored, or the
    /// last shard's error (the others are still tried).
    pub async fn store_dirty_groups(&self) -> Result<usize, WriteError> {
        let mut stored = 0;
        let mut failed = None;
        for shard in self.loaded() {
            match shard.store_dirty_groups().await {
                Ok(count) => stored += count,
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(stored), Err)
    }

    /// Expires offsets (KIP-211) on every shard. Returns how many expired, or the last shard's
    /// error (the others are still tried).
    pub async fn expire_offsets(&self) -> Result<usize, WriteError> {
        let mut expired = 0;
        let mut failed = None;
        for shard in self.loaded() {
            match shard.expire_offsets().await {
                Ok(count) => expired += count,
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(expired), Err)
    }

    // ---- Reads. ----

    /// Runs `f` on group `id`, if it exists.
    pub fn read_group<R>(
        &self,
        id: &str,
        f: impl FnOnce(&Group) -> R,
    ) -> Result<Option<R>, GroupError> {
        Ok(self
            .route_read(id)?
            .and_then(|shard| shard.read_group(id, f)))
    }

    /// Runs `f` over every group of every loaded shard, in id order (as Kafka's ListGroups
    /// lists what one broker coordinates).
    pub fn for_each_group(&self, mut f: impl FnMut(&Group)) {
        let shards = self.loaded();
        let mut ids: Vec<(String, usize)> = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            shard.for_each_group(|g| ids.push((g.id.clone(), i)));
        }
        ids.sort();
        for (id, i) in ids {
            // Gone since it was listed: nothing to show.
            let _ = shards[i].read_group(&id, &mut f);
        }
    }

    /// Does the group exist (members or committed offsets)?
    pub fn group_exists(&self, id: &str) -> Result<bool, GroupError> {
        Ok(self
            .route_read(id)?
            .is_some_and(|shard| shard.group_exists(id)))
    }

    /// The committed offset of one partition.
    pub fn committed(&self, key: &OffsetKey) -> Result<Option<CommittedOffset>, GroupError> {
        Ok(self
            .route_read(&key.group)?
            .and_then(|shard| shard.committed(key)))
    }

    /// Is an offset of this partition pending in a transaction not yet ended
    /// ([`GroupShard::has_pending_txn_offset`])?
    pub fn has_pending_txn_offset(&self, key: &OffsetKey) -> Result<bool, GroupError> {
        Ok(self
            .route_read(&key.group)?
            .is_some_and(|shard| shard.has_pending_txn_offset(key)))
    }

    /// Every committed offset of a group.
    pub fn committed_for_group(
        &self,
        group: &str,
    ) -> Result<Vec<(OffsetKey, CommittedOffset)>, GroupError> {
        Ok(self
            .route_read(group)?
            .map(|shard| shard.committed_for_group(group))
            .unwrap_or_default())
    }

    /// The writes in flight now on group `group`'s shard (an OffsetFetch waits for them).
    pub fn in_flight_for(&self, group: &str) -> Result<Vec<WriteRef>, GroupError> {
        Ok(self
            .route_read(group)?
            .map(|shard| Self::refs(&shard))
            .unwrap_or_default())
    }

    /// The writes in flight now on every shard.
    pub fn in_flight(&self) -> Vec<WriteRef> {
        self.loaded().iter().flat_map(|s| Self::refs(s)).collect()
    }

    fn refs(shard: &GroupShard) -> Vec<WriteRef> {
        shard
            .in_flight()
            .into_iter()
            .map(|ticket| WriteRef {
                partition: shard.index(),
                load: shard.load(),
                ticket,
            })
            .collect()
    }

    fn is_in_flight(&self, write: &WriteRef) -> bool {
        let shard = match self.shards().slots.get(&write.partition) {
            Some(Slot::Loaded(shard)) if shard.load() == write.load => Arc::clone(shard),
            // Its shard is gone: nobody waits on it any more.
            _ => return false,
        };
        !shard.is_resigned() && shard.is_in_flight(write.ticket)
    }

    /// Waits until none of `writes` is in flight (or its shard was unloaded).
    pub async fn wait_applied(&self, writes: Vec<WriteRef>) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if writes.iter().all(|w| !self.is_in_flight(w)) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with the JDK on this machine (`"...".hashCode()`, and Kafka's `Utils.abs(h) %
    /// n`): the same group ids must land in the same partitions as on Kafka.
    #[test]
    fn groups_land_in_the_partitions_kafka_puts_them_in() {
        let known: &[(&str, i32, i32, i32)] = &[
            // (group id, String.hashCode, partition of 50, partition of 7)
            ("", 0, 0, 0),
            ("billing", -109_829_509, 9, 6),
            ("my-group", -1_906_497_762, 12, 1),
            ("console-consumer-12345", 158_455_506, 6, 6),
            // Its hash is Integer.MIN_VALUE, whose Math.abs is negative: Utils.abs gives 0.
            ("polygenelubricants", i32::MIN, 0, 0),
            // Beyond ASCII: one UTF-16 unit for é, a surrogate pair for the emoji.
            ("groupé", -1_237_460_406, 6, 0),
            ("\u{1F600}-emoji", -1_200_436_388, 38, 4),
            ("rdkafka-test-group", 1_249_748_157, 7, 0),
            ("g", 103, 3, 5),
            // Java's classic collision: same hash, same partition.
            ("Aa", 2112, 12, 5),
            ("BB", 2112, 12, 5),
        ];
        for &(id, hash, of_50, of_7) in known {
            assert_eq!(java_string_hash(id), hash, "hashCode of {id:?}");
            assert_eq!(partition_for(id, 50), of_50, "{id:?} among 50");
            assert_eq!(partition_for(id, 7), of_7, "{id:?} among 7");
            assert_eq!(partition_for(id, 1), 0, "one partition holds every group");
        }
    }
}
