//! Record batches (magic v2) as the client writes and reads them: keys, values, headers (a
//! header key may repeat, and every occurrence is kept in order), timestamps, and the
//! idempotent producer's id, epoch and base sequence.
//!
//! Only uncompressed batches are decoded; a compressed batch is reported as
//! [`DecodeError::Compressed`] rather than misread. The batch header layout and CRC check are
//! shared with the broker (`log::batch`).

use bytes::Bytes;

use broker::log::batch::{
    self, BatchHeader, Compression, TimestampType, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
};

/// One record header. Kafka allows the same key more than once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

impl Header {
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Header {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record to encode.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp_ms: i64,
}

/// Who wrote a batch: the idempotent producer's identity, or none (-1, -1, -1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// The batch belongs to a transaction (attributes bit 4): the partition's LSO stays at
    /// it until its marker, and read_committed consumers skip it if the transaction aborts.
    pub transactional: bool,
}

impl ProducerIdentity {
    pub const NONE: ProducerIdentity = ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// The transactional bit of a batch's attributes.
const TRANSACTIONAL_ATTRIBUTE: i16 = 0x10;

/// A record read back from a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// One decoded batch.
#[derive(Clone, Debug)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<DecodedRecord>,
}

impl DecodedBatch {
    /// Control batches (transaction markers) carry no user records.
    pub fn is_control(&self) -> bool {
        self.header.is_control()
    }
}

/// Why fetched bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("batch at offset {base_offset} is compressed with {compression:?}; this client decodes only uncompressed batches")]
    Compressed {
        base_offset: i64,
        compression: Compression,
    },
    #[error("corrupt batch at byte {position}: {reason}")]
    Corrupt { position: usize, reason: String },
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// The bytes [`put_varint`] writes for `value`.
fn varint_len(value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while v >= 0x80 {
        len += 1;
        v >>= 7;
    }
    len
}

/// The bytes [`put_bytes`] writes for `bytes`.
fn bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => varint_len(-1),
    }
}

/// The encoded size of `record` inside a batch, roughly (for batch size accounting).
pub fn estimated_size(record: &Record) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 10)
        .sum();
    record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + headers
        + 21
}

/// Encodes `records` (at least one) as one uncompressed v2 batch with base offset 0.
pub fn encode_batch(records: &[Record], producer: ProducerIdentity) -> Vec<u8> {
    encode_records(records.iter(), producer)
}

/// [`encode_batch`] from borrowed records (the producer's queued ones, which it need not copy
/// per batch), straight into the batch's buffer, sized once.
pub fn encode_records<'a, I>(records: I, producer: ProducerIdentity) -> Vec<u8>
where
    I: ExactSizeIterator<Item = &'a Record> + Clone,
{
    let count = records.len();
    let mut timestamps = records.clone().map(|r| r.timestamp_ms);
    let base_timestamp = timestamps
        .next()
        .expect("a batch holds at least one record");
    let max_timestamp = timestamps.fold(base_timestamp, i64::max);
    let capacity = HEADER_LEN + records.clone().map(estimated_size).sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
    out.extend_from_slice(&[0; 4]); // batch length, below
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&[0; 4]); // crc, below
                                    // Attributes: uncompressed, create time, transactional or not.
    let attributes = if producer.transactional {
        TRANSACTIONAL_ATTRIBUTE
    } else {
        0
    };
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&((count - 1) as i32).to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&producer.producer_id.to_be_bytes());
    out.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    out.extend_from_slice(&producer.base_sequence.to_be_bytes());
    out.extend_from_slice(&(count as i32).to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    for (delta, record) in records.enumerate() {
        // Each record straight into the batch, its length computed first rather than
        // encoding it into a buffer of its own to measure it.
        let timestamp_delta = record.timestamp_ms.wrapping_sub(base_timestamp);
        let length = 1 // attributes
            + varint_len(timestamp_delta)
            + varint_len(delta as i64)
            + bytes_len(record.key.as_deref())
            + bytes_len(record.value.as_deref())
            + varint_len(record.headers.len() as i64)
            + record
                .headers
                .iter()
                .map(|h| bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value.as_deref()))
                .sum::<usize>();
        put_varint(&mut out, length as i64);
        let start = out.len();
        out.push(0); // attributes
        put_varint(&mut out, timestamp_delta);
        put_varint(&mut out, delta as i64);
        put_bytes(&mut out, record.key.as_deref());
        put_bytes(&mut out, record.value.as_deref());
        put_varint(&mut out, record.headers.len() as i64);
        for header in &record.headers {
            put_bytes(&mut out, Some(header.key.as_bytes()));
            put_bytes(&mut out, header.value.as_deref());
        }
        debug_assert_eq!(out.len() - start, length, "a record's length as computed");
    }
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(batch::validate(&out).is_ok(), "an encoded batch validates");
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The buffer `buf` lies in and where it starts there, when keys and values may be
    /// slices of it (no copy per record) rather than copies.
    shared: Option<(&'a Bytes, usize)>,
}

