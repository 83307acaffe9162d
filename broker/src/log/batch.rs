//! Record batches (magic v2), handled as raw bytes.
//!
//! The broker does not re-encode records: it validates the 61-byte header and the CRC32C, writes
//! the base offset and the partition leader epoch (both outside the CRC's range) in place, and
//! stores the bytes as they came. The one exception is a topic whose `compression.type` names a
//! codec: `crate::compression` re-encodes the records section of a batch in another codec
//! ([`with_records`]) before the append. Layout (big-endian):
//!
//! ```text
//!  0 base_offset i64          27 base_timestamp i64      53 base_sequence i32
//!  8 batch_length i32         35 max_timestamp i64       57 records_count i32
//! 12 partition_leader_epoch   43 producer_id i64         61 records...
//! 16 magic i8                 51 producer_epoch i16
//! 17 crc u32 (CRC32C of bytes 21..end)
//! 21 attributes i16
//! 23 last_offset_delta i32
//! ```

use std::fmt;

use crate::planted::{self, Bug};

/// Bytes before `batch_length` counts: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// The fixed header of a v2 batch.
pub const HEADER_LEN: usize = 61;
/// The only message format Faultline stores.
pub const MAGIC_V2: i8 = 2;

const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const RECORDS_COUNT_OFFSET: usize = 57;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
/// Kafka's `isTransactional` attribute: the batch belongs to a transaction.
pub const TRANSACTIONAL_BIT: i16 = 1 << 4;
/// Kafka's `isControlBatch` attribute: the batch holds one control record (a marker).
pub const CONTROL_BIT: i16 = 1 << 5;
const COMPRESSION_MASK: i16 = 0x07;

/// Why bytes are not a valid batch. Mapped to CORRUPT_MESSAGE / INVALID_RECORD at the protocol
/// boundary; during recovery, to "torn tail" or "corrupt segment".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is out of range")]
    BadLength(i64),
    #[error("unsupported magic {0} (only v2 batches are stored)")]
    BadMagic(i8),
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("records count {records_count} does not match last offset delta {last_offset_delta}")]
    InconsistentCount {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("empty record set")]
    Empty,
    #[error("batch base offset {0} does not follow the batch before it")]
    OffsetOutOfOrder(i64),
}

/// The parsed fixed header of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf` without checking the CRC. Checks only what is
    /// needed to walk a sequence of batches safely: the length is sane and the magic is v2.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let batch_length = be_i32(buf, 8);
        if (batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::BadLength(batch_length as i64));
        }
        let magic = buf[16] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic,
            crc: be_u32(buf, CRC_OFFSET),
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(buf, PRODUCER_ID_OFFSET),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_OFFSET),
            base_sequence: be_i32(buf, BASE_SEQUENCE_OFFSET),
            records_count: be_i32(buf, 57),
        })
    }

    /// Total bytes of the batch, header included.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn compression(&self) -> Compression {
        match (self.attributes & COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// [`validate`] for the broker's reads of its own log (recovery and fetch), where the
/// catalogue's [`Bug::SkipCrcCheck`] is planted: the clients share [`validate`], and their
/// check must stay to see what the broker served.
pub fn validate_stored(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    match validate(buf) {
        Err(BatchError::CrcMismatch { .. }) if planted::is(Bug::SkipCrcCheck) => {
            BatchHeader::parse(buf)
        }
        other => other,
    }
}

/// Parses and validates a stored batch at the start of `buf`: header, length within `buf`,
/// CRC32C, and offsets that cover its records (`last_offset_delta >= records_count - 1`). A
/// stored batch may hold no records at all: the log writes such a batch to cover offsets it
/// skipped after a crash, and consumers step over it as they do over batches emptied by Kafka's
/// compaction.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_parsed(buf, BatchHeader::parse(buf)?)
}

