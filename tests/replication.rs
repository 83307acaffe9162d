// Real sockets, threads and wall-clock time, and a real librdkafka: the determinism rules in
// clippy.toml are for broker code, not for these tests.
#![allow(clippy::disallowed_methods)]
//! Replication between three brokers in one process, each on its own tokio runtime and its own
//! loopback listener, sharing one in-memory metadata plane (a `SoloPlane` owned by no broker,
//! so every broker's session can expire). Followers fetch from leaders over real TCP.
//!
//! The bug stories: acks=all acknowledged before the followers had the batch, so a leader's
//! death loses it; a consumer reading past the high watermark a record that a failover then
//! takes back; an old leader that comes back and serves (or keeps) the tail the new leader
//! never had; min.insync.replicas ignored, so acks=all "succeeds" on one copy.
//!
//! A killed broker is its runtime shut down: its tasks and sockets die at once, without a
//! controlled shutdown, and its files stay as they were (what a kill -9 leaves, minus the page
//! cache loss that the simulator's faulty disk models).
#![cfg(not(madsim))]

mod in_process;
mod replicated_cluster;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker::clock::SystemClock;
use broker::config::{BrokerConfig, TopicConfigs};
use broker::controller::plane::MetadataPlane;
use broker::controller::NO_NODE;
use broker::disk::FileDisk;
use broker::log::batch::{builder, BatchHeader};
use broker::log::Log;
use broker::partition::Partition;
use bytes::Bytes;
use in_process::call;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use replicated_cluster::{Cluster, Settings, WAIT};

const NOT_ENOUGH_REPLICAS: i16 = 19;
const REQUEST_TIMED_OUT: i16 = 7;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// Brokers 1, 2 and 3, fenced `session_ms` after their last heartbeat; the ISR shrinks by lag
/// no sooner than by a session's expiry (the tests that keep a dead follower in the ISR never
/// let either pass).
fn start(session_ms: u64) -> Cluster {
    Cluster::start(Settings {
        lag_ms: session_ms.max(30_000),
        session_ms,
        offsets_partitions: BrokerConfig::default().offsets_topic_num_partitions,
    })
}

/// Creates `name` with one partition of three replicas and waits until every broker has it.
fn create_topic(cluster: &Cluster, name: &str, configs: &[(&str, &str)]) {
    let configs: Vec<(String, String)> = configs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let broker = cluster.broker(1);
    cluster
        .driver
        .block_on(broker.create_topic(name, 1, 3, &configs, false))
        .unwrap();
    cluster.eventually(&format!("{name}-0 open on every broker"), || {
        cluster.open_everywhere(name)
    });
}

/// Every stored byte of a replica's log, from its start to its end.
fn log_bytes(driver: &tokio::runtime::Runtime, partition: &Partition) -> Vec<u8> {
    driver.block_on(async {
        let end = partition.log.log_end_offset();
        let mut offset = partition.log.log_start_offset();
        let mut out = Vec::new();
        while offset < end {
            let read = partition.log.read(offset, 1 << 20, None).await.unwrap();
            assert!(
                !read.records.is_empty(),
                "a read below the log end finds batches"
            );
            let mut pos = 0;
            while pos < read.records.len() {
                let header = BatchHeader::parse(&read.records[pos..]).unwrap();
                offset = header.last_offset() as u64 + 1;
                pos += header.size();
            }
            out.extend_from_slice(&read.records);
        }
        out
    })
}

fn producer(cluster: &Cluster) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "50")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap()
}

/// Produces `values` in order, each acknowledged before the next is sent.
fn produce_all(cluster: &Cluster, producer: &FutureProducer, topic: &str, values: &[String]) {
    cluster.driver.block_on(async {
        for value in values {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).partition(0).payload(value),
                    Duration::from_secs(60),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("{value} not acknowledged: {e}"));
        }
    });
}

/// Every value a consumer reads from the start of the partition until it has `count`.
fn consume(cluster: &Cluster, topic: &str, count: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "replication-test")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut values = Vec::new();
    // librdkafka reports transient errors through poll (the dead broker of the bootstrap list
    // refusing connections): kept for the failure message, not fatal.
    let mut errors = Vec::new();
    while values.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {count} records; errors: {errors:?}",
            values.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                values.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap())
            }
            Some(Err(e)) => errors.push(e.to_string()),
            None => {}
        }
    }
    values
}

