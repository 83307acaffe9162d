//! [`RaftPlane`]: the [`MetadataPlane`] on the openraft quorum.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::task::JoinHandle;

use super::controller::{Committed, ControllerHandle, ControllerLoop};
use super::network::{self, CallError, NetworkFactory, PeerClient, Rpc, RpcReply, Stop};
use super::store::{metadata_dir, LogStore, StateMachine, WriteGate};
use super::{node_id, raft_id, MetadataTypes, QuorumConfig, Shared};
use crate::controller::image::{ClusterImage, Endpoint};
use crate::controller::plane::{MetadataPlane, QuorumStatus};
use crate::controller::request::{ControllerError, ControllerReply, ControllerRequest};
use crate::controller::NodeId;
use crate::disk::Disk;

/// Pause between attempts of a `submit` that found no controller to talk to.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// This node's replica of the metadata log and, while it leads the quorum, the active
/// controller.
pub struct RaftPlane {
    id: u64,
    raft: Raft<MetadataTypes>,
    shared: Arc<Shared>,
    controller: ControllerHandle,
    /// `controller.quorum.voters` (this node alone for a quorum of one).
    voters: BTreeMap<u64, String>,
    /// Where the other nodes reach this one; `None` for a quorum of one.
    advertised: Option<String>,
    peers: Mutex<BTreeMap<u64, Arc<PeerClient>>>,
    /// This broker's heartbeats and registrations, on connections of their own (Kafka's
    /// broker lifecycle manager has its own channel to the controller): calls on one
    /// connection take turns, and a heartbeat queued behind a burst of AlterPartition requests
    /// after a failover reached the controller past its session timeout, which fenced a live
    /// broker and shrank ISRs to a crashed one.
    lifecycle_peers: Mutex<BTreeMap<u64, Arc<PeerClient>>>,
    rpc_timeout: Duration,
    submit_timeout: Duration,
    /// A whole heartbeat or registration, retries included: half the broker session timeout
    /// (Kafka's heartbeat channel gives up after `broker.session.timeout.ms / 2`), so a broker
    /// whose heartbeat hangs on a controller that stopped answering (deposed, cut off) sends
    /// the next one, to the new controller, well within its session there.
    lifecycle_timeout: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    snapshot_gate: WriteGate,
    stop: Arc<Stop>,
}

