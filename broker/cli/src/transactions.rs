//! `faultline transactions list|describe|describe-producers|find-hanging|abort`: Kafka's
//! `kafka-transactions.sh`, with its subcommands, options, columns and error messages.
//!
//! - `list`: ListTransactions to every broker (each answers for the transactional ids it
//!   coordinates).
//! - `describe`: DescribeTransactions to the id's coordinator (FindCoordinator key type 1).
//! - `describe-producers`: DescribeProducers to the partition's leader (or `--broker-id`).
//! - `find-hanging`: the open transactions of the partitions searched (DescribeProducers)
//!   whose last write is older than `--max-transaction-timeout` minutes and that no
//!   coordinator will end: their producer id has no transactional id (ListTransactions), the id
//!   is unknown (DescribeTransactions), or the id's transaction does not include the
//!   partition.
//! - `abort`: an ABORT marker for one producer on one partition, written by WriteTxnMarkers to
//!   the partition's leader, as Kafka's `Admin.abortTransaction` does. The producer is named
//!   by the start offset of its open transaction (looked up with DescribeProducers) or by
//!   `--producer-id --producer-epoch --coordinator-epoch`.
//!
//! The requests go over connections of their own speaking these APIs (the client crate does
//! not need them). Tables are printed as Kafka's tool prints them: each cell padded to its
//! column's width and followed by a tab. `--json` prints one object per row instead.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use broker::clock::{Clock, SystemClock};
use clap::{Args, Subcommand};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_producers_response::ProducerState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeTransactionsRequest, FindCoordinatorRequest,
    ListTransactionsRequest, MetadataRequest, ProducerId, TopicName, TransactionalId,
    WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use wire::connection::{Connection, ConnectionConfig};

use super::{connect_error, ClientArgs};

/// What these commands speak: FindCoordinator v1–3 (one key, with its type), Metadata from v1
/// (null topics = all), the three transaction admin APIs and WriteTxnMarkers v1.
const SPEAKS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::WriteTxnMarkers, 1, 1),
];

/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// How often a request answered "try again" (coordinator moving or loading) is retried, and
/// how long apart: about ten seconds in all, like an admin client's default timeout budget.
const RETRIES: u32 = 40;
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, Args)]
pub struct TransactionsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TransactionsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TransactionsCommand {
    /// List transactions (every broker answers for the transactional ids it coordinates).
    List {
        /// Only transactions running longer than this many milliseconds (KIP-994)
        #[arg(long, value_name = "MS")]
        duration_filter: Option<i64>,
    },
    /// Describe the state of an active transactional id.
    Describe {
        /// The transactional id
        #[arg(long, value_name = "ID")]
        transactional_id: String,
    },
    /// Describe the states of active producers for a topic partition.
    DescribeProducers {
        /// Describe the producer state on this replica instead of the leader
        #[arg(long, value_name = "ID")]
        broker_id: Option<i32>,
        /// Topic name
        #[arg(long)]
        topic: String,
        /// Partition number
        #[arg(long)]
        partition: i32,
    },
    /// Find hanging transactions: open on a partition, and no coordinator will end them.
    FindHanging {
        /// Broker id to search for hanging transactions (the partitions it has a replica of)
        #[arg(long, value_name = "ID")]
        broker_id: Option<i32>,
        /// Maximum transaction timeout in minutes to limit the scope of the search: only
        /// transactions whose last write is older than this are candidates
        #[arg(long, value_name = "MINUTES", default_value_t = 15)]
        max_transaction_timeout: i64,
        /// Topic name to limit the search to
        #[arg(long)]
        topic: Option<String>,
        /// Partition number (with --topic)
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Abort a hanging transaction: writes an abort marker to the partition's leader.
    Abort {
        /// Topic name
        #[arg(long)]
        topic: String,
        /// Partition number
        #[arg(long)]
        partition: i32,
        /// Start offset of the transaction to abort
        #[arg(long, value_name = "OFFSET")]
        start_offset: Option<i64>,
        /// Producer id (instead of --start-offset, with --producer-epoch and
        /// --coordinator-epoch)
        #[arg(long, value_name = "ID", conflicts_with = "start_offset")]
        producer_id: Option<i64>,
        /// Producer epoch
        #[arg(long, value_name = "EPOCH", conflicts_with = "start_offset")]
        producer_epoch: Option<i16>,
        /// Coordinator epoch
        #[arg(
            long,
            value_name = "EPOCH",
            conflicts_with = "start_offset",
            allow_negative_numbers = true
        )]
        coordinator_epoch: Option<i32>,
    },
}

