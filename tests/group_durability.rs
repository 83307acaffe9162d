//! What a restart brings back of a consumer group, and in what order a group's decisions reach
//! `__consumer_offsets`, through the wire protocol against a broker on the faulty disk (clean
//! restarts, and power losses that keep only what was synced).
//!
//! The bug stories:
//! - A consumer committed and closed (LeaveGroup); `groups list` showed the group Empty. After a
//!   restart (clean or kill -9) the group was Stable again with the departed member for a whole
//!   session timeout, and `groups delete` and `reset-offsets --execute` were refused meanwhile:
//!   the emptied group was stored by a maintenance tick, not before the LeaveGroup was answered.
//!   The same held for a group emptied by session expiry and for a static member's takeover.
//! - OffsetCommit checked the generation, released the coordinator's lock and only then
//!   appended. A static member's old incarnation committed; before that commit reached the
//!   log, the member's new incarnation took over, read the group's offsets (the older ones) and
//!   went on from there, and then the fenced incarnation's commit landed. Kafka checks and
//!   appends under the group lock, so the takeover comes after the commit in the log and the new
//!   incarnation reads it.
//! - A bit flipped at rest in one commit's batch of `__consumer_offsets`: recovery stepped over
//!   the damaged batch and kept every batch after it, but the coordinator's replay skipped the
//!   rest of the segment, so OffsetFetch answered the commit before the damage and the
//!   consumer read again what it had already processed.
#![cfg(not(madsim))]

mod in_process;

use in_process::call;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use broker::broker::Broker;
use broker::clock::{Clock, ManualClock};
use broker::config::BrokerConfig;
use broker::disk::{Disk, DiskFile, OpenMode};
use bytes::Bytes;
use chaos::{FaultyDisk, FaultyDiskConfig};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;

const T0: i64 = 1_700_000_000_000;
const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const SESSION_MS: i32 = 30_000;

/// A disk whose appends to `__consumer_offsets` can be held, to stop a write between its
/// decision and the log.
#[derive(Debug, Clone)]
struct HoldingDisk {
    inner: FaultyDisk,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    closed: AtomicBool,
    held: AtomicUsize,
    opened: Notify,
}

impl Gate {
    async fn pass(&self) {
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !self.closed.load(Ordering::Acquire) {
                return;
            }
            self.held.fetch_add(1, Ordering::AcqRel);
            opened.await;
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn open(&self) {
        self.closed.store(false, Ordering::Release);
        self.opened.notify_waiters();
    }
}

#[derive(Debug)]
struct HoldingFile {
    inner: Arc<dyn DiskFile>,
    gate: Option<Arc<Gate>>,
}

#[async_trait]
impl DiskFile for HoldingFile {
    async fn append(&self, buf: &[u8]) -> std::io::Result<u64> {
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        self.inner.append(buf).await
    }
    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(pos, buf).await
    }
    async fn sync(&self) -> std::io::Result<()> {
        self.inner.sync().await
    }
    async fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.inner.truncate(len).await
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

#[async_trait]
impl Disk for HoldingDisk {
    async fn lock_dir(
        &self,
        dir: &Path,
    ) -> Result<broker::disk::DirLock, broker::disk::LockDirError> {
        self.inner.lock_dir(dir).await
    }
    async fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir).await
    }
    async fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn DiskFile>> {
        let inner = self.inner.open(path, mode).await?;
        let held = path.to_string_lossy().contains("__consumer_offsets")
            && path.extension().is_some_and(|e| e == "log");
        Ok(Arc::new(HoldingFile {
            inner,
            gate: held.then(|| Arc::clone(&self.gate)),
        }))
    }
    async fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir).await
    }
    async fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path).await
    }
    async fn remove_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(dir).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir).await
    }
}

/// One broker's data directory on a faulty disk, reopened at will.
struct Node {
    disk: HoldingDisk,
    clock: Arc<ManualClock>,
    config: BrokerConfig,
}

impl Node {
    fn new() -> Node {
        Node {
            disk: HoldingDisk {
                inner: FaultyDisk::new(11, FaultyDiskConfig::default()),
                gate: Arc::default(),
            },
            clock: Arc::new(ManualClock::new(T0)),
            config: BrokerConfig {
                data_dir: PathBuf::from("/data"),
                group_initial_rebalance_delay_ms: 0,
                ..BrokerConfig::default()
            },
        }
    }

