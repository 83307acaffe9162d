//! Wake-ups for parked fetches, one pair per partition.
//!
//! A fetch that found too little data parks until a partition it asked for moves, or its
//! `max_wait_ms` runs out. Kafka keys its fetch purgatory by partition for the same reason:
//! with one broker-wide notification, every append anywhere made every parked fetch re-read all
//! of its partitions. Consumers wait on the high watermark (they may read only below it); a
//! follower's fetch (replication) will wait on the log end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Which of a partition's ends a parked fetch waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchBound {
    /// Consumers: the high watermark.
    HighWatermark,
    /// Followers: the log end.
    LogEnd,
}

/// The notifications of one partition.
#[derive(Debug, Default)]
pub struct PartitionWatch {
    high_watermark: Notify,
    log_end: Notify,
}

impl PartitionWatch {
    /// Wakes the fetches waiting on the high watermark: it moved, or the partition changed in a
    /// way they must see at once (its log failed or recovered).
    pub fn high_watermark_moved(&self) {
        self.high_watermark.notify_waiters();
    }

    /// Wakes the fetches waiting on the log end.
    pub fn log_end_moved(&self) {
        self.log_end.notify_waiters();
    }

    /// A notification for the next move of `bound`. Enable it (see [`Wakeups`]) before reading
    /// the state it guards, so a move between the read and the wait is not missed.
    pub fn notified(&self, bound: FetchBound) -> Notified<'_> {
        match bound {
            FetchBound::HighWatermark => self.high_watermark.notified(),
            FetchBound::LogEnd => self.log_end.notified(),
        }
    }
}

/// The notifications one parked fetch waits on: the first that fires wakes it.
pub struct Wakeups<'a> {
    waiting: Vec<Pin<Box<Notified<'a>>>>,
}

impl<'a> Wakeups<'a> {
    /// Registers for the next move of `bound` on every watch, at once: a move after this call
    /// and before [`Wakeups::wait`] still wakes the fetch.
    pub fn register(
        watches: impl IntoIterator<Item = &'a PartitionWatch>,
        bound: FetchBound,
    ) -> Self {
        let waiting = watches
            .into_iter()
            .map(|watch| {
                let mut notified = Box::pin(watch.notified(bound));
                notified.as_mut().enable();
                notified
            })
            .collect();
        Wakeups { waiting }
    }

    /// [`Wakeups::register`] for several bounds at once (a follower's fetch waits on both the
    /// log end and the high watermark).
    pub fn register_bounds(
        watches: impl IntoIterator<Item = &'a PartitionWatch>,
        bounds: &[FetchBound],
    ) -> Self {
        let mut waiting = Vec::new();
        for watch in watches {
            for &bound in bounds {
                let mut notified = Box::pin(watch.notified(bound));
                notified.as_mut().enable();
                waiting.push(notified);
            }
        }
        Wakeups { waiting }
    }

    /// Waits until one of the registered partitions moves. With none registered, never returns
    /// (the caller's deadline ends the wait).
    pub async fn wait(mut self) {
        std::future::poll_fn(|cx: &mut Context<'_>| {
            for notified in &mut self.waiting {
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await
    }
}
