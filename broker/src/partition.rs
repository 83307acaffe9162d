//! A partition replica: its log, its [`ReplicaState`] (role, leader epoch, high watermark,
//! followers, ISR), the notifications parked fetches wait on, and (on a leader) the idempotent
//! producers' state. Single broker today: every partition is led by this broker with
//! ISR = {itself}; the replication work drives the replica state from the controller's image.
//!
//! # High watermark
//! Consumers read below the high watermark, kept by the replica state apart from the log end.
//! The partition feeds it the log's offsets whenever they may have moved (and whenever a reader
//! asks), and wakes the fetches parked on this partition when it moves. Under the durable
//! policy only synced batches count, so nothing a consumer saw can vanish in a crash; under the
//! lazy policy every appended batch does (Kafka's single-broker behaviour).
//!
//! # Idempotent producers
//! A record set whose batches carry a producer id is checked against the
//! [`ProducerStateManager`] (see [`crate::txn::producer_state`] for Kafka's rules) and appended
//! under one per-partition lock, so two produce requests cannot both pass the check before
//! either is appended. The state is updated only after the append succeeded, from the bytes as
//! stored. On open, and after an in-place recovery, the state is rebuilt from the batches the
//! recovered log holds, so batches a crash or a disk failure took away leave nothing behind: a
//! retry of such a batch is appended again, never answered as a duplicate of a batch that is
//! gone. If the rebuild fails the state is dropped, and idempotent appends are refused
//! (retriably) until a rebuild succeeds.
//!
//! # Transactions
//! The same state tracks each producer's open transaction (see [`crate::txn`]): a client's
//! transactional batch opens one, and only [`Partition::write_marker`] (the transaction
//! coordinator's WriteTxnMarkers) closes it; a client may never write a control batch
//! (INVALID_RECORD, as Kafka's `LogValidator`). A client's batch that would open a
//! transaction needs a verification guard ([`Partition::start_transaction_verification`],
//! KIP-890 part 1) that no marker or transactional batch of its producer has cleared since.
//! [`Partition::last_stable_offset`] is where read_committed consumers stop. The rebuild on open replays markers too, so open
//! transactions and the LSO come back after a restart or a crash.
//!
//! The rebuild starts from the newest valid producer snapshot at or below the log end
//! ([`crate::txn::producer_snapshot`]) and replays only the batches after it, so opening a
//! partition reads the tail of its log, not all of it. A snapshot is written when the log rolls
//! a segment and at clean shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::log::batch::{self, BatchHeader};
use crate::log::cleaner::{CleanError, CleanStats, OffsetMap, Throttler};
use crate::log::leader_epoch::LeaderEpochCache;
use crate::log::{
    AppendError, AppendInfo, FlushPolicy, FollowerAppendError, Log, ReadError, TruncateError,
};
use crate::planted::{self, Bug};
use crate::replica::{BrokerId, HighWatermarkBasis, LocalLog, PartitionWatch, ReplicaState, Role};
use crate::txn::marker::{self, Marker};
use crate::txn::producer_snapshot;
use crate::txn::producer_state::{
    AppendDecision, CompletedTxn, MarkerRefused, ProducerStateManager, SequenceError,
    TxnVerification, VerificationGuard,
};
use crate::txn::txn_index::{self, AbortedTxn, AbortedTxnIndex};

/// Bytes per read while rebuilding the producers' state on open.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// One partition of a topic, as this broker hosts it.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Log,
    /// Role, leader epoch, high watermark, ISR. Locked briefly, never across an await.
    replica: std::sync::Mutex<ReplicaState>,
    /// Wakes the fetches parked on this partition.
    watch: PartitionWatch,
    /// The idempotent producers' state. Held from the sequence check to the end of the append.
    /// `None`: it must be rebuilt from the log before the next idempotent append.
    producers: tokio::sync::Mutex<Option<ProducerStateManager>>,
    /// A background sync task is running (durable policy).
    sync_scheduled: AtomicBool,
    /// The active segment base when the last producer snapshot was taken.
    snapshot_segment_base: AtomicU64,
    /// The snapshot offset the producer state was last loaded from (`u64::MAX`: rebuilt from
    /// the log start).
    loaded_from_snapshot: AtomicU64,
    /// The aborted transactions (see [`crate::txn::txn_index`]). Changed only with the
    /// producers' lock held, read without it.
    aborted: std::sync::Mutex<AbortedTxnIndex>,
    /// Segments whose `.txnindex` has entries not yet synced (synced before each snapshot).
    txn_index_unsynced: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// An aborted-transaction entry failed to reach its file: no snapshot may be written past
    /// it, so the next rebuild replays its marker from an older snapshot and writes it again.
    txn_index_failed: AtomicBool,
    /// The last KIP-890 verification guard handed out here. Kept outside the producers' state,
    /// which a rebuild replaces, so a guard is never handed out twice.
    last_verification_guard: AtomicU64,
}

/// A produce to this partition failed; nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The idempotent producer's epoch or sequence does not fit what the partition holds.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// This broker does not lead the partition (any more): the client refreshes its metadata.
    #[error("this broker is not the partition's leader")]
    NotLeader,
    /// A transaction marker from a fenced producer epoch or coordinator epoch.
    #[error(transparent)]
    Marker(#[from] MarkerRefused),
}

/// An acks=all produce appended on the leader did not reach the in-sync replicas.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationWaitError {
    /// The local append failed to become durable.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Leadership moved (or a new epoch began) before the ISR had the batch: it may be lost.
    #[error("leadership changed before the in-sync replicas had the batch")]
    NotLeader,
    /// Every ISR member has the batch, but the ISR is now smaller than `min.insync.replicas`
    /// (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    #[error("the ISR shrank to {isr} below min.insync.replicas {min_insync_replicas}")]
    NotEnoughReplicasAfterAppend {
        isr: usize,
        min_insync_replicas: usize,
    },
}

