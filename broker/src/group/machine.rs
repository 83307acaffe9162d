//! One consumer group's membership: Kafka's classic rebalance protocol as a state machine.
//!
//! ```text
//!            join                  all joined / rebalance timeout     leader's SyncGroup, stored
//!  Empty ──────────▶ PreparingRebalance ─────────────────▶ CompletingRebalance ─────────▶ Stable
//!    ▲                  ▲    │ nobody left (stored)             │ join / leave / expiry      │
//!    └──────────────────┼────┘                                  ▼                            │
//!                       └──────────────────── join, leave, session expiry ◀──────────────────┘
//!  Dead: the group was deleted (DeleteGroups) or unloaded; it answers nothing.
//! ```
//!
//! Transitions are data: [`Group::step`] takes an [`Input`] and the time and returns
//! [`Outputs`]: answers to requests (by the [`RequestId`] the caller gave them), the membership
//! record to store in `__consumer_offsets`, and the group's next deadline for the timer. It
//! never sleeps, reads a clock, sends on a channel or touches a runtime, so a test drives it
//! step by step (see the tests below) and the coordinator only carries its outputs out.
//!
//! Requests that must wait park inside the group by id: a JoinGroup until every member rejoined,
//! a SyncGroup until the leader's assignments are stored, a LeaveGroup that empties the group
//! (and a static member's takeover) until the new membership is stored, as Kafka's
//! `storeGroup` callbacks do. The coordinator feeds [`Input::Stored`] or [`Input::NotStored`]
//! back once the record is durable or failed; the step that consumes it answers them. A
//! restart loads what was stored last, so nothing a member was told can be undone by one.
//!
//! Static membership (KIP-345): a member with a `group.instance.id` needs no KIP-394 round trip;
//! when it rejoins without a member id (a restart) it takes over its old membership under a new
//! member id, with no rebalance if the group is stable and its protocols are unchanged. Requests
//! carrying the instance id with the old member id get FENCED_INSTANCE_ID.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Kafka's group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Why a group operation was refused. Mapped to Kafka codes in `protocol::errors`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// KIP-394: the first join gets an id to rejoin with.
    #[error("member id required; rejoin as {0}")]
    MemberIdRequired(String),
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("generation {got} is not the group's {current}")]
    IllegalGeneration { got: i32, current: i32 },
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("no protocol in common with the group")]
    InconsistentGroupProtocol,
    #[error("session timeout {0} ms outside the allowed range")]
    InvalidSessionTimeout(i32),
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("the group still has members")]
    NonEmptyGroup,
    #[error("no such group")]
    GroupIdNotFound,
    #[error("the coordinator is not available for this group")]
    CoordinatorNotAvailable,
    /// This broker does not coordinate the group (its offsets partition is led elsewhere, or
    /// was unloaded, or the broker is shutting down): ask FindCoordinator again.
    #[error("this broker does not coordinate the group")]
    NotCoordinator,
    /// The group's offsets partition is being loaded here: retry shortly.
    #[error("the group's offsets partition is loading")]
    CoordinatorLoadInProgress,
    /// KIP-345: another member id now holds this group.instance.id.
    #[error("fenced: the group instance id belongs to another member")]
    FencedInstanceId,
}

/// Kafka's `group.min.session.timeout.ms` is 6 s; we accept shorter sessions (tests use them).
pub const MIN_SESSION_TIMEOUT_MS: i32 = 1_000;
/// Kafka's `group.max.session.timeout.ms`.
pub const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

/// Milliseconds since the epoch (the broker's clock).
pub type Millis = i64;

/// Names a request the caller will answer with what the group says about it.
pub type RequestId = u64;

/// Names one membership record handed out in [`Outputs::store`].
pub type StoreId = u64;

/// What a completed JoinGroup tells a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata for the chosen protocol): the leader's only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

pub type JoinOutcome = Result<JoinResult, GroupError>;
/// The member's assignment, or why there is none.
pub type SyncOutcome = Result<Bytes, GroupError>;

/// A JoinGroup as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394 (JoinGroup v4+): a join without a member id gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// A SyncGroup as the coordinator sees it.
#[derive(Clone, Debug, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// v5+: must match the group's, when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's: every member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

/// Everything that moves a group. Each input that expects an answer carries the id the caller
/// will answer it by; the answer may come in the same step's outputs or in a later one's.
#[derive(Clone, Debug)]
pub enum Input {
    Join {
        id: RequestId,
        request: JoinRequest,
        /// Makes generated member ids unguessable (the caller draws it from its randomness).
        salt: u128,
    },
    Sync {
        id: RequestId,
        request: SyncRequest,
    },
    Heartbeat {
        id: RequestId,
        member_id: String,
        group_instance_id: Option<String>,
        generation_id: i32,
    },
    /// One member leaves (LeaveGroup v3+ names several: one input each). v3+ may name a static
    /// member by its instance id alone (an empty member id).
    Leave {
        id: RequestId,
        member_id: String,
        group_instance_id: Option<String>,
    },
    /// May this member commit offsets now? Answered at once; the caller appends the offsets
    /// before it lets any other input reach the group, so the answer still holds in the log.
    Commit {
        id: RequestId,
        member_id: String,
        group_instance_id: Option<String>,
        generation_id: i32,
    },
    /// The record of [`Outputs::store`] with this id is durable.
    Stored {
        store: StoreId,
    },
    /// The record of [`Outputs::store`] with this id could not be stored.
    NotStored {
        store: StoreId,
        error: GroupError,
    },
    /// Time passed: sessions, unused KIP-394 ids, the initial delay and rebalance deadlines.
    Tick,
    /// DeleteGroups: the group must be empty.
    Delete {
        id: RequestId,
    },
    /// The coordinator lets go of the group (shutdown): every parked request is answered
    /// NOT_COORDINATOR now, as Kafka's `onGroupUnloaded` does, and the group is Dead.
    Unload,
}

/// An answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Join(JoinOutcome),
    Sync(SyncOutcome),
    /// Heartbeat, LeaveGroup, OffsetCommit (the permission) and DeleteGroups.
    Done(Result<(), GroupError>),
}

impl Answer {
    /// The same kind of answer, failed with `error`.
    pub fn failed(&self, error: &GroupError) -> Answer {
        match self {
            Answer::Join(_) => Answer::Join(Err(error.clone())),
            Answer::Sync(_) => Answer::Sync(Err(error.clone())),
            Answer::Done(_) => Answer::Done(Err(error.clone())),
        }
    }
}

/// The membership record to store in `__consumer_offsets`, and the id its outcome comes back
/// with. `None` is a tombstone: the group is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    pub id: StoreId,
    pub record: Option<GroupSnapshot>,
}

/// What one step asks the world to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    /// Answers to send now, in order.
    pub answers: Vec<(RequestId, Answer)>,
    /// Store this before anything else reaches the group's records (the caller keeps the
    /// order), and feed its outcome back with [`Input::Stored`] or [`Input::NotStored`].
    pub store: Option<Store>,
    /// Step the group with [`Input::Tick`] at this time (or later: a tick before it changes
    /// nothing). `None`: no deadline pending.
    pub next_deadline: Option<Millis>,
}

impl Outputs {
    /// The answer to request `id`, if this step gave one.
    pub fn answer_to(&self, id: RequestId) -> Option<&Answer> {
        self.answers
            .iter()
            .find(|(to, _)| *to == id)
            .map(|(_, a)| a)
    }
}

