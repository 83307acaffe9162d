//! Groups spread over the partitions of `__consumer_offsets`, one coordinator shard per
//! partition, loaded and unloaded with leadership; through the wire protocol against a broker
//! on the faulty disk.
//!
//! The stories:
//! - Kafka places a group in partition `abs(groupId.hashCode) % partitions` of the offsets
//!   topic. Groups in different partitions must each come back from their own partition after a
//!   restart, and a data directory whose offsets topic has one partition (written before it had
//!   fifty) must keep finding its groups there, not re-hash them into partitions that do not
//!   hold their offsets.
//! - When a broker stops leading an offsets partition (Kafka's `onResignation`), its groups
//!   must answer NOT_COORDINATOR at once, parked requests and writes in flight included, so
//!   clients go to the new coordinator; a stale answer from the old one could let a fenced
//!   member commit. While a partition loads (`onElection`), its groups answer
//!   COORDINATOR_LOAD_IN_PROGRESS rather than "no such group", which would make a consumer
//!   start over from its reset policy.
#![cfg(not(madsim))]

mod in_process;

use in_process::call;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use broker::broker::Broker;
use broker::clock::ManualClock;
use broker::config::BrokerConfig;
use broker::disk::{Disk, DiskFile, OpenMode};
use broker::group::coordinator::partition_for;
use broker::group::offsets::OFFSETS_TOPIC;
use bytes::Bytes;
use chaos::{FaultyDisk, FaultyDiskConfig};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;

const T0: i64 = 1_700_000_000_000;
const TOPIC: &str = "orders";
/// Partition 9 of 50 (`"billing".hashCode()` is -109829509).
const BILLING: &str = "billing";
/// Partition 12 of 50 (`"my-group".hashCode()` is -1906497762).
const MY_GROUP: &str = "my-group";

const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
const LOADING: i16 = ResponseError::CoordinatorLoadInProgress.code();

/// Holds what passes it while closed.
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

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::Release);
        self.opened.notify_waiters();
    }

    async fn until_held(&self) {
        while self.held.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// A faulty disk whose appends to, and reads from, the segments of `__consumer_offsets` can be
/// held.
#[derive(Debug, Clone)]
struct HoldingDisk {
    inner: FaultyDisk,
    appends: Arc<Gate>,
    reads: Arc<Gate>,
}

#[derive(Debug)]
struct HoldingFile {
    inner: Arc<dyn DiskFile>,
    gates: Option<(Arc<Gate>, Arc<Gate>)>,
}

#[async_trait]
impl DiskFile for HoldingFile {
    async fn append(&self, buf: &[u8]) -> std::io::Result<u64> {
        if let Some((appends, _)) = &self.gates {
            appends.pass().await;
        }
        self.inner.append(buf).await
    }
    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some((_, reads)) = &self.gates {
            reads.pass().await;
        }
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
        let held = path.to_string_lossy().contains(OFFSETS_TOPIC)
            && path.extension().is_some_and(|e| e == "log");
        Ok(Arc::new(HoldingFile {
            inner,
            gates: held.then(|| (Arc::clone(&self.appends), Arc::clone(&self.reads))),
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
    fn new(configure: impl FnOnce(&mut BrokerConfig)) -> Node {
        let mut config = BrokerConfig {
            data_dir: PathBuf::from("/data"),
            group_initial_rebalance_delay_ms: 0,
            ..BrokerConfig::default()
        };
        configure(&mut config);
        Node {
            disk: HoldingDisk {
                inner: FaultyDisk::new(17, FaultyDiskConfig::default()),
                appends: Arc::default(),
                reads: Arc::default(),
            },
            clock: Arc::new(ManualClock::new(T0)),
            config,
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

    async fn restart_cleanly(&self, broker: Arc<Broker>) -> Arc<Broker> {
        broker.shutdown().await;
        drop(broker);
        self.open().await
    }

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

#[derive(Clone, Debug)]
struct Member {
    group: String,
    id: String,
    generation: i32,
}

impl Member {
    /// A consumer that assigns itself partitions and only commits (generation -1).
    fn standalone(group: &str) -> Member {
        Member {
            group: group.to_string(),
            id: String::new(),
            generation: -1,
        }
    }
}

/// JoinGroup v3 (no KIP-394 round trip).
async fn join(broker: &Arc<Broker>, group: &str, member_id: &str) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(60_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription())]);
    call(broker, ApiKey::JoinGroup, 3, &request).await
}

/// SyncGroup v3 from the leader, assigning itself the one partition.
async fn sync(broker: &Arc<Broker>, member: &Member) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(s(&member.group)))
        .with_generation_id(member.generation)
        .with_member_id(s(&member.id))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member.id))
            .with_assignment(Bytes::from_static(b"orders-0"))]);
    call(broker, ApiKey::SyncGroup, 3, &request).await
}

