//! A simulated cluster: broker nodes running the real broker code on simulated IPs
//! (`10.0.0.<id>:9092`), each with its own [`FaultyDisk`] kept outside the node so it outlives
//! kill and restart, and client nodes (`10.0.1.<n>`) that run the workload.
//!
//! A broker node's `init` (its `main`, run again on every restart) opens the broker from its
//! disk with `Broker::open` and serves `server::serve` on its listener until the node dies. The
//! harness keeps a handle to the live incarnation's [`Broker`] so the runner can check its
//! invariants online and resolve roles ("the leader of t/0").
//!
//! With more than one broker the nodes form one cluster on a real metadata quorum: every node
//! runs the broker's [`RaftPlane`] with its controller listener on `10.0.0.<id>:9093`; the
//! voters are the first `controllers` nodes (`controller.quorum.voters`), the others join as
//! learners when they register. The metadata log lives under the node's data directory on its
//! faulty disk, so power loss and torn writes strike the quorum as they strike partition logs.
//! A single broker is a quorum of one, opened exactly as `faultline broker` opens it.
//!
//! The cluster implements [`chaos::nemesis::Harness`]: kill, restart, pause, resume, network
//! clogs, packet loss, latency and the disks. It also hides madsim's restart trap: a
//! `NodeHandle` taken before a restart points at the dead incarnation and silently drops what
//! is spawned on it, so [`Cluster::spawn_on_client`] looks the node up by id every time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::broker::{Broker, PlaneContext, PlaneFuture, StartPlane, StopPlane};
use broker::config::BrokerConfig;
use broker::controller::plane::{MetadataPlane, QuorumStatus};
use chaos::nemesis::{Harness, HeldRequests, Node};
use chaos::{FaultyDisk, FaultyDiskConfig, SkewedClock};
use madsim::runtime::Handle;
use madsim::task::NodeId;

use crate::held_requests::Holds;
use crate::trace::Trace;

/// The port every broker listens on.
pub const BROKER_PORT: u16 = 9092;

/// The port of every node's controller listener (the metadata quorum's RPCs).
pub const CONTROLLER_PORT: u16 = 9093;

/// How the nodes of a cluster of more than one broker form their metadata quorum.
#[derive(Clone, Debug)]
pub struct QuorumSetup {
    /// `controller.quorum.voters`: these node ids vote; every other node is a learner.
    pub voters: Vec<u32>,
    /// `metadata.snapshot.every`: a snapshot of the image every this many log entries (small,
    /// so runs take snapshots and restarted nodes catch up from them).
    pub snapshot_every: u64,
}

/// One broker to boot.
#[derive(Clone, Debug)]
pub struct BrokerSetup {
    /// 1-based; also the last byte of its IP and its `node.id`.
    pub id: u32,
    pub config: BrokerConfig,
    pub disk: FaultyDiskConfig,
    /// Seed of the disk's fault generator (drawn from the run's seed).
    pub disk_seed: u64,
    /// `None`: a single broker, its own quorum of one.
    pub quorum: Option<QuorumSetup>,
}

/// The live incarnation of a broker, as the harness sees it.
type LiveBroker = Arc<Mutex<Option<Arc<Broker>>>>;

/// The live incarnation's metadata plane: set as soon as the plane runs, before the broker has
/// registered and opened its partitions (a node can be a voter without ever being unfenced).
/// With the count of planes started on the node so far (a broker that fails to open starts a
/// fresh one, whose image begins again from its log), so invariants per replica see one replica.
type LivePlane = Arc<Mutex<Option<(Arc<dyn MetadataPlane>, u32)>>>;

/// One node's metadata replica as the invariants see it.
#[derive(Clone)]
pub struct PlaneView {
    pub id: u32,
    /// Rises with every start of the node's plane (every boot, every failed open): state seen
    /// on an earlier replica is not this one's.
    pub incarnation: u32,
    pub status: QuorumStatus,
    pub image: Arc<broker::controller::image::ClusterImage>,
}