/// [`validate`] of the batch at the start of `buf` whose header the caller has already parsed
/// from it with [`BatchHeader::parse`] (a reader that looks at the header first, to stop at a
/// partial batch, need not parse it twice).
#[inline]
pub fn validate_parsed(buf: &[u8], header: BatchHeader) -> Result<BatchHeader, BatchError> {
    let size = header.size();
    if buf.len() < size {
        return Err(BatchError::Truncated {
            needed: size,
            available: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..size]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 0
        || header.last_offset_delta < 0
        || (header.last_offset_delta as i64) < header.records_count as i64 - 1
    {
        return Err(BatchError::InconsistentCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// [`validate`], plus what Kafka requires of a batch from a producer: at least one record, and
/// exactly one offset per record.
pub fn validate_produced(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate(buf)?;
    if header.records_count <= 0 || header.records_count - 1 != header.last_offset_delta {
        return Err(BatchError::InconsistentCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// A batch with no records covering `count` offsets from `base_offset`: how the log marks
/// offsets it skipped after an unclean restart, so consumers move past them (see
/// `log::checkpoint`, offset reservation).
pub fn offset_gap(base_offset: u64, count: u64) -> Vec<u8> {
    assert!(
        count >= 1 && count <= i32::MAX as u64,
        "gap of {count} offsets"
    );
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&(base_offset as i64).to_be_bytes());
    out.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&[0; 4]); // crc, below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes
    out.extend_from_slice(&((count - 1) as i32).to_be_bytes()); // last offset delta
    out.extend_from_slice(&(-1i64).to_be_bytes()); // base timestamp: none
    out.extend_from_slice(&(-1i64).to_be_bytes()); // max timestamp: none
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&0i32.to_be_bytes()); // records count
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// [`offset_gap`] stamped with `partition_leader_epoch`: how the cleaner covers the offsets of
/// batches it emptied, so the log stays dense and each gap stays in the leader epoch of the
/// batches it replaces.
pub fn offset_gap_in_epoch(base_offset: u64, count: u64, partition_leader_epoch: i32) -> Vec<u8> {
    let mut out = offset_gap(base_offset, count);
    set_partition_leader_epoch(&mut out, partition_leader_epoch);
    out
}

/// A copy of `original`'s header over a new records section of `records_count` records, with
/// the given attributes and timestamps and a new length and CRC (the cleaner, `super::records`).
pub fn rebuilt(
    original: &[u8],
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    records_count: i32,
    section: &[u8],
) -> Vec<u8> {
    let length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + section.len()).expect("batch length");
    let mut out = Vec::with_capacity(HEADER_LEN + section.len());
    out.extend_from_slice(&original[..HEADER_LEN]);
    out.extend_from_slice(section);
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    out[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&base_timestamp.to_be_bytes());
    out[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    out[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
        .copy_from_slice(&records_count.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// `original` (a whole batch) with no records left, every other header field kept: the
/// cleaner keeps such a batch for an idempotent producer's last batch, so its sequence and
/// epoch survive the records (as Kafka does).
pub fn emptied(original: &[u8]) -> Vec<u8> {
    let header = BatchHeader::parse(original).expect("a validated batch");
    rebuilt(
        original,
        header.attributes & !COMPRESSION_MASK,
        header.base_timestamp,
        header.max_timestamp,
        0,
        &[],
    )
}

/// Validates every batch of a produced record set (the concatenated batches of one produce
/// partition) with [`validate_produced`].
/// The set must consist of whole batches only.
pub fn validate_all(buf: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let header = validate_produced(&buf[pos..])?;
        pos += header.size();
        headers.push(header);
    }
    Ok(headers)
}

/// Writes the base offset in place (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch in place (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps the batch with LogAppendTime `now_ms`, as Kafka does for topics with
/// `message.timestamp.type=LogAppendTime`: the timestamp-type attribute and max timestamp change,
/// so the CRC is recomputed.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let header = BatchHeader::parse(batch).expect("validated batch");
    let attributes = header.attributes | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..header.size()]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A copy of `batch`'s header over a new records section: the codec bits of the attributes
/// become `codec_bits`, the length fits `records`, and the CRC is computed anew. Every other
/// header field is kept (recompression, `crate::compression`).
pub fn with_records(batch: &[u8], codec_bits: u8, records: &[u8]) -> Vec<u8> {
    assert!(
        i16::from(codec_bits) <= COMPRESSION_MASK,
        "codec bits {codec_bits}"
    );
    let header = BatchHeader::parse(batch).expect("a parsed batch");
    let attributes = (header.attributes & !COMPRESSION_MASK) | i16::from(codec_bits);
    let length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + records.len()).expect("batch length");
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(records);
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Reads a zigzag varint (Kafka's `varint`/`varlong` in records).
fn read_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
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

/// The (offset, timestamp) of every record in an uncompressed batch, or `None` when the
/// records are compressed (the broker does not decompress) or malformed.
pub fn record_timestamps(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let header = BatchHeader::parse(batch).ok()?;
    if header.compression() != Compression::None || batch.len() < header.size() {
        return None;
    }
    if header.timestamp_type() == TimestampType::LogAppendTime {
        let count = header.records_count.max(0) as i64;
        return Some(
            (0..count)
                .map(|d| (header.base_offset + d, header.max_timestamp))
                .collect(),
        );
    }
    let records = &batch[HEADER_LEN..header.size()];
    let mut out = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut pos = 0;
    for _ in 0..header.records_count {
        let length = read_varlong(records, &mut pos)?;
        let start = pos;
        pos += 1; // attributes
        let timestamp_delta = read_varlong(records, &mut pos)?;
        let offset_delta = read_varlong(records, &mut pos)?;
        out.push((
            header.base_offset + offset_delta,
            header.base_timestamp + timestamp_delta,
        ));
        pos = start.checked_add(usize::try_from(length).ok()?)?;
        if pos > records.len() {
            return None;
        }
    }
    Some(out)
}

impl fmt::Display for BatchHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch offsets {}..={} ({} bytes, epoch {})",
            self.base_offset,
            self.last_offset(),
            self.size(),
            self.partition_leader_epoch
        )
    }
}

/// Builds v2 batches for tests and benchmarks: uncompressed records with keys and values.
/// Production clients build their own; this is the smallest correct encoder.
pub mod builder {
    use super::*;

    fn put_varlong(out: &mut Vec<u8>, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// One record: key, value, and its timestamp.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Record {
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        pub timestamp_ms: i64,
    }

    /// Encodes `records` as one uncompressed v2 batch with base offset 0, producer id -1.
    pub fn batch(records: &[Record]) -> Vec<u8> {
        assert!(!records.is_empty(), "a batch holds at least one record");
        let base_timestamp = records[0].timestamp_ms;
        let max_timestamp = records
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .expect("non-empty");
        let mut body = Vec::new();
        for (delta, record) in records.iter().enumerate() {
            let mut rec = vec![0u8]; // attributes
            put_varlong(&mut rec, record.timestamp_ms - base_timestamp);
            put_varlong(&mut rec, delta as i64);
            for field in [&record.key, &record.value] {
                match field {
                    Some(bytes) => {
                        put_varlong(&mut rec, bytes.len() as i64);
                        rec.extend_from_slice(bytes);
                    }
                    None => put_varlong(&mut rec, -1),
                }
            }
            put_varlong(&mut rec, 0); // headers
            put_varlong(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]); // crc, filled below
        out.extend_from_slice(&0i16.to_be_bytes()); // attributes
        out.extend_from_slice(&((records.len() - 1) as i32).to_be_bytes());
        out.extend_from_slice(&base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        out.extend_from_slice(&(records.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Makes a built batch an idempotent producer's: stamps its producer id, epoch and first
    /// sequence (all inside the CRC's range) and recomputes the CRC.
    pub fn with_producer(
        mut batch: Vec<u8>,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        let size = BatchHeader::parse(&batch).expect("a built batch").size();
        batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8]
            .copy_from_slice(&producer_id.to_be_bytes());
        batch[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2]
            .copy_from_slice(&producer_epoch.to_be_bytes());
        batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
            .copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..size]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// A built batch with `attributes` (the codec bits must stay 0: the records are
    /// uncompressed), its CRC recomputed.
    pub fn with_attributes(mut batch: Vec<u8>, attributes: i16) -> Vec<u8> {
        assert_eq!(
            attributes & COMPRESSION_MASK,
            0,
            "built batches are uncompressed"
        );
        let size = BatchHeader::parse(&batch).expect("a built batch").size();
        batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..size]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// A batch of `count` records of `value_len` bytes each, values filled with `fill`.
    pub fn simple(count: usize, value_len: usize, fill: u8, timestamp_ms: i64) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|_| Record {
                key: None,
                value: Some(vec![fill; value_len]),
                timestamp_ms,
            })
            .collect();
        batch(&records)
    }
}

#[cfg(test)]
mod tests {
    use super::builder::{batch, Record};
    use super::*;

    fn two_records() -> Vec<u8> {
        batch(&[
            Record {
                key: Some(b"k".to_vec()),
                value: Some(b"v1".to_vec()),
                timestamp_ms: 1000,
            },
            Record {
                key: None,
                value: Some(b"v2".to_vec()),
                timestamp_ms: 1005,
            },
        ])
    }

    #[test]
    fn a_built_batch_validates_and_reports_its_header() {
        let bytes = two_records();
        let header = validate(&bytes).unwrap();
        assert_eq!(header.records_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.max_timestamp, 1005);
        assert_eq!(header.size(), bytes.len());
        assert_eq!(header.compression(), Compression::None);
    }

    #[test]
    fn a_flipped_bit_in_the_records_fails_the_crc() {
        let mut bytes = two_records();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn base_offset_and_leader_epoch_are_outside_the_crc() {
        let mut bytes = two_records();
        set_base_offset(&mut bytes, 42);
        set_partition_leader_epoch(&mut bytes, 7);
        let header = validate(&bytes).unwrap();
        assert_eq!((header.base_offset, header.partition_leader_epoch), (42, 7));
        assert_eq!(header.last_offset(), 43);
    }

    #[test]
    fn log_append_time_rewrites_the_crc_and_every_record_timestamp() {
        let mut bytes = two_records();
        set_log_append_time(&mut bytes, 9_999);
        let header = validate(&bytes).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(
            record_timestamps(&bytes).unwrap(),
            vec![(0, 9_999), (1, 9_999)]
        );
    }

    #[test]
    fn a_batch_stamped_with_a_producer_still_passes_its_crc() {
        let bytes = builder::with_producer(two_records(), 77, 3, 41);
        let header = validate(&bytes).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (77, 3, 41)
        );
    }

    #[test]
    fn record_timestamps_are_read_from_uncompressed_records() {
        assert_eq!(
            record_timestamps(&two_records()).unwrap(),
            vec![(0, 1000), (1, 1005)]
        );
    }

    #[test]
    fn a_truncated_batch_and_garbage_are_refused_without_panicking() {
        let bytes = two_records();
        assert!(matches!(
            validate(&bytes[..bytes.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&bytes[..10]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(validate(&[0u8; 100]).is_err());
        assert!(validate(&[0xffu8; 100]).is_err());
        assert_eq!(validate_all(&[]), Err(BatchError::Empty));
    }
}
