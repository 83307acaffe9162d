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
//!
//! One thing excuses a replica still outside: its leader cannot serve it what it lacks,
//! because the leader's own copy took a bit flip at rest. The harness asks the leader's log
//! for exactly what the follower's fetch asks (from its log end, up to the log end); when that
//! read refuses a corrupt batch, returns nothing though the log goes on, or returns a batch
//! whose header (a flipped offset field) straddles the follower's log end, and the leader's
//! copy of the partition took a flip, the follower can never catch up, in Kafka too (a
//! follower whose append fails its CRC check backs off and fetches the same batch again; no
//! replica repairs another's disk). Allowed where lost writes are, with the flip as the cause
//! (60 s replication swarm seeds 4, 5, 82, 91, 121, 169 of session 13). Without a flip on the
//! leader's copy it stays a violation, with what the read found.

use std::time::Duration;

use broker::controller::raft::QuorumTimeouts;
use broker::controller::NO_NODE;
use broker::replica::fetcher::{records_to_append, BACKOFF_MAX};

use broker::log::ReadError;

use super::fault_window::FaultLog;
use super::invariants::{check_online, MetadataInvariant};
use super::workload::Ctx;
use super::Run;
use crate::cluster::Cluster;
use crate::scenario::AllowSpec;
use crate::trace::now_ms;

/// A replica on a live, unfenced broker outside its partition's ISR.
struct Outside {
    topic: String,
    index: i32,
    replica: i32,
    leader: i32,
    isr: Vec<i32>,
    /// The replica's log end and the leader's (`None`: no such partition on that broker).
    log_end: Option<u64>,
    leader_log_end: Option<u64>,
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |e: Option<u64>| e.map_or("none".to_string(), |e| e.to_string());
        write!(
            f,
            "broker {} outside {}-{}'s ISR {:?} (leader {}): its log end {}, the leader's {}",
            self.replica,
            self.topic,
            self.index,
            self.isr,
            self.leader,
            end(self.log_end),
            end(self.leader_log_end),
        )
    }
}

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
    pub(super) async fn isr_complete(&self, cluster: &Cluster, ctx: &Ctx, faults: &FaultLog) {
        if !self.scenario.expect.isr_complete_at_end {
            return;
        }
        let bound = self.rejoin_bound_ms();
        let deadline = now_ms() + bound;
        let outside = loop {
            check_online(cluster, &ctx.invariants, &self.trace);
            let outside = self.outside_isr(cluster);
            if outside.as_ref().is_ok_and(Vec::is_empty) || now_ms() >= deadline {
                break outside;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let outside = match outside {
            Ok(outside) => outside,
            Err(why) => {
                self.trace.event(
                    "runner",
                    format!("isr-complete-at-end (bound {bound} ms): {why}"),
                );
                let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
                inv.metadata_violation(
                    MetadataInvariant::ReplicaNeverRejoined,
                    format!("{bound} ms after the metadata converged: {why}"),
                    now_ms(),
                    &self.trace,
                );
                return;
            }
        };
        self.trace.event(
            "runner",
            format!(
                "isr-complete-at-end (bound {bound} ms): {}",
                if outside.is_empty() {
                    "every live replica is in its ISR".to_string()
                } else {
                    outside
                        .iter()
                        .map(Outside::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            ),
        );
        let mut judged = Vec::new();
        for o in &outside {
            judged.push((o, self.leader_cannot_serve(cluster, o, faults).await));
        }
        let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
        for (o, unserved) in judged {
            let what = format!("{bound} ms after the metadata converged: {o}");
            let allows = self.scenario.allows(AllowSpec::LostWrite);
            match unserved {
                Some(Unserved { why, flips }) if !flips.is_empty() && allows => inv
                    .metadata_allowed(
                        MetadataInvariant::ReplicaNeverRejoined,
                        format!(
                            "{what}: the leader {why} (allowed: bit flip at rest in the leader's copy: {})",
                            flips.join(", ")
                        ),
                        now_ms(),
                        &self.trace,
                    ),
                Some(Unserved { why, flips }) => inv.metadata_violation(
                    MetadataInvariant::ReplicaNeverRejoined,
                    if flips.is_empty() {
                        format!("{what}: the leader {why}, and no bit flip on its copy explains it")
                    } else {
                        format!(
                            "{what}: the leader {why} (bit flip at rest in the leader's copy: {}; lost writes are not allowed here)",
                            flips.join(", ")
                        )
                    },
                    now_ms(),
                    &self.trace,
                ),
                None => inv.metadata_violation(
                    MetadataInvariant::ReplicaNeverRejoined,
                    what,
                    now_ms(),
                    &self.trace,
                ),
            }
        }
    }

    /// What the leader's log answers the fetch `o`'s follower sends (from its log end, up to
    /// the leader's log end), when that can never let it catch up: a corrupt batch refused, or
    /// nothing though the log goes on, or a batch straddling its log end; with the bit flips
    /// on the leader's copy of the partition. `None` when the leader serves it, or there is no
    /// leader's log to ask.
    async fn leader_cannot_serve(
        &self,
        cluster: &Cluster,
        o: &Outside,
        faults: &FaultLog,
    ) -> Option<Unserved> {
        let leader = u32::try_from(o.leader).ok()?;
        let partition = cluster.broker(leader)?.partition(&o.topic, o.index)?;
        let from = o.log_end?;
        // Judged as the follower's fetcher judges the answer.
        let why = match partition.log.read(from, 1 << 20, None).await {
            Err(e @ ReadError::Corrupt { .. }) => format!("refuses offset {from}: {e}"),
            Ok(read) => match records_to_append(&read.records, from) {
                Err(base) => format!(
                    "answers offset {from} with a batch at {base} that straddles it (the follower reconciles and asks again)"
                ),
                Ok(fresh) if fresh.is_empty() && read.log_end_offset > from => format!(
                    "serves nothing from offset {from} though its log ends at {}",
                    read.log_end_offset
                ),
                Ok(_) => return None,
            },
            Err(_) => return None,
        };
        let flips = faults
            .flipped_on(leader, &o.topic, o.index)
            .into_iter()
            .map(|(at, what)| format!("{what} at {at} ms"))
            .collect();
        Some(Unserved { why, flips })
    }

    /// The replicas on live, unfenced brokers outside the ISR of their partition (one with a
    /// leader) in the active controller's image, each with its log end and the leader's.
    fn outside_isr(&self, cluster: &Cluster) -> Result<Vec<Outside>, &'static str> {
        let Some((controller, _)) = cluster.active_controller() else {
            return Err("no active controller");
        };
        let Some(view) = cluster.planes().into_iter().find(|v| v.id == controller) else {
            return Err("no active controller");
        };
        let log_end = |id: i32, topic: &str, index: i32| -> Option<u64> {
            u32::try_from(id)
                .ok()
                .and_then(|id| cluster.broker(id))
                .and_then(|b| b.partition(topic, index))
                .map(|p| p.replica_state().local_log().log_end_offset)
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
                    outside.push(Outside {
                        topic: topic.name.clone(),
                        index,
                        replica: id,
                        leader: p.leader,
                        isr: p.isr.clone(),
                        log_end: log_end(id, &topic.name, index),
                        leader_log_end: log_end(p.leader, &topic.name, index),
                    });
                }
            }
        }
        Ok(outside)
    }
}

/// Why a leader cannot serve a follower what it lacks, and the bit flips on the leader's copy
/// that explain it (empty: none does).
struct Unserved {
    why: String,
    flips: Vec<String>,
}
