//! Recompression into a topic's `compression.type`, as Kafka's `LogValidator` does.
//!
//! Faultline stores batches as the producer sent them (see [`crate::log::batch`]), except where
//! a topic names a codec: `compression.type=producer` (the default) keeps the producer's codec;
//! `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd` make the broker re-encode every batch whose
//! codec differs before it is appended. Only the records section changes: the records inside
//! are kept byte for byte (offset deltas, timestamp deltas, keys, values, headers, duplicate
//! header keys included), and so is every header field but the codec bits of the attributes,
//! the batch length and the CRC, which is computed anew. The base and max timestamps, producer
//! id, epoch and base sequence stay, so idempotent producers' retries are recognised as before.
//!
//! A batch is validated (CRC32C) before it is decoded, so damage is refused, never laundered
//! into a fresh CRC; its records must decode to exactly `records_count` records. Decompressed
//! sizes are bounded by the caller, so a small compressed batch cannot make the broker allocate
//! without limit.
//!
//! Wire formats, as Kafka's own encoders write them: gzip members (RFC 1952); snappy in
//! xerial's framing (`\x82SNAPPY\0`, 32 KiB blocks; unframed raw snappy is read too, as
//! librdkafka and Kafka accept it); lz4 frames with independent 64 KiB blocks (Kafka's
//! `KafkaLZ4BlockOutputStream`); zstd frames at Kafka's default level 3.

use std::io::{Read, Write};

use crate::log::batch::{self, BatchError, BatchHeader, Compression};

/// Kafka's default `compression.zstd.level`.
const ZSTD_LEVEL: i32 = 3;
/// xerial snappy framing: magic, then version and minimum compatible version (both 1).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// xerial's default block size (uncompressed bytes per block).
const XERIAL_BLOCK: usize = 32 * 1024;

/// Why a produced record set could not be recompressed; nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum RecompressError {
    /// The batch itself is invalid (CRC, length, counts): Kafka's CORRUPT_MESSAGE.
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    /// The attributes name no known codec: CORRUPT_MESSAGE.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// The records section does not decompress: CORRUPT_MESSAGE.
    #[error("cannot decompress {codec:?} records: {reason}")]
    Decompress { codec: Compression, reason: String },
    /// The records decompress to more than the bound: MESSAGE_TOO_LARGE.
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The decompressed records do not match the header: INVALID_RECORD.
    #[error("records do not match the batch header: {0}")]
    MalformedRecords(String),
}

/// A `compression.type` value Kafka does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown compression.type {0:?}: expected uncompressed, zstd, lz4, snappy, gzip or producer"
)]
pub struct UnknownCompressionType(pub String);

/// The codec a `compression.type` value names: `None` for `producer` (keep the producer's).
pub fn parse_compression_type(value: &str) -> Result<Option<Compression>, UnknownCompressionType> {
    match value {
        "producer" => Ok(None),
        "uncompressed" => Ok(Some(Compression::None)),
        "gzip" => Ok(Some(Compression::Gzip)),
        "snappy" => Ok(Some(Compression::Snappy)),
        "lz4" => Ok(Some(Compression::Lz4)),
        "zstd" => Ok(Some(Compression::Zstd)),
        other => Err(UnknownCompressionType(other.to_string())),
    }
}

/// The attribute bits of a codec (the low three bits of a batch's attributes).
pub(crate) fn codec_bits(codec: Compression) -> u8 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        Compression::Unknown(bits) => panic!("no codec has bits {bits}"),
    }
}

/// Compresses `data` with `codec` in Kafka's wire format for it.
pub fn compress(codec: Compression, data: &[u8]) -> Vec<u8> {
    // Writers into a Vec fail only on allocation failure, which aborts anyway.
    const INFALLIBLE: &str = "compressing into memory";
    match codec {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).expect(INFALLIBLE);
            encoder.finish().expect(INFALLIBLE)
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK) {
                let compressed = encoder.compress_vec(block).expect(INFALLIBLE);
                out.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(data).expect(INFALLIBLE);
            encoder.finish().expect(INFALLIBLE)
        }
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).expect(INFALLIBLE),
        Compression::Unknown(bits) => panic!("no codec has bits {bits}"),
    }
}