#[derive(Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
    session_deadline: Millis,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn touch(&mut self, now: Millis) {
        self.session_deadline = now + ms(self.session_timeout_ms);
        assert!(self.session_deadline >= now);
    }
}

fn ms(v: i32) -> i64 {
    i64::from(v.max(0))
}

/// What waits for a membership record other than a generation's assignments.
#[derive(Debug, Default)]
struct AfterStore {
    /// Answered as given once stored; with the store's error if it fails.
    answers: Vec<(RequestId, Answer)>,
    /// A static member's takeover (old id, new id): undone if the store fails, as Kafka does.
    replaced: Option<(String, String)>,
}

/// One group's membership and rebalance state.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// KIP-345: group.instance.id → the member id that holds it.
    pub static_members: BTreeMap<String, String>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, and when they expire unused.
    pending: BTreeMap<String, Millis>,
    /// When the current PreparingRebalance or CompletingRebalance phase gives up waiting.
    rebalance_deadline: Option<Millis>,
    next_member: u64,
    /// When the group entered its current state (Kafka's `currentStateTimestamp`): offsets of
    /// an empty group expire `offsets.retention.minutes` after it became empty (KIP-211).
    pub state_since: Millis,
    /// `group.initial.rebalance.delay.ms`: a new group's first join waits this long for more
    /// members, extended by the same again for each that arrives, up to the rebalance timeout.
    pub initial_rebalance_delay_ms: i64,
    /// The initial delay in progress: its current end, its hard limit, and whether a member
    /// joined since the delay was last (re)started.
    initial_delay: Option<InitialDelay>,
    /// The store holding the current generation's assignments, while it is under way.
    awaiting_assignments_store: Option<(StoreId, i32)>,
    /// Other stores under way and what waits for each.
    after_store: BTreeMap<StoreId, AfterStore>,
    next_store: StoreId,
    /// The last store handed out; the membership is clean when it is durable.
    last_store: Option<StoreId>,
    /// The membership differs from the last durable record in a way a restart would show (a
    /// store failed or was never made): the coordinator's maintenance stores it again.
    pub dirty: bool,
    /// The outputs of the step under way.
    out: Outputs,
}

/// A group's membership as `__consumer_offsets` stores it (see `offsets`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: Option<String>,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_since_ms: Millis,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    until: Millis,
    limit: Millis,
    new_member_added: bool,
}

