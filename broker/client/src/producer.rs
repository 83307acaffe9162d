//! The producer: per-partition batching by linger and size, acks 0/1/all, retries with
//! exponential backoff, optional idempotence, Kafka's default partitioner, and an exact account
//! of what happened to every record.
//!
//! # Outcomes
//!
//! Every [`Producer::send`] resolves to exactly one [`SendOutcome`]. The simulator's checkers
//! rely on the three kinds meaning precisely this:
//!
//! - [`SendOutcome::Acknowledged`]`{partition, offset}`: the leader answered the produce request
//!   with no error for this partition (acks=1: in the leader's log; acks=all: as durable as the
//!   configuration promises). `offset` is the record's offset. Without idempotence, a retry
//!   after an ambiguous attempt can also have written an earlier copy (a duplicate).
//! - [`SendOutcome::Failed`]`{error}`: the record was **definitely not written**. Reported only
//!   when no attempt can have reached a broker, or every attempt that reached one was refused
//!   with an error Kafka returns only before appending: a non-retriable error code
//!   (MESSAGE_TOO_LARGE, INVALID_RECORD, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_REQUIRED_ACKS,
//!   authorization, ...), a retriable "not appended" code (LEADER_NOT_AVAILABLE,
//!   NOT_ENOUGH_REPLICAS, CORRUPT_MESSAGE, and with acks=0/1 NOT_LEADER_OR_FOLLOWER and
//!   UNKNOWN_TOPIC_OR_PARTITION, ...) until retries or the delivery timeout ran out, a topic
//!   that does not exist, a partition out of range, no broker reachable at all (connect refused
//!   / timed out before any byte was sent), or a closed producer.
//! - [`SendOutcome::Unknown`]`{reason}`: it **may or may not** have been written. Reported when
//!   the last attempt, or any earlier one, was sent and then: timed out (no response within the
//!   request timeout), lost its connection (EOF, reset, or a write error mid-request), got an
//!   undecodable response, or got an ambiguous error code — one Kafka may return after the
//!   append (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND, KAFKA_STORAGE_ERROR,
//!   NETWORK_EXCEPTION, UNKNOWN_SERVER_ERROR, DUPLICATE_SEQUENCE_NUMBER, a code this client does
//!   not know; and with acks=all NOT_LEADER_OR_FOLLOWER and UNKNOWN_TOPIC_OR_PARTITION, which
//!   Kafka's delayed produce answers when the leader appended the batch and then lost the
//!   partition while it waited for the in-sync replicas) — and retries did not end in an
//!   acknowledgement. With acks=0 every record that was written to the socket is
//!   `Unknown{NotAcknowledged}`: nobody confirms it.
//!
//! [`SendError::code`] and [`UnknownReason::code`] give the Kafka error code behind an outcome
//! as a value, so that a history or a checker never reads it out of the message.
//!
//! When a later attempt is refused outright after an earlier ambiguous one, the outcome stays
//! `Unknown` ([`UnknownReason::RetriedAfterAmbiguous`]): the earlier attempt may have landed.
//!
//! # Idempotence
//!
//! With `enable_idempotence`, the producer gets a producer id and epoch from InitProducerId
//! (v0–4, non-transactional) and stamps each batch with them and a per-partition base sequence.
//! One batch per partition is in flight at a time, so retries keep order. A batch that ends
//! `Failed` gives its sequence numbers back; after an `Unknown` one the sequence space of that
//! partition may have a gap.
//!
//! A partition that refuses a batch with OUT_OF_ORDER_SEQUENCE_NUMBER (or UNKNOWN_PRODUCER_ID
//! from an older broker) has a gap in this producer's sequences: an unclean election truncated
//! what it had acknowledged, or an earlier batch that ended `Unknown` was never written. The
//! refused batch was not appended (the partition holds the producer's last batch, so a retry of
//! it would have been answered as a duplicate). As Kafka's idempotent producer does since
//! KIP-360 (`TransactionManager.bumpIdempotentEpochAndResetIdIfNeeded`), the producer then
//! bumps its epoch *locally* and retries the batch under the new epoch from sequence 0, which
//! the partition accepts (a new epoch starts at 0); without it every later batch of the
//! partition is refused for ever. The other partitions move to the new epoch, from sequence 0,
//! with their next batch. At epoch `i16::MAX` the producer asks InitProducerId for a new
//! producer id instead (Kafka's broker gives a non-transactional producer a new id with epoch
//! 0 whatever id it names). A transactional producer's sequence error ends its batch `Failed`
//! as before: its epoch belongs to the transaction coordinator.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::cluster::{Client, MetadataError};
use super::connection::RequestError;
use super::partitioner::{partition_for_key, StickyPartitioner};
use super::records::{encode_records, estimated_size, Header, ProducerIdentity, Record};
use broker::clock::{Clock, SystemClock};

/// How many replicas must have a record before the leader answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no answer at all.
    None,
    /// acks=1: the leader's log.
    Leader,
    /// acks=all (-1): every in-sync replica, durable per the broker's flush policy.
    All,
}

impl Acks {
    pub fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Acks, String> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("acks must be 0, 1, all or -1, not {other:?}")),
        }
    }
}

