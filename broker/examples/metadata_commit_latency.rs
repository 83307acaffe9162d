//! Metadata commit latency on three voters on loopback (issue 10's "Measured"), with real files
//! (fdatasync) and real TCP, and the time to create 1,000 topics of 10 partitions.
//!
//! `cargo run --release -p broker --example metadata_commit_latency [-- COMMITS]`
//!
//! The yardstick, measured in the same run on the same file system: one small append +
//! fdatasync, since a commit needs at least the leader's and one follower's sync (in parallel)
//! plus a network round trip. Timings go here, never into tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::controller::decide::ControllerSettings;
use broker::controller::image::Endpoint;
use broker::controller::plane::MetadataPlane;
use broker::controller::raft::{QuorumConfig, QuorumTimeouts, RaftPlane, Voter};
use broker::controller::request::{ConfigResource, ControllerReply, ControllerRequest, NewTopic};
use broker::disk::{Disk, FileDisk, OpenMode};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    println!(
        "{what:<44} n={:<5} p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
        samples.len(),
        p50.as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.last().unwrap().as_secs_f64() * 1e6
    );
    p50
}

#[allow(clippy::disallowed_methods)] // a benchmark: real time on purpose
fn now() -> Instant {
    Instant::now()
}

#[tokio::main]
async fn main() {
    let commits: usize = std::env::args()
        .nth(1)
        .map_or(2_000, |n| n.parse().expect("COMMITS is a number"));
    let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
    let root = tempfile::tempdir().unwrap();

    // Yardstick: 256-byte append + fdatasync, as the metadata log does per entry.
    let file = disk
        .open(&root.path().join("yardstick"), OpenMode::Create)
        .await
        .unwrap();
    let mut yardstick = Vec::new();
    for _ in 0..500 {
        let start = now();
        file.append(&[7u8; 256]).await.unwrap();
        file.sync().await.unwrap();
        yardstick.push(start.elapsed());
    }
    let sync_p50 = report("yardstick: 256 B append + fdatasync", yardstick);

    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let voters: Vec<Voter> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Voter {
            id: i as i32 + 1,
            address: l.local_addr().unwrap().to_string(),
        })
        .collect();
    drop(listeners);
    let mut planes = Vec::new();
    for voter in &voters {
        let config = QuorumConfig {
            node_id: voter.id,
            voters: voters.clone(),
            listen: Some(voter.address.clone()),
            snapshot_every: 1_000,
            settings: ControllerSettings {
                // The brokers registered here heartbeat once: keep them unfenced throughout.
                broker_session_timeout_ms: 3_600_000,
                ..ControllerSettings::default()
            },
            timeouts: QuorumTimeouts {
                heartbeat_ms: 50,
                election_min_ms: 500,
                election_max_ms: 1_000,
                ..QuorumTimeouts::default()
            },
            ..QuorumConfig::single(voter.id, root.path().join(format!("n{}", voter.id)))
        };
        planes.push(RaftPlane::start(config, Arc::clone(&disk)).await.unwrap());
    }
    let leader = loop {
        if let Some(l) = planes[0].quorum_status().active_controller {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let leader_plane = planes
        .iter()
        .find(|p| p.node_id() == leader)
        .unwrap()
        .clone();
    let follower_plane = planes
        .iter()
        .find(|p| p.node_id() != leader)
        .unwrap()
        .clone();
    for id in 1..=3 {
        let ControllerReply::Registered { epoch } = leader_plane
            .submit(ControllerRequest::RegisterBroker {
                id,
                incarnation_id: uuid::Uuid::from_u128(id as u128),
                endpoint: Endpoint {
                    host: "127.0.0.1".into(),
                    port: 9092,
                },
                controller_endpoint: None,
                rack: None,
                previous_broker_epoch: -1,
            })
            .await
            .unwrap()
        else {
            panic!("registration refused")
        };
        let caught_up_offset = leader_plane.image().metadata_offset;
        leader_plane
            .submit(ControllerRequest::Heartbeat {
                id,
                epoch,
                caught_up_offset,
                want_shutdown: false,
            })
            .await
            .unwrap();
    }
    let topic = |name: String, partitions: i32| NewTopic {
        name,
        num_partitions: partitions,
        replication_factor: 1,
        assignments: Vec::new(),
        configs: BTreeMap::new(),
    };
    leader_plane
        .submit(ControllerRequest::CreateTopics {
            topics: vec![topic("bench".into(), 1)],
            validate_only: false,
        })
        .await
        .unwrap();

    // One record per commit (a topic config change), one request in flight.
    let alter = |i: usize| ControllerRequest::AlterConfigs {
        resources: vec![(
            ConfigResource::Topic("bench".into()),
            BTreeMap::from([("retention.ms".to_string(), Some((60_000 + i).to_string()))]),
        )],
        validate_only: false,
    };
    for (label, plane) in [
        ("commit via the leader (3 voters)", &leader_plane),
        ("commit via a follower (forwarded)", &follower_plane),
    ] {
        let mut samples = Vec::with_capacity(commits);
        for i in 0..commits {
            let start = now();
            plane.submit(alter(i)).await.unwrap();
            samples.push(start.elapsed());
        }
        let p50 = report(label, samples);
        println!(
            "{:<44} p50 / yardstick p50 = {:.1}",
            "",
            p50.as_secs_f64() / sync_p50.as_secs_f64()
        );
    }

    // 1,000 topics of 10 partitions: one request at a time, then 32 in flight (batched).
    for in_flight in [1usize, 32] {
        let start = now();
        let mut tasks = Vec::new();
        for w in 0..in_flight {
            let plane = Arc::clone(&leader_plane);
            tasks.push(tokio::spawn(async move {
                for i in (w..1_000).step_by(in_flight) {
                    let reply = plane
                        .submit(ControllerRequest::CreateTopics {
                            topics: vec![topic(format!("t{in_flight}-{i}"), 10)],
                            validate_only: false,
                        })
                        .await
                        .unwrap();
                    let ControllerReply::CreateTopics(results) = reply else {
                        panic!("unexpected reply")
                    };
                    assert!(results[0].1.is_ok(), "{results:?}");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        println!(
            "1,000 topics x 10 partitions, {in_flight:>2} in flight: {:.2} s, {:.0} partitions/s",
            elapsed.as_secs_f64(),
            10_000.0 / elapsed.as_secs_f64()
        );
    }
    for plane in &planes {
        plane.shutdown().await;
    }
}