impl Group {
    /// An empty group, created at `now`, without an initial rebalance delay.
    pub fn new(id: &str, now: Millis) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: None,
            next_member: 0,
            state_since: now,
            initial_rebalance_delay_ms: 0,
            initial_delay: None,
            awaiting_assignments_store: None,
            after_store: BTreeMap::new(),
            next_store: 1,
            last_store: None,
            dirty: false,
            out: Outputs::default(),
        }
    }

    /// Applies one input at `now` and returns what the world must do about it.
    pub fn step(&mut self, input: Input, now: Millis) -> Outputs {
        assert!(
            self.out == Outputs::default(),
            "a step starts with no outputs"
        );
        match input {
            Input::Join { id, request, salt } => self.join(id, request, now, salt),
            Input::Sync { id, request } => self.sync(id, request, now),
            Input::Heartbeat {
                id,
                member_id,
                group_instance_id,
                generation_id,
            } => {
                let result = self
                    .check_instance(group_instance_id.as_deref(), &member_id)
                    .and_then(|()| self.heartbeat(&member_id, generation_id, now));
                self.answer(id, Answer::Done(result));
            }
            Input::Leave {
                id,
                member_id,
                group_instance_id,
            } => self.leave(id, &member_id, group_instance_id.as_deref(), now),
            Input::Commit {
                id,
                member_id,
                group_instance_id,
                generation_id,
            } => {
                let result = self
                    .check_instance(group_instance_id.as_deref(), &member_id)
                    .and_then(|()| self.check_commit(&member_id, generation_id));
                self.answer(id, Answer::Done(result));
            }
            Input::Stored { store } => self.stored(store, now),
            Input::NotStored { store, error } => self.not_stored(store, error, now),
            Input::Tick => self.tick(now),
            Input::Delete { id } => {
                let result = self.delete();
                self.answer(id, Answer::Done(result));
            }
            Input::Unload => self.unload(),
        }
        self.check_invariants();
        let mut out = std::mem::take(&mut self.out);
        out.next_deadline = self.next_deadline();
        out
    }

    fn answer(&mut self, id: RequestId, answer: Answer) {
        assert!(
            self.out.answer_to(id).is_none(),
            "request {id} answered twice in one step"
        );
        // O(members): a shadow check for debug builds and the simulator's tests.
        debug_assert!(
            !self.is_parked(id),
            "request {id} answered while still parked"
        );
        self.out.answers.push((id, answer));
    }

    /// Is request `id` waiting inside the group (for a rebalance or a store)?
    fn is_parked(&self, id: RequestId) -> bool {
        self.members
            .values()
            .any(|m| m.awaiting_join == Some(id) || m.awaiting_sync == Some(id))
            || self
                .after_store
                .values()
                .any(|a| a.answers.iter().any(|(to, _)| *to == id))
    }

    /// A request is answered in this step or parked, never both and never neither.
    fn assert_answered_or_parked(&self, id: RequestId) {
        let answered = self.out.answer_to(id).is_some();
        assert!(
            answered != self.is_parked(id),
            "request {id}: answered {answered}"
        );
    }

    /// Hands out the group's current membership to store (or its tombstone when Dead).
    fn store(&mut self) -> StoreId {
        assert!(self.out.store.is_none(), "one store per step");
        let id = self.next_store;
        self.next_store += 1;
        assert!(self.last_store.is_none_or(|last| last < id));
        self.last_store = Some(id);
        let record = (self.state != GroupState::Dead).then(|| self.snapshot());
        self.out.store = Some(Store { id, record });
        // Under way until its outcome comes back: the group is not forgotten meanwhile.
        self.after_store.insert(id, AfterStore::default());
        assert!(self.store_under_way());
        id
    }

    /// The invariants every step must leave behind.
    fn check_invariants(&self) {
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                assert!(self.members.is_empty(), "{} has members", self.state.name());
                assert!(self.awaiting_assignments_store.is_none());
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(
                    !self.members.is_empty(),
                    "{} without members",
                    self.state.name()
                );
                let leader = self.leader.as_ref().expect("a generation has a leader");
                assert!(self.members.contains_key(leader), "the leader is a member");
                assert!(self.protocol_name.is_some(), "a generation has a protocol");
            }
            GroupState::PreparingRebalance => {
                assert!(self.awaiting_assignments_store.is_none());
            }
        }
        if self.state == GroupState::Stable {
            assert!(self.awaiting_assignments_store.is_none());
            assert!(self.members.values().all(|m| m.awaiting_join.is_none()));
            assert!(self.members.values().all(|m| m.awaiting_sync.is_none()));
        }
        for (instance, holder) in &self.static_members {
            let member = self
                .members
                .get(holder)
                .expect("static members are members");
            assert_eq!(member.group_instance_id.as_deref(), Some(instance.as_str()));
        }
        assert!(self.generation_id >= 0);
    }

    /// When the next [`Input::Tick`] can change something.
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.state == GroupState::Dead {
            return None;
        }
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.session_deadline);
        let delay = self.initial_delay.map(|d| d.until);
        sessions
            .chain(self.pending.values().copied())
            .chain(delay)
            .chain(self.rebalance_deadline)
            .min()
    }

    /// The membership to store: members with their assignments.
    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_since_ms: self.state_since,
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m.protocols.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// A group as stored, after a restart: Stable in its stored generation with its members
    /// (whose sessions start now), or Empty. Members that died meanwhile expire as usual.
    pub fn restore(id: &str, stored: GroupSnapshot, now: Millis) -> Group {
        let mut group = Group::new(id, now);
        group.protocol_type = stored.protocol_type;
        group.generation_id = stored.generation_id;
        group.state_since = stored.state_since_ms;
        let leader_is_member = stored
            .leader
            .as_ref()
            .is_some_and(|l| stored.members.iter().any(|m| m.member_id == *l));
        if stored.members.is_empty() || !leader_is_member || stored.protocol_name.is_none() {
            if !stored.members.is_empty() {
                // Never written by this broker; a restart must not fail on it.
                tracing::warn!(
                    group = id,
                    "stored membership without a leader loaded as empty"
                );
            }
            group.check_invariants();
            return group;
        }
        group.protocol_name = stored.protocol_name;
        group.leader = stored.leader;
        for m in stored.members {
            if let Some(instance) = &m.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let mut member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: m.protocols,
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                session_deadline: now,
            };
            member.touch(now);
            group.members.insert(m.member_id, member);
        }
        group.state = GroupState::Stable;
        group.check_invariants();
        group
    }

    /// A store handed out earlier is durable: whoever waited for it is answered.
    fn stored(&mut self, store: StoreId, now: Millis) {
        assert!(
            store < self.next_store,
            "store {store} was never handed out"
        );
        if self.last_store == Some(store) {
            self.dirty = false;
        }
        if let Some(after) = self.after_store.remove(&store) {
            for (id, answer) in after.answers {
                self.answer(id, answer);
            }
        }
        match self.awaiting_assignments_store {
            Some((s, generation)) if s == store => {
                // Stored before any member learns its assignment: a restart brings this
                // generation back, so no member of an older one can commit after it.
                assert_eq!(self.state, GroupState::CompletingRebalance);
                assert_eq!(self.generation_id, generation);
                self.awaiting_assignments_store = None;
                let mut answers = Vec::new();
                for member in self.members.values_mut() {
                    if let Some(id) = member.awaiting_sync.take() {
                        answers.push((id, Answer::Sync(Ok(member.assignment.clone()))));
                    }
                }
                for (id, answer) in answers {
                    self.answer(id, answer);
                }
                self.set_state(GroupState::Stable, now);
                self.rebalance_deadline = None;
            }
            // A rebalance began meanwhile (it answered the syncs), or it was another record.
            _ => {}
        }
    }

    /// A store failed: who waited for it gets `error`, the leader's assignments are dropped
    /// (the members rejoin, as Kafka's `resetAndPropagateAssignmentError`), a static takeover
    /// is undone, and the membership is left dirty for the coordinator to store again.
    fn not_stored(&mut self, store: StoreId, error: GroupError, now: Millis) {
        assert!(
            store < self.next_store,
            "store {store} was never handed out"
        );
        self.dirty = self.state != GroupState::Dead;
        if let Some(after) = self.after_store.remove(&store) {
            if let Some((old, new)) = after.replaced {
                self.undo_replacement(&old, &new, now);
            }
            for (id, answer) in after.answers {
                self.answer(id, answer.failed(&error));
            }
        }
        assert!(!self.after_store.contains_key(&store));
        if let Some((s, _)) = self.awaiting_assignments_store {
            if s == store {
                self.awaiting_assignments_store = None;
                let mut answers = Vec::new();
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                    if let Some(id) = member.awaiting_sync.take() {
                        answers.push((id, Answer::Sync(Err(error.clone()))));
                    }
                }
                for (id, answer) in answers {
                    self.answer(id, answer);
                }
            }
        }
    }

    fn unload(&mut self) {
        let mut answers = Vec::new();
        for member in self.members.values_mut() {
            if let Some(id) = member.awaiting_join.take() {
                answers.push((id, Answer::Join(Err(GroupError::NotCoordinator))));
            }
            if let Some(id) = member.awaiting_sync.take() {
                answers.push((id, Answer::Sync(Err(GroupError::NotCoordinator))));
            }
        }
        for (_, after) in std::mem::take(&mut self.after_store) {
            for (id, answer) in after.answers {
                answers.push((id, answer.failed(&GroupError::NotCoordinator)));
            }
        }
        for (id, answer) in answers {
            self.answer(id, answer);
        }
        self.members.clear();
        self.static_members.clear();
        self.pending.clear();
        self.awaiting_assignments_store = None;
        self.initial_delay = None;
        self.rebalance_deadline = None;
        self.state = GroupState::Dead;
        assert!(!self.store_under_way());
        assert!(self.members.is_empty() && self.pending.is_empty());
    }

    fn set_state(&mut self, state: GroupState, now: Millis) {
        if self.state != state {
            self.state = state;
            self.state_since = now;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Does the group wait for a store it handed out?
    pub fn store_under_way(&self) -> bool {
        self.awaiting_assignments_store.is_some() || !self.after_store.is_empty()
    }

    /// The coordinator's maintenance asks for a dirty group's record (nothing waits on it).
    /// Only an Empty or Stable group is stored this way: a record mid-rebalance would come
    /// back after a restart as a generation nobody was told about.
    pub fn store_if_dirty(&mut self) -> Option<Store> {
        let settled = matches!(self.state, GroupState::Empty | GroupState::Stable);
        if !self.dirty || !settled || self.store_under_way() {
            return None;
        }
        self.store();
        let store = self.out.store.take();
        assert!(store.is_some());
        assert!(self.out.answers.is_empty());
        store
    }

    fn new_member_id(&mut self, client_id: &str, salt: u128) -> String {
        self.next_member += 1;
        // The counter makes ids unique within the group; the salt makes them unguessable.
        let id = format!(
            "{client_id}-{}-{}",
            self.next_member,
            uuid::Uuid::from_u128(salt).simple()
        );
        assert!(!self.members.contains_key(&id) && !self.pending.contains_key(&id));
        id
    }

    /// Protocol names every member (and `protocols`, if given) supports.
    fn common_protocols(
        &self,
        except: Option<&str>,
        extra: Option<&[(String, Bytes)]>,
    ) -> BTreeSet<String> {
        let mut sets = self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != except)
            .map(|m| {
                m.protocols
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect::<BTreeSet<_>>()
            })
            .chain(extra.map(|p| p.iter().map(|(n, _)| n.clone()).collect()));
        let Some(first) = sets.next() else {
            return BTreeSet::new();
        };
        sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect())
    }

    fn join(&mut self, id: RequestId, request: JoinRequest, now: Millis, salt: u128) {
        let members_before = self.members.len();
        if let Err(e) = self.join_inner(id, request, now, salt) {
            self.answer(id, Answer::Join(Err(e)));
            assert!(
                self.members.len() <= members_before,
                "a refused join adds nobody"
            );
        }
        self.assert_answered_or_parked(id);
    }

    /// A JoinGroup; `Err` answers it at once.
    fn join_inner(
        &mut self,
        id: RequestId,
        request: JoinRequest,
        now: Millis,
        salt: u128,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&request.session_timeout_ms)
        {
            return Err(GroupError::InvalidSessionTimeout(
                request.session_timeout_ms,
            ));
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let known = self.members.contains_key(&request.member_id);
        // Everyone else in the group must share the protocol type and a protocol with it.
        let others_agree = self.members.keys().all(|id| *id == request.member_id)
            || (self.protocol_type.as_deref() == Some(request.protocol_type.as_str())
                && !self
                    .common_protocols(Some(&request.member_id), Some(&request.protocols))
                    .is_empty());
        if !others_agree {
            return Err(GroupError::InconsistentGroupProtocol);
        }

        if let Some(instance) = request.group_instance_id.clone() {
            match self.static_members.get(&instance).cloned() {
                Some(old) if request.member_id.is_empty() => {
                    self.replace_static_member(id, &old, request, now, salt);
                    return Ok(());
                }
                Some(old) if old != request.member_id => {
                    return Err(GroupError::FencedInstanceId);
                }
                None if request.member_id.is_empty() => {
                    // Static members skip the KIP-394 round trip, as in Kafka.
                    let member_id = self.new_member_id(&request.client_id, salt);
                    self.static_members.insert(instance, member_id.clone());
                    self.add_member(id, member_id, request, now);
                    return Ok(());
                }
                _ => {}
            }
        }
        if request.member_id.is_empty() {
            let member_id = self.new_member_id(&request.client_id, salt);
            if request.require_known_member_id {
                self.pending
                    .insert(member_id.clone(), now + ms(request.session_timeout_ms));
                return Err(GroupError::MemberIdRequired(member_id));
            }
            self.add_member(id, member_id, request, now);
            return Ok(());
        }
        if self.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            self.add_member(id, member_id, request, now);
            return Ok(());
        }
        if !known {
            return Err(GroupError::UnknownMemberId);
        }
        let member_id = request.member_id.clone();
        let member = self.members.get_mut(&member_id).expect("known member");
        let changed = member.protocols != request.protocols;
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.touch(now);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.park_join(&member_id, id);
                self.try_complete_join(now);
            }
            GroupState::CompletingRebalance if !changed => {
                // A retry of a join whose answer was lost: the same answer again.
                let result = self.join_result(&member_id);
                self.answer(id, Answer::Join(Ok(result)));
            }
            GroupState::Stable if !changed && !is_leader => {
                let result = self.join_result(&member_id);
                self.answer(id, Answer::Join(Ok(result)));
            }
            _ => {
                self.park_join(&member_id, id);
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
        }
        Ok(())
    }

    /// A static member rejoined without its member id (it restarted): it takes over the old
    /// membership, assignment included, under a new member id; the old id is fenced.
    fn replace_static_member(
        &mut self,
        id: RequestId,
        old_id: &str,
        request: JoinRequest,
        now: Millis,
        salt: u128,
    ) {
        let new_id = self.new_member_id(&request.client_id, salt);
        let mut member = self
            .members
            .remove(old_id)
            .expect("static members are members");
        assert_eq!(member.group_instance_id, request.group_instance_id);
        if let Some(w) = member.awaiting_join.take() {
            self.answer(w, Answer::Join(Err(GroupError::FencedInstanceId)));
        }
        if let Some(w) = member.awaiting_sync.take() {
            self.answer(w, Answer::Sync(Err(GroupError::FencedInstanceId)));
        }
        let changed = member.protocols != request.protocols;
        member.member_id = new_id.clone();
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.protocols = request.protocols;
        member.touch(now);
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = request.group_instance_id {
            self.static_members.insert(instance, new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        assert!(!self.members.contains_key(old_id), "the old id is fenced");
        assert!(self.static_members.values().all(|m| m != old_id));
        match self.state {
            GroupState::Stable if !changed => {
                // Kafka stores the new member id before the member learns it: a restart
                // must not bring back the fenced id as the instance's holder.
                let result = self.join_result(&new_id);
                let store = self.store();
                let after = self.after_store.get_mut(&store).expect("just handed out");
                after.answers.push((id, Answer::Join(Ok(result))));
                after.replaced = Some((old_id.to_string(), new_id));
            }
            _ => {
                self.park_join(&new_id, id);
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
        }
    }

    /// The takeover's store failed: the old member id holds the instance again.
    fn undo_replacement(&mut self, old_id: &str, new_id: &str, now: Millis) {
        let Some(mut member) = self.members.remove(new_id) else {
            return; // the new member is gone already (left or expired)
        };
        assert!(!self.members.contains_key(old_id));
        member.member_id = old_id.to_string();
        member.touch(now);
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), old_id.to_string());
        }
        if self.leader.as_deref() == Some(new_id) {
            self.leader = Some(old_id.to_string());
        }
        self.members.insert(old_id.to_string(), member);
        assert!(!self.static_members.values().any(|m| m == new_id));
    }

    /// KIP-345: a request naming a group.instance.id must come from the member holding it.
    pub fn check_instance(
        &self,
        instance: Option<&str>,
        member_id: &str,
    ) -> Result<(), GroupError> {
        match instance.and_then(|i| self.static_members.get(i)) {
            Some(holder) if holder != member_id => Err(GroupError::FencedInstanceId),
            _ => Ok(()),
        }
    }

    /// Removes a member, and its group.instance.id if it held one.
    fn drop_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        assert!(!self.static_members.values().any(|m| m == member_id));
        Some(member)
    }

    fn park_join(&mut self, member_id: &str, id: RequestId) {
        assert_ne!(self.state, GroupState::Dead);
        let member = self.members.get_mut(member_id).expect("member");
        if let Some(old) = member.awaiting_join.replace(id) {
            assert_ne!(old, id);
            // Kafka answers a superseded join with UNKNOWN_MEMBER_ID... a plain rejoin hint is
            // kinder and equally safe: the client's newer request is the one that counts.
            self.answer(old, Answer::Join(Err(GroupError::RebalanceInProgress)));
        }
    }

    fn add_member(&mut self, id: RequestId, member_id: String, request: JoinRequest, now: Millis) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let mut member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(id),
            awaiting_sync: None,
            session_deadline: now,
        };
        member.touch(now);
        let before = self.members.len();
        self.members.insert(member_id, member);
        assert_eq!(self.members.len(), before + 1, "member ids are unique");
        if let Some(delay) = &mut self.initial_delay {
            delay.new_member_added = true;
        }
        self.prepare_rebalance(now);
        self.try_complete_join(now);
    }

    /// Starts a rebalance: members must rejoin; syncs in flight are told to rejoin.
    fn prepare_rebalance(&mut self, now: Millis) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        assert_ne!(
            self.state,
            GroupState::Dead,
            "a dead group does not rebalance"
        );
        self.awaiting_assignments_store = None;
        let mut answers = Vec::new();
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(id) = member.awaiting_sync.take() {
                answers.push((id, Answer::Sync(Err(GroupError::RebalanceInProgress))));
            }
        }
        for (id, answer) in answers {
            self.answer(id, answer);
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline = Some(now + ms(timeout));
        if self.state == GroupState::Empty && self.initial_rebalance_delay_ms > 0 {
            // Kafka's InitialDelayedJoin: give the other members of a starting group a moment,
            // so they are all assigned in the first generation rather than one rebalance each.
            let delay = self.initial_rebalance_delay_ms;
            self.initial_delay = Some(InitialDelay {
                until: now + delay,
                limit: now + delay.max(ms(timeout)),
                new_member_added: false,
            });
        }
        self.set_state(GroupState::PreparingRebalance, now);
        assert!(self.members.values().all(|m| m.awaiting_sync.is_none()));
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn try_complete_join(&mut self, now: Millis) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.all_joined()
        {
            self.complete_join(now);
        }
    }

    /// Ends PreparingRebalance: members that did not rejoin are gone, the next generation
    /// starts, and every waiting join is answered. A group left with nobody is Empty and its
    /// membership is stored (Kafka's `onCompleteJoin`): a restart must not bring back members
    /// that left.
    fn complete_join(&mut self, now: Millis) {
        assert_eq!(self.state, GroupState::PreparingRebalance);
        self.initial_delay = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.drop_member(&id);
        }
        self.generation_id += 1;
        if self.members.is_empty() {
            // The protocol type stays, as in Kafka: it tells expiry this was a consumer group.
            self.set_state(GroupState::Empty, now);
            self.protocol_name = None;
            self.leader = None;
            self.rebalance_deadline = None;
            self.dirty = true;
            self.store();
            return;
        }
        self.protocol_name = Some(self.select_protocol());
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now);
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline = Some(now + ms(timeout));
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in ids {
            let result = self.join_result(&member_id);
            let member = self.members.get_mut(&member_id).expect("member");
            member.touch(now);
            let waiting = member.awaiting_join.take().expect("every member rejoined");
            self.answer(waiting, Answer::Join(Ok(result)));
        }
        assert!(self.members.values().all(|m| m.awaiting_join.is_none()));
        assert!(
            self.pending.is_empty(),
            "every KIP-394 id joined or expired"
        );
    }

    /// Kafka's vote: each member votes for its most preferred protocol among those all support.
    fn select_protocol(&self) -> String {
        let candidates = self.common_protocols(None, None);
        assert!(!candidates.is_empty(), "joins keep a protocol in common");
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n))
            {
                *votes.entry(name).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        let chosen = votes
            .into_iter()
            .find(|&(_, v)| v == best)
            .map(|(n, _)| n.to_string())
            .expect("a candidate");
        assert!(candidates.contains(&chosen));
        chosen
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// SyncGroup. The leader's call carries everyone's assignment; they are stored before any
    /// member learns its own.
    fn sync(&mut self, id: RequestId, request: SyncRequest, now: Millis) {
        self.sync_inner(id, request, now);
        self.assert_answered_or_parked(id);
        assert!(
            self.awaiting_assignments_store.is_none()
                || self.state == GroupState::CompletingRebalance
        );
    }

    fn sync_inner(&mut self, id: RequestId, request: SyncRequest, now: Millis) {
        let member_id = request.member_id.as_str();
        let check = self
            .check_instance(request.group_instance_id.as_deref(), member_id)
            .and_then(|()| self.check_member(member_id, request.generation_id));
        if let Err(e) = check {
            self.answer(id, Answer::Sync(Err(e)));
            return;
        }
        // v5+: a protocol type or name that is not the group's (Kafka checks it first).
        let mismatch = |given: &Option<String>, have: &Option<String>| {
            given.is_some() && given.as_deref() != have.as_deref()
        };
        if mismatch(&request.protocol_type, &self.protocol_type)
            || mismatch(&request.protocol_name, &self.protocol_name)
        {
            self.answer(id, Answer::Sync(Err(GroupError::InconsistentGroupProtocol)));
            return;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                self.answer(id, Answer::Sync(Err(GroupError::UnknownMemberId)));
            }
            GroupState::PreparingRebalance => {
                self.answer(id, Answer::Sync(Err(GroupError::RebalanceInProgress)));
            }
            GroupState::Stable => {
                let member = self.members.get_mut(member_id).expect("checked");
                member.touch(now);
                let assignment = member.assignment.clone();
                self.answer(id, Answer::Sync(Ok(assignment)));
            }
            GroupState::CompletingRebalance => {
                let member = self.members.get_mut(member_id).expect("checked");
                member.touch(now);
                if let Some(old) = member.awaiting_sync.replace(id) {
                    self.answer(old, Answer::Sync(Err(GroupError::RebalanceInProgress)));
                }
                let is_leader = self.leader.as_deref() == Some(member_id);
                if is_leader && self.awaiting_assignments_store.is_none() {
                    let mut given: BTreeMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = given.remove(&member.member_id).unwrap_or_default();
                    }
                    let store = self.store();
                    self.awaiting_assignments_store = Some((store, self.generation_id));
                }
            }
        }
    }

    fn check_member(&self, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration {
                got: generation_id,
                current: self.generation_id,
            });
        }
        Ok(())
    }

    /// Heartbeat: keeps the session alive and tells the member whether to rejoin.
    fn heartbeat(
        &mut self,
        member_id: &str,
        generation_id: i32,
        now: Millis,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, generation_id)?;
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                self.members.get_mut(member_id).expect("checked").touch(now);
                Err(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.get_mut(member_id).expect("checked").touch(now);
                Ok(())
            }
        }
    }

    /// LeaveGroup for one member. If it empties the group, the answer waits for the empty
    /// group to be stored.
    fn leave(&mut self, id: RequestId, member_id: &str, instance: Option<&str>, now: Millis) {
        // v3+ may name a static member by its group.instance.id alone.
        let member_id = match instance.and_then(|i| self.static_members.get(i)) {
            Some(holder) if member_id.is_empty() => holder.clone(),
            _ => member_id.to_string(),
        };
        let result = if self.state == GroupState::Dead {
            Err(GroupError::CoordinatorNotAvailable)
        } else if let Err(e) = self.check_instance(instance, &member_id) {
            Err(e)
        } else if self.pending.remove(&member_id).is_some() {
            self.try_complete_join(now);
            Ok(())
        } else {
            self.remove_member(&member_id, now)
        };
        match (&result, self.out.store.as_ref().map(|s| s.id)) {
            (Ok(()), Some(store)) => {
                // The leave emptied the group: answered once that is stored.
                assert_eq!(self.state, GroupState::Empty);
                let after = self.after_store.get_mut(&store).expect("a store waits");
                after.answers.push((id, Answer::Done(Ok(()))));
            }
            _ => self.answer(id, Answer::Done(result)),
        }
        assert!(!self.members.contains_key(&member_id) || self.out.answer_to(id).is_some());
        self.assert_answered_or_parked(id);
    }

    fn remove_member(&mut self, member_id: &str, now: Millis) -> Result<(), GroupError> {
        let Some(mut member) = self.drop_member(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if let Some(id) = member.awaiting_join.take() {
            self.answer(id, Answer::Join(Err(GroupError::UnknownMemberId)));
        }
        if let Some(id) = member.awaiting_sync.take() {
            self.answer(id, Answer::Sync(Err(GroupError::UnknownMemberId)));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
        assert!(!self.members.contains_key(member_id));
        Ok(())
    }

    /// Expires sessions, unused KIP-394 ids and rebalance deadlines that `now` has passed.
    fn tick(&mut self, now: Millis) {
        if self.state == GroupState::Dead {
            return;
        }
        assert!(self.initial_delay.is_none_or(|d| d.until <= d.limit));
        if let Some(delay) = self.initial_delay {
            if delay.until <= now {
                if delay.new_member_added && now < delay.limit {
                    self.initial_delay = Some(InitialDelay {
                        until: (now + self.initial_rebalance_delay_ms).min(delay.limit),
                        limit: delay.limit,
                        new_member_added: false,
                    });
                } else {
                    self.initial_delay = None;
                    self.try_complete_join(now);
                }
            }
        }
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        if self.pending.len() != before {
            self.try_complete_join(now);
        }
        // A member waiting in JoinGroup is bounded by the rebalance timeout, not its session.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.session_deadline <= now)
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "session expired");
            let _ = self.remove_member(&id, now);
        }
        if self.rebalance_deadline.is_some_and(|d| d <= now) {
            match self.state {
                GroupState::PreparingRebalance => {
                    self.pending.clear();
                    self.complete_join(now);
                }
                GroupState::CompletingRebalance => {
                    // The leader never sent the assignments: start over without it.
                    tracing::info!(group = %self.id, "sync phase timed out");
                    let leader = self.leader.clone().unwrap_or_default();
                    let _ = self.remove_member(&leader, now);
                }
                _ => self.rebalance_deadline = None,
            }
        }
        assert!(self
            .members
            .values()
            .all(|m| m.awaiting_join.is_some() || m.session_deadline > now));
    }

    /// Commits are accepted from the current generation's members, and from anyone using
    /// generation -1 while the group has no members (a consumer that assigns itself).
    pub fn check_commit(&self, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        self.check_member(member_id, generation_id)
    }

    /// Marks the group deleted; it must be empty. Its tombstone is stored, and whoever waits
    /// for an earlier store of the group (a leave that emptied it) is answered with the
    /// tombstone's outcome: it comes after that store in the log.
    fn delete(&mut self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {
                assert!(self.awaiting_assignments_store.is_none());
                let earlier: Vec<(RequestId, Answer)> = std::mem::take(&mut self.after_store)
                    .into_values()
                    .flat_map(|after| after.answers)
                    .collect();
                self.state = GroupState::Dead;
                self.dirty = false;
                let store = self.store();
                assert!(self.out.store.as_ref().is_some_and(|s| s.record.is_none()));
                self.after_store
                    .get_mut(&store)
                    .expect("just handed out")
                    .answers
                    .extend(earlier);
                Ok(())
            }
            _ => Err(GroupError::NonEmptyGroup),
        }
    }

    /// Subscribed topics of a consumer-protocol group (parsed from the members' metadata).
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            topics.extend(super::consumer_protocol::decode_subscription(
                &member.metadata(&protocol),
            )?);
        }
        Some(topics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn request(member_id: &str, require_id: bool) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: require_id,
        }
    }

    fn static_request(member_id: &str) -> JoinRequest {
        JoinRequest {
            group_instance_id: Some("instance-1".into()),
            ..request(member_id, true)
        }
    }

    /// Drives one group step by step, as the coordinator does, keeping every answer and the
    /// stores handed out; stores are acknowledged only when the test says so.
    struct Driver {
        group: Group,
        next_request: RequestId,
        answers: BTreeMap<RequestId, Answer>,
        stores: Vec<Store>,
        deadline: Option<Millis>,
    }

    impl Driver {
        fn new(now: Millis) -> Driver {
            Driver {
                group: Group::new("g", now),
                next_request: 0,
                answers: BTreeMap::new(),
                stores: Vec::new(),
                deadline: None,
            }
        }

        fn step(&mut self, input: Input, now: Millis) {
            let out = self.group.step(input, now);
            for (id, answer) in out.answers {
                assert!(self.answers.insert(id, answer).is_none(), "answered twice");
            }
            self.stores.extend(out.store);
            self.deadline = out.next_deadline;
        }

        fn id(&mut self) -> RequestId {
            self.next_request += 1;
            self.next_request
        }

        fn join(&mut self, request: JoinRequest, now: Millis, salt: u128) -> RequestId {
            let id = self.id();
            self.step(Input::Join { id, request, salt }, now);
            id
        }

        fn sync(
            &mut self,
            member_id: &str,
            generation_id: i32,
            assignments: Vec<(String, Bytes)>,
            now: Millis,
        ) -> RequestId {
            let id = self.id();
            let request = SyncRequest {
                member_id: member_id.into(),
                generation_id,
                assignments,
                ..SyncRequest::default()
            };
            self.step(Input::Sync { id, request }, now);
            id
        }

        fn heartbeat(&mut self, member_id: &str, generation_id: i32, now: Millis) -> Answer {
            let id = self.id();
            let input = Input::Heartbeat {
                id,
                member_id: member_id.into(),
                group_instance_id: None,
                generation_id,
            };
            self.step(input, now);
            self.answers
                .remove(&id)
                .expect("heartbeats are answered at once")
        }

        fn leave(&mut self, member_id: &str, now: Millis) -> RequestId {
            let id = self.id();
            let input = Input::Leave {
                id,
                member_id: member_id.into(),
                group_instance_id: None,
            };
            self.step(input, now);
            id
        }

        fn tick(&mut self, now: Millis) {
            self.step(Input::Tick, now);
        }

        fn answer(&mut self, id: RequestId) -> Option<Answer> {
            self.answers.remove(&id)
        }

        fn joined(&mut self, id: RequestId) -> JoinOutcome {
            match self.answer(id) {
                Some(Answer::Join(outcome)) => outcome,
                other => panic!("join {id}: {other:?}"),
            }
        }

        fn synced(&mut self, id: RequestId) -> SyncOutcome {
            match self.answer(id) {
                Some(Answer::Sync(outcome)) => outcome,
                other => panic!("sync {id}: {other:?}"),
            }
        }

        /// The store handed out last, acknowledged as durable.
        fn store_lands(&mut self, now: Millis) -> Store {
            let store = self.stores.pop().expect("a store was handed out");
            self.step(Input::Stored { store: store.id }, now);
            store
        }

        fn store_fails(&mut self, now: Millis) {
            let store = self.stores.pop().expect("a store was handed out");
            let error = GroupError::CoordinatorNotAvailable;
            self.step(
                Input::NotStored {
                    store: store.id,
                    error,
                },
                now,
            );
        }

        /// A member alone in a Stable group (generation 1), its assignment stored.
        fn stable_alone(&mut self, request: JoinRequest, now: Millis) -> JoinResult {
            let join = self.join(request, now, 1);
            let joined = self.joined(join).unwrap();
            let sync = self.sync(&joined.member_id, 1, vec![], now);
            self.store_lands(now);
            assert_eq!(self.synced(sync), Ok(Bytes::new()));
            assert_eq!(self.group.state, GroupState::Stable);
            joined
        }
    }

    #[test]
    fn a_first_join_without_a_member_id_is_told_to_rejoin_with_one() {
        let mut d = Driver::new(0);
        let first = d.join(request("", true), NOW, 1);
        let Err(GroupError::MemberIdRequired(id)) = d.joined(first) else {
            panic!("expected MEMBER_ID_REQUIRED");
        };
        assert_eq!(d.deadline, Some(NOW + 10_000), "the id expires unused");
        let again = d.join(request(&id, true), NOW, 1);
        let result = d.joined(again).unwrap();
        assert_eq!(
            (result.generation_id, result.leader.as_str()),
            (1, id.as_str())
        );
        assert_eq!(result.members.len(), 1);
        assert_eq!(d.group.state, GroupState::CompletingRebalance);
    }

    #[test]
    fn the_leaders_sync_hands_every_member_its_assignment_once_stored_and_stabilises_the_group() {
        let mut d = Driver::new(0);
        let a = d.stable_alone(request("", false), NOW);
        // A second member makes everyone rejoin.
        let b_join = d.join(request("", false), NOW, 2);
        assert_eq!(
            d.heartbeat(&a.member_id, 1, NOW),
            Answer::Done(Err(GroupError::RebalanceInProgress))
        );
        let a_join = d.join(request(&a.member_id, false), NOW, 1);
        let a2 = d.joined(a_join).unwrap();
        let b = d.joined(b_join).unwrap();
        assert_eq!(a2.generation_id, 2);
        assert_eq!(a2.leader, a.member_id);
        assert!(b.members.is_empty(), "only the leader sees the members");
        let b_sync = d.sync(&b.member_id, 2, vec![], NOW);
        let assignments = vec![
            (a.member_id.clone(), Bytes::from_static(b"A")),
            (b.member_id.clone(), Bytes::from_static(b"B")),
        ];
        let a_sync = d.sync(&a.member_id, 2, assignments, NOW);
        assert!(d.answer(a_sync).is_none() && d.answer(b_sync).is_none());
        let stored = d.store_lands(NOW);
        assert_eq!(stored.record.unwrap().generation_id, 2);
        assert_eq!(d.synced(a_sync), Ok(Bytes::from_static(b"A")));
        assert_eq!(d.synced(b_sync), Ok(Bytes::from_static(b"B")));
        assert_eq!(d.group.state, GroupState::Stable);
        assert_eq!(
            d.heartbeat(&b.member_id, 1, NOW),
            Answer::Done(Err(GroupError::IllegalGeneration { got: 1, current: 2 }))
        );
        assert_eq!(
            d.heartbeat("stranger", 2, NOW),
            Answer::Done(Err(GroupError::UnknownMemberId))
        );
    }

    #[test]
    fn a_member_whose_session_expires_is_removed_and_the_emptied_group_is_stored() {
        let mut d = Driver::new(0);
        d.stable_alone(request("", false), NOW);
        assert_eq!(d.deadline, Some(NOW + 10_000), "the session's end");
        d.tick(NOW + 10_000);
        assert!(d.group.is_empty());
        assert_eq!(d.group.state, GroupState::Empty);
        let stored = d.store_lands(NOW + 10_000);
        let record = stored.record.expect("a record, not a tombstone");
        assert!(record.members.is_empty(), "a restart loads it Empty");
        assert!(!d.group.dirty);
        assert_eq!(d.group.check_commit("", -1), Ok(()));
    }

    #[test]
    fn a_leave_that_empties_the_group_is_answered_only_once_the_empty_group_is_stored() {
        let mut d = Driver::new(0);
        let a = d.stable_alone(request("", false), NOW);
        let leave = d.leave(&a.member_id, NOW + 5);
        assert_eq!(d.group.state, GroupState::Empty);
        assert!(
            d.answer(leave).is_none(),
            "not before the empty group is stored"
        );
        let stored = d.store_lands(NOW + 6);
        assert_eq!(d.answer(leave), Some(Answer::Done(Ok(()))));
        let restored = Group::restore("g", stored.record.unwrap(), NOW + 100);
        assert_eq!(
            restored.state,
            GroupState::Empty,
            "no ghost after a restart"
        );
        assert_eq!(restored.generation_id, 2);
    }

    #[test]
    fn a_leave_whose_empty_group_cannot_be_stored_is_answered_with_the_error_and_stays_dirty() {
        let mut d = Driver::new(0);
        let a = d.stable_alone(request("", false), NOW);
        let leave = d.leave(&a.member_id, NOW);
        d.store_fails(NOW);
        assert_eq!(
            d.answer(leave),
            Some(Answer::Done(Err(GroupError::CoordinatorNotAvailable)))
        );
        assert!(d.group.dirty);
        let again = d
            .group
            .store_if_dirty()
            .expect("maintenance stores it again");
        assert!(again.record.unwrap().members.is_empty());
        d.step(Input::Stored { store: again.id }, NOW);
        assert!(!d.group.dirty);
        assert!(d.group.store_if_dirty().is_none());
    }

    #[test]
    fn a_leave_that_leaves_others_behind_is_answered_at_once_and_they_rebalance() {
        let mut d = Driver::new(0);
        let a = d.stable_alone(request("", false), NOW);
        let b_join = d.join(request("", false), NOW, 2);
        let a_join = d.join(request(&a.member_id, false), NOW, 1);
        let b = d.joined(b_join).unwrap();
        d.joined(a_join).unwrap();
        let leave = d.leave(&b.member_id, NOW);
        assert_eq!(d.answer(leave), Some(Answer::Done(Ok(()))));
        assert!(
            d.stores.is_empty(),
            "the next generation is stored at its sync"
        );
        assert_eq!(d.group.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn a_restarted_static_member_takes_over_once_stored_without_a_rebalance_and_fences_its_old_id()
    {
        let mut d = Driver::new(0);
        // No KIP-394 round trip for a static member.
        let join = d.join(static_request(""), NOW, 1);
        let first = d.joined(join).unwrap();
        let assignment = Bytes::from_static(b"p0");
        let sync = d.sync(
            &first.member_id,
            1,
            vec![(first.member_id.clone(), assignment.clone())],
            NOW,
        );
        d.store_lands(NOW);
        assert_eq!(d.synced(sync), Ok(assignment.clone()));

        let takeover = d.join(static_request(""), NOW + 10, 2);
        assert!(
            d.answer(takeover).is_none(),
            "answered once the new id is stored"
        );
        let stored = d.store_lands(NOW + 11);
        let again = d.joined(takeover).unwrap();
        assert_ne!(again.member_id, first.member_id);
        assert_eq!(stored.record.unwrap().members[0].member_id, again.member_id);
        assert_eq!(again.generation_id, 1, "no rebalance");
        assert_eq!(d.group.state, GroupState::Stable);
        let sync = d.sync(&again.member_id, 1, vec![], NOW + 10);
        assert_eq!(d.synced(sync), Ok(assignment));
        assert_eq!(
            d.group.check_instance(Some("instance-1"), &first.member_id),
            Err(GroupError::FencedInstanceId)
        );
        let stale = d.join(static_request(&first.member_id), NOW + 20, 3);
        assert_eq!(d.joined(stale), Err(GroupError::FencedInstanceId));
    }

    #[test]
    fn a_static_takeover_whose_store_fails_gives_the_instance_back_to_the_old_member_id() {
        let mut d = Driver::new(0);
        let first = d.stable_alone(static_request(""), NOW);
        let takeover = d.join(static_request(""), NOW + 10, 2);
        d.store_fails(NOW + 11);
        assert_eq!(d.joined(takeover), Err(GroupError::CoordinatorNotAvailable));
        assert_eq!(
            d.group.check_instance(Some("instance-1"), &first.member_id),
            Ok(())
        );
        assert_eq!(
            d.heartbeat(&first.member_id, 1, NOW + 12),
            Answer::Done(Ok(()))
        );
    }

    #[test]
    fn a_new_groups_first_join_waits_the_initial_delay_and_each_new_member_extends_it() {
        let mut d = Driver::new(NOW);
        d.group.initial_rebalance_delay_ms = 3_000;
        let a = d.join(request("", false), NOW, 1);
        assert_eq!(d.deadline, Some(NOW + 3_000));
        d.tick(NOW + 2_000);
        assert!(d.answer(a).is_none(), "still inside the initial delay");
        let b = d.join(request("", false), NOW + 2_500, 2);
        d.tick(NOW + 3_000);
        assert!(d.answer(a).is_none(), "b's arrival extended the delay");
        d.tick(NOW + 5_900);
        assert!(d.answer(b).is_none());
        d.tick(NOW + 6_000);
        let (a, b) = (d.joined(a).unwrap(), d.joined(b).unwrap());
        assert_eq!(
            (a.generation_id, b.generation_id),
            (1, 1),
            "both in the first generation"
        );
        assert_eq!(d.group.state, GroupState::CompletingRebalance);
        assert_eq!(d.group.state_since, NOW + 6_000);
    }

    #[test]
    fn the_initial_delay_never_outlasts_the_rebalance_timeout() {
        let mut d = Driver::new(0);
        d.group.initial_rebalance_delay_ms = 3_000;
        let first = d.join(request("", false), 0, 1);
        // A new member every 2.5 s would extend the delay forever; 10 s is the cap.
        let mut t = 0;
        let mut others = Vec::new();
        while t < 12_000 {
            t += 2_500;
            if t < 10_000 {
                others.push(d.join(request("", false), t, 2 + t as u128));
            }
            d.tick(t);
        }
        let first = d.joined(first).unwrap();
        assert_eq!(first.generation_id, 1);
        assert_eq!(others.len(), 3);
        assert_eq!(
            first.members.len(),
            4,
            "everyone who came within the timeout"
        );
    }

    #[test]
    fn a_leaders_assignments_reach_no_member_until_they_are_stored_and_a_restart_brings_them_back()
    {
        let mut d = Driver::new(NOW);
        let join = d.join(request("", false), NOW, 1);
        let a = d.joined(join).unwrap();
        let assignment = Bytes::from_static(b"p0");
        let sync = d.sync(
            &a.member_id,
            1,
            vec![(a.member_id.clone(), assignment.clone())],
            NOW,
        );
        assert!(d.answer(sync).is_none(), "not before it is stored");
        assert!(d.group.store_under_way());
        assert_eq!(d.group.state, GroupState::CompletingRebalance);
        let stored = d.store_lands(NOW + 5);
        assert_eq!(d.synced(sync), Ok(assignment.clone()));
        assert_eq!(d.group.state, GroupState::Stable);

        // After a restart the stored generation is back, members and assignments included.
        let restored = Group::restore("g", stored.record.unwrap(), NOW + 100);
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(restored.generation_id, 1);
        assert_eq!(restored.members[&a.member_id].assignment, assignment);
    }

    #[test]
    fn a_failed_store_answers_the_waiting_members_with_an_error_so_they_rejoin() {
        let mut d = Driver::new(0);
        let join = d.join(request("", false), 0, 1);
        let a = d.joined(join).unwrap();
        let sync = d.sync(&a.member_id, 1, vec![], 0);
        d.store_fails(0);
        assert_eq!(d.synced(sync), Err(GroupError::CoordinatorNotAvailable));
        assert!(!d.group.store_under_way());
        assert_eq!(d.group.state, GroupState::CompletingRebalance);
    }

    #[test]
    fn a_store_that_lands_after_a_new_rebalance_began_changes_nothing() {
        let mut d = Driver::new(0);
        let join = d.join(request("", false), 0, 1);
        let a = d.joined(join).unwrap();
        let sync = d.sync(&a.member_id, 1, vec![], 0);
        let b_join = d.join(request("", false), 1, 2);
        assert_eq!(d.synced(sync), Err(GroupError::RebalanceInProgress));
        d.store_lands(2);
        assert_eq!(d.group.state, GroupState::PreparingRebalance);
        assert!(d.answer(b_join).is_none());
    }

    #[test]
    fn unloading_answers_every_parked_join_and_sync_with_not_coordinator() {
        let mut d = Driver::new(0);
        let a = d.stable_alone(request("", false), NOW);
        let b_join = d.join(request("", false), NOW, 2);
        let a_join = d.join(request(&a.member_id, false), NOW, 1);
        d.joined(a_join).unwrap();
        d.joined(b_join).unwrap();
        // The leader has not synced: b's sync is parked.
        let b = d.group.members.keys().find(|m| **m != a.member_id).cloned();
        let b_sync = d.sync(&b.unwrap(), 2, vec![], NOW);
        let c_join = d.join(request("", false), NOW + 1, 3);
        assert_eq!(d.synced(b_sync), Err(GroupError::RebalanceInProgress));
        assert!(
            d.answer(c_join).is_none(),
            "c waits for the others to rejoin"
        );
        d.step(Input::Unload, NOW + 2);
        assert_eq!(d.joined(c_join), Err(GroupError::NotCoordinator));
        assert_eq!(d.group.state, GroupState::Dead);
        assert_eq!(d.deadline, None);
    }

    #[test]
    fn ticking_only_at_the_announced_deadlines_expires_members_when_ticking_often_does() {
        // Two groups fed the same inputs: one ticked every 100 ms, one only at its deadlines.
        let mut often = Driver::new(0);
        let mut sparse = Driver::new(0);
        for d in [&mut often, &mut sparse] {
            let a = d.stable_alone(request("", false), 0);
            let b_join = d.join(
                JoinRequest {
                    session_timeout_ms: 3_000,
                    ..request("", false)
                },
                50,
                2,
            );
            let a_join = d.join(request(&a.member_id, false), 60, 1);
            d.joined(a_join).unwrap();
            d.joined(b_join).unwrap();
        }
        let mut t = 0;
        while t < 30_000 {
            t += 100;
            often.tick(t);
            if sparse.deadline.is_some_and(|d| d <= t) {
                sparse.tick(t);
            }
            assert_eq!(often.group.state, sparse.group.state, "at {t}");
            assert_eq!(
                often.group.members.len(),
                sparse.group.members.len(),
                "at {t}"
            );
        }
        assert!(often.group.is_empty(), "nobody synced or heartbeated");
    }

    #[test]
    fn a_group_deleted_while_its_emptying_leave_is_stored_answers_the_leave_with_the_tombstone() {
        let mut d = Driver::new(0);
        let a = d.stable_alone(request("", false), NOW);
        let leave = d.leave(&a.member_id, NOW);
        let emptied = d.stores.pop().expect("the empty group is being stored");
        let delete = d.id();
        d.step(Input::Delete { id: delete }, NOW);
        assert_eq!(d.answer(delete), Some(Answer::Done(Ok(()))));
        assert_eq!(d.group.state, GroupState::Dead);
        d.step(Input::Stored { store: emptied.id }, NOW);
        assert!(
            d.answer(leave).is_none(),
            "waits for the tombstone, which comes later"
        );
        assert!(d.group.store_under_way());
        let tombstone = d.store_lands(NOW);
        assert_eq!(tombstone.record, None);
        assert_eq!(d.answer(leave), Some(Answer::Done(Ok(()))));
        assert!(
            !d.group.store_under_way(),
            "the coordinator may forget it now"
        );
        assert_eq!(
            d.group.check_commit("", -1),
            Err(GroupError::CoordinatorNotAvailable)
        );
    }
}
