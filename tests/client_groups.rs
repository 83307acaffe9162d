//! Faultline's group consumer against a real broker on real sockets: members share a topic's
//! partitions and read every record once, a leaving member's partitions move to the others
//! with revoke and assign callbacks, committed offsets are where a new member resumes, and
//! every commit ends Committed, Failed or Unknown exactly as the module docs of
//! `client::group_consumer` promise.
//!
//! The bugs these guard against: an assignor that hands one partition to two members (records
//! read twice) or to none (records never read); a rejoin that forgets to start from the
//! committed offsets; an auto-commit lost on close; and, for the simulator's checkers, a commit
//! reported Failed that was in fact applied (its response was lost on the way back) or
//! Committed that was not. The outcome test puts a TCP proxy between client and broker (the
//! broker advertises the proxy, so the coordinator's connection runs through it too) that can
//! swallow responses or cut connections. The last test puts librdkafka's consumer in the same
//! group, once as the leader and once as a follower.
#![cfg(not(madsim))]
// Real sockets, an OS thread for librdkafka and wall-clock deadlines: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]

mod own_broker;
mod proxy;
use own_broker::TestBroker;

use proxy::{start_proxy, CUT_ON_REQUEST, PASS, SWALLOW_RESPONSES};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::*;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{ApiKey, GroupId, LeaveGroupRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::net::TcpListener;

/// The bound on every wait: generous for a slow shared machine, finite so a hang fails.
const WAIT: Duration = Duration::from_secs(30);

/// A broker whose new groups form at once (no `group.initial.rebalance.delay.ms`) unless
/// `initial_delay_ms` says otherwise; `advertise` overrides the address Metadata and
/// FindCoordinator hand out.
async fn start_broker_with(advertise: Option<String>, initial_delay_ms: i64) -> TestBroker {
    own_broker::start_broker_with(
        |c| c.group_initial_rebalance_delay_ms = initial_delay_ms,
        advertise,
    )
    .await
}

async fn start_broker() -> TestBroker {
    start_broker_with(None, 0).await
}

async fn client(addr: &str) -> Client {
    let mut config = ClientConfig::new(addr);
    config.connection.request_timeout = Duration::from_secs(10);
    Client::connect(config).await.unwrap()
}

async fn create_topic(addr: &str, topic: &str, partitions: i32) {
    Admin::new(client(addr).await)
        .create_topic(NewTopic::new(topic, partitions))
        .await
        .unwrap();
}

/// Writes `per_partition` records to every partition: values `"{partition}-{i}"`.
async fn produce(addr: &str, topic: &str, partitions: i32, per_partition: usize) {
    let producer = Producer::new(client(addr).await, ProducerConfig::default())
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let record = ProducerRecord::new(topic, format!("{p}-{i}")).with_partition(p);
            deliveries.push(producer.send(record).await);
        }
    }
    for delivery in deliveries {
        let outcome = delivery.await;
        assert!(outcome.is_acknowledged(), "{outcome:?}");
    }
}

/// Settings for quick tests: short sessions and heartbeats, short fetch waits, earliest reset.
fn config(group: &str) -> GroupConsumerConfig {
    let mut config = GroupConsumerConfig::new(group);
    config.session_timeout = Duration::from_secs(10);
    config.heartbeat_interval = Duration::from_millis(200);
    config.max_poll_interval = Duration::from_secs(20);
    config.enable_auto_commit = false;
    config.api_timeout = WAIT;
    config.fetch.max_wait = Duration::from_millis(100);
    config.fetch.auto_offset_reset = OffsetReset::Earliest;
    config
}

async fn consumer(addr: &str, config: GroupConsumerConfig, topic: &str) -> GroupConsumer {
    let mut consumer = GroupConsumer::new(client(addr).await, config);
    consumer.subscribe([topic]);
    consumer
}

fn partitions_of(assignment: &[(String, i32)]) -> BTreeSet<i32> {
    assignment.iter().map(|(_, p)| *p).collect()
}

