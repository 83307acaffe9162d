// Real sockets, threads and wall-clock time, and a real librdkafka: the determinism rules in
// clippy.toml are for broker code, not for these tests.
#![allow(clippy::disallowed_methods)]
//! Fetch from the closest replica (KIP-392) on three in-process brokers in racks a, b and c,
//! with the rack-aware replica selector: a consumer that names its rack is sent by the leader
//! to the in-sync replica in that rack and reads there, never above that replica's high
//! watermark.
//!
//! The bugs these guard against: a follower serving records it holds above its high watermark
//! (records a failover may take back, read by a consumer), a leader pointing consumers at a
//! replica outside the ISR or in another rack, and a follower answering old clients (which
//! cannot be told to go back) instead of sending them to the leader.
#![cfg(not(madsim))]

mod in_process;
mod replicated_cluster;

use std::time::Duration;

use broker::config::{BrokerConfig, ReplicaSelector};
use broker::controller::plane::MetadataPlane;
use broker::controller::request::ControllerRequest;
use broker::log::batch::{builder, BatchHeader};
use bytes::Bytes;
use in_process::call;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use replicated_cluster::{Cluster, Settings, WAIT};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

fn rack(id: i32) -> String {
    ["a", "b", "c"][(id - 1) as usize].to_string()
}

fn racks_and_rack_aware_selector(id: i32, config: &mut BrokerConfig) {
    config.broker_rack = Some(rack(id));
    config.replica_selector = ReplicaSelector::RackAware;
}

fn start(session_ms: u64) -> Cluster {
    Cluster::start_configured(
        Settings {
            lag_ms: session_ms.max(30_000),
            session_ms,
            offsets_partitions: 1,
        },
        racks_and_rack_aware_selector,
    )
}

/// Creates `name`-0 on all three brokers and waits until each has it. Returns (leader, a
/// follower, the other follower).
fn create_topic(cluster: &Cluster, name: &str) -> (i32, i32, i32) {
    let broker = cluster.broker(1);
    cluster
        .driver
        .block_on(broker.create_topic(name, 1, 3, &[], false))
        .unwrap();
    cluster.eventually(&format!("{name}-0 open everywhere"), || {
        cluster.open_everywhere(name)
    });
    let replicas = cluster
        .plane
        .image()
        .partition(name, 0)
        .unwrap()
        .replicas
        .clone();
    let leader = cluster.leader(name);
    let mut followers = replicas.into_iter().filter(|&r| r != leader);
    (leader, followers.next().unwrap(), followers.next().unwrap())
}

fn fetch(topic: &str, offset: i64, rack: &str) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_rack_id(StrBytes::from_string(rack.to_string()))
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)])])
}

fn fetch_from(cluster: &Cluster, id: i32, version: i16, request: &FetchRequest) -> FetchResponse {
    let broker = cluster.broker(id);
    cluster
        .driver
        .block_on(call(&broker, ApiKey::Fetch, version, request))
}

/// The offsets of the records a fetch response carries: (first, end).
fn offsets(response: &FetchResponse) -> Option<(i64, i64)> {
    let records = response.responses[0].partitions[0].records.as_ref()?;
    let mut pos = 0;
    let mut range: Option<(i64, i64)> = None;
    while pos < records.len() {
        let header = BatchHeader::parse(&records[pos..]).unwrap();
        let (first, end) = (header.base_offset, header.last_offset() + 1);
        range = Some(range.map_or((first, end), |(f, _)| (f, end)));
        pos += header.size();
    }
    range
}

fn produce(cluster: &Cluster, leader: i32, topic: &str, acks: i16, count: usize) {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(builder::simple(
                    count,
                    10,
                    b'v',
                    1_700_000_000_000,
                ))))])]);
    let broker = cluster.broker(leader);
    let response: ProduceResponse =
        cluster
            .driver
            .block_on(call(&broker, ApiKey::Produce, 9, &request));
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

