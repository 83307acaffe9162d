//! Producer-state snapshots: Kafka's `{offset:020}.snapshot` files, so that opening a partition
//! replays only the batches after the latest snapshot instead of every segment.
//!
//! A snapshot named `X` holds the [`ProducerStateManager`] as it was after every batch below
//! offset `X` and none at or above it. The partition writes one when a segment rolls and at
//! clean shutdown, with the producers' lock held (idempotent appends change the state only under
//! it), at the log end it read under that lock.
//!
//! # Crash safety and validity
//! - Written through the [`Disk`] seam with the atomic recipe (temporary file, sync, rename,
//!   directory sync): after a crash a snapshot file is whole or absent. A CRC32C over the whole
//!   file still guards against damage at rest and a torn file from another writer: a snapshot
//!   that does not check out is deleted, loudly, and the next older one (or a full rebuild) is
//!   used.
//! - A snapshot may be written before the batches below its offset are synced. After a crash
//!   the log holds a prefix of what was appended, so a snapshot at or below the recovered log
//!   end describes batches that are all still there, and one beyond it describes batches that
//!   are gone: the log's recovery deletes those before anything new can be appended at their
//!   offsets (it knows where the recovered data ends, before a skip of offsets covers the
//!   gap), and [`load`] ignores any beyond the log end.
//! - Pruning keeps the newest [`SNAPSHOTS_KEPT`] snapshots and none below the log start (their
//!   segments are gone).
//!
//! # Format (big-endian)
//! `"FLPS"`, version `u16` (2), offset `u64`, producer count `u32`; per producer: id `i64`,
//! epoch `i16`, coordinator epoch `i32`, the first offset of its open transaction `i64` (-1:
//! none), batch count `u8` (at most [`BATCHES_TO_RETAIN`]), per batch: first and last sequence
//! `i32`, base and last offset `u64`, timestamp `i64`; then the CRC32C (`u32`) of all the bytes
//! before it. Version 1 (before transactions) lacks the two transaction fields and still loads.

use std::io;
use std::path::{Path, PathBuf};

use crate::disk::{self, Disk};
use crate::txn::producer_state::{
    BatchMetadata, ProducerStateManager, SnapshotEntry, BATCHES_TO_RETAIN, NO_COORDINATOR_EPOCH,
};

pub use crate::log::SNAPSHOT_SUFFIX;
/// Snapshots kept after a new one is written: the newest, and one to fall back on.
pub const SNAPSHOTS_KEPT: usize = 2;

const MAGIC: &[u8; 4] = b"FLPS";
const VERSION: u16 = 2;
/// The version before transactions: no coordinator epoch, no open transaction.
const VERSION_1: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + 8 + 4;
const PRODUCER_LEN_V1: usize = 8 + 2 + 1;
const PRODUCER_LEN: usize = 8 + 2 + 4 + 8 + 1;
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;
const CRC_LEN: usize = 4;

