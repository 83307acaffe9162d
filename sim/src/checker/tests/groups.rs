//! Hand-made histories for the consumer-group anomalies: a committed offset that goes back in
//! time, and records a group committed past without any member processing them.

use super::*;

const GROUP: &str = "g";

impl Builder {
    /// A commit by `consumer` of group "g" at `offset` of partition 0.
    fn commit(
        &mut self,
        consumer: Process,
        offset: i64,
        invoke_ms: u64,
        complete_ms: Option<u64>,
        outcome: Outcome,
    ) -> &mut Self {
        let kind = OpKind::Commit {
            consumer,
            group: GROUP.into(),
            offsets: vec![("t".into(), 0, offset)],
        };
        self.op(kind, invoke_ms, complete_ms, outcome)
    }

    /// An acknowledged commit at `offset`, invoked at `at.0` and completed at `at.1`.
    fn acked_commit(&mut self, consumer: Process, offset: i64, at: (u64, u64)) -> &mut Self {
        self.commit(
            consumer,
            offset,
            at.0,
            Some(at.1),
            Outcome::Ok { offset: None },
        )
    }

    /// An ok fetch of group "g"'s committed offset of partition 0 at `at` ms, returning `found`.
    fn fetch(&mut self, consumer: Process, found: Option<i64>, at: u64) -> &mut Self {
        let kind = OpKind::FetchCommitted {
            consumer,
            group: GROUP.into(),
            topic: "t".into(),
            partition: 0,
            offset: found,
        };
        self.op(kind, at, Some(at + 1), Outcome::Ok { offset: None })
    }

    /// An ok poll of partition 0 by `consumer` as a member of `group`.
    fn member_poll(
        &mut self,
        group: &str,
        consumer: Process,
        from_offset: i64,
        records: &[(i64, u64)],
        at: u64,
    ) -> &mut Self {
        let kind = OpKind::Poll {
            consumer,
            topic: "t".into(),
            partition: 0,
            from_offset,
            records: records.to_vec(),
            group: Some(group.into()),
            isolation: IsolationLevel::ReadUncommitted,
            txn: None,
            bounds: None,
        };
        self.op(kind, at, Some(at + 1), Outcome::Ok { offset: None })
    }
}

fn expire_after(ms: u64) -> Allowances {
    Allowances {
        offsets_expire_after_ms: Some(ms),
        ..Allowances::default()
    }
}

// ---- Committed offset regressions ----

#[test]
fn a_fetch_returning_an_offset_an_acknowledged_commit_had_replaced_is_a_regression() {
    // The coordinator answered from a stale copy: commit 10 was acknowledged at 5 ms, the fetch
    // at 10 ms still saw 5.
    let report = Builder::default()
        .acked_commit(100, 5, (0, 2))
        .acked_commit(100, 10, (3, 5))
        .fetch(101, Some(5), 10)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::CommittedOffsetRegression);
    assert!(a.is_violation(), "{a}");
    assert_eq!(a.offsets, vec![5, 10]);
    assert_eq!((a.topic.as_str(), a.partition), ("t", 0));
    assert!(a.explanation.starts_with("group g: fetch op 2"), "{a}");
    assert_eq!(
        a.evidence
            .iter()
            .map(|e| (e.op, e.kind, e.offset))
            .collect::<Vec<_>>(),
        vec![(1, "commit", Some(10)), (2, "fetch-committed", Some(5))]
    );
    assert_eq!(report.anomalies.len(), 1, "{report}");
}

#[test]
fn a_fetch_returning_an_unknown_commit_that_overlapped_the_acknowledged_one_is_no_regression() {
    // Commit 5 timed out while commit 10 was in flight: the coordinator may have applied it last.
    let report = Builder::default()
        .commit(100, 5, 1, Some(30), unknown())
        .acked_commit(101, 10, (3, 5))
        .fetch(102, Some(5), 10)
        .check(&Allowances::default());
    assert_clean(&report);
    // Still running when the history was taken: just as possible.
    let pending = Builder::default()
        .commit(100, 5, 1, None, Outcome::Pending)
        .acked_commit(101, 10, (3, 5))
        .fetch(102, Some(5), 10)
        .check(&Allowances::default());
    assert_clean(&pending);
}

