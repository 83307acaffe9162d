//! `cleanup.policy` through the protocol, in process: a list config that IncrementalAlterConfigs
//! APPEND and SUBTRACT change, that DescribeConfigs reports, and that the log honours (a
//! compacted topic refuses records without a key, KIP-467, and its log is cleaned).
//!
//! The bugs these guard against: `cleanup.policy=compact` refused (Kafka users' changelog
//! topics could not be created), APPEND/SUBTRACT answered "not a list config", a keyless
//! record appended to a compacted log (the cleaner could never tell which is the latest), and
//! a policy accepted but not honoured.
#![cfg(not(madsim))]

mod in_process;

use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use broker::log::batch::builder;
use in_process::call;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

async fn open(dir: &std::path::Path) -> Arc<Broker> {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..BrokerConfig::default()
    };
    Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap()
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

async fn alter(broker: &Arc<Broker>, topic: &str, op: i8, value: &str) -> i16 {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(s("cleanup.policy"))
                    .with_config_operation(op)
                    .with_value(Some(s(value))),
            ]),
    ]);
    let response: IncrementalAlterConfigsResponse =
        call(broker, ApiKey::IncrementalAlterConfigs, 1, &request).await;
    response.responses[0].error_code
}

async fn policy(broker: &Arc<Broker>, topic: &str) -> (String, i8) {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configuration_keys(Some(vec![s("cleanup.policy")])),
    ]);
    let response: DescribeConfigsResponse =
        call(broker, ApiKey::DescribeConfigs, 1, &request).await;
    let entry = &response.results[0].configs[0];
    (
        entry.value.as_ref().unwrap().to_string(),
        entry.config_source,
    )
}

async fn produce(
    broker: &Arc<Broker>,
    topic: &str,
    batch: Vec<u8>,
) -> PartitionProduceResponseView {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.into())),
            ])]);
    let response: ProduceResponse = call(broker, ApiKey::Produce, 9, &request).await;
    let p = &response.responses[0].partition_responses[0];
    PartitionProduceResponseView {
        error_code: p.error_code,
        error_message: p.error_message.as_ref().map(|m| m.to_string()),
        record_errors: p
            .record_errors
            .iter()
            .map(|e| {
                (
                    e.batch_index,
                    e.batch_index_error_message.as_ref().map(|m| m.to_string()),
                )
            })
            .collect(),
    }
}

#[derive(Debug)]
struct PartitionProduceResponseView {
    error_code: i16,
    error_message: Option<String>,
    record_errors: Vec<(i32, Option<String>)>,
}

#[tokio::test]
async fn cleanup_policy_is_a_list_that_append_and_subtract_change_and_describe_reports() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker.create_topic("t", 1, 1, &[], false).await.unwrap();
    assert_eq!(policy(&broker, "t").await, ("delete".to_string(), 5));
    // APPEND to the default.
    assert_eq!(alter(&broker, "t", 2, "compact").await, 0);
    assert_eq!(
        policy(&broker, "t").await,
        ("delete,compact".to_string(), 1)
    );
    assert!(broker.partition("t", 0).unwrap().log.config().compact);
    // SUBTRACT.
    assert_eq!(alter(&broker, "t", 3, "delete").await, 0);
    assert_eq!(policy(&broker, "t").await.0, "compact");
    let log = broker.partition("t", 0).unwrap().log.config();
    assert!(log.compact && !log.delete);
    // Nothing left, or an unknown item: INVALID_CONFIG (40), nothing changes.
    assert_eq!(alter(&broker, "t", 3, "compact").await, 40);
    assert_eq!(alter(&broker, "t", 2, "shred").await, 40);
    assert_eq!(policy(&broker, "t").await.0, "compact");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_compacted_topic_refuses_records_without_a_key_with_a_record_error_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let configs = [("cleanup.policy".to_string(), "compact".to_string())];
    broker
        .create_topic("c", 1, 1, &configs, false)
        .await
        .unwrap();
    let record = |key: Option<&str>| builder::Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(b"v".to_vec()),
        timestamp_ms: 1,
    };
    let refused = produce(
        &broker,
        "c",
        builder::batch(&[
            record(Some("a")),
            record(None),
            record(Some("b")),
            record(None),
        ]),
    )
    .await;
    assert_eq!(refused.error_code, 87, "INVALID_RECORD: {refused:?}");
    assert_eq!(
        refused
            .record_errors
            .iter()
            .map(|(i, _)| *i)
            .collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert!(refused.record_errors[0]
        .1
        .as_deref()
        .unwrap()
        .contains("Compacted topic cannot accept message without key"));
    assert!(refused.error_message.is_some());
    assert_eq!(
        broker.partition("c", 0).unwrap().log.log_end_offset(),
        0,
        "nothing of the refused batch was appended"
    );
    let accepted = produce(&broker, "c", builder::batch(&[record(Some("a"))])).await;
    assert_eq!(accepted.error_code, 0);
    // A topic that deletes takes keyless records as before.
    broker.create_topic("d", 1, 1, &[], false).await.unwrap();
    assert_eq!(
        produce(&broker, "d", builder::batch(&[record(None)]))
            .await
            .error_code,
        0
    );
    broker.shutdown().await;
}

