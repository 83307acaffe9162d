//! The consumer: assign partitions, seek, poll. No group membership (yet): positions live in
//! the consumer and are lost with it.
//!
//! A poll sends one Fetch per leader (long-polling up to `max_wait` for `min_bytes`), decodes
//! the returned batches, skips control batches and records before the position, and advances
//! the position past the last whole batch. Compressed batches are refused with
//! [`PollError::Decode`] (this client decodes only uncompressed batches).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{Client, MetadataError};
use super::connection::RequestError;
use super::records::{records_in, shared_batches, DecodeError, Header, RawBatch};
use broker::log::batch::TimestampType;

/// Where a partition without a valid position starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Report [`PollError::NoPosition`] / [`PollError::OffsetOutOfRange`] instead.
    None,
}

/// Consumer settings, with Kafka's names in the docs.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// `fetch.max.wait.ms` (default 500 ms).
    pub max_wait: Duration,
    /// `fetch.min.bytes` (default 1).
    pub min_bytes: i32,
    /// `fetch.max.bytes` (default 50 MiB).
    pub max_bytes: i32,
    /// `max.partition.fetch.bytes` (default 1 MiB).
    pub partition_max_bytes: i32,
    /// `auto.offset.reset` (default latest).
    pub auto_offset_reset: OffsetReset,
    /// `isolation.level` (default read_uncommitted).
    pub isolation_level: IsolationLevel,
    /// `client.rack` (KIP-392, default none): sent with every fetch; a leader with the
    /// rack-aware replica selector then names an in-sync replica in this rack to read from,
    /// which this consumer does until that replica answers an error (then the leader again).
    pub client_rack: Option<String>,
}

/// `isolation.level`: which records a fetch returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Everything below the high watermark, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Only below the last stable offset, without the records of aborted transactions.
    ReadCommitted,
}

impl IsolationLevel {
    /// The wire value (Fetch v4+, ListOffsets v2+).
    fn code(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            isolation_level: IsolationLevel::ReadUncommitted,
            client_rack: None,
        }
    }
}

/// Where to move a partition's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTo {
    Offset(i64),
    Earliest,
    Latest,
}

/// A record read from a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Shared by every record of its topic in one poll: a poll returns hundreds of records of
    /// one topic, and a name copied into each was the client's largest allocation per record.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Why a seek failed.
#[derive(Debug, thiserror::Error)]
pub enum SeekError {
    #[error("topic \"{0}\" does not exist")]
    UnknownTopic(String),
    #[error("partition {topic}-{partition} is not assigned to this consumer")]
    NotAssigned { topic: String, partition: i32 },
    #[error("partition {topic}-{partition}: {error}")]
    Broker {
        topic: String,
        partition: i32,
        error: ResponseError,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Why a poll failed. Transient leader and connection trouble is retried by the next poll and
/// reported only when no partition returned anything.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("no partitions assigned")]
    NoAssignment,
    #[error("topic \"{0}\" does not exist")]
    UnknownTopic(String),
    #[error("partition {topic}-{partition} has no position and auto.offset.reset is none")]
    NoPosition { topic: String, partition: i32 },
    #[error("offset {offset} is out of range for partition {topic}-{partition}")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("partition {topic}-{partition}: {error}")]
    Decode {
        topic: String,
        partition: i32,
        error: DecodeError,
    },
    #[error("partition {topic}-{partition}: {error}")]
    Broker {
        topic: String,
        partition: i32,
        error: ResponseError,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

#[derive(Clone, Debug, Default)]
struct PartitionState {
    position: Option<i64>,
    high_watermark: Option<i64>,
    /// The last stable offset the last fetch reported (Fetch v4+ always reports one).
    last_stable_offset: Option<i64>,
    /// KIP-392: the replica the leader named to read from (`preferred_read_replica`); `None`:
    /// the leader.
    read_replica: Option<i32>,
    /// The last fetch answered KAFKA_STORAGE_ERROR: the leader's log is offline. Polls keep
    /// retrying it (Kafka's consumer does); tools that must say so ask
    /// [`Consumer::offline_partitions`].
    offline: bool,
}

/// A consumer of explicitly assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assigned: BTreeMap<(String, i32), PartitionState>,
}

fn code(error_code: i16) -> ResponseError {
    ResponseError::try_from_code(error_code).unwrap_or(ResponseError::Unknown(error_code))
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            assigned: BTreeMap::new(),
        }
    }

