//! The checker's verdict: counts, and every anomaly with the operations that show it.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::history::{Op, OpKind, Outcome, Process};

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The kinds of anomaly; see the module docs of [`crate::checker`] for the exact definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A poll returned a value no send wrote into that partition, or whose send failed.
    PhantomRead,
    /// Two different values at one offset.
    InconsistentOffset,
    /// One value at two offsets.
    Duplicate,
    /// A value known to be in the log (acknowledged, or read) that later reads passed over.
    LostWrite,
    /// An acknowledged value the final read did not return, and no read passed over.
    NeverSeen,
    /// A poll whose offsets go backwards.
    NonMonotonicPoll,
    /// Consecutive reads of one consumer jumped over an offset holding a value.
    SkippedOffset,
    /// One producer's sends with one key, in real-time order, got decreasing offsets.
    KeyOrderViolation,
    /// One producer's sends, in real-time order, got decreasing offsets.
    ProducerOrderViolation,
    /// Different producers' sends, in real-time order, got decreasing offsets.
    OffsetsWentBackwards,
    /// A committed-offset fetch returned less than a commit acknowledged before it.
    CommittedOffsetRegression,
    /// A record below the group's final committed offset that no member of the group returned.
    SkippedByGroup,
    /// An idempotent producer's retry refused with a sequence error although its first
    /// attempt is in the log.
    IdempotentRetryRefused,
    /// A read_committed poll returned a record of a transaction that never committed (G1a).
    AbortedRead,
    /// A read_committed poll returned a record of a transaction before its commit was asked
    /// for (G1b).
    IntermediateRead,
    /// A read_committed poll returned a record at or past the last stable offset its own
    /// fetch reported.
    ReadPastLastStableOffset,
    /// Committed transactions that read each other's writes in a cycle (G1c).
    CircularInformationFlow,
    /// A committed transaction of which a poll returned some records and another passed over
    /// one without returning it.
    PartialTransaction,
    /// A group's committed offset passed an input that only aborted transactions consumed.
    InputCommittedWithoutOutput,
    /// One input consumed by two committed transactions that both committed the group's
    /// offset past it.
    InputCommittedTwice,
    /// Compacted topic: a scan from the log start returned an older value of a key but not
    /// the latest one below the point it read to (no newer record could have replaced it).
    StaleValue,
    /// Compacted topic: a scan from the log start returned nothing of a key whose latest
    /// record below its point was a value (not a tombstone) that nothing newer replaced.
    LatestValueMissing,
    /// Compacted topic: a tombstone was gone from a scan sooner than `delete.retention.ms`
    /// after its send.
    TombstoneRemovedEarly,
    /// Compacted topic: the scenario expected the cleaner to remove records and no scan saw
    /// one removed.
    NotCompacted,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 24] = [
        AnomalyKind::PhantomRead,
        AnomalyKind::InconsistentOffset,
        AnomalyKind::Duplicate,
        AnomalyKind::LostWrite,
        AnomalyKind::NeverSeen,
        AnomalyKind::NonMonotonicPoll,
        AnomalyKind::SkippedOffset,
        AnomalyKind::KeyOrderViolation,
        AnomalyKind::ProducerOrderViolation,
        AnomalyKind::OffsetsWentBackwards,
        AnomalyKind::CommittedOffsetRegression,
        AnomalyKind::SkippedByGroup,
        AnomalyKind::IdempotentRetryRefused,
        AnomalyKind::AbortedRead,
        AnomalyKind::IntermediateRead,
        AnomalyKind::ReadPastLastStableOffset,
        AnomalyKind::CircularInformationFlow,
        AnomalyKind::PartialTransaction,
        AnomalyKind::InputCommittedWithoutOutput,
        AnomalyKind::InputCommittedTwice,
        AnomalyKind::StaleValue,
        AnomalyKind::LatestValueMissing,
        AnomalyKind::TombstoneRemovedEarly,
        AnomalyKind::NotCompacted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::PhantomRead => "phantom_read",
            AnomalyKind::InconsistentOffset => "inconsistent_offset",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::LostWrite => "lost_write",
            AnomalyKind::NeverSeen => "never_seen",
            AnomalyKind::NonMonotonicPoll => "non_monotonic_poll",
            AnomalyKind::SkippedOffset => "skipped_offset",
            AnomalyKind::KeyOrderViolation => "key_order_violation",
            AnomalyKind::ProducerOrderViolation => "producer_order_violation",
            AnomalyKind::OffsetsWentBackwards => "offsets_went_backwards",
            AnomalyKind::CommittedOffsetRegression => "committed_offset_regression",
            AnomalyKind::SkippedByGroup => "skipped_by_group",
            AnomalyKind::IdempotentRetryRefused => "idempotent_retry_refused",
            AnomalyKind::AbortedRead => "aborted_read",
            AnomalyKind::IntermediateRead => "intermediate_read",
            AnomalyKind::ReadPastLastStableOffset => "read_past_lso",
            AnomalyKind::CircularInformationFlow => "circular_information_flow",
            AnomalyKind::PartialTransaction => "partial_transaction",
            AnomalyKind::InputCommittedWithoutOutput => "input_committed_without_output",
            AnomalyKind::InputCommittedTwice => "input_committed_twice",
            AnomalyKind::StaleValue => "stale_value",
            AnomalyKind::LatestValueMissing => "latest_value_missing",
            AnomalyKind::TombstoneRemovedEarly => "tombstone_removed_early",
            AnomalyKind::NotCompacted => "not_compacted",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the run's configuration permits an anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Not permitted: the run fails.
    Violation,
    /// Permitted by the configuration, for this cause.
    Allowed { cause: String },
}

