#![cfg(not(madsim))]
// Real sockets and files: the determinism rules in clippy.toml are for code that also runs
// under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! KIP-890 over real TCP on 127.0.0.1 with raw requests, on real files: transaction version 2
//! (EndTxn v5 bumps the producer epoch at every transaction end, answers the new epoch, the
//! markers carry it so a late produce of the old epoch is refused, a retried EndTxn is
//! recognised, and the last epoch rolls the producer id), the part 1 check for a transactional
//! batch sent without its transactional id, EndTxn v3 (transaction version 1, what librdkafka
//! speaks) unchanged, and ListTransactions v2's transactional-id pattern (KIP-1152). Each test
//! names the bug it guards against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::broker::Broker;
use broker::clock::{Clock, SystemClock};
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use broker::log::batch::{self, builder};
use broker::txn::coordinator::machine::{TxnState, EXHAUSTED_EPOCH};
use broker::txn::coordinator::records::{self, TxnRecord, TRANSACTION_STATE_TOPIC};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use wire::connection::{Connection, ConnectionConfig};

const TOPIC: &str = "payments";
const ID: &str = "payments-tx";
/// Every wait is bounded by this: a hang is a failure, a slow machine is not.
const WAIT: Duration = Duration::from_secs(30);

const SPEAKS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Produce, 3, 9),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

struct Served {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        transaction_state_log_num_partitions: 3,
        ..BrokerConfig::default()
    }
}

async fn open(config: &BrokerConfig) -> Arc<Broker> {
    let broker = Broker::open(
        config.clone(),
        Arc::new(FileDisk::new()),
        Arc::new(SystemClock),
    )
    .await
    .expect("broker opens");
    broker.create_topic(TOPIC, 2, 1, &[], false).await.ok();
    broker.transaction_state_topic().await.unwrap();
    broker.catch_up().await.unwrap();
    broker
}

async fn serve(config: &BrokerConfig) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BrokerConfig {
        listen: addr.to_string(),
        ..config.clone()
    };
    let broker = open(&config).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        broker::server::serve(Arc::clone(&broker), listener, async {
            let _ = stopped.await;
        })
        .await;
        broker.shutdown().await;
    });
    Served { addr, stop, task }
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }

    async fn connect(&self) -> Connection {
        let config = ConnectionConfig {
            client_id: "transaction-version-2-test".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: WAIT,
        };
        Connection::connect(&self.addr.to_string(), config, SPEAKS)
            .await
            .expect("connects")
    }
}

async fn send<R: kafka_protocol::protocol::Request>(
    c: &Connection,
    version: i16,
    request: &R,
) -> R::Response {
    c.send_version(request, version, WAIT)
        .await
        .expect("answered")
}

async fn init(c: &Connection, id: &str) -> (i64, i16) {
    let r = send(
        c,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await;
    assert_eq!(r.error_code, 0, "InitProducerId {id}");
    (r.producer_id.0, r.producer_epoch)
}

async fn add_partition(c: &Connection, id: &str, (pid, epoch): (i64, i16), partition: i32) -> i16 {
    let r = send(
        c,
        3,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![partition])]),
    )
    .await;
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

/// A produce (acks=all) of one batch; the partition's error code.
async fn produce(
    c: &Connection,
    transactional_id: Option<&str>,
    partition: i32,
    records: Vec<u8>,
) -> i16 {
    let r = send(
        c,
        9,
        &ProduceRequest::default()
            .with_transactional_id(transactional_id.map(|t| TransactionalId(s(t))))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(Bytes::from(records)))])]),
    )
    .await;
    r.responses[0].partition_responses[0].error_code
}

/// Two transactional records from producer (pid, epoch) at `seq`.
fn transactional((pid, epoch): (i64, i16), seq: i32) -> Vec<u8> {
    let built = builder::simple(2, 10, b't', SystemClock.now_ms());
    let built = builder::with_attributes(built, batch::TRANSACTIONAL_BIT);
    builder::with_producer(built, pid, epoch, seq)
}

/// EndTxn at `version`: the error code and the producer id and epoch answered.
async fn end_txn(
    c: &Connection,
    version: i16,
    (pid, epoch): (i64, i16),
    commit: bool,
) -> (i16, (i64, i16)) {
    let r = send(
        c,
        version,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    )
    .await;
    (r.error_code, (r.producer_id.0, r.producer_epoch))
}

