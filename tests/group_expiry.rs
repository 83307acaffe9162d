//! Committed offsets expire as KIP-211 says: an empty group's offsets go
//! `offsets.retention.minutes` after it became empty, never while members remain, and the
//! expiry is durable (tombstones in `__consumer_offsets`, gone after a restart too). Group
//! membership is stored too: a restarted broker brings a group back in its stored generation. The broker
//! runs on a [`ManualClock`], so days pass in a test; expiry is called as the server's
//! maintenance loop calls it.
#![cfg(not(madsim))]

use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::{Clock, ManualClock};
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use broker::group::machine::{GroupState, JoinRequest, SyncRequest};
use broker::group::offsets::{CommittedOffset, OffsetKey};
use bytes::Bytes;

const MINUTE: i64 = 60_000;
const RETENTION_MINUTES: i64 = 60;

async fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Arc<Broker> {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        group_initial_rebalance_delay_ms: 0,
        offsets_retention_minutes: RETENTION_MINUTES,
        ..BrokerConfig::default()
    };
    Broker::open(config, Arc::new(FileDisk::new()), clock.clone())
        .await
        .expect("broker opens")
}

/// A ConsumerProtocolSubscription v0 naming `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = 0i16.to_be_bytes().to_vec();
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes()); // no user data
    Bytes::from(out)
}

/// Joins `group` as its only member and syncs (the assignment stored, as SyncGroup does), so
/// the group is Stable; returns the member id and generation.
async fn join_alone(broker: &Arc<Broker>, group: &str, topics: &[&str]) -> (String, i32) {
    let request = JoinRequest {
        member_id: String::new(),
        group_instance_id: None,
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 30 * MINUTE as i32,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(topics))],
        require_known_member_id: false,
    };
    // The coordinator stores the assignments in `__consumer_offsets`, created on first use.
    broker.offsets_topic().await.expect("offsets topic");
    let result = broker
        .groups()
        .join(group, request, 7)
        .await
        .expect("join ok");
    let generation = result.generation_id;
    let sync = SyncRequest {
        member_id: result.member_id.clone(),
        generation_id: generation,
        ..SyncRequest::default()
    };
    broker
        .groups()
        .sync(group, sync)
        .await
        .expect("sync ok once stored");
    (result.member_id, generation)
}

async fn commit(broker: &Arc<Broker>, group: &str, topic: &str, offset: i64) {
    broker.offsets_topic().await.expect("offsets topic");
    let key = OffsetKey {
        group: group.into(),
        topic: topic.into(),
        partition: 0,
    };
    let value = CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: None,
        commit_timestamp_ms: broker.clock().now_ms(),
    };
    broker
        .groups()
        .write(group, vec![(key, Some(value))])
        .await
        .expect("commit is durable");
}

fn committed(broker: &Arc<Broker>, group: &str, topic: &str) -> Option<i64> {
    let key = OffsetKey {
        group: group.into(),
        topic: topic.into(),
        partition: 0,
    };
    broker
        .groups()
        .committed(&key)
        .expect("coordinated here")
        .map(|c| c.offset)
}

fn state(broker: &Arc<Broker>, group: &str) -> Option<GroupState> {
    broker
        .groups()
        .read_group(group, |g| g.state)
        .expect("coordinated here")
}

