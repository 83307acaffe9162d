//! Histories generated from a valid linear log per partition (sends acknowledged at their
//! offsets, polls reading contiguous ranges, empty offsets here and there, indefinite sends that
//! landed or not) must check clean; one injected anomaly must then be found.

use proptest::prelude::*;

use super::*;

/// A small deterministic generator: the proptest input is its seed and the sizes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// The ground truth a history was generated from.
struct Generated {
    builder: Builder,
    /// Per partition: offset → value (None: an empty offset).
    logs: Vec<Vec<Option<u64>>>,
    /// Per partition: a value whose send definitely failed.
    failed_values: Vec<u64>,
}

fn generate(seed: u64, partitions: usize, max_len: u64) -> Generated {
    let mut rng = SplitMix(seed);
    let mut b = Builder::default();
    let mut next_value = 100;
    let mut logs = Vec::new();
    let mut failed_values = Vec::new();
    for p in 0..partitions as i32 {
        let len = rng.range(4, max_len + 1);
        let mut log = Vec::new();
        for offset in 0..len as i64 {
            // Offsets 0 to 2 always hold values (0 and 1 acknowledged), so every injection has
            // a target.
            if offset > 2 && rng.one_in(5) {
                log.push(None);
                continue;
            }
            let value = next_value;
            next_value += 1;
            log.push(Some(value));
            // Invoked in offset order, each in flight up to 25 ms: a send that completed before
            // another was invoked always holds the lower offset.
            let invoke = 10 * offset as u64;
            let complete = invoke + rng.range(1, 25);
            let outcome = if offset > 1 && rng.one_in(6) {
                unknown()
            } else {
                ok(offset)
            };
            let producer = rng.range(0, 3) as Process;
            let key = if rng.one_in(3) {
                None
            } else {
                Some(rng.range(0, 3))
            };
            let acks = [0, 1, -1][rng.range(0, 3) as usize];
            b.send_full(producer, p, key, value, acks, (invoke, complete), outcome);
        }
        // Sends that never landed: one failed, one timed out, one still pending.
        for outcome in [failed(), unknown(), Outcome::Pending] {
            let value = next_value;
            next_value += 1;
            if matches!(outcome, Outcome::Fail { .. }) {
                failed_values.push(value);
            }
            let at = rng.range(0, 10 * len);
            let complete = (!matches!(outcome, Outcome::Pending)).then_some(at + 30);
            let kind = OpKind::Send {
                producer: 9,
                topic: "t".into(),
                partition: p,
                key: None,
                value,
                acks: -1,
                txn: None,
            };
            b.op(kind, at, complete, outcome);
        }
        let read = |from: i64, n: i64| -> Vec<(i64, u64)> {
            (from..(from + n).min(len as i64))
                .filter_map(|o| log[o as usize].map(|v| (o, v)))
                .collect()
        };
        // Consumers: each starts somewhere, reads contiguous chunks, and now and then seeks back.
        for consumer in 0..rng.range(0, 3) as Process {
            let mut position = rng.range(0, len) as i64;
            let mut at = 500 + 1_000 * consumer as u64;
            for _ in 0..rng.range(1, 6) {
                if rng.one_in(5) {
                    position = rng.range(0, position as u64 + 1) as i64;
                }
                let n = rng.range(1, 5) as i64;
                b.poll_in(consumer, p, position, &read(position, n), at);
                position = (position + n).min(len as i64);
                at += 3;
            }
        }
        // The final read, from the log start in chunks of 5.
        for (i, from) in (0..len as i64).step_by(5).enumerate() {
            b.poll_in(FINAL_READER, p, from, &read(from, 5), 10_000 + i as u64);
        }
        logs.push(log);
    }
    Generated {
        builder: b,
        logs,
        failed_values,
    }
}

fn history_strategy() -> impl Strategy<Value = (u64, usize, u64)> {
    (any::<u64>(), 1..=3usize, 4..=16u64)
}

