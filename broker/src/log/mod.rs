//! A partition's log: the durable, ordered sequence of record batches that everything else in
//! the broker is built on.
//!
//! # On disk
//! A log is a directory:
//! - `{base_offset:020}.log`: segments of whole record batches, stored exactly as producers sent
//!   them except for the base offset and partition leader epoch the log assigns. An empty log
//!   may have none: its first segment's file is made at its first append (see
//!   [`segment::UnmadeFile`]), so a new log is an empty directory;
//! - `{base_offset:020}.index` / `.timeindex`: sparse indexes, written when a segment is sealed
//!   and at clean shutdown, with a checksum (see [`index`]);
//! - `log.checkpoint`: recovery point, log start offset and offset reservation ([`checkpoint`]);
//! - `leader-epoch-checkpoint`: the [`leader_epoch::LeaderEpochCache`];
//! - `{base_offset:020}.txnindex`: the segment's aborted transactions, written and loaded by
//!   the partition (`txn::txn_index`); the log only removes it with its segment and as an
//!   orphan;
//! - `{offset:020}.snapshot`: state derived from the batches below `offset` (the idempotent
//!   producers' snapshots, `txn::producer_snapshot`); recovery deletes those beyond the data
//!   it recovered;
//! - `.clean-shutdown`: present only between a clean close and the next open; it names the
//!   data directory's run that closed the log, which says whether an open may trust it
//!   without a sync of its own ([`clean_shutdown`]).
//!
//! The directory may also hold the partition's `partition.metadata` (the catalog's, naming the
//! topic id). A new partition's log has no directory at all ([`Log::open_unmade`]): its first
//! write makes it whole, `partition.metadata` synced inside, under a temporary name renamed
//! into place ([`Log::make_dir`]), so no byte of the log is ever durable without it. A
//! directory an older build made holds a `partition.metadata` written without a sync, which
//! the log syncs before it makes its first segment file ([`Listing::partition_metadata`]), as
//! Kafka's `UnifiedLog` does (`maybeFlushMetadataFile` before an append).
//!
//! # Guarantees
//! - Offsets are assigned once, densely within a run, and an offset anyone outside the log has
//!   seen is never reused, even across crashes that lose unsynced batches: the offset
//!   reservation makes the log skip past any unsynced offset it may have shown, and only those
//!   (see [`reservation`] for the argument). A gap in offsets after a crash is legal Kafka
//!   (consumers skip it).
//! - Under [`FlushPolicy::Durable`] an append returns only once its bytes are synced; many
//!   concurrent appends share one sync (group commit). After any crash the log holds a prefix
//!   of what was appended that includes every append that returned `Ok`.
//! - Every batch served by [`Log::read`] has been CRC-checked on the way out: damage at rest is
//!   reported loudly and never served.
//! - Any write-path I/O error (failed write or sync, full disk) takes the log offline: the bytes
//!   since the last good sync cannot be trusted, so nothing more is appended or served until the
//!   log is reopened, which recovers from what is really on disk (Kafka does the same with a
//!   failed log directory).
//!
//! # Recovery on open
//! An open writes nothing it does not have to: after a clean close it syncs nothing (the
//! marker's removal is made durable for the whole data directory by its run, and an unchanged
//! checkpoint is not written again), so thousands of logs open in the time of their reads.
//!
//! Without the clean-shutdown marker, the segments from the recovery point on are scanned
//! batch by batch: CRCs checked, indexes rebuilt, a torn tail cut. Damage at rest is never
//! cut: damaged batches whose lengths read are stepped over when a valid batch follows them;
//! damage whose length does not read, with whole batches behind it, ends its segment where
//! the offsets those bytes may hold end, and the log goes on in a new segment from there (its
//! name, durable before anything is appended, keeps those offsets from being handed out
//! again, whatever fails or crashes later). Sealed segments below the
//! recovery point keep their checksummed indexes (rebuilt if missing or damaged). With the
//! marker, only the few bytes after each segment's last index entry are read.
//!
//! # Replication
//! A follower appends the leader's batches with their offsets and leader epochs kept
//! ([`Log::append_as_follower`]) and cuts the part of its log that diverged
//! ([`Log::truncate_to`], crash-safe step by step); see `follower.rs` and `truncate.rs`.

pub mod batch;
pub mod checkpoint;
pub mod clean_shutdown;
pub mod cleaner;
pub mod config;
mod follower;
pub mod index;
pub mod leader_epoch;
pub mod records;
pub mod reservation;
pub mod segment;
mod truncate;
mod window;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::txn::txn_index::TXN_INDEX_SUFFIX;
use batch::{BatchError, BatchHeader, HEADER_LEN};
use checkpoint::Checkpoint;
use index::{OffsetIndex, TimeIndex};
use leader_epoch::LeaderEpochCache;
use reservation::ReservationPace;
use segment::{ScanEnd, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};

pub use clean_shutdown::LogRun;
pub use config::{FlushPolicy, LogConfig};
pub use follower::FollowerAppendError;
pub use truncate::TruncateError;

use crate::clock::Clock;
use crate::disk::{self, Disk, DiskFile, OpenMode};
use crate::planted::{self, Bug};

const CHECKPOINT_FILE: &str = "log.checkpoint";
const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// `{offset:020}.snapshot`: state derived from the batches below `offset` (the producers'
/// snapshots, `txn::producer_snapshot`). Recovery deletes those beyond the data it recovered.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";

/// Opening a log failed; nothing was served from it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid log configuration: {0}")]
    Config(String),
    #[error("cannot open log {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

/// An append failed; the batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Kafka: CORRUPT_MESSAGE (bad CRC) or INVALID_RECORD.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// Kafka: MESSAGE_TOO_LARGE.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: u64 },
    /// Kafka: INVALID_RECORD with a record error for each (KIP-467): records a compacted log
    /// cannot keep (no key). Nothing of the record set was appended.
    #[error("One or more records have been rejected due to {} record errors in total: {}", .0.len(), .0.iter().take(3).map(|e| format!("[{}] {}", e.batch_index, e.message)).collect::<Vec<_>>().join(", "))]
    InvalidRecords(Vec<RecordError>),
    /// Kafka: KAFKA_STORAGE_ERROR. The batch may or may not survive; it was not acknowledged.
    #[error("log is offline: {0}")]
    Offline(String),
}

/// One record refused (KIP-467): its index within its batch, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Kafka: OFFSET_OUT_OF_RANGE.
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
    /// Kafka: KAFKA_STORAGE_ERROR. Damage at rest; the batch is never served.
    #[error("corrupt batch in {segment} at byte {position}: {error}")]
    Corrupt {
        segment: PathBuf,
        position: u64,
        error: BatchError,
    },
    /// Kafka: KAFKA_STORAGE_ERROR.
    #[error("log is offline: {0}")]
    Offline(String),
    #[error("I/O error reading the log: {0}")]
    Io(#[from] io::Error),
}

/// The log is offline (a write-path I/O error, or closed); reopen it to recover.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("log is offline: {0}")]
pub struct LogOffline(pub String);

/// DeleteRecords failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteRecordsError {
    /// Kafka: OFFSET_OUT_OF_RANGE.
    #[error("offset {offset} is beyond the log end {log_end_offset}")]
    OffsetOutOfRange { offset: u64, log_end_offset: u64 },
    #[error(transparent)]
    Offline(#[from] LogOffline),
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The LogAppendTime stamped on the batches, if the log uses it.
    pub log_append_time_ms: Option<i64>,
    pub log_start_offset: u64,
    /// Which recovery of the log the batch was appended in (see [`Log::reopen`]): a batch from
    /// before an in-place recovery that was not yet synced is lost, never durable.
    pub incarnation: u64,
}

/// What a read returned: whole stored batches, concatenated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadInfo {
    pub records: Vec<u8>,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub durable_end_offset: u64,
}

/// The log's offsets at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: u64,
    /// The next offset to be assigned.
    pub log_end_offset: u64,
    /// Every offset below this is synced.
    pub durable_end_offset: u64,
}

/// What the last open found and did, for tests, logs and the recovery benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The clean-shutdown marker was present.
    pub clean: bool,
    pub segments: usize,
    /// Segments read from their start (no trusted index).
    pub segments_scanned: usize,
    /// Bytes read and CRC-checked.
    pub bytes_scanned: u64,
    /// Bytes cut from a torn tail.
    pub torn_bytes_cut: u64,
    /// Damaged batches found at rest (kept, never served).
    pub corrupt_batches: usize,
    /// Offsets skipped because they may have been handed out before a crash.
    pub offsets_skipped: u64,
}

/// The suffix of a log directory being made (see [`Log::open_unmade`]): its first write fills
/// `<dir>.tmp` and renames it into place, so a power loss leaves no directory or a whole one,
/// and at worst a `.tmp` leftover that the next start removes.
pub const DIR_IN_MAKING_SUFFIX: &str = ".tmp";

/// What a log opened with no directory ([`Log::open_unmade`]) puts in the directory when its
/// first write makes it, before anything of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnmadeDir {
    /// File names and contents, written and synced under the temporary name: the partition's
    /// `partition.metadata`, so a directory never exists without it.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A partition directory its opener has just listed, for [`Log::open_listed`].
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The names in the directory, sorted.
    pub names: Vec<String>,
    /// The partition's `partition.metadata` in the directory, when its contents may not be
    /// durable (written without a sync at the partition's creation, or read back after a
    /// crash of the process, from the page cache): synced before the log makes its first
    /// segment file, so a segment's name is never durable beside a metadata file that a power
    /// loss can empty. `None` when the file is durable or absent.
    pub partition_metadata: Option<PathBuf>,
}

struct LogState {
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    next_offset: u64,
    durable_offset: u64,
    /// Durable (in the checkpoint): every unsynced offset ever shown is below it.
    reserved_offset: u64,
    reservation_pace: ReservationPace,
    /// The log start (or the leader epochs) moved and a full disk kept them from the files.
    checkpoint_stale: bool,
    recovery_point: u64,
    epochs: LeaderEpochCache,
    last_flush_ms: i64,
    offline: Option<String>,
    /// Where the cleaner's next dirty part starts (`cleaner-offset-checkpoint`, see
    /// [`cleaner`]); below it the log is clean.
    first_dirty_offset: u64,
    /// The checkpoint known durable on disk, if any: a close that would write the same skips
    /// the write (and its two syncs).
    checkpoint_on_disk: Option<Checkpoint>,
    /// The active segment has no file yet ([`segment::UnmadeFile`]): the log holds nothing
    /// and its first append makes the file ([`Log::make_active_file`]).
    active_unmade: bool,
    /// The log has no directory yet ([`Log::open_unmade`]); its first write makes it with
    /// these files ([`Log::make_dir`]).
    unmade_dir: Option<Arc<UnmadeDir>>,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn check_online(&self) -> Result<(), LogOffline> {
        match &self.offline {
            Some(reason) => Err(LogOffline(reason.clone())),
            None => Ok(()),
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            recovery_point: self.recovery_point,
            log_start_offset: self.log_start_offset,
            offset_reservation: self.reserved_offset,
        }
    }
}

/// A partition's log. Cheap to share behind an `Arc`; all methods take `&self`.
///
/// # Locks
/// Readers never wait for the disk's syncs. Two locks split the work:
/// - `state` holds the in-memory log (segments, indexes, offsets) and is only ever held for a
///   few instructions, never across I/O (a `std` mutex: holding it across an `.await` does not
///   compile into a `Send` future). Reads take it to snapshot what they need (a segment's file
///   handle, an index position, the published end), then read the file without it.
/// - `writer` serializes the tasks that change the log (appends, rolls, retention, checkpoint
///   and offset-reservation writes, truncation, close, reopen) across their I/O, syncs
///   included. The fields the log checkpoint records change only under it, so a checkpoint
///   written holding it is consistent.
///
/// - `files` is held shared by reads while they read segment files, and exclusively by the
///   two rare tasks that change bytes a read may have been promised: truncation and the
///   in-place recovery of [`Log::reopen`]. (Retention needs no more than the state lock: a
///   read keeps its file handle, which outlives the file's name.)
///
/// - `making_dir` is held by the one task making the log's directory ([`Log::make_dir`]) and
///   by [`Log::retire`], so a deleted partition's directory is never made after its removal.
///
/// Lock order: `sync_lock`, `writer`, `making_dir`, `files`, `state`. A read that changes the log (an
/// unbounded read past the durable end must first extend the offset reservation) takes
/// `writer`, without `files`; the fetch path never does (it reads below the high
/// watermark).
pub struct Log {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    dir: PathBuf,
    config: std::sync::Mutex<LogConfig>,
    state: std::sync::Mutex<LogState>,
    writer: tokio::sync::Mutex<()>,
    files: tokio::sync::RwLock<()>,
    recovery: RecoveryReport,
    /// Held by the one task running a group-commit sync.
    sync_lock: tokio::sync::Mutex<()>,
    offline: AtomicBool,
    log_start_offset: AtomicU64,
    log_end_offset: AtomicU64,
    durable_end_offset: AtomicU64,
    /// The active segment's base offset: it moves at every roll.
    active_base_offset: AtomicU64,
    /// Closed cleanly (offline for good, unlike an I/O failure).
    closed: AtomicBool,
    /// The partition has other replicas: the offset reservation, a single-replica policy, is
    /// off (see [`Log::set_replicated`]).
    replicated: AtomicBool,
    /// In-place recoveries and truncations so far (see [`AppendInfo::incarnation`]).
    incarnation: AtomicU64,
    /// The data directory's run this log was opened in (see [`clean_shutdown`]); `None`
    /// outside any run.
    run: Option<LogRun>,
    /// See [`Listing::partition_metadata`].
    partition_metadata: Option<PathBuf>,
    /// The directory exists (false from [`Log::open_unmade`] until the first write makes it).
    dir_made: AtomicBool,
    making_dir: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("offsets", &self.offsets())
            .finish()
    }
}

