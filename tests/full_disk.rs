//! A full disk (issue 9, defect 5, the storage side): with no byte free the broker must still
//! be able to free its own space, through DeleteTopics and DeleteRecords, and a failed write
//! must leave no temporary file behind. Driven through the broker's protocol entry point on the
//! faulty disk's ENOSPC fault.
#![cfg(not(madsim))]

mod in_process;

use in_process::call;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::ManualClock;
use broker::config::BrokerConfig;
use broker::disk::{self, Disk};
use broker::log::batch::builder;
use chaos::{FaultyDisk, FaultyDiskConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{
    ApiKey, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

const T0: i64 = 1_700_000_000_000;
const TOPIC: &str = "metrics";

struct Node {
    disk: FaultyDisk,
    clock: Arc<ManualClock>,
    config: BrokerConfig,
}

impl Node {
    fn new() -> Node {
        Node {
            disk: FaultyDisk::new(21, FaultyDiskConfig::default()),
            clock: Arc::new(ManualClock::new(T0)),
            config: BrokerConfig {
                data_dir: PathBuf::from("/data"),
                log_segment_bytes: 4096,
                ..BrokerConfig::default()
            },
        }
    }

    async fn open(&self) -> Arc<Broker> {
        Broker::open(
            self.config.clone(),
            Arc::new(self.disk.clone()),
            self.clock.clone(),
        )
        .await
        .expect("broker opens")
    }

    /// A topic of two partitions holding about 20 KiB each (several segments).
    async fn topic_with_data(&self, broker: &Arc<Broker>) {
        broker.create_topic(TOPIC, 2, 1, &[], false).await.unwrap();
        for p in 0..2 {
            let partition = broker.partition(TOPIC, p).unwrap();
            for i in 0..40 {
                let records: Vec<builder::Record> = (0..4)
                    .map(|r| builder::Record {
                        key: None,
                        value: Some(vec![(i + r) as u8; 120]),
                        timestamp_ms: T0,
                    })
                    .collect();
                let info = partition
                    .append_unexposed(&mut builder::batch(&records))
                    .await
                    .unwrap();
                partition.wait_durable(&info).await.unwrap();
            }
            assert!(partition.log.segment_count().await > 3);
        }
    }

    /// Every path under the data directory whose name ends with `.tmp`.
    async fn tmp_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![self.config.data_dir.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(names) = self.disk.list(&dir).await else {
                continue; // a file, not a directory
            };
            for name in names {
                let path = dir.join(&name);
                if name.ends_with(".tmp") {
                    found.push(path.clone());
                }
                dirs.push(path);
            }
        }
        found
    }

    fn fill_disk(&self) {
        self.disk.set_capacity(Some(self.disk.used_bytes()));
    }
}

async fn delete_topic(broker: &Arc<Broker>) -> i16 {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_static_str(TOPIC))])
        .with_timeout_ms(5_000);
    let response: DeleteTopicsResponse = call(broker, ApiKey::DeleteTopics, 4, &request).await;
    response.responses[0].error_code
}

/// DeleteRecords of partition 0 up to `offset`; returns (error code, low watermark).
async fn delete_records(broker: &Arc<Broker>, offset: i64) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])])
        .with_timeout_ms(5_000);
    let response: DeleteRecordsResponse = call(broker, ApiKey::DeleteRecords, 2, &request).await;
    let result = &response.topics[0].partitions[0];
    (result.error_code, result.low_watermark)
}