/// The group's only member, Stable in its generation.
async fn join_and_sync(broker: &Arc<Broker>, group: &str) -> Member {
    let joined = join(broker, group, "").await;
    assert_eq!(joined.error_code, 0, "join: {joined:?}");
    let member = Member {
        group: group.to_string(),
        id: joined.member_id.to_string(),
        generation: joined.generation_id,
    };
    let synced = sync(broker, &member).await;
    assert_eq!(synced.error_code, 0, "sync: {synced:?}");
    member
}

/// OffsetCommit v7 of `orders-0`; its error code.
async fn commit(broker: &Arc<Broker>, member: &Member, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(&member.group)))
        .with_generation_id_or_member_epoch(member.generation)
        .with_member_id(s(&member.id))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)])]);
    let response: OffsetCommitResponse = call(broker, ApiKey::OffsetCommit, 7, &request).await;
    response.topics[0].partitions[0].error_code
}

/// OffsetFetch v7 of `orders-0`: the committed offset (-1 if none), or the group's error.
async fn committed(broker: &Arc<Broker>, group: &str) -> Result<i64, i16> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(vec![0])]));
    let response: OffsetFetchResponse = call(broker, ApiKey::OffsetFetch, 7, &request).await;
    if response.error_code != 0 {
        return Err(response.error_code);
    }
    Ok(response.topics[0].partitions[0].committed_offset)
}

/// OffsetFetch v8 of several groups at once: each group's error code.
async fn fetch_codes_v8(broker: &Arc<Broker>, groups: &[&str]) -> Vec<i16> {
    let request = OffsetFetchRequest::default().with_groups(
        groups
            .iter()
            .map(|g| {
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(g)))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partition_indexes(vec![0])]))
            })
            .collect(),
    );
    let response: OffsetFetchResponse = call(broker, ApiKey::OffsetFetch, 8, &request).await;
    response.groups.iter().map(|g| g.error_code).collect()
}

async fn heartbeat(broker: &Arc<Broker>, member: &Member) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(s(&member.group)))
        .with_generation_id(member.generation)
        .with_member_id(s(&member.id));
    let response: HeartbeatResponse = call(broker, ApiKey::Heartbeat, 3, &request).await;
    response.error_code
}

async fn leave(broker: &Arc<Broker>, member: &Member) -> i16 {
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(&member.group)))
        .with_members(vec![MemberIdentity::default().with_member_id(s(&member.id))]);
    let response: LeaveGroupResponse = call(broker, ApiKey::LeaveGroup, 3, &request).await;
    if response.error_code != 0 {
        return response.error_code;
    }
    response.members[0].error_code
}

/// DescribeGroups v4: (error code, state, member count).
async fn describe(broker: &Arc<Broker>, group: &str) -> (i16, String, usize) {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
    let response: DescribeGroupsResponse = call(broker, ApiKey::DescribeGroups, 4, &request).await;
    let g = &response.groups[0];
    (g.error_code, g.group_state.to_string(), g.members.len())
}

