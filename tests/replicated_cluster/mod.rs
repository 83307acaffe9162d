//! Three brokers in one process for the replication tests: each on its own tokio runtime and
//! loopback listener, sharing one in-memory metadata plane (a `SoloPlane` owned by no broker, so
//! every broker's session can expire). Followers fetch from leaders over real TCP.
//!
//! A stopped broker is its runtime shut down: its tasks and sockets die at once, without a
//! controlled shutdown, and its files stay as they were (what a kill -9 leaves, minus the page
//! cache loss that the simulator's faulty disk models).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use broker::broker::{Broker, PlaneContext, PlaneFuture, StartedPlane};
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::controller::decide::ControllerSettings;
use broker::controller::plane::MetadataPlane;
use broker::disk::FileDisk;
use broker::partition::Partition;
use broker::solo_plane::SoloPlane;

/// The bound on every wait: generous for a loaded machine, finite so a hang fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// What the three brokers are configured with.
#[derive(Clone, Copy)]
pub struct Settings {
    /// `replica.lag.time.max.ms`.
    pub lag_ms: u64,
    /// `broker.session.timeout.ms`, for the brokers and the plane.
    pub session_ms: u64,
    /// `offsets.topic.num.partitions` and `transaction.state.log.num.partitions`.
    pub offsets_partitions: i32,
}

struct Node {
    addr: Option<SocketAddr>,
    dir: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    broker: Option<Arc<Broker>>,
}

pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub plane: Arc<SoloPlane>,
    nodes: Vec<Node>,
    /// Runs the test's own async work (clients, admin calls).
    pub driver: tokio::runtime::Runtime,
    settings: Settings,
    /// Per-broker config changes on top of the settings (racks, the replica selector).
    configure: fn(i32, &mut BrokerConfig),
}

impl Cluster {
    /// Brokers 1, 2 and 3, started.
    pub fn start(settings: Settings) -> Cluster {
        Cluster::start_configured(settings, |_, _| {})
    }

    /// Brokers 1, 2 and 3, started, each config changed by `configure(node id, config)`.
    pub fn start_configured(settings: Settings, configure: fn(i32, &mut BrokerConfig)) -> Cluster {
        Cluster::start_with_controller(settings, configure, |_| {})
    }

