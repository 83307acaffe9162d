//! Faultline patch: the simulated clock's timer heap, replacing `naive_timer::Timer`.
//!
//! What differs from naive_timer: a timer registered by a [`Sleep`](super::Sleep) can be
//! cancelled (the sleep was dropped or reset before its deadline), and a cancelled timer neither
//! wakes anyone nor moves the clock to its deadline; equal deadlines fire in the order they were
//! added (naive_timer's heap left that order to the heap's shape).

use std::{cmp::Ordering, collections::BinaryHeap, sync::Arc, task::Waker, time::Duration};

use spin::Mutex;

/// The waker a pending [`Sleep`](super::Sleep) registered for its deadline: one per deadline,
/// however often the sleep is polled. `None` once the sleep is gone (cancelled) or the timer
/// fired.
#[derive(Default)]
pub(crate) struct SleepEntry {
    waker: Mutex<Option<Waker>>,
}

impl SleepEntry {
    /// Stores `waker` as the one to wake, unless it already is.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock();
        match &mut *slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// The sleep is dropped or reset: its timer must do nothing.
    pub(crate) fn cancel(&self) {
        self.waker.lock().take();
    }

    fn is_cancelled(&self) -> bool {
        self.waker.lock().is_none()
    }

    fn fire(&self) {
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

enum Callback {
    Once(Box<dyn FnOnce() + Send + Sync>),
    Wake(Arc<SleepEntry>),
}

struct Event {
    deadline: Duration,
    /// Insertion order, so that equal deadlines fire first-in first-out.
    seq: u64,
    callback: Callback,
}

impl Event {
    fn is_cancelled(&self) -> bool {
        match &self.callback {
            Callback::Once(_) => false,
            Callback::Wake(entry) => entry.is_cancelled(),
        }
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// BinaryHeap is a max-heap: reverse, so the earliest (deadline, seq) is on top.
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

#[derive(Default)]
pub(crate) struct Timer {
    events: BinaryHeap<Event>,
    seq: u64,
}

impl Timer {
    fn push(&mut self, deadline: Duration, callback: Callback) {
        self.seq += 1;
        self.events.push(Event {
            deadline,
            seq: self.seq,
            callback,
        });
    }

    /// Calls `callback` once the clock reaches `deadline`.
    pub(crate) fn add(
        &mut self,
        deadline: Duration,
        callback: impl FnOnce() + Send + Sync + 'static,
    ) {
        self.push(deadline, Callback::Once(Box::new(callback)));
    }

    /// Wakes `entry`'s waker once the clock reaches `deadline`, unless cancelled before.
    pub(crate) fn add_sleep(&mut self, deadline: Duration, entry: Arc<SleepEntry>) {
        self.push(deadline, Callback::Wake(entry));
    }

    /// Fires every timer due at `now`.
    ///
    /// Callbacks run with the timer locked, as in naive_timer: a callback only wakes a task or
    /// hands a message to a socket; it never adds a timer.
    pub(crate) fn expire(&mut self, now: Duration) {
        while let Some(event) = self.events.peek() {
            if event.deadline > now {
                break;
            }
            let event = self.events.pop().expect("peeked");
            match event.callback {
                Callback::Once(f) => f(),
                Callback::Wake(entry) => entry.fire(),
            }
        }
    }

    /// The deadline of the next live timer (cancelled ones on top are discarded).
    pub(crate) fn next(&mut self) -> Option<Duration> {
        while let Some(event) = self.events.peek() {
            if !event.is_cancelled() {
                return Some(event.deadline);
            }
            self.events.pop();
        }
        None
    }
}
