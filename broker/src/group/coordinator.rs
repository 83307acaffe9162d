//! One consumer group's membership: Kafka's classic rebalance protocol as a state machine.
//!
//! ```text
//!            join                  all joined / rebalance timeout     leader's SyncGroup
//!  Empty ──────────▶ PreparingRebalance ─────────────────▶ CompletingRebalance ─────────▶ Stable
//!    ▲                  ▲    │ nobody left                      │ join / leave / expiry      │
//!    └──────────────────┼────┘                                  ▼                            │
//!                       └──────────────────── join, leave, session expiry ◀──────────────────┘
//!  Dead: the group was deleted (DeleteGroups) or is being removed; it answers nothing.
//! ```
//!
//! The state machine is pure: it never sleeps and never reads a clock. Every call takes `now_ms`
//! (the broker's [`crate::clock::Clock`], virtual under madsim) and [`Group::tick`] expires sessions,
//! members handed an id but never joined (KIP-394) and rebalance deadlines. Requests that must
//! wait for the rebalance (JoinGroup until every member rejoined, SyncGroup until the leader sent
//! the assignments) park a oneshot sender in the member; the transition that completes them sends.
//!
//! Static membership (KIP-345): a member with a `group.instance.id` needs no KIP-394 round trip;
//! when it rejoins without a member id (a restart) it takes over its old membership under a new
//! member id, with no rebalance if the group is stable and its protocols are unchanged. Requests
//! carrying the instance id with the old member id get FENCED_INSTANCE_ID.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::oneshot;

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
    /// This broker no longer coordinates the group (it unloaded it: shutting down).
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// KIP-345: another member id now holds this group.instance.id.
    #[error("fenced: the group instance id belongs to another member")]
    FencedInstanceId,
}

/// Kafka's `group.min.session.timeout.ms` is 6 s; we accept shorter sessions (tests use them).
pub const MIN_SESSION_TIMEOUT_MS: i32 = 1_000;
/// Kafka's `group.max.session.timeout.ms`.
pub const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

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
    awaiting_join: Option<oneshot::Sender<JoinOutcome>>,
    awaiting_sync: Option<oneshot::Sender<SyncOutcome>>,
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
    }
}

/// Milliseconds since the epoch (the broker's clock).
pub type Millis = i64;

