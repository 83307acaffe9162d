//! The verdict: the offline history checker with the allowances the scenario and the run
//! justify, the harness's own findings, and the counts.

use std::collections::{BTreeMap, BTreeSet};

use broker::config::BrokerConfig;

use super::fault_window::FaultLog;
use super::report::{replay_command, Anomaly, Counts, HarnessAnomalyKind, Report, Verdict};
use super::workload::Ctx;
use super::Run;
use crate::checker::{self, Allowance, Allowances, CompactedTopic, LossAllowance, Status};
use crate::cluster::Cluster;
use crate::history::{History, OpKind, Outcome};
use crate::scenario::{AcksSpec, AllowSpec, FlushModeSpec, Scenario};
use crate::trace::now_ms;

impl Run {
    /// `serving-during`: within the window (fault-window ms from `t0`), some send was
    /// acknowledged and some poll returned records, each invoked and completed inside it.
    pub(super) fn serving_check(&self, ctx: &Ctx, t0: u64) -> Option<Anomaly> {
        let [from, to] = self.scenario.expect.serving_during?;
        let (from, to) = (t0 + from, t0 + to);
        let inside = |op: &crate::history::Op| {
            op.invoke_ms >= from && op.complete_ms.is_some_and(|c| c <= to)
        };
        let (acked, read) = ctx.recorder.with(|history| {
            let acked = history
                .sends()
                .filter(|op| inside(op) && matches!(op.outcome, Outcome::Ok { .. }))
                .count();
            let read = history
                .polls()
                .filter(|op| {
                    inside(op)
                        && matches!(&op.kind, OpKind::Poll { records, .. } if !records.is_empty())
                })
                .count();
            (acked, read)
        });
        self.trace.event(
            "runner",
            format!("serving during {from}..{to}ms: {acked} sends acknowledged, {read} polls with records"),
        );
        (acked == 0 || read == 0).then(|| Anomaly {
            kind: HarnessAnomalyKind::Unavailable,
            allowed: false,
            description: format!(
                "the cluster stopped serving during {from}..{to}ms: {acked} sends acknowledged, {read} polls with records"
            ),
            topic: None,
            partition: None,
            offsets: vec![],
            values: vec![],
            at_ms: vec![from, to],
        })
    }

