//! How a user runs a cluster, with real `faultline` processes on loopback: the quorum flags a
//! broker refuses at start, `faultline cluster up` starting, serving and stopping its brokers
//! (on Ctrl-C, or when one of them dies), and what `topics describe` and `cluster describe`
//! print, as kafka-topics.sh and kafka-metadata-quorum.sh print it; and a three-node cluster
//! whose active controller is killed with SIGKILL while topics are being created.
//!
//! The bugs these guard against: a quorum that lists one id twice or an address without a port
//! would start a node that can never join; a voter whose controller listener is not where the
//! others dial it waits for votes forever; `cluster up` that leaves its brokers running after
//! Ctrl-C or after one of them died keeps data directories locked and ports taken; a
//! CreateTopics acknowledged before its records are committed is lost with the controller.
#![cfg(not(madsim))]
// Test code: real processes, files and waits (clippy.toml's bans are for broker code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod processes;

use processes::*;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

#[test]
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

    // One cluster: a topic created through node 2 is spread over all three, records produced
    // through node 3 are read through node 1.
    let servers: Vec<&str> = up.bootstrap.split(',').collect();
    let created = faultline(&[
        "topics",
        "create",
        "--topic",
        "spread",
        "--partitions",
        "6",
        "--bootstrap-server",
        servers[1],
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    // Every node learns of the topic once it has applied the record (the creating node before
    // it answered; the others as the metadata log reaches them).
    let mut value = serde_json::Value::Null;
    for server in &servers {
        let deadline = Instant::now() + WAIT;
        loop {
            let described = faultline(&[
                "topics",
                "describe",
                "--topic",
                "spread",
                "--json",
                "--bootstrap-server",
                server,
            ]);
            if described.status.success() {
                value = serde_json::from_slice(&described.stdout).expect("one JSON line");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{server} never knew the topic: {}",
                text(&described.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut leaders: Vec<i64> = value["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["leader"].as_i64().unwrap())
        .collect();
    leaders.sort();
    leaders.dedup();
    assert_eq!(leaders, [1, 2, 3], "{value}");
    let mut produce = Command::new(FAULTLINE)
        .args(["produce", "--topic", "spread", "--acks", "all"])
        .args(["--bootstrap-server", servers[2]])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: String = (0..60).map(|i| format!("record-{i}\n")).collect();
    std::io::Write::write_all(produce.stdin.as_mut().unwrap(), lines.as_bytes()).unwrap();
    let produced = produce.wait_with_output().unwrap();
    assert_eq!(
        produced.status.code(),
        Some(0),
        "{}",
        text(&produced.stderr)
    );
    let consumed = faultline(&[
        "consume",
        "--topic",
        "spread",
        "--from-beginning",
        "--max-messages",
        "60",
        "--timeout-ms",
        "30000",
        "--bootstrap-server",
        servers[0],
    ]);
    assert_eq!(
        consumed.status.code(),
        Some(0),
        "{}",
        text(&consumed.stderr)
    );
    let mut read: Vec<String> = text(&consumed.stdout).lines().map(String::from).collect();
    read.sort();
    let mut sent: Vec<String> = lines.lines().map(String::from).collect();
    sent.sort();
    assert_eq!(read, sent);

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

/// One partition as a broker's Metadata answer shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SeenPartition {
    index: i32,
    leader: i32,
    replicas: Vec<i32>,
    error: i16,
}

/// Every topic a broker's Metadata answer (all topics) shows, by name, but the internal ones.
async fn seen_topics(
    addr: &str,
) -> Result<std::collections::BTreeMap<String, Vec<SeenPartition>>, String> {
    let client = client::Client::connect(client::ClientConfig::new(addr))
        .await
        .map_err(|e| e.to_string())?;
    let response = client
        .fetch_metadata(None, false)
        .await
        .map_err(|e| e.to_string())?;
    let mut topics = std::collections::BTreeMap::new();
    for topic in response.topics {
        let name = topic.name.map(|n| n.to_string()).unwrap_or_default();
        if name.starts_with("__") {
            continue;
        }
        assert_eq!(topic.error_code, 0, "{addr}: topic {name}");
        let mut partitions: Vec<SeenPartition> = topic
            .partitions
            .iter()
            .map(|p| SeenPartition {
                index: p.partition_index,
                leader: p.leader_id.0,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                error: p.error_code,
            })
            .collect();
        partitions.sort_by_key(|p| p.index);
        topics.insert(name, partitions);
    }
    Ok(topics)
}

/// What became of one CreateTopics.
#[derive(Clone, Debug)]
enum Created {
    /// Answered without error: the topic must exist, whole, from now on.
    Acknowledged,
    /// An error answer, or no answer: the topic may or may not exist, but never half made.
    NotAcknowledged(String),
}

#[derive(Clone, Debug)]
struct Attempt {
    topic: String,
    partitions: i32,
    via: i32,
    /// Sent after the active controller was killed.
    after_kill: bool,
    outcome: Created,
}

/// Creates topics `created-0000`, `created-0001`, ... with 1 to 6 partitions, from `tasks`
/// concurrent tasks, each through one of the `live` brokers in turn, until `stop`.
fn create_topics_until_stopped(
    tasks: usize,
    live: std::sync::Arc<std::sync::Mutex<Vec<(i32, String)>>>,
    killed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    attempts: std::sync::Arc<std::sync::Mutex<Vec<Attempt>>>,
    request_timeout: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut handles = Vec::new();
            for _ in 0..tasks {
                let (live, killed, stop, attempts, next) = (
                    live.clone(),
                    killed.clone(),
                    stop.clone(),
                    attempts.clone(),
                    next.clone(),
                );
                handles.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        let topic = format!("created-{n:04}");
                        let partitions = 1 + (n % 6) as i32;
                        let (via, addr) = {
                            let live = live.lock().unwrap();
                            live[n % live.len()].clone()
                        };
                        let after_kill = killed.load(Ordering::SeqCst);
                        let mut config = client::ClientConfig::new(addr);
                        config.connection.request_timeout = request_timeout;
                        let outcome = match client::Client::connect(config).await {
                            Err(e) => {
                                // Never sent; a node just killed refuses connections.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Created::NotAcknowledged(e.to_string())
                            }
                            Ok(c) => match client::admin::Admin::new(c)
                                .create_topic(client::admin::NewTopic::new(&topic, partitions))
                                .await
                            {
                                Ok(()) => Created::Acknowledged,
                                Err(e) => Created::NotAcknowledged(e.to_string()),
                            },
                        };
                        attempts.lock().unwrap().push(Attempt {
                            topic,
                            partitions,
                            via,
                            after_kill,
                            outcome,
                        });
                    }
                }));
            }
            for handle in handles {
                handle.await.unwrap();
            }
        });
    })
}

