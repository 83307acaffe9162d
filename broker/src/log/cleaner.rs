//! Log compaction, as Kafka's log cleaner does it (`LogCleaner.scala`, `Cleaner.doClean`).
//!
//! A compacted log (`cleanup.policy` holds `compact`) keeps, for every key, at least its latest
//! record. The log's sealed segments below the high watermark (and below the first segment
//! that still holds a record younger than `min.compaction.lag.ms`) are *cleanable*; those past
//! the *first dirty offset* (where the last cleaning stopped, kept in
//! `cleaner-offset-checkpoint`) are *dirty*. A cleaning:
//! 1. reads the dirty batches into an [`OffsetMap`] (key → offset of its latest record), of
//!    bounded size (`log.cleaner.dedupe.buffer.size`); when it is full the cleaning covers
//!    only what it mapped;
//! 2. rewrites every cleanable segment up to there, in groups of at most `segment.bytes`: a
//!    record goes if a later record of its key is mapped, if it has no key, or if it is a
//!    tombstone whose delete horizon passed. A tombstone's horizon is set the first time a
//!    cleaning keeps it (KIP-534: `now + delete.retention.ms`, in the batch's base timestamp);
//! 3. swaps each group's cleaned segment in for the old ones (below).
//!
//! # Offsets never change, and the log stays dense
//! A batch keeps its base offset, last offset delta, leader epoch, producer id, epoch and base
//! sequence; each kept record keeps its offset, timestamp and headers. A batch that loses all
//! its records goes, and its offsets are covered by a batch without records (as the offsets a
//! crash skips are, [`super::batch::offset_gap`]), so every reader, follower and recovery scan
//! sees the dense log it always did; a fetch from a cleaned-away offset gets the next batch.
//! The last batch of each idempotent producer in the cleaned range is kept (emptied of
//! records if need be), so its sequence and epoch survive, as Kafka keeps it.
//!
//! # Transactions (Kafka's `CleanedTransactionMetadata`)
//! The cleanable range ends at the last stable offset too: an open transaction's records are
//! never read, let alone cleaned ([`Log::clean_transactional`] takes the LSO as its bound).
//! Given the partition's aborted transactions over the range (its `.txnindex` entries), a
//! cleaning walks the batches in order, tracking each producer's transaction:
//! - a transactional batch of an aborted transaction loses all its records (and never enters
//!   the offset map, so it cannot shadow an older committed value);
//! - a committed transaction's records are cleaned like any others;
//! - a marker stays while the cleaning met a batch of its transaction; once a cleaning meets
//!   none (its data went in an earlier one), the marker gets a delete horizon
//!   (`now + delete.retention.ms`, KIP-534, as a tombstone) and the first cleaning past it
//!   removes it;
//! - an abort marker's `.txnindex` entry is written to the cleaned segment only while the
//!   cleaning met aborted data of it (a read_committed reader needs the entry only to drop
//!   that data), so an entry never outlives its marker;
//! - the last batch of each producer is kept (a marker whole, a data batch emptied of its
//!   records) so a rebuild of the producers' state from the log keeps its epoch and sequence.
//!   Unlike Kafka, a marker that is its producer's last batch in the cleaned range stays whole
//!   past its horizon: Kafka would keep it emptied, which no longer carries the epoch.
//!
//! # Crash safety (the swap)
//! A group is written to `{base}.log.cleaned` and synced; it is renamed to `{base}.log.swap`
//! and the directory synced (the commit point); the old segments and every index of the group
//! are removed; the swap file is renamed to `{base}.log`. Recovery removes `.cleaned` files
//! (the old segments are whole) and completes a `.swap` (removes the segments its offsets
//! cover, renames it), so after a crash the log holds the old segments or the new one, never
//! a mix. A group whose segments hold aborted transactions also gets
//! `{base}.txnindex.cleaned`, written and synced before the commit point; after it, the old
//! `.txnindex` files go first, then it is renamed to `{base}.txnindex`, then the swap file is
//! renamed. So recovery, finding a `.swap`, replaces the group's `.txnindex` files with it if it
//! is still there, and otherwise knows that `{base}.txnindex` is already the new one. An I/O error before the commit point only abandons the cleaning; after it, the log
//! goes offline and its in-place recovery completes the swap.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::batch::{self, BatchError, BatchHeader, HEADER_LEN};
use super::records::{self, Record};
use super::segment::{self, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use super::Log;
use crate::disk::{self, Disk, DiskFile, OpenMode};
use crate::planted::{self, Bug};
use crate::txn::marker::{self, ControlType};
use crate::txn::txn_index::{AbortedTxn, TXN_INDEX_SUFFIX};

/// Where the cleaning of a log stopped (the first dirty offset), one decimal line.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// A cleaned segment being written: removed by recovery.
pub const CLEANED_SUFFIX: &str = ".log.cleaned";
/// A cleaned segment swapped in: recovery completes the swap.
pub const SWAP_SUFFIX: &str = ".log.swap";
/// The aborted-transaction index of a cleaned segment, before the swap completes.
pub const TXN_INDEX_CLEANED_SUFFIX: &str = ".txnindex.cleaned";

/// Bytes one read of a segment takes while cleaning.
const READ_CHUNK: usize = 1 << 20;
/// Bytes of cleaned batches gathered before one append to the cleaned file.
const WRITE_CHUNK: usize = 1 << 20;
/// Largest decompressed records section the cleaner decodes.
const MAX_DECOMPRESSED: usize = 64 << 20;
/// What one entry of the offset map costs beyond its key's bytes (pointer, length, offset,
/// the hash table's control byte and slack).
const ENTRY_OVERHEAD: usize = 40;

/// Key → the offset of its latest record in the part of the log mapped so far. Holds its keys
/// whole (no hash collisions can drop a live record) and within a budget of bytes, Kafka's
/// `log.cleaner.dedupe.buffer.size`.
#[derive(Debug)]
pub struct OffsetMap {
    map: HashMap<Box<[u8]>, u64>,
    used_bytes: usize,
    capacity_bytes: usize,
}

impl OffsetMap {
    pub fn new(capacity_bytes: usize) -> OffsetMap {
        OffsetMap {
            map: HashMap::new(),
            used_bytes: 0,
            capacity_bytes,
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.used_bytes = 0;
    }

    /// Records `offset` as `key`'s latest; false (and nothing changes) when a new key does not
    /// fit the budget.
    pub fn put(&mut self, key: &[u8], offset: u64) -> bool {
        if let Some(at) = self.map.get_mut(key) {
            assert!(*at <= offset, "the offset map is filled in log order");
            if !planted::is(Bug::CleanerKeepsFirstRecord) {
                *at = offset;
            }
            return true;
        }
        let cost = key.len() + ENTRY_OVERHEAD;
        if self.used_bytes + cost > self.capacity_bytes {
            return false;
        }
        self.used_bytes += cost;
        self.map.insert(key.into(), offset);
        true
    }

    pub fn get(&self, key: &[u8]) -> Option<u64> {
        self.map.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of the budget in use.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }
}

/// Kafka's `Throttler` for `log.cleaner.io.max.bytes.per.second`: the cleaner's reads and
/// writes together stay under the rate, by sleeping (runtime time) when ahead of it.
/// It is also where a cleaning learns that the broker is stopping (Kafka's `checkDone` sits
/// beside its throttle): a cleaning stops at the next chunk, before its commit point.
#[derive(Debug)]
pub struct Throttler {
    bytes_per_second: Option<f64>,
    started: Option<tokio::time::Instant>,
    bytes: f64,
    abort: Option<Arc<AtomicBool>>,
}

impl Throttler {
    /// `None`: no limit.
    pub fn new(bytes_per_second: Option<f64>) -> Throttler {
        Throttler {
            bytes_per_second: bytes_per_second.filter(|r| *r > 0.0 && r.is_finite()),
            started: None,
            bytes: 0.0,
            abort: None,
        }
    }

    /// Cleanings paced by this throttle stop (before their commit point) once `abort` is set.
    pub fn with_abort(mut self, abort: Arc<AtomicBool>) -> Throttler {
        self.abort = Some(abort);
        self
    }

    fn check_abort(&self) -> Result<(), CleanError> {
        match &self.abort {
            Some(abort) if abort.load(Ordering::Acquire) => Err(CleanError::Aborted),
            _ => Ok(()),
        }
    }

    /// Counts `bytes` of I/O, sleeping until the rate allows them.
    pub async fn throttle(&mut self, bytes: u64) -> Result<(), CleanError> {
        self.check_abort()?;
        let Some(rate) = self.bytes_per_second else {
            return Ok(());
        };
        let started = *self.started.get_or_insert_with(monotonic_now);
        self.bytes += bytes as f64;
        let due = Duration::from_secs_f64(self.bytes / rate);
        let elapsed = started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        self.check_abort()
    }
}

/// The runtime's monotonic now: virtual under the simulator, where `tokio::time::Instant` is
/// std's (which madsim intercepts), hence the allowance clippy needs in that build.
#[allow(clippy::disallowed_methods)]
fn monotonic_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// One log as the cleaner's manager sees it (`LogCleanerManager.cleanableOffsets`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cleanable {
    pub first_dirty_offset: u64,
    /// The end of the cleanable segments: nothing at or past it is cleaned now.
    pub first_uncleanable_offset: u64,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// A dirty record is older than `max.compaction.lag.ms`: clean whatever the ratio.
    pub past_max_compaction_lag: bool,
    pub min_cleanable_dirty_ratio: f64,
}

impl Cleanable {
    /// Dirty bytes over cleanable bytes.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }

    /// Should it be cleaned now?
    pub fn is_due(&self) -> bool {
        self.dirty_bytes > 0
            && (self.past_max_compaction_lag
                || self.dirty_ratio() >= self.min_cleanable_dirty_ratio)
    }
}

/// What one cleaning did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Where the next cleaning's dirty part starts.
    pub first_dirty_offset: u64,
    /// Keys in the offset map.
    pub keys_mapped: usize,
    /// Records of aborted transactions removed.
    pub aborted_records_removed: u64,
    /// Transaction markers removed (past their delete horizon).
    pub markers_removed: u64,
    /// For each cleaned segment, the aborted transactions its `.txnindex` now holds: the
    /// partition's in-memory index takes them in place of the old ones over the same offsets.
    pub txn_index: Vec<CleanedTxnIndex>,
}

