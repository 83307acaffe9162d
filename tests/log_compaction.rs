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

// ---- Transactions (the cleaner on a partition, with its aborted-transaction index) ----

mod txn {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use broker::log::batch::{self, builder, BatchHeader};
    use broker::log::cleaner::{CleanStats, OffsetMap, Throttler};
    use broker::log::records;
    use broker::log::{FlushPolicy, LogConfig};
    use broker::partition::Partition;
    use broker::txn::marker::{self, ControlType, Marker};
    use chaos::FaultyDiskConfig;

    use super::{compacted, keyed, Fixture, T0};

    const RETENTION_MS: i64 = 60_000;

    fn config() -> LogConfig {
        LogConfig {
            flush: FlushPolicy::Durable,
            delete_retention_ms: RETENTION_MS,
            ..compacted()
        }
    }

    async fn open(f: &Fixture) -> Arc<Partition> {
        Arc::new(
            Partition::open("t".into(), 0, f.open().await, 1)
                .await
                .expect("partition opens"),
        )
    }

    async fn append(partition: &Arc<Partition>, mut bytes: Vec<u8>) -> u64 {
        let info = partition.append_unexposed(&mut bytes).await.unwrap();
        partition.wait_durable(&info).await.unwrap();
        info.base_offset
    }

    /// A plain keyed record; returns its offset.
    async fn plain(partition: &Arc<Partition>, key: &str, value: &str) -> u64 {
        append(partition, keyed(key, Some(value), T0)).await
    }

    /// A transactional keyed record of producer `pid` at sequence `seq`; returns its offset.
    async fn in_txn(partition: &Arc<Partition>, pid: i64, seq: i32, key: &str, value: &str) -> u64 {
        let built = builder::with_attributes(keyed(key, Some(value), T0), batch::TRANSACTIONAL_BIT);
        append(partition, builder::with_producer(built, pid, 0, seq)).await
    }

    /// Writes `pid`'s marker; returns its offset.
    async fn end_txn(partition: &Arc<Partition>, pid: i64, control: ControlType) -> u64 {
        let marker = Marker {
            control,
            coordinator_epoch: 0,
        };
        let (info, _) = partition.write_marker(pid, 0, marker, T0).await.unwrap();
        partition.wait_durable(&info).await.unwrap();
        info.base_offset
    }

    /// Makes the log dirty: plain records of a filler key, a roll, one record in the new
    /// active segment.
    async fn dirty(partition: &Arc<Partition>) {
        for i in 0..3 {
            plain(partition, "filler", &format!("{i}{}", "f".repeat(300))).await;
        }
        partition.log.roll().await.unwrap();
        plain(partition, "filler", "active").await;
    }

    async fn clean(partition: &Arc<Partition>) -> Option<CleanStats> {
        let mut map = OffsetMap::new(1 << 20);
        partition
            .clean_log(&mut map, &mut Throttler::new(None))
            .await
            .expect("cleaned")
    }

    /// What a reader from the log start sees: data records (offset → key, value) and markers
    /// (offset → producer, type; `None` for an emptied control batch).
    #[derive(Debug, Default, PartialEq)]
    struct View {
        data: BTreeMap<u64, (String, String)>,
        markers: BTreeMap<u64, (i64, Option<ControlType>)>,
    }

    async fn view(partition: &Partition) -> View {
        let mut out = View::default();
        for (header, bytes) in Fixture::read_all(&partition.log).await {
            if header.is_control() {
                let m = marker::decode(&bytes).unwrap().map(|m| m.control);
                out.markers
                    .insert(header.base_offset as u64, (header.producer_id, m));
                continue;
            }
            for r in records::decode(&bytes, 1 << 20).unwrap() {
                out.data.insert(
                    header.base_offset as u64 + r.offset_delta as u64,
                    (
                        String::from_utf8(r.key.unwrap()).unwrap(),
                        String::from_utf8(r.value.unwrap()).unwrap(),
                    ),
                );
            }
        }
        out
    }

