//! The transaction coordinator through the wire protocol, in process, on the faulty disk:
//! InitProducerId with a transactional id across restarts and crashes, its refusals, the
//! completion of a transaction a previous coordinator prepared, and KIP-890 part 1 (a
//! transactional produce to a partition not in the transaction is refused). Each test tells
//! the bug it guards against.

mod in_process;

use in_process::call;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use broker::broker::Broker;
use broker::clock::ManualClock;
use broker::config::{BrokerConfig, FlushMode};
use broker::group::offsets::OffsetKey;
use broker::log::batch::{self, builder};
use broker::txn::coordinator::machine::{TopicPartition, TxnState};
use broker::txn::coordinator::records::{self, TxnRecord, TRANSACTION_STATE_TOPIC};
use bytes::Bytes;
use chaos::{FaultyDisk, FaultyDiskConfig};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, GroupId,
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

const T0: i64 = 1_700_000_000_000;
const TOPIC: &str = "payments";
const ID: &str = "payments-tx";

struct Node {
    disk: FaultyDisk,
    clock: Arc<ManualClock>,
    config: BrokerConfig,
}

impl Node {
    fn new() -> Node {
        Node {
            disk: FaultyDisk::new(11, FaultyDiskConfig::default()),
            clock: Arc::new(ManualClock::new(T0)),
            config: BrokerConfig {
                data_dir: PathBuf::from("/data"),
                flush_mode: FlushMode::Durable,
                transaction_state_log_num_partitions: 5,
                ..BrokerConfig::default()
            },
        }
    }

    async fn open(&self) -> Arc<Broker> {
        Broker::open(
            self.config.clone(),
            Arc::new(self.disk.clone()),
            self.clock.clone(),
        )
        .await
        .expect("broker opens")
    }

    /// A broker with the data topic and `__transaction_state` (as FindCoordinator creates it).
    async fn open_with_topics(&self) -> Arc<Broker> {
        let broker = self.open().await;
        broker.create_topic(TOPIC, 2, 1, &[], false).await.unwrap();
        broker.transaction_state_topic().await.unwrap();
        broker.catch_up().await.unwrap();
        broker
    }
}

async fn init(broker: &Arc<Broker>, id: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.into()))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    call(broker, ApiKey::InitProducerId, 4, &request).await
}

async fn add_partition(broker: &Arc<Broker>, pid: i64, epoch: i16, partition: i32) -> i16 {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(ID)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![partition])]);
    let response: AddPartitionsToTxnResponse =
        call(broker, ApiKey::AddPartitionsToTxn, 3, &request).await;
    response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn transactional_batch(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let built = builder::simple(2, 10, b't', T0);
    let built = builder::with_attributes(built, batch::TRANSACTIONAL_BIT);
    builder::with_producer(built, pid, epoch, seq)
}

async fn produce_transactional(broker: &Arc<Broker>, partition: i32, records: Vec<u8>) -> i16 {
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(ID))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])]);
    let response: ProduceResponse = call(broker, ApiKey::Produce, 9, &request).await;
    response.responses[0].partition_responses[0].error_code
}

