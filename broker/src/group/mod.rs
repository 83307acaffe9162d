//! Consumer groups: the classic group protocol's coordinator and committed offsets.
//!
//! This broker coordinates every group. [`GroupCoordinator`] holds each group's membership
//! ([`coordinator::Group`], a pure state machine) and the committed offsets, which are records in
//! `__consumer_offsets` ([`offsets`] documents their encoding). A commit is applied to memory
//! only once its record is durable; on start the offsets are replayed from the log.
//!
//! Offsets expire as KIP-211 says ([`GroupCoordinator::expired_offsets`]): those of an empty
//! group `offsets.retention.minutes` after it became empty, never while members remain; in a
//! stable consumer group, only those of topics no member subscribes to any more. Membership is
//! not persisted, so after a restart every group with offsets counts as empty since the start:
//! a restart can postpone expiry, never bring it forward.

pub mod consumer_protocol;
pub mod coordinator;
pub mod offsets;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::log::batch::{builder, BatchHeader};
use crate::log::{AppendInfo, ReadError};
use crate::partition::Partition;
use coordinator::{Group, GroupState, Millis};
use offsets::{CommittedOffset, OffsetKey, RecordKey};

/// [`GroupConfig::max_pending_writes`] by default: as many as Kafka's `queued.max.requests`
/// (500) twice over; each holds at most one request's offsets.
pub const DEFAULT_MAX_PENDING_WRITES: usize = 1_000;

/// How often sessions and rebalance deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

/// One offset change to write: a commit, or a deletion (tombstone) when the value is `None`.
pub type OffsetWrite = (OffsetKey, Option<CommittedOffset>);

/// The coordinator's settings, with Kafka's names.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// Offset and group writes appended but not yet durable, at most. The next one waits for
    /// room (in its connection's request order, so that connection stops reading: backpressure
    /// down to the client), never dropped.
    pub max_pending_writes: usize,
}

impl Default for GroupConfig {
    /// Kafka's defaults: 3 s and 7 days.
    fn default() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            max_pending_writes: DEFAULT_MAX_PENDING_WRITES,
        }
    }
}

#[derive(Default)]
struct Inner {
    groups: BTreeMap<String, Group>,
    /// Committed offsets, with the `__consumer_offsets` offset of the record that set them.
    offsets: BTreeMap<OffsetKey, (CommittedOffset, u64)>,
    /// Offset of the latest applied tombstone per key, so a late-applied older commit loses.
    deleted: BTreeMap<OffsetKey, u64>,
    /// Offset records appended but not yet durable and applied: base offset → their groups.
    in_flight: BTreeMap<u64, BTreeSet<String>>,
    /// Groups removed (deleted, or expired with no offsets left) whose stored membership
    /// still needs a tombstone.
    removed: BTreeSet<String>,
    /// Every group was unloaded (the broker stops): groups created from now on start Dead.
    unloaded: bool,
}

/// Every group on this broker, and their committed offsets.
pub struct GroupCoordinator {
    clock: Arc<dyn Clock>,
    config: GroupConfig,
    /// The timer task runs from the first group operation on (not before, so a broker that
    /// never sees a group schedules nothing extra).
    timers_started: AtomicBool,
    inner: Mutex<Inner>,
    /// Woken whenever an in-flight offset write finishes.
    applied: Notify,
    /// Held while appending offset records, so expiry decides and appends its tombstones
    /// with no commit slipping in between.
    append_order: tokio::sync::Mutex<()>,
    /// Room for writes in flight (`max_pending_writes`): taken before an append, given back
    /// when the write completes ([`GroupCoordinator::complete`]) or its append failed.
    pending_writes: tokio::sync::Semaphore,
}

impl GroupCoordinator {
    pub fn new(clock: Arc<dyn Clock>, config: GroupConfig) -> Arc<GroupCoordinator> {
        Arc::new(GroupCoordinator {
            clock,
            timers_started: AtomicBool::new(false),
            inner: Mutex::default(),
            applied: Notify::new(),
            append_order: tokio::sync::Mutex::new(()),
            pending_writes: tokio::sync::Semaphore::new(config.max_pending_writes.max(1)),
            config,
        })
    }

    fn new_group(&self, id: &str) -> Group {
        let mut group = Group::new(id, self.clock.now_ms());
        self.configure(&mut group);
        group
    }

    fn configure(&self, group: &mut Group) {
        group.initial_rebalance_delay_ms = self.config.initial_rebalance_delay_ms;
        group.store_assignments = true;
    }

