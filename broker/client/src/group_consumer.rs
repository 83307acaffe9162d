//! Group consumption: subscribe to topics, let the group coordinator share their partitions
//! among the members, poll, and commit offsets — Kafka's classic group protocol with eager
//! rebalancing, as the Java `KafkaConsumer` does it.
//!
//! # Membership
//!
//! [`GroupConsumer::poll`] drives the member: it finds the coordinator (FindCoordinator), joins
//! (JoinGroup; a first join without a member id is told to rejoin with one, KIP-394), and, when
//! the coordinator elects it leader, computes everyone's assignment with the configured
//! [`Assignor`] from the members' `ConsumerProtocolSubscription`s and hands them out in
//! SyncGroup. Every member then reads its `ConsumerProtocolAssignment`, fetches the committed
//! offsets of its partitions (OffsetFetch; a partition without one starts at
//! `auto.offset.reset`) and fetches records through an inner [`Consumer`].
//!
//! JoinGroup and SyncGroup run in a task of their own, retried with backoff until the member
//! holds a stable generation: a JoinGroup is answered only once every member rejoined, so
//! `poll` waits for that task at most `fetch.max_wait` and otherwise returns no records, as
//! Java's `poll(timeout)` does. One task can therefore poll several consumers in turn.
//!
//! Another task heartbeats every `heartbeat_interval` while the member holds a stable
//! generation. What it hears decides the next poll: REBALANCE_IN_PROGRESS → rejoin;
//! ILLEGAL_GENERATION → rejoin, the partitions are lost; UNKNOWN_MEMBER_ID → rejoin under a new
//! member id, the partitions are lost; FENCED_INSTANCE_ID → every later poll fails;
//! NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or a lost connection → find the coordinator
//! again. When `poll` has not been called for `max_poll_interval`, the task leaves the group
//! (LeaveGroup; a static member only forgets its membership), as Kafka's heartbeat thread
//! does. The tasks use only `tokio::spawn` and `tokio::time`, so the simulator replays them
//! exactly.
//!
//! Rebalancing is eager: before it rejoins, a member commits its positions (with auto-commit
//! on) and hands all its partitions to [`RebalanceListener::on_partitions_revoked`] — or to
//! `on_partitions_lost` when its generation is already gone and a commit could only fail. After
//! the SyncGroup, `on_partitions_assigned` gets the new assignment (possibly empty). The
//! coordinator's connection is the consumer's own, not the client's pooled one, so a JoinGroup
//! parked for the whole rebalance never holds up fetches.
//!
//! # Commit outcomes
//!
//! Every commit — [`GroupConsumer::commit_sync`], [`GroupConsumer::commit_offsets`], the handle
//! of [`GroupConsumer::commit_async`], and every auto-commit ([`GroupConsumer::take_auto_commits`],
//! [`CloseReport`]) — ends in exactly one [`CommitOutcome`]. Like the producer's send outcomes,
//! the simulator's checkers rely on the three kinds meaning precisely this:
//!
//! - [`CommitOutcome::Committed`]: the coordinator answered OffsetCommit with no error for every
//!   partition (Faultline answers once the offset record is durable in `__consumer_offsets`).
//! - [`CommitOutcome::CommittedAfterAmbiguous`]`{earlier}`: committed the same way, by a retry
//!   after an attempt that ended ambiguously. That attempt's request may still reach the
//!   coordinator later — after commits that follow this one — and set these offsets again.
//! - [`CommitOutcome::Failed`]`{error}`: **definitely not applied**. Reported when the request
//!   was never sent ([`CommitError::NotSent`]: no coordinator found, connection refused, the
//!   consumer holds no stable generation ([`CommitError::NotInGroup`]) or is closed), or when
//!   the coordinator refused it with a code it returns before writing anything:
//!   ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID,
//!   OFFSET_METADATA_TOO_LARGE, INVALID_COMMIT_OFFSET_SIZE, UNKNOWN_TOPIC_OR_PARTITION,
//!   COORDINATOR_LOAD_IN_PROGRESS, authorization ([`CommitError::Rejected`]).
//!   The one `Failed` that applied something is [`CommitError::PartlyCommitted`]: the listed
//!   partitions were committed, and the others definitely not (a refusal that names single
//!   partitions, such as OFFSET_METADATA_TOO_LARGE).
//! - [`CommitOutcome::Unknown`]`{reason}`: **may or may not** have been applied. Reported when
//!   an attempt was sent and then timed out, lost its connection, got an undecodable response,
//!   or got a code the coordinator may return after appending the offset record:
//!   COORDINATOR_NOT_AVAILABLE (Kafka and Faultline both answer it when the append's
//!   durability failed), NOT_COORDINATOR (Kafka's coordinator answers it for an offset record
//!   it appended and then could not replicate because it lost the `__consumer_offsets`
//!   partition — NOT_LEADER_OR_FOLLOWER or KAFKA_STORAGE_ERROR from the append), REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
//!   KAFKA_STORAGE_ERROR, NETWORK_EXCEPTION, UNKNOWN_SERVER_ERROR or a code this client does not
//!   know — and no retry ended in `Committed`. A retry refused after an earlier ambiguous
//!   attempt stays `Unknown` ([`CommitUnknownReason::RetriedAfterAmbiguous`]).
//!
//! [`CommitError::code`] and [`CommitUnknownReason::code`] give the Kafka error code behind an
//! outcome as a value.
//!
//! Retriable problems (no coordinator, NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, a lost
//! connection, a timeout) are retried with backoff until `api_timeout` (Java's
//! `default.api.timeout.ms`); a retry re-sends the same offsets (of the partitions not yet
//! committed), so it cannot move a committed offset anywhere the first attempt would not have.
//! Commits run one at a time, in the order they were made (sync, async and auto-commits share
//! one queue), so a later commit is never overtaken by an earlier one — except by an attempt
//! that ended ambiguously: a request the broker had not read yet when its connection was
//! given up may still be applied after the commits that followed it. A checker must treat an
//! `Unknown` commit, and the earlier attempts of a commit that ended `Committed` after a retry,
//! as possibly applied at any later moment.
//!
//! Commits use the generation the consumer holds when the commit is made. A consumer that
//! kept an old generation across a rebalance (a "zombie", see
//! [`GroupConsumer::commit_with_generation`]) is refused with ILLEGAL_GENERATION. A commit
//! refusal tells the member about its membership as a heartbeat's would, and it acts on it the
//! same way (Java's consumer does too): when a commit of the generation it still holds is
//! refused with UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION its partitions are lost and the next
//! poll rejoins, and REBALANCE_IN_PROGRESS makes the next poll rejoin.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::admin::OffsetAndMetadata;
use super::cluster::{Client, MetadataError};
use super::connection::{Connection, RequestError};
use super::consumer::{Consumer, ConsumerConfig, ConsumerRecord, PollError, SeekError, SeekTo};
#[cfg(test)]
use broker::group::consumer_protocol::SUBSCRIPTION_VERSION;
pub use broker::group::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};

/// The protocol type of Kafka consumers' groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The `ConsumerProtocolSubscription` version this client writes: v1 adds owned partitions
/// (always empty here: an eager member gives up everything before it rejoins).
/// FindCoordinator key type of a group.
const KEY_TYPE_GROUP: i8 = 0;
/// Java's `JOIN_GROUP_TIMEOUT_LAPSE`: a JoinGroup may wait the whole rebalance timeout.
const JOIN_GROUP_TIMEOUT_LAPSE: Duration = Duration::from_secs(5);
/// Backoff doubles up to this.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// How the leader shares partitions among the members: Kafka's two classic assignors, with
/// their exact results (so members of other clients using the same name agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// `range` (Kafka's `RangeAssignor`, the default): per topic, the members subscribed to it
    /// in order each take a contiguous range; the first `partitions % members` take one more.
    Range,
    /// `roundrobin` (Kafka's `RoundRobinAssignor`): every subscribed partition, topics by name
    /// and partitions by index, dealt in turn to the members in order, skipping members not
    /// subscribed to the partition's topic.
    RoundRobin,
}

