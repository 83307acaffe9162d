//! Hand-made histories for the transactional anomalies: each flagged, excused (the rule does
//! not apply, e.g. an unknown commit a read shows committed) and, where Kafka permits it,
//! allowed; then a table over a transaction's end and its reader's isolation level.

use super::*;

const GROUP: &str = "g";
const PRODUCER: Process = 1;
const RC: IsolationLevel = IsolationLevel::ReadCommitted;
const RU: IsolationLevel = IsolationLevel::ReadUncommitted;

/// A poll with every transactional field spelled out.
struct Read<'r> {
    consumer: Process,
    partition: i32,
    from: i64,
    records: &'r [(i64, u64)],
    isolation: IsolationLevel,
    txn: Option<TxnId>,
    lso: Option<i64>,
    group: Option<&'r str>,
}

impl<'r> Read<'r> {
    fn new(
        consumer: Process,
        partition: i32,
        from: i64,
        records: &'r [(i64, u64)],
        isolation: IsolationLevel,
    ) -> Read<'r> {
        Read {
            consumer,
            partition,
            from,
            records,
            isolation,
            txn: None,
            lso: None,
            group: None,
        }
    }
}

impl Builder {
    /// An acks=all send of transaction `txn` by `producer`.
    fn txn_send(
        &mut self,
        txn: TxnId,
        partition: i32,
        value: u64,
        at: (u64, u64),
        outcome: Outcome,
    ) -> &mut Self {
        let kind = OpKind::Send {
            producer: PRODUCER + txn as Process,
            topic: "t".into(),
            partition,
            key: None,
            value,
            acks: ACKS_ALL,
            txn: Some(txn),
        };
        self.op(kind, at.0, Some(at.1), outcome)
    }

    fn begin(&mut self, txn: TxnId, at: u64) -> &mut Self {
        let kind = OpKind::BeginTxn {
            producer: PRODUCER + txn as Process,
            transactional_id: format!("tx-{txn}"),
            txn,
        };
        self.op(kind, at, Some(at), Outcome::Ok { offset: None })
    }

    /// A commit (`commit`) or abort of `txn` invoked at `at.0`, answered `result` at `at.1`
    /// (`None`: still pending).
    fn end(
        &mut self,
        txn: TxnId,
        commit: bool,
        at: (u64, u64),
        result: Option<TxnResult>,
    ) -> &mut Self {
        let kind = OpKind::EndTxn {
            producer: PRODUCER + txn as Process,
            txn,
            commit,
            result,
        };
        let (complete, outcome) = match result {
            None => (None, Outcome::Pending),
            Some(r) => (
                Some(at.1),
                r.outcome(
                    commit,
                    format!("{r:?}"),
                    (r == TxnResult::Fenced).then_some(90),
                ),
            ),
        };
        self.op(kind, at.0, complete, outcome)
    }

    fn commit_txn(&mut self, txn: TxnId, at: (u64, u64)) -> &mut Self {
        self.end(txn, true, at, Some(TxnResult::Committed))
    }

    fn abort_txn(&mut self, txn: TxnId, at: (u64, u64)) -> &mut Self {
        self.end(txn, false, at, Some(TxnResult::Aborted))
    }

    /// `send_offsets_to_transaction` of group "g", partition `partition`, next offset `offset`.
    fn send_offsets(&mut self, txn: TxnId, partition: i32, offset: i64, at: u64) -> &mut Self {
        let kind = OpKind::SendOffsetsToTxn {
            producer: PRODUCER + txn as Process,
            txn,
            group: GROUP.into(),
            offsets: vec![("t".into(), partition, offset)],
        };
        self.op(kind, at, Some(at + 1), Outcome::Ok { offset: None })
    }

    fn read(&mut self, read: Read<'_>, at: u64) -> &mut Self {
        let kind = OpKind::Poll {
            consumer: read.consumer,
            topic: "t".into(),
            partition: read.partition,
            from_offset: read.from,
            records: read.records.to_vec(),
            group: read.group.map(str::to_string),
            isolation: read.isolation,
            txn: read.txn,
            bounds: read.lso.map(|lso| FetchBounds {
                high_watermark: lso.max(read.records.last().map_or(0, |r| r.0 + 1)),
                last_stable_offset: Some(lso),
            }),
        };
        self.op(kind, at, Some(at + 1), Outcome::Ok { offset: None })
    }

    /// An ok poll of partition `partition` at `at` ms with the given isolation level.
    fn poll_as(
        &mut self,
        isolation: IsolationLevel,
        consumer: Process,
        partition: i32,
        from: i64,
        records: &[(i64, u64)],
        at: u64,
    ) -> &mut Self {
        self.read(Read::new(consumer, partition, from, records, isolation), at)
    }