fn values(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("record-{i:04}")).collect()
}

fn produce_request(topic: &str, acks: i16, timeout_ms: i32) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(builder::simple(
                    1,
                    10,
                    b'v',
                    1_700_000_000_000,
                ))))])])
}

/// An acks=all produce of one idempotent batch: `count` records from `base_sequence`.
fn idempotent_produce(topic: &str, base_sequence: i32, count: usize) -> ProduceRequest {
    let batch = builder::with_producer(
        builder::simple(count, 10, b'i', 1_700_000_000_000),
        4242,
        0,
        base_sequence,
    );
    let mut request = produce_request(topic, -1, 30_000);
    request.topic_data[0].partition_data[0].records = Some(Bytes::from(batch));
    request
}

fn consumer_fetch(topic: &str) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)])])
}

const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// KIP-320 and KIP-101 on the new leader: clients with an old epoch are fenced, clients ahead
/// of it told it does not know their epoch yet, and OffsetsForLeaderEpoch says where the old
/// epoch ended (50: the new leader never had the old leader's divergent tail).
fn check_leader_epochs(cluster: &Cluster, leader: i32, old_epoch: i32) {
    let broker = cluster.broker(leader);
    let epoch = cluster.replica(leader, "r").leader_epoch();
    for (current, expected) in [
        (old_epoch, FENCED_LEADER_EPOCH),
        (epoch + 1, UNKNOWN_LEADER_EPOCH),
        (epoch, 0),
    ] {
        let mut request = consumer_fetch("r");
        request.topics[0].partitions[0].current_leader_epoch = current;
        let fetched: FetchResponse =
            cluster
                .driver
                .block_on(call(&broker, ApiKey::Fetch, 12, &request));
        assert_eq!(
            fetched.responses[0].partitions[0].error_code, expected,
            "Fetch with current leader epoch {current}"
        );
        let listed: ListOffsetsResponse = cluster.driver.block_on(call(
            &broker,
            ApiKey::ListOffsets,
            7,
            &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("r")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_current_leader_epoch(current)
                    .with_timestamp(-1)])]),
        ));
        assert_eq!(
            listed.topics[0].partitions[0].error_code, expected,
            "ListOffsets with current leader epoch {current}"
        );
    }
    let answered: OffsetForLeaderEpochResponse = cluster.driver.block_on(call(
        &broker,
        ApiKey::OffsetForLeaderEpoch,
        4,
        &OffsetForLeaderEpochRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("r")))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(epoch)
                    .with_leader_epoch(old_epoch)])]),
    ));
    let end = &answered.topics[0].partitions[0];
    assert_eq!(
        (end.error_code, end.leader_epoch, end.end_offset),
        (0, old_epoch, 50)
    );
}

/// Waits until the controller's image names a leader of `topic`-0 other than `old` and that
/// broker has applied it: the image names it first, and until the broker applies it, it
/// answers NOT_LEADER_OR_FOLLOWER (which a client retries; these tests send exactly once).
fn new_leader_leading(cluster: &Cluster, topic: &str, old: i32) -> i32 {
    cluster.eventually("a new leader, leading", || {
        let leader = cluster.leader(topic);
        leader != old
            && leader != NO_NODE
            && cluster.replica(leader, topic).replica_state().is_leader()
    });
    cluster.leader(topic)
}