impl Assignor {
    /// The protocol name in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Every member's partitions (each list sorted; members with none get an empty list).
    /// Topics missing from `partitions_per_topic` (unknown to the leader) are not assigned.
    ///
    /// Members are ordered as Kafka's `MemberInfo` orders them: static members (with a
    /// `group.instance.id`) first, by instance id, then the others by member id.
    pub fn assign(
        self,
        members: &[MemberSubscription],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<(String, i32)>> {
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| member_order(a, b));
        let mut out: BTreeMap<String, Vec<(String, i32)>> = members
            .iter()
            .map(|m| (m.member_id.clone(), Vec::new()))
            .collect();
        match self {
            Assignor::Range => {
                let mut per_topic: BTreeMap<&str, Vec<&MemberSubscription>> = BTreeMap::new();
                for member in &sorted {
                    let topics: BTreeSet<&str> = member.topics.iter().map(String::as_str).collect();
                    for topic in topics {
                        per_topic.entry(topic).or_default().push(member);
                    }
                }
                for (topic, consumers) in per_topic {
                    let Some(&count) = partitions_per_topic.get(topic) else {
                        continue;
                    };
                    let count = count.max(0) as usize;
                    let per_member = count / consumers.len();
                    let extra = count % consumers.len();
                    for (i, member) in consumers.iter().enumerate() {
                        let start = per_member * i + i.min(extra);
                        let length = per_member + usize::from(i < extra);
                        let list = out.get_mut(&member.member_id).expect("every member listed");
                        list.extend((start..start + length).map(|p| (topic.to_string(), p as i32)));
                    }
                }
            }
            Assignor::RoundRobin => {
                let topics: BTreeSet<&str> = sorted
                    .iter()
                    .flat_map(|m| m.topics.iter().map(String::as_str))
                    .collect();
                let mut next = 0usize;
                for topic in topics {
                    let Some(&count) = partitions_per_topic.get(topic) else {
                        continue;
                    };
                    for partition in 0..count.max(0) {
                        // Some member subscribes to `topic`, so this ends within one lap.
                        while !sorted[next].topics.iter().any(|t| t == topic) {
                            next = (next + 1) % sorted.len();
                        }
                        let list = out
                            .get_mut(&sorted[next].member_id)
                            .expect("every member listed");
                        list.push((topic.to_string(), partition));
                        next = (next + 1) % sorted.len();
                    }
                }
            }
        }
        for list in out.values_mut() {
            list.sort();
        }
        out
    }
}

fn member_order(a: &MemberSubscription, b: &MemberSubscription) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    }
}

/// One member's subscription, as the leader reads it from JoinGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSubscription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<String>,
}

/// Group consumer settings, with Kafka's names in the docs.
#[derive(Clone, Debug)]
pub struct GroupConsumerConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: set for a static member (KIP-345), which the coordinator keeps
    /// across restarts within the session timeout and which never sends LeaveGroup.
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms` (default 45 s): without a heartbeat for this long, the coordinator
    /// removes the member.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms` (default 300 s), sent as JoinGroup's rebalance timeout: how long
    /// the group waits for members to rejoin, and how long a member may go without polling
    /// before its heartbeat task leaves the group.
    pub max_poll_interval: Duration,
    /// `heartbeat.interval.ms` (default 3 s).
    pub heartbeat_interval: Duration,
    /// `partition.assignment.strategy` (default range).
    pub assignor: Assignor,
    /// `enable.auto.commit` (default true): commit positions every `auto_commit_interval`
    /// from `poll`, before revoking partitions, and on close.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms` (default 5 s).
    pub auto_commit_interval: Duration,
    /// `retry.backoff.ms` (default 100 ms), doubling up to 1 s.
    pub retry_backoff: Duration,
    /// `default.api.timeout.ms` (default 60 s): how long a commit or `committed` keeps
    /// retrying retriable errors. (A rebalance retries until it succeeds; a poll waits for it
    /// at most `fetch.max_wait`.)
    pub api_timeout: Duration,
    /// Fetch settings and `auto.offset.reset` (for partitions without a committed offset).
    pub fetch: ConsumerConfig,
}

impl GroupConsumerConfig {
    /// Kafka's defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConsumerConfig {
        GroupConsumerConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            max_poll_interval: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(3),
            assignor: Assignor::Range,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(100),
            api_timeout: Duration::from_secs(60),
            fetch: ConsumerConfig::default(),
        }
    }
}

/// Who a commit claims to come from: Java's `ConsumerGroupMetadata`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadata {
    pub group_id: String,
    /// -1 when the member holds no generation.
    pub generation_id: i32,
    /// Empty before the first join and after the membership was lost.
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// Hooks around a rebalance, called from inside [`GroupConsumer::poll`] (and `close`,
/// `unsubscribe`). Partition lists are sorted.
pub trait RebalanceListener: Send {
    /// The member is about to rejoin (or leave) and gives up these partitions. With
    /// auto-commit on, their positions were committed just before. Not called for an empty
    /// list.
    fn on_partitions_revoked(&mut self, _partitions: &[(String, i32)]) {}
    /// The rebalance completed; this is the member's whole assignment (possibly empty).
    fn on_partitions_assigned(&mut self, _partitions: &[(String, i32)]) {}
    /// The membership was already gone (session expired, fenced, stale generation): others
    /// may own these partitions now, and nothing was committed. Defaults to
    /// `on_partitions_revoked`, as in Kafka.
    fn on_partitions_lost(&mut self, partitions: &[(String, i32)]) {
        self.on_partitions_revoked(partitions)
    }
}

/// What happened to one commit. See the module docs for the exact contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// Committed by a retry; an earlier, ambiguous attempt may still be applied later.
    CommittedAfterAmbiguous {
        earlier: CommitUnknownReason,
    },
    Failed {
        error: CommitError,
    },
    Unknown {
        reason: CommitUnknownReason,
    },
}

impl CommitOutcome {
    pub fn is_committed(&self) -> bool {
        matches!(
            self,
            CommitOutcome::Committed | CommitOutcome::CommittedAfterAmbiguous { .. }
        )
    }
}

/// Why a commit was definitely not applied (all of it, except for `PartlyCommitted`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("not a member of a stable generation (not joined yet, rebalancing, or the membership was lost)")]
    NotInGroup,
    #[error("never sent: {0}")]
    NotSent(String),
    #[error("refused by the coordinator: {error}")]
    Rejected { error: ResponseError },
    #[error("{} partition(s) committed, the rest not: {error}", committed.len())]
    PartlyCommitted {
        committed: Vec<(String, i32)>,
        error: Box<CommitError>,
    },
    #[error("the consumer is closed")]
    Closed,
}

impl CommitError {
    /// The Kafka error code the coordinator refused with, if it answered.
    pub fn code(&self) -> Option<i16> {
        match self {
            CommitError::Rejected { error } => Some(error.code()),
            CommitError::PartlyCommitted { error, .. } => error.code(),
            CommitError::NotInGroup | CommitError::NotSent(_) | CommitError::Closed => None,
        }
    }
}

/// Why a commit may or may not have been applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitUnknownReason {
    #[error("no response within the request timeout: {0}")]
    Timeout(String),
    #[error("connection lost with the request in flight: {0}")]
    ConnectionLost(String),
    #[error("ambiguous coordinator error {0}")]
    AmbiguousError(ResponseError),
    #[error("{last} after an earlier attempt that may have been applied ({earlier})")]
    RetriedAfterAmbiguous {
        earlier: Box<CommitUnknownReason>,
        last: CommitError,
    },
}

impl CommitUnknownReason {
    /// The Kafka error code of the last answer, if the coordinator answered with one.
    pub fn code(&self) -> Option<i16> {
        match self {
            CommitUnknownReason::AmbiguousError(error) => Some(error.code()),
            CommitUnknownReason::RetriedAfterAmbiguous { last, .. } => last.code(),
            CommitUnknownReason::Timeout(_) | CommitUnknownReason::ConnectionLost(_) => None,
        }
    }
}

/// One auto-commit and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoCommit {
    /// The committed positions (the next offset to read, per partition).
    pub offsets: BTreeMap<(String, i32), i64>,
    pub outcome: CommitOutcome,
}

/// What [`GroupConsumer::close`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Auto-commits not yet taken with `take_auto_commits`, the final one (on close) last.
    pub auto_commits: Vec<AutoCommit>,
    /// LeaveGroup was answered without error (false for a static member, which never leaves,
    /// and for a consumer that never joined).
    pub left_group: bool,
}

/// Why the coordinator could not be found or reached.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("FindCoordinator for group \"{group}\": {error}")]
    Broker { group: String, error: ResponseError },
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl CoordinatorError {
    fn is_retriable(&self) -> bool {
        match self {
            CoordinatorError::Broker { error, .. } => error.is_retriable(),
            CoordinatorError::Request(e) => !matches!(
                e,
                RequestError::UnsupportedVersion { .. } | RequestError::Encode { .. }
            ),
        }
    }
}

