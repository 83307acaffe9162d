//! The partition log's everyday behaviour: offsets, reads, timestamps, rolls, retention,
//! durability policies and the leader-epoch cache.

mod common;

use std::sync::Arc;

use broker::log::batch::{self, builder};
use broker::log::{AppendError, DeleteRecordsError, FlushPolicy, LogConfig, ReadError};
use chaos::FaultyDiskConfig;
use common::*;

fn fixture(config: LogConfig) -> Fixture {
    Fixture::new(11, FaultyDiskConfig::default(), config)
}

#[tokio::test]
async fn offsets_are_assigned_densely_and_patched_into_the_stored_batch() {
    let f = fixture(LogConfig::default());
    let log = f.open().await;
    let mut first = batch_with_id(0, 3, 10, T0);
    let a = log.append(&mut first, 5).await.unwrap();
    let b = log
        .append(&mut batch_with_id(1, 2, 10, T0), 5)
        .await
        .unwrap();
    assert_eq!(
        (a.base_offset, a.last_offset, b.base_offset, b.last_offset),
        (0, 2, 3, 4)
    );
    // The caller's buffer now holds exactly the stored bytes.
    let stored = log.read(0, 1, None).await.unwrap();
    assert_eq!(stored.records, first);
    let header = batch::validate(&stored.records).unwrap();
    assert_eq!((header.base_offset, header.partition_leader_epoch), (0, 5));
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(
        log.durable_end_offset(),
        5,
        "durable policy: acknowledged means synced"
    );
}

#[tokio::test]
async fn a_record_set_of_several_batches_is_appended_whole() {
    let f = fixture(LogConfig::default());
    let log = f.open().await;
    let mut set = batch_with_id(0, 2, 10, T0);
    set.extend_from_slice(&batch_with_id(1, 3, 10, T0));
    let info = log.append(&mut set, 0).await.unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 4));
    let read = log.read(1, 1 << 20, None).await.unwrap();
    let got = batches(&read.records);
    assert_eq!(
        got[0].0.base_offset, 0,
        "reads return whole batches from the one holding the offset"
    );
    assert_eq!(got[1].0.base_offset, 2);
}

