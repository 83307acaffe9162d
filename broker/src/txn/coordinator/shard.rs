//! [`TxnShard`]: the transactional ids of one `__transaction_state` partition this broker
//! leads. Decisions are made under one lock by the pure [`super::machine`]; the record a
//! decision needs is then appended to the partition and awaited on every in-sync replica
//! (acks=all, as Kafka's coordinator appends) before the metadata changes in memory. While it
//! is written the id is pending, so a transactional id has at most one record in flight and
//! its records reach the log in the order they were decided.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::machine::{TxnError, TxnMetadata};
use super::records::{self, TxnRecord, TRANSACTION_STATE_TOPIC};
use crate::clock::Clock;
use crate::group::offsets::{batch_records, BatchRecord};
use crate::log::batch::{builder, BatchHeader};
use crate::log::ReadError;
use crate::partition::{Partition, ReplicationWaitError};

/// Kafka's `transaction.state.log` append wait (its request timeout for the coordinator's own
/// appends): past it the client is answered COORDINATOR_NOT_AVAILABLE and retries.
const APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(5_000);

struct Inner {
    txns: BTreeMap<String, TxnMetadata>,
    /// Unloaded (leadership moved, or shutdown): nothing is decided here any more.
    resigned: bool,
}

pub struct TxnShard {
    index: i32,
    /// The leader epoch of the partition when this shard loaded: Kafka's coordinator epoch,
    /// written into every marker so the partitions refuse a zombie coordinator's.
    coordinator_epoch: i32,
    partition: Arc<Partition>,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl TxnShard {
    pub(super) fn new(index: i32, partition: Arc<Partition>, clock: Arc<dyn Clock>) -> TxnShard {
        assert_eq!(partition.index, index, "a shard writes its own partition");
        TxnShard {
            index,
            coordinator_epoch: partition.leader_epoch(),
            partition,
            clock,
            inner: Mutex::new(Inner {
                txns: BTreeMap::new(),
                resigned: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(super) fn resign(&self) {
        self.lock().resigned = true;
    }

    pub fn is_resigned(&self) -> bool {
        self.lock().resigned
    }

    /// Runs `f` on id `id` under the lock: `None` if the id is unknown here.
    pub fn with<R>(
        &self,
        id: &str,
        f: impl FnOnce(&mut TxnMetadata) -> R,
    ) -> Result<Option<R>, TxnError> {
        let mut inner = self.lock();
        if inner.resigned {
            return Err(TxnError::NotCoordinator);
        }
        Ok(inner.txns.get_mut(id).map(f))
    }

    /// Puts `meta` in place unless the id exists already (a concurrent InitProducerId).
    pub fn insert_if_absent(&self, meta: TxnMetadata) -> Result<(), TxnError> {
        let mut inner = self.lock();
        if inner.resigned {
            return Err(TxnError::NotCoordinator);
        }
        inner
            .txns
            .entry(meta.transactional_id.clone())
            .or_insert(meta);
        Ok(())
    }

    /// The ids in `f`'s favour, in id order (timer, reload).
    pub fn ids_where(&self, f: impl Fn(&TxnMetadata) -> bool) -> Vec<String> {
        self.lock()
            .txns
            .iter()
            .filter(|(_, m)| f(m))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every id's metadata, in id order.
    pub fn snapshot(&self) -> Vec<TxnMetadata> {
        self.lock().txns.values().cloned().collect()
    }

    /// Writes `transit` of id `id` (begun with [`TxnMetadata::begin`] under the lock) and,
    /// once every in-sync replica has it, makes it the id's state. If it is not stored the
    /// state stays as it was and the client retries.
    pub async fn store(&self, id: &str, transit: TxnRecord) -> Result<(), TxnError> {
        let stored = self.append(id, &transit).await;
        let mut inner = self.lock();
        let resigned = inner.resigned;
        let meta = inner
            .txns
            .get_mut(id)
            .expect("an id with a pending change stays");
        match stored {
            Ok(()) => meta.apply(transit),
            Err(_) => meta.abandon(),
        }
        if resigned {
            return Err(TxnError::NotCoordinator);
        }
        stored
    }

    /// Removes id `id` if `expired` still holds for it under the lock: its Dead transition is
    /// pending while the tombstone (a record with no value) is written to every in-sync
    /// replica, so a reload does not bring the id back; then it is forgotten. `Ok(false)`: it
    /// was not expired any more (or is gone).
    pub async fn remove(
        &self,
        id: &str,
        expired: impl FnOnce(&TxnMetadata) -> bool,
    ) -> Result<bool, TxnError> {
        let now = self.clock.now_ms();
        let transit = self.with(id, |meta| {
            if !expired(meta) {
                return None;
            }
            let transit = meta.expire(now);
            meta.begin(&transit);
            Some(transit)
        })?;
        let Some(Some(transit)) = transit else {
            return Ok(false);
        };
        let stored = self.append_value(id, None).await;
        let mut inner = self.lock();
        let resigned = inner.resigned;
        let meta = inner
            .txns
            .get_mut(id)
            .expect("an id with a pending change stays");
        match stored {
            Ok(()) => {
                meta.apply(transit);
                inner.txns.remove(id);
            }
            Err(_) => meta.abandon(),
        }
        if resigned {
            return Err(TxnError::NotCoordinator);
        }
        stored.map(|()| true)
    }

    async fn append(&self, id: &str, transit: &TxnRecord) -> Result<(), TxnError> {
        self.append_value(id, Some(records::encode_value(transit)))
            .await
    }

    /// Appends the record of `id` (`None`: a tombstone) and waits for the in-sync replicas.
    async fn append_value(&self, id: &str, value: Option<Vec<u8>>) -> Result<(), TxnError> {
        let mut batch = builder::batch(&[builder::Record {
            key: Some(records::encode_key(id)),
            value,
            timestamp_ms: self.clock.now_ms(),
        }]);
        let leader_epoch = self.partition.leader_epoch();
        if leader_epoch != self.coordinator_epoch {
            return Err(TxnError::NotCoordinator);
        }
        let info = self.partition.append(&mut batch).await.map_err(|e| {
            tracing::warn!(partition = self.index, %e, "{TRANSACTION_STATE_TOPIC} append failed");
            match e {
                crate::partition::ProduceError::NotLeader => TxnError::NotCoordinator,
                _ => TxnError::CoordinatorNotAvailable,
            }
        })?;
        let wait = self.partition.wait_replicated(&info, leader_epoch, 1);
        match tokio::time::timeout(APPEND_TIMEOUT, wait).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ReplicationWaitError::NotLeader)) => Err(TxnError::NotCoordinator),
            Ok(Err(e)) => {
                tracing::warn!(partition = self.index, %e, "{TRANSACTION_STATE_TOPIC} write not replicated");
                Err(TxnError::CoordinatorNotAvailable)
            }
            Err(_) => Err(TxnError::CoordinatorNotAvailable),
        }
    }

    /// Replays the partition (once, before the shard serves): the last record of each id wins,
    /// a tombstone removes it. Returns how many records it read.
    pub(super) async fn replay(&self) -> Result<usize, ReadError> {
        let log = &self.partition.log;
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        let mut records = 0;
        let mut latest: BTreeMap<String, Option<TxnRecord>> = BTreeMap::new();
        while offset < end {
            let read = match log.read(offset, 1 << 20, None).await {
                Ok(read) => read,
                Err(ReadError::Corrupt {
                    segment,
                    position,
                    error,
                }) => {
                    // Damage at rest with no replica to repair from: the records in the damaged
                    // batch are lost, loudly, not the later ones the log keeps (a replay that
                    // skipped the rest of the segment would take transactions back to older
                    // states), as the group coordinator's replay does.
                    let next = log.resume_after_damage(offset, &segment, position).await?;
                    tracing::error!(segment = %segment.display(), position, %error, resume_at = ?next,
                        "corrupt batch in {TRANSACTION_STATE_TOPIC}-{}: the transaction states in it are lost", self.index);
                    match next {
                        Some(next) => {
                            offset = next;
                            continue;
                        }
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            };
            if read.records.is_empty() {
                break;
            }
            let mut pos = 0;
            while pos < read.records.len() {
                let header =
                    BatchHeader::parse(&read.records[pos..]).expect("served batches parse");
                let batch = &read.records[pos..pos + header.size()];
                offset = header.last_offset() as u64 + 1;
                pos += header.size();
                if header.is_control() {
                    continue;
                }
                let Some(parsed) = batch_records(batch, header.records_count) else {
                    tracing::warn!(
                        base_offset = header.base_offset,
                        "unreadable batch in {TRANSACTION_STATE_TOPIC}-{}",
                        self.index
                    );
                    continue;
                };
                for BatchRecord { key, value, .. } in parsed {
                    let Some(id) = key.as_deref().and_then(records::decode_key) else {
                        continue;
                    };
                    let value = value.as_deref().and_then(records::decode_value);
                    latest.insert(id, value);
                    records += 1;
                }
            }
        }
        let mut inner = self.lock();
        for (id, record) in latest {
            if let Some(record) = record {
                inner
                    .txns
                    .insert(id.clone(), TxnMetadata::restore(&id, record));
            }
        }
        Ok(records)
    }
}
