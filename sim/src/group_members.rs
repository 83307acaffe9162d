//! Consumer-group members of a simulated workload.
//!
//! Each member subscribes to its topic with Faultline's own [`GroupConsumer`], polls, and
//! commits: after every poll that returned records (`commit = "sync"`) or by auto-commit. With
//! churn it leaves after a drawn time — closing (commit, LeaveGroup) or crashing (it vanishes;
//! the coordinator's session timeout hands its partitions on) — and a new member takes its
//! place under the same process. When the fault window ends every member closes.
//!
//! What goes into the history for the group checks:
//! - every commit with its outcome (auto-commits too, as the consumer reports them);
//! - an OffsetFetch of each partition when a member is assigned it: the committed offset the
//!   group holds then;
//! - per poll, one Poll op per assigned partition that returned records or whose position was
//!   known before the poll, under a consumer id that is new for every assignment (a "walk",
//!   see [`crate::walks`]; assignments are counted by the rebalance listener, since the
//!   member id and generation can read the same across one), so the poll checks see each walk
//!   as one consumer reading one stretch of the partition.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::admin::OffsetAndMetadata;
use client::{
    CommitError, CommitOutcome, ConsumerConfig, GroupConsumer, GroupConsumerConfig, OffsetReset,
    RebalanceListener,
};
use madsim::rand::Rng;

use crate::history::{OpKind, Outcome, Process};
use crate::random::Stream;
use crate::runner::{connect, Ctx};
use crate::scenario::{ChurnSpec, CommitSpec, ConsumerSpec, IsolationLevel};
use crate::trace::now_ms;
use crate::walks::{TopicPartition, Walks};

/// The consumer id of the runner's fetch of committed offsets after a group stayed empty for
/// the retention (expected to find none).
pub const EXPIRY_CHECKER: Process = crate::checker::FINAL_READER - 1;

/// How long one poll, commit or fetch may take before it counts as timed out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts the assignments a member receives (see [`crate::walks`]).
struct CountAssignments(Arc<AtomicU64>);