#[tokio::test]
async fn bad_batches_are_refused_with_a_typed_error_and_change_nothing() {
    let f = fixture(LogConfig {
        max_message_bytes: 2_000,
        ..LogConfig::default()
    });
    let log = f.open().await;
    let mut bad_crc = batch_with_id(0, 2, 10, T0);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(matches!(
        log.append(&mut bad_crc, 0).await,
        Err(AppendError::InvalidBatch(_))
    ));
    let mut truncated = batch_with_id(0, 2, 10, T0);
    truncated.pop();
    assert!(matches!(
        log.append(&mut truncated, 0).await,
        Err(AppendError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(&mut [], 0).await,
        Err(AppendError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(&mut batch_with_id(0, 5, 1_000, T0), 0).await,
        Err(AppendError::MessageTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
    // And the log still works.
    log.append(&mut batch_with_id(1, 1, 10, T0), 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_read_returns_whole_batches_up_to_max_bytes_but_always_the_first() {
    let f = fixture(LogConfig::default());
    let log = f.open().await;
    let size = batch_with_id(0, 4, 100, T0).len();
    for id in 0..10 {
        log.append(&mut batch_with_id(id, 4, 100, T0), 0)
            .await
            .unwrap();
    }
    let read = log.read(0, size * 3 + 10, None).await.unwrap();
    assert_eq!(batches(&read.records).len(), 3);
    let tiny = log.read(5, 1, None).await.unwrap();
    let got = batches(&tiny.records);
    assert_eq!(
        got.len(),
        1,
        "the first batch is returned even if larger than max_bytes"
    );
    assert_eq!(got[0].0.base_offset, 4);
    // The high watermark bounds a read; the log end gives an empty read; beyond it is an error.
    let bounded = log.read(0, 1 << 20, Some(8)).await.unwrap();
    assert_eq!(batches(&bounded.records).len(), 2);
    assert!(log
        .read(40, 1 << 20, None)
        .await
        .unwrap()
        .records
        .is_empty());
    assert!(matches!(
        log.read(41, 1, None).await,
        Err(ReadError::OffsetOutOfRange { .. })
    ));
}

#[tokio::test]
async fn reads_walk_across_segments_like_a_consumer() {
    let f = fixture(small_segments());
    let log = f.open().await;
    for id in 0..30 {
        log.append(&mut batch_with_id(id, 2, 150, T0), 0)
            .await
            .unwrap();
    }
    assert!(log.segment_count().await >= 3);
    let ids: Vec<u64> = Fixture::read_all(&log)
        .await
        .iter()
        .map(|(_, b)| id_of(b))
        .collect();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
    for offset in 0..60 {
        let read = log.read(offset, 1, None).await.unwrap();
        let (header, _) = &batches(&read.records)[0];
        assert!(
            header.base_offset as u64 <= offset && offset <= header.last_offset() as u64,
            "offset {offset}: got {header:?}"
        );
    }
}

#[tokio::test]
async fn offset_for_timestamp_finds_the_first_record_at_or_after_the_time() {
    let f = fixture(small_segments());
    let log = f.open().await;
    for id in 0..20u64 {
        let records: Vec<builder::Record> = (0..3)
            .map(|i| builder::Record {
                key: None,
                value: Some(vec![id as u8; 100]),
                timestamp_ms: T0 + (id * 10 + i * 3) as i64,
            })
            .collect();
        log.append(&mut builder::batch(&records), 0).await.unwrap();
    }
    // Batch 7 holds offsets 21..=23 with timestamps +70, +73, +76.
    assert_eq!(
        log.offset_for_timestamp(T0 + 71).await.unwrap(),
        Some((22, T0 + 73))
    );
    assert_eq!(log.offset_for_timestamp(T0).await.unwrap(), Some((0, T0)));
    assert_eq!(
        log.offset_for_timestamp(T0 + 73).await.unwrap(),
        Some((22, T0 + 73))
    );
    assert_eq!(log.offset_for_timestamp(T0 + 10_000).await.unwrap(), None);
    assert_eq!(log.max_timestamp().await.unwrap(), Some((59, T0 + 196)));
}

#[tokio::test]
async fn log_append_time_replaces_the_producer_timestamp() {
    let f = fixture(LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    });
    f.clock.set_ms(T0 + 5_000);
    let log = f.open().await;
    let info = log
        .append(&mut batch_with_id(0, 2, 10, T0), 0)
        .await
        .unwrap();
    assert_eq!(info.log_append_time_ms, Some(T0 + 5_000));
    let read = log.read(0, 1 << 20, None).await.unwrap();
    assert_eq!(
        batch::record_timestamps(&read.records).unwrap(),
        vec![(0, T0 + 5_000), (1, T0 + 5_000)]
    );
}

#[tokio::test]
async fn segments_roll_by_size_and_by_age() {
    let f = fixture(LogConfig {
        segment_bytes: 2_000,
        segment_ms: 60_000,
        ..LogConfig::default()
    });
    let log = f.open().await;
    let size = batch_with_id(0, 1, 300, T0).len();
    let per_segment = 2_000 / size;
    for id in 0..per_segment as u64 {
        log.append(&mut batch_with_id(id, 1, 300, T0), 0)
            .await
            .unwrap();
    }
    assert_eq!(log.segment_count().await, 1);
    log.append(&mut batch_with_id(99, 1, 300, T0), 0)
        .await
        .unwrap();
    assert_eq!(log.segment_count().await, 2, "size roll");
    f.clock.advance_ms(60_000);
    log.append(&mut batch_with_id(100, 1, 10, T0), 0)
        .await
        .unwrap();
    assert_eq!(log.segment_count().await, 3, "age roll");
}

#[tokio::test]
async fn retention_by_time_deletes_old_segments_and_advances_the_log_start() {
    let config = LogConfig {
        retention_ms: Some(60_000),
        ..small_segments()
    };
    let f = fixture(config);
    let log = f.open().await;
    for id in 0..10u64 {
        log.append(&mut batch_with_id(id, 2, 300, T0), 0)
            .await
            .unwrap();
    }
    f.clock.advance_ms(30_000);
    for id in 10..20u64 {
        log.append(&mut batch_with_id(id, 2, 300, T0 + 30_000), 0)
            .await
            .unwrap();
    }
    let before = log.segment_count().await;
    assert_eq!(
        log.apply_retention().await.unwrap(),
        0,
        "nothing is old enough yet"
    );
    f.clock.advance_ms(40_000); // now T0+70s: the first 10 batches are 70 s old, the rest 40 s.
    let deleted = log.apply_retention().await.unwrap();
    assert!(deleted >= 1);
    assert_eq!(log.segment_count().await, before - deleted);
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 20, "log start {start}");
    assert!(matches!(
        log.read(0, 1, None).await,
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    let ids: Vec<u64> = Fixture::read_all(&log)
        .await
        .iter()
        .map(|(_, b)| id_of(b))
        .collect();
    assert_eq!(*ids.last().unwrap(), 19);
    assert!(ids.contains(&10), "records within retention are kept");
    // Everything expired: even the active segment goes, and the log stays usable.
    f.clock.advance_ms(120_000);
    log.apply_retention().await.unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    log.append(&mut batch_with_id(20, 1, 10, T0 + 190_000), 0)
        .await
        .unwrap();
    // The log start survives a restart.
    let end = log.log_end_offset();
    drop(log);
    f.disk.crash();
    let log = f.open().await;
    assert_eq!(log.log_start_offset(), end - 1);
}

#[tokio::test]
async fn retention_by_bytes_keeps_the_log_under_the_limit() {
    let f = fixture(LogConfig {
        retention_bytes: Some(8_192),
        ..small_segments()
    });
    let log = f.open().await;
    for id in 0..60u64 {
        log.append(&mut batch_with_id(id, 2, 300, T0), 0)
            .await
            .unwrap();
    }
    log.apply_retention().await.unwrap();
    let size = log.size_bytes().await;
    assert!(size <= 8_192 + 4_096, "size {size}");
    let ids: Vec<u64> = Fixture::read_all(&log)
        .await
        .iter()
        .map(|(_, b)| id_of(b))
        .collect();
    assert_eq!(*ids.last().unwrap(), 59);
    assert_eq!(
        ids,
        (ids[0]..60).collect::<Vec<_>>(),
        "retention deletes from the start only"
    );
}

#[tokio::test]
async fn delete_records_moves_the_log_start_and_survives_a_crash() {
    let f = fixture(small_segments());
    let log = f.open().await;
    for id in 0..30u64 {
        log.append(&mut batch_with_id(id, 2, 200, T0), 0)
            .await
            .unwrap();
    }
    assert_eq!(log.delete_records_before(25).await.unwrap(), 25);
    assert!(matches!(
        log.read(24, 1, None).await,
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.delete_records_before(1_000).await,
        Err(DeleteRecordsError::OffsetOutOfRange { .. })
    ));
    drop(log);
    f.disk.crash();
    let log = f.open().await;
    assert_eq!(log.log_start_offset(), 25);
    assert!(log.read(25, 1, None).await.is_ok());
}

#[tokio::test]
async fn concurrent_durable_appends_are_all_acknowledged_only_once_synced() {
    let f = fixture(LogConfig::default());
    let log = Arc::new(f.open().await);
    let mut tasks = Vec::new();
    for id in 0..16u64 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            log.append(&mut batch_with_id(id, 2, 100, T0), 0).await
        }));
    }
    let mut acked = 0;
    for task in tasks {
        task.await.unwrap().unwrap();
        acked += 1;
    }
    assert_eq!(acked, 16);
    drop(log);
    f.disk.crash();
    let log = f.open().await;
    assert_eq!(Fixture::read_all(&log).await.len(), 16);
}

#[tokio::test]
async fn the_lazy_policy_syncs_after_flush_messages_records() {
    let lazy = LogConfig {
        flush: FlushPolicy::Lazy {
            flush_messages: Some(10),
            flush_ms: None,
        },
        ..LogConfig::default()
    };
    let f = fixture(lazy);
    let log = f.open().await;
    log.append(&mut batch_with_id(0, 4, 10, T0), 0)
        .await
        .unwrap();
    assert_eq!(
        log.durable_end_offset(),
        0,
        "lazy: acknowledged before synced"
    );
    log.append(&mut batch_with_id(1, 6, 10, T0), 0)
        .await
        .unwrap();
    assert_eq!(log.durable_end_offset(), 10);
}

#[tokio::test]
async fn the_lazy_policy_syncs_after_flush_ms() {
    let lazy = LogConfig {
        flush: FlushPolicy::Lazy {
            flush_messages: None,
            flush_ms: Some(1_000),
        },
        ..LogConfig::default()
    };
    let f = fixture(lazy);
    let log = f.open().await;
    log.append(&mut batch_with_id(0, 4, 10, T0), 0)
        .await
        .unwrap();
    log.flush_if_due().await.unwrap();
    assert_eq!(log.durable_end_offset(), 0);
    f.clock.advance_ms(1_000);
    log.flush_if_due().await.unwrap();
    assert_eq!(log.durable_end_offset(), 4);
}

#[tokio::test]
async fn leader_epochs_are_persisted_and_truncated_with_the_log() {
    let lazy = LogConfig {
        flush: FlushPolicy::Lazy {
            flush_messages: None,
            flush_ms: None,
        },
        ..LogConfig::default()
    };
    let f = fixture(lazy);
    let log = f.open().await;
    log.append(&mut batch_with_id(0, 2, 10, T0), 1)
        .await
        .unwrap();
    log.append(&mut batch_with_id(1, 2, 10, T0), 3)
        .await
        .unwrap();
    log.flush().await.unwrap();
    log.append(&mut batch_with_id(2, 2, 10, T0), 4)
        .await
        .unwrap(); // lost in the crash below
    let epochs = log.leader_epochs().await;
    assert_eq!(epochs.end_offset_for(1, log.log_end_offset()), Some((1, 2)));
    assert_eq!(epochs.latest_epoch(), Some(4));
    drop(log);
    f.disk.crash();
    let log = f.open().await;
    let epochs = log.leader_epochs().await;
    assert_eq!(
        epochs.latest_epoch(),
        Some(3),
        "an epoch whose batches were lost is forgotten"
    );
    assert_eq!(epochs.end_offset_for(3, 4), Some((3, 4)));
}
