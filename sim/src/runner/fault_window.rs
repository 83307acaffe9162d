//! The fault window and the heal: the nemesis applies the plan (each fault undone after its
//! duration) while the workload runs and the online invariants are checked every few
//! milliseconds; then everything is healed and in-flight operations settle.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chaos::nemesis::{Applied, Fault, Nemesis, Node};

use super::invariants::check_online;
use super::plan::{resolve, Planned};
use super::workload::Ctx;
use super::Run;
use crate::cluster::Cluster;
use crate::history::Outcome;
use crate::trace::now_ms;

/// What the fault window did, for the phases after it and the verdict.
pub(super) struct FaultLog {
    pub(super) nemesis: Nemesis,
    pub(super) applied: usize,
    /// Broker crashes and the edges of disk EIO windows: the moments unsynced data may be lost.
    pub(super) crashes_ms: Vec<u64>,
    /// (simulated ms, what flipped where) of every bit flip.
    pub(super) bit_flips: Vec<(u64, String)>,
    /// The broker whose disk took each of `bit_flips`, in the same order.
    pub(super) bit_flip_brokers: Vec<u32>,
}

impl FaultLog {
    /// The first bit flip at rest in a segment of `topic`-`partition`, if any.
    pub(super) fn flipped(&self, topic: &str, partition: i32) -> Option<(u64, String)> {
        let dir = format!("/{topic}-{partition}/");
        self.bit_flips
            .iter()
            .find(|(_, path)| path.contains(&dir))
            .cloned()
    }

    /// Every bit flip at rest in a segment of `topic`-`partition` on `broker`'s disk.
    pub(super) fn flipped_on(
        &self,
        broker: u32,
        topic: &str,
        partition: i32,
    ) -> Vec<&(u64, String)> {
        let dir = format!("/{topic}-{partition}/");
        self.bit_flips
            .iter()
            .zip(&self.bit_flip_brokers)
            .filter(|((_, path), &on)| on == broker && path.contains(&dir))
            .map(|(flip, _)| flip)
            .collect()
    }
}

impl Run {
    /// Applies `plan` for `duration-ms` from `t0`.
    pub(super) async fn fault_window(
        &self,
        cluster: &mut Cluster,
        ctx: &Ctx,
        plan: Vec<Planned>,
        t0: u64,
    ) -> FaultLog {
        let s = &self.scenario;
        let trace = &self.trace;
        let mut nemesis = Nemesis::new();
        let mut queue: BTreeMap<(u64, u64), Result<Planned, Fault>> = BTreeMap::new();
        for (seq, p) in plan.into_iter().enumerate() {
            queue.insert((t0 + p.at_ms, seq as u64), Ok(p));
        }
        let mut seq = queue.len() as u64;
        let mut faults_applied = 0usize;
        let mut crashes_ms: Vec<u64> = Vec::new();
        let mut bit_flips: Vec<(u64, String)> = Vec::new();
        let mut bit_flip_brokers: Vec<u32> = Vec::new();
        let end = t0 + s.duration_ms;
        let mut next_progress = t0 + 5_000;
        loop {
            let now = now_ms();
            let next_at = queue.keys().next().map(|k| k.0).filter(|&at| at < end);
            let wake = next_at.unwrap_or(end).min(now + 10).min(next_progress);
            if wake > now {
                tokio::time::sleep(Duration::from_millis(wake - now)).await;
            }
            check_online(cluster, &ctx.invariants, trace);
            let now = now_ms();
            if now >= next_progress {
                let (sends, acked, polls) = ctx.recorder.with(|h| {
                    let acked = h
                        .sends()
                        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
                        .count();
                    (h.sends().count(), acked, h.polls().count())
                });
                self.say(format!(
                    "[{:>7.3}s] progress: {sends} sends, {acked} acknowledged, {polls} polls, {} faults",
                    (now - t0) as f64 / 1000.0,
                    faults_applied
                ));
                next_progress += 5_000;
            }
            if now >= end {
                break;
            }
            while let Some(entry) = queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((at, _), item) = entry.remove_entry();
                let (faults, planned) = match item {
                    Ok(p) => match resolve(&p, cluster) {
                        Ok((faults, resolved)) => {
                            if !resolved.is_empty() {
                                trace.event("nemesis", format!("{p}: {resolved}"));
                            }
                            (faults, Some(p))
                        }
                        Err(why) => {
                            trace.event("nemesis", format!("skipped {p}: {why}"));
                            continue;
                        }
                    },
                    Err(f) => (vec![f], None),
                };
                for fault in faults {
                    let applied = nemesis.apply(&fault, cluster);
                    let line = match &applied {
                        Applied::Done(how) if how.is_empty() => format!("{fault}"),
                        Applied::Done(how) => format!("{fault}: {how}"),
                        Applied::Skipped(why) => format!("skipped {fault}: {why}"),
                    };
                    trace.event("nemesis", &line);
                    self.say(format!("[{:>7.3}s] {line}", (now - t0) as f64 / 1000.0));
                    if let Applied::Done(how) = &applied {
                        faults_applied += 1;
                        match &fault {
                            Fault::Crash(Node::Broker(_)) | Fault::DiskWipe(Node::Broker(_)) => {
                                crashes_ms.push(now)
                            }
                            // A failed fsync loses what was not yet synced, like a power cut:
                            // the broker's log goes offline and recovers from what is on disk.
                            // Mark the start and the end of every EIO window as such a moment,
                            // so acks=0/1 and lazy-flush losses inside it are judged like
                            // losses to a crash.
                            Fault::DiskEio { .. } => crashes_ms.push(now),
                            // Only a broker has a disk to flip a bit on.
                            Fault::BitFlip(Node::Broker(id)) => {
                                bit_flips.push((now, how.clone()));
                                bit_flip_brokers.push(*id);
                            }
                            _ => {}
                        }
                        if let (Some(inverse), Some(d)) =
                            (fault.inverse(), planned.as_ref().and_then(|p| p.for_ms))
                        {
                            seq += 1;
                            queue.insert((at + d, seq), Err(inverse));
                        }
                    }
                }
            }
        }
        FaultLog {
            nemesis,
            applied: faults_applied,
            crashes_ms,
            bit_flips,
            bit_flip_brokers,
        }
    }

    /// Heals everything and lets in-flight operations settle (bounded by the delivery timeout).
    pub(super) async fn heal(
        &self,
        cluster: &mut Cluster,
        ctx: &Ctx,
        faults: &mut FaultLog,
        t0: u64,
    ) {
        let s = &self.scenario;
        let trace = &self.trace;
        ctx.stop.store(true, Ordering::SeqCst);
        let applied = faults.nemesis.apply(&Fault::Heal, cluster);
        trace.event("nemesis", format!("{}: {:?}", Fault::Heal, applied));
        self.say(format!(
            "[{:>7.3}s] heal: {applied:?}",
            (now_ms() - t0) as f64 / 1000.0
        ));
        let settle_ms = s
            .workload
            .producers
            .iter()
            .map(|p| p.delivery_timeout_ms + p.request_timeout_ms)
            .max()
            .unwrap_or(0)
            + 1_000;
        let settle_end = now_ms() + settle_ms;
        while ctx.inflight.load(Ordering::SeqCst) > 0 && now_ms() < settle_end {
            tokio::time::sleep(Duration::from_millis(10)).await;
            check_online(cluster, &ctx.invariants, trace);
        }
        trace.event(
            "runner",
            format!(
                "settled ({} operations still in flight)",
                ctx.inflight.load(Ordering::SeqCst)
            ),
        );
    }
}
