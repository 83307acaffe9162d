//! Utilities for tracking time.
//!
//!

use crate::rand::{GlobalRng, Rng};
use futures_util::{select_biased, FutureExt};
use spin::Mutex;
#[doc(no_inline)]
pub use std::time::{Duration, Instant};
use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::SystemTime,
};

pub mod error;
mod interval;
mod sleep;
mod system_time;
// Faultline patch: naive_timer replaced by a timer heap with cancellable sleeps.
mod timer;

pub(crate) use self::timer::SleepKey;
use self::timer::Timer;

pub use self::interval::{interval, interval_at, Interval, MissedTickBehavior};
pub use self::sleep::{sleep, sleep_until, Sleep};

pub(crate) struct TimeRuntime {
    handle: TimeHandle,
}

impl TimeRuntime {
    pub fn new(rand: &GlobalRng) -> Self {
        // around 2022
        let base_time = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                60 * 60 * 24 * 365 * (2022 - 1970)
                    + rand.with(|rng| rng.gen_range(0..60 * 60 * 24 * 365)),
            );
        let handle = TimeHandle {
            timer: Arc::new(Mutex::new(Timer::default())),
            clock: Arc::new(Clock::new(base_time)),
        };
        TimeRuntime { handle }
    }

    pub fn handle(&self) -> &TimeHandle {
        &self.handle
    }

    /// Advances time to the closest timer event. Returns true if succeed.
    pub fn advance_to_next_event(&self) -> bool {
        let next = self.handle.with_timer(Timer::next);
        if let Some(mut time) = next {
            // WARN: in some platform such as M1 macOS,
            //       let t0: Instant;
            //       let t1: Instant;
            //       t0 + (t1 - t0) < t1 !!
            // we should add eps to make sure 'now >= deadline' and avoid deadlock
            time += Duration::from_nanos(50);
            self.handle.expire(time);
            self.handle.clock.set_elapsed(time);
            true
        } else {
            false
        }
    }

    #[allow(dead_code)]
    /// Get the current time.
    pub fn now_instant(&self) -> Instant {
        self.handle.now_instant()
    }
}

/// Handle to a shared time source.
#[derive(Clone)]
pub struct TimeHandle {
    timer: Arc<Mutex<Timer>>,
    clock: Arc<Clock>,
}

impl TimeHandle {
    /// Returns a `TimeHandle` view over the currently running Runtime.
    pub fn current() -> Self {
        crate::context::current(|h| h.time.clone())
    }

    /// Returns a `TimeHandle` view over the currently running Runtime.
    pub fn try_current() -> Option<Self> {
        crate::context::try_current(|h| h.time.clone())
    }

    /// Faultline patch: `f` of the running runtime's time handle, borrowed rather than cloned
    /// (two reference counts up and down): the libc clock overrides run on every
    /// `Instant::now` and `SystemTime::now`.
    pub(crate) fn with_current<T>(f: impl FnOnce(&TimeHandle) -> T) -> Option<T> {
        crate::context::try_current(|h| f(&h.time))
    }

    /// Return the current time.
    pub fn now_instant(&self) -> Instant {
        self.clock.now_instant()
    }

    /// Return the current time.
    pub fn now_time(&self) -> SystemTime {
        self.clock.now_time()
    }

    /// Returns the amount of time elapsed since this handle was created.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Advances time.
    pub fn advance(&self, duration: Duration) {
        let time = self.clock.advance(duration);
        self.expire(time);
    }

    /// Faultline patch: runs every timer due at `now`, in (deadline, insertion) order, each with
    /// the timer unlocked.
    ///
    /// The executor steps the clock after every poll; most steps reach no timer, and those
    /// return here without locking the timer (`Clock::timer_floor`).
    fn expire(&self, now: Duration) {
        if timer::nanos(now) < self.clock.timer_floor.load(Ordering::Relaxed) {
            return;
        }
        loop {
            let due = self.with_timer(|timer| timer.pop_due(now));
            match due {
                Some(due) => due.run(),
                None => return,
            }
        }
    }