    /// The group's final committed offset of partition `partition`, as the runner fetches it.
    fn final_committed(&mut self, partition: i32, offset: i64, at: u64) -> &mut Self {
        let kind = OpKind::FetchCommitted {
            consumer: FINAL_READER,
            group: GROUP.into(),
            topic: "t".into(),
            partition,
            offset: Some(offset),
        };
        self.op(kind, at, Some(at + 1), Outcome::Ok { offset: None })
    }
}

fn kinds(report: &Report) -> Vec<(AnomalyKind, bool)> {
    report
        .anomalies
        .iter()
        .map(|a| (a.kind, a.is_violation()))
        .collect()
}

/// Transaction 1 writes 10@0 and 11@1 to partition 0; its end is `end`; a non-transactional
/// 30 follows at offset 3 (the marker is at 2).
fn one_transaction(end: impl FnOnce(&mut Builder) -> &mut Builder) -> Builder {
    let mut b = Builder::default();
    b.begin(1, 0)
        .txn_send(1, 0, 10, (1, 3), ok(0))
        .txn_send(1, 0, 11, (2, 4), ok(1));
    end(&mut b);
    b.send(30, (40, 42), ok(3));
    b
}

// ---- Clean histories ----

#[test]
fn a_committed_and_an_aborted_transaction_read_by_read_committed_readers_pass() {
    // Transaction 1 commits 10, 11 in partition 0 and 12 in partition 1; transaction 2 aborts
    // 20, 21. read_committed readers, the final read included, skip exactly the aborted ones.
    let report = Builder::default()
        .begin(1, 0)
        .txn_send(1, 0, 10, (1, 3), ok(0))
        .txn_send(1, 0, 11, (2, 4), ok(1))
        .txn_send(1, 1, 12, (2, 4), ok(0))
        .commit_txn(1, (5, 8))
        .begin(2, 10)
        .txn_send(2, 0, 20, (11, 13), ok(3))
        .txn_send(2, 0, 21, (12, 14), ok(4))
        .abort_txn(2, (15, 18))
        .send(30, (20, 22), ok(6))
        .poll_as(RC, 7, 0, 0, &[(0, 10), (1, 11)], 9)
        .poll_as(RC, 7, 0, 2, &[(6, 30)], 30)
        .poll_as(RC, 8, 1, 0, &[(0, 12)], 9)
        .poll_as(RC, FINAL_READER, 0, 0, &[(0, 10), (1, 11), (6, 30)], 100)
        .poll_as(RC, FINAL_READER, 1, 0, &[(0, 12)], 100)
        .check(&Allowances::default());
    assert_clean(&report);
}

#[test]
fn without_transactions_the_read_committed_fields_change_nothing() {
    // A read_committed consumer of plain sends is judged as any consumer: skipping an
    // acknowledged plain record is still a skip and a lost write.
    let report = Builder::default()
        .send(10, (0, 2), ok(0))
        .send(11, (1, 3), ok(1))
        .send(12, (2, 4), ok(2))
        .poll_as(RC, 7, 0, 0, &[(0, 10), (2, 12)], 10)
        .check(&Allowances::default());
    assert_eq!(
        kinds(&report),
        vec![
            (AnomalyKind::LostWrite, true),
            (AnomalyKind::SkippedOffset, true)
        ],
        "{report}"
    );
}

// ---- Aborted reads (G1a) ----

#[test]
fn a_read_committed_poll_returning_an_aborted_transactions_record_is_an_aborted_read() {
    let report = one_transaction(|b| b.abort_txn(1, (5, 8)))
        .poll_as(RC, 7, 0, 0, &[(0, 10), (1, 11), (3, 30)], 50)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::AbortedRead);
    assert!(a.is_violation(), "{a}");
    assert_eq!(
        (a.offsets.clone(), a.values.clone()),
        (vec![0, 1], vec![10, 11])
    );
    assert!(
        a.explanation.starts_with(
            "read_committed consumer(s) 7 returned 10@0, 11@1 of transaction 1 of producer 2, \
             which aborted (op"
        ),
        "{a}"
    );
    assert_eq!(
        a.evidence.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec!["poll", "end-txn"]
    );
    assert_eq!(report.anomalies.len(), 1, "{report}");
}

#[test]
fn a_commit_refused_with_an_abortable_error_leaves_the_transaction_aborted() {
    let report = one_transaction(|b| b.end(1, true, (5, 8), Some(TxnResult::Aborted)))
        .poll_as(RC, 7, 0, 0, &[(0, 10)], 50)
        .check(&Allowances::default());
    assert!(only(&report, AnomalyKind::AbortedRead).is_violation());
}