    /// Replaces the assignment. Partitions that stay keep their positions.
    /// Assigned partitions whose last fetch answered KAFKA_STORAGE_ERROR (their log is offline
    /// on the leader), in order.
    pub fn offline_partitions(&self) -> Vec<(String, i32)> {
        self.assigned
            .iter()
            .filter(|(_, state)| state.offline)
            .map(|(key, _)| key.clone())
            .collect()
    }

    pub fn assign(&mut self, partitions: impl IntoIterator<Item = (String, i32)>) {
        let mut next = BTreeMap::new();
        for key in partitions {
            let state = self.assigned.remove(&key).unwrap_or_default();
            next.insert(key, state);
        }
        self.assigned = next;
    }

    /// Assigns every partition of `topic`.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<Vec<i32>, SeekError> {
        let meta = self
            .client
            .refresh_topic(topic, false)
            .await
            .map_err(|e| seek_error(topic, -1, e))?;
        let partitions: Vec<i32> = meta.partitions.iter().map(|p| p.index).collect();
        let mut all: Vec<(String, i32)> = self
            .assigned
            .keys()
            .filter(|(t, _)| t != topic)
            .cloned()
            .collect();
        all.extend(partitions.iter().map(|&p| (topic.to_string(), p)));
        self.assign(all);
        Ok(partitions)
    }

    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.assigned.keys().cloned().collect()
    }

    /// The next offset to read, once known.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.assigned
            .get(&(topic.to_string(), partition))
            .and_then(|s| s.position)
    }

    /// The high watermark seen by the last fetch of this partition.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.assigned
            .get(&(topic.to_string(), partition))
            .and_then(|s| s.high_watermark)
    }

    /// The last stable offset seen by the last fetch of this partition.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.assigned
            .get(&(topic.to_string(), partition))
            .and_then(|s| s.last_stable_offset)
    }

    pub fn isolation_level(&self) -> IsolationLevel {
        self.config.isolation_level
    }

    /// Moves the position; returns the offset it now points at.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: i32,
        to: SeekTo,
    ) -> Result<i64, SeekError> {
        let key = (topic.to_string(), partition);
        if !self.assigned.contains_key(&key) {
            return Err(SeekError::NotAssigned {
                topic: topic.to_string(),
                partition,
            });
        }
        let offset = match to {
            SeekTo::Offset(offset) => offset,
            SeekTo::Earliest => self.list_offset(topic, partition, -2).await?,
            SeekTo::Latest => self.list_offset(topic, partition, -1).await?,
        };
        if let Some(state) = self.assigned.get_mut(&key) {
            state.position = Some(offset);
        }
        Ok(offset)
    }

    /// ListOffsets for one partition: -2 earliest, -1 latest (high watermark), else the first
    /// offset at or after a timestamp.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64, SeekError> {
        let connection = self
            .client
            .leader(topic, partition)
            .await
            .map_err(|e| seek_error(topic, partition, e))?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            // read_committed's latest is the LSO (ListOffsets v2+; v1 knows only 0).
            .with_isolation_level(self.config.isolation_level.code())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let response = connection.send(&request).await?;
        let result = response
            .topics
            .iter()
            .filter(|t| t.name.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition);
        match result {
            Some(p) if p.error_code == 0 => Ok(p.offset),
            Some(p) => {
                let error = code(p.error_code);
                if matches!(
                    error,
                    ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition
                ) {
                    self.client.invalidate(topic);
                }
                Err(SeekError::Broker {
                    topic: topic.to_string(),
                    partition,
                    error,
                })
            }
            None => Err(SeekError::Broker {
                topic: topic.to_string(),
                partition,
                error: ResponseError::UnknownServerError,
            }),
        }
    }

    async fn reset(
        &mut self,
        topic: &str,
        partition: i32,
        bad_offset: Option<i64>,
    ) -> Result<(), PollError> {
        let to = match self.config.auto_offset_reset {
            OffsetReset::Earliest => SeekTo::Earliest,
            OffsetReset::Latest => SeekTo::Latest,
            OffsetReset::None => {
                return Err(match bad_offset {
                    Some(offset) => PollError::OffsetOutOfRange {
                        topic: topic.to_string(),
                        partition,
                        offset,
                    },
                    None => PollError::NoPosition {
                        topic: topic.to_string(),
                        partition,
                    },
                })
            }
        };
        match self.seek(topic, partition, to).await {
            Ok(_) => Ok(()),
            Err(SeekError::UnknownTopic(t)) => Err(PollError::UnknownTopic(t)),
            Err(SeekError::Request(e)) => Err(PollError::Request(e)),
            Err(SeekError::Broker {
                topic,
                partition,
                error,
            }) => Err(PollError::Broker {
                topic,
                partition,
                error,
            }),
            Err(SeekError::NotAssigned { .. }) => Ok(()),
        }
    }

    /// Fetches from every assigned partition; returns the records in partition order, each
    /// partition's in offset order (possibly none, after `max_wait`).
    ///
    /// Cancel-safe: positions move past the returned records only when the poll returns them,
    /// so a poll dropped at an await (or one that fails) loses no record; the next poll fetches
    /// them again. (A reset by `auto.offset.reset` may have happened already.)
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, PollError> {
        if self.assigned.is_empty() {
            return Err(PollError::NoAssignment);
        }
        let unpositioned: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, partition) in unpositioned {
            self.reset(&topic, partition, None).await?;
        }
        // Group by leader.
        let mut by_leader: BTreeMap<i32, Vec<(String, i32, i64)>> = BTreeMap::new();
        for ((topic, partition), state) in &self.assigned {
            let meta = match self.client.shared_topic_metadata(topic, false).await {
                Ok(meta) => meta,
                Err(MetadataError::UnknownTopic(t)) => return Err(PollError::UnknownTopic(t)),
                Err(MetadataError::Broker { error, .. }) => {
                    return Err(PollError::Broker {
                        topic: topic.clone(),
                        partition: *partition,
                        error,
                    })
                }
                Err(MetadataError::Request(e)) => return Err(PollError::Request(e)),
            };
            let leader = meta
                .partitions
                .iter()
                .find(|p| p.index == *partition)
                .map_or(-1, |p| p.leader);
            if let Some(position) = state.position {
                by_leader
                    .entry(state.read_replica.unwrap_or(leader))
                    .or_default()
                    .push((topic.clone(), *partition, position));
            }
        }
        let mut records = Vec::new();
        let mut advanced: Vec<((String, i32), i64)> = Vec::new();
        let mut last_error = None;
        for (leader, partitions) in by_leader {
            let max_wait = if records.is_empty() {
                self.config.max_wait
            } else {
                Duration::ZERO
            };
            match self
                .fetch_from(leader, &partitions, max_wait, &mut records, &mut advanced)
                .await
            {
                Ok(()) => {}
                Err(PollError::Request(e)) => {
                    for (topic, partition, _) in &partitions {
                        self.client.invalidate(topic);
                        // An unreachable preferred replica: back to the leader.
                        if let Some(state) = self.assigned.get_mut(&(topic.clone(), *partition)) {
                            state.read_replica = None;
                        }
                    }
                    last_error = Some(PollError::Request(e));
                }
                Err(e) => return Err(e),
            }
        }
        // After the last await: from here on the records are the caller's.
        for (key, next) in advanced {
            if let Some(state) = self.assigned.get_mut(&key) {
                state.position = Some(next);
            }
        }
        match last_error {
            Some(e) if records.is_empty() => Err(e),
            _ => Ok(records),
        }
    }

    async fn fetch_from(
        &mut self,
        leader: i32,
        partitions: &[(String, i32, i64)],
        max_wait: Duration,
        out: &mut Vec<ConsumerRecord>,
        advanced: &mut Vec<((String, i32), i64)>,
    ) -> Result<(), PollError> {
        let connection = if leader < 0 {
            for (topic, _, _) in partitions {
                self.client.invalidate(topic);
            }
            return Ok(());
        } else {
            self.client
                .connection(leader)
                .await
                .map_err(RequestError::from)?
        };
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (topic, partition, position) in partitions {
            let fetch_partition = FetchPartition::default()
                .with_partition(*partition)
                .with_fetch_offset(*position)
                .with_partition_max_bytes(self.config.partition_max_bytes);
            match topics.iter_mut().find(|t| t.topic.as_str() == topic) {
                Some(t) => t.partitions.push(fetch_partition),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![fetch_partition]),
                ),
            }
        }
        let max_wait_ms = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(self.config.min_bytes)
            .with_max_bytes(self.config.max_bytes)
            .with_isolation_level(self.config.isolation_level.code())
            .with_rack_id(StrBytes::from_string(
                self.config.client_rack.clone().unwrap_or_default(),
            ))
            .with_topics(topics);
        let timeout = connection.request_timeout() + max_wait;
        let response = connection.send_with_timeout(&request, timeout).await?;
        if response.error_code != 0 {
            return Err(PollError::Broker {
                topic: String::new(),
                partition: -1,
                error: code(response.error_code),
            });
        }
        for topic_response in &response.responses {
            let topic: Arc<str> = Arc::from(topic_response.topic.as_str());
            for data in &topic_response.partitions {
                let partition = data.partition_index;
                let key = (topic.to_string(), partition);
                let Some(position) = self.assigned.get(&key).and_then(|s| s.position) else {
                    continue;
                };
                let from_replica = self
                    .assigned
                    .get(&key)
                    .is_some_and(|s| s.read_replica.is_some());
                if data.error_code != 0 && from_replica {
                    // KIP-392: a replica that cannot serve (out of the ISR, behind, gone) sends
                    // the consumer back to the leader, which decides again; an offset out of
                    // range is judged there, not reset on a follower's word.
                    if let Some(state) = self.assigned.get_mut(&key) {
                        state.read_replica = None;
                    }
                    continue;
                }
                if data.preferred_read_replica.0 >= 0 {
                    if let Some(state) = self.assigned.get_mut(&key) {
                        state.read_replica = Some(data.preferred_read_replica.0);
                    }
                    continue;
                }
                if data.error_code != 0 {
                    let error = code(data.error_code);
                    match error {
                        ResponseError::OffsetOutOfRange => {
                            self.reset(&topic, partition, Some(position)).await?
                        }
                        e if e.is_retriable() || e == ResponseError::KafkaStorageError => {
                            if e == ResponseError::KafkaStorageError {
                                if let Some(state) = self.assigned.get_mut(&key) {
                                    state.offline = true;
                                }
                            }
                            self.client.invalidate(&topic)
                        }
                        e => {
                            return Err(PollError::Broker {
                                topic: topic.to_string(),
                                partition,
                                error: e,
                            })
                        }
                    }
                    continue;
                }
                let state = self.assigned.get_mut(&key).expect("checked above");
                state.offline = false;
                if data.high_watermark >= 0 {
                    state.high_watermark = Some(data.high_watermark);
                }
                if data.last_stable_offset >= 0 {
                    state.last_stable_offset = Some(data.last_stable_offset);
                }
                let mut aborted = AbortedTransactions::new(
                    self.config.isolation_level,
                    data.aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset)),
                );
                let Some(bytes) = &data.records else { continue };
                // Room for every record at once, rather than growing (and copying) per batch.
                out.reserve(records_in(bytes));
                let mut next = position;
                let decode_error = |error| PollError::Decode {
                    topic: topic.to_string(),
                    partition,
                    error,
                };
                for batch in shared_batches(bytes) {
                    // A malformed batch fails the whole poll, as it did when the set was
                    // decoded before any record was taken: the records taken are dropped.
                    let batch = batch.map_err(decode_error)?;
                    // Every batch moves the aborted-transaction state, those before the
                    // position too (their markers close transactions).
                    let hidden = aborted.hides(&batch);
                    let last_offset = batch.header.last_offset();
                    if last_offset < next || hidden {
                        // Not taken, but its records are checked as every batch's are.
                        batch.for_each_record(drop).map_err(decode_error)?;
                        if last_offset < next {
                            continue;
                        }
                    } else {
                        // Straight into the records returned, no vector per batch between.
                        batch
                            .for_each_record(|r| {
                                if r.offset >= next {
                                    out.push(ConsumerRecord {
                                        topic: topic.clone(),
                                        partition,
                                        offset: r.offset,
                                        timestamp_ms: r.timestamp_ms,
                                        timestamp_type: r.timestamp_type,
                                        key: r.key,
                                        value: r.value,
                                        headers: r.headers,
                                    });
                                }
                            })
                            .map_err(decode_error)?;
                    }
                    next = last_offset + 1;
                }
                advanced.push((key, next));
            }
        }
        Ok(())
    }
}