async fn delete(broker: &Arc<Broker>, group: &str) -> i16 {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
    let response: DeleteGroupsResponse = call(broker, ApiKey::DeleteGroups, 2, &request).await;
    response.results[0].error_code
}

async fn delete_offsets(broker: &Arc<Broker>, group: &str) -> i16 {
    let request = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let response: OffsetDeleteResponse = call(broker, ApiKey::OffsetDelete, 0, &request).await;
    response.error_code
}

/// ListGroups v4: (error code, group ids).
async fn list(broker: &Arc<Broker>) -> (i16, Vec<String>) {
    let response: ListGroupsResponse =
        call(broker, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).await;
    (
        response.error_code,
        response
            .groups
            .iter()
            .map(|g| g.group_id.to_string())
            .collect(),
    )
}

/// FindCoordinator v3 (one key) and v4 (a batch): the node ids named.
async fn coordinators(broker: &Arc<Broker>, groups: &[&str]) -> (Vec<i32>, Vec<i32>) {
    let mut single = Vec::new();
    for group in groups {
        let request = FindCoordinatorRequest::default().with_key(s(group));
        let response: FindCoordinatorResponse =
            call(broker, ApiKey::FindCoordinator, 3, &request).await;
        assert_eq!(response.error_code, 0);
        single.push(response.node_id.0);
    }
    let request = FindCoordinatorRequest::default()
        .with_coordinator_keys(groups.iter().map(|g| s(g)).collect());
    let response: FindCoordinatorResponse =
        call(broker, ApiKey::FindCoordinator, 4, &request).await;
    let batched = response
        .coordinators
        .iter()
        .map(|c| {
            assert_eq!(c.error_code, 0);
            c.node_id.0
        })
        .collect();
    (single, batched)
}

/// Records in offsets partition `index`.
fn records_in(broker: &Arc<Broker>, index: i32) -> u64 {
    broker
        .partition(OFFSETS_TOPIC, index)
        .expect("offsets partition")
        .log
        .log_end_offset()
}