impl RaftPlane {
    /// Opens the metadata log under `config.data_dir`, starts this node's raft replica, its
    /// quorum listener (unless it is a quorum of one) and its controller loop. The lowest-id
    /// voter initializes the membership when its log is empty (a no-op once it is not).
    pub async fn start(config: QuorumConfig, disk: Arc<dyn Disk>) -> io::Result<Arc<RaftPlane>> {
        let id = raft_id(config.node_id);
        let single = config.voters.is_empty();
        let advertised = match &config.advertised {
            Some(a) => Some(a.clone()),
            None => config.listen.clone(),
        };
        let voters: BTreeMap<u64, String> = if single {
            BTreeMap::from([(id, String::new())])
        } else {
            config
                .voters
                .iter()
                .map(|v| (raft_id(v.id), v.address.clone()))
                .collect()
        };
        if !single && !voters.contains_key(&id) && advertised.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a node that is not a voter needs a controller listener for the quorum to reach it",
            ));
        }
        let dir = metadata_dir(&config.data_dir);
        disk.create_dir_all(&dir).await?;
        let shared = Arc::new(Shared::new());
        let log = LogStore::open(Arc::clone(&disk), dir.clone()).await?;
        let machine = StateMachine::open(Arc::clone(&disk), dir, Arc::clone(&shared)).await?;
        let snapshot_gate = machine.write_gate();

        let timeouts = &config.timeouts;
        let raft_config = openraft::Config {
            cluster_name: "faultline-metadata".into(),
            heartbeat_interval: timeouts.heartbeat_ms,
            election_timeout_min: timeouts.election_min_ms,
            election_timeout_max: timeouts.election_max_ms,
            install_snapshot_timeout: timeouts.rpc_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
            // The snapshot holds everything below it; a follower that far behind gets it.
            max_in_snapshot_log_to_keep: 0,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let network = NetworkFactory {
            rpc_timeout: Duration::from_millis(timeouts.rpc_ms),
        };
        let raft = Raft::new(id, Arc::new(raft_config), network, log, machine)
            .await
            .map_err(io::Error::other)?;

        let (controller_loop, controller) = ControllerLoop::new(
            id,
            raft.clone(),
            Arc::clone(&shared),
            config.settings.clone(),
            config.cluster_id_if_new.clone(),
            config.heartbeat(),
        );
        let mut tasks = vec![tokio::spawn(controller_loop.run())];
        let stop = Arc::new(Stop::default());
        if !single {
            let listen = config
                .listen
                .clone()
                .or_else(|| voters.get(&id).cloned())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "no controller listener")
                })?;
            let listener = match tokio::net::TcpListener::bind(&listen).await {
                Ok(listener) => listener,
                Err(e) => {
                    for task in &tasks {
                        task.abort();
                    }
                    let _ = raft.shutdown().await;
                    return Err(io::Error::new(
                        e.kind(),
                        format!("controller listener {listen}: {e}"),
                    ));
                }
            };
            tasks.push(tokio::spawn(network::serve(
                listener,
                raft.clone(),
                controller.clone(),
                Arc::clone(&stop),
            )));
        }

        let plane = Arc::new(RaftPlane {
            id,
            raft,
            shared,
            controller,
            advertised: if single {
                None
            } else {
                voters.get(&id).cloned().or(advertised)
            },
            voters,
            peers: Mutex::new(BTreeMap::new()),
            lifecycle_peers: Mutex::new(BTreeMap::new()),
            rpc_timeout: Duration::from_millis(config.timeouts.rpc_ms),
            submit_timeout: Duration::from_millis(config.timeouts.submit_ms),
            lifecycle_timeout: Duration::from_millis(
                u64::try_from(config.settings.broker_session_timeout_ms / 2).unwrap_or(0),
            )
            .min(Duration::from_millis(config.timeouts.submit_ms)),
            tasks: Mutex::new(tasks),
            snapshot_gate,
            stop,
        });
        plane.bootstrap().await?;
        Ok(plane)
    }

    /// The lowest-id voter writes the first membership into an empty log; everyone else waits
    /// to hear from a leader.
    async fn bootstrap(&self) -> io::Result<()> {
        if self.voters.keys().next() != Some(&self.id) {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = self
            .voters
            .iter()
            .map(|(id, address)| (*id, BasicNode::new(address)))
            .collect();
        // Asked first so that a restart does not make openraft log `ERROR Can not initialize`.
        let initialized =
            self.raft.is_initialized().await.map_err(|e| {
                io::Error::other(format!("reading the metadata quorum's state: {e}"))
            })?;
        if initialized {
            return Ok(());
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Initialized by a vote or entry that arrived in between: nothing to do.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(io::Error::other(format!(
                "initializing the metadata quorum: {e}"
            ))),
        }
    }

    /// Where this node's quorum listener is reached (for its `RegisterBroker`'s
    /// `controller_endpoint`); `None` for a quorum of one.
    pub fn controller_endpoint(&self) -> Option<Endpoint> {
        let address = self.advertised.as_ref()?;
        let (host, port) = address.rsplit_once(':')?;
        Some(Endpoint {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }

    pub fn node_id(&self) -> NodeId {
        node_id(self.id)
    }

    /// Takes a snapshot of the image now and purges the log below it (tests and tools; the
    /// quorum takes one every `snapshot_every` entries on its own).
    pub async fn snapshot_now(&self) -> io::Result<()> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(io::Error::other)
    }

    /// The metadata offset the log is purged up to (inclusive; a snapshot holds it); -1 before
    /// the first purge.
    pub fn purged_offset(&self) -> i64 {
        self.raft
            .metrics()
            .borrow()
            .purged
            .map_or(-1, |l| l.index as i64)
    }

    /// Stops the raft replica, the listener and the controller loop. Requests waiting on this
    /// node fail with `Unavailable`.
    pub async fn shutdown(&self) {
        self.stop.stop();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum: raft shutdown");
        }
        *self.snapshot_gate.lock().await = true;
    }

    /// Where node `id` is reached: the membership's address, else `controller.quorum.voters`.
    fn address_of(&self, id: u64) -> Option<String> {
        let from_membership = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        };
        from_membership
            .filter(|a| !a.is_empty())
            .or_else(|| self.voters.get(&id).cloned())
    }

    /// The connection to node `id` for `request`: broker lifecycle requests have their own.
    fn peer(&self, id: u64, address: String, request: &ControllerRequest) -> Arc<PeerClient> {
        let peers = if is_lifecycle(request) {
            &self.lifecycle_peers
        } else {
            &self.peers
        };
        let mut peers = peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(&id) {
            Some(peer) if peer.address() == address => Arc::clone(peer),
            _ => {
                let peer = Arc::new(PeerClient::new(address));
                peers.insert(id, Arc::clone(&peer));
                peer
            }
        }
    }

    fn known_leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// One attempt at `target`.
    async fn attempt(
        &self,
        target: u64,
        request: &ControllerRequest,
        timeout: Duration,
    ) -> Result<Result<Committed, ControllerError>, CallError> {
        if target == self.id {
            return match tokio::time::timeout(timeout, self.controller.submit(request.clone()))
                .await
            {
                Ok(outcome) => Ok(outcome),
                // Maybe committed later: the caller knows whether a retry is safe.
                Err(_) => Err(CallError::Lost(
                    "this node's controller".into(),
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the active controller did not commit in time",
                    ),
                )),
            };
        }
        let Some(address) = self.address_of(target) else {
            return Err(CallError::Connect(
                format!("node {target}"),
                io::Error::new(io::ErrorKind::NotFound, "no known address"),
            ));
        };
        let peer = self.peer(target, address, request);
        match peer.call(&Rpc::Submit(request.clone()), timeout).await? {
            RpcReply::Submit(outcome) => Ok(outcome),
            other => Err(CallError::Lost(
                peer.address().to_string(),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a mismatched reply: {other:?}"),
                ),
            )),
        }
    }
}

