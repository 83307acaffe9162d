//! Setup: the brokers' configuration and disks from the scenario, the banner, the boot of the
//! cluster and the creation of the topics, before the fault window's clock starts.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::config::{BrokerConfig, FlushMode};
use chaos::FaultyDiskConfig;
use client::{Admin, CreateTopicError, NewTopic};

use super::invariants::Invariants;
use super::plan::FaultPlan;
use super::verdict::offset_reuse_after_loss;
use super::workload::{connect, Ctx};
use super::Run;
use crate::cluster::{BrokerSetup, Cluster, QuorumSetup};
use crate::history::Recorder;
use crate::scenario::{FlushModeSpec, Scenario};
use crate::trace::now_ms;

impl Run {
    pub(super) fn broker_config(&self) -> BrokerConfig {
        let c = &self.scenario.cluster;
        BrokerConfig {
            data_dir: "/faultline/data".into(),
            auto_create_topics: false,
            flush_mode: match c.flush_mode {
                FlushModeSpec::Durable => FlushMode::Durable,
                FlushModeSpec::Lazy => FlushMode::Lazy,
            },
            log_flush_interval_messages: c.flush_messages,
            log_flush_interval_ms: c.flush_ms,
            log_segment_bytes: c.segment_bytes.unwrap_or(64 * 1024),
            log_level: "warn".into(),
            // Groups form at once: the simulated members all start together anyway.
            group_initial_rebalance_delay_ms: 0,
            offsets_retention_minutes: c
                .offsets_retention_minutes
                .unwrap_or(BrokerConfig::default().offsets_retention_minutes),
            offsets_retention_check_interval_ms: c
                .offsets_retention_check_interval_ms
                .unwrap_or(BrokerConfig::default().offsets_retention_check_interval_ms),
            replica_lag_time_max_ms: c
                .replica_lag_time_max_ms
                .unwrap_or(BrokerConfig::default().replica_lag_time_max_ms),
            replica_fetch_max_bytes: c
                .replica_fetch_max_bytes
                .unwrap_or(BrokerConfig::default().replica_fetch_max_bytes),
            replica_fetch_response_max_bytes: c
                .replica_fetch_response_max_bytes
                .unwrap_or(BrokerConfig::default().replica_fetch_response_max_bytes),
            min_insync_replicas: c
                .min_insync_replicas
                .unwrap_or(BrokerConfig::default().min_insync_replicas),
            unclean_leader_election_enable: c.unclean_leader_election_enable,
            eligible_leader_replicas_enable: c.eligible_leader_replicas_enable,
            broker_session_timeout_ms: c
                .broker_session_timeout_ms
                .unwrap_or(BrokerConfig::default().broker_session_timeout_ms),
            broker_heartbeat_interval_ms: c
                .broker_heartbeat_interval_ms
                .unwrap_or(BrokerConfig::default().broker_heartbeat_interval_ms),
            log_cleaner_backoff_ms: c
                .log_cleaner_backoff_ms
                .unwrap_or(BrokerConfig::default().log_cleaner_backoff_ms),
            ..BrokerConfig::default()
        }
    }

    /// The metadata quorum of a cluster of more than one broker: the first `controllers` nodes
    /// vote. A single broker is its own quorum of one, as `faultline broker` runs it.
    pub(super) fn quorum_setup(&self) -> Option<QuorumSetup> {
        let c = &self.scenario.cluster;
        (c.brokers > 1).then(|| QuorumSetup {
            voters: (1..=c.voters()).collect(),
            snapshot_every: 64,
        })
    }

    fn disk_config(&self) -> FaultyDiskConfig {
        let d = &self.scenario.cluster.disk;
        FaultyDiskConfig {
            torn_writes: d.torn_writes,
            write_eio_rate: d.write_eio_rate,
            sync_eio_rate: d.sync_eio_rate,
            capacity_bytes: d.capacity_bytes,
            latency: d
                .latency_us
                .map(|[a, b]| (Duration::from_micros(a), Duration::from_micros(b.max(a)))),
            write_latency: None,
            write_latency_spares: None,
        }
    }