#[tokio::test]
async fn a_transactional_id_keeps_its_producer_id_and_bumps_its_epoch_across_restarts_and_crashes()
{
    // The bug: a coordinator that forgot its ids at restart handed the id a fresh epoch 0 (or
    // a new producer id), so a zombie of the previous incarnation was not fenced.
    let node = Node::new();
    let broker = node.open_with_topics().await;
    let first = init(&broker, ID, 60_000).await;
    assert_eq!(first.error_code, 0);
    assert_eq!(first.producer_epoch, 0);
    let second = init(&broker, ID, 60_000).await;
    assert_eq!(
        (second.producer_id, second.producer_epoch),
        (first.producer_id, 1)
    );
    broker.shutdown().await;
    drop(broker);

    let broker = node.open().await;
    let third = init(&broker, ID, 60_000).await;
    assert_eq!(
        third.error_code, 0,
        "the coordinator reloaded its partition"
    );
    assert_eq!(
        (third.producer_id, third.producer_epoch),
        (first.producer_id, 2)
    );
    drop(broker);
    // Acknowledged means on disk: a crash keeps it too.
    node.disk.crash();
    let broker = node.open().await;
    let fourth = init(&broker, ID, 60_000).await;
    assert_eq!(
        (fourth.producer_id, fourth.producer_epoch),
        (first.producer_id, 3)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn init_producer_id_refuses_an_empty_id_and_a_timeout_above_the_maximum() {
    let node = Node::new();
    let broker = node.open_with_topics().await;
    assert_eq!(
        init(&broker, "", 60_000).await.error_code,
        ResponseError::InvalidRequest.code()
    );
    for timeout in [900_001, 0, -1] {
        assert_eq!(
            init(&broker, ID, timeout).await.error_code,
            ResponseError::InvalidTransactionTimeout.code(),
            "timeout {timeout}"
        );
    }
    assert_eq!(
        init(&broker, ID, 900_000).await.error_code,
        0,
        "the maximum itself"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_transactional_produce_to_a_partition_not_in_the_transaction_is_refused() {
    // KIP-890 part 1. The bug: a produce delayed until after its transaction ended opened a
    // new transaction on the partition that no coordinator would ever end, holding the last
    // stable offset (and every read_committed consumer) back for good.
    let node = Node::new();
    let broker = node.open_with_topics().await;
    let producer = init(&broker, ID, 60_000).await;
    let (pid, epoch) = (producer.producer_id.0, producer.producer_epoch);
    assert_eq!(
        produce_transactional(&broker, 0, transactional_batch(pid, epoch, 0)).await,
        ResponseError::InvalidTxnState.code(),
        "no transaction is open"
    );
    assert_eq!(add_partition(&broker, pid, epoch, 0).await, 0);
    assert_eq!(
        produce_transactional(&broker, 1, transactional_batch(pid, epoch, 0)).await,
        ResponseError::InvalidTxnState.code(),
        "partition 1 is not in the transaction"
    );
    assert_eq!(
        produce_transactional(&broker, 0, transactional_batch(pid, epoch, 0)).await,
        0,
        "partition 0 is"
    );
    assert_eq!(
        produce_transactional(&broker, 0, transactional_batch(pid, epoch - 1, 2)).await,
        ResponseError::InvalidProducerEpoch.code(),
        "an older epoch is a zombie's"
    );
    broker.shutdown().await;
}

/// AddPartitionsToTxn in the brokers' form (v4+): one transaction, `verify_only` or not, on
/// `partitions` of the data topic (and `other`'s); the codes by (topic, partition).
async fn add_partitions_v4(
    broker: &Arc<Broker>,
    version: i16,
    (pid, epoch): (i64, i16),
    verify_only: bool,
    partitions: &[(&str, i32)],
) -> Vec<((String, i32), i16)> {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(verify_only)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.into())))
                            .with_partitions(ps)
                    })
                    .collect(),
            ),
    ]);
    let response: AddPartitionsToTxnResponse =
        call(broker, ApiKey::AddPartitionsToTxn, version, &request).await;
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results_by_transaction.len(), 1);
    let result = &response.results_by_transaction[0];
    assert_eq!(result.transactional_id.as_str(), ID);
    result
        .topic_results
        .iter()
        .flat_map(|t| {
            t.results_by_partition.iter().map(move |p| {
                (
                    (t.name.as_str().to_string(), p.partition_index),
                    p.partition_error_code,
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn the_brokers_add_partitions_to_txn_verifies_per_partition_without_adding_any() {
    // KIP-890 part 1, the coordinator's side: a partition leader asks with verify_only before
    // it takes a transaction's first batch. The bugs: a verification that added the partition
    // (so a late produce would be welcomed into the transaction it asked about), one that
    // answered for the whole transaction instead of per partition, and codes other than
    // Kafka's (INVALID_TXN_STATE in v4, TRANSACTION_ABORTABLE from v5, PRODUCER_FENCED).
    let node = Node::new();
    let broker = node.open_with_topics().await;
    let producer = init(&broker, ID, 60_000).await;
    let (pid, epoch) = (producer.producer_id.0, producer.producer_epoch);
    assert_eq!(add_partition(&broker, pid, epoch, 0).await, 0);
    let tp = |p: i32| (TOPIC.to_string(), p);
    let both = [(TOPIC, 0), (TOPIC, 1)];
    assert_eq!(
        add_partitions_v4(&broker, 4, (pid, epoch), true, &both).await,
        vec![(tp(0), 0), (tp(1), ResponseError::InvalidTxnState.code())]
    );
    assert_eq!(
        add_partitions_v4(&broker, 5, (pid, epoch), true, &both).await,
        vec![
            (tp(0), 0),
            (tp(1), ResponseError::TransactionAbortable.code())
        ],
        "asked twice: verifying added nothing"
    );
    let fenced = ResponseError::ProducerFenced.code();
    assert_eq!(
        add_partitions_v4(&broker, 5, (pid, epoch + 1), true, &both).await,
        vec![(tp(0), fenced), (tp(1), fenced)]
    );
    let unmapped = ResponseError::InvalidProducerIdMapping.code();
    assert_eq!(
        add_partitions_v4(&broker, 5, (pid + 1, epoch), true, &both).await,
        vec![(tp(0), unmapped), (tp(1), unmapped)]
    );
    assert_eq!(
        add_partitions_v4(
            &broker,
            5,
            (pid, epoch),
            true,
            &[(TOPIC, 0), ("nowhere", 0)]
        )
        .await,
        vec![
            (
                ("nowhere".to_string(), 0),
                ResponseError::UnknownTopicOrPartition.code()
            ),
            (tp(0), ResponseError::OperationNotAttempted.code()),
        ]
    );
    // Without verify_only a broker adds (Kafka 4's implicit add); then partition 1 verifies.
    assert_eq!(
        add_partitions_v4(&broker, 5, (pid, epoch), false, &[(TOPIC, 1)]).await,
        vec![(tp(1), 0)]
    );
    assert_eq!(
        add_partitions_v4(&broker, 5, (pid, epoch), true, &both).await,
        vec![(tp(0), 0), (tp(1), 0)]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_coordinator_that_loads_a_prepared_commit_writes_its_markers_and_completes_it() {
    // The bug: a coordinator that crashed after PrepareCommit and before its markers left the
    // transaction open on its partitions forever after the restart (Kafka's onElection sends
    // the markers of every prepared transaction again).
    let node = Node::new();
    let broker = node.open_with_topics().await;
    let producer = init(&broker, ID, 60_000).await;
    let (pid, epoch) = (producer.producer_id.0, producer.producer_epoch);
    assert_eq!(add_partition(&broker, pid, epoch, 0).await, 0);
    assert_eq!(add_partition(&broker, pid, epoch, 1).await, 0);
    for p in 0..2 {
        assert_eq!(
            produce_transactional(&broker, p, transactional_batch(pid, epoch, 0)).await,
            0
        );
    }
    let data = broker.partition(TOPIC, 0).unwrap();
    assert_eq!(
        data.last_stable_offset().await.unwrap(),
        0,
        "the transaction is open"
    );
    // What a coordinator that crashed right after deciding leaves behind: PrepareCommit,
    // durable, with no marker anywhere.
    let prepared = TxnRecord {
        producer_id: pid,
        producer_epoch: epoch,
        timeout_ms: 60_000,
        state: TxnState::PrepareCommit,
        partitions: BTreeSet::from([TopicPartition::new(TOPIC, 0), TopicPartition::new(TOPIC, 1)]),
        last_update_ms: T0,
        start_ms: T0,
        v2: Default::default(),
    };
    let index = broker.txns().partition_for(ID);
    let state = broker.partition(TRANSACTION_STATE_TOPIC, index).unwrap();
    let mut record = builder::batch(&[builder::Record {
        key: Some(records::encode_key(ID)),
        value: Some(records::encode_value(&prepared)),
        timestamp_ms: T0,
    }]);
    let info = state.append_unexposed(&mut record).await.unwrap();
    state.wait_durable(&info).await.unwrap();
    drop((data, state));
    drop(broker);
    node.disk.crash();

    let broker = node.open().await;
    let mut waited = Duration::ZERO;
    loop {
        let done = broker
            .txns()
            .describe(ID)
            .ok()
            .flatten()
            .is_some_and(|m| m.state() == TxnState::CompleteCommit);
        if done {
            break;
        }
        assert!(
            waited < Duration::from_secs(30),
            "the prepared commit was never completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    for p in 0..2 {
        let data = broker.partition(TOPIC, p).unwrap();
        let lso = data.last_stable_offset().await.unwrap();
        assert_eq!(
            lso,
            data.high_watermark(),
            "partition {p}: the marker ended the transaction"
        );
        assert_eq!(lso, 3, "partition {p}: two records and the commit marker");
    }
    broker.shutdown().await;
}

const GROUP: &str = "payments-readers";

async fn add_offsets(broker: &Arc<Broker>, pid: i64, epoch: i16) -> i16 {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_static_str(ID)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)));
    let response: AddOffsetsToTxnResponse =
        call(broker, ApiKey::AddOffsetsToTxn, 3, &request).await;
    response.error_code
}

async fn txn_offset_commit(broker: &Arc<Broker>, pid: i64, epoch: i16, offset: i64) -> i16 {
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_static_str(ID)))
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    let response: TxnOffsetCommitResponse =
        call(broker, ApiKey::TxnOffsetCommit, 3, &request).await;
    response.topics[0].partitions[0].error_code
}

async fn end_txn(broker: &Arc<Broker>, pid: i64, epoch: i16, commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_static_str(ID)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let response: EndTxnResponse = call(broker, ApiKey::EndTxn, 3, &request).await;
    response.error_code
}

/// Waits until the id's transaction is in `state` (its markers are written).
async fn wait_state(broker: &Arc<Broker>, state: TxnState) {
    let mut waited = Duration::ZERO;
    while broker
        .txns()
        .describe(ID)
        .ok()
        .flatten()
        .is_none_or(|m| m.state() != state)
    {
        assert!(waited < Duration::from_secs(30), "never reached {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
}

fn committed(broker: &Arc<Broker>) -> Option<i64> {
    let key = OffsetKey {
        group: GROUP.into(),
        topic: TOPIC.into(),
        partition: 0,
    };
    broker.groups().committed(&key).unwrap().map(|c| c.offset)
}

#[tokio::test]
async fn offsets_committed_in_a_transaction_are_visible_after_a_restart_only_if_it_committed() {
    // The bug: a coordinator that reloaded the offsets partition applied every transactional
    // offset record it read (an open or aborted transaction's offsets became the group's), or
    // none (a committed one's were lost), instead of resolving each at its marker.
    let node = Node::new();
    let broker = node.open_with_topics().await;
    broker.offsets_topic().await.unwrap();
    broker.catch_up().await.unwrap();
    let producer = init(&broker, ID, 60_000).await;
    let (pid, epoch) = (producer.producer_id.0, producer.producer_epoch);
    assert_eq!(
        txn_offset_commit(&broker, pid, epoch, 7).await,
        ResponseError::InvalidTxnState.code(),
        "the offsets partition is not in the transaction before AddOffsetsToTxn"
    );
    assert_eq!(add_offsets(&broker, pid, epoch).await, 0);
    assert_eq!(txn_offset_commit(&broker, pid, epoch, 7).await, 0);
    assert_eq!(committed(&broker), None, "pending until the commit marker");
    assert_eq!(end_txn(&broker, pid, epoch, true).await, 0);
    wait_state(&broker, TxnState::CompleteCommit).await;
    assert_eq!(committed(&broker), Some(7));

    // An aborted transaction's offset, then an open one's.
    assert_eq!(add_offsets(&broker, pid, epoch).await, 0);
    assert_eq!(txn_offset_commit(&broker, pid, epoch, 8).await, 0);
    assert_eq!(end_txn(&broker, pid, epoch, false).await, 0);
    wait_state(&broker, TxnState::CompleteAbort).await;
    assert_eq!(committed(&broker), Some(7), "the abort dropped offset 8");
    assert_eq!(add_offsets(&broker, pid, epoch).await, 0);
    assert_eq!(txn_offset_commit(&broker, pid, epoch, 9).await, 0);
    broker.shutdown().await;
    drop(broker);

    let broker = node.open().await;
    assert_eq!(
        committed(&broker),
        Some(7),
        "the reload resolves each transaction's offsets at its marker"
    );
    // The open transaction is still the coordinator's to end: its commit publishes 9.
    assert_eq!(end_txn(&broker, pid, epoch, true).await, 0);
    wait_state(&broker, TxnState::CompleteCommit).await;
    assert_eq!(committed(&broker), Some(9));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_transaction_stored_after_a_damaged_record_of_the_same_segment_is_still_ongoing_and_aborted_after_a_restart(
) {
    // The bug: a bit flipped at rest in one record of `__transaction_state`; recovery stepped
    // over the damaged batch and kept the later ones, but the coordinator's replay skipped the
    // rest of the segment. The transaction went back to its state before the damage (Empty):
    // a new producer instance got a fresh epoch without the open transaction being aborted,
    // and its partitions stayed unstable for read_committed consumers for good.
    let node = Node::new();
    let broker = node.open_with_topics().await;
    let producer = init(&broker, ID, 60_000).await;
    let (pid, epoch) = (producer.producer_id.0, producer.producer_epoch);
    let index = broker.txns().partition_for(ID);
    let state = broker.partition(TRANSACTION_STATE_TOPIC, index).unwrap();
    let damaged = state.log.log_end_offset();
    assert_eq!(add_partition(&broker, pid, epoch, 0).await, 0);
    assert_eq!(add_partition(&broker, pid, epoch, 1).await, 0);
    assert!(
        state.log.log_end_offset() > damaged + 1,
        "each AddPartitionsToTxn stored a record"
    );
    for p in 0..2 {
        assert_eq!(
            produce_transactional(&broker, p, transactional_batch(pid, epoch, 0)).await,
            0
        );
    }
    let end = state.log.log_end_offset();
    assert_eq!(state.log.segment_count().await, 1);
    let segment = state.log.dir().join(format!("{:020}.log", 0));
    drop(state);
    drop(broker);
    node.disk.crash();
    // A bit in the records of the first Ongoing record's batch, under its CRC.
    let bytes = broker::disk::read_file(&node.disk, &segment).await.unwrap();
    let mut position = 0;
    loop {
        let header = batch::BatchHeader::parse(&bytes[position..]).unwrap();
        if header.base_offset as u64 == damaged {
            break;
        }
        position += header.size();
    }
    node.disk
        .flip_bit(&segment, position as u64 + 70, 3)
        .unwrap();

    let broker = node.open().await;
    let state = broker.partition(TRANSACTION_STATE_TOPIC, index).unwrap();
    let recovery = state.log.recovery();
    assert_eq!(recovery.corrupt_batches, 1, "{recovery:?}");
    // (The end moves past offsets that may have been handed out before the crash.)
    assert!(
        state.log.log_end_offset() >= end,
        "the log keeps the later records"
    );
    drop(state);
    let loaded = broker
        .txns()
        .describe(ID)
        .unwrap()
        .expect("the id is known");
    assert_eq!(
        loaded.state(),
        TxnState::Ongoing,
        "the newest state the log holds, not the one before the damage"
    );
    // A new instance of the producer: Kafka fences the open transaction's producer, aborts it
    // (markers on both partitions) and answers CONCURRENT_TRANSACTIONS until that is done.
    let mut waited = Duration::ZERO;
    let fresh = loop {
        let response = init(&broker, ID, 60_000).await;
        if response.error_code != ResponseError::ConcurrentTransactions.code() {
            break response;
        }
        assert!(
            waited < Duration::from_secs(30),
            "the abort never completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    };
    assert_eq!(fresh.error_code, 0);
    assert_eq!(
        (fresh.producer_id.0, fresh.producer_epoch),
        (pid, epoch + 2),
        "one bump fenced the old producer, one is the new instance's"
    );
    for p in 0..2 {
        let data = broker.partition(TOPIC, p).unwrap();
        let lso = data.last_stable_offset().await.unwrap();
        assert_eq!(
            lso,
            data.high_watermark(),
            "partition {p}: the abort marker ended the transaction"
        );
        assert_eq!(lso, 3, "partition {p}: two records and the abort marker");
    }
    broker.shutdown().await;
}
