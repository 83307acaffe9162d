//! # The offline history checker
//!
//! Reads a [`History`] after a run and reports every anomaly, after Jepsen's Kafka workload
//! (`jepsen/src/jepsen/tests/kafka.clj`), adapted to per-partition logs: values are unique per
//! run, so a value read back names exactly one send, and every partition is a log of offsets,
//! each holding at most one value. [`check`] returns a [`Report`]: counts, and each [`Anomaly`]
//! with its kind, whether the run's [`Allowances`] permit it (and why), and the operations,
//! offsets, values and simulated times that show it. PASS iff no anomaly is a violation.
//!
//! ## What the checker knows
//! - **Outcomes.** A send is *acknowledged* (`Ok`, with the offset the broker assigned; acks=0
//!   gives none), *failed* (`Fail`: definitely not written) or *indefinite* (`Unknown` or
//!   `Pending`, see [`is_indefinite`]): maybe written, never counted as failed. The client
//!   decides which from the Kafka error code (kept beside the text in the history); the checker
//!   never reads error text. Only polls that completed ok are used.
//! - **The observed log** of a partition: offset → values, from two sources: acknowledgements
//!   (an acked send places its value at its offset) and reads (a poll places each record it
//!   returned). A value *exists at* an offset when some source places it there; an offset no
//!   source names is empty, which is fine (the broker may leave offset ranges empty after a
//!   crash).
//! - **The final read**: the runner heals everything, then polls every partition from the log
//!   start as [`FINAL_READER`]. A partition *has a final read* when that consumer polled it and
//!   every one of its polls there completed ok.
//! - A poll *passes over* offset `o` when it started at or before `o` and returned a record at
//!   `o` or above: a value at `o` should have been in it.
//!
//! ## Anomalies
//! Each is a violation unless an allowance says otherwise.
//! - **phantom_read** — a poll returned a value that no send wrote, or whose send went to
//!   another partition, or whose send definitely failed. One per partition and value. Always
//!   a violation. (A record of an aborted *transaction* is an `aborted_read`, below.)
//! - **inconsistent_offset** — an offset at which two different values exist, from any mix of
//!   acknowledgements and reads (an ack at 5 says `a`, a poll at 5 returned `b`). Always a
//!   violation: offsets are never reused, not even after a loss the configuration permits.
//! - **duplicate** — one value existing at two or more offsets of a partition. Allowed by
//!   `duplicates_from_non_idempotent_retry`.
//! - **lost_write** — a value known to be in the log that is later missing: either (a) an
//!   acknowledged send whose value no poll ever returned although some poll passed over its
//!   acknowledged offset, or (b) a value some poll returned that the final read did not. Allowed
//!   when the loss of its send is (see below).
//! - **never_seen** — in a partition with a final read, an acknowledged send whose value no poll
//!   (the final read included) ever returned and that is not a lost write: no poll passed over
//!   its offset (the log's tail was cut), or it has no offset (acks=0). Allowed when the loss of
//!   its send is.
//! - **non_monotonic_poll** — a poll returned a record below its `from_offset`, or at an offset
//!   not above the record before it. `from_offset` is the consumer's position, so a poll starting
//!   before the previous one's end is a seek back and fine; a poll starting at or after it that
//!   returns records before it is this anomaly (the previous poll is then named). One per poll,
//!   at the first place it goes backwards. Always a violation.
//! - **skipped_offset** — a consumer jumped over offsets at which a value exists: between the
//!   start of a poll and its first record, between two consecutive records of a poll, or between
//!   the end of a consumer's poll (past its last record) and the start of its next poll of the
//!   partition. One per jump. Allowed only when every skipped value is absent from the final
//!   read (if there is one) and its loss is allowed: the consumer skipped what was lost.
//! - **Real-time order.** Send A was acknowledged at offset `a`, then (A completed before B was
//!   invoked) send B was acknowledged at offset `b < a`, both in the same partition: the log
//!   went backwards. Each B is reported once, with the most specific kind that applies, naming
//!   the A with the highest offset:
//!   - **key_order_violation** — A and B from the same producer with the same key;
//!   - **producer_order_violation** — from the same producer (any keys);
//!   - **offsets_went_backwards** — from different producers.
//!
//!   Violations (`b == a` with different values is an inconsistent offset), except where
//!   `offset_reuse_after_loss` is set and A's or B's acknowledged copy is absent from the final
//!   read and its loss is allowed: a leader change cut that acknowledgement's log back, so the
//!   next leader assigned A's offset again, or B was acknowledged by a leader that never had A
//!   (a deposed or cut-off leader taking acks=1 writes) and later truncated.
//! - **committed_offset_regression** — for one group and partition, a committed-offset fetch
//!   that completed ok returned `f` (nothing committed counts as -1) although a commit of that
//!   group covering that partition had been acknowledged at `m > f` before the fetch was invoked
//!   (the commit completed before the fetch began). Not an anomaly when `f` is the offset of
//!   another commit of that group and partition that was not definitely refused (ok, unknown,
//!   pending or indefinite), could have been applied after the `m` commit (it had not completed
//!   when the `m` commit was invoked) and before the fetch answered (it was invoked by then):
//!   commits are last-writer-wins, and Kafka lets a member commit a lower offset. One per fetch,
//!   naming the highest `m` commit not so excused. Always a violation, except that a fetch
//!   finding nothing is allowed by `offsets_expire_after_ms` when, before it was invoked and
//!   after the group's last acknowledged commit completed, the group had no commit or poll
//!   running for more than that long (from one op's completion to the next one's invocation, or
//!   the fetch's): the offsets expired after the group emptied, and stay gone until a commit
//!   stores one again (a member that comes back after the group was empty that long finds
//!   nothing, as in Kafka).
//! - **skipped_by_group** — in a partition with a final read, a value the final read found at
//!   an offset below the group's final committed offset that no poll of the group (any member,
//!   any assignment) ever returned: the group committed past a record it never processed. The
//!   final committed offset is what the last ok fetch by [`FINAL_READER`] returned (the runner
//!   fetches it after every member closed); a group and partition without one, or for which it
//!   found nothing committed, is not judged. One per value. Allowed when the loss of its send is.
//! - **idempotent_retry_refused** — a send that did not end acknowledged, whose last answer
//!   was OUT_OF_ORDER_SEQUENCE_NUMBER or DUPLICATE_SEQUENCE_NUMBER (only idempotent producers
//!   get them), although the final read has its value: its first attempt was appended and not
//!   lost, and Kafka answers a retry of a batch it holds with the original offset. One per
//!   send. Always a violation (a broker without duplicate detection refuses every such retry,
//!   and a client that reports them unknown would otherwise hide it).
//!
//! ## Transactions
//! A transactional producer's operations name their transaction ([`crate::history::TxnId`],
//! unique per run): its sends carry it, its consume-transform-produce input polls carry it, and
//! it has send-offsets-to-transaction operations and a commit or abort whose answer is
//! [`TxnResult`](crate::history::TxnResult) Committed, Aborted, Fenced or Unknown. A poll
//! records its consumer's isolation level and, when the fetch reported them, the high
//! watermark and last stable offset (LSO). A transaction's **fate**:
//! - *committed* — an end answered Committed; or its commit was fenced, unknown or pending and
//!   a read_committed poll returned one of its records (the read reveals the commit; were it
//!   aborted, that read would be wrong, and is judged as committed consistently);
//! - *aborted* (never committed) — an end answered Aborted (an acknowledged abort, or a commit
//!   refused with an abortable error), or no commit was ever asked for;
//! - *indefinite* — otherwise: it may have committed or not.
//!
//! Records of transactions that are not committed are not expected by read_committed readers:
//! a read_committed poll passing over one, a read_committed final read or group missing one,
//! is no `lost_write`, `never_seen`, `skipped_offset` or `skipped_by_group`.
//!
//! - **aborted_read** (G1a) — a read_committed poll returned a record of an aborted
//!   transaction. One per transaction, partition and isolation level. A violation; allowed for
//!   read_uncommitted polls (Kafka returns aborted records to them). A transaction whose commit
//!   was fenced or unknown is not aborted: reading it is excused (the read reveals its commit).
//! - **intermediate_read** (G1b) — a read_committed poll returned a record of a transaction
//!   that committed or may have, and the poll completed before that transaction's commit was
//!   invoked: it read a transaction still open. One per transaction and partition. Always a
//!   violation; read_uncommitted polls are not judged (they read open transactions by design).
//! - **read_past_lso** — a read_committed poll returned a record at or past the last stable
//!   offset its own fetch answer reported. One per poll. Always a violation; a poll whose fetch
//!   reported no LSO is not judged.
//! - **circular_information_flow** (G1c over write-read dependencies) — committed transactions
//!   T1 → T2 → … → T1, where each reads (an input poll of it returned) a record the previous one
//!   wrote. One per cycle, naming each read. A violation when every read in the cycle is
//!   read_committed; allowed when one is read_uncommitted (that reader may see a transaction
//!   before it commits). Aborted and indefinite transactions are not part of the graph.
//! - **partial_transaction** — a committed transaction some of whose records a poll returned,
//!   while a poll passed over the offset of another of its records (acknowledged there, or
//!   read there by someone) without returning it: visible in part, or lost in part. One per
//!   transaction and partition of the missing records. Allowed when the loss of every missing
//!   record is (the loss rules below); the missing records' losses are reported as such too.
//! - **input_committed_without_output** — consume-transform-produce: an input record (an
//!   input poll of a transaction that sent offsets for a group returned it) below the group's
//!   final committed offset (as for `skipped_by_group`) whose consuming transactions all
//!   aborted: the offset moved past an input whose output never committed. One per input.
//!   Always a violation; a consuming transaction that committed or may have excuses it.
//! - **input_committed_twice** — an input record consumed by two committed transactions that
//!   each sent the group an offset past it: its output is in both. One per input. Always a
//!   violation; an indefinite or aborted second consumer excuses it.
//!
//! ## Compacted topics
//! On a topic [`Allowances::compacted_topics`] names, the cleaner removes records a newer one
//! of their key replaced, and tombstones after `delete.retention.ms`. A record missing from a
//! read is then no `lost_write`, `never_seen` or `skipped_offset` when a newer record of its key
//! is known at a higher offset, or when it is a tombstone; scans from the log start are judged
//! instead (`compaction` module docs): **stale_value**, **latest_value_missing**,
//! **tombstone_removed_early**, and **not_compacted** when the run expected cleanings and saw
//! none. Offsets never change there either (`inconsistent_offset`, `duplicate`).
//!
//! ## When a loss is allowed
//! The loss of a send (a lost write, a never-seen record, a skip over it by a consumer or by a
//! group) is allowed when
//! - `acks0_or_acks1_loss_on_crash` is set, the send's `acks` is 0 or 1, and one of its crashes
//!   could have dropped it; or
//! - `lazy_flush_loss_on_power_loss` is set and one of its power losses could have dropped it.
//!
//! "Could have dropped it" is [`LossAllowance`]'s rule: the crash came after the send was invoked
//! and within the unsynced window after the send was certainly appended (its acknowledgement or
//! the first read returning it). The cause in the report names the allowance and the crash.