#[test]
fn an_acknowledged_commit_that_ended_before_the_later_one_began_cannot_excuse_a_regression() {
    let report = Builder::default()
        .acked_commit(100, 5, (0, 2))
        .acked_commit(101, 10, (3, 5))
        .fetch(102, Some(5), 10)
        .check(&Allowances::default());
    assert!(only(&report, AnomalyKind::CommittedOffsetRegression).is_violation());
}

#[test]
fn an_unknown_commit_may_take_effect_long_after_the_client_gave_up_on_it() {
    // The client gave up on commit 5 at 2 ms; its request, delayed in the network, can still
    // reach the coordinator after commit 10 (found by the group-swarm scenario, seed 85).
    let report = Builder::default()
        .commit(100, 5, 0, Some(2), unknown())
        .acked_commit(101, 10, (3, 5))
        .fetch(102, Some(5), 10)
        .check(&Allowances::default());
    assert_clean(&report);
}

#[test]
fn a_refused_commit_or_one_invoked_after_the_fetch_answered_cannot_excuse_a_regression() {
    let refused = Builder::default()
        .acked_commit(101, 10, (3, 5))
        .commit(100, 5, 4, Some(6), failed())
        .fetch(102, Some(5), 10)
        .check(&Allowances::default());
    assert!(only(&refused, AnomalyKind::CommittedOffsetRegression).is_violation());
    let later = Builder::default()
        .acked_commit(101, 10, (3, 5))
        .fetch(102, Some(5), 10)
        .acked_commit(100, 5, (20, 22))
        .check(&Allowances::default());
    assert!(only(&later, AnomalyKind::CommittedOffsetRegression).is_violation());
}

#[test]
fn a_member_committing_a_lower_offset_after_a_higher_one_is_no_regression() {
    // Kafka lets a member commit any offset (a seek back, a reset): the last commit wins.
    let report = Builder::default()
        .acked_commit(100, 10, (0, 2))
        .acked_commit(101, 5, (3, 5))
        .fetch(102, Some(5), 10)
        .check(&Allowances::default());
    assert_clean(&report);
}

#[test]
fn a_regression_names_the_highest_acknowledged_commit_it_went_below() {
    let report = Builder::default()
        .acked_commit(100, 5, (0, 1))
        .acked_commit(100, 10, (2, 3))
        .acked_commit(100, 20, (4, 5))
        .fetch(101, Some(5), 10)
        .check(&Allowances::default());
    let a = only(&report, AnomalyKind::CommittedOffsetRegression);
    assert_eq!((a.offsets.clone(), a.evidence[0].op), (vec![5, 20], 2));
}

#[test]
fn finding_nothing_committed_long_after_the_group_went_idle_is_allowed_as_expired_offsets() {
    let report = Builder::default()
        .member_poll(GROUP, 100, 0, &[], 0)
        .acked_commit(100, 10, (3, 5))
        .member_poll(GROUP, 100, 0, &[], 6)
        .fetch(FINAL_READER, None, 2_000)
        .check(&expire_after(1_000));
    let a = only(&report, AnomalyKind::CommittedOffsetRegression);
    assert!(
        cause(a).starts_with(
            "offsets expired (offsets.retention.minutes) after the group emptied (idle from 7 to 2000 ms"
        ),
        "{a}"
    );
    assert_eq!(a.offsets, vec![10]);
    assert!(report.passed(), "{report}");
}

