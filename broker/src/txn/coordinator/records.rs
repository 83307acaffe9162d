//! The records of `__transaction_state`, in Kafka's own format (`TransactionLogKey` v0 and
//! `TransactionLogValue` v0, `TransactionLog.scala`), so Kafka's tools read them. Integers
//! big-endian, strings i16 length + UTF-8, arrays i32 count (-1 = null):
//!
//! ```text
//! key:   version i16 = 0 | transactional_id string
//! value: version i16 = 0 | producer_id i64 | producer_epoch i16 | transaction_timeout_ms i32
//!        | transaction_status i8 | transaction_partitions nullable array of
//!          (topic string | partition_ids array of i32)
//!        | transaction_last_update_timestamp_ms i64 | transaction_start_timestamp_ms i64
//! ```
//!
//! A transaction ended with transaction version 2 (KIP-890 part 2, EndTxn v5) is stored as
//! `TransactionLogValue` v1, the flexible version: the same fields with compact strings and
//! arrays, plus the tagged fields PreviousProducerId (tag 0), NextProducerId (tag 1) and
//! ClientTransactionVersion (tag 2), which a coordinator that loads the id needs to finish an
//! epoch bump that rolls the producer id and to recognise a retried EndTxn. Everything else
//! stays v0, as Kafka writes it while `transaction.version` is below 1.
//!
//! The partitions are null for an Empty transaction, as Kafka writes them. A record without a
//! value (a tombstone) removes the transactional id (Dead). When a shard loads, the last record
//! per key wins; the topic is compacted.

use std::collections::{BTreeMap, BTreeSet};

use super::machine::{TopicPartition, TxnState};

pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;
const FLEXIBLE_VALUE_VERSION: i16 = 1;

/// `ClientTransactionVersion` of a transaction ended with EndTxn v5+ (Kafka's `TV_2`).
pub const TRANSACTION_VERSION_2: i16 = 2;

/// The tagged fields of `TransactionLogValue` v1 (KIP-890 part 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnVersionFields {
    /// The producer id before the last roll to a new one (retries of the EndTxn that rolled
    /// it name the old id); -1 when none.
    pub previous_producer_id: i64,
    /// In PrepareCommit/PrepareAbort: the producer id the Complete record moves to because
    /// the epoch bump exhausted the current one; -1 when none.
    pub next_producer_id: i64,
    /// The transaction version of the client's last EndTxn (0 before v5, 2 from v5).
    pub client_txn_version: i16,
}

impl Default for TxnVersionFields {
    fn default() -> Self {
        TxnVersionFields {
            previous_producer_id: -1,
            next_producer_id: -1,
            client_txn_version: 0,
        }
    }
}

/// What one record stores of a transactional id (the metadata, without what lives only in
/// memory: the pending transition and the previous epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// Stored only in the v1 value; all defaults means a v0 value.
    pub v2: TxnVersionFields,
}

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = KEY_VERSION.to_be_bytes().to_vec();
    put_str(&mut out, transactional_id);
    out
}

/// The transactional id of a key; `None` for a key of another version or format.
pub fn decode_key(buf: &[u8]) -> Option<String> {
    let mut pos = 0;
    if i16::from_be_bytes(get(buf, &mut pos)?) != KEY_VERSION {
        return None;
    }
    let id = get_str(buf, &mut pos)?;
    (pos == buf.len()).then_some(id)
}

