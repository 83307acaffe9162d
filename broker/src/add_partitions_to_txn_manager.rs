//! The partition leader's side of KIP-890 part 1 (Kafka's `AddPartitionsToTxnManager`): before
//! it takes the first transactional batch of a producer on a partition, the leader asks the
//! transactional id's coordinator whether the partition is in the producer's ongoing
//! transaction, with an AddPartitionsToTxn v4+ `verify_only` entry. Without it, a produce held
//! in the network until after its transaction ended would open a transaction on the partition
//! that no coordinator knows of: a hanging transaction holding the last stable offset back for
//! good (read_committed consumers stall).
//!
//! The verifications for one coordinator are batched, as Kafka batches them per node: one
//! request in flight per coordinator, on a connection kept open between requests; what arrives
//! meanwhile waits and goes together in the next request. At most one entry per transactional
//! id waits: a newer one replaces an older one of the same epoch (which is answered
//! NETWORK_EXCEPTION: a client retry took its place) or of an older epoch (INVALID_PRODUCER_EPOCH),
//! and an entry older than the one waiting is answered INVALID_PRODUCER_EPOCH at once.
//!
//! The answer is the partitions *not* verified, with Kafka's codes as the manager maps them for
//! a produce below v11: PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH, TRANSACTION_ABORTABLE
//! INVALID_TXN_STATE, no answer (unreachable, timed out, disconnected) NETWORK_EXCEPTION. A
//! coordinator that does not speak v4 is not asked (Kafka proceeds unverified then: a broker
//! of an older version during an upgrade). The produce turns the retriable ones into
//! NOT_ENOUGH_REPLICAS ([`crate::protocol::errors::unverified`]).
//!
//! Requests go through the runtime's network (`wire::Connection`), so the simulator runs them
//! like any other broker-to-broker request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;
use wire::{Connection, ConnectionConfig, RequestError};

use crate::controller::image::ClusterImage;
use crate::controller::NodeId;
use crate::txn::coordinator::machine::TopicPartition;
use crate::txn::coordinator::records::TRANSACTION_STATE_TOPIC;

/// The brokers' form of AddPartitionsToTxn.
const SPEAKS: &[(ApiKey, i16, i16)] = &[(ApiKey::AddPartitionsToTxn, 4, 5)];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one verification request may take (Kafka's inter-broker `request.timeout.ms` is
/// 30 s; the produce waiting on it bounds it by its own timeout too).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions not verified, each with the code its produce answers from.
pub type Unverified = BTreeMap<TopicPartition, ResponseError>;

/// Where a transactional id's coordinator is, as this broker's image shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorNode {
    /// This broker: the leader checks with its own coordinator directly.
    Local,
    /// Another broker, at `addr`.
    Remote { node: NodeId, addr: String },
    /// `__transaction_state` or its partition has no live leader now (Kafka's
    /// COORDINATOR_NOT_AVAILABLE).
    Unavailable,
}

/// The coordinator of the ids placed in `__transaction_state` partition `state_partition`:
/// its leader, if alive (Kafka's `getTransactionCoordinator`).
pub fn coordinator_of(image: &ClusterImage, state_partition: i32, this: NodeId) -> CoordinatorNode {
    let Some(assignment) = image
        .partition(TRANSACTION_STATE_TOPIC, state_partition)
        .filter(|a| a.is_online())
    else {
        return CoordinatorNode::Unavailable;
    };
    if assignment.leader == this {
        return CoordinatorNode::Local;
    }
    match image.brokers.get(&assignment.leader).filter(|b| !b.fenced) {
        Some(broker) => CoordinatorNode::Remote {
            node: broker.id,
            addr: format!("{}:{}", broker.endpoint.host, broker.endpoint.port),
        },
        None => CoordinatorNode::Unavailable,
    }
}

/// A coordinator's code for a partition as a produce answers it (Kafka's
/// `AddPartitionsToTxnHandler`, for a produce below v11, which is all this broker speaks):
/// producers expect INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED, and cannot take
/// TRANSACTION_ABORTABLE, which becomes INVALID_TXN_STATE.
pub fn for_produce(code: ResponseError) -> ResponseError {
    match code {
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ResponseError::TransactionAbortable => ResponseError::InvalidTxnState,
        other => other,
    }
}