/// The aborted transactions of one fetched partition, as Kafka's consumer skips them under
/// read_committed (`CompletedFetch.nextFetchedRecord`): from an aborted transaction's first
/// offset on, its producer's transactional batches are dropped until its abort marker.
struct AbortedTransactions {
    /// (first offset, producer id), ascending; empty under read_uncommitted.
    pending: std::collections::VecDeque<(i64, i64)>,
    /// Producers inside an aborted transaction at the current batch.
    open: std::collections::BTreeSet<i64>,
}

impl AbortedTransactions {
    fn new(
        isolation: IsolationLevel,
        aborted: impl IntoIterator<Item = (i64, i64)>,
    ) -> AbortedTransactions {
        let mut pending: Vec<(i64, i64)> = match isolation {
            IsolationLevel::ReadCommitted => aborted.into_iter().map(|(p, o)| (o, p)).collect(),
            IsolationLevel::ReadUncommitted => Vec::new(),
        };
        pending.sort_unstable();
        AbortedTransactions {
            pending: pending.into(),
            open: std::collections::BTreeSet::new(),
        }
    }

    /// Whether `batch`'s records are hidden: a control batch (markers carry no user records),
    /// or a transactional batch of a producer inside an aborted transaction. Call once per
    /// batch, in offset order.
    fn hides(&mut self, batch: &RawBatch<'_>) -> bool {
        let header = &batch.header;
        while let Some(&(first, producer)) = self.pending.front() {
            if first > header.last_offset() {
                break;
            }
            self.open.insert(producer);
            self.pending.pop_front();
        }
        if batch.is_control() {
            if is_abort_marker(batch) {
                self.open.remove(&header.producer_id);
            }
            return true;
        }
        header.is_transactional() && self.open.contains(&header.producer_id)
    }
}