/// Runs a `transactions` subcommand; returns the exit code.
pub async fn run(args: TransactionsArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run_inner(args, out).await {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

async fn run_inner(args: TransactionsArgs, out: &mut dyn Write) -> Result<(), String> {
    let json = args.client.json;
    // Bad input is refused before anything is sent.
    check_args(&args.command)?;
    let cluster = Cluster::connect(&args.client.bootstrap_server).await?;
    match args.command {
        TransactionsCommand::List { duration_filter } => {
            list(&cluster, duration_filter, json, out).await
        }
        TransactionsCommand::Describe { transactional_id } => {
            describe(&cluster, &transactional_id, json, out).await
        }
        TransactionsCommand::DescribeProducers {
            broker_id,
            topic,
            partition,
        } => describe_producers(&cluster, broker_id, &topic, partition, json, out).await,
        TransactionsCommand::FindHanging {
            broker_id,
            max_transaction_timeout,
            topic,
            partition,
        } => {
            find_hanging(
                &cluster,
                broker_id,
                max_transaction_timeout,
                topic,
                partition,
                json,
                out,
            )
            .await
        }
        TransactionsCommand::Abort {
            topic,
            partition,
            start_offset,
            producer_id,
            producer_epoch,
            coordinator_epoch,
        } => {
            let target = match (start_offset, producer_id) {
                (Some(offset), _) => AbortTarget::StartOffset(offset),
                (None, Some(producer_id)) => AbortTarget::Producer {
                    producer_id,
                    producer_epoch: producer_epoch.expect("checked"),
                    coordinator_epoch: coordinator_epoch.expect("checked"),
                },
                (None, None) => unreachable!("checked"),
            };
            abort(&cluster, &topic, partition, target, json, out).await
        }
    }
}

/// Kafka's checks of the arguments, with its messages.
fn check_args(command: &TransactionsCommand) -> Result<(), String> {
    let partition_ok = |p: i32| {
        if p < 0 {
            Err(format!("--partition must be 0 or more, got {p}"))
        } else {
            Ok(())
        }
    };
    match command {
        TransactionsCommand::List { duration_filter } => {
            if duration_filter.is_some_and(|d| d < 0) {
                return Err("--duration-filter must be 0 or more milliseconds".into());
            }
        }
        TransactionsCommand::Describe { transactional_id } => {
            if transactional_id.is_empty() {
                return Err("--transactional-id must not be empty".into());
            }
        }
        TransactionsCommand::DescribeProducers { partition, .. } => partition_ok(*partition)?,
        TransactionsCommand::FindHanging {
            broker_id,
            max_transaction_timeout,
            topic,
            partition,
        } => {
            if topic.is_none() && broker_id.is_none() {
                return Err(
                    "The `find-hanging` command requires either --topic or --broker-id \
                     to limit the scope of the search"
                        .into(),
                );
            }
            if partition.is_some() && topic.is_none() {
                return Err("The --partition argument requires --topic to be provided".into());
            }
            if let Some(p) = partition {
                partition_ok(*p)?;
            }
            if *max_transaction_timeout < 0 {
                return Err("--max-transaction-timeout must be 0 or more minutes".into());
            }
        }
        TransactionsCommand::Abort {
            partition,
            start_offset,
            producer_id,
            producer_epoch,
            coordinator_epoch,
            ..
        } => {
            partition_ok(*partition)?;
            if start_offset.is_none() && producer_id.is_none() {
                return Err("The transaction to abort must be identified either with \
                     --start-offset (for brokers on 3.0 or above) or with --producer-id, \
                     --producer-epoch, and --coordinator-epoch (for older brokers)"
                    .into());
            }
            if start_offset.is_some_and(|o| o < 0) {
                return Err("--start-offset must be 0 or more".into());
            }
            if start_offset.is_none() {
                if producer_epoch.is_none() {
                    return Err("Missing required argument --producer-epoch".into());
                }
                if coordinator_epoch.is_none() {
                    return Err("Missing required argument --coordinator-epoch".into());
                }
            }
        }
    }
    Ok(())
}

fn io(e: std::io::Error) -> String {
    format!("cannot write output: {e}")
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Kafka's name for an error code: `NOT_COORDINATOR`.
fn name(code: i16) -> String {
    client::admin::error_name(
        &ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
    )
}

/// Is `code` an answer to retry (the coordinator moving or loading)?
fn retriable(code: i16) -> bool {
    [
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::CoordinatorNotAvailable,
    ]
    .iter()
    .any(|e| e.code() == code)
}

/// A partition as Metadata describes it.
struct PartitionInfo {
    leader: i32,
    replicas: Vec<i32>,
}

/// The brokers and topics of the cluster, with connections made on demand.
struct Cluster {
    config: ConnectionConfig,
    brokers: BTreeMap<i32, String>,
    /// Topic → partition → its leader and replicas (internal topics left out, as Kafka's
    /// `listTopics` does).
    topics: BTreeMap<String, BTreeMap<i32, PartitionInfo>>,
    bootstrap: Connection,
}

impl Cluster {
    async fn connect(bootstrap: &str) -> Result<Cluster, String> {
        let config = ConnectionConfig {
            client_id: "faultline-transactions".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        };
        let mut last = String::from("no bootstrap server given");
        let mut connection = None;
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, config.clone(), SPEAKS).await {
                Ok(c) => {
                    connection = Some(c);
                    break;
                }
                Err(e) => last = connect_error(&e),
            }
        }
        let bootstrap = connection.ok_or(last)?;
        let version = bootstrap
            .version_for(ApiKey::Metadata)
            .map_err(|e| e.to_string())?;
        let mut request = MetadataRequest::default().with_topics(None::<Vec<MetadataRequestTopic>>);
        if version >= 4 {
            request = request.with_allow_auto_topic_creation(false);
        }
        let metadata = bootstrap.send(&request).await.map_err(|e| e.to_string())?;
        let brokers = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let topics = metadata
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.is_internal)
            .filter_map(|t| {
                let name = t.name.as_ref()?.to_string();
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        (
                            p.partition_index,
                            PartitionInfo {
                                leader: p.leader_id.0,
                                replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                            },
                        )
                    })
                    .collect();
                Some((name, partitions))
            })
            .collect();
        Ok(Cluster {
            config,
            brokers,
            topics,
            bootstrap,
        })
    }

    async fn node(&self, node: i32) -> Result<Connection, String> {
        let addr = self
            .brokers
            .get(&node)
            .ok_or_else(|| format!("broker {node} is not in the cluster's metadata"))?;
        Connection::connect(addr, self.config.clone(), SPEAKS)
            .await
            .map_err(|e| connect_error(&e))
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<&PartitionInfo, String> {
        let partitions = self
            .topics
            .get(topic)
            .ok_or_else(|| format!("topic {topic} does not exist"))?;
        partitions
            .get(&partition)
            .ok_or_else(|| format!("topic {topic} has no partition {partition}"))
    }

    /// The leader of a partition (or `broker_id`, when given).
    fn target(&self, topic: &str, partition: i32, broker_id: Option<i32>) -> Result<i32, String> {
        let info = self.partition(topic, partition)?;
        match broker_id {
            Some(id) => Ok(id),
            None if info.leader < 0 => Err(format!("{topic}-{partition} has no leader now")),
            None => Ok(info.leader),
        }
    }

    /// The coordinator of a transactional id, connected.
    async fn coordinator(&self, id: &str) -> Result<(i32, Connection), String> {
        let request = FindCoordinatorRequest::default()
            .with_key(str(id))
            .with_key_type(KEY_TYPE_TRANSACTION);
        let mut attempt = 0;
        loop {
            let response = self
                .bootstrap
                .send(&request)
                .await
                .map_err(|e| e.to_string())?;
            if response.error_code == 0 {
                let node = response.node_id.0;
                return Ok((node, self.node(node).await?));
            }
            attempt += 1;
            if !retriable(response.error_code) || attempt >= RETRIES {
                return Err(name(response.error_code));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
}

/// Prints a table as Kafka's `prettyPrintTable`: cells padded to the column's width, each
/// followed by a tab.
fn print_table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> Result<(), String> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (cell, w) in cells.zip(&widths) {
            s.push_str(&format!("{cell:<w$}\t"));
        }
        s
    };
    writeln!(out, "{}", line(&mut headers.iter().copied())).map_err(io)?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str))).map_err(io)?;
    }
    Ok(())
}