#[test]
fn a_transaction_that_never_asked_to_commit_is_aborted_for_read_committed_readers() {
    // The producer stopped inside the transaction: the coordinator can only abort it.
    let report = one_transaction(|b| b)
        .poll_as(RC, 7, 0, 0, &[(0, 10)], 50)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::AbortedRead);
    assert!(
        a.explanation
            .contains("never committed (no commit was asked for)"),
        "{a}"
    );
}

#[test]
fn a_read_uncommitted_poll_returning_an_aborted_transactions_record_is_allowed() {
    let report = one_transaction(|b| b.abort_txn(1, (5, 8)))
        .poll_as(RU, 7, 0, 0, &[(0, 10), (1, 11), (3, 30)], 50)
        .check(&Allowances::default());
    assert!(report.passed(), "{report}");
    let a = only(&report, AnomalyKind::AbortedRead);
    assert_eq!(
        cause(a),
        "consumer(s) 7 read read_uncommitted, which returns aborted records"
    );
    assert_eq!(report.anomalies.len(), 1, "{report}");
}

#[test]
fn reading_a_transaction_whose_commit_ended_unknown_or_fenced_is_no_aborted_read() {
    for result in [Some(TxnResult::Unknown), Some(TxnResult::Fenced), None] {
        let report = one_transaction(|b| b.end(1, true, (5, 8), result))
            .poll_as(RC, 7, 0, 0, &[(0, 10), (1, 11), (3, 30)], 50)
            .check(&Allowances::default());
        assert_clean(&report);
    }
}

#[test]
fn an_unknown_commit_that_turned_out_aborted_is_skipped_by_read_committed_readers_cleanly() {
    // No read_committed reader returned it: it stays indefinite and its records unexpected.
    let report = one_transaction(|b| b.end(1, true, (5, 8), Some(TxnResult::Unknown)))
        .poll_as(RC, 7, 0, 0, &[(3, 30)], 50)
        .poll_as(RC, FINAL_READER, 0, 0, &[(3, 30)], 100)
        .check(&Allowances::default());
    assert_clean(&report);
}

// ---- Intermediate reads (G1b) ----

#[test]
fn a_read_committed_poll_of_a_transaction_before_its_commit_is_an_intermediate_read() {
    let report = one_transaction(|b| b.commit_txn(1, (20, 25)))
        .poll_as(RC, 7, 0, 0, &[(0, 10)], 10)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::IntermediateRead);
    assert!(a.is_violation(), "{a}");
    assert_eq!(a.values, vec![10]);
    assert!(
        a.explanation.ends_with(
            "but its commit (op 4) was invoked at 20 ms: the transaction was still open when read"
        ),
        "{a}"
    );
    assert_eq!(
        a.evidence
            .iter()
            .map(|e| (e.kind, e.op))
            .collect::<Vec<_>>(),
        vec![("poll", 3), ("end-txn", 4)]
    );
}

#[test]
fn a_read_committed_poll_after_the_commit_was_invoked_is_no_intermediate_read() {
    // The commit was asked for at 20 ms; the read completed at 23 ms: the markers may be there.
    let report = one_transaction(|b| b.end(1, true, (20, 40), Some(TxnResult::Unknown)))
        .poll_as(RC, 7, 0, 0, &[(0, 10), (1, 11)], 22)
        .check(&Allowances::default());
    assert_clean(&report);
}

#[test]
fn a_read_uncommitted_poll_of_an_open_transaction_is_not_judged() {
    let report = one_transaction(|b| b.commit_txn(1, (20, 25)))
        .poll_as(RU, 7, 0, 0, &[(0, 10), (1, 11)], 10)
        .check(&Allowances::default());
    assert_clean(&report);
}

// ---- Reads past the LSO ----

#[test]
fn a_read_committed_poll_returning_records_at_or_past_its_lso_is_read_past_lso() {
    let report = Builder::default()
        .send(10, (0, 2), ok(0))
        .send(11, (1, 3), ok(1))
        .send(12, (2, 4), ok(2))
        .read(
            Read {
                lso: Some(1),
                ..Read::new(7, 0, 0, &[(0, 10), (1, 11), (2, 12)], RC)
            },
            10,
        )
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::ReadPastLastStableOffset);
    assert!(a.is_violation(), "{a}");
    assert_eq!(
        (a.offsets.clone(), a.values.clone()),
        (vec![1, 2], vec![11, 12])
    );
    assert!(
        a.explanation.starts_with(
            "read_committed consumer 7's poll op 3 from 0 returned 2 record(s) at or past the \
             last stable offset 1"
        ),
        "{a}"
    );
}

