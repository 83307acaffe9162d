//! The transactional producer: Kafka's `transactional.id` producer with `begin`, `send`,
//! `send_offsets_to_transaction`, `commit` and `abort`, and an exact account of how each
//! transaction ended.
//!
//! # The protocol, as Kafka's clients speak it
//! - [`TransactionalProducer::new`] finds the transaction coordinator (FindCoordinator, key
//!   type 1) and asks it for the id's producer id and epoch (InitProducerId with the
//!   transactional id and `transaction.timeout.ms`). The epoch bump fences every older producer
//!   of the id; a transaction it left open is aborted first (the coordinator answers
//!   CONCURRENT_TRANSACTIONS meanwhile, and the call retries).
//! - Before the first record of a transaction goes to a partition, AddPartitionsToTxn puts the
//!   partition in the transaction, so the coordinator writes its marker whatever happens to
//!   this producer. Records are idempotent batches (sequence numbers per partition) with the
//!   transactional bit.
//! - `send_offsets_to_transaction`: AddOffsetsToTxn (the group's offsets partition joins the
//!   transaction), then TxnOffsetCommit to the group's coordinator. The offsets become the
//!   group's committed offsets only if the transaction commits.
//! - `commit` and `abort` wait for every record's outcome, then EndTxn.
//!
//! Every call to a coordinator retries, within `max.block.ms`, what Kafka's client retries:
//! NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE (after finding the coordinator again),
//! COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS, other retriable codes, timeouts and
//! lost connections.
//!
//! # Outcomes
//! [`TransactionalProducer::commit`] and [`TransactionalProducer::abort`] end in one
//! [`TransactionOutcome`]; the simulator's transaction checker depends on exactly this:
//! - `Committed`: the coordinator answered EndTxn(commit) without error (a retry of an
//!   EndTxn that already took effect is answered so too). Every record of the transaction
//!   becomes visible to read_committed consumers, and its offsets become the group's.
//! - `Aborted`: **definitely not committed**: an abort was acknowledged, or a commit was never
//!   asked of the coordinator because a record, AddPartitionsToTxn or the offsets of the
//!   transaction failed (Kafka's "abortable error": the producer aborts instead).
//! - `Fenced`: PRODUCER_FENCED or INVALID_PRODUCER_EPOCH: a newer producer with this
//!   transactional id (or the coordinator's timeout) took over. The newer producer completes a
//!   transaction left in PrepareCommit and aborts one left ongoing, so a commit that ends fenced
//!   may have committed or not. This producer is dead: every later call answers fenced.
//! - `Unknown`: no answer within `max.block.ms` (timeouts, lost connections, an unexpected
//!   code): the coordinator decides, and may have committed.
//!
//! After a transaction that did not end cleanly (a record not acknowledged, an end that went
//! unanswered), the next `begin` bumps the epoch first (InitProducerId with the current id and
//! epoch, KIP-360), so the partitions' sequence numbers start over. So does a transaction one of
//! whose coordinator requests went unanswered once, even when a retry was answered: this
//! client speaks transaction version 1 (EndTxn up to v3), whose epoch stays the same from one
//! transaction to the next, so the unanswered attempt, delivered late, would otherwise be taken
//! for a request of the next transaction (a late EndTxn(commit) commits the next transaction
//! half written; KIP-890 part 2 closes this by bumping the epoch at every EndTxn).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest,
    GroupId, InitProducerIdRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::sync::{oneshot, Notify};

use super::cluster::{Client, MetadataError};
use super::connection::Connection;
use super::partitioner::partition_for_key;
use super::producer::{Delivery, Producer, ProducerConfig, ProducerRecord, SendError, SendOutcome};

/// Java's `TransactionManager.ADD_PARTITIONS_RETRY_BACKOFF_MS`: the retry of a transaction's
/// first AddPartitionsToTxn answered CONCURRENT_TRANSACTIONS.
const ADD_PARTITIONS_RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// How a transaction ended. See the module docs for the exact contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactionOutcome {
    Committed,
    /// Definitely not committed; `reason` says why when a commit was asked for.
    Aborted {
        reason: String,
    },
    /// The producer was fenced; the transaction may have committed or not.
    Fenced {
        error: ResponseError,
    },
    /// The coordinator's decision is unknown.
    Unknown {
        reason: String,
        code: Option<i16>,
    },
}

