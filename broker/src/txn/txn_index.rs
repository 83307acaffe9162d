//! The aborted-transaction index (Kafka's `TransactionIndex`, `{base_offset:020}.txnindex`):
//! every transaction aborted on the partition, so a read_committed fetch can tell the consumer
//! which producers' records to drop in the range it returns.
//!
//! An entry is written when an abort marker closes a transaction that wrote here, to the file
//! of the segment holding the marker. Kafka's layout, 34 bytes, big-endian: version `i16` (0),
//! producer id `i64`, first offset `i64`, last offset (the marker's) `i64`, last stable offset
//! `i64` (the first offset of the oldest other transaction still open when it was aborted, or
//! the marker's offset + 1: a fetch whose range ends at or below it needs no later entry).
//!
//! In memory the partition keeps one [`AbortedTxnIndex`] ordered by marker offset; the files
//! are where it survives restarts. They are derived state, like the producer snapshots, and
//! kept consistent with them:
//! - an entry is appended (unsynced) under the producers' lock right after its marker;
//! - every file is synced before a producer snapshot is written, so the entries of markers
//!   below a snapshot's offset are durable whenever the snapshot is;
//! - loading ([`load`]) keeps the entries below the snapshot the rebuild starts from and drops
//!   the rest (rewriting a file that held more): replaying the log after the snapshot writes
//!   them again, and only for markers that survived. A file that cannot be read makes the
//!   rebuild start from the log start, which writes every entry again.
//!
//! The log removes a segment's `.txnindex` with the segment (retention, truncation) and as an
//! orphan on recovery.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::disk::{self, Disk, OpenMode};

pub const TXN_INDEX_SUFFIX: &str = ".txnindex";
/// Bytes per entry.
pub const ENTRY_LEN: usize = 34;
const VERSION: i16 = 0;

/// One aborted transaction (Kafka's `AbortedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    /// The offset of the abort marker.
    pub last_offset: u64,
    pub last_stable_offset: u64,
}

impl AbortedTxn {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0..2].copy_from_slice(&VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&(self.first_offset as i64).to_be_bytes());
        out[18..26].copy_from_slice(&(self.last_offset as i64).to_be_bytes());
        out[26..34].copy_from_slice(&(self.last_stable_offset as i64).to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<AbortedTxn, String> {
        let i64_at = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        if version != VERSION {
            return Err(format!("unknown entry version {version}"));
        }
        let (producer_id, first, last, lso) = (i64_at(2), i64_at(10), i64_at(18), i64_at(26));
        if producer_id < 0 || first < 0 || last < first || lso < 0 || lso > last + 1 {
            return Err(format!(
                "entry out of place: producer {producer_id}, offsets {first}..={last}, lso {lso}"
            ));
        }
        Ok(AbortedTxn {
            producer_id,
            first_offset: first as u64,
            last_offset: last as u64,
            last_stable_offset: lso as u64,
        })
    }
}

/// The entries of one file. A partial entry at the end (an append torn by a crash) is ignored:
/// its marker is at or beyond any snapshot the file is loaded against.
pub fn decode_file(bytes: &[u8]) -> Result<Vec<AbortedTxn>, String> {
    bytes
        .chunks_exact(ENTRY_LEN)
        .map(AbortedTxn::decode)
        .collect()
}

/// `{base_offset:020}.txnindex` in `dir`.
pub fn path(dir: &Path, base_offset: u64) -> PathBuf {
    crate::log::segment::path(dir, base_offset, TXN_INDEX_SUFFIX)
}

/// The aborted transactions of a partition, by marker offset, each with the base offset of the
/// segment whose file holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AbortedTxnIndex {
    entries: BTreeMap<u64, (u64, AbortedTxn)>,
}

impl AbortedTxnIndex {
    pub fn new() -> AbortedTxnIndex {
        AbortedTxnIndex::default()
    }

