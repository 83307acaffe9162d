//! The Faultline client against a real broker on real sockets: admin, producer (acks 0/1/all,
//! Kafka's partitioner, the three outcome kinds), consumer (offsets, keys, values, duplicate
//! headers, timestamps), and the `topics`/`produce`/`consume` CLI commands run in-process.
//!
//! The outcome tests put a small TCP proxy between client and broker (the broker advertises the
//! proxy), so a test can swallow responses or cut connections mid-request: the checkers in the
//! simulator trust `Unknown` to mean "may have been written" and `Failed` to mean "was not", and
//! these tests pin both on a real network.
#![cfg(not(madsim))]

mod own_broker;
mod proxy;
use own_broker::{start_broker, start_broker_with};

use proxy::{start_proxy, CUT_ON_REQUEST, PASS, SWALLOW_RESPONSES};

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker::log::batch::TimestampType;
use clap::Parser;
use cli::{self, Cli, Command};
use client::partitioner::partition_for_key;
use client::*;
use kafka_protocol::error::ResponseError;
use tokio::net::TcpListener;

async fn client(addr: &str) -> Client {
    let mut config = ClientConfig::new(addr);
    config.connection.request_timeout = Duration::from_secs(10);
    Client::connect(config).await.unwrap()
}

/// Reads everything in `topic` from the earliest offsets until `expected` records arrived.
async fn read_all(client: &Client, topic: &str, expected: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            max_wait: Duration::from_millis(100),
            ..Default::default()
        },
    );
    consumer.assign_topic(topic).await.unwrap();
    for (t, p) in consumer.assignment() {
        consumer.seek(&t, p, SeekTo::Earliest).await.unwrap();
    }
    let mut out = Vec::new();
    for _ in 0..100 {
        out.extend(consumer.poll().await.unwrap());
        if out.len() >= expected {
            break;
        }
    }
    out
}

#[tokio::test]
async fn admin_creates_lists_describes_alters_and_deletes_topics() {
    let b = start_broker().await;
    let admin = Admin::new(client(&b.addr).await);
    let mut topic = NewTopic::new("orders", 3);
    topic.configs.push(("retention.ms".into(), "60000".into()));
    admin.create_topic(topic.clone()).await.unwrap();
    assert!(
        matches!(admin.create_topic(topic).await, Err(CreateTopicError::AlreadyExists(t)) if t == "orders")
    );
    admin.create_topic(NewTopic::new("audit", 1)).await.unwrap();
    let names: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["audit".to_string(), "orders".to_string()]);

    let described = admin.describe_topic("orders").await.unwrap();
    assert_eq!(described.partitions.len(), 3);
    assert!(described
        .partitions
        .iter()
        .all(|p| p.leader == 1 && p.isr == vec![1]));
    assert!(!described.id.is_nil());

    let config = admin.describe_topic_config("orders").await.unwrap();
    let retention = config.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(
        (retention.value.as_deref(), retention.is_default),
        (Some("60000"), false)
    );

    admin
        .alter_topic_config(
            "orders",
            &[ConfigChange::Set("retention.ms".into(), "120000".into())],
        )
        .await
        .unwrap();
    let config = admin.describe_topic_config("orders").await.unwrap();
    assert_eq!(
        config
            .iter()
            .find(|c| c.name == "retention.ms")
            .unwrap()
            .value
            .as_deref(),
        Some("120000")
    );
    admin
        .alter_topic_config("orders", &[ConfigChange::Delete("retention.ms".into())])
        .await
        .unwrap();
    let config = admin.describe_topic_config("orders").await.unwrap();
    assert!(
        config
            .iter()
            .find(|c| c.name == "retention.ms")
            .unwrap()
            .is_default
    );
    assert!(matches!(
        admin
            .alter_topic_config(
                "orders",
                &[ConfigChange::Set("retention.ms".into(), "soon".into())]
            )
            .await,
        Err(TopicError::Rejected {
            error: ResponseError::InvalidConfig,
            ..
        })
    ));

    admin.create_partitions("orders", 5).await.unwrap();
    assert_eq!(
        admin
            .describe_topic("orders")
            .await
            .unwrap()
            .partitions
            .len(),
        5
    );

    admin.delete_topic("orders").await.unwrap();
    assert!(
        matches!(admin.describe_topic("orders").await, Err(TopicError::UnknownTopic(t)) if t == "orders")
    );
    assert!(matches!(
        admin.delete_topic("orders").await,
        Err(TopicError::UnknownTopic(_))
    ));
    assert!(matches!(
        admin.describe_topic_config("nope").await,
        Err(TopicError::UnknownTopic(_))
    ));
    b.stop().await;
}