impl Status {
    pub(crate) fn from_cause(cause: Option<String>) -> Status {
        match cause {
            Some(cause) => Status::Allowed { cause },
            None => Status::Violation,
        }
    }
}

/// One operation involved in an anomaly, with what it contributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// What this operation shows, e.g. "acknowledged send", "poll that read past it" (the
    /// roles are fixed words: borrowed, not copied, for the thousands of allowed anomalies a
    /// run with a bit flip at rest may have).
    pub role: Cow<'static, str>,
    /// The operation's id in the history.
    pub op: usize,
    /// "send", "poll", "commit", "fetch-committed", or for transactions "begin-txn",
    /// "send-offsets-to-txn" and "end-txn".
    pub kind: &'static str,
    /// The producer or consumer.
    pub process: Process,
    pub topic: String,
    pub partition: i32,
    /// "ok", "fail: ...", "unknown: ..." or "pending".
    pub outcome: Cow<'static, str>,
    /// The offset and value this operation puts in the picture (its ack, or the record read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// For a poll: where it started, and the first and last offsets it returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returned: Option<[i64; 2]>,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
}

static EMPTY: String = String::new();

impl Evidence {
    pub(crate) fn of(
        op: &Op,
        role: impl Into<Cow<'static, str>>,
        offset: Option<i64>,
        value: Option<u64>,
    ) -> Evidence {
        let outcome = match &op.outcome {
            Outcome::Pending => Cow::Borrowed("pending"),
            Outcome::Ok { .. } => Cow::Borrowed("ok"),
            Outcome::Fail { error, .. } => Cow::Owned(format!("fail: {error}")),
            Outcome::Unknown { reason, .. } => Cow::Owned(format!("unknown: {reason}")),
        };
        let (kind, process, topic, partition, from_offset, returned) = match &op.kind {
            OpKind::Send {
                producer,
                topic,
                partition,
                ..
            } => ("send", *producer, topic, *partition, None, None),
            OpKind::Poll {
                consumer,
                topic,
                partition,
                from_offset,
                records,
                ..
            } => {
                let returned = match (records.first(), records.last()) {
                    (Some(first), Some(last)) => Some([first.0, last.0]),
                    _ => None,
                };
                (
                    "poll",
                    *consumer,
                    topic,
                    *partition,
                    Some(*from_offset),
                    returned,
                )
            }
            OpKind::Commit {
                consumer, offsets, ..
            } => {
                // The partition the evidence is about is the caller's; name the first here.
                let (topic, partition, committed) = offsets
                    .first()
                    .map(|(t, p, o)| (t, *p, Some(*o)))
                    .unwrap_or((&EMPTY, -1, None));
                return Evidence {
                    role: role.into(),
                    op: op.id,
                    kind: "commit",
                    process: *consumer,
                    topic: topic.clone(),
                    partition,
                    outcome,
                    offset: offset.or(committed),
                    value,
                    from_offset: None,
                    returned: None,
                    invoke_ms: op.invoke_ms,
                    complete_ms: op.complete_ms,
                };
            }
            OpKind::FetchCommitted {
                consumer,
                topic,
                partition,
                offset: fetched,
                ..
            } => {
                return Evidence {
                    role: role.into(),
                    op: op.id,
                    kind: "fetch-committed",
                    process: *consumer,
                    topic: topic.clone(),
                    partition: *partition,
                    outcome,
                    offset: offset.or(*fetched),
                    value,
                    from_offset: None,
                    returned: None,
                    invoke_ms: op.invoke_ms,
                    complete_ms: op.complete_ms,
                };
            }
            // A transaction's own operations name no partition (send-offsets names the
            // first of its group's partitions, as a commit does).
            OpKind::BeginTxn { producer, .. } => ("begin-txn", *producer, &EMPTY, -1, None, None),
            OpKind::EndTxn { producer, .. } => ("end-txn", *producer, &EMPTY, -1, None, None),
            OpKind::SendOffsetsToTxn {
                producer, offsets, ..
            } => {
                let (topic, partition) = offsets
                    .first()
                    .map(|(t, p, _)| (t, *p))
                    .unwrap_or((&EMPTY, -1));
                (
                    "send-offsets-to-txn",
                    *producer,
                    topic,
                    partition,
                    None,
                    None,
                )
            }
        };
        Evidence {
            role: role.into(),
            op: op.id,
            kind,
            process,
            topic: topic.clone(),
            partition,
            outcome,
            offset,
            value,
            from_offset,
            returned,
            invoke_ms: op.invoke_ms,
            complete_ms: op.complete_ms,
        }
    }
}

