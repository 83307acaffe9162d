//! [`GroupShard`]: the groups of one `__consumer_offsets` partition and their committed
//! offsets, with the state machine's outputs carried out (Kafka's coordinator shard: one per
//! offsets partition this broker leads, see [`super::coordinator`]).
//!
//! One lock (`inner`) covers the registry, the offset cache, the timers, the parked requests and
//! the log's append order. A request steps its group under the lock; if the step (or an
//! OffsetCommit's permission, or an expiry or deletion decision) has records to write, it takes
//! a [`Ticket`] under the same lock. Tickets append in the order they were taken, one at a time
//! (the *turn*), and only then wait for durability, outside the lock and the turn. So a
//! decision and its record's place in the log are one step, as Kafka's group lock makes them,
//! and no lock is held across a sync.
//!
//! Parked requests (a JoinGroup waiting for the rebalance, a SyncGroup for the stored
//! assignments, a LeaveGroup for the stored empty group) wait on a oneshot channel registered
//! under the request id the state machine answers by. [`GroupShard::unload`] answers every
//! one of them now with NOT_COORDINATOR.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use super::machine::{
    Answer, GroupError, GroupSnapshot, GroupState, Input, JoinOutcome, JoinRequest, Millis,
    RequestId, StoreId, SyncOutcome, SyncRequest,
};
use super::offset_cache::{InFlight, OffsetCache, Ticket};
use super::offsets::{self, CommittedOffset, OffsetKey, RecordKey};
use super::registry::Registry;
use super::timer::Timers;
use super::{GroupConfig, OffsetWrite, WriteError};
use crate::clock::Clock;
use crate::log::batch::{builder, BatchHeader};
use crate::log::ReadError;
use crate::partition::{Partition, ProduceError};
use crate::planted::{self, Bug};

/// The groups of one `__consumer_offsets` partition, and their committed offsets.
pub struct GroupShard {
    /// The offsets partition this shard replays and writes.
    index: i32,
    /// Which load of that partition this is (a partition loaded, unloaded and loaded again is
    /// two shards; writes in flight name theirs).
    load: u64,
    clock: Arc<dyn Clock>,
    config: GroupConfig,
    inner: Mutex<Inner>,
    /// Woken whenever a write finishes (OffsetFetch waits for those in flight); shared by every
    /// shard of the coordinator.
    changed: Arc<Notify>,
    partition: Arc<Partition>,
}

struct Inner {
    registry: Registry,
    cache: OffsetCache,
    timers: Timers,
    parked: BTreeMap<RequestId, oneshot::Sender<Answer>>,
    next_request: RequestId,
    turns: Turns,
    /// Offsets committed inside transactions, by producer id, until the producer's marker
    /// lands on this partition (TxnOffsetCommit).
    pending_txn: BTreeMap<i64, BTreeMap<OffsetKey, CommittedOffset>>,
    /// After [`GroupShard::unload`]: every group request is NOT_COORDINATOR.
    unloaded: bool,
    /// After [`GroupShard::resign`]: this broker no longer leads the partition; writes still in
    /// flight are answered NOT_COORDINATOR whatever became of them (the new coordinator
    /// replays the log: the client's retry there is what counts).
    resigned: bool,
}

/// The log's append order: tickets are taken under the lock and append in ticket order.
#[derive(Debug, Default)]
struct Turns {
    next: Ticket,
    /// The ticket whose append may run now.
    turn: Ticket,
    /// Tickets past their append, not yet reached by `turn`.
    passed: BTreeSet<Ticket>,
    /// Writes waiting for their turn, woken one at a time as it comes.
    waiting: BTreeMap<Ticket, oneshot::Sender<()>>,
}

impl Turns {
    fn take(&mut self) -> Ticket {
        let ticket = self.next;
        self.next += 1;
        assert!(self.turn <= ticket);
        ticket
    }

    fn pass(&mut self, ticket: Ticket) {
        assert!(ticket < self.next, "ticket {ticket} was never taken");
        assert!(ticket >= self.turn, "ticket {ticket} passed twice");
        // A write dropped while it waited (its node died) passes without its turn.
        self.waiting.remove(&ticket);
        self.passed.insert(ticket);
        while self.passed.remove(&self.turn) {
            self.turn += 1;
        }
        if let Some(next) = self.waiting.remove(&self.turn) {
            let _ = next.send(());
        }
        assert!(self.waiting.keys().all(|t| *t > self.turn));
    }
}

