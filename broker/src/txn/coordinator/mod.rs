//! The transaction coordinator (Kafka's `TransactionCoordinator`), laid out as
//! [`crate::group`]:
//!
//! - [`machine`]: one transactional id's metadata and its transitions, pure, tested step by
//!   step.
//! - [`records`]: the records of `__transaction_state` in Kafka's format.
//! - [`shard::TxnShard`]: the ids of one `__transaction_state` partition this broker leads,
//!   replayed when it loads; every transition is durable on the in-sync replicas before it is
//!   applied.
//! - [`transaction_coordinator::TxnCoordinator`]: the shards, loaded and unloaded with
//!   leadership; the requests (InitProducerId, AddPartitionsToTxn, EndTxn, the produce check
//!   of KIP-890 part 1); the completion of a prepared transaction (markers on every partition,
//!   then CompleteCommit/CompleteAbort), also after a reload; the timer that aborts
//!   transactions past their `transaction.timeout.ms` and removes ids idle for
//!   `transactional.id.expiration.ms`; the reads of DescribeTransactions and ListTransactions.
//!
//! The broker is the [`TxnHost`]: it allocates producer ids and writes the markers (directly
//! on the partitions it leads, with WriteTxnMarkers to the leaders of the others).

pub mod machine;
pub mod records;
pub mod shard;
pub mod transaction_coordinator;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use machine::TopicPartition;
pub use transaction_coordinator::TxnCoordinator;

use crate::txn::producer_id::AllocateError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The markers that end one transaction on its partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Markers {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: BTreeSet<TopicPartition>,
}

/// What the coordinator needs of the broker it runs in.
pub trait TxnHost: Send + Sync {
    /// A producer id never handed out before in the cluster.
    fn allocate_producer_id(&self) -> BoxFuture<'_, Result<i64, AllocateError>>;
    /// Writes the markers on their partitions, durable on each partition's in-sync replicas;
    /// returns the partitions where the write failed and should be tried again (a leader
    /// moving, a broker unreachable). A partition that no longer exists, or that refused the
    /// marker as older than what it holds, is done.
    fn write_markers(&self, markers: Markers) -> BoxFuture<'_, BTreeSet<TopicPartition>>;
}

/// The coordinator's settings, with Kafka's names.
#[derive(Clone, Debug)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`.
    pub num_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often the timer
    /// looks for transactions past their timeout.
    pub abort_check_interval_ms: u64,
    /// `transactional.id.expiration.ms`: a transactional id with no transaction in flight
    /// (Empty, CompleteCommit, CompleteAbort) and not updated for this long is removed.
    pub id_expiration_ms: i32,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`: how often the timer looks
    /// for such ids.
    pub remove_expired_interval_ms: u64,
}

impl Default for TxnConfig {
    /// Kafka's defaults: 50 partitions, 15 minutes, 10 s, 7 days, 1 hour.
    fn default() -> TxnConfig {
        TxnConfig {
            num_partitions: 50,
            max_timeout_ms: 900_000,
            abort_check_interval_ms: 10_000,
            id_expiration_ms: 604_800_000,
            remove_expired_interval_ms: 3_600_000,
        }
    }
}
