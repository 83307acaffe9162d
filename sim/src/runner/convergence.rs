//! After the heal, the metadata quorum converges: every broker comes back, registers, is
//! unfenced, and holds exactly the active controller's image; and no metadata offset that any
//! node ever applied is lost (a power loss of every voter at once must not forget a committed
//! entry).
//!
//! The bound, once every broker is up: the longest a leaderless quorum waits before an
//! election (`election_max_ms`), plus one raft RPC that may stall on a peer that died
//! (`rpc_ms`), plus the broker's session timeout (a node that is still registered with its old
//! epoch is fenced only after it), plus one heartbeat interval (a broker asks to be unfenced at
//! its next heartbeat), plus one more heartbeat interval for the unfencing to be applied on
//! every node (learners and followers hear of commits with the next raft heartbeat).

use std::time::Duration;

use broker::controller::raft::QuorumTimeouts;

use super::admin::check_topics;
use super::invariants::{check_online, converged, MetadataInvariant};
use super::workload::Ctx;
use super::Run;
use crate::cluster::Cluster;
use crate::trace::now_ms;

impl Run {
    /// The bound of [`Run::converge`] from the moment every broker is up (module doc).
    pub(super) fn convergence_bound_ms(&self) -> u64 {
        // The quorum runs with openraft's timeouts as `faultline broker` sets them.
        let timeouts = QuorumTimeouts::default();
        let config = self.broker_config();
        timeouts.election_max_ms
            + timeouts.rpc_ms
            + config.broker_session_timeout_ms
            + 2 * config
                .broker_heartbeat_interval_ms
                .max(timeouts.heartbeat_ms)
    }

