//! The metadata log, the vote and snapshots under `<data-dir>/__cluster_metadata-0/`, through the
//! [`Disk`] trait only.
//!
//! Files:
//! - `vote.json`: the vote, replaced atomically ([`write_file_atomic`]) before openraft is told.
//! - `log`: a header frame (the last purged log id) and then one frame per entry, each frame
//!   `[length u32][crc32c u32][json]`. Appends are synced before openraft's append callback
//!   fires, so an entry a voter acknowledged survives power loss; at recovery the first frame
//!   that is short or fails its CRC and everything after it is cut (a torn tail). A purge
//!   rewrites the file atomically with the entries above the purge point (few: purges follow
//!   snapshots).
//! - `snapshot.json`: the image with its last log id and membership, replaced atomically; the
//!   log is purged below it only after it is durable.
//! - `ballast`: space held back for the log. Kafka promises a topic can be deleted on a full
//!   disk, and a deletion is an append here: an append that meets ENOSPC removes the ballast
//!   and is retried once into the space it held. The ballast is recreated when the log opens.
//!   Its contents mean nothing, so a crash at any point leaves nothing to repair.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::{MetadataTypes, Shared};
use crate::controller::image::ClusterImage;
use crate::disk::{self, write_file_atomic, Disk, DiskFile, OpenMode};

type Error = StorageError<u64>;
type MetaEntry = Entry<MetadataTypes>;

pub(crate) const LOG_FILE: &str = "log";
pub(crate) const VOTE_FILE: &str = "vote.json";
pub(crate) const SNAPSHOT_FILE: &str = "snapshot.json";
pub(crate) const BALLAST_FILE: &str = "ballast";
/// Room for well over a hundred deletions' records: enough to free space by deleting topics.
pub(crate) const BALLAST_BYTES: usize = 64 << 10;

/// The ballast's bytes. Not zeros: a compressing file system would store zeros in no space at
/// all. The same bytes every time, so made once per process: every broker of a simulation
/// writes a ballast at each start, and making it a byte at a time each time cost 0.7 % of a
/// swarm run.
fn ballast() -> &'static [u8] {
    static BALLAST: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BALLAST.get_or_init(|| {
        let mut x: u32 = 0x9e37_79b9;
        (0..BALLAST_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect()
    })
}

/// The frame header: length and CRC32C of the payload.
const FRAME_HEADER: usize = 8;
/// No metadata entry comes near this; a larger length is a torn or corrupt header.
const MAX_FRAME: usize = 256 << 20;
const FORMAT_VERSION: u32 = 1;

fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_FRAME,
        "a metadata frame of {} bytes",
        payload.len()
    );
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The next whole frame of `buf` at `pos`: its payload and where the one after starts; `None`
/// if what is there is short or fails its CRC.
fn decode_frame(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = buf.get(pos..pos + FRAME_HEADER)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = buf.get(pos + FRAME_HEADER..pos + FRAME_HEADER + len)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, pos + FRAME_HEADER + len))
}

#[derive(Debug, Serialize, Deserialize)]
struct LogHeader {
    format_version: u32,
    last_purged: Option<LogId<u64>>,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata types serialize")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

/// The log as memory holds it: every entry above the purge point and where its frame starts.
#[derive(Debug, Default)]
struct LogMem {
    last_purged: Option<LogId<u64>>,
    entries: BTreeMap<u64, (u64, MetaEntry)>,
    /// The file's length: where the next frame goes.
    end: u64,
}

impl LogMem {
    fn last_log_id(&self) -> Option<LogId<u64>> {
        self.entries
            .values()
            .next_back()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }
}

/// openraft's log storage: `vote.json` and `log` (see the module doc).
pub(crate) struct LogStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    file: Arc<dyn DiskFile>,
    mem: Arc<Mutex<LogMem>>,
    vote: Option<Vote<u64>>,
}

