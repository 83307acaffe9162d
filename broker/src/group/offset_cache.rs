//! Committed offsets in memory: what `__consumer_offsets` holds once durable, and the writes
//! on their way there.
//!
//! A write is *in flight* from the moment the coordinator decides it (under its lock, in the
//! order it will reach the log) until it is durable and applied or has failed. OffsetFetch waits
//! for the writes in flight when it arrives, expiry leaves their groups alone, and deleting a
//! group tombstones their keys too.

use std::collections::{BTreeMap, BTreeSet};

use super::machine::{GroupState, Millis};
use super::offsets::{CommittedOffset, OffsetKey};
use super::registry::Registry;

/// Names one write to `__consumer_offsets`: its place in the log's append order.
pub type Ticket = u64;

/// What a write in flight touches.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    pub keys: Vec<OffsetKey>,
    pub groups: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct OffsetCache {
    /// Committed offsets, with the `__consumer_offsets` offset of the record that set them.
    offsets: BTreeMap<OffsetKey, (CommittedOffset, u64)>,
    /// Offset of the latest applied tombstone per key, so a late-applied older commit loses.
    deleted: BTreeMap<OffsetKey, u64>,
    in_flight: BTreeMap<Ticket, InFlight>,
}

impl OffsetCache {
    /// Applies one record read from (or made durable in) the log at offset `at`; an older
    /// record than the one already applied for its key changes nothing.
    pub fn apply(&mut self, key: OffsetKey, value: Option<CommittedOffset>, at: u64) {
        let set = self.offsets.get(&key).map(|(_, o)| *o);
        let del = self.deleted.get(&key).copied();
        if set.max(del).is_some_and(|o| at <= o) {
            return;
        }
        match value {
            Some(v) => {
                self.deleted.remove(&key);
                self.offsets.insert(key.clone(), (v, at));
            }
            None => {
                self.offsets.remove(&key);
                self.deleted.insert(key.clone(), at);
            }
        }
        assert!(!(self.offsets.contains_key(&key) && self.deleted.contains_key(&key)));
    }

    pub fn get(&self, key: &OffsetKey) -> Option<CommittedOffset> {
        self.offsets.get(key).map(|(v, _)| v.clone())
    }

    /// Every committed offset of `group`, in key order.
    pub fn of_group(&self, group: &str) -> Vec<(OffsetKey, CommittedOffset)> {
        self.offsets
            .range(OffsetKey::first_of(group)..)
            .take_while(|(k, _)| k.group == group)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.offsets
            .range(OffsetKey::first_of(group)..)
            .next()
            .is_some_and(|(k, _)| k.group == group)
    }

    /// Keys of `group` that are committed or being written: what deleting it must tombstone.
    pub fn keys_of_group(&self, group: &str) -> BTreeSet<OffsetKey> {
        let mut keys: BTreeSet<OffsetKey> =
            self.of_group(group).into_iter().map(|(k, _)| k).collect();
        for write in self.in_flight.values() {
            keys.extend(write.keys.iter().filter(|k| k.group == group).cloned());
        }
        keys
    }

    /// Groups with committed offsets.
    pub fn groups(&self) -> BTreeSet<String> {
        self.offsets.keys().map(|k| k.group.clone()).collect()
    }

    pub fn begin(&mut self, ticket: Ticket, write: InFlight) {
        let previous = self.in_flight.insert(ticket, write);
        assert!(previous.is_none(), "ticket {ticket} begun twice");
    }

    pub fn end(&mut self, ticket: Ticket) {
        self.in_flight.remove(&ticket);
        assert!(!self.in_flight.contains_key(&ticket));
    }

    pub fn in_flight(&self) -> Vec<Ticket> {
        self.in_flight.keys().copied().collect()
    }

    pub fn is_in_flight(&self, ticket: Ticket) -> bool {
        self.in_flight.contains_key(&ticket)
    }

    pub fn is_busy(&self, group: &str) -> bool {
        self.in_flight.values().any(|w| w.groups.contains(group))
    }

    /// KIP-211: the committed offsets that have expired at `now`. An empty group's offsets
    /// expire `retention_ms` after it became empty (or after their commit, if later: a commit
    /// into an empty group restarts its clock); in a stable consumer group, offsets of topics no
    /// member subscribes to expire that long after their commit; no other group loses any.
    /// Groups with writes in flight are skipped.
    pub fn expired(&self, now: Millis, retention_ms: i64, groups: &Registry) -> Vec<OffsetKey> {
        let busy: BTreeSet<&String> = self.in_flight.values().flat_map(|w| &w.groups).collect();
        let mut subscriptions: BTreeMap<&str, Option<BTreeSet<String>>> = BTreeMap::new();
        let mut expired = Vec::new();
        for (key, (value, _)) in &self.offsets {
            if busy.contains(&key.group) {
                continue;
            }
            let since = match groups.get(&key.group) {
                None => Some(value.commit_timestamp_ms),
                Some(group) => match group.state {
                    GroupState::Empty => Some(group.state_since.max(value.commit_timestamp_ms)),
                    GroupState::Stable => subscriptions
                        .entry(&key.group)
                        .or_insert_with(|| group.subscribed_topics())
                        .as_ref()
                        .filter(|topics| !topics.contains(&key.topic))
                        .map(|_| value.commit_timestamp_ms),
                    _ => None,
                },
            };
            if since.is_some_and(|since| now.saturating_sub(since) >= retention_ms) {
                expired.push(key.clone());
            }
        }
        assert!(expired.iter().all(|k| self.offsets.contains_key(k)));
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, partition: i32) -> OffsetKey {
        OffsetKey {
            group: group.into(),
            topic: "t".into(),
            partition,
        }
    }

    fn value(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        }
    }

    #[test]
    fn a_record_applied_late_loses_to_a_newer_one_and_a_tombstone_to_a_newer_commit() {
        let mut cache = OffsetCache::default();
        cache.apply(key("g", 0), Some(value(5)), 10);
        cache.apply(key("g", 0), Some(value(3)), 7);
        assert_eq!(cache.get(&key("g", 0)), Some(value(5)));
        cache.apply(key("g", 0), None, 12);
        cache.apply(key("g", 0), Some(value(4)), 11);
        assert_eq!(cache.get(&key("g", 0)), None);
        cache.apply(key("g", 0), Some(value(6)), 13);
        assert_eq!(cache.get(&key("g", 0)), Some(value(6)));
    }

    #[test]
    fn deleting_a_group_covers_the_keys_of_its_commits_still_in_flight() {
        let mut cache = OffsetCache::default();
        cache.apply(key("g", 0), Some(value(5)), 1);
        cache.apply(key("other", 0), Some(value(5)), 2);
        cache.begin(
            9,
            InFlight {
                keys: vec![key("g", 1)],
                groups: BTreeSet::from(["g".to_string()]),
            },
        );
        assert_eq!(
            cache.keys_of_group("g"),
            BTreeSet::from([key("g", 0), key("g", 1)])
        );
        assert!(cache.is_busy("g"));
        cache.end(9);
        assert!(!cache.is_busy("g"));
    }
}
