//! Kafka's "consumer" embedded protocol: the `ConsumerProtocolSubscription` a member sends in
//! JoinGroup and the `ConsumerProtocolAssignment` the leader hands out in SyncGroup, each a
//! version (i16) and then the body in that version. The coordinator reads subscriptions (offset
//! expiry keeps the offsets of subscribed topics), the client writes and reads both, the admin
//! client reads assignments.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

/// The subscription version this broker's client writes (v1 adds owned partitions).
pub const SUBSCRIPTION_VERSION: i16 = 1;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A `ConsumerProtocolSubscription` (a version, then the body in that version).
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| s(t)).collect())
        .with_user_data(None);
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    subscription
        .encode(&mut buf, SUBSCRIPTION_VERSION)
        .expect("a subscription always encodes");
    buf.freeze()
}

/// The topics of a `ConsumerProtocolSubscription`. Versions newer than the codec knows are
/// read as its newest, as Kafka's `ConsumerProtocol` does (they only add fields at the end).
pub fn decode_subscription(bytes: &[u8]) -> Option<Vec<String>> {
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.len() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if version < 0 {
        return None;
    }
    let version = version.min(ConsumerProtocolSubscription::VERSIONS.max);
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// A `ConsumerProtocolAssignment` in `version` (0–3, the same fields in each).
pub fn encode_assignment(partitions: &[(String, i32)], version: i16) -> Bytes {
    let version = version.clamp(0, ConsumerProtocolAssignment::VERSIONS.max);
    let mut topics: Vec<consumer_protocol_assignment::TopicPartition> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(*partition),
            None => topics.push(
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    let assignment = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(topics)
        .with_user_data(None);
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    assignment
        .encode(&mut buf, version)
        .expect("an assignment always encodes");
    buf.freeze()
}

/// The partitions of a `ConsumerProtocolAssignment`, sorted. Empty bytes are an empty
/// assignment (what the coordinator hands a member the leader gave nothing).
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.len() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if version < 0 {
        return None;
    }
    let version = version.min(ConsumerProtocolAssignment::VERSIONS.max);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    let mut partitions: Vec<(String, i32)> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
        .collect();
    partitions.sort();
    partitions.dedup();
    Some(partitions)
}