impl LogStore {
    /// Opens the log in `dir` (which exists), recovering it: a torn or corrupt tail is cut.
    pub(crate) async fn open(disk: Arc<dyn Disk>, dir: PathBuf) -> io::Result<LogStore> {
        let vote = match disk::read_file(&*disk, &dir.join(VOTE_FILE)).await {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| corrupt(VOTE_FILE, e))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let path = dir.join(LOG_FILE);
        let bytes = match disk::read_file(&*disk, &path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut fresh = Vec::new();
                encode_frame(
                    &mut fresh,
                    &json(&LogHeader {
                        format_version: FORMAT_VERSION,
                        last_purged: None,
                    }),
                );
                write_file_atomic(&*disk, &path, &fresh).await?;
                fresh
            }
            Err(e) => return Err(e),
        };
        // The header is written atomically, never appended: it is whole or the file is damaged.
        let (header, mut pos) = decode_frame(&bytes, 0)
            .ok_or_else(|| corrupt(LOG_FILE, "its header frame is damaged"))?;
        let header: LogHeader = serde_json::from_slice(header).map_err(|e| corrupt(LOG_FILE, e))?;
        if header.format_version != FORMAT_VERSION {
            return Err(corrupt(
                LOG_FILE,
                format!("format version {}", header.format_version),
            ));
        }
        let mut mem = LogMem {
            last_purged: header.last_purged,
            ..LogMem::default()
        };
        while let Some((payload, next)) = decode_frame(&bytes, pos) {
            let entry: MetaEntry =
                serde_json::from_slice(payload).map_err(|e| corrupt(LOG_FILE, e))?;
            let expected = mem
                .last_log_id()
                .map_or(entry.log_id.index, |l| l.index + 1);
            if entry.log_id.index != expected {
                return Err(corrupt(
                    LOG_FILE,
                    format!(
                        "entry {} follows entry {}",
                        entry.log_id.index,
                        expected - 1
                    ),
                ));
            }
            mem.entries.insert(entry.log_id.index, (pos as u64, entry));
            pos = next;
        }
        let file = disk.open(&path, OpenMode::Existing).await?;
        if (pos as u64) < file.len() {
            // A crash tore the last append (or a later frame is damaged): nothing past the last
            // whole frame was ever acknowledged, since appends are synced before they are.
            tracing::warn!(dir = %dir.display(), kept = pos, len = file.len(),
                "metadata log: cutting a torn tail");
            file.truncate(pos as u64).await?;
            file.sync().await?;
        }
        mem.end = pos as u64;
        let store = LogStore {
            disk,
            dir,
            file,
            mem: Arc::new(Mutex::new(mem)),
            vote,
        };
        store.reserve_ballast().await;
        Ok(store)
    }

    /// Writes the ballast if it is missing (released by a full disk, or never written). The
    /// log works without it, so a failure is only reported.
    async fn reserve_ballast(&self) {
        let path = self.dir.join(BALLAST_FILE);
        match self.disk.open(&path, OpenMode::Existing).await {
            Ok(file) if file.len() >= BALLAST_BYTES as u64 => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "metadata log: no ballast");
                return;
            }
        }
        if let Err(e) = write_file_atomic(&*self.disk, &path, ballast()).await {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "metadata log: no ballast (an append on a full disk will fail)");
        }
    }

    /// Removes the ballast so an append can use its space; false if there was none.
    async fn release_ballast(&self) -> bool {
        let released = async {
            let removed = disk::remove_if_exists(&*self.disk, &self.dir.join(BALLAST_FILE)).await?;
            // The space comes back only once no name reaches the file, durable names included.
            if removed {
                self.disk.sync_dir(&self.dir).await?;
            }
            io::Result::Ok(removed)
        }
        .await;
        match released {
            Ok(removed) => {
                if removed {
                    tracing::warn!(dir = %self.dir.display(),
                        "metadata log: disk full, ballast released for an append");
                }
                removed
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "metadata log: could not release the ballast");
                false
            }
        }
    }

    /// Appends `buf` at `start` (the log's end) and syncs it.
    async fn write_synced(&self, start: u64, buf: &[u8]) -> io::Result<()> {
        let at = self.file.append(buf).await?;
        assert_eq!(at, start, "metadata log: the file moved under the log");
        self.file.sync().await
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, LogMem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads entries from memory; shared with openraft's replication tasks.
#[derive(Clone)]
pub(crate) struct LogReader {
    mem: Arc<Mutex<LogMem>>,
}

fn read_range<RB: RangeBounds<u64> + Clone>(mem: &Mutex<LogMem>, range: RB) -> Vec<MetaEntry> {
    let mem = mem.lock().unwrap_or_else(|e| e.into_inner());
    let entries: Vec<MetaEntry> = mem
        .entries
        .range(range.clone())
        .map(|(_, (_, e))| e.clone())
        .collect();
    // openraft sends what this returns as the entries right after the range's start: a read
    // that starts later (purged under it) would make a hole in a follower's log.
    if let (std::ops::Bound::Included(start), Some(first)) = (range.start_bound(), entries.first())
    {
        assert_eq!(
            first.log_id.index, *start,
            "metadata log: a read from {start} found the log starting at {} (purged at {:?})",
            first.log_id.index, mem.last_purged
        );
    }
    entries
}

impl RaftLogReader<MetadataTypes> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetaEntry>, Error> {
        Ok(read_range(&self.mem, range))
    }
}

