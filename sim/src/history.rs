//! The history of a simulated run: every client operation, invoked and then completed as ok,
//! failed or unknown, with simulated times. Checkers read it after the run (STYLE.md item 10,
//! after Jepsen's Kafka workload).
//!
//! Values are unique per run (`value` is a counter the workload hands out), so a value read
//! back identifies exactly one send. Times are simulated milliseconds since the run started.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// A client process (one producer or consumer of the workload).
pub type Process = u32;

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
