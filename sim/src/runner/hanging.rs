//! Hanging transactions: after the heal, once every transaction can have ended, every
//! partition's last stable offset must reach its high watermark.
//!
//! A transaction on a partition that no coordinator will ever end (a transactional produce that
//! arrived after its transaction's marker, KIP-890's "hanging transaction") holds the LSO back
//! for good, and with it every read_committed consumer of the partition: nothing times it out,
//! since the coordinator does not know it. Safety checks cannot see it (nothing wrong is ever
//! read), so this is a liveness check with a bound made of every timeout that may delay an
//! honest transaction's end after the heal:
//! - the longest `transaction.timeout.ms` of the workload (a transaction open at the heal, its
//!   producer gone, is aborted by the coordinator once it is that old), plus one period of the
//!   coordinator's timer (`transaction.abort.timed.out.transaction.cleanup.interval.ms`);
//! - the longest `delivery.timeout.ms` (the producer's own end of its last transaction,
//!   retried within `max.block.ms`, which the workload sets to it);
//! - the coordinator's write of the decision ([`PREPARE_WRITE_MS`]) and one marker attempt
//!   ([`MARKER_ATTEMPT_MS`]), after which a failed marker is retried;
//! - `liveness-timeout-ms` (leaders elected and coordinators loaded again after the heal).
//!
//! The check polls ListOffsets (latest) read_uncommitted, then read_committed, of every
//! partition of the scenario's topics and ends as soon as every LSO has reached the high
//! watermark read before it; only the partitions still behind at the bound are findings.

use std::collections::BTreeMap;
use std::time::Duration;

use client::{Consumer, ConsumerConfig, IsolationLevel, OffsetReset};

use super::report::{Anomaly, HarnessAnomalyKind};
use super::workload::{connect, Ctx};
use super::Run;
use crate::cluster::Cluster;
use crate::scenario::Scenario;
use crate::trace::now_ms;

/// The transaction coordinator's write of PrepareAbort or PrepareCommit to
/// `__transaction_state` (its shard's append timeout).
const PREPARE_WRITE_MS: u64 = 5_000;

/// One attempt of the broker's marker sender: a connect (5 s) and a WriteTxnMarkers (15 s),
/// then 100 ms before the next attempt (`txn_host.rs`, `transaction_coordinator.rs`).
const MARKER_ATTEMPT_MS: u64 = 20_100;

/// (last stable offset, high watermark) of a partition, as ListOffsets answered them.
type Stability = BTreeMap<(String, i32), (i64, i64)>;

impl Run {
    /// How long after the heal every honest transaction has ended (see the module docs).
    fn transactions_end_within_ms(&self) -> u64 {
        let s = &self.scenario;
        let transactional = s.workload.producers.iter().filter(|p| p.transactional);
        let timeout_ms = transactional
            .clone()
            .map(|p| p.transaction_timeout_ms)
            .max()
            .unwrap_or(0);
        let delivery_ms = transactional
            .map(|p| p.delivery_timeout_ms)
            .max()
            .unwrap_or(0);
        let timer_ms = self
            .broker_config()
            .transaction_abort_timed_out_transaction_cleanup_interval_ms;
        timeout_ms
            + timer_ms
            + delivery_ms
            + PREPARE_WRITE_MS
            + MARKER_ATTEMPT_MS
            + s.liveness_timeout_ms
    }

    /// Every partition's LSO reaches its high watermark within the bound after the heal at
    /// `healed_ms` (only with a transactional producer in the workload).
    pub(super) async fn hanging_transactions(
        &self,
        cluster: &Cluster,
        ctx: &Ctx,
        healed_ms: u64,
    ) -> Vec<Anomaly> {
        let s = &self.scenario;
        if !s.workload.producers.iter().any(|p| p.transactional) {
            return Vec::new();
        }
        let deadline = healed_ms + self.transactions_end_within_ms();
        let started = now_ms();
        let mut behind: Stability;
        let mut rounds = 0;
        loop {
            rounds += 1;
            behind = cluster
                .spawn_on_client(1, partitions_behind(ctx.clone(), s.clone()))
                .await
                .unwrap_or_default();
            if behind.is_empty() || now_ms() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.trace.event(
            "runner",
            format!(
                "last stable offsets: {} partition(s) behind their high watermark after {rounds} \
                 round(s) in {} ms (bound: {} ms after the heal)",
                behind.len(),
                now_ms() - started,
                deadline - healed_ms
            ),
        );
        behind
            .into_iter()
            .map(|((topic, partition), (lso, hw))| Anomaly {
                kind: HarnessAnomalyKind::HangingTransaction,
                allowed: false,
                description: format!(
                    "{topic}-{partition}: last stable offset {lso} below the high watermark {hw} \
                     {} ms after the heal, when every transaction could have ended: a \
                     transaction nobody ends holds read_committed consumers back for good",
                    now_ms() - healed_ms
                ),
                topic: Some(topic),
                partition: Some(partition),
                offsets: vec![lso, hw],
                values: vec![],
                at_ms: vec![now_ms()],
            })
            .collect()
    }
}

/// The partitions whose LSO is below the high watermark read just before it. A partition whose
/// offsets cannot be listed now is left to the liveness checks.
async fn partitions_behind(ctx: Ctx, scenario: Scenario) -> Stability {
    let mut behind = Stability::new();
    let request_timeout = Duration::from_secs(2);
    let deadline = now_ms() + 5_000;
    let Some(client) = connect(&ctx, "lso-check", request_timeout, || now_ms() > deadline).await
    else {
        return behind;
    };
    let reader = |isolation_level| {
        Consumer::new(
            client.clone(),
            ConsumerConfig {
                isolation_level,
                auto_offset_reset: OffsetReset::None,
                ..ConsumerConfig::default()
            },
        )
    };
    let uncommitted = reader(IsolationLevel::ReadUncommitted);
    let committed = reader(IsolationLevel::ReadCommitted);
    for t in &scenario.topics {
        for p in 0..t.partitions {
            let Some(hw) = latest(&uncommitted, &t.name, p, request_timeout).await else {
                continue;
            };
            let Some(lso) = latest(&committed, &t.name, p, request_timeout).await else {
                continue;
            };
            if lso < hw {
                behind.insert((t.name.clone(), p), (lso, hw));
            }
        }
    }
    behind
}

/// ListOffsets latest of `topic`-`partition` at the reader's isolation level: the high
/// watermark read_uncommitted, the LSO read_committed.
async fn latest(reader: &Consumer, topic: &str, partition: i32, timeout: Duration) -> Option<i64> {
    tokio::time::timeout(timeout * 2, reader.list_offset(topic, partition, -1))
        .await
        .ok()
        .and_then(Result::ok)
}