impl TransactionOutcome {
    /// The Kafka error code behind the outcome, as a value.
    pub fn code(&self) -> Option<i16> {
        match self {
            TransactionOutcome::Fenced { error } => Some(error.code()),
            TransactionOutcome::Unknown { code, .. } => *code,
            TransactionOutcome::Committed | TransactionOutcome::Aborted { .. } => None,
        }
    }
}

impl std::fmt::Display for TransactionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransactionOutcome::Committed => f.write_str("committed"),
            TransactionOutcome::Aborted { reason } => write!(f, "aborted: {reason}"),
            TransactionOutcome::Fenced { error } => write!(f, "fenced: {error}"),
            TransactionOutcome::Unknown { reason, .. } => write!(f, "unknown: {reason}"),
        }
    }
}

/// Why a transactional call did not take effect (or may not have).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// A newer producer with this transactional id took over: this one is dead.
    #[error("fenced by a newer producer of this transactional.id: {0}")]
    Fenced(ResponseError),
    /// Refused by the coordinator before taking effect.
    #[error("refused by the coordinator: {0}")]
    Refused(ResponseError),
    /// Not answered within `max.block.ms`, or answered in a way that leaves it open whether
    /// it took effect.
    #[error("{reason}")]
    Unknown { reason: String, code: Option<i16> },
}

impl TransactionError {
    /// The Kafka error code behind the error, as a value.
    pub fn code(&self) -> Option<i16> {
        match self {
            TransactionError::Fenced(e) | TransactionError::Refused(e) => Some(e.code()),
            TransactionError::Unknown { code, .. } => *code,
        }
    }

    /// Whether the call may have taken effect.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, TransactionError::Unknown { .. })
    }
}

fn is_fencing(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch
    )
}

fn error_of(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

/// The outcomes of the records sent in the current transaction.
#[derive(Default)]
struct Tally {
    /// Records whose outcome has not arrived.
    pending: usize,
    /// The first record that did not end acknowledged.
    not_acknowledged: Option<String>,
    /// A record refused because the producer was fenced.
    fenced: Option<ResponseError>,
}

#[derive(Default)]
struct Records {
    tally: Mutex<Tally>,
    settled: Notify,
}

impl Records {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Ready,
    InTransaction,
    Fenced(ResponseError),
}

/// A transactional producer. One user drives it (`&mut self`); its records are batched and
/// sent by an idempotent [`Producer`] underneath.
pub struct TransactionalProducer {
    client: Client,
    config: ProducerConfig,
    transactional_id: String,
    /// (producer id, epoch).
    identity: (i64, i16),
    producer: Producer,
    /// Coordinator connections by (key type, key).
    coordinators: BTreeMap<(i8, String), Arc<Connection>>,
    phase: Phase,
    /// The epoch must be bumped before the next transaction.
    bump_needed: bool,
    /// Partitions in the current transaction.
    partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets are in the current transaction.
    groups: BTreeSet<String>,
    /// Why the current transaction can only abort, if it can.
    abortable: Option<String>,
    records: Arc<Records>,
    /// Round robin over partitions for records with neither partition nor key.
    next_partition: i32,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.transactional_id)
            .field("identity", &self.identity)
            .field("phase", &self.phase)
            .finish()
    }
}

/// What went wrong in one call to a coordinator, before the retries give up.
struct Failure {
    reason: String,
    code: Option<ResponseError>,
}