/// What is wrong, if anything, with `seen` (one broker's view) after `attempts`: every
/// acknowledged topic exists with the partitions it asked for; each partition has its one
/// replica as leader, or, when that replica is on a node in `down`, no leader and
/// LEADER_NOT_AVAILABLE. Topics that were not acknowledged may exist.
fn problems(
    seen: &std::collections::BTreeMap<String, Vec<SeenPartition>>,
    attempts: &[Attempt],
    down: &[i32],
) -> Vec<String> {
    let mut problems = Vec::new();
    for attempt in attempts {
        let Some(partitions) = seen.get(&attempt.topic) else {
            if matches!(attempt.outcome, Created::Acknowledged) {
                problems.push(format!("{} acknowledged but missing", attempt.topic));
            }
            continue;
        };
        for p in partitions {
            let offline = p.replicas.len() == 1 && down.contains(&p.replicas[0]);
            let led = if offline {
                p.leader == -1
                    && p.error == kafka_protocol::error::ResponseError::LeaderNotAvailable.code()
            } else {
                p.replicas == [p.leader] && p.error == 0
            };
            if !led {
                problems.push(format!(
                    "{}-{}: {p:?} (down: {down:?})",
                    attempt.topic, p.index
                ));
            }
        }
    }
    problems
}

/// No topic is half made, at any moment: every topic a broker shows is one the test asked for,
/// with exactly the partitions asked for, indexed 0, 1, 2, ...
fn assert_whole(
    addr: &str,
    seen: &std::collections::BTreeMap<String, Vec<SeenPartition>>,
    attempts: &[Attempt],
) {
    for (topic, partitions) in seen {
        let asked = attempts
            .iter()
            .find(|a| &a.topic == topic)
            .unwrap_or_else(|| panic!("{addr} shows {topic}, which nobody asked for"));
        let indexes: Vec<i32> = partitions.iter().map(|p| p.index).collect();
        assert_eq!(
            indexes,
            (0..asked.partitions).collect::<Vec<_>>(),
            "{addr}: {topic} is not whole ({asked:?})"
        );
    }
}

