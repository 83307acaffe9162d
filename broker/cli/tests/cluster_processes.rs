//! How a user runs a cluster, with real `faultline` processes on loopback: the quorum flags a
//! broker refuses at start, `faultline cluster up` starting, serving and stopping its brokers
//! (on Ctrl-C, or when one of them dies), and what `topics describe` and `cluster describe`
//! print, as kafka-topics.sh and kafka-metadata-quorum.sh print it.
//!
//! The bugs these guard against: a quorum that lists one id twice or an address without a port
//! would start a node that can never join; a voter whose controller listener is not where the
//! others dial it waits for votes forever; `cluster up` that leaves its brokers running after
//! Ctrl-C or after one of them died keeps data directories locked and ports taken.
#![cfg(not(madsim))]
// Test code: real processes, files and waits (clippy.toml's bans are for broker code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");
/// Generous bounds for a loaded 2-core machine; they only stop a broken run from hanging.
const WAIT: Duration = Duration::from_secs(90);

fn faultline(args: &[&str]) -> Output {
    Command::new(FAULTLINE)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("faultline runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A base port whose cluster layout (node i on base + 100 * (i - 1) and the port above) is
/// free now. Each call starts from its own place, so tests running at once do not collide.
fn free_base_port(brokers: u16) -> u16 {
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

/// A `faultline cluster up` process; killed (with its process group's brokers found by pid)
/// on drop, so a failing test leaves nothing running.
struct ClusterUp {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// Everything read from its stdout so far.
    seen: String,
    /// Broker pids as `up` printed them, node 1 first.
    pids: Vec<u32>,
    bootstrap: String,
}

impl ClusterUp {
    /// Starts `cluster up` and waits for its bootstrap line.
    fn start(brokers: u16, dir: &Path) -> ClusterUp {
        let base = free_base_port(brokers);
        let mut child = Command::new(FAULTLINE)
            .args(["cluster", "up", "--brokers", &brokers.to_string()])
            .args(["--base-port", &base.to_string(), "--data-dir"])
            .arg(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cluster up starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut up = ClusterUp {
            child,
            stdout,
            seen: String::new(),
            pids: Vec::new(),
            bootstrap: String::new(),
        };
        let line = up.read_until("Bootstrap servers: ");
        up.bootstrap = line
            .trim_end()
            .strip_prefix("Bootstrap servers: ")
            .unwrap()
            .to_string();
        up.pids = up
            .seen
            .lines()
            .filter_map(|l| l.split_once("(pid ")?.1.split_once(')'))
            .map(|(pid, _)| pid.parse().unwrap())
            .collect();
        assert_eq!(up.pids.len(), usize::from(brokers), "{}", up.seen);
        up
    }

    /// Reads stdout up to the line starting with `prefix`; panics with what `up` said if it
    /// ends first.
    fn read_until(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let mut err = String::new();
                let _ = self.child.stderr.as_mut().unwrap().read_to_string(&mut err);
                panic!("no line {prefix:?}; stdout:\n{}\nstderr:\n{err}", self.seen);
            }
            self.seen.push_str(&line);
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own, unreaped child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }

    /// Waits for `up` to exit; its status, the rest of its stdout, and its stderr.
    fn wait(&mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "cluster up did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        self.seen.push_str(&rest);
        let mut err = String::new();
        self.child
            .stderr
            .as_mut()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code(), self.seen.clone(), err)
    }
}

impl Drop for ClusterUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &pid in &self.pids {
            // SAFETY: kill(2); a broker already gone (the normal case) makes this a no-op.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Is `pid` a live process? (0 probes without signalling.)
fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn quorum_flags_that_cannot_form_a_quorum_are_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let voters = "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293";
    let refused: [(&[&str], &str); 4] = [
        (
            &["--controller-quorum", "1@127.0.0.1:9093,1@127.0.0.1:9193"],
            "error: Invalid value 1@127.0.0.1:9093,1@127.0.0.1:9193 for configuration \
             controller-quorum: voter id 1 is listed twice",
        ),
        (
            &["--controller-quorum", "1@localhost"],
            "error: Invalid value 1@localhost for configuration controller-quorum: voter \
             \"1@localhost\": \"localhost\" is not HOST:PORT",
        ),
        (
            &["--node-id", "2", "--controller-quorum", voters],
            "error: Invalid value (unset) for configuration controller-listen: node 2 is voter \
             2@127.0.0.1:9193 in controller-quorum, so it must listen there: set \
             controller-listen",
        ),
        (
            &[
                "--node-id",
                "2",
                "--controller-listen",
                "127.0.0.1:9194",
                "--controller-quorum",
                voters,
            ],
            "error: Invalid value 127.0.0.1:9194 for configuration controller-listen: node 2 is \
             voter 2@127.0.0.1:9193 in controller-quorum, but controller-listen is on port 9194",
        ),
    ];
    for (flags, message) in refused {
        let mut args = vec!["broker", "--listen", "127.0.0.1:0", "--data-dir", data];
        args.extend_from_slice(flags);
        let run = faultline(&args);
        assert_eq!(
            run.status.code(),
            Some(2),
            "{flags:?}: {}",
            text(&run.stderr)
        );
        assert_eq!(text(&run.stderr).trim_end(), message, "{flags:?}");
    }
    // The same keys in the TOML file, checked the same way.
    let file = dir.path().join("broker.toml");
    std::fs::write(
        &file,
        "node-id = 4\ncontroller-quorum = \"1@127.0.0.1:9093\"\nbroker-rack = \"r1\"\n",
    )
    .unwrap();
    let run = faultline(&[
        "broker",
        "--config",
        file.to_str().unwrap(),
        "--print-config",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains(
            "node 4 is not a voter in controller-quorum: it joins as a learner and receives the \
             metadata log on controller-listen, which must be set"
        ),
        "{}",
        text(&run.stderr)
    );
    let run = faultline(&[
        "broker",
        "--config",
        file.to_str().unwrap(),
        "--controller-listen",
        "127.0.0.1:9493",
        "--print-config",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let printed = text(&run.stdout);
    for line in [
        "controller-listen = \"127.0.0.1:9493\"",
        "controller-quorum = \"1@127.0.0.1:9093\"",
        "broker-rack = \"r1\"",
        "broker-session-timeout-ms = 9000",
        "offsets-topic-num-partitions = 50",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} in\n{printed}");
    }
}

#[test]
fn cluster_up_with_one_broker_serves_clients_and_stops_it_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = ClusterUp::start(1, dir.path());
    let created = faultline(&[
        "topics",
        "create",
        "--topic",
        "greetings",
        "--bootstrap-server",
        &up.bootstrap,
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let broker = up.pids[0];
    assert!(alive(broker));

    up.signal(libc::SIGINT);
    let (code, out, err) = up.wait();
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.ends_with("Stopping 1 broker...\nStopped node 1 (exit status: 0).\n"),
        "{out}"
    );
    assert_eq!(err, "");
    assert!(!alive(broker), "broker {broker} still running");
    let log = std::fs::read_to_string(dir.path().join("node-1.log")).unwrap();
    assert!(log.contains("faultline broker stopped cleanly"), "{log}");
    // Its data directory is where `up` said, and it is free again.
    assert!(dir.path().join("node-1/.lock").exists());
}

#[test]
fn when_a_broker_dies_cluster_up_names_it_and_its_log_and_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = ClusterUp::start(2, dir.path());
    let (first, second) = (up.pids[0], up.pids[1]);
    // SAFETY: kill(2) on the broker `up` started.
    unsafe {
        libc::kill(second as libc::pid_t, libc::SIGKILL);
    }
    let (code, out, err) = up.wait();
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    let log = dir.path().join("node-2.log");
    assert!(
        err.starts_with(&format!(
            "error: node 2 (pid {second}) exited (signal: 9 (SIGKILL)); its log: {}\n",
            log.display()
        )),
        "{err}"
    );
    assert!(out.contains("Stopped node 1 (exit status: 0)."), "{out}");
    assert!(!alive(first), "broker {first} still running");
}

/// Needs the metadata quorum (branches ctl-raft and catalog): until they are merged the three
/// brokers are three clusters of one, and `cluster describe` sees one node. Run with
/// `--ignored`; the merge of issue 10 removes the `ignore`.
#[test]
#[ignore = "needs the metadata quorum (issue 10's ctl-raft and catalog branches)"]
fn cluster_up_with_three_brokers_forms_one_cluster_and_stops_them_all_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = ClusterUp::start(3, dir.path());
    let any = up.bootstrap.split(',').nth(1).unwrap().to_string();
    let deadline = Instant::now() + WAIT;
    let described = loop {
        let run = faultline(&["cluster", "describe", "--bootstrap-server", &any, "--json"]);
        let value: serde_json::Value =
            serde_json::from_slice(&run.stdout).unwrap_or(serde_json::Value::Null);
        let nodes = value["nodes"].as_array().map_or(0, |n| n.len());
        let unfenced = value["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["fenced"] == false));
        if nodes == 3 && unfenced && value["active_controller"].is_i64() {
            break value;
        }
        assert!(
            Instant::now() < deadline,
            "no cluster of 3: {}",
            text(&run.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let controller = described["active_controller"].as_i64().unwrap();
    assert!((1..=3).contains(&controller), "{described}");
    assert_eq!(described["voters"], serde_json::json!([1, 2, 3]));
    for node in described["nodes"].as_array().unwrap() {
        assert!(node["broker_epoch"].as_i64().is_some(), "{described}");
    }

    up.signal(libc::SIGINT);
    let (code, out, err) = up.wait();
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for node in 1..=3 {
        assert!(
            out.contains(&format!("Stopped node {node} (exit status: 0).")),
            "{out}"
        );
    }
    for pid in &up.pids {
        assert!(!alive(*pid), "broker {pid} still running");
    }
}

#[test]
fn topics_describe_and_cluster_describe_print_what_kafkas_tools_print_for_a_single_broker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_base_port(1);
    let addr = format!("127.0.0.1:{port}");
    let mut broker = Command::new(FAULTLINE)
        .args(["broker", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("broker starts");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut broker);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "broker not listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let created = faultline(&[
        "topics",
        "create",
        "--topic",
        "orders",
        "--partitions",
        "2",
        "--config",
        "retention.ms=60000",
        "--bootstrap-server",
        &addr,
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));

    let described = faultline(&[
        "topics",
        "describe",
        "--topic",
        "orders",
        "--bootstrap-server",
        &addr,
    ]);
    assert_eq!(
        described.status.code(),
        Some(0),
        "{}",
        text(&described.stderr)
    );
    let out = text(&described.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let (before_id, after_id) = lines[0].split_once("\tTopicId: ").expect(lines[0]);
    assert_eq!(before_id, "Topic: orders");
    let (id, rest) = after_id.split_once('\t').unwrap();
    uuid::Uuid::parse_str(id).expect("a topic id");
    assert_eq!(
        rest,
        "PartitionCount: 2\tReplicationFactor: 1\tConfigs: retention.ms=60000"
    );
    assert_eq!(
        &lines[1..],
        [
            "\tTopic: orders\tPartition: 0\tLeader: 1\tReplicas: 1\tIsr: 1",
            "\tTopic: orders\tPartition: 1\tLeader: 1\tReplicas: 1\tIsr: 1",
        ]
    );
    let json = faultline(&[
        "topics",
        "describe",
        "--topic",
        "orders",
        "--json",
        "--bootstrap-server",
        &addr,
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON line");
    assert_eq!(value["partition_count"], 2);
    assert_eq!(value["replication_factor"], 1);
    assert_eq!(value["partitions"][1]["leader"], 1);
    assert_eq!(value["partitions"][1]["isr"], serde_json::json!([1]));

    let cluster = faultline(&["cluster", "describe", "--bootstrap-server", &addr]);
    assert_eq!(cluster.status.code(), Some(0), "{}", text(&cluster.stderr));
    let out = text(&cluster.stdout);
    assert!(out.starts_with("ClusterId:         "), "{out}");
    assert!(out.contains("\nActiveController:  1\n"), "{out}");
    assert!(
        out.contains("\nNODE-ID  ENDPOINT ")
            && out
                .lines()
                .any(|l| l.starts_with(&format!("1        {addr}  "))),
        "{out}"
    );
    let json = faultline(&["cluster", "describe", "--json", "--bootstrap-server", &addr]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON line");
    assert_eq!(value["active_controller"], 1);
    assert_eq!(value["nodes"][0]["id"], 1);
    assert_eq!(value["nodes"][0]["endpoint"], addr.as_str());
}