#[test]
fn reads_below_the_lso_and_read_uncommitted_reads_past_it_are_fine() {
    let records = [(0, 10), (1, 11), (2, 12)];
    let report = Builder::default()
        .send(10, (0, 2), ok(0))
        .send(11, (1, 3), ok(1))
        .send(12, (2, 4), ok(2))
        .read(
            Read {
                lso: Some(3),
                ..Read::new(7, 0, 0, &records, RC)
            },
            10,
        )
        .read(
            Read {
                lso: Some(1),
                ..Read::new(8, 0, 0, &records, RU)
            },
            10,
        )
        // A fetch that reported no LSO is not judged against one.
        .poll_as(RC, 9, 0, 0, &records, 10)
        .check(&Allowances::default());
    assert_clean(&report);
}

// ---- Circular information flow (G1c) ----

/// Transaction 1 writes 10 to partition 0 and reads 20 from partition 1; transaction 2 writes
/// 20 to partition 1 and reads 10 from partition 0, with the given isolation levels and end
/// of transaction 2.
fn two_transactions_reading_each_other(
    first_reads: IsolationLevel,
    second_reads: IsolationLevel,
    second_end: Option<TxnResult>,
) -> Report {
    Builder::default()
        .begin(1, 0)
        .begin(2, 0)
        .txn_send(1, 0, 10, (1, 2), ok(0))
        .txn_send(2, 1, 20, (1, 2), ok(0))
        .read(
            Read {
                txn: Some(1),
                ..Read::new(101, 1, 0, &[(0, 20)], first_reads)
            },
            3,
        )
        .read(
            Read {
                txn: Some(2),
                ..Read::new(102, 0, 0, &[(0, 10)], second_reads)
            },
            3,
        )
        .commit_txn(1, (10, 12))
        .end(2, true, (10, 12), second_end)
        .check(&Allowances::default())
}

#[test]
fn two_committed_transactions_reading_each_others_writes_are_circular_information_flow() {
    let report = two_transactions_reading_each_other(RC, RC, Some(TxnResult::Committed));
    let a = only(&report, AnomalyKind::CircularInformationFlow);
    assert!(a.is_violation(), "{a}");
    assert!(
        a.explanation.starts_with(
            "committed transactions 1 → 2 read each other's writes in a cycle: transaction 2 \
             (producer 3) read 10@0 written by transaction 1 (read_committed); transaction 1 \
             (producer 2) read 20@0 written by transaction 2 (read_committed)"
        ),
        "{a}"
    );
    assert_eq!(a.values, vec![10, 20]);
    assert_eq!(a.evidence.len(), 4, "{a}");
    // Each read was of an open transaction, too.
    assert_eq!(report.of_kind(AnomalyKind::IntermediateRead).count(), 2);
}

#[test]
fn a_cycle_through_a_read_uncommitted_read_is_allowed() {
    let report = two_transactions_reading_each_other(RC, RU, Some(TxnResult::Committed));
    let a = only(&report, AnomalyKind::CircularInformationFlow);
    assert_eq!(
        cause(a),
        "consumer 102 reads read_uncommitted: it may read a transaction before it commits"
    );
}

#[test]
fn a_cycle_through_an_aborted_or_unresolved_transaction_is_no_circular_flow() {
    for end in [Some(TxnResult::Aborted), Some(TxnResult::Unknown)] {
        let report = two_transactions_reading_each_other(RU, RU, end);
        assert_eq!(
            report.of_kind(AnomalyKind::CircularInformationFlow).count(),
            0,
            "{report}"
        );
    }
}

#[test]
fn a_chain_of_transactions_each_reading_the_previous_one_is_fine() {
    // 1 writes 10; 2 reads it and writes 20; 3 reads 20: information flows one way.
    let mut b = Builder::default();
    for (txn, input, output) in [(1u64, None, 10u64), (2, Some(10u64), 20), (3, Some(20), 30)] {
        let t = txn * 100;
        b.begin(txn, t);
        if let Some(v) = input {
            let records = [(txn as i64 - 2, v)];
            b.read(
                Read {
                    txn: Some(txn),
                    ..Read::new(100 + txn as Process, 0, txn as i64 - 2, &records, RC)
                },
                t + 1,
            );
        }
        b.txn_send(txn, 0, output, (t + 2, t + 3), ok(txn as i64 - 1))
            .commit_txn(txn, (t + 4, t + 5));
    }
    // The markers are not records: offsets 0, 1, 2 hold 10, 20, 30 in this hand-made log.
    assert_clean(&b.check(&Allowances::default()));
}