/// Records decided under the lock, to append in their ticket's turn and then make durable.
#[must_use = "a decided write must be finished, or the turn never passes"]
pub(super) struct PendingWrite {
    ticket: Ticket,
    /// Offset records first (applied to the cache once durable), then group records.
    offsets: Vec<OffsetWrite>,
    groups: Vec<(String, Option<GroupSnapshot>)>,
    /// Offsets committed inside a producer's transaction (pending until its marker), last.
    txn_offsets: Vec<(i64, OffsetKey, CommittedOffset)>,
    /// Groups whose state machine waits for the outcome of one of those group records.
    stores: Vec<(String, StoreId)>,
    timestamp_ms: Millis,
}

/// Passes the turn and ends the write if its task is dropped before it did (a killed node).
struct WriteGuard<'a> {
    coordinator: &'a GroupShard,
    ticket: Ticket,
    stores: Vec<(String, StoreId)>,
    passed: bool,
    ended: bool,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.passed && self.ended {
            return;
        }
        let mut inner = self.coordinator.lock();
        if !self.passed {
            inner.turns.pass(self.ticket);
        }
        if !self.ended {
            let stores = std::mem::take(&mut self.stores);
            self.coordinator
                .end_write(&mut inner, self.ticket, &stores, false);
        }
        drop(inner);
        self.coordinator.changed.notify_waiters();
    }
}

impl GroupShard {
    /// An empty shard for offsets partition `index` (fill it with [`GroupShard::replay`]).
    pub(super) fn new(
        index: i32,
        load: u64,
        partition: Arc<Partition>,
        clock: Arc<dyn Clock>,
        config: GroupConfig,
        changed: Arc<Notify>,
    ) -> GroupShard {
        assert!(index >= 0);
        assert_eq!(partition.index, index, "a shard writes its own partition");
        GroupShard {
            index,
            load,
            inner: Mutex::new(Inner {
                registry: Registry::new(config.initial_rebalance_delay_ms),
                cache: OffsetCache::default(),
                timers: Timers::default(),
                parked: BTreeMap::new(),
                next_request: 0,
                turns: Turns::default(),
                pending_txn: BTreeMap::new(),
                unloaded: false,
                resigned: false,
            }),
            clock,
            config,
            changed,
            partition,
        }
    }

    /// The offsets partition this shard holds.
    pub fn index(&self) -> i32 {
        self.index
    }

    pub(super) fn load(&self) -> u64 {
        self.load
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- Requests: each steps its group under the lock, in request order. ----

    /// Steps group `id` with the input `make` builds for a fresh request id (creating the group
    /// if `create`), dispatches the answers, and returns the receiver of this request's answer
    /// and the write the step decided, if any. `missing` answers if there is no such group.
    fn submit(
        self: &Arc<Self>,
        id: &str,
        create: bool,
        missing: Answer,
        make: impl FnOnce(RequestId) -> Input,
    ) -> (oneshot::Receiver<Answer>, Option<PendingWrite>) {
        let (tx, rx) = oneshot::channel();
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        if inner.unloaded {
            let _ = tx.send(missing.failed(&GroupError::NotCoordinator));
            return (rx, None);
        }
        if create {
            inner.registry.get_or_create(id, now);
        }
        if !inner.registry.contains(id) {
            let _ = tx.send(missing);
            return (rx, None);
        }
        let request = inner.next_request;
        inner.next_request += 1;
        inner.parked.insert(request, tx);
        let write = self.step(&mut inner, id, make(request), now);
        (rx, write)
    }

    /// One step of group `id` (which exists): answers dispatched, its timer set, and its store,
    /// if any, given a ticket.
    fn step(&self, inner: &mut Inner, id: &str, input: Input, now: Millis) -> Option<PendingWrite> {
        let group = inner.registry.get_mut(id).expect("stepped groups exist");
        let out = group.step(input, now);
        inner.timers.set(id, out.next_deadline);
        for (request, answer) in out.answers {
            // A request whose task died has no receiver left; nothing to tell it.
            if let Some(tx) = inner.parked.remove(&request) {
                let _ = tx.send(answer);
            }
        }
        let store = out.store?;
        let mut write = Self::decide(inner, Vec::new(), now);
        write.groups.push((id.to_string(), store.record));
        write.stores.push((id.to_string(), store.id));
        Some(write)
    }

    /// Takes the next ticket for `offsets` (group records are added by the caller), under the
    /// lock: the write is in flight from here on.
    fn decide(inner: &mut Inner, offsets: Vec<OffsetWrite>, now: Millis) -> PendingWrite {
        let ticket = inner.turns.take();
        let write = InFlight {
            keys: offsets.iter().map(|(k, _)| k.clone()).collect(),
            groups: offsets.iter().map(|(k, _)| k.group.clone()).collect(),
        };
        inner.cache.begin(ticket, write);
        PendingWrite {
            ticket,
            offsets,
            groups: Vec::new(),
            txn_offsets: Vec::new(),
            stores: Vec::new(),
            timestamp_ms: now,
        }
    }

    /// JoinGroup: stepped now; the future answers once the rebalance does.
    pub fn join(
        self: &Arc<Self>,
        id: &str,
        request: JoinRequest,
        salt: u128,
    ) -> impl Future<Output = JoinOutcome> + Send + 'static {
        let (rx, write) = self.submit(
            id,
            true,
            Answer::Join(Err(GroupError::CoordinatorNotAvailable)),
            |request_id| Input::Join {
                id: request_id,
                request,
                salt,
            },
        );
        let this = Arc::clone(self);
        async move {
            if let Some(write) = write {
                let _ = this.finish(write).await;
            }
            match rx.await {
                Ok(Answer::Join(outcome)) => outcome,
                Ok(other) => panic!("a join answered with {other:?}"),
                Err(_) => Err(GroupError::CoordinatorNotAvailable),
            }
        }
    }

