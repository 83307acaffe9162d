// Real sockets, threads and wall-clock time, and a real librdkafka: the determinism rules in
// clippy.toml are for broker code, not for these tests.
#![allow(clippy::disallowed_methods)]
//! Partition reassignment (KIP-455) and `faultline topics reassign` on three brokers in one
//! process (real TCP, real files, librdkafka for the clients).
//!
//! The stories: a partition moves off its leader onto a broker that is down when the move
//! starts (so the move is seen running: describe shows the replicas being added and removed,
//! --verify says in progress), acks=all production carries on through the move, and once the
//! new replica is back and in sync the move completes, the old leader hands over in a new
//! leader epoch and deletes its copy, and every record is read back; the replication factor
//! goes 1 -> 3 -> 1 away from the leader; a running move is cancelled; bad targets get Kafka's
//! errors. The bugs these guard against: a move completed before the new replicas hold the
//! data (records lost once the old replicas delete theirs), a leader removed without a new
//! leader epoch (two leaders of one epoch), a removed replica that keeps serving or its files.
//!
//! librdkafka's admin API has no AlterPartitionReassignments, so the requests go through our
//! CLI and client.
#![cfg(not(madsim))]

mod replicated_cluster;

use std::time::Duration;

use broker::controller::image::PartitionImage;
use broker::controller::plane::MetadataPlane;
use client::{Admin, Client, ClientConfig as OurClientConfig};
use kafka_protocol::error::ResponseError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use replicated_cluster::{topics, Cluster, Run, Settings, WAIT};

fn start() -> Cluster {
    Cluster::start(Settings {
        lag_ms: 30_000,
        session_ms: 2_000,
        offsets_partitions: 1,
    })
}

/// A reassignment JSON file moving `topic`-0 to `replicas`.
fn plan(topic: &str, replicas: &[i32]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let list: Vec<String> = replicas.iter().map(i32::to_string).collect();
    std::fs::write(
        file.path(),
        format!(
            r#"{{"version":1,"partitions":[{{"topic":"{topic}","partition":0,"replicas":[{}]}}]}}"#,
            list.join(",")
        ),
    )
    .unwrap();
    file
}

/// `faultline topics reassign --reassignment-json-file <plan> --<action>` via broker `via`.
fn reassign(cluster: &Cluster, via: i32, plan: &tempfile::NamedTempFile, action: &[&str]) -> Run {
    let path = plan.path().to_str().unwrap().to_string();
    let mut args = vec!["reassign", "--reassignment-json-file", path.as_str()];
    args.extend_from_slice(action);
    topics(cluster, via, &args)
}

/// Creates `name` with one partition of `replicas` replicas; waits until its replicas have it.
fn create_topic(cluster: &Cluster, name: &str, replicas: i16) {
    let broker = cluster.broker(1);
    cluster
        .driver
        .block_on(broker.create_topic(name, 1, replicas, &[], false))
        .unwrap();
    let assigned = partition(cluster, name).replicas;
    cluster.eventually(&format!("{name}-0 open on its replicas"), || {
        assigned
            .iter()
            .all(|&id| cluster.broker(id).partition(name, 0).is_some())
    });
}

