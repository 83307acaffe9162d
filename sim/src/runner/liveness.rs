//! Liveness and the final read. Safety first, then liveness (STYLE.md item 9): once healed,
//! every acknowledged record must become readable within `liveness-timeout-ms` (unless the
//! configuration allows its loss) and every partition readable to its high watermark. Then the
//! final read of every partition, recorded as the final reader's polls; every group's committed
//! offsets (and their expiry when expected); and the log-level density check.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use client::{Consumer, ConsumerConfig, OffsetReset, SeekTo};

use super::fault_window::FaultLog;
use super::invariants::{check_dense, check_online, check_replicas};
use super::report::{Anomaly, HarnessAnomalyKind};
use super::workload::{connect, poll_once, Ctx};
use super::Run;
use crate::checker::FINAL_READER;
use crate::cluster::Cluster;
use crate::history::{OpKind, Outcome};
use crate::scenario::{AllowSpec, Scenario};
use crate::trace::now_ms;

/// (offset, value, simulated ms) of one acknowledged record.
type OffsetValueAt = (i64, u64, u64);

impl Run {
    /// Waits until every acknowledged record is readable, or the liveness bound passes.
    pub(super) async fn liveness(
        &self,
        cluster: &Cluster,
        ctx: &Ctx,
        faults: &FaultLog,
    ) -> Vec<Anomaly> {
        let s = &self.scenario;
        let trace = &self.trace;
        let bit_flips = &faults.bit_flips;
        let mut anomalies = Vec::new();
        // Read in place: a copy of the whole history would only be thrown away.
        let (acked, compacted) = ctx.recorder.with(|history| {
            let acked: Vec<(String, i32, i64, u64, u64)> = history
                .sends()
                .filter_map(|op| match (&op.kind, &op.outcome) {
                    (
                        OpKind::Send {
                            topic,
                            partition,
                            value,
                            ..
                        },
                        Outcome::Ok { offset: Some(o) },
                    ) => Some((
                        topic.clone(),
                        *partition,
                        *o,
                        *value,
                        op.complete_ms.unwrap_or(0),
                    )),
                    _ => None,
                })
                .collect();
            (acked, Compacted::of(s, history))
        });
        let liveness_start = now_ms();
        let deadline = liveness_start + s.liveness_timeout_ms;
        let lost_allowed = s.allows(AllowSpec::LostWrite) || s.allows(AllowSpec::Unavailable);
        // Borrowed from `acked`: with a bit flip at rest thousands are missing.
        let mut missing: Vec<&(String, i32, i64, u64, u64)>;
        let mut unreadable: Vec<(String, i32, String)>;
        let mut passes = 0;
        loop {
            passes += 1;
            let read = cluster
                .spawn_on_client(1, read_all(ctx.clone(), s.clone(), false))
                .await
                .unwrap_or_default();
            check_online(cluster, &ctx.invariants, trace);
            unreadable = read.unreadable.clone();
            missing = acked
                .iter()
                .filter(|(t, p, o, v, _)| read.value_at(t, *p, *o) != Some(*v))
                .filter(|(t, p, o, v, _)| !compacted.cleaned_away(&read, t, *p, *o, *v))
                .collect();
            let stuck = unreadable.iter().any(|(t, p, _)| {
                let dir = format!("/{t}-{p}/");
                !(s.allows(AllowSpec::LostWrite)
                    && bit_flips.iter().any(|(_, path)| path.contains(&dir)))
            });
            let done = !stuck && (missing.is_empty() || lost_allowed);
            if done || now_ms() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        trace.event(
            "runner",
            format!(
                "liveness: {passes} read passes in {}ms, {} acknowledged missing, {} partitions unreadable",
                now_ms() - liveness_start,
                missing.len(),
                unreadable.len()
            ),
        );
        // A partition whose segment took a bit flip may stay stuck at the corrupt batch: the
        // broker must not serve it, and without a replica nothing can repair it.
        let flipped = |topic: &str, partition: i32| faults.flipped(topic, partition);
        for (topic, partition, why) in &unreadable {
            let flip = flipped(topic, *partition).filter(|_| s.allows(AllowSpec::LostWrite));
            let cause =
                flip.map(|(at, path)| format!(" (allowed: bit flip at rest in {path} at {at} ms)"));
            anomalies.push(Anomaly {
                kind: HarnessAnomalyKind::Unavailable,
                allowed: s.allows(AllowSpec::Unavailable) || cause.is_some(),
                description: format!(
                    "{topic}-{partition} not readable to its high watermark within {}ms after healing: {why}{}",
                    s.liveness_timeout_ms,
                    cause.unwrap_or_default()
                ),
                topic: Some(topic.clone()),
                partition: Some(*partition),
                offsets: vec![],
                values: vec![],
                at_ms: vec![deadline],
            });
        }
        let mut missing_by_partition: BTreeMap<(&str, i32), Vec<OffsetValueAt>> = BTreeMap::new();
        for (t, p, o, v, at) in missing {
            missing_by_partition
                .entry((t, *p))
                .or_default()
                .push((*o, *v, *at));
        }
        for ((topic, partition), records) in missing_by_partition {
            let shown: Vec<String> = records
                .iter()
                .take(8)
                .map(|(o, v, _)| format!("{v}@{o}"))
                .collect();
            anomalies.push(Anomaly {
                kind: HarnessAnomalyKind::Unavailable,
                allowed: lost_allowed,
                description: format!(
                    "{} acknowledged record(s) of {topic}-{partition} not readable after healing (value@offset: {}{})",
                    records.len(),
                    shown.join(", "),
                    if records.len() > 8 { ", ..." } else { "" }
                ),
                topic: Some(topic.to_string()),
                partition: Some(partition),
                offsets: records.iter().map(|r| r.0).collect(),
                values: records.iter().map(|r| r.1).collect(),
                at_ms: records.iter().map(|r| r.2).collect(),
            });
        }
        anomalies
    }

    /// The final read of every partition, recorded; every group's committed offsets; the
    /// log-level density check.
    pub(super) async fn final_read(
        &self,
        cluster: &Cluster,
        ctx: &Ctx,
        faults: &FaultLog,
    ) -> Vec<Anomaly> {
        let s = &self.scenario;
        let trace = &self.trace;
        let mut anomalies = Vec::new();
        let flipped = |topic: &str, partition: i32| faults.flipped(topic, partition);
        let partitions_of = |topic: &str| {
            s.topics
                .iter()
                .find(|t| t.name == topic)
                .map_or(1, |t| t.partitions)
        };
        let final_read = cluster
            .spawn_on_client(1, read_all(ctx.clone(), s.clone(), true))
            .await
            .unwrap_or_default();
        trace.event(
            "runner",
            format!(
                "final read: {} records, {} partitions unreadable",
                final_read.records(),
                final_read.unreadable.len()
            ),
        );
        // 6b. Every group's committed offsets, as the group checks' end point; with expiry
        // expected, once more after the group stayed empty for the retention.
        let groups: BTreeSet<(String, String)> = s
            .workload
            .consumers
            .iter()
            .filter_map(|c| c.group.clone().map(|g| (g, c.topic.clone())))
            // Consume-transform-produce: the groups whose offsets transactions commit.
            .chain(
                s.workload
                    .producers
                    .iter()
                    .filter_map(|p| p.input_group().zip(p.input.clone())),
            )
            .collect();
        for (group, topic) in &groups {
            let partitions = partitions_of(topic);
            let fetched = cluster
                .spawn_on_client(
                    1,
                    crate::group_members::fetch_all_committed(
                        ctx.clone(),
                        FINAL_READER,
                        group.clone(),
                        topic.clone(),
                        partitions,
                    ),
                )
                .await
                .unwrap_or_default();
            if !s.expect.offsets_expire {
                continue;
            }
            let retention_ms = self.broker_config().offsets_retention_minutes as u64 * 60_000;
            let interval_ms = self.broker_config().offsets_retention_check_interval_ms;
            // The retention runs from the moment the coordinator holds the group empty: a
            // member that crashed stays a member until its session times out.
            let session_ms = s
                .workload
                .consumers
                .iter()
                .filter(|c| c.group.as_ref() == Some(group))
                .map(|c| c.session_timeout_ms)
                .max()
                .unwrap_or(0);
            let bound = Duration::from_millis(session_ms + s.liveness_timeout_ms);
            let empty_at = cluster
                .spawn_on_client(
                    1,
                    crate::group_members::wait_until_empty(ctx.clone(), group.clone(), bound),
                )
                .await
                .unwrap_or_default();
            if empty_at.is_none() {
                anomalies.push(Anomaly {
                    kind: HarnessAnomalyKind::Unavailable,
                    allowed: s.allows(AllowSpec::Unavailable),
                    description: format!(
                        "group {group} was not empty {} ms after every member closed",
                        bound.as_millis()
                    ),
                    topic: Some(topic.clone()),
                    partition: None,
                    offsets: vec![],
                    values: vec![],
                    at_ms: vec![now_ms()],
                });
                continue;
            }
            tokio::time::sleep(Duration::from_millis(retention_ms + interval_ms + 1_000)).await;
            let after = cluster
                .spawn_on_client(
                    1,
                    crate::group_members::fetch_all_committed(
                        ctx.clone(),
                        crate::group_members::EXPIRY_CHECKER,
                        group.clone(),
                        topic.clone(),
                        partitions,
                    ),
                )
                .await
                .unwrap_or_default();
            let kept: Vec<(i32, i64)> = after
                .iter()
                .filter_map(|(p, o)| o.map(|o| (*p, o)))
                .collect();
            let had = fetched.iter().filter(|(_, o)| o.is_some()).count();
            trace.event(
                "runner",
                format!(
                    "group {group}: {had} committed offsets at the end, {} left after {retention_ms} ms empty",
                    kept.len()
                ),
            );
            if had == 0 || !kept.is_empty() {
                anomalies.push(Anomaly {
                    kind: HarnessAnomalyKind::Invariant,
                    allowed: false,
                    description: if had == 0 {
                        format!("group {group} had no committed offsets at the end of the run")
                    } else {
                        format!(
                            "group {group}: offsets did not expire after the group stayed empty for offsets.retention.minutes: {kept:?}"
                        )
                    },
                    topic: Some(topic.clone()),
                    partition: None,
                    offsets: kept.iter().map(|k| k.1).collect(),
                    values: Vec::new(),
                    at_ms: vec![now_ms()],
                });
            }
        }
        for id in cluster.broker_ids() {
            if let Some(broker) = cluster.broker(id) {
                for topic in broker.topics() {
                    for partition in &topic.partitions {
                        if let Some(mut a) =
                            check_dense(&partition.log, &topic.name, partition.index).await
                        {
                            // A corrupt batch reads as nothing: the walk stops there.
                            if let Some((at, path)) = flipped(&topic.name, partition.index)
                                .filter(|_| s.allows(AllowSpec::LostWrite))
                            {
                                a.allowed = true;
                                a.description.push_str(&format!(
                                    " (allowed: bit flip at rest in {path} at {at} ms)"
                                ));
                            }
                            anomalies.push(a);
                        }
                    }
                }
            }
        }
        check_online(cluster, &ctx.invariants, trace);
        for (topic, partition, kind, what) in
            check_replicas(cluster, trace, &compacted_topics(s)).await
        {
            // A replica whose segment took a bit flip holds a corrupt batch that ends its log
            // for reading: no replica repairs another's disk (neither does Kafka's).
            let flip = flipped(&topic, partition).filter(|_| s.allows(AllowSpec::LostWrite));
            anomalies.push(Anomaly {
                kind: HarnessAnomalyKind::Invariant,
                allowed: flip.is_some(),
                description: format!(
                    "replication invariant {}: {what}{}",
                    kind.name(),
                    flip.map_or(String::new(), |(at, path)| format!(
                        " (allowed: bit flip at rest in {path} at {at} ms)"
                    ))
                ),
                topic: Some(topic),
                partition: Some(partition),
                offsets: vec![],
                values: vec![],
                at_ms: vec![now_ms()],
            });
        }
        anomalies
    }
}

/// The names of the scenario's compacted topics.
fn compacted_topics(scenario: &Scenario) -> BTreeSet<String> {
    scenario
        .topics
        .iter()
        .filter(|t| scenario.compacted(&t.name))
        .map(|t| t.name.clone())
        .collect()
}

/// What liveness knows of the compacted topics' records: the cleaner may remove a record a
/// newer one of its key replaced, and a tombstone (the compaction checker judges both).
struct Compacted {
    topics: BTreeSet<String>,
    /// value → (key, tombstone) of every keyed send.
    keys: BTreeMap<u64, (u64, bool)>,
    /// (topic, partition, key) → the highest offset acknowledged for the key.
    latest_acked: BTreeMap<(String, i32, u64), i64>,
}

impl Compacted {
    fn of(scenario: &Scenario, history: &crate::history::History) -> Compacted {
        let topics = compacted_topics(scenario);
        let mut keys = BTreeMap::new();
        let mut latest_acked: BTreeMap<(String, i32, u64), i64> = BTreeMap::new();
        for op in history.sends() {
            let OpKind::Send {
                topic,
                partition,
                key: Some(key),
                value,
                ..
            } = &op.kind
            else {
                continue;
            };
            if !topics.contains(topic) {
                continue;
            }
            keys.insert(*value, (*key, history.tombstones.contains(value)));
            if let Outcome::Ok { offset: Some(o) } = op.outcome {
                let e = latest_acked
                    .entry((topic.clone(), *partition, *key))
                    .or_insert(o);
                *e = (*e).max(o);
            }
        }
        Compacted {
            topics,
            keys,
            latest_acked,
        }
    }