/// Every partition of `partitions`, unverified with `code`.
fn all(partitions: &BTreeSet<TopicPartition>, code: ResponseError) -> Unverified {
    partitions.iter().map(|tp| (tp.clone(), code)).collect()
}

/// One transaction waiting for the next request to its coordinator.
struct Waiting {
    producer_id: i64,
    producer_epoch: i16,
    partitions: BTreeSet<TopicPartition>,
    reply: oneshot::Sender<Unverified>,
}

/// One coordinator's queue.
#[derive(Default)]
struct NodeQueue {
    /// Where the coordinator listens, as the latest caller's image said.
    addr: String,
    /// By transactional id: at most one each.
    waiting: BTreeMap<String, Waiting>,
    /// A sender task is running for this node (one request in flight at most).
    sending: bool,
    /// Kept between requests; reopened when closed or when the address changed.
    connection: Option<Arc<Connection>>,
}

pub struct AddPartitionsToTxnManager {
    client_id: String,
    nodes: Mutex<BTreeMap<NodeId, NodeQueue>>,
}

/// Clears a node's `sending` flag if its sender task ends without doing so (the runtime
/// dropped it mid-request), so the next verification starts another.
struct SenderRunning {
    manager: Arc<AddPartitionsToTxnManager>,
    node: NodeId,
    finished: bool,
}

impl Drop for SenderRunning {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(queue) = self.manager.nodes().get_mut(&self.node) {
                queue.sending = false;
            }
        }
    }
}

impl AddPartitionsToTxnManager {
    pub fn new(node_id: NodeId) -> Arc<AddPartitionsToTxnManager> {
        Arc::new(AddPartitionsToTxnManager {
            client_id: format!("faultline-txn-verifier-{node_id}"),
            nodes: Mutex::new(BTreeMap::new()),
        })
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, NodeQueue>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks coordinator `node` at `addr` whether `partitions` are in the transaction of
    /// `transactional_id`'s producer `producer_id` at `producer_epoch`; returns those that are
    /// not, with their codes (empty: all verified).
    pub async fn verify(
        self: &Arc<Self>,
        node: NodeId,
        addr: String,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: BTreeSet<TopicPartition>,
    ) -> Unverified {
        let (reply, answer) = oneshot::channel();
        let fallback = all(&partitions, ResponseError::NetworkException);
        let start_sender = {
            let mut nodes = self.nodes();
            let queue = nodes.entry(node).or_default();
            queue.addr = addr;
            if let Some(waiting) = queue.waiting.get(transactional_id) {
                if waiting.producer_epoch > producer_epoch {
                    return all(&partitions, ResponseError::InvalidProducerEpoch);
                }
                let replaced = queue.waiting.remove(transactional_id).expect("just seen");
                let code = if replaced.producer_epoch < producer_epoch {
                    ResponseError::InvalidProducerEpoch
                } else {
                    ResponseError::NetworkException
                };
                let _ = replaced.reply.send(all(&replaced.partitions, code));
            }
            queue.waiting.insert(
                transactional_id.to_string(),
                Waiting {
                    producer_id,
                    producer_epoch,
                    partitions,
                    reply,
                },
            );
            !std::mem::replace(&mut queue.sending, true)
        };
        if start_sender {
            tokio::spawn(Arc::clone(self).send_to(node));
        }
        answer.await.unwrap_or(fallback)
    }

    /// The sender of one node: a request with everything waiting, then the next, until
    /// nothing waits.
    async fn send_to(self: Arc<Self>, node: NodeId) {
        let mut running = SenderRunning {
            manager: Arc::clone(&self),
            node,
            finished: false,
        };
        loop {
            let (addr, batch, connection) = {
                let mut nodes = self.nodes();
                let queue = nodes.get_mut(&node).expect("a sending node has its queue");
                if queue.waiting.is_empty() {
                    // Under the lock a caller checks `sending` under: none is stranded.
                    queue.sending = false;
                    running.finished = true;
                    return;
                }
                (
                    queue.addr.clone(),
                    std::mem::take(&mut queue.waiting),
                    queue.connection.clone(),
                )
            };
            let (mut answers, connection) = self.exchange(&addr, connection, &batch).await;
            if let Some(queue) = self.nodes().get_mut(&node) {
                queue.connection = connection;
            }
            for (id, waiting) in batch {
                let answer = answers
                    .remove(&id)
                    .unwrap_or_else(|| all(&waiting.partitions, ResponseError::NetworkException));
                let _ = waiting.reply.send(answer);
            }
        }
    }

    /// One request with `batch`; the answers by transactional id, and the connection to keep.
    async fn exchange(
        &self,
        addr: &str,
        connection: Option<Arc<Connection>>,
        batch: &BTreeMap<String, Waiting>,
    ) -> (BTreeMap<String, Unverified>, Option<Arc<Connection>>) {
        let unanswered = |code: ResponseError| -> BTreeMap<String, Unverified> {
            batch
                .iter()
                .map(|(id, w)| (id.clone(), all(&w.partitions, code)))
                .collect()
        };
        let connection = match connection.filter(|c| !c.is_closed() && c.addr() == addr) {
            Some(c) => c,
            None => {
                let config = ConnectionConfig {
                    client_id: self.client_id.clone(),
                    connect_timeout: CONNECT_TIMEOUT,
                    request_timeout: REQUEST_TIMEOUT,
                };
                match Connection::connect(addr, config, SPEAKS).await {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::debug!(addr, %e, "cannot reach a transaction coordinator to verify");
                        return (unanswered(ResponseError::NetworkException), None);
                    }
                }
            }
        };
        let request = request_for(batch);
        let response = match connection.send(&request).await {
            Ok(response) => response,
            Err(RequestError::UnsupportedVersion { .. }) => {
                tracing::warn!(
                    addr,
                    "the transaction coordinator does not speak AddPartitionsToTxn v4: \
                     transactional batches are taken unverified"
                );
                return (BTreeMap::new(), Some(connection));
            }
            Err(e) => {
                tracing::debug!(addr, %e, "verification request failed");
                return (unanswered(ResponseError::NetworkException), None);
            }
        };
        (answers(&response, batch), Some(connection))
    }
}