#[tokio::test]
async fn keyed_records_land_by_murmur2_and_read_back_with_duplicate_headers_and_timestamps() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("keyed", 4))
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_millis(20),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..40i64 {
        let key = format!("customer-{}", i % 7);
        let record = ProducerRecord::new("keyed", format!("value-{i}"))
            .with_key(key.clone())
            .with_header("trace", "a")
            .with_header("trace", format!("b{i}"))
            .with_timestamp(1_700_000_000_000 + i);
        deliveries.push((i, key, producer.send(record).await));
    }
    let mut expected = Vec::new();
    for (i, key, delivery) in deliveries {
        match delivery.await {
            SendOutcome::Acknowledged { partition, offset } => {
                assert_eq!(
                    partition,
                    partition_for_key(key.as_bytes(), 4),
                    "{key} partitioned like Kafka's Java client"
                );
                expected.push((partition, offset, i, key));
            }
            other => panic!("record {i}: {other:?}"),
        }
    }
    // Offsets per partition are dense from 0.
    for p in 0..4 {
        let mut offsets: Vec<i64> = expected.iter().filter(|e| e.0 == p).map(|e| e.1).collect();
        offsets.sort();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }
    let records = read_all(&client, "keyed", 40).await;
    assert_eq!(records.len(), 40);
    for (partition, offset, i, key) in expected {
        let r = records
            .iter()
            .find(|r| r.partition == partition && r.offset == offset)
            .unwrap();
        assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        assert_eq!(r.timestamp_ms, 1_700_000_000_000 + i);
        assert_eq!(r.timestamp_type, TimestampType::CreateTime);
        let headers: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            headers,
            vec![("trace", &b"a"[..]), ("trace", format!("b{i}").as_bytes())]
        );
    }
    producer.close().await;
    b.stop().await;
}

#[tokio::test]
async fn every_acks_setting_writes_and_acks_zero_is_reported_unknown_not_acknowledged() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("acks", 1))
        .await
        .unwrap();
    let mut offsets = Vec::new();
    for acks in [Acks::All, Acks::Leader, Acks::None] {
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                acks,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for n in 0..3 {
            let outcome = producer
                .send_and_wait(ProducerRecord::new("acks", format!("{acks:?}-{n}")))
                .await;
            match (acks, outcome) {
                (
                    Acks::None,
                    SendOutcome::Unknown {
                        reason: UnknownReason::NotAcknowledged,
                    },
                ) => {}
                (
                    _,
                    SendOutcome::Acknowledged {
                        partition: 0,
                        offset,
                    },
                ) => offsets.push(offset),
                (acks, other) => panic!("acks {acks:?}: {other:?}"),
            }
        }
        producer.close().await;
    }
    assert_eq!(offsets, (0..6).collect::<Vec<i64>>());
    let values: Vec<String> = read_all(&client, "acks", 9)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
        .collect();
    assert_eq!(values.len(), 9);
    assert_eq!(&values[6..], &["None-0", "None-1", "None-2"]);
    b.stop().await;
}