/// Why a poll returned no records.
#[derive(Debug, thiserror::Error)]
pub enum GroupPollError {
    #[error("not subscribed to any topic")]
    NotSubscribed,
    #[error("the consumer is closed")]
    Closed,
    /// Will not get better by retrying: FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL,
    /// INVALID_SESSION_TIMEOUT, INVALID_GROUP_ID, authorization, an unsupported version. Every
    /// later poll returns it again.
    #[error("group \"{group}\": {error}")]
    Fatal { group: String, error: ResponseError },
    /// The coordinator cannot be asked (an unsupported version). Retriable coordinator trouble
    /// is retried by the rebalance task and never returned.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// The committed offsets of the assignment cannot be read (not a retriable error).
    #[error(transparent)]
    Committed(#[from] CommittedError),
    #[error(transparent)]
    Fetch(#[from] PollError),
}

/// Why committed offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CommittedError {
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("group \"{group}\": {error}")]
    Broker { group: String, error: ResponseError },
    #[error("group \"{group}\", partition {topic}-{partition}: {error}")]
    Partition {
        group: String,
        topic: String,
        partition: i32,
        error: ResponseError,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl CommittedError {
    /// Worth another attempt (no coordinator, a lost connection, a retriable code).
    pub fn is_retriable(&self) -> bool {
        match self {
            CommittedError::Coordinator(e) => e.is_retriable(),
            CommittedError::Broker { error, .. } | CommittedError::Partition { error, .. } => {
                error.is_retriable()
            }
            CommittedError::Request(e) => !matches!(
                e,
                RequestError::UnsupportedVersion { .. } | RequestError::Encode { .. }
            ),
        }
    }
}

/// The eventual [`CommitOutcome`] of a commit made with `commit_async`.
pub struct CommitHandle(HandleInner);

enum HandleInner {
    Ready(Option<CommitOutcome>),
    Waiting(oneshot::Receiver<CommitOutcome>),
}

impl Future for CommitHandle {
    type Output = CommitOutcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CommitOutcome> {
        match &mut self.get_mut().0 {
            HandleInner::Ready(outcome) => {
                Poll::Ready(outcome.take().unwrap_or(CommitOutcome::Failed {
                    error: CommitError::Closed,
                }))
            }
            HandleInner::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| {
                // The commit task always answers; no answer means the runtime is going away
                // with the request possibly sent.
                r.unwrap_or(CommitOutcome::Unknown {
                    reason: CommitUnknownReason::ConnectionLost("commit task stopped".into()),
                })
            }),
        }
    }
}

/// The member's view of its membership, shared with the heartbeat and commit tasks.
struct Membership {
    coordinator: Option<Arc<Connection>>,
    member_id: String,
    generation_id: i32,
    /// SyncGroup succeeded for `generation_id` and nothing has invalidated it: heartbeats run
    /// and commits are made under this generation.
    stable: bool,
    /// The next poll must rejoin.
    rejoin_needed: bool,
    /// A non-retriable error the next polls report.
    fatal: Option<ResponseError>,
    last_poll: Instant,
    heartbeat_due: Instant,
    closed: bool,
}

struct Shared {
    client: Client,
    config: GroupConsumerConfig,
    state: Mutex<Membership>,
    /// Wakes the heartbeat task: a new stable generation, or close.
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn group_metadata(&self) -> GroupMetadata {
        self.metadata_of(&self.lock())
    }

    fn metadata_of(&self, state: &Membership) -> GroupMetadata {
        GroupMetadata {
            group_id: self.config.group_id.clone(),
            generation_id: state.generation_id,
            member_id: state.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
        }
    }

    /// The generation commits are made under, when the member holds a stable one.
    fn stable_generation(&self) -> Option<GroupMetadata> {
        let state = self.lock();
        let stable = state.stable && state.generation_id >= 0 && !state.member_id.is_empty();
        stable.then(|| self.metadata_of(&state))
    }

    /// The coordinator's connection: the known one, else FindCoordinator and a new connection
    /// of this consumer's own (so a JoinGroup parked for the whole rebalance never holds up
    /// fetches on the pooled connections).
    async fn coordinator(&self) -> Result<Arc<Connection>, CoordinatorError> {
        if let Some(c) = self.lock().coordinator.clone().filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let group = &self.config.group_id;
        let any = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = FindCoordinatorRequest::default()
            .with_key(s(group))
            .with_key_type(KEY_TYPE_GROUP);
        let response = any.send(&request).await?;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return Err(CoordinatorError::Broker {
                group: group.clone(),
                error,
            });
        }
        let addr = format!("{}:{}", response.host.as_str(), response.port);
        let connection = super::connection::open(&addr, self.client.config())
            .await
            .map_err(RequestError::from)?;
        let connection = Arc::new(connection);
        let mut state = self.lock();
        if let Some(existing) = state.coordinator.clone().filter(|c| !c.is_closed()) {
            // Another task found it first; use that one.
            return Ok(existing);
        }
        tracing::debug!(group = %group, node = response.node_id.0, %addr, "coordinator found");
        state.coordinator = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// Forget the coordinator after NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or a request
    /// error on its connection. Requests still in flight on it finish (it closes when the last
    /// of them lets go).
    fn coordinator_lost(&self, connection: &Arc<Connection>) {
        let mut state = self.lock();
        if state
            .coordinator
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, connection))
        {
            state.coordinator = None;
        }
    }

    /// The membership is gone (UNKNOWN_MEMBER_ID, left the group): rejoin from scratch.
    fn reset_member(state: &mut Membership) {
        state.member_id.clear();
        state.generation_id = -1;
        state.stable = false;
        state.rejoin_needed = true;
    }

    /// `membership` is the stable generation this member holds now.
    fn holds(&self, membership: &GroupMetadata) -> bool {
        Shared::is_current(&self.lock(), membership)
    }

    fn is_current(state: &Membership, membership: &GroupMetadata) -> bool {
        state.stable
            && state.generation_id == membership.generation_id
            && state.member_id == membership.member_id
    }

    /// The coordinator answered a heartbeat or a commit made under `membership` with `error`.
    /// As Java's consumer does, REBALANCE_IN_PROGRESS makes the next poll rejoin, and
    /// ILLEGAL_GENERATION and UNKNOWN_MEMBER_ID also drop the generation (and the member id),
    /// so the partitions are lost: without this a member the group has already replaced goes
    /// on fetching and processing records it can never commit. Only when `membership` is
    /// still the stable one held (a refusal of an older generation says nothing about the
    /// current one). Returns whether the state changed.
    fn membership_refused(&self, membership: &GroupMetadata, error: ResponseError) -> bool {
        let mut state = self.lock();
        if !Shared::is_current(&state, membership) {
            return false;
        }
        match error {
            ResponseError::RebalanceInProgress => state.rejoin_needed = true,
            ResponseError::IllegalGeneration => {
                state.generation_id = -1;
                state.stable = false;
                state.rejoin_needed = true;
            }
            ResponseError::UnknownMemberId => Shared::reset_member(&mut state),
            _ => return false,
        }
        debug_assert!(state.rejoin_needed, "a refused membership must rejoin");
        true
    }
}

/// Next offset to read, per partition.
type Positions = BTreeMap<(String, i32), i64>;

/// A rebalance task's result: the member's partitions in its new generation.
type RebalanceResult = Result<Vec<(String, i32)>, GroupPollError>;

struct CommitJob {
    membership: GroupMetadata,
    offsets: BTreeMap<(String, i32), OffsetAndMetadata>,
    reply: oneshot::Sender<CommitOutcome>,
}

/// A member of a consumer group. See the module docs.
pub struct GroupConsumer {
    shared: Arc<Shared>,
    consumer: Consumer,
    subscription: Vec<String>,
    /// The assignment of the current generation, as the listener was told.
    owned: Vec<(String, i32)>,
    /// `owned` still needs its committed offsets before the inner consumer fetches it.
    positions_pending: bool,
    /// In a mutex only so that a `GroupConsumer` is `Sync` without asking it of listeners.
    listener: Mutex<Option<Box<dyn RebalanceListener>>>,
    commits: Option<mpsc::UnboundedSender<CommitJob>>,
    heartbeat_started: bool,
    /// The JoinGroup/SyncGroup task of a rebalance in progress.
    rebalance: Option<tokio::task::JoinHandle<RebalanceResult>>,
    next_auto_commit: Option<Instant>,
    auto_commits_pending: Vec<(Positions, CommitHandle)>,
    auto_commits_done: Vec<AutoCommit>,
    closed: bool,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.shared.group_metadata())
            .field("subscription", &self.subscription)
            .field("assignment", &self.owned)
            .finish()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Stops the heartbeat task; the commit task stops once its queue is empty. Without
        // close() there is no LeaveGroup: the coordinator waits for the session to expire.
        if let Some(task) = self.rebalance.take() {
            task.abort();
        }
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn code(error_code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(error_code)
}

/// Rebalance steps that did not complete.
enum Step {
    /// Go again at once (MEMBER_ID_REQUIRED, a rejoin the coordinator asked for).
    Again,
    /// Go again after a backoff; why, for the log.
    Backoff(String),
    Fatal(GroupPollError),
}

impl GroupConsumer {
    pub fn new(client: Client, config: GroupConsumerConfig) -> GroupConsumer {
        let now = super::now();
        let consumer = Consumer::new(client.clone(), config.fetch.clone());
        GroupConsumer {
            shared: Arc::new(Shared {
                client,
                config,
                state: Mutex::new(Membership {
                    coordinator: None,
                    member_id: String::new(),
                    generation_id: -1,
                    stable: false,
                    rejoin_needed: true,
                    fatal: None,
                    last_poll: now,
                    heartbeat_due: now,
                    closed: false,
                }),
                wake: Notify::new(),
            }),
            consumer,
            subscription: Vec::new(),
            owned: Vec::new(),
            positions_pending: false,
            listener: Mutex::new(None),
            commits: None,
            heartbeat_started: false,
            rebalance: None,
            next_auto_commit: None,
            auto_commits_pending: Vec::new(),
            auto_commits_done: Vec::new(),
            closed: false,
        }
    }

    pub fn config(&self) -> &GroupConsumerConfig {
        &self.shared.config
    }

    /// Owned partitions whose last fetch answered KAFKA_STORAGE_ERROR (see
    /// [`Consumer::offline_partitions`]).
    pub fn offline_partitions(&self) -> Vec<(String, i32)> {
        self.consumer.offline_partitions()
    }

