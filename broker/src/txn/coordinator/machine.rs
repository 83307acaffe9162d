//! One transactional id's metadata and the transitions the coordinator may make of it, as a
//! pure state machine (Kafka's `TransactionMetadata` and the checks of
//! `TransactionCoordinator`): each request is a function of the metadata, the request and the
//! time, and answers either an error (Kafka's code, mapped at the protocol boundary), nothing
//! to write, or the record of the next state. The shard writes that record to
//! `__transaction_state` and applies it with [`TxnMetadata::apply`] only once it is durable;
//! while it is being written the id is *pending* and every other request for it answers
//! CONCURRENT_TRANSACTIONS.
//!
//! Fencing: an InitProducerId, or a timeout, that finds a transaction in flight aborts it
//! with the producer epoch bumped (Kafka's PrepareEpochFence followed by PrepareAbort, here one
//! PrepareAbort record carrying the bumped epoch): the markers it writes carry that epoch, so
//! every partition refuses the old producer from then on, and the coordinator refuses it
//! because its epoch is no longer current.
//!
//! Transaction version 2 (KIP-890 part 2, a client's EndTxn v5+): every EndTxn bumps the
//! producer epoch in its PrepareCommit/PrepareAbort record, so the markers carry the bumped
//! epoch and every partition of the transaction refuses a late produce of the old epoch; the
//! client continues with the epoch EndTxn answered. When the bump reaches `i16::MAX` the
//! Complete record rolls the transactional id to a new producer id at epoch 0 (the markers
//! are written with the old id at `i16::MAX`). A retried EndTxn names the epoch before the
//! bump (or the old id at `i16::MAX - 1` after a roll) and is answered as a retry.

use std::collections::BTreeSet;

use super::records::{TxnRecord, TxnVersionFields, TRANSACTION_VERSION_2};
use crate::txn::producer_state::NO_PRODUCER_EPOCH;

/// Milliseconds of the broker's clock.
pub type Millis = i64;

/// An epoch at which the producer id is rotated rather than bumped (Kafka's
/// `isEpochExhausted`: `Short.MaxValue - 1`, leaving one bump for fencing).
pub const EXHAUSTED_EPOCH: i16 = i16::MAX - 1;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }
}

/// Kafka's `TransactionState`, with its codes in `__transaction_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name (DescribeTransactions, `kafka-transactions.sh`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state of Kafka's `name` (ListTransactions' state filter; names are matched exactly,
    /// as Kafka's `TransactionState.fromName` does).
    pub fn from_name(name: &str) -> Option<TxnState> {
        (0..=7)
            .filter_map(TxnState::from_code)
            .find(|s| s.name() == name)
    }

    /// Kafka's `validPreviousStates`: may a transaction in `from` move to `self`?
    pub fn may_follow(self, from: TxnState) -> bool {
        use TxnState::*;
        match self {
            Empty => matches!(from, Empty | CompleteCommit | CompleteAbort),
            Ongoing => matches!(from, Ongoing | Empty | CompleteCommit | CompleteAbort),
            PrepareCommit => from == Ongoing,
            PrepareAbort => matches!(from, Ongoing | PrepareEpochFence),
            CompleteCommit => from == PrepareCommit,
            CompleteAbort => from == PrepareAbort,
            Dead => matches!(from, Empty | CompleteCommit | CompleteAbort),
            PrepareEpochFence => from == Ongoing,
        }
    }
}

/// Why the coordinator refused a request (Kafka's codes, mapped in `protocol::errors`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("this broker is not the transaction coordinator of the id")]
    NotCoordinator,
    #[error("the coordinator is loading the id's partition")]
    CoordinatorLoadInProgress,
    #[error("the coordinator cannot store the transaction now")]
    CoordinatorNotAvailable,
    #[error("transaction timeout {0} ms is not in 1..=transaction.max.timeout.ms ({1} ms)")]
    InvalidTransactionTimeout(i32, i32),
    #[error("another change of this transactional id is in progress")]
    ConcurrentTransactions,
    #[error("producer epoch {given} is not the current epoch {current}: fenced")]
    ProducerFenced { given: i16, current: i16 },
    #[error("producer id {given} is not the one of this transactional id ({current})")]
    InvalidProducerIdMapping { given: i64, current: i64 },
    #[error("{0} is not allowed while the transaction is {1}")]
    InvalidTxnState(&'static str, &'static str),
    #[error("the transactional id {0} is unknown")]
    UnknownTransactionalId(String),
}