pub fn encode_value(record: &TxnRecord) -> Vec<u8> {
    if record.v2 != TxnVersionFields::default() {
        return encode_flexible_value(record);
    }
    let mut out = VALUE_VERSION.to_be_bytes().to_vec();
    out.extend_from_slice(&record.producer_id.to_be_bytes());
    out.extend_from_slice(&record.producer_epoch.to_be_bytes());
    out.extend_from_slice(&record.timeout_ms.to_be_bytes());
    out.push(record.state.code() as u8);
    if record.state == TxnState::Empty {
        assert!(
            record.partitions.is_empty(),
            "an Empty transaction has no partitions"
        );
        out.extend_from_slice(&(-1i32).to_be_bytes());
    } else {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in &record.partitions {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            put_str(&mut out, topic);
            out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
            for p in partitions {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&record.last_update_ms.to_be_bytes());
    out.extend_from_slice(&record.start_ms.to_be_bytes());
    out
}

/// A value this broker wrote (v0); `None` for another version or a damaged one.
pub fn decode_value(buf: &[u8]) -> Option<TxnRecord> {
    let mut pos = 0;
    match i16::from_be_bytes(get(buf, &mut pos)?) {
        VALUE_VERSION => {}
        FLEXIBLE_VALUE_VERSION => return decode_flexible_value(buf, pos),
        _ => return None,
    }
    let producer_id = i64::from_be_bytes(get(buf, &mut pos)?);
    let producer_epoch = i16::from_be_bytes(get(buf, &mut pos)?);
    let timeout_ms = i32::from_be_bytes(get(buf, &mut pos)?);
    let state = TxnState::from_code(i8::from_be_bytes(get(buf, &mut pos)?))?;
    let topics = i32::from_be_bytes(get(buf, &mut pos)?);
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = get_str(buf, &mut pos)?;
        let count = i32::from_be_bytes(get(buf, &mut pos)?);
        if count < 0 || count as usize > buf.len() {
            return None;
        }
        for _ in 0..count {
            let partition = i32::from_be_bytes(get(buf, &mut pos)?);
            partitions.insert(TopicPartition::new(&topic, partition));
        }
    }
    let last_update_ms = i64::from_be_bytes(get(buf, &mut pos)?);
    let start_ms = i64::from_be_bytes(get(buf, &mut pos)?);
    if pos != buf.len() {
        return None;
    }
    Some(TxnRecord {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        v2: TxnVersionFields::default(),
    })
}

/// Groups the partitions by topic, as Kafka's `valueToBytes` does.
fn by_topic(record: &TxnRecord) -> BTreeMap<&str, Vec<i32>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in &record.partitions {
        topics.entry(&tp.topic).or_default().push(tp.partition);
    }
    topics
}

/// The v1 (flexible) value: compact strings and arrays, an empty tag section per partition
/// entry, and the three tagged fields, each written only when it is not its default.
fn encode_flexible_value(record: &TxnRecord) -> Vec<u8> {
    let mut out = FLEXIBLE_VALUE_VERSION.to_be_bytes().to_vec();
    out.extend_from_slice(&record.producer_id.to_be_bytes());
    out.extend_from_slice(&record.producer_epoch.to_be_bytes());
    out.extend_from_slice(&record.timeout_ms.to_be_bytes());
    out.push(record.state.code() as u8);
    if record.state == TxnState::Empty {
        assert!(
            record.partitions.is_empty(),
            "an Empty transaction has no partitions"
        );
        put_uvarint(&mut out, 0); // null
    } else {
        let topics = by_topic(record);
        put_uvarint(&mut out, topics.len() as u64 + 1);
        for (topic, partitions) in topics {
            put_uvarint(&mut out, topic.len() as u64 + 1);
            out.extend_from_slice(topic.as_bytes());
            put_uvarint(&mut out, partitions.len() as u64 + 1);
            for p in partitions {
                out.extend_from_slice(&p.to_be_bytes());
            }
            put_uvarint(&mut out, 0); // no tagged fields
        }
    }
    out.extend_from_slice(&record.last_update_ms.to_be_bytes());
    out.extend_from_slice(&record.start_ms.to_be_bytes());
    let defaults = TxnVersionFields::default();
    let mut tagged: Vec<(u64, Vec<u8>)> = Vec::new();
    if record.v2.previous_producer_id != defaults.previous_producer_id {
        tagged.push((0, record.v2.previous_producer_id.to_be_bytes().to_vec()));
    }
    if record.v2.next_producer_id != defaults.next_producer_id {
        tagged.push((1, record.v2.next_producer_id.to_be_bytes().to_vec()));
    }
    if record.v2.client_txn_version != defaults.client_txn_version {
        tagged.push((2, record.v2.client_txn_version.to_be_bytes().to_vec()));
    }
    put_uvarint(&mut out, tagged.len() as u64);
    for (tag, value) in tagged {
        put_uvarint(&mut out, tag);
        put_uvarint(&mut out, value.len() as u64);
        out.extend_from_slice(&value);
    }
    out
}

