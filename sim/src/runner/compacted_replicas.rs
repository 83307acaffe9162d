//! The log-level replication invariants for a compacted topic. Each replica's cleaner cleans
//! its own log (as in Kafka), so replicas hold different batches at one offset; what they must
//! agree on is the records:
//! - **one-log-per-epoch**, per record: no two replicas hold different records (key, value,
//!   headers) at one offset in one leader epoch;
//! - **isr-holds-committed**, per key: the latest record of every key below the leader's high
//!   watermark is held, the same, at the same offset by every ISR member. A cleaner removes a
//!   record only for a newer one of its key below its own high watermark, which the leader's
//!   bounds, so no ISR member may lack it; a tombstone is exempt (each replica removes it
//!   once its own delete horizon passed).

use std::collections::BTreeMap;

use broker::log::batch;
use broker::log::records;

use super::invariants::{ReplicaLog, ReplicationInvariant};

/// A stored record: (leader epoch, key, value, headers).
type StoredRecord = (i32, Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

/// Every record of a replica's log by offset (control batches and empty batches hold none).
fn records_of(replica: &ReplicaLog) -> BTreeMap<i64, StoredRecord> {
    let mut out = BTreeMap::new();
    for (base, _, epoch, bytes) in &replica.batches {
        let Ok(header) = batch::BatchHeader::parse(bytes) else {
            continue;
        };
        if header.is_control() || header.records_count == 0 {
            continue;
        }
        let Ok(decoded) = records::decode(bytes, 64 << 20) else {
            continue;
        };
        for r in decoded {
            out.insert(
                base + i64::from(r.offset_delta),
                (*epoch, r.key, r.value, r.headers),
            );
        }
    }
    out
}

pub(crate) fn compare(replicas: &[ReplicaLog]) -> Vec<(ReplicationInvariant, String)> {
    let mut found = Vec::new();
    let logs: Vec<BTreeMap<i64, StoredRecord>> = replicas.iter().map(records_of).collect();
    for (i, a) in replicas.iter().enumerate() {
        for (j, b) in replicas.iter().enumerate().skip(i + 1) {
            let differ = logs[i].iter().find(|(offset, record)| {
                logs[j]
                    .get(offset)
                    .is_some_and(|other| other.0 == record.0 && other != *record)
            });
            if let Some((offset, record)) = differ {
                found.push((
                    ReplicationInvariant::OneLogPerEpoch,
                    format!(
                        "{}-{}: brokers {} and {} hold different records at offset {offset} in leader epoch {}",
                        a.view.topic, a.view.partition, a.view.broker, b.view.broker, record.0
                    ),
                ));
            }
        }
    }
    let leader = replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| r.view.leader)
        .max_by_key(|(_, r)| r.view.epoch);
    let Some((l, leader)) = leader else {
        return found;
    };
    let hw = leader.view.high_watermark as i64;
    // key → its latest record below the HW, on the leader.
    let mut latest: BTreeMap<&[u8], (i64, &StoredRecord)> = BTreeMap::new();
    for (&offset, record) in logs[l].range(..hw) {
        if let Some(key) = &record.1 {
            latest.insert(key.as_slice(), (offset, record));
        }
    }
    for &member in leader.view.isr.keys() {
        let Some(m) = replicas.iter().position(|r| r.view.broker as i32 == member) else {
            continue; // not up: nothing to compare
        };
        if m == l {
            continue;
        }
        let lacking = latest.iter().find(|(_, (offset, record))| {
            record.2.is_some() && logs[m].get(offset).is_none_or(|held| held != *record)
        });
        if let Some((key, (offset, _))) = lacking {
            found.push((
                ReplicationInvariant::IsrHoldsCommitted,
                format!(
                    "{}-{}: the latest record of key {} (offset {offset}) below leader {}'s HW {hw} is {} on ISR member {member}",
                    leader.view.topic,
                    leader.view.partition,
                    String::from_utf8_lossy(key),
                    leader.view.broker,
                    if logs[m].contains_key(offset) { "different" } else { "missing" }
                ),
            ));
        }
    }
    found
}
