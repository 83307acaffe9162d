//! The history of a simulated run: every client operation, invoked and then completed as ok,
//! failed or unknown, with simulated times. Checkers read it after the run (STYLE.md item 10,
//! after Jepsen's Kafka workload).
//!
//! Values are unique per run (`value` is a counter the workload hands out), so a value read
//! back identifies exactly one send. Times are simulated milliseconds since the run started.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// A client process (one producer or consumer of the workload).
pub type Process = u32;

/// One transaction of a transactional producer, unique per run (the workload hands them out
/// like values), so a send, a poll or a send-offsets names exactly one transaction.
pub type TxnId = u64;

/// A consumer's `isolation.level`: what a fetch may return (Kafka's FetchRequest field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Everything below the high watermark, aborted and open transactions included.
    #[default]
    ReadUncommitted,
    /// Only below the last stable offset, without the records of aborted transactions.
    ReadCommitted,
}

impl IsolationLevel {
    pub fn is_read_uncommitted(&self) -> bool {
        *self == IsolationLevel::ReadUncommitted
    }
}

/// How a transaction ended, as its producer learned it from `commit_transaction` or
/// `abort_transaction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnResult {
    /// The coordinator acknowledged the commit: every record of it becomes visible.
    Committed,
    /// Definitely not committed: the abort was acknowledged, or the commit failed with an
    /// abortable error (the producer must abort).
    Aborted,
    /// The producer was fenced (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH): a newer producer with
    /// its transactional id completes a transaction left in PrepareCommit and aborts one left
    /// ongoing, so it may have committed or not.
    Fenced,
    /// Timed out or lost: the transaction may have committed or not.
    Unknown,
}