/// One transactional id as the coordinator holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    /// The last durable state.
    pub current: TxnRecord,
    /// The epoch before the last bump (Kafka's `lastProducerEpoch`): a retried InitProducerId
    /// whose answer was lost names it, and gets the current epoch rather than a fence.
    pub last_producer_epoch: i16,
    /// The state being written, if any (Kafka's `pendingState`).
    pub pending: Option<TxnState>,
}

/// What InitProducerId decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// Write this (Empty, the epoch bumped or the id rotated) and answer its id and epoch.
    Bump(TxnRecord),
    /// The request retried a bump already made: answer the current id and epoch.
    Current {
        producer_id: i64,
        producer_epoch: i16,
    },
    /// A transaction is in flight: write this PrepareAbort (epoch bumped, fencing the old
    /// producer), abort it, and answer CONCURRENT_TRANSACTIONS (the client retries).
    FenceAndAbort(TxnRecord),
    /// The epoch is exhausted: allocate a fresh producer id and decide again with it.
    NeedsProducerId,
}

/// What EndTxn decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Write this PrepareCommit/PrepareAbort, answer, then write the markers.
    Prepare(TxnRecord),
    /// The same outcome is already complete (a retry): answer success.
    AlreadyComplete,
    /// Transaction version 2 and the bump exhausts the epoch: allocate a fresh producer id
    /// and decide again with it.
    NeedsProducerId,
}