// ---- Partial transactions ----

#[test]
fn a_committed_transaction_read_in_part_by_a_poll_that_passed_over_the_rest_is_partial() {
    let report = one_transaction(|b| b.commit_txn(1, (5, 8)))
        .poll_as(RC, 7, 0, 0, &[(0, 10), (3, 30)], 50)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::PartialTransaction);
    assert!(a.is_violation(), "{a}");
    assert_eq!((a.offsets.clone(), a.values.clone()), (vec![1], vec![11]));
    assert!(
        a.explanation.starts_with(
            "transaction 1 of producer 2 committed (op 3), and poll op 5 returned its record \
             10@0, but in t/0 11@1 (poll op 5 of consumer 7 passed over it)"
        ),
        "{a}"
    );
    // The lost record is a lost write and the consumer's jump a skip, as for any record.
    assert_eq!(
        kinds(&report),
        vec![
            (AnomalyKind::LostWrite, true),
            (AnomalyKind::SkippedOffset, true),
            (AnomalyKind::PartialTransaction, true)
        ]
    );
}

#[test]
fn a_committed_transaction_whose_records_in_one_partition_the_final_read_lacks_is_partial() {
    // 10 in partition 0 is read; 12 in partition 1 is gone from the final read, which passed
    // over its offset.
    let report = Builder::default()
        .begin(1, 0)
        .txn_send(1, 0, 10, (1, 3), ok(0))
        .txn_send(1, 1, 12, (1, 3), ok(0))
        .commit_txn(1, (5, 8))
        .send_full(9, 1, None, 40, ACKS_ALL, (10, 12), ok(2))
        .poll_as(RC, FINAL_READER, 0, 0, &[(0, 10)], 100)
        .poll_as(RC, FINAL_READER, 1, 0, &[(2, 40)], 100)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::PartialTransaction);
    assert_eq!(
        (a.topic.as_str(), a.partition, a.values.clone()),
        ("t", 1, vec![12])
    );
}

#[test]
fn a_partial_transaction_whose_missing_records_may_have_been_lost_is_allowed() {
    let report = one_transaction(|b| b.commit_txn(1, (5, 8)))
        .poll_as(RC, 7, 0, 0, &[(0, 10), (3, 30)], 50)
        .check(&lazy_flush_power_loss_at(6, 1_000));
    let a = only(&report, AnomalyKind::PartialTransaction);
    assert!(
        cause(a).starts_with("the missing records may have been lost: lazy flush"),
        "{a}"
    );
    assert!(report.passed(), "{report}");
}

#[test]
fn an_unresolved_transaction_read_in_part_by_read_uncommitted_is_not_judged_partial() {
    // Its commit timed out and no read_committed reader saw it: it may have aborted.
    let report = one_transaction(|b| b.end(1, true, (5, 8), Some(TxnResult::Unknown)))
        .poll_as(RU, 7, 0, 0, &[(0, 10), (3, 30)], 50)
        .check(&Allowances::default());
    assert_eq!(report.of_kind(AnomalyKind::PartialTransaction).count(), 0);
}

// ---- Consume-transform-produce ----

/// Inputs 1@0 and 2@1 in partition 0 (plain sends); transaction `txn` consumes both, writes
/// 100 + txn to partition 1, sends offset 2 for group "g", then ends with `end`.
fn transform(b: &mut Builder, txn: TxnId, at: u64, end: Option<TxnResult>) {
    b.begin(txn, at)
        .read(
            Read {
                txn: Some(txn),
                group: Some(GROUP),
                ..Read::new(200 + txn as Process, 0, 0, &[(0, 1), (1, 2)], RC)
            },
            at + 1,
        )
        .txn_send(txn, 1, 100 + txn, (at + 2, at + 3), Outcome::Pending)
        .send_offsets(txn, 0, 2, at + 4)
        .end(txn, true, (at + 6, at + 8), end);
}

fn inputs() -> Builder {
    let mut b = Builder::default();
    b.send(1, (0, 1), ok(0)).send(2, (0, 1), ok(1));
    b
}

#[test]
fn a_group_offset_past_inputs_only_an_aborted_transaction_consumed_is_input_without_output() {
    let mut b = inputs();
    transform(&mut b, 1, 10, Some(TxnResult::Aborted));
    let report = b.final_committed(0, 2, 100).check(&Allowances::default());
    let found: Vec<&Anomaly> = report
        .of_kind(AnomalyKind::InputCommittedWithoutOutput)
        .collect();
    assert_eq!(found.len(), 2, "{report}");
    assert!(found.iter().all(|a| a.is_violation()));
    assert_eq!(found[0].values, vec![1]);
    assert!(
        found[0].explanation.starts_with(
            "group g ended with committed offset 2 (fetch op 7), past input 1@0, but the only \
             transactions that consumed it, 1 (aborted (op 6)), never committed"
        ),
        "{}",
        found[0]
    );
}