impl TxnResult {
    /// The operation outcome recording this result of a commit (`commit`) or an abort: a
    /// definite result is ok when it is what was asked and a failure otherwise; fenced and
    /// unknown leave the operation maybe-happened.
    pub fn outcome(self, commit: bool, reason: String, code: Option<i16>) -> Outcome {
        match (self, commit) {
            (TxnResult::Committed, true) | (TxnResult::Aborted, false) => {
                Outcome::Ok { offset: None }
            }
            (TxnResult::Committed, false) | (TxnResult::Aborted, true) => {
                Outcome::fail(reason, code)
            }
            (TxnResult::Fenced | TxnResult::Unknown, _) => Outcome::unknown(reason, code),
        }
    }
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum OpKind {
    /// A produce of one record. `partition` is where the client sent it; `acks` is the
    /// producer's acks setting (0, 1 or -1 for all), which decides what loss the checker allows.
    Send {
        producer: Process,
        topic: String,
        partition: i32,
        key: Option<u64>,
        value: u64,
        acks: i16,
        /// The transaction this send belongs to (a transactional producer's send).
        #[serde(skip_serializing_if = "Option::is_none")]
        txn: Option<TxnId>,
    },
    /// One poll (fetch) of one partition from `from_offset`; `records` is filled at completion:
    /// (offset, value) in the order the poll returned them. A group member's polls carry its
    /// `group`, and its `consumer` id is new for every assignment it receives, so one consumer
    /// id is one uninterrupted walk over a partition.
    Poll {
        consumer: Process,
        topic: String,
        partition: i32,
        from_offset: i64,
        records: Vec<(i64, u64)>,
        group: Option<String>,
        /// The consumer's isolation level (read_uncommitted when not shown).
        #[serde(skip_serializing_if = "IsolationLevel::is_read_uncommitted")]
        isolation: IsolationLevel,
        /// In a consume-transform-produce loop: the transaction whose outputs this poll's
        /// records feed (its inputs).
        #[serde(skip_serializing_if = "Option::is_none")]
        txn: Option<TxnId>,
        /// The fetch answer's bounds, filled at completion when the fetch reported them.
        #[serde(skip_serializing_if = "Option::is_none")]
        bounds: Option<FetchBounds>,
    },
    /// A transactional producer's `begin_transaction` of transaction `txn`.
    BeginTxn {
        producer: Process,
        transactional_id: String,
        txn: TxnId,
    },
    /// `send_offsets_to_transaction`: the consumer group's offsets (topic, partition, next
    /// offset to consume) committed with transaction `txn`, visible only if it commits.
    SendOffsetsToTxn {
        producer: Process,
        txn: TxnId,
        group: String,
        offsets: Vec<(String, i32, i64)>,
    },
    /// `commit_transaction` (`commit`) or `abort_transaction` of transaction `txn`; `result`
    /// is filled at completion (`None` while pending). The operation's outcome agrees with it
    /// (see [`TxnResult::outcome`]).
    EndTxn {
        producer: Process,
        txn: TxnId,
        commit: bool,
        result: Option<TxnResult>,
    },
    /// An OffsetCommit of a group member (or the runner): Ok = acknowledged (durable), Fail =
    /// refused (not applied), Unknown = may have been applied.
    Commit {
        consumer: Process,
        group: String,
        /// (topic, partition, offset): the next offset to consume, as Kafka commits it.
        offsets: Vec<(String, i32, i64)>,
    },
    /// An OffsetFetch of one partition's committed offset; `offset` is filled at completion
    /// (`None`: nothing committed). Members fetch when they are assigned a partition; the runner
    /// fetches once more at the end.
    FetchCommitted {
        consumer: Process,
        group: String,
        topic: String,
        partition: i32,
        offset: Option<i64>,
    },
}

/// What one fetch answer said about its partition besides the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FetchBounds {
    pub high_watermark: i64,
    /// The last stable offset; Kafka answers -1 (unknown) to old fetch versions, recorded as
    /// `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_stable_offset: Option<i64>,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Still running when the history was taken (treated like `Unknown`).
    Pending,
    /// Acknowledged. For a send, the offset the broker assigned.
    Ok { offset: Option<i64> },
    /// Definitely did not happen. `code` is the Kafka error code the broker refused with, when
    /// one answered; the client decided from it (and the acks) that nothing was written.
    Fail {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<i16>,
    },
    /// May or may not have happened: timeouts, lost connections, ambiguous errors. `code` is the
    /// Kafka error code of the last answer, if there was one.
    Unknown {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<i16>,
    },
}

impl Outcome {
    pub fn fail(error: String, code: Option<i16>) -> Outcome {
        Outcome::Fail { error, code }
    }

    pub fn unknown(reason: String, code: Option<i16>) -> Outcome {
        Outcome::Unknown { reason, code }
    }

