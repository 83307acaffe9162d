//! The log cleaner (compacted topics), each test telling the bug it guards against. All run on
//! `chaos::FaultyDisk`, whose power-loss model is what makes a crash mid-clean real.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use broker::log::batch::{self, builder, BatchHeader};
use broker::log::cleaner::{OffsetMap, Throttler};
use broker::log::records;
use broker::log::{Log, LogConfig};
use chaos::FaultyDiskConfig;
use common::*;

fn compacted() -> LogConfig {
    LogConfig {
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        ..small_segments()
    }
}

/// One keyed record per batch: `value` `None` is a tombstone.
fn keyed(key: &str, value: Option<&str>, timestamp_ms: i64) -> Vec<u8> {
    builder::batch(&[builder::Record {
        key: Some(key.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        timestamp_ms,
    }])
}

/// Every record a reader from the log start sees: offset → (key, value, timestamp).
type Seen = BTreeMap<u64, (String, Option<String>, i64)>;

/// Every batch from the log start, those without records too.
async fn read_batches(log: &Log) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let read = log.read(offset, 64 * 1024, None).await.expect("read");
        let mut pos = 0;
        while pos < read.records.len() {
            let header = batch::validate(&read.records[pos..]).expect("served batches pass");
            out.push((header, read.records[pos..pos + header.size()].to_vec()));
            pos += header.size();
            offset = header.last_offset() as u64 + 1;
        }
        if read.records.is_empty() {
            return out;
        }
    }
}

async fn read_records(log: &Log) -> Seen {
    let mut out = Seen::new();
    let mut expected_next = log.log_start_offset();
    for (header, bytes) in read_batches(log).await {
        assert_eq!(
            header.base_offset as u64, expected_next,
            "the log stays dense: each batch starts where the one before ended"
        );
        expected_next = header.last_offset() as u64 + 1;
        for r in records::decode(&bytes, 1 << 20).unwrap() {
            let offset = header.base_offset as u64 + r.offset_delta as u64;
            assert!(offset <= header.last_offset() as u64);
            out.insert(
                offset,
                (
                    String::from_utf8(r.key.unwrap()).unwrap(),
                    r.value.map(|v| String::from_utf8(v).unwrap()),
                    r.timestamp_ms,
                ),
            );
        }
    }
    assert_eq!(expected_next, log.log_end_offset());
    out
}

/// The latest record of each key in `seen`.
fn latest(seen: &Seen) -> BTreeMap<String, (u64, Option<String>)> {
    let mut out = BTreeMap::new();
    for (offset, (key, value, _)) in seen {
        out.insert(key.clone(), (*offset, value.clone()));
    }
    out
}

async fn clean(log: &Log, map_bytes: usize) -> Option<broker::log::cleaner::CleanStats> {
    let mut map = OffsetMap::new(map_bytes);
    log.clean(log.log_end_offset(), &mut map, &mut Throttler::new(None))
        .await
        .expect("cleaned")
}