#[tokio::test]
async fn records_that_were_definitely_not_written_are_failed() {
    let b = start_broker_with(|c| c.auto_create_topics = false, None).await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("small", 2))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let outcome = producer
        .send_and_wait(ProducerRecord::new("missing", "x"))
        .await;
    assert_eq!(
        outcome,
        SendOutcome::Failed {
            error: SendError::UnknownTopic("missing".into())
        }
    );
    let outcome = producer
        .send_and_wait(ProducerRecord::new("small", "x").with_partition(7))
        .await;
    assert!(matches!(
        outcome,
        SendOutcome::Failed {
            error: SendError::InvalidPartition {
                partition: 7,
                partitions: 2,
                ..
            }
        }
    ));
    // MESSAGE_TOO_LARGE is not retriable and means "not appended".
    let outcome = producer
        .send_and_wait(ProducerRecord::new("small", vec![0u8; 2 * 1024 * 1024]).with_partition(0))
        .await;
    assert!(
        matches!(
            outcome,
            SendOutcome::Failed {
                error: SendError::Rejected {
                    error: ResponseError::MessageTooLarge,
                    ..
                }
            }
        ),
        "{outcome:?}"
    );
    assert!(read_all(&client, "small", 1).await.is_empty());
    producer.close().await;
    assert_eq!(
        producer
            .send_and_wait(ProducerRecord::new("small", "late"))
            .await,
        SendOutcome::Failed {
            error: SendError::Closed
        }
    );
    b.stop().await;
}

/// `send_with_callback` (Kafka's `send(record, callback)`) reports each record exactly once,
/// with what `send` reports: the acknowledged offsets in send order, read back at those
/// offsets, and a record refused before queuing (no such partition) failed at once.
#[tokio::test]
async fn a_send_callback_hears_each_records_outcome_once() {
    let b = start_broker_with(|c| c.auto_create_topics = false, None).await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("called", 2))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..5 {
        let tx = tx.clone();
        producer
            .send_with_callback(
                ProducerRecord::new("called", format!("v{i}")).with_partition(1),
                move |outcome| tx.send((i, outcome)).unwrap(),
            )
            .await;
    }
    let refused = tx.clone();
    producer
        .send_with_callback(
            ProducerRecord::new("called", "nowhere").with_partition(9),
            move |outcome| refused.send((99, outcome)).unwrap(),
        )
        .await;
    // Refused before queuing: answered during the call, before any queued record.
    let (first, outcome) = rx.try_recv().expect("the refusal is reported at once");
    assert_eq!(first, 99);
    assert!(
        matches!(
            outcome,
            SendOutcome::Failed {
                error: SendError::InvalidPartition { partition: 9, .. }
            }
        ),
        "{outcome:?}"
    );
    producer.flush().await;
    drop(tx);
    let mut heard = Vec::new();
    while let Some(item) = rx.recv().await {
        heard.push(item);
    }
    let offsets: Vec<(i32, i64)> = heard
        .iter()
        .map(|(i, outcome)| match outcome {
            SendOutcome::Acknowledged { partition, offset } => {
                assert_eq!(*partition, 1);
                (*i, *offset)
            }
            other => panic!("record {i}: {other:?}"),
        })
        .collect();
    assert_eq!(
        offsets,
        (0..5).map(|i| (i, i64::from(i))).collect::<Vec<_>>()
    );
    let read = read_all(&client, "called", 5).await;
    let values: Vec<(i64, Vec<u8>)> = read
        .iter()
        .map(|r| (r.offset, r.value.clone().unwrap().to_vec()))
        .collect();
    assert_eq!(
        values,
        (0..5)
            .map(|i| (i64::from(i), format!("v{i}").into_bytes()))
            .collect::<Vec<_>>()
    );
    b.stop().await;
}

/// A broker reached only through the test proxy (it advertises the proxy), a client with a
/// 500 ms request timeout, and a one-partition `topic`; the proxy's mode starts at PASS.
async fn behind_proxy(topic: &str) -> (own_broker::TestBroker, Arc<AtomicU8>, Client) {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap().to_string();
    let b = start_broker_with(|_| {}, Some(proxy_addr.clone())).await;
    let mode = Arc::new(AtomicU8::new(PASS));
    start_proxy(proxy, b.addr.clone(), Arc::clone(&mode)).await;

    let mut config = ClientConfig::new(proxy_addr);
    config.connection.request_timeout = Duration::from_millis(500);
    let client = Client::connect(config).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic::new(topic, 1))
        .await
        .unwrap();
    (b, mode, client)
}

