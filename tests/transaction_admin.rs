#![cfg(not(madsim))]
// Real sockets, files and threads against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! The transaction admin APIs over real TCP on 127.0.0.1, on real files: DescribeTransactions
//! and ListTransactions (the coordinator's ids and their filters), DescribeProducers (a
//! partition's open transaction), a hanging transaction found and aborted with
//! `faultline transactions` (read_committed readers then move past it), OffsetFetch's
//! UNSTABLE_OFFSET_COMMIT while a transactional offset commit is pending (raw, and through
//! librdkafka's read_committed consumer), and `transactional.id.expiration.ms` (the tombstone
//! survives a restart). Each test names the bug it guards against.

mod replicated_cluster;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::broker::Broker;
use broker::clock::{Clock, ManualClock, SystemClock};
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use broker::log::batch::{self, builder};
use bytes::Bytes;
use clap::Parser;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use wire::connection::{Connection, ConnectionConfig};

const TOPIC: &str = "payments";
const GROUP: &str = "billing";
/// Every wait is bounded by this: a hang is a failure, a slow machine is not.
const WAIT: Duration = Duration::from_secs(30);

const SPEAKS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Produce, 3, 9),
    (ApiKey::ListOffsets, 2, 7),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::OffsetFetch, 7, 8),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A broker serving on 127.0.0.1 (port 0) from a data directory, with a clock of the test's.
struct Served {
    addr: SocketAddr,
    broker: Arc<Broker>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(config: &BrokerConfig, clock: Arc<dyn Clock>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BrokerConfig {
        listen: addr.to_string(),
        ..config.clone()
    };
    let broker = Broker::open(config, Arc::new(FileDisk::new()), clock)
        .await
        .expect("broker opens");
    broker.create_topic(TOPIC, 2, 1, &[], false).await.ok();
    broker.transaction_state_topic().await.unwrap();
    broker.offsets_topic().await.unwrap();
    broker.catch_up().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = Arc::clone(&broker);
    let kept = Arc::clone(&broker);
    let task = tokio::spawn(async move {
        broker::server::serve(Arc::clone(&served), listener, async {
            let _ = stopped.await;
        })
        .await;
        served.shutdown().await;
    });
    Served {
        addr,
        broker: kept,
        stop,
        task,
    }
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }

    async fn connect(&self) -> Connection {
        let config = ConnectionConfig {
            client_id: "transaction-admin-test".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: WAIT,
        };
        Connection::connect(&self.addr.to_string(), config, SPEAKS)
            .await
            .expect("connects")
    }
}

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        transaction_state_log_num_partitions: 3,
        offsets_topic_num_partitions: 3,
        // The tests that move a manual clock by minutes must not fence the broker with it.
        broker_session_timeout_ms: 24 * 3_600_000,
        ..BrokerConfig::default()
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