    async fn open(&self) -> Arc<Broker> {
        Broker::open(
            self.config.clone(),
            Arc::new(self.disk.clone()),
            self.clock.clone(),
        )
        .await
        .expect("broker opens")
    }

    /// A broker with topic `orders` (one partition).
    async fn start(&self) -> Arc<Broker> {
        let broker = self.open().await;
        broker
            .create_topic(TOPIC, 1, -1, &[], false)
            .await
            .expect("topic created");
        broker
    }

    /// A clean stop (SIGTERM) and a fresh start on the same disk.
    async fn restart_cleanly(&self, broker: Arc<Broker>) -> Arc<Broker> {
        broker.shutdown().await;
        drop(broker);
        self.open().await
    }

    /// Power loss (kill -9 and worse: unsynced bytes are gone) and a fresh start.
    async fn restart_after_power_loss(&self, broker: Arc<Broker>) -> Arc<Broker> {
        drop(broker);
        self.disk.inner.crash();
        self.open().await
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A ConsumerProtocolSubscription v0 naming `orders`.
fn subscription() -> Bytes {
    let mut out = 0i16.to_be_bytes().to_vec();
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
    out.extend_from_slice(TOPIC.as_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

/// A member as the group sees it.
#[derive(Clone, Debug)]
struct Member {
    id: String,
    instance: Option<String>,
    generation: i32,
}

/// JoinGroup v5 (with the KIP-394 round trip for a dynamic member) and, as the group's only
/// member and leader, SyncGroup: the member is Stable in its generation.
async fn join_and_sync(broker: &Arc<Broker>, instance: Option<&str>) -> Member {
    let joined = join(broker, "", instance).await;
    assert_eq!(joined.error_code, 0, "join: {joined:?}");
    let member = Member {
        id: joined.member_id.to_string(),
        instance: instance.map(str::to_string),
        generation: joined.generation_id,
    };
    assert_eq!(joined.leader, joined.member_id, "alone, it leads");
    let synced = sync(broker, &member).await;
    assert_eq!(synced.error_code, 0, "sync: {synced:?}");
    member
}

async fn join(broker: &Arc<Broker>, member_id: &str, instance: Option<&str>) -> JoinGroupResponse {
    let request = |member_id: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_session_timeout_ms(SESSION_MS)
            .with_rebalance_timeout_ms(60_000)
            .with_member_id(s(member_id))
            .with_group_instance_id(instance.map(s))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription())])
    };
    let response: JoinGroupResponse = call(broker, ApiKey::JoinGroup, 5, &request(member_id)).await;
    if response.error_code == ResponseError::MemberIdRequired.code() {
        return call(broker, ApiKey::JoinGroup, 5, &request(&response.member_id)).await;
    }
    response
}

/// SyncGroup v3 from the leader, assigning it the one partition.
async fn sync(broker: &Arc<Broker>, member: &Member) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id(member.generation)
        .with_member_id(s(&member.id))
        .with_group_instance_id(member.instance.as_deref().map(s))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member.id))
            .with_assignment(Bytes::from_static(b"orders-0"))]);
    call(broker, ApiKey::SyncGroup, 3, &request).await
}

/// OffsetCommit v7 of partition 0; returns its error code.
async fn commit(broker: &Arc<Broker>, member: &Member, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(member.generation)
        .with_member_id(s(&member.id))
        .with_group_instance_id(member.instance.as_deref().map(s))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)])]);
    let response: OffsetCommitResponse = call(broker, ApiKey::OffsetCommit, 7, &request).await;
    response.topics[0].partitions[0].error_code
}

/// OffsetFetch v7 of partition 0: the committed offset (-1 if none).
async fn committed(broker: &Arc<Broker>) -> i64 {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![0])]));
    let response: OffsetFetchResponse = call(broker, ApiKey::OffsetFetch, 7, &request).await;
    assert_eq!(response.error_code, 0);
    response.topics[0].partitions[0].committed_offset
}

/// LeaveGroup v3 of one member; returns the member's error code.
async fn leave(broker: &Arc<Broker>, member: &Member) -> i16 {
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_members(vec![MemberIdentity::default()
            .with_member_id(s(&member.id))
            .with_group_instance_id(member.instance.as_deref().map(s))]);
    let response: LeaveGroupResponse = call(broker, ApiKey::LeaveGroup, 3, &request).await;
    assert_eq!(response.error_code, 0);
    response.members[0].error_code
}