/// Polls both consumers together (a rebalance needs every member to rejoin) until their
/// assignments are disjoint, non-empty and cover `0..total`; returns what they read meanwhile.
async fn poll_until_balanced(
    a: &mut GroupConsumer,
    b: &mut GroupConsumer,
    total: i32,
) -> Vec<ConsumerRecord> {
    let mut read = Vec::new();
    let deadline = now() + WAIT;
    loop {
        let (ra, rb) = tokio::join!(a.poll(), b.poll());
        read.extend(ra.unwrap());
        read.extend(rb.unwrap());
        let (sa, sb) = (
            partitions_of(&a.assignment()),
            partitions_of(&b.assignment()),
        );
        if !sa.is_empty()
            && !sb.is_empty()
            && sa.is_disjoint(&sb)
            && sa.union(&sb).copied().collect::<BTreeSet<_>>() == (0..total).collect()
        {
            return read;
        }
        assert!(now() < deadline, "never balanced: {sa:?} / {sb:?}");
    }
}

/// Polls until `consumer` read `count` records (or WAIT passes).
async fn read_records(consumer: &mut GroupConsumer, count: usize) -> Vec<ConsumerRecord> {
    let mut read = Vec::new();
    let deadline = now() + WAIT;
    while read.len() < count {
        read.extend(consumer.poll().await.unwrap());
        assert!(now() < deadline, "read only {} of {count}", read.len());
    }
    read
}