impl TransactionalProducer {
    /// Finds the transaction coordinator and gets this transactional id's producer id and
    /// epoch, fencing every older producer of the id. `config.transactional_id` is required;
    /// idempotence is implied.
    pub async fn new(
        client: Client,
        mut config: ProducerConfig,
    ) -> Result<TransactionalProducer, TransactionError> {
        let transactional_id = config
            .transactional_id
            .clone()
            .expect("a transactional producer needs a transactional.id");
        assert!(
            !transactional_id.is_empty(),
            "transactional.id must not be empty"
        );
        config.enable_idempotence = true;
        // Kafka's transactional producer needs acks=all.
        config.acks = super::producer::Acks::All;
        let mut producer = TransactionalProducer {
            producer: Producer::start(client.clone(), config.clone(), None),
            client,
            config,
            transactional_id,
            identity: (-1, -1),
            coordinators: BTreeMap::new(),
            phase: Phase::Ready,
            bump_needed: false,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            abortable: None,
            records: Arc::new(Records::default()),
            next_partition: 0,
        };
        producer.init(None).await?;
        Ok(producer)
    }

    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// The producer id and epoch this producer writes with.
    pub fn producer_identity(&self) -> (i64, i16) {
        self.identity
    }

    /// Whether a newer producer of this transactional id fenced this one.
    pub fn is_fenced(&self) -> bool {
        matches!(self.phase, Phase::Fenced(_))
    }