/// 40 keys written 10 times each over many small segments, then one more record so the last
/// of them is sealed.
async fn overwritten(log: &Log) {
    for round in 0..10 {
        for k in 0..40 {
            let value = format!("v{round}-{k}-{}", "x".repeat(40));
            log.append(&mut keyed(&format!("key{k}"), Some(&value), T0 + round), 0)
                .await
                .unwrap();
        }
    }
    log.roll().await.unwrap();
    log.append(&mut keyed("key0", Some("last"), T0 + 100), 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn cleaning_keeps_each_keys_latest_record_at_its_offset_and_drops_the_older_ones() {
    // The bug: a cleaner that renumbers offsets, loses a key's latest value, keeps stale
    // values, or leaves a hole that readers and recovery take for damage.
    let f = Fixture::new(1, FaultyDiskConfig::default(), compacted());
    let log = f.open().await;
    overwritten(&log).await;
    let before = read_records(&log).await;
    let bytes_before = log.size_bytes().await;
    let stats = clean(&log, 1 << 20)
        .await
        .expect("there was something to clean");
    assert!(stats.records_kept < stats.records_read);
    let after = read_records(&log).await;
    assert!(log.size_bytes().await < bytes_before / 4);
    // Every record kept is the record that was at that offset.
    for (offset, record) in &after {
        assert_eq!(before.get(offset), Some(record), "offset {offset} changed");
    }
    // The sealed part holds exactly the latest record of each key.
    let active_base = log.active_segment_base();
    let sealed_latest: BTreeMap<_, _> = latest(
        &before
            .iter()
            .filter(|(o, _)| **o < active_base)
            .map(|(o, r)| (*o, r.clone()))
            .collect(),
    );
    let sealed_after: Vec<u64> = after.keys().copied().filter(|o| *o < active_base).collect();
    let expected: Vec<u64> = {
        let mut v: Vec<u64> = sealed_latest.values().map(|(o, _)| *o).collect();
        v.sort();
        v
    };
    assert_eq!(sealed_after, expected);
    assert_eq!(
        latest(&after),
        latest(&before),
        "no key lost its latest value"
    );
    // A fetch from a cleaned-away offset returns the batch that covers it or the next one.
    let read = log.read(0, 1 << 16, None).await.unwrap();
    let first = BatchHeader::parse(&read.records).unwrap();
    assert_eq!(first.base_offset, 0);
    // Recovery after a crash sees the same log.
    drop(log);
    f.disk.crash();
    let log = f.open().await;
    assert_eq!(read_records(&log).await, after);
    // A clean restart (trusted indexes) too, and a second cleaning changes nothing.
    log.close().await.unwrap();
    let log = f.open().await;
    assert_eq!(read_records(&log).await, after);
    assert_eq!(clean(&log, 1 << 20).await, None, "nothing is dirty");
}

#[tokio::test]
async fn the_active_segment_and_offsets_past_the_high_watermark_are_never_cleaned() {
    // The bug: compacting records a follower or consumer has not yet been allowed to see, or
    // the segment appends still go to.
    let f = Fixture::new(2, FaultyDiskConfig::default(), compacted());
    let log = f.open().await;
    overwritten(&log).await;
    let before = read_records(&log).await;
    let mut map = OffsetMap::new(1 << 20);
    // A high watermark inside the first segment: nothing is cleanable.
    assert_eq!(
        log.clean(5, &mut map, &mut Throttler::new(None))
            .await
            .unwrap(),
        None
    );
    assert_eq!(read_records(&log).await, before);
    let hw = log.segment_bases().await[3];
    log.clean(hw, &mut map, &mut Throttler::new(None))
        .await
        .unwrap()
        .unwrap();
    let after = read_records(&log).await;
    for (offset, record) in before.range(hw..) {
        assert_eq!(
            after.get(offset),
            Some(record),
            "offset {offset} past the high watermark"
        );
    }
    assert!(after.range(..hw).count() < before.range(..hw).count());
}

#[tokio::test]
async fn a_tombstone_stays_for_delete_retention_ms_after_the_cleaning_that_first_meets_it() {
    // The bug: a tombstone dropped at once, so a consumer that was behind never learns the key
    // was deleted; or kept forever, so the log never shrinks.
    let config = LogConfig {
        delete_retention_ms: 60_000,
        ..compacted()
    };
    let f = Fixture::new(3, FaultyDiskConfig::default(), config);
    let log = f.open().await;
    for i in 0..30 {
        log.append(
            &mut keyed(&format!("k{}", i % 3), Some(&"v".repeat(200)), T0),
            0,
        )
        .await
        .unwrap();
    }
    log.append(&mut keyed("k1", None, T0), 0).await.unwrap();
    let tombstone_offset = log.log_end_offset() - 1;
    log.roll().await.unwrap();
    log.append(&mut keyed("k2", Some("active"), T0), 0)
        .await
        .unwrap();
    clean(&log, 1 << 20).await.unwrap();
    let seen = read_records(&log).await;
    assert_eq!(
        seen.get(&tombstone_offset).map(|r| r.1.clone()),
        Some(None),
        "the tombstone is kept by its first cleaning"
    );
    assert!(
        seen.values().filter(|r| r.0 == "k1").count() == 1,
        "the tombstone's key has no older value left"
    );
    // Dirty again, not yet past the horizon: the tombstone stays.
    f.clock.advance_ms(59_000);
    log.roll().await.unwrap();
    log.append(&mut keyed("k0", Some("again"), T0), 0)
        .await
        .unwrap();
    clean(&log, 1 << 20).await.unwrap();
    assert!(read_records(&log).await.contains_key(&tombstone_offset));
    // Past the horizon: it goes, and its offset with it.
    f.clock.advance_ms(2_000);
    log.roll().await.unwrap();
    log.append(&mut keyed("k0", Some("and again"), T0), 0)
        .await
        .unwrap();
    clean(&log, 1 << 20).await.unwrap();
    let seen = read_records(&log).await;
    assert!(!seen.contains_key(&tombstone_offset));
    assert!(seen.values().all(|r| r.0 != "k1"));
}

#[tokio::test]
async fn a_small_offset_map_cleans_in_several_passes_and_reaches_the_same_log() {
    // The bug: a map that grows without bound (the dedupe buffer is the cleaner's memory
    // budget), or one that, when full, drops records whose newer value it never saw.
    let f = Fixture::new(4, FaultyDiskConfig::default(), compacted());
    let log = f.open().await;
    overwritten(&log).await;
    let before = read_records(&log).await;
    // Room for about 10 keys: each pass maps part of the dirty log.
    let mut passes = 0;
    while let Some(stats) = clean(&log, 10 * (40 + 8)).await {
        assert!(stats.keys_mapped <= 10);
        passes += 1;
        assert!(passes < 100);
        let now = read_records(&log).await;
        assert_eq!(latest(&now), latest(&before));
        for (offset, record) in &now {
            assert_eq!(before.get(offset), Some(record));
        }
    }
    assert!(passes > 1, "{passes} passes");
}

#[tokio::test]
async fn an_idempotent_producers_last_batch_survives_cleaning_without_its_records() {
    // The bug: cleaning away a producer's last batch, so a rebuild of the producer state from
    // the log forgets its sequence and a retry would be appended twice.
    let f = Fixture::new(5, FaultyDiskConfig::default(), compacted());
    let log = f.open().await;
    let produced = builder::with_producer(keyed("k", Some(&"p".repeat(300)), T0), 7, 0, 0);
    log.append(&mut produced.clone(), 0).await.unwrap();
    for i in 0..20 {
        log.append(
            &mut keyed("k", Some(&format!("{i}{}", "x".repeat(300))), T0),
            0,
        )
        .await
        .unwrap();
    }
    log.roll().await.unwrap();
    log.append(&mut keyed("z", Some("active"), T0), 0)
        .await
        .unwrap();
    clean(&log, 1 << 20).await.unwrap();
    let batches = read_batches(&log).await;
    let producer_batch = batches
        .iter()
        .find(|(h, _)| h.producer_id == 7)
        .expect("the producer's last batch is kept");
    assert_eq!(producer_batch.0.records_count, 0);
    assert_eq!(producer_batch.0.base_offset, 0);
    assert_eq!(producer_batch.0.base_sequence, 0);
    assert_eq!(producer_batch.0.last_offset_delta, 0);
}

#[tokio::test]
async fn a_compact_only_log_is_never_shrunk_by_retention() {
    // The bug: `cleanup.policy=compact` with the broker's `retention.ms` deleting whole
    // segments, latest values and all.
    let config = LogConfig {
        retention_ms: Some(1),
        retention_bytes: Some(1),
        ..compacted()
    };
    let f = Fixture::new(6, FaultyDiskConfig::default(), config.clone());
    let log = f.open().await;
    overwritten(&log).await;
    f.clock.advance_ms(1_000_000);
    assert_eq!(log.apply_retention().await.unwrap(), 0);
    log.set_config(LogConfig {
        delete: true,
        ..config
    })
    .unwrap();
    assert!(
        log.apply_retention().await.unwrap() > 0,
        "compact,delete retains as delete does"
    );
}

#[tokio::test]
async fn a_crash_at_any_point_of_a_cleaning_leaves_the_old_segments_or_the_new_ones() {
    // The bug: a crash mid-swap leaving some old and some cleaned segments (records lost or
    // duplicated), or a swap file recovery cannot finish.
    let config = FaultyDiskConfig {
        torn_writes: true,
        ..FaultyDiskConfig::default()
    };
    let mut outcomes = BTreeMap::new();
    for seed in 0..40u64 {
        let f = Fixture::new(seed, config.clone(), compacted());
        let log = f.open().await;
        overwritten(&log).await;
        log.flush().await.unwrap();
        let before = read_records(&log).await;
        // Every disk operation of the cleaning takes a while: the crash lands between two.
        f.disk.set_config(FaultyDiskConfig {
            latency: Some((Duration::from_micros(100), Duration::from_micros(400))),
            ..config.clone()
        });
        let cleaning = tokio::spawn(async move {
            let mut map = OffsetMap::new(1 << 20);
            let end = log.log_end_offset();
            let _ = log.clean(end, &mut map, &mut Throttler::new(None)).await;
            log
        });
        tokio::time::sleep(Duration::from_millis(4 * seed)).await;
        f.disk.crash();
        let _ = cleaning.await;
        f.disk.set_config(config.clone());
        let log = f.open().await;
        let after = read_records(&log).await;
        assert_eq!(
            latest(&after),
            latest(&before),
            "seed {seed}: a key lost its latest value"
        );
        for (offset, record) in &after {
            assert_eq!(
                before.get(offset),
                Some(record),
                "seed {seed}: offset {offset} changed"
            );
        }
        let names = broker::disk::Disk::list(&f.disk, &f.dir).await.unwrap();
        assert!(
            names
                .iter()
                .all(|n| !n.ends_with(".swap") && !n.ends_with(".cleaned")),
            "seed {seed}: {names:?}"
        );
        *outcomes.entry(after.len() == before.len()).or_insert(0) += 1;
    }
    // Both ends of the race were reached: some crashes came before the swap, some after.
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
}
