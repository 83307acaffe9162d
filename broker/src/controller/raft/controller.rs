//! The active controller: a loop on every node that acts while its node leads the quorum.
//!
//! Requests queue up; each is decided with [`decide`] against a working image (the committed
//! image plus the records decided before it in the same batch); the batch's records go to the
//! quorum as one log entry; replies go out once it is committed and applied here. A write that
//! fails after it was proposed is answered `Unavailable`, never as a success: it may or may not
//! commit under the next leader, and a retry sees which. Broker sessions live here, in memory,
//! and start afresh with every new leadership (Kafka's `BrokerHeartbeatManager`).
//!
//! Sessions and the leader-imbalance check are timed on the runtime's monotonic clock, as
//! Kafka's `BrokerHeartbeatTracker` times them on `Time.nanoseconds()`, never on the wall
//! clock: a wall clock set back by a minute kept a dead incarnation's session alive for that
//! minute (its restarted broker refused as a duplicate registration all along), and one set
//! forward expired every session at once (60 s replication swarm, seeds 1747 and 1967).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{node_id, raft_id, MetadataBatch, MetadataTypes, Shared};
use crate::controller::decide::{
    decide, preferred_leader_elections, unclean_elections, ControllerSettings, Entropy, Sessions,
};
use crate::controller::image::{ClusterImage, MetadataRecord};
use crate::controller::request::{ControllerError, ControllerReply, ControllerRequest};

/// Requests decided together and committed as one entry, at most.
const MAX_BATCH: usize = 256;

/// A reply and the image offset (`ClusterImage::metadata_offset`) it reflects: the node that
/// answers its caller waits until its own image is at least there (read your writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Committed {
    pub(crate) reply: ControllerReply,
    pub(crate) offset: i64,
}

struct Submission {
    request: ControllerRequest,
    reply: oneshot::Sender<Result<Committed, ControllerError>>,
}

/// Hands requests to this node's controller loop.
#[derive(Clone)]
pub(crate) struct ControllerHandle {
    queue: mpsc::Sender<Submission>,
}

impl ControllerHandle {
    /// Decides and commits `request` here if this node is the active controller; else
    /// `NotController` with who is.
    pub(crate) async fn submit(
        &self,
        request: ControllerRequest,
    ) -> Result<Committed, ControllerError> {
        let (reply, answer) = oneshot::channel();
        if self
            .queue
            .send(Submission { request, reply })
            .await
            .is_err()
        {
            // Stopped before it saw the request: nothing was proposed, ask another node.
            return Err(ControllerError::NotController(None));
        }
        answer.await.unwrap_or_else(|_| {
            // Stopped while deciding or committing it: the outcome is unknown.
            Err(ControllerError::Unavailable(
                "the controller stopped".into(),
            ))
        })
    }
}

/// Topic ids and placement's random start, from the runtime's seeded source.
struct RuntimeEntropy;

impl Entropy for RuntimeEntropy {
    fn next_u128(&mut self) -> u128 {
        crate::random::random_u128()
    }
}

pub(crate) struct ControllerLoop {
    id: u64,
    raft: Raft<MetadataTypes>,
    shared: Arc<Shared>,
    /// Where this loop's milliseconds count from ([`ControllerLoop::now_ms`]).
    origin: tokio::time::Instant,
    settings: ControllerSettings,
    cluster_id_if_new: Option<String>,
    tick: Duration,
    queue: mpsc::Receiver<Submission>,
    /// The term this node leads and has caught up in; `None` while it does not lead.
    leading: Option<u64>,
    sessions: Sessions,
    /// When the next leader-imbalance check is due ([`ControllerLoop::now_ms`]).
    next_rebalance_ms: Option<i64>,
}

impl ControllerLoop {
    pub(crate) fn new(
        id: u64,
        raft: Raft<MetadataTypes>,
        shared: Arc<Shared>,
        settings: ControllerSettings,
        cluster_id_if_new: Option<String>,
        tick: Duration,
    ) -> (ControllerLoop, ControllerHandle) {
        let (queue_tx, queue) = mpsc::channel(4 * MAX_BATCH);
        let controller = ControllerLoop {
            id,
            raft,
            shared,
            origin: super::runtime::now(),
            settings,
            cluster_id_if_new,
            tick,
            queue,
            leading: None,
            sessions: Sessions::for_node(node_id(id)),
            next_rebalance_ms: None,
        };
        (controller, ControllerHandle { queue: queue_tx })
    }

    /// Milliseconds since this loop started, on the runtime's monotonic clock (module doc):
    /// the time its sessions and its rebalance check are kept in.
    fn now_ms(&self) -> i64 {
        let elapsed = super::runtime::now().duration_since(self.origin);
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    }