impl RaftLogReader<MetadataTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetaEntry>, Error> {
        Ok(read_range(&self.mem, range))
    }
}

impl RaftLogStorage<MetadataTypes> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<MetadataTypes>, Error> {
        let mem = self.mem();
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            mem: Arc::clone(&self.mem),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), Error> {
        write_file_atomic(&*self.disk, &self.dir.join(VOTE_FILE), &json(vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, Error> {
        Ok(self.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetadataTypes>,
    ) -> Result<(), Error>
    where
        I: IntoIterator<Item = MetaEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (start, mut next_index) = {
            let mem = self.mem();
            (mem.end, mem.last_log_id().map(|l| l.index + 1))
        };
        let mut buf = Vec::new();
        let mut framed = Vec::new();
        for entry in entries {
            // The log has no holes: openraft truncates before it appends over a conflict.
            assert!(
                next_index.is_none_or(|n| n == entry.log_id.index),
                "metadata log: appending entry {} where {next_index:?} is next",
                entry.log_id.index
            );
            next_index = Some(entry.log_id.index + 1);
            framed.push((start + buf.len() as u64, entry.clone()));
            encode_frame(&mut buf, &json(&entry));
        }
        if framed.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let written = match self.write_synced(start, &buf).await {
            Err(e) if disk::is_storage_full(&e) && self.release_ballast().await => {
                // A failed append may have left a prefix: cut it, then write into the space
                // the ballast held.
                async {
                    self.file.truncate(start).await?;
                    self.write_synced(start, &buf).await
                }
                .await
            }
            other => other,
        };
        if let Err(e) = written {
            // The tail is unknown now (the Disk contract): this log is not to be trusted again in
            // this process; openraft stops on a storage error, and recovery cuts the tail.
            tracing::error!(dir = %self.dir.display(), error = %e, "metadata log: append failed");
            return Err(StorageIOError::write_logs(&e).into());
        }
        {
            let mut mem = self.mem();
            mem.end = start + buf.len() as u64;
            for (pos, entry) in framed {
                mem.entries.insert(entry.log_id.index, (pos, entry));
            }
        }
        // Only now, with the entries synced: openraft counts them toward the quorum.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), Error> {
        let cut = {
            let mem = self.mem();
            mem.entries.get(&log_id.index).map(|(pos, _)| *pos)
        };
        let Some(cut) = cut else {
            return Ok(());
        };
        let done = async {
            self.file.truncate(cut).await?;
            self.file.sync().await
        }
        .await;
        done.map_err(|e| StorageIOError::write_logs(&e))?;
        let mut mem = self.mem();
        mem.entries.split_off(&log_id.index);
        mem.end = cut;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), Error> {
        let mut rewritten = Vec::new();
        encode_frame(
            &mut rewritten,
            &json(&LogHeader {
                format_version: FORMAT_VERSION,
                last_purged: Some(log_id),
            }),
        );
        let mut kept = BTreeMap::new();
        {
            let mem = self.mem();
            if mem.last_purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            for (index, (_, entry)) in mem.entries.range(log_id.index + 1..) {
                kept.insert(*index, (rewritten.len() as u64, entry.clone()));
                encode_frame(&mut rewritten, &json(entry));
            }
        }
        let path = self.dir.join(LOG_FILE);
        let done = async {
            write_file_atomic(&*self.disk, &path, &rewritten).await?;
            self.disk.open(&path, OpenMode::Existing).await
        }
        .await;
        self.file = done.map_err(|e| StorageIOError::write_logs(&e))?;
        let mut mem = self.mem();
        mem.last_purged = Some(log_id);
        mem.entries = kept;
        mem.end = rewritten.len() as u64;
        Ok(())
    }
}

/// `snapshot.json`, and the snapshot data sent to a learner or a lagging follower.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, BasicNode>,
    image: ClusterImage,
}

#[derive(Clone, Debug)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    bytes: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot<MetadataTypes> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.bytes.clone())),
        }
    }
}