/// One finding: what, where, whether it is allowed, and the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    #[serde(flatten)]
    pub status: Status,
    pub topic: String,
    pub partition: i32,
    /// The offsets involved, ascending.
    pub offsets: Vec<i64>,
    /// The values involved.
    pub values: Vec<u64>,
    /// One sentence saying what happened.
    pub explanation: String,
    pub evidence: Vec<Evidence>,
}

impl Anomaly {
    pub fn is_violation(&self) -> bool {
        self.status == Status::Violation
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Status::Violation => write!(f, "VIOLATION {}", self.kind)?,
            Status::Allowed { cause } => write!(f, "allowed   {} ({cause})", self.kind)?,
        }
        writeln!(
            f,
            " in {}/{}: {}",
            self.topic, self.partition, self.explanation
        )?;
        for e in &self.evidence {
            let who = match e.kind {
                "send" | "begin-txn" | "send-offsets-to-txn" | "end-txn" => "producer",
                _ => "consumer",
            };
            write!(f, "    op {:<6} {} {who} {}", e.op, e.kind, e.process)?;
            // A transaction's begin and end name no partition.
            if !matches!(e.kind, "begin-txn" | "end-txn") {
                write!(f, " {}/{}", e.topic, e.partition)?;
            }
            write!(f, " {}", e.outcome)?;
            if let Some(from) = e.from_offset {
                write!(f, " from {from}")?;
                match e.returned {
                    Some([first, last]) => write!(f, " returned {first}..={last}")?,
                    None => write!(f, " returned nothing")?,
                }
            }
            if let Some(offset) = e.offset {
                write!(f, " offset {offset}")?;
            }
            if let Some(value) = e.value {
                write!(f, " value {value}")?;
            }
            match e.complete_ms {
                Some(done) => write!(f, " at {}..{done} ms", e.invoke_ms)?,
                None => write!(f, " at {}.. ms", e.invoke_ms)?,
            }
            writeln!(f, " — {}", e.role)?;
        }
        Ok(())
    }
}

