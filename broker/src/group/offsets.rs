//! Committed offsets and their records in `__consumer_offsets`.
//!
//! Each commit is one record in its group's partition of the internal topic (our own encoding,
//! not Kafka's; all integers big-endian, strings as i16 length + UTF-8):
//!
//! ```text
//! key:   version i16 = 1 | group string | topic string | partition i32
//! value: version i16 = 1 | offset i64 | leader_epoch i32 | metadata (i32 length, -1 = null)
//!        | commit_timestamp_ms i64
//! ```
//!
//! A group's membership is a record too, written when a generation's assignments are stored
//! (before any member learns them, as Kafka does), when the group empties (a LeaveGroup or a
//! session expiry; answered once stored) and when a static member takes over its instance:
//!
//! ```text
//! key:   version i16 = 2 | group string
//! value: version i16 = 1 | protocol_type nullable string | generation i32
//!        | protocol_name nullable string | leader nullable string | state_since_ms i64
//!        | member count i32, each: member_id string | group_instance_id nullable string
//!          | client_id string | client_host string | session_timeout_ms i32
//!          | rebalance_timeout_ms i32 | protocol count i32, each: name string | metadata bytes
//!          | assignment bytes
//! ```
//! (nullable strings: i16 length, -1 = null; bytes: i32 length.)
//!
//! An offset committed inside a transaction (TxnOffsetCommit) is a record of its own until
//! the transaction ends, with the committed offset's value:
//!
//! ```text
//! key:   version i16 = 3 | group string | topic string | partition i32 | producer_id i64
//! ```
//!
//! It becomes the committed offset when the producer's COMMIT marker lands on the partition
//! (at the marker's offset) and is dropped at its ABORT marker; a load resolves it the same
//! way, at the marker it finds after it.
//!
//! A record without a value (a tombstone) deletes the offset or the group. When a shard
//! loads, its partition is replayed; the last record per key wins. The topic is compacted
//! (`cleanup.policy=compact`): the log cleaner keeps the latest record of each key, and a
//! tombstone for `delete.retention.ms`, so a load reads the live offsets and groups, not every
//! commit ever made.

use bytes::Bytes;

use super::machine::{GroupSnapshot, MemberSnapshot};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's `offset.metadata.max.bytes`.
pub const MAX_METADATA_BYTES: usize = 4096;

/// What is committed for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// The key of a committed offset.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

impl OffsetKey {
    /// The smallest key of `group`: where its offsets start in key order.
    pub fn first_of(group: &str) -> OffsetKey {
        OffsetKey {
            group: group.to_string(),
            topic: String::new(),
            partition: i32::MIN,
        }
    }
}

/// What a `__consumer_offsets` record's key names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    Offset(OffsetKey),
    Group(String),
    /// An offset committed by `producer_id`'s transaction, pending until its marker.
    TxnOffset {
        producer_id: i64,
        key: OffsetKey,
    },
}

/// Decodes either kind of key; `None` for a key this broker did not write.
pub fn decode_record_key(buf: &[u8]) -> Option<RecordKey> {
    let mut pos = 0;
    match i16::from_be_bytes(get(buf, &mut pos)?) {
        1 => decode_key(buf).map(RecordKey::Offset),
        2 => Some(RecordKey::Group(get_str(buf, &mut pos)?)),
        3 => {
            let key = OffsetKey {
                group: get_str(buf, &mut pos)?,
                topic: get_str(buf, &mut pos)?,
                partition: i32::from_be_bytes(get(buf, &mut pos)?),
            };
            let producer_id = i64::from_be_bytes(get(buf, &mut pos)?);
            Some(RecordKey::TxnOffset { producer_id, key })
        }
        _ => None,
    }
}

pub fn encode_txn_offset_key(producer_id: i64, key: &OffsetKey) -> Vec<u8> {
    let mut out = 3i16.to_be_bytes().to_vec();
    put_str(&mut out, &key.group);
    put_str(&mut out, &key.topic);
    out.extend_from_slice(&key.partition.to_be_bytes());
    out.extend_from_slice(&producer_id.to_be_bytes());
    out
}