    /// Runs until every handle is gone or the task is aborted.
    pub(crate) async fn run(mut self) {
        let mut next_tick = super::runtime::now() + self.tick;
        loop {
            let first = tokio::select! {
                biased;
                // The tick first: under a steady stream of requests sessions must still expire.
                () = tokio::time::sleep_until(next_tick) => None,
                submission = self.queue.recv() => match submission {
                    Some(submission) => Some(submission),
                    None => return,
                },
            };
            match first {
                None => {
                    next_tick = super::runtime::now() + self.tick;
                    self.on_tick().await;
                }
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match self.queue.try_recv() {
                            Ok(submission) => batch.push(submission),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch).await;
                }
            }
        }
    }

    /// Makes sure this node leads and its image holds everything committed before its term;
    /// on a new leadership, starts the sessions afresh and gives an empty log its cluster id.
    async fn ensure_leading(&mut self) -> Result<(), ControllerError> {
        let (state, leader, term, last_log_index) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.current_leader, m.current_term, m.last_log_index)
        };
        if state != ServerState::Leader || leader != Some(self.id) {
            self.leading = None;
            return Err(ControllerError::NotController(leader.map(node_id)));
        }
        if self.leading == Some(term) {
            return Ok(());
        }
        // Deciding against an image that misses the previous leader's last records would undo
        // them: wait until this term's first entry is applied here.
        let (read_log_id, _) = self.raft.get_read_log_id().await.map_err(|e| {
            // Nothing of the caller's request was proposed yet: safe to retry elsewhere.
            tracing::debug!(error = %e, "metadata quorum: leadership not confirmed");
            ControllerError::NotController(None)
        })?;
        // Nor one that misses entries of this node's own log: openraft restores a node that
        // restarts with a committed vote for itself as leader of the same term, with no new
        // entry of its own, so `read_log_id` (the committed index, or the term's first entry)
        // can sit far below what a quorum committed before the restart (committed is not
        // persisted). Every committed entry is in the leader's log, so applying up to its end
        // covers them, and a proposal of this term whose client_write failed too (as KRaft's
        // new active controller replays its log to the end before it decides anything).
        let caught_up = read_log_id
            .map(|l| l.index)
            .into_iter()
            .chain(last_log_index)
            .max();
        if let Some(index) = caught_up {
            self.wait_applied(index, term).await?;
        }
        let image = self.shared.image();
        // A new controller starts every session afresh (each registered broker gets a full
        // session from its first contact, as in Kafka); this node's own broker, if it restarted
        // with this controller, need not wait out its previous incarnation's session.
        self.sessions = Sessions::for_node(node_id(self.id));
        self.leading = Some(term);
        tracing::info!(
            node = self.id,
            term,
            "metadata quorum: this node is the active controller"
        );
        if image.cluster_id.is_empty() {
            let cluster_id = self.cluster_id_if_new.clone().unwrap_or_else(|| {
                uuid::Uuid::from_u128(crate::random::random_u128())
                    .simple()
                    .to_string()
            });
            // The caller's request is not proposed if this fails: a retry is safe.
            self.commit(vec![MetadataRecord::SetClusterId { cluster_id }])
                .await
                .map_err(|_| ControllerError::NotController(None))?;
        }
        self.add_missing_learners(&self.shared.image()).await;
        Ok(())
    }

    /// Waits until the entry at raft log `index` is applied here, while this node leads in
    /// `term` (what `Raft::ensure_linearizable` waits for, without its wait: openraft's
    /// metrics `Wait` is an unbiased `select!` between a 100-year sleep and a watch channel,
    /// and tokio draws both choices from a thread RNG seeded by a process-wide counter. In the
    /// simulator that decided whether the sleep's timer was registered, which reordered
    /// equal-deadline timers, so two runs of one seed in one process diverged.)
    async fn wait_applied(&self, index: u64, term: u64) -> Result<(), ControllerError> {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        loop {
            let applied = self.shared.wait_applied(index);
            if tokio::time::timeout(self.tick, applied).await.is_ok() {
                return Ok(());
            }
            // Still waiting: give up once the leadership is gone (or raft stopped), as
            // nothing of the caller's request was proposed yet.
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader || m.current_term != term {
                return Err(ControllerError::NotController(
                    m.current_leader.map(node_id),
                ));
            }
        }
    }

    /// Whether this node's replica stopped for good: openraft's core quits on a storage error
    /// (the metadata log's disk failed: EIO on an append, a vote, a snapshot) and never runs
    /// again in this process. Recorded in `Shared` the first time, so the node halts, as a
    /// KRaft node does when its metadata log dir fails; a supervisor restarts it and it recovers
    /// from what its log and snapshot hold. Left running, the node would be a voter that never
    /// votes and a broker whose image never moves again.
    fn stopped_for_good(&self) -> bool {
        let fatal = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            match &m.running_state {
                Ok(()) => return false,
                // Our own shutdown: this loop is being aborted.
                Err(Fatal::Stopped) => return true,
                Err(fatal) => fatal.to_string(),
            }
        };
        tracing::error!(node = self.id, error = %fatal,
            "metadata log failed: this node's replica of the metadata quorum stopped; the node halts");
        self.shared
            .halt(format!("the metadata log failed: {fatal}"));
        true
    }

    async fn on_tick(&mut self) {
        if self.stopped_for_good() {
            return;
        }
        {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader {
                self.leading = None;
                return;
            }
        }
        if self.ensure_leading().await.is_err() {
            return;
        }
        let image = self.shared.image();
        let mut records = self.sessions.expire(&image, &self.settings, self.now_ms());
        // Unclean elections are decided against the image the fencing leaves (a working copy:
        // both go in one entry).
        let mut working: ClusterImage = (*image).clone();
        if !records.is_empty() {
            working.apply(working.metadata_offset + 1, &records);
        }
        records.extend(unclean_elections(&working, &self.settings));
        let now_ms = self.now_ms();
        let due = *self
            .next_rebalance_ms
            .get_or_insert(now_ms + self.settings.leader_imbalance_check_interval_ms);
        if self.settings.auto_leader_rebalance_enable && now_ms >= due {
            self.next_rebalance_ms =
                Some(now_ms + self.settings.leader_imbalance_check_interval_ms);
            if !records.is_empty() {
                working.apply(working.metadata_offset + 1, &records);
            }
            let moved = preferred_leader_elections(&working);
            if !moved.is_empty() {
                tracing::info!(
                    partitions = moved.len(),
                    "leader imbalance: preferred replicas lead again"
                );
            }
            records.extend(moved);
        }
        if !records.is_empty() {
            if let Err(e) = self.commit(records).await {
                tracing::warn!(error = %e, "metadata quorum: fencing expired sessions failed");
            }
        }
    }

    async fn handle(&mut self, batch: Vec<Submission>) {
        if let Err(e) = self.ensure_leading().await {
            for submission in batch {
                let _ = submission.reply.send(Err(e.clone()));
            }
            return;
        }
        let base = self.shared.image();
        let mut working: ClusterImage = (*base).clone();
        let mut records = Vec::new();
        let mut decided = Vec::with_capacity(batch.len());
        let mut learners = Vec::new();
        let now_ms = self.now_ms();
        for submission in batch {
            let decision = decide(
                &working,
                &submission.request,
                &mut self.sessions,
                &self.settings,
                now_ms,
                &mut RuntimeEntropy,
            );
            let outcome = decision.map(|decision| {
                if !decision.records.is_empty() {
                    // The next request in the batch sees this one's records; the offset is
                    // provisional, the committed entry's index replaces it everywhere.
                    let provisional = working.metadata_offset + 1;
                    working.apply(provisional, &decision.records);
                    records.extend(decision.records);
                }
                if let ControllerRequest::RegisterBroker {
                    id,
                    controller_endpoint: Some(endpoint),
                    ..
                } = &submission.request
                {
                    learners.push((*id, format!("{}:{}", endpoint.host, endpoint.port)));
                }
                decision.reply
            });
            decided.push((submission.reply, outcome));
        }
        let offset = if records.is_empty() {
            Ok(base.metadata_offset)
        } else {
            self.commit(records).await
        };
        for (reply, outcome) in decided {
            let answer = match (&offset, outcome) {
                (Ok(offset), Ok(reply)) => Ok(Committed {
                    reply,
                    offset: *offset,
                }),
                // Refused requests changed nothing: their answer stands whatever the batch did.
                (_, Err(e)) => Err(e),
                (Err(e), Ok(_)) => Err(e.clone()),
            };
            let _ = reply.send(answer);
        }
        if offset.is_ok() {
            for (id, address) in learners {
                self.add_learner(raft_id(id), address).await;
            }
        }
    }

    /// Commits `records` as one entry; its log index (the image's offset once applied here).
    async fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError> {
        match self.raft.client_write(MetadataBatch { records }).await {
            Ok(response) => Ok(response.log_id.index as i64),
            Err(e) => {
                // Proposed or not, this node no longer knows: start over at the next request.
                self.leading = None;
                // A write that failed on this node's log stops its replica: halt now rather
                // than at the next tick.
                self.stopped_for_good();
                let reason = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        format!("leadership moved to {:?} before the commit", f.leader_id)
                    }
                    other => other.to_string(),
                };
                Err(ControllerError::Unavailable(reason))
            }
        }
    }

    /// Brokers registered with a controller endpoint that the quorum does not replicate to yet
    /// (the previous controller died between the registration and adding the learner).
    async fn add_missing_learners(&self, image: &ClusterImage) {
        let wanted: BTreeMap<u64, String> = image
            .brokers
            .values()
            .filter_map(|b| {
                let endpoint = b.controller_endpoint.as_ref()?;
                Some((
                    raft_id(b.id),
                    format!("{}:{}", endpoint.host, endpoint.port),
                ))
            })
            .collect();
        for (id, address) in wanted {
            self.add_learner(id, address).await;
        }
    }

    /// Adds `id` as a learner at `address` unless the membership already has it there (a voter
    /// stays a voter).
    async fn add_learner(&self, id: u64, address: String) {
        let known = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let is_voter = membership.voter_ids().any(|v| v == id);
            is_voter || membership.get_node(&id).is_some_and(|n| n.addr == address)
        };
        if known {
            return;
        }
        match self
            .raft
            .add_learner(id, BasicNode::new(&address), false)
            .await
        {
            Ok(_) => tracing::info!(learner = id, %address, "metadata quorum: added a learner"),
            Err(e) => {
                tracing::warn!(learner = id, %address, error = %e, "metadata quorum: adding a learner failed")
            }
        }
    }
}