#[tokio::test]
async fn deleting_a_topic_works_on_a_full_disk_and_frees_its_space() {
    // The bug: the metadata was rewritten (a temporary file, which needs space) before anything
    // was removed, so with no byte free DeleteTopics failed with KAFKA_STORAGE_ERROR and the
    // broker could not free its own space; a zero-byte `.tmp` file was left behind.
    let node = Node::new();
    let broker = node.open().await;
    node.topic_with_data(&broker).await;
    let before = node.disk.used_bytes();
    node.fill_disk();
    assert_eq!(
        delete_topic(&broker).await,
        0,
        "DeleteTopics on a full disk"
    );
    assert!(broker.topic(TOPIC).is_none());
    // Open handles keep a removed file's space, as on Linux: let the partitions' background
    // sync tasks, which hold them, finish.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        node.disk.used_bytes() < before / 4,
        "the topic's space was not freed: {} of {before} bytes used",
        node.disk.used_bytes()
    );
    assert_eq!(node.tmp_files().await, Vec::<PathBuf>::new());
    let names = node.disk.list(Path::new("/data")).await.unwrap();
    assert!(
        names.iter().all(|n| !n.starts_with(TOPIC)),
        "left behind: {names:?}"
    );
    // It stays deleted through a crash.
    drop(broker);
    node.disk.set_capacity(None);
    node.disk.crash();
    let broker = node.open().await;
    assert!(broker.topic(TOPIC).is_none());
}

#[tokio::test]
async fn a_topic_deletion_interrupted_after_its_commit_point_is_finished_at_start() {
    // The deletion is committed in the metadata log before any directory goes. A crash (or a
    // disk error) after that point, with some partitions' directories still there, must not
    // bring the topic back with part of its data missing: the next start removes the rest.
    let node = Node::new();
    let broker = node.open().await;
    node.topic_with_data(&broker).await;
    node.disk.fail_io_under("/data/metrics-1");
    assert_eq!(delete_topic(&broker).await, 0, "the deletion is committed");
    assert!(broker.topic(TOPIC).is_none());
    drop(broker);
    node.disk.crash();
    node.disk.heal_io_under(Path::new("/data/metrics-1"));
    let broker = node.open().await;
    assert!(
        broker.topic(TOPIC).is_none(),
        "a committed deletion came back"
    );
    let names = node.disk.list(Path::new("/data")).await.unwrap();
    assert!(
        names.iter().all(|n| !n.starts_with(TOPIC)),
        "left behind: {names:?}"
    );
    drop(broker);
    node.disk.crash();
    assert!(node.open().await.topic(TOPIC).is_none());
}

#[tokio::test]
async fn delete_records_works_on_a_full_disk_even_after_an_append_took_the_log_offline() {
    // The bug: DeleteRecords wrote the checkpoint before deleting segments, and a log that a
    // full disk took offline could not recover without free space, so both failed with
    // KAFKA_STORAGE_ERROR and nothing could free the disk.
    let node = Node::new();
    let broker = node.open().await;
    node.topic_with_data(&broker).await;
    let partition = broker.partition(TOPIC, 0).unwrap();
    let end = partition.log.log_end_offset() as i64;
    node.fill_disk();
    let full = partition
        .append_unexposed(&mut builder::batch(&[builder::Record {
            key: None,
            value: Some(vec![1; 100]),
            timestamp_ms: T0,
        }]))
        .await;
    assert!(full.is_err(), "an append on a full disk fails");
    let before = node.disk.used_bytes();
    let (error, low_watermark) = delete_records(&broker, end - 10).await;
    assert_eq!(error, 0, "DeleteRecords on a full disk");
    assert_eq!(low_watermark, end - 10);
    assert!(node.disk.used_bytes() < before, "no space was freed");
    assert_eq!(node.tmp_files().await, Vec::<PathBuf>::new());
    // With space again the log start reaches the checkpoint and survives a crash.
    node.disk.set_capacity(None);
    broker.run_maintenance(false).await;
    drop((partition, broker));
    node.disk.crash();
    let broker = node.open().await;
    let partition = broker.partition(TOPIC, 0).unwrap();
    assert_eq!(partition.log.log_start_offset() as i64, end - 10);
    assert_eq!(partition.log.log_end_offset() as i64, end);
}

#[tokio::test]
async fn a_write_that_fails_on_a_full_disk_leaves_no_temporary_file() {
    let node = Node::new();
    let disk: &dyn Disk = &node.disk;
    disk.create_dir_all(Path::new("/data")).await.unwrap();
    node.fill_disk();
    let err = disk::write_file_atomic(disk, Path::new("/data/meta.toml"), b"x = 1\n")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(node.tmp_files().await, Vec::<PathBuf>::new());
}