struct BrokerNode {
    id: u32,
    addr: SocketAddr,
    node: NodeId,
    /// How the harness kills and restarts the node's process (the nemesis and the node's own
    /// halt share it).
    process: BrokerProcess,
    disk: FaultyDisk,
    baseline: FaultyDiskConfig,
    /// The broker's own wall clock, kept here so its skew outlives restarts.
    clock: SkewedClock,
    live: LiveBroker,
    plane: LivePlane,
    incarnations: Arc<AtomicU32>,
}

struct ClientNode {
    index: u32,
    node: NodeId,
}

/// The simulated cluster. Create it inside the simulator (`Runtime::block_on`).
pub struct Cluster {
    handle: Handle,
    brokers: Vec<BrokerNode>,
    clients: Vec<ClientNode>,
    trace: Trace,
    /// The voters' ids (the only node of a single broker).
    voters: Vec<u32>,
    /// How many times a broker halted (its metadata log failed) and was restarted.
    halts: Arc<AtomicU32>,
    /// The network's holds on the clients' requests (the nemesis's `hold`).
    holds: Holds,
}

/// A broker node's process as its supervisor sees it: killed (every task stops, connections
/// close, the process's lock on its data directory goes with it) and started again. The
/// nemesis's `crash` and `restart` and a node's own halt all go through here.
#[derive(Clone)]
struct BrokerProcess {
    /// The node's name (`broker-<id>`), by which madsim finds it: the node id does not exist
    /// yet when its `init` is made.
    name: String,
    disk: FaultyDisk,
    live: LiveBroker,
    plane: LivePlane,
}

impl BrokerProcess {
    fn forget(&self) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.plane.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // The process is gone, and with it its lock on the data directory.
        self.disk.release_locks();
    }

    fn kill(&self) {
        Handle::current().kill(self.name.as_str());
        self.forget();
    }

    fn restart(&self) {
        self.forget();
        Handle::current().restart(self.name.as_str());
    }
}

/// The address of broker `id`.
pub fn broker_addr(id: u32) -> SocketAddr {
    assert!((1..=250).contains(&id), "broker id {id} out of range");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8)), BROKER_PORT)
}

/// The controller listener of broker `id`.
pub fn controller_addr(id: u32) -> SocketAddr {
    SocketAddr::new(broker_addr(id).ip(), CONTROLLER_PORT)
}

fn client_ip(index: u32) -> IpAddr {
    assert!(
        (1..=250).contains(&index),
        "client index {index} out of range"
    );
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8))
}

impl Cluster {
    /// Boots every broker and creates `clients` idle client nodes.
    pub fn boot(brokers: &[BrokerSetup], clients: u32, trace: Trace) -> Cluster {
        let handle = Handle::current();
        let mut nodes = Vec::new();
        let halts = Arc::new(AtomicU32::new(0));
        for setup in brokers {
            let addr = broker_addr(setup.id);
            let disk = FaultyDisk::new(setup.disk_seed, setup.disk.clone());
            let clock = SkewedClock::new();
            let live: LiveBroker = Arc::new(Mutex::new(None));
            let plane: LivePlane = Arc::new(Mutex::new(None));
            let incarnations = Arc::new(AtomicU32::new(0));
            let mut config = setup.config.clone();
            config.node_id = setup.id as i32;
            config.listen = addr.to_string();
            config.advertised_listener = Some(addr.to_string());
            if let Some(quorum) = &setup.quorum {
                let voters: Vec<String> = quorum
                    .voters
                    .iter()
                    .map(|&v| format!("{v}@{}", controller_addr(v)))
                    .collect();
                config.controller_quorum = Some(voters.join(","));
                config.controller_listen = Some(controller_addr(setup.id).to_string());
                config.metadata_snapshot_every = quorum.snapshot_every;
            }
            let name = Node::Broker(setup.id).to_string();
            let process = BrokerProcess {
                name: name.clone(),
                disk: disk.clone(),
                live: Arc::clone(&live),
                plane: Arc::clone(&plane),
            };
            let node = {
                let (disk, clock, live, plane, incarnations, trace, name) = (
                    disk.clone(),
                    clock.clone(),
                    Arc::clone(&live),
                    Arc::clone(&plane),
                    Arc::clone(&incarnations),
                    trace.clone(),
                    name.clone(),
                );
                let (process, halts) = (process.clone(), Arc::clone(&halts));

                handle
                    .create_node()
                    .name(name.clone())
                    .ip(addr.ip())
                    .init(move || {
                        let incarnation = incarnations.fetch_add(1, Ordering::SeqCst);
                        broker_main(
                            name.clone(),
                            incarnation,
                            config.clone(),
                            disk.clone(),
                            clock.clone(),
                            (Arc::clone(&live), Arc::clone(&plane)),
                            trace.clone(),
                            (process.clone(), Arc::clone(&halts)),
                        )
                    })
                    .build()
                    .id()
            };
            nodes.push(BrokerNode {
                id: setup.id,
                addr,
                node,
                process,
                disk,
                baseline: setup.disk.clone(),
                clock,
                live,
                plane,
                incarnations,
            });
        }
        let voters = match brokers.first().and_then(|b| b.quorum.as_ref()) {
            Some(q) => q.voters.clone(),
            None => brokers.iter().map(|b| b.id).collect(),
        };
        let clients = (1..=clients)
            .map(|index| {
                let node = handle
                    .create_node()
                    .name(Node::Client(index).to_string())
                    .ip(client_ip(index))
                    .init(std::future::pending::<()>)
                    .build()
                    .id();
                ClientNode { index, node }
            })
            .collect();
        Cluster {
            handle,
            brokers: nodes,
            clients,
            holds: Holds::new(trace.clone()),
            trace,
            voters,
            halts,
        }
    }

