//! A catalogue of named durability bugs that the simulation can plant, one per run, to prove
//! that its scenarios catch them (issue 13: `cargo sim catalogue`).
//!
//! Each bug is one `if planted::is(Bug::X)` at the place it breaks a promise. The switch exists
//! only in the simulation build (`--cfg madsim`): in the normal build [`is`] is a `const fn`
//! returning `false`, so the compiler removes every plant point and production can neither
//! carry a planted bug nor pay for the check.
//!
//! A plant is per run, not per process: the audit runs many simulations at once on worker
//! threads, and madsim runs each simulation (every node of it) on the one thread that called
//! `block_on`. So the planted bug is a thread-local that the runner sets on that thread before
//! the simulation starts.

/// A named bug, each breaking one promise the broker makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// acks=all answers before the appended batches are synced: an acknowledged record can be
    /// lost to a power loss.
    AckBeforeSync,
    /// Log recovery and reads accept a batch whose CRC does not match: flipped bits on disk are
    /// served as data.
    SkipCrcCheck,
    /// Consumers are served up to the leader's log end instead of the high watermark: they read
    /// records that a failover or power loss then takes away.
    ServeAboveHighWatermark,
    /// An unclean restart does not skip the offsets that may have been shown before the crash:
    /// an offset an acks=1 producer was told is given to another record.
    ReuseOffsetsAfterCrash,
    /// The group coordinator acknowledges an offset commit before the offsets record is durable
    /// and replicated: a crash turns a committed offset back.
    OffsetCommitBeforeDurable,
    /// Duplicate detection for idempotent producers is off: a retry of a batch already in the
    /// log is refused (or appended twice) instead of answered with its original offsets.
    NoDuplicateDetection,
    /// The leader never shrinks its ISR: a slow or dead follower holds acks=all produces and
    /// the high watermark back forever.
    IsrShrinkDisabled,
    /// A broker registering from a wiped log directory stays in an ISR it was the last member
    /// of: it can be elected with an empty log and its followers truncate to it.
    WipedReplicaStaysInIsr,
    /// The log cleaner keeps the first record of each key and drops the later ones, the latest
    /// included: a compacted topic returns an old value.
    CleanerKeepsFirstRecord,
    /// The log cleaner removes tombstones at once, ignoring `delete.retention.ms`: a consumer
    /// reading the topic within that time misses the delete.
    TombstonesRemovedAtOnce,
    /// A follower whose log diverged from the new leader's does not truncate to the divergence
    /// point: the replicas disagree about what an offset holds.
    FollowerSkipsTruncation,
    /// Every transaction marker is written as COMMIT: aborted transactions become visible to
    /// read_committed consumers.
    MarkersAlwaysCommit,
    /// read_committed fetches are bounded by the high watermark instead of the last stable
    /// offset: consumers see records of transactions not yet decided.
    ReadCommittedBoundedByHighWatermark,
    /// With eligible leader replicas (KIP-966) on, the leader's high watermark moves while the
    /// ISR is below `min.insync.replicas`: a replica that left the ISR then lacks what is
    /// committed, and the controller elects it from the ELR anyway.
    ElrHighWatermarkIgnoresMinIsr,
}

impl Bug {
    /// Every bug, in catalogue order.
    pub const ALL: [Bug; 14] = [
        Bug::AckBeforeSync,
        Bug::SkipCrcCheck,
        Bug::ServeAboveHighWatermark,
        Bug::ReuseOffsetsAfterCrash,
        Bug::OffsetCommitBeforeDurable,
        Bug::NoDuplicateDetection,
        Bug::IsrShrinkDisabled,
        Bug::WipedReplicaStaysInIsr,
        Bug::CleanerKeepsFirstRecord,
        Bug::TombstonesRemovedAtOnce,
        Bug::FollowerSkipsTruncation,
        Bug::MarkersAlwaysCommit,
        Bug::ReadCommittedBoundedByHighWatermark,
        Bug::ElrHighWatermarkIgnoresMinIsr,
    ];

