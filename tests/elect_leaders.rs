// Real sockets, threads and wall-clock time, and a real librdkafka: the determinism rules in
// clippy.toml are for broker code, not for these tests.
#![allow(clippy::disallowed_methods)]
//! ElectLeaders and `faultline topics elect-leaders` on three brokers in one process (real TCP,
//! real files, librdkafka for the clients).
//!
//! The story: the preferred replica of a partition dies, another replica leads, and the
//! preferred one comes back into the ISR; the automatic rebalance has not run yet (it runs every
//! `leader.imbalance.check.interval.seconds`, 300 s), so the operator elects it by hand. The
//! bugs these guard against: an election that ignores the ISR or fencing (a replica that lacks
//! records, or cannot serve, made leader), an answer sent before the new leader is in Metadata,
//! and errors that are not Kafka's.
//!
//! librdkafka's admin API has no ElectLeaders, so the requests go through our CLI and client.
#![cfg(not(madsim))]

mod replicated_cluster;

use std::time::Duration;

use broker::controller::plane::MetadataPlane;
use broker::controller::NO_NODE;
use client::{Admin, Client, ClientConfig as OurClientConfig, ElectionType};
use kafka_protocol::error::ResponseError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use replicated_cluster::{topics, Cluster, Settings, WAIT};

fn start() -> Cluster {
    Cluster::start(Settings {
        lag_ms: 30_000,
        session_ms: 2_000,
        offsets_partitions: 1,
    })
}

/// Creates `name` with one partition of `replicas` replicas; waits until its replicas have it.
fn create_topic(cluster: &Cluster, name: &str, replicas: i16) {
    let broker = cluster.broker(1);
    cluster
        .driver
        .block_on(broker.create_topic(name, 1, replicas, &[], false))
        .unwrap();
    let assigned = cluster
        .plane
        .image()
        .partition(name, 0)
        .unwrap()
        .replicas
        .clone();
    cluster.eventually(&format!("{name}-0 open on its replicas"), || {
        assigned
            .iter()
            .all(|&id| cluster.broker(id).partition(name, 0).is_some())
    });
}

fn preferred(cluster: &Cluster, topic: &str) -> i32 {
    cluster.plane.image().partition(topic, 0).unwrap().replicas[0]
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

fn produce_all(cluster: &Cluster, topic: &str, values: &[String]) {
    let producer = producer(cluster);
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

/// Every value a consumer reads from the start of partition 0 until it has `count`.
fn consume(cluster: &Cluster, topic: &str, count: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "elect-leaders-test")
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
    while values.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {count} records",
            values.len()
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
    values
}

fn values(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("record-{i:04}")).collect()
}

/// Partition 0's leader as a Metadata request to broker `via` answers it.
fn metadata_leader(cluster: &Cluster, via: i32, topic: &str) -> i32 {
    let address = cluster.address(via);
    cluster.driver.block_on(async {
        let client = Client::connect(OurClientConfig::new(address))
            .await
            .unwrap();
        let meta = Admin::new(client).describe_topic(topic).await.unwrap();
        meta.partitions
            .iter()
            .find(|p| p.index == 0)
            .unwrap()
            .leader
    })
}

/// Stops the preferred replica of `topic`-0 until another replica leads, then restarts it and
/// waits until it is back in the ISR. Returns (preferred, the leader now).
fn move_leadership_away(cluster: &mut Cluster, topic: &str) -> (i32, i32) {
    let preferred = preferred(cluster, topic);
    assert_eq!(
        cluster.leader(topic),
        preferred,
        "new partitions start balanced"
    );
    cluster.stop(preferred);
    cluster.eventually("another replica leads", || {
        let leader = cluster.leader(topic);
        leader != preferred && leader != NO_NODE
    });
    cluster.start_node(preferred);
    cluster.eventually("the preferred replica back in the ISR", || {
        !cluster.fenced(preferred) && cluster.isr(topic) == vec![1, 2, 3]
    });
    let leader = cluster.leader(topic);
    assert_ne!(leader, preferred, "no automatic rebalance within the test");
    (preferred, leader)
}

