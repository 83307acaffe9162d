//! A partition replica: its log, its high watermark, and (on a leader) the idempotent
//! producers' state. Single broker today; the replication work adds followers and the ISR here.
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
//! The rebuild starts from the newest valid producer snapshot at or below the log end
//! ([`crate::txn::producer_snapshot`]) and replays only the batches after it, so opening a
//! partition reads the tail of its log, not all of it. A snapshot is written when the log rolls
//! a segment and at clean shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::log::batch::{self, BatchHeader};
use crate::log::{AppendError, AppendInfo, FlushPolicy, Log, ReadError};
use crate::txn::producer_snapshot;
use crate::txn::producer_state::{AppendDecision, ProducerStateManager, SequenceError};

/// Bytes per read while rebuilding the producers' state on open.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// One partition of a topic, as this broker hosts it.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Log,
    /// The leader epoch this broker writes with. One broker, one epoch, until replication.
    pub leader_epoch: i32,
    /// Woken whenever a high watermark may have advanced (long-polling fetches wait on it).
    data_arrived: Arc<Notify>,
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
}

/// A produce to this partition failed; nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The idempotent producer's epoch or sequence does not fit what the partition holds.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    /// Opens a partition over its (recovered) log, rebuilding the idempotent producers' state
    /// from every batch the log holds.
    pub async fn open(
        topic: String,
        index: i32,
        log: Log,
        data_arrived: Arc<Notify>,
    ) -> Result<Partition, ReadError> {
        let (producers, snapshot) = rebuild_producer_state(&log).await?;
        tracing::debug!(topic = %topic, partition = index, producers = producers.len(), ?snapshot,
            "producer state rebuilt from the log");
        let snapshot_segment_base = AtomicU64::new(log.active_segment_base());
        Ok(Partition {
            topic,
            index,
            log,
            leader_epoch: 0,
            data_arrived,
            producers: tokio::sync::Mutex::new(Some(producers)),
            sync_scheduled: AtomicBool::new(false),
            snapshot_segment_base,
            loaded_from_snapshot: AtomicU64::new(snapshot.unwrap_or(u64::MAX)),
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
        // going away with a deleted topic.
        if self.log.is_offline() {
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
        match self.log.reopen().await {
            Ok(true) => {
                *producers = match rebuild_producer_state(&self.log).await {
                    Ok((rebuilt, snapshot)) => {
                        self.loaded_from_snapshot
                            .store(snapshot.unwrap_or(u64::MAX), Ordering::Release);
                        Some(rebuilt)
                    }
                    Err(e) => {
                        // The old state may hold batches the recovery dropped: a retry of one
                        // would be answered as a duplicate. Rebuild before the next use.
                        tracing::warn!(partition = ?self, %e, "producer state not rebuilt after recovery");
                        None
                    }
                };
                self.data_arrived.notify_waiters();
                true
            }
            Ok(false) => false,
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
            let (rebuilt, snapshot) = rebuild_producer_state(&self.log).await.map_err(|e| {
                AppendError::Offline(format!("producer state cannot be rebuilt: {e}"))
            })?;
            self.loaded_from_snapshot
                .store(snapshot.unwrap_or(u64::MAX), Ordering::Release);
            *producers = Some(rebuilt);
        }
        Ok(tokio::sync::MutexGuard::map(producers, |p| {
            p.as_mut().expect("rebuilt above")
        }))
    }

    fn durable_policy(&self) -> bool {
        self.log.config().flush == FlushPolicy::Durable
    }

    /// The offset below which consumers may read. Under the durable policy only synced batches
    /// are visible, so nothing a consumer saw can vanish in a crash; under the lazy policy every
    /// appended batch is (Kafka's single-broker behaviour).
    pub fn high_watermark(&self) -> u64 {
        if self.durable_policy() {
            self.log.durable_end_offset()
        } else {
            self.log.log_end_offset()
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

    async fn append_showing(
        self: &Arc<Self>,
        records: &mut [u8],
        exposed: bool,
    ) -> Result<AppendInfo, ProduceError> {
        let result = self.append_checked(records, exposed).await;
        self.snapshot_if_rolled().await;
        result
    }

    async fn append_checked(
        self: &Arc<Self>,
        records: &mut [u8],
        exposed: bool,
    ) -> Result<AppendInfo, ProduceError> {
        if !has_producer_id(records) {
            return Ok(self.append_to_log(records, exposed).await?);
        }
        // Kafka validates the batches (CRC included) before it looks at their sequences.
        let headers = batch::validate_all(records).map_err(AppendError::from)?;
        let mut producers = self.producers_locked().await?;
        if let AppendDecision::Duplicate(original) = producers.check(&headers)? {
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
            producers.record(&header, header.max_timestamp);
            pos += header.size();
        }
        assert_eq!(pos, records.len());
        Ok(info)
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
                partition.data_arrived.notify_waiters();
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
        let info = if exposed {
            self.log.append_unsynced(records, self.leader_epoch).await?
        } else {
            self.log
                .append_unexposed(records, self.leader_epoch)
                .await?
        };
        if self.durable_policy() {
            self.schedule_background_sync();
        } else {
            self.data_arrived.notify_waiters();
        }
        Ok(info)
    }

    /// Phase two of an acks=all produce: returns once the append is durable.
    pub async fn wait_durable(&self, info: &AppendInfo) -> Result<(), AppendError> {
        if self.durable_policy() {
            self.log
                .wait_append_durable(info)
                .await
                .map_err(|e| AppendError::Offline(e.0))?;
        }
        Ok(())
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

/// Rebuilds the producers' state: from the newest valid snapshot at or below the log end, then
/// every batch after it (Kafka's `loadProducerState`); without one, from the log start. Returns
/// the snapshot used. A batch damaged at rest cannot be read: the rest of its segment is
/// skipped, loudly, since the producers' windows may then miss batches.
async fn rebuild_producer_state(
    log: &Log,
) -> Result<(ProducerStateManager, Option<u64>), ReadError> {
    let end = log.log_end_offset();
    let start = log.log_start_offset();
    let loaded = match producer_snapshot::load(log.disk().as_ref(), log.dir(), end).await {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(dir = %log.dir().display(), %e, "producer snapshots unreadable: rebuilding from the log start");
            None
        }
    };
    let (mut state, mut offset, snapshot) = match loaded {
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
    while offset < end {
        let read = match log.read(offset, REBUILD_READ_BYTES, None).await {
            Ok(read) => read,
            Err(ReadError::Corrupt {
                segment,
                position,
                error,
            }) => {
                let next = log.next_segment_after(offset).await;
                tracing::error!(segment = %segment.display(), position, %error, resume_at = ?next,
                    "corrupt batch while rebuilding producer state: skipping the rest of its segment");
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
            state.record(&header, header.max_timestamp);
            offset = header.last_offset() as u64 + 1;
            pos += header.size();
        }
    }
    Ok((state, snapshot))
}
