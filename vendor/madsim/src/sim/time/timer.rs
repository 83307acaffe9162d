//! Faultline patch: the simulated clock's timer heap, replacing `naive_timer::Timer`.
//!
//! What differs from naive_timer: a timer registered by a [`Sleep`](super::Sleep) can be
//! cancelled (the sleep was dropped or reset before its deadline), and a cancelled timer neither
//! wakes anyone nor moves the clock to its deadline; equal deadlines fire in the order they were
//! added (naive_timer's heap left that order to the heap's shape).
//!
//! A cancelled timer leaves the heap at once (the heap tracks where each sleep's entry sits), so
//! the heap holds only live timers: every request's timeout, cancelled when the response comes,
//! used to stay in the heap until its deadline reached the top, and a sweep spent 6 % of its time
//! sifting those dead entries. A sleep's waker lives in a slot of the timer, not in an `Arc` of
//! its own: registering a sleep allocates nothing once the slots have grown to the run's peak.

use std::{task::Waker, time::Duration};

/// Names a sleep's registered timer: its slot, and the timer's sequence number, which tells a
/// later registration that reuses the slot apart from this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SleepKey {
    slot: u32,
    seq: u64,
}

/// The slot of a registered sleep: the waker to wake and where its entry sits in the heap.
/// `seq == 0` marks a free slot.
struct SleepSlot {
    waker: Option<Waker>,
    pos: usize,
    seq: u64,
}

enum Callback {
    Once(Box<dyn FnOnce() + Send + Sync>),
    Wake(u32),
}

struct Event {
    deadline: Duration,
    /// Insertion order, so that equal deadlines fire first-in first-out.
    seq: u64,
    callback: Callback,
}