    /// How many times a broker halted because its metadata log failed (each time its process
    /// was restarted, as a supervisor restarts a KRaft node that halts).
    pub fn halts(&self) -> u32 {
        self.halts.load(Ordering::SeqCst)
    }

    /// `host:port,host:port` of every broker.
    pub fn bootstrap_servers(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn broker_ids(&self) -> Vec<u32> {
        self.brokers.iter().map(|b| b.id).collect()
    }

    pub fn client_count(&self) -> u32 {
        self.clients.len() as u32
    }

    /// The broker's live incarnation, if it is up and has opened its storage.
    pub fn broker(&self, id: u32) -> Option<Arc<Broker>> {
        let node = self.brokers.iter().find(|b| b.id == id)?;
        node.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The network's holds on the clients' requests: every workload client's connections ask
    /// them before writing a request.
    pub fn holds(&self) -> &Holds {
        &self.holds
    }

    /// The ids of the metadata quorum's voters.
    pub fn voters(&self) -> &[u32] {
        &self.voters
    }

    /// Every node whose metadata plane runs now: its quorum status and image.
    pub fn planes(&self) -> Vec<PlaneView> {
        self.brokers
            .iter()
            .filter_map(|b| {
                let (plane, starts) = b.plane.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
                Some(PlaneView {
                    id: b.id,
                    incarnation: starts,
                    status: plane.quorum_status(),
                    image: plane.image(),
                })
            })
            .collect()
    }

    /// The active controller now: the live node that leads the quorum in the highest term it
    /// knows (a deposed leader that has not heard of the new term yet loses to the new one).
    pub fn active_controller(&self) -> Option<(u32, u64)> {
        self.planes()
            .into_iter()
            .filter(|p| p.status.active_controller == Some(p.id as i32))
            .map(|p| (p.id, p.status.term))
            .max_by_key(|&(id, term)| (term, std::cmp::Reverse(id)))
    }

    /// How many times broker `id` has booted.
    pub fn incarnations(&self, id: u32) -> u32 {
        self.brokers
            .iter()
            .find(|b| b.id == id)
            .map_or(0, |b| b.incarnations.load(Ordering::SeqCst))
    }

    /// The live broker that leads `topic`/`partition` now, by the image of the node that knows
    /// the most (the highest metadata offset), if that leader is up.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<u32> {
        let newest = self
            .planes()
            .into_iter()
            .max_by_key(|p| (p.image.metadata_offset, std::cmp::Reverse(p.id)))?;
        let leader = newest.image.partition(topic, partition)?.leader;
        let leader = u32::try_from(leader).ok()?;
        self.broker(leader).map(|_| leader)
    }

    /// Spawns `future` on client node `index` (1-based). Looks the node up by id each time, so a
    /// restarted node gets the task (a `NodeHandle` kept from before a restart drops it).
    pub fn spawn_on_client<F>(&self, index: u32, future: F) -> madsim::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let client = self
            .clients
            .iter()
            .find(|c| c.index == index)
            .unwrap_or_else(|| panic!("no client node {index}"));
        self.handle
            .get_node(client.node)
            .expect("client node exists")
            .spawn(future)
    }