fn partition(cluster: &Cluster, topic: &str) -> PartitionImage {
    cluster.plane.image().partition(topic, 0).unwrap().clone()
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

async fn send_all(producer: &FutureProducer, topic: &str, values: &[String], pause: Duration) {
    for value in values {
        producer
            .send(
                FutureRecord::<(), _>::to(topic).partition(0).payload(value),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("{value} not acknowledged: {e}"));
        tokio::time::sleep(pause).await;
    }
}

fn produce_all(cluster: &Cluster, topic: &str, values: &[String]) {
    let producer = producer(cluster);
    cluster
        .driver
        .block_on(send_all(&producer, topic, values, Duration::ZERO));
}

/// Every value a consumer reads from the start of partition 0 until it has `count`.
fn consume(cluster: &Cluster, topic: &str, count: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "reassign-test")
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

fn admin(cluster: &Cluster, via: i32) -> Admin {
    let address = cluster.address(via);
    cluster.driver.block_on(async {
        Admin::new(
            Client::connect(OurClientConfig::new(address))
                .await
                .unwrap(),
        )
    })
}

/// kafka-reassign-partitions.sh's rollback text for `topic`-0 on `replicas`.
fn rollback(topic: &str, replicas: &[i32]) -> String {
    let list = |v: Vec<String>| v.join(",");
    format!(
        "Current partition replica assignment\n\n\
         {{\"version\":1,\"partitions\":[{{\"topic\":\"{topic}\",\"partition\":0,\"replicas\":[{}],\"log_dirs\":[{}]}}]}}\n\n\
         Save this to use as the --reassignment-json-file option during rollback\n",
        list(replicas.iter().map(i32::to_string).collect()),
        list(replicas.iter().map(|_| "\"any\"".to_string()).collect()),
    )
}

/// Waits until broker `id` holds no replica of `topic`-0 and its directory is gone.
fn dropped_copy(cluster: &Cluster, id: i32, topic: &str) {
    cluster.eventually(
        &format!("broker {id} dropping its copy of {topic}-0"),
        || {
            cluster.broker(id).partition(topic, 0).is_none()
                && std::fs::read_dir(cluster.data_dir(id)).unwrap().all(|e| {
                    !e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{topic}-0"))
                })
        },
    );
}

#[test]
fn moving_a_partition_off_its_leader_keeps_every_record_and_acks_all_production_going() {
    let mut cluster = start();
    create_topic(&cluster, "m", 2);
    let before = partition(&cluster, "m");
    let (a, b) = (before.replicas[0], before.replicas[1]);
    assert_eq!(before.leader, a);
    let c = (1..=3).find(|id| !before.replicas.contains(id)).unwrap();
    produce_all(&cluster, "m", &values(0..20));

    // The new replica is down when the move starts: the move is accepted (it is registered)
    // and runs until it is back and in sync.
    cluster.stop(c);
    cluster.eventually("the new replica fenced", || cluster.fenced(c));
    let target = plan("m", &[c, b]);
    let run = reassign(&cluster, b, &target, &["--execute"]);
    assert_eq!((run.code, run.err.as_str()), (0, ""), "{}", run.out);
    assert_eq!(
        run.out,
        format!(
            "{}Successfully started partition reassignment for m-0\n",
            rollback("m", &[a, b])
        )
    );
    let moving = partition(&cluster, "m");
    assert_eq!(moving.replicas, vec![c, b, a]);
    assert_eq!(
        (
            moving.adding_replicas.clone(),
            moving.removing_replicas.clone()
        ),
        (vec![c], vec![a])
    );
    assert_eq!(
        (moving.leader, moving.leader_epoch),
        (a, before.leader_epoch)
    );

    // Seen running, as kafka-topics.sh and kafka-reassign-partitions.sh show it.
    let run = topics(&cluster, a, &["describe", "--topic", "m"]);
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(run.out.contains("ReplicationFactor: 2\t"), "{}", run.out);
    let isr: Vec<String> = moving.isr.iter().map(i32::to_string).collect();
    assert!(
        run.out.contains(&format!(
            "\tTopic: m\tPartition: 0\tLeader: {a}\tReplicas: {c},{b},{a}\tIsr: {}\tAdding Replicas: {c}\tRemoving Replicas: {a}\n",
            isr.join(",")
        )),
        "{}",
        run.out
    );
    let run = reassign(&cluster, a, &target, &["--verify"]);
    assert_eq!(
        (run.code, run.out.as_str()),
        (
            0,
            "Status of partition reassignment:\nReassignment of partition m-0 is still in progress.\n"
        )
    );
    // A second --execute while one runs needs --additional.
    let run = reassign(&cluster, a, &target, &["--execute"]);
    assert_eq!(run.code, 1);
    assert!(
        run.err.starts_with(
            "error: Cannot execute because there is an existing partition assignment."
        ),
        "{}",
        run.err
    );

    // acks=all production carries on while the move runs, and through its completion.
    produce_all(&cluster, "m", &values(20..40));
    let producer = producer(&cluster);
    let background = cluster.driver.spawn(async move {
        send_all(&producer, "m", &values(40..100), Duration::from_millis(20)).await;
    });
    cluster.start_node(c);
    cluster.eventually("the move completing", || {
        !partition(&cluster, "m").is_reassigning()
    });
    let done = partition(&cluster, "m");
    assert_eq!(done.replicas, vec![c, b]);
    assert!(!done.isr.contains(&a));
    // The leader was removed: the first target replica leads, in a new leader epoch.
    assert_eq!(done.leader, c);
    assert!(done.leader_epoch > before.leader_epoch);
    dropped_copy(&cluster, a, "m");
    let run = reassign(&cluster, b, &target, &["--verify"]);
    assert_eq!(
        run.out,
        "Status of partition reassignment:\nReassignment of partition m-0 is completed.\n"
    );
    cluster.driver.block_on(background).unwrap();
    assert_eq!(consume(&cluster, "m", 100), values(0..100));
}

#[test]
fn the_replication_factor_goes_from_one_to_three_and_back_to_one_away_from_the_leader() {
    let cluster = start();
    create_topic(&cluster, "f", 1);
    let x = partition(&cluster, "f").leader;
    let others: Vec<i32> = (1..=3).filter(|&id| id != x).collect();
    let (y, z) = (others[0], others[1]);
    produce_all(&cluster, "f", &values(0..20));

    let run = reassign(&cluster, y, &plan("f", &[x, y, z]), &["--execute"]);
    assert_eq!((run.code, run.err.as_str()), (0, ""), "{}", run.out);
    cluster.eventually("RF 3 reached", || {
        let p = partition(&cluster, "f");
        !p.is_reassigning() && cluster.isr("f") == vec![1, 2, 3]
    });
    let three = partition(&cluster, "f");
    assert_eq!(three.replicas, vec![x, y, z]);
    assert_eq!(three.leader, x, "the leader stays");
    // Every new replica holds what was there before it came.
    for id in [y, z] {
        cluster.eventually("the new replica caught up", || {
            cluster.replica(id, "f").replica_state().log_end_offset() >= 20
        });
    }
    produce_all(&cluster, "f", &values(20..40));

    // Down to one replica that is not the leader: done at once, a new leader epoch.
    let run = reassign(&cluster, x, &plan("f", &[y]), &["--execute"]);
    assert_eq!((run.code, run.err.as_str()), (0, ""), "{}", run.out);
    assert!(
        run.out.starts_with(&rollback("f", &[x, y, z])),
        "{}",
        run.out
    );
    let one = partition(&cluster, "f");
    assert_eq!(
        (one.replicas.clone(), one.isr.clone(), one.leader),
        (vec![y], vec![y], y)
    );
    assert!(one.leader_epoch > three.leader_epoch);
    assert!(!one.is_reassigning());
    dropped_copy(&cluster, x, "f");
    dropped_copy(&cluster, z, "f");
    produce_all(&cluster, "f", &values(40..60));
    assert_eq!(consume(&cluster, "f", 60), values(0..60));
}

#[test]
fn cancelling_reverts_a_running_move_and_bad_targets_get_kafkas_errors() {
    let mut cluster = start();
    create_topic(&cluster, "k", 2);
    let before = partition(&cluster, "k");
    let (a, b) = (before.replicas[0], before.replicas[1]);
    let c = (1..=3).find(|id| !before.replicas.contains(id)).unwrap();
    cluster.stop(c);
    cluster.eventually("the new replica fenced", || cluster.fenced(c));

    let target = plan("k", &[c, b]);
    let run = reassign(&cluster, a, &target, &["--cancel"]);
    assert_eq!(
        (run.code, run.out.as_str()),
        (
            0,
            "None of the specified partition reassignments are active.\n"
        )
    );
    let run = reassign(&cluster, a, &target, &["--execute"]);
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(partition(&cluster, "k").is_reassigning());
    let run = reassign(&cluster, b, &target, &["--cancel"]);
    assert_eq!(
        (run.code, run.out.as_str(), run.err.as_str()),
        (
            0,
            "Successfully cancelled partition reassignment for: k-0\n",
            ""
        )
    );
    let reverted = partition(&cluster, "k");
    assert!(!reverted.is_reassigning());
    // Kafka's revert: the merged list without the replicas being added.
    assert_eq!(reverted.replicas, vec![b, a]);
    assert_eq!(reverted.leader, a);
    assert_eq!(reverted.leader_epoch, before.leader_epoch);
    let run = reassign(&cluster, a, &target, &["--verify"]);
    assert_eq!(
        run.out,
        format!(
            "Status of partition reassignment:\nThere is no active reassignment of partition \
             k-0, but replica set is {b},{a} rather than {c},{b}.\n"
        )
    );

    // On the wire: each refusal with Kafka's code and message, nothing changed.
    let admin = admin(&cluster, b);
    let alter = |targets: Vec<(&str, i32, Option<Vec<i32>>)>, allow: bool| {
        let targets = targets
            .into_iter()
            .map(|(t, p, r)| (t.to_string(), p, r))
            .collect();
        let results = cluster
            .driver
            .block_on(admin.alter_partition_reassignments(targets, allow))
            .unwrap();
        assert_eq!(results.len(), 1);
        results[0].error.clone().expect("refused")
    };
    let invalid = |m: &str| (ResponseError::InvalidReplicaAssignment, Some(m.to_string()));
    assert_eq!(
        alter(vec![("k", 0, None)], true),
        (
            ResponseError::NoReassignmentInProgress,
            Some("No partition reassignment is in progress.".into())
        )
    );
    assert_eq!(
        alter(vec![("k", 0, Some(vec![a, 9]))], true),
        invalid(
            "The manual partition assignment includes broker 9, but no such broker is registered."
        )
    );
    assert_eq!(
        alter(vec![("k", 0, Some(vec![a, a]))], true),
        invalid(&format!(
            "The manual partition assignment includes the broker {a} more than once."
        ))
    );
    assert_eq!(
        alter(vec![("k", 0, Some(vec![]))], true),
        invalid("The manual partition assignment includes an empty replica list.")
    );
    assert_eq!(
        alter(vec![("k", 0, Some(vec![a]))], false),
        (
            ResponseError::InvalidReplicationFactor,
            Some(
                "The replication factor is changed from 2 to 1 but allowReplicationFactorChange \
                 is false."
                    .into()
            )
        )
    );
    assert_eq!(
        alter(vec![("nope", 0, Some(vec![a]))], true).0,
        ResponseError::UnknownTopicOrPartition
    );
    assert_eq!(
        alter(vec![("k", 3, Some(vec![a]))], true).0,
        ResponseError::UnknownTopicOrPartition
    );
    assert_eq!(partition(&cluster, "k"), reverted, "nothing changed");
    // The CLI says a refused target as kafka-reassign-partitions.sh does.
    let run = reassign(&cluster, a, &plan("k", &[a, 9]), &["--execute"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.err,
        "error: Error reassigning partition(s):\nk-0: The manual partition assignment includes \
         broker 9, but no such broker is registered.\n"
    );
    let listed = cluster
        .driver
        .block_on(admin.list_partition_reassignments(None))
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
