//! The metadata quorum (`broker::controller::raft`) on real tokio, real sockets and real files.
//!
//! The bug stories: a quorum that only works in the simulator (real TCP has partial writes,
//! Nagle and real timers); a node that answers a request before its own image shows the change;
//! a restart that loses what the log committed, or that cannot start from its own snapshot once
//! the log below it is purged; a node whose metadata log fails that runs on instead of halting.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use broker::controller::image::{ClusterImage, Endpoint};
use broker::controller::plane::MetadataPlane;
use broker::controller::raft::{QuorumConfig, QuorumTimeouts, RaftPlane, Voter};
use broker::controller::request::{ControllerError, ControllerReply, ControllerRequest, NewTopic};
use broker::disk::{Disk, FileDisk};

fn timeouts() -> QuorumTimeouts {
    QuorumTimeouts {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        rpc_ms: 1_000,
        submit_ms: 10_000,
    }
}

fn disk() -> Arc<dyn Disk> {
    Arc::new(FileDisk::new())
}

async fn start(config: QuorumConfig) -> Arc<RaftPlane> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    RaftPlane::start(config, disk())
        .await
        .expect("the plane starts")
}

/// Registers broker `id` and unfences it (its first heartbeat once caught up).
async fn bring_up(plane: &RaftPlane, id: i32) {
    let reply = plane
        .submit(ControllerRequest::RegisterBroker {
            id,
            incarnation_id: uuid::Uuid::from_u128(1000 + id as u128),
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
            },
            controller_endpoint: None,
            rack: None,
            previous_broker_epoch: -1,
        })
        .await
        .expect("registration commits");
    let ControllerReply::Registered { epoch } = reply else {
        panic!("unexpected reply {reply:?}");
    };
    let caught_up_offset = plane.image().metadata_offset;
    let reply = plane
        .submit(ControllerRequest::Heartbeat {
            id,
            epoch,
            caught_up_offset,
            want_shutdown: false,
        })
        .await
        .expect("heartbeat commits");
    assert_eq!(
        reply,
        ControllerReply::Heartbeat {
            fenced: false,
            shutdown_complete: false
        }
    );
}

fn new_topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        num_partitions: 2,
        replication_factor: 1,
        assignments: Vec::new(),
        configs: BTreeMap::new(),
    }
}

async fn create_topic(plane: &RaftPlane, name: &str) {
    let reply = plane
        .submit(ControllerRequest::CreateTopics {
            topics: vec![new_topic(name)],
            validate_only: false,
        })
        .await
        .expect("CreateTopics commits");
    let ControllerReply::CreateTopics(results) = reply else {
        panic!("unexpected reply {reply:?}");
    };
    assert!(results[0].1.is_ok(), "{name}: {results:?}");
    // Read your writes: the node that answered shows the topic at once.
    assert!(
        plane.image().topic(name).is_some(),
        "{name} not in the answering node's image"
    );
}

/// Waits until `plane`'s image satisfies `ready` (bounded: a hang is a failure, not a timing).
async fn eventually(plane: &RaftPlane, what: &str, ready: impl Fn(&ClusterImage) -> bool) {
    for _ in 0..400 {
        if ready(&plane.image()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node {}: never saw {what}", plane.node_id());
}

fn single(dir: &Path, snapshot_every: u64) -> QuorumConfig {
    QuorumConfig {
        cluster_id_if_new: Some("legacy-cluster-id".into()),
        snapshot_every,
        timeouts: timeouts(),
        ..QuorumConfig::single(1, dir.to_path_buf())
    }
}

#[tokio::test]
async fn a_quorum_of_one_commits_with_no_network_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(single(dir.path(), 1_000)).await;
    bring_up(&plane, 1).await;
    create_topic(&plane, "orders").await;
    let before = plane.image();
    assert_eq!(
        before.cluster_id, "legacy-cluster-id",
        "the single broker keeps its id"
    );
    assert_eq!(
        plane.controller_endpoint(),
        None,
        "a quorum of one listens nowhere"
    );
    plane.shutdown().await;
    drop(plane);

    let plane = start(single(dir.path(), 1_000)).await;
    // The log is re-applied once the restarted leader commits its term's first entry.
    eventually(&plane, "the topic after the restart", |i| {
        i.topic("orders").is_some()
    })
    .await;
    let after = plane.image();
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.cluster_id, before.cluster_id);
    create_topic(&plane, "payments").await;
    plane.shutdown().await;
}