impl Reader<'_> {
    fn varint(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
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

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn bytes(&mut self) -> Option<Option<Bytes>> {
        let len = self.varint()?;
        if len < 0 {
            return if len == -1 { Some(None) } else { None };
        }
        let len = usize::try_from(len).ok()?;
        let start = self.pos;
        let shared = self.shared;
        let taken = self.take(len)?;
        Some(Some(match shared {
            Some((whole, at)) => whole.slice(at + start..at + start + len),
            None => Bytes::copy_from_slice(taken),
        }))
    }
}

/// Decodes the records section `bytes` of the batch with `header`, handing each record to
/// `each` in order; `None` if it is malformed (the records before the damage were handed on).
fn decode_records_with(
    bytes: &[u8],
    header: &BatchHeader,
    shared: Option<(&Bytes, usize)>,
    mut each: impl FnMut(DecodedRecord),
) -> Option<()> {
    let mut reader = Reader {
        buf: bytes,
        pos: 0,
        shared,
    };
    let count = usize::try_from(header.records_count).ok()?;
    for _ in 0..count {
        let length = usize::try_from(reader.varint()?).ok()?;
        let end = reader.pos.checked_add(length)?;
        if end > bytes.len() {
            return None;
        }
        reader.take(1)?; // attributes
        let timestamp_delta = reader.varint()?;
        let offset_delta = reader.varint()?;
        let key = reader.bytes()?;
        let value = reader.bytes()?;
        let header_count = usize::try_from(reader.varint()?).ok()?;
        let mut headers = Vec::with_capacity(header_count.min(length));
        for _ in 0..header_count {
            let key = reader.bytes()??;
            let key = String::from_utf8(key.to_vec()).ok()?;
            let value = reader.bytes()?;
            headers.push(Header { key, value });
        }
        if reader.pos != end {
            return None;
        }
        let (timestamp_ms, timestamp_type) = match header.timestamp_type() {
            TimestampType::LogAppendTime => (header.max_timestamp, TimestampType::LogAppendTime),
            TimestampType::CreateTime => (
                header.base_timestamp.wrapping_add(timestamp_delta),
                TimestampType::CreateTime,
            ),
        };
        each(DecodedRecord {
            offset: header.base_offset.wrapping_add(offset_delta),
            timestamp_ms,
            timestamp_type,
            key,
            value,
            headers,
        });
    }
    if reader.pos != bytes.len() {
        return None;
    }
    Some(())
}

/// Decodes a fetched record set: whole batches, in order. A partial batch at the end (the
/// broker cut the response at a size limit) is dropped, as Kafka clients do.
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<DecodedBatch>, DecodeError> {
    RawBatches {
        bytes,
        shared: None,
        pos: 0,
    }
    .map(|batch| batch?.decode())
    .collect()
}

/// [`decode_batches`] whose keys and values are slices of `bytes` (a fetch response's record
/// set), not copies: what a consumer holds keeps the response's buffer alive instead.
pub fn decode_shared_batches(bytes: &Bytes) -> Result<Vec<DecodedBatch>, DecodeError> {
    shared_batches(bytes).map(|batch| batch?.decode()).collect()
}

