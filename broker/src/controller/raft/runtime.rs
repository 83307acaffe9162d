//! openraft's [`AsyncRuntime`] on the madsim-tokio facade.
//!
//! openraft's own `TokioRuntime` calls real `tokio::spawn` and real tokio timers, which panic
//! inside the simulator. Everything here goes through `tokio` as this crate sees it (plain tokio
//! in the normal build, madsim in the simulation build), so the same quorum code runs in both,
//! and its randomness (election timeouts) comes from the runtime's seeded source.

use std::fmt;
use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend};

/// The runtime the metadata quorum runs on (see the module doc).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BrokerRuntime;

/// The runtime's monotonic instant (virtual under the simulator). A newtype because openraft's
/// `Instant` trait is foreign and so are both builds' instant types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuntimeInstant(tokio::time::Instant);

/// The runtime's monotonic now: virtual under the simulator, where `tokio::time::Instant` is
/// std's (which madsim intercepts), hence the allowance clippy needs in that build.
#[allow(clippy::disallowed_methods)]
pub fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

impl openraft::Instant for RuntimeInstant {
    fn now() -> RuntimeInstant {
        RuntimeInstant(now())
    }
}

impl Add<Duration> for RuntimeInstant {
    type Output = RuntimeInstant;
    fn add(self, rhs: Duration) -> RuntimeInstant {
        RuntimeInstant(self.0 + rhs)
    }
}

impl AddAssign<Duration> for RuntimeInstant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for RuntimeInstant {
    type Output = RuntimeInstant;
    fn sub(self, rhs: Duration) -> RuntimeInstant {
        RuntimeInstant(self.0 - rhs)
    }
}

impl Sub<RuntimeInstant> for RuntimeInstant {
    type Output = Duration;
    fn sub(self, rhs: RuntimeInstant) -> Duration {
        self.0.saturating_duration_since(rhs.0)
    }
}

impl SubAssign<Duration> for RuntimeInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs;
    }
}

/// A future bounded by a deadline. madsim's own timeout future cannot be named, so this one is
/// built from a sleep; both halves are boxed so no pin projection is needed.
pub struct Timeout<R, F: Future<Output = R>> {
    future: Pin<Box<F>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

/// The deadline of a [`Timeout`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl<R, F: Future<Output = R>> Future for Timeout<R, F> {
    type Output = Result<R, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The future first: one that is ready at its deadline still counts.
        if let Poll::Ready(value) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(value));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The one-shot channel openraft uses to answer its callers.
pub struct OneshotSender<T>(tokio::sync::oneshot::Sender<T>);

impl<T> fmt::Debug for OneshotSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneshotSender")
    }
}

impl<T: OptionalSend> openraft::async_runtime::AsyncOneshotSendExt<T> for OneshotSender<T> {
    fn send(self, value: T) -> Result<(), T> {
        self.0.send(value)
    }
}

/// The runtime's RNG: madsim's seeded one in the simulation build.
#[cfg(madsim)]
pub type RuntimeRng = madsim::rand::GlobalRng;
#[cfg(not(madsim))]
pub type RuntimeRng = madsim::rand::rngs::ThreadRng;

impl AsyncRuntime for BrokerRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = RuntimeInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<R, T>;
    type ThreadLocalRng = RuntimeRng;
    type OneshotSender<T: OptionalSend> = OneshotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: RuntimeInstant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.0)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future: Box::pin(future),
            sleep: Box::pin(tokio::time::sleep(duration)),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: RuntimeInstant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future: Box::pin(future),
            sleep: Box::pin(tokio::time::sleep_until(deadline.0)),
        }
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    #[allow(clippy::disallowed_methods)]
    fn thread_rng() -> RuntimeRng {
        madsim::rand::thread_rng()
    }

    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (OneshotSender(tx), rx)
    }
}
