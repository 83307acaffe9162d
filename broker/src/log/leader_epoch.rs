//! The leader-epoch cache: for each leader epoch, the first offset written in it.
//!
//! Replication (later) uses it to answer OffsetsForLeaderEpoch and to truncate a follower to the
//! leader's log after a leader change. It is persisted beside the log in Kafka's own
//! `leader-epoch-checkpoint` text format (version, count, then `epoch start_offset` lines) and
//! rewritten atomically whenever it changes.

/// One epoch and the first offset its leader wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest epoch.
    /// Returns whether the cache changed. An older epoch is ignored: its leader was fenced.
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch {
                return false;
            }
            assert!(
                start_offset >= last.start_offset,
                "epoch start offsets must not decrease"
            );
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// OffsetsForLeaderEpoch: the largest known epoch ≤ `epoch` and the offset where it ended
    /// (the start of the next epoch, or `log_end_offset` for the latest). `None` if `epoch` is
    /// older than every entry.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        let idx = self.entries.partition_point(|e| e.epoch <= epoch);
        if idx == 0 {
            return None;
        }
        let found = self.entries[idx - 1];
        let end = self
            .entries
            .get(idx)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// Removes epochs that start at or after `offset` (the log was truncated to `offset`).
    pub fn truncate_from_end(&mut self, offset: u64) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log start moved to `offset`: epochs wholly below it go, and the epoch in force at
    /// `offset` now starts there.
    pub fn truncate_from_start(&mut self, offset: u64) -> bool {
        let below = self.entries.partition_point(|e| e.start_offset < offset);
        if below == 0 {
            return false;
        }
        let in_force = self.entries[below - 1];
        self.entries.drain(..below);
        let starts_exactly = self
            .entries
            .first()
            .is_some_and(|e| e.start_offset == offset);
        if !starts_exactly {
            self.entries.insert(
                0,
                EpochEntry {
                    epoch: in_force.epoch,
                    start_offset: offset,
                },
            );
        }
        true
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<LeaderEpochCache, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some("0") {
            return Err("unknown leader-epoch-checkpoint version".into());
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| "missing entry count".to_string())?;
        let mut cache = LeaderEpochCache::default();
        for _ in 0..count {
            let line = lines.next().ok_or_else(|| "missing entry".to_string())?;
            let mut parts = line.split(' ');
            let epoch = parts.next().and_then(|p| p.parse().ok());
            let start = parts.next().and_then(|p| p.parse().ok());
            match (epoch, start, parts.next()) {
                (Some(epoch), Some(start_offset), None) => {
                    if !cache.assign(epoch, start_offset) {
                        return Err(format!("entry {line:?} is not increasing"));
                    }
                }
                _ => return Err(format!("malformed entry {line:?}")),
            }
        }
        if lines.next().is_some() {
            return Err("trailing data".into());
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, u64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn an_epoch_ends_where_the_next_one_starts() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.end_offset_for(0, 40), None);
        assert_eq!(c.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(9, 40), Some((4, 40)));
    }

    #[test]
    fn older_or_equal_epochs_do_not_change_the_cache() {
        let mut c = cache(&[(2, 0)]);
        assert!(!c.assign(2, 5));
        assert!(!c.assign(1, 5));
        assert_eq!(c.entries().len(), 1);
    }

    #[test]
    fn truncation_from_either_end_keeps_the_epoch_in_force() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(c.truncate_from_end(25));
        assert_eq!(c.latest_epoch(), Some(3));
        assert!(c.truncate_from_start(12));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 3,
                start_offset: 12
            }]
        );
        assert!(!c.truncate_from_start(5));
    }

    #[test]
    fn the_checkpoint_round_trips_and_garbage_is_refused() {
        let c = cache(&[(1, 0), (3, 10)]);
        assert_eq!(LeaderEpochCache::decode(&c.encode()).unwrap(), c);
        assert!(LeaderEpochCache::decode(b"0\n2\n1 0\n").is_err());
        assert!(LeaderEpochCache::decode(b"0\n2\n3 0\n1 5\n").is_err());
        assert!(LeaderEpochCache::decode(b"\xff").is_err());
    }
}
