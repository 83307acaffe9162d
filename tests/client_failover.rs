// Real sockets, threads and wall-clock time: the determinism rules in clippy.toml are for
// broker code, not for these tests.
#![allow(clippy::disallowed_methods)]
//! The Rust client (`client`) follows a partition's leadership when its leader dies, as Kafka's
//! clients do: on NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE or a connection it cannot make
//! it forgets the partition's leader, asks for metadata again, and retries to the new leader
//! within its delivery timeout.
//!
//! The bug stories: a producer that kept its cached leader after a connection to it failed
//! retried the dead broker ("cannot connect") until its retries ran out, although a new leader
//! had long been elected; and a producer whose retries ran out after about seven seconds (ten
//! retries, backoff doubling to a second) gave up before the controller fenced the dead broker
//! (`broker.session.timeout.ms`, 9 s by default), where Kafka's producer retries until
//! `delivery.timeout.ms` (120 s).
#![cfg(not(madsim))]

mod replicated_cluster;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::config::BrokerConfig;
use client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
    SeekTo, SendOutcome,
};
use replicated_cluster::{Cluster, Settings, WAIT};

/// The bug stories: see the module docs. Three brokers with the default session timeout; an
/// idempotent acks=all producer with the default retries and delivery timeout sends one record
/// after another while the partition's leader is stopped at once (its sockets close, its
/// port refuses connections). No error reaches the caller: every record is acknowledged, the
/// later ones by the new leader, and each is in the log once, at its acknowledged offset.
#[test]
fn an_idempotent_producer_sees_no_error_while_a_new_leader_is_elected_after_the_leaders_death() {
    const TOPIC: &str = "moving";
    let mut cluster = Cluster::start(Settings {
        lag_ms: 30_000,
        session_ms: BrokerConfig::default().broker_session_timeout_ms,
        offsets_partitions: 1,
    });
    let configs = [("min.insync.replicas".to_string(), "2".to_string())];
    let broker = cluster.broker(1);
    cluster
        .driver
        .block_on(broker.create_topic(TOPIC, 1, 3, &configs, false))
        .unwrap();
    cluster.eventually("the topic on every broker with a full ISR", || {
        cluster.open_everywhere(TOPIC) && cluster.isr(TOPIC).len() == 3
    });
    let leader = cluster.leader(TOPIC);

    let client = cluster
        .driver
        .block_on(Client::connect(ClientConfig::new(cluster.bootstrap())))
        .unwrap();
    let producer = cluster
        .driver
        .block_on(Producer::new(
            client.clone(),
            ProducerConfig {
                acks: Acks::All,
                enable_idempotence: true,
                ..ProducerConfig::default()
            },
        ))
        .unwrap();
    // Record n's outcome, by n, as the sending task learns it.
    let outcomes = Arc::new(Mutex::new(BTreeMap::<u64, SendOutcome>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (outcomes, stop) = (outcomes.clone(), stop.clone());
        cluster.driver.spawn(async move {
            let mut n = 0u64;
            let mut pending = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let delivery = producer
                    .send(ProducerRecord::new(TOPIC, n.to_string()).with_partition(0))
                    .await;
                let outcomes = outcomes.clone();
                pending.push(tokio::spawn(async move {
                    let outcome = delivery.await;
                    outcomes.lock().unwrap().insert(n, outcome);
                }));
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for p in pending {
                p.await.unwrap();
            }
            n
        })
    };
    let acknowledged = || {
        outcomes
            .lock()
            .unwrap()
            .values()
            .filter(|o| o.is_acknowledged())
            .count()
    };
    let failures = || {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, o)| !o.is_acknowledged())
            .map(|(n, o)| format!("{n}: {o:?}"))
            .take(5)
            .collect::<Vec<_>>()
    };
    cluster.eventually("records acknowledged by the first leader", || {
        acknowledged() >= 100
    });
    cluster.stop(leader);
    cluster.eventually("a new leader", || {
        let now = cluster.leader(TOPIC);
        now != leader && now > 0
    });
    let before = acknowledged();
    let deadline = std::time::Instant::now() + WAIT;
    while acknowledged() < before + 100 {
        assert!(
            failures().is_empty(),
            "errors reached the caller: {:?}",
            failures()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no acknowledgement from the new leader"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = cluster.driver.block_on(sender).unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len() as u64, sent);
    assert!(
        outcomes.values().all(SendOutcome::is_acknowledged),
        "errors reached the caller: {:?}",
        failures()
    );

    // Each record is in the log once, at its acknowledged offset.
    let read = cluster.driver.block_on(async {
        let mut consumer = Consumer::new(client, ConsumerConfig::default());
        consumer.assign([(TOPIC.to_string(), 0)]);
        consumer.seek(TOPIC, 0, SeekTo::Earliest).await.unwrap();
        let mut read = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while read.len() < outcomes.len() {
            assert!(tokio::time::Instant::now() < deadline, "read {read:?}");
            for r in consumer.poll().await.unwrap() {
                let n: u64 = std::str::from_utf8(r.value.as_deref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(read.insert(n, r.offset).is_none(), "record {n} read twice");
            }
        }
        read
    });
    for (n, outcome) in &outcomes {
        let SendOutcome::Acknowledged { offset, .. } = outcome else {
            unreachable!("all acknowledged")
        };
        assert_eq!(read.get(n), Some(offset), "record {n}");
    }
}