#[test]
fn inputs_an_aborted_transaction_consumed_and_a_later_one_committed_have_their_output() {
    let mut b = inputs();
    transform(&mut b, 1, 10, Some(TxnResult::Aborted));
    transform(&mut b, 2, 30, Some(TxnResult::Committed));
    let report = b.final_committed(0, 2, 100).check(&Allowances::default());
    assert_clean(&report);
}

#[test]
fn inputs_whose_only_consumer_has_an_unknown_commit_are_excused() {
    let mut b = inputs();
    transform(&mut b, 1, 10, Some(TxnResult::Unknown));
    let report = b.final_committed(0, 2, 100).check(&Allowances::default());
    assert_clean(&report);
}

#[test]
fn inputs_consumed_by_two_committed_transactions_are_committed_twice() {
    let mut b = inputs();
    transform(&mut b, 1, 10, Some(TxnResult::Committed));
    transform(&mut b, 2, 30, Some(TxnResult::Committed));
    let report = b.final_committed(0, 2, 100).check(&Allowances::default());
    let found: Vec<&Anomaly> = report.of_kind(AnomalyKind::InputCommittedTwice).collect();
    assert_eq!(found.len(), 2, "{report}");
    assert!(
        found[1].explanation.starts_with(
            "group g: input 2@1 was consumed by committed transactions 1 of producer 2 (offset \
             2, committed (op"
        ),
        "{}",
        found[1]
    );
    assert_eq!(report.anomalies.len(), 2, "{report}");
}

#[test]
fn a_second_consumer_whose_commit_is_unknown_or_aborted_excuses_the_input() {
    for end in [Some(TxnResult::Unknown), Some(TxnResult::Aborted), None] {
        let mut b = inputs();
        transform(&mut b, 1, 10, Some(TxnResult::Committed));
        transform(&mut b, 2, 30, end);
        let report = b.final_committed(0, 2, 100).check(&Allowances::default());
        assert_clean(&report);
    }
}

// ---- The table: a transaction's end × its reader ----

#[test]
fn every_end_of_a_transaction_against_every_reader_gives_kafkas_verdict() {
    use AnomalyKind::{AbortedRead, IntermediateRead};
    type Row = (
        Option<(bool, Option<TxnResult>)>,
        IsolationLevel,
        u64,
        Option<(AnomalyKind, bool)>,
    );
    // (end: commit? and answer, reader isolation, read at ms, expected (kind, violation)).
    // The end is invoked at 20 ms.
    let table: [Row; 14] = [
        (Some((true, Some(TxnResult::Committed))), RC, 50, None),
        (
            Some((true, Some(TxnResult::Committed))),
            RC,
            10,
            Some((IntermediateRead, true)),
        ),
        (Some((true, Some(TxnResult::Committed))), RU, 10, None),
        (
            Some((true, Some(TxnResult::Aborted))),
            RC,
            50,
            Some((AbortedRead, true)),
        ),
        (
            Some((true, Some(TxnResult::Aborted))),
            RU,
            50,
            Some((AbortedRead, false)),
        ),
        (Some((true, Some(TxnResult::Fenced))), RC, 50, None),
        (
            Some((true, Some(TxnResult::Fenced))),
            RC,
            10,
            Some((IntermediateRead, true)),
        ),
        (Some((true, Some(TxnResult::Unknown))), RC, 50, None),
        (Some((true, None)), RC, 50, None),
        (
            Some((false, Some(TxnResult::Aborted))),
            RC,
            50,
            Some((AbortedRead, true)),
        ),
        (
            Some((false, Some(TxnResult::Aborted))),
            RU,
            50,
            Some((AbortedRead, false)),
        ),
        (
            Some((false, Some(TxnResult::Unknown))),
            RC,
            50,
            Some((AbortedRead, true)),
        ),
        (None, RC, 50, Some((AbortedRead, true))),
        (None, RU, 50, Some((AbortedRead, false))),
    ];
    for (end, isolation, read_at, expected) in table {
        let report = one_transaction(|b| match end {
            Some((commit, result)) => b.end(1, commit, (20, 25), result),
            None => b,
        })
        .poll_as(isolation, 7, 0, 0, &[(0, 10), (1, 11)], read_at)
        .check(&Allowances::default());
        let found: Vec<(AnomalyKind, bool)> = kinds(&report);
        assert_eq!(
            found,
            expected.into_iter().collect::<Vec<_>>(),
            "end {end:?}, {isolation:?} read at {read_at} ms:\n{report}"
        );
    }
}