/// Broker lifecycle requests (heartbeats, registrations): on connections of their own, bounded
/// well under a broker session, and safe to send again after an unknown outcome.
fn is_lifecycle(request: &ControllerRequest) -> bool {
    matches!(
        request,
        ControllerRequest::Heartbeat { .. } | ControllerRequest::RegisterBroker { .. }
    )
}

#[async_trait::async_trait]
impl MetadataPlane for RaftPlane {
    fn image(&self) -> Arc<ClusterImage> {
        self.shared.image()
    }

    async fn wait_past(&self, offset: i64) {
        self.shared.wait_past(offset).await
    }

    async fn submit(&self, request: ControllerRequest) -> Result<ControllerReply, ControllerError> {
        let lifecycle = is_lifecycle(&request);
        let budget = if lifecycle {
            self.lifecycle_timeout
        } else {
            self.submit_timeout
        };
        let deadline = super::runtime::now() + budget;
        let voters: Vec<u64> = self.voters.keys().copied().collect();
        let mut next_voter = 0usize;
        let mut hint: Option<u64> = None;
        // A controller that left a lifecycle request unanswered: not asked again unless a
        // node names it as the leader.
        let mut unanswered: Option<u64> = None;
        loop {
            let now = super::runtime::now();
            if now >= deadline {
                return Err(ControllerError::Unavailable(format!(
                    "no active controller answered within {} ms",
                    budget.as_millis()
                )));
            }
            let target = hint
                .take()
                .or_else(|| self.known_leader().filter(|l| Some(*l) != unanswered))
                .unwrap_or_else(|| {
                    // No leader known (an election, or a learner not yet added): ask the voters
                    // in turn; a follower answers with who leads.
                    next_voter += 1;
                    let voter = voters[next_voter % voters.len()];
                    if Some(voter) == unanswered && voters.len() > 1 {
                        next_voter += 1;
                        voters[next_voter % voters.len()]
                    } else {
                        voter
                    }
                });
            // Each attempt is bounded; a remote one leaves room for a retry. A lifecycle
            // request waits on one controller no longer than a quorum RPC (Kafka's
            // `controller.quorum.request.timeout.ms`), its own node's included.
            let remaining = deadline - now;
            let timeout = if lifecycle {
                remaining.min(self.rpc_timeout)
            } else if target == self.id {
                remaining
            } else {
                remaining.min(self.rpc_timeout.max(self.submit_timeout / 3))
            };
            match self.attempt(target, &request, timeout).await {
                Ok(Ok(Committed { reply, offset })) => {
                    // Answer only once this node's image shows the change (read your writes).
                    let remaining = deadline.saturating_duration_since(super::runtime::now());
                    let caught_up = self.shared.wait_past(offset - 1);
                    return match tokio::time::timeout(remaining, caught_up).await {
                        Ok(()) => Ok(reply),
                        Err(_) => Err(ControllerError::Unavailable(format!(
                            "committed at metadata offset {offset}, not yet applied on this node"
                        ))),
                    };
                }
                Ok(Err(ControllerError::NotController(leader))) => {
                    // Nothing was proposed: safe to try where the hint points.
                    let leader = leader.map(raft_id).filter(|l| *l != target);
                    if leader.is_none() {
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                    hint = leader;
                }
                Ok(Err(e)) => return Err(e),
                Err(CallError::Connect(address, e)) => {
                    // Never sent: safe to retry, elsewhere if this node is down.
                    tracing::debug!(%address, error = %e, "submit: cannot reach the controller");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(CallError::Lost(address, e)) if lifecycle => {
                    // A heartbeat or registration applied twice is harmless (the same
                    // incarnation gets its epoch back): try the current leader instead.
                    tracing::info!(%address, error = %e, "no controller answered a broker heartbeat or registration; trying the quorum's leader");
                    unanswered = Some(target);
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(e @ CallError::Lost(..)) => {
                    // Maybe decided and committed: a blind retry could apply it twice.
                    return Err(ControllerError::Unavailable(e.to_string()));
                }
            }
        }
    }

    fn quorum_status(&self) -> QuorumStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let mut voters: Vec<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .map(node_id)
            .collect();
        voters.sort_unstable();
        QuorumStatus {
            active_controller: m.current_leader.map(node_id),
            term: m.current_term,
            voters,
            committed_offset: m.last_applied.map_or(-1, |l| l.index as i64),
            applied_offset: self.image().metadata_offset,
        }
    }

    fn active_controller(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader.map(node_id)
    }

    async fn halted(&self) -> String {
        self.shared.halted().await
    }
}
