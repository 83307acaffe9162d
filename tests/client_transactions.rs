//! Faultline's own transactional producer against a real broker on real sockets (issue 12):
//! commit and abort across partitions as a read_committed consumer sees them, a zombie fenced
//! by its successor, and offsets sent to a transaction that the group holds only once it
//! commits.
//!
//! The bugs these guard against: batches sent without the transactional bit or without
//! AddPartitionsToTxn (a read_committed consumer then sees aborted records, or the LSO never
//! moves), an EndTxn that does not say what was asked, a zombie whose commit reports Committed,
//! and TxnOffsetCommit sent outside the transaction (the group's offset moves at once).
#![cfg(not(madsim))]

mod own_broker;
use own_broker::start_broker;

use std::collections::BTreeMap;
use std::time::Duration;

use client::*;
use kafka_protocol::error::ResponseError;

async fn client(addr: &str) -> Client {
    let mut config = ClientConfig::new(addr);
    config.connection.request_timeout = Duration::from_secs(10);
    Client::connect(config).await.unwrap()
}

fn transactional(id: &str) -> ProducerConfig {
    ProducerConfig {
        transactional_id: Some(id.to_string()),
        transaction_timeout: Duration::from_secs(30),
        max_block: Duration::from_secs(20),
        ..ProducerConfig::default()
    }
}

/// Every value of `topic`'s `partitions` with `isolation`, by partition in offset order: polls
/// until a poll of every partition comes back empty at the end of what it may read.
async fn read(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
) -> BTreeMap<i32, Vec<String>> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            max_wait: Duration::from_millis(50),
            isolation_level: isolation,
            ..Default::default()
        },
    );
    consumer.assign((0..partitions).map(|p| (topic.to_string(), p)));
    for p in 0..partitions {
        consumer.seek(topic, p, SeekTo::Earliest).await.unwrap();
    }
    let mut out: BTreeMap<i32, Vec<String>> = (0..partitions).map(|p| (p, Vec::new())).collect();
    let mut empty = 0;
    while empty < 5 {
        let records = consumer.poll().await.unwrap();
        if records.is_empty() {
            empty += 1;
        } else {
            empty = 0;
        }
        for r in records {
            out.entry(r.partition)
                .or_default()
                .push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

async fn send_values(
    producer: &mut TransactionalProducer,
    topic: &str,
    partitions: i32,
    prefix: &str,
) {
    let mut deliveries = Vec::new();
    for p in 0..partitions {
        for i in 0..3 {
            let record = ProducerRecord::new(topic, format!("{prefix}-p{p}-{i}")).with_partition(p);
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    for delivery in deliveries {
        let outcome = delivery.await;
        assert!(outcome.is_acknowledged(), "{prefix}: {outcome:?}");
    }
}

fn values(partitions: i32, prefixes: &[&str]) -> BTreeMap<i32, Vec<String>> {
    (0..partitions)
        .map(|p| {
            let v = prefixes
                .iter()
                .flat_map(|prefix| (0..3).map(move |i| format!("{prefix}-p{p}-{i}")))
                .collect();
            (p, v)
        })
        .collect()
}

#[tokio::test]
async fn a_read_committed_consumer_sees_committed_transactions_whole_and_aborted_ones_never() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("orders", 3))
        .await
        .unwrap();
    let mut producer = TransactionalProducer::new(client.clone(), transactional("orders-app"))
        .await
        .unwrap();

    producer.begin().await.unwrap();
    send_values(&mut producer, "orders", 3, "first").await;
    assert_eq!(producer.commit().await, TransactionOutcome::Committed);

    producer.begin().await.unwrap();
    send_values(&mut producer, "orders", 3, "aborted").await;
    let aborted = producer.abort().await;
    assert!(
        matches!(aborted, TransactionOutcome::Aborted { .. }),
        "{aborted:?}"
    );

    producer.begin().await.unwrap();
    send_values(&mut producer, "orders", 3, "third").await;
    assert_eq!(producer.commit().await, TransactionOutcome::Committed);

    assert_eq!(
        read(&client, "orders", 3, IsolationLevel::ReadCommitted).await,
        values(3, &["first", "third"])
    );
    // read_uncommitted returns the aborted records too, in offset order; never the markers.
    assert_eq!(
        read(&client, "orders", 3, IsolationLevel::ReadUncommitted).await,
        values(3, &["first", "aborted", "third"])
    );
    b.stop().await;
}

#[tokio::test]
async fn an_open_transaction_holds_read_committed_consumers_at_its_first_record() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("open", 1))
        .await
        .unwrap();
    let mut producer = TransactionalProducer::new(client.clone(), transactional("open-app"))
        .await
        .unwrap();
    producer.begin().await.unwrap();
    send_values(&mut producer, "open", 1, "pending").await;
    assert_eq!(
        read(&client, "open", 1, IsolationLevel::ReadCommitted).await,
        values(1, &[])
    );
    assert_eq!(producer.commit().await, TransactionOutcome::Committed);
    assert_eq!(
        read(&client, "open", 1, IsolationLevel::ReadCommitted).await,
        values(1, &["pending"])
    );
    b.stop().await;
}

