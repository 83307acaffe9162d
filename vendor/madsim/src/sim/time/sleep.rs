use super::{timer::SleepKey, *};
use std::{fmt, pin::Pin, task::Poll};

/// Waits until `duration` has elapsed.
pub fn sleep(duration: Duration) -> Sleep {
    let handle = TimeHandle::current();
    handle.sleep(duration)
}

/// Waits until `deadline` is reached.
pub fn sleep_until(deadline: Instant) -> Sleep {
    let handle = TimeHandle::current();
    handle.sleep_until(deadline)
}

/// Future returned by [`sleep`] and [`sleep_until`].
///
/// [`sleep`]: sleep()
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Sleep {
    pub(super) handle: TimeHandle,
    pub(super) deadline: Instant,
    /// Faultline patch: the timer registered for `deadline` by the first pending poll. Later
    /// polls only update its waker (upstream added a new timer on every poll, so a sleep
    /// re-polled in a `select!` loop piled up timers and spurious wake-ups); a reset or a drop
    /// cancels it (it leaves the timer's heap).
    pub(super) entry: Option<SleepKey>,
}

impl Sleep {
    /// Returns the instant at which the future will complete.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Returns `true` if `Sleep` has elapsed.
    ///
    /// A `Sleep` instance is elapsed when the requested duration has elapsed.
    pub fn is_elapsed(&self) -> bool {
        self.handle.clock.now_instant() >= self.deadline
    }

    /// Resets the `Sleep` instance to a new deadline.
    pub fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        if deadline != self.deadline {
            self.cancel();
        }
        self.deadline = deadline;
    }

    fn cancel(&mut self) {
        if let Some(key) = self.entry.take() {
            self.handle.cancel_sleep(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        if self.is_elapsed() {
            self.cancel();
            return Poll::Ready(());
        }
        // A registered timer fires only once the clock reaches the deadline, so a pending sleep's
        // timer is still registered here.
        let registered = match self.entry {
            Some(key) => self.handle.set_sleep_waker(key, cx.waker()),
            None => false,
        };
        if !registered {
            let key = self.handle.add_sleep_at(self.deadline, cx.waker());
            self.entry = Some(key);
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}