mod allowances;
mod compaction;
mod groups;
mod idempotence;
mod log;
mod model;
mod order;
mod polls;
mod report;
#[cfg(test)]
mod tests;
mod transactions;

use crate::history::{History, OpKind, Outcome, Process};

pub use allowances::{Allowance, Allowances, CompactedTopic, LossAllowance};
pub use report::{Anomaly, AnomalyKind, Counts, Evidence, Report, Status, TopicPartition, Verdict};

use model::Model;

/// The consumer id of the runner's final full read of every partition from the log start.
pub const FINAL_READER: Process = u32::MAX;

/// Whether an outcome leaves the operation maybe-happened: `Unknown` and `Pending`. A `Fail` is
/// definite: the client classified the Kafka error code against what Kafka may return after
/// an append (the producer's and the group consumer's module docs), so the checker never reads
/// error text.
pub fn is_indefinite(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Pending | Outcome::Unknown { .. } => true,
        Outcome::Ok { .. } | Outcome::Fail { .. } => false,
    }
}

/// Checks `history` under `allowances`. Pure and deterministic: the same input gives the same
/// report, anomalies in a stable order.
pub fn check(history: &History, allowances: &Allowances) -> Report {
    let model = Model::build(history);
    let mut anomalies = Vec::new();
    log::phantom_reads(&model, &mut anomalies);
    log::inconsistent_offsets(&model, allowances, &mut anomalies);
    log::duplicates(&model, allowances, &mut anomalies);
    log::lost_and_never_seen(&model, allowances, &mut anomalies);
    polls::consumer_walks(&model, allowances, &mut anomalies);
    order::real_time_order(&model, allowances, &mut anomalies);
    groups::check_groups(history, &model, allowances, &mut anomalies);
    idempotence::refused_retries(&model, &mut anomalies);
    transactions::check_transactions(history, &model, allowances, &mut anomalies);
    let records_cleaned = compaction::check_compaction(history, &model, allowances, &mut anomalies);
    let mut counts = Counts {
        operations: history.ops.len(),
        records_cleaned,
        ..Counts::default()
    };
    for op in &history.ops {
        match op.kind {
            OpKind::Send { .. } => counts.sends += 1,
            OpKind::Poll { .. } => counts.polls += 1,
            OpKind::Commit { .. }
            | OpKind::FetchCommitted { .. }
            | OpKind::BeginTxn { .. }
            | OpKind::SendOffsetsToTxn { .. }
            | OpKind::EndTxn { .. } => {}
        }
        match &op.outcome {
            Outcome::Ok { .. } => counts.acknowledged += 1,
            outcome if is_indefinite(outcome) => counts.unknown += 1,
            _ => counts.failed += 1,
        }
    }
    let final_read_partitions = model
        .partitions
        .iter()
        .filter(|(_, part)| part.final_read.is_some())
        .map(|(tp, _)| tp.clone())
        .collect();
    Report::new(counts, final_read_partitions, anomalies)
}
