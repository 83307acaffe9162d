//! [`TxnCoordinator`]: the transactional ids this broker coordinates, one [`TxnShard`] per
//! partition of `__transaction_state` it leads.
//!
//! An id lives in partition `Utils.abs(transactionalId.hashCode) % partitionCount` (Kafka's
//! placement, the group coordinator's Java hash). The broker loads a shard when it becomes the
//! partition's leader and unloads it when it stops being one; a request for an id whose shard
//! is loading is answered COORDINATOR_LOAD_IN_PROGRESS, one whose partition this broker does
//! not lead NOT_COORDINATOR (the client asks FindCoordinator again).
//!
//! A prepared transaction is completed by a task of its own ([`TxnCoordinator::complete`]):
//! the markers go to every partition of the transaction, retried until each is written, and
//! then CompleteCommit/CompleteAbort is stored. A shard that loads finds the transactions its
//! previous coordinator prepared and completes them (Kafka's `onElection`); markers are
//! idempotent on the partitions, so writing one twice is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::machine::{self, End, Init, TopicPartition, TxnError, TxnMetadata, TxnState};
use super::shard::TxnShard;
use super::{Markers, TxnConfig, TxnHost};
use crate::clock::Clock;
use crate::group::coordinator::partition_for;
use crate::log::ReadError;
use crate::partition::Partition;

/// How long the completion of a transaction waits before it tries the markers (or the
/// Complete record) again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

enum Slot {
    Loading { load: u64 },
    Loaded(Arc<TxnShard>),
}

struct Shards {
    /// Partitions of `__transaction_state`; `None` until the topic exists.
    partition_count: Option<i32>,
    slots: BTreeMap<i32, Slot>,
    next_load: u64,
    stopped: bool,
}

pub struct TxnCoordinator {
    clock: Arc<dyn Clock>,
    config: TxnConfig,
    host: OnceLock<Weak<dyn TxnHost>>,
    timer_started: AtomicBool,
    shards: Mutex<Shards>,
}

