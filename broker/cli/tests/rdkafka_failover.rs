//! librdkafka (the `rdkafka` crate) against three real `faultline broker` processes with
//! replication factor 3, while a partition leader or a group coordinator is killed with SIGKILL
//! and started again on its data directory.
//!
//! The bug stories: an acks=all acknowledgement given before the followers had the batch, so
//! the leader's death loses it; an idempotent producer's retry to the new leader written a
//! second time (the new leader did not rebuild the producer's state from the replicated log) or
//! refused with OUT_OF_ORDER_SEQUENCE_NUMBER; a consumer that read past the high watermark a
//! record the failover then took back, or that stopped at the dead leader; a committed offset
//! acknowledged before `__consumer_offsets`' followers had it, so the coordinator's death
//! rewinds the group. With acks=1 Kafka allows the loss of what no follower had fetched: that
//! run reports what it lost, and asserts only what Kafka still promises there (no consumer ever
//! read a record that was later lost).
#![cfg(not(madsim))]
// Test code: real processes, threads and waits (clippy.toml's bans are for broker code).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod processes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use processes::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
/// A dead broker is fenced, and its leaderships move, this long after its last heartbeat.
const SESSION_TIMEOUT_MS: u64 = 4_000;
const HEARTBEAT_MS: u64 = 500;

/// Three brokers, fenced `SESSION_TIMEOUT_MS` after their last heartbeat, with a small
/// `__consumer_offsets` (of 3 replicas, the default where there are 3 brokers).
fn start_cluster(dir: &std::path::Path) -> Brokers {
    let brokers = Brokers::start(
        3,
        dir,
        &[
            format!("broker-session-timeout-ms={SESSION_TIMEOUT_MS}"),
            format!("broker-heartbeat-interval-ms={HEARTBEAT_MS}"),
            "offsets-topic-num-partitions=3".to_string(),
        ],
    );
    brokers.await_formed(1);
    brokers
}

/// `topics describe --json` of `topic` through node `via`, if it answered.
fn describe_topic(brokers: &Brokers, via: i32, topic: &str) -> Option<serde_json::Value> {
    let run = faultline(&[
        "topics",
        "describe",
        "--topic",
        topic,
        "--json",
        "--bootstrap-server",
        &brokers.addr(via),
    ]);
    run.status
        .success()
        .then(|| serde_json::from_slice(&run.stdout).ok())
        .flatten()
}

/// Waits until node `via` shows every partition of `topic` led and with an ISR of `isr`
/// members; returns each partition's leader.
fn await_isr(brokers: &Brokers, via: i32, topic: &str, isr: usize) -> Vec<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        let described = describe_topic(brokers, via, topic);
        let leaders: Option<Vec<i32>> = described.as_ref().and_then(|d| {
            d["partitions"]
                .as_array()?
                .iter()
                .map(|p| {
                    let leader = p["leader"].as_i64()?;
                    let full = p["isr"].as_array()?.len() == isr;
                    (leader > 0 && full).then_some(leader as i32)
                })
                .collect()
        });
        if let Some(leaders) = leaders.filter(|l| l.len() == PARTITIONS as usize) {
            return leaders;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never had {isr} in-sync replicas per partition: {described:?}\n{}",
            brokers.log_tails()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn create_topic(brokers: &Brokers, topic: &str) {
    let created = faultline(&[
        "topics",
        "create",
        "--topic",
        topic,
        "--partitions",
        &PARTITIONS.to_string(),
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=2",
        "--bootstrap-server",
        &brokers.addr(1),
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    for via in 1..=3 {
        await_isr(brokers, via, topic, 3);
    }
}

/// What became of the records a producer sent, by record number (its value).
#[derive(Default)]
struct Deliveries {
    /// number -> (partition, offset)
    acknowledged: BTreeMap<u64, (i32, i64)>,
    /// number -> librdkafka's error
    failed: BTreeMap<u64, String>,
}

struct Recorder(Arc<Mutex<Deliveries>>);

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, number: Box<u64>) {
        let mut deliveries = self.0.lock().unwrap();
        match result {
            Ok(message) => {
                deliveries
                    .acknowledged
                    .insert(*number, (message.partition(), message.offset()));
            }
            Err((error, _)) => {
                deliveries.failed.insert(*number, error.to_string());
            }
        }
    }
}

/// A producer thread sending record `n` (value `n`) to partition `n % PARTITIONS`, about one
/// record a millisecond, until `stop`; then it flushes and returns how many it sent.
fn produce_until_stopped(
    bootstrap: String,
    topic: &'static str,
    acks: &'static str,
    idempotent: bool,
    deliveries: Arc<Mutex<Deliveries>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let producer: ThreadedProducer<Recorder> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", acks)
            .set("enable.idempotence", idempotent.to_string())
            // Longer than any failover here: an idempotent producer retries until it lands.
            .set("message.timeout.ms", "120000")
            .set("retry.backoff.ms", "50")
            .set("linger.ms", "5")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create_with_context(Recorder(deliveries))
            .expect("producer");
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let value = sent.to_string();
            let partition = (sent % PARTITIONS as u64) as i32;
            let record = BaseRecord::with_opaque_to(topic, Box::new(sent))
                .partition(partition)
                .payload(&value);
            match producer.send::<(), _>(record) {
                Ok(()) => sent += 1,
                // Queue full: wait for deliveries to drain it.
                Err((_, _)) => std::thread::sleep(Duration::from_millis(10)),
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        producer
            .flush(Duration::from_secs(150))
            .expect("every send reported within message.timeout.ms");
        sent
    })
}

