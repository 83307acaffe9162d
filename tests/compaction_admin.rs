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
