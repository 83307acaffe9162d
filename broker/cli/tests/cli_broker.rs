//! `faultline broker` start-up: the data directory's lock, the configuration it accepts and
//! refuses, and the messages a user sees.
//!
//! The bugs these guard against: a second broker started on the same data directory ran beside
//! the first and 1,000 of 3,000 acknowledged records were lost; `num-partitions = 0` and
//! `log-segment-bytes = 0` were accepted and broke the first topic and the first append; most
//! keys of the config file had no flag; a data directory that is a file reported "File exists".
#![cfg(not(madsim))]
// Test code: real processes, files and waits (clippy.toml's bans are for broker code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::{BrokerConfig, FlushMode};
use broker::disk::FileDisk;
use clap::Parser;
use cli::{Cli, Command};

fn broker_args(args: &[&str]) -> cli::run_broker::BrokerArgs {
    let cli = Cli::try_parse_from(["faultline", "broker"].iter().chain(args))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Command::Broker(args) = cli.command else {
        panic!("not a broker command")
    };
    args
}

async fn effective(args: &[&str]) -> Result<BrokerConfig, String> {
    cli::run_broker::effective_config(&broker_args(args)).await
}

fn config_in(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..BrokerConfig::default()
    }
}

#[tokio::test]
async fn a_second_broker_on_a_data_directory_in_use_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let first = Broker::open(
        config.clone(),
        Arc::new(FileDisk::new()),
        Arc::new(SystemClock),
    )
    .await
    .expect("the first broker opens");
    let e = Broker::open(
        config.clone(),
        Arc::new(FileDisk::new()),
        Arc::new(SystemClock),
    )
    .await
    .expect_err("a second broker on the same directory");
    let message = cli::run_broker::open_error(&config, &e);
    assert_eq!(
        message,
        format!(
            "another broker (pid {}) is using data directory {}",
            std::process::id(),
            dir.path().display()
        )
    );
    first.shutdown().await;
    drop(first);
    let again = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .expect("a broker opens once the first has stopped");
    again.shutdown().await;
}

/// The `faultline` binary on `dir`, listening on an ephemeral port.
fn start_broker(dir: &Path) -> Child {
    Process::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["broker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("faultline starts")
}

/// Reads `child`'s stderr until a line contains `wanted`; panics after a generous wait.
fn wait_for_line(child: &mut Child, wanted: &str) -> String {
    let stderr = child.stderr.as_mut().expect("piped stderr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while Instant::now() < deadline {
        match stderr.read(&mut byte) {
            Ok(1) => {
                seen.push(byte[0]);
                if byte[0] == b'\n' && String::from_utf8_lossy(&seen).contains(wanted) {
                    return String::from_utf8_lossy(&seen).into_owned();
                }
            }
            _ => break,
        }
    }
    panic!(
        "no line with {wanted:?}; stderr so far:\n{}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn two_broker_processes_cannot_share_a_data_directory_and_a_killed_one_leaves_no_lock_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = start_broker(&data);
    let started = wait_for_line(&mut first, "faultline broker started");
    // Logs written to a pipe carry no colour codes.
    assert!(!started.contains('\u{1b}'), "ANSI codes in {started:?}");

    let mut second = start_broker(&data);
    // It must give up on its own; one that started anyway is stopped here, and fails below.
    let deadline = Instant::now() + Duration::from_secs(60);
    while second.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = second.kill();
    let second = second.wait_with_output().expect("second broker");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: another broker (pid {}) is using data directory {}",
            first.id(),
            data.display()
        )
    );

    // kill -9: the OS releases the lock with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = start_broker(&data);
    wait_for_line(&mut third, "faultline broker started");
    third.kill().unwrap();
    third.wait().unwrap();
}

