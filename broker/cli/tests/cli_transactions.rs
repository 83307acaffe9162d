//! `faultline transactions` against a broker serving on 127.0.0.1 in this process: the tables
//! kafka-transactions.sh prints (its headers, cells padded to the column and ended by a tab,
//! "None" for what is absent), `--json`, and the readable one-line errors with a non-zero exit
//! for bad input.
//!
//! The bugs these guard against: columns in another order or named otherwise than Kafka's
//! (scripts that parse the tool's output break), `--json` rows missing a field, an unknown
//! transactional id or topic reported as a debug dump or with exit 0, and `abort` by producer
//! id that wrote nothing.
#![cfg(not(madsim))]
// Test code: real sockets and waits (clippy.toml's bans are for broker code).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use broker::broker::Broker;
use broker::clock::{Clock, SystemClock};
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use broker::log::batch::{self, builder};
use bytes::Bytes;
use clap::Parser;
use cli::{Cli, Command};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, InitProducerIdRequest, ProduceRequest, ProducerId,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use wire::connection::{Connection, ConnectionConfig};

const TOPIC: &str = "payments";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A broker on 127.0.0.1 port 0 with topic `payments` (2 partitions) and
/// `__transaction_state`; stopped when the test's runtime ends.
async fn start(dir: &std::path::Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = BrokerConfig {
        listen: addr.clone(),
        data_dir: dir.to_path_buf(),
        transaction_state_log_num_partitions: 3,
        ..BrokerConfig::default()
    };
    let broker = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    broker.create_topic(TOPIC, 2, 1, &[], false).await.unwrap();
    broker.transaction_state_topic().await.unwrap();
    broker.catch_up().await.unwrap();
    tokio::spawn(broker::server::serve(
        broker,
        listener,
        std::future::pending(),
    ));
    addr
}

async fn connect(addr: &str) -> Connection {
    const SPEAKS: &[(ApiKey, i16, i16)] = &[
        (ApiKey::ApiVersions, 0, 3),
        (ApiKey::Produce, 9, 9),
        (ApiKey::InitProducerId, 4, 4),
        (ApiKey::AddPartitionsToTxn, 3, 3),
    ];
    let config = ConnectionConfig {
        client_id: "cli-transactions-test".into(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
    };
    Connection::connect(addr, config, SPEAKS).await.unwrap()
}

async fn init(c: &Connection, id: &str) -> (i64, i16) {
    let r = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s(id))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await
        .unwrap();
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

/// Opens `id`'s transaction on partition 0 with one record; returns its timestamp.
async fn open_transaction(c: &Connection, id: &str, (pid, epoch): (i64, i16)) -> i64 {
    let r = c
        .send(
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s(id)))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partitions(vec![0])]),
        )
        .await
        .unwrap();
    assert_eq!(
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    let stamp = SystemClock.now_ms();
    let records = builder::with_producer(
        builder::with_attributes(builder::simple(1, 4, b'x', stamp), batch::TRANSACTIONAL_BIT),
        pid,
        epoch,
        0,
    );
    let r = c
        .send(
            &ProduceRequest::default()
                .with_transactional_id(Some(TransactionalId(s(id))))
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records)))])]),
        )
        .await
        .unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    stamp
}

