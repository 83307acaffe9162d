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

#[derive(Clone, Debug, PartialEq)]
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
    /// The largest step by which the offset reservation grows (see [`super::reservation`]):
    /// offsets shown before they are synced (acks=1, the lazy policy) are reserved durably
    /// first, in steps sized by the recent rate and capped here. After a crash the log skips at
    /// most the lost window plus one step. Costs one small checkpoint write per step.
    pub offset_reservation: u64,
    /// `cleanup.policy` holds `compact`: the log cleaner keeps the latest record of each key
    /// (see [`super::cleaner`]).
    pub compact: bool,
    /// `cleanup.policy` holds `delete`: `retention.ms` and `retention.bytes` delete segments.
    /// A compact-only log keeps every segment (only the cleaner shrinks it), as in Kafka.
    pub delete: bool,
    /// `min.cleanable.dirty.ratio`: the cleaner takes a log once this share of its cleanable
    /// bytes is dirty (not yet cleaned).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty record is compacted within about this long, whatever
    /// the dirty ratio (and the active segment rolls by it, as by `segment.ms`).
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays after the cleaner first met it.
    pub delete_retention_ms: i64,
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
            compact: false,
            delete: true,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
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
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err("min.cleanable.dirty.ratio must be in [0, 1]".into());
        }
        if self.min_compaction_lag_ms < 0 || self.delete_retention_ms < 0 {
            return Err(
                "min.compaction.lag.ms and delete.retention.ms must not be negative".into(),
            );
        }
        if self.max_compaction_lag_ms < 1 {
            return Err("max.compaction.lag.ms must be positive".into());
        }
        if self.max_compaction_lag_ms < self.min_compaction_lag_ms {
            return Err(format!(
                "conflict topic config setting max.compaction.lag.ms ({}) < min.compaction.lag.ms ({})",
                self.max_compaction_lag_ms, self.min_compaction_lag_ms
            ));
        }
        Ok(())
    }

    /// When the active segment rolls by age: `segment.ms`, or sooner on a compacted log when
    /// `max.compaction.lag.ms` is shorter (the cleaner never touches the active segment), as
    /// Kafka's `LogConfig.maxSegmentMs`.
    pub fn max_segment_ms(&self) -> i64 {
        if self.compact {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }
}