async fn init(c: &Connection, id: &str, timeout_ms: i32) -> (i64, i16) {
    let r = send(
        c,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await;
    assert_eq!(r.error_code, 0, "InitProducerId {id}");
    (r.producer_id.0, r.producer_epoch)
}

async fn add_partition(c: &Connection, id: &str, (pid, epoch): (i64, i16), partition: i32) {
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
    assert_eq!(
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
}

/// Produces `records` (acks=all, Produce v9: a client without KIP-890 part 2); the answer.
async fn produce_answer(
    c: &Connection,
    transactional_id: Option<&str>,
    partition: i32,
    records: Vec<u8>,
) -> produce_response::PartitionProduceResponse {
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
    r.responses[0].partition_responses[0].clone()
}

/// Produces `records` (acks=all); the batch's base offset.
async fn produce(
    c: &Connection,
    transactional_id: Option<&str>,
    partition: i32,
    records: Vec<u8>,
) -> i64 {
    let p = produce_answer(c, transactional_id, partition, records).await;
    assert_eq!(p.error_code, 0, "produce: {:?}", p.error_message);
    p.base_offset
}

/// `count` records from producer (pid, epoch) at `seq`, transactional, stamped `timestamp_ms`.
fn transactional((pid, epoch): (i64, i16), seq: i32, count: usize, timestamp_ms: i64) -> Vec<u8> {
    let built = builder::simple(count, 10, b't', timestamp_ms);
    let built = builder::with_attributes(built, batch::TRANSACTIONAL_BIT);
    builder::with_producer(built, pid, epoch, seq)
}

async fn end_txn(c: &Connection, id: &str, (pid, epoch): (i64, i16), commit: bool) {
    let r = send(
        c,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    )
    .await;
    assert_eq!(r.error_code, 0, "EndTxn {id}");
}

async fn describe(c: &Connection, ids: &[&str]) -> Vec<TransactionState> {
    send(
        c,
        0,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(ids.iter().map(|i| TransactionalId(s(i))).collect()),
    )
    .await
    .transaction_states
}

/// Waits until `id`'s state is `state` (its markers written).
async fn wait_state(c: &Connection, id: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = describe(c, &[id]).await;
        if d[0].error_code == 0 && d[0].transaction_state.as_str() == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {state}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list(c: &Connection, request: ListTransactionsRequest) -> ListTransactionsResponse {
    send(c, 1, &request).await
}

fn listed(r: &ListTransactionsResponse) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .transaction_states
        .iter()
        .map(|t| {
            (
                t.transactional_id.to_string(),
                t.transaction_state.to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_describe_show_two_transactional_ids_in_their_states_with_kafkas_filters() {
    // The bugs: a coordinator that described every id as Empty (or lost the partitions of the
    // transaction in flight), filters that were ignored, and an unknown state name that was
    // silently treated as "no filter".
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let served = serve(&config(dir.path()), clock.clone()).await;
    let c = served.connect().await;
    let busy = init(&c, "busy", 60_000).await;
    add_partition(&c, "busy", busy, 1).await;
    let idle = init(&c, "idle", 30_000).await;

    let d = describe(&c, &["busy", "idle", "never"]).await;
    assert_eq!(d.len(), 3);
    assert_eq!(
        (
            d[0].error_code,
            d[0].transaction_state.as_str(),
            d[0].producer_id.0,
            d[0].producer_epoch,
            d[0].transaction_timeout_ms,
            d[0].transaction_start_time_ms,
        ),
        (0, "Ongoing", busy.0, busy.1, 60_000, t0)
    );
    assert_eq!(d[0].topics.len(), 1);
    assert_eq!(
        (
            d[0].topics[0].topic.as_str(),
            d[0].topics[0].partitions.clone()
        ),
        (TOPIC, vec![1])
    );
    assert_eq!(
        (
            d[1].error_code,
            d[1].transaction_state.as_str(),
            d[1].producer_id.0,
            d[1].transaction_start_time_ms,
            d[1].topics.len()
        ),
        (0, "Empty", idle.0, -1, 0)
    );
    assert_eq!(
        d[2].error_code,
        ResponseError::TransactionalIdNotFound.code()
    );

    let all = list(&c, ListTransactionsRequest::default()).await;
    assert_eq!(all.error_code, 0);
    assert_eq!(
        listed(&all),
        vec![
            ("busy".into(), "Ongoing".into()),
            ("idle".into(), "Empty".into())
        ]
    );
    let ongoing = list(
        &c,
        ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing"), s("Bogus")]),
    )
    .await;
    assert_eq!(listed(&ongoing), vec![("busy".into(), "Ongoing".into())]);
    assert_eq!(ongoing.unknown_state_filters, vec![s("Bogus")]);
    let by_producer = list(
        &c,
        ListTransactionsRequest::default().with_producer_id_filters(vec![ProducerId(idle.0)]),
    )
    .await;
    assert_eq!(listed(&by_producer), vec![("idle".into(), "Empty".into())]);
    // KIP-994: only transactions running longer than the filter.
    let longer = ListTransactionsRequest::default()
        .with_state_filters(vec![s("Ongoing")])
        .with_duration_filter(10_000);
    assert!(listed(&list(&c, longer.clone()).await).is_empty());
    clock.advance_ms(10_001);
    assert_eq!(
        listed(&list(&c, longer).await),
        vec![("busy".into(), "Ongoing".into())]
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_producers_shows_the_open_transaction_of_a_partition_and_its_start_offset() {
    // The bug: a DescribeProducers that answered the producers' epochs but not the offset
    // their open transaction started at, which is what `abort --start-offset` looks for.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path()), Arc::new(SystemClock)).await;
    let c = served.connect().await;
    // Two plain records first, so the transaction does not start at 0.
    produce(
        &c,
        None,
        0,
        builder::simple(2, 10, b'p', SystemClock.now_ms()),
    )
    .await;
    let producer = init(&c, "writer", 60_000).await;
    add_partition(&c, "writer", producer, 0).await;
    let stamp = SystemClock.now_ms();
    let start = produce(&c, Some("writer"), 0, transactional(producer, 0, 3, stamp)).await;
    assert_eq!(start, 2);

    let r = send(
        &c,
        0,
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![0, 1, 7])]),
    )
    .await;
    let partitions = &r.topics[0].partitions;
    assert_eq!(partitions[0].error_code, 0);
    let active = &partitions[0].active_producers;
    assert_eq!(active.len(), 1, "{active:?}");
    let p = &active[0];
    assert_eq!(
        (
            p.producer_id.0,
            p.producer_epoch,
            p.last_sequence,
            p.last_timestamp,
            p.coordinator_epoch,
            p.current_txn_start_offset
        ),
        (producer.0, i32::from(producer.1), 2, stamp, -1, 2)
    );
    assert_eq!(
        (
            partitions[1].error_code,
            partitions[1].active_producers.len()
        ),
        (0, 0)
    );
    assert_eq!(
        partitions[2].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    // Once committed, the producer has no open transaction and carries the coordinator epoch.
    end_txn(&c, "writer", producer, true).await;
    wait_state(&c, "writer", "CompleteCommit").await;
    let r = send(
        &c,
        0,
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![0])]),
    )
    .await;
    let p = &r.topics[0].partitions[0].active_producers[0];
    assert_eq!(p.current_txn_start_offset, -1);
    assert!(p.coordinator_epoch >= 0);
    served.stop().await;
}

async fn last_stable_offset(c: &Connection, partition: i32) -> i64 {
    let r = send(
        c,
        7,
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(1)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1)])]),
    )
    .await;
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