/// Whether a control batch is an ABORT marker: its record's key is (version: i16, type: i16),
/// type 0 (Kafka's `ControlRecordType`, `broker::txn::marker`).
fn is_abort_marker(batch: &RawBatch<'_>) -> bool {
    let mut first = None;
    // A malformed marker fails the poll when its records are checked.
    let _ = batch.for_each_record(|r| {
        first.get_or_insert(r);
    });
    first
        .and_then(|r| r.key)
        .is_some_and(|key| key.len() >= 4 && i16::from_be_bytes([key[2], key[3]]) == 0)
}

fn seek_error(topic: &str, partition: i32, e: MetadataError) -> SeekError {
    match e {
        MetadataError::UnknownTopic(t) => SeekError::UnknownTopic(t),
        MetadataError::Broker { error, .. } => SeekError::Broker {
            topic: topic.to_string(),
            partition,
            error,
        },
        MetadataError::Request(e) => SeekError::Request(e),
    }
}

#[cfg(test)]
mod tests {
    use broker::log::batch::builder::{self, Record};
    use broker::log::batch::{self as wire_batch, TRANSACTIONAL_BIT};
    use broker::txn::marker::{self, ControlType, Marker};

    use super::*;

    /// A batch of one record with value `value` at `offset`, by `producer` (-1: none),
    /// transactional when `producer` is set.
    fn data(offset: i64, producer: i64, value: u8) -> Vec<u8> {
        let mut batch = builder::batch(&[Record {
            key: None,
            value: Some(vec![value]),
            timestamp_ms: 0,
        }]);
        if producer >= 0 {
            batch = builder::with_attributes(batch, TRANSACTIONAL_BIT);
            batch = builder::with_producer(batch, producer, 0, 0);
        }
        wire_batch::set_base_offset(&mut batch, offset);
        batch
    }

