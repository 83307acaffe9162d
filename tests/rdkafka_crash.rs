#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! A broker process killed with SIGKILL in the middle of acks=all produce traffic, then
//! restarted on the same data directory, still serves every record it acknowledged, at the
//! offset it acknowledged it at.
//!
//! The bug this guards against: an acks=all answer sent before the batch was synced (or a sync
//! that does not cover the segment's directory entry, or an index the recovery trusts too much),
//! so a power cut or a kill -9 silently drops records the producer was told were safe. Records
//! whose delivery failed or was never reported are "unknown" (Jepsen's term): they may or may
//! not be there, and duplicates from the producer's own retries are allowed (no idempotence).
//!
//! The broker must be a separate process to be killed. The `faultline` binary belongs to the
//! `broker` package, which root-package tests cannot name, so the test binary re-runs itself:
//! `child_broker_process` is a no-op unless FAULTLINE_CHILD_BROKER=PORT:DIR is set, in which
//! case it is a broker until killed.

mod common_broker;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common_broker::*;
use rdkafka::message::Message;

#[test]
fn child_broker_process() {
    run_child_broker_if_asked();
}

/// The child broker; killed (SIGKILL) and reaped on drop, so a failing test leaves no process.
struct ChildBroker(Child);

impl ChildBroker {
    fn kill_9(&mut self) {
        let _ = self.0.kill(); // Child::kill is SIGKILL on Unix
        let _ = self.0.wait();
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn spawn_broker(port: u16, dir: &std::path::Path) -> ChildBroker {
    let child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["child_broker_process", "--exact", "--nocapture"])
        .env(CHILD_BROKER_ENV, format!("{port}:{}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child broker");
    let mut child = ChildBroker(child);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "child broker not listening on {port} within {WAIT:?}"
        );
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("child broker exited at start: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn a_kill_9_and_restart_lose_no_acknowledged_record() {
    if std::env::var(CHILD_BROKER_ENV).is_ok() {
        return; // we are the child: only child_broker_process has work to do
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut child = spawn_broker(port, dir.path());

    let topic = topic_name("crash");
    let partitions = 3;
    let records: Vec<Outgoing> = (0..3_000)
        .map(|i| Outgoing {
            partition: Some(i % partitions),
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("record-{i}").into_bytes()),
            ..Outgoing::default()
        })
        .collect();
    let producer = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("linger.ms", "2"),
            ("batch.num.messages", "50"),
            ("retry.backoff.ms", "50"),
        ],
    );
    // Three partitions, so the broker recovers several logs at once after the kill.
    let admin_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = client_config(&bootstrap).create().expect("admin client");
        let topic = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
        let created = admin_runtime
            .block_on(
                admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(WAIT))),
            )
            .expect("CreateTopics");
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }

    // A first third acknowledged before the crash, a second third in flight when it happens.
    let third = records.len() / 3;
    enqueue(&producer, &topic, &records[..third], 0);
    producer_flush(&producer);
    enqueue(&producer, &topic, &records[third..2 * third], third);
    // Kill once some of the second third has been acknowledged, so the kill lands mid-traffic.
    let deadline = Instant::now() + WAIT;
    let mut reports = take_reports(&producer);
    while reports.len() < third + 50 {
        assert!(
            Instant::now() < deadline,
            "no acknowledgements before the kill"
        );
        producer_poll(&producer);
        reports.extend(take_reports(&producer));
    }
    child.kill_9();
    drop(child);

    // Restart on the same directory and port; the producer retries what was in flight, and the
    // last third goes to the restarted broker.
    let _child = spawn_broker(port, dir.path());
    enqueue(&producer, &topic, &records[2 * third..], 2 * third);
    producer_flush(&producer);
    reports.extend(take_reports(&producer));
    reports.sort_by_key(|(index, _)| *index);
    assert_eq!(
        reports.len(),
        records.len(),
        "one delivery report per record"
    );

    // Offsets may jump after the restart (the broker skips offsets it may have handed out
    // before the crash); what must hold is that no offset was acknowledged for two records.
    let mut offsets_acknowledged = std::collections::HashSet::new();
    for (index, report) in &reports {
        if let Ok(at) = report {
            assert!(
                offsets_acknowledged.insert(*at),
                "record {index} acknowledged at {at:?}, which another record was also given"
            );
        }
    }
    let mut acknowledged = 0;
    let mut stored_by_partition = Vec::new();
    for partition in 0..partitions {
        stored_by_partition.push(read_all(&bootstrap, &topic, partition));
    }
    for (index, report) in &reports {
        let Ok((partition, offset)) = report else {
            continue;
        }; // unknown outcome: allowed either way
        acknowledged += 1;
        let stored = &stored_by_partition[*partition as usize];
        let message = stored
            .iter()
            .find(|m| m.offset() == *offset)
            .unwrap_or_else(|| {
                panic!("record {index}, acknowledged at {topic}-{partition}@{offset}, is lost")
            });
        assert_eq!(
            message.payload(),
            records[*index].value.as_deref(),
            "offset {offset} of partition {partition} holds another record"
        );
    }
    assert!(
        acknowledged >= third,
        "at least the records acknowledged before the crash were checked"
    );
}