    /// Prints the banner: the scenario, the seed, every option it drew and the fault plan.
    pub(super) fn banner(&self, plan: &FaultPlan) {
        let s = &self.scenario;
        self.say(format!("scenario: {} ({})", s.name, self.file));
        if !s.description.is_empty() {
            self.say(format!("  {}", s.description));
        }
        self.say(format!("seed: {}", self.seed));
        self.say(format!(
            "cluster: {} broker(s) ({} voting), {} client node(s), flush={:?}, disk: torn={} latency={:?}us",
            s.cluster.brokers,
            s.cluster.voters(),
            s.cluster.clients,
            s.cluster.flush_mode,
            s.cluster.disk.torn_writes,
            s.cluster.disk.latency_us
        ));
        for p in &s.workload.producers {
            self.say(format!(
                "producers: {} x topic={} acks={} idempotent={} keys={} rate={}/s",
                p.count, p.topic, p.acks, p.idempotent, p.keys, p.rate
            ));
        }
        for c in &s.workload.consumers {
            self.say(format!("consumers: {} x topic={}", c.count, c.topic));
        }
        let allowed: Vec<String> = s.expect.allow.iter().map(|a| a.to_string()).collect();
        self.say(format!("allowed anomalies: [{}]", allowed.join(", ")));
        for (k, v) in &self.report_options {
            self.say(format!("option {k} = {v}"));
        }
        for p in &plan.faults {
            self.say(format!("planned: {p}"));
        }
    }

    /// Boots the brokers and client nodes and creates the topics.
    pub(super) async fn boot(&self, disk_seeds: &[u64]) -> (Cluster, Ctx) {
        let s = &self.scenario;
        let trace = self.trace.clone();
        let setups: Vec<BrokerSetup> = (1..=s.cluster.brokers)
            .map(|id| BrokerSetup {
                id,
                config: self.broker_config(),
                disk: self.disk_config(),
                disk_seed: disk_seeds[id as usize - 1],
                quorum: self.quorum_setup(),
            })
            .collect();
        let cluster = Cluster::boot(&setups, s.cluster.clients, trace.clone());
        // Room for what the producers' rates promise (a hint; nothing depends on it): a swarm
        // run records about 1.5 operations and 2.5 trace events per send.
        let sends = expected_sends(s);
        trace.reserve(sends * 5 / 2);
        let ctx = Ctx {
            recorder: Recorder::with_capacity(sends * 3 / 2),
            trace: trace.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            inflight: Arc::new(AtomicUsize::new(0)),
            next_value: Arc::new(AtomicU64::new(1)),
            invariants: Arc::new(Mutex::new(Invariants::new(
                offset_reuse_after_loss(s).is_some(),
            ))),
            bootstrap: cluster.bootstrap_servers().into(),
            seed: self.seed,
            next_walk: Arc::new(AtomicU32::new(crate::group_members::EXPIRY_CHECKER - 1)),
            creations: Arc::default(),
            holds: cluster.holds().clone(),
        };
        let setup = cluster.spawn_on_client(1, create_topics(ctx.clone(), s.clone()));
        if let Err(e) = setup.await {
            trace.event("runner", format!("topic setup task failed: {e}"));
        }
        (cluster, ctx)
    }
}

/// The sends the scenario's producers make at their rates over its duration, at most a
/// million (a capacity hint only).
fn expected_sends(s: &Scenario) -> usize {
    let per_second: f64 = s
        .workload
        .producers
        .iter()
        .map(|p| f64::from(p.count) * p.rate)
        .sum();
    let sends = per_second * s.duration_ms as f64 / 1000.0;
    if sends.is_finite() && sends > 0.0 {
        sends.min(1e6) as usize
    } else {
        0
    }
}

/// Creates the scenario's topics through the admin client.
async fn create_topics(ctx: Ctx, scenario: Scenario) {
    let deadline = now_ms() + 30_000;
    let Some(client) = connect(&ctx, "setup", Duration::from_secs(2), || {
        now_ms() > deadline
    })
    .await
    else {
        ctx.trace.event("setup", "gave up connecting");
        return;
    };
    let admin = Admin::new(client.clone());
    for t in &scenario.topics {
        let topic = NewTopic {
            name: t.name.clone(),
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        loop {
            match admin.create_topic(topic.clone()).await {
                Ok(()) | Err(CreateTopicError::AlreadyExists(_)) => break,
                Err(e) if now_ms() < deadline => {
                    ctx.trace
                        .event("setup", format!("create topic {}: {e}; retrying", t.name));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    ctx.trace
                        .event("setup", format!("create topic {}: {e}; giving up", t.name));
                    break;
                }
            }
        }
        ctx.trace.event(
            "setup",
            format!("topic {} ({} partitions) created", t.name, t.partitions),
        );
    }
}