fn decode_flexible_value(buf: &[u8], mut pos: usize) -> Option<TxnRecord> {
    let producer_id = i64::from_be_bytes(get(buf, &mut pos)?);
    let producer_epoch = i16::from_be_bytes(get(buf, &mut pos)?);
    let timeout_ms = i32::from_be_bytes(get(buf, &mut pos)?);
    let state = TxnState::from_code(i8::from_be_bytes(get(buf, &mut pos)?))?;
    let topics = get_uvarint(buf, &mut pos)?;
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.saturating_sub(1) {
        let len = usize::try_from(get_uvarint(buf, &mut pos)?.checked_sub(1)?).ok()?;
        let topic = std::str::from_utf8(buf.get(pos..pos.checked_add(len)?)?).ok()?;
        pos += len;
        let count = get_uvarint(buf, &mut pos)?.checked_sub(1)?;
        if count > buf.len() as u64 {
            return None;
        }
        for _ in 0..count {
            let partition = i32::from_be_bytes(get(buf, &mut pos)?);
            partitions.insert(TopicPartition::new(topic, partition));
        }
        skip_tagged(buf, &mut pos)?;
    }
    let last_update_ms = i64::from_be_bytes(get(buf, &mut pos)?);
    let start_ms = i64::from_be_bytes(get(buf, &mut pos)?);
    let mut v2 = TxnVersionFields::default();
    let fields = get_uvarint(buf, &mut pos)?;
    for _ in 0..fields {
        let tag = get_uvarint(buf, &mut pos)?;
        let size = usize::try_from(get_uvarint(buf, &mut pos)?).ok()?;
        let value = buf.get(pos..pos.checked_add(size)?)?;
        pos += size;
        match tag {
            0 => v2.previous_producer_id = i64::from_be_bytes(value.try_into().ok()?),
            1 => v2.next_producer_id = i64::from_be_bytes(value.try_into().ok()?),
            2 => v2.client_txn_version = i16::from_be_bytes(value.try_into().ok()?),
            _ => {} // a tag of a later version: skipped, as Kafka's readers do
        }
    }
    if pos != buf.len() {
        return None;
    }
    Some(TxnRecord {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        v2,
    })
}

fn skip_tagged(buf: &[u8], pos: &mut usize) -> Option<()> {
    for _ in 0..get_uvarint(buf, pos)? {
        get_uvarint(buf, pos)?;
        let size = usize::try_from(get_uvarint(buf, pos)?).ok()?;
        buf.get(*pos..pos.checked_add(size)?)?;
        *pos += size;
    }
    Some(())
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..35).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None // longer than an unsigned varint32
}