// ---- What read_committed readers are expected to return ----

#[test]
fn a_read_uncommitted_poll_jumping_over_an_aborted_record_is_a_skip() {
    // Kafka returns aborted records to read_uncommitted consumers: skipping one is a bug.
    let report = one_transaction(|b| b.abort_txn(1, (5, 8)))
        .poll_as(RU, 7, 0, 0, &[(0, 10), (3, 30)], 50)
        .check(&Allowances::default());
    assert_eq!(
        kinds(&report),
        vec![
            (AnomalyKind::LostWrite, true),
            (AnomalyKind::SkippedOffset, true),
            (AnomalyKind::AbortedRead, false)
        ],
        "{report}"
    );
    assert_eq!(only(&report, AnomalyKind::SkippedOffset).values, vec![11]);
}

#[test]
fn an_unknown_commit_a_read_committed_reader_saw_in_part_is_a_partial_transaction() {
    // The read of 10 shows the transaction committed; 11 must then be there too.
    let report = one_transaction(|b| b.end(1, true, (5, 8), Some(TxnResult::Unknown)))
        .poll_as(RC, 7, 0, 0, &[(0, 10), (3, 30)], 50)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::PartialTransaction);
    assert!(a.is_violation(), "{a}");
    assert!(
        a.explanation
            .contains("committed (its end was not answered, a read_committed poll returned it)"),
        "{a}"
    );
}

// ---- Generated histories ----

mod generated {
    use proptest::prelude::*;

    use super::*;

    /// How a generated transaction really ended, and what its producer was told.
    #[derive(Clone, Copy, Debug)]
    enum Truth {
        Committed,
        Aborted,
        /// Committed, but the producer's commit timed out.
        UnknownCommitted,
        /// Aborted, but the producer's commit timed out or it was fenced.
        UnknownAborted(TxnResult),
    }

    impl Truth {
        fn committed(self) -> bool {
            matches!(self, Truth::Committed | Truth::UnknownCommitted)
        }

        fn answer(self) -> TxnResult {
            match self {
                Truth::Committed => TxnResult::Committed,
                Truth::Aborted => TxnResult::Aborted,
                Truth::UnknownCommitted => TxnResult::Unknown,
                Truth::UnknownAborted(told) => told,
            }
        }
    }

    /// One record of a generated log: offset, value, and its transaction if any.
    type Entry = (i64, u64, Option<(TxnId, Truth)>);

    struct Generated {
        builder: Builder,
        /// Per partition, the log: (offset, value, transaction if any).
        logs: Vec<Vec<Entry>>,
    }

    /// Transactions one after another over `partitions` partitions (each writes one to three
    /// records to some of them, a marker after each), plain sends between them; then a
    /// read_committed and a read_uncommitted reader of every partition, and a read_committed
    /// final read. Everything as Kafka would answer it.
    fn generate(truths: &[Truth], partitions: i32, writes: &[u8]) -> Generated {
        let mut b = Builder::default();
        let mut logs: Vec<Vec<Entry>> = vec![Vec::new(); partitions as usize];
        let mut next_offset = vec![0i64; partitions as usize];
        let mut value = 1_000;
        let mut t = 0;
        let mut w = writes.iter().cycle();
        for (i, &truth) in truths.iter().enumerate() {
            let txn = i as TxnId + 1;
            b.begin(txn, t);
            for p in 0..partitions {
                let n = w.next().copied().unwrap_or(1) % 3;
                for _ in 0..n {
                    let offset = next_offset[p as usize];
                    next_offset[p as usize] += 1;
                    value += 1;
                    b.txn_send(txn, p, value, (t + 1, t + 2), ok(offset));
                    logs[p as usize].push((offset, value, Some((txn, truth))));
                }
                if n > 0 {
                    next_offset[p as usize] += 1; // the marker
                }
            }
            b.end(txn, true, (t + 3, t + 5), Some(truth.answer()));
            // A plain send after each transaction, in partition 0.
            let offset = next_offset[0];
            next_offset[0] += 1;
            value += 1;
            b.send_full(9, 0, None, value, ACKS_ALL, (t + 6, t + 7), ok(offset));
            logs[0].push((offset, value, None));
            t += 10;
        }
        for p in 0..partitions {
            let log = &logs[p as usize];
            let all: Vec<(i64, u64)> = log.iter().map(|&(o, v, _)| (o, v)).collect();
            let committed: Vec<(i64, u64)> = log
                .iter()
                .filter(|(_, _, txn)| txn.is_none_or(|(_, truth)| truth.committed()))
                .map(|&(o, v, _)| (o, v))
                .collect();
            b.poll_as(RU, 20 + p as Process, p, 0, &all, t + 10);
            b.poll_as(RC, 30 + p as Process, p, 0, &committed, t + 10);
            b.poll_as(RC, FINAL_READER, p, 0, &committed, t + 100);
        }
        Generated { builder: b, logs }
    }

