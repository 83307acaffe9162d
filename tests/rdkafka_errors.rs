#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! Errors librdkafka must see with the right Kafka code, so it fails the record instead of
//! retrying forever (or retries instead of failing).
//!
//! The bugs these guard against: an oversized batch accepted because only the client checked
//! its size, or refused with a retriable code (librdkafka would retry until message.timeout.ms);
//! a produce to a missing topic that auto-creates it although auto-creation is off.

mod common_broker;

use common_broker::*;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;

#[test]
fn an_oversized_record_is_refused_by_the_broker_with_message_too_large() {
    let broker = TestBroker::start();
    let topic = topic_name("oversized");
    broker.create_topic(&topic, 1, &[("max.message.bytes", "1024")]);
    // The producer's own limit (message.max.bytes, 1 MB by default) is far above the record,
    // so the client sends it and the broker is the one that must refuse it.
    let producer = producer(
        &broker.bootstrap(),
        &[("acks", "all"), ("compression.type", "none")],
    );
    let big: Vec<u8> = (0..4_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let records = [Outgoing {
        partition: Some(0),
        value: Some(big),
        ..Outgoing::default()
    }];
    let reports = send_all(&producer, &topic, &records);
    assert_eq!(
        reports,
        vec![Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
        ))],
        "the broker refuses a batch above the topic's max.message.bytes"
    );
    // A record that fits still goes through, and only it is in the log.
    let small = [Outgoing {
        partition: Some(0),
        value: Some(b"fits".to_vec()),
        ..Outgoing::default()
    }];
    assert_eq!(send_ok(&producer, &topic, &small), vec![(0, 0)]);
    let stored = read_all(&broker.bootstrap(), &topic, 0);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].payload(), Some(&b"fits"[..]));
}

#[test]
fn producing_to_an_unknown_topic_with_auto_create_disabled_fails_with_unknown_topic_or_partition() {
    let broker = TestBroker::start_with(|c| c.auto_create_topics = false);
    let topic = topic_name("never-created");
    let metadata = consumer(&broker.bootstrap())
        .fetch_metadata(Some(&topic), WAIT)
        .expect("Metadata request");
    assert_eq!(metadata.topics().len(), 1);
    assert_eq!(
        metadata.topics()[0].error(),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );

    // The producer asks to auto-create (allow.auto.create.topics defaults to true for producers);
    // the broker must still refuse. librdkafka then fails the record once
    // topic.metadata.propagation.max.ms has passed.
    let producer = producer(
        &broker.bootstrap(),
        &[
            ("acks", "all"),
            ("topic.metadata.propagation.max.ms", "200"),
        ],
    );
    let records = [Outgoing {
        value: Some(b"lost".to_vec()),
        ..Outgoing::default()
    }];
    let reports = send_all(&producer, &topic, &records);
    assert_eq!(
        reports,
        vec![Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );

    let metadata = consumer(&broker.bootstrap())
        .fetch_metadata(Some(&topic), WAIT)
        .expect("Metadata request");
    assert_eq!(
        metadata.topics()[0].error(),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        "the topic was not created behind the client's back"
    );
}
