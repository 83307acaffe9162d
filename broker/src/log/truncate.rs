//! Truncation to an offset: how a follower drops the part of its log that diverged from the
//! leader's (Kafka's `UnifiedLog.truncateTo`).
//!
//! Batches are atomic: the log keeps those wholly below the target and drops the one holding
//! it, so the new log end is the target or the base of the batch holding it. Segments after it
//! go, the one holding it is cut, and its indexes, the leader-epoch cache and the checkpoint
//! follow. (The idempotent producers' state lives in the partition, which rebuilds it.)
//!
//! # Crash safety
//! A crash at any point leaves a log that is a prefix of the one before, at least as long as
//! the target: never a log with a hole, and never one whose truncated batches come back
//! after batches that were kept. The order that gives this:
//! 1. the cut segment's index files go (an index with entries past the cut must not be trusted
//!    by the recovery scan);
//! 2. the segments after the cut go, the last one first, each removal made durable before the
//!    next, so a crash keeps a prefix of them;
//! 3. the cut segment's file is cut and synced;
//! 4. the leader-epoch cache and the checkpoint are rewritten (recovery cuts epochs past the
//!    data and rescans a segment past its recovery point, so a crash before this is harmless).
//!
//! A truncation a crash interrupted is not resumed by recovery: the follower redoes it after a
//! restart, from its leader-epoch cache, which never loses an entry for data still in the log
//! (step 4 comes after the data is gone).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::batch::{BatchHeader, HEADER_LEN};
use super::segment::{self, ScanEnd, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use super::{Log, LogOffline};
use crate::disk::{self, DiskFile};

/// Truncation failed.
#[derive(Debug, thiserror::Error)]
pub enum TruncateError {
    /// The target is below the log start: the follower must start over from the leader's log
    /// start instead (Kafka's `truncateFullyAndStartAt`).
    #[error("cannot truncate to {offset}, below the log start {log_start_offset}")]
    BelowLogStart { offset: u64, log_start_offset: u64 },
    /// An I/O error took the log offline; reopening it recovers a prefix of the log, and the
    /// truncation is to be tried again.
    #[error(transparent)]
    Offline(#[from] LogOffline),
    /// The replica leads the partition: a leader never truncates its own log.
    #[error("the replica leads the partition: a leader never truncates its log")]
    Leader,
}

impl Log {
    /// Removes every batch that holds an offset at or above `offset` (see the module doc) and
    /// returns the new log end: `offset`, or the base of the batch holding it. A target at or
    /// past the log end changes nothing. Appends that were not yet synced and are now gone can
    /// never be reported durable (the log's incarnation moves on).
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, TruncateError> {
        // No group commit may be in flight: it would publish a durable end past the cut. No
        // append either, and no read of the bytes being cut (see the lock notes of `Log`).
        let _sync = self.sync_lock.lock().await;
        let _writer = self.writer.lock().await;
        let _files = self.files.write().await;
        let cut_segment = {
            let st = self.state();
            st.check_online()?;
            if offset >= st.next_offset {
                return Ok(st.next_offset);
            }
            if offset < st.log_start_offset {
                return Err(TruncateError::BelowLogStart {
                    offset,
                    log_start_offset: st.log_start_offset,
                });
            }
            let (&base, seg) = st
                .segments
                .range(..=offset)
                .next_back()
                .expect("the log start's segment holds every offset from it");
            let entry = seg.index.lookup(seg.relative(offset.max(seg.base_offset)));
            (base, Arc::clone(&seg.file), entry.position as u64, seg.size)
        };
        let (cut_base, file, from, size) = cut_segment;
        let cut_position = match find_cut(file.as_ref(), from, size, offset).await {
            Ok(found) => found,
            Err(e) => return Err(self.fail("finding the truncation point", &e).into()),
        };
        let doomed: Vec<u64> = self
            .state()
            .segments
            .range(cut_base + 1..)
            .map(|(&b, _)| b)
            .collect();
        if let Err(e) = self.cut(cut_base, cut_position, &doomed).await {
            return Err(self.fail("truncating", &e).into());
        }
        let st = self.state();
        let new_end = st.next_offset;
        assert!(new_end <= offset, "truncation kept offset {offset}");
        assert!(new_end >= st.log_start_offset);
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = new_end,
            segments_removed = doomed.len(), "log truncated");
        Ok(new_end)
    }

    /// Cuts the log at `cut_position` of segment `cut_base`, removing the segments in
    /// `doomed`, in the crash-safe order of the module doc. Called holding `sync_lock`, the
    /// writer lock and `files` exclusively.
    async fn cut(&self, cut_base: u64, cut_position: u64, doomed: &[u64]) -> io::Result<()> {
        let remove_indexes = |base: u64| async move {
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                disk::remove_if_exists(self.disk.as_ref(), &segment::path(&self.dir, base, suffix))
                    .await?;
            }
            Ok::<_, io::Error>(())
        };
        // 1. The cut segment's indexes.
        remove_indexes(cut_base).await?;
        self.disk.sync_dir(&self.dir).await?;
        // 2. The segments after the cut, last first, each removal durable before the next.
        for &base in doomed.iter().rev() {
            disk::remove_if_exists(
                self.disk.as_ref(),
                &segment::path(&self.dir, base, LOG_SUFFIX),
            )
            .await?;
            remove_indexes(base).await?;
            // The cut segment keeps its aborted transactions: the partition's rebuild drops
            // those past the new end. A removed segment's go with it, so a segment that
            // later takes its base starts with none.
            disk::remove_if_exists(
                self.disk.as_ref(),
                &crate::txn::txn_index::path(&self.dir, base),
            )
            .await?;
            self.disk.sync_dir(&self.dir).await?;
            self.state().segments.remove(&base);
        }
        // 3. The cut itself, rebuilt from the bytes that stay (offsets, timestamps, indexes).
        let file = Arc::clone(&self.state().segments[&cut_base].file);
        if file.len() > cut_position {
            file.truncate(cut_position).await?;
        }
        file.sync().await?;
        let mut seg = Segment::new(cut_base, file);
        let config = self.config();
        match seg.scan(0, config.index_interval_bytes, true).await? {
            ScanEnd::Clean => {}
            // Damage at rest below the cut stays as recovery left it: kept, never served.
            ScanEnd::Corrupt { .. } => {}
            ScanEnd::TornTail {
                position, error, ..
            } => {
                return Err(io::Error::other(format!(
                    "segment {cut_base} does not scan cleanly to the cut at {cut_position}: \
                     {error} at {position}"
                )));
            }
        }
        seg.synced_size = seg.size;
        let new_end = seg.next_offset;
        let (checkpoint, epochs) = {
            let mut st = self.state();
            st.segments.insert(cut_base, seg);
            assert_eq!(
                st.segments.keys().next_back(),
                Some(&cut_base),
                "the cut segment is the active one"
            );
            // Appends that were in flight and are gone must not be reported durable later,
            // when other batches reach their offsets.
            self.incarnation.fetch_add(1, Ordering::AcqRel);
            st.next_offset = new_end;
            st.durable_offset = st.durable_offset.min(new_end);
            st.recovery_point = st.recovery_point.min(new_end);
            let epochs = st
                .epochs
                .truncate_from_end(new_end)
                .then(|| st.epochs.encode());
            (st.checkpoint(), epochs)
        };
        // 4. The leader-epoch cache and the checkpoint.
        if let Some(encoded) = epochs {
            self.write_leader_epochs(&encoded).await?;
        }
        self.write_checkpoint(checkpoint).await?;
        self.publish(&self.state());
        Ok(())
    }
}

/// The position in a segment file (from `from`, an index entry's, to the segment's `size`) of
/// the batch holding `offset`, or the segment's end if `offset` lies past its last batch.
async fn find_cut(file: &dyn DiskFile, from: u64, size: u64, offset: u64) -> io::Result<u64> {
    let mut pos = from;
    let mut header_buf = [0u8; HEADER_LEN];
    while pos < size {
        let n = file.read_at(pos, &mut header_buf).await?;
        let header = BatchHeader::parse(&header_buf[..n])
            .map_err(|e| io::Error::other(format!("batch header at {pos}: {e}")))?;
        if header.last_offset() as u64 >= offset {
            break;
        }
        pos += header.size() as u64;
    }
    Ok(pos.min(size))
}