fn get<const N: usize>(buf: &[u8], pos: &mut usize) -> Option<[u8; N]> {
    let bytes: [u8; N] = buf.get(*pos..pos.checked_add(N)?)?.try_into().ok()?;
    *pos += N;
    Some(bytes)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).expect("ids and topic names fit an i16 length");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_str(buf: &[u8], pos: &mut usize) -> Option<String> {
    let len = usize::try_from(i16::from_be_bytes(get(buf, pos)?)).ok()?;
    let s = std::str::from_utf8(buf.get(*pos..pos.checked_add(len)?)?).ok()?;
    *pos += len;
    Some(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: TxnState, partitions: &[(&str, i32)]) -> TxnRecord {
        TxnRecord {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state,
            partitions: partitions
                .iter()
                .map(|&(t, p)| TopicPartition::new(t, p))
                .collect(),
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            v2: TxnVersionFields::default(),
        }
    }

    #[test]
    fn a_key_is_kafkas_version_0_key_with_the_transactional_id() {
        assert_eq!(encode_key("tx"), vec![0, 0, 0, 2, b't', b'x']);
        assert_eq!(
            decode_key(&encode_key("payments-7")).as_deref(),
            Some("payments-7")
        );
        assert_eq!(decode_key(&[0, 1, 0, 0]), None, "another key version");
        assert_eq!(decode_key(&[0, 0, 0, 5, b'a']), None, "truncated");
    }

    /// The bytes Kafka's `TransactionLog.valueToBytes` writes for an ongoing transaction over
    /// two partitions of one topic (worked out field by field from the v0 schema).
    #[test]
    fn a_value_is_laid_out_as_kafkas_version_0_value() {
        let bytes = encode_value(&record(TxnState::Ongoing, &[("t", 1), ("t", 0)]));
        let mut want = vec![0, 0];
        want.extend_from_slice(&4000i64.to_be_bytes());
        want.extend_from_slice(&3i16.to_be_bytes());
        want.extend_from_slice(&60_000i32.to_be_bytes());
        want.push(1); // Ongoing
        want.extend_from_slice(&1i32.to_be_bytes()); // one topic
        want.extend_from_slice(&[0, 1, b't']);
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(bytes, want);
    }

    #[test]
    fn every_state_round_trips_and_empty_stores_null_partitions() {
        for state in [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
            TxnState::Dead,
            TxnState::PrepareEpochFence,
        ] {
            let parts: &[(&str, i32)] = if state == TxnState::Empty {
                &[]
            } else {
                &[("a", 0), ("b", 2), ("a", 5)]
            };
            let r = record(state, parts);
            let bytes = encode_value(&r);
            assert_eq!(decode_value(&bytes), Some(r), "{state:?}");
            if state == TxnState::Empty {
                assert_eq!(&bytes[17..21], &(-1i32).to_be_bytes(), "null partitions");
            }
        }
    }

    #[test]
    fn a_damaged_or_foreign_value_is_not_read() {
        let bytes = encode_value(&record(TxnState::Ongoing, &[("t", 0)]));
        for cut in 0..bytes.len() {
            assert_eq!(decode_value(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut other_version = bytes.clone();
        other_version[1] = 2;
        assert_eq!(decode_value(&other_version), None);
        let mut bad_state = bytes;
        bad_state[16] = 42;
        assert_eq!(decode_value(&bad_state), None);
    }

    /// A transaction version 2 value: Kafka's v1 layout, worked out field by field from
    /// `TransactionLogValue.json` (flexible from v1; tags 0, 1, 2).
    #[test]
    fn a_transaction_version_2_value_is_laid_out_as_kafkas_version_1_value() {
        let mut r = record(TxnState::PrepareCommit, &[("t", 1), ("t", 0)]);
        r.v2 = TxnVersionFields {
            previous_producer_id: -1,
            next_producer_id: 4001,
            client_txn_version: TRANSACTION_VERSION_2,
        };
        let bytes = encode_value(&r);
        let mut want = vec![0, 1];
        want.extend_from_slice(&4000i64.to_be_bytes());
        want.extend_from_slice(&3i16.to_be_bytes());
        want.extend_from_slice(&60_000i32.to_be_bytes());
        want.push(2); // PrepareCommit
        want.push(2); // one topic (n + 1)
        want.extend_from_slice(&[2, b't']); // compact string
        want.push(3); // two partitions
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&1i32.to_be_bytes());
        want.push(0); // the entry's tagged fields
        want.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        want.push(2); // two tagged fields: NextProducerId, ClientTransactionVersion
        want.extend_from_slice(&[1, 8]);
        want.extend_from_slice(&4001i64.to_be_bytes());
        want.extend_from_slice(&[2, 2, 0, 2]);
        assert_eq!(bytes, want);
        assert_eq!(decode_value(&bytes), Some(r.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(decode_value(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut empty = record(TxnState::Empty, &[]);
        empty.v2 = TxnVersionFields {
            previous_producer_id: 3999,
            next_producer_id: -1,
            client_txn_version: TRANSACTION_VERSION_2,
        };
        assert_eq!(decode_value(&encode_value(&empty)), Some(empty));
    }
}