/// One record as a consumer read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Read {
    partition: i32,
    offset: i64,
    number: u64,
}

fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("enable.partition.eof", "false");
    config
}

/// Reads every partition of `topic` from the beginning until `stop`, then until it has read
/// up to `until` (partition -> offset after the last record to read), bounded by [`WAIT`].
fn consume_until_stopped(
    bootstrap: String,
    topic: &'static str,
    stop: Arc<AtomicBool>,
    until: Arc<Mutex<BTreeMap<i32, i64>>>,
) -> std::thread::JoinHandle<Vec<Read>> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = consumer_config(&bootstrap)
            .set("group.id", "unused-assign-only")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut reads = Vec::new();
        let mut next = BTreeMap::<i32, i64>::new();
        let mut deadline = None;
        loop {
            if stop.load(Ordering::SeqCst) {
                let until = until.lock().unwrap();
                if until
                    .iter()
                    .all(|(p, end)| next.get(p).copied().unwrap_or(0) >= *end)
                {
                    return reads;
                }
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + WAIT);
                assert!(
                    Instant::now() < deadline,
                    "the consumer read up to {next:?}, not {until:?}"
                );
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let number = std::str::from_utf8(m.payload().expect("a value"))
                        .unwrap()
                        .parse()
                        .unwrap();
                    next.insert(m.partition(), m.offset() + 1);
                    reads.push(Read {
                        partition: m.partition(),
                        offset: m.offset(),
                        number,
                    });
                }
                // Retriable errors (a leader gone, a fetch refused while the ISR moves) are
                // librdkafka's to handle; the consumer carries on.
                Some(Err(e)) => eprintln!("consumer: {e}"),
                None => {}
            }
        }
    })
}

/// Every record of `topic`, read by a new consumer from the beginning up to each partition's
/// high watermark.
fn read_all(bootstrap: &str, topic: &'static str) -> Vec<Read> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .set("group.id", "unused-final-read")
        .create()
        .expect("consumer");
    let mut until = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .expect("watermarks");
        until.insert(p, high);
    }
    drop(consumer);
    let stop = Arc::new(AtomicBool::new(true));
    consume_until_stopped(
        bootstrap.to_string(),
        topic,
        stop,
        Arc::new(Mutex::new(until)),
    )
    .join()
    .expect("final read")
}

/// What one failover run saw.
struct Run {
    sent: u64,
    deliveries: Deliveries,
    /// What the consumer that lived through the failover read.
    live: Vec<Read>,
    /// What a new consumer read from every partition afterwards.
    after: Vec<Read>,
    killed: i32,
}

