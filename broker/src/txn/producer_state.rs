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
//! # Transactions
//! A producer's first transactional batch opens its transaction (the entry remembers that
//! batch's offset, and the partition lists it among its ongoing transactions); its marker
//! ([`crate::txn::marker`]) closes it and yields a [`CompletedTxn`] (Kafka's
//! `ProducerAppendInfo.appendDataBatch`/`appendEndTxnMarker`). A completed transaction stays
//! *unreplicated* until the high watermark passes its marker. The first unstable offset is the
//! lowest first offset of the ongoing and unreplicated transactions, and the last stable offset
//! is that, capped by the high watermark ([`ProducerStateManager::last_stable_offset`]):
//! read_committed consumers read below it. The rules:
//! 7. While a producer's transaction is open, a non-transactional batch of it is
//!    INVALID_TXN_STATE.
//! 8. A marker with an epoch older than the producer's is INVALID_PRODUCER_EPOCH (a zombie
//!    coordinator's or a fenced producer's); one from an older coordinator epoch than the last
//!    marker's is TRANSACTION_COORDINATOR_FENCED.
//! 9. KIP-890 part 1: a client's transactional batch that would open a transaction here (its
//!    producer has none open) is taken only with a [`VerificationGuard`] that is still current:
//!    one [`ProducerStateManager::start_verification`] handed out before the leader asked the
//!    transaction coordinator whether the partition is in the producer's transaction, and that
//!    no transactional batch or marker of the producer has cleared since (Kafka's
//!    `VerificationStateEntry`). So the race "verified, then the abort marker lands, then the
//!    append" cannot open a transaction nobody will end: the marker clears the guard and the
//!    append is refused with INVALID_TXN_STATE. While a verification is pending, a batch with a
//!    higher sequence than the lowest one being verified is OUT_OF_ORDER_SEQUENCE_NUMBER, so a
//!    later batch cannot overtake one whose verification failed retriably (Kafka's
//!    `lowestSequence`). Verifications are volatile: never in a snapshot, gone with a rebuild
//!    (which only refuses the appends they guarded, retriably for the client).
//!
//! The state changes only through [`ProducerStateManager::record`], which the partition calls
//! after a successful append, and when the partition rebuilds it on open from the latest
//! snapshot ([`super::producer_snapshot`]) and the batches after it, so a batch lost in a crash
//! leaves no trace here.

use std::collections::{BTreeMap, VecDeque};

use crate::log::batch::BatchHeader;
use crate::planted::{self, Bug};

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

/// The coordinator epoch of a producer no marker has been seen for.
pub const NO_COORDINATOR_EPOCH: i32 = -1;

/// A pending KIP-890 verification of one producer's transaction on this partition (Kafka's
/// `VerificationGuard`): unique per partition, so a verification answered after its guard was
/// cleared and another started (the ABA case) does not match the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerificationGuard(pub u64);

/// Whether a transactional batch that opens a transaction here must have been verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnVerification {
    /// Appends that are not a client's produce (the partition's own tests and tools).
    NotRequired,
    /// A client's produce: the guard [`ProducerStateManager::start_verification`] gave for the
    /// producer's batch, if it gave one (`None`: none was started, so none can match).
    Required(Option<VerificationGuard>),
}

/// One producer's pending verification (Kafka's `VerificationStateEntry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verification {
    guard: VerificationGuard,
    /// The lowest first sequence a verification was started for, at `epoch`.
    lowest_seq: i32,
    epoch: i16,
}

/// What the partition knows of one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    /// The coordinator epoch of the last marker (Kafka's `coordinatorEpoch`).
    coordinator_epoch: i32,
    /// The offset of the first batch of the producer's open transaction, if one is open.
    current_txn_first_offset: Option<u64>,
}

/// A transaction a marker closed on this partition (Kafka's `CompletedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    /// The offset of its first batch on this partition.
    pub first_offset: u64,
    /// The offset of its marker.
    pub last_offset: u64,
    pub aborted: bool,
}