#[tokio::test]
async fn wait_past_the_image_offset_stays_pending_through_entries_that_carry_no_records() {
    // The bug: waiting on the raft log index, which blank and membership entries advance, so a
    // caller waiting past its image's offset returned at once forever (a hot loop).
    let dir = tempfile::tempdir().unwrap();
    let plane = start(single(dir.path(), 1_000)).await;
    bring_up(&plane, 1).await;
    // A broker with a quorum endpoint: the controller adds it as a learner, which is a
    // membership entry, no record.
    plane
        .submit(ControllerRequest::RegisterBroker {
            id: 2,
            incarnation_id: uuid::Uuid::from_u128(2),
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 9002,
            },
            controller_endpoint: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 1,
            }),
            rack: None,
            previous_broker_epoch: -1,
        })
        .await
        .unwrap();
    let offset = plane.image().metadata_offset;
    for _ in 0..400 {
        if plane.quorum_status().committed_offset > offset {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let status = plane.quorum_status();
    assert!(
        status.committed_offset > offset && status.applied_offset == offset,
        "the learner's membership entry is not applied past the image: {status:?}"
    );
    let still_pending = tokio::time::timeout(Duration::ZERO, plane.wait_past(offset)).await;
    assert!(
        still_pending.is_err(),
        "wait_past({offset}) resolved with no newer record"
    );
    let waiter = {
        let plane = Arc::clone(&plane);
        tokio::spawn(async move { plane.wait_past(offset).await })
    };
    create_topic(&plane, "a-record").await;
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("wait_past resolves once a record batch applies")
        .unwrap();
    assert!(plane.image().metadata_offset > offset);
    plane.shutdown().await;
}

#[tokio::test]
async fn a_restart_from_a_snapshot_keeps_the_image_once_the_log_below_it_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(single(dir.path(), 4)).await;
    bring_up(&plane, 1).await;
    create_topic(&plane, "t0").await;
    let t0_offset = plane.image().metadata_offset;
    for i in 1..12 {
        create_topic(&plane, &format!("t{i}")).await;
    }
    // Snapshots are built in the background every 4 entries; the log is purged after each.
    for _ in 0..400 {
        if plane.purged_offset() >= t0_offset {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(plane.purged_offset() >= t0_offset, "never purged past t0");
    let before = plane.image();
    plane.shutdown().await;
    drop(plane);
    let metadata = dir.path().join("__cluster_metadata-0");
    assert!(
        metadata.join("snapshot.json").exists(),
        "no snapshot after 14 entries"
    );
    let log = broker::disk::read_file(&FileDisk::new(), &metadata.join("log"))
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(
        !log.contains("\"t0\""),
        "the log still holds entries below the snapshot"
    );
    assert!(
        log.contains("last_purged\":{"),
        "the log does not say where it was purged"
    );

    let plane = start(single(dir.path(), 4)).await;
    // Straight from the snapshot, before anything is re-applied.
    assert!(
        plane.image().topic("t0").is_some(),
        "the snapshot was not loaded"
    );
    eventually(&plane, "every topic", |i| i.topics == before.topics).await;
    create_topic(&plane, "after-restart").await;
    plane.shutdown().await;
}

#[tokio::test]
async fn a_power_loss_of_a_quorum_of_one_mid_write_loses_no_acknowledged_topic() {
    // The bug: an entry acknowledged before it was synced, or a torn tail trusted at recovery.
    for seed in 0..8 {
        let disk = chaos::FaultyDisk::new(
            seed,
            chaos::FaultyDiskConfig {
                torn_writes: true,
                latency: Some((Duration::from_micros(10), Duration::from_micros(500))),
                ..chaos::FaultyDiskConfig::default()
            },
        );
        let dir = std::path::PathBuf::from("/data");
        let config = single(&dir, 5);
        let plane = RaftPlane::start(config.clone(), Arc::new(disk.clone()))
            .await
            .unwrap();
        bring_up(&plane, 1).await;
        let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let plane = Arc::clone(&plane);
                let acks = Arc::clone(&acks);
                tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    for i in 0.. {
                        let name = format!("w{w}-{i}");
                        let request = ControllerRequest::CreateTopics {
                            topics: vec![new_topic(&name)],
                            validate_only: false,
                        };
                        match plane.submit(request).await {
                            Ok(_) => {
                                acknowledged.push(name);
                                acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(_) => return acknowledged,
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        // Strike once a few are acknowledged, with the writers still going.
        for _ in 0..60_000 {
            if acks.load(std::sync::atomic::Ordering::SeqCst) >= 3 + seed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The power goes: every handle dies, unsynced bytes vanish or tear.
        disk.crash();
        let mut acknowledged = Vec::new();
        for writer in writers {
            acknowledged.extend(
                tokio::time::timeout(Duration::from_secs(60), writer)
                    .await
                    .expect("writers stop once the disk is gone")
                    .unwrap(),
            );
        }
        plane.shutdown().await;
        drop(plane);

        let plane = RaftPlane::start(config, Arc::new(disk.clone()))
            .await
            .unwrap();
        eventually(&plane, "every acknowledged topic", |i| {
            acknowledged.iter().all(|t| i.topic(t).is_some())
        })
        .await;
        plane.shutdown().await;
    }
}

/// Three addresses on loopback that were free a moment ago.
async fn free_addresses(n: usize) -> Vec<String> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

fn voter_config(id: i32, voters: &[Voter], dir: &Path) -> QuorumConfig {
    let own = voters.iter().find(|v| v.id == id).unwrap().address.clone();
    QuorumConfig {
        node_id: id,
        voters: voters.to_vec(),
        listen: Some(own),
        advertised: None,
        snapshot_every: 8,
        timeouts: timeouts(),
        ..QuorumConfig::single(id, dir.to_path_buf())
    }
}

/// The leader every plane agrees on, other than `not` (a stopped one the others still name
/// until their election timeout).
async fn leader_of(planes: &[Arc<RaftPlane>], not: Option<i32>) -> i32 {
    for _ in 0..400 {
        let leaders: Vec<_> = planes
            .iter()
            .filter_map(|p| p.quorum_status().active_controller)
            .collect();
        if let Some(first) = leaders.first() {
            if leaders.len() == planes.len()
                && leaders.iter().all(|l| l == first)
                && Some(*first) != not
            {
                return *first;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no agreed leader");
}

#[tokio::test]
async fn three_voters_on_loopback_replicate_to_a_learner_and_survive_the_leader_stopping() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let addresses = free_addresses(4).await;
    let voters: Vec<Voter> = (1..=3)
        .map(|id| Voter {
            id,
            address: addresses[id as usize - 1].clone(),
        })
        .collect();
    let mut planes = Vec::new();
    for id in 1..=3 {
        planes.push(start(voter_config(id, &voters, dirs[id as usize - 1].path())).await);
    }
    let leader = leader_of(&planes, None).await;
    assert_eq!(planes[0].quorum_status().voters, vec![1, 2, 3]);
    // Every node forwards to the active controller.
    let follower = planes
        .iter()
        .find(|p| p.node_id() != leader)
        .unwrap()
        .clone();
    bring_up(&follower, 1).await;
    create_topic(&follower, "from-a-follower").await;
    for i in 0..10 {
        create_topic(&planes[i % 3], &format!("spread-{i}")).await;
    }

    // A learner: not a voter, registers with its controller endpoint and is added.
    let learner = start(QuorumConfig {
        node_id: 4,
        voters: voters.clone(),
        listen: Some(addresses[3].clone()),
        ..voter_config(1, &voters, dirs[3].path())
    })
    .await;
    let reply = learner
        .submit(ControllerRequest::RegisterBroker {
            id: 4,
            incarnation_id: uuid::Uuid::from_u128(4),
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 9004,
            },
            controller_endpoint: learner.controller_endpoint(),
            rack: None,
            previous_broker_epoch: -1,
        })
        .await
        .expect("the learner registers through the controller");
    assert!(matches!(reply, ControllerReply::Registered { .. }));
    let reference = planes[0].image();
    eventually(&learner, "the voters' topics", |i| {
        i.topics == reference.topics
    })
    .await;

    // The leader stops: the other two elect one and go on.
    let old = planes.iter().position(|p| p.node_id() == leader).unwrap();
    planes[old].shutdown().await;
    let stopped = planes.remove(old);
    let leader = leader_of(&planes, Some(stopped.node_id())).await;
    assert_ne!(leader, stopped.node_id());
    create_topic(&learner, "after-failover").await;
    let reference = planes
        .iter()
        .find(|p| p.node_id() == leader)
        .unwrap()
        .image();
    assert!(reference.topic("after-failover").is_some());
    for plane in planes.iter().chain(std::iter::once(&learner)) {
        eventually(plane, "the leader's image", |i| *i == *reference).await;
    }
    for plane in planes.iter().chain(std::iter::once(&learner)) {
        plane.shutdown().await;
    }
}

/// Three voters on loopback, each on its own in-memory faulty disk (its metadata log under
/// `/data`), so one node's metadata drive can fail alone.
async fn faulty_voters() -> (Vec<Arc<RaftPlane>>, Vec<chaos::FaultyDisk>, Vec<Voter>) {
    let addresses = free_addresses(3).await;
    let voters: Vec<Voter> = (1..=3)
        .map(|id| Voter {
            id,
            address: addresses[id as usize - 1].clone(),
        })
        .collect();
    let mut planes = Vec::new();
    let mut disks = Vec::new();
    for id in 1..=3u64 {
        let disk = chaos::FaultyDisk::new(id, chaos::FaultyDiskConfig::default());
        let config = voter_config(id as i32, &voters, Path::new("/data"));
        planes.push(
            RaftPlane::start(config, Arc::new(disk.clone()))
                .await
                .expect("the plane starts"),
        );
        disks.push(disk);
    }
    (planes, disks, voters)
}

/// How a halt is awaited: bounded, a hang is a failure.
async fn halts(plane: &RaftPlane) -> String {
    tokio::time::timeout(Duration::from_secs(20), plane.halted())
        .await
        .unwrap_or_else(|_| panic!("node {} never halted", plane.node_id()))
}

/// Restarts node `index` on its disk, the metadata drive working again, as a supervisor
/// restarts a halted node.
async fn restart(
    planes: &mut [Arc<RaftPlane>],
    disks: &[chaos::FaultyDisk],
    voters: &[Voter],
    index: usize,
) {
    planes[index].shutdown().await;
    disks[index].heal_io_in(broker::controller::raft::METADATA_DIR);
    let id = index as i32 + 1;
    // The stopped plane's listener task is aborted, not yet dropped: its port frees shortly.
    for attempt in 0.. {
        match RaftPlane::start(
            voter_config(id, voters, Path::new("/data")),
            Arc::new(disks[index].clone()),
        )
        .await
        {
            Ok(plane) => {
                planes[index] = plane;
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 100 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the plane does not start again: {e}"),
        }
    }
}

#[tokio::test]
async fn a_controller_whose_metadata_log_fails_halts_acknowledges_nothing_and_another_leads() {
    // The bug: openraft's core stopped on the EIO and the node ran on as the controller nobody
    // could replace quickly and whose image never moved again; nothing told the broker to halt.
    let (mut planes, disks, voters) = faulty_voters().await;
    let leader = leader_of(&planes, None).await;
    bring_up(&planes[0], 1).await;
    create_topic(&planes[0], "before").await;
    let index = planes.iter().position(|p| p.node_id() == leader).unwrap();
    disks[index].fail_io_in(broker::controller::raft::METADATA_DIR);

    let refused = planes[index]
        .submit(ControllerRequest::CreateTopics {
            topics: vec![new_topic("during")],
            validate_only: false,
        })
        .await;
    assert!(
        matches!(refused, Err(ControllerError::Unavailable(_))),
        "a CreateTopics whose entry the leader could not write was answered {refused:?}"
    );
    let reason = halts(&planes[index]).await;
    assert!(reason.contains("metadata log failed"), "{reason}");

    // The other two elect a controller and take changes.
    let others: Vec<Arc<RaftPlane>> = planes
        .iter()
        .filter(|p| p.node_id() != leader)
        .cloned()
        .collect();
    let new_leader = leader_of(&others, Some(leader)).await;
    assert_ne!(new_leader, leader);
    create_topic(&others[0], "after").await;

    // Restarted with its drive working, the node recovers from its log and catches up.
    restart(&mut planes, &disks, &voters, index).await;
    let reference = others
        .iter()
        .find(|p| p.node_id() == new_leader)
        .unwrap()
        .image();
    for plane in &planes {
        eventually(plane, "the controller's image", |i| {
            i.metadata_offset >= reference.metadata_offset
                && i.topic("before").is_some()
                && i.topic("after").is_some()
        })
        .await;
    }
    // "during" was never acknowledged: the quorum may or may not hold it, but all agree.
    let during: Vec<bool> = planes
        .iter()
        .map(|p| p.image().topic("during").is_some())
        .collect();
    assert!(during.iter().all(|d| *d == during[0]), "{during:?}");
    for plane in &planes {
        plane.shutdown().await;
    }
}

#[tokio::test]
async fn a_follower_voter_whose_metadata_log_fails_halts_while_the_other_two_commit() {
    let (mut planes, disks, voters) = faulty_voters().await;
    let leader = leader_of(&planes, None).await;
    let index = planes.iter().position(|p| p.node_id() != leader).unwrap();
    disks[index].fail_io_in(broker::controller::raft::METADATA_DIR);
    let leading = planes
        .iter()
        .find(|p| p.node_id() == leader)
        .unwrap()
        .clone();
    bring_up(&leading, 1).await;
    create_topic(&leading, "with-a-follower-failing").await;
    let reason = halts(&planes[index]).await;
    assert!(reason.contains("metadata log failed"), "{reason}");
    create_topic(&leading, "with-a-follower-halted").await;

    restart(&mut planes, &disks, &voters, index).await;
    let reference = leading.image();
    eventually(&planes[index], "the controller's image", |i| {
        i.metadata_offset >= reference.metadata_offset
            && i.topic("with-a-follower-halted").is_some()
    })
    .await;
    for plane in &planes {
        plane.shutdown().await;
    }
}