#[test]
fn finding_nothing_committed_shortly_after_an_acknowledged_commit_is_a_regression() {
    let build = |allowances: &Allowances| {
        Builder::default()
            .acked_commit(100, 10, (3, 5))
            .member_poll(GROUP, 100, 0, &[], 600)
            .fetch(FINAL_READER, None, 1_500)
            .check(allowances)
    };
    // The group was active until 601 ms: 899 ms of idleness is not the 1 000 ms of expiry.
    let a = only(
        &build(&expire_after(1_000)),
        AnomalyKind::CommittedOffsetRegression,
    )
    .clone();
    assert!(
        a.is_violation() && a.explanation.contains("found nothing committed"),
        "{a}"
    );
    // Without expiry in the run, any time later is a regression.
    assert!(only(
        &build(&Allowances::default()),
        AnomalyKind::CommittedOffsetRegression
    )
    .is_violation());
}

/// A member cut off from the coordinator for longer than the retention: its session ends, the
/// group empties and its offsets expire; when it comes back, the poll that rejoins the group is
/// still running when it fetches the committed offsets, and finds nothing.
fn member_back_after_an_idle_stretch(idle_until: u64, commit_after: bool) -> Report {
    let mut b = Builder::default();
    b.send(10, (0, 1), ok(0))
        .member_poll(GROUP, 100, 0, &[(0, 10)], 2)
        .acked_commit(100, 1, (3, 5))
        .member_poll(GROUP, 100, 1, &[], 6);
    if commit_after {
        // Another member committed again before the fetch: the offset is stored anew.
        b.acked_commit(101, 1, (idle_until - 50, idle_until - 40));
    }
    let rejoin = OpKind::Poll {
        consumer: 102,
        topic: "t".into(),
        partition: 0,
        from_offset: 0,
        records: vec![(0, 10)],
        group: Some(GROUP.into()),
        isolation: IsolationLevel::ReadUncommitted,
        txn: None,
        bounds: None,
    };
    b.op(
        rejoin,
        idle_until,
        Some(idle_until + 20),
        Outcome::Ok { offset: None },
    )
    .fetch(102, None, idle_until + 10)
    .check(&expire_after(1_000))
}

#[test]
fn a_member_back_after_the_group_was_idle_longer_than_the_retention_may_find_its_offsets_expired() {
    let report = member_back_after_an_idle_stretch(2_000, false);
    let a = only(&report, AnomalyKind::CommittedOffsetRegression);
    assert!(
        cause(a).contains("idle from 7 to 2000 ms, fetched at 2010 ms"),
        "{a}"
    );
    assert!(report.passed(), "{report}");
    // Idle for less than the retention: the offsets cannot have expired.
    let report = member_back_after_an_idle_stretch(900, false);
    assert!(only(&report, AnomalyKind::CommittedOffsetRegression).is_violation());
    // A commit acknowledged after the idle stretch stored an offset again: finding nothing
    // after it is a regression, however long the group was idle before.
    let report = member_back_after_an_idle_stretch(2_000, true);
    assert!(only(&report, AnomalyKind::CommittedOffsetRegression).is_violation());
}

#[test]
fn a_group_poll_still_running_when_the_fetch_began_keeps_its_offsets_from_expiring() {
    let hung = OpKind::Poll {
        consumer: 101,
        topic: "t".into(),
        partition: 0,
        from_offset: 10,
        records: vec![],
        group: Some(GROUP.into()),
        isolation: IsolationLevel::ReadUncommitted,
        txn: None,
        bounds: None,
    };
    let report = Builder::default()
        .acked_commit(100, 10, (3, 5))
        .op(hung, 6, None, Outcome::Pending)
        .fetch(FINAL_READER, None, 5_000)
        .check(&expire_after(1_000));
    assert!(only(&report, AnomalyKind::CommittedOffsetRegression).is_violation());
}

#[test]
fn another_groups_commits_say_nothing_about_this_groups_offsets() {
    let other = OpKind::Commit {
        consumer: 100,
        group: "other".into(),
        offsets: vec![("t".into(), 0, 10)],
    };
    let report = Builder::default()
        .op(other, 0, Some(2), Outcome::Ok { offset: None })
        .fetch(101, None, 10)
        .check(&Allowances::default());
    assert_clean(&report);
}