/// What InitProducerId answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl TxnCoordinator {
    pub fn new(clock: Arc<dyn Clock>, config: TxnConfig) -> Arc<TxnCoordinator> {
        assert!(config.num_partitions > 0);
        assert!(config.max_timeout_ms > 0);
        Arc::new(TxnCoordinator {
            clock,
            config,
            host: OnceLock::new(),
            timer_started: AtomicBool::new(false),
            shards: Mutex::new(Shards {
                partition_count: None,
                slots: BTreeMap::new(),
                next_load: 0,
                stopped: false,
            }),
        })
    }

    /// The broker this coordinator runs in (set once, right after the broker is built).
    pub fn set_host(&self, host: Weak<dyn TxnHost>) {
        if self.host.set(host).is_err() {
            panic!("the coordinator's host is set once");
        }
    }

    fn host(&self) -> Result<Arc<dyn TxnHost>, TxnError> {
        self.host
            .get()
            .and_then(Weak::upgrade)
            .ok_or(TxnError::CoordinatorNotAvailable)
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    fn shards(&self) -> std::sync::MutexGuard<'_, Shards> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- Placement and leadership. ----

    /// `__transaction_state` exists with `count` partitions; ids are placed among them.
    pub fn set_partition_count(&self, count: i32) {
        assert!(count > 0);
        let mut shards = self.shards();
        if let Some(previous) = shards.partition_count {
            assert_eq!(previous, count, "the partition count never changes");
        }
        shards.partition_count = Some(count);
    }

    pub fn partition_count(&self) -> Option<i32> {
        self.shards().partition_count
    }

    /// The `__transaction_state` partition of `transactional_id`.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        let count = self.partition_count().unwrap_or(self.config.num_partitions);
        partition_for(transactional_id, count)
    }

    /// The partitions whose shards are loaded, in order.
    pub fn loaded_shards(&self) -> Vec<i32> {
        self.shards()
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Loaded(_)))
            .map(|(i, _)| *i)
            .collect()
    }

    fn loaded(&self) -> Vec<Arc<TxnShard>> {
        self.shards()
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Loaded(shard) => Some(Arc::clone(shard)),
                Slot::Loading { .. } => None,
            })
            .collect()
    }

    /// This broker leads `__transaction_state` partition `index` now: its ids answer
    /// COORDINATOR_LOAD_IN_PROGRESS until the returned future has replayed the partition; then
    /// the transactions found prepared are completed. A shard loaded or loading is left alone.
    pub fn load_shard(
        self: &Arc<Self>,
        index: i32,
        partition: Arc<Partition>,
    ) -> impl std::future::Future<Output = Result<usize, ReadError>> + Send + 'static {
        let load = {
            let mut shards = self.shards();
            let count = shards
                .partition_count
                .expect("the partition count is set before shards load");
            assert!((0..count).contains(&index));
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
            let shard = Arc::new(TxnShard::new(index, partition, Arc::clone(&this.clock)));
            let replayed = shard.replay().await;
            {
                let mut shards = this.shards();
                let current = matches!(shards.slots.get(&index),
                    Some(Slot::Loading { load: l }) if *l == load);
                if !current {
                    return Ok(0);
                }
                match &replayed {
                    Ok(records) => {
                        shards.slots.insert(index, Slot::Loaded(Arc::clone(&shard)));
                        tracing::info!(
                            partition = index,
                            records,
                            coordinator_epoch = shard.coordinator_epoch(),
                            "transaction coordinator loaded"
                        );
                    }
                    Err(e) => {
                        shards.slots.remove(&index);
                        tracing::warn!(partition = index, %e, "transaction state not loaded");
                    }
                }
            }
            if replayed.is_ok() {
                this.ensure_timer();
                let prepared = shard.ids_where(|m| {
                    matches!(m.state(), TxnState::PrepareCommit | TxnState::PrepareAbort)
                });
                for id in prepared {
                    tracing::info!(transactional_id = %id, "completing a transaction prepared before the load");
                    tokio::spawn(Arc::clone(&this).complete(Arc::clone(&shard), id));
                }
            }
            replayed
        }
    }

    /// This broker no longer leads partition `index` (Kafka's `onResignation`).
    pub fn unload_shard(&self, index: i32) {
        let removed = self.shards().slots.remove(&index);
        if let Some(Slot::Loaded(shard)) = removed {
            shard.resign();
            tracing::info!(partition = index, "transaction coordinator unloaded");
        }
    }

    /// Shutdown: every shard resigns; later requests answer NOT_COORDINATOR.
    pub fn unload(&self) {
        let shards = {
            let mut shards = self.shards();
            shards.stopped = true;
            std::mem::take(&mut shards.slots)
        };
        for slot in shards.into_values() {
            if let Slot::Loaded(shard) = slot {
                shard.resign();
            }
        }
    }

    fn route(&self, id: &str) -> Result<Arc<TxnShard>, TxnError> {
        let shards = self.shards();
        if shards.stopped {
            return Err(TxnError::NotCoordinator);
        }
        let Some(count) = shards.partition_count else {
            return Err(TxnError::CoordinatorNotAvailable);
        };
        match shards.slots.get(&partition_for(id, count)) {
            Some(Slot::Loaded(shard)) => Ok(Arc::clone(shard)),
            Some(Slot::Loading { .. }) => Err(TxnError::CoordinatorLoadInProgress),
            None => Err(TxnError::NotCoordinator),
        }
    }

    // ---- Requests. ----

    /// InitProducerId with a transactional id.
    pub async fn init_producer_id(
        self: &Arc<Self>,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<ProducerIdAndEpoch, TxnError> {
        machine::check_timeout(timeout_ms, self.config.max_timeout_ms)?;
        let shard = self.route(id)?;
        if shard.with(id, |_| ())?.is_none() {
            let producer_id = self.allocate().await?;
            let now = self.clock.now_ms();
            shard.insert_if_absent(TxnMetadata::new(id, producer_id, timeout_ms, now))?;
        }
        let mut fresh = None;
        loop {
            let now = self.clock.now_ms();
            let decided = shard
                .with(id, |meta| {
                    let decision = meta.init_producer_id(timeout_ms, expected, fresh, now)?;
                    if let Init::Bump(t) | Init::FenceAndAbort(t) = &decision {
                        meta.begin(t);
                    }
                    Ok(decision)
                })?
                .ok_or(TxnError::NotCoordinator)??;
            match decided {
                Init::NeedsProducerId => fresh = Some(self.allocate().await?),
                Init::Current {
                    producer_id,
                    producer_epoch,
                } => {
                    return Ok(ProducerIdAndEpoch {
                        producer_id,
                        producer_epoch,
                    })
                }
                Init::Bump(transit) => {
                    let answer = ProducerIdAndEpoch {
                        producer_id: transit.producer_id,
                        producer_epoch: transit.producer_epoch,
                    };
                    shard.store(id, transit).await?;
                    tracing::debug!(
                        transactional_id = id,
                        ?answer,
                        "transactional producer initialised"
                    );
                    return Ok(answer);
                }
                Init::FenceAndAbort(transit) => {
                    tracing::info!(
                        transactional_id = id,
                        epoch = transit.producer_epoch,
                        "fencing the producer of a transaction in flight and aborting it"
                    );
                    shard.store(id, transit).await?;
                    tokio::spawn(Arc::clone(self).complete(shard, id.to_string()));
                    return Err(TxnError::ConcurrentTransactions);
                }
            }
        }
    }

    async fn allocate(&self) -> Result<i64, TxnError> {
        self.host()?.allocate_producer_id().await.map_err(|e| {
            tracing::warn!(%e, "no producer id for a transactional id");
            TxnError::CoordinatorNotAvailable
        })
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's offsets partition).
    pub async fn add_partitions(
        self: &Arc<Self>,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: BTreeSet<TopicPartition>,
    ) -> Result<(), TxnError> {
        let shard = self.route(id)?;
        let now = self.clock.now_ms();
        let decided = shard
            .with(id, |meta| {
                let transit = meta.add_partitions(producer_id, producer_epoch, &partitions, now)?;
                if let Some(t) = &transit {
                    meta.begin(t);
                }
                Ok(transit)
            })?
            .ok_or(TxnError::InvalidProducerIdMapping {
                given: producer_id,
                current: -1,
            })??;
        match decided {
            None => Ok(()),
            Some(transit) => shard.store(id, transit).await,
        }
    }

    /// KIP-890 part 1: may this producer write transactionally to `partition`? Only if the
    /// partition is in its ongoing transaction. `None` when this broker does not coordinate
    /// the id (the check is left to that coordinator).
    pub fn verify_partition(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partition: &TopicPartition,
    ) -> Option<Result<(), TxnError>> {
        let shard = self.route(id).ok()?;
        match shard.with(id, |meta| {
            meta.verify_partition(producer_id, producer_epoch, partition)
        }) {
            Ok(Some(result)) => Some(result),
            Ok(None) => Some(Err(TxnError::InvalidProducerIdMapping {
                given: producer_id,
                current: -1,
            })),
            Err(_) => None,
        }
    }

    /// KIP-890 part 1 for a partition leader (AddPartitionsToTxn v4+ `verify_only`, or the
    /// leader's own call when this broker coordinates the id): the partitions of `partitions`
    /// not in the producer's transaction (see [`TxnMetadata::verify_partitions`]). An unknown
    /// id is INVALID_PRODUCER_ID_MAPPING, as in Kafka.
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeSet<TopicPartition>, TxnError> {
        let shard = self.route(id)?;
        shard
            .with(id, |meta| {
                meta.verify_partitions(producer_id, producer_epoch, partitions)
            })?
            .unwrap_or(Err(TxnError::InvalidProducerIdMapping {
                given: producer_id,
                current: -1,
            }))
    }

    /// EndTxn: answered once the outcome is durable (PrepareCommit/PrepareAbort); the markers
    /// and the Complete record follow in a task of their own, as in Kafka. Answers the
    /// producer id and epoch the producer continues with (bumped with transaction version 2,
    /// `client_txn_version` 2, see [`machine`]).
    pub async fn end_txn(
        self: &Arc<Self>,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        client_txn_version: i16,
    ) -> Result<ProducerIdAndEpoch, TxnError> {
        let shard = self.route(id)?;
        let mut fresh = None;
        loop {
            let now = self.clock.now_ms();
            let decided = shard
                .with(id, |meta| {
                    let end = meta.end_txn_as(
                        producer_id,
                        producer_epoch,
                        commit,
                        client_txn_version,
                        fresh,
                        now,
                    )?;
                    match &end {
                        End::Prepare(t) => meta.begin(t),
                        End::AlreadyComplete | End::NeedsProducerId => {}
                    }
                    Ok((end, machine::ended_as(&meta.current)))
                })?
                .ok_or(TxnError::InvalidProducerIdMapping {
                    given: producer_id,
                    current: -1,
                })??;
            let answer = |(producer_id, producer_epoch)| ProducerIdAndEpoch {
                producer_id,
                producer_epoch,
            };
            match decided {
                (End::NeedsProducerId, _) => fresh = Some(self.allocate().await?),
                (End::AlreadyComplete, ended) => return Ok(answer(ended)),
                (End::Prepare(transit), _) => {
                    let ended = machine::ended_as(&transit);
                    shard.store(id, transit).await?;
                    tokio::spawn(Arc::clone(self).complete(shard, id.to_string()));
                    return Ok(answer(ended));
                }
            }
        }
    }

    /// Completes the prepared transaction of `id`: markers on every partition, then the
    /// Complete record; retried until done or until the shard is unloaded (its next
    /// coordinator completes it).
    pub async fn complete(self: Arc<Self>, shard: Arc<TxnShard>, id: String) {
        loop {
            if shard.is_resigned() {
                return;
            }
            let markers = shard.with(&id, |meta| match meta.state() {
                TxnState::PrepareCommit | TxnState::PrepareAbort if meta.pending.is_none() => {
                    Some(Markers {
                        producer_id: meta.current.producer_id,
                        producer_epoch: meta.current.producer_epoch,
                        commit: meta.state() == TxnState::PrepareCommit,
                        coordinator_epoch: shard.coordinator_epoch(),
                        partitions: meta.current.partitions.clone(),
                    })
                }
                _ => None,
            });
            let Ok(Some(Some(mut markers))) = markers else {
                return;
            };
            let Ok(host) = self.host() else {
                return;
            };
            while !markers.partitions.is_empty() {
                let left = host.write_markers(markers.clone()).await;
                if left.is_empty() {
                    break;
                }
                if shard.is_resigned() {
                    return;
                }
                tracing::debug!(transactional_id = %id, left = left.len(), "markers to retry");
                markers.partitions = left;
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
            drop(host);
            let now = self.clock.now_ms();
            let transit = shard.with(&id, |meta| {
                if meta.pending.is_some() {
                    return None;
                }
                let t = meta.complete(now);
                meta.begin(&t);
                Some(t)
            });
            let Ok(Some(Some(transit))) = transit else {
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            };
            let state = transit.state;
            match shard.store(&id, transit).await {
                Ok(()) => {
                    tracing::debug!(transactional_id = %id, ?state, "transaction complete");
                    return;
                }
                Err(TxnError::NotCoordinator) => return,
                Err(e) => {
                    tracing::info!(transactional_id = %id, %e, "complete record not stored; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
    }

    // ---- Timeouts. ----

    /// One timer for both of the coordinator's periodic jobs: it ticks at the shorter of the
    /// two intervals and runs each job once its own interval has passed in ticks (so with
    /// Kafka's defaults it wakes exactly as often as the abort check alone did).
    fn ensure_timer(self: &Arc<Self>) {
        if self.timer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let abort_every = self.config.abort_check_interval_ms.max(1);
        let remove_every = self.config.remove_expired_interval_ms.max(1);
        let tick = abort_every.min(remove_every);
        tokio::spawn(async move {
            let (mut since_abort, mut since_remove) = (0u64, 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(tick)).await;
                let Some(this) = weak.upgrade() else {
                    return;
                };
                if this.shards().stopped {
                    return;
                }
                since_abort += tick;
                since_remove += tick;
                if since_abort >= abort_every {
                    since_abort = 0;
                    this.abort_expired().await;
                }
                if since_remove >= remove_every {
                    since_remove = 0;
                    this.remove_expired_ids().await;
                }
            }
        });
    }

    /// Removes every transactional id past `transactional.id.expiration.ms` (Kafka's
    /// `removeExpiredTransactionalIds`): a tombstone in `__transaction_state`, then the id is
    /// forgotten; its next InitProducerId starts afresh with a new producer id. Returns how
    /// many it removed.
    pub async fn remove_expired_ids(self: &Arc<Self>) -> usize {
        let expiration = self.config.id_expiration_ms;
        let mut removed = 0;
        for shard in self.loaded() {
            let now = self.clock.now_ms();
            for id in shard.ids_where(|m| m.is_expired(now, expiration)) {
                // Checked again under the lock at the shard's own time: a request may have
                // touched the id since.
                match shard
                    .remove(&id, |m| m.is_expired(shard.now_ms(), expiration))
                    .await
                {
                    Ok(true) => {
                        tracing::info!(transactional_id = %id, expiration_ms = expiration,
                            "transactional id expired and removed");
                        removed += 1;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(transactional_id = %id, %e, "expired id not removed; next round");
                    }
                }
            }
        }
        removed
    }

    /// Aborts every transaction past its timeout, fencing its producer (Kafka's
    /// `abortTimedOutTransactions`). Returns how many it aborted.
    pub async fn abort_expired(self: &Arc<Self>) -> usize {
        let mut aborted = 0;
        for shard in self.loaded() {
            let now = self.clock.now_ms();
            for id in shard.ids_where(|m| m.abort_expired(now).is_some()) {
                let transit = shard.with(&id, |meta| {
                    let t = meta.abort_expired(now)?;
                    meta.begin(&t);
                    Some(t)
                });
                let Ok(Some(Some(transit))) = transit else {
                    continue;
                };
                tracing::info!(transactional_id = %id, timeout_ms = transit.timeout_ms,
                    "aborting a transaction past its timeout");
                if shard.store(&id, transit).await.is_ok() {
                    aborted += 1;
                    tokio::spawn(Arc::clone(self).complete(Arc::clone(&shard), id));
                }
            }
        }
        aborted
    }

    // ---- Reads. ----

    /// The metadata of `id`, if this broker coordinates it and it exists.
    pub fn describe(&self, id: &str) -> Result<Option<TxnMetadata>, TxnError> {
        let shard = self.route(id)?;
        shard.with(id, |m| m.clone())
    }

    /// Is a shard of this broker still loading (ListTransactions answers
    /// COORDINATOR_LOAD_IN_PROGRESS then, as Kafka does)?
    pub fn is_loading(&self) -> bool {
        self.shards()
            .slots
            .values()
            .any(|s| matches!(s, Slot::Loading { .. }))
    }

    /// The clock the coordinator's times come from (ListTransactions' duration filter).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Every id of every loaded shard, in id order.
    pub fn list(&self) -> Vec<TxnMetadata> {
        let mut all: Vec<TxnMetadata> = self.loaded().iter().flat_map(|s| s.snapshot()).collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }
}
