#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Topic administration through librdkafka's admin client: CreateTopics, DescribeConfigs,
//! DeleteTopics and the Metadata that must agree with them.
//!
//! The bugs these guard against: a created topic missing from Metadata or with the wrong
//! partition count, a config override that is accepted but not reported (or reported as a
//! default), a deleted topic that still answers, an error code librdkafka cannot map.

mod common_broker;

use std::collections::HashMap;

use common_broker::*;
use rdkafka::admin::{AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;

fn options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(WAIT))
        .request_timeout(Some(WAIT))
}

/// Metadata for one topic: its partition count, or the error the broker gave.
fn topic_metadata(broker: &TestBroker, topic: &str) -> Result<usize, RDKafkaRespErr> {
    let metadata = consumer(&broker.bootstrap())
        .fetch_metadata(Some(topic), WAIT)
        .expect("Metadata request");
    let entry = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("the topic asked for is in the answer");
    match entry.error() {
        Some(e) => Err(e),
        None => Ok(entry.partitions().len()),
    }
}

#[test]
fn topics_are_created_described_and_deleted_through_the_admin_api() {
    let broker = TestBroker::start_with(|c| c.auto_create_topics = false);
    let admin = broker.admin();
    let plain = topic_name("admin-plain");
    let tuned = topic_name("admin-tuned");
    let topics = [
        NewTopic::new(&plain, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&tuned, 1, TopicReplication::Fixed(1))
            .set("retention.ms", "3600000")
            .set("message.timestamp.type", "LogAppendTime"),
    ];
    let created = broker
        .block_on(admin.create_topics(&topics, &options()))
        .expect("CreateTopics");
    assert_eq!(created, vec![Ok(plain.clone()), Ok(tuned.clone())]);
    assert_eq!(topic_metadata(&broker, &plain), Ok(3));
    assert_eq!(topic_metadata(&broker, &tuned), Ok(1));

    // Creating it again is TOPIC_ALREADY_EXISTS; an impossible replication factor is refused.
    let again = broker
        .block_on(admin.create_topics(&topics[..1], &options()))
        .expect("CreateTopics");
    assert_eq!(
        again,
        vec![Err((plain.clone(), RDKafkaErrorCode::TopicAlreadyExists))]
    );
    let replicated = topic_name("admin-replicated");
    let refused = broker
        .block_on(admin.create_topics(
            [&NewTopic::new(&replicated, 1, TopicReplication::Fixed(3))],
            &options(),
        ))
        .expect("CreateTopics");
    assert_eq!(
        refused,
        vec![Err((
            replicated.clone(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))]
    );

    // DescribeConfigs: overrides are reported as topic configs, everything else as defaults.
    let described = broker
        .block_on(admin.describe_configs(
            &[
                ResourceSpecifier::Topic(&tuned),
                ResourceSpecifier::Topic(&plain),
            ],
            &options(),
        ))
        .expect("DescribeConfigs");
    let tuned_configs = described[0].as_ref().expect("configs of the tuned topic");
    let entries: HashMap<&str, _> = tuned_configs.entry_map();
    let retention = entries["retention.ms"];
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    assert!(!retention.is_default);
    assert_eq!(
        entries["message.timestamp.type"].value.as_deref(),
        Some("LogAppendTime")
    );
    let cleanup = entries["cleanup.policy"];
    assert_eq!(cleanup.value.as_deref(), Some("delete"));
    assert_eq!(cleanup.source, ConfigSource::Default);
    let plain_configs = described[1].as_ref().expect("configs of the plain topic");
    assert_eq!(
        plain_configs.entry_map()["message.timestamp.type"]
            .value
            .as_deref(),
        Some("CreateTime")
    );

    // DeleteTopics: gone from Metadata; deleting it twice is UNKNOWN_TOPIC_OR_PARTITION.
    let deleted = broker
        .block_on(admin.delete_topics(&[&plain], &options()))
        .expect("DeleteTopics");
    assert_eq!(deleted, vec![Ok(plain.clone())]);
    assert_eq!(
        topic_metadata(&broker, &plain),
        Err(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
    let twice = broker
        .block_on(admin.delete_topics(&[&plain], &options()))
        .expect("DeleteTopics");
    assert_eq!(
        twice,
        vec![Err((
            plain.clone(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );
    assert_eq!(
        topic_metadata(&broker, &tuned),
        Ok(1),
        "the other topic is untouched"
    );

    // Describing a topic that does not exist answers that resource with an error and no
    // entries. (The rdkafka crate drops the per-resource error code and returns Ok, so only the
    // missing entries are visible here.)
    let missing = broker
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(&plain)], &options()))
        .expect("DescribeConfigs");
    let entries = missing[0].as_ref().map(|resource| resource.entries.len());
    assert_eq!(entries, Ok(0), "no configs for a deleted topic");
}

#[test]
fn an_invalid_topic_config_is_refused_with_invalid_config() {
    let broker = TestBroker::start_with(|c| c.auto_create_topics = false);
    let admin = broker.admin();
    let name = topic_name("admin-bad-config");
    let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(1)).set("retention.ms", "soon");
    let result = broker
        .block_on(admin.create_topics([&topic], &options()))
        .expect("CreateTopics");
    assert_eq!(
        result,
        vec![Err((name.clone(), RDKafkaErrorCode::InvalidConfig))]
    );
    assert_eq!(
        topic_metadata(&broker, &name),
        Err(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        "a refused topic is not half-created"
    );
}