/// Producer settings, with Kafka's names in the docs.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// `acks` (default all).
    pub acks: Acks,
    /// `linger.ms`: how long a partition's batch waits for more records (default 5 ms).
    pub linger: Duration,
    /// `batch.size`: a batch is sent once it holds this many bytes (default 16 KiB).
    pub batch_size: usize,
    /// `retries` for retriable errors and ambiguous failures (default `u32::MAX`, as Kafka's
    /// `Integer.MAX_VALUE`: `delivery_timeout` bounds them, so a failover that takes a session
    /// timeout to fence the dead leader is ridden through).
    pub retries: u32,
    /// `retry.backoff.ms`, doubling up to `retry.backoff.max.ms`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// `delivery.timeout.ms`: no new attempt starts after this long (default 120 s, Kafka's).
    pub delivery_timeout: Duration,
    /// `enable.idempotence` (default false until the broker implements InitProducerId).
    pub enable_idempotence: bool,
    /// Ask the broker to auto-create unknown topics (Metadata v4+).
    pub allow_auto_create_topics: bool,
    /// `buffer.memory`: bytes of records the producer holds, queued or in flight (default
    /// 32 MiB). A send waits for room; a record larger than this fails at once.
    pub buffer_memory: usize,
    /// `max.block.ms`: how long a send may wait for metadata and for room in the buffer
    /// (default 60 s); then it fails with [`SendError::BufferExhausted`].
    pub max_block: Duration,
    /// `transactional.id` (default none). Only a
    /// [`TransactionalProducer`](crate::TransactionalProducer) takes one; it implies
    /// idempotence.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: how long the coordinator lets a transaction stay open before
    /// it aborts it and fences the producer (default 60 s, Kafka's).
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(120),
            enable_idempotence: false,
            allow_auto_create_topics: true,
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// A record to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: chosen by the partitioner.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// `None`: the producer's clock at `send`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// What happened to one record. See the module docs for the exact contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Acknowledged { partition: i32, offset: i64 },
    Failed { error: SendError },
    Unknown { reason: UnknownReason },
}

impl SendOutcome {
    pub fn is_acknowledged(&self) -> bool {
        matches!(self, SendOutcome::Acknowledged { .. })
    }
}

/// Why a record was definitely not written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("topic \"{0}\" does not exist")]
    UnknownTopic(String),
    #[error("topic \"{topic}\" has {partitions} partitions; there is no partition {partition}")]
    InvalidPartition {
        topic: String,
        partition: i32,
        partitions: i32,
    },
    #[error("refused by the broker: {}", message.as_deref().map(str::to_string).unwrap_or_else(|| error.to_string()))]
    Rejected {
        error: ResponseError,
        message: Option<String>,
    },
    #[error("cannot reach the cluster: {0}")]
    NotConnected(String),
    #[error("the producer is closed")]
    Closed,
    /// The record alone is larger than `buffer.memory` (Kafka: RecordTooLargeException).
    #[error(
        "the record takes {size} bytes, more than the whole buffer.memory of {buffer_memory} bytes"
    )]
    RecordTooLarge { size: usize, buffer_memory: usize },
    /// No room in `buffer.memory` within `max.block.ms`: records are sent faster than the
    /// brokers take them (Kafka: BufferExhaustedException).
    #[error("no room for {size} bytes in buffer.memory ({buffer_memory} bytes) within max.block.ms ({max_block_ms} ms): records are sent faster than the brokers take them")]
    BufferExhausted {
        size: usize,
        buffer_memory: usize,
        max_block_ms: u64,
    },
}

impl SendError {
    /// The Kafka error code the broker refused with, if a broker answered.
    pub fn code(&self) -> Option<i16> {
        match self {
            SendError::Rejected { error, .. } => Some(error.code()),
            SendError::UnknownTopic(_)
            | SendError::InvalidPartition { .. }
            | SendError::NotConnected(_)
            | SendError::Closed
            | SendError::RecordTooLarge { .. }
            | SendError::BufferExhausted { .. } => None,
        }
    }
}

/// Why a record may or may not have been written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnknownReason {
    #[error("acks=0: sent, never acknowledged")]
    NotAcknowledged,
    #[error("no response within the request timeout: {0}")]
    Timeout(String),
    #[error("connection lost with the request in flight: {0}")]
    ConnectionLost(String),
    #[error("ambiguous broker error {0}")]
    AmbiguousError(ResponseError),
    #[error("{last} after an earlier attempt that may have been written ({earlier})")]
    RetriedAfterAmbiguous {
        earlier: Box<UnknownReason>,
        last: SendError,
    },
}

impl UnknownReason {
    /// The Kafka error code of the last answer, if the broker answered with one.
    pub fn code(&self) -> Option<i16> {
        match self {
            UnknownReason::AmbiguousError(error) => Some(error.code()),
            UnknownReason::RetriedAfterAmbiguous { last, .. } => last.code(),
            UnknownReason::NotAcknowledged
            | UnknownReason::Timeout(_)
            | UnknownReason::ConnectionLost(_) => None,
        }
    }
}

/// One failed attempt to send a batch, reported when it happens (the records' outcomes come
/// later, after the retries). Kafka's producer logs these as warnings ("Got error produce
/// response ... on topic-partition t-0, retrying").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptFailure {
    pub topic: String,
    pub partition: i32,
    /// Records in the batch.
    pub records: usize,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The broker's error code, when the broker answered with one.
    pub error: Option<ResponseError>,
    /// What went wrong, as one line.
    pub reason: String,
    /// Another attempt follows (after a backoff); false when this was the last.
    pub retrying: bool,
}

/// Why the producer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProducerInitError {
    #[error("idempotence needs InitProducerId, which the broker does not offer")]
    IdempotenceUnsupported,
    #[error("InitProducerId failed: {0}")]
    InitProducerId(ResponseError),
    #[error("a producer with a transactional.id is a TransactionalProducer")]
    TransactionalIdNeedsTransactionalProducer,
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// The eventual [`SendOutcome`] of one record.
pub struct Delivery(DeliveryInner);

enum DeliveryInner {
    Ready(Option<SendOutcome>),
    Waiting(oneshot::Receiver<SendOutcome>),
}

