//! The offset reservation: how the log keeps its promise that an offset, once anyone outside the
//! log has seen it, is never given to different data, even after a crash that loses unsynced
//! batches, while skipping no more offsets after that crash than could have been seen.
//!
//! # The argument
//! After a crash the log recovers a prefix of its batches and would continue from the end `D` of
//! that prefix. Reusing an offset `o ≥ D` is harmful only if someone outside the log learned of
//! `o` before the crash: a producer got it in a response, a consumer read its batch, or a high
//! watermark or log end above it was reported. Which offsets can have been seen:
//! - An offset below the durable end (synced) is inside the recovered prefix (`o < D`), whoever
//!   saw it: the disk contract keeps synced bytes. Damage at rest can make synced bytes at the
//!   tail unreadable (a bit flip there looks like a torn write); recovery then takes `D` past
//!   every offset those bytes may hold (`offsets_written_from` in the log), so this holds too.
//! - Under [`FlushPolicy::Durable`] the partition's high watermark is the durable end, so
//!   Fetch, ListOffsets and the admin APIs never show an unsynced offset, and acks=all answers
//!   only after the sync. An unsynced offset leaves the log in two ways only: an acks=1 answer
//!   ([`Log::append_unsynced`]) and a read without a bound past the durable end ([`Log::read`]
//!   with `max_offset: None`). [`Log::append_unexposed`] (acks=all and acks=0) shows nothing.
//! - Under [`FlushPolicy::Lazy`] every append is answered and readable at once, so every
//!   assigned offset may have been seen.
//!
//! The rule, asserted where offsets leave the log: before an unsynced offset is shown, the
//! reservation covers it, and the reservation is durable (in the log checkpoint, written with
//! the atomic recipe) before the offset is shown: every offset shown is below
//! `max(durable end, reserved_offset)`. After an unclean stop the log continues from
//! `max(D, reserved_offset)` and covers the difference with a record-less batch. Hence no offset
//! shown before the crash is reused: either it was durable (below `D`) or reserved.
//!
//! # How far it skips
//! The skip is `reserved_offset - D`: the unsynced offsets that were lost plus the headroom of
//! the reservation. The headroom exists so that not every acks=1 or lazy append pays for a
//! checkpoint write (two syncs): the reservation grows in steps sized by the recent rate of
//! shown offsets, about [`TARGET_INTERVAL_MS`] worth, between [`MIN_STEP`] and the log's
//! `offset_reservation` cap. So:
//! - durable policy, acks=all: nothing is ever reserved, the skip is zero, and the high
//!   watermarks after a crash equal the acknowledged count plus whatever unacknowledged appends
//!   survived;
//! - acks=1 or lazy under load: the skip is the lost unsynced window plus at most one step;
//! - idle: once everything shown is durable, [`Log::tidy_checkpoint`] (the broker's
//!   maintenance calls it) moves the reservation back to the log end, and recovery and clean
//!   shutdown set it to the log end, so an idle partition does not move across an unclean
//!   restart, and a log that goes offline and back (full disk, EIO) does not jump again each
//!   time.
//!
//! [`FlushPolicy::Durable`]: super::FlushPolicy::Durable
//! [`FlushPolicy::Lazy`]: super::FlushPolicy::Lazy
//! [`Log::append_unsynced`]: super::Log::append_unsynced
//! [`Log::append_unexposed`]: super::Log::append_unexposed
//! [`Log::read`]: super::Log::read
//! [`Log::tidy_checkpoint`]: super::Log::tidy_checkpoint

/// The smallest step the reservation grows by.
pub const MIN_STEP: u64 = 16;
/// The reservation aims to be extended (one checkpoint write) about this often under steady load.
pub const TARGET_INTERVAL_MS: i64 = 100;

/// Sizes the reservation's steps from the rate at which offsets were shown. Pure: the log
/// writes the checkpoint and stores the new reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationPace {
    /// When and from which offset the reservation was last extended.
    extended_at_ms: i64,
    extended_from: u64,
    step: u64,
}

impl ReservationPace {
    pub fn new(now_ms: i64, log_end_offset: u64) -> ReservationPace {
        ReservationPace {
            extended_at_ms: now_ms,
            extended_from: log_end_offset,
            step: MIN_STEP,
        }
    }

    /// The reservation to make durable so that every offset below `needed_end` is covered:
    /// `needed_end` plus a step of about [`TARGET_INTERVAL_MS`] of the recent rate, capped by
    /// `max_step`. Records the extension.
    pub fn extend(&mut self, needed_end: u64, now_ms: i64, max_step: u64) -> u64 {
        assert!(max_step >= 1, "a reservation step of zero");
        let elapsed_ms = now_ms.saturating_sub(self.extended_at_ms).max(1) as u64;
        let shown = needed_end.saturating_sub(self.extended_from);
        let estimate = shown.saturating_mul(TARGET_INTERVAL_MS as u64) / elapsed_ms;
        // Halfway between the last step and the new estimate: one burst or one pause does not
        // swing the step by orders of magnitude.
        let step = (self.step / 2 + estimate / 2).clamp(MIN_STEP.min(max_step), max_step);
        self.step = step;
        self.extended_at_ms = now_ms;
        self.extended_from = needed_end;
        let reserved = needed_end + step;
        assert!(
            reserved > needed_end,
            "the reservation covers what is needed"
        );
        reserved
    }

    pub fn step(&self) -> u64 {
        self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_trickle_reserves_the_smallest_step() {
        let mut pace = ReservationPace::new(0, 0);
        let reserved = pace.extend(1, 10_000, 1 << 20);
        assert_eq!(reserved, 1 + MIN_STEP);
    }

    #[test]
    fn a_steady_rate_reserves_about_a_tenth_of_a_second_of_it() {
        // 10 offsets per ms: the step settles near 1,000.
        let mut pace = ReservationPace::new(0, 0);
        let mut end = 0;
        let mut now = 0;
        for _ in 0..20 {
            end += pace.step();
            now += (pace.step() / 10) as i64;
            pace.extend(end, now, 1 << 20);
        }
        assert!((900..=1_100).contains(&pace.step()), "step {}", pace.step());
    }

    #[test]
    fn the_step_never_exceeds_the_cap() {
        let mut pace = ReservationPace::new(0, 0);
        for end in [1_000_000, 2_000_000, 3_000_000] {
            let reserved = pace.extend(end, 0, 50);
            assert!(reserved <= end + 50);
            assert!(reserved > end);
        }
    }
}