pub fn encode_group_key(group: &str) -> Vec<u8> {
    let mut out = 2i16.to_be_bytes().to_vec();
    put_str(&mut out, group);
    out
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn get_opt_str(buf: &[u8], pos: &mut usize) -> Option<Option<String>> {
    let len = i16::from_be_bytes(buf.get(*pos..*pos + 2)?.try_into().ok()?);
    if len < 0 {
        *pos += 2;
        return Some(None);
    }
    get_str(buf, pos).map(Some)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

fn get_bytes(buf: &[u8], pos: &mut usize) -> Option<Bytes> {
    let len = usize::try_from(i32::from_be_bytes(get(buf, pos)?)).ok()?;
    let b = Bytes::copy_from_slice(buf.get(*pos..*pos + len)?);
    *pos += len;
    Some(b)
}

pub fn encode_group_value(g: &GroupSnapshot) -> Vec<u8> {
    let mut out = 1i16.to_be_bytes().to_vec();
    put_opt_str(&mut out, g.protocol_type.as_deref());
    out.extend_from_slice(&g.generation_id.to_be_bytes());
    put_opt_str(&mut out, g.protocol_name.as_deref());
    put_opt_str(&mut out, g.leader.as_deref());
    out.extend_from_slice(&g.state_since_ms.to_be_bytes());
    out.extend_from_slice(&(g.members.len() as i32).to_be_bytes());
    for m in &g.members {
        put_str(&mut out, &m.member_id);
        put_opt_str(&mut out, m.group_instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&(m.protocols.len() as i32).to_be_bytes());
        for (name, metadata) in &m.protocols {
            put_str(&mut out, name);
            put_bytes(&mut out, metadata);
        }
        put_bytes(&mut out, &m.assignment);
    }
    out
}

pub fn decode_group_value(buf: &[u8]) -> Option<GroupSnapshot> {
    let mut pos = 0;
    if i16::from_be_bytes(get(buf, &mut pos)?) != 1 {
        return None;
    }
    let protocol_type = get_opt_str(buf, &mut pos)?;
    let generation_id = i32::from_be_bytes(get(buf, &mut pos)?);
    let protocol_name = get_opt_str(buf, &mut pos)?;
    let leader = get_opt_str(buf, &mut pos)?;
    let state_since_ms = i64::from_be_bytes(get(buf, &mut pos)?);
    let count = i32::from_be_bytes(get(buf, &mut pos)?);
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = get_str(buf, &mut pos)?;
        let group_instance_id = get_opt_str(buf, &mut pos)?;
        let client_id = get_str(buf, &mut pos)?;
        let client_host = get_str(buf, &mut pos)?;
        let session_timeout_ms = i32::from_be_bytes(get(buf, &mut pos)?);
        let rebalance_timeout_ms = i32::from_be_bytes(get(buf, &mut pos)?);
        let protocols_count = i32::from_be_bytes(get(buf, &mut pos)?);
        let mut protocols = Vec::new();
        for _ in 0..protocols_count.max(0) {
            protocols.push((get_str(buf, &mut pos)?, get_bytes(buf, &mut pos)?));
        }
        let assignment = get_bytes(buf, &mut pos)?;
        members.push(MemberSnapshot {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols,
            assignment,
        });
    }
    Some(GroupSnapshot {
        protocol_type,
        generation_id,
        protocol_name,
        leader,
        state_since_ms,
        members,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_str(buf: &[u8], pos: &mut usize) -> Option<String> {
    let len = i16::from_be_bytes(buf.get(*pos..*pos + 2)?.try_into().ok()?);
    *pos += 2;
    let len = usize::try_from(len).ok()?;
    let s = String::from_utf8(buf.get(*pos..*pos + len)?.to_vec()).ok()?;
    *pos += len;
    Some(s)
}

fn get<const N: usize>(buf: &[u8], pos: &mut usize) -> Option<[u8; N]> {
    let bytes = buf.get(*pos..*pos + N)?.try_into().ok()?;
    *pos += N;
    Some(bytes)
}

pub fn encode_key(key: &OffsetKey) -> Vec<u8> {
    let mut out = 1i16.to_be_bytes().to_vec();
    put_str(&mut out, &key.group);
    put_str(&mut out, &key.topic);
    out.extend_from_slice(&key.partition.to_be_bytes());
    out
}

pub fn decode_key(buf: &[u8]) -> Option<OffsetKey> {
    let mut pos = 0;
    if i16::from_be_bytes(get(buf, &mut pos)?) != 1 {
        return None;
    }
    Some(OffsetKey {
        group: get_str(buf, &mut pos)?,
        topic: get_str(buf, &mut pos)?,
        partition: i32::from_be_bytes(get(buf, &mut pos)?),
    })
}

pub fn encode_value(value: &CommittedOffset) -> Vec<u8> {
    let mut out = 1i16.to_be_bytes().to_vec();
    out.extend_from_slice(&value.offset.to_be_bytes());
    out.extend_from_slice(&value.leader_epoch.to_be_bytes());
    match &value.metadata {
        Some(m) => {
            out.extend_from_slice(&(m.len() as i32).to_be_bytes());
            out.extend_from_slice(m.as_bytes());
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    out.extend_from_slice(&value.commit_timestamp_ms.to_be_bytes());
    out
}

pub fn decode_value(buf: &[u8]) -> Option<CommittedOffset> {
    let mut pos = 0;
    if i16::from_be_bytes(get(buf, &mut pos)?) != 1 {
        return None;
    }
    let offset = i64::from_be_bytes(get(buf, &mut pos)?);
    let leader_epoch = i32::from_be_bytes(get(buf, &mut pos)?);
    let len = i32::from_be_bytes(get(buf, &mut pos)?);
    let metadata = if len < 0 {
        None
    } else {
        let len = len as usize;
        let m = String::from_utf8(buf.get(pos..pos + len)?.to_vec()).ok()?;
        pos += len;
        Some(m)
    };
    let commit_timestamp_ms = i64::from_be_bytes(get(buf, &mut pos)?);
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn read_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((value >> 1) as i64) ^ -((value & 1) as i64))
}

fn read_bytes(buf: &[u8], pos: &mut usize) -> Option<Option<Bytes>> {
    let len = read_varlong(buf, pos)?;
    if len < 0 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let bytes = Bytes::copy_from_slice(buf.get(*pos..*pos + len)?);
    *pos += len;
    Some(Some(bytes))
}

/// One record of a stored batch: its offset delta (a compacted batch has gaps between its
/// records' offsets), key and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub offset_delta: u64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Every record in one uncompressed v2 batch (the header is 61 bytes), or `None` if the
/// records do not parse. Only the coordinator writes this topic, uncompressed (and the
/// cleaner keeps a batch's codec).
pub fn batch_records(batch: &[u8], count: i32) -> Option<Vec<BatchRecord>> {
    const HEADER_LEN: usize = 61;
    let mut pos = HEADER_LEN;
    let mut out = Vec::new();
    for _ in 0..count {
        let length = usize::try_from(read_varlong(batch, &mut pos)?).ok()?;
        let end = pos.checked_add(length)?;
        pos += 1; // attributes
        read_varlong(batch, &mut pos)?; // timestamp delta
        let offset_delta = u64::try_from(read_varlong(batch, &mut pos)?).ok()?;
        let key = read_bytes(batch, &mut pos)?;
        let value = read_bytes(batch, &mut pos)?;
        out.push(BatchRecord {
            offset_delta,
            key,
            value,
        });
        pos = end;
        if pos > batch.len() {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::builder::{batch, Record};

    #[test]
    fn keys_and_values_read_back_as_written_from_a_batch() {
        let key = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: 7,
            metadata: Some("meta".into()),
            commit_timestamp_ms: 99,
        };
        let bytes = batch(&[
            Record {
                key: Some(encode_key(&key)),
                value: Some(encode_value(&value)),
                timestamp_ms: 1,
            },
            Record {
                key: Some(encode_key(&key)),
                value: None,
                timestamp_ms: 1,
            },
        ]);
        let records = batch_records(&bytes, 2).unwrap();
        assert_eq!(
            decode_key(records[0].key.as_ref().unwrap()),
            Some(key.clone())
        );
        assert_eq!(
            decode_value(records[0].value.as_ref().unwrap()),
            Some(value)
        );
        assert_eq!(decode_key(records[1].key.as_ref().unwrap()), Some(key));
        assert!(records[1].value.is_none());
        assert_eq!(records[1].offset_delta, 1);
    }

    #[test]
    fn a_stored_group_reads_back_as_written() {
        let group = GroupSnapshot {
            protocol_type: Some("consumer".into()),
            generation_id: 7,
            protocol_name: Some("range".into()),
            leader: Some("m-1".into()),
            state_since_ms: 1234,
            members: vec![MemberSnapshot {
                member_id: "m-1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/10.0.0.2".into(),
                session_timeout_ms: 45_000,
                rebalance_timeout_ms: 300_000,
                protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
                assignment: Bytes::from_static(b"assigned"),
            }],
        };
        let key = encode_group_key("g");
        assert_eq!(decode_record_key(&key), Some(RecordKey::Group("g".into())));
        let pending = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 4,
        };
        assert_eq!(
            decode_record_key(&encode_txn_offset_key(77, &pending)),
            Some(RecordKey::TxnOffset {
                producer_id: 77,
                key: pending
            })
        );
        assert_eq!(decode_group_value(&encode_group_value(&group)), Some(group));
        let offset_key = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        };
        assert_eq!(
            decode_record_key(&encode_key(&offset_key)),
            Some(RecordKey::Offset(offset_key))
        );
    }
}