impl Delivery {
    /// An outcome known at once.
    pub(crate) fn ready(outcome: SendOutcome) -> Delivery {
        Delivery(DeliveryInner::Ready(Some(outcome)))
    }

    /// An outcome another task will send.
    pub(crate) fn waiting(rx: oneshot::Receiver<SendOutcome>) -> Delivery {
        Delivery(DeliveryInner::Waiting(rx))
    }
}

impl Future for Delivery {
    type Output = SendOutcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SendOutcome> {
        match &mut self.get_mut().0 {
            DeliveryInner::Ready(outcome) => {
                Poll::Ready(outcome.take().unwrap_or(SendOutcome::Failed {
                    error: SendError::Closed,
                }))
            }
            DeliveryInner::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| {
                // The sender task always answers; a dropped answer means the runtime is going
                // away with the request possibly sent.
                r.unwrap_or(SendOutcome::Unknown {
                    reason: UnknownReason::ConnectionLost("producer task stopped".into()),
                })
            }),
        }
    }
}

struct Pending {
    record: Record,
    reply: Reply,
}

/// Where a record's outcome goes: a [`Delivery`]'s channel, or a callback run by the task
/// that learned the outcome (Kafka's `send(record, callback)`), which spares the caller a task
/// and a channel per record.
enum Reply {
    Channel(oneshot::Sender<SendOutcome>),
    Callback(Box<dyn FnOnce(SendOutcome) + Send>),
}

impl Reply {
    fn send(self, outcome: SendOutcome) {
        match self {
            Reply::Channel(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Callback(callback) => callback(outcome),
        }
    }
}

#[derive(Default)]
struct PartitionQueue {
    records: Vec<Pending>,
    bytes: usize,
    oldest: Option<Instant>,
    in_flight: bool,
    next_sequence: i32,
    /// The producer id and epoch `next_sequence` counts under: a partition moves to a newer
    /// epoch, from sequence 0, when it seals its next batch.
    sequence_epoch: Option<(i64, i16)>,
    num_partitions: i32,
}

impl PartitionQueue {
    /// The identity of a batch of `count` records sealed now, under the producer's `current`
    /// id and epoch (Kafka's `maybeUpdateProducerIdAndEpoch`: a partition whose sequences
    /// belong to an older epoch starts the current one at 0; no batch of it is in flight).
    fn seal_identity(&mut self, current: (i64, i16), count: usize) -> (i64, i16, i32) {
        assert!(!self.in_flight, "one batch per partition is in flight");
        if self.sequence_epoch != Some(current) {
            self.sequence_epoch = Some(current);
            self.next_sequence = 0;
        }
        let base_sequence = self.next_sequence;
        self.next_sequence = add_sequence(base_sequence, count);
        (current.0, current.1, base_sequence)
    }
}

/// What an idempotent producer does when a partition refuses its batch, sent under `batch`'s
/// id and epoch, with a sequence error while the producer's id and epoch are `current`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SequenceRecovery {
    /// The partition's sequences are in the current epoch: bump it (locally, as Kafka's
    /// `bumpIdempotentProducerEpoch`) and resend from sequence 0.
    Bump((i64, i16)),
    /// Another partition bumped the epoch since the batch was sealed: resend under it from 0.
    Adopt((i64, i16)),
    /// The epoch cannot grow: a new producer id from InitProducerId (Kafka's
    /// `resetIdempotentProducerId`).
    NewProducerId,
}

fn sequence_recovery(current: (i64, i16), batch: (i64, i16)) -> SequenceRecovery {
    if batch != current {
        SequenceRecovery::Adopt(current)
    } else if current.1 == i16::MAX {
        SequenceRecovery::NewProducerId
    } else {
        SequenceRecovery::Bump((current.0, current.1 + 1))
    }
}

#[derive(Default)]
struct Accumulator {
    queues: BTreeMap<(String, i32), PartitionQueue>,
    /// The producer id and epoch when idempotent; the epoch grows when a partition refuses a
    /// batch with a sequence error (see "Idempotence" in the module docs).
    identity: Option<(i64, i16)>,
    sticky: StickyPartitioner,
    flushing: usize,
    closed: bool,
    in_flight: usize,
    /// Bytes of the records queued or in flight, as `buffer.memory` counts them.
    buffered_bytes: usize,
    /// Sends waiting for room in the buffer: every batch is sent without lingering meanwhile.
    waiting_for_room: usize,
}

impl Accumulator {
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.queues.values().all(|q| q.records.is_empty())
    }
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    state: Mutex<Accumulator>,
    wake: Notify,
    progress: Notify,
    /// Woken when finished batches give their bytes back to the buffer.
    room: Notify,
    clock: SystemClock,
    /// Where failed attempts are reported as they happen ([`Producer::attempt_failures`]).
    failures: Mutex<Option<mpsc::UnboundedSender<AttemptFailure>>>,
}

impl Inner {
    fn report_failure(&self, failure: AttemptFailure) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = failures.as_ref() {
            if tx.send(failure).is_err() {
                // Nobody listens any more.
                *failures = None;
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Accumulator> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sealed batch on its way to the leader.
struct Batch {
    topic: String,
    partition: i32,
    records: Vec<Pending>,
    identity: ProducerIdentity,
}

/// Sends records; cheap to clone, all clones share batches and the background sender.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .field("identity", &self.producer_identity())
            .finish()
    }
}

impl Producer {
    /// Starts a producer (and, with idempotence, obtains its producer id).
    pub async fn new(
        client: Client,
        config: ProducerConfig,
    ) -> Result<Producer, ProducerInitError> {
        if config.transactional_id.is_some() {
            return Err(ProducerInitError::TransactionalIdNeedsTransactionalProducer);
        }
        let identity = if config.enable_idempotence {
            Some(init_producer_id(&client).await?)
        } else {
            None
        };
        Ok(Producer::start(client, config, identity))
    }

