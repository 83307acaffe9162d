//! The simulator's timers (vendor/madsim, the Faultline patch to `madsim::time`): a `sleep`
//! registers one timer for its deadline however often it is polled, and a sleep dropped or
//! reset before its deadline wakes nobody.
//!
//! The timer keeps a cancelled timer in its heap until it reaches the top or until the
//! cancelled outnumber the live, when it rebuilds the heap from the live ones (vendor/README.md).
//!
//! The bug story: madsim 0.2.34 added a timer on every poll of a pending sleep and never
//! cancelled one, so every request's timeout, dropped when its response came, woke the
//! connection's task again when it would have expired, and a sweep spent a share of its time
//! polling tasks that had nothing to do.
#![cfg(madsim)]

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use madsim::time::TimeHandle;

use common::counted;

fn runtime() -> madsim::runtime::Runtime {
    madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default())
}

#[test]
fn a_timeout_dropped_when_its_future_finished_never_wakes_the_task_again() {
    runtime().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        // Each message comes long before its one-second timeout, which is then dropped.
        let (receiver, polls) = counted(async move {
            let mut received = 0;
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                received += 1;
            }
            received
        });
        let receiver = tokio::spawn(receiver);
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(i).expect("the receiver is alive");
        }
        let received = receiver
            .await
            .expect("the receiver ends when its last timeout expires");
        drop(tx);
        assert_eq!(received, 10);
        // The first poll, one per message, one when the last timeout expires; the ten
        // dropped timeouts' deadlines (1.00 s to 1.09 s) wake nobody.
        assert_eq!(polls.load(Ordering::Relaxed), 12);
    });
}

#[test]
fn a_sleep_reset_to_a_later_deadline_wakes_its_task_only_at_the_new_one() {
    runtime().block_on(async {
        let (sleeper, polls) = counted(async {
            let start = TimeHandle::current().elapsed();
            let sleep = tokio::time::sleep(Duration::from_millis(100));
            tokio::pin!(sleep);
            // Pending once, so its timer for 100 ms is registered; then moved to 500 ms.
            std::future::poll_fn(|cx| {
                assert!(sleep.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            let later = sleep.deadline() + Duration::from_millis(400);
            sleep.as_mut().reset(later);
            sleep.await;
            TimeHandle::current().elapsed() - start
        });
        let slept = tokio::spawn(sleeper).await.expect("the sleeper ends");
        assert!(slept >= Duration::from_millis(500), "woke after {slept:?}");
        // The first poll and the one at 500 ms: the cancelled 100 ms timer woke nobody.
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    });
}

#[test]
fn a_sleep_polled_many_times_before_its_deadline_completes_once_at_it() {
    runtime().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        // A select! loop: the same sleep is polled again after every message.
        let (looper, polls) = counted(async move {
            let start = TimeHandle::current().elapsed();
            let deadline = tokio::time::sleep(Duration::from_millis(300));
            tokio::pin!(deadline);
            let mut received = 0;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut deadline => break,
                    Some(_) = rx.recv() => received += 1,
                }
            }
            (received, TimeHandle::current().elapsed() - start)
        });
        let looper = tokio::spawn(looper);
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(i).expect("the loop is alive");
        }
        let (received, waited) = looper.await.expect("the loop ends at its deadline");
        assert_eq!(received, 20);
        assert!(
            waited >= Duration::from_millis(300),
            "ended after {waited:?}"
        );
        // The first poll, one per message, one at the deadline.
        assert_eq!(polls.load(Ordering::Relaxed), 22);
    });
}

#[test]
fn many_sleeps_cancelled_at_once_leave_every_live_sleep_waking_once_at_its_deadline() {
    runtime().block_on(async {
        // 400 tasks, five rounds each of a sleep bounded by a timeout: mostly the timeout fires
        // first and drops (cancels) a sleep due a second or two later; sometimes the sleep wins
        // and the timeout's own sleep is cancelled. Thousands of cancelled timers pile up
        // against a few hundred live ones, so the heap is rebuilt from its live timers many
        // times while they are pending. Then every task sleeps past all cancelled deadlines.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut draw = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let start = TimeHandle::current().elapsed();
        let end = Duration::from_secs(3);
        let mut tasks = Vec::new();
        for _ in 0..400 {
            let rounds: Vec<(u64, u64)> = (0..5)
                .map(|_| {
                    if draw(4) == 0 {
                        let sleep_ms = 1 + draw(10);
                        (sleep_ms, sleep_ms + 1 + draw(10))
                    } else {
                        (1_000 + draw(1_000), 1 + draw(10))
                    }
                })
                .collect();
            let expected: Vec<(bool, u64)> = rounds
                .iter()
                .scan(0, |at, &(sleep_ms, timeout_ms)| {
                    *at += sleep_ms.min(timeout_ms);
                    Some((sleep_ms < timeout_ms, *at))
                })
                .collect();
            let (task, polls) = counted(async move {
                let mut woke = Vec::new();
                for (sleep_ms, timeout_ms) in rounds {
                    let bounded = tokio::time::timeout(
                        Duration::from_millis(timeout_ms),
                        tokio::time::sleep(Duration::from_millis(sleep_ms)),
                    )
                    .await;
                    woke.push((bounded.is_ok(), TimeHandle::current().elapsed() - start));
                }
                tokio::time::sleep(end - (TimeHandle::current().elapsed() - start)).await;
                (woke, TimeHandle::current().elapsed() - start)
            });
            tasks.push((tokio::spawn(task), polls, expected));
        }
        for (task, polls, expected) in tasks {
            let (woke, ended) = task.await.expect("every task ends");
            for ((completed, at), (sleep_won, expected_ms)) in woke.into_iter().zip(expected) {
                assert_eq!(completed, sleep_won);
                // At the deadline, plus the executor's sub-millisecond steps.
                let deadline = Duration::from_millis(expected_ms);
                assert!(
                    at >= deadline && at < deadline + Duration::from_millis(1),
                    "woke at {at:?}, deadline {deadline:?}"
                );
            }
            assert!(ended >= end && ended < end + Duration::from_millis(1));
            // The first poll, five wakes, the last: no cancelled sleep woke anyone.
            assert_eq!(polls.load(Ordering::Relaxed), 7);
        }
    });
}