    /// Installs the rebalance hooks (replacing any earlier ones).
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        *self.listener_mut() = Some(Box::new(listener));
    }

    /// Subscribes to exactly `topics`; a change makes the next poll rejoin.
    pub fn subscribe<T: Into<String>>(&mut self, topics: impl IntoIterator<Item = T>) {
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        if topics != self.subscription {
            self.subscription = topics;
            self.shared.lock().rejoin_needed = true;
        }
    }

    pub fn subscription(&self) -> &[String] {
        &self.subscription
    }

    /// The partitions of the current generation (sorted).
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.owned.clone()
    }

    /// The next offset to read from an assigned partition, once known.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        if self.positions_pending {
            return None;
        }
        self.consumer.position(topic, partition)
    }

    /// Every assigned partition's position, where known: what `commit_sync` commits.
    pub fn positions(&self) -> BTreeMap<(String, i32), i64> {
        if self.positions_pending {
            return BTreeMap::new();
        }
        self.owned
            .iter()
            .filter_map(|(t, p)| self.consumer.position(t, *p).map(|o| ((t.clone(), *p), o)))
            .collect()
    }

    /// Moves an assigned partition's position (after the poll that fetched its committed
    /// offset).
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: i32,
        to: SeekTo,
    ) -> Result<i64, SeekError> {
        if self.positions_pending {
            return Err(SeekError::NotAssigned {
                topic: topic.to_string(),
                partition,
            });
        }
        self.consumer.seek(topic, partition, to).await
    }

    /// The group, generation and member id this consumer holds now.
    pub fn group_metadata(&self) -> GroupMetadata {
        self.shared.group_metadata()
    }

    /// Joins or rejoins the group when needed, then fetches records of the assignment
    /// (waiting up to `fetch.max_wait`; an empty assignment just waits). Rebalance callbacks
    /// and auto-commits run from here. While a rebalance waits for other members, a poll
    /// returns no records after `fetch.max_wait`; the rebalance carries on in the background
    /// and a later poll completes it.
    ///
    /// Cancel-safe: a poll dropped at any await (under a timeout) loses no state. Records it
    /// had fetched are fetched again, a commit it had started still ends and is reported by
    /// [`GroupConsumer::take_auto_commits`], and the next poll resumes the rebalance.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, GroupPollError> {
        if self.closed {
            return Err(GroupPollError::Closed);
        }
        if self.subscription.is_empty() {
            return Err(GroupPollError::NotSubscribed);
        }
        self.start_tasks();
        self.touch_poll();
        self.collect_auto_commits();
        let wait_until = super::now() + self.shared.config.fetch.max_wait;
        if !self.ensure_active_group(wait_until).await? {
            self.touch_poll();
            return Ok(Vec::new());
        }
        if self.positions_pending && !self.initialize_positions(wait_until).await? {
            self.touch_poll();
            return Ok(Vec::new());
        }
        self.maybe_auto_commit();
        let records = if self.owned.is_empty() {
            tokio::time::sleep_until(wait_until).await;
            Vec::new()
        } else {
            match self.consumer.poll().await {
                Ok(records) => records,
                Err(PollError::NoAssignment) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        };
        self.touch_poll();
        Ok(records)
    }

    /// Commits every assigned partition's position and waits for the outcome.
    pub async fn commit_sync(&mut self) -> CommitOutcome {
        self.commit_async().await
    }

    /// Commits `offsets` (with their metadata) and waits for the outcome.
    pub async fn commit_offsets(
        &mut self,
        offsets: BTreeMap<(String, i32), OffsetAndMetadata>,
    ) -> CommitOutcome {
        self.commit_offsets_async(offsets).await
    }

    /// Starts a commit of every assigned partition's position; the handle resolves to its
    /// outcome. Commits are sent one at a time in the order they were made.
    pub fn commit_async(&mut self) -> CommitHandle {
        let offsets = self
            .positions()
            .into_iter()
            .map(|(k, offset)| (k, plain(offset)))
            .collect();
        self.commit_offsets_async(offsets)
    }

    /// [`GroupConsumer::commit_async`] of explicit offsets.
    pub fn commit_offsets_async(
        &mut self,
        offsets: BTreeMap<(String, i32), OffsetAndMetadata>,
    ) -> CommitHandle {
        match self.shared.stable_generation() {
            Some(membership) => self.submit(membership, offsets),
            None => ready(CommitOutcome::Failed {
                error: CommitError::NotInGroup,
            }),
        }
    }

    /// Commits `offsets` claiming `membership` (normally an earlier [`GroupConsumer::group_metadata`])
    /// instead of the current generation: what a consumer that missed a rebalance would send.
    /// The coordinator refuses a stale generation with ILLEGAL_GENERATION (`Failed`).
    pub async fn commit_with_generation(
        &mut self,
        membership: &GroupMetadata,
        offsets: BTreeMap<(String, i32), OffsetAndMetadata>,
    ) -> CommitOutcome {
        self.submit(membership.clone(), offsets).await
    }

    /// The group's committed offset of one partition (OffsetFetch), if any.
    pub async fn committed(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<OffsetAndMetadata>, CommittedError> {
        let key = (topic.to_string(), partition);
        let mut found = self.committed_offsets(std::slice::from_ref(&key)).await?;
        Ok(found.remove(&key).flatten())
    }

    /// The group's committed offsets of `partitions` (`None` where there is none).
    pub async fn committed_offsets(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<BTreeMap<(String, i32), Option<OffsetAndMetadata>>, CommittedError> {
        let deadline = super::now() + self.shared.config.api_timeout;
        fetch_committed(&self.shared, partitions, deadline).await
    }

    /// Auto-commits that ended since the last call, oldest first.
    pub fn take_auto_commits(&mut self) -> Vec<AutoCommit> {
        self.collect_auto_commits();
        std::mem::take(&mut self.auto_commits_done)
    }

    /// Gives up the assignment (committing first with auto-commit on) and leaves the group;
    /// the consumer can subscribe again. Returns whether LeaveGroup succeeded.
    pub async fn unsubscribe(&mut self) -> bool {
        let left = self.leave().await;
        self.subscription.clear();
        left
    }

    /// Commits (with auto-commit on), revokes the assignment, waits for every commit made
    /// before, leaves the group (not a static member: it stays until its session expires, as in
    /// Kafka) and stops the heartbeat task.
    pub async fn close(mut self) -> CloseReport {
        let mut report = CloseReport::default();
        if !self.closed {
            report.left_group = self.leave().await;
            self.closed = true;
        }
        {
            let mut state = self.shared.lock();
            state.closed = true;
            state.coordinator = None;
        }
        self.shared.wake.notify_one();
        let pending = std::mem::take(&mut self.auto_commits_pending);
        for (offsets, handle) in pending {
            let outcome = handle.await;
            self.auto_commits_done.push(AutoCommit { offsets, outcome });
        }
        report.auto_commits = std::mem::take(&mut self.auto_commits_done);
        report
    }

    // ------------------------------------------------------------------------------------

    fn listener_mut(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn RebalanceListener>>> {
        self.listener.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_tasks(&mut self) {
        if !self.heartbeat_started {
            self.heartbeat_started = true;
            tokio::spawn(heartbeat_loop(Arc::clone(&self.shared)));
        }
        if self.next_auto_commit.is_none() {
            self.next_auto_commit = Some(super::now() + self.shared.config.auto_commit_interval);
        }
    }

    fn touch_poll(&self) {
        self.shared.lock().last_poll = super::now();
    }

    fn submit(
        &mut self,
        membership: GroupMetadata,
        offsets: BTreeMap<(String, i32), OffsetAndMetadata>,
    ) -> CommitHandle {
        if self.closed {
            return ready(CommitOutcome::Failed {
                error: CommitError::Closed,
            });
        }
        let sender = self.commits.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(commit_loop(Arc::clone(&self.shared), rx));
            tx
        });
        let (reply, rx) = oneshot::channel();
        let job = CommitJob {
            membership,
            offsets,
            reply,
        };
        match sender.send(job) {
            Ok(()) => CommitHandle(HandleInner::Waiting(rx)),
            Err(_) => ready(CommitOutcome::Failed {
                error: CommitError::Closed,
            }),
        }
    }

    fn collect_auto_commits(&mut self) {
        let pending = std::mem::take(&mut self.auto_commits_pending);
        for (offsets, mut handle) in pending {
            let done = match &mut handle.0 {
                HandleInner::Ready(outcome) => outcome.take(),
                HandleInner::Waiting(rx) => match rx.try_recv() {
                    Ok(outcome) => Some(outcome),
                    Err(oneshot::error::TryRecvError::Empty) => None,
                    Err(oneshot::error::TryRecvError::Closed) => Some(CommitOutcome::Unknown {
                        reason: CommitUnknownReason::ConnectionLost("commit task stopped".into()),
                    }),
                },
            };
            match done {
                Some(outcome) => self.auto_commits_done.push(AutoCommit { offsets, outcome }),
                None => self.auto_commits_pending.push((offsets, handle)),
            }
        }
    }

    fn maybe_auto_commit(&mut self) {
        if !self.shared.config.enable_auto_commit {
            return;
        }
        let now = super::now();
        if self.next_auto_commit.is_some_and(|due| now < due) {
            return;
        }
        self.next_auto_commit = Some(now + self.shared.config.auto_commit_interval);
        let Some(membership) = self.shared.stable_generation() else {
            return;
        };
        let positions = self.positions();
        if positions.is_empty() {
            return;
        }
        let offsets = positions
            .iter()
            .map(|(k, &o)| (k.clone(), plain(o)))
            .collect();
        let handle = self.submit(membership, offsets);
        self.auto_commits_pending.push((positions, handle));
    }

    /// A synchronous auto-commit of the positions (before revoking, on close), recorded with
    /// the others. Cancel-safe: if the caller's future is dropped while it waits, the commit
    /// still runs and its outcome is still reported by `take_auto_commits`.
    async fn auto_commit_now(&mut self, membership: GroupMetadata) {
        let positions = self.positions();
        if positions.is_empty() {
            return;
        }
        let offsets = positions
            .iter()
            .map(|(k, &o)| (k.clone(), plain(o)))
            .collect();
        let handle = self.submit(membership, offsets);
        self.auto_commits_pending.push((positions, handle));
        // The queue is FIFO: once this is through, so is the auto-commit.
        self.wait_for_commits().await;
        self.collect_auto_commits();
    }

    /// Eager revocation before a rejoin or a leave: commit (auto-commit, generation still
    /// valid), tell the listener, drop the assignment.
    async fn give_up_assignment(&mut self) {
        let generation = self.shared.stable_generation();
        if let Some(membership) = generation.clone() {
            if self.shared.config.enable_auto_commit {
                self.auto_commit_now(membership).await;
            }
        }
        let owned = std::mem::take(&mut self.owned);
        if let (false, Some(listener)) = (owned.is_empty(), self.listener_mut().as_mut()) {
            match generation {
                Some(_) => listener.on_partitions_revoked(&owned),
                None => listener.on_partitions_lost(&owned),
            }
        }
        self.consumer.assign(Vec::new());
        self.positions_pending = false;
    }

    /// Commits made so far have all ended (the commit queue is FIFO; an empty commit sends
    /// nothing).
    async fn wait_for_commits(&mut self) {
        if self.commits.is_some() {
            let membership = self.shared.group_metadata();
            let _ = self.submit(membership, BTreeMap::new()).await;
        }
    }

    async fn leave(&mut self) -> bool {
        if let Some(task) = self.rebalance.take() {
            // A JoinGroup or SyncGroup in flight is abandoned; LeaveGroup below ends it.
            task.abort();
        }
        self.give_up_assignment().await;
        self.wait_for_commits().await;
        let (member_id, generation) = {
            let state = self.shared.lock();
            (state.member_id.clone(), state.generation_id)
        };
        let mut left = false;
        if self.shared.config.group_instance_id.is_none() && !member_id.is_empty() {
            left = leave_group(&self.shared, &member_id).await;
        }
        tracing::debug!(group = %self.shared.config.group_id, member = %member_id, generation, left, "left the group");
        let mut state = self.shared.lock();
        Shared::reset_member(&mut state);
        left
    }

    /// Rejoins when needed: gives up the assignment, starts the rebalance task, and waits for
    /// it until `wait_until`. Returns whether the member holds a stable generation with its
    /// assignment taken over; if not, the rebalance carries on in its task and a later poll
    /// picks up the result (as Java's poll returns while its JoinGroup is pending).
    async fn ensure_active_group(&mut self, wait_until: Instant) -> Result<bool, GroupPollError> {
        let group = self.shared.config.group_id.clone();
        if group.is_empty() {
            return Err(GroupPollError::Fatal {
                group,
                error: ResponseError::InvalidGroupId,
            });
        }
        loop {
            if let Some(task) = self.rebalance.as_mut() {
                let result = match tokio::time::timeout(
                    wait_until.saturating_duration_since(super::now()),
                    task,
                )
                .await
                {
                    Err(_) => return Ok(false),
                    Ok(result) => result,
                };
                self.rebalance = None;
                match result {
                    Ok(Ok(assigned)) => {
                        self.owned = assigned;
                        self.positions_pending = true;
                        if let Some(listener) = self.listener_mut().as_mut() {
                            listener.on_partitions_assigned(&self.owned);
                        }
                    }
                    Ok(Err(error)) => return Err(error),
                    // The task panicked: start over.
                    Err(e) => tracing::warn!(group = %group, %e, "rebalance task failed"),
                }
            }
            {
                let state = self.shared.lock();
                if let Some(error) = state.fatal {
                    return Err(GroupPollError::Fatal { group, error });
                }
                if state.stable && !state.rejoin_needed {
                    return Ok(true);
                }
            }
            if !self.owned.is_empty() || self.positions_pending {
                self.give_up_assignment().await;
            }
            // A rejoin asked for from now on (a new subscription) needs another rebalance.
            self.shared.lock().rejoin_needed = false;
            self.rebalance = Some(tokio::spawn(rebalance(
                Arc::clone(&self.shared),
                self.subscription.clone(),
            )));
        }
    }

    /// Committed offsets of the new assignment become the positions; partitions without one
    /// are left to `auto.offset.reset` (the inner consumer applies it on its first fetch).
    /// Retriable trouble is retried until `wait_until`, then left to the next poll (false).
    async fn initialize_positions(&mut self, wait_until: Instant) -> Result<bool, GroupPollError> {
        let committed = match fetch_committed(&self.shared, &self.owned, wait_until).await {
            Ok(committed) => committed,
            Err(e) if e.is_retriable() => {
                tracing::debug!(group = %self.shared.config.group_id, %e, "committed offsets not read yet");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        self.consumer.assign(self.owned.clone());
        for ((topic, partition), offset) in committed {
            if let Some(offset) = offset {
                // An offset seek does no I/O and the partition is assigned: it cannot fail.
                let _ = self
                    .consumer
                    .seek(&topic, partition, SeekTo::Offset(offset.offset))
                    .await;
            }
        }
        self.positions_pending = false;
        Ok(true)
    }
}

/// The rebalance task: JoinGroup and SyncGroup until the member holds a stable generation
/// (its partitions are the result), a fatal error, or close. Retriable errors are retried with
/// backoff, without end, as Java's `ensureActiveGroup` does; a poll that waits for this task
/// gives up after its own timeout and leaves the task running.
async fn rebalance(shared: Arc<Shared>, subscription: Vec<String>) -> RebalanceResult {
    let config = &shared.config;
    let mut backoff = config.retry_backoff;
    let mut immediate = 0u32;
    loop {
        {
            let mut state = shared.lock();
            if state.closed {
                return Err(GroupPollError::Closed);
            }
            state.stable = false;
        }
        match join_and_sync(&shared, &subscription).await {
            Ok(assigned) => return Ok(assigned),
            // MEMBER_ID_REQUIRED and asked-for rejoins go again at once, a few times in a row.
            Err(Step::Again) if immediate < 3 => immediate += 1,
            Err(Step::Again) => {
                immediate = 0;
                tokio::time::sleep(config.retry_backoff).await;
            }
            Err(Step::Backoff(error)) => {
                immediate = 0;
                tracing::debug!(group = %config.group_id, %error, "rejoining after a backoff");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
            }
            Err(Step::Fatal(error)) => {
                if let GroupPollError::Fatal { error: code, .. } = &error {
                    shared.lock().fatal = Some(*code);
                }
                return Err(error);
            }
        }
    }
}

/// One JoinGroup and SyncGroup; the member's partitions of the new generation.
async fn join_and_sync(
    shared: &Shared,
    subscription: &[String],
) -> Result<Vec<(String, i32)>, Step> {
    let config = &shared.config;
    let group = config.group_id.clone();
    let fatal = |error: ResponseError| {
        Step::Fatal(GroupPollError::Fatal {
            group: group.clone(),
            error,
        })
    };
    let connection = match shared.coordinator().await {
        Ok(c) => c,
        Err(e) if e.is_retriable() => return Err(Step::Backoff(e.to_string())),
        Err(e) => return Err(Step::Fatal(e.into())),
    };
    let Ok(join_version) = connection.version_for(ApiKey::JoinGroup) else {
        return Err(fatal(ResponseError::UnsupportedVersion));
    };
    let Ok(sync_version) = connection.version_for(ApiKey::SyncGroup) else {
        return Err(fatal(ResponseError::UnsupportedVersion));
    };
    let member_id = shared.lock().member_id.clone();
    let mut request = JoinGroupRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_session_timeout_ms(millis(config.session_timeout))
        .with_rebalance_timeout_ms(millis(config.max_poll_interval))
        .with_member_id(s(&member_id))
        .with_protocol_type(s(CONSUMER_PROTOCOL_TYPE))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s(config.assignor.name()))
            .with_metadata(encode_subscription(subscription))]);
    if let Some(instance) = &config.group_instance_id {
        if join_version < 5 {
            return Err(fatal(ResponseError::UnsupportedVersion));
        }
        request.group_instance_id = Some(s(instance));
    }
    let timeout =
        (config.max_poll_interval + JOIN_GROUP_TIMEOUT_LAPSE).max(connection.request_timeout());
    let response = match connection.send_with_timeout(&request, timeout).await {
        Ok(r) => r,
        Err(e) => {
            shared.coordinator_lost(&connection);
            return Err(Step::Backoff(e.to_string()));
        }
    };
    if let Some(error) = code(response.error_code) {
        tracing::debug!(group = %group, member = %member_id, %error, "JoinGroup refused");
        let mut state = shared.lock();
        return Err(match error {
            ResponseError::MemberIdRequired => {
                state.member_id = response.member_id.to_string();
                Step::Again
            }
            ResponseError::UnknownMemberId => {
                Shared::reset_member(&mut state);
                Step::Again
            }
            ResponseError::IllegalGeneration => {
                state.generation_id = -1;
                Step::Again
            }
            ResponseError::RebalanceInProgress
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable => {
                if matches!(
                    error,
                    ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
                ) {
                    drop(state);
                    shared.coordinator_lost(&connection);
                }
                Step::Backoff(error.to_string())
            }
            e if e.is_retriable() => Step::Backoff(e.to_string()),
            e => fatal(e),
        });
    }
    let member_id = response.member_id.to_string();
    let generation_id = response.generation_id;
    {
        let mut state = shared.lock();
        state.member_id = member_id.clone();
        state.generation_id = generation_id;
    }
    if let Some(name) = response.protocol_name.as_ref() {
        if name.as_str() != config.assignor.name() {
            return Err(fatal(ResponseError::InconsistentGroupProtocol));
        }
    }
    let is_leader = response.leader.as_str() == member_id;
    let assignments = if is_leader {
        let members: Vec<(MemberSubscription, i16)> = response
            .members
            .iter()
            .map(|m| {
                let version = if m.metadata.len() >= 2 {
                    i16::from_be_bytes([m.metadata[0], m.metadata[1]])
                } else {
                    0
                };
                let topics = decode_subscription(&m.metadata).unwrap_or_else(|| {
                    tracing::warn!(group = %group, member = %m.member_id.as_str(), "undecodable subscription; assigning it nothing");
                    Vec::new()
                });
                (
                    MemberSubscription {
                        member_id: m.member_id.to_string(),
                        group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                        topics,
                    },
                    version,
                )
            })
            .collect();
        leader_assignments(shared, &members).await
    } else {
        Vec::new()
    };
    let mut request = SyncGroupRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_generation_id(generation_id)
        .with_member_id(s(&member_id))
        .with_assignments(assignments);
    if sync_version >= 3 {
        request.group_instance_id = config.group_instance_id.as_deref().map(s);
    }
    if sync_version >= 5 {
        request.protocol_type = Some(s(CONSUMER_PROTOCOL_TYPE));
        request.protocol_name = Some(s(config.assignor.name()));
    }
    let timeout =
        (config.max_poll_interval + JOIN_GROUP_TIMEOUT_LAPSE).max(connection.request_timeout());
    let response = match connection.send_with_timeout(&request, timeout).await {
        Ok(r) => r,
        Err(e) => {
            shared.coordinator_lost(&connection);
            return Err(Step::Backoff(e.to_string()));
        }
    };
    if let Some(error) = code(response.error_code) {
        tracing::debug!(group = %group, member = %member_id, generation_id, %error, "SyncGroup refused");
        let mut state = shared.lock();
        return Err(match error {
            ResponseError::RebalanceInProgress => Step::Again,
            ResponseError::UnknownMemberId => {
                Shared::reset_member(&mut state);
                Step::Again
            }
            ResponseError::IllegalGeneration => {
                state.generation_id = -1;
                Step::Again
            }
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
                drop(state);
                shared.coordinator_lost(&connection);
                Step::Backoff(error.to_string())
            }
            e if e.is_retriable() => Step::Backoff(e.to_string()),
            e => fatal(e),
        });
    }
    let assigned = decode_assignment(&response.assignment).unwrap_or_else(|| {
        tracing::warn!(group = %group, member = %member_id, "undecodable assignment; taking nothing");
        Vec::new()
    });
    let (assigned, foreign): (Vec<_>, Vec<_>) = assigned
        .into_iter()
        .partition(|(t, _)| subscription.binary_search(t).is_ok());
    if !foreign.is_empty() {
        tracing::warn!(group = %group, ?foreign, "assigned partitions of topics not subscribed to; ignored");
    }
    {
        let mut state = shared.lock();
        state.stable = true;
        state.heartbeat_due = super::now() + config.heartbeat_interval;
    }
    shared.wake.notify_one();
    tracing::debug!(group = %group, member = %member_id, generation_id, leader = is_leader, ?assigned, "joined");
    Ok(assigned)
}

