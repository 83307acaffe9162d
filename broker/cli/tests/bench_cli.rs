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