/// The state machine: the cluster image, rebuilt by applying committed batches in log order.
pub(crate) struct StateMachine {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    shared: Arc<Shared>,
    image: Arc<ClusterImage>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    /// Serializes writers of `snapshot.json`.
    writing: WriteGate,
}

impl StateMachine {
    /// Starts from `snapshot.json` if there is one (openraft re-applies the committed entries
    /// after it), else from the empty image.
    pub(crate) async fn open(
        disk: Arc<dyn Disk>,
        dir: PathBuf,
        shared: Arc<Shared>,
    ) -> io::Result<StateMachine> {
        let mut machine = StateMachine {
            disk: Arc::clone(&disk),
            dir: dir.clone(),
            shared,
            image: Arc::new(ClusterImage::empty()),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: Arc::new(Mutex::new(None)),
            writing: Arc::new(tokio::sync::Mutex::new(false)),
        };
        match disk::read_file(&*disk, &dir.join(SNAPSHOT_FILE)).await {
            Ok(bytes) => {
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(SNAPSHOT_FILE, e))?;
                machine.load(file, bytes);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        machine.publish();
        Ok(machine)
    }

    /// Closing this gate (`*gate.lock().await = true`) waits for a snapshot being written and
    /// stops any later one: openraft builds snapshots in a detached task that can outlive
    /// `Raft::shutdown`, and must not write into a directory a new incarnation has opened.
    pub(crate) fn write_gate(&self) -> WriteGate {
        Arc::clone(&self.writing)
    }

    fn load(&mut self, file: SnapshotFile, bytes: Vec<u8>) {
        self.image = Arc::new(file.image);
        self.last_applied = file.meta.last_log_id;
        self.membership = file.meta.last_membership.clone();
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(StoredSnapshot {
            meta: file.meta,
            bytes,
        });
    }

    fn publish(&self) {
        let index = self.last_applied.map_or(-1, |l| l.index as i64);
        self.shared.publish(Arc::clone(&self.image), index);
    }
}

/// Builds a snapshot of the image as of the moment openraft asked.
pub(crate) struct SnapshotBuilder {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    image: Arc<ClusterImage>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    slot: Arc<Mutex<Option<StoredSnapshot>>>,
    writing: WriteGate,
}

impl RaftSnapshotBuilder<MetadataTypes> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetadataTypes>, Error> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!(
                "{}-{}-{:016x}",
                l.leader_id,
                l.index,
                crate::random::random_u64()
            ),
            None => format!("none-{:016x}", crate::random::random_u64()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            image: (*self.image).clone(),
        };
        let bytes = json(&file);
        // Builds may overlap (openraft builds in the background): one writer at a time, and
        // never an older snapshot over a newer one.
        let closed = self.writing.lock().await;
        if *closed {
            return Err(
                StorageIOError::write_snapshot(Some(meta.signature()), &closed_error()).into(),
            );
        }
        let newer = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|s| s.meta.last_log_id >= meta.last_log_id)
            .map(StoredSnapshot::to_snapshot);
        if let Some(newer) = newer {
            return Ok(newer);
        }
        // Durable before openraft purges the log below it.
        write_file_atomic(&*self.disk, &self.dir.join(SNAPSHOT_FILE), &bytes)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot { meta, bytes };
        let snapshot = stored.to_snapshot();
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<MetadataTypes> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, Error>
    where
        I: IntoIterator<Item = MetaEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let image = Arc::make_mut(&mut self.image);
        for entry in entries {
            assert!(
                self.last_applied
                    .is_none_or(|l| l.index < entry.log_id.index),
                "metadata log: applying entry {} after {:?}",
                entry.log_id.index,
                self.last_applied
            );
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    image.apply(entry.log_id.index as i64, &batch.records)
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            replies.push(());
        }
        self.publish();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            disk: Arc::clone(&self.disk),
            dir: self.dir.clone(),
            image: Arc::clone(&self.image),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            slot: Arc::clone(&self.snapshot),
            writing: Arc::clone(&self.writing),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &corrupt(SNAPSHOT_FILE, e))
        })?;
        assert_eq!(
            file.meta.last_log_id, meta.last_log_id,
            "a snapshot's data and its meta disagree"
        );
        let writing = Arc::clone(&self.writing);
        let closed = writing.lock().await;
        if *closed {
            return Err(
                StorageIOError::write_snapshot(Some(meta.signature()), &closed_error()).into(),
            );
        }
        write_file_atomic(&*self.disk, &self.dir.join(SNAPSHOT_FILE), &bytes)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.load(file, bytes);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetadataTypes>>, Error> {
        Ok(self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(StoredSnapshot::to_snapshot))
    }
}