fn producer_flush(producer: &TestProducer) {
    use rdkafka::producer::Producer;
    producer.flush(WAIT).expect("flush within WAIT");
}

fn producer_poll(producer: &TestProducer) {
    producer.poll(Duration::from_millis(10));
}

/// The bug this guards against: an OffsetCommit acknowledged before its record in
/// `__consumer_offsets` is durable, or committed offsets not replayed at start, so a consumer
/// restarted after a crash re-reads (or skips) what its group had committed.
#[test]
fn committed_offsets_acknowledged_before_a_kill_9_are_there_after_restart() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    if std::env::var(CHILD_BROKER_ENV).is_ok() {
        return; // we are the child: only child_broker_process has work to do
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut child = spawn_broker(port, dir.path());
    let topic = topic_name("crash-commit");
    let group = topic_name("crash-group");
    let producer = producer(&bootstrap, &[("acks", "all")]);
    let records: Vec<Outgoing> = (0..20)
        .map(|i| Outgoing {
            partition: Some(0),
            value: Some(format!("r{i}").into_bytes()),
            ..Outgoing::default()
        })
        .collect();
    send_ok(&producer, &topic, &records);
    drop(producer);
    let committer = || -> BaseConsumer {
        let mut config = client_config(&bootstrap);
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false");
        config.create().expect("consumer")
    };
    let consumer = committer();
    // A consumer that assigns itself commits with generation -1, one acknowledged commit at a
    // time: the last acknowledged one must survive.
    for offset in 1..=12 {
        let mut commit = TopicPartitionList::new();
        commit
            .add_partition_offset(&topic, 0, Offset::Offset(offset))
            .expect("offset");
        consumer.commit(&commit, CommitMode::Sync).expect("commit");
    }
    drop(consumer);
    child.kill_9();
    drop(child);

    let _child = spawn_broker(port, dir.path());
    let consumer = committer();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    let committed = consumer.committed_offsets(wanted, WAIT).expect("committed");
    assert_eq!(
        committed
            .find_partition(&topic, 0)
            .expect("partition")
            .offset(),
        Offset::Offset(12)
    );
}

/// Sends one record per (partition, k) for transaction `txn` and waits for every delivery
/// report; `false` if any failed (the broker died under it).
fn send_txn_records(producer: &TestProducer, topic: &str, txn: usize, partitions: i32) -> bool {
    use rdkafka::producer::Producer;
    let records: Vec<Outgoing> = (0..partitions)
        .flat_map(|p| {
            (0..3).map(move |k| Outgoing {
                partition: Some(p),
                value: Some(format!("t{txn}-p{p}-{k}").into_bytes()),
                ..Outgoing::default()
            })
        })
        .collect();
    enqueue(producer, topic, &records, 0);
    if producer.flush(Duration::from_secs(10)).is_err() {
        return false;
    }
    let reports = take_reports(producer);
    reports.len() == records.len() && reports.iter().all(|(_, r)| r.is_ok())
}