async fn commit(broker: &Arc<Broker>, offset: i64) -> i16 {
    let response: OffsetCommitResponse = call(
        broker,
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s("migrated")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset),
                    ]),
            ]),
    )
    .await;
    response.topics[0].partitions[0].error_code
}

async fn committed(broker: &Arc<Broker>) -> i64 {
    let response: OffsetFetchResponse = call(
        broker,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("migrated")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0]),
            ])),
    )
    .await;
    assert_eq!(response.error_code, 0);
    response.topics[0].partitions[0].committed_offset
}

/// Counts one more 50 ms wait; false once 20 s of them have passed.
fn next_try(tries: &mut u32) -> bool {
    *tries += 1;
    *tries < 400
}

/// The `__consumer_offsets` partition holding the group's commits (the one with data).
fn offsets_partition(broker: &Arc<Broker>) -> Arc<broker::partition::Partition> {
    broker
        .topic("__consumer_offsets")
        .unwrap()
        .partitions
        .iter()
        .find(|p| p.log.log_end_offset() > 0)
        .cloned()
        .expect("a partition holds the commits")
}

#[tokio::test]
async fn an_offsets_topic_from_before_compaction_is_switched_to_compact_on_start_and_cleaned() {
    // The bug: a data directory written before compaction keeps its `__consumer_offsets` on
    // `delete` (the topic grows forever and start-up time with it), or the switch loses
    // committed offsets.
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker.create_topic("t", 1, 1, &[], false).await.unwrap();
    broker.offsets_topic().await.unwrap();
    // What an old data directory holds: the offsets topic without a `cleanup.policy` (the
    // broker's default, delete), written to with small segments.
    let old = [
        ("retention.ms".to_string(), "-1".to_string()),
        ("segment.bytes".to_string(), "1024".to_string()),
    ];
    broker
        .set_topic_configs(
            "__consumer_offsets",
            broker::config::TopicConfigs {
                overrides: old.into_iter().collect(),
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(policy(&broker, "__consumer_offsets").await.0, "delete");
    let mut tries = 0;
    while commit(&broker, 0).await != 0 {
        assert!(next_try(&mut tries), "the coordinator never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for offset in 1..=300 {
        assert_eq!(commit(&broker, offset).await, 0);
    }
    let partition = offsets_partition(&broker);
    let segments_before = partition.log.segment_count().await;
    let bytes_before = partition.log.size_bytes().await;
    assert!(segments_before > 10);
    drop(partition);
    broker.shutdown().await;
    drop(broker);

    // On start the broker switches it to compact, through the metadata log.
    let broker = open(dir.path()).await;
    let mut tries = 0;
    while policy(&broker, "__consumer_offsets").await.0 != "compact" {
        assert!(next_try(&mut tries), "never switched to compact");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let configs = broker
        .image()
        .topic("__consumer_offsets")
        .unwrap()
        .configs
        .clone();
    assert_eq!(
        configs.get("segment.bytes").map(String::as_str),
        Some("1024"),
        "its other configs stay"
    );
    assert_eq!(committed(&broker).await, 300);
    // The cleaner takes it now.
    let mut cleaner = broker.log_cleaner(Arc::new(std::sync::atomic::AtomicBool::new(false)));
    assert!(
        broker.clean_dirtiest_log(&mut cleaner).await,
        "the offsets log is cleaned"
    );
    while broker.clean_dirtiest_log(&mut cleaner).await {}
    let partition = offsets_partition(&broker);
    assert!(
        partition.log.size_bytes().await < bytes_before / 4,
        "{} bytes of {bytes_before}",
        partition.log.size_bytes().await
    );
    drop(partition);
    assert_eq!(
        committed(&broker).await,
        300,
        "the latest commit survives cleaning"
    );
    broker.shutdown().await;
    drop(broker);

    // And loads from the compacted log on the next start.
    let broker = open(dir.path()).await;
    assert_eq!(policy(&broker, "__consumer_offsets").await.0, "compact");
    let mut tries = 0;
    loop {
        let fetched: OffsetFetchResponse = call(
            &broker,
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s("migrated")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0]),
                ])),
        )
        .await;
        if fetched.error_code == 0 {
            assert_eq!(fetched.topics[0].partitions[0].committed_offset, 300);
            break;
        }
        assert!(next_try(&mut tries), "offsets never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    broker.shutdown().await;
}