/// Produces to `topic` (RF 3, min.insync.replicas 2) with `acks` while a consumer reads it;
/// kills partition 0's leader with SIGKILL once records are acknowledged, waits for
/// acknowledgements from the new leader, starts the killed broker again, waits for it to
/// rejoin the ISR and for more acknowledgements, then stops the producer and reads everything.
fn failover_run(topic: &'static str, acks: &'static str, idempotent: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(dir.path());
    create_topic(&brokers, topic);
    let bootstrap = brokers.bootstrap();

    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let (stop_producing, stop_consuming) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let until = Arc::new(Mutex::new(BTreeMap::new()));
    let consumer = consume_until_stopped(
        bootstrap.clone(),
        topic,
        stop_consuming.clone(),
        until.clone(),
    );
    let producer = produce_until_stopped(
        bootstrap.clone(),
        topic,
        acks,
        idempotent,
        deliveries.clone(),
        stop_producing.clone(),
    );
    // Waits until `count` more records of partition 0 than now are acknowledged.
    let more_acknowledged = |brokers: &Brokers, count: usize, what: &str| {
        let on_0 = || {
            let d = deliveries.lock().unwrap();
            d.acknowledged.values().filter(|(p, _)| *p == 0).count()
        };
        let target = on_0() + count;
        let deadline = Instant::now() + WAIT;
        while on_0() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {target} records of partition 0 acknowledged; failed: {:?}\n{}",
                on_0(),
                deliveries
                    .lock()
                    .unwrap()
                    .failed
                    .iter()
                    .take(5)
                    .collect::<Vec<_>>(),
                brokers.log_tails()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    more_acknowledged(&brokers, 200, "before the kill");
    let leaders = await_isr(&brokers, 1, topic, 3);
    let killed = leaders[0];
    brokers.kill9(killed);
    let survivor = if killed == 1 { 2 } else { 1 };
    more_acknowledged(&brokers, 200, "from the new leader");
    let new_leader = describe_topic(&brokers, survivor, topic).expect("described")["partitions"][0]
        ["leader"]
        .as_i64()
        .unwrap();
    assert_ne!(new_leader, i64::from(killed));
    brokers.spawn(killed);
    await_isr(&brokers, survivor, topic, 3);
    more_acknowledged(&brokers, 200, "after the restart");

    stop_producing.store(true, Ordering::SeqCst);
    let sent = producer.join().expect("producer thread");
    let deliveries = std::mem::take(&mut *deliveries.lock().unwrap());
    {
        let mut until = until.lock().unwrap();
        for (p, o) in deliveries.acknowledged.values() {
            let end = until.entry(*p).or_insert(0);
            *end = (*end).max(o + 1);
        }
    }
    stop_consuming.store(true, Ordering::SeqCst);
    let live = consumer.join().expect("consumer thread");
    let after = read_all(&bootstrap, topic);
    Run {
        sent,
        deliveries,
        live,
        after,
        killed,
    }
}

/// Per partition: offsets rise, and so do the record numbers (the producer sent each
/// partition's records in number order).
fn assert_in_order(reads: &[Read], who: &str) {
    let mut last: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    for r in reads {
        if let Some((offset, number)) = last.get(&r.partition) {
            assert!(r.offset > *offset, "{who}: {r:?} after offset {offset}");
            assert!(r.number > *number, "{who}: {r:?} after record {number}");
        }
        last.insert(r.partition, (r.offset, r.number));
    }
}

/// The bug story: see the module docs. An idempotent acks=all producer (librdkafka's defaults
/// for retries, one `message.timeout.ms` longer than the failover) writes three partitions of
/// RF 3 while partition 0's leader is kill -9'd and restarted. Nothing fails, every
/// acknowledged record is read exactly once, at its acknowledged offset, in order, by the
/// consumer that lived through the failover and by a new one; nothing else is in the log.
#[test]
fn idempotent_acks_all_loses_and_duplicates_nothing_when_the_leader_is_kill_9d_and_restarted() {
    let run = failover_run("idempotent-all", "all", true);
    let Run {
        sent,
        deliveries,
        live,
        after,
        killed,
    } = run;
    eprintln!(
        "killed node {killed}; sent {sent}, acknowledged {}, failed {}; the live consumer read \
         {} records, the final read {}",
        deliveries.acknowledged.len(),
        deliveries.failed.len(),
        live.len(),
        after.len()
    );
    assert!(
        deliveries.failed.is_empty(),
        "failed deliveries: {:?}",
        deliveries.failed.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(deliveries.acknowledged.len() as u64, sent);
    for (who, reads) in [("live consumer", &live), ("final read", &after)] {
        assert_in_order(reads, who);
        let mut seen = BTreeMap::new();
        for r in reads {
            if let Some(first) = seen.insert(r.number, *r) {
                panic!("{who}: record {} read twice: {first:?} and {r:?}", r.number);
            }
        }
        for (number, (partition, offset)) in &deliveries.acknowledged {
            let read = seen.get(number).unwrap_or_else(|| {
                panic!("{who}: acknowledged record {number} ({partition}/{offset}) lost")
            });
            assert_eq!(
                (read.partition, read.offset),
                (*partition, *offset),
                "{who}"
            );
        }
        assert_eq!(
            seen.len(),
            deliveries.acknowledged.len(),
            "{who}: extra records"
        );
    }
}

/// With acks=1 the leader answers after its own append, so its death can lose what no follower
/// had fetched (Kafka documents this). The run reports what was lost; what it asserts is what
/// Kafka still promises: a consumer never reads above the high watermark, so every record the
/// live consumer read is in the log afterwards at the same offset, and every record in the log
/// at the end was sent.
#[test]
fn acks_1_reports_what_a_leaders_kill_9_lost_and_no_consumer_read_a_lost_record() {
    let Run {
        sent,
        deliveries,
        live,
        after,
        killed,
    } = failover_run("leader-acks", "1", false);
    let in_log: BTreeMap<(i32, i64), u64> = after
        .iter()
        .map(|r| ((r.partition, r.offset), r.number))
        .collect();
    let numbers_in_log: BTreeSet<u64> = after.iter().map(|r| r.number).collect();
    let lost: Vec<(&u64, &(i32, i64))> = deliveries
        .acknowledged
        .iter()
        .filter(|(n, at)| in_log.get(at) != Some(n))
        .collect();
    let duplicates = after.len() - numbers_in_log.len();
    eprintln!(
        "acks=1, killed node {killed}: sent {sent}, acknowledged {}, failed {}; lost {} \
         acknowledged records (first: {:?}); {duplicates} duplicates in the log",
        deliveries.acknowledged.len(),
        deliveries.failed.len(),
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    for r in &live {
        assert_eq!(
            in_log.get(&(r.partition, r.offset)),
            Some(&r.number),
            "the live consumer read {r:?}, which the log no longer holds"
        );
    }
    assert!(numbers_in_log.iter().all(|n| *n < sent));
    for partition in 0..PARTITIONS {
        let reads: Vec<Read> = after
            .iter()
            .filter(|r| r.partition == partition)
            .copied()
            .collect();
        assert!(
            reads.windows(2).all(|w| w[0].offset < w[1].offset),
            "{reads:?}"
        );
    }
}

/// The node that coordinates `group`, as FindCoordinator through node `via` answers.
fn coordinator(brokers: &Brokers, via: i32, group: &str) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let found = runtime.block_on(async {
            let client = client::Client::connect(client::ClientConfig::new(brokers.addr(via)))
                .await
                .map_err(|e| e.to_string())?;
            client::Admin::new(client)
                .find_coordinator(group)
                .await
                .map(|(c, _)| c.node_id)
                .map_err(|e| e.to_string())
        });
        match found {
            Ok(node) => return node,
            Err(e) => {
                assert!(Instant::now() < deadline, "no coordinator for {group}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Polls `consumer` until it has read `count` more records, each recorded in `reads`, and
/// its `position` (partition -> next offset to read) with them; commits the position
/// synchronously every 50 records, retrying a failed commit; returns the offsets of the last
/// commit that succeeded.
fn consume_and_commit(
    consumer: &BaseConsumer,
    count: usize,
    reads: &mut Vec<Read>,
    position: &mut BTreeMap<i32, i64>,
    brokers: &Brokers,
) -> BTreeMap<i32, i64> {
    let mut committed = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    let mut read = 0;
    loop {
        if read >= count || (read > 0 && read % 50 == 0) {
            let mut offsets = TopicPartitionList::new();
            for (p, o) in position.iter() {
                offsets
                    .add_partition_offset("grouped", *p, Offset::Offset(*o))
                    .unwrap();
            }
            match consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => committed.clone_from(position),
                Err(e) => {
                    eprintln!("commit of {position:?}: {e}; retrying");
                    assert!(Instant::now() < deadline, "{}", brokers.log_tails());
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            if read >= count {
                return committed;
            }
        }
        assert!(
            Instant::now() < deadline,
            "read {read} of {count}\n{}",
            brokers.log_tails()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let number = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                reads.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    number,
                });
                position.insert(m.partition(), m.offset() + 1);
                read += 1;
            }
            Some(Err(e)) => eprintln!("group consumer: {e}"),
            None => {}
        }
    }
}

/// The bug story: a commit acknowledged before `__consumer_offsets`' in-sync followers had it,
/// or a new coordinator that does not load the group from the replicated log, rewinds a group
/// when its coordinator dies. A group member commits, the coordinator is kill -9'd, the member
/// carries on (finding the new coordinator) and commits again; a new member of the group then
/// starts exactly at the last acknowledged commit, and between the two nothing was skipped.
#[test]
fn a_group_whose_coordinator_is_kill_9d_resumes_from_its_committed_offsets() {
    const GROUP: &str = "resumes";
    let dir = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(dir.path());
    create_topic(&brokers, "grouped");
    let bootstrap = brokers.bootstrap();
    {
        let producer: ThreadedProducer<Recorder> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("linger.ms", "5")
            .create_with_context(Recorder(Arc::default()))
            .unwrap();
        for n in 0..6_000u64 {
            let value = n.to_string();
            producer
                .send::<(), _>(
                    BaseRecord::with_opaque_to("grouped", Box::new(n))
                        .partition((n % PARTITIONS as u64) as i32)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }
    let member = |id: &str| -> BaseConsumer {
        let consumer: BaseConsumer = consumer_config(&bootstrap)
            .set("group.id", GROUP)
            .set("client.id", id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .create()
            .unwrap();
        consumer.subscribe(&["grouped"]).unwrap();
        consumer
    };
    let first = member("first");
    let (mut reads, mut position) = (Vec::new(), BTreeMap::new());
    let before = consume_and_commit(&first, 1_500, &mut reads, &mut position, &brokers);
    let killed = coordinator(&brokers, 1, GROUP);
    brokers.kill9(killed);
    let survivor = if killed == 1 { 2 } else { 1 };
    let after = consume_and_commit(&first, 1_500, &mut reads, &mut position, &brokers);
    let new_coordinator = coordinator(&brokers, survivor, GROUP);
    assert_ne!(new_coordinator, killed);
    eprintln!(
        "coordinator {killed} killed, now {new_coordinator}; committed {before:?}, then {after:?}"
    );
    // The member never skipped a record: per partition, its reads cover every offset from 0 to
    // its last commit (a rejoin may read some again, from the last commit).
    for (p, end) in &after {
        let offsets: BTreeSet<i64> = reads
            .iter()
            .filter(|r| r.partition == *p)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..*end).collect(), "partition {p}");
        assert!(before.get(p).copied().unwrap_or(0) <= *end);
    }
    // Closing without a commit: the group keeps the offsets committed after the failover.
    drop(first);

    let second = member("second");
    // What the group's (new) coordinator holds, through the new member.
    let mut asked = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        asked.add_partition("grouped", p);
    }
    let held: BTreeMap<i32, i64> = second
        .committed_offsets(asked, Duration::from_secs(30))
        .expect("OffsetFetch")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    assert_eq!(held, after, "the group holds the last acknowledged commit");
    // And the new member reads on from there (where records remain to read).
    let end = 6_000 / i64::from(PARTITIONS);
    let expected: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| (p, after.get(&p).copied().unwrap_or(0)))
        .filter(|(_, o)| *o < end)
        .collect();
    let mut resumed: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while resumed.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "the new member read only {resumed:?} of {expected:?}\n{}",
            brokers.log_tails()
        );
        if let Some(Ok(m)) = second.poll(Duration::from_millis(100)) {
            resumed.entry(m.partition()).or_insert(m.offset());
        }
    }
    assert_eq!(
        resumed, expected,
        "the new member starts at the last acknowledged commit"
    );
}

/// kafka-python's producer (`tests/kafka_python/failover_produce.py`).
const KAFKA_PYTHON_FAILOVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/kafka_python/failover_produce.py"
);