/// The leader's SyncGroup assignments: every member's, encoded in the lowest subscription
/// version among them (so every member can read its own).
async fn leader_assignments(
    shared: &Shared,
    members: &[(MemberSubscription, i16)],
) -> Vec<SyncGroupRequestAssignment> {
    let topics: BTreeSet<&String> = members.iter().flat_map(|(m, _)| &m.topics).collect();
    let mut partitions_per_topic = BTreeMap::new();
    for topic in topics {
        match shared.client.refresh_topic(topic, false).await {
            Ok(meta) => {
                partitions_per_topic.insert(topic.clone(), meta.partitions.len() as i32);
            }
            Err(MetadataError::UnknownTopic(_)) => {}
            Err(e) => {
                tracing::warn!(group = %shared.config.group_id, topic = %topic, %e, "no metadata; not assigned in this generation")
            }
        }
    }
    let subscriptions: Vec<MemberSubscription> = members.iter().map(|(m, _)| m.clone()).collect();
    let version = members.iter().map(|(_, v)| *v).min().unwrap_or(0);
    let assignment = shared
        .config
        .assignor
        .assign(&subscriptions, &partitions_per_topic);
    assignment
        .into_iter()
        .map(|(member_id, partitions)| {
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&member_id))
                .with_assignment(encode_assignment(&partitions, version))
        })
        .collect()
}