/// `faultline transactions <args> --bootstrap-server <addr>`: (exit code, stdout, stderr).
async fn run(addr: &str, args: &[&str]) -> (i32, String, String) {
    let argv = ["faultline", "transactions"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--bootstrap-server", addr]);
    let parsed = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Command::Transactions(args) = parsed.command else {
        panic!("not a transactions command");
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::transactions::run(args, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// The cells of each line, split at Kafka's tabs and unpadded.
fn cells(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| {
            assert!(l.ends_with('\t'), "every cell ends with a tab: {l:?}");
            l.trim_end_matches('\t')
                .split('\t')
                .map(|c| c.trim_end().to_string())
                .collect()
        })
        .collect()
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_have_kafkas_columns_and_json_has_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path()).await;
    let c = connect(&addr).await;
    let open = init(&c, "orders-tx").await;
    let stamp = open_transaction(&c, "orders-tx", open).await;
    let idle = init(&c, "idle-tx").await;

    // list: every coordinator's ids (here one broker, node 1).
    let (code, out, err) = run(&addr, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    let mut table = cells(&out);
    assert_eq!(
        table.remove(0),
        [
            "TransactionalId",
            "Coordinator",
            "ProducerId",
            "TransactionState"
        ]
    );
    table.sort();
    assert_eq!(
        table,
        [
            vec![
                "idle-tx".to_string(),
                "1".into(),
                idle.0.to_string(),
                "Empty".into()
            ],
            vec![
                "orders-tx".to_string(),
                "1".into(),
                open.0.to_string(),
                "Ongoing".into()
            ],
        ]
    );
    // Padded to the widest cell of the column ("TransactionalId", 15 characters).
    assert!(out.starts_with("TransactionalId\tCoordinator\tProducerId\tTransactionState\t\n"));
    assert!(out.contains("orders-tx      \t1          \t"), "{out:?}");
    let (_, out, _) = run(&addr, &["list", "--json"]).await;
    let mut rows = json_lines(&out);
    rows.sort_by_key(|r| r["transactional_id"].as_str().unwrap().to_string());
    assert_eq!(
        rows[1],
        serde_json::json!({"transactional_id": "orders-tx", "coordinator": 1,
            "producer_id": open.0, "state": "Ongoing"})
    );

    // describe: the open transaction and the idle id.
    let (code, out, err) = run(&addr, &["describe", "--transactional-id", "orders-tx"]).await;
    assert_eq!(code, 0, "{err}");
    let table = cells(&out);
    assert_eq!(
        table[0],
        [
            "CoordinatorId",
            "TransactionalId",
            "ProducerId",
            "ProducerEpoch",
            "TransactionState",
            "TransactionTimeoutMs",
            "CurrentTransactionStartTimeMs",
            "TransactionDurationMs",
            "TopicPartitions"
        ]
    );
    let row = &table[1];
    assert_eq!(
        row[..6],
        [
            "1",
            "orders-tx",
            &open.0.to_string(),
            &open.1.to_string(),
            "Ongoing",
            "60000"
        ]
    );
    assert!(row[6].parse::<i64>().unwrap() > 0);
    assert!(row[7].parse::<i64>().unwrap() >= 0);
    assert_eq!(row[8], "payments-0");
    let (_, out, _) = run(&addr, &["describe", "--transactional-id", "idle-tx"]).await;
    let row = &cells(&out)[1];
    assert_eq!(
        (
            row[4].as_str(),
            row[6].as_str(),
            row[7].as_str(),
            row[8].as_str()
        ),
        ("Empty", "None", "None", "")
    );
    let (_, out, _) = run(
        &addr,
        &["describe", "--transactional-id", "orders-tx", "--json"],
    )
    .await;
    let d = &json_lines(&out)[0];
    assert_eq!(d["state"], "Ongoing");
    assert_eq!(
        d["topic_partitions"],
        serde_json::json!([{"topic": TOPIC, "partition": 0}])
    );
    for field in [
        "coordinator_id",
        "producer_id",
        "producer_epoch",
        "transaction_timeout_ms",
        "current_transaction_start_time_ms",
        "transaction_duration_ms",
    ] {
        assert!(d[field].is_number(), "{field} in {d}");
    }

    // describe-producers: the open transaction starts at offset 0; partition 1 has none.
    let (code, out, err) = run(
        &addr,
        &["describe-producers", "--topic", TOPIC, "--partition", "0"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let table = cells(&out);
    assert_eq!(
        table,
        [
            vec![
                "ProducerId".to_string(),
                "ProducerEpoch".into(),
                "LatestCoordinatorEpoch".into(),
                "LastSequence".into(),
                "LastTimestamp".into(),
                "CurrentTransactionStartOffset".into()
            ],
            vec![
                open.0.to_string(),
                open.1.to_string(),
                "-1".into(),
                "0".into(),
                stamp.to_string(),
                "0".into()
            ]
        ]
    );
    let (_, out, _) = run(
        &addr,
        &["describe-producers", "--topic", TOPIC, "--partition", "1"],
    )
    .await;
    assert_eq!(cells(&out).len(), 1, "the header alone: {out}");
    let (_, out, _) = run(
        &addr,
        &[
            "describe-producers",
            "--topic",
            TOPIC,
            "--partition",
            "0",
            "--json",
        ],
    )
    .await;
    assert_eq!(
        json_lines(&out),
        [
            serde_json::json!({"producer_id": open.0, "producer_epoch": open.1,
            "latest_coordinator_epoch": -1, "last_sequence": 0, "last_timestamp": stamp,
            "current_transaction_start_offset": 0})
        ]
    );

    // abort by producer id (the form for brokers before 3.0): the transaction is closed on
    // the partition, and the producer shows no open transaction.
    let (code, out, err) = run(
        &addr,
        &[
            "abort",
            "--topic",
            TOPIC,
            "--partition",
            "0",
            "--producer-id",
            &open.0.to_string(),
            "--producer-epoch",
            &open.1.to_string(),
            "--coordinator-epoch",
            "-1",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_lines(&out)[0],
        serde_json::json!({"topic": TOPIC, "partition": 0, "producer_id": open.0,
            "producer_epoch": open.1, "coordinator_epoch": 0, "aborted": true})
    );
    let (_, out, _) = run(
        &addr,
        &["describe-producers", "--topic", TOPIC, "--partition", "0"],
    )
    .await;
    assert_eq!(cells(&out)[1][5], "None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_readable_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path()).await;
    let cases: &[(&[&str], &str)] = &[
        (
            &["describe", "--transactional-id", "nobody"],
            "error: Failed to describe transaction state of transactional-id `nobody`: \
             TRANSACTIONAL_ID_NOT_FOUND",
        ),
        (
            &[
                "describe-producers",
                "--topic",
                "missing",
                "--partition",
                "0",
            ],
            "error: Failed to describe producers for partition missing-0 on leader: topic \
             missing does not exist",
        ),
        (
            &["describe-producers", "--topic", TOPIC, "--partition", "5"],
            "error: Failed to describe producers for partition payments-5 on leader: topic \
             payments has no partition 5",
        ),
        (
            &["find-hanging"],
            "error: The `find-hanging` command requires either --topic or --broker-id to limit \
             the scope of the search",
        ),
        (
            &["find-hanging", "--broker-id", "1", "--partition", "0"],
            "error: The --partition argument requires --topic to be provided",
        ),
        (
            &["abort", "--topic", TOPIC, "--partition", "0"],
            "error: The transaction to abort must be identified either with --start-offset (for \
             brokers on 3.0 or above) or with --producer-id, --producer-epoch, and \
             --coordinator-epoch (for older brokers)",
        ),
        (
            &[
                "abort",
                "--topic",
                TOPIC,
                "--partition",
                "0",
                "--producer-id",
                "5",
            ],
            "error: Missing required argument --producer-epoch",
        ),
        (
            &[
                "abort",
                "--topic",
                TOPIC,
                "--partition",
                "1",
                "--start-offset",
                "0",
            ],
            "error: Could not find any open transactions starting at offset 0 on partition \
             payments-1",
        ),
    ];
    for (args, message) in cases {
        let (code, out, err) = run(&addr, args).await;
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
        assert_eq!(err.trim_end(), *message, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}");
    }
    // What clap refuses (exit 2 in the binary): a partition that is not a number, a start
    // offset together with a producer id.
    for args in [
        &[
            "transactions",
            "describe-producers",
            "--topic",
            "t",
            "--partition",
            "x",
        ][..],
        &[
            "transactions",
            "abort",
            "--topic",
            "t",
            "--partition",
            "0",
            "--start-offset",
            "1",
            "--producer-id",
            "2",
        ][..],
    ] {
        let e = Cli::try_parse_from(std::iter::once("faultline").chain(args.iter().copied()))
            .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{args:?}");
    }
}