/// The batches of the record set `bytes`, one at a time and checked (CRC, codec) but with
/// their records not yet decoded: for a reader that takes each batch's records where they go
/// (a consumer, into the records it returns) instead of into a vector per batch first. The
/// records' keys and values are slices of `bytes`, as [`decode_shared_batches`] makes them.
/// It ends after the first error, and at a partial batch.
pub fn shared_batches(bytes: &Bytes) -> RawBatches<'_> {
    RawBatches {
        bytes,
        shared: Some(bytes),
        pos: 0,
    }
}

/// How many records the whole batches of the record set `bytes` say they hold, read from
/// their headers without checking them: for sizing a buffer once. Never more than `bytes`
/// could hold (a record takes at least 7 bytes), whatever the headers claim.
pub fn records_in(bytes: &[u8]) -> usize {
    let mut count = 0usize;
    let mut pos = 0;
    while let Ok(header) = BatchHeader::parse(&bytes[pos..]) {
        if bytes.len() - pos < header.size() {
            break;
        }
        count = count.saturating_add(usize::try_from(header.records_count).unwrap_or(0));
        pos += header.size();
    }
    count.min(bytes.len() / 7)
}

/// The batches of a record set (see [`shared_batches`]).
pub struct RawBatches<'a> {
    bytes: &'a [u8],
    shared: Option<&'a Bytes>,
    /// Where the next batch starts; past the end once done.
    pos: usize,
}

/// One checked batch of a record set, its records not yet decoded.
pub struct RawBatch<'a> {
    pub header: BatchHeader,
    /// Its records section.
    records: &'a [u8],
    /// The record set's buffer and where the records section starts in it, when keys and
    /// values are to be slices of it.
    shared: Option<(&'a Bytes, usize)>,
    /// Where the batch starts in the record set, for errors.
    position: usize,
}

impl RawBatch<'_> {
    /// Control batches (transaction markers) carry no user records.
    pub fn is_control(&self) -> bool {
        self.header.is_control()
    }

    /// Decodes the records, handing each to `each` in order. On a malformed records section
    /// the records before the damage have been handed on.
    pub fn for_each_record(&self, each: impl FnMut(DecodedRecord)) -> Result<(), DecodeError> {
        decode_records_with(self.records, &self.header, self.shared, each).ok_or_else(|| {
            DecodeError::Corrupt {
                position: self.position,
                reason: format!(
                    "malformed records in batch at offset {}",
                    self.header.base_offset
                ),
            }
        })
    }

    /// The batch with its records decoded.
    pub fn decode(&self) -> Result<DecodedBatch, DecodeError> {
        let count = usize::try_from(self.header.records_count).unwrap_or(0);
        // Never trust the count for an allocation: each record takes at least 7 bytes.
        let mut records = Vec::with_capacity(count.min(self.records.len() / 7 + 1));
        self.for_each_record(|record| records.push(record))?;
        Ok(DecodedBatch {
            header: self.header,
            records,
        })
    }
}

impl<'a> Iterator for RawBatches<'a> {
    type Item = Result<RawBatch<'a>, DecodeError>;

    fn next(&mut self) -> Option<Result<RawBatch<'a>, DecodeError>> {
        let (bytes, pos) = (self.bytes, self.pos);
        if pos >= bytes.len() {
            return None;
        }
        let item = raw_batch(bytes, pos, self.shared);
        self.pos = match &item {
            Some(Ok(batch)) => pos + batch.header.size(),
            _ => usize::MAX,
        };
        item
    }
}