    /// Starts the sender with a producer id and epoch obtained elsewhere (the transactional
    /// producer's InitProducerId); every batch carries `config.transactional_id`.
    pub(crate) fn start(
        client: Client,
        config: ProducerConfig,
        identity: Option<(i64, i16)>,
    ) -> Producer {
        let inner = Arc::new(Inner {
            client,
            config,
            state: Mutex::new(Accumulator {
                identity,
                ..Accumulator::default()
            }),
            wake: Notify::new(),
            progress: Notify::new(),
            room: Notify::new(),
            clock: SystemClock,
            failures: Mutex::new(None),
        });
        tokio::spawn(sender_loop(Arc::clone(&inner)));
        Producer { inner }
    }

    /// Failed attempts from now on, as they happen: a tool can say at once that a partition
    /// refuses writes (KAFKA_STORAGE_ERROR from a full disk) instead of after the retries.
    /// A later call replaces the earlier receiver.
    pub fn attempt_failures(&self) -> mpsc::UnboundedReceiver<AttemptFailure> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// The producer id and epoch when idempotent (the epoch grows when a partition refuses a
    /// batch with a sequence error).
    pub fn producer_identity(&self) -> Option<(i64, i16)> {
        self.inner.state().identity
    }

    /// Queues `record` and returns its [`Delivery`]. Waits for the topic's metadata (at most
    /// the request timeout) and for room in `buffer.memory` (at most `max.block.ms` from the
    /// call); the record is sent when its batch is full or lingered.
    pub async fn send(&self, record: ProducerRecord) -> Delivery {
        let (tx, rx) = oneshot::channel();
        match self.enqueue(record, Reply::Channel(tx)).await {
            Ok(()) => Delivery(DeliveryInner::Waiting(rx)),
            Err((outcome, _)) => Delivery(DeliveryInner::Ready(Some(outcome))),
        }
    }

    /// [`Producer::send`] that hands the record's outcome to `callback` instead of a
    /// [`Delivery`] (Kafka's `send(record, callback)`): called exactly once, at once when the
    /// outcome is known before queuing, else by the producer's task that learned it. It must
    /// not block. Records still queued when the producer's runtime goes away (its tasks
    /// dropped) never get their callback, as a [`Delivery`] of a dropped task never resolves.
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(SendOutcome) + Send + 'static,
    ) {
        if let Err((outcome, reply)) = self
            .enqueue(record, Reply::Callback(Box::new(callback)))
            .await
        {
            reply.send(outcome);
        }
    }

    /// Queues `record` with where its outcome goes, or gives both back with the outcome when
    /// it is known at once.
    async fn enqueue(
        &self,
        record: ProducerRecord,
        reply: Reply,
    ) -> Result<(), (SendOutcome, Reply)> {
        let blocked_until = super::now() + self.inner.config.max_block;
        if self.inner.state().closed {
            return Err((
                SendOutcome::Failed {
                    error: SendError::Closed,
                },
                reply,
            ));
        }
        let meta = match self.topic_metadata(&record.topic).await {
            Ok(meta) => meta,
            Err(error) => return Err((SendOutcome::Failed { error }, reply)),
        };
        let num_partitions = meta.partitions.len() as i32;
        if num_partitions == 0 {
            return Err((
                SendOutcome::Failed {
                    error: SendError::UnknownTopic(record.topic),
                },
                reply,
            ));
        }
        let timestamp_ms = record
            .timestamp_ms
            .unwrap_or_else(|| self.inner.clock.now_ms());
        if let Some(p) = record
            .partition
            .filter(|p| !(0..num_partitions).contains(p))
        {
            return Err((
                SendOutcome::Failed {
                    error: SendError::InvalidPartition {
                        topic: record.topic,
                        partition: p,
                        partitions: num_partitions,
                    },
                },
                reply,
            ));
        }
        let ProducerRecord {
            topic,
            partition: chosen,
            key,
            value,
            headers,
            ..
        } = record;
        let record = Record {
            key,
            value,
            headers,
            timestamp_ms,
        };
        let size = estimated_size(&record);
        if let Err(error) = self.reserve(size, blocked_until).await {
            return Err((SendOutcome::Failed { error }, reply));
        }
        {
            let mut state = self.inner.state();
            let partition = match (chosen, &record.key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, num_partitions),
                (None, None) => state.sticky.partition(&topic, num_partitions),
            };
            let queue = state
                .queues
                .entry((meta.name.clone(), partition))
                .or_default();
            queue.bytes += size;
            queue.oldest.get_or_insert_with(super::now);
            queue.num_partitions = num_partitions;
            queue.records.push(Pending { record, reply });
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Takes `size` bytes of `buffer.memory` for a record, waiting until finished batches give
    /// enough back, or until `deadline`.
    async fn reserve(&self, size: usize, deadline: Instant) -> Result<(), SendError> {
        let config = &self.inner.config;
        if size > config.buffer_memory {
            return Err(SendError::RecordTooLarge {
                size,
                buffer_memory: config.buffer_memory,
            });
        }
        let mut waiting = false;
        let result = loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.inner.state();
                if state.closed {
                    break Err(SendError::Closed);
                }
                if state.buffered_bytes + size <= config.buffer_memory {
                    state.buffered_bytes += size;
                    assert!(state.buffered_bytes <= config.buffer_memory);
                    break Ok(());
                }
                if !waiting {
                    // Full: send every batch now rather than after its linger.
                    waiting = true;
                    state.waiting_for_room += 1;
                    self.inner.wake.notify_one();
                }
            }
            let left = deadline.saturating_duration_since(super::now());
            if tokio::time::timeout(left, room).await.is_err() {
                break Err(SendError::BufferExhausted {
                    size,
                    buffer_memory: config.buffer_memory,
                    max_block_ms: config.max_block.as_millis() as u64,
                });
            }
        };
        if waiting {
            self.inner.state().waiting_for_room -= 1;
        }
        result
    }

    /// Bytes of records held now (queued or in flight), as `buffer.memory` counts them.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.state().buffered_bytes
    }

    /// The topic's metadata, retrying connection trouble with backoff (`retries` times, within
    /// the delivery timeout). Nothing has been sent yet, so every error here means `Failed`.
    async fn topic_metadata(
        &self,
        topic: &str,
    ) -> Result<Arc<super::cluster::TopicMetadata>, SendError> {
        let config = &self.inner.config;
        let deadline = super::now() + config.delivery_timeout;
        let mut backoff = config.retry_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self
                .inner
                .client
                .shared_topic_metadata(topic, config.allow_auto_create_topics)
                .await
            {
                Ok(meta) => return Ok(meta),
                Err(MetadataError::UnknownTopic(t)) => return Err(SendError::UnknownTopic(t)),
                Err(MetadataError::Broker { error, .. }) if !error.is_retriable() => {
                    return Err(SendError::Rejected {
                        error,
                        message: None,
                    })
                }
                Err(MetadataError::Broker { error, .. }) => SendError::Rejected {
                    error,
                    message: None,
                },
                Err(MetadataError::Request(e)) => SendError::NotConnected(e.to_string()),
            };
            if attempts > config.retries || super::now() + backoff >= deadline {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.retry_backoff_max);
        }
    }

    /// Sends `record` and waits for its outcome.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> SendOutcome {
        self.send(record).await.await
    }

    /// Sends every queued record now and waits until each has an outcome.
    pub async fn flush(&self) {
        self.inner.state().flushing += 1;
        self.inner.wake.notify_one();
        self.wait_idle().await;
        self.inner.state().flushing -= 1;
    }

    /// Flushes, then refuses further sends (`Failed{Closed}`) and stops the sender task.
    pub async fn close(&self) {
        self.inner.state().closed = true;
        self.inner.wake.notify_one();
        self.wait_idle().await;
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.inner.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.state().idle() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nothing can be queued any more; answer whatever is left.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for queue in state.queues.values_mut() {
            for p in queue.records.drain(..) {
                // A callback would run outside any task of the runtime going away.
                if let Reply::Channel(tx) = p.reply {
                    let _ = tx.send(SendOutcome::Failed {
                        error: SendError::Closed,
                    });
                }
            }
        }
    }
}