/// The request for `batch`: one `verify_only` entry per transactional id.
fn request_for(batch: &BTreeMap<String, Waiting>) -> AddPartitionsToTxnRequest {
    let transactions = batch
        .iter()
        .map(|(id, w)| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in &w.partitions {
                by_topic.entry(&tp.topic).or_default().push(tp.partition);
            }
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
                .with_producer_id(ProducerId(w.producer_id))
                .with_producer_epoch(w.producer_epoch)
                .with_verify_only(true)
                .with_topics(
                    by_topic
                        .into_iter()
                        .map(|(topic, partitions)| {
                            AddPartitionsToTxnTopic::default()
                                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnRequest::default().with_transactions(transactions)
}

/// The coordinator's answers, mapped as Kafka's `AddPartitionsToTxnHandler` maps them. A
/// transaction the response leaves out is unanswered (NETWORK_EXCEPTION: the client retries).
fn answers(
    response: &AddPartitionsToTxnResponse,
    batch: &BTreeMap<String, Waiting>,
) -> BTreeMap<String, Unverified> {
    if response.error_code != 0 {
        // The client must not see CLUSTER_AUTHORIZATION_FAILED: the verification did not
        // complete, and says so.
        let code = match ResponseError::try_from_code(response.error_code) {
            Some(ResponseError::ClusterAuthorizationFailed) | None => {
                ResponseError::InvalidTxnState
            }
            Some(code) => code,
        };
        return batch
            .iter()
            .map(|(id, w)| (id.clone(), all(&w.partitions, code)))
            .collect();
    }
    let mut answers = BTreeMap::new();
    for result in &response.results_by_transaction {
        let id = result.transactional_id.as_str().to_string();
        if !batch.contains_key(&id) {
            continue;
        }
        let mut unverified = Unverified::new();
        for topic in &result.topic_results {
            for p in &topic.results_by_partition {
                let Some(code) = ResponseError::try_from_code(p.partition_error_code) else {
                    continue;
                };
                unverified.insert(
                    TopicPartition::new(topic.name.as_str(), p.partition_index),
                    for_produce(code),
                );
            }
        }
        answers.insert(id, unverified);
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
    };

    fn waiting(partitions: &[(&str, i32)]) -> Waiting {
        Waiting {
            producer_id: 7,
            producer_epoch: 0,
            partitions: partitions
                .iter()
                .map(|(t, p)| TopicPartition::new(t, *p))
                .collect(),
            reply: oneshot::channel().0,
        }
    }

    fn result(id: &str, topic: &str, codes: &[(i32, ResponseError)]) -> AddPartitionsToTxnResult {
        AddPartitionsToTxnResult::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.into())))
            .with_topic_results(vec![AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_results_by_partition(
                    codes
                        .iter()
                        .map(|(p, c)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(c.code())
                        })
                        .collect(),
                )])
    }

    #[test]
    fn the_coordinators_answers_are_mapped_for_a_produce_as_kafka_maps_them() {
        let batch: BTreeMap<String, Waiting> = [
            ("a".to_string(), waiting(&[("t", 0), ("t", 1), ("t", 2)])),
            ("b".to_string(), waiting(&[("u", 0)])),
        ]
        .into_iter()
        .collect();
        let request = request_for(&batch);
        assert!(request.transactions.iter().all(|t| t.verify_only));
        assert_eq!(request.transactions[0].topics[0].partitions, vec![0, 1, 2]);
        let response =
            AddPartitionsToTxnResponse::default().with_results_by_transaction(vec![result(
                "a",
                "t",
                &[
                    (0, ResponseError::TransactionAbortable),
                    (1, ResponseError::ProducerFenced),
                    (2, ResponseError::ConcurrentTransactions),
                ],
            )]);
        let answered = answers(&response, &batch);
        let tp = |p| TopicPartition::new("t", p);
        assert_eq!(
            answered["a"],
            [
                (tp(0), ResponseError::InvalidTxnState),
                (tp(1), ResponseError::InvalidProducerEpoch),
                (tp(2), ResponseError::ConcurrentTransactions),
            ]
            .into_iter()
            .collect()
        );
        assert!(
            !answered.contains_key("b"),
            "left out: unanswered, not verified"
        );
        let refused = answers(
            &AddPartitionsToTxnResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code()),
            &batch,
        );
        assert_eq!(
            refused["b"][&TopicPartition::new("u", 0)],
            ResponseError::InvalidTxnState
        );
    }

    /// Real sockets: a coordinator that accepts connections and never answers.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn a_newer_verification_of_the_same_id_replaces_the_one_waiting_as_kafka_does() {
        // While a request to the coordinator is in flight, what comes next waits, at most one
        // entry per transactional id. The bugs: two entries for one id in one request (the
        // coordinator's answer for the id would be given to one caller only, the other
        // hanging), and an older epoch's verification allowed to replace a newer one.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let _accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let manager = AddPartitionsToTxnManager::new(1);
        let tps = |p: i32| BTreeSet::from([TopicPartition::new("t", p)]);
        let verify = |id: &'static str, epoch: i16, p: i32| {
            let manager = Arc::clone(&manager);
            let addr = addr.clone();
            tokio::spawn(async move { manager.verify(2, addr, id, 7, epoch, tps(p)).await })
        };
        // Answered at once or never (the coordinator is silent): a bound, not a timing.
        let answered = |call: tokio::task::JoinHandle<Unverified>| async move {
            tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .expect("answered without the coordinator")
                .unwrap()
        };
        // In flight (stalled in the connection's ApiVersions), then one waiting for "x".
        let in_flight = verify("x", 3, 0);
        while !manager
            .nodes()
            .get(&2)
            .is_some_and(|q| q.sending && q.waiting.is_empty())
        {
            tokio::task::yield_now().await;
        }
        let waiting = verify("x", 3, 1);
        while !manager.nodes()[&2].waiting.contains_key("x") {
            tokio::task::yield_now().await;
        }
        // Older epoch: refused at once, the waiting one stays.
        assert_eq!(
            answered(verify("x", 2, 2)).await,
            all(&tps(2), ResponseError::InvalidProducerEpoch)
        );
        // Same epoch (a client's retry): it takes the place of the waiting one, which is
        // answered NETWORK_EXCEPTION (retriable).
        let retry = verify("x", 3, 1);
        assert_eq!(
            answered(waiting).await,
            all(&tps(1), ResponseError::NetworkException)
        );
        // Newer epoch: the one it replaces was fenced.
        let newer = verify("x", 4, 1);
        assert_eq!(
            answered(retry).await,
            all(&tps(1), ResponseError::InvalidProducerEpoch)
        );
        {
            let nodes = manager.nodes();
            let queue = &nodes[&2];
            assert_eq!(queue.waiting.len(), 1, "one entry per id");
            assert_eq!(queue.waiting["x"].producer_epoch, 4);
        }
        in_flight.abort();
        newer.abort();
    }
}