    fn end(offset: i64, producer: i64, control: ControlType) -> Vec<u8> {
        let marker = Marker {
            control,
            coordinator_epoch: 0,
        };
        let mut batch = marker::encode(producer, 0, marker, 0);
        wire_batch::set_base_offset(&mut batch, offset);
        batch
    }

    /// The values a consumer with `isolation` returns from this log, the fetch reporting
    /// producer 7's transaction from offset 1 aborted.
    fn visible(isolation: IsolationLevel) -> Vec<u8> {
        let log: Vec<u8> = [
            data(0, -1, 0),
            data(1, 7, 1),
            data(2, 8, 2),
            data(3, 7, 3),
            end(4, 7, ControlType::Abort),
            end(5, 8, ControlType::Commit),
            data(6, 7, 6),
            end(7, 7, ControlType::Commit),
        ]
        .concat();
        let log = Bytes::from(log);
        let mut aborted = AbortedTransactions::new(isolation, [(7, 1)]);
        let mut values = Vec::new();
        for batch in shared_batches(&log) {
            let batch = batch.unwrap();
            if !aborted.hides(&batch) {
                batch
                    .for_each_record(|r| values.push(r.value.unwrap()[0]))
                    .unwrap();
            }
        }
        values
    }

    #[test]
    fn read_committed_skips_an_aborted_transaction_up_to_its_abort_marker_and_no_further() {
        // Producer 7's records at 1 and 3 are aborted; its next transaction (6) committed.
        assert_eq!(visible(IsolationLevel::ReadCommitted), vec![0, 2, 6]);
    }

    #[test]
    fn read_uncommitted_returns_aborted_records_too_but_never_markers() {
        assert_eq!(
            visible(IsolationLevel::ReadUncommitted),
            vec![0, 1, 2, 3, 6]
        );
    }
}
