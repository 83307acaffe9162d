//! Hand-made histories for the compacted-topic rules: what a scan from the log start may and
//! may not miss, flagged, excused (cleaned away) and allowed.

use std::collections::BTreeMap;

use super::*;

const SCANNER: Process = 7;

impl Builder {
    /// An acknowledged acks=all send of `value` with key `key` at `offset` of partition 0.
    fn keyed(&mut self, key: u64, value: u64, offset: i64, at: (u64, u64)) -> &mut Self {
        self.send_full(1, 0, Some(key), value, ACKS_ALL, at, ok(offset))
    }
}

/// Checks with topic "t" compacted, `tombstones` marked, tombstones kept `retention_ms`.
fn check_compacted(
    b: &Builder,
    tombstones: &[u64],
    retention_ms: u64,
    expect_cleaning: bool,
    allowances: Allowances,
) -> Report {
    let mut history = b.build();
    history.tombstones.extend(tombstones.iter().copied());
    let allowances = Allowances {
        compacted_topics: BTreeMap::from([(
            "t".to_string(),
            CompactedTopic {
                delete_retention_ms: retention_ms,
                expect_cleaning,
            },
        )]),
        ..allowances
    };
    check(&history, &allowances)
}

fn kinds(report: &Report) -> Vec<(AnomalyKind, bool)> {
    report
        .anomalies
        .iter()
        .map(|a| (a.kind, a.is_violation()))
        .collect()
}

/// k1 = 1@0 then 2@1, k2 = 3@2: the log the scans below read.
fn overwritten() -> Builder {
    let mut b = Builder::default();
    b.keyed(1, 1, 0, (0, 5))
        .keyed(1, 2, 1, (10, 15))
        .keyed(2, 3, 2, (20, 25));
    b
}

#[test]
fn a_scan_that_sees_only_the_latest_value_of_each_key_passes_and_counts_what_was_cleaned() {
    let mut b = overwritten();
    b.poll(SCANNER, 0, &[(1, 2), (2, 3)], 100);
    let report = check_compacted(&b, &[], 1_000, true, Allowances::default());
    assert!(report.passed(), "{:?}", report.anomalies);
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
    assert_eq!(report.counts.records_cleaned["t"], 1);
}

#[test]
fn a_scan_returning_an_older_value_instead_of_the_latest_is_a_stale_value() {
    let mut b = overwritten();
    b.poll(SCANNER, 0, &[(0, 1), (2, 3)], 100);
    let report = check_compacted(&b, &[], 1_000, false, Allowances::default());
    let stale = only(&report, AnomalyKind::StaleValue);
    assert!(stale.is_violation());
    assert_eq!(stale.offsets, [1]);
    assert_eq!(stale.values, [2]);
    assert!(
        stale.explanation.contains("returned 1@0"),
        "{}",
        stale.explanation
    );
}

#[test]
fn a_scan_missing_a_key_whose_latest_record_is_a_value_is_latest_value_missing() {
    let mut b = overwritten();
    b.poll(SCANNER, 0, &[(2, 3)], 100);
    let report = check_compacted(&b, &[], 1_000, false, Allowances::default());
    let missing = only(&report, AnomalyKind::LatestValueMissing);
    assert!(missing.is_violation());
    assert_eq!(missing.values, [2]);
    // The general rules still see the latest value lost; the superseded 1@0 is excused.
    let lost: Vec<&Anomaly> = report
        .anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::LostWrite)
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", report.anomalies);
    assert_eq!(lost[0].values, [2]);
}

#[test]
fn a_key_missing_below_the_point_is_excused_by_a_newer_record_past_it() {
    let mut b = Builder::default();
    b.keyed(1, 1, 0, (0, 5))
        .keyed(2, 2, 1, (10, 15))
        .keyed(1, 3, 5, (20, 25));
    // The scan reads to offset 1 only; k1's 1@0 went for 3@5, past the scan's point.
    b.poll(SCANNER, 0, &[(1, 2)], 100);
    let report = check_compacted(&b, &[], 1_000, false, Allowances::default());
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
}

