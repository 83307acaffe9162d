//! Producer ids, handed out by InitProducerId and never reused.
//!
//! A reused producer id would let a new producer's batches be taken for retries of an old one's
//! (or be fenced by its epoch). Ids are therefore reserved in blocks of [`BLOCK_SIZE`] (as
//! Kafka's producer-id manager reserves 1000 at a time): before the first id of a block is handed
//! out, the end of the block is written to `<data-dir>/producer-ids` with
//! [`disk::write_file_atomic`]. A restart, clean or not, continues after the last block
//! reserved, skipping whatever of it was not handed out. At most one write per 1000 ids.
//!
//! The file is one line, `faultline-producer-ids v1 <end>`: every id below `<end>` may have
//! been handed out. A damaged file stops the broker from starting rather than risk reuse.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{self, Disk};

/// Ids reserved per write.
pub const BLOCK_SIZE: i64 = 1000;
/// The file under the data directory.
pub const FILE_NAME: &str = "producer-ids";
const HEADER: &str = "faultline-producer-ids v1";

/// InitProducerId could not allocate an id.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// The next block could not be reserved on disk; nothing was handed out. Retriable.
    #[error("cannot reserve producer ids: {0}")]
    Storage(String),
    /// Every id up to `i64::MAX` is used up.
    #[error("producer ids are exhausted")]
    Exhausted,
}

#[derive(Debug)]
struct Block {
    /// The next id to hand out.
    next: i64,
    /// The end (exclusive) of what is reserved on disk.
    reserved_end: i64,
}

/// Allocates producer ids for the broker. One per broker; cheap to share.
#[derive(Debug)]
pub struct ProducerIdManager {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    block: tokio::sync::Mutex<Block>,
}

fn decode(text: &str) -> Option<i64> {
    let rest = text.trim_end().strip_prefix(HEADER)?.strip_prefix(' ')?;
    rest.parse::<i64>().ok().filter(|&end| end >= 0)
}

impl ProducerIdManager {
    /// Loads the reservation from `data_dir`; the first id handed out is the end of the last
    /// block reserved (0 on a fresh data directory).
    pub async fn open(disk: Arc<dyn Disk>, data_dir: &Path) -> io::Result<ProducerIdManager> {
        let path = data_dir.join(FILE_NAME);
        let reserved_end = match disk::read_file(disk.as_ref(), &path).await {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(decode)
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "{}: damaged producer-id reservation",
                        path.display()
                    ))
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        tracing::debug!(next_producer_id = reserved_end, "producer ids loaded");
        Ok(ProducerIdManager {
            disk,
            path,
            block: tokio::sync::Mutex::new(Block {
                next: reserved_end,
                reserved_end,
            }),
        })
    }

    /// A producer id never handed out before, by this broker's data directory.
    pub async fn allocate(&self) -> Result<i64, AllocateError> {
        let mut block = self.block.lock().await;
        if block.next == i64::MAX {
            return Err(AllocateError::Exhausted);
        }
        if block.next >= block.reserved_end {
            let end = block.next.saturating_add(BLOCK_SIZE);
            let contents = format!("{HEADER} {end}\n");
            disk::write_file_atomic(self.disk.as_ref(), &self.path, contents.as_bytes())
                .await
                .map_err(|e| AllocateError::Storage(e.to_string()))?;
            tracing::debug!(
                from = block.next,
                to = end,
                "reserved a block of producer ids"
            );
            block.reserved_end = end;
        }
        let id = block.next;
        assert!(
            id < block.reserved_end,
            "handing out an unreserved producer id"
        );
        block.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::FileDisk;

    #[tokio::test]
    async fn ids_are_unique_and_a_restart_continues_after_the_reserved_block() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
        let ids = ProducerIdManager::open(Arc::clone(&disk), dir.path())
            .await
            .unwrap();
        let first: Vec<i64> = allocate_n(&ids, 3).await;
        assert_eq!(first, vec![0, 1, 2]);
        drop(ids);
        let ids = ProducerIdManager::open(Arc::clone(&disk), dir.path())
            .await
            .unwrap();
        assert_eq!(ids.allocate().await.unwrap(), BLOCK_SIZE);
    }

    #[tokio::test]
    async fn a_new_block_is_reserved_when_one_is_used_up() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
        let ids = ProducerIdManager::open(Arc::clone(&disk), dir.path())
            .await
            .unwrap();
        let all = allocate_n(&ids, BLOCK_SIZE as usize + 1).await;
        assert_eq!(all.last(), Some(&BLOCK_SIZE));
        let ids = ProducerIdManager::open(Arc::clone(&disk), dir.path())
            .await
            .unwrap();
        assert_eq!(ids.allocate().await.unwrap(), 2 * BLOCK_SIZE);
    }

    #[tokio::test]
    async fn a_damaged_reservation_stops_the_broker_instead_of_reusing_ids() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
        disk::write_file_atomic(disk.as_ref(), &dir.path().join(FILE_NAME), b"garbage")
            .await
            .unwrap();
        assert!(ProducerIdManager::open(disk, dir.path()).await.is_err());
    }

    async fn allocate_n(ids: &ProducerIdManager, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(ids.allocate().await.unwrap());
        }
        out
    }
}
