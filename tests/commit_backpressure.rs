//! The group coordinator's OffsetCommits in flight (decided, appended to `__consumer_offsets`,
//! not yet durable) are bounded. The bug: every OffsetCommit added one, with no limit, however
//! far the disk's syncs fell behind. Now the next commit waits for room before it is decided
//! (its connection reads nothing more meanwhile), in order, and nothing is dropped.
#![cfg(not(madsim))]

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use broker::broker::Broker;
use broker::clock::{Clock, ManualClock, SystemClock};
use broker::config::BrokerConfig;
use broker::group::{GroupConfig, GroupCoordinator};
use chaos::{FaultyDisk, FaultyDiskConfig};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

mod in_process;

/// Polls `future` until it finishes or has had `rounds` chances to; true if it finished.
async fn finishes_within<F: Future>(future: std::pin::Pin<&mut F>, rounds: usize) -> bool {
    let mut future = future;
    for _ in 0..rounds {
        let ready =
            std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await;
        if ready {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

#[tokio::test]
async fn an_offset_commit_waits_for_room_while_the_commits_in_flight_are_at_their_limit() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let groups = GroupCoordinator::new(
        clock,
        GroupConfig {
            max_pending_writes: 2,
            ..GroupConfig::default()
        },
    );
    let first = groups.write_permit().await;
    let second = groups.write_permit().await;
    assert_eq!(groups.pending_writes(), 2);

    // At the limit: the third waits (the connection that sent it stops reading).
    let third = groups.write_permit();
    tokio::pin!(third);
    assert!(
        !finishes_within(third.as_mut(), 100).await,
        "a commit went past the limit of commits in flight"
    );
    assert_eq!(groups.pending_writes(), 2);

    // One is answered: room for the third, which goes ahead, not dropped.
    drop(first);
    let third = third.await;
    assert_eq!(groups.pending_writes(), 2);
    drop(second);
    drop(third);
    assert_eq!(groups.pending_writes(), 0);
}

/// The limit is wired to the request path: an OffsetCommit that arrives while every permit is
/// taken is not answered (its connection reads nothing more) until one is given back.
#[tokio::test]
async fn an_offset_commit_request_is_held_while_the_commits_in_flight_are_at_their_limit() {
    let broker = Broker::open(
        BrokerConfig {
            data_dir: "/data".into(),
            ..BrokerConfig::default()
        },
        Arc::new(FaultyDisk::new(3, FaultyDiskConfig::default())),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    )
    .await
    .unwrap();
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let _: kafka_protocol::messages::CreateTopicsResponse =
        in_process::call(&broker, ApiKey::CreateTopics, 5, &create).await;
    let limit = GroupConfig::default().max_pending_writes;
    let mut held = Vec::new();
    for _ in 0..limit {
        held.push(broker.groups().write_permit().await);
    }
    // A consumer that assigns itself (generation -1) commits offset 7.
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(7)
                .with_committed_leader_epoch(-1)])]);
    let commit =
        in_process::call::<_, OffsetCommitResponse>(&broker, ApiKey::OffsetCommit, 7, &request);
    tokio::pin!(commit);
    assert!(
        !finishes_within(commit.as_mut(), 100).await,
        "an OffsetCommit was handled past the limit of commits in flight"
    );
    held.pop();
    let response = commit.await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
}
