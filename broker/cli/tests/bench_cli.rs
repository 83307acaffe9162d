//! `faultline bench produce|consume` against an in-process broker: it runs, reports every field
//! and measures its yardstick. No timing is asserted: numbers belong in benchmarks, not tests.
#![cfg(not(madsim))]
// Test code: makes and lists the yardstick's directory with std::fs (clippy.toml bans it in
// broker code, which this is not).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use clap::Parser;
use cli::{self, Cli, Command};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn bench(args: &[&str]) -> (i32, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("faultline").chain(args.iter().copied()))
        .expect("arguments parse");
    let Command::Bench(args) = cli.command else {
        panic!("not a bench command")
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::bench::run(args, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_and_consume_print_throughput_latency_and_the_yardstick() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = BrokerConfig {
        data_dir: dir.path().join("data"),
        listen: addr.clone(),
        ..BrokerConfig::default()
    };
    let broker = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(broker::server::serve(
        Arc::clone(&broker),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let ydir = dir.path().join("yardstick");
    std::fs::create_dir_all(&ydir).unwrap();
    let ydir = ydir.to_str().unwrap();

    let (code, out, err) = bench(&[
        "bench",
        "produce",
        "--bootstrap-server",
        &addr,
        "--topic",
        "b",
        "--duration",
        "1",
        "--batch-size",
        "16384",
        "--record-size",
        "100",
        "--acks",
        "all",
        "--partitions",
        "2",
        "--yardstick-dir",
        ydir,
    ])
    .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for field in [
        "faultline",
        "yardstick",
        "ratio",
        "msgs/s",
        "MB/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "acks=all",
    ] {
        assert!(out.contains(field), "{field} missing from:\n{out}");
    }
    // Progress while it runs: one line on stderr per phase of each round.
    assert!(err.contains("round 1/1: faultline "), "{err}");
    assert!(err.contains("round 1/1: yardstick "), "{err}");
    // The yardstick cleans up after itself.
    assert_eq!(std::fs::read_dir(ydir).unwrap().count(), 0);

    let (code, out, err) = bench(&[
        "bench",
        "produce",
        "--bootstrap-server",
        &addr,
        "--topic",
        "b",
        "--duration",
        "0.3",
        "--in-flight",
        "2",
        "--yardstick-dir",
        ydir,
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["bench"], "produce");
    assert_eq!(
        v["partitions"], 2,
        "the existing topic's partitions are used"
    );
    assert!(v["records_per_batch"].as_u64().unwrap() >= 1);
    for side in ["broker", "yardstick"] {
        assert!(v[side]["records"].as_u64().unwrap() > 0, "{side}: {v}");
        assert!(v[side]["msgs_per_s"].as_f64().unwrap() > 0.0);
        for p in ["p50", "p99", "p99.9", "max"] {
            assert!(
                v[side]["latency_us"][p].as_f64().is_some(),
                "{side} {p}: {v}"
            );
        }
    }
    assert!(v["ratio"].as_f64().unwrap() > 0.0);

    let (code, out, err) = bench(&[
        "bench",
        "consume",
        "--bootstrap-server",
        &addr,
        "--topic",
        "b",
        "--duration",
        "1",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["bench"], "consume");
    assert!(v["broker"]["records"].as_u64().unwrap() > 0, "{v}");
    assert!(v["broker"]["mb_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["yardstick"]["mb_per_s"].as_f64().unwrap() > 0.0);

    let (code, _, err) = bench(&[
        "bench",
        "produce",
        "--bootstrap-server",
        &addr,
        "--duration",
        "0",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("--duration"), "{err}");

    let _ = stop.send(());
    server.await.unwrap();
    broker.shutdown().await;
}

fn round(records: u64, secs: u64) -> cli::bench::RunStats {
    cli::bench::RunStats {
        requests: records / 10,
        records,
        bytes: records * 100,
        elapsed: std::time::Duration::from_secs(secs),
        latencies_ns: vec![records],
        errors: 0,
    }
}

/// With two rounds the reported median was the faster one (the upper middle element).
#[test]
fn the_median_of_an_even_number_of_rounds_is_the_mean_of_the_middle_two() {
    let median = cli::bench::median_round(vec![round(300, 1), round(100, 1)]).unwrap();
    assert_eq!(median.msgs_per_s(), 200.0);
    assert_eq!(median.mb_per_s(), 0.02);
    // Latencies of every round are kept.
    assert_eq!(median.latencies_ns.len(), 2);
    let odd = cli::bench::median_round(vec![round(500, 1), round(100, 1), round(300, 1)]).unwrap();
    assert_eq!(odd.msgs_per_s(), 300.0);
    let four = cli::bench::median_round(vec![
        round(100, 1),
        round(900, 1),
        round(200, 2),
        round(1200, 2),
    ])
    .unwrap();
    // 100/s, 100/s, 600/s, 900/s: the middle two are 100 and 600.
    assert_eq!(four.msgs_per_s(), 350.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_transactions_commits_every_transaction_and_read_committed_reads_them_all() {
    // The bugs: a bench that counted transactions that did not commit, or whose
    // read_committed phase stopped short of what it wrote (every transaction committed, so
    // read_committed must read exactly what read_uncommitted reads).
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = BrokerConfig {
        data_dir: dir.path().join("data"),
        listen: addr.clone(),
        transaction_state_log_num_partitions: 2,
        ..BrokerConfig::default()
    };
    let broker = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(broker::server::serve(
        Arc::clone(&broker),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let (code, out, err) = bench(&[
        "bench",
        "transactions",
        "--bootstrap-server",
        &addr,
        "--json",
        "--duration",
        "0.5",
        "--records-per-txn",
        "3,7",
        "--partitions",
        "2",
    ])
    .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["bench"], "transactions");
    let mut written = 0;
    for (name, per_txn) in [("transactional_3", 3), ("transactional_7", 7)] {
        let phase = &v[name];
        let txns = phase["transactions"].as_u64().unwrap();
        assert!(txns > 0, "{name}: {phase}");
        assert_eq!(phase["not_committed"], 0, "{name}: {phase}");
        assert_eq!(phase["records"].as_u64().unwrap(), txns * per_txn);
        written += txns * per_txn;
    }
    let idempotent = v["idempotent"]["records"].as_u64().unwrap();
    assert!(idempotent > 0);
    written += idempotent;
    assert_eq!(v["read_uncommitted"]["records"].as_u64().unwrap(), written);
    assert_eq!(v["read_committed"]["records"].as_u64().unwrap(), written);
    let _ = stop.send(());
    server.await.unwrap();
    broker.shutdown().await;
}
