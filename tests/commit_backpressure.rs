//! The group coordinator's queue of offset writes in flight (appended to `__consumer_offsets`,
//! not yet durable) is bounded. The bug: every OffsetCommit added one, with no limit, however
//! far the disk's syncs fell behind. Now the next write waits for room, in order, and nothing
//! is dropped.
#![cfg(not(madsim))]

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use broker::broker::Broker;
use broker::clock::{Clock, SystemClock};
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use broker::group::offsets::{CommittedOffset, OffsetKey};
use broker::group::{GroupConfig, GroupCoordinator, OffsetWrite};

fn commit(group: &str, offset: i64) -> Vec<OffsetWrite> {
    vec![(
        OffsetKey {
            group: group.into(),
            topic: "t".into(),
            partition: 0,
        },
        Some(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        }),
    )]
}

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
async fn an_offset_write_waits_for_room_while_the_pending_writes_are_at_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let broker = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    let partition = broker.offsets_partition().await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let groups = GroupCoordinator::new(
        clock,
        GroupConfig {
            max_pending_writes: 2,
            ..GroupConfig::default()
        },
    );
    let (w1, w2, w3) = (commit("a", 1), commit("b", 2), commit("c", 3));
    let first = groups.append(&partition, &w1, 0).await.unwrap();
    let second = groups.append(&partition, &w2, 0).await.unwrap();
    assert_eq!(groups.in_flight().len(), 2);

    // At the limit: the third append waits (the connection that sent it stops reading).
    let third = groups.append(&partition, &w3, 0);
    tokio::pin!(third);
    assert!(
        !finishes_within(third.as_mut(), 100).await,
        "appended past the limit of pending writes"
    );
    assert_eq!(groups.in_flight().len(), 2);

    // A write completes: room for the third, which is appended, not dropped.
    groups.complete(&partition, &w1, first).await.unwrap();
    let third = third.await.unwrap();
    assert_eq!(groups.in_flight().len(), 2);
    groups.complete(&partition, &w2, second).await.unwrap();
    groups.complete(&partition, &w3, third).await.unwrap();
    assert!(groups.in_flight().is_empty());
    for (group, offset) in [("a", 1), ("b", 2), ("c", 3)] {
        let key = &commit(group, offset)[0].0;
        assert_eq!(groups.committed(key).map(|c| c.offset), Some(offset));
    }
}