async fn init_producer_id(client: &Client) -> Result<(i64, i16), ProducerInitError> {
    let mut backoff = Duration::from_millis(100);
    for attempt in 0.. {
        let connection = client.any_connection().await.map_err(RequestError::from)?;
        if !connection.supports(kafka_protocol::messages::ApiKey::InitProducerId) {
            return Err(ProducerInitError::IdempotenceUnsupported);
        }
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let response = connection.send(&request).await?;
        match ResponseError::try_from_code(response.error_code) {
            None => return Ok((response.producer_id.0, response.producer_epoch)),
            Some(e) if e.is_retriable() && attempt < 10 => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Some(e) => return Err(ProducerInitError::InitProducerId(e)),
        }
    }
    unreachable!("the loop returns")
}

/// Seals ready batches and starts their sends; runs until the producer is dropped or closed
/// and drained.
async fn sender_loop(inner: Arc<Inner>) {
    loop {
        let mut ready = Vec::new();
        let mut next_deadline: Option<Instant> = None;
        let done = {
            let mut guard = inner.state();
            let state = &mut *guard;
            let now = super::now();
            let force = state.flushing > 0 || state.closed || state.waiting_for_room > 0;
            let current = state.identity;
            let mut sealed = Vec::new();
            for ((topic, partition), queue) in state.queues.iter_mut() {
                if queue.in_flight || queue.records.is_empty() {
                    continue;
                }
                let deadline = queue.oldest.unwrap_or(now) + inner.config.linger;
                if !(force || queue.bytes >= inner.config.batch_size || deadline <= now) {
                    next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                    continue;
                }
                // Take records up to batch.size (always at least one).
                let mut take = 0;
                let mut bytes = 0;
                for p in &queue.records {
                    let size = estimated_size(&p.record);
                    if take > 0 && bytes + size > inner.config.batch_size {
                        break;
                    }
                    take += 1;
                    bytes += size;
                }
                let records: Vec<Pending> = queue.records.drain(..take).collect();
                queue.bytes = queue.bytes.saturating_sub(bytes);
                queue.oldest = if queue.records.is_empty() {
                    None
                } else {
                    Some(now)
                };
                let identity = match current {
                    Some(current) => {
                        let (producer_id, producer_epoch, base_sequence) =
                            queue.seal_identity(current, records.len());
                        ProducerIdentity {
                            producer_id,
                            producer_epoch,
                            base_sequence,
                            transactional: inner.config.transactional_id.is_some(),
                        }
                    }
                    None => ProducerIdentity::NONE,
                };
                queue.in_flight = true;
                sealed.push((topic.clone(), *partition, queue.num_partitions));
                ready.push(Batch {
                    topic: topic.clone(),
                    partition: *partition,
                    records,
                    identity,
                });
            }
            for (topic, partition, n) in sealed {
                state.sticky.on_batch_sealed(&topic, partition, n);
            }
            state.in_flight += ready.len();
            state.closed && state.idle() && ready.is_empty()
        };
        for batch in ready {
            tokio::spawn(send_batch(Arc::clone(&inner), batch));
        }
        if done {
            inner.progress.notify_waiters();
            return;
        }
        // Stop when the last `Producer` handle is gone (the spawned sends hold their own Arc).
        if Arc::strong_count(&inner) == 1 {
            let mut state = inner.state();
            if state.idle() {
                return;
            }
            state.closed = true;
            continue;
        }
        let sleep_until =
            next_deadline.unwrap_or_else(|| super::now() + Duration::from_millis(100));
        tokio::select! {
            biased;
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep_until(sleep_until) => {}
        }
    }
}