    /// Waits until `duration` has elapsed.
    ///
    /// It will sleep for at least 1ms to be consistent with the behavior of `tokio::time::sleep`.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.clock.now_instant() + duration)
    }

    /// Waits until `deadline` is reached.
    ///
    /// It will sleep for at least 1ms to be consistent with the behavior of `tokio::time::sleep_until`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        let min_deadline = self.clock.now_instant() + Duration::from_millis(1);
        Sleep {
            handle: self.clone(),
            deadline: deadline.max(min_deadline),
            entry: None,
        }
    }

    /// Require a `Future` to complete before the specified duration has elapsed.
    // TODO: make it Send
    pub fn timeout<T: Future>(
        &self,
        duration: Duration,
        future: T,
    ) -> impl Future<Output = Result<T::Output, error::Elapsed>> {
        let timeout = self.sleep(duration);
        async move {
            select_biased! {
                res = future.fuse() => Ok(res),
                _ = timeout.fuse() => Err(error::Elapsed),
            }
        }
    }

    pub(crate) fn add_timer_at(
        &self,
        deadline: Instant,
        callback: impl FnOnce() + Send + Sync + 'static,
    ) {
        let deadline = deadline - self.clock.base_instant();
        self.with_timer(|timer| timer.add(deadline, callback));
    }

    /// Faultline patch: registers a sleep's timer, cancelled when the sleep goes away.
    pub(crate) fn add_sleep_at(&self, deadline: Instant, waker: &std::task::Waker) -> SleepKey {
        let deadline = deadline - self.clock.base_instant();
        self.with_timer(|timer| timer.add_sleep(deadline, waker))
    }

    /// Faultline patch: a re-polled sleep's new waker; false if its timer is gone.
    pub(crate) fn set_sleep_waker(&self, key: SleepKey, waker: &std::task::Waker) -> bool {
        self.timer.lock().set_waker(key, waker)
    }

    /// Faultline patch: a dropped or reset sleep's timer leaves the heap.
    pub(crate) fn cancel_sleep(&self, key: SleepKey) {
        self.with_timer(|timer| timer.cancel(key));
    }

    /// Faultline patch: changes the timer's heap, then publishes its earliest deadline.
    fn with_timer<T>(&self, change: impl FnOnce(&mut Timer) -> T) -> T {
        let mut timer = self.timer.lock();
        let result = change(&mut timer);
        (self.clock.timer_floor).store(timer.earliest_entry(), Ordering::Relaxed);
        result
    }

    pub(crate) fn add_timer(&self, dur: Duration, callback: impl FnOnce() + Send + Sync + 'static) {
        self.add_timer_at(self.clock.now_instant() + dur, callback);
    }
}

/// Require a `Future` to complete before the specified duration has elapsed.
pub fn timeout<T: Future>(
    duration: Duration,
    future: T,
) -> impl Future<Output = Result<T::Output, error::Elapsed>> {
    let handle = TimeHandle::current();
    handle.timeout(duration, future)
}

/// Advances time.
///
/// Increments the saved `Instant::now()` value by `duration`.
/// Subsequent calls to `Instant::now()` will return the result of the increment.
#[cfg_attr(docsrs, doc(cfg(madsim)))]
pub fn advance(duration: Duration) {
    let handle = TimeHandle::current();
    handle.advance(duration);
}

struct Clock {
    /// Time basis for which mock time is derived.
    base_time: SystemTime,
    base_instant: Instant,
    /// Faultline patch: the amount of mock time which has elapsed, in nanoseconds. Upstream kept
    /// it with the two bases under a spin lock, taken by every clock read (every `Instant::now`,
    /// sleep, timer and trace timestamp); only the executor's thread moves it, so an atomic
    /// serves and the bases need no lock at all. 2^64 ns is 584 years of simulated time.
    advance: AtomicU64,
    /// Faultline patch: the earliest deadline in the timer's heap, in nanoseconds since the
    /// clock's base (`u64::MAX` when empty), kept by every change of the heap: no timer is due
    /// before it, so a clock step short of it need not look at the timer.
    timer_floor: AtomicU64,
}

impl Clock {
    fn new(base_time: SystemTime) -> Self {
        Clock {
            base_time,
            base_instant: unsafe { std::mem::zeroed() },
            advance: AtomicU64::new(0),
            timer_floor: AtomicU64::new(u64::MAX),
        }
    }

    fn set_elapsed(&self, time: Duration) {
        self.advance.store(timer::nanos(time), Ordering::Relaxed);
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.advance.load(Ordering::Relaxed))
    }

    fn advance(&self, duration: Duration) -> Duration {
        let nanos = timer::nanos(duration);
        Duration::from_nanos(self.advance.fetch_add(nanos, Ordering::Relaxed) + nanos)
    }

    fn base_instant(&self) -> Instant {
        self.base_instant
    }

    fn now_instant(&self) -> Instant {
        self.base_instant + self.elapsed()
    }

    fn now_time(&self) -> SystemTime {
        self.base_time + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;

    #[test]
    fn time() {
        let runtime = Runtime::new();
        runtime.block_on(async {
            // sleep for at least 1ms
            let t0 = Instant::now();
            sleep(Duration::default()).await;
            assert!(t0.elapsed() >= Duration::from_millis(1));

            let t0 = Instant::now();
            sleep_until(t0).await;
            assert!(t0.elapsed() >= Duration::from_millis(1));

            let t0 = Instant::now();

            sleep(Duration::from_secs(1)).await;
            assert!(t0.elapsed() >= Duration::from_secs(1));

            sleep_until(t0 + Duration::from_secs(2)).await;
            assert!(t0.elapsed() >= Duration::from_secs(2));

            assert!(
                timeout(Duration::from_secs(2), sleep(Duration::from_secs(1)))
                    .await
                    .is_ok()
            );
            assert!(
                timeout(Duration::from_secs(1), sleep(Duration::from_secs(2)))
                    .await
                    .is_err()
            );
        });
    }

    #[test]
    fn test_advance() {
        let runtime = Runtime::new();
        runtime.block_on(async {
            let t0 = Instant::now();
            advance(Duration::from_secs(1));
            assert!(t0.elapsed() >= Duration::from_secs(1));
        });
    }
}