    /// `metadata-during`: within the window, some CreateTopics was invoked and acknowledged;
    /// `metadata-halts`: brokers halted on a failed metadata log at least that many times.
    pub(super) fn metadata_checks(&self, cluster: &Cluster, ctx: &Ctx, t0: u64) -> Vec<Anomaly> {
        let mut found = Vec::new();
        let anomaly = |kind, description: String, at_ms: Vec<u64>| Anomaly {
            kind,
            allowed: false,
            description,
            topic: None,
            partition: None,
            offsets: vec![],
            values: vec![],
            at_ms,
        };
        if let Some([from, to]) = self.scenario.expect.metadata_during {
            let (from, to) = (t0 + from, t0 + to);
            let created = ctx
                .creations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|c| {
                    c.invoked_ms >= from
                        && c.acknowledged == Some(true)
                        && c.answered_ms.is_some_and(|a| a <= to)
                })
                .count();
            self.trace.event(
                "runner",
                format!("metadata during {from}..{to}ms: {created} topic creations acknowledged"),
            );
            if created == 0 {
                found.push(anomaly(
                    HarnessAnomalyKind::Unavailable,
                    format!("the metadata quorum accepted no change during {from}..{to}ms: no topic creation invoked and acknowledged in it"),
                    vec![from, to],
                ));
            }
        }
        let wanted = self.scenario.expect.metadata_halts;
        let halts = cluster.halts();
        if halts > 0 || wanted > 0 {
            self.trace
                .event("runner", format!("{halts} halts on a failed metadata log"));
        }
        if halts < wanted {
            found.push(anomaly(
                HarnessAnomalyKind::Invariant,
                format!("brokers halted on a failed metadata log {halts} times, at least {wanted} expected: the fault struck no write, or a node ran on with a dead quorum replica"),
                vec![now_ms()],
            ));
        }
        found
    }

    /// Checks the history and gives the verdict. Nothing awaits from here on, so no task records
    /// anything more: the history and the trace move into the report instead of being copied.
    pub(super) fn judge(
        &self,
        cluster: &Cluster,
        ctx: Ctx,
        faults: &FaultLog,
        mut anomalies: Vec<Anomaly>,
    ) -> Report {
        let s = &self.scenario;
        let trace = &self.trace;
        let (crashes_ms, bit_flips, faults_applied) =
            (&faults.crashes_ms, &faults.bit_flips, faults.applied);
        let history = ctx.recorder.take();
        let (violations, leader_changes_ms) = {
            let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
            let mut changes = std::mem::take(&mut inv.replication.leader_changes_ms);
            changes.append(&mut inv.metadata.deposed_learned_ms);
            changes.sort_unstable();
            (std::mem::take(&mut inv.violations), changes)
        };
        let checked = check_history(&history, s, crashes_ms, &leader_changes_ms, bit_flips);
        for (topic, removed) in &checked.counts.records_cleaned {
            trace.event(
                "runner",
                format!("compaction: scans of {topic} saw {removed} records cleaned away"),
            );
        }
        anomalies.splice(0..0, violations);
        let expected = &s.expect.violations;
        let verdict = if expected.is_empty() {
            if anomalies.iter().any(|a| !a.allowed) || !checked.passed() {
                Verdict::Fail
            } else {
                Verdict::Pass
            }
        } else {
            // The run must find each expected kind, and nothing else.
            let found: BTreeSet<&str> = anomalies
                .iter()
                .filter(|a| !a.allowed)
                .map(|a| a.kind.name())
                .chain(checked.violations().map(|a| a.kind.name()))
                .collect();
            let wanted: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
            if found == wanted {
                Verdict::Pass
            } else {
                Verdict::Fail
            }
        };
        let mut counts = Counts {
            operations: history.ops.len(),
            faults_applied,
            ..Counts::default()
        };
        for op in &history.ops {
            match &op.kind {
                OpKind::Send { .. } => {
                    counts.sends += 1;
                    match op.outcome {
                        Outcome::Ok { .. } => counts.acknowledged += 1,
                        Outcome::Fail { .. } => counts.failed += 1,
                        Outcome::Unknown { .. } | Outcome::Pending => counts.unknown += 1,
                    }
                }
                OpKind::Poll { records, .. } => {
                    counts.polls += 1;
                    counts.records_read += records.len();
                }
                OpKind::Commit { .. }
                | OpKind::FetchCommitted { .. }
                | OpKind::BeginTxn { .. }
                | OpKind::SendOffsetsToTxn { .. }
                | OpKind::EndTxn { .. } => {}
            }
        }
        counts.broker_boots = cluster
            .broker_ids()
            .iter()
            .map(|&id| cluster.incarnations(id))
            .sum();
        trace.event("runner", format!("verdict {verdict}"));
        let sim_ms = now_ms();
        Report {
            scenario: s.name.clone(),
            file: self.file.clone(),
            seed: self.seed,
            verdict,
            trace_hash: format!("{:016x}", trace.hash()),
            options: self.report_options.clone(),
            counts,
            anomalies,
            checker: Some(checked),
            sim_ms,
            replay: replay_command(&self.file, self.seed),
            expected_violations: expected.clone(),
            broker_requests: 0,
            trace: trace.take(),
            history,
        }
    }
}

/// Whether a replicated topic may lose a write in this configuration (acks=0/1 producers, the
/// lazy policy, or unclean elections, with lost writes allowed), so that a new leader reuses its offset: the
/// cause, or `None`.
pub(super) fn offset_reuse_after_loss(scenario: &Scenario) -> Option<String> {
    let replicated = scenario.topics.iter().any(|t| t.replication_factor > 1);
    let weak = scenario
        .workload
        .producers
        .iter()
        .any(|p| p.acks != AcksSpec::All);
    // Under the lazy policy a power loss of every replica drops their unsynced tail, and the
    // next leader appends at its own log end.
    let lazy = scenario.cluster.flush_mode == FlushModeSpec::Lazy;
    (replicated && (weak || lazy || unclean(scenario)) && scenario.allows(AllowSpec::LostWrite))
        .then(|| {
        "an offset freed by a lost write is assigned again by the next leader (replicated topic)"
            .to_string()
    })
}