fn plain(offset: i64) -> OffsetAndMetadata {
    OffsetAndMetadata {
        offset,
        leader_epoch: None,
        metadata: None,
    }
}

fn ready(outcome: CommitOutcome) -> CommitHandle {
    CommitHandle(HandleInner::Ready(Some(outcome)))
}

/// LeaveGroup for this member; true when the coordinator answered without error.
async fn leave_group(shared: &Shared, member_id: &str) -> bool {
    let Ok(connection) = shared.coordinator().await else {
        return false;
    };
    let Ok(version) = connection.version_for(ApiKey::LeaveGroup) else {
        return false;
    };
    let group = GroupId(s(&shared.config.group_id));
    let request = if version >= 3 {
        LeaveGroupRequest::default()
            .with_group_id(group)
            .with_members(vec![MemberIdentity::default()
                .with_member_id(s(member_id))
                .with_group_instance_id(
                    shared.config.group_instance_id.as_deref().map(s),
                )])
    } else {
        LeaveGroupRequest::default()
            .with_group_id(group)
            .with_member_id(s(member_id))
    };
    match connection.send(&request).await {
        Ok(response) => {
            response.error_code == 0 && response.members.iter().all(|m| m.error_code == 0)
        }
        Err(e) => {
            tracing::debug!(group = %shared.config.group_id, %e, "LeaveGroup failed");
            shared.coordinator_lost(&connection);
            false
        }
    }
}

/// Heartbeats while the member holds a stable generation; leaves the group when `poll` has not
/// been called for `max_poll_interval`. Ends when the consumer closes or is dropped.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let config = &shared.config;
    loop {
        enum Action {
            Wait(Option<Instant>),
            Heartbeat(GroupMetadata),
            PollTimeout(GroupMetadata),
        }
        let now = super::now();
        let action = {
            let state = shared.lock();
            if state.closed {
                return;
            }
            if !state.stable || state.fatal.is_some() {
                Action::Wait(None)
            } else if now.duration_since(state.last_poll) > config.max_poll_interval {
                drop(state);
                Action::PollTimeout(shared.group_metadata())
            } else if now >= state.heartbeat_due {
                drop(state);
                Action::Heartbeat(shared.group_metadata())
            } else {
                Action::Wait(Some(state.heartbeat_due))
            }
        };
        match action {
            Action::Wait(until) => {
                let until = until.unwrap_or(now + config.heartbeat_interval);
                tokio::select! {
                    biased;
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
            Action::PollTimeout(membership) => {
                tracing::warn!(group = %config.group_id, member = %membership.member_id, "no poll within max.poll.interval; leaving the group");
                if config.group_instance_id.is_none() {
                    leave_group(&shared, &membership.member_id).await;
                }
                let mut state = shared.lock();
                if state.generation_id == membership.generation_id
                    && state.member_id == membership.member_id
                {
                    Shared::reset_member(&mut state);
                }
            }
            Action::Heartbeat(membership) => {
                let next = heartbeat(&shared, &membership).await;
                let mut state = shared.lock();
                if state.stable && state.generation_id == membership.generation_id {
                    state.heartbeat_due = super::now() + next;
                }
            }
        }
    }
}

/// One heartbeat; returns when the next one is due.
async fn heartbeat(shared: &Shared, membership: &GroupMetadata) -> Duration {
    let config = &shared.config;
    let connection = match shared.coordinator().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(group = %config.group_id, %e, "heartbeat: no coordinator");
            return config.retry_backoff;
        }
    };
    let version = connection.version_for(ApiKey::Heartbeat).unwrap_or(0);
    let mut request = HeartbeatRequest::default()
        .with_group_id(GroupId(s(&membership.group_id)))
        .with_generation_id(membership.generation_id)
        .with_member_id(s(&membership.member_id));
    if version >= 3 {
        request.group_instance_id = membership.group_instance_id.as_deref().map(s);
    }
    let error = match connection.send(&request).await {
        Ok(response) => code(response.error_code),
        Err(e) => {
            tracing::debug!(group = %config.group_id, %e, "heartbeat failed");
            shared.coordinator_lost(&connection);
            return config.retry_backoff;
        }
    };
    let Some(error) = error else {
        return config.heartbeat_interval;
    };
    if !shared.holds(membership) {
        return config.heartbeat_interval;
    }
    tracing::debug!(group = %config.group_id, member = %membership.member_id, generation = membership.generation_id, %error, "heartbeat");
    match error {
        ResponseError::RebalanceInProgress
        | ResponseError::IllegalGeneration
        | ResponseError::UnknownMemberId => {
            shared.membership_refused(membership, error);
            config.heartbeat_interval
        }
        ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
            shared.coordinator_lost(&connection);
            config.retry_backoff
        }
        ResponseError::FencedInstanceId => {
            let mut state = shared.lock();
            if Shared::is_current(&state, membership) {
                state.fatal = Some(error);
                state.stable = false;
            }
            config.heartbeat_interval
        }
        _ => config.retry_backoff,
    }
}