/// `{offset:020}.snapshot` in `dir`.
pub fn path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// The offset in a snapshot file's name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn encode(state: &ProducerStateManager, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + state.len() * (PRODUCER_LEN + BATCH_LEN));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(state.len() as u32).to_be_bytes());
    for entry in state.snapshot_entries() {
        assert!(entry.batches.len() <= BATCHES_TO_RETAIN);
        out.extend_from_slice(&entry.producer_id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
        let txn_first = entry.current_txn_first_offset.map_or(-1, |o| {
            assert!(o < offset, "a snapshot holds only transactions below it");
            o as i64
        });
        out.extend_from_slice(&txn_first.to_be_bytes());
        out.push(entry.batches.len() as u8);
        for b in entry.batches {
            assert!(
                b.last_offset < offset,
                "a snapshot holds only batches below it"
            );
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
            out.extend_from_slice(&b.timestamp_ms.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes a snapshot, checking its CRC, its offset against `expected_offset` (its name), and
/// that every batch lies below it.
pub fn decode(bytes: &[u8], expected_offset: u64) -> Result<ProducerStateManager, String> {
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != stored {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader { buf: body, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err("not a producer snapshot".into());
    }
    let version = u16::from_be_bytes(r.array()?);
    if version != VERSION && version != VERSION_1 {
        return Err(format!("unknown snapshot version {version}"));
    }
    let producer_len = if version == VERSION_1 {
        PRODUCER_LEN_V1
    } else {
        PRODUCER_LEN
    };
    let offset = u64::from_be_bytes(r.array()?);
    if offset != expected_offset {
        return Err(format!("holds offset {offset}, named {expected_offset}"));
    }
    let count = u32::from_be_bytes(r.array()?) as usize;
    // Bounded by the bytes present, never by the stored count alone.
    if count > r.remaining() / producer_len {
        return Err(format!("{count} producers cannot fit"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let producer_id = i64::from_be_bytes(r.array()?);
        let epoch = i16::from_be_bytes(r.array()?);
        let (coordinator_epoch, current_txn_first_offset) = if version == VERSION_1 {
            (NO_COORDINATOR_EPOCH, None)
        } else {
            let coordinator_epoch = i32::from_be_bytes(r.array()?);
            let first = i64::from_be_bytes(r.array()?);
            let first = match first {
                -1 => None,
                o if o >= 0 && (o as u64) < offset => Some(o as u64),
                _ => {
                    return Err(format!(
                        "producer {producer_id} has a transaction out of place"
                    ))
                }
            };
            (coordinator_epoch, first)
        };
        let batch_count = r.take(1)?[0] as usize;
        if batch_count > BATCHES_TO_RETAIN {
            return Err(format!("producer {producer_id} has {batch_count} batches"));
        }
        let mut batches = Vec::with_capacity(batch_count);
        for _ in 0..batch_count {
            let batch = BatchMetadata {
                first_seq: i32::from_be_bytes(r.array()?),
                last_seq: i32::from_be_bytes(r.array()?),
                base_offset: u64::from_be_bytes(r.array()?),
                last_offset: u64::from_be_bytes(r.array()?),
                timestamp_ms: i64::from_be_bytes(r.array()?),
            };
            if batch.base_offset > batch.last_offset || batch.last_offset >= offset {
                return Err(format!("producer {producer_id} has a batch out of place"));
            }
            batches.push(batch);
        }
        entries.push(SnapshotEntry {
            producer_id,
            epoch,
            batches,
            coordinator_epoch,
            current_txn_first_offset,
        });
    }
    if r.remaining() != 0 {
        return Err(format!("{} bytes after the last producer", r.remaining()));
    }
    ProducerStateManager::from_entries(entries)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err("truncated".into());
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
}

/// The snapshot offsets in `dir`, newest first.
pub async fn list(disk: &dyn Disk, dir: &Path) -> io::Result<Vec<u64>> {
    let mut offsets: Vec<u64> = disk
        .list(dir)
        .await?
        .iter()
        .filter_map(|name| parse_file_name(name))
        .collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    Ok(offsets)
}

/// Writes the snapshot of `state` at `offset` (crash-safe), then prunes: keeps the newest
/// [`SNAPSHOTS_KEPT`] and none below `log_start_offset`.
pub async fn write(
    disk: &dyn Disk,
    dir: &Path,
    state: &ProducerStateManager,
    offset: u64,
    log_start_offset: u64,
) -> io::Result<()> {
    // A snapshot only saves replaying the log: one that holds the same state already (a
    // close with no appends since the last) is not written again.
    disk::write_file_atomic_if_changed(disk, &path(dir, offset), &encode(state, offset)).await?;
    let offsets = list(disk, dir).await?;
    assert!(
        offsets.contains(&offset),
        "the snapshot just written is listed"
    );
    let mut pruned = false;
    for (i, &old) in offsets.iter().enumerate() {
        if old < offset && (i >= SNAPSHOTS_KEPT || old < log_start_offset) {
            pruned |= disk::remove_if_exists(disk, &path(dir, old)).await?;
        }
    }
    if pruned {
        disk.sync_dir(dir).await?;
    }
    Ok(())
}

/// What [`load`] found: the state from the newest valid snapshot at or below `log_end_offset`
/// (with the offset to replay the log from), or `None` if there is none.
#[derive(Debug)]
pub struct Loaded {
    pub state: ProducerStateManager,
    pub offset: u64,
}

/// Loads the newest valid snapshot at or below `log_end_offset`. Deletes snapshots beyond it
/// (their batches did not survive a crash) and damaged ones (loudly), falling back to older.
pub async fn load(disk: &dyn Disk, dir: &Path, log_end_offset: u64) -> io::Result<Option<Loaded>> {
    for offset in list(disk, dir).await? {
        let file = path(dir, offset);
        if offset > log_end_offset {
            tracing::info!(snapshot = %file.display(), log_end_offset,
                "deleting a producer snapshot beyond the recovered log end");
            disk::remove_if_exists(disk, &file).await?;
            continue;
        }
        let decoded = disk::read_file(disk, &file)
            .await
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode(&bytes, offset));
        match decoded {
            Ok(state) => return Ok(Some(Loaded { state, offset })),
            Err(reason) => {
                tracing::error!(snapshot = %file.display(), %reason,
                    "damaged producer snapshot: deleting it and using an older one");
                disk::remove_if_exists(disk, &file).await?;
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{BatchHeader, MAGIC_V2};

    fn state_with(batches: &[(i64, i16, i32, u64)]) -> ProducerStateManager {
        let mut state = ProducerStateManager::new();
        for &(pid, epoch, seq, offset) in batches {
            state.record(
                &BatchHeader {
                    base_offset: offset as i64,
                    batch_length: 100,
                    partition_leader_epoch: 0,
                    magic: MAGIC_V2,
                    crc: 0,
                    attributes: 0,
                    last_offset_delta: 1,
                    base_timestamp: 5,
                    max_timestamp: 7,
                    producer_id: pid,
                    producer_epoch: epoch,
                    base_sequence: seq,
                    records_count: 2,
                },
                7,
            );
        }
        state
    }

    #[test]
    fn a_snapshot_round_trips() {
        let state = state_with(&[(1, 0, 0, 0), (1, 0, 2, 2), (9, 3, 40, 4)]);
        let bytes = encode(&state, 6);
        assert_eq!(decode(&bytes, 6).unwrap(), state);
        assert_eq!(
            decode(&encode(&ProducerStateManager::new(), 0), 0)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn every_flipped_bit_and_every_cut_of_a_snapshot_is_refused() {
        let state = state_with(&[(1, 0, 0, 0), (2, 1, 5, 2)]);
        let bytes = encode(&state, 4);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged, 4).is_err(),
                "bit {bit} flipped went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len], 4).is_err(),
                "cut at {len} went unnoticed"
            );
        }
        assert!(decode(&bytes, 5).is_err(), "a snapshot under another name");
    }

    #[test]
    fn snapshot_file_names_are_kafkas() {
        assert_eq!(
            path(Path::new("/d"), 42),
            PathBuf::from("/d/00000000000000000042.snapshot")
        );
        assert_eq!(parse_file_name("00000000000000000042.snapshot"), Some(42));
        assert_eq!(parse_file_name("42.snapshot"), None);
        assert_eq!(parse_file_name("00000000000000000042.snapshot.tmp"), None);
    }

    #[test]
    fn an_open_transaction_and_the_coordinator_epoch_survive_a_snapshot() {
        let mut state = state_with(&[(1, 0, 0, 0)]);
        let txn = BatchHeader {
            base_offset: 2,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: MAGIC_V2,
            crc: 0,
            attributes: crate::log::batch::TRANSACTIONAL_BIT,
            last_offset_delta: 0,
            base_timestamp: 5,
            max_timestamp: 5,
            producer_id: 4,
            producer_epoch: 1,
            base_sequence: 0,
            records_count: 1,
        };
        state.record(&txn, 5);
        let decoded = decode(&encode(&state, 3), 3).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(
            decoded.ongoing_transactions().collect::<Vec<_>>(),
            vec![(2, 4)]
        );
    }

    #[test]
    fn a_version_1_snapshot_from_before_transactions_still_loads() {
        // Version 1 as it was written: no coordinator epoch, no open transaction.
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&VERSION_1.to_be_bytes());
        v1.extend_from_slice(&4u64.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&1i64.to_be_bytes());
        v1.extend_from_slice(&0i16.to_be_bytes());
        v1.push(1);
        v1.extend_from_slice(&0i32.to_be_bytes());
        v1.extend_from_slice(&1i32.to_be_bytes());
        v1.extend_from_slice(&0u64.to_be_bytes());
        v1.extend_from_slice(&1u64.to_be_bytes());
        v1.extend_from_slice(&7i64.to_be_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(decode(&v1, 4).unwrap(), state_with(&[(1, 0, 0, 0)]));
    }
}