#[tokio::test]
async fn out_of_range_values_are_refused_at_start_with_kafkas_message() {
    let refused = [
        (
            "num-partitions=0",
            "Invalid value 0 for configuration num-partitions: Value must be at least 1",
        ),
        (
            "log-segment-bytes=0",
            "Invalid value 0 for configuration log-segment-bytes: Value must be at least 14",
        ),
        (
            "log-roll-ms=0",
            "Invalid value 0 for configuration log-roll-ms: Value must be at least 1",
        ),
        (
            "log-retention-ms=-2",
            "Invalid value -2 for configuration log-retention-ms: Value must be at least -1",
        ),
        (
            "log-segment-bytes=4294967296",
            "Invalid value 4294967296 for configuration log-segment-bytes: Value must be no more than 2147483647",
        ),
    ];
    for (set, message) in refused {
        assert_eq!(effective(&["--set", set]).await, Err(message.to_string()));
    }
    // The same check guards a config file and the library's own start.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "num-partitions = 0\n").unwrap();
    assert_eq!(
        effective(&["--config", file.to_str().unwrap()]).await,
        Err("Invalid value 0 for configuration num-partitions: Value must be at least 1".into())
    );
    let config = BrokerConfig {
        log_segment_bytes: 0,
        ..config_in(&dir.path().join("data"))
    };
    let e = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .expect_err("a zero segment size");
    assert!(e.to_string().contains("log-segment-bytes"), "{e}");
}

#[tokio::test]
async fn replica_selector_takes_our_name_or_kafkas_class_and_refuses_others() {
    use broker::config::ReplicaSelector;
    for value in [
        "rack-aware",
        "org.apache.kafka.common.replica.RackAwareReplicaSelector",
    ] {
        let config = effective(&["--replica-selector", value]).await.unwrap();
        assert_eq!(
            config.replica_selector,
            ReplicaSelector::RackAware,
            "{value}"
        );
    }
    assert_eq!(
        effective(&[]).await.unwrap().replica_selector,
        ReplicaSelector::Leader
    );
    assert_eq!(
        effective(&["--replica-selector", "nearest"]).await,
        Err(
            "Invalid value \"nearest\" for configuration replica-selector: expected leader or \
             rack-aware"
                .into()
        )
    );
}

#[tokio::test]
async fn set_accepts_every_key_of_the_config_file_and_flags_win_over_it() {
    let config = effective(&[
        "--set",
        "num-partitions=3",
        "--set",
        "flush-mode=lazy",
        "--set",
        "log-flush-interval-ms=250",
        "--set",
        "auto-create-topics=false",
        "--set",
        "data-dir=/tmp/elsewhere",
        "--set",
        "advertised-listener=broker.example:9092",
        "--set",
        "log-level=\"broker=debug\"",
        "--set",
        "listen=127.0.0.1:1111",
        "--listen",
        "127.0.0.1:2222",
    ])
    .await
    .expect("valid settings");
    assert_eq!(config.num_partitions, 3);
    assert_eq!(config.flush_mode, FlushMode::Lazy);
    assert_eq!(config.log_flush_interval_ms, Some(250));
    assert!(!config.auto_create_topics);
    assert_eq!(config.data_dir, Path::new("/tmp/elsewhere"));
    assert_eq!(config.advertised(), "broker.example:9092");
    assert_eq!(config.log_level, "broker=debug");
    assert_eq!(config.listen, "127.0.0.1:2222");

    // Every key --print-config shows can be set back through --set.
    let defaults = BrokerConfig::default().to_toml();
    for line in defaults.lines().filter(|l| l.contains(" = ")) {
        let (key, value) = line.split_once(" = ").unwrap();
        let set = format!("{key}={value}");
        assert_eq!(
            effective(&["--set", &set]).await,
            Ok(BrokerConfig::default()),
            "{set}"
        );
    }
    let unknown = effective(&["--set", "no-such-key=1"]).await.unwrap_err();
    assert!(unknown.contains("no-such-key"), "{unknown}");
    let malformed = effective(&["--set", "num-partitions"]).await.unwrap_err();
    assert_eq!(malformed, "--set expects KEY=VALUE, got \"num-partitions\"");
}

#[tokio::test]
async fn a_data_directory_that_is_a_file_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let config = config_in(&file);
    let e = Broker::open(
        config.clone(),
        Arc::new(FileDisk::new()),
        Arc::new(SystemClock),
    )
    .await
    .expect_err("a file as data directory");
    assert_eq!(
        cli::run_broker::open_error(&config, &e),
        format!(
            "data directory {} exists and is not a directory",
            file.display()
        )
    );
}
