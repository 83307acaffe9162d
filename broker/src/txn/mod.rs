//! Producer ids, the idempotent producer, and transactions (issue 12).
//!
//! - [`producer_id`]: hands out producer ids (InitProducerId) from blocks reserved on disk, so
//!   an id is never handed out twice, across restarts and crashes included.
//! - [`producer_state`]: per partition, what each idempotent producer last appended (its epoch
//!   and a window of its last five batches), which decides whether a new batch is appended, is a
//!   retry of one already in the log, or is refused. The rules are Kafka's `ProducerAppendInfo`.
//!   It also tracks each producer's ongoing transaction (the offset of its first transactional
//!   batch) and completes it at the producer's marker, which gives the last stable offset.
//! - [`marker`]: control batches, the commit and abort markers of transactions.
//! - [`txn_index`]: the aborted transactions, per segment in Kafka's `.txnindex` files, for
//!   read_committed fetches.
//! - [`producer_snapshot`]: that state in Kafka's `{offset:020}.snapshot` files, written at
//!   segment roll and clean shutdown, so opening a partition replays only what came after.
//! - [`coordinator`]: the transaction coordinator (state machine, `__transaction_state`
//!   records, shards, completion of prepared transactions, the timeout timer).
//!
//! # Transactions: the design (Kafka's KIP-98, KIP-360, KIP-890)
//!
//! ## The coordinator's state machine
//! One transaction-metadata record per `transactional.id` (Kafka's
//! `TransactionMetadata.scala`, `TransactionState.java`), stored as the latest value of its key
//! in `__transaction_state`. The transitions Kafka allows (`validPreviousStates`):
//!
//! ```text
//! Empty            <- Empty, CompleteCommit, CompleteAbort   (InitProducerId, or after a txn)
//! Ongoing          <- Ongoing, Empty, CompleteCommit, CompleteAbort  (AddPartitions/AddOffsets)
//! PrepareCommit    <- Ongoing                                (EndTxn(commit))
//! PrepareAbort     <- Ongoing, PrepareEpochFence             (EndTxn(abort), timeout, fencing)
//! CompleteCommit   <- PrepareCommit                          (every marker written)
//! CompleteAbort    <- PrepareAbort                           (every marker written)
//! PrepareEpochFence<- Ongoing   (InitProducerId or a timeout found a txn in flight: bump the
//!                                epoch, then abort it with the bumped epoch)
//! Dead             <- Empty, CompleteCommit, CompleteAbort   (transactional.id.expiration.ms)
//! ```
//!
//! A transition is first written to `__transaction_state` (acks=all, like the group
//! coordinator's writes) as a *pending* state, and applied in memory only once durable; while
//! one is pending, any other request for the id answers CONCURRENT_TRANSACTIONS. After
//! PrepareCommit/PrepareAbort is durable the EndTxn is answered (the outcome is decided) and the
//! markers are sent; CompleteCommit/CompleteAbort is written once every partition acknowledged
//! its marker. A coordinator that loads the partition (restart, failover) finds the Prepare
//! states and sends the markers again (`TransactionCoordinator.onElection`); markers are
//! idempotent on the partitions.
//!
//! ## Where each piece lives
//! - `broker/src/txn/coordinator/`, following `crate::group`'s layout: a pure state
//!   machine per transactional id (`machine.rs`, tested step by step with no runtime), the
//!   records of `__transaction_state` (`records.rs`: Kafka's `TransactionLogKey`/`Value`, so
//!   Kafka's tools can read them), a shard per `__transaction_state` partition this broker
//!   leads (loaded and unloaded with leadership, like `group::shard`), the coordinator routing
//!   by Kafka's placement (`Utils.abs(transactionalId.hashCode) % transaction.state.log.num.partitions`,
//!   the same Java hash as the group placement, `transaction_coordinator.rs`). The marker
//!   sender is the broker (`crate::txn_host`, behind the coordinator's `TxnHost` trait): one
//!   WriteTxnMarkers per partition leader and transaction, retried by the coordinator's
//!   completion task until the partition is gone or acked; to this broker itself by a direct
//!   call on the partition.
//! - Timeouts: the shard's timer (as `group::timer`) aborts transactions older than their
//!   `transaction.timeout.ms` (epoch bump, PrepareEpochFence then PrepareAbort) and expires
//!   idle ids after `transactional.id.expiration.ms`.
//! - Partition side (`crate::partition`, `crate::log`): markers are appended by
//!   `Partition::write_marker` (leader only, origin Coordinator: a client's produce may never
//!   carry a control batch, INVALID_RECORD); [`producer_state`] tracks ongoing transactions and
//!   completed ones; the last stable offset is `min(first offset of every ongoing transaction,
//!   high watermark)` (Kafka's `UnifiedLog.lastStableOffset` with the first *unstable* offset);
//!   an aborted transaction is appended to the `.txnindex` of the segment holding its marker
//!   (Kafka's `TransactionIndex`: version, producer id, first offset, last offset, LSO at
//!   completion), written with the segment's other indexes and rebuilt by recovery from the
//!   batches like the offset index.
//! - Protocol (`crate::protocol`): init_producer_id.rs gains the transactional path;
//!   add_partitions_to_txn.rs, add_offsets_to_txn.rs, txn_offset_commit.rs (to the group
//!   coordinator: pending transactional offsets per producer, made visible by the marker on
//!   the offsets partition, dropped by an abort), end_txn.rs, write_txn_markers.rs,
//!   describe_transactions.rs, list_transactions.rs, describe_producers.rs. Fetch with
//!   isolation_level=1 reads below the LSO and returns the aborted transactions overlapping the
//!   range it returns (collected from the `.txnindex` of the segments read); ListOffsets with
//!   isolation_level=1 answers the LSO for LATEST and caps timestamp lookups at it.
//!
//! ## Errors per API (Kafka's codes; mapped once in `protocol::errors`)
//! - InitProducerId with a transactional id: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
//!   COORDINATOR_NOT_AVAILABLE; INVALID_TRANSACTION_TIMEOUT (≤ 0 or above
//!   `transaction.max.timeout.ms`); CONCURRENT_TRANSACTIONS (a transition is pending, or a
//!   transaction in flight is being aborted by this very call: the client retries);
//!   PRODUCER_FENCED (v3+: the given producer id/epoch is not the current one);
//!   INVALID_REQUEST (empty transactional id).
//! - AddPartitionsToTxn / AddOffsetsToTxn: NOT_COORDINATOR family; INVALID_PRODUCER_ID_MAPPING
//!   (the id is not this transactional id's producer); PRODUCER_FENCED (older epoch;
//!   INVALID_PRODUCER_EPOCH before v2 clients); CONCURRENT_TRANSACTIONS (PrepareCommit or
//!   PrepareAbort, or a pending transition); INVALID_TXN_STATE (PrepareEpochFence, Dead);
//!   UNKNOWN_TOPIC_OR_PARTITION and OPERATION_NOT_ATTEMPTED (the others of a request one
//!   partition of which failed); TRANSACTION_ABORTABLE (v5, KIP-890 part 2).
//! - TxnOffsetCommit (group coordinator): NOT_COORDINATOR family; UNKNOWN_MEMBER_ID,
//!   ILLEGAL_GENERATION, FENCED_INSTANCE_ID (v3+ group fields); INVALID_PRODUCER_EPOCH /
//!   PRODUCER_FENCED; INVALID_TXN_STATE (KIP-890: the offsets partition is not in the txn);
//!   OFFSET_METADATA_TOO_LARGE; UNKNOWN_TOPIC_OR_PARTITION.
//! - EndTxn: NOT_COORDINATOR family; INVALID_PRODUCER_ID_MAPPING; PRODUCER_FENCED;
//!   CONCURRENT_TRANSACTIONS (PrepareX for the same result, still writing markers);
//!   NONE for a retry of the same result after CompleteX; INVALID_TXN_STATE (Empty, or
//!   CompleteX/PrepareX of the other result); v5 answers the bumped producer id/epoch.
//! - WriteTxnMarkers, per partition: NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION,
//!   KAFKA_STORAGE_ERROR, INVALID_PRODUCER_EPOCH (a marker older than the producer's epoch:
//!   a zombie coordinator), CORRUPT_MESSAGE.
//! - Produce of a transactional batch: INVALID_PRODUCER_EPOCH (the client maps it to
//!   PRODUCER_FENCED), OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_TXN_STATE (KIP-890 part 1: the
//!   partition is not in the producer's ongoing transaction, or a marker ended it between the
//!   verification and the append), NOT_ENOUGH_REPLICAS (the verification could not complete:
//!   retried), INVALID_RECORD (a control batch from a client, or a transactional and a
//!   non-transactional batch of one producer mixed).
//! - AddPartitionsToTxn v4–5 (brokers, `verify_only`): per partition NONE, INVALID_TXN_STATE
//!   (v4) or TRANSACTION_ABORTABLE (v5) when it is not in the transaction; per transaction
//!   INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED, CONCURRENT_TRANSACTIONS (PrepareCommit or
//!   PrepareAbort), the NOT_COORDINATOR family.
//! - DescribeTransactions: TRANSACTIONAL_ID_NOT_FOUND; ListTransactions, DescribeProducers:
//!   per partition NOT_LEADER_OR_FOLLOWER / UNKNOWN_TOPIC_OR_PARTITION.
//!
//! ## Order of work
//! Done (session 6, branch s6-txn):
//! 1. This note.
//! 2. Partition side: control batches ([`marker`]), ongoing/completed transactions and the LSO
//!    in [`producer_state`] (kept across snapshots: format v2 adds each producer's coordinator
//!    epoch and open transaction), `Partition::write_marker`, the per-segment aborted-transaction
//!    index ([`txn_index`]), rebuilt on open, recovery and truncation.
//! 3. Fetch read_committed (stop at the LSO, aborted transactions) and ListOffsets isolation.
//!
//! Known gaps in what is done: the log cleaner knows nothing of transactions yet (Kafka's
//! cleaner drops aborted records and, after `delete.retention.ms`, markers, and carries the
//! `.txnindex` of the segments it merges; ours treats transactional records like any other,
//! so an aborted record can take the place of its key's committed value, and the index files
//! of the segments it merges away become orphans the next open removes); the LSO is read under the producers' lock on every fetch (an atomic kept under that
//! lock would spare consumers the wait behind an idempotent append).
//!
//! Done (session 7, branch s7-txn):
//! 4. The coordinator: records of `__transaction_state`, the state machine, shards and
//!    placement, InitProducerId with a transactional id, AddPartitionsToTxn (v0–3),
//!    AddOffsetsToTxn (v0–3), EndTxn (v0–3), the marker sender, WriteTxnMarkers (v1).
//! 5. TxnOffsetCommit (v0–3) in the group coordinator (pending records per producer, resolved
//!    by the marker on the offsets partition, also on replay); timeouts (the coordinator's
//!    timer aborts with a bumped epoch) and fencing; KIP-890 part 1 where the coordinator is
//!    on the partition's own broker.
//!
//! Known gaps in the coordinator: OffsetFetch with require_stable does not answer UNSTABLE_OFFSET_COMMIT while
//! transactional offsets are pending; a marker written on an offsets partition whose shard
//! is still loading is resolved only by that shard's next load; WriteTxnMarkers connects per
//! call (no channel manager queue) and, with no ACLs, is open to any client (Kafka guards it
//! with CLUSTER_ACTION); transactional.id.expiration.ms (Dead ids) is not implemented; the
//! pending transactional offset records are never tombstoned.
//!
//! Done (session 10, branch s10-kip890v): KIP-890 part 1 across brokers. Before a leader
//! takes a transactional batch that would open its producer's transaction on a partition, it
//! asks the id's coordinator whether the partition is in that transaction: directly when it is
//! the coordinator, else with AddPartitionsToTxn v4–5 `verify_only`, batched per coordinator
//! (`crate::add_partitions_to_txn_manager`, Kafka's `AddPartitionsToTxnManager`). A
//! verification guard in [`producer_state`] (Kafka's `VerificationGuard`) makes the append
//! fail if a marker landed between the answer and the append. Refusals answer as Kafka's
//! `ReplicaManager`: INVALID_TXN_STATE, INVALID_PRODUCER_EPOCH, NOT_ENOUGH_REPLICAS for the
//! retriable ones (CONCURRENT_TRANSACTIONS, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
//! COORDINATOR_NOT_AVAILABLE, no answer). Left: TxnOffsetCommit is still checked only where
//! the group coordinator is also the id's coordinator (Kafka verifies it the same way);
//! verifications whose producer never retries linger until a rebuild of the partition's state
//! (Kafka expires them with `producer.id.expiration.ms`); the marker sender still connects per
//! call instead of sharing the verifier's kept connections.
//!
//! To come:
//! 6. Describe/List transactions, DescribeProducers, `faultline transactions`.
//! 7. The Rust client's transactional producer and read_committed consumer; rdkafka tests.
//! 8. The simulator's transactional workload, checker and scenarios; benchmarks.

pub mod coordinator;
pub mod marker;
pub mod producer_id;
pub mod producer_snapshot;
pub mod producer_state;
pub mod txn_index;