/// How the operations of the run ended. Indefinite outcomes (`Unknown`, `Pending`) count as
/// unknown, never as failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub operations: usize,
    pub sends: usize,
    pub polls: usize,
    /// Operations that completed ok (sends acknowledged, polls answered).
    pub acknowledged: usize,
    /// Operations that definitely did not happen.
    pub failed: usize,
    /// Operations that may or may not have happened (unknown, pending, indefinite failures).
    pub unknown: usize,
    /// Compacted topics: how many records (distinct offsets known to have held one) scans
    /// from the log start passed over without returning, i.e. saw cleaned away, by topic.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub records_cleaned: std::collections::BTreeMap<String, usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Pass,
    Fail,
}

/// The checker's output: PASS iff no anomaly is a violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub counts: Counts,
    pub violations: usize,
    pub allowed: usize,
    /// Partitions whose final full read completed (never-seen is judged only for those).
    pub final_read_partitions: Vec<TopicPartition>,
    /// Violations first, then allowed anomalies; each group by kind, partition and offset.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// A report of `anomalies`: sorted (violations first, then by kind, partition, offsets and
    /// values), counted, and judged.
    pub fn new(
        counts: Counts,
        final_read_partitions: Vec<TopicPartition>,
        anomalies: Vec<Anomaly>,
    ) -> Report {
        let mut report = Report {
            verdict: Verdict::Pass,
            counts,
            violations: 0,
            allowed: 0,
            final_read_partitions,
            anomalies,
        };
        report.recount();
        report
    }

    /// Re-sorts, recounts and re-judges after a caller changed anomalies (e.g. the runner
    /// allowing losses it can attribute to a fault the checker does not know about).
    pub fn recount(&mut self) {
        self.anomalies.sort_by(|a, b| {
            (
                !a.is_violation(),
                a.kind,
                &a.topic,
                a.partition,
                &a.offsets,
                &a.values,
            )
                .cmp(&(
                    !b.is_violation(),
                    b.kind,
                    &b.topic,
                    b.partition,
                    &b.offsets,
                    &b.values,
                ))
        });
        self.violations = self.anomalies.iter().filter(|a| a.is_violation()).count();
        self.allowed = self.anomalies.len() - self.violations;
        self.verdict = if self.violations == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    pub fn violations(&self) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(|a| a.is_violation())
    }

    pub fn allowed_anomalies(&self) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(|a| !a.is_violation())
    }

    /// The anomalies of one kind.
    pub fn of_kind(&self, kind: AnomalyKind) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "checker: {} ({} violations, {} allowed)",
            if self.passed() { "PASS" } else { "FAIL" },
            self.violations,
            self.allowed
        )?;
        writeln!(
            f,
            "operations {} (sends {}, polls {}): acknowledged {}, failed {}, unknown {}",
            c.operations, c.sends, c.polls, c.acknowledged, c.failed, c.unknown
        )?;
        for kind in AnomalyKind::ALL {
            let (violations, allowed) = self.of_kind(kind).fold((0, 0), |(v, a), x| {
                if x.is_violation() {
                    (v + 1, a)
                } else {
                    (v, a + 1)
                }
            });
            if violations + allowed > 0 {
                writeln!(f, "  {kind}: {violations} violations, {allowed} allowed")?;
            }
        }
        for anomaly in &self.anomalies {
            write!(f, "{anomaly}")?;
        }
        Ok(())
    }
}
