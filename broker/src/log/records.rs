//! The records inside a v2 batch, for the two places the broker must look inside one: the log
//! cleaner (which keeps some records of a batch and drops others) and the refusal of keyless
//! records on a compacted topic (KIP-467). Everywhere else batches stay opaque bytes.
//!
//! A record (after the batch's records section is decompressed), all integers zigzag varints:
//!
//! ```text
//! length | attributes i8 | timestamp_delta varlong | offset_delta | key_length | key
//!        | value_length | value | header_count | headers...
//! ```
//!
//! A record is re-encoded from its parts; its headers are kept as the raw bytes they were.

use super::batch::{self, BatchHeader, Compression, TimestampType, HEADER_LEN};
use crate::compression::{self, read_varint, RecompressError};

/// Kafka's `DELETE_HORIZON_FLAG` (KIP-534): the batch's base timestamp is the time after which
/// the cleaner may drop its tombstones, and its records' timestamp deltas are relative to it.
pub const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// One record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub attributes: i8,
    pub timestamp_ms: i64,
    pub offset_delta: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The header count and headers, as stored.
    pub headers: Vec<u8>,
}

/// A batch's records section could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error(transparent)]
    Decompress(#[from] RecompressError),
    #[error("malformed record {index}: {reason}")]
    Malformed { index: i32, reason: &'static str },
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_bytes(buf: &[u8], pos: &mut usize) -> Option<Option<Vec<u8>>> {
    let len = read_varint(buf, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    let bytes = buf.get(*pos..end)?.to_vec();
    *pos = end;
    Some(Some(bytes))
}

/// The base timestamp the batch's record timestamps are relative to, and whether it is a
/// delete horizon (KIP-534).
pub fn delete_horizon_ms(header: &BatchHeader) -> Option<i64> {
    (header.attributes & DELETE_HORIZON_BIT != 0).then_some(header.base_timestamp)
}

/// Decodes every record of a validated batch (`bytes` is the whole batch), decompressing up to
/// `limit` bytes. Record timestamps are absolute (a LogAppendTime batch gives every record its
/// max timestamp, as consumers see it).
pub fn decode(bytes: &[u8], limit: usize) -> Result<Vec<Record>, RecordsError> {
    let header = BatchHeader::parse(bytes).expect("a validated batch");
    let section = &bytes[HEADER_LEN..header.size()];
    let plain;
    let data = match header.compression() {
        Compression::None => section,
        codec => {
            plain = compression::decompress(codec, section, limit)?;
            &plain[..]
        }
    };
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let mut out = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut pos = 0;
    for index in 0..header.records_count {
        let bad = |reason| RecordsError::Malformed { index, reason };
        let length = read_varint(data, &mut pos)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(bad("length"))?;
        let end = pos
            .checked_add(length)
            .filter(|&e| e <= data.len())
            .ok_or(bad("runs past the batch"))?;
        let record = &data[..end];
        let attributes = *record.get(pos).ok_or(bad("attributes"))? as i8;
        pos += 1;
        let timestamp_delta = read_varint(record, &mut pos).ok_or(bad("timestamp"))?;
        let offset_delta = read_varint(record, &mut pos)
            .and_then(|d| i32::try_from(d).ok())
            .ok_or(bad("offset delta"))?;
        let key = read_bytes(record, &mut pos).ok_or(bad("key"))?;
        let value = read_bytes(record, &mut pos).ok_or(bad("value"))?;
        let headers = record[pos..end].to_vec();
        pos = end;
        out.push(Record {
            attributes,
            timestamp_ms: if log_append_time {
                header.max_timestamp
            } else {
                header.base_timestamp.saturating_add(timestamp_delta)
            },
            offset_delta,
            key,
            value,
            headers,
        });
    }
    if pos != data.len() {
        return Err(RecordsError::Malformed {
            index: header.records_count,
            reason: "bytes after the last record",
        });
    }
    Ok(out)
}

/// The index (within the batch) of every record without a key: what a compacted topic refuses
/// (KIP-467 answers each with a record error).
pub fn keyless_records(bytes: &[u8], limit: usize) -> Result<Vec<i32>, RecordsError> {
    Ok(decode(bytes, limit)?
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i as i32)
        .collect())
}

/// A copy of `original` (a whole validated batch) holding only `records` (a non-empty subset
/// of its records, in order), with everything else kept: base offset, last offset delta (so
/// the batch covers the same offsets), partition leader epoch, producer id, epoch and base
/// sequence, codec, timestamp type. `delete_horizon_ms` marks the batch as KIP-534 does (its
/// base timestamp becomes the horizon and record timestamps are re-based on it, so they read
/// back unchanged); a batch that has a horizon keeps it.
pub fn rebuild(original: &[u8], records: &[Record], delete_horizon_ms: Option<i64>) -> Vec<u8> {
    let header = BatchHeader::parse(original).expect("a validated batch");
    assert!(!records.is_empty(), "a rebuilt batch keeps a record");
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let horizon = delete_horizon_ms.or_else(|| self::delete_horizon_ms(&header));
    let base_timestamp = horizon.unwrap_or(header.base_timestamp);
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for r in records {
        assert!(
            r.offset_delta >= 0 && r.offset_delta <= header.last_offset_delta,
            "a kept record stays inside its batch's offsets"
        );
        rec.clear();
        rec.push(r.attributes as u8);
        // A LogAppendTime batch's record deltas are not used by readers: keep them as 0.
        let delta = if log_append_time {
            0
        } else {
            r.timestamp_ms.wrapping_sub(base_timestamp)
        };
        put_varint(&mut rec, delta);
        put_varint(&mut rec, i64::from(r.offset_delta));
        for field in [&r.key, &r.value] {
            match field {
                Some(bytes) => {
                    put_varint(&mut rec, bytes.len() as i64);
                    rec.extend_from_slice(bytes);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        rec.extend_from_slice(&r.headers);
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let codec = header.compression();
    let section = match codec {
        Compression::None => body,
        codec => compression::compress(codec, &body),
    };
    let max_timestamp = if log_append_time {
        header.max_timestamp
    } else {
        records
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .expect("non-empty")
    };
    let mut attributes = header.attributes;
    if horizon.is_some() {
        attributes |= DELETE_HORIZON_BIT;
    }
    batch::rebuilt(
        original,
        attributes,
        base_timestamp,
        max_timestamp,
        records.len() as i32,
        &section,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::builder::{batch, Record as Built};

    fn three() -> Vec<u8> {
        batch(&[
            Built {
                key: Some(b"a".to_vec()),
                value: Some(b"1".to_vec()),
                timestamp_ms: 1_000,
            },
            Built {
                key: None,
                value: Some(b"2".to_vec()),
                timestamp_ms: 1_005,
            },
            Built {
                key: Some(b"c".to_vec()),
                value: None,
                timestamp_ms: 1_002,
            },
        ])
    }

    #[test]
    fn a_batch_rebuilt_with_some_of_its_records_keeps_their_offsets_and_timestamps() {
        let original = three();
        let records = decode(&original, 1 << 20).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(keyless_records(&original, 1 << 20).unwrap(), vec![1]);
        let kept = vec![records[2].clone()];
        let rebuilt = rebuild(&original, &kept, None);
        let header = batch::validate(&rebuilt).unwrap();
        assert_eq!(header.records_count, 1);
        assert_eq!(
            header.last_offset_delta, 2,
            "the batch covers the same offsets"
        );
        assert_eq!(header.max_timestamp, 1_002);
        assert_eq!(decode(&rebuilt, 1 << 20).unwrap(), kept);
    }

    #[test]
    fn a_delete_horizon_rebases_timestamps_so_they_read_back_unchanged() {
        let original = three();
        let records = decode(&original, 1 << 20).unwrap();
        let rebuilt = rebuild(&original, &records, Some(90_000));
        let header = batch::validate(&rebuilt).unwrap();
        assert_eq!(delete_horizon_ms(&header), Some(90_000));
        assert_eq!(decode(&rebuilt, 1 << 20).unwrap(), records);
        // Rebuilt again (a later cleaning), the horizon stays.
        let again = rebuild(&rebuilt, &records[..1], None);
        assert_eq!(
            delete_horizon_ms(&batch::validate(&again).unwrap()),
            Some(90_000)
        );
    }

    #[test]
    fn compressed_batches_are_rebuilt_in_their_own_codec() {
        let original =
            crate::compression::recompress_record_set(&three(), Compression::Zstd, 1 << 20)
                .unwrap();
        let records = decode(&original, 1 << 20).unwrap();
        let rebuilt = rebuild(&original, &records[..1], None);
        let header = batch::validate(&rebuilt).unwrap();
        assert_eq!(header.compression(), Compression::Zstd);
        assert_eq!(decode(&rebuilt, 1 << 20).unwrap(), records[..1].to_vec());
    }
}