/// Runs `faultline transactions <args>` in-process against `served`: (exit code, stdout,
/// stderr).
async fn cli(served: &Served, args: &[&str]) -> (i32, String, String) {
    let bootstrap = served.addr.to_string();
    let argv = ["faultline", "transactions"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--bootstrap-server", bootstrap.as_str()]);
    let parsed = cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let cli::Command::Transactions(args) = parsed.command else {
        panic!("not a transactions command")
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::transactions::run(args, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn read_committed(bootstrap: &str, group: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("socket.timeout.ms", "10000");
    config.create().expect("consumer")
}

/// The values of the records a read_committed consumer reads from `from` on, until it has
/// `count` or WAIT passes.
fn consume(bootstrap: &str, partition: i32, from: Offset, count: usize) -> Vec<(i64, Vec<u8>)> {
    let consumer = read_committed(bootstrap, "transaction-admin-reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, from).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < count && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("a record");
            got.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_transaction_is_found_and_aborted_with_the_cli_and_read_committed_readers_pass_it(
) {
    // The hanging transaction: a transactional write that reached a partition after its
    // transaction was aborted (here appended to the partition directly, as a broker without
    // KIP-890's check would have taken it; this broker's produce refuses it). Nothing will ever end it, so
    // the last stable offset stays at its first offset and read_committed consumers stall.
    // The bugs: find-hanging that missed it (or listed a transaction its coordinator will end),
    // an abort that wrote its marker with the wrong producer or epoch (refused, or closing
    // nothing), and a last stable offset that did not move with the marker.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path()), Arc::new(SystemClock)).await;
    let c = served.connect().await;
    let producer = init(&c, "stuck", 60_000).await;
    add_partition(&c, "stuck", producer, 0).await;
    let now = SystemClock.now_ms();
    produce(&c, Some("stuck"), 0, transactional(producer, 0, 1, now)).await;
    // The late write, stamped 20 minutes ago: older than the default 15-minute search window.
    let late = now - 20 * 60_000;
    let start = served
        .broker
        .partition(TOPIC, 1)
        .unwrap()
        .append(&mut transactional(producer, 0, 2, late))
        .await
        .unwrap()
        .base_offset;
    assert_eq!(start, 0);
    end_txn(&c, "stuck", producer, false).await;
    wait_state(&c, "stuck", "CompleteAbort").await;
    // Another producer's transaction, open on partition 0 with an old write, that its
    // coordinator still holds (it will write the marker): slow, not hanging.
    let slow = init(&c, "slow", 60_000).await;
    add_partition(&c, "slow", slow, 0).await;
    produce(&c, Some("slow"), 0, transactional(slow, 0, 1, late)).await;
    let after = produce(&c, None, 1, builder::simple(1, 5, b'a', now)).await;
    assert_eq!(after, 2);
    assert_eq!(
        last_stable_offset(&c, 1).await,
        0,
        "held at the hanging transaction"
    );
    // Partition 0's first transaction was aborted by its coordinator, the second is ongoing
    // there: neither hangs.
    let (code, out, err) = cli(&served, &["find-hanging", "--topic", TOPIC]).await;
    assert_eq!(code, 0, "{err}");
    let table = rows(&out);
    assert_eq!(
        table[0],
        [
            "Topic",
            "Partition",
            "ProducerId",
            "ProducerEpoch",
            "CoordinatorEpoch",
            "StartOffset",
            "LastTimestamp",
            "Duration(min)"
        ]
    );
    assert_eq!(table.len(), 2, "one hanging transaction: {out}");
    assert_eq!(
        table[1][..7],
        [
            TOPIC.to_string(),
            "1".into(),
            producer.0.to_string(),
            producer.1.to_string(),
            "-1".into(),
            "0".into(),
            late.to_string()
        ],
        "{out}"
    );
    assert!(table[1][7].parse::<i64>().unwrap() >= 20);

    let (code, out, err) = cli(
        &served,
        &[
            "abort",
            "--topic",
            TOPIC,
            "--partition",
            "1",
            "--start-offset",
            "0",
        ],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let lso = last_stable_offset(&c, 1).await;
    assert_eq!(lso, 4, "two records, the plain one, the marker");
    let (code, out, _) = cli(&served, &["find-hanging", "--topic", TOPIC]).await;
    assert_eq!((code, rows(&out).len()), (0, 1), "nothing hangs now: {out}");
    // Aborting it again finds no open transaction at that offset.
    let (code, _, err) = cli(
        &served,
        &[
            "abort",
            "--topic",
            TOPIC,
            "--partition",
            "1",
            "--start-offset",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("Could not find any open transactions starting at offset 0"),
        "{err}"
    );

    let bootstrap = served.addr.to_string();
    let read = tokio::task::spawn_blocking(move || consume(&bootstrap, 1, Offset::Beginning, 1))
        .await
        .unwrap();
    assert_eq!(
        read,
        vec![(2, b"a".repeat(5).to_vec())],
        "the aborted records are skipped and the plain one is read"
    );
    served.stop().await;
}

async fn add_offsets(c: &Connection, id: &str, (pid, epoch): (i64, i16)) {
    let r = send(
        c,
        3,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s(GROUP))),
    )
    .await;
    assert_eq!(r.error_code, 0);
}

async fn txn_offset_commit(c: &Connection, id: &str, (pid, epoch): (i64, i16), offset: i64) {
    let r = send(
        c,
        3,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_group_id(GroupId(s(GROUP)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])]),
    )
    .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
}

/// OffsetFetch of the group's partition 0 at `version` (7: one group; 8: the groups array):
/// (offset, error code).
async fn offset_fetch(c: &Connection, version: i16, require_stable: bool) -> (i64, i16) {
    let request = if version >= 8 {
        OffsetFetchRequest::default()
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_indexes(vec![0])]))])
            .with_require_stable(require_stable)
    } else {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partition_indexes(vec![0])]))
            .with_require_stable(require_stable)
    };
    let r = send(c, version, &request).await;
    if version >= 8 {
        let g = &r.groups[0];
        assert_eq!(g.error_code, 0);
        let p = &g.topics[0].partitions[0];
        (p.committed_offset, p.error_code)
    } else {
        assert_eq!(r.error_code, 0);
        let p = &r.topics[0].partitions[0];
        (p.committed_offset, p.error_code)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_answers_unstable_offset_commit_while_a_transactional_commit_is_pending() {
    // The bug: a require_stable fetch answered the last stable offset while a transaction had
    // a newer one pending, so a read_committed consumer that took over the partition started
    // from the old offset and processed again what the pending transaction was committing.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path()), Arc::new(SystemClock)).await;
    let c = served.connect().await;
    let id = "offsets-tx";
    let producer = init(&c, id, 60_000).await;
    add_offsets(&c, id, producer).await;
    txn_offset_commit(&c, id, producer, 5).await;
    end_txn(&c, id, producer, true).await;
    wait_state(&c, id, "CompleteCommit").await;
    assert_eq!(offset_fetch(&c, 7, true).await, (5, 0));

    add_offsets(&c, id, producer).await;
    txn_offset_commit(&c, id, producer, 9).await;
    let unstable = ResponseError::UnstableOffsetCommit.code();
    assert_eq!(offset_fetch(&c, 7, true).await, (-1, unstable));
    assert_eq!(offset_fetch(&c, 8, true).await, (-1, unstable));
    assert_eq!(
        offset_fetch(&c, 7, false).await,
        (5, 0),
        "without require_stable: the last stable offset"
    );
    end_txn(&c, id, producer, true).await;
    wait_state(&c, id, "CompleteCommit").await;
    assert_eq!(offset_fetch(&c, 7, true).await, (9, 0));
    assert_eq!(offset_fetch(&c, 8, true).await, (9, 0));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_librdkafka_consumer_starts_from_the_offset_a_pending_transaction_commits()
{
    // librdkafka's read_committed consumer fetches its group's offsets with require_stable and
    // retries UNSTABLE_OFFSET_COMMIT. The bug: without the error it got "no offset", reset to
    // the earliest record and read records 0..4 again, which the transaction had consumed.
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&config(dir.path()), Arc::new(SystemClock)).await;
    let c = served.connect().await;
    for _ in 0..6 {
        produce(
            &c,
            None,
            0,
            builder::simple(1, 3, b'r', SystemClock.now_ms()),
        )
        .await;
    }
    let id = "consume-transform-produce";
    let producer = init(&c, id, 60_000).await;
    add_offsets(&c, id, producer).await;
    txn_offset_commit(&c, id, producer, 4).await;

    let bootstrap = served.addr.to_string();
    let reader = tokio::task::spawn_blocking(move || {
        let consumer = read_committed(&bootstrap, GROUP);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Stored).unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                return Some(m.expect("a record").offset());
            }
        }
        None
    });
    // The consumer is retrying its offset fetch meanwhile (a wait for the test's sake only:
    // the assertion is on where it starts, not on when).
    tokio::time::sleep(Duration::from_secs(1)).await;
    end_txn(&c, id, producer, true).await;
    assert_eq!(
        reader.await.unwrap(),
        Some(4),
        "the first record read is the one the transaction committed"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_transactional_id_is_removed_by_a_tombstone_that_survives_a_restart() {
    // The bugs: ids never expiring (the coordinator's memory and __transaction_state grow with
    // every transactional id ever used), an id removed from memory only (a restart replays it
    // back), and an id expiring in the middle of its transaction.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = BrokerConfig {
        transactional_id_expiration_ms: 60_000,
        transaction_remove_expired_transaction_cleanup_interval_ms: 20,
        transaction_max_timeout_ms: 3_600_000,
        ..config(dir.path())
    };
    let served = serve(&config, clock.clone()).await;
    let c = served.connect().await;
    let old = init(&c, "old", 60_000).await;
    let busy = init(&c, "busy", 3_600_000).await;
    add_partition(&c, "busy", busy, 0).await;
    clock.advance_ms(60_001);
    let deadline = tokio::time::Instant::now() + WAIT;
    while describe(&c, &["old"]).await[0].error_code
        != ResponseError::TransactionalIdNotFound.code()
    {
        assert!(tokio::time::Instant::now() < deadline, "old never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = describe(&c, &["old", "busy"]).await;
    assert_eq!(
        d[0].error_code,
        ResponseError::TransactionalIdNotFound.code()
    );
    assert_eq!(
        (d[1].error_code, d[1].transaction_state.as_str()),
        (0, "Ongoing"),
        "a transaction in flight does not expire"
    );
    served.stop().await;

    let served = serve(&config, clock.clone()).await;
    let c = served.connect().await;
    let d = describe(&c, &["old", "busy"]).await;
    assert_eq!(
        d[0].error_code,
        ResponseError::TransactionalIdNotFound.code(),
        "the tombstone keeps it removed after the reload"
    );
    assert_eq!(d[1].transaction_state.as_str(), "Ongoing");
    let again = init(&c, "old", 60_000).await;
    assert_ne!(again.0, old.0, "a new producer id after expiry");
    assert_eq!(again.1, 0);
    served.stop().await;
}

#[test]
fn list_asks_every_broker_for_its_ids_and_describe_producers_answers_only_on_the_leader() {
    // Three brokers, `__transaction_state`'s partitions led by different ones. The bugs: a
    // ListTransactions that answered only for the ids of one shard (or a CLI that asked one
    // broker), and a DescribeProducers that answered from a follower's copy, whose producer
    // state may lag the leader's.
    let cluster = replicated_cluster::Cluster::start(replicated_cluster::Settings {
        lag_ms: 10_000,
        session_ms: 6_000,
        offsets_partitions: 3,
    });
    let bootstrap = cluster.bootstrap();
    let addrs: Vec<String> = bootstrap.split(',').map(str::to_string).collect();
    let topic = "admin-cluster";
    cluster
        .driver
        .block_on(cluster.broker(1).create_topic(topic, 1, 3, &[], false))
        .expect("topic created");
    cluster.eventually("the topic open on every broker", || {
        cluster.open_everywhere(topic)
    });
    let ids: Vec<String> = (0..9).map(|i| format!("cluster-tx-{i}")).collect();
    for id in &ids {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("broker.address.family", "v4")
            .set("transactional.id", id)
            .create()
            .expect("producer");
        producer.init_transactions(WAIT).expect("init_transactions");
    }
    // Each id's coordinator: the leader of its `__transaction_state` partition.
    let image = cluster.broker(1).image();
    let txns = std::sync::Arc::clone(cluster.broker(1).txns());
    let expected: BTreeMap<String, String> = ids
        .iter()
        .map(|id| {
            let p = txns.partition_for(id);
            let leader = image
                .partition("__transaction_state", p)
                .expect("partition")
                .leader;
            (id.clone(), leader.to_string())
        })
        .collect();
    let coordinators: std::collections::BTreeSet<&String> = expected.values().collect();
    assert!(
        coordinators.len() > 1,
        "the ids are spread over several coordinators: {expected:?}"
    );

    let run = |args: &[&str]| {
        let argv = ["faultline", "transactions"]
            .into_iter()
            .chain(args.iter().copied())
            .chain(["--bootstrap-server", addrs[0].as_str()]);
        let cli::Command::Transactions(args) = cli::Cli::try_parse_from(argv).unwrap().command
        else {
            panic!("not a transactions command")
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cluster
            .driver
            .block_on(cli::transactions::run(args, &mut out, &mut err));
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let (code, out, err) = run(&["list"]);
    assert_eq!(code, 0, "{err}");
    let listed: BTreeMap<String, String> = rows(&out)
        .into_iter()
        .skip(1)
        .filter(|r| r[0].starts_with("cluster-tx-"))
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(listed, expected, "every id, from its own coordinator");

    let leader = cluster.leader(topic);
    let follower = (1..=3).find(|b| *b != leader).unwrap();
    let describe_on = |broker: i32| {
        cluster.driver.block_on(async {
            let config = ConnectionConfig {
                client_id: "transaction-admin-test".into(),
                connect_timeout: Duration::from_secs(5),
                request_timeout: WAIT,
            };
            let c = Connection::connect(&addrs[(broker - 1) as usize], config, SPEAKS)
                .await
                .unwrap();
            let r = send(
                &c,
                0,
                &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(vec![0])]),
            )
            .await;
            r.topics[0].partitions[0].error_code
        })
    };
    assert_eq!(describe_on(leader), 0);
    assert_eq!(
        describe_on(follower),
        ResponseError::NotLeaderOrFollower.code()
    );
    let (code, _, err) = run(&[
        "describe-producers",
        "--topic",
        topic,
        "--partition",
        "0",
        "--broker-id",
        &follower.to_string(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "error: Failed to describe producers for partition {topic}-0 on broker {follower}: \
             {topic}-0: NOT_LEADER_OR_FOLLOWER"
        )),
        "{err}"
    );
}

/// A plain record (no producer id) stamped `timestamp_ms`.
fn plain(timestamp_ms: i64) -> Vec<u8> {
    builder::simple(1, 10, b'p', timestamp_ms)
}

#[test]
fn a_transactional_produce_its_coordinator_on_another_broker_never_saw_is_refused_and_opens_nothing(
) {
    // KIP-890 part 1 across brokers. The partition's leader is not the transactional id's
    // coordinator, so it must ask that broker (AddPartitionsToTxn v4 verify_only) before it
    // takes the first transactional batch of a transaction. The bug: a leader that takes the
    // batch unverified. A produce held in the network until after its transaction aborted
    // then opens a transaction nobody will ever end: the last stable offset stays at it and
    // every read_committed consumer stalls for good (Kafka's "hanging transaction"). The same
    // for a producer whose transaction never included the partition, and for a fenced epoch.
    let cluster = replicated_cluster::Cluster::start(replicated_cluster::Settings {
        lag_ms: 10_000,
        session_ms: 6_000,
        offsets_partitions: 3,
    });
    let broker = cluster.broker(1);
    cluster
        .driver
        .block_on(broker.create_topic(TOPIC, 1, 3, &[], false))
        .expect("topic created");
    cluster
        .driver
        .block_on(broker.transaction_state_topic())
        .expect("__transaction_state created");
    cluster.eventually("the topic open on every broker", || {
        cluster.open_everywhere(TOPIC)
    });
    let leader = cluster.leader(TOPIC);
    let coordinator_of = |id: &str| {
        let p = cluster.broker(1).txns().partition_for(id);
        cluster
            .broker(1)
            .image()
            .partition("__transaction_state", p)
            .map(|a| a.leader)
    };
    let id = (0..100)
        .map(|i| format!("verified-{i}"))
        .find(|id| coordinator_of(id).is_some_and(|c| c != leader))
        .expect("an id coordinated by another broker than the leader");
    let coordinator = coordinator_of(&id).unwrap();
    let state_partition = cluster.broker(1).txns().partition_for(&id);
    cluster.eventually("the coordinator loaded the id's shard", || {
        cluster
            .broker(coordinator)
            .txns()
            .loaded_shards()
            .contains(&state_partition)
    });
    cluster.eventually("the leader knows where the coordinator is", || {
        cluster
            .broker(leader)
            .image()
            .partition("__transaction_state", state_partition)
            .is_some_and(|a| a.leader == coordinator)
    });
    let connect = |broker: i32| {
        let addr = cluster.address(broker);
        cluster.driver.block_on(async move {
            let config = ConnectionConfig {
                client_id: "transaction-verification-test".into(),
                connect_timeout: Duration::from_secs(5),
                request_timeout: WAIT,
            };
            Connection::connect(&addr, config, SPEAKS)
                .await
                .expect("connects")
        })
    };
    let (to_coordinator, to_leader) = (connect(coordinator), connect(leader));
    cluster.driver.block_on(async {
        let refused = |p: &produce_response::PartitionProduceResponse, code: ResponseError| {
            assert_eq!(
                p.error_code,
                code.code(),
                "{:?}: {:?}",
                ResponseError::try_from_code(p.error_code),
                p.error_message
            );
            assert_eq!(p.base_offset, -1);
        };
        // The LSO at the log end: no transaction left open.
        let stable_at = |end: i64| {
            let c = &to_leader;
            async move {
                assert_eq!(
                    last_stable_offset(c, 0).await,
                    end,
                    "the last stable offset"
                );
            }
        };

        // 1. The transaction never included the partition.
        let producer = init(&to_coordinator, &id, 60_000).await;
        let p = produce_answer(
            &to_leader,
            Some(&id),
            0,
            transactional(producer, 0, 3, 1_000),
        )
        .await;
        refused(&p, ResponseError::InvalidTxnState);
        assert_eq!(
            p.error_message.as_deref(),
            Some("Partition was not added to the transaction")
        );
        assert_eq!(produce(&to_leader, None, 0, plain(1_000)).await, 0);
        stable_at(1).await;

        // 2. Added, written, aborted: the batch held until after the abort is refused.
        add_partition(&to_coordinator, &id, producer, 0).await;
        assert_eq!(
            produce(
                &to_leader,
                Some(&id),
                0,
                transactional(producer, 0, 3, 1_000)
            )
            .await,
            1,
            "a transaction in progress is verified and taken"
        );
        end_txn(&to_coordinator, &id, producer, false).await;
        wait_state(&to_coordinator, &id, "CompleteAbort").await;
        stable_at(5).await; // 3 records and the marker
        let held = transactional(producer, 3, 2, 1_000);
        refused(
            &produce_answer(&to_leader, Some(&id), 0, held.clone()).await,
            ResponseError::InvalidTxnState,
        );
        assert_eq!(produce(&to_leader, None, 0, plain(1_000)).await, 5);
        stable_at(6).await;

        // 3. A newer epoch took over: the old one is fenced (the coordinator's PRODUCER_FENCED,
        // as a produce answers it).
        let bumped = init(&to_coordinator, &id, 60_000).await;
        assert_eq!(bumped, (producer.0, producer.1 + 1));
        refused(
            &produce_answer(&to_leader, Some(&id), 0, held).await,
            ResponseError::InvalidProducerEpoch,
        );
        stable_at(6).await;
        let producers = cluster
            .replica(leader, TOPIC)
            .producer_state()
            .await
            .unwrap();
        assert_eq!(
            producers.ongoing_transactions().count(),
            0,
            "no transaction open on the partition"
        );
    });
}