async fn heartbeat(broker: &Arc<Broker>, member: &Member) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id(member.generation)
        .with_member_id(s(&member.id))
        .with_group_instance_id(member.instance.as_deref().map(s));
    let response: HeartbeatResponse = call(broker, ApiKey::Heartbeat, 3, &request).await;
    response.error_code
}

/// DescribeGroups v4: (state, member ids).
async fn describe(broker: &Arc<Broker>) -> (String, Vec<String>) {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]);
    let response: DescribeGroupsResponse = call(broker, ApiKey::DescribeGroups, 4, &request).await;
    let group = &response.groups[0];
    (
        group.group_state.to_string(),
        group
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect(),
    )
}

/// DeleteGroups v2: the group's error code.
async fn delete(broker: &Arc<Broker>) -> i16 {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(GROUP))]);
    let response: DeleteGroupsResponse = call(broker, ApiKey::DeleteGroups, 2, &request).await;
    response.results[0].error_code
}

/// Join, commit, leave; the group is Empty; then `restart`; the group must still be Empty, with
/// its committed offset, and delete at once.
async fn a_departed_consumer_stays_gone_after(restart: &str) {
    let node = Node::new();
    let broker = node.start().await;
    let member = join_and_sync(&broker, None).await;
    assert_eq!(commit(&broker, &member, 42).await, 0);
    assert_eq!(leave(&broker, &member).await, 0);
    assert_eq!(describe(&broker).await, ("Empty".to_string(), vec![]));

    let broker = match restart {
        "clean" => node.restart_cleanly(broker).await,
        _ => node.restart_after_power_loss(broker).await,
    };
    assert_eq!(
        describe(&broker).await,
        ("Empty".to_string(), vec![]),
        "no ghost of the departed member after a {restart} restart"
    );
    assert_eq!(committed(&broker).await, 42);
    assert_eq!(delete(&broker).await, 0, "an empty group deletes at once");
    assert_eq!(committed(&broker).await, -1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_that_committed_and_left_is_not_back_after_a_clean_restart() {
    a_departed_consumer_stays_gone_after("clean").await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_that_committed_and_left_is_not_back_after_a_power_loss() {
    a_departed_consumer_stays_gone_after("unclean").await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_member_removed_by_session_expiry_is_not_back_after_a_power_loss() {
    let node = Node::new();
    let broker = node.start().await;
    let member = join_and_sync(&broker, None).await;
    assert_eq!(commit(&broker, &member, 7).await, 0);
    // The member dies without a word; its session runs out and the coordinator's timer acts
    // (stepped here as its task does, and waited for).
    node.clock.advance_ms(i64::from(SESSION_MS));
    broker.groups().tick(node.clock.now_ms()).await;
    assert_eq!(describe(&broker).await, ("Empty".to_string(), vec![]));

    let broker = node.restart_after_power_loss(broker).await;
    assert_eq!(describe(&broker).await, ("Empty".to_string(), vec![]));
    assert_eq!(delete(&broker).await, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_static_members_takeover_survives_a_power_loss_and_its_old_id_stays_fenced() {
    let node = Node::new();
    let broker = node.start().await;
    let first = join_and_sync(&broker, Some("instance-1")).await;
    // The consumer restarts: same instance id, no member id. It takes over without a rebalance.
    let joined = join(&broker, "", Some("instance-1")).await;
    assert_eq!(joined.error_code, 0);
    let second = Member {
        id: joined.member_id.to_string(),
        ..first.clone()
    };
    assert_ne!(second.id, first.id);
    assert_eq!(joined.generation_id, first.generation, "no rebalance");

    let broker = node.restart_after_power_loss(broker).await;
    assert_eq!(
        heartbeat(&broker, &second).await,
        0,
        "the takeover is stored"
    );
    assert_eq!(
        heartbeat(&broker, &first).await,
        ResponseError::FencedInstanceId.code(),
        "the old incarnation stays fenced"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_fenced_members_commit_reaches_the_log_before_its_replacement_reads_the_offsets() {
    let node = Node::new();
    let broker = node.start().await;
    let first = join_and_sync(&broker, Some("instance-1")).await;
    assert_eq!(commit(&broker, &first, 3).await, 0);

    // The old incarnation commits 10; its append is held on the disk.
    node.disk.gate.closed.store(true, Ordering::Release);
    let old_commit = tokio::spawn({
        let (broker, first) = (Arc::clone(&broker), first.clone());
        async move { commit(&broker, &first, 10).await }
    });
    while node.disk.gate.held.load(Ordering::Acquire) == 0 {
        tokio::task::yield_now().await;
    }

    // Its replacement takes over the instance, syncs and reads where to start from.
    let replacement = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move {
            let joined = join(&broker, "", Some("instance-1")).await;
            assert_eq!(joined.error_code, 0);
            let second = Member {
                id: joined.member_id.to_string(),
                instance: Some("instance-1".into()),
                generation: joined.generation_id,
            };
            let synced = sync(&broker, &second).await;
            assert_eq!(synced.error_code, 0);
            committed(&broker).await
        }
    });
    // Until the replacement has read the offsets, or its takeover waits for the log behind the
    // held commit: then let the disk go.
    while !replacement.is_finished() && broker.groups().in_flight().len() < 2 {
        tokio::task::yield_now().await;
    }
    node.disk.gate.open();
    assert_eq!(old_commit.await.unwrap(), 0, "decided before the takeover");
    assert_eq!(
        replacement.await.unwrap(),
        10,
        "the replacement starts after the commit its predecessor made before it was fenced"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_commit_accepted_before_its_group_is_deleted_is_deleted_with_it() {
    let node = Node::new();
    let broker = node.start().await;
    // A consumer that assigns itself makes the group's first commit (generation -1, no
    // members); the append is held on the disk.
    let standalone = Member {
        id: String::new(),
        instance: None,
        generation: -1,
    };
    node.disk.gate.closed.store(true, Ordering::Release);
    let held = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move { commit(&broker, &standalone, 5).await }
    });
    while node.disk.gate.held.load(Ordering::Acquire) == 0 {
        tokio::task::yield_now().await;
    }
    // `groups delete` comes after the commit was accepted: it must take that commit with it.
    let deleted = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move { delete(&broker).await }
    });
    while !deleted.is_finished() && broker.groups().in_flight().len() < 2 {
        tokio::task::yield_now().await;
    }
    node.disk.gate.open();
    assert_eq!(held.await.unwrap(), 0);
    assert_eq!(deleted.await.unwrap(), 0);
    assert_eq!(committed(&broker).await, -1, "nothing of the group is left");
    let broker = node.restart_after_power_loss(broker).await;
    assert_eq!(committed(&broker).await, -1, "not after a restart either");
}

/// The position in the segment file `path` of the batch whose base offset is `base_offset`.
async fn batch_position(disk: &FaultyDisk, path: &Path, base_offset: u64) -> u64 {
    let bytes = broker::disk::read_file(disk, path).await.unwrap();
    let mut pos = 0;
    while pos < bytes.len() {
        let header = broker::log::batch::BatchHeader::parse(&bytes[pos..]).unwrap();
        if header.base_offset as u64 == base_offset {
            return pos as u64;
        }
        pos += header.size();
    }
    panic!("no batch at offset {base_offset} in {}", path.display());
}

#[tokio::test]
async fn a_commit_stored_after_a_damaged_commit_of_the_same_segment_is_served_after_a_restart() {
    let node = Node::new();
    let broker = node.start().await;
    let member = join_and_sync(&broker, None).await;
    let index = broker.groups().partition_for(GROUP);
    let offsets = broker
        .partition(broker::group::offsets::OFFSETS_TOPIC, index)
        .expect("the group's offsets partition");
    assert_eq!(commit(&broker, &member, 10).await, 0);
    let damaged = offsets.log.log_end_offset();
    assert_eq!(commit(&broker, &member, 20).await, 0);
    assert_eq!(commit(&broker, &member, 30).await, 0);
    let segment = offsets.log.dir().join(format!("{:020}.log", 0));
    assert_eq!(
        offsets.log.segment_count().await,
        1,
        "one segment holds all three"
    );
    let end = offsets.log.log_end_offset();
    drop(offsets);
    broker.shutdown().await;
    drop(broker);
    // A bit in the records of commit 20's batch, under its CRC.
    let position = batch_position(&node.disk.inner, &segment, damaged).await;
    node.disk
        .inner
        .flip_bit(&segment, position + 70, 3)
        .unwrap();

    let broker = node.open().await;
    let offsets = broker
        .partition(broker::group::offsets::OFFSETS_TOPIC, index)
        .unwrap();
    assert_eq!(offsets.log.log_end_offset(), end, "the log keeps commit 30");
    assert_eq!(
        committed(&broker).await,
        30,
        "the commit after the damaged one is the group's, not the one before it"
    );
    broker.shutdown().await;
}
