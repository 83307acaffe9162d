//! Producer ids, handed out by InitProducerId and never reused in the cluster.
//!
//! A reused producer id would let a new producer's batches be taken for retries of an old one's
//! (or be fenced by its epoch). The active controller hands each broker blocks of ids (Kafka's
//! AllocateProducerIds, 1000 at a time), committed in the metadata log before the broker sees
//! them, so no two brokers ever get the same block, and a restarted broker asks for a new block
//! rather than continue an old one. A broker hands out the ids of its block in order.
//!
//! Before the cluster, a single broker reserved its blocks in `<data-dir>/producer-ids` (one
//! line, `faultline-producer-ids v1 <end>`: every id below `<end>` may have been handed out).
//! [`legacy_reserved_end`] reads it so the import keeps those ids as the floor.

use std::future::Future;
use std::io;
use std::path::Path;

use crate::disk::{self, Disk};

/// The single broker's reservation file under the data directory.
pub const FILE_NAME: &str = "producer-ids";
const HEADER: &str = "faultline-producer-ids v1";

/// InitProducerId could not allocate an id.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// This broker's block is used up and the controller could not give a new one now;
    /// nothing was handed out. Retriable.
    #[error("cannot get a block of producer ids: {0}")]
    Unavailable(String),
    /// Every id up to `i64::MAX` is used up.
    #[error("producer ids are exhausted")]
    Exhausted,
}

#[derive(Debug, Default)]
struct Block {
    /// The next id to hand out.
    next: i64,
    /// The end (exclusive) of the block.
    end: i64,
}

/// Hands out the ids of this broker's current block. One per broker; cheap to share.
#[derive(Debug, Default)]
pub struct ProducerIdManager {
    block: tokio::sync::Mutex<Block>,
}

fn decode(text: &str) -> Option<i64> {
    let rest = text.trim_end().strip_prefix(HEADER)?.strip_prefix(' ')?;
    rest.parse::<i64>().ok().filter(|&end| end >= 0)
}

/// The end of a single broker's producer-id reservation, if its data directory has one. A
/// damaged file stops the broker from starting rather than risk reuse.
pub async fn legacy_reserved_end(disk: &dyn Disk, data_dir: &Path) -> io::Result<Option<i64>> {
    let path = data_dir.join(FILE_NAME);
    match disk::read_file(disk, &path).await {
        Ok(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(decode)
            .map(Some)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: damaged producer-id reservation",
                    path.display()
                ))
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl ProducerIdManager {
    pub fn new() -> ProducerIdManager {
        ProducerIdManager::default()
    }

    /// A producer id never handed out before. When the block is used up, `new_block` gets the
    /// next one (`(first, count)`) from the controller; callers wait for it one at a time.
    pub async fn allocate<F, Fut>(&self, new_block: F) -> Result<i64, AllocateError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(i64, i64), AllocateError>>,
    {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let (first, count) = new_block().await?;
            assert!(
                first >= 0 && count > 0 && first.checked_add(count).is_some(),
                "a producer-id block [{first}, +{count}) from the controller"
            );
            assert!(
                first >= block.end,
                "a new producer-id block starts at {first}, inside the previous one (end {})",
                block.end
            );
            tracing::debug!(first, count, "got a block of producer ids");
            *block = Block {
                next: first,
                end: first + count,
            };
        }
        let id = block.next;
        assert!(id < block.end, "handing out an id outside the block");
        block.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::disk::FileDisk;

    #[tokio::test]
    async fn ids_come_from_the_block_and_a_new_block_is_asked_for_only_when_it_is_used_up() {
        let ids = ProducerIdManager::new();
        let asked = AtomicUsize::new(0);
        let next_first = AtomicI64::new(5_000);
        let mut handed = Vec::new();
        for _ in 0..7 {
            let id = ids
                .allocate(|| async {
                    asked.fetch_add(1, Ordering::SeqCst);
                    Ok((next_first.fetch_add(3, Ordering::SeqCst), 3))
                })
                .await
                .unwrap();
            handed.push(id);
        }
        assert_eq!(handed, vec![5000, 5001, 5002, 5003, 5004, 5005, 5006]);
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_block_that_cannot_be_had_hands_out_nothing_and_the_next_call_asks_again() {
        let ids = ProducerIdManager::new();
        let refused = ids
            .allocate(|| async { Err(AllocateError::Unavailable("no controller".into())) })
            .await;
        assert!(matches!(refused, Err(AllocateError::Unavailable(_))));
        assert_eq!(ids.allocate(|| async { Ok((10, 2)) }).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn a_single_brokers_reservation_is_read_as_the_floor_and_damage_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
        assert_eq!(
            legacy_reserved_end(disk.as_ref(), dir.path())
                .await
                .unwrap(),
            None
        );
        let path = dir.path().join(FILE_NAME);
        disk::write_file_atomic(disk.as_ref(), &path, b"faultline-producer-ids v1 3000\n")
            .await
            .unwrap();
        assert_eq!(
            legacy_reserved_end(disk.as_ref(), dir.path())
                .await
                .unwrap(),
            Some(3000)
        );
        disk::write_file_atomic(disk.as_ref(), &path, b"garbage")
            .await
            .unwrap();
        assert!(legacy_reserved_end(disk.as_ref(), dir.path())
            .await
            .is_err());
    }
}