/// Runs commits one at a time in the order they were made; ends when the consumer is gone and
/// the queue is empty.
async fn commit_loop(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<CommitJob>) {
    while let Some(job) = jobs.recv().await {
        let outcome = commit_with_retries(&shared, &job.membership, &job.offsets).await;
        let _ = job.reply.send(outcome);
    }
}

/// What one OffsetCommit attempt established about the partitions it carried.
struct Attempt {
    committed: Vec<(String, i32)>,
    problem: Option<Problem>,
}

enum Problem {
    /// Definitely not applied (the partitions not in `committed`).
    Refused { error: CommitError, retriable: bool },
    /// May have been applied.
    Ambiguous {
        reason: CommitUnknownReason,
        retriable: bool,
    },
}

/// OffsetCommit codes the coordinator may return after appending the offset record. Kafka's
/// coordinator appends with acks=all and turns the append's errors into coordinator codes:
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND and REQUEST_TIMED_OUT into COORDINATOR_NOT_AVAILABLE,
/// NOT_LEADER_OR_FOLLOWER and KAFKA_STORAGE_ERROR into NOT_COORDINATOR.
fn is_ambiguous(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::CoordinatorNotAvailable
            | ResponseError::NotCoordinator
            | ResponseError::RequestTimedOut
            | ResponseError::NotEnoughReplicasAfterAppend
            | ResponseError::KafkaStorageError
            | ResponseError::NetworkException
            | ResponseError::UnknownServerError
            | ResponseError::Unknown(_)
    )
}

/// Refusals worth another attempt (nothing was written).
fn is_retriable_refusal(error: ResponseError) -> bool {
    matches!(error, ResponseError::CoordinatorLoadInProgress)
}

async fn commit_with_retries(
    shared: &Shared,
    membership: &GroupMetadata,
    offsets: &BTreeMap<(String, i32), OffsetAndMetadata>,
) -> CommitOutcome {
    let config = &shared.config;
    let deadline = super::now() + config.api_timeout;
    let mut backoff = config.retry_backoff;
    let mut remaining = offsets.clone();
    let mut committed: Vec<(String, i32)> = Vec::new();
    let mut ambiguous: Option<CommitUnknownReason> = None;
    loop {
        if remaining.is_empty() {
            return match ambiguous {
                None => CommitOutcome::Committed,
                Some(earlier) => CommitOutcome::CommittedAfterAmbiguous { earlier },
            };
        }
        let attempt = commit_attempt(shared, membership, &remaining).await;
        for key in attempt.committed {
            remaining.remove(&key);
            committed.push(key);
        }
        let (outcome, retriable) = match attempt.problem {
            None => continue,
            Some(Problem::Refused { error, retriable }) => {
                let error = if committed.is_empty() {
                    error
                } else {
                    committed.sort();
                    CommitError::PartlyCommitted {
                        committed: committed.clone(),
                        error: Box::new(error),
                    }
                };
                let outcome = match &ambiguous {
                    Some(earlier) => CommitOutcome::Unknown {
                        reason: CommitUnknownReason::RetriedAfterAmbiguous {
                            earlier: Box::new(earlier.clone()),
                            last: error,
                        },
                    },
                    None => CommitOutcome::Failed { error },
                };
                (outcome, retriable)
            }
            Some(Problem::Ambiguous { reason, retriable }) => {
                ambiguous.get_or_insert_with(|| reason.clone());
                (CommitOutcome::Unknown { reason }, retriable)
            }
        };
        if !retriable || super::now() + backoff >= deadline {
            tracing::debug!(group = %config.group_id, ?outcome, "commit not committed");
            return outcome;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
    }
}

async fn commit_attempt(
    shared: &Shared,
    membership: &GroupMetadata,
    offsets: &BTreeMap<(String, i32), OffsetAndMetadata>,
) -> Attempt {
    let refused = |error: CommitError, retriable: bool| Attempt {
        committed: Vec::new(),
        problem: Some(Problem::Refused { error, retriable }),
    };
    let connection = match shared.coordinator().await {
        Ok(c) => c,
        Err(e) => {
            let retriable = e.is_retriable();
            return refused(CommitError::NotSent(e.to_string()), retriable);
        }
    };
    let version = match connection.version_for(ApiKey::OffsetCommit) {
        Ok(v) => v,
        Err(e) => return refused(CommitError::NotSent(e.to_string()), false),
    };
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for ((topic, partition), offset) in offsets {
        let mut p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(offset.offset)
            .with_committed_metadata(Some(s(offset.metadata.as_deref().unwrap_or(""))));
        if version >= 6 {
            p = p.with_committed_leader_epoch(offset.leader_epoch.unwrap_or(-1));
        }
        // `offsets` is sorted by topic, so a topic's partitions are adjacent.
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partitions.push(p),
            _ => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let mut request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(&membership.group_id)))
        .with_generation_id_or_member_epoch(membership.generation_id)
        .with_member_id(s(&membership.member_id))
        .with_topics(topics);
    if version >= 7 {
        request.group_instance_id = membership.group_instance_id.as_deref().map(s);
    }
    let response = match connection.send(&request).await {
        Ok(r) => r,
        Err(e) => {
            shared.coordinator_lost(&connection);
            if !e.maybe_sent() {
                let retriable = !matches!(
                    e,
                    RequestError::UnsupportedVersion { .. } | RequestError::Encode { .. }
                );
                return refused(CommitError::NotSent(e.to_string()), retriable);
            }
            let reason = match e {
                RequestError::Timeout { .. } => CommitUnknownReason::Timeout(e.to_string()),
                _ => CommitUnknownReason::ConnectionLost(e.to_string()),
            };
            return Attempt {
                committed: Vec::new(),
                problem: Some(Problem::Ambiguous {
                    reason,
                    retriable: true,
                }),
            };
        }
    };
    // A partition the response leaves out is as ambiguous as an unknown server error.
    let mut results: BTreeMap<(String, i32), Option<ResponseError>> = offsets
        .keys()
        .map(|k| (k.clone(), Some(ResponseError::UnknownServerError)))
        .collect();
    for t in &response.topics {
        for p in &t.partitions {
            if let Some(slot) = results.get_mut(&(t.name.to_string(), p.partition_index)) {
                *slot = code(p.error_code);
            }
        }
    }
    let committed: Vec<(String, i32)> = results
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    let errors: Vec<ResponseError> = results.values().flatten().copied().collect();
    let membership_error = [
        ResponseError::UnknownMemberId,
        ResponseError::IllegalGeneration,
        ResponseError::RebalanceInProgress,
    ]
    .into_iter()
    .find(|e| errors.contains(e));
    if let Some(error) = membership_error {
        shared.membership_refused(membership, error);
    }
    if errors.iter().any(|e| {
        matches!(
            e,
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
        )
    }) {
        shared.coordinator_lost(&connection);
    }
    let problem = if errors.is_empty() {
        None
    } else if let Some(&error) = errors.iter().find(|e| is_ambiguous(**e)) {
        Some(Problem::Ambiguous {
            reason: CommitUnknownReason::AmbiguousError(error),
            retriable: error.is_retriable() || error == ResponseError::KafkaStorageError,
        })
    } else {
        let retriable = errors.iter().all(|e| is_retriable_refusal(*e));
        let error = errors
            .iter()
            .find(|e| !is_retriable_refusal(**e))
            .or(errors.first())
            .copied()
            .expect("errors is not empty");
        Some(Problem::Refused {
            error: CommitError::Rejected { error },
            retriable,
        })
    };
    Attempt { committed, problem }
}

