//! Producer ids and the idempotent producer; transactions will live here too.
//!
//! - [`producer_id`]: hands out producer ids (InitProducerId) from blocks reserved on disk, so
//!   an id is never handed out twice, across restarts and crashes included.
//! - [`producer_state`]: per partition, what each idempotent producer last appended (its epoch
//!   and a window of its last five batches), which decides whether a new batch is appended, is a
//!   retry of one already in the log, or is refused. The rules are Kafka's `ProducerAppendInfo`.
//! - [`producer_snapshot`]: that state in Kafka's `{offset:020}.snapshot` files, written at
//!   segment roll and clean shutdown, so opening a partition replays only what came after.

pub mod producer_id;
pub mod producer_snapshot;
pub mod producer_state;