fn add_sequence(base: i32, count: usize) -> i32 {
    // Sequences wrap from i32::MAX to 0, as Kafka's do.
    ((i64::from(base) + count as i64) % (i64::from(i32::MAX) + 1)) as i32
}

/// What one attempt established.
enum Attempt {
    Written(i64),
    NotAcknowledged,
    /// Definitely not appended; `retriable` says whether another attempt may succeed.
    Refused {
        error: SendError,
        retriable: bool,
    },
    /// May have been appended.
    Ambiguous {
        reason: UnknownReason,
        retriable: bool,
    },
}

/// Whether Kafka may return `error` for a produce request with `acks` after the leader appended
/// the batch. Some codes come only from a delayed produce: the leader appended, waited for the
/// in-sync replicas (acks=all), and then lost the partition (NOT_LEADER_OR_FOLLOWER) or saw it
/// removed (UNKNOWN_TOPIC_OR_PARTITION). With acks=0/1 the leader answers right after its own
/// append, so those two codes mean it refused before appending.
fn may_have_been_appended(error: ResponseError, acks: Acks) -> bool {
    match error {
        ResponseError::RequestTimedOut
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::KafkaStorageError
        | ResponseError::NetworkException
        | ResponseError::UnknownServerError
        | ResponseError::DuplicateSequenceNumber
        | ResponseError::Unknown(_) => true,
        ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition => {
            acks == Acks::All
        }
        _ => false,
    }
}

/// One attempt to send the batch `bytes` of `target` (its topic and partition: the batch
/// itself, which holds the records' replies, is not shared across the awaits).
async fn attempt(inner: &Inner, target: (&str, i32), bytes: &Bytes) -> Attempt {
    let (topic, partition) = target;
    let client = &inner.client;
    let connection = match client.leader(topic, partition).await {
        Ok(c) => c,
        Err(MetadataError::UnknownTopic(t)) => {
            return Attempt::Refused {
                error: SendError::UnknownTopic(t),
                retriable: true,
            }
        }
        Err(MetadataError::Broker { error, .. }) => {
            return Attempt::Refused {
                error: SendError::Rejected {
                    error,
                    message: None,
                },
                retriable: true,
            }
        }
        Err(MetadataError::Request(e)) => {
            return Attempt::Refused {
                error: SendError::NotConnected(e.to_string()),
                retriable: true,
            }
        }
    };
    let timeout_ms = i32::try_from(connection.request_timeout().as_millis()).unwrap_or(i32::MAX);
    let request = ProduceRequest::default()
        .with_transactional_id(
            inner
                .config
                .transactional_id
                .clone()
                .map(|id| kafka_protocol::messages::TransactionalId(StrBytes::from_string(id))),
        )
        .with_acks(inner.config.acks.code())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(bytes.clone()))])]);
    let failed = |e: RequestError| {
        client.invalidate(topic);
        if !e.maybe_sent() {
            return Attempt::Refused {
                error: SendError::NotConnected(e.to_string()),
                retriable: true,
            };
        }
        let reason = match e {
            RequestError::Timeout { .. } => UnknownReason::Timeout(e.to_string()),
            _ => UnknownReason::ConnectionLost(e.to_string()),
        };
        Attempt::Ambiguous {
            reason,
            retriable: true,
        }
    };
    if inner.config.acks == Acks::None {
        return match connection.send_without_response(&request).await {
            Ok(()) => Attempt::NotAcknowledged,
            Err(e) => failed(e),
        };
    }
    let response = match connection.send(&request).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let result = response
        .responses
        .iter()
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition);
    let Some(result) = result else {
        return Attempt::Ambiguous {
            reason: UnknownReason::AmbiguousError(ResponseError::UnknownServerError),
            retriable: false,
        };
    };
    let Some(error) = ResponseError::try_from_code(result.error_code) else {
        return Attempt::Written(result.base_offset);
    };
    if matches!(
        error,
        ResponseError::NotLeaderOrFollower
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::LeaderNotAvailable
    ) {
        client.invalidate(topic);
    }
    let retriable = error.is_retriable() || error == ResponseError::KafkaStorageError;
    if may_have_been_appended(error, inner.config.acks) {
        Attempt::Ambiguous {
            reason: UnknownReason::AmbiguousError(error),
            retriable: retriable && error != ResponseError::DuplicateSequenceNumber,
        }
    } else {
        let message = result.error_message.as_ref().map(|m| m.to_string());
        Attempt::Refused {
            error: SendError::Rejected { error, message },
            retriable,
        }
    }
}

/// Whether a produce error says the partition's sequences of this producer have a gap.
fn is_sequence_gap(error: &SendError) -> bool {
    matches!(
        error,
        SendError::Rejected {
            error: ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId,
            ..
        }
    )
}