/// The `.txnindex` entries of one cleaned segment, `[base_offset, next_offset)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanedTxnIndex {
    pub base_offset: u64,
    pub next_offset: u64,
    pub aborted: Vec<AbortedTxn>,
}

/// A cleaning failed. The log keeps its segments (or, for `Offline`, recovers the swap).
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("log is offline: {0}")]
    Offline(String),
    #[error("I/O error while cleaning (the old segments stay): {0}")]
    Io(#[from] io::Error),
    #[error("corrupt batch in segment {base_offset} at byte {position}: {error}")]
    Corrupt {
        base_offset: u64,
        position: u64,
        error: BatchError,
    },
    #[error("log.cleaner.dedupe.buffer.size is too small for the keys of one batch at offset {0}")]
    OffsetMapTooSmall(u64),
    /// The broker is stopping; the old segments stay.
    #[error("cleaning aborted")]
    Aborted,
}

/// What the cleaning took from the state: a sealed segment and its file.
#[derive(Clone, Debug)]
struct SegmentRef {
    base_offset: u64,
    next_offset: u64,
    size: u64,
    file: Arc<dyn DiskFile>,
}

/// Reads a segment's batches in order, in large chunks, checking each CRC.
struct BatchReader<'a> {
    segment: &'a SegmentRef,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> BatchReader<'a> {
    fn new(segment: &'a SegmentRef) -> BatchReader<'a> {
        BatchReader {
            segment,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    async fn fill(&mut self, want: usize) -> io::Result<()> {
        let end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + want as u64 <= end {
            return Ok(());
        }
        let len = (want.max(READ_CHUNK) as u64).min(self.segment.size - self.pos) as usize;
        self.buf = self.segment.file.read_vec_at(self.pos, len).await?;
        self.buf_start = self.pos;
        Ok(())
    }

    /// The next batch (its position and bytes), or `None` at the segment's end.
    async fn next(&mut self) -> Result<Option<(u64, &[u8])>, CleanError> {
        if self.pos >= self.segment.size {
            return Ok(None);
        }
        let corrupt = |position, error| CleanError::Corrupt {
            base_offset: self.segment.base_offset,
            position,
            error,
        };
        self.fill(HEADER_LEN).await?;
        let at = (self.pos - self.buf_start) as usize;
        let header = BatchHeader::parse(&self.buf[at..]).map_err(|e| corrupt(self.pos, e))?;
        if self.pos + header.size() as u64 > self.segment.size {
            return Err(corrupt(
                self.pos,
                BatchError::OffsetOutOfOrder(header.base_offset),
            ));
        }
        self.fill(header.size()).await?;
        let at = (self.pos - self.buf_start) as usize;
        let bytes = &self.buf[at..at + header.size()];
        batch::validate(bytes).map_err(|e| CleanError::Corrupt {
            base_offset: self.segment.base_offset,
            position: self.pos,
            error: e,
        })?;
        let position = self.pos;
        self.pos += header.size() as u64;
        Ok(Some((position, bytes)))
    }
}

/// What becomes of one batch.
enum Fate {
    Keep,
    Rewrite(Vec<u8>),
    /// Its offsets join a gap batch.
    Drop,
}

/// Each producer's transaction as a walk through the log in offset order meets its batches
/// (Kafka's `CleanedTransactionMetadata`), given the aborted transactions over the range.
#[derive(Debug, Default)]
struct TxnTracker {
    /// Aborted transactions not reached yet, by first offset.
    pending: VecDeque<AbortedTxn>,
    /// Producer → its aborted transaction under way, and whether this walk met data of it.
    aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers whose committed (not aborted) transaction under way had a batch in the walk.
    committed: HashSet<i64>,
    /// Abort markers kept with their data met: their `.txnindex` entries, for the segment
    /// being written.
    kept_entries: Vec<AbortedTxn>,
}

impl TxnTracker {
    /// Tracks the aborted transactions whose marker is at or past `from` (where the walk
    /// starts); the others ended before it.
    fn new(aborted: &[AbortedTxn], from: u64) -> TxnTracker {
        let mut pending: Vec<AbortedTxn> = aborted
            .iter()
            .copied()
            .filter(|t| t.last_offset >= from)
            .collect();
        pending.sort_by_key(|t| (t.first_offset, t.last_offset));
        TxnTracker {
            pending: pending.into(),
            ..TxnTracker::default()
        }
    }

    fn reach(&mut self, last_offset: u64) {
        while self
            .pending
            .front()
            .is_some_and(|t| t.first_offset <= last_offset)
        {
            let txn = self.pending.pop_front().expect("checked");
            self.aborted.entry(txn.producer_id).or_insert((txn, false));
        }
    }

    /// A data batch: is it part of an aborted transaction (all its records go)?
    fn on_data_batch(&mut self, header: &BatchHeader) -> bool {
        self.reach(header.last_offset() as u64);
        if !header.is_transactional() || header.producer_id < 0 {
            return false;
        }
        match self.aborted.get_mut(&header.producer_id) {
            Some((_, met)) => {
                *met = true;
                true
            }
            None => {
                self.committed.insert(header.producer_id);
                false
            }
        }
    }

    /// A control batch: may it go (subject to its delete horizon)? Only once no batch of its
    /// transaction is left, i.e. this walk met none.
    fn on_control_batch(&mut self, header: &BatchHeader, bytes: &[u8]) -> bool {
        self.reach(header.last_offset() as u64);
        match marker::decode(bytes) {
            Ok(Some(m)) if m.control == ControlType::Abort => {
                match self.aborted.remove(&header.producer_id) {
                    Some((txn, true)) => {
                        self.kept_entries.push(txn);
                        false
                    }
                    _ => true,
                }
            }
            Ok(Some(_)) => !self.committed.remove(&header.producer_id),
            // Emptied by an earlier cleaning: it ends nothing any more.
            Ok(None) => true,
            // Not a marker this broker reads: kept as it is.
            Err(_) => false,
        }
    }
}

/// The rules of one cleaning, applied batch by batch.
struct Rules<'a> {
    map: &'a OffsetMap,
    /// Each idempotent producer's last batch (its last offset) in the cleaned range.
    producer_last: &'a BTreeMap<i64, u64>,
    txns: TxnTracker,
    now_ms: i64,
    delete_retention_ms: i64,
}

impl Rules<'_> {
    fn keeps_producer_batch(&self, header: &BatchHeader) -> bool {
        header.producer_id >= 0
            && self.producer_last.get(&header.producer_id) == Some(&(header.last_offset() as u64))
    }

    fn fate(&mut self, bytes: &[u8], stats: &mut CleanStats) -> Fate {
        let header = BatchHeader::parse(bytes).expect("a validated batch");
        if header.is_control() {
            return self.control_fate(&header, bytes, stats);
        }
        if self.txns.on_data_batch(&header) {
            stats.records_read += header.records_count.max(0) as u64;
            stats.aborted_records_removed += header.records_count.max(0) as u64;
            return if !self.keeps_producer_batch(&header) {
                Fate::Drop
            } else if header.records_count == 0 {
                Fate::Keep
            } else {
                Fate::Rewrite(batch::emptied(bytes))
            };
        }
        if header.records_count == 0 {
            return if self.keeps_producer_batch(&header) {
                Fate::Keep
            } else {
                Fate::Drop
            };
        }
        let decoded = match records::decode(bytes, MAX_DECOMPRESSED) {
            Ok(decoded) => decoded,
            Err(e) => {
                // CRC-valid but unreadable records: kept as they are, never guessed at.
                tracing::warn!(base_offset = header.base_offset, %e, "cleaner keeps a batch it cannot decode");
                return Fate::Keep;
            }
        };
        stats.records_read += decoded.len() as u64;
        let horizon = records::delete_horizon_ms(&header);
        let total = decoded.len();
        let kept: Vec<Record> = decoded
            .into_iter()
            .filter(|r| {
                let Some(key) = &r.key else {
                    // A compacted log cannot keep a record without a key (Kafka drops them).
                    return false;
                };
                let offset = header.base_offset as u64 + r.offset_delta as u64;
                if self.map.get(key).is_some_and(|latest| offset < latest) {
                    return false;
                }
                if planted::is(Bug::CleanerKeepsFirstRecord)
                    && self.map.get(key).is_some_and(|first| offset != first)
                {
                    return false;
                }
                // A tombstone goes once its horizon passed.
                !(r.value.is_none()
                    && (planted::is(Bug::TombstonesRemovedAtOnce)
                        || horizon.is_some_and(|h| self.now_ms >= h)))
            })
            .collect();
        stats.records_kept += kept.len() as u64;
        if kept.is_empty() {
            return if self.keeps_producer_batch(&header) {
                Fate::Rewrite(batch::emptied(bytes))
            } else {
                Fate::Drop
            };
        }
        let new_horizon = (horizon.is_none() && kept.iter().any(|r| r.value.is_none()))
            .then(|| self.now_ms.saturating_add(self.delete_retention_ms));
        if kept.len() == total && new_horizon.is_none() {
            return Fate::Keep;
        }
        Fate::Rewrite(records::rebuild(bytes, &kept, new_horizon))
    }

    /// A marker stays while its transaction has data, then until its delete horizon.
    fn control_fate(&mut self, header: &BatchHeader, bytes: &[u8], stats: &mut CleanStats) -> Fate {
        let discardable = self.txns.on_control_batch(header, bytes);
        if !discardable || self.keeps_producer_batch(header) {
            return Fate::Keep;
        }
        match records::delete_horizon_ms(header) {
            Some(horizon) if self.now_ms >= horizon => {
                stats.markers_removed += 1;
                Fate::Drop
            }
            Some(_) => Fate::Keep,
            None if header.records_count == 0 => Fate::Drop,
            None => match records::decode(bytes, MAX_DECOMPRESSED) {
                Ok(decoded) if !decoded.is_empty() => Fate::Rewrite(records::rebuild(
                    bytes,
                    &decoded,
                    Some(self.now_ms.saturating_add(self.delete_retention_ms)),
                )),
                _ => Fate::Keep,
            },
        }
    }
}

/// Writes one cleaned segment: batches in offset order, runs of dropped batches as gaps.
struct CleanedWriter {
    segment: Segment,
    out: Vec<u8>,
    /// Dropped offsets not yet covered: `[start, end)` in leader epoch `epoch`.
    gap: Option<(u64, u64, i32)>,
    index_interval_bytes: u64,
    written: u64,
}

impl CleanedWriter {
    fn push(&mut self, bytes: &[u8]) {
        let header = BatchHeader::parse(bytes).expect("a valid batch");
        let position = self.segment.size;
        self.segment
            .record_batch(&header, position, self.index_interval_bytes);
        self.out.extend_from_slice(bytes);
    }

    fn close_gap(&mut self) {
        if let Some((start, end, epoch)) = self.gap.take() {
            self.push(&batch::offset_gap_in_epoch(start, end - start, epoch));
        }
    }

    fn drop_batch(&mut self, header: &BatchHeader) {
        let (start, end) = (header.base_offset as u64, header.last_offset() as u64 + 1);
        let epoch = header.partition_leader_epoch;
        match &mut self.gap {
            Some((gap_start, gap_end, gap_epoch))
                if *gap_end == start
                    && *gap_epoch == epoch
                    && end - *gap_start <= i32::MAX as u64 =>
            {
                *gap_end = end;
            }
            _ => {
                self.close_gap();
                self.gap = Some((start, end, epoch));
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.close_gap();
        self.push(bytes);
    }

    async fn drain(&mut self, throttler: &mut Throttler) -> Result<(), CleanError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let position = self.segment.file.append(&self.out).await?;
        assert_eq!(
            position + self.out.len() as u64,
            self.segment.size,
            "the cleaned file holds what the segment counted"
        );
        throttler.throttle(self.out.len() as u64).await?;
        self.written += self.out.len() as u64;
        self.out.clear();
        Ok(())
    }
}

/// Completes or discards interrupted cleanings in `dir` (see the module doc), before recovery
/// reads the segments. Returns whether anything changed.
pub(super) async fn recover_swaps(
    disk: &dyn Disk,
    dir: &Path,
    names: &[String],
) -> io::Result<bool> {
    let mut changed = false;
    for name in names.iter().filter(|n| n.ends_with(CLEANED_SUFFIX)) {
        tracing::info!(dir = %dir.display(), file = %name, "removing an unfinished cleaned segment");
        disk.remove(&dir.join(name)).await?;
        changed = true;
    }
    // A cleaned `.txnindex` without its swap belongs to a cleaning that never committed.
    for name in names {
        let Some(base) = segment::parse_file_name(name, TXN_INDEX_CLEANED_SUFFIX) else {
            continue;
        };
        if !names.contains(&segment::file_name(base, SWAP_SUFFIX)) {
            disk.remove(&dir.join(name)).await?;
            changed = true;
        }
    }
    for name in names {
        let Some(base) = segment::parse_file_name(name, SWAP_SUFFIX) else {
            continue;
        };
        let path = dir.join(name);
        let file = disk.open(&path, OpenMode::Existing).await?;
        let mut swapped = Segment::new(base, file);
        // The swap file was synced whole before its name existed: it scans clean. Its end is
        // where the segments it replaces ended.
        let scan = swapped.scan(0, u64::MAX, false).await?;
        // A cleaned segment covers at least one offset: an empty one was never synced.
        if scan != segment::ScanEnd::Clean || swapped.size == 0 {
            return Err(io::Error::other(format!(
                "swap segment {} is damaged ({scan:?}, {} bytes): it was synced before it was named",
                path.display(),
                swapped.size
            )));
        }
        let end = swapped.next_offset;
        drop(swapped);
        // The group's new `.txnindex`, if not renamed into place yet (see the module doc).
        let txn_cleaned = segment::file_name(base, TXN_INDEX_CLEANED_SUFFIX);
        let txn_cleaned = names.contains(&txn_cleaned).then(|| dir.join(txn_cleaned));
        for other in names {
            let replaced = [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
                .iter()
                .any(|suffix| {
                    segment::parse_file_name(other, suffix).is_some_and(|b| b >= base && b < end)
                })
                || segment::parse_file_name(other, TXN_INDEX_SUFFIX)
                    .is_some_and(|b| b >= base && b < end && (b != base || txn_cleaned.is_some()));
            if replaced {
                disk::remove_if_exists(disk, &dir.join(other)).await?;
            }
        }
        disk.sync_dir(dir).await?;
        if let Some(txn_cleaned) = txn_cleaned {
            if disk::read_file(disk, &txn_cleaned).await?.is_empty() {
                disk.remove(&txn_cleaned).await?;
            } else {
                disk.rename(&txn_cleaned, &segment::path(dir, base, TXN_INDEX_SUFFIX))
                    .await?;
            }
            disk.sync_dir(dir).await?;
        }
        disk.rename(&path, &segment::path(dir, base, LOG_SUFFIX))
            .await?;
        disk.sync_dir(dir).await?;
        tracing::info!(dir = %dir.display(), base_offset = base, end_offset = end,
            "completed the swap of a cleaned segment");
        changed = true;
    }
    if changed {
        disk.sync_dir(dir).await?;
    }
    Ok(changed)
}

/// Reads the first dirty offset kept for the log in `dir` (0 when there is none: everything
/// is dirty, which costs a cleaning, never a record).
pub(super) async fn read_checkpoint(disk: &dyn Disk, dir: &Path) -> u64 {
    match disk::read_file(disk, &dir.join(CLEANER_CHECKPOINT_FILE)).await {
        Ok(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

impl Log {
    /// How much of the log the cleaner could clean now, with the high watermark
    /// `high_watermark` (nothing at or past it is cleaned); `None` for a log that is not
    /// compacted, is offline, or has nothing dirty to clean.
    pub fn cleanable(&self, high_watermark: u64, now_ms: i64) -> Option<Cleanable> {
        let config = self.config();
        if !config.compact {
            return None;
        }
        let st = self.state();
        if st.offline.is_some() {
            return None;
        }
        let first_dirty = st
            .first_dirty_offset
            .clamp(st.log_start_offset, st.next_offset);
        let active_base = st.active().base_offset;
        let mut first_uncleanable = active_base.min(high_watermark);
        if config.min_compaction_lag_ms > 0 {
            let young = st.segments.values().find(|s| {
                s.next_offset > first_dirty
                    && s.max_timestamp.is_some_and(|(ts, _)| {
                        now_ms.saturating_sub(ts) < config.min_compaction_lag_ms
                    })
            });
            if let Some(young) = young {
                first_uncleanable = first_uncleanable.min(young.base_offset);
            }
        }
        let mut clean_bytes = 0;
        let mut dirty_bytes = 0;
        let mut end = None;
        let mut earliest_dirty_ms = None;
        for s in st.segments.values() {
            if s.base_offset == active_base || s.next_offset > first_uncleanable {
                break;
            }
            if s.next_offset <= st.log_start_offset {
                continue;
            }
            end = Some(s.next_offset);
            if s.next_offset <= first_dirty {
                clean_bytes += s.size;
            } else {
                dirty_bytes += s.size;
                if earliest_dirty_ms.is_none() {
                    earliest_dirty_ms = s.rolling_base_ms;
                }
            }
        }
        let end = end?;
        if dirty_bytes == 0 {
            return None;
        }
        Some(Cleanable {
            first_dirty_offset: first_dirty,
            first_uncleanable_offset: end,
            clean_bytes,
            dirty_bytes,
            past_max_compaction_lag: earliest_dirty_ms
                .is_some_and(|ts| now_ms.saturating_sub(ts) > config.max_compaction_lag_ms),
            min_cleanable_dirty_ratio: config.min_cleanable_dirty_ratio,
        })
    }

    /// Cleans a log that holds no transactions once: [`Log::clean_transactional`] with no
    /// aborted transaction and the high watermark as the bound.
    pub async fn clean(
        &self,
        high_watermark: u64,
        map: &mut OffsetMap,
        throttler: &mut Throttler,
    ) -> Result<Option<CleanStats>, CleanError> {
        self.clean_transactional(high_watermark, &[], map, throttler)
            .await
    }

    /// Cleans the log once (see the module doc), whatever its dirty ratio; `Ok(None)` when
    /// there is nothing to clean. Nothing at or past `last_stable_offset` (the partition's
    /// LSO: the high watermark and the first offset of any open transaction) is cleaned.
    /// `aborted` holds the partition's aborted transactions whose markers are at or past the
    /// log start and whose first offsets are below the bound. `map` is the cleaner's offset
    /// map, reused between logs.
    pub async fn clean_transactional(
        &self,
        last_stable_offset: u64,
        aborted: &[AbortedTxn],
        map: &mut OffsetMap,
        throttler: &mut Throttler,
    ) -> Result<Option<CleanStats>, CleanError> {
        let now_ms = self.clock.now_ms();
        let Some(cleanable) = self.cleanable(last_stable_offset, now_ms) else {
            return Ok(None);
        };
        let config = self.config();
        let segments: Vec<SegmentRef> = {
            let st = self.state();
            st.segments
                .values()
                .filter(|s| {
                    s.next_offset > st.log_start_offset
                        && s.next_offset <= cleanable.first_uncleanable_offset
                })
                .map(|s| SegmentRef {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                    size: s.size,
                    file: Arc::clone(&s.file),
                })
                .collect()
        };
        let mut stats = CleanStats::default();
        map.clear();

        // Each idempotent producer's last batch: the clean part by headers, the dirty part as
        // it is mapped (later batches win).
        let mut producer_last: BTreeMap<i64, u64> = BTreeMap::new();
        for s in segments
            .iter()
            .filter(|s| s.base_offset < cleanable.first_dirty_offset)
        {
            let mut pos = 0;
            let mut header_buf = [0u8; HEADER_LEN];
            while pos < s.size {
                let n = s.file.read_at(pos, &mut header_buf).await?;
                let header =
                    BatchHeader::parse(&header_buf[..n]).map_err(|error| CleanError::Corrupt {
                        base_offset: s.base_offset,
                        position: pos,
                        error,
                    })?;
                if header.last_offset() as u64 >= cleanable.first_dirty_offset {
                    break;
                }
                if header.producer_id >= 0 {
                    producer_last.insert(header.producer_id, header.last_offset() as u64);
                }
                pos += header.size() as u64;
            }
        }

        // 1. The offset map, over the dirty part, until it is full. Aborted records stay out
        // of it: they must not shadow an older committed value.
        let mut txns = TxnTracker::new(aborted, cleanable.first_dirty_offset);
        let mut end = cleanable.first_dirty_offset;
        'mapping: for s in segments
            .iter()
            .filter(|s| s.next_offset > cleanable.first_dirty_offset)
        {
            let mut reader = BatchReader::new(s);
            while let Some((_, bytes)) = reader.next().await? {
                let header = BatchHeader::parse(bytes).expect("validated");
                stats.bytes_read += bytes.len() as u64;
                if (header.last_offset() as u64) < cleanable.first_dirty_offset {
                    continue;
                }
                let unmapped = if header.is_control() {
                    txns.on_control_batch(&header, bytes);
                    true
                } else {
                    txns.on_data_batch(&header)
                };
                if !unmapped && header.records_count > 0 {
                    if let Ok(decoded) = records::decode(bytes, MAX_DECOMPRESSED) {
                        for r in &decoded {
                            let Some(key) = &r.key else { continue };
                            let offset = header.base_offset as u64 + r.offset_delta as u64;
                            if !map.put(key, offset) {
                                // Full: what was mapped of this batch points at its records,
                                // which stay (at or past the new first dirty offset), so the
                                // partial entries drop nothing they should keep.
                                break 'mapping;
                            }
                        }
                    }
                }
                if header.producer_id >= 0 {
                    producer_last.insert(header.producer_id, header.last_offset() as u64);
                }
                end = header.last_offset() as u64 + 1;
            }
            throttler.throttle(s.size).await?;
        }
        if end == cleanable.first_dirty_offset {
            return Err(CleanError::OffsetMapTooSmall(end));
        }
        stats.keys_mapped = map.len();
        stats.first_dirty_offset = end;

        // 2. Groups of segments up to the end of the mapped part, each at most segment.bytes.
        let mut groups: Vec<Vec<SegmentRef>> = Vec::new();
        for s in segments.into_iter().filter(|s| s.base_offset < end) {
            match groups.last_mut() {
                Some(group)
                    if group.iter().map(|g| g.size).sum::<u64>() + s.size
                        <= config.segment_bytes
                        && s.next_offset - 1 - group[0].base_offset <= u32::MAX as u64 =>
                {
                    group.push(s)
                }
                _ => groups.push(vec![s]),
            }
        }
        let start = segments_start(&groups);
        let mut rules = Rules {
            map,
            producer_last: &producer_last,
            txns: TxnTracker::new(aborted, start),
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
        };
        for group in &groups {
            stats.segments_before += group.len();
            let cleaned = self
                .clean_group(group, &mut rules, &config, throttler, &mut stats)
                .await?;
            let group_end = group[group.len() - 1].next_offset;
            // The group's `.txnindex` is rewritten if it held or now holds an entry.
            let txn_index = (!cleaned.txn_entries.is_empty()
                || aborted.iter().any(|t| {
                    t.last_offset >= cleaned.segment.base_offset && t.last_offset < group_end
                }))
            .then(|| CleanedTxnIndex {
                base_offset: cleaned.segment.base_offset,
                next_offset: group_end,
                aborted: cleaned.txn_entries.clone(),
            });
            if let Err(e) = throttler.check_abort() {
                self.discard_cleaned(cleaned.segment.base_offset).await;
                return Err(e);
            }
            if self
                .swap_in(group, cleaned.segment, txn_index.as_ref())
                .await?
            {
                stats.txn_index.extend(txn_index);
            }
            stats.segments_after += 1;
        }

        // 3. Where the next cleaning starts.
        let checkpoint = self.dir.join(CLEANER_CHECKPOINT_FILE);
        if let Err(e) = disk::write_file_atomic(
            self.disk.as_ref(),
            &checkpoint,
            format!("{end}\n").as_bytes(),
        )
        .await
        {
            // Only costs a repeated cleaning after a restart.
            tracing::warn!(dir = %self.dir.display(), %e, "could not write the cleaner checkpoint");
        }
        self.state().first_dirty_offset = end;
        tracing::info!(dir = %self.dir.display(), first_dirty_offset = end,
            segments_before = stats.segments_before, segments_after = stats.segments_after,
            bytes_read = stats.bytes_read, bytes_written = stats.bytes_written,
            records_kept = stats.records_kept, records_read = stats.records_read, "log cleaned");
        Ok(Some(stats))
    }

    /// Removes what an abandoned cleaning of the group at `base` wrote.
    async fn discard_cleaned(&self, base: u64) {
        for suffix in [CLEANED_SUFFIX, TXN_INDEX_CLEANED_SUFFIX] {
            let _ =
                disk::remove_if_exists(self.disk.as_ref(), &segment::path(&self.dir, base, suffix))
                    .await;
        }
    }

    /// Writes the cleaned copy of `group` to `{base}.log.cleaned`, synced.
    async fn clean_group(
        &self,
        group: &[SegmentRef],
        rules: &mut Rules<'_>,
        config: &super::LogConfig,
        throttler: &mut Throttler,
        stats: &mut CleanStats,
    ) -> Result<CleanedGroup, CleanError> {
        rules.txns.kept_entries.clear();
        let base = group[0].base_offset;
        let path = segment::path(&self.dir, base, CLEANED_SUFFIX);
        disk::remove_if_exists(self.disk.as_ref(), &path).await?;
        let file = self.disk.open(&path, OpenMode::CreateNew).await?;
        let mut writer = CleanedWriter {
            segment: Segment::new(base, file),
            out: Vec::new(),
            gap: None,
            index_interval_bytes: config.index_interval_bytes,
            written: 0,
        };
        let written = async {
            for s in group {
                let mut reader = BatchReader::new(s);
                while let Some((_, bytes)) = reader.next().await? {
                    stats.bytes_read += bytes.len() as u64;
                    match rules.fate(bytes, stats) {
                        Fate::Keep => writer.write(bytes),
                        Fate::Rewrite(rebuilt) => writer.write(&rebuilt),
                        Fate::Drop => {
                            writer.drop_batch(&BatchHeader::parse(bytes).expect("validated"))
                        }
                    }
                    if writer.out.len() >= WRITE_CHUNK {
                        writer.drain(throttler).await?;
                    }
                }
                throttler.throttle(s.size).await?;
                // Segments join densely: the next one starts where this one ended.
                writer.close_gap();
                assert_eq!(
                    writer.segment.next_offset, s.next_offset,
                    "a cleaned segment covers the offsets of the segments it replaces"
                );
            }
            writer.drain(throttler).await?;
            writer.segment.file.sync().await?;
            Ok::<_, CleanError>(())
        }
        .await;
        if let Err(e) = written {
            let _ = disk::remove_if_exists(self.disk.as_ref(), &path).await;
            return Err(e);
        }
        stats.bytes_written += writer.written;
        let mut segment = writer.segment;
        segment.synced_size = segment.size;
        segment.seal_time_index();
        Ok(CleanedGroup {
            segment,
            txn_entries: std::mem::take(&mut rules.txns.kept_entries),
        })
    }

    /// Swaps the cleaned segment in for `group`'s segments (see the module doc), holding the
    /// writer lock, with `txn_index` as the group's new `.txnindex` (`None`: the group has
    /// none). If the log changed meanwhile (retention, truncation, a recovery), the cleaned
    /// files are discarded and the log is left as it is: `Ok(false)`.
    async fn swap_in(
        &self,
        group: &[SegmentRef],
        cleaned: Segment,
        txn_index: Option<&CleanedTxnIndex>,
    ) -> Result<bool, CleanError> {
        let base = cleaned.base_offset;
        let cleaned_path = segment::path(&self.dir, base, CLEANED_SUFFIX);
        let txn_cleaned_path = segment::path(&self.dir, base, TXN_INDEX_CLEANED_SUFFIX);
        let writer = self.writer.lock().await;
        let unchanged = {
            let st = self.state();
            st.offline.is_none()
                && group.iter().all(|g| {
                    st.segments
                        .get(&g.base_offset)
                        .is_some_and(|s| Arc::ptr_eq(&s.file, &g.file) && s.size == g.size)
                })
                && st.active().base_offset > group[group.len() - 1].base_offset
        };
        if !unchanged {
            drop(writer);
            tracing::info!(dir = %self.dir.display(), base_offset = base,
                "the log changed while it was cleaned: cleaned segment discarded");
            self.discard_cleaned(base).await;
            return Ok(false);
        }
        let swap_path = segment::path(&self.dir, base, SWAP_SUFFIX);
        // Before the commit point an error leaves the old segments in charge.
        let committed = async {
            if let Some(txn_index) = txn_index {
                let entries: Vec<u8> = txn_index.aborted.iter().flat_map(|t| t.encode()).collect();
                disk::write_file_atomic(self.disk.as_ref(), &txn_cleaned_path, &entries).await?;
            }
            self.disk.rename(&cleaned_path, &swap_path).await?;
            self.disk.sync_dir(&self.dir).await
        }
        .await;
        if let Err(e) = committed {
            self.discard_cleaned(base).await;
            let _ = disk::remove_if_exists(self.disk.as_ref(), &swap_path).await;
            return Err(CleanError::Io(e));
        }
        let finished = async {
            for g in group {
                for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    disk::remove_if_exists(
                        self.disk.as_ref(),
                        &segment::path(&self.dir, g.base_offset, suffix),
                    )
                    .await?;
                }
                // The group's first file is the new one once the cleaned one is renamed.
                if txn_index.is_some() || g.base_offset != base {
                    disk::remove_if_exists(
                        self.disk.as_ref(),
                        &segment::path(&self.dir, g.base_offset, TXN_INDEX_SUFFIX),
                    )
                    .await?;
                }
                if g.base_offset != base {
                    disk::remove_if_exists(
                        self.disk.as_ref(),
                        &segment::path(&self.dir, g.base_offset, LOG_SUFFIX),
                    )
                    .await?;
                }
            }
            self.disk.sync_dir(&self.dir).await?;
            if let Some(txn_index) = txn_index {
                if txn_index.aborted.is_empty() {
                    self.disk.remove(&txn_cleaned_path).await?;
                } else {
                    self.disk
                        .rename(
                            &txn_cleaned_path,
                            &segment::path(&self.dir, base, TXN_INDEX_SUFFIX),
                        )
                        .await?;
                }
                self.disk.sync_dir(&self.dir).await?;
            }
            self.disk
                .rename(&swap_path, &segment::path(&self.dir, base, LOG_SUFFIX))
                .await?;
            self.disk.sync_dir(&self.dir).await
        }
        .await;
        if let Err(e) = finished {
            // The swap is committed on disk but not in memory: the in-place recovery
            // completes it.
            return Err(CleanError::Offline(
                self.fail("swapping in a cleaned segment", &e).0,
            ));
        }
        let (index, time_index) = (cleaned.index.encode(), cleaned.time_index.encode());
        {
            let mut st = self.state();
            for g in group {
                let removed = st
                    .segments
                    .remove(&g.base_offset)
                    .expect("checked under the writer lock");
                assert_eq!(removed.base_offset, g.base_offset);
            }
            let last = &group[group.len() - 1];
            assert_eq!(
                cleaned.next_offset, last.next_offset,
                "offsets never change"
            );
            st.segments.insert(base, cleaned);
            self.publish(&st);
        }
        if let Err(e) = self.write_indexes(base, &index, &time_index).await {
            // Recovery rebuilds a missing index from the segment.
            tracing::warn!(dir = %self.dir.display(), base_offset = base, %e,
                "could not write a cleaned segment's indexes");
        }
        drop(writer);
        Ok(true)
    }
}

/// A group's cleaned segment and the aborted transactions its `.txnindex` keeps.
struct CleanedGroup {
    segment: Segment,
    txn_entries: Vec<AbortedTxn>,
}

/// Where the cleaning's walk starts: the first group's first segment.
fn segments_start(groups: &[Vec<SegmentRef>]) -> u64 {
    groups.first().map_or(0, |g| g[0].base_offset)
}