#[test]
fn an_rf3_topic_survives_its_leaders_death_and_the_old_leader_truncates_its_divergent_tail() {
    let mut cluster = start(2_000);
    create_topic(&cluster, "r", &[]);
    let producer = producer(&cluster);
    produce_all(&cluster, &producer, "r", &values(0..50));

    // Followers catch up: every replica holds the same bytes, and the same high watermark.
    let first = cluster.leader("r");
    cluster.eventually("every replica at 50 with HW 50", || {
        (1..=3).all(|id| {
            let p = cluster.replica(id, "r");
            p.log.log_end_offset() == 50 && p.high_watermark() == 50
        })
    });
    let leader_bytes = log_bytes(&cluster.driver, &cluster.replica(first, "r"));
    for id in 1..=3 {
        assert_eq!(
            log_bytes(&cluster.driver, &cluster.replica(id, "r")),
            leader_bytes,
            "broker {id}'s log differs from the leader's"
        );
    }

    // The leader dies; the controller fences it and elects another ISR member.
    cluster.stop(first);
    let second = new_leader_leading(&cluster, "r", first);
    assert!(cluster.isr("r").contains(&second));

    // The dead leader's log gets a tail no one else has: batches of its old epoch that never
    // reached a follower (what a leader holds when it dies mid-replication).
    let old_epoch = {
        let dir = cluster.data_dir(first).join("r-0");
        let config = TopicConfigs::default().log_config(&BrokerConfig::default());
        cluster.driver.block_on(async {
            let log = Log::open(
                Arc::new(FileDisk::new()),
                Arc::new(SystemClock),
                dir,
                config,
            )
            .await
            .unwrap();
            let epoch = log.leader_epochs().await.latest_epoch().unwrap();
            for _ in 0..3 {
                log.append(&mut builder::simple(4, 10, b'z', 1_700_000_000_000), epoch)
                    .await
                    .unwrap();
            }
            assert_eq!(log.log_end_offset(), 62);
            log.close().await.unwrap();
            epoch
        })
    };

    // Production continues on the new leader, and nothing acknowledged is lost.
    produce_all(&cluster, &producer, "r", &values(50..100));
    assert_eq!(consume(&cluster, "r", 100), values(0..100));
    assert!(cluster.replica(second, "r").leader_epoch() > old_epoch);
    check_leader_epochs(&cluster, second, old_epoch);

    // The old leader comes back as a follower, truncates what the new leader never had and
    // ends up with exactly the new leader's log.
    cluster.start_node(first);
    cluster.eventually("the old leader caught up with the new one", || {
        let new = cluster.replica(second, "r");
        let old = cluster.replica(first, "r");
        old.log.log_end_offset() == new.log.log_end_offset()
            && old.high_watermark() == new.high_watermark()
    });
    assert_eq!(
        log_bytes(&cluster.driver, &cluster.replica(first, "r")),
        log_bytes(&cluster.driver, &cluster.replica(second, "r")),
        "the old leader kept a tail the new leader never had"
    );
    assert_eq!(cluster.replica(first, "r").log.log_end_offset(), 100);
}

#[test]
fn a_follower_far_behind_catches_up_reading_ahead_and_ends_with_exactly_the_leaders_log() {
    // The bug story: a follower that asks for the next bytes before it has appended the ones
    // it holds (to keep the leader busy while it writes) appends an answer out of place, or
    // reports an offset it does not hold; its log then differs from the leader's, or it joins
    // the ISR without the records.
    let mut cluster = start(2_000);
    create_topic(&cluster, "c", &[]);
    let leader = cluster.leader("c");
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(follower);
    cluster.eventually("the stopped follower out of the ISR", || {
        !cluster.isr("c").contains(&follower)
    });

    // 24 MiB in batches of almost 1 MiB (message.max.bytes) on the leader, committed by the
    // other follower.
    let on_leader = cluster.replica(leader, "c");
    cluster.driver.block_on(async {
        for i in 0..25u8 {
            on_leader
                .append(&mut builder::simple(
                    60,
                    16 << 10,
                    b'a' + i,
                    1_700_000_000_000,
                ))
                .await
                .unwrap();
        }
    });
    let end = on_leader.log.log_end_offset();
    cluster.eventually("the high watermark at the leader's log end", || {
        on_leader.high_watermark() == end
    });

    // The follower returns far behind the high watermark: it reads ahead, and ends with the
    // leader's very bytes, back in the ISR.
    cluster.start_node(follower);
    cluster.eventually("the follower caught up and back in the ISR", || {
        cluster
            .broker(follower)
            .partition("c", 0)
            .is_some_and(|p| p.log.log_end_offset() == end)
            && cluster.isr("c").contains(&follower)
    });
    assert!(
        cluster.broker(follower).replica_read_ahead_fetches() > 0,
        "the follower never read ahead"
    );
    assert_eq!(
        log_bytes(&cluster.driver, &cluster.replica(follower, "c")),
        log_bytes(&cluster.driver, &on_leader),
        "the follower's log differs from the leader's"
    );
}