/// Waits until the id's state is `state` (its markers written); its producer id and epoch.
async fn wait_state(c: &Connection, state: &str) -> (i64, i16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = send(
            c,
            0,
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s(ID))]),
        )
        .await;
        let d = &r.transaction_states[0];
        if d.error_code == 0 && d.transaction_state.as_str() == state {
            return (d.producer_id.0, d.producer_epoch);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {state}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The epoch partition `partition` holds for producer `pid` (the last marker's or batch's).
async fn partition_epoch(c: &Connection, partition: i32, pid: i64) -> Option<i32> {
    let r = send(
        c,
        0,
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![partition])]),
    )
    .await;
    r.topics[0].partitions[0]
        .active_producers
        .iter()
        .find(|p| p.producer_id.0 == pid)
        .map(|p| p.producer_epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_v5_bumps_the_epoch_the_markers_carry_it_and_a_late_produce_of_the_old_epoch_is_refused(
) {
    // The bugs: a coordinator that answered EndTxn v5 without a bump left the old epoch valid,
    // so a produce of the committed transaction delayed in the network was taken into the next
    // one (KIP-890 part 2); markers written with the old epoch left the partitions accepting it.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path())).await;
    let c = served.connect().await;
    let first = init(&c, ID).await;
    let (pid, epoch) = first;
    assert_eq!(add_partition(&c, ID, first, 0).await, 0);
    assert_eq!(produce(&c, Some(ID), 0, transactional(first, 0)).await, 0);

    let (error, next) = end_txn(&c, 5, first, true).await;
    assert_eq!(error, 0);
    assert_eq!(next, (pid, epoch + 1), "EndTxn v5 answers the bumped epoch");
    assert_eq!(wait_state(&c, "CompleteCommit").await, next);
    assert_eq!(
        partition_epoch(&c, 0, pid).await,
        Some(i32::from(epoch) + 1),
        "the commit marker carries the bumped epoch"
    );
    // The old epoch's late batch, whatever its sequence.
    for seq in [2, 0] {
        assert_eq!(
            produce(&c, Some(ID), 0, transactional(first, seq)).await,
            ResponseError::InvalidProducerEpoch.code(),
            "a produce of the committed transaction's epoch (seq {seq})"
        );
    }
    assert_eq!(
        add_partition(&c, ID, first, 0).await,
        ResponseError::ProducerFenced.code(),
        "the old epoch cannot start a transaction either"
    );

    // A retry of the commit (its answer lost) names the old epoch and is answered as before.
    assert_eq!(end_txn(&c, 5, first, true).await, (0, next));
    // An abort of the committed transaction is not a retry.
    assert_eq!(
        end_txn(&c, 5, first, false).await.0,
        ResponseError::InvalidTxnState.code()
    );

    // The next transaction runs at the new epoch, sequences from 0.
    assert_eq!(add_partition(&c, ID, next, 0).await, 0);
    assert_eq!(add_partition(&c, ID, next, 1).await, 0);
    assert_eq!(produce(&c, Some(ID), 0, transactional(next, 0)).await, 0);
    assert_eq!(produce(&c, Some(ID), 1, transactional(next, 0)).await, 0);
    let (error, after_abort) = end_txn(&c, 5, next, false).await;
    assert_eq!((error, after_abort), (0, (pid, epoch + 2)));
    assert_eq!(wait_state(&c, "CompleteAbort").await, after_abort);
    for p in 0..2 {
        assert_eq!(
            partition_epoch(&c, p, pid).await,
            Some(i32::from(epoch) + 2),
            "partition {p}: the abort marker carries the bumped epoch"
        );
        assert_eq!(
            produce(&c, Some(ID), p, transactional(next, 2)).await,
            ResponseError::InvalidProducerEpoch.code(),
            "partition {p}: a late produce of the aborted transaction"
        );
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_v3_keeps_the_epoch_as_transaction_version_1_clients_expect() {
    // The bug: bumping the epoch for a client that never learns of it (librdkafka speaks
    // EndTxn v1) would fence it at its next transaction.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path())).await;
    let c = served.connect().await;
    let producer = init(&c, ID).await;
    for round in 0..2 {
        assert_eq!(add_partition(&c, ID, producer, 0).await, 0);
        assert_eq!(
            produce(&c, Some(ID), 0, transactional(producer, round * 2)).await,
            0
        );
        assert_eq!(end_txn(&c, 3, producer, true).await.0, 0);
        assert_eq!(wait_state(&c, "CompleteCommit").await, producer);
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_v5_at_the_last_epoch_rolls_to_a_new_producer_id_at_epoch_0() {
    // The bug: bumping past i16::MAX (or handing the client i16::MAX, leaving no epoch to
    // fence it with) instead of moving the transactional id to a fresh producer id.
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // The id's producer, then its state moved to the exhausted epoch the way a long life of
    // transactions would leave it: a record of `__transaction_state`, reloaded at restart.
    let pid = {
        let broker = open(&config).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let served_pid = loop {
            match broker.txns().init_producer_id(ID, 60_000, None).await {
                Ok(p) => break p.producer_id,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let exhausted = TxnRecord {
            producer_id: served_pid,
            producer_epoch: EXHAUSTED_EPOCH,
            timeout_ms: 60_000,
            state: TxnState::Empty,
            partitions: Default::default(),
            last_update_ms: SystemClock.now_ms(),
            start_ms: -1,
            v2: Default::default(),
        };
        let index = broker.txns().partition_for(ID);
        let state = broker.partition(TRANSACTION_STATE_TOPIC, index).unwrap();
        let mut record = builder::batch(&[builder::Record {
            key: Some(records::encode_key(ID)),
            value: Some(records::encode_value(&exhausted)),
            timestamp_ms: SystemClock.now_ms(),
        }]);
        let info = state.append_unexposed(&mut record).await.unwrap();
        state.wait_durable(&info).await.unwrap();
        drop(state);
        broker.shutdown().await;
        served_pid
    };
    let served = serve(&config).await;
    let c = served.connect().await;
    let last = (pid, EXHAUSTED_EPOCH);
    assert_eq!(add_partition(&c, ID, last, 0).await, 0);
    assert_eq!(produce(&c, Some(ID), 0, transactional(last, 0)).await, 0);
    let (error, rolled) = end_txn(&c, 5, last, true).await;
    assert_eq!(error, 0);
    assert_ne!(rolled.0, pid, "a new producer id");
    assert!(rolled.0 >= 0);
    assert_eq!(rolled.1, 0, "at epoch 0");
    assert_eq!(wait_state(&c, "CompleteCommit").await, rolled);
    assert_eq!(
        partition_epoch(&c, 0, pid).await,
        Some(i32::from(i16::MAX)),
        "the markers went out with the old id at the last epoch"
    );
    assert_eq!(
        produce(&c, Some(ID), 0, transactional(last, 2)).await,
        ResponseError::InvalidProducerIdMapping.code(),
        "the old id is done: the coordinator no longer maps the transactional id to it (the \
         verification's INVALID_PRODUCER_ID_MAPPING, which Kafka's produce passes on)"
    );
    // A retry of the EndTxn that rolled the id names the old id and is answered the new one.
    assert_eq!(end_txn(&c, 5, last, true).await, (0, rolled));
    // The new id carries on.
    assert_eq!(add_partition(&c, ID, rolled, 0).await, 0);
    assert_eq!(produce(&c, Some(ID), 0, transactional(rolled, 0)).await, 0);
    assert_eq!(end_txn(&c, 5, rolled, true).await, (0, (rolled.0, 1)));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_batch_without_its_transactional_id_is_refused() {
    // KIP-890 part 1. The bug: the check that a transactional batch belongs to an ongoing
    // transaction of its producer ran only when the produce named its transactional id, so a
    // client that left the id out could open a transaction on the partition that no
    // coordinator knows of (a hanging transaction holding the last stable offset back).
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path())).await;
    let c = served.connect().await;
    let producer = init(&c, ID).await;
    assert_eq!(
        produce(&c, None, 0, transactional(producer, 0)).await,
        ResponseError::TransactionalIdAuthorizationFailed.code(),
        "no transaction is open, and no id to check with"
    );
    assert_eq!(add_partition(&c, ID, producer, 0).await, 0);
    assert_eq!(
        produce(&c, None, 0, transactional(producer, 0)).await,
        ResponseError::TransactionalIdAuthorizationFailed.code(),
        "even in a transaction: Kafka refuses it without the id"
    );
    assert_eq!(
        partition_epoch(&c, 0, producer.0).await,
        None,
        "nothing was appended"
    );
    assert_eq!(
        produce(&c, Some(ID), 0, transactional(producer, 0)).await,
        0
    );
    // A plain batch needs no id.
    assert_eq!(
        produce(
            &c,
            None,
            1,
            builder::simple(1, 10, b'p', SystemClock.now_ms())
        )
        .await,
        0
    );
    served.stop().await;
}

async fn list_ids(c: &Connection, version: i16, pattern: Option<&str>) -> (i16, Vec<String>) {
    let r: ListTransactionsResponse = send(
        c,
        version,
        &ListTransactionsRequest::default().with_transactional_id_pattern(pattern.map(s)),
    )
    .await;
    let mut ids: Vec<String> = r
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.to_string())
        .collect();
    ids.sort();
    (r.error_code, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_transactions_v2_filters_ids_by_a_whole_match_of_the_pattern() {
    // KIP-1152. The bugs: a pattern matched anywhere in the id (Kafka matches the whole id),
    // a broken pattern answered as "no ids" rather than INVALID_REGULAR_EXPRESSION.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path())).await;
    let c = served.connect().await;
    for id in ["orders-1", "orders-2", "payments-1", "xorders-1"] {
        init(&c, id).await;
    }
    let all: Vec<String> = ["orders-1", "orders-2", "payments-1", "xorders-1"]
        .map(String::from)
        .to_vec();
    assert_eq!(list_ids(&c, 2, None).await, (0, all.clone()));
    assert_eq!(list_ids(&c, 2, Some("")).await, (0, all.clone()));
    assert_eq!(
        list_ids(&c, 2, Some("orders-.*")).await,
        (0, vec!["orders-1".into(), "orders-2".into()])
    );
    assert_eq!(
        list_ids(&c, 2, Some("orders")).await,
        (0, vec![]),
        "a whole match"
    );
    assert_eq!(
        list_ids(&c, 2, Some(".*-1")).await,
        (
            0,
            vec!["orders-1".into(), "payments-1".into(), "xorders-1".into()]
        )
    );
    for broken in ["orders-(", "a)(b", "*"] {
        assert_eq!(
            list_ids(&c, 2, Some(broken)).await,
            (ResponseError::InvalidRegularExpression.code(), vec![]),
            "{broken}"
        );
    }
    served.stop().await;
}
