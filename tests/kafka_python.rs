#![cfg(not(madsim))]
// Real sockets, a child process and wall-clock waits: never under the simulator.
#![allow(clippy::disallowed_methods)]
//! kafka-python, a second client implementation independent of librdkafka, against the broker.
//!
//! The bug this guards against: `KafkaAdminClient.list_topics()` raised `ValueError: 31 is not
//! a valid ACLOperation`, because the broker answered its request for authorized operations
//! with INT32_MIN ("not requested"). The script (`tests/kafka_python/admin_describe.py`) lists
//! and describes topics, the cluster and a group and checks each operation set.
//!
//! Needs `python3` with kafka-python 2.x (`pip install "kafka-python<3"`; `.ci/run` installs
//! it). Skipped, saying so, only when python3 itself is absent.

mod common_broker;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common_broker::*;

/// Bound on the script's run: it makes a handful of requests.
const SCRIPT_WAIT: Duration = Duration::from_secs(90);

fn python3_present() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `tests/kafka_python/{script}` against `broker` with `topic`; returns its stdout,
/// having insisted that it succeeded.
fn run_script(broker: &TestBroker, script: &str, topic: &str) -> String {
    let has_kafka_python = Command::new("python3")
        .args(["-c", "import kafka"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_kafka_python,
        "python3 lacks kafka-python: pip install \"kafka-python<3\""
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka_python")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(broker.bootstrap())
        .arg(topic)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if started.elapsed() > SCRIPT_WAIT {
            let _ = child.kill();
            panic!("kafka-python script still running after {SCRIPT_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("script output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success(),
        "kafka-python script failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn kafka_pythons_admin_client_lists_topics_and_reads_every_authorized_operations_set() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is not installed, so kafka-python cannot be run");
        return;
    }
    let broker = TestBroker::start();
    let topic = topic_name("kafka-python");
    broker.create_topic(&topic, 2, &[]);
    let stdout = run_script(&broker, "admin_describe.py", &topic);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        4,
        "{stdout}"
    );
}

/// kafka-python creates a compacted topic, sees it described so, and has a keyless record
/// refused with INVALID_RECORD (`cleanup.policy=compact` was refused before compaction).
#[test]
fn kafka_python_creates_a_compacted_topic_that_refuses_records_without_a_key() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is not installed, so kafka-python cannot be run");
        return;
    }
    let broker = TestBroker::start();
    let topic = topic_name("kafka-python-compacted");
    let stdout = run_script(&broker, "compacted_topic.py", &topic);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        4,
        "{stdout}"
    );
}