/// One transaction as ListTransactions lists it.
struct Listing {
    transactional_id: String,
    coordinator: i32,
    producer_id: i64,
    state: String,
}

/// ListTransactions on every broker, each retried while it is loading.
async fn list_transactions(
    cluster: &Cluster,
    producer_ids: &[i64],
    duration_filter: Option<i64>,
) -> Result<Vec<Listing>, String> {
    let mut listings = Vec::new();
    for &node in cluster.brokers.keys() {
        let connection = cluster.node(node).await?;
        let version = connection
            .version_for(ApiKey::ListTransactions)
            .map_err(|e| e.to_string())?;
        let mut request = ListTransactionsRequest::default()
            .with_producer_id_filters(producer_ids.iter().map(|p| ProducerId(*p)).collect());
        if let Some(duration) = duration_filter {
            if version < 1 {
                return Err(format!(
                    "broker {node} does not support --duration-filter (ListTransactions v1)"
                ));
            }
            request = request.with_duration_filter(duration);
        }
        let mut attempt = 0;
        let response = loop {
            let response = connection.send(&request).await.map_err(|e| e.to_string())?;
            attempt += 1;
            if response.error_code == 0 {
                break response;
            }
            if !retriable(response.error_code) || attempt >= RETRIES {
                return Err(format!("broker {node}: {}", name(response.error_code)));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        };
        for t in response.transaction_states {
            listings.push(Listing {
                transactional_id: t.transactional_id.to_string(),
                coordinator: node,
                producer_id: t.producer_id.0,
                state: t.transaction_state.to_string(),
            });
        }
    }
    Ok(listings)
}

async fn list(
    cluster: &Cluster,
    duration_filter: Option<i64>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let listings = list_transactions(cluster, &[], duration_filter)
        .await
        .map_err(|e| format!("Failed to list transactions: {e}"))?;
    if json {
        for l in &listings {
            let value = json!({
                "transactional_id": l.transactional_id,
                "coordinator": l.coordinator,
                "producer_id": l.producer_id,
                "state": l.state,
            });
            writeln!(out, "{value}").map_err(io)?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listings
        .iter()
        .map(|l| {
            vec![
                l.transactional_id.clone(),
                l.coordinator.to_string(),
                l.producer_id.to_string(),
                l.state.clone(),
            ]
        })
        .collect();
    print_table(
        out,
        &[
            "TransactionalId",
            "Coordinator",
            "ProducerId",
            "TransactionState",
        ],
        &rows,
    )
}

/// One transactional id as DescribeTransactions describes it.
struct Description {
    coordinator: i32,
    producer_id: i64,
    producer_epoch: i16,
    state: String,
    timeout_ms: i32,
    /// `None` when no transaction is in flight (-1 on the wire).
    start_ms: Option<i64>,
    partitions: BTreeSet<(String, i32)>,
}

/// DescribeTransactions of one id at its coordinator; `Ok(None)` for
/// TRANSACTIONAL_ID_NOT_FOUND.
async fn describe_transaction(cluster: &Cluster, id: &str) -> Result<Option<Description>, String> {
    let mut attempt = 0;
    loop {
        let (coordinator, connection) = cluster.coordinator(id).await?;
        let request = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(str(id))]);
        let response = connection.send(&request).await.map_err(|e| e.to_string())?;
        let state = response
            .transaction_states
            .into_iter()
            .find(|s| s.transactional_id.as_str() == id)
            .ok_or_else(|| "the coordinator did not answer for the id".to_string())?;
        if state.error_code == ResponseError::TransactionalIdNotFound.code() {
            return Ok(None);
        }
        if state.error_code != 0 {
            attempt += 1;
            if retriable(state.error_code) && attempt < RETRIES {
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
            return Err(name(state.error_code));
        }
        let partitions = state
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect();
        return Ok(Some(Description {
            coordinator,
            producer_id: state.producer_id.0,
            producer_epoch: state.producer_epoch,
            state: state.transaction_state.to_string(),
            timeout_ms: state.transaction_timeout_ms,
            start_ms: (state.transaction_start_time_ms >= 0)
                .then_some(state.transaction_start_time_ms),
            partitions,
        }));
    }
}

async fn describe(
    cluster: &Cluster,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let failed =
        |e: String| format!("Failed to describe transaction state of transactional-id `{id}`: {e}");
    let d = describe_transaction(cluster, id)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            failed(client::admin::error_name(
                &ResponseError::TransactionalIdNotFound,
            ))
        })?;
    let now = SystemClock.now_ms();
    let duration = d.start_ms.map(|start| now - start);
    let partitions: Vec<String> = d
        .partitions
        .iter()
        .map(|(t, p)| format!("{t}-{p}"))
        .collect();
    if json {
        let value = json!({
            "coordinator_id": d.coordinator,
            "transactional_id": id,
            "producer_id": d.producer_id,
            "producer_epoch": d.producer_epoch,
            "state": d.state,
            "transaction_timeout_ms": d.timeout_ms,
            "current_transaction_start_time_ms": d.start_ms,
            "transaction_duration_ms": duration,
            "topic_partitions": d.partitions.iter()
                .map(|(t, p)| json!({"topic": t, "partition": p}))
                .collect::<Vec<_>>(),
        });
        return writeln!(out, "{value}").map_err(io);
    }
    let none = |v: Option<i64>| v.map_or_else(|| "None".to_string(), |v| v.to_string());
    print_table(
        out,
        &[
            "CoordinatorId",
            "TransactionalId",
            "ProducerId",
            "ProducerEpoch",
            "TransactionState",
            "TransactionTimeoutMs",
            "CurrentTransactionStartTimeMs",
            "TransactionDurationMs",
            "TopicPartitions",
        ],
        &[vec![
            d.coordinator.to_string(),
            id.to_string(),
            d.producer_id.to_string(),
            d.producer_epoch.to_string(),
            d.state,
            d.timeout_ms.to_string(),
            none(d.start_ms),
            none(duration),
            partitions.join(","),
        ]],
    )
}