    /// The name on the command line (`--plant ack-before-sync`).
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeSync => "ack-before-sync",
            Bug::SkipCrcCheck => "skip-crc-check",
            Bug::ServeAboveHighWatermark => "serve-above-high-watermark",
            Bug::ReuseOffsetsAfterCrash => "reuse-offsets-after-crash",
            Bug::OffsetCommitBeforeDurable => "offset-commit-before-durable",
            Bug::NoDuplicateDetection => "no-duplicate-detection",
            Bug::IsrShrinkDisabled => "isr-shrink-disabled",
            Bug::WipedReplicaStaysInIsr => "wiped-replica-stays-in-isr",
            Bug::CleanerKeepsFirstRecord => "cleaner-keeps-first-record",
            Bug::TombstonesRemovedAtOnce => "tombstones-removed-at-once",
            Bug::FollowerSkipsTruncation => "follower-skips-truncation",
            Bug::MarkersAlwaysCommit => "markers-always-commit",
            Bug::ReadCommittedBoundedByHighWatermark => "read-committed-bounded-by-hw",
            Bug::ElrHighWatermarkIgnoresMinIsr => "elr-high-watermark-ignores-min-isr",
        }
    }

    /// The promise the bug breaks, in a sentence (the reports print it).
    pub fn breaks(self) -> &'static str {
        match self {
            Bug::AckBeforeSync => "acks=all answers only once the batches are synced",
            Bug::SkipCrcCheck => "a batch whose CRC does not match is never served",
            Bug::ServeAboveHighWatermark => "consumers read only below the high watermark",
            Bug::ReuseOffsetsAfterCrash => "an offset shown before a crash is never reused",
            Bug::OffsetCommitBeforeDurable => {
                "an offset commit is answered only once it is durable and replicated"
            }
            Bug::NoDuplicateDetection => {
                "an idempotent producer's retry gets the original offsets, never a second copy"
            }
            Bug::IsrShrinkDisabled => "a follower that falls behind leaves the ISR",
            Bug::WipedReplicaStaysInIsr => "a replica that lost its log leaves every ISR",
            Bug::CleanerKeepsFirstRecord => "compaction keeps each key's latest record",
            Bug::TombstonesRemovedAtOnce => "a tombstone stays for delete.retention.ms",
            Bug::FollowerSkipsTruncation => {
                "a follower truncates to the leader's log where they diverge"
            }
            Bug::MarkersAlwaysCommit => "an aborted transaction's records stay invisible",
            Bug::ReadCommittedBoundedByHighWatermark => {
                "read_committed consumers read only below the last stable offset"
            }
            Bug::ElrHighWatermarkIgnoresMinIsr => {
                "an eligible leader replica holds everything committed (KIP-966)"
            }
        }
    }

    /// The bug named `name` (as [`Bug::name`] spells it).
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(madsim)]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Whether `bug` is planted in the simulation running on this thread.
#[cfg(madsim)]
pub fn is(bug: Bug) -> bool {
    PLANTED.with(|p| p.get() == Some(bug))
}

/// Never, outside the simulation: the plant points compile away.
#[cfg(not(madsim))]
#[inline(always)]
pub const fn is(_bug: Bug) -> bool {
    false
}

/// Plants `bug` (or nothing) in the simulations this thread runs from now on.
#[cfg(madsim)]
pub fn plant(bug: Option<Bug>) {
    PLANTED.with(|p| p.set(bug));
}

/// The bug planted on this thread.
#[cfg(madsim)]
pub fn planted() -> Option<Bug> {
    PLANTED.with(|p| p.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bug_is_found_by_its_name_and_names_are_distinct() {
        for bug in Bug::ALL {
            assert_eq!(Bug::from_name(bug.name()), Some(bug));
        }
        let names: std::collections::BTreeSet<_> = Bug::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(names.len(), Bug::ALL.len());
        assert_eq!(Bug::from_name("no-such-bug"), None);
    }

    #[cfg(not(madsim))]
    #[test]
    fn no_bug_is_ever_planted_in_the_normal_build() {
        assert!(Bug::ALL.into_iter().all(|b| !is(b)));
    }
}