/// The batch at `pos` of `bytes`, checked; `None` for a partial batch (the end of the set).
fn raw_batch<'a>(
    bytes: &'a [u8],
    pos: usize,
    shared: Option<&'a Bytes>,
) -> Option<Result<RawBatch<'a>, DecodeError>> {
    let rest = &bytes[pos..];
    let corrupt = |e: batch::BatchError| DecodeError::Corrupt {
        position: pos,
        reason: e.to_string(),
    };
    let header = match BatchHeader::parse(rest) {
        Ok(header) => header,
        Err(batch::BatchError::Truncated { .. }) => return None,
        Err(e) => return Some(Err(corrupt(e))),
    };
    if rest.len() < header.size() {
        return None;
    }
    // Parsed once: the check takes the header parsed above.
    let header = match batch::validate_parsed(rest, header) {
        Ok(header) => header,
        Err(e) => return Some(Err(corrupt(e))),
    };
    if header.compression() != Compression::None {
        return Some(Err(DecodeError::Compressed {
            base_offset: header.base_offset,
            compression: header.compression(),
        }));
    }
    Some(Ok(RawBatch {
        header,
        records: &rest[HEADER_LEN..header.size()],
        shared: shared.map(|whole| (whole, pos + HEADER_LEN)),
        position: pos,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from_static(b"v1")),
                headers: vec![
                    Header::new("h", "a"),
                    Header::new("h", "b"),
                    Header {
                        key: "n".into(),
                        value: None,
                    },
                ],
                timestamp_ms: 1_700_000_000_000,
            },
            Record {
                key: None,
                value: None,
                headers: vec![],
                timestamp_ms: 1_699_999_999_990,
            },
            Record {
                key: Some(Bytes::new()),
                value: Some(Bytes::from(vec![7u8; 300])),
                headers: vec![Header::new("", "")],
                timestamp_ms: 1_700_000_000_500,
            },
        ]
    }

    #[test]
    fn records_round_trip_with_duplicate_header_keys_null_fields_and_earlier_timestamps() {
        let records = sample();
        let producer = ProducerIdentity {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 17,
            transactional: true,
        };
        let mut bytes = encode_batch(&records, producer);
        batch::set_base_offset(&mut bytes, 100);
        let batches = decode_batches(&bytes).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(
            (
                b.header.producer_id,
                b.header.producer_epoch,
                b.header.base_sequence
            ),
            (42, 3, 17)
        );
        assert!(b.header.is_transactional());
        assert_eq!(b.header.max_timestamp, 1_700_000_000_500);
        assert_eq!(b.records.len(), 3);
        for (i, (decoded, original)) in b.records.iter().zip(&records).enumerate() {
            assert_eq!(decoded.offset, 100 + i as i64);
            assert_eq!(decoded.key, original.key);
            assert_eq!(decoded.value, original.value);
            assert_eq!(decoded.headers, original.headers);
            assert_eq!(decoded.timestamp_ms, original.timestamp_ms);
            assert_eq!(decoded.timestamp_type, TimestampType::CreateTime);
        }
        assert_eq!(
            b.records[0].headers.iter().filter(|h| h.key == "h").count(),
            2
        );
    }

    #[test]
    fn an_encoded_batch_is_byte_for_byte_the_brokers_own_encoding_of_the_same_records() {
        use broker::log::batch::builder;
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                key: (i % 2 == 0).then(|| Bytes::from(vec![b'k'; i])),
                value: (i != 3).then(|| Bytes::from(vec![i as u8; 40 * i])),
                headers: vec![],
                timestamp_ms: 1_700_000_000_000 + [5, 0, 9, 2, 7][i],
            })
            .collect();
        let theirs: Vec<builder::Record> = records
            .iter()
            .map(|r| builder::Record {
                key: r.key.as_ref().map(|k| k.to_vec()),
                value: r.value.as_ref().map(|v| v.to_vec()),
                timestamp_ms: r.timestamp_ms,
            })
            .collect();
        assert_eq!(
            encode_batch(&records, ProducerIdentity::NONE),
            builder::batch(&theirs)
        );
    }

    #[test]
    fn records_sliced_from_a_fetched_buffer_equal_the_copied_ones_in_every_batch() {
        let producer = ProducerIdentity {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        };
        // Two batches: the second's keys and values lie past the first's bytes, so a slice
        // taken at the wrong place would show.
        let mut first = encode_batch(&sample(), producer);
        batch::set_base_offset(&mut first, 0);
        let mut second = encode_batch(&sample()[..1], producer);
        batch::set_base_offset(&mut second, 3);
        let fetched = Bytes::from([first, second].concat());
        let copied = decode_batches(&fetched).unwrap();
        let sliced = decode_shared_batches(&fetched).unwrap();
        assert_eq!(copied.len(), 2);
        assert_eq!(sliced.len(), 2);
        for (s, c) in sliced.iter().zip(&copied) {
            assert_eq!(s.records, c.records);
        }
        assert_eq!(sliced[1].records[0].value.as_deref(), Some(&b"v1"[..]));
    }

    #[test]
    fn the_broker_accepts_what_the_client_encodes() {
        let bytes = encode_batch(&sample(), ProducerIdentity::NONE);
        let header = batch::validate(&bytes).unwrap();
        assert_eq!(header.records_count, 3);
        assert_eq!(batch::record_timestamps(&bytes).unwrap().len(), 3);
    }

    #[test]
    fn several_batches_decode_in_order_and_a_cut_off_tail_is_dropped() {
        let mut first = encode_batch(&sample()[..1], ProducerIdentity::NONE);
        let mut second = encode_batch(&sample()[1..], ProducerIdentity::NONE);
        batch::set_base_offset(&mut first, 0);
        batch::set_base_offset(&mut second, 1);
        let mut all = first.clone();
        all.extend_from_slice(&second);
        let offsets: Vec<i64> = decode_batches(&all)
            .unwrap()
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.offset))
            .collect();
        assert_eq!(offsets, vec![0, 1, 2]);
        let cut = &all[..all.len() - 5];
        assert_eq!(decode_batches(cut).unwrap().len(), 1);
        assert_eq!(decode_batches(&all[..first.len() + 10]).unwrap().len(), 1);
    }

    #[test]
    fn a_compressed_batch_is_an_error_not_garbage() {
        let mut bytes = encode_batch(&sample(), ProducerIdentity::NONE);
        bytes[22] |= 4; // zstd
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_batches(&bytes),
            Err(DecodeError::Compressed {
                compression: Compression::Zstd,
                ..
            })
        ));
    }

    #[test]
    fn records_in_counts_the_whole_batches_only_and_never_more_than_the_bytes_could_hold() {
        let mut first = encode_batch(&sample(), ProducerIdentity::NONE);
        let mut second = encode_batch(&sample()[..1], ProducerIdentity::NONE);
        batch::set_base_offset(&mut first, 0);
        batch::set_base_offset(&mut second, 3);
        let mut all = first.clone();
        all.extend_from_slice(&second);
        assert_eq!(records_in(&all), 4);
        // A cut-off last batch does not count.
        assert_eq!(records_in(&all[..all.len() - 1]), 3);
        assert_eq!(records_in(&[]), 0);
        // A header claiming a million records sizes nothing by its word (no CRC is checked
        // here, so a damaged count must not reserve a million records).
        let mut lying = second.clone();
        lying[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
        assert_eq!(records_in(&lying), lying.len() / 7);
    }

    #[test]
    fn malformed_records_under_a_valid_crc_fail_the_batch_whether_decoded_whole_or_one_by_one() {
        // One record more than the records section holds, the CRC made to match.
        let mut bytes = encode_batch(&sample(), ProducerIdentity::NONE);
        bytes[57..61].copy_from_slice(&4i32.to_be_bytes());
        bytes[23..27].copy_from_slice(&3i32.to_be_bytes()); // last offset delta, to match
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let shared = Bytes::from(bytes);
        assert!(matches!(
            decode_shared_batches(&shared),
            Err(DecodeError::Corrupt { position: 0, .. })
        ));
        let raw: Vec<_> = shared_batches(&shared).collect();
        assert_eq!(raw.len(), 1);
        let batch = raw[0].as_ref().expect("the batch itself checks out");
        let mut handed = 0;
        assert!(matches!(
            batch.for_each_record(|_| handed += 1),
            Err(DecodeError::Corrupt { position: 0, .. })
        ));
        assert_eq!(handed, 3, "the records before the damage were handed on");
    }

    #[test]
    fn corrupt_bytes_are_an_error_without_panicking() {
        let mut bytes = encode_batch(&sample(), ProducerIdentity::NONE);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            decode_batches(&bytes),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(decode_batches(&[0xff; 80]).is_err());
    }
}
