//! The idempotent producers' state of one partition, and the rules that use it.
//!
//! An idempotent producer stamps every batch with its producer id, its epoch and the sequence
//! number of its first record (sequences count records per partition, from 0, wrapping from
//! `i32::MAX` to 0). For each producer id the partition remembers the current epoch and the
//! last [`BATCHES_TO_RETAIN`] batches it appended (sequence range, offsets, timestamp): the
//! producer keeps at most five requests in flight per partition, so any retry it can send is in
//! that window.
//!
//! The rules, exactly as Kafka's `ProducerAppendInfo` (`checkProducerEpoch`, `checkSequence`,
//! `inSequence`) and `ProducerStateEntry.findDuplicateBatch` apply them to client appends:
//! 1. A batch with the current epoch whose first and last sequence equal those of a batch in the
//!    window is a retry: it is not appended again, and the producer is told the offsets of the
//!    original (error NONE; `UnifiedLog.append` answers duplicates this way).
//! 2. An epoch older than the current one is a zombie: INVALID_PRODUCER_EPOCH (Kafka 2.7+).
//! 3. A newer epoch must start at sequence 0, unless nothing is known of the producer:
//!    OUT_OF_ORDER_SEQUENCE_NUMBER otherwise.
//! 4. With the current epoch, the first sequence must follow the last one appended
//!    (`last + 1`, or 0 after `i32::MAX`): OUT_OF_ORDER_SEQUENCE_NUMBER otherwise (a gap, or an
//!    overlap that is not an exact retry).
//! 5. A producer the partition knows nothing about (new, or its batches are gone from the log)
//!    may start at any sequence. Since KIP-360 (Kafka 2.5) brokers no longer answer
//!    UNKNOWN_PRODUCER_ID here; they accept the batch and start tracking the producer.
//! 6. An idempotent batch without a sequence number (`base_sequence` < 0) is INVALID_RECORD
//!    (Kafka's `LogValidator`).
//!
//! The state changes only through [`ProducerStateManager::record`], which the partition calls
//! after a successful append, and when the partition rebuilds it on open from the latest
//! snapshot ([`super::producer_snapshot`]) and the batches after it, so a batch lost in a crash
//! leaves no trace here.

use std::collections::{BTreeMap, VecDeque};

use crate::log::batch::BatchHeader;

/// `producer_id` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// The epoch of a producer the partition knows nothing about.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// The sequence of a batch without one, and the last sequence of a producer with no batches.
pub const NO_SEQUENCE: i32 = -1;
/// How many of a producer's last batches are kept for duplicate detection (Kafka's
/// `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`, matching `max.in.flight.requests.per.connection`
/// ≤ 5 that idempotent clients enforce).
pub const BATCHES_TO_RETAIN: usize = 5;

/// `sequence + increment`, wrapping past `i32::MAX` to 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// The sequence of a batch's last record.
pub fn last_sequence(header: &BatchHeader) -> i32 {
    if header.base_sequence == NO_SEQUENCE {
        NO_SEQUENCE
    } else {
        increment_sequence(header.base_sequence, header.last_offset_delta)
    }
}

/// Does `next_seq` directly follow `last_seq`?
fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// Is this a data batch from an idempotent producer?
fn is_idempotent(header: &BatchHeader) -> bool {
    header.producer_id > NO_PRODUCER_ID && !header.is_control()
}

/// One appended batch, as remembered for duplicate detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
    /// The batch's max timestamp (the LogAppendTime when the log stamps one).
    pub timestamp_ms: i64,
}

/// What the partition knows of one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn unknown() -> ProducerEntry {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
        }
    }

    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    /// The window of last appended batches, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    /// The last sequence appended with the current epoch, or [`NO_SEQUENCE`].
    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }

    /// Kafka's `ProducerStateEntry.addBatch`: a new epoch forgets the old epoch's batches.
    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        assert!(self.batches.len() <= BATCHES_TO_RETAIN);
    }
}