/// After a sequence error on `batch`'s partition: moves the producer to a newer epoch (or a
/// new producer id) and rewrites the batch to start the partition's sequences at 0 under it.
/// See "Idempotence" in the module docs.
async fn recover_sequences(inner: &Inner, batch: &mut Batch) -> Result<(), ProducerInitError> {
    let sealed_under = (batch.identity.producer_id, batch.identity.producer_epoch);
    let decision = {
        let mut state = inner.state();
        let current = state
            .identity
            .expect("only an idempotent producer has sequences");
        let decision = sequence_recovery(current, sealed_under);
        if let SequenceRecovery::Bump(next) = decision {
            state.identity = Some(next);
        }
        decision
    };
    let next = match decision {
        SequenceRecovery::Bump(next) | SequenceRecovery::Adopt(next) => next,
        SequenceRecovery::NewProducerId => {
            let fresh = init_producer_id(&inner.client).await?;
            let mut state = inner.state();
            // Another partition may have replaced the id meanwhile: its id is as good.
            if state.identity == Some(sealed_under) {
                state.identity = Some(fresh);
            }
            state
                .identity
                .expect("only an idempotent producer has sequences")
        }
    };
    tracing::debug!(topic = %batch.topic, partition = batch.partition, from = ?sealed_under,
        to = ?next, "sequence gap: resending the batch from sequence 0 under a new epoch");
    let mut state = inner.state();
    let queue = state
        .queues
        .get_mut(&(batch.topic.clone(), batch.partition))
        .expect("a batch's partition queue stays while it is in flight");
    queue.sequence_epoch = Some(next);
    queue.next_sequence = add_sequence(0, batch.records.len());
    batch.identity = ProducerIdentity {
        producer_id: next.0,
        producer_epoch: next.1,
        base_sequence: 0,
        transactional: false,
    };
    Ok(())
}

async fn send_batch(inner: Arc<Inner>, mut batch: Batch) {
    let encode = |batch: &Batch| {
        Bytes::from(encode_records(
            batch.records.iter().map(|p| &p.record),
            batch.identity,
        ))
    };
    let mut bytes = encode(&batch);
    let recovers_sequences =
        batch.identity.producer_id >= 0 && inner.config.transactional_id.is_none();
    let deadline = super::now() + inner.config.delivery_timeout;
    let mut backoff = inner.config.retry_backoff;
    let mut ambiguous: Option<UnknownReason> = None;
    let mut attempts = 0u32;
    let outcome: Result<i64, SendOutcome> = loop {
        attempts += 1;
        // This attempt's failure, if it failed, for [`Producer::attempt_failures`].
        let failure: Option<(Option<ResponseError>, String)>;
        let (retriable, give_up) = match attempt(&inner, (&batch.topic, batch.partition), &bytes)
            .await
        {
            Attempt::Written(offset) => break Ok(offset),
            Attempt::NotAcknowledged => {
                break Err(SendOutcome::Unknown {
                    reason: UnknownReason::NotAcknowledged,
                })
            }
            Attempt::Refused {
                error,
                mut retriable,
            } => {
                let code = match &error {
                    SendError::Rejected { error, .. } => Some(*error),
                    _ => None,
                };
                failure = Some((code, error.to_string()));
                // Not appended, and every later batch of the partition would be refused too:
                // a new epoch, then this batch again (KIP-360).
                if recovers_sequences && is_sequence_gap(&error) {
                    match recover_sequences(&inner, &mut batch).await {
                        Ok(()) => {
                            bytes = encode(&batch);
                            retriable = true;
                        }
                        Err(e) => tracing::debug!(topic = %batch.topic,
                            partition = batch.partition, %e, "no new producer id after a sequence gap"),
                    }
                }
                let give_up = match &ambiguous {
                    Some(earlier) => SendOutcome::Unknown {
                        reason: UnknownReason::RetriedAfterAmbiguous {
                            earlier: Box::new(earlier.clone()),
                            last: error,
                        },
                    },
                    None => SendOutcome::Failed { error },
                };
                (retriable, give_up)
            }
            Attempt::Ambiguous { reason, retriable } => {
                let code = match &reason {
                    UnknownReason::AmbiguousError(error) => Some(*error),
                    _ => None,
                };
                failure = Some((code, reason.to_string()));
                ambiguous.get_or_insert_with(|| reason.clone());
                (retriable, SendOutcome::Unknown { reason })
            }
        };
        let last =
            !retriable || attempts > inner.config.retries || super::now() + backoff >= deadline;
        if let Some((error, reason)) = failure {
            inner.report_failure(AttemptFailure {
                topic: batch.topic.clone(),
                partition: batch.partition,
                records: batch.records.len(),
                attempt: attempts,
                error,
                reason,
                retrying: !last,
            });
        }
        if last {
            break Err(give_up);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.config.retry_backoff_max);
    };
    let count = batch.records.len();
    let size: usize = batch
        .records
        .iter()
        .map(|p| estimated_size(&p.record))
        .sum();
    {
        let mut state = inner.state();
        release(&mut state, size);
        if let Some(queue) = state
            .queues
            .get_mut(&(batch.topic.clone(), batch.partition))
        {
            queue.in_flight = false;
            // A batch that was definitely not written gives its sequence numbers back (no
            // later batch of this partition was sealed while it was in flight).
            if matches!(outcome, Err(SendOutcome::Failed { .. }))
                && batch.identity.producer_id >= 0
                && queue.sequence_epoch
                    == Some((batch.identity.producer_id, batch.identity.producer_epoch))
            {
                queue.next_sequence = batch.identity.base_sequence;
            }
        }
    }
    match outcome {
        Ok(base_offset) => {
            for (i, p) in batch.records.into_iter().enumerate() {
                p.reply.send(SendOutcome::Acknowledged {
                    partition: batch.partition,
                    offset: base_offset + i as i64,
                });
            }
        }
        Err(outcome) => {
            tracing::debug!(topic = %batch.topic, partition = batch.partition, count, ?outcome, "batch not acknowledged");
            for p in batch.records {
                p.reply.send(outcome.clone());
            }
        }
    }
    // Counted out only after every reply: a flush that returns has had every callback run.
    inner.state().in_flight -= 1;
    inner.wake.notify_one();
    inner.progress.notify_waiters();
    inner.room.notify_waiters();
}