    /// Whether the acknowledged `value` at `offset`, missing from `read`, may have been
    /// cleaned away: a tombstone, or a record a newer one of its key (acknowledged, or in the
    /// read) replaced.
    fn cleaned_away(
        &self,
        read: &ReadAll,
        topic: &str,
        partition: i32,
        offset: i64,
        value: u64,
    ) -> bool {
        if !self.topics.contains(topic) {
            return false;
        }
        let Some(&(key, tombstone)) = self.keys.get(&value) else {
            return false;
        };
        tombstone
            || self
                .latest_acked
                .get(&(topic.to_string(), partition, key))
                .is_some_and(|&latest| latest > offset)
            || read
                .values_after(topic, partition, offset)
                .any(|v| self.keys.get(v).is_some_and(|&(k, _)| k == key))
    }
}

/// What a read of every partition found.
#[derive(Clone, Debug, Default)]
struct ReadAll {
    /// topic -> partition -> offset -> value: looked up by a borrowed topic name, once per
    /// acknowledged send, and filled without a name per record read.
    values: BTreeMap<String, BTreeMap<i32, BTreeMap<i64, u64>>>,
    /// (topic, partition or -1 for all, why).
    unreadable: Vec<(String, i32, String)>,
}

impl ReadAll {
    fn partition(&self, topic: &str, partition: i32) -> Option<&BTreeMap<i64, u64>> {
        self.values.get(topic)?.get(&partition)
    }