/// Polls every broker in `nodes` until none of them shows a [`problems`] and all show the same
/// topics, asserting [`assert_whole`] on every answer; panics with the last problems (and the
/// nodes' logs) after `bound`.
fn wait_until_settled(
    brokers: &Brokers,
    nodes: &[i32],
    attempts: &[Attempt],
    down: &[i32],
    bound: Duration,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + bound;
    loop {
        let mut views = Vec::new();
        let mut problems_now = Vec::new();
        for &node in nodes {
            let addr = brokers.addr(node);
            match runtime.block_on(seen_topics(&addr)) {
                Ok(seen) => {
                    assert_whole(&addr, &seen, attempts);
                    problems_now.extend(
                        problems(&seen, attempts, down)
                            .into_iter()
                            .map(|p| format!("node {node}: {p}")),
                    );
                    views.push(seen);
                }
                Err(e) => problems_now.push(format!("node {node}: {e}")),
            }
        }
        if problems_now.is_empty() && views.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        if problems_now.is_empty() {
            problems_now.push("the nodes' views differ".into());
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {bound:?}:\n{}\n{}",
            problems_now.join("\n"),
            brokers.log_tails()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bug story: a controller that answers CreateTopics before the topic's records are
/// committed, or commits a topic in more than one metadata batch, loses or half-makes topics
/// when it dies mid-way; a new controller that does not take over pending work, or a broker
/// that does not learn of a dead broker's fencing, leaves clients with leaders that are gone.
///
/// Three voters; three tasks create topics through the brokers in turn; after some are
/// acknowledged the active controller is killed with SIGKILL, and creation goes on through
/// the survivors until more are acknowledged there. Then, on every survivor: every
/// acknowledged topic exists with its partitions, each led by its replica, except those on the
/// killed node, which answer LEADER_NOT_AVAILABLE once it is fenced; no topic is ever seen half
/// made. The killed node restarts on its data directory, re-registers with a new broker epoch,
/// and leads its partitions again.
#[test]
fn kill_9_of_the_active_controller_while_topics_are_created_loses_no_acknowledged_topic() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    const SESSION_TIMEOUT_MS: u64 = 6_000;
    const HEARTBEAT_MS: u64 = 1_000;
    const BEFORE_KILL: usize = 12;
    const AFTER_KILL: usize = 12;
    let quorum = broker::controller::raft::QuorumTimeouts::default();
    // The bounds below only stop a broken run from hanging; each is the configured time it
    // stands for, tripled for a loaded 2-core machine, plus ten seconds.
    let margin = |ms: u64| Duration::from_millis(ms * 3) + Duration::from_secs(10);
    // A new controller is elected within an election timeout; a create sent meanwhile waits
    // at most one submit timeout.
    let failover = margin(quorum.election_max_ms + quorum.submit_ms);
    // A dead broker is fenced a session timeout after its last heartbeat, by a controller
    // elected within an election timeout.
    let fencing = margin(SESSION_TIMEOUT_MS + HEARTBEAT_MS + quorum.election_max_ms);
    // The client waits longer than the broker's own submit bound, so it sees its answer.
    let request_timeout = Duration::from_millis(quorum.submit_ms) + Duration::from_secs(15);

    let dir = tempfile::tempdir().unwrap();
    let mut brokers = Brokers::start(
        3,
        dir.path(),
        &[
            format!("broker-session-timeout-ms={SESSION_TIMEOUT_MS}"),
            format!("broker-heartbeat-interval-ms={HEARTBEAT_MS}"),
        ],
    );
    let formed = brokers.await_formed(2);

    let live = Arc::new(Mutex::new(
        (1..=3).map(|id| (id, brokers.addr(id))).collect::<Vec<_>>(),
    ));
    let (killed, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let creator = create_topics_until_stopped(
        3,
        live.clone(),
        killed.clone(),
        stop.clone(),
        attempts.clone(),
        request_timeout,
    );
    let acknowledged = |after_kill: bool| {
        attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.after_kill == after_kill && matches!(a.outcome, Created::Acknowledged))
            .count()
    };
    let wait_for = |brokers: &Brokers, count: usize, after_kill: bool, bound: Duration| {
        let deadline = Instant::now() + bound;
        while acknowledged(after_kill) < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} creations acknowledged (after the kill: {after_kill}): {:#?}\n{}",
                acknowledged(after_kill),
                attempts.lock().unwrap(),
                brokers.log_tails()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&brokers, BEFORE_KILL, false, WAIT);

    // The active controller now, as the survivors will have to replace it.
    let described = describe_cluster(&brokers.addr(1)).expect("cluster describe");
    let controller = i32::try_from(
        described["active_controller"]
            .as_i64()
            .expect("a controller"),
    )
    .unwrap();
    let epoch_before = formed["nodes"][usize::try_from(controller - 1).unwrap()]["broker_epoch"]
        .as_i64()
        .expect("a broker epoch");
    brokers.kill9(controller);
    let survivors: Vec<i32> = (1..=3).filter(|&id| id != controller).collect();
    *live.lock().unwrap() = survivors.iter().map(|&id| (id, brokers.addr(id))).collect();
    killed.store(true, Ordering::SeqCst);

    wait_for(&brokers, AFTER_KILL, true, failover);
    stop.store(true, Ordering::SeqCst);
    creator.join().expect("the creating tasks finished");
    let attempts = attempts.lock().unwrap().clone();
    assert!(
        attempts.iter().any(|a| a.after_kill
            && a.via != controller
            && matches!(a.outcome, Created::Acknowledged)),
        "{attempts:#?}"
    );

    // What the clients saw, for whoever reads the output of a failed run.
    for a in &attempts {
        if let Created::NotAcknowledged(why) = &a.outcome {
            eprintln!("{} via node {}: not acknowledged: {why}", a.topic, a.via);
        }
    }
    wait_until_settled(&brokers, &survivors, &attempts, &[controller], fencing);
    // Some acknowledged topic has a partition on the killed node: the restart below is tested.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = runtime
        .block_on(seen_topics(&brokers.addr(survivors[0])))
        .expect("metadata");
    assert!(
        seen.values().flatten().any(|p| p.replicas == [controller]),
        "no partition on node {controller}: {seen:?}"
    );

    brokers.spawn(controller);
    wait_until_settled(&brokers, &[1, 2, 3], &attempts, &[], fencing);
    let described = describe_cluster(&brokers.addr(controller)).expect("cluster describe");
    let node = &described["nodes"][usize::try_from(controller - 1).unwrap()];
    assert_eq!(node["fenced"], false, "{described}");
    assert!(
        node["broker_epoch"].as_i64().expect("a broker epoch") > epoch_before,
        "node {controller} kept broker epoch {epoch_before}: {described}"
    );
}

/// The bug story: the lowest-id voter initializes the metadata quorum at every start, and on a
/// restart openraft refused it with `ERROR Can not initialize`. The refusal was harmless, but an
/// operator reading the log of a healthy restart saw an ERROR line.
#[test]
fn the_bootstrapping_voter_restarts_without_an_error_line_in_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut brokers = Brokers::start(3, dir.path(), &[]);
    let serves_all_three = |brokers: &Brokers, at: i32| {
        let deadline = Instant::now() + WAIT;
        loop {
            let formed = describe_cluster(&brokers.addr(at)).is_some_and(|d| {
                let nodes = d["nodes"].as_array().map_or(&[][..], |n| n.as_slice());
                nodes.len() == 3 && nodes.iter().all(|n| n["fenced"] == false)
            });
            if formed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no cluster of 3\n{}",
                brokers.log_tails()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    serves_all_three(&brokers, 1);
    // Node 1 is the one that bootstraps (the lowest voter id).
    brokers.kill9(1);
    let log = brokers.node(1).log.clone();
    let before = std::fs::read_to_string(&log).unwrap().len();
    brokers.spawn(1);
    serves_all_three(&brokers, 1);
    let restarted = std::fs::read_to_string(&log).unwrap();
    let errors: Vec<&str> = restarted[before..]
        .lines()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
