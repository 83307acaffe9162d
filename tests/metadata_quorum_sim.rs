//! The metadata quorum inside the simulator: three voters and a learner on simulated nodes, each
//! with its own faulty disk kept outside the node (so a power loss reverts it to what was
//! synced), under a leader kill, a partition of the leader, and a power loss of every voter at
//! once.
//!
//! The bug story: a metadata log that acknowledges a CreateTopics before the entry is synced on
//! a majority, a torn tail that recovery trusts, a vote that is not durable (two leaders in one
//! term after a power loss), a learner that never catches up once the log below a snapshot is
//! purged, or a node that reports success for a request whose leader lost its leadership. After
//! the heal every acknowledged topic must be in every node's image, and every node's image must
//! equal the leader's.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::controller::decide::ControllerSettings;
use broker::controller::image::{ClusterImage, Endpoint};
use broker::controller::plane::MetadataPlane;
use broker::controller::raft::{QuorumConfig, QuorumTimeouts, RaftPlane, Voter};
use broker::controller::request::{ControllerError, ControllerReply, ControllerRequest, NewTopic};
use chaos::{FaultyDisk, FaultyDiskConfig};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId as SimNode;

const PORT: u16 = 9093;
const VOTERS: i32 = 3;
const LEARNER: i32 = 4;

fn addr(id: i32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8)), PORT)
}

type Slot = Arc<Mutex<Option<Arc<RaftPlane>>>>;

struct SimNodeState {
    id: i32,
    node: SimNode,
    disk: FaultyDisk,
    plane: Slot,
}

struct Cluster {
    handle: Handle,
    nodes: Vec<SimNodeState>,
}

fn voters() -> Vec<Voter> {
    (1..=VOTERS)
        .map(|id| Voter {
            id,
            address: addr(id).to_string(),
        })
        .collect()
}

