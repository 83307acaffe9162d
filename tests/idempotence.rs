//! The idempotent producer through the wire protocol: InitProducerId, then Produce requests
//! with hand-built idempotent batches, against a broker on the faulty disk, across clean
//! restarts and crashes. Each test tells the bug it guards against.

mod in_process;

use in_process::call;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use broker::broker::Broker;
use broker::clock::ManualClock;
use broker::config::{BrokerConfig, FlushMode};
use broker::log::batch::{self, builder, BatchHeader};
use bytes::Bytes;
use chaos::{FaultyDisk, FaultyDiskConfig};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const T0: i64 = 1_700_000_000_000;
const TOPIC: &str = "orders";

/// One broker's data directory on a faulty disk, reopened at will.
struct Node {
    disk: FaultyDisk,
    clock: Arc<ManualClock>,
    config: BrokerConfig,
}

impl Node {
    fn new(flush_mode: FlushMode) -> Node {
        Node {
            disk: FaultyDisk::new(7, FaultyDiskConfig::default()),
            clock: Arc::new(ManualClock::new(T0)),
            config: BrokerConfig {
                data_dir: PathBuf::from("/data"),
                flush_mode,
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
}

async fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    call(broker, ApiKey::InitProducerId, 4, &request).await
}

async fn new_producer_id(broker: &Arc<Broker>) -> i64 {
    let response = init_producer_id(
        broker,
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_timeout_ms(-1),
    )
    .await;
    assert_eq!(response.error_code, 0);
    assert_eq!(response.producer_epoch, 0);
    response.producer_id.0
}

/// An idempotent batch of `records` records whose values start with `seq`.
fn idempotent_batch(producer_id: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
    let recs: Vec<builder::Record> = (0..records)
        .map(|i| builder::Record {
            key: None,
            value: Some(format!("seq-{}", seq as usize + i).into_bytes()),
            timestamp_ms: T0,
        })
        .collect();
    builder::with_producer(builder::batch(&recs), producer_id, epoch, seq)
}

/// Produces one record set to partition 0 with acks=all; returns (error, base offset).
async fn produce(broker: &Arc<Broker>, records: Vec<u8>) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    let response: ProduceResponse = call(broker, ApiKey::Produce, 9, &request).await;
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// Every stored batch of partition 0, in order.
async fn stored_batches(broker: &Arc<Broker>) -> Vec<BatchHeader> {
    let log = &broker.partition(TOPIC, 0).unwrap().log;
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let read = log.read(offset, 1 << 20, None).await.unwrap();
        if read.records.is_empty() {
            return out;
        }
        let mut pos = 0;
        while pos < read.records.len() {
            let header = batch::validate(&read.records[pos..]).unwrap();
            offset = header.last_offset() as u64 + 1;
            pos += header.size();
            // Batches without records only cover offsets skipped after a crash.
            if header.records_count > 0 {
                out.push(header);
            }
        }
    }
}

async fn with_topic(node: &Node) -> Arc<Broker> {
    let broker = node.open().await;
    broker.create_topic(TOPIC, 1, 1, &[], false).await.unwrap();
    broker
}

const NONE: i16 = 0;

#[tokio::test]
async fn init_producer_id_hands_out_fresh_ids_and_never_reuses_them_after_a_crash() {
    // The bug: a restarted broker handing out ids again, so a new producer's batches are taken
    // for retries of an old producer's and silently dropped.
    let node = Node::new(FlushMode::Durable);
    let broker = node.open().await;
    let a = new_producer_id(&broker).await;
    let b = new_producer_id(&broker).await;
    assert_ne!(a, b);
    // KIP-360 re-initialisation by an idempotent producer: Kafka gives a new id, epoch 0.
    let again = init_producer_id(
        &broker,
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(b))
            .with_producer_epoch(0),
    )
    .await;
    assert_eq!((again.error_code, again.producer_epoch), (NONE, 0));
    assert!(again.producer_id.0 > b);
    drop(broker);
    node.disk.crash();
    let broker = node.open().await;
    let after = new_producer_id(&broker).await;
    assert!(
        after > again.producer_id.0,
        "id {after} handed out again after the crash"
    );
    broker.shutdown().await;
    let broker = node.open().await;
    assert!(new_producer_id(&broker).await > after);
}