/// kafka-python, a second client implementation, through the same failover as librdkafka: an
/// idempotent acks=all producer while partition 0's leader is kill -9'd and restarted. Every
/// record it was told was written is in the log at its offset, once. Needs python3 with
/// kafka-python 2.x (`pip install "kafka-python<3"`); skipped, saying so, without it.
#[test]
fn kafka_pythons_idempotent_producer_loses_nothing_acknowledged_when_the_leader_is_kill_9d() {
    let has_kafka_python = std::process::Command::new("python3")
        .args(["-c", "import kafka"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_kafka_python {
        eprintln!("SKIPPED: python3 with kafka-python is not installed");
        return;
    }
    const TOPIC: &str = "python-failover";
    let dir = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(dir.path());
    create_topic(&brokers, TOPIC);
    let stop_file = dir.path().join("stop");
    let mut script = std::process::Command::new("python3")
        .arg(KAFKA_PYTHON_FAILOVER)
        .args([&brokers.bootstrap(), TOPIC, &PARTITIONS.to_string()])
        .arg(&stop_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    struct Lines(Arc<Mutex<Vec<String>>>);
    let lines = Lines(Arc::default());
    let reader = {
        let lines = lines.0.clone();
        let stdout = script.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                lines.lock().unwrap().push(line.unwrap());
            }
        })
    };
    let acknowledged_on_0 = |lines: &Lines| {
        lines
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("ack ") && l.split(' ').nth(2) == Some("0"))
            .count()
    };
    let more = |brokers: &Brokers, count: usize, what: &str| {
        let target = acknowledged_on_0(&lines) + count;
        let deadline = Instant::now() + WAIT;
        while acknowledged_on_0(&lines) < target {
            assert!(
                Instant::now() < deadline,
                "{what}: kafka-python's acknowledgements stopped: {:?}\n{}",
                lines
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>(),
                brokers.log_tails()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    more(&brokers, 200, "before the kill");
    let killed = await_isr(&brokers, 1, TOPIC, 3)[0];
    brokers.kill9(killed);
    let survivor = if killed == 1 { 2 } else { 1 };
    more(&brokers, 200, "from the new leader");
    brokers.spawn(killed);
    await_isr(&brokers, survivor, TOPIC, 3);
    more(&brokers, 200, "after the restart");
    std::fs::write(&stop_file, b"").unwrap();
    let status = script.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "the script failed: {status}");

    let lines = lines.0.lock().unwrap().clone();
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("err ")).collect();
    let acknowledged: BTreeMap<u64, (i32, i64)> = lines
        .iter()
        .filter_map(|l| {
            let mut words = l.strip_prefix("ack ")?.split(' ');
            let mut next = || words.next().unwrap().parse::<i64>().unwrap();
            Some((next() as u64, (next() as i32, next())))
        })
        .collect();
    let after = read_all(&brokers.bootstrap(), TOPIC);
    eprintln!(
        "kafka-python, killed node {killed}: {}, {} acknowledged, {} errors (first: {:?}); {} \
         records in the log",
        lines.last().unwrap(),
        acknowledged.len(),
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>(),
        after.len()
    );
    let in_log: BTreeMap<(i32, i64), u64> = after
        .iter()
        .map(|r| ((r.partition, r.offset), r.number))
        .collect();
    for (number, at) in &acknowledged {
        assert_eq!(in_log.get(at), Some(number), "acknowledged record lost");
    }
    let distinct: BTreeSet<u64> = after.iter().map(|r| r.number).collect();
    assert_eq!(distinct.len(), after.len(), "duplicates in the log");
}
