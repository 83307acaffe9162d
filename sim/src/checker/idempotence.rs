//! Kafka's promise to an idempotent producer: a retry of a batch the partition already holds
//! is answered with the original offset (`ProducerStateEntry.findDuplicateBatch`, answered with
//! error NONE by `UnifiedLog.append`), never refused.

use super::log::anomaly;
use super::model::{Model, SendClass};
use super::report::{Anomaly, AnomalyKind, Evidence, Status};

/// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER: what a broker without duplicate detection answers to
/// a retry (its sequence is not the next one).
pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// Kafka's DUPLICATE_SEQUENCE_NUMBER: a retry recognized as a duplicate but not answered with
/// its original offset.
pub(crate) const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

/// An idempotent producer's send that did not end acknowledged, whose last answer was a
/// sequence refusal, although its value is in the final read: its first attempt was appended
/// and never lost, so the retry had to be answered with that attempt's offset. Only an
/// idempotent producer gets sequence errors, so the code alone names the producer's kind. A
/// refused send whose value is absent from the final read is not judged here: its batch was
/// never appended, or was lost (and the loss is judged as a loss).
pub(crate) fn refused_retries(model: &Model<'_>, out: &mut Vec<Anomaly>) {
    for send in &model.sends {
        if matches!(send.class, SendClass::Acked(_)) {
            continue;
        }
        let code = send.op.outcome.code();
        let name = match code {
            Some(OUT_OF_ORDER_SEQUENCE_NUMBER) => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            Some(DUPLICATE_SEQUENCE_NUMBER) => "DUPLICATE_SEQUENCE_NUMBER",
            _ => continue,
        };
        let Some(final_read) = model
            .partitions
            .get(&send.tp)
            .and_then(|part| part.final_read.as_ref())
        else {
            continue;
        };
        let Some(&(offset, _)) = final_read
            .records
            .iter()
            .find(|&&(_, value)| value == send.value)
        else {
            continue;
        };
        let mut evidence = vec![Evidence::of(
            send.op,
            "the refused retry",
            None,
            Some(send.value),
        )];
        evidence.extend(
            final_read
                .polls
                .iter()
                .map(|&i| &model.polls[i])
                .find(|poll| poll.records.contains(&(offset, send.value)))
                .map(|poll| {
                    Evidence::of(
                        poll.op,
                        "final read that has the first attempt",
                        Some(offset),
                        Some(send.value),
                    )
                }),
        );
        out.push(anomaly(
            AnomalyKind::IdempotentRetryRefused,
            Status::Violation,
            &send.tp,
            [offset],
            [send.value],
            format!(
                "producer {}'s send of {} (op {}) ended {} after a retry refused with {name}, \
                 although its first attempt is in the log at offset {offset} (the final read has \
                 it): Kafka answers an idempotent producer's retry of a batch it holds with the \
                 original offset",
                send.producer,
                send.value,
                send.op.id,
                if send.class == SendClass::Failed {
                    "failed"
                } else {
                    "unknown"
                },
            ),
            evidence,
        ));
    }
}