/// OffsetFetch of `partitions`, retrying retriable errors until `deadline`.
async fn fetch_committed(
    shared: &Shared,
    partitions: &[(String, i32)],
    deadline: Instant,
) -> Result<BTreeMap<(String, i32), Option<OffsetAndMetadata>>, CommittedError> {
    let config = &shared.config;
    let mut backoff = config.retry_backoff;
    loop {
        let error = match fetch_committed_once(shared, partitions).await {
            Ok(found) => return Ok(found),
            Err(e) => e,
        };
        if !error.is_retriable() || super::now() + backoff >= deadline {
            return Err(error);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
    }
}

async fn fetch_committed_once(
    shared: &Shared,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), Option<OffsetAndMetadata>>, CommittedError> {
    let group = &shared.config.group_id;
    let mut found: BTreeMap<(String, i32), Option<OffsetAndMetadata>> =
        partitions.iter().map(|k| (k.clone(), None)).collect();
    if partitions.is_empty() {
        return Ok(found);
    }
    let connection = shared.coordinator().await?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(
            topics
                .into_iter()
                .map(|(topic, indexes)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(topic)))
                        .with_partition_indexes(indexes)
                })
                .collect(),
        ));
    let response = match connection.send(&request).await {
        Ok(r) => r,
        Err(e) => {
            shared.coordinator_lost(&connection);
            return Err(e.into());
        }
    };
    let lost = |error: ResponseError| {
        if matches!(
            error,
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
        ) {
            shared.coordinator_lost(&connection);
        }
    };
    if let Some(error) = code(response.error_code) {
        lost(error);
        return Err(CommittedError::Broker {
            group: group.clone(),
            error,
        });
    }
    for t in &response.topics {
        for p in &t.partitions {
            let key = (t.name.to_string(), p.partition_index);
            let Some(slot) = found.get_mut(&key) else {
                continue;
            };
            if let Some(error) = code(p.error_code) {
                lost(error);
                return Err(CommittedError::Partition {
                    group: group.clone(),
                    topic: key.0,
                    partition: key.1,
                    error,
                });
            }
            if let Some(committed) = OffsetAndMetadata::fetched(
                p.committed_offset,
                p.committed_leader_epoch,
                p.metadata.as_ref(),
            ) {
                *slot = Some(committed);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Encodable;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_string(),
            group_instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn tp(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn range_gives_each_member_a_contiguous_range_per_topic_as_kafkas_javadoc_shows() {
        // RangeAssignor's javadoc: C0 and C1 subscribe to t0 and t1, three partitions each.
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let result = Assignor::Range.assign(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(
            result["C0"],
            tp(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)])
        );
        assert_eq!(result["C1"], tp(&[("t0", 2), ("t1", 2)]));
    }

    #[test]
    fn range_gives_the_extra_partitions_to_the_first_members_and_skips_unsubscribed_topics() {
        let members = [
            member("c", &["a"]),
            member("a", &["a", "b"]),
            member("b", &["a"]),
        ];
        let result = Assignor::Range.assign(&members, &counts(&[("a", 8), ("b", 2)]));
        // Topic a: 8 over [a, b, c] = 3, 3, 2; topic b only to member a.
        assert_eq!(
            result["a"],
            tp(&[("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)])
        );
        assert_eq!(result["b"], tp(&[("a", 3), ("a", 4), ("a", 5)]));
        assert_eq!(result["c"], tp(&[("a", 6), ("a", 7)]));
    }

    #[test]
    fn range_leaves_members_beyond_the_partition_count_empty_and_ignores_unknown_topics() {
        let members = [
            member("m1", &["t", "missing"]),
            member("m2", &["t"]),
            member("m3", &["t"]),
        ];
        let result = Assignor::Range.assign(&members, &counts(&[("t", 2)]));
        assert_eq!(result["m1"], tp(&[("t", 0)]));
        assert_eq!(result["m2"], tp(&[("t", 1)]));
        assert_eq!(result["m3"], Vec::<(String, i32)>::new());
    }

    #[test]
    fn round_robin_deals_partitions_in_turn_as_kafkas_javadoc_shows() {
        // RoundRobinAssignor's javadoc, first example.
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let result = Assignor::RoundRobin.assign(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(result["C0"], tp(&[("t0", 0), ("t0", 2), ("t1", 1)]));
        assert_eq!(result["C1"], tp(&[("t0", 1), ("t1", 0), ("t1", 2)]));
    }

    #[test]
    fn round_robin_skips_members_not_subscribed_to_a_topic_as_kafkas_javadoc_shows() {
        // RoundRobinAssignor's javadoc, second example: unequal subscriptions.
        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let result =
            Assignor::RoundRobin.assign(&members, &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]));
        assert_eq!(result["C0"], tp(&[("t0", 0)]));
        assert_eq!(result["C1"], tp(&[("t1", 0)]));
        assert_eq!(
            result["C2"],
            tp(&[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)])
        );
    }

    #[test]
    fn static_members_come_first_ordered_by_instance_id_as_kafkas_member_info_orders_them() {
        let mut members = vec![
            member("a-dynamic", &["t"]),
            member("z-static", &["t"]),
            member("b-static", &["t"]),
        ];
        members[1].group_instance_id = Some("instance-1".into());
        members[2].group_instance_id = Some("instance-2".into());
        let result = Assignor::Range.assign(&members, &counts(&[("t", 3)]));
        assert_eq!(result["z-static"], tp(&[("t", 0)]));
        assert_eq!(result["b-static"], tp(&[("t", 1)]));
        assert_eq!(result["a-dynamic"], tp(&[("t", 2)]));
    }

    #[test]
    fn subscriptions_and_assignments_round_trip_and_newer_versions_are_read_as_the_newest_known() {
        let topics = vec!["orders".to_string(), "payments".to_string()];
        let bytes = encode_subscription(&topics);
        assert_eq!(&bytes[..2], &SUBSCRIPTION_VERSION.to_be_bytes());
        assert_eq!(decode_subscription(&bytes), Some(topics.clone()));

        // A v3 subscription (what librdkafka and Java send), and the same body claiming v9.
        let v3 = ConsumerProtocolSubscription::default()
            .with_topics(vec![s("orders")])
            .with_owned_partitions(vec![
                kafka_protocol::messages::consumer_protocol_subscription::TopicPartition::default()
                    .with_topic(TopicName(s("orders")))
                    .with_partitions(vec![0, 1]),
            ])
            .with_generation_id(7)
            .with_rack_id(Some(s("rack-a")));
        for claimed in [3i16, 9] {
            let mut buf = BytesMut::new();
            buf.put_i16(claimed);
            v3.encode(&mut buf, 3).unwrap();
            assert_eq!(decode_subscription(&buf), Some(vec!["orders".to_string()]));
        }
        assert_eq!(decode_subscription(&[0]), None);

        let partitions = tp(&[("orders", 2), ("orders", 0), ("payments", 1)]);
        for version in 0..=3 {
            let bytes = encode_assignment(&partitions, version);
            assert_eq!(
                decode_assignment(&bytes),
                Some(tp(&[("orders", 0), ("orders", 2), ("payments", 1)]))
            );
        }
        assert_eq!(decode_assignment(&[]), Some(Vec::new()));
    }

    #[test]
    fn not_coordinator_from_an_offset_commit_may_follow_the_append_of_the_offset_record() {
        // Kafka's coordinator appended the offset record, then lost `__consumer_offsets` while
        // acks=all waited: NOT_LEADER_OR_FOLLOWER from the append reaches the client as
        // NOT_COORDINATOR. The commit may have been applied.
        assert!(is_ambiguous(ResponseError::NotCoordinator));
        assert!(!is_retriable_refusal(ResponseError::NotCoordinator));
    }

    #[test]
    fn commit_outcomes_carry_the_kafka_error_code_as_a_value() {
        let rejected = CommitError::Rejected {
            error: ResponseError::IllegalGeneration,
        };
        assert_eq!(rejected.code(), Some(22));
        let partly = CommitError::PartlyCommitted {
            committed: vec![("t".into(), 0)],
            error: Box::new(rejected.clone()),
        };
        assert_eq!(partly.code(), Some(22));
        assert_eq!(CommitError::NotInGroup.code(), None);
        let ambiguous = CommitUnknownReason::AmbiguousError(ResponseError::NotCoordinator);
        assert_eq!(ambiguous.code(), Some(16));
        assert_eq!(
            CommitUnknownReason::Timeout("no answer".into()).code(),
            None
        );
    }

    #[test]
    fn a_group_consumer_and_its_commit_handles_can_move_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<GroupConsumer>();
        send_sync::<CommitHandle>();
        send_sync::<CommitOutcome>();
    }

    #[test]
    fn only_codes_the_coordinator_can_return_after_writing_are_ambiguous() {
        for error in [
            ResponseError::IllegalGeneration,
            ResponseError::UnknownMemberId,
            ResponseError::RebalanceInProgress,
            ResponseError::OffsetMetadataTooLarge,
            ResponseError::CoordinatorLoadInProgress,
            ResponseError::FencedInstanceId,
        ] {
            assert!(!is_ambiguous(error), "{error:?}");
        }
        for error in [
            ResponseError::CoordinatorNotAvailable,
            ResponseError::NotCoordinator,
            ResponseError::RequestTimedOut,
            ResponseError::UnknownServerError,
            ResponseError::Unknown(-42),
        ] {
            assert!(is_ambiguous(error), "{error:?}");
        }
    }
}
