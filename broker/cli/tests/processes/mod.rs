//! Real `faultline` processes for the tests of this directory: the binary, free ports for a
//! cluster's layout, and [`Brokers`], one `faultline broker` process per node that a test can
//! kill -9 and start again on its data directory.
// Test code: real processes, files and waits (clippy.toml's bans are for broker code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types, dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");
/// Generous bounds for a loaded 2-core machine; they only stop a broken run from hanging.
pub const WAIT: Duration = Duration::from_secs(90);

pub fn faultline(args: &[&str]) -> Output {
    Command::new(FAULTLINE)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("faultline runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A base port whose cluster layout (node i on base + 100 * (i - 1) and the port above) is
/// free now. Each call starts from its own place, so tests running at once do not collide.
pub fn free_base_port(brokers: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 300) as u16 * 100;
    for _ in 0..200 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = start + (step % 300) * 110 + 2;
        let ports: Vec<u16> = (0..brokers)
            .flat_map(|i| [base + 100 * i, base + 100 * i + 1])
            .collect();
        let listeners: Vec<_> = ports
            .iter()
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).ok())
            .collect();
        if listeners.len() == ports.len() {
            return base;
        }
    }
    panic!("no free ports for {brokers} brokers");
}

/// Nodes of a cluster started one `faultline broker` process each (not through `cluster up`,
/// which stops every node when one dies), so a test can kill -9 one and start it again on the
/// same data directory. Each node's log (stderr) goes to `node-i.log`, appended across
/// restarts; every process still running is killed on drop.
pub struct Brokers {
    pub plan: cli::cluster::ClusterPlan,
    settings: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Brokers {
    pub fn start(count: u16, dir: &Path, settings: &[String]) -> Brokers {
        let base = free_base_port(count);
        let plan = cli::cluster::plan(count, base, dir).expect("a plan");
        let mut brokers = Brokers {
            children: (0..plan.nodes.len()).map(|_| None).collect(),
            plan,
            settings: settings.to_vec(),
        };
        for id in 1..=i32::from(count) {
            brokers.spawn(id);
        }
        brokers
    }

    pub fn node(&self, id: i32) -> &cli::cluster::NodePlan {
        &self.plan.nodes[usize::try_from(id - 1).unwrap()]
    }

    pub fn addr(&self, id: i32) -> String {
        self.node(id).listen.clone()
    }

    pub fn spawn(&mut self, id: i32) {
        let node = self.node(id).clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let child = Command::new(FAULTLINE)
            .args(node.broker_args(&self.plan.voters, &self.settings))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("broker starts");
        self.children[usize::try_from(id - 1).unwrap()] = Some(child);
    }

    /// SIGKILL (std's `Child::kill`), then reap it: nothing of the process runs afterwards.
    pub fn kill9(&mut self, id: i32) {
        let mut child = self.children[usize::try_from(id - 1).unwrap()]
            .take()
            .expect("node running");
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
    }

    /// Every node's client address, as `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.plan.bootstrap_servers()
    }

    /// Waits until the cluster has formed as node `via` sees it: every node registered and
    /// unfenced, and an active controller; returns `cluster describe --json` at that moment.
    pub fn await_formed(&self, via: i32) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let described = describe_cluster(&self.addr(via));
            let formed = described.filter(|d| {
                let nodes = d["nodes"].as_array().map_or(&[][..], |n| n.as_slice());
                nodes.len() == self.plan.nodes.len()
                    && nodes.iter().all(|n| n["fenced"] == false)
                    && d["active_controller"].is_i64()
            });
            if let Some(described) = formed {
                return described;
            }
            assert!(
                Instant::now() < deadline,
                "no cluster of {}\n{}",
                self.plan.nodes.len(),
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of every node's log, for a failure message.
    pub fn log_tails(&self) -> String {
        self.plan
            .nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                format!("--- node {} ({}):\n{tail}\n", n.id, n.log.display())
            })
            .collect()
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `cluster describe --json` through `addr`, if it answered.
pub fn describe_cluster(addr: &str) -> Option<serde_json::Value> {
    let run = faultline(&["cluster", "describe", "--bootstrap-server", addr, "--json"]);
    run.status
        .success()
        .then(|| serde_json::from_slice(&run.stdout).ok())
        .flatten()
}