/// Guards `snapshot.json`: held while one is written; `true` once the plane shut down.
pub(crate) type WriteGate = Arc<tokio::sync::Mutex<bool>>;

fn closed_error() -> io::Error {
    io::Error::other("the metadata plane is shut down")
}

/// The metadata directory under a data directory.
pub(crate) fn metadata_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(super::METADATA_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for p in payloads {
            encode_frame(&mut buf, p);
        }
        buf
    }

    fn whole_frames(buf: &[u8]) -> Vec<Vec<u8>> {
        let mut pos = 0;
        let mut frames = Vec::new();
        while let Some((payload, next)) = decode_frame(buf, pos) {
            frames.push(payload.to_vec());
            pos = next;
        }
        frames
    }

    #[test]
    fn a_torn_last_frame_is_not_read_at_any_cut() {
        // The bug: recovery trusting half an entry a crash tore, wherever the cut falls.
        let buf = framed(&[b"first", b"second entry", b"third and last"]);
        let two = framed(&[b"first", b"second entry"]).len();
        for cut in two..buf.len() {
            assert_eq!(whole_frames(&buf[..cut]).len(), 2, "cut at {cut}");
        }
        assert_eq!(whole_frames(&buf).len(), 3);
    }

    #[test]
    fn a_flipped_bit_ends_the_log_at_the_frame_it_hits() {
        // The bug: a damaged entry applied as if whole (the CRC covers the payload).
        let mut buf = framed(&[b"first", b"second entry", b"third"]);
        let second_payload = framed(&[b"first"]).len() + FRAME_HEADER + 3;
        buf[second_payload] ^= 0x10;
        assert_eq!(whole_frames(&buf), vec![b"first".to_vec()]);
    }

    #[test]
    fn a_garbage_length_is_refused_before_anything_is_allocated() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        buf.extend_from_slice(b"tail");
        assert!(decode_frame(&buf, 0).is_none());
    }
}
