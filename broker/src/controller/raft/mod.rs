//! The metadata quorum on openraft: every node runs one [`openraft::Raft`] for the metadata log
//! (KRaft's `__cluster_metadata` topic). Voters come from `controller.quorum.voters`; every other
//! node is a learner the active controller adds when it registers, so every node applies the
//! same committed [`MetadataRecord`] batches and holds the same [`ClusterImage`].
//!
//! - [`runtime`]: openraft's `AsyncRuntime` on the madsim-tokio facade (simulator and real tokio).
//! - `store`: the log, the vote and snapshots under `<data-dir>/__cluster_metadata-0/`, through
//!   the [`Disk`](crate::disk::Disk) trait, so power loss and torn writes strike the quorum in
//!   simulation as they strike partition logs.
//! - `network`: raft RPCs and forwarded controller requests over TCP, one frame each way.
//! - `controller`: the loop that runs on the quorum leader (the active controller): decides
//!   requests against the image, commits them in batches, expires broker sessions.
//! - [`RaftPlane`]: the [`MetadataPlane`](super::plane::MetadataPlane) built from all of it.

mod controller;
mod network;
mod plane;
pub mod runtime;
mod store;

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::decide::ControllerSettings;
use super::image::{ClusterImage, MetadataRecord};
use super::NodeId;

pub use plane::RaftPlane;

/// One entry of the metadata log: the records of one or more controller decisions, applied all
/// or nothing (a CreateTopics is never half made).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

impl std::fmt::Display for MetadataBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetadataBatch({} records)", self.records.len())
    }
}

openraft::declare_raft_types!(
    /// The metadata quorum's openraft types: a node is a `u64` (our `NodeId` is an `i32` in
    /// Kafka's id space, never negative for a real node) reached at a `host:port` quorum address.
    pub MetadataTypes:
        D = MetadataBatch,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = runtime::BrokerRuntime,
);

/// A quorum node id as openraft sees it.
pub fn raft_id(id: NodeId) -> u64 {
    u64::try_from(id).unwrap_or_else(|_| panic!("node id {id} is negative"))
}

/// A raft node id back in Kafka's id space.
pub fn node_id(id: u64) -> NodeId {
    NodeId::try_from(id).unwrap_or_else(|_| panic!("raft node id {id} is out of range"))
}

/// The name of the metadata log's directory under the data directory (KRaft's).
pub const METADATA_DIR: &str = "__cluster_metadata-0";

/// How long the quorum waits for what (milliseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumTimeouts {
    /// The leader's heartbeat to followers and learners; also the controller's session tick.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in `[min, max]` stands for election
    /// (KRaft's `controller.quorum.election.timeout.ms` is 1000).
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// One raft RPC (AppendEntries, Vote, a snapshot chunk): a partition in the simulator is a
    /// long stall, so each RPC gives up on its own.
    pub rpc_ms: u64,
    /// A whole `submit`, retries included (Kafka's `request.timeout.ms` is 30000).
    pub submit_ms: u64,
}

impl Default for QuorumTimeouts {
    fn default() -> QuorumTimeouts {
        QuorumTimeouts {
            heartbeat_ms: 100,
            election_min_ms: 1_000,
            election_max_ms: 2_000,
            rpc_ms: 2_000,
            submit_ms: 30_000,
        }
    }
}

/// A voter of `controller.quorum.voters` (`id@host:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    /// `host:port` of its controller listener.
    pub address: String,
}

/// What [`RaftPlane::start`] needs.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// `node.id`.
    pub node_id: NodeId,
    /// `controller.quorum.voters`; empty: this node alone is the quorum (no network at all).
    pub voters: Vec<Voter>,
    /// Where this node's controller listener binds (`controller.listen`); unused by a quorum of
    /// one.
    pub listen: Option<String>,
    /// Where the other nodes dial this one; defaults to `listen`. A voter's own entry in
    /// `voters` is what the others use.
    pub advertised: Option<String>,
    /// The node's data directory; the metadata log lives in [`METADATA_DIR`] under it.
    pub data_dir: PathBuf,
    /// The cluster id the first active controller commits into an empty log (a single-broker
    /// data directory's id, so it keeps it); random when `None`.
    pub cluster_id_if_new: Option<String>,
    /// A snapshot of the image is taken every this many log entries, and the log is purged
    /// below it.
    pub snapshot_every: u64,
    pub timeouts: QuorumTimeouts,
    pub settings: ControllerSettings,
}