    fn truth() -> impl Strategy<Value = Truth> {
        prop_oneof![
            Just(Truth::Committed),
            Just(Truth::Aborted),
            Just(Truth::UnknownCommitted),
            Just(Truth::UnknownAborted(TxnResult::Unknown)),
            Just(Truth::UnknownAborted(TxnResult::Fenced)),
        ]
    }

    fn histories() -> impl Strategy<Value = (Vec<Truth>, i32, Vec<u8>)> {
        (
            prop::collection::vec(truth(), 1..8),
            1..4i32,
            prop::collection::vec(0..3u8, 1..12),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn transactional_histories_as_kafka_answers_them_have_no_violation(
            (truths, partitions, writes) in histories()
        ) {
            let report = generate(&truths, partitions, &writes).builder.check(&Allowances::default());
            prop_assert!(report.passed(), "{}", report);
            // Only read_uncommitted reads of aborted transactions are reported, allowed.
            prop_assert!(report.anomalies.iter().all(|a| a.kind == AnomalyKind::AbortedRead), "{}", report);
        }

        #[test]
        fn a_read_committed_reader_given_an_aborted_record_or_denied_a_committed_one_is_caught(
            (truths, partitions, writes) in histories(),
            pick in any::<prop::sample::Index>(),
        ) {
            let g = generate(&truths, partitions, &writes);
            let records: Vec<(i32, i64, u64, TxnId, Truth)> = g
                .logs
                .iter()
                .enumerate()
                .flat_map(|(p, log)| {
                    log.iter().filter_map(move |&(o, v, txn)| {
                        txn.map(|(id, truth)| (p as i32, o, v, id, truth))
                    })
                })
                .collect();
            prop_assume!(!records.is_empty());
            let (partition, offset, value, _, truth) = *pick.get(&records);
            let mut history = g.builder.build();
            // The read_committed reader of that partition gets it wrong about this record.
            for op in &mut history.ops {
                if let OpKind::Poll { consumer, partition: q, records, .. } = &mut op.kind {
                    if *consumer == 30 + partition as Process && *q == partition {
                        if truth.committed() {
                            records.retain(|&(o, _)| o != offset);
                        } else {
                            records.push((offset, value));
                            records.sort_unstable();
                        }
                    }
                }
            }
            let report = check(&history, &Allowances::default());
            let expected = match truth {
                // Denied a committed record the reader passed over, or one at the end of
                // its read: lost (or never seen) and partial where another record was read.
                Truth::Committed | Truth::UnknownCommitted => vec![
                    AnomalyKind::LostWrite,
                    AnomalyKind::SkippedOffset,
                    AnomalyKind::PartialTransaction,
                    AnomalyKind::NeverSeen,
                ],
                Truth::Aborted => vec![AnomalyKind::AbortedRead],
                // Its commit was not answered: the read reveals it committed, and the records
                // of it the reader skipped are then missing.
                Truth::UnknownAborted(_) => vec![
                    AnomalyKind::PartialTransaction,
                    AnomalyKind::LostWrite,
                    AnomalyKind::SkippedOffset,
                ],
            };
            // Only what contradicts Kafka is caught: a committed record denied although the
            // reader read past it; an unanswered transaction revealed committed whose other
            // records the final read of partition 0 passed over (a plain record follows each).
            let id = pick.get(&records).3;
            let caught = match truth {
                Truth::Committed | Truth::UnknownCommitted => g.logs[partition as usize]
                    .iter()
                    .any(|&(o, _, txn)| o > offset && txn.is_none_or(|(_, t)| t.committed())),
                Truth::Aborted => true,
                Truth::UnknownAborted(_) => g.logs[0]
                    .iter()
                    .any(|&(o, _, txn)| txn.is_some_and(|(t, _)| t == id) && (partition, o) != (0, offset)),
            };
            prop_assume!(caught);
            prop_assert!(
                report.violations().any(|a| expected.contains(&a.kind)),
                "{:?} record {}@{} in partition {}: expected one of {:?}, got:\n{}",
                truth, value, offset, partition, expected, report
            );
        }
    }
}