#[tokio::test]
async fn init_producer_id_refuses_half_given_ids() {
    let node = Node::new(FlushMode::Durable);
    let broker = node.open().await;
    let half = init_producer_id(
        &broker,
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(5))
            .with_producer_epoch(-1),
    )
    .await;
    assert_eq!(half.error_code, ResponseError::InvalidRequest.code());
}

#[tokio::test]
async fn a_retried_batch_gets_its_original_offset_and_is_stored_once() {
    // The bug: a producer retrying after a lost response wrote its records twice.
    let node = Node::new(FlushMode::Durable);
    let broker = with_topic(&node).await;
    let pid = new_producer_id(&broker).await;
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 0, 3)).await,
        (NONE, 0)
    );
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 3, 2)).await,
        (NONE, 3)
    );
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 0, 3)).await,
        (NONE, 0)
    );
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 3, 2)).await,
        (NONE, 3)
    );
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 5, 1)).await,
        (NONE, 5)
    );
    let stored: Vec<(i64, i32)> = stored_batches(&broker)
        .await
        .iter()
        .map(|h| (h.base_offset, h.base_sequence))
        .collect();
    assert_eq!(stored, vec![(0, 0), (3, 3), (5, 5)]);
}

#[tokio::test]
async fn a_sequence_gap_is_refused_as_out_of_order_and_not_stored() {
    // The bug: a lost batch going unnoticed, leaving a hole in the producer's order.
    let node = Node::new(FlushMode::Durable);
    let broker = with_topic(&node).await;
    let pid = new_producer_id(&broker).await;
    produce(&broker, idempotent_batch(pid, 0, 0, 2)).await;
    let (error, offset) = produce(&broker, idempotent_batch(pid, 0, 3, 1)).await;
    assert_eq!(
        (error, offset),
        (ResponseError::OutOfOrderSequenceNumber.code(), -1)
    );
    assert_eq!(stored_batches(&broker).await.len(), 1);
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 2, 1)).await,
        (NONE, 2)
    );
}

#[tokio::test]
async fn an_older_epoch_is_fenced_once_a_newer_one_has_written() {
    // The bug: a zombie producer instance writing after its successor took over.
    let node = Node::new(FlushMode::Durable);
    let broker = with_topic(&node).await;
    let pid = new_producer_id(&broker).await;
    produce(&broker, idempotent_batch(pid, 0, 0, 1)).await;
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 1, 0, 1)).await,
        (NONE, 1)
    );
    let (error, _) = produce(&broker, idempotent_batch(pid, 0, 1, 1)).await;
    assert_eq!(error, ResponseError::InvalidProducerEpoch.code());
    let (error, _) = produce(&broker, idempotent_batch(pid, 2, 7, 1)).await;
    assert_eq!(
        error,
        ResponseError::OutOfOrderSequenceNumber.code(),
        "a new epoch starts at 0"
    );
    assert_eq!(stored_batches(&broker).await.len(), 2);
}

#[tokio::test]
async fn producer_state_survives_a_clean_restart() {
    // The bug: state kept only in memory, so a retry arriving after a restart was appended again.
    let node = Node::new(FlushMode::Durable);
    let broker = with_topic(&node).await;
    let pid = new_producer_id(&broker).await;
    produce(&broker, idempotent_batch(pid, 0, 0, 2)).await;
    produce(&broker, idempotent_batch(pid, 0, 2, 2)).await;
    broker.shutdown().await;
    drop(broker);
    let broker = node.open().await;
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 2, 2)).await,
        (NONE, 2)
    );
    let (error, _) = produce(&broker, idempotent_batch(pid, 0, 9, 1)).await;
    assert_eq!(error, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 4, 1)).await,
        (NONE, 4)
    );
    assert_eq!(stored_batches(&broker).await.len(), 3);
}