    /// SyncGroup: stepped now; the future answers once the assignments are stored.
    pub fn sync(
        self: &Arc<Self>,
        id: &str,
        request: SyncRequest,
    ) -> impl Future<Output = SyncOutcome> + Send + 'static {
        let (rx, write) = self.submit(
            id,
            false,
            Answer::Sync(Err(GroupError::UnknownMemberId)),
            |request_id| Input::Sync {
                id: request_id,
                request,
            },
        );
        let this = Arc::clone(self);
        async move {
            if let Some(write) = write {
                if let Err(e) = this.finish(write).await {
                    tracing::warn!(%e, "group assignments not stored");
                }
            }
            match rx.await {
                Ok(Answer::Sync(outcome)) => outcome,
                Ok(other) => panic!("a sync answered with {other:?}"),
                Err(_) => Err(GroupError::CoordinatorNotAvailable),
            }
        }
    }

    /// Heartbeat: answered at once.
    pub fn heartbeat(
        self: &Arc<Self>,
        id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        let (mut rx, write) = self.submit(
            id,
            false,
            Answer::Done(Err(GroupError::UnknownMemberId)),
            |request_id| Input::Heartbeat {
                id: request_id,
                member_id: member_id.to_string(),
                group_instance_id: group_instance_id.map(str::to_string),
                generation_id,
            },
        );
        assert!(write.is_none(), "a heartbeat stores nothing");
        match rx.try_recv() {
            Ok(Answer::Done(result)) => result,
            other => panic!("a heartbeat answered with {other:?}"),
        }
    }

    /// LeaveGroup of each `(member id, group instance id)`: stepped now, in order; the future
    /// answers each once what it changed is stored (a leave that empties the group).
    pub fn leave(
        self: &Arc<Self>,
        id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> impl Future<Output = Vec<Result<(), GroupError>>> + Send + 'static {
        let mut receivers = Vec::new();
        let mut writes = Vec::new();
        for (member_id, group_instance_id) in members {
            let (rx, write) = self.submit(
                id,
                false,
                Answer::Done(Err(GroupError::UnknownMemberId)),
                |request_id| Input::Leave {
                    id: request_id,
                    member_id,
                    group_instance_id,
                },
            );
            receivers.push(rx);
            writes.extend(write);
        }
        let this = Arc::clone(self);
        async move {
            for write in writes {
                if let Err(e) = this.finish(write).await {
                    tracing::warn!(%e, "emptied group not stored");
                }
            }
            let mut results = Vec::new();
            for rx in receivers {
                results.push(match rx.await {
                    Ok(Answer::Done(result)) => result,
                    Ok(other) => panic!("a leave answered with {other:?}"),
                    Err(_) => Err(GroupError::CoordinatorNotAvailable),
                });
            }
            results
        }
    }

    /// OffsetCommit: the group allows it (checked against its generation now) and the offsets
    /// get their place in the log in the same step, so no rebalance can come between the check
    /// and the append (Kafka holds the group lock across both). The future resolves once the
    /// offsets are durable and applied. A group that does not exist is created for a commit
    /// with generation -1 (a consumer that assigns itself), as Kafka does.
    pub fn commit(
        self: &Arc<Self>,
        id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        writes: Vec<OffsetWrite>,
    ) -> Result<impl Future<Output = Result<(), WriteError>> + Send + 'static, GroupError> {
        assert!(writes.iter().all(|(k, v)| k.group == id && v.is_some()));
        let create = generation_id < 0;
        let now = self.clock.now_ms();
        let write = {
            let mut inner = self.lock();
            if inner.unloaded {
                return Err(GroupError::NotCoordinator);
            }
            if create {
                inner.registry.get_or_create(id, now);
            }
            if !inner.registry.contains(id) {
                return Err(GroupError::IllegalGeneration {
                    got: generation_id,
                    current: -1,
                });
            }
            let request = inner.next_request;
            inner.next_request += 1;
            let group = inner.registry.get_mut(id).expect("exists");
            let out = group.step(
                Input::Commit {
                    id: request,
                    member_id: member_id.to_string(),
                    group_instance_id: group_instance_id.map(str::to_string),
                    generation_id,
                },
                now,
            );
            inner.timers.set(id, out.next_deadline);
            assert!(out.store.is_none(), "a commit check stores no membership");
            assert_eq!(out.answers.len(), 1, "a commit check answers itself only");
            match out.answer_to(request) {
                Some(Answer::Done(Ok(()))) => {}
                Some(Answer::Done(Err(e))) => return Err(e.clone()),
                other => panic!("a commit check answered with {other:?}"),
            }
            (!writes.is_empty()).then(|| Self::decide(&mut inner, writes, now))
        };
        let this = Arc::clone(self);
        Ok(async move {
            match write {
                Some(write) => this.finish(write).await,
                None => Ok(()),
            }
        })
    }

    /// TxnOffsetCommit: offsets committed inside `producer_id`'s transaction, stored as pending
    /// (durable when the future resolves) and made the group's committed offsets by the
    /// producer's COMMIT marker on this partition ([`GroupShard::complete_txn`]). A generation
    /// of -1 (a producer that is no group member, or a v0–2 request) skips the membership
    /// check, as in Kafka; the group is created if it does not exist.
    pub fn txn_commit(
        self: &Arc<Self>,
        id: &str,
        producer_id: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        writes: Vec<(OffsetKey, CommittedOffset)>,
    ) -> Result<impl Future<Output = Result<(), WriteError>> + Send + 'static, GroupError> {
        assert!(writes.iter().all(|(k, _)| k.group == id));
        let now = self.clock.now_ms();
        let write = {
            let mut inner = self.lock();
            if inner.unloaded {
                return Err(GroupError::NotCoordinator);
            }
            inner.registry.get_or_create(id, now);
            if generation_id >= 0 {
                let request = inner.next_request;
                inner.next_request += 1;
                let group = inner.registry.get_mut(id).expect("exists");
                let out = group.step(
                    Input::Commit {
                        id: request,
                        member_id: member_id.to_string(),
                        group_instance_id: group_instance_id.map(str::to_string),
                        generation_id,
                    },
                    now,
                );
                inner.timers.set(id, out.next_deadline);
                assert!(out.store.is_none(), "a commit check stores no membership");
                match out.answer_to(request) {
                    Some(Answer::Done(Ok(()))) => {}
                    Some(Answer::Done(Err(e))) => return Err(e.clone()),
                    other => panic!("a commit check answered with {other:?}"),
                }
            }
            (!writes.is_empty()).then(|| {
                let mut write = Self::decide(&mut inner, Vec::new(), now);
                write.txn_offsets = writes
                    .into_iter()
                    .map(|(k, v)| (producer_id, k, v))
                    .collect();
                write
            })
        };
        let this = Arc::clone(self);
        Ok(async move {
            match write {
                Some(write) => this.finish(write).await,
                None => Ok(()),
            }
        })
    }

    /// `producer_id`'s marker is on this partition at `marker_offset`: its pending offsets
    /// become committed (COMMIT) or are dropped (ABORT).
    pub fn complete_txn(&self, producer_id: i64, commit: bool, marker_offset: u64) {
        let mut inner = self.lock();
        Self::resolve_txn(&mut inner, producer_id, commit, marker_offset);
        drop(inner);
        self.changed.notify_waiters();
    }

    fn resolve_txn(inner: &mut Inner, producer_id: i64, commit: bool, marker_offset: u64) {
        let Some(pending) = inner.pending_txn.remove(&producer_id) else {
            return;
        };
        if commit {
            for (key, value) in pending {
                inner.cache.apply(key, Some(value), marker_offset);
            }
        }
    }

    /// Writes offset changes (OffsetDelete's tombstones), in order with every other decision,
    /// and waits until they are durable and applied.
    pub async fn write(self: &Arc<Self>, writes: Vec<OffsetWrite>) -> Result<(), WriteError> {
        if writes.is_empty() {
            return Ok(());
        }
        let write = {
            let now = self.clock.now_ms();
            let mut inner = self.lock();
            Self::decide(&mut inner, writes, now)
        };
        self.finish(write).await
    }

    /// DeleteGroups: an empty group (or one with only committed offsets) is removed now; its
    /// offsets' tombstones and its membership's are durable when the future resolves.
    pub fn delete_group(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<impl Future<Output = Result<(), WriteError>> + Send + 'static, GroupError> {
        let now = self.clock.now_ms();
        let write = {
            let mut inner = self.lock();
            if inner.unloaded {
                return Err(GroupError::NotCoordinator);
            }
            let keys = inner.cache.keys_of_group(id);
            if !inner.registry.contains(id) {
                if keys.is_empty() {
                    return Err(GroupError::GroupIdNotFound);
                }
                inner.registry.get_or_create(id, now);
            }
            let request = inner.next_request;
            inner.next_request += 1;
            let group = inner.registry.get_mut(id).expect("exists");
            let out = group.step(Input::Delete { id: request }, now);
            match out.answer_to(request) {
                Some(Answer::Done(Ok(()))) => {}
                Some(Answer::Done(Err(e))) => return Err(e.clone()),
                other => panic!("a delete answered with {other:?}"),
            }
            inner.timers.set(id, out.next_deadline);
            let store = out.store.expect("a deletion stores the tombstone");
            assert!(store.record.is_none());
            // The group stays, Dead (joins get COORDINATOR_NOT_AVAILABLE and retry, as in
            // Kafka), until its tombstone's outcome is back; then it is forgotten.
            let tombstones = keys.into_iter().map(|k| (k, None)).collect();
            let mut write = Self::decide(&mut inner, tombstones, now);
            write.groups.push((id.to_string(), None));
            write.stores.push((id.to_string(), store.id));
            write
        };
        let this = Arc::clone(self);
        Ok(async move { this.finish(write).await })
    }

    /// Answers every parked request of every group with NOT_COORDINATOR now and lets go of the
    /// groups (Kafka's `onGroupUnloaded`); later group requests get NOT_COORDINATOR too.
    /// Committed offsets stay readable. Returns how many requests were answered.
    pub fn unload(&self) -> usize {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.unloaded = true;
        let before = inner.parked.len();
        for id in inner.registry.ids() {
            let write = self.step(&mut inner, &id, Input::Unload, now);
            assert!(write.is_none(), "unloading stores nothing");
        }
        let answered = before - inner.parked.len();
        tracing::info!(partition = self.index, answered, "groups unloaded");
        answered
    }

    /// This broker no longer leads the partition (Kafka's `onResignation`): unloaded as above,
    /// and every write still in flight is answered NOT_COORDINATOR when it ends. Returns how
    /// many parked requests were answered.
    pub(super) fn resign(&self) -> usize {
        self.lock().resigned = true;
        let answered = self.unload();
        self.changed.notify_waiters();
        answered
    }

    /// Has this shard been resigned ([`GroupShard::resign`])?
    pub(super) fn is_resigned(&self) -> bool {
        self.lock().resigned
    }

    // ---- Carrying out writes. ----

    /// Appends `write` in its turn, waits until it is durable, applies it and feeds the
    /// outcome of its group records back to their groups.
    pub(super) async fn finish(&self, write: PendingWrite) -> Result<(), WriteError> {
        let mut guard = WriteGuard {
            coordinator: self,
            ticket: write.ticket,
            stores: write.stores.clone(),
            passed: false,
            ended: false,
        };
        let partition = &self.partition;
        self.wait_turn(write.ticket).await;
        // The epoch the write is appended in: a leadership lost before the replicas have it
        // fails the write (it may be truncated away).
        let leader_epoch = partition.leader_epoch();
        let result = self.append(partition, &write).await;
        self.lock().turns.pass(write.ticket);
        guard.passed = true;
        let appended = match result {
            Ok(Some(info)) => wait_replicated(partition, &info, leader_epoch)
                .await
                .map(|()| Some(info.base_offset)),
            Ok(None) => Ok(None),
            Err(e) => Err(WriteError::Storage(e)),
        };
        let resigned = {
            let mut inner = self.lock();
            if let Ok(Some(base)) = &appended {
                for (i, (key, value)) in write.offsets.iter().enumerate() {
                    inner
                        .cache
                        .apply(key.clone(), value.clone(), base + i as u64);
                }
                for (producer_id, key, value) in &write.txn_offsets {
                    inner
                        .pending_txn
                        .entry(*producer_id)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
            }
            self.end_write(&mut inner, write.ticket, &write.stores, appended.is_ok());
            guard.ended = true;
            inner.resigned
        };
        self.changed.notify_waiters();
        if resigned {
            return Err(WriteError::Group(GroupError::NotCoordinator));
        }
        appended.map(|_| ())
    }

    async fn wait_turn(&self, ticket: Ticket) {
        let turn = {
            let mut inner = self.lock();
            assert!(
                inner.turns.turn <= ticket,
                "ticket {ticket} waits after its turn"
            );
            if inner.turns.turn == ticket {
                return;
            }
            let (tx, rx) = oneshot::channel();
            let previous = inner.turns.waiting.insert(ticket, tx);
            assert!(previous.is_none(), "one waiter per ticket");
            rx
        };
        // The sender is dropped only with the coordinator.
        let _ = turn.await;
        assert_eq!(self.lock().turns.turn, ticket);
    }

    async fn append(
        &self,
        partition: &Arc<Partition>,
        write: &PendingWrite,
    ) -> Result<Option<crate::log::AppendInfo>, ProduceError> {
        let offset_records = write.offsets.iter().map(|(key, value)| builder::Record {
            key: Some(offsets::encode_key(key)),
            value: value.as_ref().map(offsets::encode_value),
            timestamp_ms: write.timestamp_ms,
        });
        let group_records = write.groups.iter().map(|(id, record)| builder::Record {
            key: Some(offsets::encode_group_key(id)),
            value: record.as_ref().map(offsets::encode_group_value),
            timestamp_ms: write.timestamp_ms,
        });
        let txn_records =
            write
                .txn_offsets
                .iter()
                .map(|(producer_id, key, value)| builder::Record {
                    key: Some(offsets::encode_txn_offset_key(*producer_id, key)),
                    value: Some(offsets::encode_value(value)),
                    timestamp_ms: write.timestamp_ms,
                });
        let records: Vec<builder::Record> = offset_records
            .chain(group_records)
            .chain(txn_records)
            .collect();
        if records.is_empty() {
            return Ok(None);
        }
        let mut batch = builder::batch(&records);
        let info = partition.append(&mut batch).await?;
        assert_eq!(
            info.last_offset - info.base_offset + 1,
            records.len() as u64
        );
        Ok(Some(info))
    }

    /// The write is over: no longer in flight, and its groups learn whether their records were
    /// stored.
    fn end_write(&self, inner: &mut Inner, ticket: Ticket, stores: &[(String, StoreId)], ok: bool) {
        assert!(inner.cache.is_in_flight(ticket));
        inner.cache.end(ticket);
        let now = self.clock.now_ms();
        for (id, store) in stores {
            let input = if ok {
                Input::Stored { store: *store }
            } else {
                Input::NotStored {
                    store: *store,
                    error: GroupError::CoordinatorNotAvailable,
                }
            };
            // A group is never forgotten while one of its stores is under way.
            assert!(inner.registry.contains(id), "group {id} vanished mid-store");
            let write = self.step(inner, id, input, now);
            assert!(write.is_none(), "a store's outcome stores nothing more");
            let group = inner.registry.get(id).expect("still there");
            if group.state == GroupState::Dead && !group.store_under_way() && !inner.unloaded {
                inner.registry.remove(id);
                inner.timers.set(id, None);
            }
        }
    }

    // ---- Maintenance. ----

    /// The groups whose deadline passed, stepped; their stores to finish (every one, or the
    /// log's turn never passes them).
    pub(super) fn tick_steps(&self, now: Millis) -> Vec<PendingWrite> {
        let mut inner = self.lock();
        if inner.unloaded {
            return Vec::new();
        }
        let mut writes = Vec::new();
        for id in inner.timers.take_due(now) {
            if inner.registry.contains(&id) {
                writes.extend(self.step(&mut inner, &id, Input::Tick, now));
            }
        }
        writes
    }

    /// Steps every group whose deadline passed at `now` and waits for the stores that caused.
    pub async fn tick(&self, now: Millis) {
        for write in self.tick_steps(now) {
            if let Err(e) = self.finish(write).await {
                tracing::warn!(%e, "group membership not stored; retried by maintenance");
            }
        }
    }

    /// Stores every group whose membership differs from its last durable record (a store
    /// failed), in one write. The server calls it periodically.
    pub async fn store_dirty_groups(&self) -> Result<usize, WriteError> {
        let write = {
            let now = self.clock.now_ms();
            let mut inner = self.lock();
            let mut stores = Vec::new();
            for (id, group) in inner.registry.iter_mut() {
                if let Some(store) = group.store_if_dirty() {
                    stores.push((id.clone(), store));
                }
            }
            if stores.is_empty() {
                return Ok(0);
            }
            let mut write = Self::decide(&mut inner, Vec::new(), now);
            for (id, store) in stores {
                write.groups.push((id.clone(), store.record));
                write.stores.push((id, store.id));
            }
            write
        };
        let count = write.stores.len();
        self.finish(write).await?;
        Ok(count)
    }

    /// Expires offsets (KIP-211): decides which and appends their tombstones in one step,
    /// waits until they are durable, then removes empty groups with no offsets left and their
    /// stored membership, as Kafka does. Returns how many offsets expired.
    pub async fn expire_offsets(&self) -> Result<usize, WriteError> {
        let now = self.clock.now_ms();
        let write = {
            let mut inner = self.lock();
            let expired =
                inner
                    .cache
                    .expired(now, self.config.offsets_retention_ms, &inner.registry);
            let tombstones: Vec<OffsetWrite> = expired.into_iter().map(|k| (k, None)).collect();
            (!tombstones.is_empty()).then(|| Self::decide(&mut inner, tombstones, now))
        };
        let expired = match write {
            Some(write) => {
                let count = write.offsets.len();
                self.finish(write).await?;
                count
            }
            None => 0,
        };
        let write = {
            let mut inner = self.lock();
            let gone: Vec<String> = inner
                .registry
                .iter()
                .filter(|(id, group)| {
                    group.state == GroupState::Empty
                        && !group.store_under_way()
                        && !inner.cache.has_group(id)
                        && !inner.cache.is_busy(id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &gone {
                tracing::info!(group = %id, "empty group with no offsets removed");
                inner.registry.remove(id);
                inner.timers.set(id, None);
            }
            (!gone.is_empty()).then(|| {
                let mut write = Self::decide(&mut inner, Vec::new(), now);
                write.groups = gone.into_iter().map(|id| (id, None)).collect();
                write
            })
        };
        if let Some(write) = write {
            self.finish(write).await?;
        }
        Ok(expired)
    }

    // ---- Reads. ----

    /// Runs `f` on group `id`, if it exists.
    pub fn read_group<R>(
        &self,
        id: &str,
        f: impl FnOnce(&super::machine::Group) -> R,
    ) -> Option<R> {
        self.lock().registry.get(id).map(f)
    }

    /// Runs `f` over every group, in id order.
    pub fn for_each_group(&self, mut f: impl FnMut(&super::machine::Group)) {
        self.lock().registry.iter().for_each(|(_, g)| f(g));
    }

    /// Does the group exist (members or committed offsets)?
    pub fn group_exists(&self, id: &str) -> bool {
        let inner = self.lock();
        inner.registry.contains(id) || inner.cache.has_group(id)
    }

    /// The committed offset of one partition.
    pub fn committed(&self, key: &OffsetKey) -> Option<CommittedOffset> {
        self.lock().cache.get(key)
    }

    /// Does a transaction not yet ended hold an offset of this partition for the group (a
    /// TxnOffsetCommit waiting for its marker)? OffsetFetch with `require_stable` answers
    /// UNSTABLE_OFFSET_COMMIT for it then.
    pub fn has_pending_txn_offset(&self, key: &OffsetKey) -> bool {
        self.lock()
            .pending_txn
            .values()
            .any(|offsets| offsets.contains_key(key))
    }

    /// Every committed offset of a group.
    pub fn committed_for_group(&self, group: &str) -> Vec<(OffsetKey, CommittedOffset)> {
        self.lock().cache.of_group(group)
    }

    /// The writes in flight now (an OffsetFetch waits for them before it reads).
    pub fn in_flight(&self) -> Vec<Ticket> {
        self.lock().cache.in_flight()
    }

    pub fn is_in_flight(&self, write: Ticket) -> bool {
        self.lock().cache.is_in_flight(write)
    }

    // ---- Start. ----

    /// Replays the shard's partition of `__consumer_offsets` (once, before the shard serves):
    /// returns how many records it read.
    pub(super) async fn replay(&self) -> Result<usize, ReadError> {
        let log = &self.partition.log;
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        let mut records = 0;
        let mut stored_groups: BTreeMap<String, Option<GroupSnapshot>> = BTreeMap::new();
        while offset < end {
            let read = match log.read(offset, 1 << 20, None).await {
                Ok(read) => read,
                // Damage at rest (a flipped bit; no replica to repair from): the commits in the
                // damaged batch are gone, not the broker, and not the batches after it, which
                // recovery kept and reads serve: skip only the damage, loudly (a replay that
                // skipped the rest of the segment would hand consumers older commits).
                Err(ReadError::Corrupt {
                    segment,
                    position,
                    error,
                }) => {
                    let next = log.resume_after_damage(offset, &segment, position).await?;
                    tracing::error!(segment = %segment.display(), position, %error, resume_at = ?next,
                        "corrupt batch in {}-{}: the committed offsets and groups in it are lost",
                        offsets::OFFSETS_TOPIC, self.index);
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
                    if let Ok(Some(marker)) = crate::txn::marker::decode(batch) {
                        let commit = marker.control == crate::txn::marker::ControlType::Commit;
                        Self::resolve_txn(
                            &mut inner,
                            header.producer_id,
                            commit,
                            header.base_offset as u64,
                        );
                    }
                    continue;
                }
                let Some(parsed) = offsets::batch_records(batch, header.records_count) else {
                    tracing::warn!(
                        base_offset = header.base_offset,
                        "unreadable batch in {}-{}",
                        offsets::OFFSETS_TOPIC,
                        self.index
                    );
                    continue;
                };
                for offsets::BatchRecord {
                    offset_delta,
                    key,
                    value,
                } in parsed
                {
                    match key.as_deref().and_then(offsets::decode_record_key) {
                        Some(RecordKey::Offset(key)) => {
                            let value = value.as_deref().and_then(offsets::decode_value);
                            // Not the record's index: compaction leaves gaps inside a batch.
                            let at = header.base_offset as u64 + offset_delta;
                            inner.cache.apply(key, value, at);
                        }
                        Some(RecordKey::TxnOffset { producer_id, key }) => {
                            if let Some(value) = value.as_deref().and_then(offsets::decode_value) {
                                inner
                                    .pending_txn
                                    .entry(producer_id)
                                    .or_default()
                                    .insert(key, value);
                            }
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
                let deadline = inner.registry.restore(&id, stored, now).next_deadline();
                inner.timers.set(&id, deadline);
            }
        }
        for group in inner.cache.groups() {
            inner.registry.get_or_create(&group, now);
        }
        Ok(records)
    }
}

/// Kafka's `offsets.commit.timeout.ms`: how long a write to `__consumer_offsets` waits for
/// the in-sync replicas before it is answered COORDINATOR_NOT_AVAILABLE (the client retries).
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(5_000);

/// Waits until every in-sync replica of the offsets partition holds the write (below the high
/// watermark), as Kafka's coordinator appends with acks=-1: with `__consumer_offsets`
/// replicated, a commit acknowledged after the leader's own sync alone would be lost when a
/// follower that lacks it becomes coordinator. Errors as Kafka's `storeOffsets` maps them: a
/// lost leadership is NOT_COORDINATOR, a timeout COORDINATOR_NOT_AVAILABLE.
async fn wait_replicated(
    partition: &Partition,
    info: &crate::log::AppendInfo,
    leader_epoch: i32,
) -> Result<(), WriteError> {
    use crate::partition::ReplicationWaitError;
    if planted::is(Bug::OffsetCommitBeforeDurable) {
        return Ok(());
    }
    // min.insync.replicas is the produce path's check; the coordinator asks for the ISR alone.
    let wait = partition.wait_replicated(info, leader_epoch, 1);
    match tokio::time::timeout(OFFSETS_COMMIT_TIMEOUT, wait).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(ReplicationWaitError::Append(e))) => {
            Err(WriteError::Storage(ProduceError::Append(e)))
        }
        Ok(Err(ReplicationWaitError::NotLeader)) => {
            Err(WriteError::Group(GroupError::NotCoordinator))
        }
        Ok(Err(e @ ReplicationWaitError::NotEnoughReplicasAfterAppend { .. })) => {
            unreachable!("an ISR always holds its leader: {e}")
        }
        Err(_) => Err(WriteError::Group(GroupError::CoordinatorNotAvailable)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_pass_in_the_order_they_were_taken_whichever_finishes_first() {
        let mut turns = Turns::default();
        let (a, b, c) = (turns.take(), turns.take(), turns.take());
        turns.pass(b);
        assert_eq!(turns.turn, a, "b appended early: a still holds the turn");
        turns.pass(a);
        assert_eq!(turns.turn, c, "a and b are both past");
        turns.pass(c);
        assert_eq!(turns.turn, turns.next);
    }
}
