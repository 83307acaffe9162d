//! The clean-shutdown marker (`.clean-shutdown`) and the runs of a data directory.
//!
//! A log closed cleanly (everything synced, indexes and checkpoint written) leaves the marker,
//! and the next open trusts it: no recovery scan, no skipped offsets. A marker must therefore
//! never survive a crash that follows a change to its log, so the open that finds it must
//! remove it durably before the log changes. Done per log, that is one directory sync per
//! partition at every start (10,000 in a row for 10,000 partitions).
//!
//! Runs make that removal durable once for a whole data directory, as Kafka's LogManager does
//! with its one `.kafka_cleanshutdown` per directory, while keeping one marker per log (a crash
//! in the middle of a clean stop still leaves the logs closed before it trusted):
//! - each start of the broker on a data directory is a run with a fresh random id, and before
//!   any log opens, the id is written durably to `<data-dir>/log-run` ([`LogRun`]);
//! - a clean close writes the run's id into the marker, atomically (a temporary file, synced,
//!   renamed): a marker that names a run always has its contents on disk, so no crash leaves
//!   an empty marker (which would read as one written outside any run, below) in its place;
//! - an open trusts a marker that names the previous run (the id `log-run` held before this
//!   start): `log-run` has durably moved past that id, so from now on no start trusts such a
//!   marker again, and removing it needs no sync. A marker that names this run (a log closed
//!   and opened again within the run) is trusted and removed durably, as is an empty marker
//!   (written by a log opened outside any run, or before runs existed). A marker naming any
//!   other run is void: that run's start moved `log-run` past it and it may have changed the log
//!   before a crash, so the log is recovered.
//!
//! A crash during a start, before `log-run` moves, leaves the markers as they were: the logs
//! did not change. A crash after it recovers every log whose marker named the previous run,
//! whether or not this run had opened it yet: correct, if slower than needed.

use crate::random;

/// The marker's contents for a log closed in run `id`: the id and a checksum, so that a torn
/// write never names a run.
pub(crate) fn encode_marker(run: u64) -> Vec<u8> {
    let body = format!("faultline-clean-shutdown run {run:016x}\n");
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}crc {crc:08x}\n").into_bytes()
}

/// What a marker found at open says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    /// Empty: written outside any run (or before runs existed). True; removed durably.
    Unnamed,
    /// Written by a close in run `id`.
    Run(u64),
    /// Unreadable: a torn or damaged marker names no run.
    Damaged,
}

pub(crate) fn decode_marker(bytes: &[u8]) -> Marker {
    if bytes.is_empty() {
        return Marker::Unnamed;
    }
    let Some(text) = std::str::from_utf8(bytes).ok() else {
        return Marker::Damaged;
    };
    let Some((body, crc_line)) = text.rfind("crc ").map(|at| text.split_at(at)) else {
        return Marker::Damaged;
    };
    let crc_ok = u32::from_str_radix(crc_line.trim_start_matches("crc ").trim(), 16)
        .is_ok_and(|stored| stored == crc32c::crc32c(body.as_bytes()));
    let run = body
        .trim_end()
        .strip_prefix("faultline-clean-shutdown run ")
        .and_then(|id| u64::from_str_radix(id, 16).ok());
    match run {
        Some(id) if crc_ok => Marker::Run(id),
        _ => Marker::Damaged,
    }
}

/// The run a log is opened in. See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRun {
    /// The run `log-run` named before this start (`None`: no such file, or unreadable).
    pub previous: Option<u64>,
    /// This run, already durable in `log-run` when a log opens with it.
    pub current: u64,
}

impl LogRun {
    /// A new run after `previous`, with an id unlike it.
    pub fn after(previous: Option<u64>) -> LogRun {
        let mut current = random::random_u64();
        while Some(current) == previous {
            current = random::random_u64();
        }
        LogRun { previous, current }
    }

    /// The contents of `log-run` naming this run.
    pub fn encode(&self) -> Vec<u8> {
        encode_marker(self.current)
    }

    /// The run a `log-run` file names, if it is readable.
    pub fn decode(bytes: &[u8]) -> Option<u64> {
        match decode_marker(bytes) {
            Marker::Run(id) => Some(id),
            Marker::Unnamed | Marker::Damaged => None,
        }
    }
}

/// How an open treats the marker it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The log was closed cleanly and has not changed since: skip the recovery scan.
    pub clean: bool,
    /// The marker's removal must be durable (a directory sync) before the log may change.
    pub sync_removal: bool,
}

/// The verdict on `marker` for a log opened in `run` (`None`: outside any run).
pub(crate) fn judge(marker: Marker, run: Option<LogRun>) -> Verdict {
    let (clean, sync_removal) = match (marker, run) {
        (Marker::Unnamed, _) => (true, true),
        // Damage at rest names no run; removed durably so that whatever it was never returns.
        (Marker::Damaged, _) => (false, true),
        (Marker::Run(id), Some(run)) if Some(id) == run.previous => (true, false),
        (Marker::Run(id), Some(run)) if id == run.current => (true, true),
        (Marker::Run(_), Some(_)) => (false, false),
        // Outside a run nothing says whether that run's marker still holds: recover, and
        // remove it durably, or a later run that trusts the id would trust a changed log.
        (Marker::Run(_), None) => (false, true),
    };
    Verdict {
        clean,
        sync_removal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_its_run_and_a_torn_one_names_none() {
        let bytes = encode_marker(0x1234);
        assert_eq!(decode_marker(&bytes), Marker::Run(0x1234));
        assert_eq!(decode_marker(b""), Marker::Unnamed);
        // Only the final newline may go: the checksum is whole without it.
        for cut in 1..bytes.len() - 1 {
            assert_eq!(
                decode_marker(&bytes[..cut]),
                Marker::Damaged,
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(decode_marker(&flipped), Marker::Damaged);
    }

    #[test]
    fn only_the_previous_runs_markers_are_trusted_without_a_sync() {
        let run = LogRun {
            previous: Some(7),
            current: 8,
        };
        let judged = |marker| {
            let v = judge(marker, Some(run));
            (v.clean, v.sync_removal)
        };
        assert_eq!(judged(Marker::Run(7)), (true, false));
        assert_eq!(judged(Marker::Run(8)), (true, true));
        assert_eq!(judged(Marker::Run(6)), (false, false));
        assert_eq!(judged(Marker::Unnamed), (true, true));
        assert_eq!(judged(Marker::Damaged), (false, true));
        let outside = judge(Marker::Run(7), None);
        assert_eq!((outside.clean, outside.sync_removal), (false, true));
        // A first run (no earlier `log-run`) trusts no run's marker. Its id is written out,
        // not drawn: the simulation build runs this test outside a runtime's randomness.
        let first = LogRun {
            previous: None,
            current: 9,
        };
        assert!(!judge(Marker::Run(7), Some(first)).clean);
    }
}