#[test]
fn a_follower_serves_consumers_up_to_its_high_watermark_and_the_leader_points_them_to_it() {
    // Sessions and lag long enough that a stopped follower stays in the ISR: the high
    // watermark stops while the other follower's log goes on.
    let mut cluster = start(60_000);
    let (leader, follower, other) = create_topic(&cluster, "h");
    produce(&cluster, leader, "h", -1, 5);
    cluster.eventually("every replica at HW 5", || {
        [leader, follower, other]
            .iter()
            .all(|&id| cluster.replica(id, "h").high_watermark() == 5)
    });

    // The leader sends a consumer in the follower's rack there, with no records; one in its
    // own rack or an unknown one reads from it.
    let to_leader = fetch_from(&cluster, leader, 12, &fetch("h", 0, &rack(follower)));
    let p = &to_leader.responses[0].partitions[0];
    assert_eq!((p.error_code, p.preferred_read_replica.0), (0, follower));
    assert_eq!(
        offsets(&to_leader),
        None,
        "no records with a preferred replica"
    );
    assert_eq!(p.high_watermark, 5);
    for rack in [rack(leader), "z".to_string(), String::new()] {
        let response = fetch_from(&cluster, leader, 12, &fetch("h", 0, &rack));
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.preferred_read_replica.0, -1, "rack {rack:?}");
        assert_eq!(offsets(&response), Some((0, 5)), "rack {rack:?}");
    }

    // One follower stops but stays in the ISR: acks=1 records reach the other follower's log
    // and stay above everyone's high watermark.
    cluster.stop(other);
    produce(&cluster, leader, "h", 1, 10);
    cluster.eventually("the follower's log at 15", || {
        cluster.replica(follower, "h").log.log_end_offset() == 15
    });
    assert_eq!(cluster.replica(follower, "h").high_watermark(), 5);

    // The follower serves below its high watermark only.
    let reads = cluster.broker(follower).follower_reads();
    let from_follower = fetch_from(&cluster, follower, 12, &fetch("h", 0, &rack(follower)));
    let p = &from_follower.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 5));
    assert_eq!(offsets(&from_follower), Some((0, 5)));
    assert_eq!(cluster.broker(follower).follower_reads(), reads + 1);
    // Between its high watermark and its log end: nothing yet; past its log end: out of range.
    let waiting = fetch_from(&cluster, follower, 12, &fetch("h", 5, &rack(follower)));
    assert_eq!(waiting.responses[0].partitions[0].error_code, 0);
    assert_eq!(offsets(&waiting), None);
    let past = fetch_from(&cluster, follower, 12, &fetch("h", 16, &rack(follower)));
    assert_eq!(
        past.responses[0].partitions[0].error_code,
        OFFSET_OUT_OF_RANGE
    );
    // A consumer before v11 (no client metadata) reads from the leader only, as in Kafka.
    let old = fetch_from(&cluster, follower, 10, &fetch("h", 0, ""));
    assert_eq!(
        old.responses[0].partitions[0].error_code,
        NOT_LEADER_OR_FOLLOWER
    );

    // The follower leaves the ISR (the controller takes a broker that asks to shut down out of
    // every ISR, and it never rejoins while shutting down) but keeps running: its high
    // watermark no longer follows the leader's, so it sends consumers back to the leader.
    let epoch = cluster.plane.image().brokers[&follower].epoch;
    cluster
        .driver
        .block_on(cluster.plane.submit(ControllerRequest::Heartbeat {
            id: follower,
            epoch,
            caught_up_offset: i64::MAX,
            want_shutdown: true,
        }))
        .unwrap();
    cluster.eventually("the follower sees itself out of the ISR", || {
        let image = cluster.broker(follower).image();
        !image.partition("h", 0).unwrap().isr.contains(&follower)
    });
    let out_of_sync = fetch_from(&cluster, follower, 12, &fetch("h", 0, &rack(follower)));
    let p = &out_of_sync.responses[0].partitions[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id.0, leader, "names the leader");
    assert_eq!(offsets(&out_of_sync), None);
}

fn producer(cluster: &Cluster) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap()
}

fn values(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("record-{i:04}")).collect()
}

#[test]
fn a_librdkafka_consumer_with_client_rack_reads_everything_from_the_follower_in_its_rack() {
    let cluster = start(10_000);
    let (leader, follower, other) = create_topic(&cluster, "f");
    let producer = producer(&cluster);
    cluster.driver.block_on(async {
        for value in values(0..200) {
            producer
                .send(
                    FutureRecord::<(), _>::to("f").partition(0).payload(&value),
                    Duration::from_secs(60),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("{value} not acknowledged: {e}"));
        }
    });
    let before = |id: i32| cluster.broker(id).follower_reads();
    let (leader_reads, other_reads) = (before(leader), before(other));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "fetch-from-follower")
        .set("enable.auto.commit", "false")
        .set("client.rack", rack(follower))
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("f", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut read = Vec::new();
    while read.len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of 200 records",
            read.len()
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            read.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(read, values(0..200), "every record, once, in order");
    assert!(
        cluster.broker(follower).follower_reads() > 0,
        "the consumer never read from the follower in its rack"
    );
    assert_eq!(before(leader), leader_reads, "a leader is no follower");
    assert_eq!(
        before(other),
        other_reads,
        "the consumer read from the follower in another rack"
    );

    // Our own consumer with client_rack does the same.
    let follower_reads = before(follower);
    let read = cluster.driver.block_on(async {
        let client = client::Client::connect(client::ClientConfig::new(cluster.bootstrap()))
            .await
            .unwrap();
        let config = client::ConsumerConfig {
            auto_offset_reset: client::OffsetReset::Earliest,
            client_rack: Some(rack(follower)),
            ..client::ConsumerConfig::default()
        };
        let mut consumer = client::Consumer::new(client, config);
        consumer.assign([("f".to_string(), 0)]);
        let mut read = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while read.len() < 200 {
            assert!(std::time::Instant::now() < deadline, "read {}", read.len());
            for record in consumer.poll().await.unwrap() {
                read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
        }
        read
    });
    assert_eq!(read, values(0..200));
    assert!(
        before(follower) > follower_reads,
        "not read from the follower"
    );
    assert_eq!(before(other), other_reads);
}