impl TxnMetadata {
    /// A transactional id seen for the first time (Kafka creates it in memory with no epoch
    /// before its first InitProducerId is written).
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: Millis) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            current: TxnRecord {
                producer_id,
                producer_epoch: NO_PRODUCER_EPOCH,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now,
                start_ms: -1,
                v2: TxnVersionFields::default(),
            },
            last_producer_epoch: NO_PRODUCER_EPOCH,
            pending: None,
        }
    }

    /// As `__transaction_state` stored it.
    pub fn restore(transactional_id: &str, record: TxnRecord) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            current: record,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            pending: None,
        }
    }

    pub fn state(&self) -> TxnState {
        self.current.state
    }

    /// Marks `transit` as being written: no other change starts until it is applied or
    /// dropped.
    pub fn begin(&mut self, transit: &TxnRecord) {
        assert!(self.pending.is_none(), "one change at a time");
        assert!(
            transit.state.may_follow(self.current.state),
            "{:?} cannot follow {:?}",
            transit.state,
            self.current.state
        );
        self.pending = Some(transit.state);
    }

    /// `transit` is durable: it is the current state now.
    pub fn apply(&mut self, transit: TxnRecord) {
        assert_eq!(self.pending, Some(transit.state), "applying what was begun");
        if transit.producer_id != self.current.producer_id {
            self.last_producer_epoch = NO_PRODUCER_EPOCH;
        } else if transit.producer_epoch != self.current.producer_epoch {
            self.last_producer_epoch = self.current.producer_epoch;
        }
        self.current = transit;
        self.pending = None;
    }

    /// `transit` was not stored: the state stays as it was.
    pub fn abandon(&mut self) {
        assert!(self.pending.is_some(), "abandoning a change that was begun");
        self.pending = None;
    }

    fn concurrent(&self) -> Result<(), TxnError> {
        match self.pending {
            Some(_) => Err(TxnError::ConcurrentTransactions),
            None => Ok(()),
        }
    }

    /// The request's producer must be this id's current one.
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.current.producer_id {
            return Err(TxnError::InvalidProducerIdMapping {
                given: producer_id,
                current: self.current.producer_id,
            });
        }
        if producer_epoch != self.current.producer_epoch {
            return Err(TxnError::ProducerFenced {
                given: producer_epoch,
                current: self.current.producer_epoch,
            });
        }
        Ok(())
    }

    fn with(&self, state: TxnState, now: Millis) -> TxnRecord {
        TxnRecord {
            state,
            last_update_ms: now,
            ..self.current.clone()
        }
    }

    /// InitProducerId with this transactional id (Kafka's `handleInitProducerId`). `expected`
    /// is the producer id and epoch the client claims (v3+, KIP-360), `fresh_producer_id` a
    /// newly allocated id when [`Init::NeedsProducerId`] asked for one.
    pub fn init_producer_id(
        &self,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
        now: Millis,
    ) -> Result<Init, TxnError> {
        self.concurrent()?;
        let current = &self.current;
        if let Some((pid, epoch)) = expected {
            // Kafka's `isValidProducerId`: a new id, the current id (its epoch is checked
            // below), or the previous id at an exhausted epoch (a retry after a rotation).
            let valid = current.producer_epoch == NO_PRODUCER_EPOCH
                || pid == current.producer_id
                || epoch >= EXHAUSTED_EPOCH;
            if !valid {
                return Err(TxnError::ProducerFenced {
                    given: epoch,
                    current: current.producer_epoch,
                });
            }
        }
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // Fence the producer of the transaction in flight and abort it with the bumped
                // epoch; the client retries and then gets a bump of its own.
                assert!(
                    current.producer_epoch < i16::MAX,
                    "an epoch is left to fence with"
                );
                let mut transit = self.fenced(now);
                transit.producer_epoch = current.producer_epoch + 1;
                Ok(Init::FenceAndAbort(transit))
            }
            TxnState::Dead => Err(TxnError::InvalidTxnState("InitProducerId", "Dead")),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if let Some((pid, epoch)) = expected {
                    let fresh = current.producer_epoch == NO_PRODUCER_EPOCH;
                    let retry = pid == current.producer_id
                        && epoch == self.last_producer_epoch
                        && epoch != NO_PRODUCER_EPOCH;
                    if retry {
                        return Ok(Init::Current {
                            producer_id: current.producer_id,
                            producer_epoch: current.producer_epoch,
                        });
                    }
                    let ok = fresh
                        || epoch == NO_PRODUCER_EPOCH
                        || (pid == current.producer_id && epoch == current.producer_epoch)
                        || epoch >= EXHAUSTED_EPOCH;
                    if !ok {
                        return Err(TxnError::ProducerFenced {
                            given: epoch,
                            current: current.producer_epoch,
                        });
                    }
                }
                let mut transit = self.with(TxnState::Empty, now);
                transit.timeout_ms = timeout_ms;
                transit.partitions.clear();
                transit.start_ms = -1;
                if current.producer_epoch >= EXHAUSTED_EPOCH {
                    let Some(fresh) = fresh_producer_id else {
                        return Ok(Init::NeedsProducerId);
                    };
                    transit.producer_id = fresh;
                    transit.producer_epoch = 0;
                } else {
                    transit.producer_epoch = current.producer_epoch + 1;
                }
                Ok(Init::Bump(transit))
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the offsets partition): `None` when every
    /// partition is in the ongoing transaction already (nothing to write).
    pub fn add_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &BTreeSet<TopicPartition>,
        now: Millis,
    ) -> Result<Option<TxnRecord>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        self.concurrent()?;
        let current = &self.current;
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::PrepareEpochFence | TxnState::Dead => Err(TxnError::InvalidTxnState(
                "AddPartitionsToTxn",
                current.state.name(),
            )),
            TxnState::Ongoing if partitions.is_subset(&current.partitions) => Ok(None),
            TxnState::Ongoing
            | TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort => {
                let mut transit = self.with(TxnState::Ongoing, now);
                if current.state != TxnState::Ongoing {
                    transit.start_ms = now;
                    transit.partitions.clear();
                }
                transit.partitions.extend(partitions.iter().cloned());
                Ok(Some(transit))
            }
        }
    }

    /// Does the ongoing transaction of this producer include `partition`? (KIP-890 part 1:
    /// a transactional produce to a partition never added is refused.)
    pub fn verify_partition(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partition: &TopicPartition,
    ) -> Result<(), TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.current.state == TxnState::Ongoing && self.current.partitions.contains(partition) {
            Ok(())
        } else {
            Err(TxnError::InvalidTxnState(
                "a transactional produce to a partition not in the transaction",
                self.current.state.name(),
            ))
        }
    }

    /// KIP-890 part 1, asked by a partition leader before it takes the first transactional
    /// batch of this producer (AddPartitionsToTxn v4+ with `verify_only`, Kafka's
    /// `handleVerifyPartitionsInTransaction`): which of `partitions` are *not* in its
    /// transaction. The whole request fails for another producer id
    /// (INVALID_PRODUCER_ID_MAPPING) or epoch (PRODUCER_FENCED), and while the transaction is
    /// being completed (CONCURRENT_TRANSACTIONS: the leader's client retries, and meets the
    /// ended transaction). A pending change is not looked at: partitions count once durable,
    /// and the guard at the leader's append catches what changes after the answer.
    pub fn verify_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeSet<TopicPartition>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        if matches!(
            self.current.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort
        ) {
            return Err(TxnError::ConcurrentTransactions);
        }
        // Complete* and Empty hold no partitions: every one is missing there.
        Ok(partitions
            .difference(&self.current.partitions)
            .cloned()
            .collect())
    }

    /// The PrepareAbort of a fence (an InitProducerId or a timeout that finds the transaction
    /// in flight; the caller bumps the epoch). It is no client's EndTxn, so no retry rule of
    /// transaction version 2 applies to it and no producer id is rolled.
    fn fenced(&self, now: Millis) -> TxnRecord {
        let mut transit = self.with(TxnState::PrepareAbort, now);
        transit.v2.client_txn_version = 0;
        transit.v2.next_producer_id = -1;
        transit
    }

    /// EndTxn from a client of transaction version 1 (EndTxn v0–4).
    pub fn end_txn(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now: Millis,
    ) -> Result<End, TxnError> {
        self.end_txn_as(producer_id, producer_epoch, commit, 0, None, now)
    }

    /// EndTxn from the client (Kafka's `endTransaction` with `isFromClient`) of transaction
    /// version `client_txn_version` (2 from EndTxn v5: the epoch is bumped, see the module
    /// docs). `fresh_producer_id` is a newly allocated id when [`End::NeedsProducerId`] asked
    /// for one.
    pub fn end_txn_as(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        client_txn_version: i16,
        fresh_producer_id: Option<i64>,
        now: Millis,
    ) -> Result<End, TxnError> {
        let current = &self.current;
        // Kafka's retry rules for a transaction the client ended with version 2: the stored
        // epoch is one past the client's (the bump of its EndTxn), or the id was rolled.
        let stored_v2 = current.v2.client_txn_version >= TRANSACTION_VERSION_2;
        let retry_on_bump =
            stored_v2 && i32::from(current.producer_epoch) == i32::from(producer_epoch) + 1;
        let retry_on_overflow = stored_v2
            && current.v2.previous_producer_id == producer_id
            && producer_epoch == EXHAUSTED_EPOCH
            && current.producer_epoch == 0;
        if producer_id != current.producer_id && !retry_on_overflow {
            return Err(TxnError::InvalidProducerIdMapping {
                given: producer_id,
                current: current.producer_id,
            });
        }
        let valid_epoch = match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort if stored_v2 => retry_on_bump,
            TxnState::CompleteCommit | TxnState::CompleteAbort if stored_v2 => {
                retry_on_bump || retry_on_overflow
            }
            _ => producer_epoch == current.producer_epoch,
        };
        if !valid_epoch {
            return Err(TxnError::ProducerFenced {
                given: producer_epoch,
                current: current.producer_epoch,
            });
        }
        self.concurrent()?;
        let what = if commit {
            "EndTxn(commit)"
        } else {
            "EndTxn(abort)"
        };
        match (current.state, commit) {
            (TxnState::Ongoing, _) => {
                let state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                let mut transit = self.with(state, now);
                transit.v2.client_txn_version = client_txn_version;
                transit.v2.next_producer_id = -1;
                if client_txn_version >= TRANSACTION_VERSION_2 {
                    // The epoch may reach i16::MAX here: the id is rolled at Complete, so no
                    // client ever holds it and a fence always has an epoch left.
                    if current.producer_epoch >= EXHAUSTED_EPOCH {
                        let Some(fresh) = fresh_producer_id else {
                            return Ok(End::NeedsProducerId);
                        };
                        transit.v2.next_producer_id = fresh;
                    }
                    transit.producer_epoch = current.producer_epoch + 1;
                }
                Ok(End::Prepare(transit))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(End::AlreadyComplete)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            (state, _) => Err(TxnError::InvalidTxnState(what, state.name())),
        }
    }

    /// The transaction timed out (Kafka's `abortTimedOutTransactions`): the abort to write,
    /// with the epoch bumped so the stuck producer is fenced, if it is still due.
    pub fn abort_expired(&self, now: Millis) -> Option<TxnRecord> {
        let current = &self.current;
        let due = self.pending.is_none()
            && current.state == TxnState::Ongoing
            && current
                .start_ms
                .saturating_add(i64::from(current.timeout_ms))
                <= now
            && current.producer_epoch < i16::MAX;
        due.then(|| {
            let mut transit = self.fenced(now);
            transit.producer_epoch = current.producer_epoch + 1;
            transit
        })
    }

    /// Every marker of the prepared outcome is written: the Complete record.
    pub fn complete(&self, now: Millis) -> TxnRecord {
        let state = match self.current.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => panic!("completing a transaction in {other:?}"),
        };
        let mut transit = self.with(state, now);
        transit.partitions.clear();
        if transit.v2.next_producer_id >= 0 {
            // The markers went out with the old id at the exhausted epoch; roll the id.
            transit.v2.previous_producer_id = transit.producer_id;
            transit.producer_id = transit.v2.next_producer_id;
            transit.producer_epoch = 0;
            transit.v2.next_producer_id = -1;
        }
        transit
    }

    /// Has this id outlived `transactional.id.expiration.ms` (Kafka's
    /// `removeExpiredTransactionalIds`)? Only with no transaction in flight and no change being
    /// written, and not updated for `expiration_ms`.
    pub fn is_expired(&self, now: Millis, expiration_ms: i32) -> bool {
        self.pending.is_none()
            && matches!(
                self.current.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            )
            && self.current.last_update_ms <= now.saturating_sub(i64::from(expiration_ms))
    }

    /// The Dead transition that removes an expired id (written as a tombstone).
    pub fn expire(&self, now: Millis) -> TxnRecord {
        self.with(TxnState::Dead, now)
    }

    /// When this id's transaction times out, if one is in flight.
    pub fn deadline(&self) -> Option<Millis> {
        (self.current.state == TxnState::Ongoing).then(|| {
            self.current
                .start_ms
                .saturating_add(i64::from(self.current.timeout_ms))
        })
    }
}