    /// InitProducerId; `expected` is the id and epoch to bump (KIP-360), `None` for a new
    /// producer. A fresh idempotent sender starts with the answer (sequences from 0).
    async fn init(&mut self, expected: Option<(i64, i16)>) -> Result<(), TransactionError> {
        let timeout_ms =
            i32::try_from(self.config.transaction_timeout.as_millis()).unwrap_or(i32::MAX);
        let (producer_id, producer_epoch) = expected.unwrap_or((-1, -1));
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            ))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch);
        let response = self
            .call(KEY_TYPE_TRANSACTION, None, &request, |r| {
                error_of(r.error_code)
            })
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                if let TransactionError::Fenced(error) = &e {
                    self.phase = Phase::Fenced(*error);
                }
                return Err(e);
            }
        };
        self.identity = (response.producer_id.0, response.producer_epoch);
        self.producer = Producer::start(
            self.client.clone(),
            self.config.clone(),
            Some(self.identity),
        );
        self.bump_needed = false;
        tracing::debug!(transactional_id = %self.transactional_id, producer_id = self.identity.0,
            epoch = self.identity.1, "transactional producer initialised");
        Ok(())
    }

    /// Starts a transaction (bumping the epoch first when the last one did not end cleanly).
    pub async fn begin(&mut self) -> Result<(), TransactionError> {
        match self.phase {
            Phase::Fenced(error) => return Err(TransactionError::Fenced(error)),
            Phase::InTransaction => panic!("begin inside an open transaction"),
            Phase::Ready => {}
        }
        if self.bump_needed {
            self.init(Some(self.identity)).await?;
        }
        self.partitions.clear();
        self.groups.clear();
        self.abortable = None;
        self.records = Arc::new(Records::default());
        self.phase = Phase::InTransaction;
        Ok(())
    }

    /// Sends `record` inside the open transaction: AddPartitionsToTxn first if its partition
    /// is new to the transaction. Its [`Delivery`] says what happened to the record itself; a
    /// record that did not end acknowledged makes the transaction abort-only.
    pub async fn send(&mut self, mut record: ProducerRecord) -> Result<Delivery, TransactionError> {
        if let Phase::Fenced(error) = self.phase {
            return Err(TransactionError::Fenced(error));
        }
        assert_eq!(
            self.phase,
            Phase::InTransaction,
            "send outside a transaction"
        );
        let partition = match self.partition_of(&record).await {
            Ok(p) => p,
            Err(error) => {
                self.abortable
                    .get_or_insert_with(|| format!("a record was not sent: {error}"));
                return Ok(Delivery::ready(SendOutcome::Failed { error }));
            }
        };
        record.partition = Some(partition);
        let tp = (record.topic.clone(), partition);
        if !self.partitions.contains(&tp) {
            if let Err(e) = self.add_partition(&tp).await {
                if let TransactionError::Fenced(error) = e {
                    self.phase = Phase::Fenced(error);
                    return Err(e);
                }
                self.abortable.get_or_insert_with(|| {
                    format!("AddPartitionsToTxn for {}-{} failed: {e}", tp.0, tp.1)
                });
                let error = match e {
                    TransactionError::Refused(error) => SendError::Rejected {
                        error,
                        message: Some(format!("AddPartitionsToTxn: {error}")),
                    },
                    other => SendError::NotConnected(format!("AddPartitionsToTxn: {other}")),
                };
                return Ok(Delivery::ready(SendOutcome::Failed { error }));
            }
            self.partitions.insert(tp);
        }
        let delivery = self.producer.send(record).await;
        let records = Arc::clone(&self.records);
        records.tally().pending += 1;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let outcome = delivery.await;
            {
                let mut tally = records.tally();
                tally.pending -= 1;
                match &outcome {
                    SendOutcome::Acknowledged { .. } => {}
                    SendOutcome::Failed { error } => {
                        let fenced = error.code().and_then(error_of).filter(|&e| is_fencing(e));
                        if let Some(e) = fenced {
                            tally.fenced.get_or_insert(e);
                        }
                        tally
                            .not_acknowledged
                            .get_or_insert_with(|| format!("a record failed: {error}"));
                    }
                    SendOutcome::Unknown { reason } => {
                        tally.not_acknowledged.get_or_insert_with(|| {
                            format!("a record's outcome is unknown: {reason}")
                        });
                    }
                }
            }
            records.settled.notify_waiters();
            let _ = tx.send(outcome);
        });
        Ok(Delivery::waiting(rx))
    }

    /// Commits `offsets` ((topic, partition) → next offset to consume) for `group` inside the
    /// open transaction: AddOffsetsToTxn, then TxnOffsetCommit to the group's coordinator.
    /// They become the group's committed offsets only if the transaction commits. Any error
    /// makes the transaction abort-only.
    pub async fn send_offsets_to_transaction(
        &mut self,
        group: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), TransactionError> {
        if let Phase::Fenced(error) = self.phase {
            return Err(TransactionError::Fenced(error));
        }
        assert_eq!(
            self.phase,
            Phase::InTransaction,
            "send_offsets_to_transaction outside a transaction"
        );
        let result = self.send_offsets(group, offsets).await;
        if let Err(e) = &result {
            if let TransactionError::Fenced(error) = e {
                self.phase = Phase::Fenced(*error);
            }
            self.abortable
                .get_or_insert_with(|| format!("the offsets of group {group} failed: {e}"));
        }
        result
    }

    async fn send_offsets(
        &mut self,
        group: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), TransactionError> {
        let (producer_id, producer_epoch) = self.identity;
        if !self.groups.contains(group) {
            let request = AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    self.transactional_id.clone(),
                )))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())));
            self.call(KEY_TYPE_TRANSACTION, None, &request, |r| {
                error_of(r.error_code)
            })
            .await?;
            self.groups.insert(group.to_string());
        }
        let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), &offset) in offsets {
            topics.entry(topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(offset),
            );
        }
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            )))
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        self.call(KEY_TYPE_GROUP, Some(group), &request, |r| {
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find_map(|p| error_of(p.error_code))
        })
        .await?;
        Ok(())
    }

    /// Commits the open transaction. See the module docs for what each outcome means.
    pub async fn commit(&mut self) -> TransactionOutcome {
        self.end(true).await
    }

    /// Aborts the open transaction: none of its records or offsets will ever be visible to
    /// read_committed consumers or the group.
    pub async fn abort(&mut self) -> TransactionOutcome {
        self.end(false).await
    }

    async fn end(&mut self, commit: bool) -> TransactionOutcome {
        if let Phase::Fenced(error) = self.phase {
            return TransactionOutcome::Fenced { error };
        }
        assert_eq!(
            self.phase,
            Phase::InTransaction,
            "commit or abort outside a transaction"
        );
        // Every record's outcome first: a commit covers exactly the records written.
        self.producer.flush().await;
        self.wait_for_records().await;
        let (fenced, not_acknowledged) = {
            let tally = self.records.tally();
            (tally.fenced, tally.not_acknowledged.clone())
        };
        if let Some(error) = fenced {
            self.phase = Phase::Fenced(error);
            return TransactionOutcome::Fenced { error };
        }
        if not_acknowledged.is_some() {
            // The gap in the sequence numbers is closed by a new epoch.
            self.bump_needed = true;
        }
        let abort_only = self.abortable.clone().or(not_acknowledged);
        let nothing_added = self.partitions.is_empty() && self.groups.is_empty();
        // Asked to commit an abort-only transaction, Kafka's producer refuses and the
        // application aborts; this does both, and the transaction never committed.
        let commit_refused = abort_only.filter(|_| commit);
        let asked = commit && commit_refused.is_none();
        let result = if nothing_added {
            // Nothing reached a partition: there is nothing for the coordinator to end
            // (Kafka's producer sends no EndTxn either).
            Ok(())
        } else {
            self.end_txn(asked).await
        };
        self.phase = Phase::Ready;
        let outcome = match result {
            Ok(()) if asked => TransactionOutcome::Committed,
            Ok(()) => TransactionOutcome::Aborted {
                reason: commit_refused
                    .clone()
                    .unwrap_or_else(|| "aborted as asked".into()),
            },
            Err(TransactionError::Fenced(error)) => {
                self.phase = Phase::Fenced(error);
                match &commit_refused {
                    // EndTxn(commit) was never sent: it cannot have committed.
                    Some(reason) => TransactionOutcome::Aborted {
                        reason: format!("{reason}; then fenced while aborting ({error})"),
                    },
                    None => TransactionOutcome::Fenced { error },
                }
            }
            Err(e) => {
                self.bump_needed = true;
                match &commit_refused {
                    Some(reason) => TransactionOutcome::Aborted {
                        reason: format!("{reason}; the abort then failed: {e}"),
                    },
                    None => TransactionOutcome::Unknown {
                        reason: e.to_string(),
                        code: e.code(),
                    },
                }
            }
        };
        tracing::debug!(transactional_id = %self.transactional_id, commit, %outcome, "transaction ended");
        outcome
    }

    /// EndTxn with retries.
    async fn end_txn(&mut self, commit: bool) -> Result<(), TransactionError> {
        let (producer_id, producer_epoch) = self.identity;
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_committed(commit);
        let ended = self
            .call(KEY_TYPE_TRANSACTION, None, &request, |r| {
                error_of(r.error_code)
            })
            .await;
        match ended {
            Ok(_) => Ok(()),
            // The coordinator holds the transaction in another state: whether it committed
            // is not this producer's to know.
            Err(TransactionError::Refused(error)) => Err(TransactionError::Unknown {
                reason: format!("EndTxn refused: {error}"),
                code: Some(error.code()),
            }),
            Err(e) => Err(e),
        }
    }

    async fn wait_for_records(&self) {
        loop {
            let settled = self.records.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.records.tally().pending == 0 {
                return;
            }
            settled.await;
        }
    }

    /// The partition `record` goes to: its own, its key's, or the next in turn.
    async fn partition_of(&mut self, record: &ProducerRecord) -> Result<i32, SendError> {
        let meta = match self.client.topic_metadata(&record.topic, false).await {
            Ok(meta) => meta,
            Err(MetadataError::UnknownTopic(t)) => return Err(SendError::UnknownTopic(t)),
            Err(MetadataError::Broker { error, .. }) => {
                return Err(SendError::Rejected {
                    error,
                    message: None,
                })
            }
            Err(MetadataError::Request(e)) => return Err(SendError::NotConnected(e.to_string())),
        };
        let n = meta.partitions.len() as i32;
        if n == 0 {
            return Err(SendError::UnknownTopic(record.topic.clone()));
        }
        match (record.partition, &record.key) {
            (Some(p), _) if (0..n).contains(&p) => Ok(p),
            (Some(p), _) => Err(SendError::InvalidPartition {
                topic: record.topic.clone(),
                partition: p,
                partitions: n,
            }),
            (None, Some(key)) => Ok(partition_for_key(key, n)),
            (None, None) => {
                self.next_partition = (self.next_partition + 1) % n;
                Ok(self.next_partition)
            }
        }
    }

    async fn add_partition(&mut self, tp: &(String, i32)) -> Result<(), TransactionError> {
        let (producer_id, producer_epoch) = self.identity;
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            )))
            .with_v3_and_below_producer_id(ProducerId(producer_id))
            .with_v3_and_below_producer_epoch(producer_epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(tp.0.clone())))
                .with_partitions(vec![tp.1])]);
        self.call(KEY_TYPE_TRANSACTION, None, &request, |r| {
            r.results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| t.results_by_partition.iter())
                .find_map(|p| error_of(p.partition_error_code))
        })
        .await?;
        Ok(())
    }

    /// The coordinator of `key` (this transactional id when `None`), found with
    /// FindCoordinator and connected to on a connection of this producer's own.
    async fn coordinator(
        &mut self,
        key_type: i8,
        key: Option<&str>,
    ) -> Result<Arc<Connection>, Failure> {
        let key = key.unwrap_or(&self.transactional_id).to_string();
        if let Some(c) = self
            .coordinators
            .get(&(key_type, key.clone()))
            .filter(|c| !c.is_closed())
        {
            return Ok(Arc::clone(c));
        }
        let failure = |reason: String| Failure { reason, code: None };
        let any = self
            .client
            .any_connection()
            .await
            .map_err(|e| failure(format!("FindCoordinator: {e}")))?;
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(key.clone()))
            .with_key_type(key_type);
        let response = any
            .send(&request)
            .await
            .map_err(|e| failure(format!("FindCoordinator: {e}")))?;
        if let Some(error) = error_of(response.error_code) {
            return Err(Failure {
                reason: format!("FindCoordinator for {key}: {error}"),
                code: Some(error),
            });
        }
        let addr = format!("{}:{}", response.host.as_str(), response.port);
        let connection = super::connection::open(&addr, self.client.config())
            .await
            .map_err(|e| failure(format!("coordinator {addr}: {e}")))?;
        let connection = Arc::new(connection);
        self.coordinators
            .insert((key_type, key), Arc::clone(&connection));
        Ok(connection)
    }

    /// Sends `request` to a coordinator, retrying what Kafka's client retries, within
    /// `max.block.ms`. `error` reads the response's error code, if any.
    async fn call<R: Request>(
        &mut self,
        key_type: i8,
        key: Option<&str>,
        request: &R,
        error: impl Fn(&R::Response) -> Option<ResponseError>,
    ) -> Result<R::Response, TransactionError> {
        let deadline = super::now() + self.config.max_block;
        let mut backoff = self.config.retry_backoff;
        // An earlier attempt may have taken effect.
        let mut ambiguous = false;
        loop {
            let failure = match self.coordinator(key_type, key).await {
                Err(failure) => failure,
                Ok(connection) => match connection.send(request).await {
                    Ok(response) => match error(&response) {
                        None => return Ok(response),
                        Some(e) if is_fencing(e) => return Err(TransactionError::Fenced(e)),
                        Some(
                            e @ (ResponseError::NotCoordinator
                            | ResponseError::CoordinatorNotAvailable),
                        ) => {
                            self.forget(key_type, key, &connection);
                            Failure {
                                reason: e.to_string(),
                                code: Some(e),
                            }
                        }
                        Some(
                            e @ (ResponseError::CoordinatorLoadInProgress
                            | ResponseError::ConcurrentTransactions),
                        ) => Failure {
                            reason: e.to_string(),
                            code: Some(e),
                        },
                        Some(e) if e.is_retriable() => Failure {
                            reason: e.to_string(),
                            code: Some(e),
                        },
                        Some(e) if ambiguous => {
                            return Err(TransactionError::Unknown {
                                reason: format!(
                                    "{e} after an earlier attempt that may have taken effect"
                                ),
                                code: Some(e.code()),
                            })
                        }
                        Some(e) => return Err(TransactionError::Refused(e)),
                    },
                    Err(e) => {
                        ambiguous |= e.maybe_sent();
                        // An attempt that may be on its way still can reach the coordinator
                        // after a retry was answered, even after the next transaction began:
                        // a late EndTxn would end that one, a late TxnOffsetCommit commit its
                        // offsets with it. With transaction version 1 nothing else tells them
                        // apart (same producer id and epoch), so the next transaction starts
                        // at a new epoch, which fences them (librdkafka's KIP-890 workaround,
                        // without its fatal error; version 2 bumps every transaction).
                        if e.maybe_sent() {
                            self.bump_needed = true;
                        }
                        self.forget(key_type, key, &connection);
                        Failure {
                            reason: e.to_string(),
                            code: None,
                        }
                    }
                },
            };
            if super::now() + backoff >= deadline {
                let reason = format!(
                    "no answer within max.block.ms ({} ms): {}",
                    self.config.max_block.as_millis(),
                    failure.reason
                );
                return Err(if ambiguous {
                    TransactionError::Unknown {
                        reason,
                        code: failure.code.map(|c| c.code()),
                    }
                } else {
                    match failure.code {
                        Some(e) => TransactionError::Refused(e),
                        None => TransactionError::Unknown { reason, code: None },
                    }
                });
            }
            // The first AddPartitionsToTxn of a transaction meets CONCURRENT_TRANSACTIONS while
            // the previous transaction's markers are written; Java's client retries that one
            // after at most 20 ms (`ADD_PARTITIONS_RETRY_BACKOFF_MS`), so the next
            // transaction starts sooner.
            let first_add = failure.code == Some(ResponseError::ConcurrentTransactions)
                && R::KEY == AddPartitionsToTxnRequest::KEY
                && self.partitions.is_empty();
            let wait = if first_add {
                backoff.min(ADD_PARTITIONS_RETRY_BACKOFF)
            } else {
                backoff
            };
            tracing::debug!(transactional_id = %self.transactional_id, reason = %failure.reason,
                backoff_ms = wait.as_millis() as u64, "coordinator call retried");
            tokio::time::sleep(wait).await;
            // CONCURRENT_TRANSACTIONS clears as soon as the coordinator's write in flight
            // lands: retried at the base backoff, as Kafka's client does, or a replacement's
            // InitProducerId could keep missing the gaps of a busy id.
            if failure.code != Some(ResponseError::ConcurrentTransactions) {
                backoff = (backoff * 2).min(self.config.retry_backoff_max);
            }
        }
    }

    fn forget(&mut self, key_type: i8, key: Option<&str>, connection: &Arc<Connection>) {
        let key = key.unwrap_or(&self.transactional_id).to_string();
        if self
            .coordinators
            .get(&(key_type, key.clone()))
            .is_some_and(|c| Arc::ptr_eq(c, connection))
        {
            self.coordinators.remove(&(key_type, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_carry_the_kafka_error_code_as_a_value() {
        assert_eq!(
            TransactionOutcome::Fenced {
                error: ResponseError::ProducerFenced
            }
            .code(),
            Some(90)
        );
        assert_eq!(TransactionOutcome::Committed.code(), None);
        assert_eq!(
            TransactionError::Fenced(ResponseError::InvalidProducerEpoch).code(),
            Some(47)
        );
        assert!(TransactionError::Unknown {
            reason: "timed out".into(),
            code: None
        }
        .maybe_applied());
        assert!(!TransactionError::Refused(ResponseError::InvalidTxnState).maybe_applied());
    }

    #[test]
    fn both_fencing_codes_fence() {
        assert!(is_fencing(ResponseError::ProducerFenced));
        assert!(is_fencing(ResponseError::InvalidProducerEpoch));
        assert!(!is_fencing(ResponseError::ConcurrentTransactions));
    }
}