#[tokio::test]
async fn a_batch_lost_in_a_crash_leaves_no_ghost_and_its_retry_is_appended() {
    // The bug: producer state that outlives the batches it describes. If the broker remembered
    // a batch the crash took away, the producer's retry would be answered "duplicate" and the
    // records would be lost although acknowledged as written.
    let node = Node::new(FlushMode::Lazy);
    let broker = with_topic(&node).await;
    let pid = new_producer_id(&broker).await;
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 0, 2)).await,
        (NONE, 0)
    );
    broker
        .partition(TOPIC, 0)
        .unwrap()
        .log
        .flush()
        .await
        .unwrap();
    // Lazy flushing: acknowledged from the page cache, gone in the crash.
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 2, 3)).await,
        (NONE, 2)
    );
    drop(broker);
    node.disk.crash();
    let broker = node.open().await;
    let state = broker
        .partition(TOPIC, 0)
        .unwrap()
        .producer_state()
        .await
        .unwrap();
    assert_eq!(
        state.entry(pid).unwrap().last_seq(),
        1,
        "state is what survived"
    );
    // The surviving batch is still recognised; the lost one is appended anew.
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 0, 2)).await,
        (NONE, 0)
    );
    let (error, offset) = produce(&broker, idempotent_batch(pid, 0, 2, 3)).await;
    assert_eq!(error, NONE);
    assert!(offset >= 2, "offsets are never reused: {offset}");
    let sequences: Vec<i32> = stored_batches(&broker)
        .await
        .iter()
        .map(|h| h.base_sequence)
        .collect();
    assert_eq!(sequences, vec![0, 2]);
}

#[tokio::test]
async fn durable_batches_are_still_recognised_as_duplicates_after_a_crash() {
    let node = Node::new(FlushMode::Durable);
    let broker = with_topic(&node).await;
    let pid = new_producer_id(&broker).await;
    for (seq, offset) in [(0, 0), (1, 1), (2, 2)] {
        assert_eq!(
            produce(&broker, idempotent_batch(pid, 0, seq, 1)).await,
            (NONE, offset)
        );
    }
    drop(broker);
    node.disk.crash();
    let broker = node.open().await;
    assert_eq!(
        produce(&broker, idempotent_batch(pid, 0, 1, 1)).await,
        (NONE, 1)
    );
    let (error, _) = produce(&broker, idempotent_batch(pid, 0, 4, 1)).await;
    assert_eq!(error, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(stored_batches(&broker).await.len(), 3);
}

#[tokio::test]
async fn concurrent_copies_of_one_batch_are_stored_once() {
    // The bug: two requests both passing the sequence check before either appended (the check
    // and the append must be one step per partition).
    let node = Node::new(FlushMode::Durable);
    // Disk latency makes every append yield, so the requests really interleave.
    node.disk.set_config(FaultyDiskConfig {
        latency: Some((Duration::from_micros(10), Duration::from_millis(2))),
        ..FaultyDiskConfig::default()
    });
    let broker = with_topic(&node).await;
    let pid = new_producer_id(&broker).await;
    let results = produce_concurrently(&broker, idempotent_batch(pid, 0, 0, 4)).await;
    assert_eq!(results, [(NONE, 0); 4]);
    assert_eq!(stored_batches(&broker).await.len(), 1);
}

async fn produce_concurrently(broker: &Arc<Broker>, batch: Vec<u8>) -> [(i16, i64); 4] {
    let (a, b, c, d) = tokio::join!(
        produce(broker, batch.clone()),
        produce(broker, batch.clone()),
        produce(broker, batch.clone()),
        produce(broker, batch),
    );
    [a, b, c, d]
}