/// The producer id and epoch EndTxn v5 answers for a transaction in state `record`: those the
/// transaction ends with (the rolled id at epoch 0 while a roll is prepared), which the client
/// uses next.
pub fn ended_as(record: &TxnRecord) -> (i64, i16) {
    if record.v2.next_producer_id >= 0 {
        (record.v2.next_producer_id, 0)
    } else {
        (record.producer_id, record.producer_epoch)
    }
}

/// InitProducerId's timeout check (Kafka's `validateTransactionTimeoutMs`).
pub fn check_timeout(timeout_ms: i32, max_timeout_ms: i32) -> Result<(), TxnError> {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        return Err(TxnError::InvalidTransactionTimeout(
            timeout_ms,
            max_timeout_ms,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000_000;

    fn tps(list: &[(&str, i32)]) -> BTreeSet<TopicPartition> {
        list.iter()
            .map(|&(t, p)| TopicPartition::new(t, p))
            .collect()
    }

    /// Runs a decided transition as the shard does: begin, then apply once "durable".
    fn store(meta: &mut TxnMetadata, transit: TxnRecord) {
        meta.begin(&transit);
        meta.apply(transit);
    }

    fn initialised() -> TxnMetadata {
        let mut meta = TxnMetadata::new("tx", 7, 60_000, NOW);
        let Init::Bump(transit) = meta.init_producer_id(60_000, None, None, NOW).unwrap() else {
            panic!("a new id is bumped to epoch 0");
        };
        store(&mut meta, transit);
        meta
    }

    fn ongoing(partitions: &[(&str, i32)]) -> TxnMetadata {
        let mut meta = initialised();
        let transit = meta
            .add_partitions(7, 0, &tps(partitions), NOW + 1)
            .unwrap()
            .unwrap();
        store(&mut meta, transit);
        meta
    }

    #[test]
    fn a_new_transactional_id_starts_empty_at_epoch_zero() {
        let meta = initialised();
        assert_eq!(meta.state(), TxnState::Empty);
        assert_eq!(
            (meta.current.producer_id, meta.current.producer_epoch),
            (7, 0)
        );
        assert!(meta.current.partitions.is_empty());
    }

    #[test]
    fn a_second_init_producer_id_bumps_the_epoch() {
        let mut meta = initialised();
        let Init::Bump(transit) = meta.init_producer_id(60_000, None, None, NOW).unwrap() else {
            panic!("bumped");
        };
        assert_eq!((transit.producer_id, transit.producer_epoch), (7, 1));
        store(&mut meta, transit);
        assert_eq!(meta.last_producer_epoch, 0);
    }

    #[test]
    fn an_init_that_finds_a_transaction_in_flight_aborts_it_with_a_bumped_epoch() {
        let meta = ongoing(&[("t", 0)]);
        let Init::FenceAndAbort(transit) = meta.init_producer_id(60_000, None, None, NOW).unwrap()
        else {
            panic!("fence");
        };
        assert_eq!(transit.state, TxnState::PrepareAbort);
        assert_eq!(transit.producer_epoch, 1, "markers carry the fencing epoch");
        assert_eq!(
            transit.partitions,
            tps(&[("t", 0)]),
            "markers go to every partition"
        );
    }

    #[test]
    fn an_exhausted_epoch_rotates_the_producer_id() {
        let mut meta = initialised();
        meta.current.producer_epoch = EXHAUSTED_EPOCH;
        assert_eq!(
            meta.init_producer_id(60_000, None, None, NOW).unwrap(),
            Init::NeedsProducerId
        );
        let Init::Bump(transit) = meta.init_producer_id(60_000, None, Some(99), NOW).unwrap()
        else {
            panic!("rotated");
        };
        assert_eq!((transit.producer_id, transit.producer_epoch), (99, 0));
    }

    #[test]
    fn init_with_a_stale_expected_epoch_is_fenced_and_a_lost_answer_is_retried() {
        let mut meta = initialised();
        let Init::Bump(t) = meta
            .init_producer_id(60_000, Some((7, 0)), None, NOW)
            .unwrap()
        else {
            panic!("the current epoch bumps");
        };
        store(&mut meta, t);
        // The answer (epoch 1) was lost: the client asks again with epoch 0.
        assert_eq!(
            meta.init_producer_id(60_000, Some((7, 0)), None, NOW)
                .unwrap(),
            Init::Current {
                producer_id: 7,
                producer_epoch: 1
            }
        );
        let Init::Bump(t) = meta
            .init_producer_id(60_000, Some((7, 1)), None, NOW)
            .unwrap()
        else {
            panic!("bumped again");
        };
        store(&mut meta, t);
        assert!(matches!(
            meta.init_producer_id(60_000, Some((7, 0)), None, NOW),
            Err(TxnError::ProducerFenced { .. })
        ));
        assert!(matches!(
            meta.init_producer_id(60_000, Some((8, 2)), None, NOW),
            Err(TxnError::ProducerFenced { .. })
        ));
    }

    #[test]
    fn the_timeout_must_be_positive_and_at_most_the_maximum() {
        assert!(check_timeout(1, 900_000).is_ok());
        assert!(check_timeout(900_000, 900_000).is_ok());
        assert_eq!(
            check_timeout(900_001, 900_000),
            Err(TxnError::InvalidTransactionTimeout(900_001, 900_000))
        );
        assert!(check_timeout(0, 900_000).is_err());
        assert!(check_timeout(-5, 900_000).is_err());
    }

    #[test]
    fn adding_partitions_starts_a_transaction_and_grows_it() {
        let mut meta = ongoing(&[("t", 0)]);
        assert_eq!(meta.state(), TxnState::Ongoing);
        assert_eq!(meta.current.start_ms, NOW + 1);
        assert_eq!(
            meta.add_partitions(7, 0, &tps(&[("t", 0)]), NOW + 2)
                .unwrap(),
            None,
            "a partition already in the transaction writes nothing"
        );
        let t = meta
            .add_partitions(7, 0, &tps(&[("t", 1), ("u", 0)]), NOW + 3)
            .unwrap()
            .unwrap();
        assert_eq!(
            t.start_ms,
            NOW + 1,
            "the transaction started at its first partition"
        );
        store(&mut meta, t);
        assert_eq!(
            meta.current.partitions,
            tps(&[("t", 0), ("t", 1), ("u", 0)])
        );
    }

    #[test]
    fn requests_of_another_producer_or_an_old_epoch_are_refused() {
        let meta = ongoing(&[("t", 0)]);
        assert_eq!(
            meta.add_partitions(8, 0, &tps(&[("t", 1)]), NOW),
            Err(TxnError::InvalidProducerIdMapping {
                given: 8,
                current: 7
            })
        );
        let mut bumped = meta.clone();
        bumped.current.producer_epoch = 1;
        assert_eq!(
            bumped.end_txn(7, 0, true, NOW),
            Err(TxnError::ProducerFenced {
                given: 0,
                current: 1
            })
        );
    }

    #[test]
    fn a_change_in_flight_makes_every_other_request_concurrent() {
        let mut meta = ongoing(&[("t", 0)]);
        let End::Prepare(t) = meta.end_txn(7, 0, true, NOW).unwrap() else {
            panic!("prepare");
        };
        meta.begin(&t);
        assert_eq!(
            meta.add_partitions(7, 0, &tps(&[("t", 1)]), NOW),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            meta.end_txn(7, 0, true, NOW),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            meta.init_producer_id(60_000, None, None, NOW),
            Err(TxnError::ConcurrentTransactions)
        );
        meta.abandon();
        assert_eq!(
            meta.state(),
            TxnState::Ongoing,
            "a failed write changes nothing"
        );
    }

    #[test]
    fn commit_goes_through_prepare_to_complete_and_clears_the_partitions() {
        let mut meta = ongoing(&[("t", 0), ("t", 1)]);
        let End::Prepare(t) = meta.end_txn(7, 0, true, NOW).unwrap() else {
            panic!("prepare");
        };
        assert_eq!(t.state, TxnState::PrepareCommit);
        assert_eq!(t.partitions, tps(&[("t", 0), ("t", 1)]));
        store(&mut meta, t);
        // Markers being written: the same EndTxn again waits, the other outcome is wrong.
        assert_eq!(
            meta.end_txn(7, 0, true, NOW),
            Err(TxnError::ConcurrentTransactions)
        );
        assert!(matches!(
            meta.end_txn(7, 0, false, NOW),
            Err(TxnError::InvalidTxnState(..))
        ));
        assert_eq!(
            meta.add_partitions(7, 0, &tps(&[("t", 2)]), NOW),
            Err(TxnError::ConcurrentTransactions)
        );
        let done = meta.complete(NOW + 5);
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        store(&mut meta, done);
        assert_eq!(
            meta.end_txn(7, 0, true, NOW),
            Ok(End::AlreadyComplete),
            "a retry"
        );
        assert!(matches!(
            meta.end_txn(7, 0, false, NOW),
            Err(TxnError::InvalidTxnState(..))
        ));
        // The next transaction starts from CompleteCommit.
        let next = meta
            .add_partitions(7, 0, &tps(&[("u", 3)]), NOW + 9)
            .unwrap()
            .unwrap();
        assert_eq!(
            next.partitions,
            tps(&[("u", 3)]),
            "the old partitions are gone"
        );
        assert_eq!(next.start_ms, NOW + 9);
    }

    #[test]
    fn abort_goes_through_prepare_abort_to_complete_abort() {
        let mut meta = ongoing(&[("t", 0)]);
        let End::Prepare(t) = meta.end_txn(7, 0, false, NOW).unwrap() else {
            panic!("prepare");
        };
        assert_eq!(t.state, TxnState::PrepareAbort);
        store(&mut meta, t);
        assert_eq!(meta.complete(NOW).state, TxnState::CompleteAbort);
    }

    #[test]
    fn end_txn_without_a_transaction_is_an_invalid_state() {
        let meta = initialised();
        assert_eq!(
            meta.end_txn(7, 0, true, NOW),
            Err(TxnError::InvalidTxnState("EndTxn(commit)", "Empty"))
        );
    }

    #[test]
    fn a_transaction_past_its_timeout_is_aborted_with_a_fencing_epoch() {
        let meta = ongoing(&[("t", 0)]);
        assert_eq!(meta.deadline(), Some(NOW + 1 + 60_000));
        assert_eq!(meta.abort_expired(NOW + 60_000), None, "not yet");
        let abort = meta.abort_expired(NOW + 60_001).unwrap();
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!(abort.producer_epoch, 1);
        assert_eq!(
            initialised().abort_expired(i64::MAX),
            None,
            "nothing in flight"
        );
    }

    #[test]
    fn the_produce_check_accepts_only_partitions_of_the_ongoing_transaction() {
        let meta = ongoing(&[("t", 0)]);
        assert!(meta
            .verify_partition(7, 0, &TopicPartition::new("t", 0))
            .is_ok());
        assert!(matches!(
            meta.verify_partition(7, 0, &TopicPartition::new("t", 1)),
            Err(TxnError::InvalidTxnState(..))
        ));
        assert!(matches!(
            initialised().verify_partition(7, 0, &TopicPartition::new("t", 0)),
            Err(TxnError::InvalidTxnState(..))
        ));
    }

    #[test]
    fn verification_names_the_partitions_missing_from_the_transaction_as_kafka_does() {
        let meta = ongoing(&[("t", 0)]);
        assert_eq!(
            meta.verify_partitions(7, 0, &tps(&[("t", 0), ("t", 1)])),
            Ok(tps(&[("t", 1)]))
        );
        assert_eq!(
            initialised().verify_partitions(7, 0, &tps(&[("t", 0)])),
            Ok(tps(&[("t", 0)])),
            "no transaction: nothing is in it"
        );
        assert!(matches!(
            meta.verify_partitions(8, 0, &tps(&[("t", 0)])),
            Err(TxnError::InvalidProducerIdMapping { .. })
        ));
        assert!(matches!(
            meta.verify_partitions(7, 1, &tps(&[("t", 0)])),
            Err(TxnError::ProducerFenced { .. })
        ));
        let mut ending = meta.clone();
        let End::Prepare(t) = ending.end_txn(7, 0, false, NOW).unwrap() else {
            panic!("prepare");
        };
        store(&mut ending, t);
        assert_eq!(
            ending.verify_partitions(7, 0, &tps(&[("t", 0)])),
            Err(TxnError::ConcurrentTransactions)
        );
        let t = ending.complete(NOW);
        store(&mut ending, t);
        assert_eq!(
            ending.verify_partitions(7, 0, &tps(&[("t", 0)])),
            Ok(tps(&[("t", 0)])),
            "the transaction ended: its partitions are no longer in one"
        );
    }

    #[test]
    fn the_allowed_previous_states_are_kafkas() {
        use TxnState::*;
        assert!(PrepareCommit.may_follow(Ongoing));
        assert!(!PrepareCommit.may_follow(Empty));
        assert!(!CompleteCommit.may_follow(PrepareAbort));
        assert!(PrepareAbort.may_follow(PrepareEpochFence));
        assert!(Ongoing.may_follow(CompleteAbort));
        assert!(!Ongoing.may_follow(PrepareCommit));
    }

    #[test]
    fn an_id_expires_only_idle_and_past_the_expiration_and_never_mid_transaction() {
        let expiration = 60_000;
        let idle = initialised();
        assert!(!idle.is_expired(NOW + 59_999, expiration));
        assert!(idle.is_expired(NOW + 60_000, expiration), "Kafka's <=");
        let busy = ongoing(&[("t", 0)]);
        assert!(!busy.is_expired(NOW + 600_000, expiration));
        let mut writing = initialised();
        let transit = writing
            .add_partitions(7, 0, &tps(&[("t", 0)]), NOW + 1)
            .unwrap()
            .unwrap();
        writing.begin(&transit);
        assert!(
            !writing.is_expired(NOW + 600_000, expiration),
            "a change in flight"
        );
        // Expiring is the Dead transition, allowed from the idle states only.
        let mut expired = initialised();
        let dead = expired.expire(NOW + 60_000);
        assert_eq!(dead.state, TxnState::Dead);
        store(&mut expired, dead);
    }

    #[test]
    fn state_names_are_kafkas_and_matched_exactly() {
        assert_eq!(TxnState::from_name("Ongoing"), Some(TxnState::Ongoing));
        assert_eq!(
            TxnState::from_name("CompleteAbort"),
            Some(TxnState::CompleteAbort)
        );
        assert_eq!(TxnState::from_name("ongoing"), None);
        assert_eq!(TxnState::from_name("Bogus"), None);
    }

    /// One transaction of transaction version 2 ended by `commit` at epoch 0, completed.
    fn ended_v2(commit: bool) -> TxnMetadata {
        let mut meta = ongoing(&[("t", 0)]);
        let End::Prepare(t) = meta.end_txn_as(7, 0, commit, 2, None, NOW + 2).unwrap() else {
            panic!("an ongoing transaction prepares");
        };
        assert_eq!(
            t.producer_epoch, 1,
            "the epoch is bumped in the prepare record"
        );
        store(&mut meta, t);
        let t = meta.complete(NOW + 3);
        store(&mut meta, t);
        meta
    }

    #[test]
    fn a_transaction_version_2_retry_names_the_epoch_before_the_bump() {
        let meta = ended_v2(true);
        assert_eq!(ended_as(&meta.current), (7, 1));
        assert_eq!(
            meta.end_txn_as(7, 0, true, 2, None, NOW + 4),
            Ok(End::AlreadyComplete)
        );
        assert!(
            matches!(
                meta.end_txn_as(7, 1, true, 2, None, NOW + 4),
                Err(TxnError::ProducerFenced { .. })
            ),
            "the new epoch has no transaction to end"
        );
    }

    #[test]
    fn a_fence_after_a_transaction_version_2_end_gives_the_fenced_producer_no_retry() {
        // The bug: the fence's PrepareAbort inherited the previous end's transaction version,
        // so the fenced producer's EndTxn(abort) at the pre-fence epoch passed as a "retry"
        // and was answered success.
        let mut meta = ended_v2(true);
        let t = meta
            .add_partitions(7, 1, &tps(&[("t", 0)]), NOW + 5)
            .unwrap()
            .unwrap();
        store(&mut meta, t);
        let fence = meta
            .abort_expired(NOW + 5 + 60_000)
            .expect("past its timeout");
        assert_eq!(fence.producer_epoch, 2);
        assert_eq!(fence.v2.client_txn_version, 0);
        store(&mut meta, fence);
        let t = meta.complete(NOW + 70_000);
        store(&mut meta, t);
        assert!(matches!(
            meta.end_txn_as(7, 1, false, 2, None, NOW + 70_001),
            Err(TxnError::ProducerFenced { .. })
        ));
    }
}