impl QuorumConfig {
    /// A quorum of one on `data_dir` with the defaults.
    pub fn single(node_id: NodeId, data_dir: PathBuf) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters: Vec::new(),
            listen: None,
            advertised: None,
            data_dir,
            cluster_id_if_new: None,
            snapshot_every: 1_000,
            timeouts: QuorumTimeouts::default(),
            settings: ControllerSettings::default(),
        }
    }

    /// Parses `controller.quorum.voters`: `1@host:port,2@host:port,...`.
    pub fn parse_voters(text: &str) -> Result<Vec<Voter>, String> {
        let mut voters: Vec<Voter> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, address) = part
                .split_once('@')
                .ok_or_else(|| format!("voter '{part}' is not of the form id@host:port"))?;
            let id: NodeId = id
                .parse()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| format!("voter '{part}' has an invalid node id"))?;
            if !address.contains(':') {
                return Err(format!("voter '{part}' has no port"));
            }
            if voters.iter().any(|v| v.id == id) {
                return Err(format!("voter id {id} appears twice"));
            }
            voters.push(Voter {
                id,
                address: address.to_string(),
            });
        }
        Ok(voters)
    }

    fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.timeouts.heartbeat_ms)
    }
}

/// What the state machine publishes and the plane reads: the image, swapped whole on apply, and
/// the offsets it is at, with a Notify for `wait_past` (not a watch channel: its notifier
/// choice uses a thread-local RNG the simulator cannot seed).
pub(crate) struct Shared {
    image: Mutex<Arc<ClusterImage>>,
    /// The image's `metadata_offset`: the log index of the last record batch applied.
    image_offset: AtomicI64,
    /// The raft log index of the last applied entry of any kind (blank and membership entries
    /// included); -1 before any.
    applied_index: AtomicI64,
    applied: tokio::sync::Notify,
    /// Why this node's replica of the metadata log stopped for good (openraft's core quit on a
    /// storage error): set once, and the node must halt ([`Shared::halted`]).
    halted: Mutex<Option<String>>,
    halt: tokio::sync::Notify,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            image: Mutex::new(Arc::new(ClusterImage::empty())),
            image_offset: AtomicI64::new(-1),
            applied_index: AtomicI64::new(-1),
            applied: tokio::sync::Notify::new(),
            halted: Mutex::new(None),
            halt: tokio::sync::Notify::new(),
        }
    }

    /// Records that the replica stopped for good; the first reason is kept.
    fn halt(&self, reason: String) {
        let mut halted = self.halted.lock().unwrap_or_else(|e| e.into_inner());
        if halted.is_none() {
            *halted = Some(reason);
            self.halt.notify_waiters();
        }
    }

    /// Resolves, with the reason, once the replica stopped for good.
    async fn halted(&self) -> String {
        loop {
            let notified = self.halt.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `halt` in between is not missed.
            notified.as_mut().enable();
            if let Some(reason) = self
                .halted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return reason;
            }
            notified.await;
        }
    }

    fn image(&self) -> Arc<ClusterImage> {
        Arc::clone(&self.image.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn publish(&self, image: Arc<ClusterImage>, applied_index: i64) {
        let image_offset = image.metadata_offset;
        *self.image.lock().unwrap_or_else(|e| e.into_inner()) = image;
        let before = self.image_offset.swap(image_offset, Ordering::AcqRel);
        // A snapshot installed from the leader only ever moves a node forward.
        assert!(
            image_offset >= before,
            "the image went back from offset {before} to {image_offset}"
        );
        let before = self.applied_index.swap(applied_index, Ordering::AcqRel);
        assert!(
            applied_index >= before,
            "applied index went back from {before} to {applied_index}"
        );
        self.applied.notify_waiters();
    }

    /// Resolves once the image's `metadata_offset` is above `offset`.
    async fn wait_past(&self, offset: i64) {
        self.wait_until(|| self.image_offset.load(Ordering::Acquire) > offset)
            .await
    }

    /// Resolves once the entry at raft log index `index` (of any kind) is applied here.
    async fn wait_applied(&self, index: i64) {
        self.wait_until(|| self.applied_index.load(Ordering::Acquire) >= index)
            .await
    }

    async fn wait_until(&self, done: impl Fn() -> bool) {
        loop {
            let notified = self.applied.notified();
            tokio::pin!(notified);
            // Registered before the check, so a publish in between is not missed.
            notified.as_mut().enable();
            if done() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_in_kraft_form_and_bad_ones_are_refused_with_a_reason() {
        let voters =
            QuorumConfig::parse_voters("1@127.0.0.1:9093, 2@host-b:9193,3@[::1]:9293").unwrap();
        assert_eq!(
            voters,
            vec![
                Voter {
                    id: 1,
                    address: "127.0.0.1:9093".into()
                },
                Voter {
                    id: 2,
                    address: "host-b:9193".into()
                },
                Voter {
                    id: 3,
                    address: "[::1]:9293".into()
                },
            ]
        );
        assert_eq!(QuorumConfig::parse_voters("").unwrap(), Vec::new());
        for bad in ["1-127.0.0.1:9093", "x@h:1", "-1@h:1", "1@h", "1@h:1,1@g:2"] {
            assert!(QuorumConfig::parse_voters(bad).is_err(), "{bad} accepted");
        }
    }
}