/// Reads all of `reader`, failing past `limit` bytes.
fn read_bounded(
    codec: Compression,
    reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, RecompressError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RecompressError::Decompress {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(RecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Decompresses `data` written by any Kafka client's `codec`, up to `limit` bytes.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, RecompressError> {
    let failed = |reason: String| RecompressError::Decompress { codec, reason };
    match codec {
        Compression::None => read_bounded(codec, data, limit),
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), limit),
        Compression::Snappy if data.starts_with(XERIAL_MAGIC) => {
            if data.len() < XERIAL_HEADER_LEN {
                return Err(failed("truncated xerial header".into()));
            }
            let mut out = Vec::new();
            let mut decoder = snap::raw::Decoder::new();
            let mut pos = XERIAL_HEADER_LEN;
            while pos < data.len() {
                let length = data
                    .get(pos..pos + 4)
                    .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
                    .ok_or_else(|| failed("truncated block length".into()))?;
                let block = usize::try_from(length)
                    .ok()
                    .and_then(|n| data.get(pos + 4..pos + 4 + n))
                    .ok_or_else(|| failed(format!("block of {length} bytes past the end")))?;
                let size = snap::raw::decompress_len(block).map_err(|e| failed(e.to_string()))?;
                if out.len() + size > limit {
                    return Err(RecompressError::TooLarge { limit });
                }
                let start = out.len();
                out.resize(start + size, 0);
                decoder
                    .decompress(block, &mut out[start..])
                    .map_err(|e| failed(e.to_string()))?;
                pos += 4 + block.len();
            }
            Ok(out)
        }
        Compression::Snappy => {
            let size = snap::raw::decompress_len(data).map_err(|e| failed(e.to_string()))?;
            if size > limit {
                return Err(RecompressError::TooLarge { limit });
            }
            snap::raw::Decoder::new()
                .decompress_vec(data)
                .map_err(|e| failed(e.to_string()))
        }
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(data), limit),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(data).map_err(|e| failed(e.to_string()))?;
            read_bounded(codec, decoder, limit)
        }
        Compression::Unknown(bits) => Err(RecompressError::UnknownCodec(bits)),
    }
}

/// Reads a zigzag varint (Kafka's `varint` in records).
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// Checks that `records` holds exactly `count` length-prefixed records and nothing after them.
fn check_records(records: &[u8], count: i32) -> Result<(), RecompressError> {
    let mut pos = 0;
    for index in 0..count {
        let length = read_varint(records, &mut pos)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| {
                RecompressError::MalformedRecords(format!("record {index}: bad length"))
            })?;
        pos = pos
            .checked_add(length)
            .filter(|&end| end <= records.len())
            .ok_or_else(|| {
                RecompressError::MalformedRecords(format!("record {index} runs past the batch"))
            })?;
    }
    if pos != records.len() {
        return Err(RecompressError::MalformedRecords(format!(
            "{} bytes after the last of {count} records",
            records.len() - pos
        )));
    }
    Ok(())
}

/// Re-encodes one validated batch with `target`, or returns it as it is when its codec already
/// is `target`.
fn recompress_batch(
    bytes: &[u8],
    header: &BatchHeader,
    target: Compression,
    limit: usize,
) -> Result<Vec<u8>, RecompressError> {
    let source = header.compression();
    if source == target {
        return Ok(bytes.to_vec());
    }
    let records = decompress(source, &bytes[batch::HEADER_LEN..header.size()], limit)?;
    check_records(&records, header.records_count)?;
    let rebuilt = batch::with_records(bytes, codec_bits(target), &compress(target, &records));
    // The pair of the check above: what is stored decodes to the same records, under a CRC
    // that holds.
    let stored = batch::validate(&rebuilt).expect("a rebuilt batch validates");
    assert_eq!(stored.compression(), target);
    assert_eq!(stored.records_count, header.records_count);
    Ok(rebuilt)
}

