//! A follower's append: batches copied from the leader's log, offsets and leader epochs kept
//! as the leader assigned them (Kafka's `UnifiedLog.appendAsFollower`).
//!
//! The leader's log is dense, and a follower fetches from its own log end, so what it appends
//! continues its log exactly: the first batch starts at the log end and each next one where the
//! one before ended. Starting *below* the log end is a bug in the caller (the fetcher drops
//! what it already holds, and truncates first where the logs diverge): asserted. A gap after
//! the log end, batches out of order, or a leader epoch older than one the log holds are the
//! leader's data not fitting: errors, and nothing is appended.

use std::io;
use std::sync::Arc;

use super::batch::{self, BatchError, BatchHeader};
use super::{AppendInfo, FlushPolicy, Log, LogState, LEADER_EPOCH_FILE};
use crate::disk;

/// A follower's append failed; nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum FollowerAppendError {
    /// A batch failed validation (CRC, length, counts).
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// A batch does not start where the log (or the batch before it) ends.
    #[error("batch at offset {found} does not continue the log at {expected}")]
    NotContiguous { expected: u64, found: u64 },
    /// A batch carries a leader epoch older than one already in the log.
    #[error("batch at offset {offset} has leader epoch {epoch}, older than the log's {latest}")]
    EpochWentBack {
        offset: u64,
        epoch: i32,
        latest: i32,
    },
    /// Kafka: KAFKA_STORAGE_ERROR.
    #[error("log is offline: {0}")]
    Offline(String),
}

impl Log {
    /// Appends batches exactly as the leader stored them (see the module doc). Records every new
    /// leader epoch in the leader-epoch cache at its first batch. Returns without waiting for a
    /// sync under either policy: a follower's offsets count for the high watermark only once
    /// [`Log::wait_durable`] says so (durable policy), and the lazy policy flushes as it does
    /// for a leader.
    pub async fn append_as_follower(
        &self,
        records: &[u8],
    ) -> Result<AppendInfo, FollowerAppendError> {
        if records.is_empty() {
            return Err(BatchError::Empty.into());
        }
        let mut headers = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let header = batch::validate(&records[pos..])?;
            pos += header.size();
            headers.push(header);
        }
        for pair in headers.windows(2) {
            let expected = pair[0].last_offset() as u64 + 1;
            if pair[1].base_offset as u64 != expected {
                return Err(FollowerAppendError::NotContiguous {
                    expected,
                    found: pair[1].base_offset as u64,
                });
            }
        }
        let first = headers[0].base_offset as u64;
        let last = headers[headers.len() - 1].last_offset() as u64;
        assert!(first <= last);
        let config = self.config();
        let now = self.clock.now_ms();
        let mut st = self
            .lock_with_room(records.len() as u64, last, now)
            .await
            .map_err(FollowerAppendError::Offline)?;
        assert!(
            first >= st.next_offset,
            "a follower's append at {first} below the log end {}",
            st.next_offset
        );
        if first != st.next_offset {
            return Err(FollowerAppendError::NotContiguous {
                expected: st.next_offset,
                found: first,
            });
        }
        let mut epochs = st.epochs.clone();
        for header in headers.iter().filter(|h| h.partition_leader_epoch >= 0) {
            let latest = epochs.latest_epoch().unwrap_or(-1);
            if header.partition_leader_epoch < latest {
                return Err(FollowerAppendError::EpochWentBack {
                    offset: header.base_offset as u64,
                    epoch: header.partition_leader_epoch,
                    latest,
                });
            }
            epochs.assign(header.partition_leader_epoch, header.base_offset as u64);
        }

        // The offset reservation is the leader's single-replica policy, but the log keeps its
        // invariant (no offset at or past it) whoever assigned the offsets.
        if last >= st.reserved_offset {
            st.reserved_offset = last + 1 + config.offset_reservation;
            if let Err(e) = self.write_checkpoint(st.checkpoint()).await {
                return Err(self.follower_offline(&mut st, "writing checkpoint", &e));
            }
        }
        if epochs != st.epochs {
            let path = self.dir.join(LEADER_EPOCH_FILE);
            if let Err(e) =
                disk::write_file_atomic(self.disk.as_ref(), &path, &epochs.encode()).await
            {
                return Err(self.follower_offline(&mut st, "writing leader epochs", &e));
            }
            st.epochs = epochs;
        }

        let file = Arc::clone(&st.active().file);
        let position = match file.append(records).await {
            Ok(position) if position != st.active().size => {
                let e = io::Error::other(format!(
                    "segment file ends at {position}, the log expected {}",
                    st.active().size
                ));
                return Err(self.follower_offline(&mut st, "appending", &e));
            }
            Ok(position) => position,
            Err(e) => return Err(self.follower_offline(&mut st, "appending", &e)),
        };
        let active = st.active_mut();
        if active.rolling_base_ms.is_none() {
            active.rolling_base_ms = Some(now);
        }
        let mut at = 0;
        while at < records.len() {
            let header = BatchHeader::parse(&records[at..]).expect("validated above");
            active.record_batch(&header, position + at as u64, config.index_interval_bytes);
            at += header.size();
        }
        assert_eq!(active.next_offset, last + 1);
        st.next_offset = last + 1;
        self.publish(&st);
        let info = AppendInfo {
            base_offset: first,
            last_offset: last,
            log_append_time_ms: None,
            log_start_offset: st.log_start_offset,
            incarnation: self.incarnation(),
        };
        drop(st);
        if let FlushPolicy::Lazy { .. } = config.flush {
            self.flush_if_due()
                .await
                .map_err(|e| FollowerAppendError::Offline(e.0))?;
        }
        Ok(info)
    }

    /// Locks the state with the active segment able to take `bytes` more bytes ending at
    /// `last_offset`, rolling first if it cannot (and syncing the segment to be sealed without
    /// the lock held, as a leader's append does).
    async fn lock_with_room(
        &self,
        bytes: u64,
        last_offset: u64,
        now: i64,
    ) -> Result<tokio::sync::MutexGuard<'_, LogState>, String> {
        let config = self.config();
        let mut flushed_for_roll = false;
        loop {
            let mut st = self.state.lock().await;
            st.check_online().map_err(|e| e.0)?;
            let active = st.active();
            let needs_roll = active.size > 0
                && (active.size + bytes > config.segment_bytes
                    || now.saturating_sub(active.rolling_base_ms.unwrap_or(now))
                        >= config.segment_ms
                    || !active.fits_offset(last_offset));
            if needs_roll && !flushed_for_roll && active.synced_size < active.size {
                drop(st);
                self.flush().await.map_err(|e| e.0)?;
                flushed_for_roll = true;
                continue;
            }
            if needs_roll {
                self.roll_locked(&mut st).await.map_err(|e| e.0)?;
            }
            return Ok(st);
        }
    }

    fn follower_offline(
        &self,
        st: &mut LogState,
        what: &str,
        e: &io::Error,
    ) -> FollowerAppendError {
        FollowerAppendError::Offline(self.go_offline(st, what, e).0)
    }
}