    fn broker_node(&self, id: u32) -> &BrokerNode {
        self.brokers
            .iter()
            .find(|b| b.id == id)
            .unwrap_or_else(|| panic!("no broker {id}"))
    }

    fn node_id(&self, node: Node) -> NodeId {
        match node {
            Node::Broker(id) => {
                self.brokers
                    .iter()
                    .find(|b| b.id == id)
                    .unwrap_or_else(|| panic!("no broker {id}"))
                    .node
            }
            Node::Client(index) => {
                self.clients
                    .iter()
                    .find(|c| c.index == index)
                    .unwrap_or_else(|| panic!("no client {index}"))
                    .node
            }
        }
    }
}

/// A broker node's `main`: open the broker from the disk (retrying while the disk fails), then
/// serve until the node is killed or halts. `(live, plane)`: where the harness sees the live
/// broker and its metadata plane. A broker whose metadata log fails halts: its process is
/// killed and started again at once (a supervisor's restart: no power loss, the page cache
/// survives), through the same kill and restart as the nemesis's; `halts` counts it.
#[allow(clippy::too_many_arguments)]
async fn broker_main(
    name: String,
    incarnation: u32,
    config: BrokerConfig,
    disk: FaultyDisk,
    clock: SkewedClock,
    (live, plane): (LiveBroker, LivePlane),
    trace: Trace,
    (process, halts): (BrokerProcess, Arc<AtomicU32>),
) {
    trace.event(&name, format!("boot (incarnation {incarnation})"));
    let mut attempts = 0u32;
    let broker = loop {
        let stop_slot: StopSlot = Arc::new(Mutex::new(None));
        let start = watched_plane(
            broker::broker::raft_plane(&config, Arc::new(disk.clone())),
            Arc::clone(&plane),
            Arc::clone(&stop_slot),
        );
        let opened = Broker::open_with_plane(
            config.clone(),
            Arc::new(disk.clone()),
            Arc::new(clock.clone()),
            start,
        )
        .await;
        match opened {
            Ok(broker) => break broker,
            Err(e) => {
                attempts += 1;
                trace.event(&name, format!("open failed (attempt {attempts}): {e}"));
                // The next attempt starts a fresh replica on the same log and listener.
                *plane.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let stop = stop_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(stop) = stop {
                    stop().await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut opened = String::new();
    for topic in broker.topics() {
        for partition in &topic.partitions {
            let o = partition.log.offsets();
            opened.push_str(&format!(
                " {}-{}=[{}..{}]",
                topic.name, partition.index, o.log_start_offset, o.log_end_offset
            ));
        }
    }
    trace.event(&name, format!("storage open:{opened}"));
    *live.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&broker));
    let addr: SocketAddr = config.listen.parse().expect("listen address");
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                trace.event(&name, format!("bind failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let halting = Arc::clone(&broker);
    tokio::select! {
        biased;
        reason = halting.halted() => {
            trace.event(&name, format!("halts: {reason}; its supervisor restarts it"));
            halts.fetch_add(1, Ordering::SeqCst);
            // Every task of this incarnation, this one included, stops here.
            process.kill();
            process.restart();
            std::future::pending::<()>().await
        }
        () = broker::server::serve(broker, listener, std::future::pending::<()>()) => {}
    }
}

/// How a started plane is stopped: by the broker at its shutdown, or by the harness when the
/// broker failed to open around it (the next attempt starts a fresh replica on the same log).
type StopSlot = Arc<Mutex<Option<StopPlane>>>;

/// Planes started in this process, numbering each replica (only its distinctness matters).
static PLANE_STARTS: AtomicU32 = AtomicU32::new(0);

/// `start`, the broker's own plane (its metadata replica as `faultline broker` starts it),
/// shown to the harness as soon as it runs, before the broker has registered.
fn watched_plane(start: StartPlane, live: LivePlane, stop_slot: StopSlot) -> StartPlane {
    Box::new(move |ctx: PlaneContext| -> PlaneFuture {
        Box::pin(async move {
            let mut started = start(ctx).await?;
            let starts = PLANE_STARTS.fetch_add(1, Ordering::SeqCst);
            *live.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Arc::clone(&started.plane), starts));
            *stop_slot.lock().unwrap_or_else(|e| e.into_inner()) = started.stop.take();
            let stop: StopPlane = Box::new(move || {
                Box::pin(async move {
                    let stop = stop_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(stop) = stop {
                        stop().await;
                    }
                })
            });
            started.stop = Some(stop);
            Ok(started)
        })
    })
}

impl Harness for Cluster {
    fn nodes(&self) -> Vec<Node> {
        let brokers = self.brokers.iter().map(|b| Node::Broker(b.id));
        brokers
            .chain(self.clients.iter().map(|c| Node::Client(c.index)))
            .collect()
    }

    fn kill(&mut self, node: Node) {
        match node {
            Node::Broker(id) => self.broker_node(id).process.kill(),
            Node::Client(_) => self.handle.kill(self.node_id(node)),
        }
        self.trace.event(node.to_string(), "killed");
    }

    fn restart(&mut self, node: Node) {
        match node {
            Node::Broker(id) => self.broker_node(id).process.restart(),
            Node::Client(_) => self.handle.restart(self.node_id(node)),
        }
    }

    fn pause(&mut self, node: Node) {
        self.handle.pause(self.node_id(node));
    }

    fn resume(&mut self, node: Node) {
        self.handle.resume(self.node_id(node));
    }

    fn clog_node(&mut self, node: Node) {
        madsim::net::NetSim::current().clog_node(self.node_id(node));
    }

    fn unclog_node(&mut self, node: Node) {
        madsim::net::NetSim::current().unclog_node(self.node_id(node));
    }

    fn clog_link(&mut self, from: Node, to: Node) {
        madsim::net::NetSim::current().clog_link(self.node_id(from), self.node_id(to));
    }

    fn unclog_link(&mut self, from: Node, to: Node) {
        madsim::net::NetSim::current().unclog_link(self.node_id(from), self.node_id(to));
    }

    fn set_packet_loss(&mut self, rate: f64) {
        madsim::net::NetSim::current().update_config(|c| c.packet_loss_rate = rate);
    }

    fn set_latency(&mut self, range: Option<(Duration, Duration)>) {
        let range = match range {
            Some((min, max)) => min..max.max(min + Duration::from_micros(1)),
            None => madsim::net::Config::default().send_latency,
        };
        madsim::net::NetSim::current().update_config(|c| c.send_latency = range);
    }

    fn disk(&self, node: Node) -> Option<FaultyDisk> {
        match node {
            Node::Broker(id) => self
                .brokers
                .iter()
                .find(|b| b.id == id)
                .map(|b| b.disk.clone()),
            Node::Client(_) => None,
        }
    }

    fn baseline_disk_config(&self, node: Node) -> FaultyDiskConfig {
        match node {
            Node::Broker(id) => self
                .brokers
                .iter()
                .find(|b| b.id == id)
                .map(|b| b.baseline.clone())
                .unwrap_or_default(),
            Node::Client(_) => FaultyDiskConfig::default(),
        }
    }

    fn hold_requests(&mut self, which: &HeldRequests) {
        self.holds.hold(which);
    }

    fn release_held_requests(&mut self) -> u32 {
        self.holds.heal()
    }

    fn clock(&self, node: Node) -> Option<SkewedClock> {
        match node {
            Node::Broker(id) => self
                .brokers
                .iter()
                .find(|b| b.id == id)
                .map(|b| b.clock.clone()),
            Node::Client(_) => None,
        }
    }
}