/// Gives `size` bytes back to `buffer.memory`.
fn release(state: &mut Accumulator, size: usize) {
    assert!(
        state.buffered_bytes >= size,
        "released {size} of {} buffered bytes",
        state.buffered_bytes
    );
    state.buffered_bytes -= size;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_or_follower_with_acks_all_may_have_been_appended_before_the_leader_moved() {
        // Kafka's delayed produce answers NOT_LEADER_OR_FOLLOWER (or UNKNOWN_TOPIC_OR_PARTITION
        // when the partition was removed) after the leader appended and waited for the ISR.
        for error in [
            ResponseError::NotLeaderOrFollower,
            ResponseError::UnknownTopicOrPartition,
        ] {
            assert!(may_have_been_appended(error, Acks::All), "{error:?}");
            assert!(!may_have_been_appended(error, Acks::Leader), "{error:?}");
        }
    }

    #[test]
    fn codes_kafka_returns_after_the_append_are_unknown_whatever_the_acks() {
        for acks in [Acks::Leader, Acks::All] {
            for error in [
                ResponseError::RequestTimedOut,
                ResponseError::NotEnoughReplicasAfterAppend,
                ResponseError::KafkaStorageError,
                ResponseError::NetworkException,
                ResponseError::UnknownServerError,
                ResponseError::DuplicateSequenceNumber,
                ResponseError::Unknown(-42),
            ] {
                assert!(may_have_been_appended(error, acks), "{error:?} {acks:?}");
            }
        }
    }

    #[test]
    fn codes_kafka_returns_only_before_the_append_are_failures() {
        for acks in [Acks::Leader, Acks::All] {
            for error in [
                ResponseError::NotEnoughReplicas,
                ResponseError::LeaderNotAvailable,
                ResponseError::MessageTooLarge,
                ResponseError::CorruptMessage,
                ResponseError::InvalidRecord,
                ResponseError::OutOfOrderSequenceNumber,
                ResponseError::InvalidRequiredAcks,
                ResponseError::TopicAuthorizationFailed,
            ] {
                assert!(!may_have_been_appended(error, acks), "{error:?} {acks:?}");
            }
        }
    }

    /// KIP-360: a partition that refuses a batch for a gap in the producer's sequences would
    /// refuse every later batch too; the producer bumps its epoch once per gap, a partition
    /// whose batch was sealed under an older epoch adopts the current one, and at the last
    /// epoch the producer needs a new id.
    #[test]
    fn a_sequence_gap_bumps_the_epoch_once_and_other_partitions_adopt_it() {
        assert_eq!(
            sequence_recovery((7, 0), (7, 0)),
            SequenceRecovery::Bump((7, 1))
        );
        assert_eq!(
            sequence_recovery((7, 1), (7, 0)),
            SequenceRecovery::Adopt((7, 1))
        );
        assert_eq!(
            sequence_recovery((9, 0), (7, 3)),
            SequenceRecovery::Adopt((9, 0))
        );
        assert_eq!(
            sequence_recovery((7, i16::MAX), (7, i16::MAX)),
            SequenceRecovery::NewProducerId
        );
    }

    /// A partition keeps counting its sequences within an epoch and starts the next epoch (or
    /// a new producer id) at 0 with its next batch, as Kafka's `maybeUpdateProducerIdAndEpoch`.
    #[test]
    fn a_partition_starts_a_new_epoch_at_sequence_zero_with_its_next_batch() {
        let mut queue = PartitionQueue::default();
        assert_eq!(queue.seal_identity((7, 0), 3), (7, 0, 0));
        assert_eq!(queue.seal_identity((7, 0), 2), (7, 0, 3));
        assert_eq!(queue.seal_identity((7, 1), 4), (7, 1, 0));
        assert_eq!(queue.seal_identity((7, 1), 1), (7, 1, 4));
        assert_eq!(queue.seal_identity((8, 0), 1), (8, 0, 0));
        // Sequences wrap at i32::MAX within an epoch, as Kafka's do.
        queue.next_sequence = i32::MAX;
        assert_eq!(queue.seal_identity((8, 0), 2), (8, 0, i32::MAX));
        assert_eq!(queue.next_sequence, 1);
    }

    #[test]
    fn only_sequence_errors_mean_a_gap_in_the_partitions_sequences() {
        let rejected = |error| SendError::Rejected {
            error,
            message: None,
        };
        assert!(is_sequence_gap(&rejected(
            ResponseError::OutOfOrderSequenceNumber
        )));
        assert!(is_sequence_gap(&rejected(ResponseError::UnknownProducerId)));
        for error in [
            ResponseError::InvalidProducerEpoch,
            ResponseError::DuplicateSequenceNumber,
            ResponseError::NotEnoughReplicas,
        ] {
            assert!(!is_sequence_gap(&rejected(error)), "{error:?}");
        }
        assert!(!is_sequence_gap(&SendError::NotConnected("refused".into())));
    }

    #[test]
    fn outcomes_carry_the_kafka_error_code_as_a_value() {
        let rejected = SendError::Rejected {
            error: ResponseError::MessageTooLarge,
            message: Some("too big".into()),
        };
        assert_eq!(rejected.code(), Some(10));
        assert_eq!(SendError::NotConnected("refused".into()).code(), None);
        let ambiguous = UnknownReason::AmbiguousError(ResponseError::NotLeaderOrFollower);
        assert_eq!(ambiguous.code(), Some(6));
        let retried = UnknownReason::RetriedAfterAmbiguous {
            earlier: Box::new(UnknownReason::Timeout("no answer".into())),
            last: rejected,
        };
        assert_eq!(retried.code(), Some(10));
        assert_eq!(UnknownReason::NotAcknowledged.code(), None);
    }
}
