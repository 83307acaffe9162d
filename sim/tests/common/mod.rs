//! Helpers shared by the simulation build's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Counts how often the task running the wrapped future polls it: what the patched madsim's
/// timers and network save is wake-ups, so the tests pin poll counts.
pub struct Counted<F> {
    polls: Arc<AtomicUsize>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// `inner` wrapped, and the count of its polls.
pub fn counted<F: Future>(inner: F) -> (Counted<F>, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let future = Counted {
        polls: polls.clone(),
        inner: Box::pin(inner),
    };
    (future, polls)
}