#[test]
fn acks_all_is_refused_before_the_append_when_the_isr_is_below_min_insync_replicas() {
    let mut cluster = start(2_000);
    create_topic(&cluster, "m", &[("min.insync.replicas", "3")]);
    let leader = cluster.leader("m");
    let broker = cluster.broker(leader);
    // With all three in sync, acks=all succeeds.
    let produced: ProduceResponse = cluster.driver.block_on(call(
        &broker,
        ApiKey::Produce,
        9,
        &produce_request("m", -1, 30_000),
    ));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);

    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(follower);
    // The image shrinks the ISR first; the leader applies it after (until then it would take
    // the produce and wait for the dead follower).
    cluster.eventually(
        "the ISR without the dead follower, on the leader too",
        || {
            !cluster.isr("m").contains(&follower)
                && !cluster
                    .replica(leader, "m")
                    .replica_state()
                    .isr()
                    .contains(&follower)
        },
    );
    let end_before = cluster.replica(leader, "m").log.log_end_offset();
    let produced: ProduceResponse = cluster.driver.block_on(call(
        &broker,
        ApiKey::Produce,
        9,
        &produce_request("m", -1, 30_000),
    ));
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code,
        NOT_ENOUGH_REPLICAS
    );
    assert_eq!(
        cluster.replica(leader, "m").log.log_end_offset(),
        end_before,
        "a refused acks=all produce appended nothing"
    );
    // acks=1 does not ask for replicas.
    let produced: ProduceResponse = cluster.driver.block_on(call(
        &broker,
        ApiKey::Produce,
        9,
        &produce_request("m", 1, 30_000),
    ));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
}

#[test]
fn a_consumer_never_reads_past_the_high_watermark_while_an_isr_member_lacks_the_records() {
    // Sessions never expire here: the dead follower stays in the ISR and holds the HW back.
    let mut cluster = start(600_000);
    create_topic(&cluster, "h", &[]);
    let leader = cluster.leader("h");
    let broker = cluster.broker(leader);
    let produced: ProduceResponse = cluster.driver.block_on(call(
        &broker,
        ApiKey::Produce,
        9,
        &produce_request("h", -1, 30_000),
    ));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    cluster.eventually("HW 1 on every replica", || {
        (1..=3).all(|id| cluster.replica(id, "h").high_watermark() == 1)
    });

    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(follower);
    assert!(cluster.isr("h").contains(&follower));
    // acks=1: on the leader's log at once, acknowledged, and not visible.
    let produced: ProduceResponse = cluster.driver.block_on(call(
        &broker,
        ApiKey::Produce,
        9,
        &produce_request("h", 1, 30_000),
    ));
    let answer = &produced.responses[0].partition_responses[0];
    assert_eq!((answer.error_code, answer.base_offset), (0, 1));
    let leader_replica = cluster.replica(leader, "h");
    assert_eq!(leader_replica.log.log_end_offset(), 2);
    assert_eq!(leader_replica.high_watermark(), 1);
    let fetched: FetchResponse =
        cluster
            .driver
            .block_on(call(&broker, ApiKey::Fetch, 12, &consumer_fetch("h")));
    let data = &fetched.responses[0].partitions[0];
    assert_eq!(data.error_code, 0);
    assert_eq!(data.high_watermark, 1);
    let records = data.records.clone().unwrap_or_default();
    let mut offsets = BTreeMap::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = BatchHeader::parse(&records[pos..]).unwrap();
        offsets.insert(header.base_offset, header.last_offset());
        pos += header.size();
    }
    assert_eq!(
        offsets,
        BTreeMap::from([(0, 0)]),
        "the consumer saw past the HW"
    );
    // acks=all cannot be acknowledged while an ISR member lacks the batch.
    let produced: ProduceResponse = cluster.driver.block_on(call(
        &broker,
        ApiKey::Produce,
        9,
        &produce_request("h", -1, 300),
    ));
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code,
        REQUEST_TIMED_OUT
    );
}