fn io_context(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Log {
    /// Opens the log in `dir`, creating it if missing, and recovers it. See the module doc.
    pub async fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<Log, OpenError> {
        Log::open_as(disk, clock, dir, config, false, None, None).await
    }

    /// [`Log::open`] (or [`Log::open_replicated`] if `replicated`) in a run of the data
    /// directory, which must already be durable in its `log-run` file: the clean-shutdown
    /// marker of the previous run is trusted and removed without a sync of its own (see
    /// [`clean_shutdown`]), and a clean close writes this run's.
    pub async fn open_in_run(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
        replicated: bool,
        run: LogRun,
    ) -> Result<Log, OpenError> {
        Log::open_as(disk, clock, dir, config, replicated, Some(run), None).await
    }

    /// Opens the log of a partition that has other replicas ([`Log::set_replicated`] from the
    /// start): its recovery cuts a torn tail and skips no offset, as Kafka's `UnifiedLog`
    /// recovery does. Offsets lost with unsynced bytes are the leader's to give again, in the
    /// leader's batches, and a follower fetches them back from where its log now ends; a filler
    /// batch of its own there would be a batch the leader never had, below the leader's high
    /// watermark, kept by every reconciliation (it carries no leader epoch to diverge on).
    pub async fn open_replicated(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<Log, OpenError> {
        Log::open_as(disk, clock, dir, config, true, None, None).await
    }

    /// [`Log::open_in_run`] (`run` given) or [`Log::open_replicated`] / [`Log::open`] (none)
    /// of a directory that exists and that the caller has just listed (`listing`), so
    /// recovery neither makes the directory again nor lists it twice, and reads only the
    /// metadata files it holds (a start opens thousands of logs; each system call saved is
    /// saved thousands of times).
    pub async fn open_listed(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
        replicated: bool,
        run: Option<LogRun>,
        listing: Listing,
    ) -> Result<Log, OpenError> {
        Log::open_as(disk, clock, dir, config, replicated, run, Some(listing)).await
    }

    /// Opens the empty log of a partition whose directory does not exist (a new partition, or
    /// one never written since its creation), touching no disk: log start and log end 0, no
    /// leader epoch, a clean recovery. The first write that must put a byte in the directory
    /// (an append of a producer or a follower) first makes it, with `unmade`'s files, under a
    /// temporary name, and renames it into place ([`Log::make_dir`]). Until then the log has no
    /// file to recover or close: a restart finds no directory and opens it this way again.
    /// Kafka makes a partition's directory at its creation; 10,000 of them are most of the cost
    /// of creating 10,000 partitions on this VM's disk (the kernel making inodes), and an
    /// empty log's directory says nothing the cluster image does not.
    pub fn open_unmade(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
        replicated: bool,
        run: Option<LogRun>,
        unmade: UnmadeDir,
    ) -> Result<Log, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let state = unmade_state(clock.as_ref(), Arc::new(unmade));
        let recovery = unmade_recovery();
        Ok(Log::assemble(
            disk, clock, dir, config, replicated, run, None, state, recovery,
        ))
    }

    async fn open_as(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
        replicated: bool,
        run: Option<LogRun>,
        listed: Option<Listing>,
    ) -> Result<Log, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let skip = if replicated {
            Skip::Nothing
        } else {
            Skip::Reserved { assigned_end: 0 }
        };
        let (names, partition_metadata) = match listed {
            Some(listing) => (Some(listing.names), listing.partition_metadata),
            None => (None, None),
        };
        let (state, recovery) = recover(
            disk.as_ref(),
            clock.as_ref(),
            &dir,
            &config,
            skip,
            None,
            run,
            names,
        )
        .await
        .map_err(|source| OpenError::Io {
            dir: dir.clone(),
            source,
        })?;
        Ok(Log::assemble(
            disk,
            clock,
            dir,
            config,
            replicated,
            run,
            partition_metadata,
            state,
            recovery,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        dir: PathBuf,
        config: LogConfig,
        replicated: bool,
        run: Option<LogRun>,
        partition_metadata: Option<PathBuf>,
        state: LogState,
        recovery: RecoveryReport,
    ) -> Log {
        let dir_made = state.unmade_dir.is_none();
        let log = Log {
            disk,
            clock,
            dir,
            config: std::sync::Mutex::new(config),
            state: std::sync::Mutex::new(state),
            writer: tokio::sync::Mutex::new(()),
            files: tokio::sync::RwLock::new(()),
            recovery,
            sync_lock: tokio::sync::Mutex::new(()),
            offline: AtomicBool::new(false),
            log_start_offset: AtomicU64::new(0),
            log_end_offset: AtomicU64::new(0),
            durable_end_offset: AtomicU64::new(0),
            active_base_offset: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            replicated: AtomicBool::new(replicated),
            incarnation: AtomicU64::new(0),
            run,
            partition_metadata,
            dir_made: AtomicBool::new(dir_made),
            making_dir: tokio::sync::Mutex::new(()),
        };
        log.publish(&log.state());
        log
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the log's directory exists: false for a log opened with
    /// [`Log::open_unmade`] until its first write. Nothing may be written into, read from or
    /// listed in the directory before: a log without one holds nothing.
    pub fn is_dir_made(&self) -> bool {
        self.dir_made.load(Ordering::Acquire)
    }

    /// Makes the log's directory if it has none yet ([`Log::open_unmade`]): the directory is
    /// made under a temporary name (`<dir>.tmp`), its files (`partition.metadata`) written and
    /// synced, the new directory synced, then renamed into place and its parent synced. A
    /// power loss at any step leaves no directory (and maybe a `.tmp` leftover, removed at the
    /// next start) or a whole one, so the log's first bytes never sit in a directory that a
    /// crash can take or that names no topic. Every write into the directory calls this
    /// first; a failure leaves the log as it was, its directory unmade (the caller takes the
    /// log offline).
    async fn make_dir(&self) -> io::Result<()> {
        if self.is_dir_made() {
            return Ok(());
        }
        let _making = self.making_dir.lock().await;
        let unmade = {
            let st = self.state();
            if let Some(reason) = &st.offline {
                return Err(io::Error::other(format!("log is offline: {reason}")));
            }
            match &st.unmade_dir {
                Some(unmade) => Arc::clone(unmade),
                None => return Ok(()),
            }
        };
        make_dir_in_place(self.disk.as_ref(), &self.dir, &unmade).await?;
        self.state().unmade_dir = None;
        self.dir_made.store(true, Ordering::Release);
        tracing::debug!(dir = %self.dir.display(), "log directory made at the first write");
        Ok(())
    }

    /// What recovery found when this log was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn config(&self) -> LogConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The flush policy alone: [`Log::config`] copies every setting, and a produce asks for
    /// this one on every append.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).flush
    }

    /// The topic's `compression.type` alone (see [`Log::flush_policy`]).
    pub fn compression(&self) -> Option<batch::Compression> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .compression
    }

    /// Changes topic-level settings (IncrementalAlterConfigs); they apply from the next append.
    pub fn set_config(&self, config: LogConfig) -> Result<(), String> {
        config.validate()?;
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    pub fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start_offset: self.log_start_offset.load(Ordering::Acquire),
            log_end_offset: self.log_end_offset.load(Ordering::Acquire),
            durable_end_offset: self.durable_end_offset.load(Ordering::Acquire),
        }
    }

    pub fn log_start_offset(&self) -> u64 {
        self.offsets().log_start_offset
    }

    pub fn log_end_offset(&self) -> u64 {
        self.offsets().log_end_offset
    }

    pub fn durable_end_offset(&self) -> u64 {
        self.offsets().durable_end_offset
    }

    /// The in-memory state, for a few instructions: never held across an `.await` (see
    /// [`Log`]'s lock notes).
    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, st: &LogState) {
        assert!(
            st.log_start_offset <= st.next_offset,
            "log start passed the log end"
        );
        assert!(
            st.durable_offset <= st.next_offset,
            "durable end passed the log end"
        );
        self.log_start_offset
            .store(st.log_start_offset, Ordering::Release);
        self.log_end_offset.store(st.next_offset, Ordering::Release);
        self.durable_end_offset
            .store(st.durable_offset, Ordering::Release);
        self.active_base_offset
            .store(st.active().base_offset, Ordering::Release);
    }

    /// The base offset of the active segment: it moves at every roll (producer snapshots are
    /// taken then).
    pub fn active_segment_base(&self) -> u64 {
        self.active_base_offset.load(Ordering::Acquire)
    }

    /// The disk the log lives on, for the files kept beside its segments (producer snapshots).
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    fn go_offline(&self, st: &mut LogState, what: &str, e: &io::Error) -> LogOffline {
        let reason = format!("{what}: {e}");
        if st.offline.is_none() {
            tracing::error!(dir = %self.dir.display(), %reason, "log goes offline after an I/O error");
            st.offline = Some(reason.clone());
            self.offline.store(true, Ordering::Release);
        }
        LogOffline(st.offline.clone().unwrap_or(reason))
    }

    /// [`Log::go_offline`] for a caller that does not hold the state.
    fn fail(&self, what: &str, e: &io::Error) -> LogOffline {
        self.go_offline(&mut self.state(), what, e)
    }

    /// Number of segments, for tests and metrics.
    pub async fn segment_count(&self) -> usize {
        self.state().segments.len()
    }

    /// The base offsets of the segments, in order (to step past a damaged segment).
    pub async fn segment_bases(&self) -> Vec<u64> {
        self.state().segments.keys().copied().collect()
    }

    /// The base offset of the first segment after the one holding `offset`: where a reader
    /// that met a batch damaged at rest resumes when the damage hides where the next batch of
    /// its segment starts ([`Log::resume_after_damage`]).
    pub async fn next_segment_after(&self, offset: u64) -> Option<u64> {
        let st = self.state();
        st.segments
            .range(offset + 1..)
            .next()
            .map(|(&base, _)| base)
    }

    /// Where a reader that met a batch damaged at rest ([`ReadError::Corrupt`] at `position`
    /// of the segment file `segment`) resumes: the base offset of the first valid batch after
    /// it (and after any damaged batches right behind it), which recovery stepped over the damage to keep ([`segment::Segment::scan`]) and
    /// reads serve; else (the damage ends its segment, or hides where the next batch starts)
    /// the next segment's base; `None` when nothing readable follows. A reader that skipped
    /// the rest of the segment instead would miss batches the log keeps and serves: the
    /// producers' state rebuilt that way forgets them, and a retry of one is appended again.
    pub async fn offset_after_damage(
        &self,
        segment: &Path,
        position: u64,
    ) -> Result<Option<u64>, ReadError> {
        let _files = self.files.read().await;
        let found = {
            let st = self.state();
            st.check_online().map_err(|e| ReadError::Offline(e.0))?;
            st.segments
                .iter()
                .find(|(&base, _)| segment::path(&self.dir, base, LOG_SUFFIX) == segment)
                .map(|(&base, s)| {
                    let next = st.segments.range(base + 1..).next().map(|(&b, _)| b);
                    (Arc::clone(&s.file), s.size, next)
                })
        };
        // Gone meanwhile (retention, truncation): the caller's next read says where the log is.
        let Some((file, size, next_segment)) = found else {
            return Ok(None);
        };
        let mut header_buf = [0u8; HEADER_LEN];
        let n = file.read_at(position, &mut header_buf).await?;
        let Ok(damaged) = BatchHeader::parse(&header_buf[..n]) else {
            return Ok(next_segment);
        };
        let after = position + damaged.size() as u64;
        Ok(
            match valid_batch_after_damage(file.as_ref(), after, size).await? {
                Some((_, valid)) => Some(valid.base_offset as u64),
                None => next_segment,
            },
        )
    }

    /// Where a replay of the whole log (producer state, `__consumer_offsets`,
    /// `__transaction_state`) that met a batch damaged at rest while reading at `offset`
    /// resumes: [`Log::offset_after_damage`] when that moves past `offset`, else (the damage
    /// hides where its batch ends) the next segment; `None` when nothing readable follows.
    /// One helper for every replay, so none of them drops what the log keeps and serves after
    /// the damage.
    pub async fn resume_after_damage(
        &self,
        offset: u64,
        segment: &Path,
        position: u64,
    ) -> Result<Option<u64>, ReadError> {
        Ok(match self.offset_after_damage(segment, position).await? {
            Some(after) if after > offset => Some(after),
            _ => self.next_segment_after(offset).await,
        })
    }

    /// Total bytes of all segments.
    pub async fn size_bytes(&self) -> u64 {
        self.state().segments.values().map(|s| s.size).sum()
    }

    /// A copy of the leader-epoch cache.
    pub async fn leader_epochs(&self) -> LeaderEpochCache {
        self.state().epochs.clone()
    }

    /// Appends a record set of one or more whole v2 batches. Validates every batch, assigns
    /// offsets from the log end and stamps `leader_epoch` (if ≥ 0) in place, so on return
    /// `records` holds exactly the stored bytes. Under the durable policy, returns once synced.
    pub async fn append(
        &self,
        records: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo, AppendError> {
        let durable = self.config().flush == FlushPolicy::Durable;
        // Under the durable policy the offsets are returned only once synced: nothing unsynced
        // is shown, so nothing needs reserving.
        let info = self
            .append_assigning(records, leader_epoch, !durable)
            .await?;
        if durable {
            self.wait_append_durable(&info)
                .await
                .map_err(|e| AppendError::Offline(e.0))?;
        }
        Ok(info)
    }

    /// [`Log::append`] without waiting for the sync under the durable policy: the batch is in
    /// the log (readable up to the caller's bound) but not yet durable. The returned offsets
    /// may be shown at once (Kafka's acks=1 answers here): they are covered by the offset
    /// reservation (see [`reservation`]). [`Log::wait_durable`] completes the durable path.
    pub async fn append_unsynced(
        &self,
        records: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo, AppendError> {
        self.append_assigning(records, leader_epoch, true).await
    }

    /// [`Log::append_unsynced`] for a caller that shows the offsets to no one until
    /// [`Log::wait_append_durable`] returns (acks=all, acks=0): under the durable policy they
    /// need no reservation, so a crash before the sync skips nothing. Under the lazy policy
    /// reads show them at once, so they are reserved all the same.
    pub async fn append_unexposed(
        &self,
        records: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo, AppendError> {
        self.append_assigning(records, leader_epoch, false).await
    }

    /// Assigns offsets and appends. `exposed`: the caller may show the offsets before they are
    /// synced, so the reservation must cover them first.
    async fn append_assigning(
        &self,
        records: &mut [u8],
        leader_epoch: i32,
        exposed: bool,
    ) -> Result<AppendInfo, AppendError> {
        let headers = batch::validate_all(records)?;
        let config = self.config();
        for header in &headers {
            if header.size() as u64 > config.max_message_bytes {
                return Err(AppendError::MessageTooLarge {
                    size: header.size(),
                    max: config.max_message_bytes,
                });
            }
        }
        if config.compact {
            self.check_keys(records, &headers)?;
        }
        let record_count: u64 = headers.iter().map(|h| h.last_offset_delta as u64 + 1).sum();
        let now = self.clock.now_ms();
        // Lazy reads and high watermarks show every appended offset at once.
        let must_reserve =
            (exposed || matches!(config.flush, FlushPolicy::Lazy { .. })) && !self.is_replicated();
        let info = {
            let writer = self
                .lock_writer_with_room(records.len() as u64, record_count, now)
                .await
                .map_err(|e| AppendError::Offline(e.0))?;
            // Before the checkpoint and leader epochs below go into it.
            self.make_dir_or_fail()
                .await
                .map_err(|e| AppendError::Offline(e.0))?;
            // Offsets and the leader epoch are decided under the state lock; the files
            // recording them are written holding only the writer lock.
            let (base_offset, epochs) = {
                let mut st = self.state();
                st.check_online().map_err(|e| AppendError::Offline(e.0))?;
                let base_offset = st.next_offset;
                let epochs = (leader_epoch >= 0 && st.epochs.assign(leader_epoch, base_offset))
                    .then(|| st.epochs.encode());
                (base_offset, epochs)
            };
            let last_offset = base_offset + record_count - 1;
            if must_reserve {
                self.reserve_locked(&writer, last_offset + 1, config.offset_reservation)
                    .await
                    .map_err(|e| AppendError::Offline(e.0))?;
            }
            if let Some(encoded) = epochs {
                if let Err(e) = self.write_leader_epochs(&encoded).await {
                    return Err(AppendError::Offline(
                        self.fail("writing leader epochs", &e).0,
                    ));
                }
            }

            let mut pos = 0;
            let mut next = base_offset;
            for header in &headers {
                let bytes = &mut records[pos..pos + header.size()];
                batch::set_base_offset(bytes, next as i64);
                if leader_epoch >= 0 {
                    batch::set_partition_leader_epoch(bytes, leader_epoch);
                }
                if config.log_append_time {
                    batch::set_log_append_time(bytes, now);
                }
                next += header.last_offset_delta as u64 + 1;
                pos += header.size();
            }
            debug_assert!(
                batch::validate_all(records).is_ok(),
                "patched batches stay valid"
            );

            let (log_start_offset, incarnation) = {
                let st = self
                    .append_to_active(&writer, records, now, &config)
                    .await
                    .map_err(|e| AppendError::Offline(e.0))?;
                assert_eq!(st.next_offset, last_offset + 1);
                assert!(
                    !must_reserve || st.next_offset <= st.reserved_offset,
                    "an offset shown before its sync is not reserved"
                );
                // Read under the state lock: a recovery or truncation bumps it there.
                (st.log_start_offset, self.incarnation())
            };
            drop(writer);
            AppendInfo {
                base_offset,
                last_offset,
                log_append_time_ms: config.log_append_time.then_some(now),
                log_start_offset,
                incarnation,
            }
        };
        if let FlushPolicy::Lazy { .. } = config.flush {
            self.flush_if_due()
                .await
                .map_err(|e| AppendError::Offline(e.0))?;
        }
        Ok(info)
    }

    /// A compacted log refuses records without a key, as Kafka's `LogValidator` does: the
    /// cleaner could never tell which of them is the latest.
    fn check_keys(&self, records: &[u8], headers: &[BatchHeader]) -> Result<(), AppendError> {
        let partition = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut errors = Vec::new();
        let mut pos = 0;
        for header in headers {
            let bytes = &records[pos..pos + header.size()];
            pos += header.size();
            if header.is_control() {
                continue;
            }
            match records::keyless_records(bytes, 256 << 20) {
                Ok(keyless) => errors.extend(keyless.into_iter().map(|batch_index| RecordError {
                    batch_index,
                    message: format!(
                        "Compacted topic cannot accept message without key in topic partition {partition}."
                    ),
                })),
                Err(e) => {
                    return Err(AppendError::InvalidRecords(vec![RecordError {
                        batch_index: 0,
                        message: e.to_string(),
                    }]))
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AppendError::InvalidRecords(errors))
        }
    }

    /// Takes the writer lock with the active segment able to take `bytes` more bytes holding
    /// `record_count` offsets from the log end, rolling first if it cannot. The segment to be
    /// sealed is synced before the lock is taken for the roll (under the lazy policy it can
    /// hold a whole segment of unsynced bytes), so the roll syncs only what arrived meanwhile.
    async fn lock_writer_with_room(
        &self,
        bytes: u64,
        record_count: u64,
        now: i64,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, LogOffline> {
        assert!(record_count > 0, "an append of no offsets");
        let config = self.config();
        let mut flushed_for_roll = false;
        loop {
            let writer = self.writer.lock().await;
            let (needs_roll, unsynced) = {
                let st = self.state();
                st.check_online()?;
                let last_offset = st.next_offset + record_count - 1;
                let active = st.active();
                let needs_roll = active.size > 0
                    && (active.size + bytes > config.segment_bytes
                        || now.saturating_sub(active.rolling_base_ms.unwrap_or(now))
                            >= config.max_segment_ms()
                        || !active.fits_offset(last_offset));
                (needs_roll, active.synced_size < active.size)
            };
            if needs_roll && !flushed_for_roll && unsynced {
                drop(writer);
                self.flush().await?;
                flushed_for_roll = true;
                continue;
            }
            if needs_roll {
                self.roll_locked(&writer).await?;
            }
            return Ok(writer);
        }
    }

    /// Appends `records` (whole batches, offsets final) to the active segment, holding the
    /// writer lock (`_writer`), and records them in the state. The bytes go to the file
    /// without the state lock: readers keep reading up to the published end meanwhile and see
    /// the batches once they are recorded. Returns the state, published, still locked.
    async fn append_to_active(
        &self,
        _writer: &tokio::sync::MutexGuard<'_, ()>,
        records: &[u8],
        now: i64,
        config: &LogConfig,
    ) -> Result<std::sync::MutexGuard<'_, LogState>, LogOffline> {
        self.make_active_file(_writer).await?;
        let (file, expected_position, next_offset) = {
            let st = self.state();
            st.check_online()?;
            (
                Arc::clone(&st.active().file),
                st.active().size,
                st.next_offset,
            )
        };
        let appended = file.append(records).await;
        let mut st = self.state();
        let position = match appended {
            // A failed sync elsewhere can drop unsynced bytes under us (fsyncgate): if the
            // file no longer ends where the log does, its tail is unknown.
            Ok(position) if position != expected_position => {
                let e = io::Error::other(format!(
                    "segment file ends at {position}, the log expected {expected_position}"
                ));
                return Err(self.go_offline(&mut st, "appending", &e));
            }
            Ok(position) => position,
            Err(e) => return Err(self.go_offline(&mut st, "appending", &e)),
        };
        // A sync that failed while the bytes were written took the log offline: they are not
        // published (the next open recovers what is really on disk).
        st.check_online()?;
        assert_eq!(
            st.next_offset, next_offset,
            "only the writer assigns offsets"
        );
        let active = st.active_mut();
        assert_eq!(
            active.size, position,
            "only the writer appends to the segment"
        );
        if active.rolling_base_ms.is_none() {
            active.rolling_base_ms = Some(now);
        }
        let mut at = 0;
        while at < records.len() {
            let header = BatchHeader::parse(&records[at..]).expect("validated above");
            active.record_batch(&header, position + at as u64, config.index_interval_bytes);
            at += header.size();
        }
        let end = active.next_offset;
        assert!(end > next_offset, "an append of no offsets");
        st.next_offset = end;
        self.publish(&st);
        Ok(st)
    }

    /// Makes the file of an active segment that has none yet (an empty log's, see
    /// [`segment::UnmadeFile`]), holding the writer lock (`_writer`). The partition's
    /// `partition.metadata` is synced first ([`Listing::partition_metadata`]); the segment's
    /// name, and every name the directory got before it, are durable before the first byte
    /// goes in: bytes synced into a file whose name a crash can take are lost.
    async fn make_active_file(
        &self,
        _writer: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), LogOffline> {
        let base = {
            let st = self.state();
            st.check_online()?;
            if !st.active_unmade {
                return Ok(());
            }
            st.active().base_offset
        };
        let path = segment::path(&self.dir, base, LOG_SUFFIX);
        let made = async {
            self.make_dir().await?;
            sync_partition_metadata(self.disk.as_ref(), self.partition_metadata.as_deref()).await?;
            // `Create`: an attempt that failed after the file was made left it empty.
            let file = self.disk.open(&path, OpenMode::Create).await?;
            if !file.is_empty() {
                return Err(io::Error::other(format!(
                    "{} holds {} bytes the log does not know",
                    path.display(),
                    file.len()
                )));
            }
            self.disk.sync_dir(&self.dir).await?;
            Ok::<_, io::Error>(file)
        }
        .await;
        let mut st = self.state();
        let file = match made {
            Ok(file) => file,
            Err(e) => return Err(self.go_offline(&mut st, "making the first segment", &e)),
        };
        st.check_online()?;
        let active = st.active_mut();
        assert_eq!(active.base_offset, base, "the active segment moved");
        assert_eq!(active.size, 0, "an unmade segment holds nothing");
        active.file = file;
        st.active_unmade = false;
        Ok(())
    }

    /// Returns once every offset below `target` is synced, running a sync if no other task is.
    /// This is the group commit: whoever holds `sync_lock` syncs everything appended so far, and
    /// the tasks queued behind it usually find their offsets already durable.
    pub async fn wait_durable(&self, target: u64) -> Result<(), LogOffline> {
        self.wait_durable_in(target, self.incarnation()).await
    }

    /// Returns once the appended batches are synced; fails if the log recovered from a disk
    /// failure since they were appended (their bytes were not synced before it: they are gone,
    /// even though the recovered log's durable end is past their offsets).
    pub async fn wait_append_durable(&self, info: &AppendInfo) -> Result<(), LogOffline> {
        self.wait_durable_in(info.last_offset + 1, info.incarnation)
            .await
    }

    /// The number of in-place recoveries so far.
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Acquire)
    }

    async fn wait_durable_in(&self, target: u64, incarnation: u64) -> Result<(), LogOffline> {
        let lost = || {
            LogOffline(
                "the log was recovered from a disk failure or truncated before this append was synced"
                    .into(),
            )
        };
        loop {
            // Durable end first, then the incarnation: `reopen` bumps the incarnation before it
            // publishes the recovered durable end.
            let durable = self.durable_end_offset.load(Ordering::Acquire);
            if self.incarnation() != incarnation {
                return Err(lost());
            }
            if durable >= target {
                return Ok(());
            }
            self.check_online_fast().await?;
            // Waiters queue here in FIFO order. By the time one gets the lock, the appends made
            // during the previous sync are waiting too, and one sync covers them all; the
            // tasks behind it find their offsets durable and return without syncing.
            let _sync = self.sync_lock.lock().await;
            let durable = self.durable_end_offset.load(Ordering::Acquire);
            if self.incarnation() != incarnation {
                return Err(lost());
            }
            if durable >= target {
                return Ok(());
            }
            self.sync_appended().await?;
        }
    }

    async fn check_online_fast(&self) -> Result<(), LogOffline> {
        if self.offline.load(Ordering::Acquire) {
            self.state().check_online()?;
        }
        Ok(())
    }

    /// Syncs every segment with unsynced bytes and advances the durable offset to the log end
    /// as it was when the sync began. Called with `sync_lock` held.
    async fn sync_appended(&self) -> Result<(), LogOffline> {
        let (files, end) = {
            let st = self.state();
            st.check_online()?;
            if st.durable_offset >= st.next_offset {
                return Ok(());
            }
            let files: Vec<(u64, Arc<dyn DiskFile>, u64)> = st
                .segments
                .values()
                .filter(|s| s.synced_size < s.size)
                .map(|s| (s.base_offset, Arc::clone(&s.file), s.size))
                .collect();
            (files, st.next_offset)
        };
        let mut result = Ok(());
        for (_, file, _) in &files {
            result = file.sync().await;
            if result.is_err() {
                break;
            }
        }
        let mut st = self.state();
        match result {
            // Another sync of these files (a roll's) failed while this one ran: it may have
            // dropped the very bytes this one was to make durable (fsyncgate), and the log
            // went offline then. A success that ends after that failure proves nothing.
            Ok(()) if st.offline.is_some() => {
                Err(LogOffline(st.offline.clone().expect("checked offline")))
            }
            Ok(()) => {
                for (base, _, size) in files {
                    if let Some(segment) = st.segments.get_mut(&base) {
                        segment.synced_size = segment.synced_size.max(size);
                    }
                }
                st.durable_offset = st.durable_offset.max(end);
                st.last_flush_ms = self.clock.now_ms();
                self.publish(&st);
                Ok(())
            }
            Err(e) => Err(self.go_offline(&mut st, "syncing", &e)),
        }
    }

    /// Syncs everything appended so far, unless the log is truncated or recovered first: for a
    /// sync nobody waits on, which must not chase a log end a truncation took away. (The end
    /// and the incarnation are read together: a truncation changes both under the state lock.)
    pub async fn flush_unless_cut(&self) -> Result<(), LogOffline> {
        let (end, incarnation) = {
            let st = self.state();
            (st.next_offset, self.incarnation())
        };
        self.wait_durable_in(end, incarnation).await
    }

    /// [`Log::flush_unless_cut`], then drops what that sync made durable from the page cache
    /// ([`DiskFile::drop_cached`]). For a follower replaying committed batches far behind the
    /// leader (catch-up): nobody reads those pages soon, and its next appends reuse them
    /// instead of first-touching fresh memory, which costs several times the copy on this VM
    /// (README, "catch-up", session 13). A failed drop is only logged: it is a hint.
    pub async fn flush_unless_cut_dropping_cache(&self) -> Result<(), LogOffline> {
        let unsynced: Vec<(Arc<dyn DiskFile>, u64, u64)> = {
            let st = self.state();
            st.segments
                .values()
                .filter(|s| s.synced_size < s.size)
                .map(|s| (Arc::clone(&s.file), s.synced_size, s.size))
                .collect()
        };
        self.flush_unless_cut().await?;
        for (file, from, to) in unsynced {
            if let Err(e) = file.drop_cached(from, to - from).await {
                tracing::debug!(%e, "dropping synced bytes from the page cache failed");
            }
        }
        Ok(())
    }

    /// Syncs everything appended so far.
    pub async fn flush(&self) -> Result<(), LogOffline> {
        let end = self.state().next_offset;
        self.wait_durable(end).await
    }

    /// Under the lazy policy, flushes if `flush.messages` or `flush.ms` says it is time. The
    /// broker calls this periodically; appends call it too.
    pub async fn flush_if_due(&self) -> Result<(), LogOffline> {
        let FlushPolicy::Lazy {
            flush_messages,
            flush_ms,
        } = self.config().flush
        else {
            return Ok(());
        };
        let due = {
            let st = self.state();
            st.check_online()?;
            let unflushed = st.next_offset - st.durable_offset;
            unflushed > 0
                && (flush_messages.is_some_and(|n| unflushed >= n)
                    || flush_ms.is_some_and(|ms| self.clock.now_ms() - st.last_flush_ms >= ms))
        };
        if due {
            self.flush().await?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end (if the active one holds
    /// anything).
    pub async fn roll(&self) -> Result<(), LogOffline> {
        let writer = self.writer.lock().await;
        self.state().check_online()?;
        self.roll_locked(&writer).await
    }

    /// The roll, called holding the writer lock (`_writer` is the proof). The syncs and file
    /// writes run without the state lock, so readers keep reading meanwhile: the old segment
    /// stays readable as it was, and the new one appears once it exists on disk.
    async fn roll_locked(
        &self,
        _writer: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), LogOffline> {
        let (file, old_base, new_base, size) = {
            let st = self.state();
            st.check_online()?;
            let active = st.active();
            if active.size == 0 {
                return Ok(());
            }
            (
                Arc::clone(&active.file),
                active.base_offset,
                st.next_offset,
                active.size,
            )
        };
        if let Err(e) = file.sync().await {
            return Err(self.fail("rolling a segment", &e));
        }
        let (index, time_index) = {
            let mut st = self.state();
            st.check_online()?;
            let active = st.active_mut();
            // Only the writer appends, and it is here: the segment is as it was before the sync.
            assert_eq!(active.base_offset, old_base, "the active segment moved");
            assert_eq!(active.size, size, "the active segment grew during its roll");
            active.synced_size = active.size;
            active.seal_time_index();
            (active.index.encode(), active.time_index.encode())
        };
        let result = async {
            self.write_indexes(old_base, &index, &time_index).await?;
            let path = segment::path(&self.dir, new_base, LOG_SUFFIX);
            let file = self.disk.open(&path, OpenMode::CreateNew).await?;
            self.disk.sync_dir(&self.dir).await?;
            Ok::<_, io::Error>(file)
        }
        .await;
        let file = match result {
            Ok(file) => file,
            Err(e) => return Err(self.fail("rolling a segment", &e)),
        };
        let checkpoint = {
            let mut st = self.state();
            st.check_online()?;
            assert_eq!(
                st.next_offset, new_base,
                "offsets were assigned during a roll"
            );
            st.segments.insert(new_base, Segment::new(new_base, file));
            st.durable_offset = st.durable_offset.max(new_base);
            st.recovery_point = new_base;
            self.publish(&st);
            st.checkpoint()
        };
        if let Err(e) = self.write_checkpoint(checkpoint).await {
            return Err(self.fail("writing checkpoint", &e));
        }
        tracing::debug!(dir = %self.dir.display(), base_offset = new_base, "rolled segment");
        Ok(())
    }

    /// Makes the reservation cover every offset below `end` (see [`reservation`]), writing the
    /// checkpoint if it must grow, holding the writer lock (`_writer`), before offsets below
    /// `end` are shown. `reserved_offset` in the state only ever holds a durable reservation:
    /// it is raised once the checkpoint holding it is written.
    async fn reserve_locked(
        &self,
        writer: &tokio::sync::MutexGuard<'_, ()>,
        end: u64,
        max_step: u64,
    ) -> Result<(), LogOffline> {
        let reserved = {
            let mut st = self.state();
            st.check_online()?;
            if end <= st.reserved_offset {
                return Ok(());
            }
            st.reservation_pace
                .extend(end, self.clock.now_ms(), max_step)
        };
        self.store_reservation(writer, reserved).await?;
        assert!(
            end <= self.state().reserved_offset,
            "the reservation covers its need"
        );
        Ok(())
    }

    /// Raises the offset reservation to `reserved`: the checkpoint first, then the state.
    async fn store_reservation(
        &self,
        _writer: &tokio::sync::MutexGuard<'_, ()>,
        reserved: u64,
    ) -> Result<(), LogOffline> {
        let checkpoint = {
            let st = self.state();
            st.check_online()?;
            assert!(reserved > st.reserved_offset, "a reservation only grows");
            Checkpoint {
                offset_reservation: reserved,
                ..st.checkpoint()
            }
        };
        if let Err(e) = self.write_checkpoint(checkpoint).await {
            return Err(self.fail("writing checkpoint", &e));
        }
        let mut st = self.state();
        st.check_online()?;
        assert!(
            reserved > st.reserved_offset,
            "only the writer moves the reservation"
        );
        st.reserved_offset = reserved;
        Ok(())
    }

    /// [`Log::reserve_locked`] for a caller that does not hold the writer lock.
    async fn reserve(&self, end: u64) -> Result<(), LogOffline> {
        let writer = self.writer.lock().await;
        let max_step = self.config().offset_reservation;
        self.reserve_locked(&writer, end, max_step).await
    }

    /// Before offsets below `end` that were appended with [`Log::append_unexposed`] are shown
    /// unsynced after all (an acks=1 retry answered with a duplicate's offsets): reserves them.
    pub async fn expose(&self, end: u64) -> Result<(), LogOffline> {
        if self.is_replicated() {
            return Ok(());
        }
        {
            let st = self.state();
            st.check_online()?;
            if end <= st.durable_offset.max(st.reserved_offset) {
                return Ok(());
            }
        }
        self.reserve(end).await
    }

    /// Rewrites the checkpoint when it is behind, as the broker's maintenance asks: a log start
    /// that a full disk kept from it (see [`Log::apply_retention`]), or an offset reservation
    /// headroom beyond the log end, so that a crash of an idle log skips nothing. Every offset
    /// shown is below the log end, so moving the reservation back to it is always correct; it
    /// waits until everything appended is durable only so that a busy log does not trade one
    /// checkpoint write for another. A failed write leaves the older checkpoint, which is still
    /// correct: it is only logged.
    pub async fn tidy_checkpoint(&self) {
        let writer = self.writer.lock().await;
        let stale = {
            let st = self.state();
            if st.offline.is_some() {
                return;
            }
            st.checkpoint_stale
        };
        if stale {
            if let Err(e) = self.store_log_start(&writer).await {
                tracing::warn!(dir = %self.dir.display(), %e, "could not write the checkpoint");
                return;
            }
        }
        let checkpoint = {
            let st = self.state();
            if st.offline.is_some()
                || st.durable_offset < st.next_offset
                || st.reserved_offset <= st.next_offset
            {
                return;
            }
            let checkpoint = Checkpoint {
                offset_reservation: st.next_offset,
                ..st.checkpoint()
            };
            assert!(checkpoint.offset_reservation >= st.durable_offset);
            checkpoint
        };
        match self.write_checkpoint(checkpoint).await {
            Ok(()) => {
                let mut st = self.state();
                // The writer lock kept the log end where it was.
                assert_eq!(st.next_offset, checkpoint.offset_reservation);
                st.reserved_offset = checkpoint.offset_reservation;
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), %e, "could not release the offset reservation");
            }
        }
    }

    async fn write_indexes(
        &self,
        base_offset: u64,
        index: &[u8],
        time_index: &[u8],
    ) -> io::Result<()> {
        // Derived and checksummed: an index a crash loses or leaves older is rebuilt or
        // completed by a scan, so an unchanged one (a close with no appends) is not rewritten.
        let index_path = segment::path(&self.dir, base_offset, INDEX_SUFFIX);
        disk::write_file_atomic_if_changed(self.disk.as_ref(), &index_path, index).await?;
        let time_path = segment::path(&self.dir, base_offset, TIME_INDEX_SUFFIX);
        disk::write_file_atomic_if_changed(self.disk.as_ref(), &time_path, time_index).await?;
        Ok(())
    }

    async fn write_checkpoint(&self, checkpoint: Checkpoint) -> io::Result<()> {
        // Unknown while the write is under way; known again once it returned.
        self.state().checkpoint_on_disk = None;
        let written = self.write_checkpoint_file(checkpoint).await;
        if written.is_ok() {
            self.state().checkpoint_on_disk = Some(checkpoint);
        }
        written
    }

    async fn write_checkpoint_file(&self, checkpoint: Checkpoint) -> io::Result<()> {
        self.make_dir().await?;
        let path = self.dir.join(CHECKPOINT_FILE);
        disk::write_file_atomic(self.disk.as_ref(), &path, &checkpoint.encode()).await
    }

    /// Writes the leader-epoch checkpoint (`encoded`), making the directory first if need be.
    async fn write_leader_epochs(&self, encoded: &[u8]) -> io::Result<()> {
        self.make_dir().await?;
        let path = self.dir.join(LEADER_EPOCH_FILE);
        disk::write_file_atomic(self.disk.as_ref(), &path, encoded).await
    }

    /// [`Log::make_dir`], taking the log offline if it fails.
    async fn make_dir_or_fail(&self) -> Result<(), LogOffline> {
        match self.make_dir().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail("making the log's directory", &e)),
        }
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (the first batch is
    /// returned whole even if larger), from one segment, stopping before any batch that reaches
    /// `max_offset` (exclusive; the high watermark). An empty result means nothing is there yet.
    ///
    /// Takes the state lock only to snapshot the segment to read (see [`Log`]'s lock notes), so
    /// it never waits for an append, a sync or a roll.
    pub async fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: Option<u64>,
    ) -> Result<ReadInfo, ReadError> {
        let mut target = offset;
        let mut max_offset = max_offset;
        loop {
            let files = self.files.read().await;
            let snapshot = {
                let st = self.state();
                st.check_online().map_err(|e| ReadError::Offline(e.0))?;
                if offset < st.log_start_offset || offset > st.next_offset {
                    return Err(ReadError::OffsetOutOfRange {
                        offset,
                        log_start_offset: st.log_start_offset,
                        log_end_offset: st.next_offset,
                    });
                }
                let offsets = LogOffsets {
                    log_start_offset: st.log_start_offset,
                    log_end_offset: st.next_offset,
                    durable_end_offset: st.durable_offset,
                };
                let bound = max_offset.map_or(st.next_offset, |m| m.min(st.next_offset));
                if bound > st.durable_offset.max(st.reserved_offset) && !self.is_replicated() {
                    // An unbounded read past the durable end shows unsynced offsets.
                    Err(bound)
                } else {
                    let found = st.segments.range(..=target).next_back().map(|(_, s)| s);
                    let next_segment = st.segments.range(target + 1..).next().map(|(&b, _)| b);
                    let Some(segment) = found.filter(|_| target < bound) else {
                        return Ok(empty_read(offsets));
                    };
                    if target >= segment.next_offset {
                        // In a gap (offsets skipped after a crash) or past this segment's end.
                        match next_segment {
                            Some(next) => {
                                target = next;
                                continue;
                            }
                            None => return Ok(empty_read(offsets)),
                        }
                    }
                    let entry = segment.index.lookup(segment.relative(target));
                    Ok(SegmentSnapshot {
                        segment_base: segment.base_offset,
                        file: Arc::clone(&segment.file),
                        // The log is dense: the batch at the index entry starts at exactly this
                        // offset, and each next one where the one before ended.
                        base: segment.base_offset + entry.relative_offset as u64,
                        position: entry.position as u64,
                        size: segment.size,
                        segment_end: segment.next_offset,
                        bound,
                        next_segment,
                        offsets,
                    })
                }
            };
            let snapshot = match snapshot {
                Ok(snapshot) => snapshot,
                Err(end) => {
                    drop(files);
                    self.reserve(end)
                        .await
                        .map_err(|e| ReadError::Offline(e.0))?;
                    // Show no more than was reserved, even if the log grew meanwhile.
                    max_offset = Some(end);
                    continue;
                }
            };
            match self.read_segment(&snapshot, target, max_bytes).await? {
                SegmentRead::Done(info) => return Ok(info),
                SegmentRead::Next(next) => target = next,
            }
        }
    }

    /// The part of [`Log::read`] that reads the file, holding no lock.
    ///
    /// The walk to the batch holding `target` reads headers only: it trusts each one's offsets
    /// without its CRC (one CRC per batch served, not per batch walked). The segment is dense,
    /// so damage to those offsets shows as an inconsistency, and only then are the batches
    /// involved checked, to tell which is damaged: a batch that does not start where the one
    /// before ended (the base offset lies outside the CRC, the offset delta inside it), a last
    /// offset outside the segment, a walk that runs off the segment's end. A read of a damaged
    /// batch's offsets fails; a read past it steps over it when the next batch is valid (see
    /// [`step_over_damage`]), so the damage costs only its own batch, as recovery keeps and
    /// serves what follows it. Trusted blindly, a flipped offset delta moved every offset
    /// after it: reads past it failed on the intact batch after it (and replays resumed past
    /// that one), a read of a segment's last batch ran off the end and was served the next
    /// segment (its records skipped), and a delta flipped high served nothing, forever.
    async fn read_segment(
        &self,
        snapshot: &SegmentSnapshot,
        target: u64,
        max_bytes: usize,
    ) -> Result<SegmentRead, ReadError> {
        let SegmentSnapshot {
            segment_base,
            file,
            base,
            position,
            size,
            segment_end,
            bound,
            next_segment,
            offsets,
        } = snapshot;
        let (size, segment_end, bound, offsets) = (*size, *segment_end, *bound, *offsets);
        let file = file.as_ref();
        let corrupt = |position: u64, error: BatchError| {
            let path = segment::path(&self.dir, *segment_base, LOG_SUFFIX);
            tracing::error!(segment = %path.display(), position, %error,
                "corrupt batch at rest: refusing to serve it");
            ReadError::Corrupt {
                segment: path,
                position,
                error,
            }
        };
        // Damage past the batches served: logged now, reported by the read that reaches it.
        let damage_ahead = |position: u64, error: BatchError| {
            let _ = corrupt(position, error);
        };
        // Walk headers from the index entry to the batch holding `target`, in one read.
        let mut pos = *position;
        let mut window = window::Window::default();
        let mut previous_end = *base;
        // The batch last walked past on its header alone: where the walk went on after it
        // rests on its offset delta, its CRC unchecked.
        let mut unchecked: Option<(u64, BatchHeader)> = None;
        'walk: loop {
            let first = loop {
                if pos >= size {
                    // `target` is below the segment's end, so a walk that ran off the end
                    // trusted a damaged offset delta: the last one, since a batch that
                    // follows a damaged delta does not start where the walk expects it.
                    if let Some((at, last)) = unchecked.take() {
                        if let Err(error) = check_stored(file, &window, at, last.size()).await? {
                            return Err(corrupt(at, error));
                        }
                    }
                    break None;
                }
                let header_bytes = window.get(file, pos, HEADER_LEN).await?;
                let header = BatchHeader::parse(header_bytes).map_err(|e| corrupt(pos, e))?;
                if pos + header.size() as u64 > size {
                    return Err(corrupt(
                        pos,
                        BatchError::OffsetOutOfOrder(header.base_offset),
                    ));
                }
                if (header.base_offset as u64) != previous_end {
                    // Either the offset delta of the batch walked before this one is damaged
                    // (its CRC tells) or this one's base offset is.
                    if let Some((at, before)) = unchecked.take() {
                        if let Err(error) = check_stored(file, &window, at, before.size()).await? {
                            match step_over_damage(file, at, &before, size, target).await? {
                                Some((next, next_base)) => {
                                    damage_ahead(at, error);
                                    (pos, previous_end) = (next, next_base);
                                    continue;
                                }
                                None => return Err(corrupt(at, error)),
                            }
                        }
                    }
                    // The base offset lies outside the CRC: a bit flip there would serve a
                    // valid batch at the wrong offset. Density makes it checkable, and the
                    // offset delta (inside the CRC) lets the walk step over the damaged batch
                    // to the next one.
                    let mut whole = vec![0u8; header.size()];
                    file.read_at(pos, &mut whole).await?;
                    let checked = batch::validate_stored(&whole).map_err(|e| corrupt(pos, e))?;
                    let last = previous_end + checked.last_offset_delta as u64;
                    if target <= last {
                        return Err(corrupt(
                            pos,
                            BatchError::OffsetOutOfOrder(header.base_offset),
                        ));
                    }
                    damage_ahead(pos, BatchError::OffsetOutOfOrder(header.base_offset));
                    previous_end = last + 1;
                    pos += header.size() as u64;
                    continue;
                }
                if header.last_offset() as u64 >= target {
                    break Some(header);
                }
                unchecked = Some((pos, header));
                previous_end = header.last_offset() as u64 + 1;
                pos += header.size() as u64;
            };
            let Some(first) = first else {
                return Ok(match next_segment {
                    Some(next) => SegmentRead::Next(*next),
                    None => SegmentRead::Done(empty_read(offsets)),
                });
            };
            // A last offset outside the segment is a damaged offset delta: the batch is not
            // above the bound, and its CRC check below refuses it.
            let in_segment = first.last_offset() >= first.base_offset
                && (first.last_offset() as u64) < segment_end;
            if in_segment && first.last_offset() as u64 >= bound {
                return Ok(SegmentRead::Done(empty_read(offsets)));
            }
            let want = (max_bytes.max(first.size()) as u64).min(size - pos) as usize;
            let mut buf = match window.slice(pos, want) {
                Some(bytes) => bytes.to_vec(),
                None => file.read_vec_at(pos, want).await?,
            };
            let mut end = 0;
            while end < buf.len() {
                let header = match batch::validate_stored(&buf[end..]) {
                    Ok(header) => header,
                    Err(BatchError::Truncated { .. }) if end > 0 => break,
                    Err(e) if end == 0 => {
                        // The batch the walk stopped at is damaged; its offset delta may be,
                        // and `target` lie past it.
                        match step_over_damage(file, pos, &first, size, target).await? {
                            Some((next, next_base)) => {
                                damage_ahead(pos, e);
                                (pos, previous_end) = (next, next_base);
                                unchecked = None;
                                continue 'walk;
                            }
                            None => return Err(corrupt(pos, e)),
                        }
                    }
                    Err(e) => {
                        // Serve the good batches before the damage; the next read reports it.
                        damage_ahead(pos + end as u64, e);
                        break;
                    }
                };
                if end > 0 && (header.base_offset as u64) != previous_end {
                    damage_ahead(
                        pos + end as u64,
                        BatchError::OffsetOutOfOrder(header.base_offset),
                    );
                    break;
                }
                if header.last_offset() as u64 >= bound
                    || (end > 0 && end + header.size() > max_bytes)
                {
                    break;
                }
                previous_end = header.last_offset() as u64 + 1;
                end += header.size();
            }
            buf.truncate(end);
            return Ok(SegmentRead::Done(ReadInfo {
                records: buf,
                log_start_offset: offsets.log_start_offset,
                log_end_offset: offsets.log_end_offset,
                durable_end_offset: offsets.durable_end_offset,
            }));
        }
    }

    /// ListOffsets by timestamp: the first offset (at or after the log start) whose record
    /// timestamp is at least `timestamp_ms`, with that record's timestamp. Exact for
    /// uncompressed batches; for a compressed batch the broker does not decompress, so the
    /// answer is the batch's first offset and max timestamp (a consumer starts a little early).
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(u64, i64)>, ReadError> {
        struct Candidate {
            path: PathBuf,
            file: Arc<dyn DiskFile>,
            position: u64,
            size: u64,
        }
        let _files = self.files.read().await;
        let (candidates, log_start) = {
            let st = self.state();
            st.check_online().map_err(|e| ReadError::Offline(e.0))?;
            let candidates: Vec<Candidate> = st
                .segments
                .values()
                .filter(|s| s.next_offset > st.log_start_offset)
                .filter(|s| s.max_timestamp.is_some_and(|(ts, _)| ts >= timestamp_ms))
                .map(|s| {
                    let rel = s.time_index.lookup(timestamp_ms);
                    Candidate {
                        path: segment::path(&self.dir, s.base_offset, LOG_SUFFIX),
                        file: Arc::clone(&s.file),
                        position: s.index.lookup(rel).position as u64,
                        size: s.size,
                    }
                })
                .collect();
            (candidates, st.log_start_offset)
        };
        for Candidate {
            path,
            file,
            position,
            size,
        } in candidates
        {
            let mut pos = position;
            while pos < size {
                let mut header_buf = [0u8; HEADER_LEN];
                let n = file.read_at(pos, &mut header_buf).await?;
                let header =
                    BatchHeader::parse(&header_buf[..n]).map_err(|error| ReadError::Corrupt {
                        segment: path.clone(),
                        position: pos,
                        error,
                    })?;
                if header.max_timestamp >= timestamp_ms && header.last_offset() as u64 >= log_start
                {
                    let mut bytes = vec![0u8; header.size()];
                    file.read_at(pos, &mut bytes).await?;
                    batch::validate(&bytes).map_err(|error| ReadError::Corrupt {
                        segment: path.clone(),
                        position: pos,
                        error,
                    })?;
                    let found = match batch::record_timestamps(&bytes) {
                        Some(records) => records
                            .into_iter()
                            .find(|&(off, ts)| ts >= timestamp_ms && off as u64 >= log_start)
                            .map(|(off, ts)| (off as u64, ts)),
                        None => Some((
                            (header.base_offset as u64).max(log_start),
                            header.max_timestamp,
                        )),
                    };
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                pos += header.size() as u64;
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (KIP-734): the record with the largest timestamp (the first such
    /// if several), as `(offset, timestamp)`.
    pub async fn max_timestamp(&self) -> Result<Option<(u64, i64)>, ReadError> {
        let best = {
            let st = self.state();
            st.check_online().map_err(|e| ReadError::Offline(e.0))?;
            let mut best: Option<(i64, u64)> = None;
            for s in st
                .segments
                .values()
                .filter(|s| s.next_offset > st.log_start_offset)
            {
                if let Some((ts, at)) = s.max_timestamp {
                    if best.is_none_or(|(b, _)| ts > b) {
                        best = Some((ts, at.max(st.log_start_offset)));
                    }
                }
            }
            best
        };
        let Some((ts, batch_offset)) = best else {
            return Ok(None);
        };
        let read = self.read(batch_offset, 1, None).await?;
        let exact = batch::record_timestamps(&read.records)
            .and_then(|records| {
                records
                    .into_iter()
                    .find(|&(off, t)| t == ts && off as u64 >= batch_offset)
            })
            .map(|(off, _)| off as u64);
        Ok(Some((exact.unwrap_or(batch_offset), ts)))
    }

    /// Deletes whole segments past `retention.ms` or beyond `retention.bytes`, and those wholly
    /// below the log start offset, advancing the log start offset. Returns how many went.
    pub async fn apply_retention(&self) -> Result<usize, LogOffline> {
        let writer = self.writer.lock().await;
        self.apply_retention_locked(&writer).await
    }

    async fn apply_retention_locked(
        &self,
        writer: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<usize, LogOffline> {
        let config = self.config();
        let now = self.clock.now_ms();
        // A compact-only log is shrunk by the cleaner alone: retention by time and size is the
        // `delete` policy's (segments below the log start go either way).
        let expired = |s: &Segment| {
            config.delete
                && config
                    .retention_ms
                    .is_some_and(|ms| s.max_timestamp.is_some_and(|(ts, _)| now - ts > ms))
        };
        let all_expired = {
            let st = self.state();
            st.check_online()?;
            st.active().size > 0 && st.segments.values().all(expired)
        };
        // If even the active segment expired, roll so it can go too (as Kafka does).
        if all_expired {
            self.roll_locked(writer).await?;
        }
        let (doomed, new_start) = {
            let mut st = self.state();
            st.check_online()?;
            let active_base = st.active().base_offset;
            let mut total: u64 = st.segments.values().map(|s| s.size).sum();
            let mut doomed = Vec::new();
            for s in st
                .segments
                .values()
                .filter(|s| s.base_offset != active_base)
            {
                let below_start = s.next_offset <= st.log_start_offset;
                let too_big = config.delete
                    && config
                        .retention_bytes
                        .is_some_and(|limit| total - s.size >= limit);
                if below_start || expired(s) || too_big {
                    total -= s.size;
                    doomed.push(s.base_offset);
                } else {
                    break;
                }
            }
            if doomed.is_empty() {
                return Ok(0);
            }
            let first_kept = st
                .segments
                .range(doomed[doomed.len() - 1] + 1..)
                .next()
                .map(|(&b, _)| b);
            let new_start = st
                .log_start_offset
                .max(first_kept.expect("the active segment is kept"));
            // Out of the map before the files go, so no new read finds them; a read already
            // under way keeps its file handle, which outlives the name.
            st.log_start_offset = new_start;
            for base in &doomed {
                let removed = st
                    .segments
                    .remove(base)
                    .expect("only the writer removes segments");
                assert!(
                    removed.next_offset <= st.log_start_offset,
                    "deleting live records"
                );
            }
            assert!(!st.segments.is_empty(), "the active segment is kept");
            (doomed, new_start)
        };
        // Files first, checkpoint after: removing needs no free space, so retention and
        // DeleteRecords work on a full disk and free it. A crash in between is harmless:
        // recovery starts the log at the first segment left when that is past the checkpoint.
        let removal = async {
            for base in &doomed {
                for suffix in [
                    LOG_SUFFIX,
                    INDEX_SUFFIX,
                    TIME_INDEX_SUFFIX,
                    TXN_INDEX_SUFFIX,
                ] {
                    disk::remove_if_exists(
                        self.disk.as_ref(),
                        &segment::path(&self.dir, *base, suffix),
                    )
                    .await?;
                }
            }
            self.disk.sync_dir(&self.dir).await
        }
        .await;
        if let Err(e) = removal {
            return Err(self.fail("deleting segments", &e));
        }
        self.store_log_start(writer).await?;
        tracing::info!(dir = %self.dir.display(), segments = doomed.len(), log_start_offset = new_start,
            "retention deleted segments");
        self.publish(&self.state());
        Ok(doomed.len())
    }

    /// Writes the checkpoint and leader epochs after the log start moved, holding the writer
    /// lock (`_writer`). A full disk only defers it (Kafka checkpoints the log start
    /// periodically, too): until it is written, a crash brings the log start back to the first
    /// segment's base, never below it, and [`Log::tidy_checkpoint`] retries. Any other error
    /// takes the log offline.
    async fn store_log_start(
        &self,
        _writer: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), LogOffline> {
        let (checkpoint, epochs) = {
            let mut st = self.state();
            st.check_online()?;
            let log_start_offset = st.log_start_offset;
            let truncated = st.epochs.truncate_from_start(log_start_offset);
            let epochs = (truncated || st.checkpoint_stale).then(|| st.epochs.encode());
            (st.checkpoint(), epochs)
        };
        let result = async {
            self.write_checkpoint(checkpoint).await?;
            if let Some(encoded) = epochs {
                self.write_leader_epochs(&encoded).await?;
            }
            Ok::<_, io::Error>(())
        }
        .await;
        let mut st = self.state();
        match result {
            Ok(()) => {
                st.checkpoint_stale = false;
                Ok(())
            }
            Err(e) if disk::is_storage_full(&e) => {
                tracing::warn!(dir = %self.dir.display(), log_start_offset = st.log_start_offset,
                    "disk full: the log start offset is checkpointed later");
                st.checkpoint_stale = true;
                Ok(())
            }
            Err(e) => Err(self.go_offline(&mut st, "writing checkpoint", &e)),
        }
    }

    /// DeleteRecords: makes `offset` the log start (if it is higher) and deletes the segments
    /// wholly below it. Returns the new log start offset. Works on a full disk (see
    /// [`Log::apply_retention`]).
    pub async fn delete_records_before(&self, offset: u64) -> Result<u64, DeleteRecordsError> {
        let writer = self.writer.lock().await;
        {
            let mut st = self.state();
            st.check_online()?;
            if offset > st.next_offset {
                return Err(DeleteRecordsError::OffsetOutOfRange {
                    offset,
                    log_end_offset: st.next_offset,
                });
            }
            if offset > st.log_start_offset {
                // In memory only: the segments below go first and free space for the checkpoint.
                st.log_start_offset = offset;
                st.checkpoint_stale = true;
                self.publish(&st);
            }
        }
        self.apply_retention_locked(&writer).await?;
        if self.state().checkpoint_stale {
            self.store_log_start(&writer).await?;
        }
        Ok(self.log_start_offset())
    }

    /// Whether the partition has other replicas (the catalog says so from the cluster image).
    /// A replicated log reserves no offsets: after a crash it continues from what it recovered,
    /// and leader epochs and truncation (followers reconcile with the new leader) keep an
    /// offset from holding two values, as in Kafka. With one replica the reservation keeps
    /// that promise instead (see [`reservation`]): without it a log would give an offset it
    /// showed before a crash to other data, and with it every replica of a replicated
    /// partition would jump ahead by its own filler batch after a power loss.
    pub fn set_replicated(&self, replicated: bool) {
        self.replicated.store(replicated, Ordering::Release);
    }

    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// True while the log is offline: after an I/O error, a clean close or retirement.
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// True while the log is offline after an I/O error (not after a clean close).
    pub fn is_failed(&self) -> bool {
        self.offline.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire)
    }

    /// Recovers an offline log in place, as a restart would: drops what is in memory and runs
    /// the recovery of [`Log::open`] on what is on disk (cutting a torn tail, skipping the
    /// reserved offsets and the ones this process assigned, so the log end does not move). It
    /// needs no free space: a full disk does not keep a log offline. Returns `Ok(true)` if the log is back online, `Ok(false)` if it was
    /// not offline; an error leaves it offline, to be tried again later.
    pub async fn reopen(&self) -> Result<bool, OpenError> {
        self.reopen_as(false).await
    }

    /// [`Log::reopen`] for a follower's replicated log: it skips no offset, as
    /// [`Log::open_replicated`]. A follower's log is a copy of its leader's: what the failure
    /// lost is a suffix the follower fetches again from where its log now ends, and a filler
    /// batch of its own there would sit below the leader's high watermark where the leader has
    /// other batches, in no leader epoch a reconciliation could find.
    pub async fn reopen_as_follower(&self) -> Result<bool, OpenError> {
        assert!(
            self.is_replicated(),
            "only a replicated log has a leader to fetch from"
        );
        self.reopen_as(true).await
    }

    async fn reopen_as(&self, follower: bool) -> Result<bool, OpenError> {
        if !self.is_failed() {
            return Ok(false);
        }
        // No group commit may be in flight while the state is replaced.
        let _sync = self.sync_lock.lock().await;
        let _writer = self.writer.lock().await;
        let _files = self.files.write().await;
        let (assigned_end, synced_end, unmade) = {
            let st = self.state();
            if st.offline.is_none() || self.closed.load(Ordering::Acquire) {
                return Ok(false);
            }
            // Within one process offsets stay monotonic: what this run assigned (and other
            // parts of the broker may still hold, such as appends waiting for their sync) is
            // not reused, even where it was never shown. Only a restart forgets it.
            (st.next_offset, st.durable_offset, st.unmade_dir.clone())
        };
        let config = self.config();
        let io_error = |source| OpenError::Io {
            dir: self.dir.clone(),
            source,
        };
        // A log whose first write failed making its directory: if the directory is not there,
        // the log is as it was opened; if it is (made whole, then a sync of its parent failed),
        // it is recovered from it like any other.
        let listed = match &unmade {
            Some(_) => match self.disk.list(&self.dir).await {
                Ok(names) => Some(names),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_error(e)),
            },
            None => None,
        };
        let (state, report) = match unmade {
            Some(unmade) if listed.is_none() => {
                assert_eq!(
                    assigned_end, 0,
                    "a log without a directory assigned offsets"
                );
                (unmade_state(self.clock.as_ref(), unmade), unmade_recovery())
            }
            _ => recover(
                self.disk.as_ref(),
                self.clock.as_ref(),
                &self.dir,
                &config,
                if follower {
                    Skip::Nothing
                } else {
                    Skip::Reserved { assigned_end }
                },
                Some(synced_end),
                self.run,
                listed,
            )
            .await
            .map_err(io_error)?,
        };
        self.dir_made
            .store(state.unmade_dir.is_none(), Ordering::Release);
        tracing::info!(dir = %self.dir.display(), torn_bytes_cut = report.torn_bytes_cut,
            offsets_skipped = report.offsets_skipped, "offline log recovered in place");
        let mut st = self.state();
        *st = state;
        self.incarnation.fetch_add(1, Ordering::AcqRel);
        self.offline.store(false, Ordering::Release);
        self.publish(&st);
        Ok(true)
    }

    /// Takes the log offline for good without writing anything: its directory is about to be
    /// deleted (a deleted topic), which must work on a full disk. Appends and reads in flight
    /// fail as offline.
    pub async fn retire(&self) {
        // A first write making the directory finishes first (and the caller removes what it
        // made); none starts after.
        let _making = self.making_dir.lock().await;
        let mut st = self.state();
        st.offline = Some("deleted".into());
        self.closed.store(true, Ordering::Release);
        self.offline.store(true, Ordering::Release);
    }

    /// Clean shutdown: sync everything, write the active segment's indexes and the checkpoint,
    /// then the clean-shutdown marker, so the next open skips the recovery scan. The log is
    /// offline afterwards.
    pub async fn close(&self) -> Result<(), LogOffline> {
        self.flush().await?;
        let _writer = self.writer.lock().await;
        if !self.is_dir_made() {
            // Never written: nothing to keep, and the next open finds no directory, which is
            // this same empty log. No directory is made to hold a marker.
            let mut st = self.state();
            st.check_online()?;
            assert!(
                st.unmade_dir.is_some() && st.next_offset == 0,
                "a log without a directory holds nothing"
            );
            st.offline = Some("closed".into());
            self.closed.store(true, Ordering::Release);
            self.offline.store(true, Ordering::Release);
            return Ok(());
        }
        let (base_offset, index, time_index, checkpoint, checkpoint_unchanged, unmade) = {
            let mut st = self.state();
            st.check_online()?;
            st.recovery_point = st.next_offset;
            st.reserved_offset = st.next_offset;
            let active = st.active();
            (
                active.base_offset,
                active.index.encode(),
                active.time_index.encode(),
                st.checkpoint(),
                st.checkpoint_on_disk == Some(st.checkpoint()),
                st.active_unmade,
            )
        };
        let marker_path = self.dir.join(CLEAN_SHUTDOWN_FILE);
        let result = async {
            // A segment with no file has no indexes (they would be orphans, removed at open).
            if !unmade {
                self.write_indexes(base_offset, &index, &time_index).await?;
            }
            if !checkpoint_unchanged {
                self.write_checkpoint(checkpoint).await?;
            }
            match self.run {
                // Named, so written whole or not at all (see `clean_shutdown`). Its name is
                // left for the file system to make durable: a crash that loses it costs one
                // recovery, and any directory sync that keeps it keeps the renames before it.
                Some(run) => {
                    let contents = clean_shutdown::encode_marker(run.current);
                    disk::write_file_whole(self.disk.as_ref(), &marker_path, &contents).await
                }
                None => {
                    let marker = self.disk.open(&marker_path, OpenMode::Create).await?;
                    marker.sync().await?;
                    self.disk.sync_dir(&self.dir).await
                }
            }
        }
        .await;
        let mut st = self.state();
        if let Err(e) = result {
            return Err(self.go_offline(&mut st, "closing", &e));
        }
        st.offline = Some("closed".into());
        self.closed.store(true, Ordering::Release);
        self.offline.store(true, Ordering::Release);
        tracing::debug!(dir = %self.dir.display(), log_end_offset = st.next_offset, "log closed cleanly");
        Ok(())
    }
}

/// What [`Log::read`] took from the state to read one segment without holding it.
struct SegmentSnapshot {
    /// The segment's base offset (its file's path is built only for an error).
    segment_base: u64,
    file: Arc<dyn DiskFile>,
    /// The offset of the batch at `position`.
    base: u64,
    position: u64,
    /// The segment's published size: bytes past it are not read.
    size: u64,
    /// The segment's next offset: every batch in `size` ends below it.
    segment_end: u64,
    bound: u64,
    next_segment: Option<u64>,
    offsets: LogOffsets,
}

/// How reading one segment ended.
enum SegmentRead {
    Done(ReadInfo),
    /// Nothing at or after the target in this segment: go on at this base offset.
    Next(u64),
}

/// Validates the stored batch of `len` bytes at `at` of `file`, from `window` when it holds them.
async fn check_stored(
    file: &dyn DiskFile,
    window: &window::Window,
    at: u64,
    len: usize,
) -> io::Result<Result<BatchHeader, BatchError>> {
    Ok(match window.slice(at, len) {
        Some(bytes) => batch::validate_stored(bytes),
        None => batch::validate_stored(&file.read_vec_at(at, len).await?),
    })
}

/// The whole, valid batch at `at` of a segment file of `size` bytes, if there is one.
async fn valid_batch_at(
    file: &dyn DiskFile,
    at: u64,
    size: u64,
) -> io::Result<Option<BatchHeader>> {
    if at >= size {
        return Ok(None);
    }
    let mut header_buf = [0u8; HEADER_LEN];
    let n = file.read_at(at, &mut header_buf).await?;
    let Ok(header) = BatchHeader::parse(&header_buf[..n]) else {
        return Ok(None);
    };
    if at + header.size() as u64 > size {
        return Ok(None);
    }
    let mut whole = vec![0u8; header.size()];
    file.read_at(at, &mut whole).await?;
    Ok(batch::validate_stored(&whole).ok())
}

/// The first valid batch at or after `at` in a segment file of `size` bytes, stepping over
/// damaged batches whose lengths are readable (each taken to end where its length says), as
/// recovery's scan steps over them ([`Segment::scan`]): `(position, header)`, or `None` when
/// an unreadable length or the end of the file comes first.
async fn valid_batch_after_damage(
    file: &dyn DiskFile,
    mut at: u64,
    size: u64,
) -> io::Result<Option<(u64, BatchHeader)>> {
    while at < size {
        if let Some(valid) = valid_batch_at(file, at, size).await? {
            return Ok(Some((at, valid)));
        }
        let mut header_buf = [0u8; HEADER_LEN];
        let n = file.read_at(at, &mut header_buf).await?;
        match BatchHeader::parse(&header_buf[..n]) {
            Ok(damaged) if at + damaged.size() as u64 <= size => at += damaged.size() as u64,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Where a read of `target` goes on past the damaged batch `damaged` at `at` (its CRC failed)
/// in a segment file of `size` bytes: `(position, base offset)` of the first valid batch
/// after it (right after it, or after more damaged batches whose lengths are readable), if
/// that one starts past the damaged one's base offset and at or below `target`. Its base
/// offset (outside its CRC) then says where the damaged batches' offsets end, as recovery's
/// scan takes it ([`Segment::scan`]). `None`: `target` may lie in the damage, or where it
/// ends cannot be told (a length, outside the CRC, may be damaged too): the read fails. A
/// read at the damaged batch's base offset reads nothing more.
async fn step_over_damage(
    file: &dyn DiskFile,
    at: u64,
    damaged: &BatchHeader,
    size: u64,
    target: u64,
) -> io::Result<Option<(u64, u64)>> {
    if target <= damaged.base_offset as u64 {
        return Ok(None);
    }
    let after = at + damaged.size() as u64;
    Ok(valid_batch_after_damage(file, after, size)
        .await?
        .filter(|(_, next)| {
            next.base_offset > damaged.base_offset && next.base_offset as u64 <= target
        })
        .map(|(position, next)| (position, next.base_offset as u64)))
}

fn empty_read(offsets: LogOffsets) -> ReadInfo {
    ReadInfo {
        records: Vec::new(),
        log_start_offset: offsets.log_start_offset,
        log_end_offset: offsets.log_end_offset,
        durable_end_offset: offsets.durable_end_offset,
    }
}

/// Loads persisted indexes for a segment if both files exist and check out.
async fn load_indexes(
    disk: &dyn Disk,
    dir: &Path,
    segment: &Segment,
) -> Option<(OffsetIndex, TimeIndex)> {
    let index_bytes = disk::read_file(disk, &segment::path(dir, segment.base_offset, INDEX_SUFFIX))
        .await
        .ok()?;
    let time_bytes = disk::read_file(
        disk,
        &segment::path(dir, segment.base_offset, TIME_INDEX_SUFFIX),
    )
    .await
    .ok()?;
    let loaded = OffsetIndex::decode(&index_bytes, segment.file.len())
        .map_err(|e| e.to_string())
        .and_then(|index| {
            TimeIndex::decode(&time_bytes)
                .map(|t| (index, t))
                .map_err(|e| e.to_string())
        });
    match loaded {
        Ok(indexes) => Some(indexes),
        Err(reason) => {
            tracing::warn!(dir = %dir.display(), base_offset = segment.base_offset, %reason,
                "damaged index: rebuilding it from the segment");
            None
        }
    }
}

/// Offsets no batch can plausibly reach from where the one before it ended: a flipped high bit
/// is not a batch.
const PLAUSIBLE_SPAN: u64 = 1 << 32;

/// The end of the offsets that the bytes of a tail segment from `position` on may hold, where
/// the scan stopped at a batch it could not read (a torn write, or a bit flip in synced bytes)
/// and `expected` is the offset that batch should start at. The batches there may have been
/// synced and shown (acks=all answers, reads below the high watermark), so recovery must not
/// hand their offsets out again. Looks for every batch that still passes its CRC (offsets are
/// dense, so the damaged one starts at `expected` even if its base offset field is what
/// flipped) and trusts the damaged batch's own offset fields when its base offset is the
/// expected one. Reads only the bytes after the damage: a torn tail is short. Also says
/// whether a whole batch that passes its CRC follows the unreadable one: a torn write leaves
/// only a prefix of the last write, so that is damage at rest (a bit flip), not a torn tail.
async fn offsets_written_from(
    file: &dyn DiskFile,
    position: u64,
    expected: u64,
) -> io::Result<(u64, bool)> {
    Ok(offsets_written_in(
        &read_rest(file, position).await?,
        expected,
    ))
}

/// The bytes of `file` from `position` to its end.
async fn read_rest(file: &dyn DiskFile, position: u64) -> io::Result<Vec<u8>> {
    let len = file.len();
    let mut rest = vec![0u8; usize::try_from(len - position).map_err(io::Error::other)?];
    let mut read = 0;
    while read < rest.len() {
        let n = file
            .read_at(position + read as u64, &mut rest[read..])
            .await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    rest.truncate(read);
    Ok(rest)
}

/// [`offsets_written_from`] of the bytes `rest` read from the unreadable batch on.
fn offsets_written_in(rest: &[u8], expected: u64) -> (u64, bool) {
    let mut end = expected;
    let mut at = 0;
    let mut intact_after = false;
    while at + HEADER_LEN <= rest.len() {
        let Ok(header) = BatchHeader::parse(&rest[at..]) else {
            at += 1;
            continue;
        };
        let whole = rest.get(at..at + header.size());
        let checked = whole.is_some_and(|bytes| batch::validate(bytes).is_ok());
        intact_after |= checked && at > 0;
        let delta = u64::from(header.last_offset_delta.max(0).unsigned_abs())
            .max(u64::from(header.records_count.max(1).unsigned_abs()) - 1);
        let base = header.base_offset as u64;
        let last = if at == 0 && (checked || base == expected) {
            Some(expected + delta)
        } else if checked && base >= expected && base - expected < PLAUSIBLE_SPAN {
            Some(base + delta)
        } else {
            None
        };
        match last {
            Some(last) if delta < PLAUSIBLE_SPAN => {
                end = end.max(last + 1);
                at += if checked { header.size() } else { 1 };
            }
            _ => at += 1,
        }
    }
    assert!(end >= expected);
    (end, intact_after)
}

/// The end of the offsets of the batch at `position` of a tail segment that the scan could not
/// read (`error`), if that batch is damage at rest rather than a torn or stray write: then it
/// may have been synced and acknowledged, and its offsets are never given again.
///
/// A torn write keeps only a prefix of what was written, so the batch a crash cut into ends
/// past the end of the file: a batch that ends within it, followed by nothing or by one more
/// batch cut short, was written whole. (Anything else after it reads as neither, such as the
/// bytes of an append that landed after a failed write's partial batch: that is cut.) A whole
/// one that fails its CRC (or its magic, outside the CRC) was damaged at rest. A whole one that
/// passes its CRC but does not start at `expected` is either damage to its base offset (outside
/// the CRC; 60 s replication swarm seed 1851: one flipped bit made offset 41 read as 2^53 + 41)
/// or an append that raced a failed sync and landed after the dropped tail, which is cut. An
/// in-place recovery tells them apart by what this process synced (`synced_end`): the dropped
/// tail started there, and only a batch below it can be damage at rest. After a restart only
/// a base offset one bit away from `expected` and either below it or beyond any plausible
/// span can be told for a flip: an append after a dropped tail lands above `expected`, and
/// often one bit away (the compacted workload on the faulty disk, seed 3: 219 after 218). A
/// flip that sets a low bit of the base offset is still cut.
///
/// Its offsets run from `expected` (offsets are dense) over its offset delta and record
/// count, read without the magic check. `rest`: the bytes of the segment from the batch on,
/// as [`offsets_written_from`] read them (no read of its own: each read of the simulated disk
/// draws a latency, so one more would change every schedule with a torn tail). `None`: not
/// whole, or not damage at rest.
fn whole_damaged_batch(
    rest: &[u8],
    expected: u64,
    error: &BatchError,
    synced_end: Option<u64>,
) -> Option<u64> {
    let len = rest.len() as u64;
    let header = rest.get(..HEADER_LEN)?;
    let field = |at: usize| i32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let length = u64::try_from(field(8)).ok()?;
    let end = batch::LOG_OVERHEAD as u64 + length;
    if end < HEADER_LEN as u64 || end > len {
        return None;
    }
    if end < len {
        let next = &rest[end as usize..];
        let cut_short = next.len() < HEADER_LEN
            || BatchHeader::parse(next).is_ok_and(|h| end + h.size() as u64 > len);
        if !cut_short {
            return None;
        }
    }
    let at_rest = match (synced_end, error) {
        (Some(synced_end), _) => expected < synced_end,
        (None, BatchError::OffsetOutOfOrder(base)) => {
            let base = *base as u64;
            (base ^ expected).count_ones() == 1
                && (base < expected || base - expected >= PLAUSIBLE_SPAN)
        }
        (None, _) => true,
    };
    if !at_rest {
        return None;
    }
    let last_offset_delta = u64::from(field(23).max(0).unsigned_abs());
    let records = u64::from(field(57).max(1).unsigned_abs());
    Some(expected + last_offset_delta.max(records - 1) + 1)
}

/// Which offsets a recovery skips past the recovered data.
#[derive(Clone, Copy, Debug)]
enum Skip {
    /// A single replica's log: the offset reservation, the offsets of damaged or cut tail
    /// batches, and those below `assigned_end` (offsets this process assigned, for an in-place
    /// recovery), so no offset anyone may have seen is given to other data.
    Reserved { assigned_end: u64 },
    /// A replicated log (see [`Log::open_replicated`]): only the offsets of damage at rest (a
    /// bit flip: no replica repairs another's disk, and whole batches after the damage may
    /// have been shown), never those of a torn tail, the reservation or this process's own.
    Nothing,
}

/// Does a log directory whose listing is `names` hold anything of records: a segment file, or
/// the cleaner's copy of one? Without one the log never held a record (its first segment file
/// is made before its first byte, and a log keeps an active segment file from then on), so
/// whatever else the directory holds is derived from an empty log.
pub fn holds_segments(names: &[String]) -> bool {
    names.iter().any(|n| {
        [LOG_SUFFIX, cleaner::CLEANED_SUFFIX, cleaner::SWAP_SUFFIX]
            .iter()
            .any(|suffix| segment::parse_file_name(n, suffix).is_some())
    })
}

/// Does the listing `names` hold `name`?
fn has(names: &[String], name: &str) -> bool {
    names.iter().any(|n| n == name)
}

/// The file `name` in `dir`, whose listing is `names`: `NotFound` without a system call when
/// the listing does not hold it.
async fn read_listed(
    disk: &dyn Disk,
    dir: &Path,
    names: &[String],
    name: &str,
) -> io::Result<Vec<u8>> {
    if !has(names, name) {
        return Err(io::ErrorKind::NotFound.into());
    }
    disk::read_file(disk, &dir.join(name)).await
}

/// The state of an empty log with no directory ([`Log::open_unmade`]).
fn unmade_state(clock: &dyn Clock, unmade: Arc<UnmadeDir>) -> LogState {
    let now = clock.now_ms();
    LogState {
        segments: BTreeMap::from([(0, Segment::new(0, Arc::new(segment::UnmadeFile)))]),
        log_start_offset: 0,
        next_offset: 0,
        durable_offset: 0,
        reserved_offset: 0,
        reservation_pace: ReservationPace::new(now, 0),
        checkpoint_stale: false,
        recovery_point: 0,
        epochs: LeaderEpochCache::default(),
        last_flush_ms: now,
        offline: None,
        first_dirty_offset: 0,
        checkpoint_on_disk: None,
        active_unmade: true,
        unmade_dir: Some(unmade),
    }
}

/// What opening a log with no directory did: nothing to recover, as after a clean close.
fn unmade_recovery() -> RecoveryReport {
    RecoveryReport {
        clean: true,
        segments: 1,
        ..RecoveryReport::default()
    }
}

/// The temporary name under which [`Log::make_dir`] makes `dir`.
pub fn dir_in_making(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(DIR_IN_MAKING_SUFFIX);
    PathBuf::from(name)
}

/// See [`Log::make_dir`]: `dir` made whole under a temporary name, then renamed into place.
async fn make_dir_in_place(disk: &dyn Disk, dir: &Path, unmade: &UnmadeDir) -> io::Result<()> {
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent", dir.display())))?;
    let making = dir_in_making(dir);
    // What an attempt that failed in this process left: started afresh.
    match disk.remove_dir_all(&making).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_context("removing", &making, e)),
    }
    disk.create_dir(&making)
        .await
        .map_err(|e| io_context("creating", &making, e))?;
    for (name, contents) in &unmade.files {
        let path = making.join(name);
        let file = disk
            .open(&path, OpenMode::CreateNew)
            .await
            .map_err(|e| io_context("creating", &path, e))?;
        file.append(contents)
            .await
            .map_err(|e| io_context("writing", &path, e))?;
        file.sync()
            .await
            .map_err(|e| io_context("syncing", &path, e))?;
    }
    // Its entries durable before its name can be: a directory that a crash keeps is whole.
    disk.sync_dir(&making)
        .await
        .map_err(|e| io_context("syncing", &making, e))?;
    disk.rename(&making, dir)
        .await
        .map_err(|e| io_context("renaming", &making, e))?;
    disk.sync_dir(parent)
        .await
        .map_err(|e| io_context("syncing", parent, e))
}

/// Syncs the partition's `partition.metadata` (if it may not be durable, see
/// [`Listing::partition_metadata`]) before the log makes a first segment file.
async fn sync_partition_metadata(disk: &dyn Disk, path: Option<&Path>) -> io::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let file = disk
        .open(path, OpenMode::Existing)
        .await
        .map_err(|e| io_context("opening", path, e))?;
    file.sync()
        .await
        .map_err(|e| io_context("syncing", path, e))
}

/// Rebuilds the log's state from `dir`. See the module doc and [`Skip`]. `synced_end`: the end
/// of what this process synced, for an in-place recovery (see [`whole_damaged_batch`]); `None`
/// after a restart.
#[allow(clippy::too_many_arguments)]
async fn recover(
    disk: &dyn Disk,
    clock: &dyn Clock,
    dir: &Path,
    config: &LogConfig,
    skip: Skip,
    synced_end: Option<u64>,
    run: Option<LogRun>,
    listed: Option<Vec<String>>,
) -> io::Result<(LogState, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let names = match listed {
        Some(names) => names,
        None => {
            disk.create_dir_all(dir)
                .await
                .map_err(|e| io_context("creating", dir, e))?;
            disk.list(dir)
                .await
                .map_err(|e| io_context("listing", dir, e))?
        }
    };
    let marker = if has(&names, CLEAN_SHUTDOWN_FILE) {
        let bytes = disk::read_file(disk, &dir.join(CLEAN_SHUTDOWN_FILE)).await?;
        Some(clean_shutdown::judge(
            clean_shutdown::decode_marker(&bytes),
            run,
        ))
    } else {
        None
    };
    let mut clean = marker.is_some_and(|m| m.clean);
    // Names created or removed here whose change must be durable before the log is served.
    let mut sync_dir = false;

    for name in names.iter().filter(|n| n.ends_with(".tmp")) {
        disk.remove(&dir.join(name)).await?;
    }
    // An interrupted cleaning leaves the old segments or the new one, never a mix.
    let names = if cleaner::recover_swaps(disk, dir, &names).await? {
        disk.list(dir)
            .await
            .map_err(|e| io_context("listing", dir, e))?
    } else {
        names
    };
    // Only a log the cleaner has cleaned has one: no read for the others.
    let first_dirty_offset = if names.iter().any(|n| n == cleaner::CLEANER_CHECKPOINT_FILE) {
        cleaner::read_checkpoint(disk, dir).await
    } else {
        0
    };
    let mut checkpoint_missing = false;
    let checkpoint = match read_listed(disk, dir, &names, CHECKPOINT_FILE).await {
        Ok(bytes) => match Checkpoint::decode(&bytes) {
            Ok(c) => c,
            Err(reason) => {
                tracing::error!(dir = %dir.display(), %reason, "damaged log checkpoint: scanning the whole log");
                clean = false;
                Checkpoint::default()
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            clean = false;
            checkpoint_missing = true;
            Checkpoint::default()
        }
        Err(e) => return Err(e),
    };
    let mut epochs = match read_listed(disk, dir, &names, LEADER_EPOCH_FILE).await {
        Ok(bytes) => LeaderEpochCache::decode(&bytes).unwrap_or_else(|reason| {
            tracing::error!(dir = %dir.display(), %reason, "damaged leader-epoch checkpoint: rebuilding it");
            LeaderEpochCache::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => LeaderEpochCache::default(),
        Err(e) => return Err(e),
    };

    let bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n, LOG_SUFFIX))
        .collect();
    // No segment and no checkpoint: a new log (its directory may already hold files of the
    // partition's, such as `partition.metadata`), not an unclean one.
    let created = bases.is_empty() && checkpoint_missing;
    for name in &names {
        let orphan = [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX]
            .iter()
            .filter_map(|suffix| segment::parse_file_name(name, suffix))
            .any(|base| !bases.contains(&base));
        if orphan {
            disk.remove(&dir.join(name)).await?;
        }
    }

    let mut segments = BTreeMap::new();
    let recovery_segment = bases
        .iter()
        .copied()
        .filter(|&b| b <= checkpoint.recovery_point)
        .max()
        .unwrap_or(0);
    let mut scanned = Vec::new();
    // The end of the offsets that cut bytes at the tail may have held (`torn_end`), and that
    // unreadable bytes left in the tail segment may hold (`damaged_end`).
    let mut torn_end = 0;
    let mut damaged_end = 0;
    for (i, &base) in bases.iter().enumerate() {
        let is_tail = i + 1 == bases.len();
        let path = segment::path(dir, base, LOG_SUFFIX);
        let file = disk.open(&path, OpenMode::Existing).await?;
        let mut seg = Segment::new(base, file);
        let trusted = clean || base < recovery_segment;
        let indexes = if trusted {
            load_indexes(disk, dir, &seg).await
        } else {
            None
        };
        let start = match indexes {
            Some((index, time_index)) => seg.adopt_indexes(index, time_index),
            None => {
                scanned.push(base);
                0
            }
        };
        let scan_end = seg
            .scan(start, config.index_interval_bytes, is_tail)
            .await?;
        report.bytes_scanned += seg.file.len() - start;
        match scan_end {
            ScanEnd::Clean => {}
            ScanEnd::TornTail {
                position,
                error,
                damaged,
            } => {
                if !damaged.is_empty() {
                    report.corrupt_batches += damaged.len();
                    tracing::error!(segment = %path.display(), positions = ?damaged,
                        "CORRUPT SEGMENT: damaged batches at rest will never be served");
                }
                // A bit flip in synced bytes looks like a torn write here: the offsets of what
                // is cut may have been shown, so they are skipped, never reused.
                let rest = read_rest(seg.file.as_ref(), position).await?;
                let (end, intact_after) = offsets_written_in(&rest, seg.next_offset);
                let whole = whole_damaged_batch(&rest, seg.next_offset, &error, synced_end);
                let end = end.max(whole.unwrap_or(0));
                torn_end = torn_end.max(end);
                if intact_after || whole.is_some() {
                    // Whole batches after the damage, or the damaged batch itself whole: not a
                    // torn write but damage at rest (whose length may not read). A replicated
                    // log is no exception: a bit flip in its last synced batch, cut, made the
                    // replica's log end fall below an acknowledged offset, and the replica,
                    // the only ISR member, led again and gave that offset to another record
                    // (60 s replication swarm seed 1851). Its offsets and those of the batches
                    // behind it may have been acknowledged, so none is handed out again.
                    // Cutting the bytes would destroy what the next recovery needs to know that,
                    // and a failed write or a crash between the cut and the filler batch that
                    // keeps the offsets handed them out again (60 s replication swarm seed 519). So
                    // nothing is cut: the segment keeps its bytes and ends where the damage's
                    // offsets end, and the log goes on in a new segment there, whose durable
                    // name is the record of the skip. Reads of the damage fail; readers resume
                    // at the new segment.
                    report.corrupt_batches += 1;
                    tracing::error!(segment = %path.display(), position, %error, next_base = end,
                        "CORRUPT SEGMENT: damage at rest in the active segment; the log goes on in a new segment past it");
                    seg.size = seg.file.len();
                    seg.next_offset = end;
                    segments.insert(base, seg);
                    let new_path = segment::path(dir, end, LOG_SUFFIX);
                    let file = disk.open(&new_path, OpenMode::CreateNew).await?;
                    disk.sync_dir(dir).await?;
                    segments.insert(end, Segment::new(end, file));
                    continue;
                }
                report.torn_bytes_cut += seg.file.len() - position;
                tracing::warn!(segment = %path.display(), position, cut_bytes = seg.file.len() - position, %error,
                    "cutting a torn tail");
                seg.truncate_file_to_size().await?;
                if scanned.last() != Some(&base) {
                    scanned.push(base);
                }
            }
            ScanEnd::Corrupt {
                positions,
                error,
                unreadable_from,
            } => {
                report.corrupt_batches += positions.len();
                tracing::error!(segment = %path.display(), ?positions, ?unreadable_from, %error,
                    "CORRUPT SEGMENT: damaged batches at rest will never be served");
                if let Some(position) = unreadable_from {
                    // Offsets past the damage are unknown: the segment ends where the next
                    // begins, or (the tail) past every offset the damaged bytes may hold.
                    match bases.get(i + 1) {
                        Some(&next) => seg.next_offset = seg.next_offset.max(next),
                        None => {
                            damaged_end = damaged_end.max(
                                offsets_written_from(seg.file.as_ref(), position, seg.next_offset)
                                    .await?
                                    .0,
                            );
                        }
                    }
                }
            }
        }
        segments.insert(base, seg);
    }
    // Bytes read back after a process crash may still be only in the page cache: sync what was
    // scanned so that everything recovered is durable before it is served as such.
    for base in &scanned {
        let seg = segments.get_mut(base).expect("scanned segment");
        seg.file.sync().await?;
        seg.synced_size = seg.size;
    }
    for seg in segments.values_mut() {
        seg.synced_size = seg.size;
    }

    let data_end = segments.values().next_back().map(|s| s.next_offset);
    // A snapshot beyond the recovered data describes batches that are gone; the skip below
    // would put it inside the log's offsets, so it goes now, before anything can use it.
    let recovered_end = data_end.unwrap_or(checkpoint.log_start_offset);
    let mut stale_snapshots = false;
    for name in &names {
        if segment::parse_file_name(name, SNAPSHOT_SUFFIX).is_some_and(|o| o > recovered_end) {
            tracing::info!(dir = %dir.display(), snapshot = %name, recovered_end,
                "deleting a snapshot beyond the recovered log");
            disk.remove(&dir.join(name)).await?;
            stale_snapshots = true;
        }
    }
    if stale_snapshots {
        disk.sync_dir(dir).await?;
    }
    let mut next_offset = data_end
        .unwrap_or(checkpoint.log_start_offset)
        .max(checkpoint.log_start_offset);
    let skip_to = match skip {
        // Damaged bytes stay in the segment, after the last readable batch: their offsets are
        // skipped whatever the policy, so appends continue after them in offsets as in bytes.
        Skip::Nothing => damaged_end,
        Skip::Reserved { assigned_end } if clean => assigned_end,
        Skip::Reserved { assigned_end } => checkpoint
            .offset_reservation
            .max(assigned_end)
            .max(torn_end)
            .max(damaged_end),
    };
    if skip_to > next_offset && !planted::is(Bug::ReuseOffsetsAfterCrash) {
        tracing::info!(dir = %dir.display(), from = next_offset, to = skip_to,
            "unclean restart: skipping offsets that may have been shown before the crash");
        report.offsets_skipped = skip_to - next_offset;
        next_offset = skip_to;
    }
    // No segment: an empty log at `next_offset` (a new one, or one whose only segment a crash
    // took before its name was durable, which held nothing synced). Its file is made at the
    // first append, so an open or a creation makes no file and syncs nothing for it.
    let active_unmade = segments.is_empty();
    if active_unmade {
        segments.insert(
            next_offset,
            Segment::new(next_offset, Arc::new(segment::UnmadeFile)),
        );
    }
    // Cover the skipped offsets with a batch that holds no records, so the log stays dense:
    // consumers at the old end step over it instead of waiting at a gap, and the high watermark
    // never sits past the last batch.
    let data_end_now = segments
        .values()
        .next_back()
        .map_or(next_offset, |s| s.next_offset);
    if next_offset > data_end_now {
        let needs_segment = !segments
            .values()
            .next_back()
            .is_some_and(|s| s.fits_offset(next_offset - 1));
        if needs_segment {
            let path = segment::path(dir, data_end_now, LOG_SUFFIX);
            let file = disk.open(&path, OpenMode::CreateNew).await?;
            disk.sync_dir(dir).await?;
            segments.insert(data_end_now, Segment::new(data_end_now, file));
        }
        let active = segments
            .values_mut()
            .next_back()
            .expect("at least one segment");
        let gap = batch::offset_gap(data_end_now, next_offset - data_end_now);
        let position = active.file.append(&gap).await?;
        let header = BatchHeader::parse(&gap).expect("gap batch");
        active.record_batch(&header, position, config.index_interval_bytes);
        active.file.sync().await?;
        active.synced_size = active.size;
        assert_eq!(active.next_offset, next_offset);
    }
    let first_base = *segments.keys().next().expect("at least one segment");
    let log_start_offset = checkpoint.log_start_offset.max(first_base).min(next_offset);
    let data_end = data_end.unwrap_or(next_offset);
    // A full disk must not keep a log offline forever (nothing could free space then): the
    // metadata files below can wait; the older ones on disk stay correct meanwhile.
    let mut checkpoint_stale = false;
    if epochs.truncate_from_end(data_end) {
        match disk::write_file_atomic(disk, &dir.join(LEADER_EPOCH_FILE), &epochs.encode()).await {
            Ok(()) => {}
            Err(e) if disk::is_storage_full(&e) => checkpoint_stale = true,
            Err(e) => return Err(e),
        }
    }
    if let Some(active) = segments.values_mut().next_back() {
        if active.rolling_base_ms.is_none() && active.size > 0 {
            active.rolling_base_ms = Some(clock.now_ms());
        }
    }
    // The marker goes before the log can change. Whether its removal must be durable now, or
    // the data directory's run already voids it, `clean_shutdown` says. (Temporary files and
    // orphan indexes removed above may come back after a crash: they are removed again.)
    if let Some(marker) = marker {
        disk.remove(&dir.join(CLEAN_SHUTDOWN_FILE)).await?;
        sync_dir |= marker.sync_removal;
    }
    if sync_dir {
        disk.sync_dir(dir).await?;
    }
    let mut state = LogState {
        segments,
        log_start_offset,
        next_offset,
        durable_offset: next_offset,
        // Nothing of this run has been shown yet: no headroom, so an idle log never moves.
        reserved_offset: next_offset,
        reservation_pace: ReservationPace::new(clock.now_ms(), next_offset),
        checkpoint_stale,
        recovery_point: next_offset,
        epochs,
        last_flush_ms: clock.now_ms(),
        offline: None,
        first_dirty_offset,
        checkpoint_on_disk: None,
        active_unmade,
        unmade_dir: None,
    };
    // After a clean close the checkpoint on disk is durable (the close wrote it before the
    // marker); a new log has none, which reads as the one it would get. Either way an
    // unchanged checkpoint is not written again. After a crash it is rewritten: the one read
    // may be a rename a crash kept from becoming durable.
    let unchanged = state.checkpoint() == checkpoint && (clean || created);
    let written = if unchanged {
        Ok(())
    } else {
        disk::write_file_atomic(
            disk,
            &dir.join(CHECKPOINT_FILE),
            &state.checkpoint().encode(),
        )
        .await
    };
    match written {
        Ok(()) => {
            if clean || !unchanged {
                state.checkpoint_on_disk = Some(state.checkpoint());
            }
        }
        // The checkpoint on disk (if any) is older: an earlier recovery point (more to scan
        // next time), a reservation at most the new log end (every offset below it is durable
        // now, so nothing shown is at risk), a log start no higher than this one.
        Err(e) if disk::is_storage_full(&e) => {
            tracing::warn!(dir = %dir.display(), "disk full: the log checkpoint is written later");
            state.checkpoint_stale = true;
        }
        Err(e) => return Err(e),
    }
    report.clean = clean;
    report.segments = state.segments.len();
    report.segments_scanned = scanned.len();
    if created {
        tracing::info!(dir = %dir.display(), "log created");
    } else {
        tracing::info!(dir = %dir.display(), clean, segments = report.segments, log_start_offset,
            log_end_offset = next_offset, scanned = report.segments_scanned, torn_bytes_cut = report.torn_bytes_cut,
            corrupt_batches = report.corrupt_batches, "log recovered");
    }
    Ok((state, report))
}
