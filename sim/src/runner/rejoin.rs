//! `isr-complete-at-end`: after the heal, every replica on a live, unfenced broker is back in
//! its partition's ISR. Kafka promises it: a follower that can reach its leader fetches, catches
//! up and is added back (`Partition.maybeExpandIsr`). A follower that never gets there (e.g.
//! one that loops reconciling without truncating) loses nothing acknowledged and passes every
//! other check, so this is the check that sees it.
//!
//! The bound, from the moment the metadata has converged, sums every timeout that can delay a
//! rejoin (a bound missing one raises false alarms): the broker's session timeout plus two
//! heartbeat intervals (unfencing, which the convergence already waited for, is counted again
//! in case a session lapses once more), the fetcher's longest backoff after an error, one
//! `replica.lag.time.max.ms` (the leader's ISR task retries a refused AlterPartition on its
//! periodic tick, every half of it), and one whole AlterPartition submit to the controller
//! (`submit_ms`, retries included: one sent to a controller that died before the heal holds
//! the partition's only in-flight slot until it times out; a bound of an election plus one RPC
//! raised false alarms on replication-double-failover seed 2 and replication-zombie-leader
//! seed 1, followers at the leader's log end and still outside after 11 s).

use std::time::Duration;

use broker::controller::raft::QuorumTimeouts;
use broker::controller::NO_NODE;
use broker::replica::fetcher::BACKOFF_MAX;

use super::invariants::{check_online, MetadataInvariant};
use super::workload::Ctx;
use super::Run;
use crate::cluster::Cluster;
use crate::trace::now_ms;

impl Run {
    /// The bound of [`Run::isr_complete`] (module doc).
    fn rejoin_bound_ms(&self) -> u64 {
        let timeouts = QuorumTimeouts::default();
        let config = self.broker_config();
        config.broker_session_timeout_ms
            + 2 * config
                .broker_heartbeat_interval_ms
                .max(timeouts.heartbeat_ms)
            + BACKOFF_MAX.as_millis() as u64
            + config.replica_lag_time_max_ms
            + timeouts.submit_ms
    }

    /// Waits until every replica on a live, unfenced broker is in its partition's ISR in the
    /// active controller's image, for at most [`Run::rejoin_bound_ms`]; what is still outside
    /// then is the violation `replica-never-rejoined`, with its log end and the leader's.
    pub(super) async fn isr_complete(&self, cluster: &Cluster, ctx: &Ctx) {
        if !self.scenario.expect.isr_complete_at_end {
            return;
        }
        let bound = self.rejoin_bound_ms();
        let deadline = now_ms() + bound;
        let outside = loop {
            check_online(cluster, &ctx.invariants, &self.trace);
            let outside = self.outside_isr(cluster);
            if outside.is_empty() || now_ms() >= deadline {
                break outside;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.trace.event(
            "runner",
            format!(
                "isr-complete-at-end (bound {bound} ms): {}",
                if outside.is_empty() {
                    "every live replica is in its ISR".to_string()
                } else {
                    outside.join("; ")
                }
            ),
        );
        let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
        for what in outside {
            inv.metadata_violation(
                MetadataInvariant::ReplicaNeverRejoined,
                format!("{bound} ms after the metadata converged: {what}"),
                now_ms(),
                &self.trace,
            );
        }
    }

    /// The replicas on live, unfenced brokers outside the ISR of their partition (one with a
    /// leader) in the active controller's image, each with its log end and the leader's.
    fn outside_isr(&self, cluster: &Cluster) -> Vec<String> {
        let Some((controller, _)) = cluster.active_controller() else {
            return vec!["no active controller".into()];
        };
        let Some(view) = cluster.planes().into_iter().find(|v| v.id == controller) else {
            return vec!["no active controller".into()];
        };
        let log_end = |id: i32, topic: &str, index: i32| -> String {
            u32::try_from(id)
                .ok()
                .and_then(|id| cluster.broker(id))
                .and_then(|b| b.partition(topic, index))
                .map_or("none".into(), |p| {
                    p.replica_state().local_log().log_end_offset.to_string()
                })
        };
        let mut outside = Vec::new();
        for topic in view.image.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                let index = index as i32;
                // Kafka's promise is a follower's, that it catches up with its leader: a
                // partition left without a leader (e.g. no eligible replica with unclean
                // election off) is the liveness phase's to judge.
                if p.leader == NO_NODE {
                    continue;
                }
                for &id in &p.replicas {
                    if p.isr.contains(&id) {
                        continue;
                    }
                    let live = u32::try_from(id).is_ok_and(|id| cluster.broker(id).is_some());
                    let unfenced = view.image.brokers.get(&id).is_some_and(|b| !b.fenced);
                    if !live || !unfenced {
                        continue;
                    }
                    outside.push(format!(
                        "broker {id} outside {}-{index}'s ISR {:?} (leader {}): its log end {}, the leader's {}",
                        topic.name,
                        p.isr,
                        p.leader,
                        log_end(id, &topic.name, index),
                        log_end(p.leader, &topic.name, index),
                    ));
                }
            }
        }
        outside
    }
}