#[test]
fn electing_the_preferred_leader_moves_the_leadership_back_and_clients_carry_on() {
    let mut cluster = start();
    create_topic(&cluster, "e", 3);
    produce_all(&cluster, "e", &values(0..20));
    let (preferred, leader) = move_leadership_away(&mut cluster, "e");
    let other = (1..=3).find(|&id| id != preferred && id != leader).unwrap();

    // Sent to a broker that neither leads nor is preferred: forwarded to the controller.
    let run = topics(
        &cluster,
        other,
        &[
            "elect-leaders",
            "--election-type",
            "preferred",
            "--topic",
            "e",
            "--partition",
            "0",
        ],
    );
    assert_eq!((run.code, run.err.as_str()), (0, ""), "{}", run.out);
    assert_eq!(
        run.out,
        "Successfully completed leader election (PREFERRED) for partitions e-0\n"
    );
    // Answered once applied: the broker that answered already names the new leader.
    assert_eq!(metadata_leader(&cluster, other, "e"), preferred);
    cluster.eventually("every broker names the new leader", || {
        (1..=3).all(|id| metadata_leader(&cluster, id, "e") == preferred)
    });

    // Production and consumption carry on under the new leader, nothing lost or doubled.
    produce_all(&cluster, "e", &values(20..40));
    assert_eq!(consume(&cluster, "e", 40), values(0..40));

    // Again: nothing to do, said as kafka-leader-election.sh says it.
    let run = topics(
        &cluster,
        leader,
        &[
            "elect-leaders",
            "--election-type",
            "PREFERRED",
            "--topic",
            "e",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.err);
    assert_eq!(
        run.out,
        "Valid replica already elected for partitions e-0\n"
    );

    // A null topic list: every partition, leaving out those that needed no election.
    let results = cluster.driver.block_on(async {
        let client = Client::connect(OurClientConfig::new(cluster.address(leader)))
            .await
            .unwrap();
        Admin::new(client)
            .elect_leaders(ElectionType::Preferred, None)
            .await
            .unwrap()
    });
    assert!(
        results.iter().all(|r| r.topic != "e"),
        "a partition that needed no election is not reported: {results:?}"
    );
}

#[test]
fn elections_that_cannot_be_done_answer_kafkas_errors_and_change_nothing() {
    let mut cluster = start();
    create_topic(&cluster, "e", 3);
    create_topic(&cluster, "solo", 1);
    let preferred = preferred(&cluster, "e");
    let solo = preferred_of_solo(&cluster);
    let alive = (1..=3).find(|&id| id != preferred && id != solo).unwrap();

    // Unknown topic and partition.
    let run = topics(
        &cluster,
        alive,
        &[
            "elect-leaders",
            "--election-type",
            "preferred",
            "--topic",
            "nope",
            "--partition",
            "0",
        ],
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.out,
        "Error completing leader election (PREFERRED) for partition: nope-0: \
         org.apache.kafka.common.errors.UnknownTopicOrPartitionException: No such topic as nope\n"
    );
    assert_eq!(run.err, "error: 1 replica(s) could not be elected\n");
    let run = topics(
        &cluster,
        alive,
        &[
            "elect-leaders",
            "--election-type",
            "preferred",
            "--topic",
            "e",
            "--partition",
            "5",
        ],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.out
            .ends_with("UnknownTopicOrPartitionException: No such partition as e-5\n"),
        "{}",
        run.out
    );

    // Unclean on a partition that has a leader: not needed.
    let run = topics(
        &cluster,
        alive,
        &[
            "elect-leaders",
            "--election-type",
            "unclean",
            "--topic",
            "e",
            "--partition",
            "0",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.err);
    assert_eq!(
        run.out,
        "Valid replica already elected for partitions e-0\n"
    );

    // The preferred replica dies: fenced, out of the ISR, so it cannot be elected.
    cluster.stop(preferred);
    if solo != preferred {
        cluster.stop(solo);
    }
    cluster.eventually("the preferred replica fenced and out of the ISR", || {
        cluster.fenced(preferred) && !cluster.isr("e").contains(&preferred)
    });
    let leader = cluster.leader("e");
    let run = topics(
        &cluster,
        alive,
        &[
            "elect-leaders",
            "--election-type",
            "preferred",
            "--topic",
            "e",
            "--partition",
            "0",
        ],
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.out,
        "Error completing leader election (PREFERRED) for partition: e-0: \
         org.apache.kafka.common.errors.PreferredLeaderNotAvailableException: The preferred \
         leader was not available.\n"
    );
    assert_eq!(cluster.leader("e"), leader, "nothing changed");

    // The only replica of "solo" is dead: no replica can lead it, even uncleanly.
    cluster.eventually("solo-0 offline", || {
        cluster.plane.image().partition("solo", 0).unwrap().leader == NO_NODE
    });
    let results = cluster.driver.block_on(async {
        let client = Client::connect(OurClientConfig::new(cluster.address(alive)))
            .await
            .unwrap();
        Admin::new(client)
            .elect_leaders(ElectionType::Unclean, Some(vec![("solo".into(), vec![0])]))
            .await
            .unwrap()
    });
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].error.as_ref().map(|e| e.0),
        Some(ResponseError::EligibleLeadersNotAvailable)
    );
    assert_eq!(
        cluster.plane.image().partition("solo", 0).unwrap().leader,
        NO_NODE
    );
}

fn preferred_of_solo(cluster: &Cluster) -> i32 {
    preferred(cluster, "solo")
}