fn offsets(entries: &[(&str, i32, i64)]) -> BTreeMap<(String, i32), OffsetAndMetadata> {
    entries
        .iter()
        .map(|(t, p, o)| {
            (
                (t.to_string(), *p),
                OffsetAndMetadata {
                    offset: *o,
                    leader_epoch: None,
                    metadata: None,
                },
            )
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Revoked(Vec<(String, i32)>),
    Assigned(Vec<(String, i32)>),
    Lost(Vec<(String, i32)>),
}

/// A listener that keeps every callback.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

impl RebalanceListener for Events {
    fn on_partitions_revoked(&mut self, partitions: &[(String, i32)]) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Revoked(partitions.to_vec()));
    }
    fn on_partitions_assigned(&mut self, partitions: &[(String, i32)]) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Assigned(partitions.to_vec()));
    }
    fn on_partitions_lost(&mut self, partitions: &[(String, i32)]) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Lost(partitions.to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_split_four_partitions_and_together_read_every_record_once() {
    let b = start_broker().await;
    create_topic(&b.addr, "split", 4).await;
    let mut first = consumer(&b.addr, config("splitters"), "split").await;
    let mut second = consumer(&b.addr, config("splitters"), "split").await;
    let early = poll_until_balanced(&mut first, &mut second, 4).await;
    assert!(early.is_empty());
    assert_eq!(
        first.assignment().len(),
        2,
        "range over 4 partitions and 2 members"
    );
    let (m1, m2) = (first.group_metadata(), second.group_metadata());
    assert!(m1.generation_id >= 1 && m1.generation_id == m2.generation_id);
    assert!(!m1.member_id.is_empty() && m1.member_id != m2.member_id);

    produce(&b.addr, "split", 4, 25).await;
    let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let (owned_first, owned_second) = (
        partitions_of(&first.assignment()),
        partitions_of(&second.assignment()),
    );
    let deadline = now() + WAIT;
    while seen.len() < 100 {
        let (ra, rb) = tokio::join!(first.poll(), second.poll());
        for (records, owned) in [(ra.unwrap(), &owned_first), (rb.unwrap(), &owned_second)] {
            for r in records {
                assert!(owned.contains(&r.partition), "read outside its assignment");
                let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                assert_eq!(value, format!("{}-{}", r.partition, r.offset));
                let previous = seen.insert((r.partition, r.offset), value);
                assert!(
                    previous.is_none(),
                    "{}/{} read twice",
                    r.partition,
                    r.offset
                );
            }
        }
        assert!(now() < deadline, "read only {} of 100", seen.len());
    }
    assert_eq!(
        first.assignment().len() + second.assignment().len(),
        4,
        "no rebalance happened meanwhile"
    );
    first.close().await;
    second.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_member_closes_the_other_is_revoked_then_assigned_every_partition() {
    let b = start_broker().await;
    create_topic(&b.addr, "handover", 4).await;
    let mut leaving = consumer(&b.addr, config("handover-group"), "handover").await;
    let mut staying = consumer(&b.addr, config("handover-group"), "handover").await;
    let (leaving_events, staying_events) = (Events::default(), Events::default());
    leaving.set_rebalance_listener(leaving_events.clone());
    staying.set_rebalance_listener(staying_events.clone());
    poll_until_balanced(&mut leaving, &mut staying, 4).await;
    let before = staying.assignment();
    let leaving_had = leaving.assignment();
    assert_eq!(
        leaving_events.all().last(),
        Some(&Event::Assigned(leaving_had.clone()))
    );

    let report = leaving.close().await;
    assert!(report.left_group, "a dynamic member sends LeaveGroup");
    assert!(report.auto_commits.is_empty(), "auto-commit is off");
    assert_eq!(
        leaving_events.all().last(),
        Some(&Event::Revoked(leaving_had))
    );

    let deadline = now() + WAIT;
    while staying.assignment().len() < 4 {
        staying.poll().await.unwrap();
        assert!(
            now() < deadline,
            "never took over: {:?}",
            staying.assignment()
        );
    }
    let all: Vec<(String, i32)> = (0..4).map(|p| ("handover".to_string(), p)).collect();
    let events = staying_events.all();
    assert_eq!(
        events[events.len() - 2..],
        [Event::Revoked(before), Event::Assigned(all)],
        "eager: everything revoked before the new assignment; all events: {events:?}"
    );
    staying.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_resumes_right_after_the_offsets_its_group_committed() {
    let b = start_broker().await;
    create_topic(&b.addr, "resume", 2).await;
    produce(&b.addr, "resume", 2, 10).await;
    let mut reader = consumer(&b.addr, config("resumers"), "resume").await;
    assert_eq!(
        reader.commit_sync().await,
        CommitOutcome::Failed {
            error: CommitError::NotInGroup
        },
        "nothing to commit under before joining"
    );
    let read = read_records(&mut reader, 20).await;
    assert_eq!(read.len(), 20);
    assert_eq!(
        reader.positions(),
        BTreeMap::from([(("resume".into(), 0), 10), (("resume".into(), 1), 10)])
    );
    assert_eq!(reader.commit_sync().await, CommitOutcome::Committed);
    for p in 0..2 {
        let committed = reader.committed("resume", p).await.unwrap().unwrap();
        assert_eq!((committed.offset, committed.metadata), (10, None));
    }

    // Rewind with explicit offsets and metadata, asynchronously this time.
    let mut rewind = offsets(&[("resume", 0, 4), ("resume", 1, 7)]);
    rewind.get_mut(&("resume".to_string(), 1)).unwrap().metadata = Some("checkpoint 7".into());
    let handle = reader.commit_offsets_async(rewind);
    assert_eq!(handle.await, CommitOutcome::Committed);
    let committed = reader.committed("resume", 1).await.unwrap().unwrap();
    assert_eq!(
        (committed.offset, committed.metadata.as_deref()),
        (7, Some("checkpoint 7"))
    );
    // Async commits are applied in the order they were made: the last one stands.
    let handles: Vec<CommitHandle> = (1..=3)
        .map(|o| reader.commit_offsets_async(offsets(&[("resume", 0, o)])))
        .collect();
    for handle in handles {
        assert_eq!(handle.await, CommitOutcome::Committed);
    }
    assert_eq!(
        reader
            .committed("resume", 0)
            .await
            .unwrap()
            .map(|c| c.offset),
        Some(3)
    );
    assert!(reader
        .commit_offsets(offsets(&[("resume", 0, 4)]))
        .await
        .is_committed());
    let report = reader.close().await;
    assert!(report.auto_commits.is_empty(), "auto-commit is off");

    let mut resumed = consumer(&b.addr, config("resumers"), "resume").await;
    let read = read_records(&mut resumed, 9).await;
    let firsts: BTreeMap<i32, i64> = read.iter().rev().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(firsts, BTreeMap::from([(0, 4), (1, 7)]));
    assert_eq!(read.len(), 6 + 3, "offsets 4..10 and 7..10 once each");
    resumed.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_commits_the_positions_on_close() {
    let b = start_broker().await;
    create_topic(&b.addr, "autos", 3).await;
    produce(&b.addr, "autos", 3, 5).await;
    let mut auto = config("auto-committers");
    auto.enable_auto_commit = true;
    auto.auto_commit_interval = Duration::from_secs(3600); // only close() commits
    let mut reader = consumer(&b.addr, auto.clone(), "autos").await;
    read_records(&mut reader, 15).await;
    assert!(reader.take_auto_commits().is_empty());
    let report = reader.close().await;
    let expected: BTreeMap<(String, i32), i64> =
        (0..3).map(|p| (("autos".to_string(), p), 5)).collect();
    assert_eq!(
        report.auto_commits,
        vec![AutoCommit {
            offsets: expected,
            outcome: CommitOutcome::Committed
        }]
    );
    assert!(report.left_group);

    let mut next = consumer(&b.addr, auto, "autos").await;
    for p in 0..3 {
        assert_eq!(
            next.committed("autos", p).await.unwrap().map(|c| c.offset),
            Some(5)
        );
    }
    produce(&b.addr, "autos", 3, 1).await;
    let read = read_records(&mut next, 3).await;
    assert!(
        read.iter().all(|r| r.offset == 5),
        "only the new records: {read:?}"
    );
    next.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_a_stale_generation_is_failed_with_illegal_generation() {
    let b = start_broker().await;
    create_topic(&b.addr, "zombies", 2).await;
    let mut old = consumer(&b.addr, config("zombie-group"), "zombies").await;
    let deadline = now() + WAIT;
    while old.assignment().len() < 2 {
        old.poll().await.unwrap();
        assert!(now() < deadline);
    }
    let stale = old.group_metadata();

    // A second member makes the group move to a new generation.
    let mut newcomer = consumer(&b.addr, config("zombie-group"), "zombies").await;
    poll_until_balanced(&mut old, &mut newcomer, 2).await;
    assert!(old.group_metadata().generation_id > stale.generation_id);

    let outcome = old
        .commit_with_generation(&stale, offsets(&[("zombies", 0, 1)]))
        .await;
    assert_eq!(
        outcome,
        CommitOutcome::Failed {
            error: CommitError::Rejected {
                error: ResponseError::IllegalGeneration
            }
        }
    );
    let mut stranger = stale.clone();
    stranger.member_id = "nobody".into();
    stranger.generation_id = old.group_metadata().generation_id;
    assert_eq!(
        old.commit_with_generation(&stranger, offsets(&[("zombies", 0, 1)]))
            .await,
        CommitOutcome::Failed {
            error: CommitError::Rejected {
                error: ResponseError::UnknownMemberId
            }
        }
    );
    assert_eq!(old.committed("zombies", 0).await.unwrap(), None);

    // Metadata over the coordinator's limit is refused for that partition alone; the other
    // partition of the same commit is committed.
    let mut mixed = offsets(&[("zombies", 0, 1), ("zombies", 1, 1)]);
    mixed.get_mut(&("zombies".to_string(), 0)).unwrap().metadata = Some("x".repeat(5000));
    assert_eq!(
        old.commit_offsets(mixed).await,
        CommitOutcome::Failed {
            error: CommitError::PartlyCommitted {
                committed: vec![("zombies".to_string(), 1)],
                error: Box::new(CommitError::Rejected {
                    error: ResponseError::OffsetMetadataTooLarge
                })
            }
        }
    );
    assert_eq!(old.committed("zombies", 0).await.unwrap(), None);
    assert_eq!(
        old.committed("zombies", 1).await.unwrap().map(|c| c.offset),
        Some(1)
    );
    assert_eq!(
        old.commit_sync().await,
        CommitOutcome::Committed,
        "the current generation commits"
    );
    old.close().await;
    newcomer.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_members_interleave_the_partitions_in_member_id_order() {
    let b = start_broker().await;
    create_topic(&b.addr, "dealt", 4).await;
    let mut settings = config("dealers");
    settings.assignor = Assignor::RoundRobin;
    let mut a = consumer(&b.addr, settings.clone(), "dealt").await;
    let mut c = consumer(&b.addr, settings, "dealt").await;
    poll_until_balanced(&mut a, &mut c, 4).await;
    let (first, second) = if a.group_metadata().member_id < c.group_metadata().member_id {
        (&a, &c)
    } else {
        (&c, &a)
    };
    assert_eq!(partitions_of(&first.assignment()), [0, 2].into());
    assert_eq!(partitions_of(&second.assignment()), [1, 3].into());
    a.close().await;
    c.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_polling_is_left_behind_and_finds_its_partitions_lost() {
    let b = start_broker().await;
    create_topic(&b.addr, "slow", 4).await;
    let mut impatient = config("slowpokes");
    impatient.max_poll_interval = Duration::from_secs(2);
    let mut stalled = consumer(&b.addr, impatient, "slow").await;
    let mut steady = consumer(&b.addr, config("slowpokes"), "slow").await;
    let events = Events::default();
    stalled.set_rebalance_listener(events.clone());
    poll_until_balanced(&mut stalled, &mut steady, 4).await;
    let had = stalled.assignment();

    // Only `steady` polls: after max.poll.interval the stalled member's heartbeat task leaves.
    let deadline = now() + WAIT;
    while steady.assignment().len() < 4 {
        steady.poll().await.unwrap();
        assert!(now() < deadline, "the stalled member never left");
    }
    assert!(
        stalled.commit_sync().await
            == CommitOutcome::Failed {
                error: CommitError::NotInGroup
            },
        "a member that left commits nothing"
    );

    // Back to polling: the old partitions are lost (not revoked), then it rejoins.
    poll_until_balanced(&mut stalled, &mut steady, 4).await;
    let seen = events.all();
    let lost = seen.iter().position(|e| *e == Event::Lost(had.clone()));
    assert!(lost.is_some(), "{seen:?}");
    assert!(
        matches!(seen.last(), Some(Event::Assigned(p)) if !p.is_empty()),
        "{seen:?}"
    );
    stalled.close().await;
    steady.close().await;
    b.stop().await;
}

/// The bug story: a commit refused with UNKNOWN_MEMBER_ID said nothing to the member, which
/// went on fetching and returning records of partitions the group may already have handed to
/// another member, unable to commit any of them, until its next heartbeat heard the same
/// answer (group-swarm seed 40: a member's commits were refused for 400 ms while it polled
/// on). Java's consumer drops the generation on that refusal and rejoins at the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_commit_is_refused_as_unknown_loses_its_partitions_and_rejoins_at_the_next_poll(
) {
    let b = start_broker().await;
    create_topic(&b.addr, "evicted", 2).await;
    let mut settings = config("evictions");
    // No heartbeat before the commit: its answer alone must tell the member.
    settings.heartbeat_interval = Duration::from_secs(8);
    let mut member = consumer(&b.addr, settings, "evicted").await;
    let events = Events::default();
    member.set_rebalance_listener(events.clone());
    let deadline = now() + WAIT;
    while member.assignment().len() < 2 {
        member.poll().await.unwrap();
        assert!(now() < deadline, "never joined");
    }
    let had = member.assignment();
    let joined = member.group_metadata();

    // The coordinator forgets the member, as when its session expires: a LeaveGroup for it
    // from another connection.
    let connection = client(&b.addr).await.any_connection().await.unwrap();
    let group = GroupId(StrBytes::from_string("evictions".into()));
    let member_id = StrBytes::from_string(joined.member_id.clone());
    let request = if connection.version_for(ApiKey::LeaveGroup).unwrap() >= 3 {
        LeaveGroupRequest::default()
            .with_group_id(group)
            .with_members(vec![MemberIdentity::default().with_member_id(member_id)])
    } else {
        LeaveGroupRequest::default()
            .with_group_id(group)
            .with_member_id(member_id)
    };
    assert_eq!(connection.send(&request).await.unwrap().error_code, 0);

    assert_eq!(
        member.commit_offsets(offsets(&[("evicted", 0, 0)])).await,
        CommitOutcome::Failed {
            error: CommitError::Rejected {
                error: ResponseError::UnknownMemberId
            }
        }
    );
    let after = member.group_metadata();
    assert_eq!(
        (after.member_id.as_str(), after.generation_id),
        ("", -1),
        "the refusal drops the membership at once, as a heartbeat's would"
    );

    // The next polls: the partitions are lost (not revoked: nothing could be committed) and
    // the member rejoins under a new member id.
    while member.group_metadata().member_id.is_empty() || member.assignment().len() < 2 {
        member.poll().await.unwrap();
        assert!(now() < deadline, "never rejoined: {:?}", events.all());
    }
    let seen = events.all();
    assert_eq!(
        seen[seen.len() - 2..],
        [Event::Lost(had.clone()), Event::Assigned(had)],
        "{seen:?}"
    );
    assert_ne!(member.group_metadata().member_id, joined.member_id);
    member.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_does_not_leave_on_close_and_takes_its_partitions_back_on_return() {
    let b = start_broker().await;
    create_topic(&b.addr, "statics", 4).await;
    let mut settings = config("static-group");
    settings.group_instance_id = Some("instance-1".into());
    let mut fixed = consumer(&b.addr, settings.clone(), "statics").await;
    let mut dynamic = consumer(&b.addr, config("static-group"), "statics").await;
    poll_until_balanced(&mut fixed, &mut dynamic, 4).await;
    let (generation, had) = (fixed.group_metadata().generation_id, fixed.assignment());
    assert_eq!(dynamic.group_metadata().generation_id, generation);

    let report = fixed.close().await;
    assert!(!report.left_group, "a static member sends no LeaveGroup");
    let mut returned = consumer(&b.addr, settings, "statics").await;
    let deadline = now() + WAIT;
    while returned.assignment().is_empty() {
        let (r, d) = tokio::join!(returned.poll(), dynamic.poll());
        r.unwrap();
        d.unwrap();
        assert!(now() < deadline, "the static member never came back");
    }
    assert_eq!(returned.assignment(), had, "the same partitions");
    assert_eq!(
        (
            returned.group_metadata().generation_id,
            dynamic.group_metadata().generation_id
        ),
        (generation, generation),
        "no rebalance"
    );
    returned.close().await;
    dynamic.close().await;
    b.stop().await;
}

/// The first ambiguity behind an `Unknown`.
fn earliest(reason: &CommitUnknownReason) -> &CommitUnknownReason {
    match reason {
        CommitUnknownReason::RetriedAfterAmbiguous { earlier, .. } => earliest(earlier),
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_response_is_lost_or_whose_connection_is_cut_is_unknown() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap().to_string();
    let b = start_broker_with(Some(proxy_addr.clone()), 0).await;
    let mode = Arc::new(AtomicU8::new(PASS));
    start_proxy(proxy, b.addr.clone(), Arc::clone(&mode)).await;
    create_topic(&b.addr, "fragile", 1).await;

    let mut client_config = ClientConfig::new(proxy_addr);
    client_config.connection.request_timeout = Duration::from_millis(500);
    let mut settings = config("fragile-group");
    // No heartbeat races the commit for the coordinator's connection; retries stop at 2 s.
    settings.heartbeat_interval = Duration::from_secs(20);
    settings.session_timeout = Duration::from_secs(60);
    settings.max_poll_interval = Duration::from_secs(60);
    settings.api_timeout = Duration::from_secs(2);
    let mut consumer = GroupConsumer::new(Client::connect(client_config).await.unwrap(), settings);
    consumer.subscribe(["fragile"]);
    let deadline = now() + WAIT;
    while consumer.assignment().is_empty() || consumer.position("fragile", 0).is_none() {
        consumer.poll().await.unwrap();
        assert!(now() < deadline);
    }
    assert!(consumer
        .commit_offsets(offsets(&[("fragile", 0, 1)]))
        .await
        .is_committed());

    // The coordinator applies the commit; the answer is lost: Unknown, and it is there.
    mode.store(SWALLOW_RESPONSES, Ordering::SeqCst);
    let outcome = consumer.commit_offsets(offsets(&[("fragile", 0, 2)])).await;
    let CommitOutcome::Unknown { reason } = &outcome else {
        panic!("expected Unknown, got {outcome:?}");
    };
    assert!(
        matches!(earliest(reason), CommitUnknownReason::Timeout(_)),
        "{reason:?}"
    );
    mode.store(PASS, Ordering::SeqCst);
    assert_eq!(
        consumer
            .committed("fragile", 0)
            .await
            .unwrap()
            .map(|c| c.offset),
        Some(2),
        "the unacknowledged commit was applied"
    );

    // The connection dies with the commit on its way: Unknown (here it never arrived).
    mode.store(CUT_ON_REQUEST, Ordering::SeqCst);
    let outcome = consumer.commit_offsets(offsets(&[("fragile", 0, 3)])).await;
    let CommitOutcome::Unknown { reason } = &outcome else {
        panic!("expected Unknown, got {outcome:?}");
    };
    assert!(
        matches!(earliest(reason), CommitUnknownReason::ConnectionLost(_)),
        "{reason:?}"
    );
    mode.store(PASS, Ordering::SeqCst);
    assert_eq!(
        consumer
            .committed("fragile", 0)
            .await
            .unwrap()
            .map(|c| c.offset),
        Some(2),
        "the cut commit never arrived"
    );

    // The same member commits fine once the network is back.
    assert!(consumer
        .commit_offsets(offsets(&[("fragile", 0, 3)]))
        .await
        .is_committed());
    consumer.close().await;
    b.stop().await;
}

/// A librdkafka group consumer on its own thread, reporting its assignment and records.
struct RdkafkaMember {
    assigned: Arc<Mutex<BTreeSet<i32>>>,
    records: Arc<Mutex<Vec<(i32, i64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RdkafkaMember {
    fn start(bootstrap: &str, group: &str, topic: &str) -> RdkafkaMember {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("group.id", group)
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "200")
            .set("fetch.wait.max.ms", "100")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("rdkafka consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let assigned = Arc::new(Mutex::new(BTreeSet::new()));
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, r, s) = (
            Arc::clone(&assigned),
            Arc::clone(&records),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                    let message = message.expect("rdkafka message");
                    r.lock()
                        .unwrap()
                        .push((message.partition(), message.offset()));
                }
                let now: BTreeSet<i32> = consumer
                    .assignment()
                    .expect("assignment")
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                *a.lock().unwrap() = now;
            }
            consumer.unsubscribe();
            drop(consumer); // close(): LeaveGroup
        });
        RdkafkaMember {
            assigned,
            records,
            stop,
            thread: Some(thread),
        }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.assigned.lock().unwrap().clone()
    }

    fn records(&self) -> Vec<(i32, i64)> {
        self.records.lock().unwrap().clone()
    }

    /// Closes the consumer (LeaveGroup) and waits for its thread, off the runtime's threads.
    async fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("running");
        let deadline = now() + WAIT;
        while !thread.is_finished() {
            assert!(now() < deadline, "librdkafka consumer did not close");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        thread.join().expect("rdkafka thread");
    }
}

/// Polls `ours` until it holds `mine` and librdkafka holds `theirs`.
async fn poll_until_split(
    ours: &mut GroupConsumer,
    rdkafka: &RdkafkaMember,
    mine: &BTreeSet<i32>,
    theirs: &BTreeSet<i32>,
) -> Vec<ConsumerRecord> {
    let mut read = Vec::new();
    let deadline = now() + WAIT;
    while partitions_of(&ours.assignment()) != *mine || rdkafka.assigned() != *theirs {
        read.extend(ours.poll().await.unwrap());
        assert!(
            now() < deadline,
            "never split as expected: ours {:?}, librdkafka's {:?}",
            ours.assignment(),
            rdkafka.assigned()
        );
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rdkafka_consumer_and_a_faultline_consumer_share_partitions_with_the_range_assignor() {
    // Kafka's default initial delay, as a real deployment has it.
    let b = start_broker_with(None, 3_000).await;
    create_topic(&b.addr, "mixed", 4).await;
    let group = "mixed-group";
    // Member ids start with the client id: "faultline-..." sorts before "rdkafka-...", so range
    // gives us partitions 0 and 1 whichever client leads.
    let (mine, theirs): (BTreeSet<i32>, BTreeSet<i32>) = ([0, 1].into(), [2, 3].into());

    // librdkafka joins first and leads: it reads our subscription, we read its assignment.
    let first = RdkafkaMember::start(&b.addr, group, "mixed");
    let deadline = now() + WAIT;
    while first.assigned().len() < 4 {
        assert!(now() < deadline, "librdkafka never got the partitions");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ours = consumer(&b.addr, config(group), "mixed").await;
    let early = poll_until_split(&mut ours, &first, &mine, &theirs).await;
    assert!(early.is_empty());
    produce(&b.addr, "mixed", 4, 10).await;
    let mut read: Vec<(i32, i64)> = Vec::new();
    let deadline = now() + WAIT;
    while read.len() + first.records().len() < 40 {
        read.extend(
            ours.poll()
                .await
                .unwrap()
                .iter()
                .map(|r| (r.partition, r.offset)),
        );
        assert!(now() < deadline, "records missing");
    }
    let mut all: Vec<(i32, i64)> = read.iter().chain(first.records().iter()).copied().collect();
    all.sort();
    let expected: Vec<(i32, i64)> = (0..4).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    assert_eq!(
        all, expected,
        "every record read exactly once between the two"
    );
    assert!(read.iter().all(|(p, _)| mine.contains(p)));

    // librdkafka leaves; we take everything and lead; a new librdkafka member reads our
    // assignment.
    first.close().await;
    let deadline = now() + WAIT;
    while ours.assignment().len() < 4 {
        ours.poll().await.unwrap();
        assert!(now() < deadline, "never took over");
    }
    let second = RdkafkaMember::start(&b.addr, group, "mixed");
    poll_until_split(&mut ours, &second, &mine, &theirs).await;
    second.close().await;
    ours.close().await;
    b.stop().await;
}