/// Why a record set from an idempotent producer is refused. Mapped to Kafka codes in
/// `protocol::errors`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// INVALID_PRODUCER_EPOCH: a newer epoch of this producer id has written here (a zombie).
    #[error(
        "producer {producer_id} epoch {epoch} is older than the current epoch {current_epoch}"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER: a new epoch must start at sequence 0.
    #[error("producer {producer_id} new epoch {epoch} (current {current_epoch}) starts at sequence {first_seq}, not 0")]
    NewEpochNotAtZero {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
        first_seq: i32,
    },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER: a gap, or an overlap that is not an exact retry.
    #[error("out of order sequence from producer {producer_id} epoch {epoch}: {first_seq} does not follow {last_seq}")]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    },
    /// INVALID_RECORD: an idempotent batch without a sequence number.
    #[error("batch from producer {producer_id} has no sequence number")]
    MissingSequence { producer_id: i64 },
}

/// What to do with a record set that passed [`ProducerStateManager::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendDecision {
    /// Append it, then [`ProducerStateManager::record`] each batch.
    Append,
    /// A retry of a batch already in the log: append nothing, answer with the original.
    Duplicate(BatchMetadata),
}

/// The producers' state of one partition. Ordered by producer id so that anything derived from
/// it (logs, snapshots) is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    pub fn new() -> ProducerStateManager {
        ProducerStateManager::default()
    }

    /// What is known of `producer_id`, if anything.
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer id known, with its entry, in id order (for snapshots).
    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(&id, entry)| (id, entry))
    }

    /// The state a snapshot describes: per producer id, its epoch and its window of batches,
    /// oldest first. Refuses entries that [`ProducerStateManager::record`] could not have made.
    pub fn from_entries(
        entries: Vec<(i64, i16, Vec<BatchMetadata>)>,
    ) -> Result<ProducerStateManager, String> {
        let mut producers = BTreeMap::new();
        for (producer_id, epoch, batches) in entries {
            if producer_id <= NO_PRODUCER_ID || batches.len() > BATCHES_TO_RETAIN {
                return Err(format!("producer {producer_id} cannot be in a snapshot"));
            }
            if batches
                .windows(2)
                .any(|w| w[0].last_offset >= w[1].base_offset)
            {
                return Err(format!("producer {producer_id} has batches out of order"));
            }
            let entry = ProducerEntry {
                epoch,
                batches: batches.into(),
            };
            if producers.insert(producer_id, entry).is_some() {
                return Err(format!("producer {producer_id} appears twice"));
            }
        }
        Ok(ProducerStateManager { producers })
    }

    /// Forgets producers whose batches all lie below `log_start_offset` (deleted by retention
    /// or DeleteRecords), as a rebuild from the log start would not know them.
    pub fn evict_before(&mut self, log_start_offset: u64) {
        self.producers.retain(|_, entry| {
            entry
                .batches
                .back()
                .is_some_and(|b| b.last_offset >= log_start_offset)
        });
    }

    /// Number of producer ids known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks the batches of one record set, in order, against the state and against the
    /// batches before them in the set (Kafka's `UnifiedLog.analyzeAndValidateProducerState`).
    /// Changes nothing. Batches without a producer id pass unchecked. A duplicate anywhere in
    /// the set makes the whole set a duplicate, as in Kafka (clients send one batch per
    /// partition; Kafka refuses more than one from v3 produce on).
    pub fn check(&self, batches: &[BatchHeader]) -> Result<AppendDecision, SequenceError> {
        // The state as it would be after the set's earlier batches (Kafka's `updatedEntry`).
        let mut updated: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        for header in batches.iter().filter(|h| is_idempotent(h)) {
            let producer_id = header.producer_id;
            let epoch = header.producer_epoch;
            let first_seq = header.base_sequence;
            if first_seq < 0 {
                return Err(SequenceError::MissingSequence { producer_id });
            }
            let last_seq = last_sequence(header);
            let current = self.producers.get(&producer_id);
            if let Some(original) =
                current.and_then(|e| e.find_duplicate(epoch, first_seq, last_seq))
            {
                return Ok(AppendDecision::Duplicate(original));
            }
            let current_epoch = current.map_or(NO_PRODUCER_EPOCH, |e| e.epoch);
            let entry = updated
                .entry(producer_id)
                .or_insert_with(|| current.cloned().unwrap_or_else(ProducerEntry::unknown));
            if epoch < entry.epoch {
                return Err(SequenceError::InvalidProducerEpoch {
                    producer_id,
                    epoch,
                    current_epoch: entry.epoch,
                });
            }
            if epoch != entry.epoch {
                if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
                    return Err(SequenceError::NewEpochNotAtZero {
                        producer_id,
                        epoch,
                        current_epoch: entry.epoch,
                        first_seq,
                    });
                }
            } else if !(current_epoch == NO_PRODUCER_EPOCH
                || in_sequence(entry.last_seq(), first_seq))
            {
                // With no batches of the producer left (an unknown producer) any sequence is
                // accepted, as Kafka does.
                return Err(SequenceError::OutOfOrder {
                    producer_id,
                    epoch,
                    first_seq,
                    last_seq: entry.last_seq(),
                });
            }
            // Offsets are not known yet; only the sequences matter for the batches after it.
            entry.add_batch(
                epoch,
                BatchMetadata {
                    first_seq,
                    last_seq,
                    base_offset: 0,
                    last_offset: 0,
                    timestamp_ms: header.max_timestamp,
                },
            );
        }
        Ok(AppendDecision::Append)
    }

    /// Records a batch that is now in the log (`header.base_offset` is its real offset), with
    /// the timestamp it was stored with. Batches without a producer id are ignored. Used after
    /// each successful append, and to rebuild the state from the log on open, where it applies
    /// what the log holds without judging it (Kafka's replication/recovery origin).
    pub fn record(&mut self, header: &BatchHeader, timestamp_ms: i64) {
        if !is_idempotent(header) {
            return;
        }
        assert!(
            header.base_offset >= 0,
            "recording a batch without an offset"
        );
        let batch = BatchMetadata {
            first_seq: header.base_sequence,
            last_seq: last_sequence(header),
            base_offset: header.base_offset as u64,
            last_offset: header.last_offset() as u64,
            timestamp_ms,
        };
        self.producers
            .entry(header.producer_id)
            .or_insert_with(ProducerEntry::unknown)
            .add_batch(header.producer_epoch, batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::MAGIC_V2;

    const PID: i64 = 1000;

    /// A header of `records` records from producer `pid`, epoch `epoch`, starting at `seq`.
    fn batch(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: MAGIC_V2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1_000,
            max_timestamp: 1_000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    /// Checks `header` and, if it is to be appended, records it at `offset` as the partition
    /// would. Returns the decision.
    fn append(
        state: &mut ProducerStateManager,
        header: BatchHeader,
        offset: u64,
    ) -> Result<AppendDecision, SequenceError> {
        let decision = state.check(&[header])?;
        if decision == AppendDecision::Append {
            let stored = BatchHeader {
                base_offset: offset as i64,
                ..header
            };
            state.record(&stored, header.max_timestamp);
        }
        Ok(decision)
    }

    #[test]
    fn an_unknown_producer_may_start_at_any_sequence() {
        // KIP-360: no UNKNOWN_PRODUCER_ID; the batches of a producer may have left the log.
        let mut state = ProducerStateManager::new();
        assert_eq!(
            append(&mut state, batch(PID, 0, 42, 3), 0),
            Ok(AppendDecision::Append)
        );
        let entry = state.entry(PID).unwrap();
        assert_eq!((entry.epoch(), entry.last_seq()), (0, 44));
    }

    #[test]
    fn the_next_batch_in_sequence_is_appended() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 3), 0).unwrap();
        assert_eq!(
            append(&mut state, batch(PID, 0, 3, 2), 3),
            Ok(AppendDecision::Append)
        );
        assert_eq!(state.entry(PID).unwrap().last_seq(), 4);
    }

    #[test]
    fn a_retried_batch_is_a_duplicate_answered_with_its_original_offsets() {
        // The bug: a retry after a lost response appended twice.
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 3), 10).unwrap();
        append(&mut state, batch(PID, 0, 3, 2), 13).unwrap();
        let decision = append(&mut state, batch(PID, 0, 0, 3), 99).unwrap();
        let AppendDecision::Duplicate(original) = decision else {
            panic!("not a duplicate: {decision:?}");
        };
        assert_eq!((original.base_offset, original.last_offset), (10, 12));
        assert_eq!((original.first_seq, original.last_seq), (0, 2));
        assert_eq!(
            state.entry(PID).unwrap().batches().count(),
            2,
            "a duplicate changes nothing"
        );
    }

    #[test]
    fn every_batch_of_the_last_five_is_recognised_as_a_duplicate() {
        let mut state = ProducerStateManager::new();
        for i in 0..5 {
            append(&mut state, batch(PID, 0, i, 1), i as u64).unwrap();
        }
        for i in 0..5 {
            assert!(matches!(
                state.check(&[batch(PID, 0, i, 1)]),
                Ok(AppendDecision::Duplicate(b)) if b.base_offset == i as u64
            ));
        }
    }

    #[test]
    fn a_retry_older_than_the_window_of_five_is_out_of_order() {
        let mut state = ProducerStateManager::new();
        for i in 0..6 {
            append(&mut state, batch(PID, 0, i, 1), i as u64).unwrap();
        }
        assert_eq!(
            state.entry(PID).unwrap().batches().count(),
            BATCHES_TO_RETAIN
        );
        assert!(matches!(
            state.check(&[batch(PID, 0, 0, 1)]),
            Err(SequenceError::OutOfOrder {
                first_seq: 0,
                last_seq: 5,
                ..
            })
        ));
    }

    #[test]
    fn a_sequence_gap_is_out_of_order() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 3), 0).unwrap();
        assert!(matches!(
            append(&mut state, batch(PID, 0, 4, 1), 3),
            Err(SequenceError::OutOfOrder {
                first_seq: 4,
                last_seq: 2,
                ..
            })
        ));
        assert_eq!(
            state.entry(PID).unwrap().last_seq(),
            2,
            "a refused batch changes nothing"
        );
    }

    #[test]
    fn an_overlap_that_is_not_an_exact_retry_is_out_of_order() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 3), 0).unwrap();
        assert!(matches!(
            state.check(&[batch(PID, 0, 1, 2)]),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            state.check(&[batch(PID, 0, 0, 4)]),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn an_older_epoch_is_fenced_with_invalid_producer_epoch() {
        // The bug: a zombie producer (same id, older epoch) writing after it was replaced.
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 1), 0).unwrap();
        append(&mut state, batch(PID, 1, 0, 1), 1).unwrap();
        assert_eq!(
            state.check(&[batch(PID, 0, 1, 1)]),
            Err(SequenceError::InvalidProducerEpoch {
                producer_id: PID,
                epoch: 0,
                current_epoch: 1
            })
        );
    }

    #[test]
    fn a_retry_from_an_older_epoch_is_fenced_not_deduplicated() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 1), 0).unwrap();
        append(&mut state, batch(PID, 1, 0, 1), 1).unwrap();
        assert!(matches!(
            state.check(&[batch(PID, 0, 0, 1)]),
            Err(SequenceError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn a_newer_epoch_must_start_at_sequence_zero() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 5), 0).unwrap();
        assert!(matches!(
            state.check(&[batch(PID, 1, 5, 1)]),
            Err(SequenceError::NewEpochNotAtZero {
                epoch: 1,
                current_epoch: 0,
                first_seq: 5,
                ..
            })
        ));
    }

    #[test]
    fn a_newer_epoch_at_sequence_zero_starts_a_fresh_window() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 5), 0).unwrap();
        assert_eq!(
            append(&mut state, batch(PID, 1, 0, 2), 5),
            Ok(AppendDecision::Append)
        );
        let entry = state.entry(PID).unwrap();
        assert_eq!(
            (entry.epoch(), entry.last_seq(), entry.batches().count()),
            (1, 1, 1)
        );
        // The old epoch's batch is no longer a duplicate: it is a zombie.
        assert!(matches!(
            state.check(&[batch(PID, 0, 0, 5)]),
            Err(SequenceError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        let mut state = ProducerStateManager::new();
        let near_end = i32::MAX - 1;
        append(&mut state, batch(PID, 0, near_end, 2), 0).unwrap();
        assert_eq!(state.entry(PID).unwrap().last_seq(), i32::MAX);
        assert_eq!(
            append(&mut state, batch(PID, 0, 0, 1), 2),
            Ok(AppendDecision::Append)
        );
        // A batch that itself crosses the wrap: sequences MAX-1, MAX, 0, 1.
        let crossing = batch(7, 0, near_end, 4);
        assert_eq!(last_sequence(&crossing), 1);
        append(&mut state, crossing, 3).unwrap();
        assert_eq!(
            append(&mut state, batch(7, 0, 2, 1), 7),
            Ok(AppendDecision::Append)
        );
        assert!(matches!(
            state.check(&[batch(7, 0, near_end, 4)]),
            Ok(AppendDecision::Duplicate(b)) if b.base_offset == 3
        ));
    }

    #[test]
    fn an_idempotent_batch_without_a_sequence_is_refused() {
        let state = ProducerStateManager::new();
        assert_eq!(
            state.check(&[batch(PID, 0, NO_SEQUENCE, 1)]),
            Err(SequenceError::MissingSequence { producer_id: PID })
        );
    }

    #[test]
    fn batches_without_a_producer_id_are_neither_checked_nor_recorded() {
        let mut state = ProducerStateManager::new();
        let plain = batch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE, 3);
        assert_eq!(append(&mut state, plain, 0), Ok(AppendDecision::Append));
        assert!(state.is_empty());
    }

    #[test]
    fn the_batches_of_one_record_set_are_checked_in_order() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 2), 0).unwrap();
        let in_order = [batch(PID, 0, 2, 2), batch(PID, 0, 4, 1)];
        assert_eq!(state.check(&in_order), Ok(AppendDecision::Append));
        let gap_inside = [batch(PID, 0, 2, 2), batch(PID, 0, 5, 1)];
        assert!(matches!(
            state.check(&gap_inside),
            Err(SequenceError::OutOfOrder { first_seq: 5, .. })
        ));
    }

    #[test]
    fn check_changes_nothing_until_the_batch_is_recorded() {
        // The bug: state updated before the append, so a failed append left a ghost batch and
        // the producer's retry was answered as a duplicate of nothing.
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(PID, 0, 0, 1), 0).unwrap();
        let before = state.clone();
        assert_eq!(
            state.check(&[batch(PID, 0, 1, 1)]),
            Ok(AppendDecision::Append)
        );
        assert_eq!(state, before);
        assert_eq!(
            state.check(&[batch(PID, 0, 1, 1)]),
            Ok(AppendDecision::Append)
        );
    }

    #[test]
    fn producers_are_tracked_independently() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(1, 0, 0, 1), 0).unwrap();
        append(&mut state, batch(2, 3, 10, 1), 1).unwrap();
        assert_eq!(
            append(&mut state, batch(1, 0, 1, 1), 2),
            Ok(AppendDecision::Append)
        );
        assert!(matches!(
            state.check(&[batch(2, 3, 12, 1)]),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert_eq!(state.len(), 2);
    }
}
