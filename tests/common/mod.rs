//! Helpers shared by the log tests: batches that carry an id, and logs on the faulty disk.
#![allow(dead_code)]

pub mod gated_disk;

use std::path::PathBuf;
use std::sync::Arc;

use broker::clock::ManualClock;
use broker::log::batch::{self, builder, BatchHeader};
use broker::log::{Log, LogConfig};
use chaos::{FaultyDisk, FaultyDiskConfig};

pub const T0: i64 = 1_700_000_000_000;

/// A batch of `records` records whose values start with `id`, padded to `value_len` bytes, all
/// stamped `timestamp_ms`. The id lets a test recognise the batch when it is read back.
pub fn batch_with_id(id: u64, records: usize, value_len: usize, timestamp_ms: i64) -> Vec<u8> {
    let recs: Vec<builder::Record> = (0..records)
        .map(|i| {
            let mut value = id.to_be_bytes().to_vec();
            value.extend_from_slice(&(i as u32).to_be_bytes());
            value.resize(value_len.max(12), (id % 251) as u8);
            builder::Record {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(value),
                timestamp_ms,
            }
        })
        .collect();
    builder::batch(&recs)
}

/// The id of a batch built by [`batch_with_id`] (uncompressed, first record's value).
pub fn id_of(batch_bytes: &[u8]) -> u64 {
    // Header (61), then record: length varint, attributes, ts delta, offset delta, key len + key,
    // value len, value. Parse with the batch module's record walk instead of by hand.
    let header = BatchHeader::parse(batch_bytes).expect("batch header");
    let records = &batch_bytes[batch::HEADER_LEN..header.size()];
    let mut pos = 0;
    let _len = varint(records, &mut pos);
    pos += 1; // attributes
    let _ts = varint(records, &mut pos);
    let _off = varint(records, &mut pos);
    let key_len = varint(records, &mut pos);
    if key_len > 0 {
        pos += key_len as usize;
    }
    let _value_len = varint(records, &mut pos);
    u64::from_be_bytes(records[pos..pos + 8].try_into().expect("id bytes"))
}

fn varint(buf: &[u8], pos: &mut usize) -> i64 {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = buf[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Splits a read result into its batches' (header, bytes).
pub fn batches(records: &[u8]) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = batch::validate(&records[pos..]).expect("every served batch passes its CRC");
        // Batches without records only cover offsets skipped after a crash.
        if header.records_count > 0 {
            out.push((header, records[pos..pos + header.size()].to_vec()));
        }
        pos += header.size();
    }
    out
}

/// The header of the last batch in a read, records or not.
pub fn last_batch(records: &[u8]) -> Option<BatchHeader> {
    let mut pos = 0;
    let mut last = None;
    while pos < records.len() {
        let header = batch::validate(&records[pos..]).expect("CRC");
        pos += header.size();
        last = Some(header);
    }
    last
}

/// A log directory on a faulty disk with a hand-moved clock.
pub struct Fixture {
    pub disk: FaultyDisk,
    pub clock: Arc<ManualClock>,
    pub dir: PathBuf,
    pub config: LogConfig,
}

impl Fixture {
    pub fn new(seed: u64, disk_config: FaultyDiskConfig, config: LogConfig) -> Fixture {
        Fixture {
            disk: FaultyDisk::new(seed, disk_config),
            clock: Arc::new(ManualClock::new(T0)),
            dir: PathBuf::from("/data/topic-0"),
            config,
        }
    }

    pub async fn open(&self) -> Log {
        Log::open(
            Arc::new(self.disk.clone()),
            self.clock.clone(),
            self.dir.clone(),
            self.config.clone(),
        )
        .await
        .expect("log opens")
    }

    /// The log opened as a replica's (`Log::open_replicated`: a cut tail skips no offsets).
    pub async fn open_replicated(&self) -> Log {
        Log::open_replicated(
            Arc::new(self.disk.clone()),
            self.clock.clone(),
            self.dir.clone(),
            self.config.clone(),
        )
        .await
        .expect("log opens")
    }

    pub fn segment_path(&self, base_offset: u64) -> PathBuf {
        self.dir.join(format!("{base_offset:020}.log"))
    }

    /// Every batch from the log start to the end, following reads as a consumer would.
    pub async fn read_all(log: &Log) -> Vec<(BatchHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        loop {
            let read = log.read(offset, 64 * 1024, None).await.expect("read");
            let Some(last) = last_batch(&read.records) else {
                break;
            };
            offset = last.last_offset() as u64 + 1;
            out.extend(batches(&read.records));
        }
        out
    }
}

pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        offset_reservation: 1000,
        ..LogConfig::default()
    }
}