    /// The Kafka error code behind a `Fail` or `Unknown`, as a value.
    pub fn code(&self) -> Option<i16> {
        match self {
            Outcome::Fail { code, .. } | Outcome::Unknown { code, .. } => *code,
            Outcome::Pending | Outcome::Ok { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Op {
    /// Position in the history, in invocation order.
    pub id: usize,
    pub kind: OpKind,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    pub outcome: Outcome,
}

/// The whole history, in invocation order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct History {
    pub ops: Vec<Op>,
    /// The values whose sends were tombstones (a key with a null value; the value travels in
    /// a header): what the compaction checker may find removed after `delete.retention.ms`.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub tombstones: BTreeSet<u64>,
}

impl History {
    pub fn sends(&self) -> impl Iterator<Item = &Op> {
        self.ops
            .iter()
            .filter(|op| matches!(op.kind, OpKind::Send { .. }))
    }

    pub fn commits(&self) -> impl Iterator<Item = &Op> {
        self.ops
            .iter()
            .filter(|op| matches!(op.kind, OpKind::Commit { .. }))
    }

    pub fn fetches(&self) -> impl Iterator<Item = &Op> {
        self.ops
            .iter()
            .filter(|op| matches!(op.kind, OpKind::FetchCommitted { .. }))
    }

    pub fn polls(&self) -> impl Iterator<Item = &Op> {
        self.ops
            .iter()
            .filter(|op| matches!(op.kind, OpKind::Poll { .. }))
    }
}

/// Records operations as they happen; cheap to clone into every client task.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    inner: Arc<Mutex<History>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// A recorder with room for `ops` operations: the list of a run grows to thousands of
    /// large entries, each doubling moving them all.
    pub fn with_capacity(ops: usize) -> Recorder {
        let recorder = Recorder::default();
        recorder
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ops
            .reserve(ops);
        recorder
    }

    /// Records an invocation; returns its id for [`Recorder::complete`].
    pub fn invoke(&self, kind: OpKind, now_ms: u64) -> usize {
        let mut history = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = history.ops.len();
        history.ops.push(Op {
            id,
            kind,
            invoke_ms: now_ms,
            complete_ms: None,
            outcome: Outcome::Pending,
        });
        id
    }

    /// Marks `value` as sent as a tombstone (call before its send is invoked).
    pub fn tombstone(&self, value: u64) {
        let mut history = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        history.tombstones.insert(value);
    }

    /// Records how operation `id` ended. For a poll, `records` replaces the (empty) record list.
    pub fn complete(
        &self,
        id: usize,
        outcome: Outcome,
        records: Option<Vec<(i64, u64)>>,
        now_ms: u64,
    ) {
        let mut history = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let op = &mut history.ops[id];
        assert_eq!(
            op.outcome,
            Outcome::Pending,
            "operation {id} completed twice"
        );
        op.outcome = outcome;
        op.complete_ms = Some(now_ms);
        if let (OpKind::Poll { records: slot, .. }, Some(records)) = (&mut op.kind, records) {
            *slot = records;
        }
    }

    /// Records how a committed-offset fetch ended, with the offset it returned.
    pub fn complete_fetch(&self, id: usize, outcome: Outcome, fetched: Option<i64>, now_ms: u64) {
        let mut history = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let op = &mut history.ops[id];
        assert_eq!(
            op.outcome,
            Outcome::Pending,
            "operation {id} completed twice"
        );
        op.outcome = outcome;
        op.complete_ms = Some(now_ms);
        if let OpKind::FetchCommitted { offset, .. } = &mut op.kind {
            *offset = fetched;
        }
    }

    /// Records how a poll ended, with its records and the bounds its fetch answer reported.
    pub fn complete_poll(
        &self,
        id: usize,
        outcome: Outcome,
        records: Vec<(i64, u64)>,
        fetched_bounds: Option<FetchBounds>,
        now_ms: u64,
    ) {
        self.complete(id, outcome, Some(records), now_ms);
        let mut history = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let OpKind::Poll { bounds, .. } = &mut history.ops[id].kind {
            *bounds = fetched_bounds;
        }
    }

    /// Records how a commit or abort of a transaction ended: `reason` and `code` explain a
    /// result other than the one asked for.
    pub fn complete_txn(
        &self,
        id: usize,
        txn_result: TxnResult,
        reason: String,
        code: Option<i16>,
        now_ms: u64,
    ) {
        let mut history = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let op = &mut history.ops[id];
        assert_eq!(
            op.outcome,
            Outcome::Pending,
            "operation {id} completed twice"
        );
        let OpKind::EndTxn { commit, result, .. } = &mut op.kind else {
            panic!("operation {id} is not a commit or abort of a transaction");
        };
        *result = Some(txn_result);
        op.outcome = txn_result.outcome(*commit, reason, code);
        op.complete_ms = Some(now_ms);
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> History {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` on the history so far, without copying it (progress lines count from it).
    pub fn with<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Moves the history out, leaving the recorder empty: the end of a run, after which no
    /// operation is recorded (a later `complete` of an earlier id would panic).
    pub fn take(&self) -> History {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