/// The scenario's compacted topics, with the `delete.retention.ms` each keeps tombstones for
/// (its override, or the broker's `log.cleaner.delete.retention.ms`).
pub(super) fn compacted_topics(scenario: &Scenario) -> BTreeMap<String, CompactedTopic> {
    scenario
        .topics
        .iter()
        .filter(|t| scenario.compacted(&t.name))
        .map(|t| {
            let retention = t
                .configs
                .get("delete.retention.ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(BrokerConfig::default().log_cleaner_delete_retention_ms as u64);
            (
                t.name.clone(),
                CompactedTopic {
                    delete_retention_ms: retention,
                    expect_cleaning: scenario.expect.records_cleaned,
                },
            )
        })
        .collect()
}

/// `unclean.leader.election.enable`, as the broker default or a topic's override.
fn unclean(scenario: &Scenario) -> bool {
    scenario.cluster.unclean_leader_election_enable
        || scenario.topics.iter().any(|t| {
            t.configs
                .get("unclean.leader.election.enable")
                .is_some_and(|v| v == "true")
        })
}

/// Runs the offline history checker with the allowances the scenario and the run justify:
/// the file's `allow` list grants a kind only when the configuration can produce it (acks=0/1
/// or the lazy flush policy for lost writes, non-idempotent producers for duplicates), with the
/// crash times of this run. Losses in a partition whose segment took a bit flip are allowed
/// when the file allows lost writes (without replicas, a flipped record is gone); that
/// reclassification happens here, after the checker, and names the flip as the cause.
fn check_history(
    history: &History,
    scenario: &Scenario,
    crashes_ms: &[u64],
    leader_changes_ms: &[u64],
    bit_flips: &[(u64, String)],
) -> checker::Report {
    let mut allowances = Allowances::default();
    if scenario.expect.offsets_expire {
        let minutes = scenario
            .cluster
            .offsets_retention_minutes
            .unwrap_or(BrokerConfig::default().offsets_retention_minutes);
        allowances.offsets_expire_after_ms = Some(minutes as u64 * 60_000);
    }
    let producers = &scenario.workload.producers;
    let replicated =
        !scenario.topics.is_empty() && scenario.topics.iter().all(|t| t.replication_factor > 1);
    if replicated && scenario.cluster.flush_mode == FlushModeSpec::Durable {
        allowances.reads_survive = Some(
            "every topic is replicated under the durable policy: reads stop at the high watermark"
                .into(),
        );
    }
    if scenario.allows(AllowSpec::LostWrite) {
        let weak: Vec<String> = producers
            .iter()
            .filter(|p| p.acks != AcksSpec::All)
            .map(|p| format!("acks={} on {}", p.acks, p.topic))
            .collect();
        if !weak.is_empty() {
            // With replicas, a leader change without a crash (an isolated or paused leader)
            // drops what the followers had not fetched, as in Kafka.
            let (cause, moments) = if replicated {
                let mut moments = crashes_ms.to_vec();
                moments.extend_from_slice(leader_changes_ms);
                moments.sort_unstable();
                (
                    format!(
                        "producers use {}; a crash or a leader change drops what followers had not fetched",
                        weak.join(", ")
                    ),
                    moments,
                )
            } else {
                (
                    format!("producers use {}", weak.join(", ")),
                    crashes_ms.to_vec(),
                )
            };
            allowances.acks0_or_acks1_loss_on_crash = Some(LossAllowance {
                cause,
                crashes_ms: moments,
                unsynced_window_ms: None,
            });
        }
        if unclean(scenario) {
            allowances.unclean_election_loss = Some(LossAllowance {
                cause: "unclean.leader.election.enable=true: an out-of-sync replica may be elected"
                    .into(),
                crashes_ms: leader_changes_ms.to_vec(),
                unsynced_window_ms: None,
            });
        }
        if scenario.cluster.flush_mode == FlushModeSpec::Lazy {
            let flush_ms = scenario
                .topics
                .iter()
                .filter_map(|t| {
                    t.configs
                        .get("flush.ms")
                        .and_then(|v| v.parse::<i64>().ok())
                })
                .chain(scenario.cluster.flush_ms)
                .max();
            // The maintenance task checks the flush interval every 250 ms.
            let window = flush_ms.filter(|&ms| ms >= 0).map(|ms| ms as u64 + 500);
            allowances.lazy_flush_loss_on_power_loss = Some(LossAllowance {
                cause: format!("lazy flush (flush.ms={flush_ms:?})"),
                crashes_ms: crashes_ms.to_vec(),
                unsynced_window_ms: window,
            });
        }
    }
    if scenario.allows(AllowSpec::Duplicate) {
        let retrying: Vec<String> = producers
            .iter()
            .filter(|p| !p.idempotent && p.retries > 0)
            .map(|p| format!("{} (retries={})", p.topic, p.retries))
            .collect();
        if !retrying.is_empty() {
            allowances.duplicates_from_non_idempotent_retry = Some(Allowance {
                cause: format!("non-idempotent producers retry: {}", retrying.join(", ")),
            });
        }
    }
    allowances.offset_reuse_after_loss = offset_reuse_after_loss(scenario);
    allowances.compacted_topics = compacted_topics(scenario);
    let mut report = checker::check(history, &allowances);
    if scenario.allows(AllowSpec::LostWrite) && !bit_flips.is_empty() {
        use checker::AnomalyKind as K;
        // The cause found for the last partition looked at: anomalies come sorted by kind and
        // partition, and a bit flip at rest makes thousands in one partition.
        let mut last: Option<(String, i32, Option<String>)> = None;
        for anomaly in &mut report.anomalies {
            if !anomaly.is_violation()
                || !matches!(
                    anomaly.kind,
                    K::LostWrite | K::NeverSeen | K::SkippedOffset | K::SkippedByGroup
                )
            {
                continue;
            }
            let known = last
                .as_ref()
                .is_some_and(|(t, p, _)| *t == anomaly.topic && *p == anomaly.partition);
            if !known {
                let dir = format!("/{}-{}/", anomaly.topic, anomaly.partition);
                let cause =
                    bit_flips
                        .iter()
                        .find(|(_, path)| path.contains(&dir))
                        .map(|(at, path)| {
                            format!(
                                "bit flip at rest in {path} at {at} ms (no replica to repair from)"
                            )
                        });
                last = Some((anomaly.topic.clone(), anomaly.partition, cause));
            }
            if let Some((_, _, Some(cause))) = &last {
                anomaly.status = Status::Allowed {
                    cause: cause.clone(),
                };
            }
        }
        // A flipped bit in `__consumer_offsets` (any of its partitions) destroys the commits
        // stored there: a group may resume from an older one.
        let offsets_dir = format!("/{}-", broker::group::offsets::OFFSETS_TOPIC);
        for anomaly in &mut report.anomalies {
            if !anomaly.is_violation() || anomaly.kind != K::CommittedOffsetRegression {
                continue;
            }
            if let Some((at, path)) = bit_flips
                .iter()
                .find(|(_, path)| path.contains(&offsets_dir))
            {
                anomaly.status = Status::Allowed {
                    cause: format!(
                        "bit flip at rest in {path} at {at} ms (no replica to repair from)"
                    ),
                };
            }
        }
        report.violations = report.anomalies.iter().filter(|a| a.is_violation()).count();
        report.allowed = report.anomalies.len() - report.violations;
        report.verdict = if report.violations == 0 {
            checker::Verdict::Pass
        } else {
            checker::Verdict::Fail
        };
    }
    report
}