#[test]
fn a_transaction_is_all_or_nothing_after_its_coordinator_is_killed_mid_commit() {
    // The bug: a coordinator killed between its decision and the last marker left a
    // transaction half visible (markers on some partitions only) or open for good after the
    // restart, or lost a commit it had acknowledged. The restarted coordinator must finish
    // every prepared transaction and abort every open one (after its timeout).
    if std::env::var(CHILD_BROKER_ENV).is_ok() {
        return;
    }
    use rdkafka::producer::Producer;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut child = spawn_broker(port, dir.path());
    let topic = topic_name("txn-crash");
    let partitions = 3;
    let admin_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = client_config(&bootstrap).create().expect("admin client");
        let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
        let created = admin_runtime
            .block_on(
                admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(WAIT))),
            )
            .expect("CreateTopics");
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }

    let committed: Arc<Mutex<Vec<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // The transaction whose commit_transaction is under way (its records are all written).
    let committing = Arc::new(AtomicUsize::new(usize::MAX));
    let worker = {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        let (committed, stop) = (Arc::clone(&committed), Arc::clone(&stop));
        let committing = Arc::clone(&committing);
        std::thread::spawn(move || {
            let producer = producer(
                &bootstrap,
                &[
                    ("transactional.id", "txn-crash"),
                    ("transaction.timeout.ms", "5000"),
                    ("message.timeout.ms", "5000"),
                    ("socket.timeout.ms", "5000"),
                ],
            );
            producer.init_transactions(WAIT).expect("init_transactions");
            for txn in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if producer.begin_transaction().is_err()
                    || !send_txn_records(&producer, &topic, txn, partitions)
                {
                    return;
                }
                committing.store(txn, Ordering::SeqCst);
                match producer.commit_transaction(Duration::from_secs(10)) {
                    Ok(()) => committed.lock().unwrap().push(txn),
                    Err(_) => return, // unknown outcome: either way, never half
                }
            }
        })
    };
    // Kill once a few transactions committed, the moment the next one's commit starts: the
    // kill lands before the coordinator decided, or between its decision and the last marker.
    let deadline = Instant::now() + WAIT;
    while committed.lock().unwrap().len() < 5 || committing.load(Ordering::SeqCst) < 5 {
        assert!(
            Instant::now() < deadline,
            "no transaction committed before the kill"
        );
        std::thread::yield_now();
    }
    child.kill_9();
    drop(child);
    let _child = spawn_broker(port, dir.path());
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("producer thread");

    // A plain record after everything: read_committed reaches it only once every transaction
    // before it on its partition is decided and marked.
    let plain = producer(&bootstrap, &[]);
    let sentinels: Vec<Outgoing> = (0..partitions)
        .map(|p| Outgoing {
            partition: Some(p),
            value: Some(b"sentinel".to_vec()),
            ..Outgoing::default()
        })
        .collect();
    send_ok(&plain, &topic, &sentinels);

    let mut config = client_config(&bootstrap);
    config
        .set("group.id", "txn-crash-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    let consumer: rdkafka::consumer::BaseConsumer = config.create().expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    rdkafka::consumer::Consumer::assign(&consumer, &assignment).expect("assign");
    let mut per_txn: BTreeMap<usize, usize> = BTreeMap::new();
    let mut sentinels_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sentinels_seen < partitions {
        assert!(
            Instant::now() < deadline,
            "read_committed never passed every transaction: {sentinels_seen} sentinels, {per_txn:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                if value == "sentinel" {
                    sentinels_seen += 1;
                } else {
                    let txn: usize = value[1..value.find('-').unwrap()].parse().unwrap();
                    *per_txn.entry(txn).or_default() += 1;
                }
            }
            Some(Err(e)) => panic!("read_committed consumer: {e}"),
        }
    }
    eprintln!(
        "acknowledged commits: {:?}; visible after the restart: {per_txn:?}",
        committed.lock().unwrap()
    );
    let whole = (partitions * 3) as usize;
    for (txn, count) in &per_txn {
        assert_eq!(
            *count, whole,
            "transaction {txn} is partly visible: {per_txn:?}"
        );
    }
    for txn in committed.lock().unwrap().iter() {
        assert!(
            per_txn.contains_key(txn),
            "committed transaction {txn} is lost: {per_txn:?}"
        );
    }
}
