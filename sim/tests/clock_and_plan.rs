//! The run's random streams and the brokers' own clocks.
//!
//! The bug stories: a seed is a bug report only while it means the same faults, so a fault plan
//! must not move when someone adds a producer to a scenario; and replication's leases and
//! timeouts will read each broker's wall clock, so the nemesis must be able to skew one
//! broker's clock without touching the others'.
#![cfg(madsim)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use broker::broker::Broker;
use broker::clock::{Clock, SystemClock};
use broker::config::BrokerConfig;
use chaos::nemesis::{Applied, Fault, Nemesis, Node};
use chaos::FaultyDiskConfig;
use client::records::{encode_batch, ProducerIdentity, Record};
use sim::cluster::{BrokerSetup, Cluster};
use sim::runner::plan::{disk_seeds, plan};
use sim::scenario::Scenario;
use sim::trace::Trace;

fn scenario(name: &str) -> Scenario {
    let file = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::load(Path::new(&file)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_seeds_fault_plan_is_the_same_when_a_producer_or_a_consumer_is_added() {
    for name in ["swarm", "group-swarm", "network-split", "acks-1-crashes"] {
        let base = scenario(name);
        let mut more = base.clone();
        let mut extra = more.workload.producers[0].clone();
        extra.count += 1;
        more.workload.producers.insert(0, extra);
        if let Some(c) = more.workload.consumers.first().cloned() {
            more.workload.consumers.push(c);
        }
        for seed in 1..30 {
            let before = plan(&base, seed);
            let after = plan(&more, seed);
            let show = |p: &sim::runner::FaultPlan| -> Vec<String> {
                p.faults.iter().map(|f| f.to_string()).collect()
            };
            assert_eq!(show(&before), show(&after), "{name} seed {seed}");
            assert_eq!(before, after, "{name} seed {seed}");
            assert_eq!(disk_seeds(&base, seed), disk_seeds(&more, seed));
        }
        // The plan is not constant: different seeds give different plans.
        if base.swarm.is_some() {
            assert_ne!(plan(&base, 1), plan(&base, 2), "{name}");
        }
    }
}

/// Appends one record to `topic`-0 of `broker` and returns the LogAppendTime it was stamped
/// with.
async fn log_append_time(broker: &Broker) -> i64 {
    let partition = broker.partition("clocks", 0).expect("the topic exists");
    let record = Record {
        key: None,
        value: Some("tick".into()),
        headers: Vec::new(),
        timestamp_ms: 0,
    };
    let mut bytes = encode_batch(&[record], ProducerIdentity::NONE);
    let info = partition.append(&mut bytes).await.expect("append");
    info.log_append_time_ms
        .expect("the topic uses LogAppendTime")
}

#[test]
fn a_skewed_brokers_clock_stamps_its_records_while_the_other_brokers_keep_true_time() {
    let mut runtime = madsim::runtime::Runtime::with_seed_and_config(7, madsim::Config::default());
    runtime.set_time_limit(Duration::from_secs(600));
    runtime.block_on(async {
        let setups: Vec<BrokerSetup> = (1..=2)
            .map(|id| BrokerSetup {
                id,
                config: BrokerConfig {
                    data_dir: "/faultline/data".into(),
                    auto_create_topics: false,
                    ..BrokerConfig::default()
                },
                disk: FaultyDiskConfig::default(),
                disk_seed: u64::from(id),
                // Two brokers on their own, each its own quorum of one: the test reads each one's clock.
                quorum: None,
            })
            .collect();
        let mut cluster = Cluster::boot(&setups, 1, Trace::new());
        let brokers = loop {
            if let (Some(a), Some(b)) = (cluster.broker(1), cluster.broker(2)) {
                break [a, b];
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let configs = [(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        )];
        for broker in &brokers {
            broker
                .create_topic("clocks", 1, -1, &configs, false)
                .await
                .expect("create the topic");
        }

        let hour_ms = 3_600_000;
        let mut nemesis = Nemesis::new();
        let skew = Fault::ClockSkew {
            node: Node::Broker(1),
            offset_ms: hour_ms,
        };
        assert_eq!(
            nemesis.apply(&skew, &mut cluster),
            Applied::Done(String::new())
        );
        let truth = SystemClock.now_ms();
        let skewed = log_append_time(&brokers[0]).await;
        let straight = log_append_time(&brokers[1]).await;
        // Simulated time does not move between these reads (no await sleeps), give or take the
        // disk's latency: far below the hour of skew.
        assert!(
            (skewed - truth - hour_ms).abs() < 1_000,
            "{skewed} vs {truth}"
        );
        assert!((straight - truth).abs() < 1_000, "{straight} vs {truth}");
        assert!((brokers[0].clock().now_ms() - truth - hour_ms).abs() < 1_000);

        // The skew outlives a restart (the clock is the machine's, not the process's)...
        assert!(matches!(
            nemesis.apply(&Fault::Restart(Node::Broker(1)), &mut cluster),
            Applied::Done(_)
        ));
        let restarted = loop {
            match cluster.broker(1) {
                Some(b) if !Arc::ptr_eq(&b, &brokers[0]) => break b,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert!((restarted.clock().now_ms() - SystemClock.now_ms() - hour_ms).abs() < 1_000);
        // ... and heal puts it back on true time.
        let healed = nemesis.apply(&Fault::Heal, &mut cluster);
        assert!(
            matches!(&healed, Applied::Done(how) if how.contains("reset the clock of broker-1")),
            "{healed:?}"
        );
        let truth = SystemClock.now_ms();
        assert!((log_append_time(&restarted).await - truth).abs() < 1_000);
    });
}
