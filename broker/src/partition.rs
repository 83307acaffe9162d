//! A partition replica: its log, its high watermark, and (on a leader) the idempotent
//! producers' state. Single broker today; the replication work adds followers and the ISR here.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::log::{AppendError, AppendInfo, FlushPolicy, Log};

/// One partition of a topic, as this broker hosts it.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Log,
    /// The leader epoch this broker writes with. One broker, one epoch, until replication.
    pub leader_epoch: i32,
    /// Woken whenever a high watermark may have advanced (long-polling fetches wait on it).
    data_arrived: Arc<Notify>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    pub fn new(topic: String, index: i32, log: Log, data_arrived: Arc<Notify>) -> Partition {
        Partition { topic, index, log, leader_epoch: 0, data_arrived }
    }

    fn durable_policy(&self) -> bool {
        self.log.config().flush == FlushPolicy::Durable
    }

    /// The offset below which consumers may read. Under the durable policy only synced batches
    /// are visible, so nothing a consumer saw can vanish in a crash; under the lazy policy every
    /// appended batch is (Kafka's single-broker behaviour).
    pub fn high_watermark(&self) -> u64 {
        if self.durable_policy() {
            self.log.durable_end_offset()
        } else {
            self.log.log_end_offset()
        }
    }

    /// Appends a record set (phase one of a produce): offsets are assigned and the bytes are in
    /// the log when this returns, in the order calls were made. Under the durable policy a
    /// background group commit makes them durable and visible; [`Partition::wait_durable`] waits
    /// for it (acks=all).
    pub async fn append(self: &Arc<Self>, records: &mut [u8]) -> Result<AppendInfo, AppendError> {
        let info = self.log.append_unsynced(records, self.leader_epoch).await?;
        if self.durable_policy() {
            let partition = Arc::clone(self);
            let end = info.last_offset + 1;
            tokio::spawn(async move {
                if partition.log.wait_durable(end).await.is_ok() {
                    partition.data_arrived.notify_waiters();
                }
            });
        } else {
            self.data_arrived.notify_waiters();
        }
        Ok(info)
    }

    /// Phase two of an acks=all produce: returns once the append is durable.
    pub async fn wait_durable(&self, info: &AppendInfo) -> Result<(), AppendError> {
        if self.durable_policy() {
            self.log
                .wait_durable(info.last_offset + 1)
                .await
                .map_err(|e| AppendError::Offline(e.0))?;
        }
        Ok(())
    }
}