#[test]
fn an_idempotent_producers_retry_to_the_new_leader_is_answered_as_a_duplicate() {
    // The bug: producer state lived on the leader only, so a retry of a batch the old leader
    // had replicated was appended again by the new one (a duplicate), or refused as out of
    // order.
    let mut cluster = start(2_000);
    create_topic(&cluster, "p", &[]);
    let first = cluster.leader("p");
    let send = |cluster: &Cluster, leader: i32, request: &ProduceRequest| -> (i16, i64) {
        let produced: ProduceResponse =
            cluster
                .driver
                .block_on(call(&cluster.broker(leader), ApiKey::Produce, 9, request));
        let p = &produced.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(
        send(&cluster, first, &idempotent_produce("p", 0, 2)),
        (0, 0)
    );
    let retried = idempotent_produce("p", 2, 2);
    assert_eq!(send(&cluster, first, &retried), (0, 2));
    cluster.eventually("every replica holds both batches", || {
        (1..=3).all(|id| cluster.replica(id, "p").log.log_end_offset() == 4)
    });

    cluster.stop(first);
    let second = new_leader_leading(&cluster, "p", first);
    // The producer did not hear the answer for sequence 2 and retries it at the new leader.
    assert_eq!(send(&cluster, second, &retried), (0, 2), "not a duplicate");
    assert_eq!(cluster.replica(second, "p").log.log_end_offset(), 4);
    assert_eq!(
        send(&cluster, second, &idempotent_produce("p", 4, 1)),
        (0, 4),
        "the next sequence continues"
    );
}

/// FindCoordinator for `group`, retried while `__consumer_offsets` is being created.
fn find_coordinator(cluster: &Cluster, group: &str) -> i32 {
    let request = kafka_protocol::messages::FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found: kafka_protocol::messages::FindCoordinatorResponse = cluster.driver.block_on(
            call(&cluster.broker(1), ApiKey::FindCoordinator, 3, &request),
        );
        if found.error_code == 0 {
            return found.node_id.0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no coordinator: {}",
            found.error_code
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A simple (generation -1) commit of `offset` for c-0 by `group`; its error code.
fn commit(cluster: &Cluster, coordinator: i32, group: &str, offset: i64) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let request = kafka_protocol::messages::OffsetCommitRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(StrBytes::from_string(
            group.to_string(),
        )))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("c")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    let committed: kafka_protocol::messages::OffsetCommitResponse = cluster.driver.block_on(call(
        &cluster.broker(coordinator),
        ApiKey::OffsetCommit,
        7,
        &request,
    ));
    committed.topics[0].partitions[0].error_code
}

#[test]
fn an_offset_commit_is_acknowledged_only_once_every_in_sync_replica_has_it() {
    // The bug: the coordinator acknowledged a commit once its own copy was synced, so with
    // __consumer_offsets replicated a crash of the coordinator before its followers fetched
    // lost an acknowledged commit. Kafka appends commits with acks=-1.
    let mut cluster = start(600_000);
    create_topic(&cluster, "c", &[]);
    let coordinator = find_coordinator(&cluster, "g");
    assert_eq!(commit(&cluster, coordinator, "g", 1), 0);
    let offsets = "__consumer_offsets";
    let index = (0..50)
        .find(|&i| {
            cluster
                .broker(coordinator)
                .partition(offsets, i)
                .is_some_and(|p| p.log.log_end_offset() > 0)
        })
        .expect("the partition holding the commit");
    let replicas = cluster
        .plane
        .image()
        .partition(offsets, index)
        .unwrap()
        .replicas
        .clone();
    assert_eq!(replicas.len(), 3, "offsets.topic.replication.factor is 3");
    // Every in-sync replica holds the acknowledged commit.
    for &id in &replicas {
        let replica = cluster.broker(id).partition(offsets, index).unwrap();
        assert!(
            replica.log.log_end_offset() >= 1,
            "broker {id} lacks the acknowledged commit"
        );
    }
    // A follower of that partition dies and stays in the ISR (no session expires here): the
    // next commit cannot be on every in-sync replica, so it is not acknowledged.
    let follower = *replicas.iter().find(|&&r| r != coordinator).unwrap();
    cluster.stop(follower);
    // Kafka answers a commit that timed out waiting for the ISR COORDINATOR_NOT_AVAILABLE.
    assert_eq!(
        commit(&cluster, coordinator, "g", 2),
        COORDINATOR_NOT_AVAILABLE
    );
}