// ---- Records skipped by a group ----

/// Three acknowledged records; member 100 processes offset 0, then (after a rebalance, as a new
/// consumer id 101) offset 2, and `extra` adds more; the group ends committed at 3.
fn group_over_three_records(extra: impl FnOnce(&mut Builder), allowances: &Allowances) -> Report {
    let mut b = Builder::default();
    b.send(10, (0, 5), ok(0))
        .send_full(2, 0, None, 11, 1, (6, 9), ok(1))
        .send(12, (10, 12), ok(2))
        .member_poll(GROUP, 100, 0, &[(0, 10)], 20)
        .member_poll(GROUP, 101, 2, &[(2, 12)], 30)
        .acked_commit(101, 3, (32, 34))
        .final_read(&[(0, 10), (1, 11), (2, 12)], 100)
        .fetch(FINAL_READER, Some(3), 110);
    extra(&mut b);
    b.check(allowances)
}

#[test]
fn a_record_below_the_final_committed_offset_that_no_member_returned_is_skipped_by_the_group() {
    // The new assignment started at the committed offset 2, but 1 was never processed: the
    // commit of offset 2 came from a member that had not read offset 1.
    let report = group_over_three_records(|_| {}, &Allowances::default());
    let a = only(&report, AnomalyKind::SkippedByGroup);
    assert!(a.is_violation(), "{a}");
    assert_eq!(
        (a.offsets.as_slice(), a.values.as_slice()),
        (&[1][..], &[11][..])
    );
    assert!(
        a.explanation
            .starts_with("group g ended with committed offset 3 (fetch op 7)"),
        "{a}"
    );
    assert_eq!(
        a.evidence
            .iter()
            .map(|e| (e.kind, e.process))
            .collect::<Vec<_>>(),
        vec![
            ("fetch-committed", FINAL_READER),
            ("poll", FINAL_READER),
            ("send", 2)
        ]
    );
    // Each consumer id walked without a gap: only the group as a whole skipped.
    assert_eq!(report.anomalies.len(), 1, "{report}");
}

#[test]
fn a_record_any_member_of_the_group_returned_is_not_skipped_by_the_group() {
    let report = group_over_three_records(
        |b| {
            b.member_poll(GROUP, 102, 1, &[(1, 11)], 25);
        },
        &Allowances::default(),
    );
    assert_clean(&report);
}

#[test]
fn a_record_only_a_consumer_outside_the_group_returned_is_still_skipped_by_the_group() {
    let report = group_over_three_records(
        |b| {
            b.poll(7, 1, &[(1, 11)], 25)
                .member_poll("other", 8, 1, &[(1, 11)], 26);
        },
        &Allowances::default(),
    );
    assert!(only(&report, AnomalyKind::SkippedByGroup).is_violation());
}

#[test]
fn a_record_skipped_by_the_group_whose_loss_is_allowed_is_allowed() {
    // Value 11 was sent with acks=1 before the crash at 50 ms.
    let report = group_over_three_records(|_| {}, &acks1_crash_at(50));
    let a = only(&report, AnomalyKind::SkippedByGroup);
    assert!(cause(a).contains("acks=1, crash at 50 ms"), "{a}");
    assert!(report.passed(), "{report}");
}

#[test]
fn records_at_or_above_the_final_committed_offset_are_not_judged() {
    let mut b = Builder::default();
    b.send(10, (0, 5), ok(0))
        .send(11, (6, 9), ok(1))
        .member_poll(GROUP, 100, 0, &[(0, 10)], 20)
        .acked_commit(100, 1, (22, 24))
        .final_read(&[(0, 10), (1, 11)], 100);
    // Without a final fetch the partition is not judged either.
    assert_clean(&b.check(&Allowances::default()));
    assert_clean(
        &b.fetch(FINAL_READER, Some(1), 110)
            .check(&Allowances::default()),
    );
}
