#![cfg(not(madsim))]
//! A topic config change that fails must leave nothing changed. The bug: IncrementalAlterConfigs
//! applied the new configs to the logs and the catalog, then failed to store them (a full or
//! failing disk): the broker answered with an error but ran with the new configs until a
//! restart silently brought the old ones back. The metadata now lives in the metadata log: a
//! change it cannot store is not committed and nothing follows it; the node, whose metadata
//! replica stops at a storage error (as Kafka's does), comes back whole once restarted.

use std::sync::Arc;

use broker::broker::{AdminError, Broker};
use broker::clock::SystemClock;
use broker::config::{BrokerConfig, TopicConfigs};
use broker::controller::request::ControllerError;
use chaos::{FaultyDisk, FaultyDiskConfig};

/// Where a node alone keeps its metadata log.
const METADATA_STORE: &str = "/data/__cluster_metadata-0";

async fn open(disk: &FaultyDisk) -> Arc<Broker> {
    let config = BrokerConfig {
        data_dir: "/data".into(),
        // The quorum stopped at the storage error: the controlled shutdown cannot complete.
        shutdown_timeout_ms: 300,
        ..BrokerConfig::default()
    };
    Broker::open(config, Arc::new(disk.clone()), Arc::new(SystemClock))
        .await
        .unwrap()
}

/// The disk works again; the node restarts.
async fn heal_and_restart(disk: &FaultyDisk, broker: Arc<Broker>) -> Arc<Broker> {
    disk.heal_io_under(std::path::Path::new(METADATA_STORE));
    broker.shutdown().await;
    drop(broker);
    open(disk).await
}

#[tokio::test]
async fn a_config_change_whose_metadata_cannot_be_stored_is_rolled_back_in_memory() {
    let disk = FaultyDisk::new(1, FaultyDiskConfig::default());
    let broker = open(&disk).await;
    let retention = |ms: &str| (String::from("retention.ms"), ms.to_string());
    broker
        .create_topic("t", 2, -1, &[retention("60000")], false)
        .await
        .unwrap();

    disk.fail_io_under(METADATA_STORE);
    let mut changed = TopicConfigs::default();
    changed.set("retention.ms", "1000").unwrap();
    changed.set("segment.bytes", "1048576").unwrap();
    let refused = broker.set_topic_configs("t", changed, false).await;
    assert!(
        matches!(
            refused,
            Err(AdminError::Controller(ControllerError::Unavailable(_)))
        ),
        "{refused:?}"
    );

    let topic = broker.topic("t").unwrap();
    assert_eq!(
        topic
            .configs
            .overrides
            .get("retention.ms")
            .map(String::as_str),
        Some("60000")
    );
    assert!(!topic.configs.overrides.contains_key("segment.bytes"));
    for partition in &topic.partitions {
        let log = partition.log.config();
        assert_eq!(log.retention_ms, Some(60_000));
        assert_eq!(log.segment_bytes, BrokerConfig::default().log_segment_bytes);
    }

    // Once the disk works again the same change applies whole.
    let broker = heal_and_restart(&disk, broker).await;
    assert_eq!(
        broker.topic("t").unwrap().partitions[0]
            .log
            .config()
            .retention_ms,
        Some(60_000)
    );
    let mut changed = TopicConfigs::default();
    changed.set("retention.ms", "1000").unwrap();
    broker.set_topic_configs("t", changed, false).await.unwrap();
    assert_eq!(
        broker.topic("t").unwrap().partitions[0]
            .log
            .config()
            .retention_ms,
        Some(1000)
    );
}

#[tokio::test]
async fn a_topic_whose_creation_fails_leaves_no_partition_behind() {
    let disk = FaultyDisk::new(2, FaultyDiskConfig::default());
    let broker = open(&disk).await;
    disk.fail_io_under(METADATA_STORE);
    let configs = [(String::from("retention.ms"), String::from("1000"))];
    assert!(broker
        .create_topic("x", 3, -1, &configs, false)
        .await
        .is_err());
    assert!(broker.topic("x").is_none());
    let dirs = broker::disk::Disk::list(&disk, std::path::Path::new("/data"))
        .await
        .unwrap();
    assert!(
        !dirs.iter().any(|d| d.starts_with("x-")),
        "left behind: {dirs:?}"
    );
    let broker = heal_and_restart(&disk, broker).await;
    assert!(broker.topic("x").is_none());
    let created = broker
        .create_topic("x", 3, -1, &configs, false)
        .await
        .unwrap();
    assert_eq!(created.partitions.len(), 3);
}

#[tokio::test]
async fn a_broker_whose_metadata_log_fails_stops_serving_and_halts_with_the_reason() {
    // The bug: the metadata replica stopped on the storage error and `faultline broker` served
    // on from an image that never moved again, until someone noticed and restarted it. Kafka
    // halts the node; `faultline broker` exits with code 1 when this returns the reason.
    let disk = FaultyDisk::new(3, FaultyDiskConfig::default());
    let broker = open(&disk).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move {
            cli::run_broker::serve_until_halted(&broker, listener, std::future::pending()).await
        }
    });
    disk.fail_io_under(METADATA_STORE);
    assert!(broker
        .create_topic("never", 1, -1, &[], false)
        .await
        .is_err());
    let halted = tokio::time::timeout(std::time::Duration::from_secs(20), serving)
        .await
        .expect("the broker halts")
        .unwrap();
    let reason = halted.expect_err("serving ends with a halt, not a shutdown");
    assert!(reason.contains("the metadata log failed"), "{reason}");
    // Restarted once the disk works, it recovers and the topic it never acknowledged is absent.
    let broker = heal_and_restart(&disk, broker).await;
    assert!(broker.topic("never").is_none());
}