impl RebalanceListener for CountAssignments {
    fn on_partitions_assigned(&mut self, _partitions: &[(String, i32)]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A member process: joins, consumes and commits until the fault window ends, replaced by a
/// new member each time it churns out.
///
/// Churn draws from `rng`, this member's own stream: neither another process nor the fault plan
/// shifts when it leaves and how.
pub(crate) async fn member(ctx: Ctx, process: Process, spec: ConsumerSpec, mut rng: Stream) {
    let group = spec.group.clone().expect("a group member names its group");
    let mut incarnation = 0u32;
    while !ctx.stop.load(Ordering::SeqCst) {
        incarnation += 1;
        let who = format!("g{process}.{incarnation}");
        let (leave_at, crash) = {
            let leave_at = spec
                .churn_ms
                .map(|[lo, hi]| now_ms() + rng.gen_range(lo..=hi.max(lo)));
            let crash = match spec.churn {
                ChurnSpec::Close => false,
                ChurnSpec::Crash => true,
                ChurnSpec::Mixed => rng.gen_bool(0.5),
            };
            (leave_at, crash)
        };
        run_member(&ctx, &who, process, &spec, &group, leave_at, crash).await;
    }
}

async fn run_member(
    ctx: &Ctx,
    who: &str,
    process: Process,
    spec: &ConsumerSpec,
    group: &str,
    leave_at: Option<u64>,
    crash: bool,
) {
    let stop = Arc::clone(&ctx.stop);
    let Some(client) = connect(ctx, who, REQUEST_TIMEOUT, || stop.load(Ordering::SeqCst)).await
    else {
        return;
    };
    let session = Duration::from_millis(spec.session_timeout_ms);
    let mut config = GroupConsumerConfig::new(group);
    config.session_timeout = session;
    config.heartbeat_interval = (session / 3).max(Duration::from_millis(100));
    config.max_poll_interval = Duration::from_secs(30);
    config.enable_auto_commit = spec.commit == CommitSpec::Auto;
    config.auto_commit_interval = Duration::from_millis(spec.auto_commit_interval_ms);
    config.api_timeout = Duration::from_secs(5);
    config.fetch = ConsumerConfig {
        max_wait: Duration::from_millis(spec.max_wait_ms),
        auto_offset_reset: OffsetReset::Earliest,
        isolation_level: spec.isolation_level.client(),
        ..ConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client, config);
    consumer.subscribe([spec.topic.clone()]);
    ctx.trace.event(who, format!("joins group {group}"));

    // Assignments this member received: each one set its positions from the committed offsets.
    let assignments = Arc::new(AtomicU64::new(0));
    consumer.set_rebalance_listener(CountAssignments(Arc::clone(&assignments)));
    let mut walks = Walks::new();
    loop {
        if ctx.stop.load(Ordering::SeqCst) || leave_at.is_some_and(|at| now_ms() >= at) {
            break;
        }
        let before = consumer.positions();
        let invoke_ms = now_ms();
        let result = tokio::time::timeout(REQUEST_TIMEOUT * 2, consumer.poll()).await;
        for auto in consumer.take_auto_commits() {
            let offsets = auto.offsets.into_iter().collect();
            record_commit(ctx, who, process, group, offsets, invoke_ms, &auto.outcome);
        }
        let records = match result {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => {
                ctx.trace.event(who, format!("poll failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => {
                ctx.trace.event(who, "poll timed out");
                continue;
            }
        };
        let assignment = consumer.assignment();
        let mut by_partition: BTreeMap<TopicPartition, Vec<(i64, u64)>> = BTreeMap::new();
        for r in &records {
            by_partition
                .entry((r.topic.to_string(), r.partition))
                .or_default()
                .push((r.offset, crate::runner::record_value(r)));
        }
        let polls = walks.after_poll(
            assignments.load(Ordering::SeqCst),
            &assignment,
            &before,
            by_partition,
        );
        for poll in polls {
            let walk = match poll.walk {
                Some(walk) => walk,
                None => {
                    let walk = ctx.next_walk.fetch_sub(1, Ordering::SeqCst);
                    walks.begin(&poll.tp, walk);
                    let (topic, partition) = &poll.tp;
                    ctx.trace.event(
                        who,
                        format!("walk {walk}: {topic}-{partition} from {}", poll.from),
                    );
                    fetch_committed(ctx, who, walk, group, &consumer, &poll.tp).await;
                    walk
                }
            };
            record_poll(
                ctx,
                who,
                walk,
                group,
                &poll.tp,
                poll.from,
                invoke_ms,
                poll.records,
                spec.isolation_level,
            );
        }
        if spec.commit == CommitSpec::Sync && !records.is_empty() {
            let positions: BTreeMap<TopicPartition, i64> = consumer
                .positions()
                .into_iter()
                .filter(|(tp, _)| assignment.contains(tp))
                .collect();
            if spec.fetch_before_commit {
                for tp in positions.keys() {
                    fetch_committed(ctx, who, process, group, &consumer, tp).await;
                }
            }
            commit(ctx, who, process, group, &mut consumer, positions).await;
        }
    }

    if crash && !ctx.stop.load(Ordering::SeqCst) {
        ctx.trace.event(who, "crashes (no commit, no LeaveGroup)");
        drop(consumer);
        return;
    }
    ctx.inflight.fetch_add(1, Ordering::SeqCst);
    let invoke_ms = now_ms();
    match tokio::time::timeout(REQUEST_TIMEOUT * 4, consumer.close()).await {
        Ok(report) => {
            for auto in report.auto_commits {
                let offsets = auto.offsets.into_iter().collect();
                record_commit(ctx, who, process, group, offsets, invoke_ms, &auto.outcome);
            }
            ctx.trace
                .event(who, format!("closes (left group: {})", report.left_group));
        }
        Err(_) => ctx.trace.event(who, "close timed out"),
    }
    ctx.inflight.fetch_sub(1, Ordering::SeqCst);
}

#[allow(clippy::too_many_arguments)]
fn record_poll(
    ctx: &Ctx,
    who: &str,
    walk: Process,
    group: &str,
    tp: &TopicPartition,
    from: i64,
    invoke_ms: u64,
    records: Vec<(i64, u64)>,
    isolation: IsolationLevel,
) {
    {
        let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
        for &(offset, value) in &records {
            inv.claim(&tp.0, tp.1, offset, value, "read");
        }
    }
    let kind = OpKind::Poll {
        consumer: walk,
        topic: tp.0.clone(),
        partition: tp.1,
        from_offset: from,
        records: Vec::new(),
        group: Some(group.to_string()),
        isolation: isolation.history(),
        txn: None,
        bounds: None,
    };
    let id = ctx.recorder.invoke(kind, invoke_ms);
    if let (Some(first), Some(last)) = (records.first(), records.last()) {
        ctx.trace.event(
            who,
            format!(
                "poll #{id} {}-{} from {from}: {} records offsets {}..={}",
                tp.0,
                tp.1,
                records.len(),
                first.0,
                last.0
            ),
        );
    }
    ctx.recorder
        .complete(id, Outcome::Ok { offset: None }, Some(records), now_ms());
}

/// Reads the group's committed offset of `tp` (the offset a new owner resumes at).
async fn fetch_committed(
    ctx: &Ctx,
    who: &str,
    walk: Process,
    group: &str,
    consumer: &GroupConsumer,
    tp: &TopicPartition,
) {
    let kind = OpKind::FetchCommitted {
        consumer: walk,
        group: group.to_string(),
        topic: tp.0.clone(),
        partition: tp.1,
        offset: None,
    };
    let id = ctx.recorder.invoke(kind, now_ms());
    let result = tokio::time::timeout(REQUEST_TIMEOUT * 2, consumer.committed(&tp.0, tp.1)).await;
    let (outcome, offset) = match result {
        Ok(Ok(committed)) => (
            Outcome::Ok { offset: None },
            committed.map(|c: OffsetAndMetadata| c.offset),
        ),
        Ok(Err(e)) => (Outcome::fail(e.to_string(), None), None),
        Err(_) => (Outcome::unknown("fetch timed out".into(), None), None),
    };
    ctx.trace.event(
        who,
        format!(
            "fetch #{id} committed {}-{}: {outcome:?} {offset:?}",
            tp.0, tp.1
        ),
    );
    ctx.recorder.complete_fetch(id, outcome, offset, now_ms());
}

/// Commits `positions` (the next offsets to read) and records the outcome.
async fn commit(
    ctx: &Ctx,
    who: &str,
    process: Process,
    group: &str,
    consumer: &mut GroupConsumer,
    positions: BTreeMap<TopicPartition, i64>,
) {
    if positions.is_empty() {
        return;
    }
    let offsets: Vec<(String, i32, i64)> = positions
        .iter()
        .map(|((t, p), o)| (t.clone(), *p, *o))
        .collect();
    let kind = OpKind::Commit {
        consumer: process,
        group: group.to_string(),
        offsets,
    };
    let id = ctx.recorder.invoke(kind, now_ms());
    let shown = show(&positions);
    let request: BTreeMap<TopicPartition, OffsetAndMetadata> = positions
        .into_iter()
        .map(|(tp, offset)| {
            (
                tp,
                OffsetAndMetadata {
                    offset,
                    leader_epoch: None,
                    metadata: None,
                },
            )
        })
        .collect();
    let outcome =
        match tokio::time::timeout(REQUEST_TIMEOUT * 4, consumer.commit_offsets(request)).await {
            Ok(outcome) => to_outcome(&outcome),
            Err(_) => Outcome::unknown("commit timed out".into(), None),
        };
    ctx.trace
        .event(who, format!("commit #{id} {shown}: {outcome:?}"));
    ctx.recorder.complete(id, outcome, None, now_ms());
}

fn record_commit(
    ctx: &Ctx,
    who: &str,
    process: Process,
    group: &str,
    offsets: Vec<(TopicPartition, i64)>,
    invoke_ms: u64,
    outcome: &CommitOutcome,
) {
    // The consumer made it during the poll (or close) invoked at `invoke_ms`: recorded as
    // running from then until now, which is when it certainly ran.
    let shown = show(&offsets.iter().cloned().collect());
    let kind = OpKind::Commit {
        consumer: process,
        group: group.to_string(),
        offsets: offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect(),
    };
    let id = ctx.recorder.invoke(kind, invoke_ms);
    let outcome = to_outcome(outcome);
    ctx.trace
        .event(who, format!("auto-commit #{id} {shown}: {outcome:?}"));
    ctx.recorder.complete(id, outcome, None, now_ms());
}

/// `t-0@12 t-1@40`, for the trace.
fn show(offsets: &BTreeMap<TopicPartition, i64>) -> String {
    let shown: Vec<String> = offsets
        .iter()
        .map(|((t, p), o)| format!("{t}-{p}@{o}"))
        .collect();
    shown.join(" ")
}

fn to_outcome(outcome: &CommitOutcome) -> Outcome {
    match outcome {
        CommitOutcome::Committed => Outcome::Ok { offset: None },
        // Applied, and an earlier attempt may apply again at any later moment: for the checker
        // that is an indefinite commit.
        CommitOutcome::CommittedAfterAmbiguous { earlier } => Outcome::unknown(
            format!("committed by a retry after an ambiguous attempt ({earlier})"),
            earlier.code(),
        ),
        // Some partitions of a partly committed commit were applied: for the checker, the
        // commit as a whole may have been.
        CommitOutcome::Failed {
            error: error @ CommitError::PartlyCommitted { .. },
        } => Outcome::unknown(error.to_string(), error.code()),
        CommitOutcome::Failed { error } => Outcome::fail(error.to_string(), error.code()),
        CommitOutcome::Unknown { reason } => Outcome::unknown(reason.to_string(), reason.code()),
    }
}

/// Fetches (and records, as `consumer`) the committed offset of every partition of `topic` in
/// `group`, through the admin client, retrying until every partition was read once. Returns
/// (partition, offset).
pub(crate) async fn fetch_all_committed(
    ctx: Ctx,
    consumer: Process,
    group: String,
    topic: String,
    partitions: i32,
) -> Vec<(i32, Option<i64>)> {
    let who = if consumer == EXPIRY_CHECKER {
        "expiry-checker"
    } else {
        "final-reader"
    };
    let Some(client) = connect(&ctx, who, REQUEST_TIMEOUT, || false).await else {
        return Vec::new();
    };
    let admin = client::Admin::new(client);
    let wanted: Vec<TopicPartition> = (0..partitions).map(|p| (topic.clone(), p)).collect();
    for _attempt in 0..20 {
        let kinds: Vec<usize> = wanted
            .iter()
            .map(|(t, p)| {
                ctx.recorder.invoke(
                    OpKind::FetchCommitted {
                        consumer,
                        group: group.clone(),
                        topic: t.clone(),
                        partition: *p,
                        offset: None,
                    },
                    now_ms(),
                )
            })
            .collect();
        let result = tokio::time::timeout(
            REQUEST_TIMEOUT * 2,
            admin.list_group_offsets(&group, Some(&wanted)),
        )
        .await;
        match result {
            Ok(Ok(found)) => {
                let mut out = Vec::new();
                for (id, tp) in kinds.into_iter().zip(&wanted) {
                    let offset = found.get(tp).map(|c| c.offset).filter(|&o| o >= 0);
                    ctx.recorder
                        .complete_fetch(id, Outcome::Ok { offset: None }, offset, now_ms());
                    out.push((tp.1, offset));
                }
                ctx.trace.event(
                    who,
                    format!("committed offsets of group {group} on {topic}: {out:?}"),
                );
                return out;
            }
            Ok(Err(e)) => {
                for id in kinds {
                    ctx.recorder.complete_fetch(
                        id,
                        Outcome::fail(e.to_string(), None),
                        None,
                        now_ms(),
                    );
                }
                ctx.trace.event(who, format!("offset fetch failed: {e}"));
            }
            Err(_) => {
                for id in kinds {
                    ctx.recorder.complete_fetch(
                        id,
                        Outcome::unknown("timed out".into(), None),
                        None,
                        now_ms(),
                    );
                }
                ctx.trace.event(who, "offset fetch timed out");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Vec::new()
}

/// Waits until the coordinator describes `group` as Empty (or Dead: it forgot the group) and
/// returns the simulated ms it first did; `None` when it did not within `bound`. KIP-211 counts
/// the retention from that moment (the group's state timestamp), not from the last member's
/// last request: a member that crashed is still a member until its session times out.
pub(crate) async fn wait_until_empty(ctx: Ctx, group: String, bound: Duration) -> Option<u64> {
    let deadline = now_ms() + bound.as_millis() as u64;
    let client = connect(&ctx, "expiry-checker", REQUEST_TIMEOUT, || false).await?;
    let admin = client::Admin::new(client);
    let mut last_state = String::new();
    while now_ms() < deadline {
        let state =
            match tokio::time::timeout(REQUEST_TIMEOUT * 2, admin.describe_group(&group)).await {
                Ok(Ok(description)) => description.state,
                Ok(Err(e)) => format!("unknown ({e})"),
                Err(_) => "unknown (timed out)".to_string(),
            };
        if state == "Empty" || state == "Dead" {
            let at = now_ms();
            ctx.trace.event(
                "expiry-checker",
                format!("group {group} is {state} at {at} ms"),
            );
            return Some(at);
        }
        if state != last_state {
            ctx.trace
                .event("expiry-checker", format!("group {group} is {state}"));
            last_state = state;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}