    /// Starts the session and rebalance timers unless they run already.
    pub fn ensure_timers(self: &Arc<Self>) {
        if !self.timers_started.swap(true, Ordering::AcqRel) {
            self.spawn_timers();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on group `id`, creating it (Empty) if `create` and it does not exist.
    pub fn with_group<R>(
        self: &Arc<Self>,
        id: &str,
        create: bool,
        f: impl FnOnce(&mut Group) -> R,
    ) -> Option<R> {
        if create {
            self.ensure_timers();
        }
        let mut inner = self.lock();
        if create && !inner.groups.contains_key(id) {
            let mut group = self.new_group(id);
            if inner.unloaded {
                // A join racing the shutdown must not park where nobody will answer it.
                group.unload(coordinator::GroupError::NotCoordinator);
            }
            inner.groups.insert(id.to_string(), group);
        }
        inner.groups.get_mut(id).map(f)
    }

    /// Runs `f` over every group.
    pub fn for_each_group(&self, mut f: impl FnMut(&Group)) {
        self.lock().groups.values().for_each(&mut f);
    }

    /// Removes group `id` if it is empty (DeleteGroups), returning its offsets' keys.
    pub fn delete_group(&self, id: &str) -> Result<Vec<OffsetKey>, coordinator::GroupError> {
        let mut inner = self.lock();
        let has_offsets = inner.offsets.keys().any(|k| k.group == id);
        match inner.groups.get_mut(id) {
            Some(group) => group.delete()?,
            None if has_offsets => {}
            None => return Err(coordinator::GroupError::GroupIdNotFound),
        }
        inner.groups.remove(id);
        inner.removed.insert(id.to_string());
        Ok(inner
            .offsets
            .keys()
            .filter(|k| k.group == id)
            .cloned()
            .collect())
    }

    /// Does the group exist (members or committed offsets)?
    pub fn group_exists(&self, id: &str) -> bool {
        let inner = self.lock();
        inner.groups.contains_key(id) || inner.offsets.keys().any(|k| k.group == id)
    }

    /// The committed offset of one partition.
    pub fn committed(&self, key: &OffsetKey) -> Option<CommittedOffset> {
        self.lock().offsets.get(key).map(|(v, _)| v.clone())
    }

    /// Every committed offset of a group.
    pub fn committed_for_group(&self, group: &str) -> Vec<(OffsetKey, CommittedOffset)> {
        self.lock()
            .offsets
            .iter()
            .filter(|(k, _)| k.group == group)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// Appends offset records to `__consumer_offsets` and waits until they are durable, then
    /// applies them. Returns the append error if there was one; nothing is applied then.
    pub async fn write(
        &self,
        partition: &Arc<Partition>,
        writes: &[OffsetWrite],
        now_ms: i64,
    ) -> Result<(), crate::partition::ProduceError> {
        let info = self.append(partition, writes, now_ms).await?;
        self.complete(partition, writes, info).await
    }

    /// Phase one of a write: the records are in the log (not yet durable) and in flight, so
    /// an OffsetFetch that arrives later waits for them ([`GroupCoordinator::in_flight`]).
    /// Call inline in request order; then [`GroupCoordinator::complete`].
    pub async fn append(
        &self,
        partition: &Arc<Partition>,
        writes: &[OffsetWrite],
        now_ms: i64,
    ) -> Result<Option<AppendInfo>, crate::partition::ProduceError> {
        if writes.is_empty() {
            return Ok(None);
        }
        let _order = self.append_order.lock().await;
        self.append_in_order(partition, writes, now_ms).await
    }

    async fn append_in_order(
        &self,
        partition: &Arc<Partition>,
        writes: &[OffsetWrite],
        now_ms: i64,
    ) -> Result<Option<AppendInfo>, crate::partition::ProduceError> {
        let records = writes
            .iter()
            .map(|(key, value)| builder::Record {
                key: Some(offsets::encode_key(key)),
                value: value.as_ref().map(offsets::encode_value),
                timestamp_ms: now_ms,
            })
            .collect();
        let groups = writes.iter().map(|(key, _)| key.group.clone()).collect();
        self.append_records(partition, records, groups).await
    }

    /// Appends records of `groups` (call with `append_order` held); they are in flight until
    /// [`GroupCoordinator::complete`].
    async fn append_records(
        &self,
        partition: &Arc<Partition>,
        records: Vec<builder::Record>,
        groups: BTreeSet<String>,
    ) -> Result<Option<AppendInfo>, crate::partition::ProduceError> {
        if records.is_empty() {
            return Ok(None);
        }
        let mut batch = builder::batch(&records);
        // Backpressure: wait (holding `append_order`, so writes keep their order) until fewer
        // than `max_pending_writes` are in flight. The permit is given back in `complete`.
        self.pending_writes
            .acquire()
            .await
            .expect("the semaphore is never closed")
            .forget();
        // Answered only once durable: no offset reservation needed.
        let info = match partition.append_unexposed(&mut batch).await {
            Ok(info) => info,
            Err(e) => {
                self.pending_writes.add_permits(1);
                return Err(e);
            }
        };
        assert_eq!(
            info.last_offset - info.base_offset + 1,
            records.len() as u64
        );
        let mut inner = self.lock();
        let fresh = inner.in_flight.insert(info.base_offset, groups).is_none();
        assert!(fresh, "two writes in flight at one offset");
        assert!(inner.in_flight.len() <= self.config.max_pending_writes.max(1));
        Ok(Some(info))
    }

    /// Stores group `id`'s membership with the assignments its leader sent for `generation`,
    /// durably, before any member learns them (Kafka's `storeGroup` in SyncGroup): a broker
    /// restart then brings the group back in that generation, and no member of an older one
    /// can commit. Returns false (nothing written) if the group moved on meanwhile.
    pub async fn store_group(
        &self,
        partition: &Arc<Partition>,
        id: &str,
        generation: i32,
    ) -> Result<bool, crate::partition::ProduceError> {
        let now = self.clock.now_ms();
        let info = {
            let _order = self.append_order.lock().await;
            let snapshot = match self.lock().groups.get(id) {
                Some(group) if group.awaits_store(generation) => group.snapshot(),
                _ => return Ok(false),
            };
            let record = builder::Record {
                key: Some(offsets::encode_group_key(id)),
                value: Some(offsets::encode_group_value(&snapshot)),
                timestamp_ms: now,
            };
            self.append_records(partition, vec![record], BTreeSet::from([id.to_string()]))
                .await?
        };
        self.complete(partition, &[], info).await?;
        Ok(true)
    }

    /// Stores every group whose membership changed without a new generation (it emptied, a
    /// static member was replaced), and tombstones for removed groups. The server calls it
    /// periodically; a failure leaves them pending, to be stored next time.
    pub async fn store_changed_groups(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<usize, crate::partition::ProduceError> {
        let now = self.clock.now_ms();
        let _order = self.append_order.lock().await;
        let mut ids = BTreeSet::new();
        let mut records = Vec::new();
        let removed: Vec<String> = {
            let mut inner = self.lock();
            let removed = std::mem::take(&mut inner.removed).into_iter().collect();
            for (id, group) in inner.groups.iter_mut() {
                if group.dirty && group.state != GroupState::Dead {
                    group.dirty = false;
                    ids.insert(id.clone());
                    records.push(builder::Record {
                        key: Some(offsets::encode_group_key(id)),
                        value: Some(offsets::encode_group_value(&group.snapshot())),
                        timestamp_ms: now,
                    });
                }
            }
            removed
        };
        for id in &removed {
            ids.insert(id.clone());
            records.push(builder::Record {
                key: Some(offsets::encode_group_key(id)),
                value: None,
                timestamp_ms: now,
            });
        }
        let count = records.len();
        let mark_dirty = |ids: &BTreeSet<String>| {
            let mut inner = self.lock();
            for id in ids {
                match inner.groups.get_mut(id) {
                    Some(group) => group.dirty = true,
                    None if removed.contains(id) => {
                        inner.removed.insert(id.clone());
                    }
                    None => {}
                }
            }
        };
        let info = match self.append_records(partition, records, ids.clone()).await {
            Ok(info) => info,
            Err(e) => {
                mark_dirty(&ids);
                return Err(e);
            }
        };
        drop(_order);
        if let Err(e) = self.complete(partition, &[], info).await {
            mark_dirty(&ids);
            return Err(e);
        }
        Ok(count)
    }

    /// Phase two: waits until the appended records are durable, then applies them. Either way
    /// they are no longer in flight afterwards.
    pub async fn complete(
        &self,
        partition: &Arc<Partition>,
        writes: &[OffsetWrite],
        info: Option<AppendInfo>,
    ) -> Result<(), crate::partition::ProduceError> {
        let Some(info) = info else {
            return Ok(());
        };
        let durable = partition.wait_durable(&info).await;
        {
            let mut inner = self.lock();
            if durable.is_ok() {
                for (i, (key, value)) in writes.iter().enumerate() {
                    apply_one(
                        &mut inner,
                        key.clone(),
                        value.clone(),
                        info.base_offset + i as u64,
                    );
                }
            }
            let removed = inner.in_flight.remove(&info.base_offset);
            assert!(removed.is_some(), "a write completes once");
        }
        // Its room goes back only once it is out of `in_flight`.
        self.pending_writes.add_permits(1);
        self.applied.notify_waiters();
        Ok(durable?)
    }

    /// The writes in flight now (an OffsetFetch waits for them before it reads).
    pub fn in_flight(&self) -> Vec<u64> {
        self.lock().in_flight.keys().copied().collect()
    }

    /// Waits until none of `writes` (from [`GroupCoordinator::in_flight`]) is in flight.
    pub async fn wait_applied(&self, writes: Vec<u64>) {
        loop {
            let notified = self.applied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if writes
                .iter()
                .all(|w| !self.lock().in_flight.contains_key(w))
            {
                return;
            }
            notified.await;
        }
    }

    /// Replays `__consumer_offsets` (called once at broker start).
    pub async fn load(&self, partition: &Partition) -> Result<usize, ReadError> {
        let log = &partition.log;
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        let mut records = 0;
        let mut stored_groups: BTreeMap<String, Option<coordinator::GroupSnapshot>> =
            BTreeMap::new();
        while offset < end {
            let read = match log.read(offset, 1 << 20, None).await {
                Ok(read) => read,
                // Damage at rest (a flipped bit; no replica to repair from): the commits in it
                // are gone, not the broker. Skip the rest of the segment, loudly, as the
                // producer-state rebuild does; the groups resume from what is left.
                Err(ReadError::Corrupt {
                    segment,
                    position,
                    error,
                }) => {
                    let next = log.next_segment_after(offset).await;
                    tracing::error!(segment = %segment.display(), position, %error, resume_at = ?next,
                        "corrupt batch in {}: committed offsets and groups in the rest of its segment are lost",
                        offsets::OFFSETS_TOPIC);
                    match next {
                        Some(next) => {
                            offset = next;
                            continue;
                        }
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            };
            if read.records.is_empty() {
                break;
            }
            let mut pos = 0;
            let mut inner = self.lock();
            while pos < read.records.len() {
                let header =
                    BatchHeader::parse(&read.records[pos..]).expect("served batches parse");
                let batch = &read.records[pos..pos + header.size()];
                offset = header.last_offset() as u64 + 1;
                pos += header.size();
                if header.is_control() {
                    continue;
                }
                let Some(parsed) = offsets::batch_records(batch, header.records_count) else {
                    tracing::warn!(
                        base_offset = header.base_offset,
                        "unreadable batch in {}",
                        offsets::OFFSETS_TOPIC
                    );
                    continue;
                };
                for (i, (key, value)) in parsed.into_iter().enumerate() {
                    match key.as_deref().and_then(offsets::decode_record_key) {
                        Some(RecordKey::Offset(key)) => {
                            let value = value.as_deref().and_then(offsets::decode_value);
                            let at = header.base_offset as u64 + i as u64;
                            apply_one(&mut inner, key, value, at);
                        }
                        Some(RecordKey::Group(id)) => {
                            let stored = value.as_deref().and_then(offsets::decode_group_value);
                            stored_groups.insert(id, stored);
                        }
                        None => continue,
                    }
                    records += 1;
                }
            }
        }
        // Stored groups come back in their last stored generation; groups with committed
        // offsets but no stored membership exist (Empty) too, as in Kafka: ListGroups and
        // DescribeGroups show them, and a commit with generation -1 is accepted.
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        for (id, stored) in stored_groups {
            if let Some(stored) = stored {
                let mut group = Group::restore(&id, stored, now);
                self.configure(&mut group);
                inner.groups.insert(id, group);
            }
        }
        let with_offsets: Vec<String> = inner.offsets.keys().map(|k| k.group.clone()).collect();
        for group in with_offsets {
            if let std::collections::btree_map::Entry::Vacant(entry) = inner.groups.entry(group) {
                let new = self.new_group(entry.key());
                entry.insert(new);
            }
        }
        Ok(records)
    }

    /// KIP-211: the committed offsets that have expired at `now`. An empty group's offsets
    /// expire `offsets.retention.minutes` after it became empty (or after their commit, if
    /// later: a commit into an empty group restarts its clock); in a stable consumer group,
    /// offsets of topics no member subscribes to expire that long after their commit; no
    /// other group loses any. Groups with commits in flight are skipped.
    pub fn expired_offsets(&self, now: Millis) -> Vec<OffsetKey> {
        let retention = self.config.offsets_retention_ms;
        let inner = self.lock();
        let busy: BTreeSet<&String> = inner.in_flight.values().flatten().collect();
        let mut subscriptions: BTreeMap<&str, Option<BTreeSet<String>>> = BTreeMap::new();
        let mut expired = Vec::new();
        for (key, (value, _)) in &inner.offsets {
            if busy.contains(&key.group) {
                continue;
            }
            let since = match inner.groups.get(&key.group) {
                None => Some(value.commit_timestamp_ms),
                Some(group) => match group.state {
                    GroupState::Empty => Some(group.state_since.max(value.commit_timestamp_ms)),
                    GroupState::Stable => subscriptions
                        .entry(&key.group)
                        .or_insert_with(|| group.subscribed_topics())
                        .as_ref()
                        .filter(|topics| !topics.contains(&key.topic))
                        .map(|_| value.commit_timestamp_ms),
                    _ => None,
                },
            };
            if since.is_some_and(|since| now.saturating_sub(since) >= retention) {
                expired.push(key.clone());
            }
        }
        expired
    }

    /// Expires offsets (KIP-211): decides which, appends their tombstones with no commit in
    /// between, waits until they are durable, then forgets empty groups with no offsets left,
    /// as Kafka does. Returns how many offsets expired.
    pub async fn expire_offsets(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<usize, crate::partition::ProduceError> {
        let now = self.clock.now_ms();
        let (writes, info) = {
            let _order = self.append_order.lock().await;
            let writes: Vec<OffsetWrite> = self
                .expired_offsets(now)
                .into_iter()
                .map(|key| (key, None))
                .collect();
            let info = self.append_in_order(partition, &writes, now).await?;
            (writes, info)
        };
        self.complete(partition, &writes, info).await?;
        {
            let mut inner = self.lock();
            let Inner {
                groups,
                offsets,
                in_flight,
                removed,
                ..
            } = &mut *inner;
            groups.retain(|id, group| {
                let has_offsets = offsets
                    .range(OffsetKey::first_of(id)..)
                    .next()
                    .is_some_and(|(k, _)| k.group == *id);
                let busy = in_flight.values().any(|groups| groups.contains(id));
                let keep = group.state != GroupState::Empty || has_offsets || busy;
                if !keep {
                    tracing::info!(group = %id, "empty group with no offsets removed");
                    removed.insert(id.clone());
                }
                keep
            });
        }
        // The removed groups' stored membership goes with them.
        self.store_changed_groups(partition).await?;
        Ok(writes.len())
    }

    /// Unloads every group (the broker stops): parked JoinGroup and SyncGroup requests are
    /// answered with NOT_COORDINATOR, and none parks again. Returns how many were answered.
    pub fn unload_all(&self) -> usize {
        let mut inner = self.lock();
        inner.unloaded = true;
        inner
            .groups
            .values_mut()
            .map(|group| group.unload(coordinator::GroupError::NotCoordinator))
            .sum()
    }

    /// Ticks every group: session expiry and rebalance deadlines.
    pub fn tick(&self, now: Millis) {
        let mut inner = self.lock();
        for group in inner.groups.values_mut() {
            group.tick(now);
        }
    }

    /// Starts the timer task; it stops when the coordinator is dropped. Time is `clock`'s
    /// (virtual under madsim); the task wakes through tokio's (simulated) sleep.
    fn spawn_timers(self: &Arc<Self>) {
        let weak: Weak<GroupCoordinator> = Arc::downgrade(self);
        let clock = Arc::clone(&self.clock);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let Some(coordinator) = weak.upgrade() else {
                    return;
                };
                coordinator.tick(clock.now_ms());
            }
        });
    }
}

fn apply_one(inner: &mut Inner, key: OffsetKey, value: Option<CommittedOffset>, at: u64) {
    let newer_than = |inner: &Inner| {
        let set = inner.offsets.get(&key).map(|(_, o)| *o);
        let del = inner.deleted.get(&key).copied();
        set.max(del).is_none_or(|o| at > o)
    };
    if !newer_than(inner) {
        return;
    }
    match value {
        Some(v) => {
            inner.deleted.remove(&key);
            inner.offsets.insert(key, (v, at));
        }
        None => {
            inner.offsets.remove(&key);
            inner.deleted.insert(key, at);
        }
    }
}
