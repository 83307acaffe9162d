//! A follower's append: batches copied from the leader's log, offsets and leader epochs kept
//! as the leader assigned them (Kafka's `UnifiedLog.appendAsFollower`).
//!
//! The leader's log is dense, and a follower fetches from its own log end, so what it appends
//! continues its log exactly: the first batch starts at the log end and each next one where the
//! one before ended. Starting *below* the log end is a bug in the caller (the fetcher drops
//! what it already holds, and truncates first where the logs diverge): asserted. A gap after
//! the log end, batches out of order, or a leader epoch older than one the log holds are the
//! leader's data not fitting: errors, and nothing is appended.

use super::batch::{self, BatchError};
use super::{AppendInfo, FlushPolicy, Log};

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
    /// The replica is no longer a follower (a new role arrived while the batches were on
    /// their way): nothing was appended.
    #[error("the replica is not a follower")]
    NotFollower,
    /// The batches were fetched in an older leader epoch than the one the replica now follows
    /// in (a new leader arrived while they were on their way): nothing was appended.
    #[error("batches fetched in leader epoch {fetched_in}, the replica now follows in {current}")]
    StaleLeaderEpoch { fetched_in: i32, current: i32 },
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
        let writer = self
            .lock_writer_with_room(records.len() as u64, last - first + 1, now)
            .await
            .map_err(|e| FollowerAppendError::Offline(e.0))?;
        // Decided under the state lock; the files recording it are written holding only the
        // writer lock, which keeps the log end where it is meanwhile.
        let epochs = {
            let st = self.state();
            st.check_online()
                .map_err(|e| FollowerAppendError::Offline(e.0))?;
            // Checked, not asserted: the caller read the log end before this lock, and a
            // recovery in place after an I/O error can move it meanwhile (a batch whose append
            // failed may have landed whole: found by a 60 s replication swarm, seed 54). The
            // fetcher reconciles on NotContiguous.
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
            (epochs != st.epochs).then_some(epochs)
        };

        // Before the checkpoint and leader epochs below go into it.
        self.make_dir_or_fail()
            .await
            .map_err(|e| FollowerAppendError::Offline(e.0))?;
        // The offset reservation is a single-replica policy (see `Log::set_replicated`): a
        // follower's log is replicated by definition, and reserves only if nobody said so.
        let reserved = self.state().reserved_offset;
        if last >= reserved && !self.is_replicated() {
            self.store_reservation(&writer, last + 1 + config.offset_reservation)
                .await
                .map_err(|e| FollowerAppendError::Offline(e.0))?;
        }
        if let Some(epochs) = epochs {
            if let Err(e) = self.write_leader_epochs(&epochs.encode()).await {
                return Err(FollowerAppendError::Offline(
                    self.fail("writing leader epochs", &e).0,
                ));
            }
            self.state().epochs = epochs;
        }

        let (log_start_offset, incarnation) = {
            let st = self
                .append_to_active(&writer, records, now, &config)
                .await
                .map_err(|e| FollowerAppendError::Offline(e.0))?;
            assert_eq!(st.next_offset, last + 1);
            // Read under the state lock: a recovery or truncation bumps it there.
            (st.log_start_offset, self.incarnation())
        };
        let info = AppendInfo {
            base_offset: first,
            last_offset: last,
            log_append_time_ms: None,
            log_start_offset,
            incarnation,
        };
        drop(writer);
        if let FlushPolicy::Lazy { .. } = config.flush {
            self.flush_if_due()
                .await
                .map_err(|e| FollowerAppendError::Offline(e.0))?;
        }
        Ok(info)
    }
}