#[tokio::test]
async fn a_lost_response_or_a_cut_connection_makes_the_outcome_unknown_and_the_record_may_be_there()
{
    let (b, mode, client) = behind_proxy("fragile").await;
    let no_retries = ProducerConfig {
        retries: 0,
        ..Default::default()
    };
    let producer = Producer::new(client.clone(), no_retries).await.unwrap();
    assert!(producer
        .send_and_wait(ProducerRecord::new("fragile", "ok"))
        .await
        .is_acknowledged());

    // The broker appends, the acknowledgement is lost: Unknown (and the record is there).
    mode.store(SWALLOW_RESPONSES, Ordering::SeqCst);
    let outcome = producer
        .send_and_wait(ProducerRecord::new("fragile", "written-unacknowledged"))
        .await;
    assert!(
        matches!(
            outcome,
            SendOutcome::Unknown {
                reason: UnknownReason::Timeout(_)
            }
        ),
        "{outcome:?}"
    );

    // The connection dies with the request in flight: Unknown (here it never arrived). First
    // reconnect and refresh metadata, so that the produce request itself is what gets cut.
    mode.store(PASS, Ordering::SeqCst);
    assert!(producer
        .send_and_wait(ProducerRecord::new("fragile", "again-ok"))
        .await
        .is_acknowledged());
    mode.store(CUT_ON_REQUEST, Ordering::SeqCst);
    let outcome = producer
        .send_and_wait(ProducerRecord::new("fragile", "cut"))
        .await;
    assert!(
        matches!(
            outcome,
            SendOutcome::Unknown {
                reason: UnknownReason::ConnectionLost(_)
            }
        ),
        "{outcome:?}"
    );

    // With retries, an ambiguous attempt followed by a success is acknowledged (the earlier
    // attempt never arrived here, so no duplicate).
    let retrying = Producer::new(
        client.clone(),
        ProducerConfig {
            retries: 5,
            retry_backoff: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sender = retrying.clone();
    let pending = tokio::spawn(async move {
        sender
            .send_and_wait(ProducerRecord::new("fragile", "retried"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    mode.store(PASS, Ordering::SeqCst);
    let outcome = pending.await.unwrap();
    assert!(outcome.is_acknowledged(), "{outcome:?}");

    let values: Vec<String> = read_all(&client, "fragile", 4)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
        .collect();
    assert_eq!(
        values,
        vec!["ok", "written-unacknowledged", "again-ok", "retried"]
    );

    // The broker is gone for good: nothing can be sent, so it is Failed, not Unknown.
    drop(producer);
    retrying.close().await;
    b.stop().await;
    let lone = Producer::new(
        client.clone(),
        ProducerConfig {
            retries: 1,
            retry_backoff: Duration::from_millis(10),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let outcome = lone
        .send_and_wait(ProducerRecord::new("fragile", "nobody home"))
        .await;
    assert!(
        matches!(
            &outcome,
            SendOutcome::Failed {
                error: SendError::NotConnected(_)
            }
        ) || matches!(&outcome, SendOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

/// The bug story (issue 11, KIP-360): an idempotent producer whose batch ended `Unknown`
/// without reaching the broker, or whose acknowledged tail an unclean election truncated, has
/// a gap in the partition's sequences; the partition refused every later batch with
/// OUT_OF_ORDER_SEQUENCE_NUMBER, and each refusal gave its sequences back, so the producer
/// never wrote to that partition again. As Kafka's producer does, it now bumps its epoch and
/// resends the refused batch from sequence 0: acknowledged, once, and so is every later send.
#[tokio::test]
async fn an_idempotent_producer_bumps_its_epoch_after_a_gap_in_its_sequences_and_carries_on() {
    let (b, mode, client) = behind_proxy("gapped").await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            enable_idempotence: true,
            retries: 2,
            retry_backoff: Duration::from_millis(20),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (producer_id, epoch) = producer.producer_identity().unwrap();
    let send = |value: &'static str| producer.send_and_wait(ProducerRecord::new("gapped", value));
    assert_eq!(
        send("first").await,
        SendOutcome::Acknowledged {
            partition: 0,
            offset: 0
        }
    );

    // Sequence 1 never reaches the broker, on every attempt: Unknown, and a gap.
    mode.store(CUT_ON_REQUEST, Ordering::SeqCst);
    let cut = send("never-arrived").await;
    assert!(matches!(cut, SendOutcome::Unknown { .. }), "{cut:?}");
    mode.store(PASS, Ordering::SeqCst);

    // Sequence 2 is refused (the broker's last is 0); the producer moves to the next epoch and
    // the batch goes again from sequence 0.
    assert_eq!(
        send("after-the-gap").await,
        SendOutcome::Acknowledged {
            partition: 0,
            offset: 1
        }
    );
    assert_eq!(producer.producer_identity(), Some((producer_id, epoch + 1)));
    assert_eq!(
        send("carries-on").await,
        SendOutcome::Acknowledged {
            partition: 0,
            offset: 2
        }
    );

    let values: Vec<String> = read_all(&client, "gapped", 3)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
        .collect();
    assert_eq!(values, ["first", "after-the-gap", "carries-on"]);
    producer.close().await;
    b.stop().await;
}

async fn run_cli(args: &[&str], input: &[u8]) -> (i32, String, String) {
    let cli =
        Cli::try_parse_from(std::iter::once("faultline").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = match cli.command {
        Command::Topics(a) => cli::topics::run(a, &mut out, &mut err).await,
        Command::Produce(a) => cli::produce::run(a, input, &mut out, &mut err).await,
        Command::Consume(a) => cli::consume::run(a, &mut out, &mut err).await,
        Command::Broker(_)
        | Command::Bench(_)
        | Command::Groups(_)
        | Command::Cluster(_)
        | Command::Transactions(_) => unreachable!("not used by these tests"),
    };
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn the_cli_creates_produces_consumes_describes_and_deletes() {
    let b = start_broker_with(|c| c.auto_create_topics = false, None).await;
    let bs = b.addr.as_str();
    let (code, out, err) = run_cli(
        &[
            "topics",
            "create",
            "--topic",
            "cli",
            "--partitions",
            "2",
            "--config",
            "retention.ms=60000",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "Created topic cli.\n", "")
    );
    let (code, out, _) = run_cli(&["topics", "list", "--bootstrap-server", bs], b"").await;
    assert_eq!((code, out.as_str()), (0, "cli\n"));
    let (code, out, _) = run_cli(
        &[
            "topics",
            "describe",
            "--topic",
            "cli",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("PartitionCount: 2\tReplicationFactor: 1\tConfigs: retention.ms=60000"),
        "{out}"
    );
    assert!(
        out.contains("Partition: 1\tLeader: 1\tReplicas: 1\tIsr: 1"),
        "{out}"
    );

    let (code, out, err) = run_cli(
        &[
            "produce",
            "--topic",
            "cli",
            "--key-separator",
            ":",
            "--acks",
            "1",
            "--json",
            "--bootstrap-server",
            bs,
        ],
        b"k1:hello\nk2:world\nk1:again\n",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["outcome"], "acknowledged");
    assert_eq!(first["partition"], partition_for_key(b"k1", 2));

    let (code, out, err) = run_cli(
        &[
            "consume",
            "--topic",
            "cli",
            "--from-beginning",
            "--max-messages",
            "3",
            "--print-key",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    assert_eq!(code, 0);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["k1\tagain", "k1\thello", "k2\tworld"]);
    assert_eq!(err, "Processed a total of 3 messages\n");

    let p = partition_for_key(b"k1", 2).to_string();
    let (code, out, _) = run_cli(
        &[
            "consume",
            "--topic",
            "cli",
            "--partition",
            &p,
            "--offset",
            "1",
            "--timeout-ms",
            "300",
            "--json",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    assert_eq!(code, 0);
    // Whatever else shares k1's partition, reading from offset 1 starts there and ends with
    // k1's second record.
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["offset"].as_i64(), Some(1));
    let last = records.last().unwrap();
    assert_eq!(
        (last["key"].as_str(), last["value"].as_str()),
        (Some("k1"), Some("again"))
    );
    assert_eq!(last["headers"].as_array().map(|h| h.len()), Some(0));

    let (code, _, _) = run_cli(
        &[
            "topics",
            "alter",
            "--topic",
            "cli",
            "--partitions",
            "3",
            "--add-config",
            "retention.ms=1000",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    assert_eq!(code, 0);
    let (_, out, _) = run_cli(
        &[
            "topics",
            "describe",
            "--topic",
            "cli",
            "--json",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    let described: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(described["partitions"].as_array().unwrap().len(), 3);

    // Errors: one line on stderr, non-zero exit.
    let (code, out, err) = run_cli(
        &[
            "topics",
            "describe",
            "--topic",
            "nope",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "error: topic \"nope\" does not exist\n")
    );
    let (code, _, err) = run_cli(
        &["produce", "--topic", "nope", "--bootstrap-server", bs],
        b"x\n",
    )
    .await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: topic \"nope\" does not exist\n")
    );
    let (code, _, err) = run_cli(
        &["consume", "--topic", "nope", "--bootstrap-server", bs],
        b"",
    )
    .await;
    // As kafka-console-consumer.sh, the summary is printed however consuming ends.
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Processed a total of 0 messages\nerror: topic \"nope\" does not exist\n"
        )
    );
    let (code, _, err) = run_cli(
        &[
            "produce",
            "--topic",
            "cli",
            "--key-separator",
            ":",
            "--bootstrap-server",
            bs,
        ],
        b"no separator\n",
    )
    .await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: line 1 has no key separator \":\"\n")
    );

    let (code, out, _) = run_cli(
        &[
            "topics",
            "delete",
            "--topic",
            "cli",
            "--bootstrap-server",
            bs,
        ],
        b"",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "Deleted topic cli.\n"));
    b.stop().await;

    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (code, _, err) = run_cli(&["topics", "list", "--bootstrap-server", &free], b"").await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "error: cannot connect to {free}: connection refused (is a broker running there?)\n"
        )
    );
}

/// Without an open transaction the LSO is the high watermark: a read_committed consumer reads
/// every plain record a read_uncommitted one reads, and its fetches report that LSO.
#[tokio::test]
async fn a_read_committed_consumer_reads_plain_records_and_sees_the_lso_at_the_high_watermark() {
    let b = start_broker().await;
    let client = client(&b.addr).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("plain", 1))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..5 {
        let outcome = producer
            .send_and_wait(ProducerRecord::new("plain", format!("v{i}")).with_partition(0))
            .await;
        assert!(
            matches!(outcome, SendOutcome::Acknowledged { .. }),
            "{outcome:?}"
        );
    }
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            max_wait: Duration::from_millis(100),
            isolation_level: IsolationLevel::ReadCommitted,
            ..Default::default()
        },
    );
    consumer.assign([("plain".to_string(), 0)]);
    consumer.seek("plain", 0, SeekTo::Earliest).await.unwrap();
    let mut values = Vec::new();
    for _ in 0..100 {
        values.extend(
            consumer
                .poll()
                .await
                .unwrap()
                .into_iter()
                .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
        );
        if values.len() >= 5 {
            break;
        }
    }
    assert_eq!(values, ["v0", "v1", "v2", "v3", "v4"]);
    assert_eq!(consumer.high_watermark("plain", 0), Some(5));
    assert_eq!(consumer.last_stable_offset("plain", 0), Some(5));
    // read_committed's latest offset is the LSO.
    assert_eq!(consumer.seek("plain", 0, SeekTo::Latest).await.unwrap(), 5);
}