/// DescribeProducers of `partitions`, each sent to `broker_id` or else its leader; the
/// producers of each partition, or the first error.
async fn describe_producers_of(
    cluster: &Cluster,
    broker_id: Option<i32>,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), Vec<ProducerState>>, String> {
    let mut by_node: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (topic, partition) in partitions {
        let node = cluster.target(topic, *partition, broker_id)?;
        by_node
            .entry(node)
            .or_default()
            .entry(topic.clone())
            .or_default()
            .push(*partition);
    }
    let mut found = BTreeMap::new();
    for (node, topics) in by_node {
        let connection = cluster.node(node).await?;
        let request = DescribeProducersRequest::default().with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicRequest::default()
                        .with_name(TopicName(str(&topic)))
                        .with_partition_indexes(partitions)
                })
                .collect(),
        );
        let response = connection.send(&request).await.map_err(|e| e.to_string())?;
        for topic in response.topics {
            for p in topic.partitions {
                if p.error_code != 0 {
                    return Err(format!(
                        "{}-{}: {}{}",
                        topic.name.as_str(),
                        p.partition_index,
                        name(p.error_code),
                        p.error_message
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ));
                }
                found.insert(
                    (topic.name.to_string(), p.partition_index),
                    p.active_producers,
                );
            }
        }
    }
    Ok(found)
}