    /// Adds an entry held by the file of segment `segment_base`; markers come in log order.
    pub fn add(&mut self, segment_base: u64, txn: AbortedTxn) {
        assert!(
            segment_base <= txn.last_offset,
            "the marker is in its segment"
        );
        assert!(
            self.entries
                .last_key_value()
                .is_none_or(|(&last, _)| last < txn.last_offset),
            "aborted transactions are added in marker order"
        );
        self.entries.insert(txn.last_offset, (segment_base, txn));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The aborted transactions a read of `[fetch_offset, upper_bound)` must report: those
    /// whose range meets it, in marker order (Kafka's `collectAbortedTxns` over the segments
    /// from the fetch offset's on, stopping at an entry whose last stable offset reaches the
    /// bound: no transaction aborted later began below it).
    pub fn collect(&self, fetch_offset: u64, upper_bound: u64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        for (_, txn) in self.entries.range(fetch_offset..).map(|(_, e)| e) {
            if txn.first_offset < upper_bound {
                out.push(*txn);
            }
            if txn.last_stable_offset >= upper_bound {
                break;
            }
        }
        out
    }

    /// After the cleaner rewrote the segment `[base_offset, next_offset)`: its entries are
    /// `aborted` (which the cleaned `.txnindex` holds) and no others.
    pub fn replace_cleaned(&mut self, base_offset: u64, next_offset: u64, aborted: &[AbortedTxn]) {
        let mut after = self.entries.split_off(&base_offset);
        let rest = after.split_off(&next_offset);
        for txn in aborted {
            assert!(
                (base_offset..next_offset).contains(&txn.last_offset),
                "a cleaned segment holds its own markers"
            );
            self.entries.insert(txn.last_offset, (base_offset, *txn));
        }
        self.entries.extend(rest);
    }

    /// Forgets the entries whose markers lie below `log_start_offset`.
    pub fn evict_before(&mut self, log_start_offset: u64) {
        self.entries = self.entries.split_off(&log_start_offset);
    }
}

/// Appends `txn` to the file of segment `segment_base`, unsynced (see the module doc).
pub async fn append(
    disk: &dyn Disk,
    dir: &Path,
    segment_base: u64,
    txn: &AbortedTxn,
) -> io::Result<()> {
    let file = disk
        .open(&path(dir, segment_base), OpenMode::Create)
        .await?;
    // A torn entry left by a crash would shift every later one: cut it first.
    let whole = file.len() - file.len() % ENTRY_LEN as u64;
    if whole != file.len() {
        file.truncate(whole).await?;
    }
    file.append(&txn.encode()).await?;
    Ok(())
}

/// Syncs the files of `segment_bases` that exist, and the directory (a file may be new).
pub async fn sync(disk: &dyn Disk, dir: &Path, segment_bases: &[u64]) -> io::Result<()> {
    let mut any = false;
    for &base in segment_bases {
        match disk.open(&path(dir, base), OpenMode::Existing).await {
            Ok(file) => {
                file.sync().await?;
                any = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if any {
        disk.sync_dir(dir).await?;
    }
    Ok(())
}

/// Loads the entries of markers in `[log_start_offset, below)` from the files of
/// `segment_bases`, and rewrites (atomically) any file that held entries at or beyond `below`,
/// so that the replay from `below` appends to files holding exactly what came before.
/// `Err` (a file unreadable): the caller rebuilds from the log start with [`clear`] first.
pub async fn load(
    disk: &dyn Disk,
    dir: &Path,
    segment_bases: &[u64],
    log_start_offset: u64,
    below: u64,
) -> Result<AbortedTxnIndex, String> {
    let mut index = AbortedTxnIndex::new();
    for &base in segment_bases {
        let file = path(dir, base);
        let bytes = match disk::read_file(disk, &file).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let entries = decode_file(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        let kept: Vec<AbortedTxn> = entries
            .iter()
            .copied()
            .filter(|t| t.last_offset < below)
            .collect();
        if kept.len() * ENTRY_LEN != bytes.len() {
            let contents: Vec<u8> = kept.iter().flat_map(|t| t.encode()).collect();
            disk::write_file_atomic(disk, &file, &contents)
                .await
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        for txn in kept {
            if txn.last_offset >= log_start_offset {
                if txn.last_offset < base || index.entries.contains_key(&txn.last_offset) {
                    return Err(format!("{}: entry out of place", file.display()));
                }
                index.entries.insert(txn.last_offset, (base, txn));
            }
        }
    }
    Ok(index)
}

/// Removes the files of `segment_bases` (before a rebuild from the log start).
pub async fn clear(disk: &dyn Disk, dir: &Path, segment_bases: &[u64]) -> io::Result<()> {
    for &base in segment_bases {
        disk::remove_if_exists(disk, &path(dir, base)).await?;
    }
    disk.sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: u64, last: u64, lso: u64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn an_entry_is_kafkas_34_bytes() {
        let entry = txn(0x0102, 3, 9, 10);
        let bytes = entry.encode();
        assert_eq!(&bytes[0..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &0x0102i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &10i64.to_be_bytes());
        assert_eq!(decode_file(&bytes), Ok(vec![entry]));
    }

    #[test]
    fn a_torn_last_entry_is_ignored_and_a_malformed_one_refused() {
        let mut bytes = txn(1, 0, 2, 3).encode().to_vec();
        bytes.extend_from_slice(&txn(2, 4, 6, 7).encode()[..20]);
        assert_eq!(decode_file(&bytes).unwrap().len(), 1);
        let backwards = txn(1, 5, 2, 3).encode();
        assert!(decode_file(&backwards).is_err());
    }

    #[test]
    fn a_fetch_range_lists_the_aborted_transactions_that_meet_it() {
        let mut index = AbortedTxnIndex::new();
        index.add(0, txn(1, 0, 4, 5));
        index.add(0, txn(2, 6, 8, 9));
        index.add(10, txn(3, 2, 12, 13)); // began before producer 2's and ended after it
        index.add(10, txn(4, 20, 22, 23));
        let pids = |v: Vec<AbortedTxn>| v.iter().map(|t| t.producer_id).collect::<Vec<_>>();
        assert_eq!(pids(index.collect(0, 30)), vec![1, 2, 3, 4]);
        assert_eq!(
            pids(index.collect(5, 10)),
            vec![2, 3],
            "txn 3 overlaps from before"
        );
        assert_eq!(
            pids(index.collect(9, 20)),
            vec![3],
            "txn 4 begins at the bound"
        );
        assert_eq!(pids(index.collect(23, 30)), Vec::<i64>::new());
        // Stops at an entry whose LSO reaches the bound.
        assert_eq!(pids(index.collect(0, 5)), vec![1]);
    }

    #[test]
    fn a_cleaned_segment_replaces_exactly_the_entries_of_its_offsets() {
        let mut index = AbortedTxnIndex::new();
        index.add(0, txn(1, 0, 4, 5));
        index.add(5, txn(2, 5, 8, 9));
        index.add(5, txn(3, 6, 12, 13));
        index.add(20, txn(4, 20, 22, 23));
        // Segments 0 and 5 were cleaned into one ending at 20: only txn 3's data is left.
        index.replace_cleaned(0, 20, &[txn(3, 6, 12, 13)]);
        let pids: Vec<i64> = index
            .collect(0, 100)
            .iter()
            .map(|t| t.producer_id)
            .collect();
        assert_eq!(pids, vec![3, 4]);
    }

    #[test]
    fn entries_below_the_log_start_are_forgotten() {
        let mut index = AbortedTxnIndex::new();
        index.add(0, txn(1, 0, 4, 5));
        index.add(5, txn(2, 5, 8, 9));
        index.evict_before(5);
        assert_eq!(index.collect(0, 100), vec![txn(2, 5, 8, 9)]);
    }
}
