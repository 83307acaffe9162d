//! The group coordinator's OffsetCommits in flight (decided, appended to `__consumer_offsets`,
//! not yet durable) are bounded. The bug: every OffsetCommit added one, with no limit, however
//! far the disk's syncs fell behind. Now the next commit waits for room before it is decided
//! (its connection reads nothing more meanwhile), in order, and nothing is dropped.
#![cfg(not(madsim))]

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use broker::clock::{Clock, SystemClock};
use broker::group::{GroupConfig, GroupCoordinator};

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