    /// Waits for every broker to be up (within `liveness-timeout-ms`), then for every image to
    /// equal the active controller's (within [`Run::convergence_bound_ms`]). A failure is a
    /// named metadata violation.
    pub(super) async fn converge(&self, cluster: &Cluster, ctx: &Ctx) {
        let trace = &self.trace;
        let brokers = cluster.broker_ids();
        let up_deadline = now_ms() + self.scenario.liveness_timeout_ms;
        let check = || {
            let open: Vec<(u32, Option<(uuid::Uuid, i64)>)> = brokers
                .iter()
                .map(|&id| {
                    let live = cluster
                        .broker(id)
                        .map(|b| (b.incarnation_id(), b.broker_epoch()));
                    (id, live)
                })
                .collect();
            converged(&cluster.planes(), &open, cluster.active_controller())
        };
        if check().is_ok() {
            self.committed_kept(cluster, ctx);
            return;
        }
        while brokers.iter().any(|&id| cluster.broker(id).is_none()) {
            if now_ms() >= up_deadline {
                let down: Vec<String> = brokers
                    .iter()
                    .filter(|&&id| cluster.broker(id).is_none())
                    .map(|id| format!("broker-{id}"))
                    .collect();
                let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
                inv.metadata_violation(
                    MetadataInvariant::ImagesConverge,
                    format!(
                        "after the heal: {} not up within {} ms",
                        down.join(", "),
                        self.scenario.liveness_timeout_ms
                    ),
                    now_ms(),
                    trace,
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            check_online(cluster, &ctx.invariants, trace);
        }
        let bound = self.convergence_bound_ms();
        let start = now_ms();
        let deadline = start + bound;
        loop {
            check_online(cluster, &ctx.invariants, trace);
            match check() {
                Ok(offset) => {
                    trace.event(
                        "runner",
                        format!(
                            "metadata converged at offset {offset} after {} ms (bound {bound} ms)",
                            now_ms() - start
                        ),
                    );
                    self.committed_kept(cluster, ctx);
                    return;
                }
                Err(why) if now_ms() >= deadline => {
                    let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
                    inv.metadata_violation(
                        MetadataInvariant::ImagesConverge,
                        format!("{bound} ms after every broker was up: {why}"),
                        now_ms(),
                        trace,
                    );
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// No metadata offset any node applied is beyond the converged image's; every
    /// acknowledged topic of the admin workload is in it, and none is half made.
    fn committed_kept(&self, cluster: &Cluster, ctx: &Ctx) {
        let Some((leader, _)) = cluster.active_controller() else {
            return;
        };
        let Some(view) = cluster.planes().into_iter().find(|v| v.id == leader) else {
            return;
        };
        if cluster.broker_ids().len() > 1 {
            // The story of fencing in one line: epochs and who is fenced at convergence.
            let epochs: Vec<String> = view
                .image
                .brokers
                .values()
                .map(|b| {
                    format!(
                        "{}@{}{}",
                        b.id,
                        b.epoch,
                        if b.fenced { " fenced" } else { "" }
                    )
                })
                .collect();
            self.trace.event(
                "runner",
                format!(
                    "broker epochs at metadata offset {}: {}",
                    view.image.metadata_offset,
                    epochs.join(", ")
                ),
            );
        }
        let creations = ctx
            .creations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
        if !creations.is_empty() {
            let acked = creations
                .iter()
                .filter(|c| c.acknowledged == Some(true))
                .count();
            self.trace.event(
                "runner",
                format!(
                    "topic creations: {} asked, {acked} acknowledged, {} in the image",
                    creations.len(),
                    creations
                        .iter()
                        .filter(|c| view.image.topic(&c.name).is_some())
                        .count()
                ),
            );
        }
        for &id in &self.scenario.expect.fenced {
            let id = id as i32;
            let fenced_seen = inv.metadata.fenced_seen.contains(&id);
            let now = view.image.brokers.get(&id).map(|b| (b.epoch, b.fenced));
            if !fenced_seen || !matches!(now, Some((_, false))) {
                inv.metadata_violation(
                    MetadataInvariant::FencedAndRejoined,
                    format!(
                        "broker {id}: {} during the run; (epoch, fenced) after the heal: {now:?}",
                        if fenced_seen {
                            "fenced"
                        } else {
                            "never seen fenced"
                        }
                    ),
                    now_ms(),
                    &self.trace,
                );
            }
        }
        for what in check_topics(&creations, &view.image) {
            inv.metadata_violation(
                MetadataInvariant::TopicCreations,
                what,
                now_ms(),
                &self.trace,
            );
        }
        let highest = inv.metadata.highest_offset;
        if view.image.metadata_offset < highest {
            inv.metadata_violation(
                MetadataInvariant::CommittedOffsetKept,
                format!(
                    "metadata offset {highest} was applied, the converged image is at {}",
                    view.image.metadata_offset
                ),
                now_ms(),
                &self.trace,
            );
        }
    }
}

impl Run {
    /// `out-of-isr`: each listed broker was seen shrunk out of an ISR while registered and
    /// unfenced, and is back in every ISR of its partitions in the active controller's image
    /// within `liveness-timeout-ms` (it catches up once its fault is over). A failure is the
    /// named violation `shrunk-and-rejoined`. Nothing happens for scenarios without the key.
    pub(super) async fn isr_rejoined(&self, cluster: &Cluster, ctx: &Ctx) {
        let expected = &self.scenario.expect.out_of_isr;
        if expected.is_empty() {
            return;
        }
        let deadline = now_ms() + self.scenario.liveness_timeout_ms;
        // Partitions that a listed broker replicates but whose ISR lacks it, in the active
        // controller's image.
        let outside = || -> Vec<String> {
            let Some((leader, _)) = cluster.active_controller() else {
                return vec!["no active controller".into()];
            };
            let Some(view) = cluster.planes().into_iter().find(|v| v.id == leader) else {
                return vec!["no active controller".into()];
            };
            let mut outside = Vec::new();
            for topic in view.image.topics.values() {
                for (index, p) in topic.partitions.iter().enumerate() {
                    for &id in expected {
                        let id = id as i32;
                        if p.replicas.contains(&id) && !p.isr.contains(&id) {
                            outside.push(format!(
                                "broker {id} outside {}-{index}'s ISR {:?}",
                                topic.name, p.isr
                            ));
                        }
                    }
                }
            }
            outside
        };
        let still = loop {
            check_online(cluster, &ctx.invariants, &self.trace);
            let still = outside();
            if still.is_empty() || now_ms() >= deadline {
                break still;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
        let never: Vec<u32> = expected
            .iter()
            .copied()
            .filter(|&id| !inv.metadata.shrunk_seen.contains(&(id as i32)))
            .collect();
        self.trace.event(
            "runner",
            format!(
                "out-of-isr: brokers {expected:?}; never seen shrunk: {never:?}; after the heal: {}",
                if still.is_empty() {
                    "back in every ISR".to_string()
                } else {
                    still.join(", ")
                }
            ),
        );
        for id in never {
            inv.metadata_violation(
                MetadataInvariant::ShrunkAndRejoined,
                format!("broker {id}: never seen outside an ISR while registered and unfenced"),
                now_ms(),
                &self.trace,
            );
        }
        if !still.is_empty() {
            inv.metadata_violation(
                MetadataInvariant::ShrunkAndRejoined,
                format!(
                    "{} ms after the heal: {}",
                    self.scenario.liveness_timeout_ms,
                    still.join(", ")
                ),
                now_ms(),
                &self.trace,
            );
        }
    }
}