    /// [`Cluster::start_configured`], with the controller's settings changed by `controller`
    /// too (e.g. eligible leader replicas, which brokers and controller must agree on).
    pub fn start_with_controller(
        settings: Settings,
        configure: fn(i32, &mut BrokerConfig),
        controller: fn(&mut ControllerSettings),
    ) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let tmp = tempfile::tempdir().unwrap();
        let driver = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut controller_settings = ControllerSettings {
            broker_session_timeout_ms: settings.session_ms as i64,
            ..ControllerSettings::default()
        };
        controller(&mut controller_settings);
        let plane = driver
            .block_on(SoloPlane::open(
                100,
                controller_settings,
                Arc::new(SystemClock),
                None,
                None,
            ))
            .unwrap();
        let nodes = (1..=3)
            .map(|id| Node {
                addr: None,
                dir: tmp.path().join(format!("node-{id}")),
                runtime: None,
                broker: None,
            })
            .collect();
        let mut cluster = Cluster {
            _tmp: tmp,
            plane,
            nodes,
            driver,
            settings,
            configure,
        };
        for id in 1..=3 {
            cluster.start_node(id);
        }
        cluster
    }

    fn node(&mut self, id: i32) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Broker `id`, which must be running.
    pub fn broker(&self, id: i32) -> Arc<Broker> {
        Arc::clone(
            self.nodes[(id - 1) as usize]
                .broker
                .as_ref()
                .expect("running"),
        )
    }

    /// Starts (or restarts) broker `id` on its data directory and its port.
    pub fn start_node(&mut self, id: i32) {
        let plane = Arc::clone(&self.plane);
        let settings = self.settings;
        let configure = self.configure;
        let node = self.node(id);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bind = node
            .addr
            .map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&bind))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = BrokerConfig {
            node_id: id,
            listen: addr.to_string(),
            data_dir: node.dir.clone(),
            broker_session_timeout_ms: settings.session_ms,
            broker_heartbeat_interval_ms: 100,
            replica_lag_time_max_ms: settings.lag_ms,
            offsets_topic_num_partitions: settings.offsets_partitions,
            // Internal topics alike: as small as the test asks.
            transaction_state_log_num_partitions: settings.offsets_partitions,
            ..BrokerConfig::default()
        };
        configure(id, &mut config);
        let broker = runtime
            .block_on(Broker::open_with_plane(
                config,
                Arc::new(FileDisk::new()),
                Arc::new(SystemClock),
                Box::new(move |_: PlaneContext| -> PlaneFuture {
                    Box::pin(async move {
                        Ok(StartedPlane {
                            plane: plane as Arc<dyn MetadataPlane>,
                            controller_endpoint: None,
                            stop: None,
                        })
                    })
                }),
            ))
            .unwrap();
        runtime.spawn(broker::server::serve(
            Arc::clone(&broker),
            listener,
            std::future::pending(),
        ));
        node.addr = Some(addr);
        node.runtime = Some(runtime);
        node.broker = Some(broker);
    }

    /// Stops broker `id` at once: its runtime shuts down with every task and socket of it.
    pub fn stop(&mut self, id: i32) {
        let node = self.node(id);
        node.broker = None;
        if let Some(runtime) = node.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(10));
        }
    }

    /// Broker `id`'s data directory.
    pub fn data_dir(&self, id: i32) -> PathBuf {
        self.nodes[(id - 1) as usize].dir.clone()
    }

    /// Every broker that has been started, as `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.addr)
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Broker `id`'s listener, `HOST:PORT` (it keeps its port across restarts).
    pub fn address(&self, id: i32) -> String {
        self.nodes[(id - 1) as usize]
            .addr
            .expect("started once")
            .to_string()
    }

    /// Is `name`-0 open on every running broker?
    /// Whether every broker has `name`-0 open in the role and leader epoch the plane's image
    /// gives it: the image is published first, and a broker that has not applied it yet
    /// answers NOT_LEADER_OR_FOLLOWER (which a client retries; tests often send only once).
    pub fn open_everywhere(&self, name: &str) -> bool {
        let image = self.plane.image();
        let Some(assignment) = image.partition(name, 0) else {
            return false;
        };
        self.nodes.iter().enumerate().all(|(i, n)| {
            n.broker.as_ref().is_some_and(|b| {
                b.partition(name, 0).is_some_and(|p| {
                    let state = p.replica_state();
                    state.leader_epoch() == assignment.leader_epoch
                        && state.is_leader() == (assignment.leader == i as i32 + 1)
                })
            })
        })
    }

    /// Partition 0's leader in the plane's image.
    pub fn leader(&self, topic: &str) -> i32 {
        self.plane.image().partition(topic, 0).unwrap().leader
    }

    /// Partition 0's ISR in the plane's image, in id order.
    pub fn isr(&self, topic: &str) -> Vec<i32> {
        let mut isr = self.plane.image().partition(topic, 0).unwrap().isr.clone();
        isr.sort_unstable();
        isr
    }

    /// Partition 0's eligible leader replicas (KIP-966) in the plane's image.
    pub fn elr(&self, topic: &str) -> Vec<i32> {
        self.plane.image().partition(topic, 0).unwrap().elr.clone()
    }

    pub fn fenced(&self, id: i32) -> bool {
        self.plane.image().brokers[&id].fenced
    }

    /// Broker `id`'s replica of `topic`-0.
    pub fn replica(&self, id: i32, topic: &str) -> Arc<Partition> {
        self.broker(id)
            .partition(topic, 0)
            .expect("a local replica")
    }

    /// Waits until `ready` holds, polling (bounded: a hang is a failure, not a timing).
    pub fn eventually(&self, what: &str, ready: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !ready() {
            assert!(std::time::Instant::now() < deadline, "never saw {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What an in-process CLI command printed and returned.
pub struct Run {
    pub code: i32,
    pub out: String,
    pub err: String,
}

/// `faultline topics <args> --bootstrap-server <broker id's address>`, in-process.
pub fn topics(cluster: &Cluster, via: i32, args: &[&str]) -> Run {
    use clap::Parser;
    use cli::{Cli, Command};
    let address = cluster.address(via);
    let argv = ["faultline", "topics"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--bootstrap-server", address.as_str()]);
    let parsed = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Command::Topics(a) = parsed.command else {
        panic!("not a topics command");
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cluster
        .driver
        .block_on(cli::topics::run(a, &mut out, &mut err));
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}