/// The record lists of the final read of `partition`, in order.
fn final_polls(history: &mut History, partition: i32) -> Vec<&mut Vec<(i64, u64)>> {
    history
        .ops
        .iter_mut()
        .filter_map(|op| match &mut op.kind {
            OpKind::Poll {
                consumer: FINAL_READER,
                partition: p,
                records,
                ..
            } if *p == partition => Some(records),
            _ => None,
        })
        .collect()
}

/// Injects anomaly number `which` into partition `partition`; returns the kinds any one of which
/// must then be reported as a violation.
fn inject(
    g: &Generated,
    history: &mut History,
    which: usize,
    partition: usize,
) -> Vec<AnomalyKind> {
    let log = &g.logs[partition];
    let p = partition as i32;
    let v0 = log[0].expect("offset 0 holds a value");
    let v1 = log[1].expect("offset 1 holds a value");
    let end = log.len() as i64;
    let send_of = |history: &mut History, value: u64| -> usize {
        history
            .ops
            .iter()
            .position(|op| matches!(op.kind, OpKind::Send { value: v, .. } if v == value))
            .unwrap()
    };
    match which {
        // Lost: value 1 disappears from every read.
        0 => {
            for op in &mut history.ops {
                if let OpKind::Poll {
                    partition: q,
                    records,
                    ..
                } = &mut op.kind
                {
                    if *q == p {
                        records.retain(|&(_, v)| v != v1);
                    }
                }
            }
            vec![AnomalyKind::LostWrite, AnomalyKind::NeverSeen]
        }
        // Duplicate: the final read finds value 0 again past the end.
        1 => {
            final_polls(history, p).last_mut().unwrap().push((end, v0));
            vec![AnomalyKind::Duplicate]
        }
        // Inconsistent offset: the ack of value 0 names offset 1.
        2 => {
            let i = send_of(history, v0);
            history.ops[i].outcome = ok(1);
            vec![AnomalyKind::InconsistentOffset]
        }
        // Non-monotonic: the final read returns offsets 1 then 0.
        3 => {
            final_polls(history, p)[0].swap(0, 1);
            vec![AnomalyKind::NonMonotonicPoll]
        }
        // Skip: the final read jumps from offset 0 to 2.
        4 => {
            final_polls(history, p)[0].retain(|&(o, _)| o != 1);
            vec![AnomalyKind::SkippedOffset]
        }
        // Order: the send acknowledged at offset 0 is invoked after every other send completed.
        5 => {
            let i = send_of(history, v0);
            history.ops[i].invoke_ms = 20_000;
            history.ops[i].complete_ms = Some(20_005);
            vec![
                AnomalyKind::KeyOrderViolation,
                AnomalyKind::ProducerOrderViolation,
                AnomalyKind::OffsetsWentBackwards,
            ]
        }
        // Aborted read: the final read returns the value of a failed send.
        _ => {
            final_polls(history, p)
                .last_mut()
                .unwrap()
                .push((end, g.failed_values[partition]));
            vec![AnomalyKind::PhantomRead]
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn histories_consistent_with_a_linear_log_check_clean((seed, partitions, max_len) in history_strategy()) {
        let g = generate(seed, partitions, max_len);
        let report = g.builder.check(&Allowances::default());
        prop_assert!(report.anomalies.is_empty() && report.passed(), "{}", report);
        prop_assert_eq!(report.final_read_partitions.len(), partitions);
    }

    #[test]
    fn one_injected_anomaly_is_found_as_a_violation(
        (seed, partitions, max_len) in history_strategy(),
        which in 0..7usize,
        partition in 0..3usize,
    ) {
        let g = generate(seed, partitions, max_len);
        let partition = partition % partitions;
        let mut history = g.builder.build();
        let expected = inject(&g, &mut history, which, partition);
        let report = check(&history, &Allowances::default());
        prop_assert!(
            report.violations().any(|a| expected.contains(&a.kind) && a.partition == partition as i32),
            "injection {} expected one of {:?} in partition {}, got:\n{}", which, expected, partition, report
        );
        prop_assert!(!report.passed());
    }
}
