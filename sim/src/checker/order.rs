//! Offsets against real time: an acknowledged send invoked after another acknowledged send
//! completed must land at a higher offset of the same partition.

use std::collections::BTreeMap;

use super::allowances::Allowances;
use super::log::anomaly;
use super::model::{Model, Send};
use super::report::{Anomaly, AnomalyKind, Evidence, Status};

/// Acknowledged sends with offsets sorted by completion time, with the running maximum:
/// `prefix_max[i]` is the send with the highest offset among the first `i + 1` to complete.
struct Prefix<'m> {
    complete_ms: Vec<u64>,
    prefix_max: Vec<&'m Send<'m>>,
}

impl<'m> Prefix<'m> {
    fn new(mut sends: Vec<&'m Send<'m>>) -> Prefix<'m> {
        sends.sort_by_key(|s| (s.op.complete_ms, s.op.id));
        let mut prefix_max: Vec<&Send<'_>> = Vec::with_capacity(sends.len());
        for send in &sends {
            let best = match prefix_max.last() {
                Some(best) if best.acked_offset() >= send.acked_offset() => *best,
                _ => *send,
            };
            prefix_max.push(best);
        }
        Prefix {
            complete_ms: sends.iter().filter_map(|s| s.op.complete_ms).collect(),
            prefix_max,
        }
    }

    /// The send with the highest offset among those that completed before `invoke_ms`.
    fn highest_before(&self, invoke_ms: u64) -> Option<&'m Send<'m>> {
        let n = self.complete_ms.partition_point(|&done| done < invoke_ms);
        n.checked_sub(1).map(|i| self.prefix_max[i])
    }
}

pub(crate) fn real_time_order<'m>(
    model: &'m Model<'m>,
    allowances: &Allowances,
    out: &mut Vec<Anomaly>,
) {
    for (tp, part) in &model.partitions {
        let acked: Vec<&Send<'_>> = part
            .sends
            .iter()
            .map(|&i| &model.sends[i])
            .filter(|s| s.acked_offset().is_some() && s.op.complete_ms.is_some())
            .collect();
        let mut by_producer: BTreeMap<_, Vec<_>> = BTreeMap::new();
        let mut by_key: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for &send in &acked {
            by_producer.entry(send.producer).or_default().push(send);
            if let Some(key) = send.key {
                by_key.entry((send.producer, key)).or_default().push(send);
            }
        }
        let all = Prefix::new(acked.clone());
        let by_producer: BTreeMap<_, _> = by_producer
            .into_iter()
            .map(|(k, v)| (k, Prefix::new(v)))
            .collect();
        let by_key: BTreeMap<_, _> = by_key
            .into_iter()
            .map(|(k, v)| (k, Prefix::new(v)))
            .collect();
        for &b in &acked {
            let b_offset = b.acked_offset();
            let above = |prefix: Option<&Prefix<'m>>| {
                prefix
                    .and_then(|p| p.highest_before(b.op.invoke_ms))
                    .filter(|a| a.acked_offset() > b_offset)
            };
            // The most specific kind only: same producer and key, else same producer, else any.
            let found = b
                .key
                .and_then(|key| {
                    above(by_key.get(&(b.producer, key)))
                        .map(|a| (AnomalyKind::KeyOrderViolation, a))
                })
                .or_else(|| {
                    above(by_producer.get(&b.producer))
                        .map(|a| (AnomalyKind::ProducerOrderViolation, a))
                })
                .or_else(|| above(Some(&all)).map(|a| (AnomalyKind::OffsetsWentBackwards, a)));
            let Some((kind, a)) = found else { continue };
            let (a_offset, b_offset) = (a.acked_offset().unwrap_or(-1), b_offset.unwrap_or(-1));
            let whose = match kind {
                AnomalyKind::KeyOrderViolation => {
                    format!(
                        "producer {}'s sends with key {}",
                        b.producer,
                        b.key.unwrap_or_default()
                    )
                }
                AnomalyKind::ProducerOrderViolation => format!("producer {}'s sends", b.producer),
                _ => format!("sends of producers {} and {}", a.producer, b.producer),
            };
            // With replicas, either acknowledgement may belong to a log a leader change cut
            // back (an allowed loss): the earlier send's offset assigned again by the next
            // leader, or the later send acknowledged by a leader that never had the earlier one
            // (elected while cut off, it took writes until it learned of its successor) and then
            // truncated away. Either way the order is not broken: the log moved on. The
            // acknowledged copy is what counts: a non-idempotent retry may have written the
            // value again at another offset that survived.
            let lost = |send: &Send<'_>, offset: i64| {
                part.final_read
                    .as_ref()
                    .is_some_and(|f| !f.records.contains(&(offset, send.value)))
            };
            let allowed_loss = |send: &'m Send<'m>, offset: i64| {
                lost(send, offset)
                    .then(|| allowances.loss(send, model.appended_by_ms(send)))
                    .flatten()
                    .map(|cause| format!("value {} was lost: {cause}", send.value))
            };
            let status = match &allowances.offset_reuse_after_loss {
                Some(reuse) => allowed_loss(a, a_offset)
                    .map(|loss| format!("{reuse}: {loss}"))
                    .or_else(|| {
                        allowed_loss(b, b_offset).map(|loss| {
                            format!(
                                "a leader without the earlier write acknowledged the later one, \
                                 then a leader change cut its log back (replicated topic): {loss}"
                            )
                        })
                    })
                    .map_or(Status::Violation, |cause| Status::Allowed { cause }),
                None => Status::Violation,
            };
            out.push(anomaly(
                kind,
                status,
                tp,
                [a_offset, b_offset],
                [a.value, b.value],
                format!(
                    "{whose} went backwards: value {} (op {}) was acknowledged at offset {a_offset} at {} ms, \
                     then value {} (op {}), invoked at {} ms, was acknowledged at the lower offset {b_offset}",
                    a.value,
                    a.op.id,
                    a.op.complete_ms.unwrap_or_default(),
                    b.value,
                    b.op.id,
                    b.op.invoke_ms
                ),
                vec![
                    Evidence::of(a.op, "earlier acknowledged send", Some(a_offset), Some(a.value)),
                    Evidence::of(b.op, "later send, at a lower offset", Some(b_offset), Some(b.value)),
                ],
            ));
        }
    }
}