fn producer_json(p: &ProducerState) -> serde_json::Value {
    json!({
        "producer_id": p.producer_id.0,
        "producer_epoch": p.producer_epoch,
        "latest_coordinator_epoch": p.coordinator_epoch,
        "last_sequence": p.last_sequence,
        "last_timestamp": p.last_timestamp,
        "current_transaction_start_offset":
            (p.current_txn_start_offset >= 0).then_some(p.current_txn_start_offset),
    })
}

async fn describe_producers(
    cluster: &Cluster,
    broker_id: Option<i32>,
    topic: &str,
    partition: i32,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let on = match broker_id {
        Some(id) => format!("broker {id}"),
        None => "leader".to_string(),
    };
    let failed = |e: String| {
        format!("Failed to describe producers for partition {topic}-{partition} on {on}: {e}")
    };
    let key = (topic.to_string(), partition);
    let mut found = describe_producers_of(cluster, broker_id, std::slice::from_ref(&key))
        .await
        .map_err(failed)?;
    let producers = found.remove(&key).unwrap_or_default();
    if json {
        for p in &producers {
            writeln!(out, "{}", producer_json(p)).map_err(io)?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = producers
        .iter()
        .map(|p| {
            vec![
                p.producer_id.0.to_string(),
                p.producer_epoch.to_string(),
                p.coordinator_epoch.to_string(),
                p.last_sequence.to_string(),
                p.last_timestamp.to_string(),
                if p.current_txn_start_offset >= 0 {
                    p.current_txn_start_offset.to_string()
                } else {
                    "None".to_string()
                },
            ]
        })
        .collect();
    print_table(
        out,
        &[
            "ProducerId",
            "ProducerEpoch",
            "LatestCoordinatorEpoch",
            "LastSequence",
            "LastTimestamp",
            "CurrentTransactionStartOffset",
        ],
        &rows,
    )
}

#[allow(clippy::too_many_arguments)]
async fn find_hanging(
    cluster: &Cluster,
    broker_id: Option<i32>,
    max_timeout_minutes: i64,
    topic: Option<String>,
    partition: Option<i32>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    // The partitions to search: the one named, a topic's, or every one `broker_id` holds.
    let searched: Vec<(String, i32)> = match (&topic, partition) {
        (Some(t), Some(p)) => vec![(t.clone(), p)],
        _ => {
            let topics: Vec<&String> = match &topic {
                Some(t) => {
                    cluster
                        .partition(t, 0)
                        .map_err(|e| format!("Failed to describe 1 topics: {e}"))?;
                    vec![t]
                }
                None => cluster.topics.keys().collect(),
            };
            let mut searched = Vec::new();
            for t in topics {
                for (p, info) in &cluster.topics[t] {
                    if broker_id.is_none_or(|b| info.replicas.contains(&b)) {
                        searched.push((t.clone(), *p));
                    }
                }
            }
            searched
        }
    };
    let max_timeout_ms = max_timeout_minutes.saturating_mul(60_000);
    let producers = describe_producers_of(cluster, broker_id, &searched)
        .await
        .map_err(|e| {
            format!(
                "Failed to describe producers for {} partitions on broker {}: {e}",
                searched.len(),
                broker_id.map_or_else(|| "leaders".to_string(), |b| b.to_string())
            )
        })?;
    let now = SystemClock.now_ms();
    // Open transactions whose last write is older than the longest a transaction may run.
    let mut candidates: Vec<((String, i32), ProducerState)> = Vec::new();
    for (tp, states) in producers {
        for p in states {
            if p.current_txn_start_offset >= 0 && now - p.last_timestamp > max_timeout_ms {
                candidates.push((tp.clone(), p));
            }
        }
    }
    let mut hanging = Vec::new();
    if !candidates.is_empty() {
        let producer_ids: BTreeSet<i64> = candidates.iter().map(|(_, p)| p.producer_id.0).collect();
        let ids: Vec<i64> = producer_ids.iter().copied().collect();
        let listings = list_transactions(cluster, &ids, None).await.map_err(|e| {
            format!(
                "Failed to list transactions for {} producers: {e}",
                ids.len()
            )
        })?;
        let transactional_ids: BTreeMap<i64, String> = listings
            .into_iter()
            .filter(|l| producer_ids.contains(&l.producer_id))
            .map(|l| (l.producer_id, l.transactional_id))
            .collect();
        let mut descriptions: BTreeMap<String, Option<Description>> = BTreeMap::new();
        for id in transactional_ids.values() {
            let d = describe_transaction(cluster, id)
                .await
                .map_err(|e| format!("Failed to describe 1 transactions: {e}"))?;
            descriptions.insert(id.clone(), d);
        }
        for (tp, p) in candidates {
            // Still hanging unless the coordinator's transaction of the id includes the
            // partition (it will write the marker itself then).
            let covered = transactional_ids
                .get(&p.producer_id.0)
                .and_then(|id| descriptions.get(id))
                .and_then(Option::as_ref)
                .is_some_and(|d| d.partitions.contains(&tp));
            if !covered {
                hanging.push((tp, p));
            }
        }
    }
    if json {
        for ((topic, partition), p) in &hanging {
            let value = json!({
                "topic": topic,
                "partition": partition,
                "producer_id": p.producer_id.0,
                "producer_epoch": p.producer_epoch,
                "coordinator_epoch": p.coordinator_epoch,
                "start_offset": p.current_txn_start_offset,
                "last_timestamp": p.last_timestamp,
                "duration_minutes": (now - p.last_timestamp) / 60_000,
            });
            writeln!(out, "{value}").map_err(io)?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = hanging
        .iter()
        .map(|((topic, partition), p)| {
            vec![
                topic.clone(),
                partition.to_string(),
                p.producer_id.0.to_string(),
                p.producer_epoch.to_string(),
                p.coordinator_epoch.to_string(),
                p.current_txn_start_offset.to_string(),
                p.last_timestamp.to_string(),
                ((now - p.last_timestamp) / 60_000).to_string(),
            ]
        })
        .collect();
    print_table(
        out,
        &[
            "Topic",
            "Partition",
            "ProducerId",
            "ProducerEpoch",
            "CoordinatorEpoch",
            "StartOffset",
            "LastTimestamp",
            "Duration(min)",
        ],
        &rows,
    )
}

enum AbortTarget {
    StartOffset(i64),
    Producer {
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    },
}

async fn abort(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    target: AbortTarget,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let tp = format!("{topic}-{partition}");
    let (producer_id, producer_epoch, coordinator_epoch) = match target {
        AbortTarget::Producer {
            producer_id,
            producer_epoch,
            coordinator_epoch,
        } => (producer_id, producer_epoch, coordinator_epoch),
        AbortTarget::StartOffset(offset) => {
            let key = (topic.to_string(), partition);
            let mut found = describe_producers_of(cluster, None, std::slice::from_ref(&key))
                .await
                .map_err(|e| {
                    format!("Failed to validate producer state for partition {tp}: {e}")
                })?;
            let producer = found
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.current_txn_start_offset == offset)
                .ok_or_else(|| {
                    format!(
                        "Could not find any open transactions starting at offset {offset} on \
                         partition {tp}"
                    )
                })?;
            let epoch = i16::try_from(producer.producer_epoch)
                .map_err(|_| format!("producer epoch {} out of range", producer.producer_epoch))?;
            (producer.producer_id.0, epoch, producer.coordinator_epoch)
        }
    };
    // A producer no marker was ever written for has coordinator epoch -1: 0 is at most any
    // leader epoch, as Kafka's tool reasons.
    let coordinator_epoch = coordinator_epoch.max(0);
    let spec = format!(
        "AbortTransactionSpec(topicPartition={tp}, producerId={producer_id}, \
         producerEpoch={producer_epoch}, coordinatorEpoch={coordinator_epoch})"
    );
    let failed = |e: String| format!("Failed to abort transaction {spec}: {e}");
    let leader = cluster.target(topic, partition, None).map_err(failed)?;
    let connection = cluster.node(leader).await.map_err(failed)?;
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_transaction_result(false)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(TopicName(str(topic)))
                .with_partition_indexes(vec![partition])])]);
    let response = connection
        .send(&request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let code = response
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == partition)
        .map(|p| p.error_code)
        .ok_or_else(|| failed("the leader did not answer for the partition".into()))?;
    if code != 0 {
        return Err(failed(name(code)));
    }
    // Kafka's tool prints nothing on success; --json says what was aborted.
    if json {
        let value = json!({
            "topic": topic,
            "partition": partition,
            "producer_id": producer_id,
            "producer_epoch": producer_epoch,
            "coordinator_epoch": coordinator_epoch,
            "aborted": true,
        });
        writeln!(out, "{value}").map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_each_cell_to_its_column_and_ends_it_with_a_tab_as_kafka_prints_it() {
        let mut out = Vec::new();
        print_table(
            &mut out,
            &["Topic", "Partition"],
            &[
                vec!["payments".into(), "0".into()],
                vec!["t".into(), "12".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Topic   \tPartition\t\npayments\t0        \t\nt       \t12       \t\n"
        );
    }

    #[test]
    fn find_hanging_needs_a_topic_or_a_broker_and_a_partition_needs_its_topic() {
        let find = |broker_id, topic: Option<&str>, partition| TransactionsCommand::FindHanging {
            broker_id,
            max_transaction_timeout: 15,
            topic: topic.map(str::to_string),
            partition,
        };
        assert!(check_args(&find(None, None, None))
            .unwrap_err()
            .contains("requires either --topic or --broker-id"));
        assert!(check_args(&find(Some(1), None, Some(0)))
            .unwrap_err()
            .contains("--partition argument requires --topic"));
        assert!(check_args(&find(None, Some("t"), Some(-1))).is_err());
        assert!(check_args(&find(Some(1), None, None)).is_ok());
        assert!(check_args(&find(None, Some("t"), Some(0))).is_ok());
    }

    #[test]
    fn abort_needs_a_start_offset_or_the_whole_producer() {
        let abort = |start_offset, producer_id, producer_epoch, coordinator_epoch| {
            check_args(&TransactionsCommand::Abort {
                topic: "t".into(),
                partition: 0,
                start_offset,
                producer_id,
                producer_epoch,
                coordinator_epoch,
            })
        };
        assert!(abort(None, None, None, None)
            .unwrap_err()
            .contains("--start-offset (for brokers on 3.0 or above)"));
        assert_eq!(
            abort(None, Some(7), None, Some(0)).unwrap_err(),
            "Missing required argument --producer-epoch"
        );
        assert_eq!(
            abort(None, Some(7), Some(0), None).unwrap_err(),
            "Missing required argument --coordinator-epoch"
        );
        assert!(abort(None, Some(7), Some(0), Some(-1)).is_ok());
        assert!(abort(Some(3), None, None, None).is_ok());
        assert!(abort(Some(-3), None, None, None).is_err());
    }
}