fn config(id: i32) -> QuorumConfig {
    QuorumConfig {
        node_id: id,
        voters: voters(),
        listen: Some(addr(id).to_string()),
        advertised: None,
        data_dir: PathBuf::from("/data"),
        cluster_id_if_new: None,
        // Small, so snapshots and purges happen and the learner must start from a snapshot.
        snapshot_every: 5,
        timeouts: QuorumTimeouts::default(),
        settings: ControllerSettings {
            // The brokers here never heartbeat after their first: no fencing in this story.
            broker_session_timeout_ms: 3_600_000,
            ..ControllerSettings::default()
        },
    }
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            handle: Handle::current(),
            nodes: Vec::new(),
        }
    }

    fn add_node(&mut self, id: i32) {
        let disk = FaultyDisk::new(
            madsim::rand::random::<u64>(),
            FaultyDiskConfig {
                torn_writes: true,
                latency: Some((Duration::from_micros(50), Duration::from_millis(2))),
                ..FaultyDiskConfig::default()
            },
        );
        let plane: Slot = Arc::new(Mutex::new(None));
        let node = {
            let (disk, plane) = (disk.clone(), Arc::clone(&plane));
            self.handle
                .create_node()
                .name(format!("n{id}"))
                .ip(addr(id).ip())
                .init(move || {
                    let (disk, plane) = (disk.clone(), Arc::clone(&plane));
                    async move {
                        let started = RaftPlane::start(config(id), Arc::new(disk))
                            .await
                            .expect("the plane starts");
                        *plane.lock().unwrap() = Some(Arc::clone(&started));
                        if id == LEARNER {
                            register_self(&started).await;
                        }
                        std::future::pending::<()>().await;
                    }
                })
                .build()
                .id()
        };
        self.nodes.push(SimNodeState {
            id,
            node,
            disk,
            plane,
        });
    }

    fn state(&self, id: i32) -> &SimNodeState {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    fn plane(&self, id: i32) -> Option<Arc<RaftPlane>> {
        self.state(id).plane.lock().unwrap().clone()
    }

    fn kill(&self, id: i32) {
        *self.state(id).plane.lock().unwrap() = None;
        self.handle.kill(self.state(id).node);
    }

    fn restart(&self, id: i32) {
        *self.state(id).plane.lock().unwrap() = None;
        self.handle.restart(self.state(id).node);
    }

    /// The active controller every live voter agrees on, other than `not` (a node cut off or
    /// stopped, whose own view is ignored: a cut-off leader still believes it leads).
    async fn leader(&self, not: Option<i32>) -> i32 {
        for _ in 0..600 {
            let seen: Vec<Option<i32>> = self
                .nodes
                .iter()
                .filter(|n| n.id <= VOTERS && Some(n.id) != not)
                .filter_map(|n| self.plane(n.id))
                .map(|p| p.quorum_status().active_controller)
                .collect();
            if let Some(Some(first)) = seen.first() {
                if seen.len() as i32 >= VOTERS - 1 - i32::from(not.is_some())
                    && seen.iter().all(|l| *l == Some(*first))
                    && Some(*first) != not
                {
                    return *first;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the voters never agreed on a leader");
    }

    /// Submits `request` through node `via`'s plane, on that node (a kill of the node ends it).
    async fn submit(
        &self,
        via: i32,
        request: ControllerRequest,
    ) -> Option<Result<ControllerReply, ControllerError>> {
        let plane = loop {
            if let Some(plane) = self.plane(via) {
                break plane;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let node = self.handle.get_node(self.state(via).node)?;
        node.spawn(async move { plane.submit(request).await })
            .await
            .ok()
    }
}

impl Cluster {
    /// Creates `count` topics one after another through node `via`'s plane, on that node; the
    /// names acknowledged and the number of failures.
    fn workload(
        &self,
        via: i32,
        prefix: &'static str,
        count: usize,
    ) -> madsim::task::JoinHandle<(Vec<String>, usize)> {
        let plane = self.plane(via).expect("the workload's node is up");
        let node = self.handle.get_node(self.state(via).node).unwrap();
        node.spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = 0;
            for i in 0..count {
                let name = format!("{prefix}{i}");
                match plane.submit(create(&name)).await {
                    Ok(ControllerReply::CreateTopics(results)) if results[0].1.is_ok() => {
                        assert!(
                            plane.image().topic(&name).is_some(),
                            "{name} acknowledged but not in the image"
                        );
                        acknowledged.push(name);
                    }
                    Ok(other) => panic!("{name}: a refusal in a story with none: {other:?}"),
                    Err(_) => failed += 1,
                }
            }
            (acknowledged, failed)
        })
    }
}

fn create(name: &str) -> ControllerRequest {
    ControllerRequest::CreateTopics {
        topics: vec![NewTopic {
            name: name.to_string(),
            num_partitions: 1,
            replication_factor: 1,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        }],
        validate_only: false,
    }
}

async fn register_self(plane: &RaftPlane) {
    let id = plane.node_id();
    loop {
        let outcome = plane
            .submit(ControllerRequest::RegisterBroker {
                id,
                incarnation_id: uuid::Uuid::from_u128(madsim::rand::random::<u128>()),
                endpoint: Endpoint {
                    host: addr(id).ip().to_string(),
                    port: 9092,
                },
                controller_endpoint: plane.controller_endpoint(),
                rack: None,
                previous_broker_epoch: -1,
            })
            .await;
        if outcome.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers and unfences broker `id` through node `via`.
async fn bring_up(cluster: &Cluster, via: i32, id: i32) {
    loop {
        let reply = cluster
            .submit(
                via,
                ControllerRequest::RegisterBroker {
                    id,
                    incarnation_id: uuid::Uuid::from_u128(id as u128),
                    endpoint: Endpoint {
                        host: addr(id).ip().to_string(),
                        port: 9092,
                    },
                    controller_endpoint: None,
                    rack: None,
                    previous_broker_epoch: -1,
                },
            )
            .await;
        let Some(Ok(ControllerReply::Registered { epoch })) = reply else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let caught_up_offset = cluster.plane(via).map_or(0, |p| p.image().metadata_offset);
        let reply = cluster
            .submit(
                via,
                ControllerRequest::Heartbeat {
                    id,
                    epoch,
                    caught_up_offset,
                    want_shutdown: false,
                },
            )
            .await;
        if let Some(Ok(ControllerReply::Heartbeat { fenced: false, .. })) = reply {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the workload saw: topics whose creation was acknowledged.
#[derive(Default)]
struct History {
    acknowledged: Vec<String>,
    failed: usize,
}

async fn create_topics(cluster: &Cluster, history: &mut History, prefix: &str, vias: &[i32]) {
    for (i, via) in vias.iter().enumerate() {
        let name = format!("{prefix}{i}");
        let reply = cluster.submit(*via, create(&name)).await;
        match reply {
            Some(Ok(ControllerReply::CreateTopics(results))) if results[0].1.is_ok() => {
                // Read your writes on the node that answered.
                let image = cluster.plane(*via).map(|p| p.image());
                if let Some(image) = image {
                    assert!(
                        image.topic(&name).is_some(),
                        "{name} acknowledged by {via} but not in its image"
                    );
                }
                history.acknowledged.push(name);
            }
            Some(Ok(other)) => panic!("{name}: a refusal in a story with none: {other:?}"),
            _ => history.failed += 1,
        }
    }
}

/// After the heal: every node's image equals the leader's and holds every acknowledged topic.
async fn converge(cluster: &Cluster, history: &History) {
    let leader = cluster.leader(None).await;
    // A last write through the leader, so every node has something of this term to apply.
    let mut tail = History::default();
    while tail.acknowledged.is_empty() {
        create_topics(cluster, &mut tail, "final-", &[leader]).await;
    }
    let mut last: Vec<(i32, ClusterImage)> = Vec::new();
    for _ in 0..600 {
        let reference = cluster.plane(leader).unwrap().image();
        last = cluster
            .nodes
            .iter()
            .filter_map(|n| Some((n.id, (*cluster.plane(n.id)?.image()).clone())))
            .collect();
        if last.len() == cluster.nodes.len() && last.iter().all(|(_, i)| *i == *reference) {
            for name in &history.acknowledged {
                assert!(
                    reference.topic(name).is_some(),
                    "acknowledged topic {name} was lost"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let offsets: Vec<_> = last
        .iter()
        .map(|(id, i)| (*id, i.metadata_offset, i.topics.len()))
        .collect();
    panic!("the images never converged: {offsets:?}");
}

#[madsim::test]
async fn commits_survive_a_leader_kill_a_leader_partition_and_a_power_loss_of_every_voter() {
    let mut cluster = Cluster::new();
    for id in 1..=VOTERS {
        cluster.add_node(id);
    }
    let mut history = History::default();
    let leader = cluster.leader(None).await;
    for id in 1..=VOTERS {
        bring_up(&cluster, leader, id).await;
    }
    // More entries than `snapshot_every`: the learner joins after the log below is purged.
    create_topics(&cluster, &mut history, "a", &[1, 2, 3, 1, 2, 3, 1, 2]).await;
    let first = cluster.plane(leader).unwrap().image().topic("a0").is_some();
    assert!(first, "a0 was not created");
    // The leader snapshots every 5 entries and purges below: wait until the log no longer
    // holds the registrations, so the learner can only get them from a snapshot.
    let leader = cluster.leader(None).await;
    for _ in 0..100 {
        if cluster.plane(leader).unwrap().purged_offset() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster.plane(leader).unwrap().purged_offset() >= 5,
        "the leader never purged its log"
    );
    cluster.add_node(LEARNER);

    // The leader dies; the others elect a new one and go on; it comes back as a follower.
    let old = cluster.leader(None).await;
    cluster.kill(old);
    let others: Vec<i32> = (1..=VOTERS).filter(|id| *id != old).collect();
    create_topics(
        &cluster,
        &mut history,
        "b",
        &[others[0], others[1], LEARNER, others[0]],
    )
    .await;
    cluster.restart(old);

    // The leader is cut off: requests through the others go to the new leader once elected.
    let old = cluster.leader(None).await;
    let net = NetSim::current();
    net.clog_node(cluster.state(old).node);
    let others: Vec<i32> = (1..=VOTERS).filter(|id| *id != old).collect();
    cluster.leader(Some(old)).await;
    create_topics(
        &cluster,
        &mut history,
        "c",
        &[others[0], LEARNER, others[1], others[0]],
    )
    .await;
    net.unclog_node(cluster.state(old).node);

    // Power loss of every voter at once, with creations in flight from the learner: each disk
    // keeps only what it synced (a torn prefix of the rest at most).
    let in_flight = cluster.workload(LEARNER, "d", 40);
    tokio::time::sleep(Duration::from_millis(madsim::rand::random::<u64>() % 400)).await;
    for id in 1..=VOTERS {
        cluster.kill(id);
        cluster.state(id).disk.crash();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in 1..=VOTERS {
        cluster.restart(id);
    }
    let (acknowledged, failed) = in_flight
        .await
        .expect("the learner's workload runs to its end");
    history.acknowledged.extend(acknowledged);
    history.failed += failed;
    create_topics(&cluster, &mut history, "e", &[1, 2, 3, LEARNER]).await;

    converge(&cluster, &history).await;
    let torn: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.disk.fault_counts().torn_writes)
        .sum();
    let lost: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.disk.fault_counts().lost_bytes)
        .sum();
    eprintln!(
        "acknowledged {}, failed {}, torn tails {torn}, unsynced bytes lost {lost}",
        history.acknowledged.len(),
        history.failed
    );
    assert!(
        history.acknowledged.len() >= 12,
        "too little was acknowledged to tell anything: {} acknowledged, {} failed",
        history.acknowledged.len(),
        history.failed
    );
}

/// The bug story: a broker whose open failed stopped its plane and started it again in the same
/// process, but the peers' connections to the stopped plane's controller listener lived on (and
/// in the simulator each accepted stream keeps the listener's address), so every later start
/// failed with "address already in use" and the node never came back.
#[madsim::test]
async fn a_plane_stopped_while_its_peers_stay_connected_starts_again_on_the_same_listener() {
    let mut cluster = Cluster::new();
    for id in 1..=VOTERS {
        cluster.add_node(id);
    }
    let leader = cluster.leader(None).await;
    for id in 1..=VOTERS {
        bring_up(&cluster, leader, id).await;
    }
    // The leader's heartbeats keep a connection open to every follower's listener.
    let follower = (1..=VOTERS).find(|id| *id != leader).unwrap();
    let stopped = cluster.plane(follower).unwrap();
    let disk = cluster.state(follower).disk.clone();
    let node = cluster
        .handle
        .get_node(cluster.state(follower).node)
        .unwrap();
    let restarted = node
        .spawn(async move {
            stopped.shutdown().await;
            drop(stopped);
            RaftPlane::start(config(follower), Arc::new(disk)).await
        })
        .await
        .expect("the node runs the restart");
    let restarted = restarted.expect("a stopped plane's listener address is free again");
    *cluster.state(follower).plane.lock().unwrap() = Some(restarted);
    // The restarted replica serves again: a change submitted through it commits.
    let mut history = History::default();
    create_topics(&cluster, &mut history, "a", &[follower]).await;
    assert_eq!(history.acknowledged, vec!["a0".to_string()]);
}