/// One producer's entry as a snapshot stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// Oldest first.
    pub batches: Vec<BatchMetadata>,
    pub coordinator_epoch: i32,
    pub current_txn_first_offset: Option<u64>,
}

impl ProducerEntry {
    fn unknown() -> ProducerEntry {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
            coordinator_epoch: NO_COORDINATOR_EPOCH,
            current_txn_first_offset: None,
        }
    }

    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    /// The offset of the first batch of the producer's open transaction, if one is open.
    pub fn current_txn_first_offset(&self) -> Option<u64> {
        self.current_txn_first_offset
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
        if epoch != self.epoch || planted::is(Bug::NoDuplicateDetection) {
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
    /// INVALID_TXN_STATE: a non-transactional batch while the producer's transaction is open.
    #[error("expected a transactional write from producer {producer_id}: its transaction is open")]
    InvalidTxnState { producer_id: i64 },
    /// INVALID_TXN_STATE: a transactional batch that would open a transaction here without a
    /// current verification (rule 9).
    #[error("Record was not part of an ongoing transaction (producer {producer_id})")]
    NotVerified { producer_id: i64 },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER: a batch past the lowest sequence still being verified.
    #[error("out of order sequence from producer {producer_id}: {first_seq} is past {lowest_seq}, the earliest sequence being verified")]
    PastVerifiedSequence {
        producer_id: i64,
        first_seq: i32,
        lowest_seq: i32,
    },
}

/// Why a marker is refused on this partition. Mapped to Kafka codes in `protocol::errors`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkerRefused {
    /// INVALID_PRODUCER_EPOCH: the producer has written with a newer epoch.
    #[error("marker for producer {producer_id} epoch {epoch} is older than the current epoch {current_epoch}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    /// TRANSACTION_COORDINATOR_FENCED: a newer coordinator has written a marker here.
    #[error("marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, older than {current}")]
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
    /// INVALID_REQUEST: a marker names no producer (a negative id or epoch); only a client
    /// speaking WriteTxnMarkers itself can send one, never a coordinator.
    #[error("marker for producer {producer_id} epoch {epoch}: no such producer can exist")]
    NoProducer { producer_id: i64, epoch: i16 },
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
    /// Open transactions: first offset to producer id (Kafka's `ongoingTxns`).
    ongoing: BTreeMap<u64, i64>,
    /// Transactions closed by a marker the high watermark has not yet passed, by first offset
    /// (Kafka's `unreplicatedTxns`). Not kept in snapshots: a reloaded state counts them as
    /// replicated, and the high watermark (which starts at or below the reloaded end) caps the
    /// LSO meanwhile.
    unreplicated: BTreeMap<u64, CompletedTxn>,
    /// Pending KIP-890 verifications, by producer id (rule 9). Cleared by the producer's next
    /// transactional batch or marker.
    verifications: BTreeMap<i64, Verification>,
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

    /// Every producer's entry as a snapshot stores it, in id order.
    pub fn snapshot_entries(&self) -> Vec<SnapshotEntry> {
        self.producers
            .iter()
            .map(|(&producer_id, entry)| SnapshotEntry {
                producer_id,
                epoch: entry.epoch,
                batches: entry.batches.iter().copied().collect(),
                coordinator_epoch: entry.coordinator_epoch,
                current_txn_first_offset: entry.current_txn_first_offset,
            })
            .collect()
    }

    /// The state a snapshot describes. Refuses entries that [`ProducerStateManager::record`]
    /// could not have made.
    pub fn from_entries(entries: Vec<SnapshotEntry>) -> Result<ProducerStateManager, String> {
        let mut state = ProducerStateManager::new();
        for e in entries {
            let producer_id = e.producer_id;
            if producer_id <= NO_PRODUCER_ID || e.batches.len() > BATCHES_TO_RETAIN {
                return Err(format!("producer {producer_id} cannot be in a snapshot"));
            }
            if e.batches
                .windows(2)
                .any(|w| w[0].last_offset >= w[1].base_offset)
            {
                return Err(format!("producer {producer_id} has batches out of order"));
            }
            if let Some(first) = e.current_txn_first_offset {
                // The batch that opened the transaction is at or below the producer's last.
                if e.batches.last().is_none_or(|b| first > b.last_offset) {
                    return Err(format!(
                        "producer {producer_id} has a transaction out of place"
                    ));
                }
                if state.ongoing.insert(first, producer_id).is_some() {
                    return Err(format!("two transactions start at offset {first}"));
                }
            }
            let entry = ProducerEntry {
                epoch: e.epoch,
                batches: e.batches.into(),
                coordinator_epoch: e.coordinator_epoch,
                current_txn_first_offset: e.current_txn_first_offset,
            };
            if state.producers.insert(producer_id, entry).is_some() {
                return Err(format!("producer {producer_id} appears twice"));
            }
        }
        Ok(state)
    }

    /// Forgets producers whose batches all lie below `log_start_offset` (deleted by retention
    /// or DeleteRecords), as a rebuild from the log start would not know them, with their open
    /// transactions (a marker for one would find no entry to close it), and the closed
    /// transactions whose markers lie below it (Kafka's `evictUnretainedProducers` and
    /// `removeUnreplicatedTransactions`). The open transaction of a producer that stays keeps
    /// holding the LSO back even if its first batch is gone: the LSO is then the log start
    /// ([`ProducerStateManager::last_stable_offset`]), as in Kafka.
    pub fn evict_before(&mut self, log_start_offset: u64) {
        self.producers.retain(|_, entry| {
            entry
                .batches
                .back()
                .is_some_and(|b| b.last_offset >= log_start_offset)
        });
        let producers = &self.producers;
        self.ongoing
            .retain(|_, producer_id| producers.contains_key(producer_id));
        self.unreplicated
            .retain(|_, txn| txn.last_offset >= log_start_offset);
    }

    /// The open transactions, as (first offset, producer id), oldest first.
    pub fn ongoing_transactions(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.ongoing.iter().map(|(&first, &pid)| (first, pid))
    }

    /// The lowest offset of a transaction not yet decided and replicated: the first offset of
    /// the oldest ongoing or unreplicated transaction (Kafka's `firstUndecidedOffset`).
    pub fn first_unstable_offset(&self) -> Option<u64> {
        let ongoing = self.ongoing.keys().next().copied();
        let unreplicated = self.unreplicated.keys().next().copied();
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The last stable offset to record with `completed`, just closed, in the aborted
    /// transaction index: the first offset of the oldest transaction still open, or the
    /// marker's offset + 1 (Kafka's `lastStableOffset(completedTxn)`).
    pub fn stable_offset_after(&self, completed: &CompletedTxn) -> u64 {
        self.ongoing
            .keys()
            .next()
            .map_or(completed.last_offset + 1, |&first| {
                first.min(completed.last_offset + 1)
            })
    }

    /// The last stable offset of a log starting at `log_start_offset` with `high_watermark`:
    /// read_committed consumers read below it. An open transaction whose first batch retention
    /// removed holds it at the log start (Kafka's `maybeIncrementFirstUnstableOffset`).
    pub fn last_stable_offset(&self, high_watermark: u64, log_start_offset: u64) -> u64 {
        self.first_unstable_offset()
            .map_or(high_watermark, |first| {
                first.max(log_start_offset).min(high_watermark)
            })
    }

    /// The high watermark moved: the closed transactions whose markers it passed are stable
    /// (Kafka's `onHighWatermarkUpdated`).
    pub fn on_high_watermark(&mut self, high_watermark: u64) {
        self.unreplicated
            .retain(|_, txn| txn.last_offset >= high_watermark);
    }

    /// Checks a marker for `producer_id` at `producer_epoch` from coordinator epoch
    /// `coordinator_epoch` (rule 8). Changes nothing.
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), MarkerRefused> {
        if producer_id < 0 || producer_epoch < 0 {
            return Err(MarkerRefused::NoProducer {
                producer_id,
                epoch: producer_epoch,
            });
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if producer_epoch < entry.epoch {
            return Err(MarkerRefused::InvalidProducerEpoch {
                producer_id,
                epoch: producer_epoch,
                current_epoch: entry.epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(MarkerRefused::CoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a marker now in the log at `header.base_offset` (`marker` as decoded; `None` for
    /// a control batch emptied by the cleaner, which ends nothing). Returns the transaction it
    /// closed, if the producer had one open here (a marker for a transaction that wrote nothing
    /// to this partition closes none, as in Kafka). Applies what the log holds without judging
    /// it, like [`ProducerStateManager::record`].
    pub fn record_marker(
        &mut self,
        header: &BatchHeader,
        marker: Option<crate::txn::marker::Marker>,
    ) -> Option<CompletedTxn> {
        assert!(header.is_control(), "a marker is a control batch");
        assert!(
            header.base_offset >= 0,
            "recording a marker without an offset"
        );
        // Whatever it ended, a verification started before it is stale (rule 9): the race
        // "verified, then the marker, then the append" is refused at the append.
        self.verifications.remove(&header.producer_id);
        let marker = marker?;
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(ProducerEntry::unknown);
        let completed = entry
            .current_txn_first_offset
            .take()
            .map(|first_offset| CompletedTxn {
                producer_id: header.producer_id,
                first_offset,
                last_offset: header.base_offset as u64,
                aborted: marker.control == crate::txn::marker::ControlType::Abort,
            });
        // Kafka's `ProducerStateEntry.update`: a new epoch (a bump at the end of a transaction,
        // KIP-890) forgets the old epoch's batches.
        if header.producer_epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = header.producer_epoch;
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        if let Some(txn) = completed {
            let removed = self.ongoing.remove(&txn.first_offset);
            assert_eq!(
                removed,
                Some(txn.producer_id),
                "an open transaction is listed"
            );
            self.unreplicated.insert(txn.first_offset, txn);
        }
        completed
    }

    /// Records any batch now in the log (whole bytes as stored): a data batch as
    /// [`ProducerStateManager::record`] does, a control batch as a marker. A control batch
    /// whose marker cannot be read is skipped, loudly (it can only be damage the CRC missed or
    /// a control type this broker does not know).
    pub fn record_stored(&mut self, batch: &[u8]) -> Option<CompletedTxn> {
        let header = BatchHeader::parse(batch).expect("a stored batch parses");
        if !header.is_control() {
            self.record(&header, header.max_timestamp);
            return None;
        }
        if header.producer_id <= NO_PRODUCER_ID {
            return None;
        }
        match crate::txn::marker::decode(batch) {
            Ok(marker) => self.record_marker(&header, marker),
            Err(e) => {
                tracing::error!(offset = header.base_offset, %e, "unreadable control batch skipped");
                None
            }
        }
    }

    /// Starts (or joins) the verification of `producer_id`'s transaction before a client's
    /// transactional batch at `epoch` from `first_seq` is appended (Kafka's
    /// `maybeStartTransactionVerification`): `None` when the producer has a transaction open
    /// here already (the coordinator knows of it; no verification is needed), else the guard the
    /// append must present, `fresh` unless a verification is already pending (its guard is
    /// shared, and its lowest sequence and epoch follow Kafka's
    /// `maybeUpdateLowestSequenceAndEpoch`).
    pub fn start_verification(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        fresh: VerificationGuard,
    ) -> Option<VerificationGuard> {
        if self
            .producers
            .get(&producer_id)
            .is_some_and(|e| e.current_txn_first_offset.is_some())
        {
            return None;
        }
        let entry = self
            .verifications
            .entry(producer_id)
            .or_insert(Verification {
                guard: fresh,
                lowest_seq: first_seq,
                epoch,
            });
        if epoch == entry.epoch && first_seq < entry.lowest_seq {
            entry.lowest_seq = first_seq;
        }
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.lowest_seq = first_seq;
        }
        Some(entry.guard)
    }

    /// The coordinator refused the verification `guard` was started for: it ends, unless
    /// another has replaced it. (Kafka keeps a refused entry until its producer expires; its
    /// lowest sequence would then refuse the producer's next transaction here as out of order,
    /// so it goes now. A verification sharing the guard is refused at its append, the safe way.)
    pub fn end_verification(&mut self, producer_id: i64, guard: VerificationGuard) {
        if self
            .verifications
            .get(&producer_id)
            .is_some_and(|v| v.guard == guard)
        {
            self.verifications.remove(&producer_id);
        }
    }

    /// The guard of `producer_id`'s pending verification, if one is pending.
    pub fn verification(&self, producer_id: i64) -> Option<VerificationGuard> {
        self.verifications.get(&producer_id).map(|v| v.guard)
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
        self.check_verified(batches, TxnVerification::NotRequired)
    }

    /// [`ProducerStateManager::check`] with rule 9 for a client's produce.
    pub fn check_verified(
        &self,
        batches: &[BatchHeader],
        verification: TxnVerification,
    ) -> Result<AppendDecision, SequenceError> {
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
            let pending = self.verifications.get(&producer_id);
            // The set's first batch of the producer; those after it follow it in sequence.
            let first_in_set = !updated.contains_key(&producer_id);
            if let (TxnVerification::Required(_), Some(pending), true) =
                (verification, pending, first_in_set)
            {
                if first_seq > pending.lowest_seq {
                    return Err(SequenceError::PastVerifiedSequence {
                        producer_id,
                        first_seq,
                        lowest_seq: pending.lowest_seq,
                    });
                }
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
            if entry.current_txn_first_offset.is_some() && !header.is_transactional() {
                return Err(SequenceError::InvalidTxnState { producer_id });
            }
            if header.is_transactional() && entry.current_txn_first_offset.is_none() {
                if let TxnVerification::Required(guard) = verification {
                    let verified = guard.is_some() && pending.map(|v| v.guard) == guard;
                    if !verified {
                        return Err(SequenceError::NotVerified { producer_id });
                    }
                }
                // Its offset is not known yet; that a transaction is open is what matters.
                entry.current_txn_first_offset = Some(0);
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
        if header.is_transactional() {
            // The transaction is open here now, and the coordinator knows of it (rule 9).
            self.verifications.remove(&header.producer_id);
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(ProducerEntry::unknown);
        entry.add_batch(header.producer_epoch, batch);
        if header.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(batch.base_offset);
            let before = self.ongoing.insert(batch.base_offset, header.producer_id);
            assert!(before.is_none(), "two transactions start at one offset");
        }
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

    /// A transactional batch of `records` records from `pid`, as stored at `offset`.
    fn txn_batch(pid: i64, epoch: i16, seq: i32, records: i32, offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset: offset as i64,
            attributes: crate::log::batch::TRANSACTIONAL_BIT,
            ..batch(pid, epoch, seq, records)
        }
    }

    /// The marker batch of `pid` at `offset`, and its marker.
    fn marker_at(
        pid: i64,
        epoch: i16,
        control: crate::txn::marker::ControlType,
        coordinator_epoch: i32,
        offset: u64,
    ) -> Vec<u8> {
        let mut bytes = crate::txn::marker::encode(
            pid,
            epoch,
            crate::txn::marker::Marker {
                control,
                coordinator_epoch,
            },
            1_000,
        );
        crate::log::batch::set_base_offset(&mut bytes, offset as i64);
        bytes
    }

    fn record_txn(state: &mut ProducerStateManager, header: BatchHeader) {
        assert_eq!(state.check(&[header]), Ok(AppendDecision::Append));
        state.record(&header, header.max_timestamp);
    }

    use crate::txn::marker::ControlType::{Abort, Commit};

    #[test]
    fn a_transactional_batch_opens_a_transaction_and_the_lso_stops_at_its_first_offset() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(1, 0, 0, 5), 0).unwrap();
        assert_eq!(state.last_stable_offset(5, 0), 5);
        record_txn(&mut state, txn_batch(PID, 0, 0, 3, 5));
        record_txn(&mut state, txn_batch(PID, 0, 3, 3, 8));
        assert_eq!(
            state.entry(PID).unwrap().current_txn_first_offset(),
            Some(5)
        );
        assert_eq!(
            state.ongoing_transactions().collect::<Vec<_>>(),
            vec![(5, PID)]
        );
        assert_eq!(state.last_stable_offset(11, 0), 5);
        assert_eq!(
            state.last_stable_offset(3, 0),
            3,
            "the LSO never passes the HW"
        );
    }

    #[test]
    fn a_commit_marker_closes_the_transaction_and_the_lso_moves_once_the_hw_passes_it() {
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(PID, 0, 0, 3, 0));
        let completed = state.record_stored(&marker_at(PID, 0, Commit, 4, 3));
        assert_eq!(
            completed,
            Some(CompletedTxn {
                producer_id: PID,
                first_offset: 0,
                last_offset: 3,
                aborted: false
            })
        );
        assert_eq!(state.entry(PID).unwrap().current_txn_first_offset(), None);
        assert_eq!(state.entry(PID).unwrap().coordinator_epoch(), 4);
        // Decided, but the marker is not yet replicated: still unstable.
        assert_eq!(state.last_stable_offset(3, 0), 0);
        state.on_high_watermark(3);
        assert_eq!(state.last_stable_offset(3, 0), 0);
        state.on_high_watermark(4);
        assert_eq!(state.last_stable_offset(4, 0), 4);
        assert_eq!(state.first_unstable_offset(), None);
    }

    #[test]
    fn an_abort_marker_reports_an_aborted_transaction() {
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(PID, 2, 0, 1, 10));
        let completed = state
            .record_stored(&marker_at(PID, 2, Abort, 0, 11))
            .unwrap();
        assert!(completed.aborted);
        assert_eq!((completed.first_offset, completed.last_offset), (10, 11));
    }

    #[test]
    fn the_lso_is_the_first_offset_of_the_oldest_open_transaction() {
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(1, 0, 0, 2, 0));
        record_txn(&mut state, txn_batch(2, 0, 0, 2, 2));
        assert_eq!(state.last_stable_offset(4, 0), 0);
        state.record_stored(&marker_at(1, 0, Commit, 0, 4));
        state.on_high_watermark(5);
        assert_eq!(
            state.last_stable_offset(5, 0),
            2,
            "producer 2's transaction is still open"
        );
        state.record_stored(&marker_at(2, 0, Abort, 0, 5));
        state.on_high_watermark(6);
        assert_eq!(state.last_stable_offset(6, 0), 6);
    }

    #[test]
    fn a_marker_for_a_producer_with_no_open_transaction_here_closes_none() {
        let mut state = ProducerStateManager::new();
        assert_eq!(state.record_stored(&marker_at(PID, 0, Commit, 0, 0)), None);
        assert_eq!(state.first_unstable_offset(), None);
        assert_eq!(state.entry(PID).unwrap().epoch(), 0);
    }

    #[test]
    fn a_non_transactional_batch_while_the_transaction_is_open_is_invalid_txn_state() {
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(PID, 0, 0, 1, 0));
        assert_eq!(
            state.check(&[batch(PID, 0, 1, 1)]),
            Err(SequenceError::InvalidTxnState { producer_id: PID })
        );
        // Within one record set too.
        let mut fresh = ProducerStateManager::new();
        fresh.record(&batch(PID, 0, 0, 1), 0);
        assert_eq!(
            fresh.check(&[txn_batch(PID, 0, 1, 1, 0), batch(PID, 0, 2, 1)]),
            Err(SequenceError::InvalidTxnState { producer_id: PID })
        );
    }

    #[test]
    fn a_marker_naming_a_negative_producer_id_or_epoch_is_refused_not_encoded() {
        // Only a client sending WriteTxnMarkers itself can name one (the fuzz test did).
        let state = ProducerStateManager::new();
        assert_eq!(
            state.check_marker(-1, 0, 0),
            Err(MarkerRefused::NoProducer {
                producer_id: -1,
                epoch: 0
            })
        );
        assert_eq!(
            state.check_marker(PID, -1, 0),
            Err(MarkerRefused::NoProducer {
                producer_id: PID,
                epoch: -1
            })
        );
    }

    #[test]
    fn a_marker_from_an_older_producer_epoch_or_coordinator_epoch_is_refused() {
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(PID, 3, 0, 1, 0));
        assert_eq!(
            state.check_marker(PID, 2, 0),
            Err(MarkerRefused::InvalidProducerEpoch {
                producer_id: PID,
                epoch: 2,
                current_epoch: 3
            })
        );
        state.record_stored(&marker_at(PID, 3, Commit, 5, 1));
        assert_eq!(
            state.check_marker(PID, 3, 4),
            Err(MarkerRefused::CoordinatorFenced {
                producer_id: PID,
                coordinator_epoch: 4,
                current: 5
            })
        );
        assert_eq!(state.check_marker(PID, 3, 5), Ok(()));
        assert_eq!(
            state.check_marker(PID + 1, 0, 0),
            Ok(()),
            "an unknown producer"
        );
    }

    #[test]
    fn a_marker_with_a_new_epoch_forgets_the_old_epochs_batches() {
        // KIP-890 part 2: the coordinator bumps the epoch in the marker.
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(PID, 0, 0, 1, 0));
        state.record_stored(&marker_at(PID, 1, Commit, 0, 1));
        let entry = state.entry(PID).unwrap();
        assert_eq!((entry.epoch(), entry.batches().count()), (1, 0));
    }

    #[test]
    fn an_open_transaction_whose_start_retention_removed_holds_the_lso_at_the_log_start() {
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(1, 0, 0, 2, 0));
        record_txn(&mut state, txn_batch(2, 0, 0, 2, 2));
        record_txn(&mut state, txn_batch(1, 0, 2, 2, 4));
        state.evict_before(4);
        // Producer 2's batches are all gone: it goes, and its transaction with it.
        assert!(state.entry(2).is_none());
        assert_eq!(
            state.ongoing_transactions().collect::<Vec<_>>(),
            vec![(0, 1)]
        );
        assert_eq!(state.last_stable_offset(6, 4), 4);
        state.record_stored(&marker_at(1, 0, Commit, 0, 6));
        state.on_high_watermark(7);
        assert_eq!(state.last_stable_offset(7, 4), 7);
    }

    #[test]
    fn open_transactions_survive_a_round_trip_through_snapshot_entries() {
        let mut state = ProducerStateManager::new();
        record_txn(&mut state, txn_batch(1, 0, 0, 2, 0));
        append(&mut state, batch(2, 0, 0, 1), 2).unwrap();
        state.record_stored(&marker_at(2, 0, Commit, 9, 3));
        let reloaded = ProducerStateManager::from_entries(state.snapshot_entries()).unwrap();
        assert_eq!(
            reloaded.ongoing_transactions().collect::<Vec<_>>(),
            vec![(0, 1)]
        );
        assert_eq!(reloaded.entry(2).unwrap().coordinator_epoch(), 9);
        assert_eq!(reloaded.producers, state.producers);
    }

    fn required(guard: Option<VerificationGuard>) -> TxnVerification {
        TxnVerification::Required(guard)
    }

    #[test]
    fn a_client_batch_opening_a_transaction_needs_the_current_verification_guard() {
        // KIP-890 part 1: without a verification the coordinator was asked about, a late batch
        // could open a transaction nobody ends.
        let mut state = ProducerStateManager::new();
        let first = txn_batch(PID, 0, 0, 1, 0);
        assert_eq!(
            state.check_verified(&[first], required(None)),
            Err(SequenceError::NotVerified { producer_id: PID })
        );
        let guard = state
            .start_verification(PID, 0, 0, VerificationGuard(1))
            .expect("no transaction open: a verification is needed");
        assert_eq!(
            state.check_verified(&[first], required(Some(VerificationGuard(9)))),
            Err(SequenceError::NotVerified { producer_id: PID }),
            "another partition's or an older guard"
        );
        assert_eq!(
            state.check_verified(&[first], required(Some(guard))),
            Ok(AppendDecision::Append)
        );
        state.record(&first, first.max_timestamp);
        assert_eq!(
            state.verification(PID),
            None,
            "the append ends the verification"
        );
        // Open here now: the next batches need none.
        assert_eq!(
            state.start_verification(PID, 0, 1, VerificationGuard(2)),
            None
        );
        assert_eq!(
            state.check_verified(&[txn_batch(PID, 0, 1, 1, 1)], required(None)),
            Ok(AppendDecision::Append)
        );
    }

    #[test]
    fn a_marker_between_the_verification_and_the_append_refuses_the_append() {
        // The race a guard exists for: verified while the transaction was ongoing, then the
        // abort marker, then the append. Then the ABA case: a new verification starts, and the
        // old answer must not match it.
        let mut state = ProducerStateManager::new();
        let stale = state
            .start_verification(PID, 0, 0, VerificationGuard(1))
            .unwrap();
        state.record_stored(&marker_at(PID, 0, Abort, 0, 0));
        let late = txn_batch(PID, 0, 0, 1, 1);
        assert_eq!(
            state.check_verified(&[late], required(Some(stale))),
            Err(SequenceError::NotVerified { producer_id: PID })
        );
        let fresh = state
            .start_verification(PID, 0, 0, VerificationGuard(2))
            .unwrap();
        assert_ne!(fresh, stale);
        assert_eq!(
            state.check_verified(&[late], required(Some(stale))),
            Err(SequenceError::NotVerified { producer_id: PID })
        );
        assert_eq!(
            state.check_verified(&[late], required(Some(fresh))),
            Ok(AppendDecision::Append)
        );
    }

    #[test]
    fn a_batch_past_the_lowest_sequence_being_verified_is_out_of_order_until_it_ends() {
        // Kafka's lowestSequence: seq 0's verification failed retriably; seq 5, verified
        // meanwhile, must not land first (the retry of 0 would then be out of order forever).
        let mut state = ProducerStateManager::new();
        let guard = state
            .start_verification(PID, 0, 5, VerificationGuard(1))
            .unwrap();
        assert_eq!(
            state.start_verification(PID, 0, 0, VerificationGuard(2)),
            Some(guard),
            "a pending verification is joined"
        );
        assert_eq!(
            state.check_verified(&[txn_batch(PID, 0, 5, 1, 0)], required(Some(guard))),
            Err(SequenceError::PastVerifiedSequence {
                producer_id: PID,
                first_seq: 5,
                lowest_seq: 0
            })
        );
        assert_eq!(
            state.check_verified(&[txn_batch(PID, 0, 0, 5, 0)], required(Some(guard))),
            Ok(AppendDecision::Append)
        );
        // A newer epoch starts the lowest sequence afresh.
        state.start_verification(PID, 1, 3, VerificationGuard(3));
        assert_eq!(state.verifications[&PID].lowest_seq, 3);
        // A refusal by the coordinator ends it, so it blocks nothing later.
        state.end_verification(PID, VerificationGuard(7));
        assert_eq!(state.verification(PID), Some(guard), "not that guard's");
        state.end_verification(PID, guard);
        assert_eq!(state.verification(PID), None);
        assert_eq!(
            state.check_verified(&[batch(PID, 0, 9, 1)], required(None)),
            Ok(AppendDecision::Append)
        );
    }
}