fn ms(v: i32) -> i64 {
    i64::from(v.max(0))
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
    /// Store a generation's assignments before any member learns them (the coordinator sets
    /// this; the bare state machine hands them out at once).
    pub store_assignments: bool,
    /// The generation whose assignments the leader sent and that awaits storing.
    awaiting_store: Option<i32>,
    /// Membership changed in a way worth storing (the group emptied, a static member was
    /// replaced) and has not been stored yet.
    pub dirty: bool,
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
            store_assignments: false,
            awaiting_store: None,
            dirty: false,
        }
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
        if stored.members.is_empty() {
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
        group
    }

    /// The leader's assignments for `generation` are stored: every member waiting in SyncGroup
    /// gets its own, and the group is Stable. No-op if a rebalance started meanwhile.
    pub fn assignments_stored(&mut self, generation: i32, now: Millis) {
        if self.state != GroupState::CompletingRebalance
            || self.generation_id != generation
            || self.awaiting_store != Some(generation)
        {
            return;
        }
        self.awaiting_store = None;
        for member in self.members.values_mut() {
            if let Some(tx) = member.awaiting_sync.take() {
                let _ = tx.send(Ok(member.assignment.clone()));
            }
        }
        self.set_state(GroupState::Stable, now);
        self.rebalance_deadline = None;
    }

    /// Storing the assignments failed: the members waiting in SyncGroup get `error` (they
    /// will rejoin), as Kafka's `resetAndPropagateAssignmentError` does.
    pub fn assignments_not_stored(&mut self, generation: i32, error: GroupError) {
        if self.generation_id != generation || self.awaiting_store != Some(generation) {
            return;
        }
        self.awaiting_store = None;
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(tx) = member.awaiting_sync.take() {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }

    /// Does the leader's SyncGroup for `generation` wait for its assignments to be stored?
    pub fn awaits_store(&self, generation: i32) -> bool {
        self.awaiting_store == Some(generation)
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

    /// JoinGroup. The receiver completes when the rebalance does (or at once, with an error or
    /// the current generation). `salt` makes generated member ids unique.
    pub fn join(
        &mut self,
        request: JoinRequest,
        now: Millis,
        salt: u128,
    ) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.join_inner(request, now, salt, tx) {
            // join_inner hands the sender back only on error.
            let (tx, err) = *e;
            let _ = tx.send(Err(err));
        }
        rx
    }

    #[allow(clippy::type_complexity)]
    fn join_inner(
        &mut self,
        request: JoinRequest,
        now: Millis,
        salt: u128,
        tx: oneshot::Sender<JoinOutcome>,
    ) -> Result<(), Box<(oneshot::Sender<JoinOutcome>, GroupError)>> {
        let fail = |tx, e| Err(Box::new((tx, e)));
        if self.state == GroupState::Dead {
            return fail(tx, GroupError::CoordinatorNotAvailable);
        }
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&request.session_timeout_ms)
        {
            return fail(
                tx,
                GroupError::InvalidSessionTimeout(request.session_timeout_ms),
            );
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return fail(tx, GroupError::InconsistentGroupProtocol);
        }
        let known = self.members.contains_key(&request.member_id);
        // Everyone else in the group must share the protocol type and a protocol with it.
        let others_agree = self.members.keys().all(|id| *id == request.member_id)
            || (self.protocol_type.as_deref() == Some(request.protocol_type.as_str())
                && !self
                    .common_protocols(Some(&request.member_id), Some(&request.protocols))
                    .is_empty());
        if !others_agree {
            return fail(tx, GroupError::InconsistentGroupProtocol);
        }

        if let Some(instance) = request.group_instance_id.clone() {
            match self.static_members.get(&instance).cloned() {
                Some(old) if request.member_id.is_empty() => {
                    self.replace_static_member(&old, request, now, salt, tx);
                    return Ok(());
                }
                Some(old) if old != request.member_id => {
                    return fail(tx, GroupError::FencedInstanceId);
                }
                None if request.member_id.is_empty() => {
                    // Static members skip the KIP-394 round trip, as in Kafka.
                    let member_id = self.new_member_id(&request.client_id, salt);
                    self.static_members.insert(instance, member_id.clone());
                    self.add_member(member_id, request, now, tx);
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
                return fail(tx, GroupError::MemberIdRequired(member_id));
            }
            self.add_member(member_id, request, now, tx);
            return Ok(());
        }
        if self.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            self.add_member(member_id, request, now, tx);
            return Ok(());
        }
        if !known {
            return fail(tx, GroupError::UnknownMemberId);
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
                self.park_join(&member_id, tx);
                self.try_complete_join(now);
            }
            GroupState::CompletingRebalance if !changed => {
                // A retry of a join whose answer was lost: the same answer again.
                let _ = tx.send(Ok(self.join_result(&member_id)));
            }
            GroupState::Stable if !changed && !is_leader => {
                let _ = tx.send(Ok(self.join_result(&member_id)));
            }
            _ => {
                self.park_join(&member_id, tx);
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
        old_id: &str,
        request: JoinRequest,
        now: Millis,
        salt: u128,
        tx: oneshot::Sender<JoinOutcome>,
    ) {
        let new_id = self.new_member_id(&request.client_id, salt);
        let mut member = self
            .members
            .remove(old_id)
            .expect("static members are members");
        if let Some(w) = member.awaiting_join.take() {
            let _ = w.send(Err(GroupError::FencedInstanceId));
        }
        if let Some(w) = member.awaiting_sync.take() {
            let _ = w.send(Err(GroupError::FencedInstanceId));
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
        match self.state {
            GroupState::Stable if !changed => {
                self.dirty = true;
                let _ = tx.send(Ok(self.join_result(&new_id)));
            }
            _ => {
                self.park_join(&new_id, tx);
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
        }
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
        Some(member)
    }

    fn park_join(&mut self, member_id: &str, tx: oneshot::Sender<JoinOutcome>) {
        let member = self.members.get_mut(member_id).expect("member");
        if let Some(old) = member.awaiting_join.replace(tx) {
            // Kafka answers a superseded join with UNKNOWN_MEMBER_ID... a plain rejoin hint is
            // kinder and equally safe: the client's newer request is the one that counts.
            let _ = old.send(Err(GroupError::RebalanceInProgress));
        }
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        now: Millis,
        tx: oneshot::Sender<JoinOutcome>,
    ) {
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
            awaiting_join: Some(tx),
            awaiting_sync: None,
            session_deadline: now,
        };
        member.touch(now);
        self.members.insert(member_id, member);
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
        self.awaiting_store = None;
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(tx) = member.awaiting_sync.take() {
                let _ = tx.send(Err(GroupError::RebalanceInProgress));
            }
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
    /// starts, and every waiting join is answered.
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
            self.dirty = true;
            self.protocol_name = None;
            self.leader = None;
            self.rebalance_deadline = None;
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
        for id in ids {
            let result = self.join_result(&id);
            let member = self.members.get_mut(&id).expect("member");
            member.touch(now);
            if let Some(tx) = member.awaiting_join.take() {
                let _ = tx.send(Ok(result));
            }
        }
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
        votes
            .into_iter()
            .find(|&(_, v)| v == best)
            .map(|(n, _)| n.to_string())
            .expect("a candidate")
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

    /// SyncGroup. The leader's call carries everyone's assignment.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
        now: Millis,
    ) -> oneshot::Receiver<SyncOutcome> {
        let (tx, rx) = oneshot::channel();
        let check = self.check_member(member_id, generation_id);
        if let Err(e) = check {
            let _ = tx.send(Err(e));
            return rx;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = tx.send(Err(GroupError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let member = self.members.get_mut(member_id).expect("checked");
                member.touch(now);
                let _ = tx.send(Ok(member.assignment.clone()));
            }
            GroupState::CompletingRebalance => {
                let member = self.members.get_mut(member_id).expect("checked");
                member.touch(now);
                if let Some(old) = member.awaiting_sync.replace(tx) {
                    let _ = old.send(Err(GroupError::RebalanceInProgress));
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = given.remove(&member.member_id).unwrap_or_default();
                    }
                    self.awaiting_store = Some(self.generation_id);
                    if !self.store_assignments {
                        self.assignments_stored(self.generation_id, now);
                    }
                }
            }
        }
        rx
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
    pub fn heartbeat(
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

    /// LeaveGroup for one member.
    pub fn leave(&mut self, member_id: &str, now: Millis) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.pending.remove(member_id).is_some() {
            self.try_complete_join(now);
            return Ok(());
        }
        self.remove_member(member_id, now)
    }

    fn remove_member(&mut self, member_id: &str, now: Millis) -> Result<(), GroupError> {
        let Some(mut member) = self.drop_member(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if let Some(tx) = member.awaiting_join.take() {
            let _ = tx.send(Err(GroupError::UnknownMemberId));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            let _ = tx.send(Err(GroupError::UnknownMemberId));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
        Ok(())
    }

    /// Expires sessions, unused KIP-394 ids and rebalance deadlines that `now` has passed.
    pub fn tick(&mut self, now: Millis) {
        if self.state == GroupState::Dead {
            return;
        }
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

    /// The coordinator unloads the group (the broker stops): every parked JoinGroup and
    /// SyncGroup is answered with `error` now, and the group is Dead in memory, so nothing
    /// parks in it again; what is stored is untouched. Kafka's `onGroupUnloaded` does the same
    /// with NOT_COORDINATOR. Returns how many parked requests were answered.
    pub fn unload(&mut self, error: GroupError) -> usize {
        let mut answered = 0;
        for member in self.members.values_mut() {
            if let Some(tx) = member.awaiting_join.take() {
                let _ = tx.send(Err(error.clone()));
                answered += 1;
            }
            if let Some(tx) = member.awaiting_sync.take() {
                let _ = tx.send(Err(error.clone()));
                answered += 1;
            }
        }
        self.awaiting_store = None;
        self.initial_delay = None;
        self.rebalance_deadline = None;
        self.state = GroupState::Dead;
        assert!(self
            .members
            .values()
            .all(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none()));
        answered
    }

    /// Marks the group deleted; it must be empty.
    pub fn delete(&mut self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {
                self.state = GroupState::Dead;
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

    fn joined(rx: &mut oneshot::Receiver<JoinOutcome>) -> JoinOutcome {
        rx.try_recv().expect("answered")
    }

    #[test]
    fn a_first_join_without_a_member_id_is_told_to_rejoin_with_one() {
        let now: Millis = 1_700_000_000_000;
        let mut group = Group::new("g", 0);
        let Err(GroupError::MemberIdRequired(id)) =
            joined(&mut group.join(request("", true), now, 1))
        else {
            panic!("expected MEMBER_ID_REQUIRED");
        };
        let result = joined(&mut group.join(request(&id, true), now, 1)).unwrap();
        assert_eq!(
            (result.generation_id, result.leader.as_str()),
            (1, id.as_str())
        );
        assert_eq!(result.members.len(), 1);
        assert_eq!(group.state, GroupState::CompletingRebalance);
    }

    #[test]
    fn the_leaders_sync_hands_every_member_its_assignment_and_stabilises_the_group() {
        let now: Millis = 1_700_000_000_000;
        let mut group = Group::new("g", 0);
        let a = joined(&mut group.join(request("", false), now, 1)).unwrap();
        let mut a_sync = group.sync(&a.member_id, 1, vec![], now);
        assert_eq!(
            a_sync.try_recv().unwrap(),
            Ok(Bytes::new()),
            "a lone leader assigns itself"
        );
        // A second member makes everyone rejoin.
        let mut b_join = group.join(request("", false), now, 2);
        assert_eq!(
            group.heartbeat(&a.member_id, 1, now),
            Err(GroupError::RebalanceInProgress)
        );
        let a2 = joined(&mut group.join(request(&a.member_id, false), now, 1)).unwrap();
        let b = joined(&mut b_join).unwrap();
        assert_eq!(a2.generation_id, 2);
        assert_eq!(a2.leader, a.member_id);
        assert!(b.members.is_empty(), "only the leader sees the members");
        let mut b_sync = group.sync(&b.member_id, 2, vec![], now);
        let assignments = vec![
            (a.member_id.clone(), Bytes::from_static(b"A")),
            (b.member_id.clone(), Bytes::from_static(b"B")),
        ];
        let mut a_sync = group.sync(&a.member_id, 2, assignments, now);
        assert_eq!(a_sync.try_recv().unwrap(), Ok(Bytes::from_static(b"A")));
        assert_eq!(b_sync.try_recv().unwrap(), Ok(Bytes::from_static(b"B")));
        assert_eq!(group.state, GroupState::Stable);
        assert_eq!(
            group.heartbeat(&b.member_id, 1, now),
            Err(GroupError::IllegalGeneration { got: 1, current: 2 })
        );
        assert_eq!(
            group.heartbeat("stranger", 2, now),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn a_member_whose_session_expires_is_removed_and_the_rest_rebalance() {
        let now: Millis = 1_700_000_000_000;
        let mut group = Group::new("g", 0);
        let a = joined(&mut group.join(request("", false), now, 1)).unwrap();
        group.sync(&a.member_id, 1, vec![], now);
        group.tick(now + 10_001);
        assert!(group.is_empty());
        assert_eq!(group.state, GroupState::Empty);
        assert_eq!(group.check_commit("", -1), Ok(()));
    }

    #[test]
    fn a_restarted_static_member_takes_over_its_assignment_without_a_rebalance_and_fences_its_old_id(
    ) {
        let now: Millis = 1_700_000_000_000;
        let mut group = Group::new("g", 0);
        let static_request = |member_id: &str| JoinRequest {
            group_instance_id: Some("instance-1".into()),
            ..request(member_id, true)
        };
        // No KIP-394 round trip for a static member.
        let first = joined(&mut group.join(static_request(""), now, 1)).unwrap();
        let assignment = Bytes::from_static(b"p0");
        let mut sync = group.sync(
            &first.member_id,
            1,
            vec![(first.member_id.clone(), assignment.clone())],
            now,
        );
        assert_eq!(sync.try_recv().unwrap(), Ok(assignment.clone()));

        let again = joined(&mut group.join(static_request(""), now + 10, 2)).unwrap();
        assert_ne!(again.member_id, first.member_id);
        assert_eq!(again.generation_id, 1, "no rebalance");
        assert_eq!(group.state, GroupState::Stable);
        let mut sync = group.sync(&again.member_id, 1, vec![], now + 10);
        assert_eq!(sync.try_recv().unwrap(), Ok(assignment));
        assert_eq!(
            group.check_instance(Some("instance-1"), &first.member_id),
            Err(GroupError::FencedInstanceId)
        );
        assert_eq!(
            joined(&mut group.join(static_request(&first.member_id), now + 20, 3)),
            Err(GroupError::FencedInstanceId)
        );
    }

    #[test]
    fn a_new_groups_first_join_waits_the_initial_delay_and_each_new_member_extends_it() {
        let now: Millis = 1_700_000_000_000;
        let mut group = Group::new("g", now);
        group.initial_rebalance_delay_ms = 3_000;
        let mut a = group.join(request("", false), now, 1);
        group.tick(now + 2_000);
        assert!(a.try_recv().is_err(), "still inside the initial delay");
        let mut b = group.join(request("", false), now + 2_500, 2);
        group.tick(now + 3_000);
        assert!(a.try_recv().is_err(), "b's arrival extended the delay");
        group.tick(now + 5_900);
        assert!(b.try_recv().is_err());
        group.tick(now + 6_000);
        let (a, b) = (joined(&mut a).unwrap(), joined(&mut b).unwrap());
        assert_eq!(
            (a.generation_id, b.generation_id),
            (1, 1),
            "both in the first generation"
        );
        assert_eq!(group.state, GroupState::CompletingRebalance);
        assert_eq!(group.state_since, now + 6_000);
    }

    #[test]
    fn the_initial_delay_never_outlasts_the_rebalance_timeout() {
        let now: Millis = 0;
        let mut group = Group::new("g", now);
        group.initial_rebalance_delay_ms = 3_000;
        let mut first = group.join(request("", false), now, 1);
        // A new member every 2.5 s would extend the delay forever; 10 s is the cap.
        let mut t = now;
        let mut others = Vec::new();
        while t < 12_000 {
            t += 2_500;
            if t < 10_000 {
                others.push(group.join(request("", false), t, 2 + t as u128));
            }
            group.tick(t);
        }
        let first = joined(&mut first).unwrap();
        assert_eq!(first.generation_id, 1);
        assert_eq!(others.len(), 3);
        assert_eq!(
            first.members.len(),
            4,
            "everyone who came within the timeout"
        );
    }

    #[test]
    fn a_leaders_assignments_reach_no_member_until_they_are_stored() {
        let now: Millis = 1_700_000_000_000;
        let mut group = Group::new("g", now);
        group.store_assignments = true;
        let a = joined(&mut group.join(request("", false), now, 1)).unwrap();
        let assignment = Bytes::from_static(b"p0");
        let mut sync = group.sync(
            &a.member_id,
            1,
            vec![(a.member_id.clone(), assignment.clone())],
            now,
        );
        assert!(sync.try_recv().is_err(), "not before it is stored");
        assert!(group.awaits_store(1));
        assert_eq!(group.state, GroupState::CompletingRebalance);
        let stored = group.snapshot();
        assert_eq!(stored.members[0].assignment, assignment);
        group.assignments_stored(1, now + 5);
        assert_eq!(sync.try_recv().unwrap(), Ok(assignment.clone()));
        assert_eq!(group.state, GroupState::Stable);

        // After a restart the stored generation is back, members and assignments included.
        let restored = Group::restore("g", stored, now + 100);
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(restored.generation_id, 1);
        assert_eq!(restored.members[&a.member_id].assignment, assignment);
    }

    #[test]
    fn a_failed_store_answers_the_waiting_members_with_an_error_so_they_rejoin() {
        let now: Millis = 0;
        let mut group = Group::new("g", now);
        group.store_assignments = true;
        let a = joined(&mut group.join(request("", false), now, 1)).unwrap();
        let mut sync = group.sync(&a.member_id, 1, vec![], now);
        group.assignments_not_stored(1, GroupError::CoordinatorNotAvailable);
        assert_eq!(
            sync.try_recv().unwrap(),
            Err(GroupError::CoordinatorNotAvailable)
        );
        assert!(!group.awaits_store(1));
        assert_eq!(group.state, GroupState::CompletingRebalance);
    }
}