#[tokio::test]
async fn offsets_never_expire_while_members_remain_and_expire_a_retention_after_the_group_empties()
{
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let broker = open(dir.path(), &clock).await;
    let (member, generation) = join_alone(&broker, "g", &["orders"]).await;
    commit(&broker, "g", "orders", 42).await;

    // Three retention periods pass with the member alive (heartbeating) and no new commit.
    for _ in 0..(3 * RETENTION_MINUTES / 10) {
        clock.advance_ms(10 * MINUTE);
        broker
            .groups()
            .heartbeat("g", &member, None, generation)
            .expect("member still in the group");
        broker.expire_offsets().await;
        assert_eq!(committed(&broker, "g", "orders"), Some(42));
    }

    let left = broker
        .groups()
        .leave("g", vec![(member.clone(), None)])
        .expect("coordinated here")
        .await;
    assert_eq!(
        left,
        vec![Ok(())],
        "answered once the empty group is stored"
    );
    assert_eq!(state(&broker, "g"), Some(GroupState::Empty));
    clock.advance_ms(RETENTION_MINUTES * MINUTE - 1);
    broker.expire_offsets().await;
    assert_eq!(
        committed(&broker, "g", "orders"),
        Some(42),
        "kept until a whole retention period after the group became empty"
    );
    clock.advance_ms(1);
    broker.expire_offsets().await;
    assert_eq!(committed(&broker, "g", "orders"), None);
    assert_eq!(
        state(&broker, "g"),
        None,
        "an empty group with no offsets is removed"
    );

    drop(broker);
    let reopened = open(dir.path(), &clock).await;
    assert_eq!(
        committed(&reopened, "g", "orders"),
        None,
        "the expiry is durable"
    );
    assert!(!reopened.groups().group_exists("g").unwrap());
}

#[tokio::test]
async fn a_stable_group_loses_only_the_offsets_of_topics_it_no_longer_subscribes_to() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let broker = open(dir.path(), &clock).await;
    // A standalone commit (generation -1, no members) for a topic the group later drops.
    commit(&broker, "g", "old-topic", 5).await;
    let (member, generation) = join_alone(&broker, "g", &["orders"]).await;
    commit(&broker, "g", "orders", 9).await;
    clock.advance_ms(RETENTION_MINUTES * MINUTE);
    broker
        .groups()
        .heartbeat("g", &member, None, generation)
        .unwrap();
    broker.expire_offsets().await;
    assert_eq!(committed(&broker, "g", "old-topic"), None);
    assert_eq!(
        committed(&broker, "g", "orders"),
        Some(9),
        "a subscribed topic's offset stays however old"
    );
    assert_eq!(state(&broker, "g"), Some(GroupState::Stable));
}

#[tokio::test]
async fn a_restarted_broker_keeps_the_stored_members_until_their_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let broker = open(dir.path(), &clock).await;
    let (member, generation) = join_alone(&broker, "g", &["orders"]).await;
    commit(&broker, "g", "orders", 3).await;
    // The member lives on past the retention without committing; then the broker restarts.
    clock.advance_ms(2 * RETENTION_MINUTES * MINUTE);
    drop(broker);
    let broker = open(dir.path(), &clock).await;
    assert_eq!(
        state(&broker, "g"),
        Some(GroupState::Stable),
        "the stored generation is back"
    );
    assert_eq!(
        broker.groups().heartbeat("g", &member, None, generation),
        Ok(()),
        "the member carries on in its generation without a rebalance"
    );
    broker.expire_offsets().await;
    assert_eq!(committed(&broker, "g", "orders"), Some(3), "members remain");

    // The member never comes back: its session (30 min) expires, the group empties, and the
    // offsets go a retention after that, not before.
    clock.advance_ms(31 * MINUTE);
    broker.groups().tick(clock.now_ms()).await;
    assert_eq!(state(&broker, "g"), Some(GroupState::Empty));
    clock.advance_ms(RETENTION_MINUTES * MINUTE - 1);
    broker.expire_offsets().await;
    assert_eq!(committed(&broker, "g", "orders"), Some(3));
    clock.advance_ms(1);
    broker.expire_offsets().await;
    assert_eq!(committed(&broker, "g", "orders"), None);
}

#[tokio::test]
async fn a_deleted_group_stays_deleted_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let broker = open(dir.path(), &clock).await;
    let (member, _) = join_alone(&broker, "g", &["orders"]).await;
    commit(&broker, "g", "orders", 3).await;
    let left = broker
        .groups()
        .leave("g", vec![(member.clone(), None)])
        .expect("coordinated here")
        .await;
    assert_eq!(
        left,
        vec![Ok(())],
        "answered once the empty group is stored"
    );
    broker
        .groups()
        .delete_group("g")
        .expect("an empty group deletes")
        .await
        .expect("its tombstones are durable");
    drop(broker);
    let broker = open(dir.path(), &clock).await;
    assert!(!broker.groups().group_exists("g").unwrap());
    assert_eq!(committed(&broker, "g", "orders"), None);
}