/// A produced record set with every batch in `target`'s codec (batches already in it are
/// copied as they are). `limit` bounds each batch's decompressed records.
pub fn recompress_record_set(
    records: &[u8],
    target: Compression,
    limit: usize,
) -> Result<Vec<u8>, RecompressError> {
    let headers = batch::validate_all(records)?;
    let mut out = Vec::with_capacity(records.len());
    let mut pos = 0;
    for header in &headers {
        let bytes = &records[pos..pos + header.size()];
        out.extend_from_slice(&recompress_batch(bytes, header, target, limit)?);
        pos += header.size();
    }
    assert_eq!(pos, records.len(), "validate_all covers the whole set");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::builder;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    const LIMIT: usize = 1 << 20;

    /// Records with every field set: keys, null and empty values, timestamp and offset deltas
    /// that are not 0, 1, 2, and headers with a duplicate key. Encoded by hand, because the
    /// builder writes no headers.
    fn records() -> (Vec<u8>, i32) {
        fn varint(out: &mut Vec<u8>, v: i64) {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                out.push(z as u8 | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
        }
        fn bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
            match b {
                Some(b) => {
                    varint(out, b.len() as i64);
                    out.extend_from_slice(b);
                }
                None => varint(out, -1),
            }
        }
        /// A record's timestamp delta, key and value.
        type Fields<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);
        let mut body = Vec::new();
        let fields: [Fields; 3] = [
            (
                0,
                Some(b"k0"),
                Some(b"first value, a little longer to compress"),
            ),
            (7, None, Some(b"")),
            (-3, Some(b"k2"), None),
        ];
        for (delta, (ts, key, value)) in fields.into_iter().enumerate() {
            let mut rec = vec![0u8];
            varint(&mut rec, ts);
            varint(&mut rec, delta as i64);
            bytes(&mut rec, key);
            bytes(&mut rec, value);
            varint(&mut rec, 2);
            bytes(&mut rec, Some(b"h"));
            bytes(&mut rec, Some(b"one"));
            bytes(&mut rec, Some(b"h"));
            bytes(&mut rec, None);
            varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        (body, 3)
    }

    /// A batch of [`records`] compressed with `codec`, from an idempotent producer.
    fn produced(codec: Compression) -> Vec<u8> {
        let template =
            builder::with_producer(builder::simple(3, 1, b'x', 1_700_000_000_000), 77, 4, 12);
        let (body, count) = records();
        assert_eq!(BatchHeader::parse(&template).unwrap().records_count, count);
        batch::with_records(&template, codec_bits(codec), &compress(codec, &body))
    }

    #[test]
    fn every_codec_round_trips_in_kafkas_wire_format() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in CODECS {
            let compressed = compress(codec, &data);
            assert_eq!(
                decompress(codec, &compressed, LIMIT).unwrap(),
                data,
                "{codec:?}"
            );
        }
        assert!(compress(Compression::Snappy, b"x").starts_with(XERIAL_MAGIC));
        // Raw (unframed) snappy, as some clients send it, is read too.
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw, LIMIT).unwrap(), data);
    }

    #[test]
    fn recompression_keeps_every_field_but_the_codec_length_and_crc() {
        let (body, _) = records();
        for source in CODECS {
            for target in CODECS {
                let original = produced(source);
                let before = batch::validate(&original).unwrap();
                let out = recompress_record_set(&original, target, LIMIT).unwrap();
                let after = batch::validate(&out).unwrap();
                let pair = format!("{source:?} -> {target:?}");
                assert_eq!(after.compression(), target, "{pair}");
                assert_eq!(after.size(), out.len(), "{pair}");
                // Every other attribute bit, every other header field: unchanged.
                assert_eq!(
                    after.attributes & !0x07,
                    before.attributes & !0x07,
                    "{pair}"
                );
                let unchanged = |h: &BatchHeader| {
                    (
                        h.base_offset,
                        h.partition_leader_epoch,
                        h.last_offset_delta,
                        h.base_timestamp,
                        h.max_timestamp,
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        h.records_count,
                    )
                };
                assert_eq!(unchanged(&after), unchanged(&before), "{pair}");
                assert_eq!(
                    (after.producer_id, after.producer_epoch, after.base_sequence),
                    (77, 4, 12)
                );
                // The records inside, byte for byte: deltas, keys, values, duplicate headers.
                let inside = decompress(target, &out[batch::HEADER_LEN..], LIMIT).unwrap();
                assert_eq!(inside, body, "{pair}");
                if source == target {
                    assert_eq!(
                        out, original,
                        "{pair}: a batch already in the codec is kept"
                    );
                }
            }
        }
    }

    #[test]
    fn every_batch_of_a_record_set_is_recompressed_in_order() {
        let mut set = produced(Compression::Gzip);
        set.extend_from_slice(&produced(Compression::Lz4));
        set.extend_from_slice(&builder::simple(2, 10, b'y', 5));
        let out = recompress_record_set(&set, Compression::Zstd, LIMIT).unwrap();
        let headers = batch::validate_all(&out).unwrap();
        assert_eq!(headers.len(), 3);
        assert!(headers.iter().all(|h| h.compression() == Compression::Zstd));
        assert_eq!(headers[2].records_count, 2);
    }

    #[test]
    fn damaged_or_oversized_input_is_refused_not_recompressed() {
        // A flipped bit: refused on its CRC, never given a fresh one.
        let mut damaged = produced(Compression::Gzip);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            recompress_record_set(&damaged, Compression::Lz4, LIMIT),
            Err(RecompressError::InvalidBatch(
                BatchError::CrcMismatch { .. }
            ))
        ));
        // A valid CRC over bytes that are not gzip.
        let template = builder::simple(3, 1, b'x', 0);
        let garbage = batch::with_records(&template, 1, b"not gzip at all");
        assert!(matches!(
            recompress_record_set(&garbage, Compression::Lz4, LIMIT),
            Err(RecompressError::Decompress { .. })
        ));
        // Records that do not add up to the header's count.
        let (body, _) = records();
        let short = batch::with_records(
            &template,
            1,
            &compress(Compression::Gzip, &body[..body.len() - 1]),
        );
        assert!(matches!(
            recompress_record_set(&short, Compression::Lz4, LIMIT),
            Err(RecompressError::MalformedRecords(_))
        ));
        // A small batch that inflates past the bound.
        let zeros = vec![0u8; 64 * 1024];
        let bomb = batch::with_records(&template, 4, &compress(Compression::Zstd, &zeros));
        assert!(matches!(
            recompress_record_set(&bomb, Compression::None, 1024),
            Err(RecompressError::TooLarge { limit: 1024 })
        ));
    }

    #[test]
    fn compression_type_names_are_kafkas() {
        assert_eq!(parse_compression_type("producer"), Ok(None));
        assert_eq!(
            parse_compression_type("uncompressed"),
            Ok(Some(Compression::None))
        );
        assert_eq!(parse_compression_type("lz4"), Ok(Some(Compression::Lz4)));
        assert!(parse_compression_type("none").is_err());
        assert!(parse_compression_type("LZ4").is_err());
    }
}