#[test]
fn a_newer_record_sent_after_the_scan_passed_does_not_excuse_a_missing_latest_value() {
    let mut b = Builder::default();
    b.keyed(1, 1, 0, (0, 5))
        .keyed(2, 2, 1, (10, 15))
        .keyed(1, 3, 5, (200, 205));
    b.poll(SCANNER, 0, &[(1, 2)], 100);
    let report = check_compacted(&b, &[], 1_000, false, Allowances::default());
    assert!(only(&report, AnomalyKind::LatestValueMissing).is_violation());
}

/// k1 = 1@0 then a tombstone 2@1 (sent at 10 ms), k2 = 3@2; a scan at 100 ms finds only k2.
fn tombstoned() -> Builder {
    let mut b = overwritten();
    b.poll(SCANNER, 0, &[(2, 3)], 100);
    b
}

#[test]
fn a_tombstone_gone_after_delete_retention_ms_is_allowed() {
    let report = check_compacted(&tombstoned(), &[2], 50, false, Allowances::default());
    assert!(report.passed(), "{:?}", report.anomalies);
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
}

#[test]
fn a_tombstone_gone_before_delete_retention_ms_is_flagged() {
    let report = check_compacted(&tombstoned(), &[2], 1_000, false, Allowances::default());
    let early = only(&report, AnomalyKind::TombstoneRemovedEarly);
    assert!(early.is_violation());
    assert_eq!(early.offsets, [1]);
    assert!(
        early.explanation.contains("gone 91 ms after its send"),
        "{}",
        early.explanation
    );
    assert_eq!(kinds(&report), [(AnomalyKind::TombstoneRemovedEarly, true)]);
}

#[test]
fn a_missing_latest_value_is_allowed_when_its_loss_is() {
    let mut b = Builder::default();
    b.keyed(2, 3, 2, (20, 25));
    b.send_full(1, 0, Some(1), 1, 1, (0, 5), ok(0))
        .send_full(1, 0, Some(1), 2, 1, (10, 15), ok(1));
    b.poll(SCANNER, 0, &[(2, 3)], 100);
    let report = check_compacted(&b, &[], 1_000, false, acks1_crash_at(50));
    assert!(report.passed(), "{:?}", report.anomalies);
    let missing = only(&report, AnomalyKind::LatestValueMissing);
    assert!(!missing.is_violation());
}

#[test]
fn a_compacted_topic_no_scan_saw_cleaned_is_not_compacted_when_cleanings_are_expected() {
    let mut b = overwritten();
    b.poll(SCANNER, 0, &[(0, 1), (1, 2), (2, 3)], 100);
    let report = check_compacted(&b, &[], 1_000, true, Allowances::default());
    assert_eq!(kinds(&report), [(AnomalyKind::NotCompacted, true)]);
    let report = check_compacted(&b, &[], 1_000, false, Allowances::default());
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
}

#[test]
fn a_record_moved_to_another_offset_in_a_compacted_topic_is_still_an_inconsistent_offset() {
    // A cleaner that renumbers: 2 (acknowledged at 1) read at 0, where 1 was read before.
    let mut b = overwritten();
    b.poll(SCANNER, 0, &[(0, 1), (1, 2), (2, 3)], 100);
    b.poll(SCANNER + 1, 0, &[(0, 2), (1, 3)], 200);
    let report = check_compacted(&b, &[], 1_000, false, Allowances::default());
    let found: Vec<AnomalyKind> = report.violations().map(|a| a.kind).collect();
    assert!(
        found.contains(&AnomalyKind::InconsistentOffset),
        "{found:?}"
    );
    assert!(found.contains(&AnomalyKind::Duplicate), "{found:?}");
}
