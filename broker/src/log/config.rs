//! Per-log configuration: Kafka's topic-level settings that the log itself enforces.

use super::batch::Compression;

/// When appended bytes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Faultline's default: an append is reported only after its bytes are synced. Concurrent
    /// appends share one sync (group commit).
    Durable,
    /// Kafka's default: appends land in the page cache and are reported at once; a sync runs
    /// after `flush_messages` records or `flush_ms` since the last one (Kafka's `flush.messages`
    /// and `flush.ms`), on roll, and at clean shutdown. A power loss can lose the unsynced window.
    Lazy {
        flush_messages: Option<u64>,
        flush_ms: Option<i64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this (max 2 GiB - 1).
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older than this; `None` keeps all.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete the oldest segments while the log is larger; `None` keeps all.
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest record set one append may carry.
    pub max_message_bytes: u64,
    /// `message.timestamp.type=LogAppendTime` when true.
    pub log_append_time: bool,
    /// `compression.type`: the codec batches are stored with; a produced batch in another
    /// codec is re-encoded before it is appended (`crate::compression`). `None` (`producer`,
    /// the default): as the producer sent it.
    pub compression: Option<Compression>,
    pub flush: FlushPolicy,
    /// How many offsets are reserved durably ahead of assignment. After a crash the log skips
    /// to the end of the reservation, so no offset handed out before the crash (even one whose
    /// bytes were lost) is ever given to different data. Costs one small sync per reservation.
    pub offset_reservation: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            compression: None,
            flush: FlushPolicy::Durable,
            offset_reservation: 1 << 20,
        }
    }
}

impl LogConfig {
    /// Checks the settings that the log's on-disk format depends on.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 14 || self.segment_bytes > i32::MAX as u64 {
            return Err(format!(
                "segment.bytes {} is out of range [14, 2^31-1]",
                self.segment_bytes
            ));
        }
        if self.segment_ms < 1 {
            return Err(format!("segment.ms {} must be positive", self.segment_ms));
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes must be positive".into());
        }
        if self.offset_reservation == 0 || self.offset_reservation > 1 << 30 {
            return Err("offset reservation must be in [1, 2^30]".into());
        }
        Ok(())
    }
}