    /// What a read_committed consumer sees from the log start (Kafka's consumer rule: a
    /// producer's transactional records are dropped from an aborted transaction's first
    /// offset to its abort marker), latest value per key.
    async fn committed_latest(partition: &Partition) -> BTreeMap<String, String> {
        let end = partition.last_stable_offset().await.unwrap();
        let aborted = partition.aborted_transactions(0, end);
        let mut latest = BTreeMap::new();
        for (header, bytes) in Fixture::read_all(&partition.log).await {
            if header.is_control() || header.base_offset as u64 >= end {
                continue;
            }
            let offset = header.base_offset as u64;
            let dropped = header.is_transactional()
                && aborted.iter().any(|t| {
                    t.producer_id == header.producer_id
                        && t.first_offset <= offset
                        && offset < t.last_offset
                });
            if dropped {
                continue;
            }
            for r in records::decode(&bytes, 1 << 20).unwrap() {
                latest.insert(
                    String::from_utf8(r.key.unwrap()).unwrap(),
                    String::from_utf8(r.value.unwrap()).unwrap(),
                );
            }
        }
        latest.remove("filler");
        latest
    }

    fn latest_values(view: &View) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in view.data.values() {
            out.insert(key.clone(), value.clone());
        }
        out.remove("filler");
        out
    }

    fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn aborted_records_go_committed_ones_are_compacted_and_markers_outlive_their_data_by_the_horizon(
    ) {
        // The bugs: a cleaner that keeps aborted records (a read_uncommitted reader sees an
        // aborted value as a key's latest); that lets an aborted record shadow an older
        // committed value in the offset map; that drops a marker while its transaction still
        // has data (a read_committed reader then takes aborted data for committed); that keeps
        // an index entry without its marker; or that keeps markers forever.
        let f = Fixture::new(21, FaultyDiskConfig::default(), config());
        let p = open(&f).await;
        in_txn(&p, 7, 0, "k1", "committed-1").await;
        in_txn(&p, 7, 1, "k2", "committed-2").await;
        let commit7 = end_txn(&p, 7, ControlType::Commit).await;
        let aborted_k1 = in_txn(&p, 8, 0, "k1", "aborted-1").await;
        in_txn(&p, 8, 1, "k3", "aborted-3").await;
        let abort8 = end_txn(&p, 8, ControlType::Abort).await;
        plain(&p, "k2", "plain-2").await;
        // Producer 8 goes on: its abort marker is not its last batch.
        in_txn(&p, 8, 2, "k4", "committed-4").await;
        let commit8 = end_txn(&p, 8, ControlType::Commit).await;
        // Producer 7 too: its first commit marker is not its last batch either.
        in_txn(&p, 7, 2, "k5", "committed-5").await;
        end_txn(&p, 7, ControlType::Commit).await;
        dirty(&p).await;
        let end = p.log.log_end_offset();
        assert_eq!(p.aborted_transactions(0, end).len(), 1);

        let want = expected(&[
            ("k1", "committed-1"),
            ("k2", "plain-2"),
            ("k4", "committed-4"),
            ("k5", "committed-5"),
        ]);
        assert_eq!(committed_latest(&p).await, want, "before cleaning");

        // First cleaning: aborted data and superseded values go; every marker stays (each
        // transaction had a batch in this cleaning).
        let stats = clean(&p).await.expect("dirty");
        let after = view(&p).await;
        assert!(
            !after.data.contains_key(&aborted_k1),
            "an aborted record is removed"
        );
        assert!(after.data.values().all(|(_, v)| !v.starts_with("aborted")));
        assert_eq!(
            latest_values(&after),
            want,
            "read_uncommitted sees committed values"
        );
        assert_eq!(committed_latest(&p).await, want, "read_committed too");
        assert_eq!(stats.aborted_records_removed, 2);
        for m in [commit7, abort8, commit8] {
            assert!(after.markers.contains_key(&m), "marker {m} kept: {after:?}");
        }
        assert_eq!(
            p.aborted_transactions(0, end).len(),
            1,
            "the entry stays while the cleaning met its aborted data"
        );

        // Second cleaning: producer 8's aborted transaction has no data left: its entry goes
        // and its marker gets a horizon; producer 7's commit still has k1's batch.
        dirty(&p).await;
        clean(&p).await.expect("dirty");
        let after = view(&p).await;
        assert!(after.markers.contains_key(&abort8));
        assert!(after.markers.contains_key(&commit7));
        assert_eq!(p.aborted_transactions(0, end), vec![]);
        assert_eq!(committed_latest(&p).await, want);

        // Not yet past the horizon: the marker stays.
        f.clock.advance_ms(RETENTION_MS - 1_000);
        dirty(&p).await;
        clean(&p).await.expect("dirty");
        assert!(view(&p).await.markers.contains_key(&abort8));

        // Past it: the abort marker goes, the commit marker whose data is there stays.
        f.clock.advance_ms(2_000);
        dirty(&p).await;
        let stats = clean(&p).await.expect("dirty");
        assert!(stats.markers_removed >= 1);
        let after = view(&p).await;
        assert!(!after.markers.contains_key(&abort8), "{after:?}");
        assert!(after.markers.contains_key(&commit7));
        assert_eq!(latest_values(&after), want);
        assert_eq!(committed_latest(&p).await, want);

        // A crash and a clean restart rebuild the same index and view.
        let before_crash = view(&p).await;
        drop(p);
        f.disk.crash();
        let p = open(&f).await;
        assert_eq!(view(&p).await, before_crash);
        assert_eq!(p.aborted_transactions(0, end), vec![]);
        assert_eq!(committed_latest(&p).await, want);
    }

    #[tokio::test]
    async fn the_txnindex_of_a_cleaned_segment_comes_back_after_a_crash_and_a_clean_restart() {
        // The bug: a cleaned segment whose `.txnindex` is lost or stale, so a read_committed
        // reader after a restart is told of no aborted transaction (and reads aborted data)
        // or of one whose marker is gone (and drops committed data).
        let f = Fixture::new(22, FaultyDiskConfig::default(), config());
        let p = open(&f).await;
        // Aborted data whose marker sits in a later segment than part of it.
        in_txn(&p, 9, 0, "a", &"x".repeat(300)).await;
        for i in 0..30 {
            plain(&p, "b", &format!("{i}{}", "y".repeat(300))).await;
        }
        in_txn(&p, 9, 1, "c", &"z".repeat(300)).await;
        let abort = end_txn(&p, 9, ControlType::Abort).await;
        in_txn(&p, 9, 2, "d", "later").await;
        end_txn(&p, 9, ControlType::Commit).await;
        dirty(&p).await;
        assert!(p.log.segment_count().await > 3);
        let end = p.log.log_end_offset();
        let entries = p.aborted_transactions(0, end);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].last_offset, abort);
        clean(&p).await.expect("dirty");
        assert_eq!(p.aborted_transactions(0, end), entries);
        // The marker's cleaned segment holds the entry in its own `.txnindex`, the only one.
        let bases = p.log.segment_bases().await;
        let holder = bases[bases.partition_point(|&b| b <= abort) - 1];
        let names = broker::disk::Disk::list(&f.disk, &f.dir).await.unwrap();
        let txn_files: Vec<&String> = names.iter().filter(|n| n.contains(".txnindex")).collect();
        assert_eq!(txn_files, vec![&format!("{holder:020}.txnindex")]);
        let want = expected(&[("b", &format!("29{}", "y".repeat(300))), ("d", "later")]);
        assert_eq!(committed_latest(&p).await, want);
        assert_eq!(latest_values(&view(&p).await), want);

        drop(p);
        f.disk.crash();
        let p = open(&f).await;
        assert_eq!(p.aborted_transactions(0, end), entries, "after a crash");
        p.close().await.unwrap();
        drop(p);
        let p = open(&f).await;
        assert_eq!(
            p.aborted_transactions(0, end),
            entries,
            "after a clean restart"
        );
        assert_eq!(committed_latest(&p).await, want);

        // A crash between the swap's two last renames (the new `.txnindex` in place, the
        // segment still `.log.swap`): recovery completes the swap and keeps that `.txnindex`.
        drop(p);
        let disk: &dyn broker::disk::Disk = &f.disk;
        disk.rename(
            &f.dir.join(format!("{holder:020}.log")),
            &f.dir.join(format!("{holder:020}.log.swap")),
        )
        .await
        .unwrap();
        disk.sync_dir(&f.dir).await.unwrap();
        f.disk.crash();
        let p = open(&f).await;
        assert_eq!(
            p.aborted_transactions(0, end),
            entries,
            "after a crash before the swap's last rename"
        );
        assert_eq!(committed_latest(&p).await, want);

        // The next cleaning (which merges the now small segments) meets no aborted data: the
        // entry goes, with its file, and stays gone after a crash.
        let segments_before = p.log.segment_count().await;
        dirty(&p).await;
        clean(&p).await.expect("dirty");
        assert!(
            p.log.segment_count().await < segments_before,
            "segments were merged"
        );
        assert_eq!(p.aborted_transactions(0, end), vec![]);
        let names = broker::disk::Disk::list(&f.disk, &f.dir).await.unwrap();
        assert!(names.iter().all(|n| !n.contains(".txnindex")), "{names:?}");
        drop(p);
        f.disk.crash();
        let p = open(&f).await;
        assert_eq!(p.aborted_transactions(0, end), vec![]);
        assert_eq!(committed_latest(&p).await, want);
    }

    #[tokio::test]
    async fn an_open_transactions_records_are_never_cleaned_until_it_ends() {
        // The bug: cleaning past the last stable offset, so a record of a transaction still
        // open is compacted away by a later value before its outcome is known.
        let f = Fixture::new(23, FaultyDiskConfig::default(), config());
        let p = open(&f).await;
        for i in 0..12 {
            plain(&p, "old", &format!("{i}{}", "o".repeat(300))).await;
        }
        p.log.roll().await.unwrap();
        let open_offset = in_txn(&p, 11, 0, "k", "open").await;
        for i in 0..12 {
            plain(&p, "k", &format!("later-{i}{}", "l".repeat(300))).await;
        }
        dirty(&p).await;
        let lso = p.last_stable_offset().await.unwrap();
        assert_eq!(lso, open_offset);
        let before = view(&p).await;
        let stats = clean(&p).await.expect("the part below the LSO is dirty");
        let after = view(&p).await;
        assert_eq!(
            after.data.get(&open_offset),
            Some(&("k".to_string(), "open".to_string())),
            "the open transaction's record stays"
        );
        assert!(stats.first_dirty_offset <= lso);
        for (offset, record) in before.data.range(lso..) {
            assert_eq!(
                after.data.get(offset),
                Some(record),
                "offset {offset} at or past the LSO"
            );
        }
        assert!(after.data.range(..lso).count() < before.data.range(..lso).count());

        // Once committed, its record is an old value like any other.
        end_txn(&p, 11, ControlType::Commit).await;
        dirty(&p).await;
        clean(&p).await.expect("dirty");
        assert!(!view(&p).await.data.contains_key(&open_offset));
    }

    #[tokio::test]
    async fn a_cleaned_producers_retry_is_still_a_duplicate_after_a_restart_without_snapshots() {
        // The bug: cleaning away an idempotent producer's last batch, so a producer state
        // rebuilt from the cleaned log forgets its sequence and appends a retry twice.
        let f = Fixture::new(24, FaultyDiskConfig::default(), config());
        let p = open(&f).await;
        let mut last = Vec::new();
        for seq in 0..4 {
            let bytes =
                builder::with_producer(keyed("k", Some(&format!("idem-{seq}")), T0), 5, 0, seq);
            last = bytes.clone();
            append(&p, bytes).await;
        }
        let last_offset = p.log.log_end_offset() - 1;
        for i in 0..12 {
            plain(&p, "k", &format!("{i}{}", "p".repeat(300))).await;
        }
        dirty(&p).await;
        clean(&p).await.expect("dirty");
        assert!(
            view(&p)
                .await
                .data
                .values()
                .all(|(_, v)| !v.starts_with("idem")),
            "the producer's records are cleaned away"
        );
        drop(p);
        f.disk.crash();
        // No snapshot: the producers' state is rebuilt from the cleaned log alone.
        for name in broker::disk::Disk::list(&f.disk, &f.dir).await.unwrap() {
            if name.ends_with(".snapshot") {
                broker::disk::Disk::remove(&f.disk, &f.dir.join(name))
                    .await
                    .unwrap();
            }
        }
        let p = open(&f).await;
        assert_eq!(p.producer_state_snapshot(), None);
        let end = p.log.log_end_offset();
        let info = p.append_unexposed(&mut last.clone()).await.unwrap();
        assert_eq!(
            info.base_offset, last_offset,
            "answered as the original append"
        );
        assert_eq!(
            p.log.log_end_offset(),
            end,
            "the retry is not appended again"
        );
        let header = BatchHeader::parse(&last).unwrap();
        assert_eq!(header.base_sequence, 3);
    }

    #[tokio::test]
    async fn a_crash_at_any_point_of_a_cleaning_keeps_the_txnindex_of_the_old_or_the_new_segments()
    {
        // The bug: a swap recovery that removes the group's new `.txnindex` (taking it for an
        // old one) or keeps an old one beside the new, so after the crash a read_committed
        // reader is told of no aborted transaction, or of one twice.
        use std::time::Duration;
        let disk = FaultyDiskConfig {
            torn_writes: true,
            ..FaultyDiskConfig::default()
        };
        let mut swapped = 0;
        for seed in 0..30u64 {
            let f = Fixture::new(100 + seed, disk.clone(), config());
            let p = open(&f).await;
            for i in 0..8 {
                plain(&p, "b", &format!("{i}{}", "y".repeat(300))).await;
            }
            in_txn(&p, 9, 0, "a", &"x".repeat(300)).await;
            for i in 0..20 {
                plain(&p, "b", &format!("{i}{}", "y".repeat(300))).await;
            }
            end_txn(&p, 9, ControlType::Abort).await;
            in_txn(&p, 9, 1, "d", "later").await;
            end_txn(&p, 9, ControlType::Commit).await;
            dirty(&p).await;
            let end = p.log.log_end_offset();
            let entries = p.aborted_transactions(0, end);
            assert_eq!(entries.len(), 1);
            let want = committed_latest(&p).await;
            let records_before = view(&p).await.data.len();
            f.disk.set_config(FaultyDiskConfig {
                latency: Some((Duration::from_micros(100), Duration::from_micros(400))),
                ..disk.clone()
            });
            let cleaning = tokio::spawn(async move {
                let _ = p
                    .clean_log(&mut OffsetMap::new(1 << 20), &mut Throttler::new(None))
                    .await;
                p
            });
            tokio::time::sleep(Duration::from_millis(3 * seed)).await;
            f.disk.crash();
            drop(cleaning.await);
            f.disk.set_config(disk.clone());
            let p = open(&f).await;
            assert_eq!(
                p.aborted_transactions(0, end),
                entries,
                "seed {seed}: the aborted transaction's entry, once"
            );
            assert_eq!(committed_latest(&p).await, want, "seed {seed}");
            let names = broker::disk::Disk::list(&f.disk, &f.dir).await.unwrap();
            assert!(
                names
                    .iter()
                    .all(|n| !n.ends_with(".swap") && !n.ends_with(".cleaned")),
                "seed {seed}: {names:?}"
            );
            if view(&p).await.data.len() < records_before {
                swapped += 1;
            }
        }
        // Both ends of the race were reached.
        assert!(
            swapped > 0 && swapped < 30,
            "{swapped} of 30 crashes after a swap"
        );
    }
}
