//! Faultline patch: the simulated clock's timer heap, replacing `naive_timer::Timer`.
//!
//! What differs from naive_timer: a timer registered by a [`Sleep`](super::Sleep) can be
//! cancelled (the sleep was dropped or reset before its deadline), and a cancelled timer neither
//! wakes anyone nor moves the clock to its deadline; equal deadlines fire in the order they were
//! added (naive_timer's heap left that order to the heap's shape).
//!
//! Cancelled timers are at most about half the heap: every request's timeout, cancelled when the
//! response comes, used to stay in the heap until its deadline reached the top (a 30 s timeout
//! for a 2 ms round trip), and a sweep spent 6 % of its time sifting those dead entries. Once
//! the dead outnumber the live, the heap is rebuilt from the live ones. A timer's callback or
//! waker lives in a slot of the timer, so a heap entry is 24 bytes and registering a sleep
//! allocates nothing once the slots have grown to the run's peak.

use std::{cmp::Ordering, collections::BinaryHeap, task::Waker, time::Duration};

/// Names a sleep's registered timer: its slot, and the timer's sequence number, which tells a
/// later registration that reuses the slot apart from this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SleepKey {
    slot: u32,
    seq: u64,
}

enum Callback {
    Once(Box<dyn FnOnce() + Send + Sync>),
    Wake(Option<Waker>),
}

/// What a timer does when due; `seq == 0` marks a free slot (a fired or cancelled timer).
struct Slot {
    seq: u64,
    callback: Option<Callback>,
}

/// A heap entry: the deadline in nanoseconds since the clock's base, the insertion order (so
/// that equal deadlines fire first-in first-out), and the slot. Dead when the slot's `seq` no
/// longer matches.
#[derive(PartialEq, Eq)]
struct Event {
    at: u64,
    seq: u64,
    slot: u32,
}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// BinaryHeap is a max-heap: reverse, so the earliest (deadline, seq) is on top.
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// What [`Timer::pop_due`] hands out, to run once the timer is unlocked.
pub(crate) struct Due(Callback);

impl Due {
    pub(crate) fn run(self) {
        match self.0 {
            Callback::Once(f) => f(),
            Callback::Wake(Some(waker)) => waker.wake(),
            Callback::Wake(None) => {}
        }
    }
}

pub(crate) fn nanos(deadline: Duration) -> u64 {
    u64::try_from(deadline.as_nanos()).expect("a deadline within 584 years of the start")
}

#[derive(Default)]
pub(crate) struct Timer {
    heap: BinaryHeap<Event>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Heap entries whose timer was cancelled.
    dead: usize,
    seq: u64,
}

impl Timer {
    fn push(&mut self, deadline: Duration, callback: Callback) -> SleepKey {
        self.seq += 1;
        let seq = self.seq;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Slot {
                    seq,
                    callback: Some(callback),
                };
                slot
            }
            None => {
                self.slots.push(Slot {
                    seq,
                    callback: Some(callback),
                });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 live timers")
            }
        };
        self.heap.push(Event {
            at: nanos(deadline),
            seq,
            slot,
        });
        SleepKey { slot, seq }
    }

    /// Calls `callback` once the clock reaches `deadline`.
    pub(crate) fn add(
        &mut self,
        deadline: Duration,
        callback: impl FnOnce() + Send + Sync + 'static,
    ) {
        self.push(deadline, Callback::Once(Box::new(callback)));
    }

    /// Wakes `waker` once the clock reaches `deadline`, unless cancelled before.
    pub(crate) fn add_sleep(&mut self, deadline: Duration, waker: &Waker) -> SleepKey {
        self.push(deadline, Callback::Wake(Some(waker.clone())))
    }

    fn live(&mut self, key: SleepKey) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.slot as usize)
            .filter(|slot| slot.seq == key.seq)
    }

    /// Replaces the waker of `key`'s timer with `waker`, unless it would wake the same task.
    /// Returns false when the timer is no longer registered (it fired).
    pub(crate) fn set_waker(&mut self, key: SleepKey, waker: &Waker) -> bool {
        let Some(slot) = self.live(key) else {
            return false;
        };
        match &mut slot.callback {
            Some(Callback::Wake(Some(w))) if w.will_wake(waker) => {}
            Some(Callback::Wake(w)) => *w = Some(waker.clone()),
            _ => unreachable!("a sleep's slot holds a waker"),
        }
        true
    }

    /// The sleep is dropped or reset: its timer will do nothing (nothing if it already fired).
    pub(crate) fn cancel(&mut self, key: SleepKey) {
        if self.live(key).is_none() {
            return;
        }
        self.release(key.slot);
        self.dead += 1;
        if self.dead > 64 && self.dead > self.heap.len() / 2 {
            let slots = &self.slots;
            self.heap
                .retain(|event| slots[event.slot as usize].seq == event.seq);
            self.dead = 0;
        }
    }

    fn release(&mut self, slot: u32) -> Option<Callback> {
        let s = &mut self.slots[slot as usize];
        s.seq = 0;
        self.free.push(slot);
        s.callback.take()
    }

    /// Drops cancelled entries from the top; the top is then live, if any.
    fn settle(&mut self) -> Option<&Event> {
        loop {
            let event = self.heap.peek()?;
            if self.slots[event.slot as usize].seq == event.seq {
                // Reborrow: the checker cannot see that the loop ends here.
                return self.heap.peek();
            }
            self.heap.pop();
            self.dead -= 1;
        }
    }

    /// Removes and returns the first timer due at `now`, if any, for the caller to run with the
    /// timer unlocked (a woken task or a delivered message may drop a sleep, which cancels it).
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Due> {
        if self.settle()?.at > nanos(now) {
            return None;
        }
        let event = self.heap.pop().expect("settled on a live timer");
        let callback = self.release(event.slot).expect("a live timer has a callback");
        Some(Due(callback))
    }

    /// Faultline patch: the earliest deadline in the heap, cancelled or not (`u64::MAX` when
    /// empty): no timer is due before it.
    pub(crate) fn earliest_entry(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |event| event.at)
    }

    /// The deadline of the next live timer (cancelled ones on top are discarded).
    pub(crate) fn next(&mut self) -> Option<Duration> {
        self.settle().map(|event| Duration::from_nanos(event.at))
    }
}