    /// The value read at `offset` of `topic`-`partition`.
    fn value_at(&self, topic: &str, partition: i32, offset: i64) -> Option<u64> {
        self.partition(topic, partition)?.get(&offset).copied()
    }

    /// The values read above `offset` in `topic`-`partition`, in offset order.
    fn values_after(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> impl Iterator<Item = &u64> + '_ {
        self.partition(topic, partition)
            .into_iter()
            .flat_map(move |values| values.range(offset + 1..).map(|(_, v)| v))
    }

    /// How many records the read returned.
    fn records(&self) -> usize {
        self.values
            .values()
            .flat_map(|partitions| partitions.values())
            .map(BTreeMap::len)
            .sum()
    }
}

/// Reads every partition from its log start to its high watermark. With `record`, the polls go
/// into the history as the final reader's.
async fn read_all(ctx: Ctx, scenario: Scenario, record: bool) -> ReadAll {
    let who = if record { "final-reader" } else { "liveness" };
    let request_timeout = Duration::from_secs(2);
    let mut out = ReadAll::default();
    let deadline = now_ms() + 5_000;
    let Some(client) = connect(&ctx, who, request_timeout, || now_ms() > deadline).await else {
        out.unreadable
            .push(("*".into(), -1, "cannot connect to the cluster".into()));
        return out;
    };
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(5),
        auto_offset_reset: OffsetReset::None,
        ..ConsumerConfig::default()
    };
    for t in &scenario.topics {
        for p in 0..t.partitions {
            let mut consumer = Consumer::new(client.clone(), config.clone());
            consumer.assign([(t.name.clone(), p)]);
            let mut position = None;
            for _ in 0..5 {
                match tokio::time::timeout(
                    request_timeout * 2,
                    consumer.seek(&t.name, p, SeekTo::Earliest),
                )
                .await
                {
                    Ok(Ok(pos)) => {
                        position = Some(pos);
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let Some(mut from) = position else {
                out.unreadable
                    .push((t.name.clone(), p, "cannot find the log start".into()));
                continue;
            };
            let mut stalls = 0;
            loop {
                let records = if record {
                    poll_once(
                        &ctx,
                        who,
                        FINAL_READER,
                        &mut consumer,
                        &t.name,
                        p,
                        from,
                        request_timeout,
                    )
                    .await
                } else {
                    match tokio::time::timeout(request_timeout * 2, consumer.poll()).await {
                        Ok(Ok(rs)) => Some(
                            rs.iter()
                                .map(|r| (r.offset, crate::runner::record_value(r)))
                                .collect(),
                        ),
                        _ => None,
                    }
                };
                let Some(records) = records else {
                    stalls += 1;
                    if stalls > 5 {
                        out.unreadable.push((
                            t.name.clone(),
                            p,
                            format!("polls fail at offset {from}"),
                        ));
                        break;
                    }
                    continue;
                };
                if !record {
                    let mut inv = ctx.invariants.lock().unwrap_or_else(|e| e.into_inner());
                    for &(offset, value) in &records {
                        inv.claim(&t.name, p, offset, value, "read");
                    }
                }
                if !records.is_empty() {
                    let values = out
                        .values
                        .entry(t.name.clone())
                        .or_default()
                        .entry(p)
                        .or_default();
                    values.extend(records);
                }
                let now_at = consumer.position(&t.name, p).unwrap_or(from);
                let hw = consumer.high_watermark(&t.name, p);
                if hw.is_some_and(|hw| now_at >= hw) {
                    break;
                }
                if now_at == from {
                    stalls += 1;
                    if stalls > 20 {
                        out.unreadable.push((
                            t.name.clone(),
                            p,
                            format!("no progress at offset {from} (high watermark {hw:?})"),
                        ));
                        break;
                    }
                } else {
                    stalls = 0;
                }
                from = now_at;
            }
        }
    }
    ctx.trace.event(
        who,
        format!(
            "read {} records, {} partitions unreadable",
            out.records(),
            out.unreadable.len()
        ),
    );
    out
}