#[tokio::test]
async fn a_zombie_producer_is_fenced_by_its_successor_and_its_open_transaction_aborted() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("zombies", 2))
        .await
        .unwrap();
    let mut zombie = TransactionalProducer::new(client.clone(), transactional("app"))
        .await
        .unwrap();
    zombie.begin().await.unwrap();
    send_values(&mut zombie, "zombies", 2, "zombie").await;

    // The successor's InitProducerId aborts the zombie's open transaction and bumps the epoch.
    let mut successor = TransactionalProducer::new(client.clone(), transactional("app"))
        .await
        .unwrap();
    assert_eq!(
        successor.producer_identity().0,
        zombie.producer_identity().0
    );
    assert!(successor.producer_identity().1 > zombie.producer_identity().1);

    let outcome = zombie.commit().await;
    assert!(
        matches!(
            outcome,
            TransactionOutcome::Fenced {
                error: ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch
            }
        ),
        "{outcome:?}"
    );
    assert!(zombie.is_fenced());
    assert!(matches!(
        zombie.begin().await,
        Err(TransactionError::Fenced(_))
    ));

    successor.begin().await.unwrap();
    send_values(&mut successor, "zombies", 2, "successor").await;
    assert_eq!(successor.commit().await, TransactionOutcome::Committed);
    assert_eq!(
        read(&client, "zombies", 2, IsolationLevel::ReadCommitted).await,
        values(2, &["successor"])
    );
    b.stop().await;
}

#[tokio::test]
async fn offsets_sent_to_a_transaction_become_the_groups_only_when_it_commits() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("input", 1)).await.unwrap();
    admin
        .create_topic(NewTopic::new("output", 1))
        .await
        .unwrap();
    let committed = |admin: Admin| async move {
        admin
            .list_group_offsets("transformers", Some(&[("input".to_string(), 0)]))
            .await
            .unwrap()
            .get(&("input".to_string(), 0))
            .map(|o| o.offset)
    };
    let mut producer = TransactionalProducer::new(client.clone(), transactional("transformer"))
        .await
        .unwrap();
    let offsets = |next: i64| BTreeMap::from([(("input".to_string(), 0), next)]);

    producer.begin().await.unwrap();
    send_values(&mut producer, "output", 1, "out").await;
    producer
        .send_offsets_to_transaction("transformers", &offsets(3))
        .await
        .unwrap();
    assert_eq!(
        committed(admin.clone()).await,
        None,
        "visible before the commit"
    );
    assert_eq!(producer.commit().await, TransactionOutcome::Committed);
    // EndTxn is answered once the decision is durable; the marker that makes the offsets the
    // group's follows.
    let visible = |want: i64| {
        let admin = admin.clone();
        async move {
            for _ in 0..200 {
                if committed(admin.clone()).await == Some(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("offset {want} never became the group's");
        }
    };
    visible(3).await;

    producer.begin().await.unwrap();
    producer
        .send_offsets_to_transaction("transformers", &offsets(5))
        .await
        .unwrap();
    assert!(matches!(
        producer.abort().await,
        TransactionOutcome::Aborted { .. }
    ));
    // The next transaction's AddOffsetsToTxn is answered CONCURRENT_TRANSACTIONS (and
    // retried) until the abort's markers are written: after it, the abort is complete.
    producer.begin().await.unwrap();
    producer
        .send_offsets_to_transaction("transformers", &offsets(4))
        .await
        .unwrap();
    assert_eq!(committed(admin.clone()).await, Some(3), "an aborted offset");
    assert_eq!(producer.commit().await, TransactionOutcome::Committed);
    visible(4).await;
    b.stop().await;
}

/// Kafka's producer refuses to commit a transaction one of whose records failed (an abortable
/// error) and the application aborts: the commit's outcome is Aborted, with the reason, and
/// none of the transaction is ever visible.
#[tokio::test]
async fn a_commit_after_a_failed_record_aborts_instead_and_says_why() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("partial", 2))
        .await
        .unwrap();
    let mut producer = TransactionalProducer::new(client.clone(), transactional("partial-app"))
        .await
        .unwrap();
    producer.begin().await.unwrap();
    send_values(&mut producer, "partial", 2, "kept-back").await;
    let refused = producer
        .send(ProducerRecord::new("partial", "nowhere").with_partition(7))
        .await
        .unwrap()
        .await;
    assert!(
        matches!(
            refused,
            SendOutcome::Failed {
                error: SendError::InvalidPartition { partition: 7, .. }
            }
        ),
        "{refused:?}"
    );
    let outcome = producer.commit().await;
    let TransactionOutcome::Aborted { reason } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.contains("there is no partition 7"), "{reason}");
    // The producer goes on: the next transaction commits.
    producer.begin().await.unwrap();
    send_values(&mut producer, "partial", 2, "after").await;
    assert_eq!(producer.commit().await, TransactionOutcome::Committed);
    assert_eq!(
        read(&client, "partial", 2, IsolationLevel::ReadCommitted).await,
        values(2, &["after"])
    );
    b.stop().await;
}

#[tokio::test]
async fn a_producer_with_a_transactional_id_must_be_a_transactional_producer() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    let plain = Producer::new(client, transactional("x")).await;
    assert!(matches!(
        plain,
        Err(ProducerInitError::TransactionalIdNeedsTransactionalProducer)
    ));
    b.stop().await;
}