async fn two_groups_on_different_partitions_come_back_after(restart: &str) {
    let node = Node::new(|_| {});
    let broker = node.start().await;
    assert_eq!(partition_for(BILLING, 50), 9);
    assert_eq!(partition_for(MY_GROUP, 50), 12);
    let member = join_and_sync(&broker, BILLING).await;
    assert_eq!(commit(&broker, &member, 42).await, 0);
    assert_eq!(commit(&broker, &Member::standalone(MY_GROUP), 7).await, 0);
    let offsets = broker.topic(OFFSETS_TOPIC).expect("created on first use");
    assert_eq!(offsets.partitions.len(), 50, "offsets.topic.num.partitions");
    assert!(
        records_in(&broker, 9) > 0,
        "billing's records are in partition 9"
    );
    assert!(
        records_in(&broker, 12) > 0,
        "my-group's records are in partition 12"
    );
    let elsewhere: u64 = (0..50)
        .filter(|i| *i != 9 && *i != 12)
        .map(|i| records_in(&broker, i))
        .sum();
    assert_eq!(elsewhere, 0, "nothing in the other partitions");

    let broker = match restart {
        "clean" => node.restart_cleanly(broker).await,
        _ => node.restart_after_power_loss(broker).await,
    };
    assert_eq!(broker.groups().loaded_shards(), (0..50).collect::<Vec<_>>());
    assert_eq!(committed(&broker, BILLING).await, Ok(42));
    assert_eq!(committed(&broker, MY_GROUP).await, Ok(7));
    assert_eq!(
        describe(&broker, BILLING).await,
        (0, "Stable".to_string(), 1),
        "the member is back from partition 9 in its stored generation"
    );
    assert_eq!(heartbeat(&broker, &member).await, 0);
    assert_eq!(
        describe(&broker, MY_GROUP).await,
        (0, "Empty".to_string(), 0)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn two_groups_on_different_offsets_partitions_commit_and_fetch_across_a_clean_restart() {
    two_groups_on_different_partitions_come_back_after("clean").await;
}

#[tokio::test(flavor = "current_thread")]
async fn two_groups_on_different_offsets_partitions_commit_and_fetch_across_a_power_loss() {
    two_groups_on_different_partitions_come_back_after("unclean").await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_offsets_topic_made_with_one_partition_keeps_its_groups_there_when_the_default_is_fifty()
{
    // A data directory from before: the offsets topic was made with one partition.
    let node = Node::new(|c| c.offsets_topic_num_partitions = 1);
    let broker = node.start().await;
    assert_eq!(commit(&broker, &Member::standalone(BILLING), 42).await, 0);
    assert_eq!(commit(&broker, &Member::standalone(MY_GROUP), 7).await, 0);
    broker.shutdown().await;
    drop(broker);

    let node = Node {
        config: BrokerConfig {
            offsets_topic_num_partitions: 50,
            ..node.config.clone()
        },
        ..node
    };
    let broker = node.open().await;
    assert_eq!(broker.groups().partition_count(), Some(1));
    assert_eq!(broker.topic(OFFSETS_TOPIC).unwrap().partitions.len(), 1);
    assert_eq!(committed(&broker, BILLING).await, Ok(42));
    assert_eq!(committed(&broker, MY_GROUP).await, Ok(7));
    // New groups go there too.
    let before = records_in(&broker, 0);
    assert_eq!(commit(&broker, &Member::standalone("newcomer"), 1).await, 0);
    assert_eq!(records_in(&broker, 0), before + 1);
}

#[tokio::test(flavor = "current_thread")]
async fn find_coordinator_names_the_leader_of_each_groups_partition_single_and_batched() {
    let node = Node::new(|c| c.node_id = 7);
    let broker = node.start().await;
    // Before the offsets topic exists too: this broker will lead every partition of it.
    assert_eq!(
        coordinators(&broker, &[BILLING, MY_GROUP]).await,
        (vec![7, 7], vec![7, 7])
    );
    assert_eq!(commit(&broker, &Member::standalone(BILLING), 1).await, 0);
    assert_eq!(
        coordinators(&broker, &[BILLING, MY_GROUP]).await,
        (vec![7, 7], vec![7, 7])
    );
}

#[tokio::test(flavor = "current_thread")]
async fn every_group_api_answers_not_coordinator_for_a_group_whose_partition_was_unloaded() {
    let node = Node::new(|_| {});
    let broker = node.start().await;
    let member = join_and_sync(&broker, BILLING).await;
    assert_eq!(commit(&broker, &member, 42).await, 0);
    assert_eq!(commit(&broker, &Member::standalone(MY_GROUP), 7).await, 0);

    assert_eq!(broker.groups().unload_shard(9), 0, "nothing was parked");
    assert!(!broker.groups().loaded_shards().contains(&9));
    assert_eq!(join(&broker, BILLING, "").await.error_code, NOT_COORDINATOR);
    assert_eq!(sync(&broker, &member).await.error_code, NOT_COORDINATOR);
    assert_eq!(heartbeat(&broker, &member).await, NOT_COORDINATOR);
    assert_eq!(commit(&broker, &member, 43).await, NOT_COORDINATOR);
    assert_eq!(committed(&broker, BILLING).await, Err(NOT_COORDINATOR));
    assert_eq!(
        fetch_codes_v8(&broker, &[BILLING, MY_GROUP]).await,
        vec![NOT_COORDINATOR, 0],
        "per group: the other one is still served"
    );
    assert_eq!(describe(&broker, BILLING).await.0, NOT_COORDINATOR);
    assert_eq!(delete_offsets(&broker, BILLING).await, NOT_COORDINATOR);
    assert_eq!(delete(&broker, BILLING).await, NOT_COORDINATOR);
    assert_eq!(leave(&broker, &member).await, NOT_COORDINATOR);
    assert_eq!(list(&broker).await, (0, vec![MY_GROUP.to_string()]));
    // The group on another partition is untouched.
    assert_eq!(committed(&broker, MY_GROUP).await, Ok(7));
    assert_eq!(commit(&broker, &Member::standalone(MY_GROUP), 8).await, 0);

    // Leading the partition again brings the group back from its log.
    let partition = broker.partition(OFFSETS_TOPIC, 9).unwrap();
    broker.groups().load_shard(9, partition).await.unwrap();
    assert_eq!(committed(&broker, BILLING).await, Ok(42));
    assert_eq!(heartbeat(&broker, &member).await, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn unloading_answers_a_parked_join_and_a_commit_in_flight_with_not_coordinator() {
    let node = Node::new(|c| c.group_initial_rebalance_delay_ms = 3_000);
    let broker = node.start().await;
    assert_eq!(commit(&broker, &Member::standalone(BILLING), 1).await, 0);
    // A commit, held on the disk before it reaches the log.
    node.disk.appends.close();
    let in_flight = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move { commit(&broker, &Member::standalone(BILLING), 2).await }
    });
    node.disk.appends.until_held().await;
    // The first join of the group waits out the initial rebalance delay: parked.
    let parked = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move { join(&broker, BILLING, "").await.error_code }
    });
    while broker
        .groups()
        .read_group(BILLING, |g| g.members.len())
        .unwrap()
        != Some(1)
    {
        tokio::task::yield_now().await;
    }
    assert!(!parked.is_finished());

    assert_eq!(broker.groups().unload_shard(9), 1, "the parked join");
    assert_eq!(parked.await.unwrap(), NOT_COORDINATOR);
    node.disk.appends.open();
    assert_eq!(
        in_flight.await.unwrap(),
        NOT_COORDINATOR,
        "the client retries at the new coordinator, which replays the log"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn while_an_offsets_partition_loads_its_groups_answer_coordinator_load_in_progress() {
    let node = Node::new(|_| {});
    let broker = node.start().await;
    let member = join_and_sync(&broker, BILLING).await;
    assert_eq!(commit(&broker, &member, 42).await, 0);
    assert_eq!(commit(&broker, &Member::standalone(MY_GROUP), 7).await, 0);
    broker.groups().unload_shard(9);

    // This broker leads partition 9 again; its replay is held on the disk.
    node.disk.reads.close();
    let partition = broker.partition(OFFSETS_TOPIC, 9).unwrap();
    let loading = tokio::spawn(broker.groups().load_shard(9, partition));
    node.disk.reads.until_held().await;
    assert!(broker.groups().is_loading());
    assert_eq!(committed(&broker, BILLING).await, Err(LOADING));
    assert_eq!(
        fetch_codes_v8(&broker, &[BILLING, MY_GROUP]).await,
        vec![LOADING, 0]
    );
    assert_eq!(heartbeat(&broker, &member).await, LOADING);
    assert_eq!(commit(&broker, &member, 43).await, LOADING);
    assert_eq!(join(&broker, BILLING, "").await.error_code, LOADING);
    assert_eq!(describe(&broker, BILLING).await.0, LOADING);
    assert_eq!(delete(&broker, BILLING).await, LOADING);
    assert_eq!(
        list(&broker).await,
        (LOADING, vec![MY_GROUP.to_string()]),
        "the loaded groups, and the error while others load"
    );
    // A group in a loaded partition is served meanwhile.
    assert_eq!(committed(&broker, MY_GROUP).await, Ok(7));

    node.disk.reads.open();
    assert!(
        loading.await.unwrap().unwrap() > 0,
        "the replay read the group's records"
    );
    assert!(!broker.groups().is_loading());
    assert_eq!(committed(&broker, BILLING).await, Ok(42));
    assert_eq!(heartbeat(&broker, &member).await, 0);
    assert_eq!(
        list(&broker).await,
        (0, vec![BILLING.to_string(), MY_GROUP.to_string()])
    );
}
