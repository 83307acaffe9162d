//! A node's own wall clock, which the nemesis can skew.
//!
//! Every simulated broker reads wall-clock time (record timestamps, LogAppendTime, segment age,
//! retention, group session and offset expiry, and later replication timeouts and leases)
//! through the [`broker::clock::Clock`] it was built with. The harness gives each broker a
//! [`SkewedClock`] of its own and keeps it outside the node, so the skew outlives restarts, as
//! a wrong hardware clock does.
//!
//! # Fault model
//! A skewed clock reads true (simulated) time plus an offset, forwards or backwards, and can
//! jump at any moment (an NTP step, a VM resumed from a snapshot, an operator's `date -s`).
//! Tokio's timers are not moved: they measure durations on the monotonic clock, which skew
//! does not touch (as on a real machine). What the broker must survive: timestamps out of
//! order across brokers and across a jump, and wall-clock deadlines that pass early or late;
//! what it must not do is break an ordering promise or lose acknowledged data because of
//! them. Outside the model: a clock that runs at a wrong rate.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use broker::clock::{Clock, SystemClock};

/// True time plus an offset the nemesis moves. Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct SkewedClock {
    offset_ms: Arc<AtomicI64>,
}

impl SkewedClock {
    pub fn new() -> SkewedClock {
        SkewedClock::default()
    }

    /// Moves the clock to true time plus `offset_ms` (0: back to true time).
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.offset_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_reads_true_time_plus_its_offset_and_its_clones_move_with_it() {
        let clock = SkewedClock::new();
        let seen_by_the_broker = clock.clone();
        clock.set_offset_ms(3_600_000);
        let truth = SystemClock.now_ms();
        let skewed = seen_by_the_broker.now_ms();
        // Both reads are of a clock that moves forward; an hour of skew dwarfs the gap.
        assert!(skewed - truth >= 3_600_000 - 1_000, "{skewed} vs {truth}");
        assert!(skewed - truth <= 3_600_000 + 1_000, "{skewed} vs {truth}");
        clock.set_offset_ms(0);
        assert!((seen_by_the_broker.now_ms() - SystemClock.now_ms()).abs() <= 1_000);
    }
}