impl Event {
    fn before(&self, other: &Event) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

/// What [`Timer::pop_due`] hands out, to run once the timer is unlocked.
pub(crate) enum Due {
    Call(Box<dyn FnOnce() + Send + Sync>),
    Wake(Option<Waker>),
}

impl Due {
    pub(crate) fn run(self) {
        match self {
            Due::Call(f) => f(),
            Due::Wake(Some(waker)) => waker.wake(),
            Due::Wake(None) => {}
        }
    }
}

/// A binary min-heap on (deadline, seq) whose sleep entries know their position.
#[derive(Default)]
pub(crate) struct Timer {
    heap: Vec<Event>,
    slots: Vec<SleepSlot>,
    free: Vec<u32>,
    seq: u64,
}

impl Timer {
    fn push(&mut self, deadline: Duration, callback: Callback) -> u64 {
        self.seq += 1;
        let pos = self.heap.len();
        self.heap.push(Event {
            deadline,
            seq: self.seq,
            callback,
        });
        self.placed(pos);
        self.sift_up(pos);
        self.seq
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
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(SleepSlot {
                    waker: None,
                    pos: 0,
                    seq: 0,
                });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 live sleeps")
            }
        };
        self.slots[slot as usize].waker = Some(waker.clone());
        let seq = self.push(deadline, Callback::Wake(slot));
        self.slots[slot as usize].seq = seq;
        SleepKey { slot, seq }
    }

    fn live(&mut self, key: SleepKey) -> Option<&mut SleepSlot> {
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
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        true
    }

    /// The sleep is dropped or reset: its timer leaves the heap (nothing if it already fired).
    pub(crate) fn cancel(&mut self, key: SleepKey) {
        let Some(slot) = self.live(key) else {
            return;
        };
        let pos = slot.pos;
        let event = self.remove_at(pos);
        debug_assert!(matches!(event.callback, Callback::Wake(s) if s == key.slot));
        self.release(key.slot);
    }

    /// Removes and returns the first timer due at `now`, if any, for the caller to run with the
    /// timer unlocked (a woken task or a delivered message may drop a sleep, which cancels it).
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Due> {
        if self.heap.first()?.deadline > now {
            return None;
        }
        let event = self.remove_at(0);
        Some(match event.callback {
            Callback::Once(f) => Due::Call(f),
            Callback::Wake(slot) => {
                let waker = self.slots[slot as usize].waker.take();
                self.release(slot);
                Due::Wake(waker)
            }
        })
    }

    /// The deadline of the next timer.
    pub(crate) fn next(&self) -> Option<Duration> {
        self.heap.first().map(|event| event.deadline)
    }

    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.seq = 0;
        s.waker = None;
        self.free.push(slot);
    }

    fn remove_at(&mut self, pos: usize) -> Event {
        let last = self.heap.len() - 1;
        self.heap.swap(pos, last);
        let event = self.heap.pop().expect("a timer at pos");
        if pos < self.heap.len() {
            self.placed(pos);
            let pos = self.sift_up(pos);
            self.sift_down(pos);
        }
        event
    }

    /// Records that the event at `pos` now sits there.
    fn placed(&mut self, pos: usize) {
        if let Callback::Wake(slot) = self.heap[pos].callback {
            self.slots[slot as usize].pos = pos;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.placed(a);
        self.placed(b);
    }

    fn sift_up(&mut self, mut pos: usize) -> usize {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !self.heap[pos].before(&self.heap[parent]) {
                break;
            }
            self.swap(pos, parent);
            pos = parent;
        }
        pos
    }

    fn sift_down(&mut self, mut pos: usize) {
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                return;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].before(&self.heap[left]) {
                right
            } else {
                left
            };
            if !self.heap[child].before(&self.heap[pos]) {
                return;
            }
            self.swap(pos, child);
            pos = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    use std::task::Wake;

    struct Flag(AtomicUsize);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(timer: &mut Timer, now: Duration) {
        while let Some(due) = timer.pop_due(now) {
            due.run();
        }
    }

    /// A reference model: the same timers in a sorted list, cancelled ones removed.
    #[test]
    fn timers_fire_in_deadline_then_insertion_order_and_cancelled_ones_never_fire() {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let mut timer = Timer::default();
        let mut model: Vec<(Duration, u64, usize)> = Vec::new();
        let mut keys = Vec::new();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let mut now = 0;
        for id in 0..5_000usize {
            let deadline = ms(now + rand(50));
            match rand(4) {
                0 => {
                    let fired = fired.clone();
                    timer.add(deadline, move || fired.lock().unwrap().push(id));
                    model.push((deadline, timer.seq, id));
                }
                1 | 2 => {
                    let key = timer.add_sleep(deadline, &waker);
                    model.push((deadline, key.seq, usize::MAX));
                    keys.push(key);
                }
                _ => {
                    if !keys.is_empty() {
                        let key = keys.swap_remove(rand(keys.len() as u64) as usize);
                        timer.cancel(key);
                        model.retain(|&(_, seq, _)| seq != key.seq);
                    }
                }
            }
            if rand(10) == 0 {
                now += rand(20);
                model.sort();
                let due: Vec<_> = model
                    .iter()
                    .filter(|&&(d, _, _)| d <= ms(now))
                    .copied()
                    .collect();
                model.retain(|&(d, _, _)| d > ms(now));
                let woken = flag.0.load(Ordering::Relaxed);
                fired.lock().unwrap().clear();
                drain(&mut timer, ms(now));
                let calls: Vec<usize> = due
                    .iter()
                    .filter(|e| e.2 != usize::MAX)
                    .map(|e| e.2)
                    .collect();
                assert_eq!(*fired.lock().unwrap(), calls);
                let wakes = due.iter().filter(|e| e.2 == usize::MAX).count();
                assert_eq!(flag.0.load(Ordering::Relaxed) - woken, wakes);
                assert_eq!(timer.next(), model.iter().map(|e| e.0).min());
            }
        }
    }

    #[test]
    fn a_slot_reused_by_a_later_sleep_ignores_the_first_sleeps_cancel() {
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let mut timer = Timer::default();
        let first = timer.add_sleep(ms(1), &waker);
        drain(&mut timer, ms(1));
        let second = timer.add_sleep(ms(2), &waker);
        assert_eq!(first.slot, second.slot);
        timer.cancel(first);
        assert!(!timer.set_waker(first, &waker));
        drain(&mut timer, ms(2));
        assert_eq!(flag.0.load(Ordering::Relaxed), 2);
    }
}