/// Why a follower's fetch position was not recorded by the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FollowerFetchError {
    /// This broker does not lead the partition. NOT_LEADER_OR_FOLLOWER.
    #[error("not the leader")]
    NotLeader,
    /// The fetching broker is not one of the partition's replicas. NOT_LEADER_OR_FOLLOWER.
    #[error("broker {0} is not a replica of the partition")]
    NotAReplica(BrokerId),
    /// The fetch came from an incarnation of the follower older than one the leader knows
    /// (KIP-903). NOT_LEADER_OR_FOLLOWER.
    #[error(transparent)]
    StaleBrokerEpoch(#[from] crate::replica::state::StaleBrokerEpoch),
    /// The fetch offset is past the leader's log end (the follower has a divergent tail to
    /// truncate) or below its log start. OFFSET_OUT_OF_RANGE.
    #[error(
        "fetch offset {offset} outside the leader's log [{log_start_offset}, {log_end_offset}]"
    )]
    OutOfRange {
        offset: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    /// Opens a partition over its (recovered) log, led by this broker (`local_id`) alone in
    /// epoch 0, rebuilding the idempotent producers' state from every batch the log holds.
    pub async fn open(
        topic: String,
        index: i32,
        log: Log,
        local_id: BrokerId,
    ) -> Result<Partition, ReadError> {
        let partition = Partition::open_unassigned(topic, index, log, local_id).await?;
        // One broker, one epoch (0), as before a controller hands out leaderships.
        partition.become_leader(0, &[local_id], &[local_id]).await;
        Ok(partition)
    }

    /// Opens a partition over its (recovered) log with no role yet (offline, epoch -1): the
    /// catalog then applies the role and leader epoch the cluster image gives it, whatever its
    /// epoch, without passing through a made-up one.
    pub async fn open_unassigned(
        topic: String,
        index: i32,
        log: Log,
        local_id: BrokerId,
    ) -> Result<Partition, ReadError> {
        let (producers, snapshot, aborted) = rebuild_producer_state(&log).await?;
        tracing::debug!(topic = %topic, partition = index, producers = producers.len(), ?snapshot,
            "producer state rebuilt from the log");
        let basis = match log.config().flush {
            FlushPolicy::Durable => HighWatermarkBasis::DurableEnd,
            FlushPolicy::Lazy { .. } => HighWatermarkBasis::LogEnd,
        };
        let replica = ReplicaState::new(local_id, basis, local_log(&log));
        let snapshot_segment_base = AtomicU64::new(log.active_segment_base());
        Ok(Partition {
            topic,
            index,
            log,
            replica: std::sync::Mutex::new(replica),
            watch: PartitionWatch::default(),
            producers: tokio::sync::Mutex::new(Some(producers)),
            sync_scheduled: AtomicBool::new(false),
            snapshot_segment_base,
            loaded_from_snapshot: AtomicU64::new(snapshot.unwrap_or(u64::MAX)),
            aborted: std::sync::Mutex::new(aborted),
            txn_index_unsynced: std::sync::Mutex::new(Default::default()),
            txn_index_failed: AtomicBool::new(false),
            last_verification_guard: AtomicU64::new(0),
        })
    }

    /// The producer snapshot the state was last rebuilt from, if any (for tests and logs).
    pub fn producer_state_snapshot(&self) -> Option<u64> {
        Some(self.loaded_from_snapshot.load(Ordering::Acquire)).filter(|&o| o != u64::MAX)
    }

    /// Writes a producer snapshot at the log end, under the producers' lock (idempotent
    /// appends change the state only under it, so it covers exactly the batches below that
    /// end). A failure is only logged: snapshots save start-up time, nothing else.
    pub async fn write_producer_snapshot(&self) {
        let producers = self.producers.lock().await;
        if let Some(state) = producers.as_ref() {
            self.write_snapshot_of(state).await;
        }
    }

    /// Called with the producers' lock held; `state` is what it guards.
    async fn write_snapshot_of(&self, state: &ProducerStateManager) {
        // Offline: the log end may hold batches a recovery will drop, or the directory may be
        // going away with a deleted topic. No directory: never written, so no producer (a
        // snapshot of nothing would make the directory for nothing).
        if self.log.is_offline() || !self.log.is_dir_made() {
            return;
        }
        if !self.sync_txn_index().await {
            return;
        }
        let offset = self.log.log_end_offset();
        let written = producer_snapshot::write(
            self.log.disk().as_ref(),
            self.log.dir(),
            state,
            offset,
            self.log.log_start_offset(),
        )
        .await;
        match written {
            Ok(()) => tracing::debug!(partition = ?self, offset, "producer snapshot written"),
            Err(e) => {
                tracing::warn!(partition = ?self, offset, %e, "producer snapshot not written")
            }
        }
    }

    /// Makes every aborted-transaction entry appended so far durable (the module doc of
    /// [`crate::txn::txn_index`]). Returns whether a snapshot may be written.
    async fn sync_txn_index(&self) -> bool {
        if self.txn_index_failed.load(Ordering::Acquire) {
            return false;
        }
        let bases: Vec<u64> = std::mem::take(&mut *self.lock_txn_index_unsynced())
            .into_iter()
            .collect();
        if bases.is_empty() {
            return true;
        }
        match txn_index::sync(self.log.disk().as_ref(), self.log.dir(), &bases).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(partition = ?self, %e, "aborted-transaction index not synced: no producer snapshot");
                self.lock_txn_index_unsynced().extend(bases);
                false
            }
        }
    }

    fn lock_txn_index_unsynced(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.txn_index_unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn lock_aborted(&self) -> std::sync::MutexGuard<'_, AbortedTxnIndex> {
        self.aborted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A rebuild's index replaces the old one; its files are durable up to the snapshot it
    /// started from, and the replay's appends are synced with the next snapshot.
    fn set_aborted(&self, aborted: AbortedTxnIndex) {
        *self.lock_aborted() = aborted;
        self.txn_index_failed.store(false, Ordering::Release);
    }

    /// Records a transaction a marker just closed (called with the producers' lock held,
    /// `state` being what it guards): an aborted one goes to the index, in memory at once and
    /// to its segment's file.
    async fn record_completed(
        &self,
        state: &ProducerStateManager,
        completed: Option<CompletedTxn>,
    ) {
        let Some(completed) = completed.filter(|c| c.aborted) else {
            return;
        };
        let entry = AbortedTxn {
            producer_id: completed.producer_id,
            first_offset: completed.first_offset,
            last_offset: completed.last_offset,
            last_stable_offset: state.stable_offset_after(&completed),
        };
        let bases = self.log.segment_bases().await;
        let base = segment_of(&bases, completed.last_offset);
        self.lock_aborted().add(base, entry);
        self.lock_txn_index_unsynced().insert(base);
        if let Err(e) =
            txn_index::append(self.log.disk().as_ref(), self.log.dir(), base, &entry).await
        {
            tracing::warn!(partition = ?self, %e, "aborted transaction not written to its index file: no producer snapshot until the next rebuild");
            self.txn_index_failed.store(true, Ordering::Release);
        }
    }

    /// Cleans the partition's log once if it is compacted (see `log::cleaner`), below its last
    /// stable offset, dropping aborted transactions' records; then the in-memory
    /// aborted-transaction index takes what the cleaned segments' `.txnindex` files hold.
    pub async fn clean_log(
        &self,
        map: &mut OffsetMap,
        throttler: &mut Throttler,
    ) -> Result<Option<CleanStats>, CleanError> {
        // Under the producers' lock every marker below the LSO has its entry recorded, and
        // a transaction aborted later began at or past the LSO: outside the cleaned range.
        let lso = self
            .last_stable_offset()
            .await
            .map_err(|e| CleanError::Offline(e.to_string()))?;
        let aborted = self
            .lock_aborted()
            .collect(self.log.log_start_offset(), lso);
        let stats = self
            .log
            .clean_transactional(lso, &aborted, map, throttler)
            .await?;
        if let Some(stats) = &stats {
            // Serialised with the markers and rebuilds that change the index.
            let _producers = self.producers.lock().await;
            let mut index = self.lock_aborted();
            for cleaned in &stats.txn_index {
                index.replace_cleaned(cleaned.base_offset, cleaned.next_offset, &cleaned.aborted);
            }
        }
        Ok(stats)
    }

    /// The aborted transactions a read_committed fetch of `[fetch_offset, upper_bound)` must
    /// report (see [`AbortedTxnIndex::collect`]).
    pub fn aborted_transactions(&self, fetch_offset: u64, upper_bound: u64) -> Vec<AbortedTxn> {
        self.lock_aborted().collect(fetch_offset, upper_bound)
    }

    /// Takes a producer snapshot if the log rolled a segment since the last one.
    async fn snapshot_if_rolled(&self) {
        let base = self.log.active_segment_base();
        let last = self.snapshot_segment_base.load(Ordering::Acquire);
        if base > last
            && self
                .snapshot_segment_base
                .compare_exchange(last, base, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.write_producer_snapshot().await;
        }
    }

    /// Clean shutdown: a producer snapshot at the log end, then the log's clean close, with the
    /// producers' lock held across both so no idempotent append slips in between.
    pub async fn close(&self) -> Result<(), crate::log::LogOffline> {
        let producers = self.producers.lock().await;
        if let Some(state) = producers.as_ref() {
            self.write_snapshot_of(state).await;
        }
        self.log.close().await
    }

    /// If the log went offline after an I/O error, recovers it in place and rebuilds the
    /// producer state from what survived. Returns whether it recovered. The broker's maintenance
    /// calls this periodically, so a transient disk failure heals without a restart.
    pub async fn recover_if_offline(&self) -> bool {
        if !self.log.is_failed() {
            return false;
        }
        // Hold the producer state across the reopen so no idempotent append checks against
        // state from before the failure.
        let mut producers = self.producers.lock().await;
        if !self.log.is_failed() {
            // Another caller recovered it while this one waited for the lock.
            return false;
        }
        // Offline before the reopen publishes the recovered offsets: a reader in between must
        // not take them for a leader's log going back.
        let follower = {
            let mut replica = self.replica();
            replica.go_offline();
            matches!(replica.resumes_as(), Some(Role::Follower { .. }))
        };
        // A follower of a replicated partition copies its leader: its recovery skips nothing
        // (see `Log::reopen_as_follower`). A leader keeps the skip: it resumes in the same
        // leader epoch, and its followers may hold the offsets it lost.
        let reopened = if follower && self.log.is_replicated() {
            self.log.reopen_as_follower().await
        } else {
            self.log.reopen().await
        };
        match reopened {
            Ok(true) => {
                *producers = match rebuild_producer_state(&self.log).await {
                    Ok((rebuilt, snapshot, aborted)) => {
                        self.loaded_from_snapshot
                            .store(snapshot.unwrap_or(u64::MAX), Ordering::Release);
                        self.set_aborted(aborted);
                        Some(rebuilt)
                    }
                    Err(e) => {
                        // The old state may hold batches the recovery dropped: a retry of one
                        // would be answered as a duplicate. Rebuild before the next use.
                        tracing::warn!(partition = ?self, %e, "producer state not rebuilt after recovery");
                        None
                    }
                };
                {
                    // The replica comes back in its role and epoch; the recovered log is where
                    // its high watermark starts again (in-place recovery restarts the replica).
                    let mut replica = self.replica();
                    replica.update_local_log(local_log(&self.log));
                    replica.come_back_online();
                    replica.maybe_increment_high_watermark();
                }
                // Fetches parked here must see the recovered log (and any error it cleared).
                self.watch.high_watermark_moved();
                self.watch.log_end_moved();
                true
            }
            Ok(false) => {
                let mut replica = self.replica();
                replica.update_local_log(local_log(&self.log));
                replica.come_back_online();
                false
            }
            Err(e) => {
                tracing::debug!(partition = ?self, %e, "offline log still cannot be recovered");
                false
            }
        }
    }

    /// A copy of the idempotent producers' state, for tests and diagnostics.
    pub async fn producer_state(&self) -> Result<ProducerStateManager, ProduceError> {
        Ok(self.producers_locked().await?.clone())
    }

    /// The producer state, locked, rebuilt first if a recovery left it stale.
    async fn producers_locked(
        &self,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, ProducerStateManager>, ProduceError> {
        let mut producers = self.producers.lock().await;
        if producers.is_none() {
            let (rebuilt, snapshot, aborted) =
                rebuild_producer_state(&self.log).await.map_err(|e| {
                    AppendError::Offline(format!("producer state cannot be rebuilt: {e}"))
                })?;
            self.loaded_from_snapshot
                .store(snapshot.unwrap_or(u64::MAX), Ordering::Release);
            self.set_aborted(aborted);
            *producers = Some(rebuilt);
        }
        Ok(tokio::sync::MutexGuard::map(producers, |p| {
            p.as_mut().expect("rebuilt above")
        }))
    }

    fn durable_policy(&self) -> bool {
        self.log.flush_policy() == FlushPolicy::Durable
    }

    fn replica(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the replica state, for tests, diagnostics and the simulator's invariants.
    pub fn replica_state(&self) -> ReplicaState {
        self.replica().clone()
    }

    /// How many replicas are in the ISR: what an acks=all produce checks against
    /// `min.insync.replicas` (without copying the replica state per request).
    pub fn isr_size(&self) -> usize {
        self.replica().isr().len()
    }

    /// The notifications fetches parked on this partition wait on.
    pub fn watch(&self) -> &PartitionWatch {
        &self.watch
    }

    /// Restores the HW a restart forgot (see [`ReplicaState::restore_high_watermark`]); for
    /// the catalog, between opening the partition and giving it its role.
    pub fn restore_high_watermark(&self, high_watermark: u64) {
        let mut replica = self.replica();
        replica.update_local_log(local_log(&self.log));
        replica.restore_high_watermark(high_watermark);
    }

    /// KIP-966's high-watermark rule for this partition: `Some(min.insync.replicas)` when
    /// eligible leader replicas are on (see [`ReplicaState::set_min_isr_for_high_watermark`]).
    /// Set by the catalog before it gives a role, so a new leadership obeys it from the start.
    pub fn set_min_isr_for_high_watermark(&self, min_isr: Option<usize>) {
        let moved = {
            let mut replica = self.replica();
            replica.set_min_isr_for_high_watermark(min_isr);
            replica.maybe_increment_high_watermark().is_some()
        };
        if moved {
            self.watch.high_watermark_moved();
        }
    }

    /// Does this replica follow another broker (a leader it can fetch from, or none yet)?
    pub fn is_follower(&self) -> bool {
        matches!(self.replica().role(), Role::Follower { .. })
    }

    /// While this replica leads: each follower's log end offset as its last fetch reported it
    /// (for choosing a consumer's preferred read replica, KIP-392).
    pub fn follower_log_ends(&self) -> Vec<(BrokerId, u64)> {
        self.replica()
            .followers()
            .iter()
            .map(|(id, progress)| (*id, progress.log_end_offset))
            .collect()
    }

    /// The leader epoch this broker writes with and answers in Metadata and ListOffsets.
    pub fn leader_epoch(&self) -> i32 {
        self.replica().leader_epoch()
    }

    /// The offset below which consumers may read (see the module doc), brought up to date with
    /// the log first.
    pub fn high_watermark(&self) -> u64 {
        self.refresh_replica().0
    }

    /// Feeds the log's current offsets into the replica state and lets the high watermark
    /// follow. Returns the high watermark and whether it moved.
    fn refresh_replica(&self) -> (u64, bool) {
        // The offsets are read under the replica lock, so concurrent refreshes apply them in
        // the order they were read: a later refresh never feeds older offsets.
        let mut replica = self.replica();
        let moved = follow_log(&mut replica, &self.log);
        (replica.high_watermark(), moved)
    }

    /// The replica state as the next produce or fetch will find it (the log's offsets fed in,
    /// the high watermark followed), worked out on a copy: the simulator's online checks
    /// observe the partition without moving its high watermark themselves.
    pub fn replica_state_as_served(&self) -> ReplicaState {
        let mut replica = self.replica_state();
        follow_log(&mut replica, &self.log);
        replica
    }

    /// After the log may have moved: updates the high watermark and wakes the fetches parked on
    /// it if it moved, or if `force` (a failure they must see).
    fn publish_high_watermark(&self, force: bool) {
        let (_, moved) = self.refresh_replica();
        if moved || force {
            self.watch.high_watermark_moved();
        }
    }

    /// Appends a record set (phase one of a produce): offsets are assigned and the bytes are in
    /// the log when this returns, in the order calls were made. Under the durable policy a
    /// background group commit makes them durable and visible; [`Partition::wait_durable`] waits
    /// for it (acks=all).
    ///
    /// Batches from idempotent producers are checked first (see the module doc). A retry of a
    /// batch already in the log is not appended again: the result carries the original's
    /// offsets, and waiting for its durability works the same.
    ///
    /// The offsets returned may be shown at once (acks=1); [`Partition::append_unexposed`] is
    /// for callers that show them only once durable.
    pub async fn append(self: &Arc<Self>, records: &mut [u8]) -> Result<AppendInfo, ProduceError> {
        self.append_showing(records, true).await
    }

    /// [`Partition::append`] for a caller that shows the offsets to no one before
    /// [`Partition::wait_durable`] returns (acks=all, acks=0, the group coordinator): under
    /// the durable policy they need no offset reservation (see [`crate::log::reservation`]).
    pub async fn append_unexposed(
        self: &Arc<Self>,
        records: &mut [u8],
    ) -> Result<AppendInfo, ProduceError> {
        self.append_showing(records, false).await
    }

    /// A client's produce ([`Partition::append`] or [`Partition::append_unexposed`] by
    /// `exposed`): a transactional batch that opens a transaction here is appended only with
    /// the guard [`Partition::start_transaction_verification`] gave, still current (KIP-890
    /// part 1; see [`crate::txn::producer_state`], rule 9).
    pub async fn append_from_client(
        self: &Arc<Self>,
        records: &mut [u8],
        exposed: bool,
        verification: Option<VerificationGuard>,
    ) -> Result<AppendInfo, ProduceError> {
        let result = self
            .append_checked(records, exposed, TxnVerification::Required(verification))
            .await;
        self.snapshot_if_rolled().await;
        result
    }

    /// Before a client's transactional batch from `producer_id` at `producer_epoch` starting at
    /// `first_seq` is appended: `None` if the producer's transaction is open here (no
    /// verification needed), else the guard of the verification to ask the coordinator for
    /// (Kafka's `UnifiedLog.maybeStartTransactionVerification`).
    pub async fn start_transaction_verification(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        first_seq: i32,
    ) -> Result<Option<VerificationGuard>, ProduceError> {
        if !self.replica().is_leader() {
            return Err(ProduceError::NotLeader);
        }
        let fresh =
            VerificationGuard(self.last_verification_guard.fetch_add(1, Ordering::AcqRel) + 1);
        let mut producers = self.producers_locked().await?;
        Ok(producers.start_verification(producer_id, producer_epoch, first_seq, fresh))
    }

    /// The coordinator refused the verification `guard` guarded: it ends here (see
    /// [`ProducerStateManager::end_verification`]).
    pub async fn end_transaction_verification(&self, producer_id: i64, guard: VerificationGuard) {
        if let Ok(mut producers) = self.producers_locked().await {
            producers.end_verification(producer_id, guard);
        }
    }

    async fn append_showing(
        self: &Arc<Self>,
        records: &mut [u8],
        exposed: bool,
    ) -> Result<AppendInfo, ProduceError> {
        let result = self
            .append_checked(records, exposed, TxnVerification::NotRequired)
            .await;
        self.snapshot_if_rolled().await;
        result
    }

    async fn append_checked(
        self: &Arc<Self>,
        records: &mut [u8],
        exposed: bool,
        verification: TxnVerification,
    ) -> Result<AppendInfo, ProduceError> {
        if !self.replica().is_leader() {
            return Err(ProduceError::NotLeader);
        }
        if has_control_batch(records) {
            return Err(AppendError::InvalidRecords(vec![crate::log::RecordError {
                batch_index: 0,
                message: "Clients are not allowed to write control records".into(),
            }])
            .into());
        }
        // A follower's log holds only the leader's batches: the role is checked again under
        // the producers' lock and the append finishes holding it, as a follower's append and
        // truncation take it too (Kafka's leaderIsrUpdateLock). Checked only before the lock,
        // a produce that passed the check as the replica became a follower appended into the
        // follower's log after its reconciliation read the log end (found by a 60 s
        // replication swarm: a follower's append below its log end).
        if !has_producer_id(records) {
            // The raw lock: a plain produce needs no producer state rebuilt.
            let _role_fixed = self.producers.lock().await;
            if !self.replica().is_leader() {
                return Err(ProduceError::NotLeader);
            }
            return Ok(self.append_to_log(records, exposed).await?);
        }
        // Kafka validates the batches (CRC included) before it looks at their sequences.
        let headers = batch::validate_all(records).map_err(AppendError::from)?;
        let mut producers = self.producers_locked().await?;
        if !self.replica().is_leader() {
            return Err(ProduceError::NotLeader);
        }
        if let AppendDecision::Duplicate(original) =
            producers.check_verified(&headers, verification)?
        {
            tracing::debug!(partition = ?self, producer_id = headers[0].producer_id,
                first_seq = original.first_seq, base_offset = original.base_offset,
                "duplicate batch: answering with the original offsets");
            if exposed {
                // The original may have been appended unexposed and not be synced yet.
                self.log
                    .expose(original.last_offset + 1)
                    .await
                    .map_err(|e| AppendError::Offline(e.0))?;
            }
            return Ok(AppendInfo {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
                log_append_time_ms: self
                    .log
                    .config()
                    .log_append_time
                    .then_some(original.timestamp_ms),
                log_start_offset: self.log.log_start_offset(),
                incarnation: self.log.incarnation(),
            });
        }
        let info = self.append_to_log(records, exposed).await?;
        // `records` now holds the batches as stored: offsets assigned, LogAppendTime stamped.
        let mut pos = 0;
        while pos < records.len() {
            let header = BatchHeader::parse(&records[pos..]).expect("appended batches parse");
            producers.record_stored(&records[pos..pos + header.size()]);
            pos += header.size();
        }
        assert_eq!(pos, records.len());
        Ok(info)
    }

    /// Appends the marker that ends `producer_id`'s transaction (the transaction coordinator's
    /// WriteTxnMarkers, on the leader), checked against the producer's epochs (see
    /// [`ProducerStateManager::check_marker`]). Returns the append and the transaction it
    /// closed, if the producer had one open here. The offsets are not exposed: the caller
    /// answers once [`Partition::wait_durable`] (or the replication wait) returns.
    pub async fn write_marker(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        timestamp_ms: i64,
    ) -> Result<(AppendInfo, Option<CompletedTxn>), ProduceError> {
        let mut producers = self.producers_locked().await?;
        // Under the producers' lock, as a client's append (see `append_checked`).
        if !self.replica().is_leader() {
            return Err(ProduceError::NotLeader);
        }
        producers.check_marker(producer_id, producer_epoch, marker.coordinator_epoch)?;
        let mut bytes = marker::encode(producer_id, producer_epoch, marker, timestamp_ms);
        let info = self.append_to_log(&mut bytes, false).await?;
        let completed = producers.record_stored(&bytes);
        self.record_completed(&producers, completed).await;
        drop(producers);
        self.snapshot_if_rolled().await;
        Ok((info, completed))
    }

    /// The last stable offset: read_committed consumers read below it (the high watermark,
    /// held back by the oldest transaction not yet decided and replicated).
    pub async fn last_stable_offset(&self) -> Result<u64, ProduceError> {
        let mut producers = self.producers_locked().await?;
        // Read under the producers' lock: no marker or transactional batch lands meanwhile.
        let high_watermark = self.high_watermark();
        producers.on_high_watermark(high_watermark);
        Ok(producers.last_stable_offset(high_watermark, self.log.log_start_offset()))
    }

    /// Under the durable policy, makes sure one background task is syncing this partition, so
    /// acks=1 appends become durable and visible without anyone waiting on them. One task per
    /// partition at a time, not one per append: it loops while appends keep arriving.
    fn schedule_background_sync(self: &Arc<Self>) {
        if self.sync_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let partition = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let end = partition.log.log_end_offset();
                let synced = partition.log.wait_durable(end).await;
                // A failed sync took the log offline: parked fetches must see the error.
                partition.publish_high_watermark(synced.is_err());
                partition.sync_scheduled.store(false, Ordering::Release);
                // Appends that came after `end` found the task still scheduled and left it to
                // us: take them too, unless another task has started meanwhile.
                let behind = partition.log.durable_end_offset() < partition.log.log_end_offset();
                if synced.is_err()
                    || !behind
                    || partition.sync_scheduled.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    async fn append_to_log(
        self: &Arc<Self>,
        records: &mut [u8],
        exposed: bool,
    ) -> Result<AppendInfo, AppendError> {
        let leader_epoch = self.leader_epoch();
        let info = if exposed {
            self.log.append_unsynced(records, leader_epoch).await?
        } else {
            self.log.append_unexposed(records, leader_epoch).await?
        };
        self.watch.log_end_moved();
        if self.durable_policy() {
            self.schedule_background_sync();
        } else {
            self.publish_high_watermark(false);
        }
        Ok(info)
    }

    /// Phase two of an acks=all produce: returns once the append is durable.
    pub async fn wait_durable(&self, info: &AppendInfo) -> Result<(), AppendError> {
        if self.durable_policy() && !planted::is(Bug::AckBeforeSync) {
            self.log
                .wait_append_durable(info)
                .await
                .map_err(|e| AppendError::Offline(e.0))?;
        }
        Ok(())
    }
}

impl Partition {
    /// Follows `leader` from `epoch` (the controller's decision, applied by the catalog).
    /// Wakes the acks=all produces waiting here: they fail, this broker no longer leads.
    ///
    /// Unlike [`Partition::become_leader`] it does not wait for the producers' lock, where
    /// Kafka's `makeFollower` takes `leaderIsrUpdateLock` for writing and so waits for a
    /// leader's append in flight. What can hold the lock meanwhile is a write that checked the
    /// role under it: a client's append or a marker that passed as leader, or a truncation or
    /// append of the previous follower epoch. Such a write finishes after the role changed
    /// instead of before, and nothing can tell the difference: whatever reads the follower's
    /// log for the new epoch, its reconciliation with the leader
    /// ([`Partition::follower_log`], then [`Partition::truncate_to`]), takes the lock and so
    /// sees the write, as it would have had the write finished first; a leader's batch landing
    /// here is above the high watermark (capped at the log end before the batch landed, a
    /// follower's rises only with the new leader's fetch responses, which follow the
    /// reconciliation), so no consumer reads it before the reconciliation cuts it if the new
    /// leader lacks it; its acks=all produce fails in [`Partition::wait_replicated`] (a
    /// new epoch) and an acks=1 one was answered as Kafka answers it. Every write that checks
    /// the role after this returns refuses (`tests/partition_replica.rs`: a produce that
    /// passed the first check as the replica became a follower). Taking the lock here would
    /// only make the catalog wait.
    pub fn become_follower(&self, epoch: i32, leader: BrokerId) {
        {
            let mut replica = self.replica();
            replica.update_local_log(local_log(&self.log));
            replica.become_follower(epoch, leader);
        }
        self.watch.high_watermark_moved();
    }

    /// On the leader: a follower fetched from `fetch_offset`, so its log ends there (Kafka's
    /// `updateFollowerFetchState`). The fetch says the follower's broker epoch (-1: unsaid);
    /// `registered` is the epoch of the follower's registration in the leader's image, and
    /// `eligible` whether that registration may be in an ISR (neither fenced nor shutting
    /// down). A fetch from an older incarnation than the leader knows is refused (KIP-903). Else its progress is recorded, the high watermark advanced
    /// if it can be, and whoever waits on the high watermark (acks=all produces, consumers'
    /// long polls) is woken when it moved. Returns whether the follower is outside the ISR
    /// and may now join it (at the HW and the epoch's start, KIP-320, from its current
    /// registration): the ISR manager is worth waking.
    pub fn record_follower_fetch(
        &self,
        replica_id: BrokerId,
        broker_epoch: i64,
        registered: Option<i64>,
        eligible: bool,
        fetch_offset: u64,
        now_ms: i64,
    ) -> Result<bool, FollowerFetchError> {
        let (moved, may_join) = {
            let mut replica = self.replica();
            replica.update_local_log(local_log(&self.log));
            if !replica.is_leader() {
                return Err(FollowerFetchError::NotLeader);
            }
            if !replica.followers().contains_key(&replica_id) {
                return Err(FollowerFetchError::NotAReplica(replica_id));
            }
            let log_start_offset = self.log.log_start_offset();
            let log_end_offset = replica.log_end_offset();
            if fetch_offset > log_end_offset || fetch_offset < log_start_offset {
                return Err(FollowerFetchError::OutOfRange {
                    offset: fetch_offset,
                    log_start_offset,
                    log_end_offset,
                });
            }
            replica.check_follower_broker_epoch(replica_id, broker_epoch, registered)?;
            replica.update_follower_log_end(replica_id, fetch_offset, now_ms);
            let moved = replica.maybe_increment_high_watermark().is_some();
            let may_join = !replica.isr().contains(&replica_id)
                && !replica.pending_isr_expansion().contains(&replica_id)
                && replica.can_join_isr(replica_id)
                && replica.broker_epoch_eligible(replica_id, registered.filter(|_| eligible));
            (moved, may_join)
        };
        if moved {
            self.watch.high_watermark_moved();
        }
        Ok(may_join)
    }

    /// On the leader: the followers whose ISR expansion is being asked of the controller
    /// (empty once it answered); they hold the high watermark back meanwhile (Kafka's maximal
    /// ISR). Returns false, changing nothing, if this replica does not lead (any more).
    pub fn set_pending_isr_expansion(&self, joiners: &[BrokerId]) -> bool {
        let moved = {
            let mut replica = self.replica();
            if !replica.is_leader() || joiners.iter().any(|j| !replica.followers().contains_key(j))
            {
                return false;
            }
            replica.set_pending_isr_expansion(joiners);
            replica.maybe_increment_high_watermark().is_some()
        };
        if moved {
            self.watch.high_watermark_moved();
        }
        true
    }

    /// Phase two of an acks=all produce with replicas: returns once the batch is durable here
    /// and below the high watermark, so every in-sync replica holds it (Kafka's
    /// `DelayedProduce`). `leader_epoch` is the epoch the batch was appended in: a leadership
    /// lost (or begun again) meanwhile fails the wait, since the batch may have been truncated.
    pub async fn wait_replicated(
        &self,
        info: &AppendInfo,
        leader_epoch: i32,
        min_insync_replicas: usize,
    ) -> Result<(), ReplicationWaitError> {
        self.wait_durable(info).await?;
        loop {
            let notified = self
                .watch
                .notified(crate::replica::FetchBound::HighWatermark);
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.refresh_replica();
            {
                let replica = self.replica();
                if !replica.is_leader() || replica.leader_epoch() != leader_epoch {
                    return Err(ReplicationWaitError::NotLeader);
                }
                if replica.high_watermark() > info.last_offset {
                    let isr = replica.isr().len();
                    if isr < min_insync_replicas {
                        return Err(ReplicationWaitError::NotEnoughReplicasAfterAppend {
                            isr,
                            min_insync_replicas,
                        });
                    }
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Leads from `epoch` with these replicas and ISR (the controller's decision). Waits for a
    /// follower's truncation (or append) in flight, under the producers' lock, as Kafka's
    /// makeLeader waits for the fetcher's work on the partition: taken while the truncation
    /// still ran, the leadership took the log end before the cut for its high watermark and
    /// the cut then put the leader's log end below it (60 s replication swarm seed 370: the
    /// broker panicked, "a leader's log end 611 fell below its high watermark 613").
    pub async fn become_leader(&self, epoch: i32, replicas: &[BrokerId], isr: &[BrokerId]) {
        let _no_truncation = self.producers.lock().await;
        {
            let mut replica = self.replica();
            replica.update_local_log(local_log(&self.log));
            replica.become_leader(epoch, replicas, isr);
            replica.maybe_increment_high_watermark();
        }
        self.watch.high_watermark_moved();
    }

    /// On a follower: the leader's high watermark, from a fetch response (capped by the local
    /// log end). Wakes the consumers parked here if it moved.
    pub fn update_high_watermark_as_follower(&self, leader_high_watermark: u64) {
        let moved = {
            let mut replica = self.replica();
            replica.update_local_log(local_log(&self.log));
            let before = replica.high_watermark();
            replica.update_high_watermark_as_follower(leader_high_watermark);
            replica.high_watermark() != before
        };
        if moved {
            self.watch.high_watermark_moved();
        }
    }

    /// A follower's append of batches fetched from the leader in `leader_epoch` (see
    /// [`Log::append_as_follower`]). The idempotent producers' state follows the replicated
    /// batches, so a producer's retry reaches a new leader that knows it.
    ///
    /// Batches fetched in an older leader epoch than the one this replica now follows in are
    /// refused (Kafka's fetcher drops the response of a partition whose fetch state changed
    /// while the fetch was in flight): the old leader's log may have diverged from the new
    /// one's, and the reconciliation with the new leader may already have run, so appending
    /// them would leave a suffix no truncation cuts.
    pub async fn append_as_follower(
        &self,
        records: &[u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo, FollowerAppendError> {
        // Checked under the producers' lock, which a follower's truncation also takes: once
        // the catalog gave this replica a new epoch, an append of the old one either finished
        // before the reconciliation reads the log ([`Partition::follower_log`]) or is refused.
        let mut producers = self.producers.lock().await;
        {
            let replica = self.replica();
            // Checked, not asserted: a fetch response can arrive just after the catalog made
            // this replica the leader.
            if !matches!(replica.role(), Role::Follower { .. }) {
                return Err(FollowerAppendError::NotFollower);
            }
            if replica.leader_epoch() != leader_epoch {
                return Err(FollowerAppendError::StaleLeaderEpoch {
                    fetched_in: leader_epoch,
                    current: replica.leader_epoch(),
                });
            }
        }
        let info = self.log.append_as_follower(records).await?;
        if let Some(producers) = producers.as_mut() {
            let mut pos = 0;
            while pos < records.len() {
                let header = BatchHeader::parse(&records[pos..]).expect("appended batches parse");
                if header.producer_id >= 0 {
                    let completed = producers.record_stored(&records[pos..pos + header.size()]);
                    self.record_completed(producers, completed).await;
                }
                pos += header.size();
            }
        }
        drop(producers);
        self.refresh_replica();
        self.watch.log_end_moved();
        Ok(info)
    }

    /// A follower's log as its reconciliation with the leader reads it: the leader-epoch
    /// cache and the log end, read once no follower append is in flight (appends of an epoch
    /// older than this replica's are refused from then on, see
    /// [`Partition::append_as_follower`]).
    pub async fn follower_log(&self) -> (LeaderEpochCache, u64) {
        let _producers = self.producers.lock().await;
        (self.log.leader_epochs().await, self.log.log_end_offset())
    }

    /// A follower's truncation (see [`Log::truncate_to`]). The high watermark falls with the
    /// log end, and the idempotent producers' state is rebuilt from the batches that stay (a
    /// batch that went must not answer a retry as a duplicate). Returns the new log end.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, TruncateError> {
        // Checked under the producers' lock, which becoming leader takes: a leadership either
        // waits for this truncation or refuses it.
        let mut producers = self.producers.lock().await;
        if self.replica().role() == Role::Leader {
            return Err(TruncateError::Leader);
        }
        let result = self.log.truncate_to(offset).await;
        *producers = match &result {
            // Loading also deletes the snapshots beyond the new log end.
            Ok(_) => rebuild_producer_state(&self.log)
                .await
                .ok()
                .map(|(producers, _, aborted)| {
                    self.set_aborted(aborted);
                    producers
                }),
            // Offline: rebuilt once the log is recovered.
            Err(_) => None,
        };
        drop(producers);
        self.refresh_replica();
        self.watch.high_watermark_moved();
        self.watch.log_end_moved();
        result
    }
}

/// Feeds `log`'s current offsets into `replica` and lets the high watermark follow; whether it
/// moved.
fn follow_log(replica: &mut ReplicaState, log: &Log) -> bool {
    if log.is_failed() && replica.role() != Role::Offline {
        replica.go_offline();
    }
    replica.update_local_log(local_log(log));
    replica.maybe_increment_high_watermark().is_some()
}

/// The log's offsets as the replica state takes them.
fn local_log(log: &Log) -> LocalLog {
    // Durable end first: both only rise between truncations, so read in this order the durable
    // end is at most the log end; the `min` covers a truncation racing the two loads.
    let durable_end_offset = if planted::is(Bug::AckBeforeSync) {
        log.log_end_offset()
    } else {
        log.durable_end_offset()
    };
    let log_end_offset = log.log_end_offset();
    LocalLog {
        log_end_offset,
        durable_end_offset: durable_end_offset.min(log_end_offset),
    }
}

/// Does any batch of the record set carry a producer id? Walks the headers only; a malformed
/// set is left for the log's validation to refuse.
fn has_producer_id(records: &[u8]) -> bool {
    let mut pos = 0;
    while pos < records.len() {
        let Ok(header) = BatchHeader::parse(&records[pos..]) else {
            return false;
        };
        if header.producer_id >= 0 {
            return true;
        }
        pos += header.size();
    }
    false
}

/// Does any batch of the record set carry the control attribute? Walks the headers only.
fn has_control_batch(records: &[u8]) -> bool {
    let mut pos = 0;
    while pos < records.len() {
        let Ok(header) = BatchHeader::parse(&records[pos..]) else {
            return false;
        };
        if header.is_control() {
            return true;
        }
        pos += header.size();
    }
    false
}

/// Rebuilds the producers' state: from the newest valid snapshot at or below the log end, then
/// every batch after it (Kafka's `loadProducerState`); without one, from the log start. Returns
/// the snapshot used. A batch damaged at rest cannot be read: it is skipped, loudly, and the
/// replay resumes at the batch after it ([`Log::offset_after_damage`]), since the log keeps and
/// serves that one and all after it: a window that missed them would take a retry of one for a
/// new batch (or refuse it as out of order, and the client resends it under a new epoch) and
/// append it again. Only when the damage hides the next batch is the rest of the segment
/// skipped.
async fn rebuild_producer_state(
    log: &Log,
) -> Result<(ProducerStateManager, Option<u64>, AbortedTxnIndex), ReadError> {
    if !log.is_dir_made() {
        // Never written (see `Log::open_unmade`): no producer, no transaction, nothing to read.
        return Ok((ProducerStateManager::new(), None, AbortedTxnIndex::new()));
    }
    let end = log.log_end_offset();
    let start = log.log_start_offset();
    let loaded = match producer_snapshot::load(log.disk().as_ref(), log.dir(), end).await {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(dir = %log.dir().display(), %e, "producer snapshots unreadable: rebuilding from the log start");
            None
        }
    };
    let (mut state, mut offset, mut snapshot) = match loaded {
        Some(producer_snapshot::Loaded { mut state, offset }) => {
            assert!(
                offset <= end,
                "a snapshot beyond the log end is never loaded"
            );
            state.evict_before(start);
            (state, offset.max(start), Some(offset))
        }
        None => (ProducerStateManager::new(), start, None),
    };
    // The aborted transactions below where the replay starts; the replay adds the rest.
    let bases = log.segment_bases().await;
    let disk = log.disk().as_ref();
    let mut aborted = match txn_index::load(disk, log.dir(), &bases, start, offset).await {
        Ok(aborted) => aborted,
        Err(e) => {
            tracing::error!(dir = %log.dir().display(), %e,
                "aborted-transaction index unreadable: rebuilding from the log start");
            txn_index::clear(disk, log.dir(), &bases).await?;
            state = ProducerStateManager::new();
            offset = start;
            snapshot = None;
            AbortedTxnIndex::new()
        }
    };
    let mut appended = false;
    while offset < end {
        let read = match log.read(offset, REBUILD_READ_BYTES, None).await {
            Ok(read) => read,
            Err(ReadError::Corrupt {
                segment,
                position,
                error,
            }) => {
                let next = log.resume_after_damage(offset, &segment, position).await?;
                tracing::error!(segment = %segment.display(), position, %error, resume_at = ?next,
                    "corrupt batch while rebuilding producer state: skipping it");
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
        while pos < read.records.len() {
            let header = BatchHeader::parse(&read.records[pos..])
                .expect("served batches are whole and checked");
            let completed = state.record_stored(&read.records[pos..pos + header.size()]);
            if let Some(completed) = completed.filter(|c| c.aborted) {
                let entry = AbortedTxn {
                    producer_id: completed.producer_id,
                    first_offset: completed.first_offset,
                    last_offset: completed.last_offset,
                    last_stable_offset: state.stable_offset_after(&completed),
                };
                // Read again: a live log may have rolled since (appends without a producer id
                // do not wait for the producers' lock).
                let base = segment_of(&log.segment_bases().await, completed.last_offset);
                txn_index::append(disk, log.dir(), base, &entry).await?;
                aborted.add(base, entry);
                appended = true;
            }
            offset = header.last_offset() as u64 + 1;
            pos += header.size();
        }
    }
    if appended {
        // Durable before any snapshot past them is written (the next one syncs only what is
        // appended after the rebuild).
        txn_index::sync(disk, log.dir(), &log.segment_bases().await).await?;
    }
    Ok((state, snapshot, aborted))
}

/// The base offset of the segment holding `offset`.
fn segment_of(bases: &[u64], offset: u64) -> u64 {
    let at = bases.partition_point(|&b| b <= offset);
    assert!(at > 0, "offset {offset} is below the first segment");
    bases[at - 1]
}
