//! The broker runs from the cluster image: two brokers in one process share one in-memory
//! metadata plane (a `SoloPlane` without a disk, which decides and applies every request at
//! once), so routing between brokers, admin through any broker and controlled shutdown are
//! tested without a network; and a single broker's data directory is imported once.
#![cfg(not(madsim))]

mod in_process;

use std::path::Path;
use std::sync::Arc;

use broker::broker::{Broker, PlaneContext, PlaneFuture, StartedPlane};
use broker::clock::ManualClock;
use broker::config::BrokerConfig;
use broker::controller::decide::ControllerSettings;
use broker::controller::plane::MetadataPlane;
use broker::controller::NO_NODE;
use broker::disk::{self, Disk, FileDisk};
use broker::log::batch::builder;
use broker::solo_plane::SoloPlane;
use bytes::Bytes;
use in_process::call;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteTopicsRequest, DeleteTopicsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const T0: i64 = 1_700_000_000_000;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const LEADER_NOT_AVAILABLE: i16 = 5;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    brokers: Vec<Arc<Broker>>,
}

impl Cluster {
    /// Brokers 1 and 2 on one plane. The clock stands still, so no session expires.
    async fn of_two() -> Cluster {
        let clock = Arc::new(ManualClock::new(T0));
        let plane = SoloPlane::open(1, ControllerSettings::default(), clock.clone(), None, None)
            .await
            .unwrap();
        let mut dirs = Vec::new();
        let mut brokers = Vec::new();
        for (node_id, port) in [(1, 19092), (2, 29092)] {
            let dir = tempfile::tempdir().unwrap();
            let config = BrokerConfig {
                node_id,
                listen: format!("127.0.0.1:{port}"),
                data_dir: dir.path().to_path_buf(),
                // These brokers serve no TCP, so followers could not fetch: one replica of
                // `__consumer_offsets` keeps commits from waiting on replicas that never come.
                offsets_topic_replication_factor: 1,
                ..BrokerConfig::default()
            };
            let plane = Arc::clone(&plane);
            let broker = Broker::open_with_plane(
                config,
                Arc::new(FileDisk::new()),
                clock.clone(),
                Box::new(move |_: PlaneContext| -> PlaneFuture {
                    Box::pin(async move {
                        Ok(StartedPlane {
                            plane: plane as Arc<dyn MetadataPlane>,
                            controller_endpoint: None,
                            stop: None,
                        })
                    })
                }),
            )
            .await
            .unwrap();
            dirs.push(dir);
            brokers.push(broker);
        }
        Cluster {
            _dirs: dirs,
            brokers,
        }
    }

    fn broker(&self, id: i32) -> &Arc<Broker> {
        &self.brokers[(id - 1) as usize]
    }

    /// Every broker applies the plane's latest image (what their follower tasks do by
    /// themselves, soon).
    async fn catch_up(&self) {
        for broker in &self.brokers {
            broker.catch_up().await.unwrap();
        }
    }
}

/// Creates `t` with two partitions through broker 1; returns the index broker 2 leads.
async fn topic_over_both(cluster: &Cluster) -> i32 {
    cluster
        .broker(1)
        .create_topic("t", 2, -1, &[], false)
        .await
        .unwrap();
    cluster.catch_up().await;
    let image = cluster.broker(1).image();
    let leaders: Vec<i32> = image
        .topic("t")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.leader)
        .collect();
    let mut sorted = leaders.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![1, 2],
        "placement spreads partitions over both brokers"
    );
    leaders.iter().position(|&l| l == 2).unwrap() as i32
}

fn produce_to(partition: i32) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(builder::simple(1, 10, b'v', T0))))])])
}

/// A fetch of `t` by its topic id (Fetch v13+).
fn fetch_from(topic_id: uuid::Uuid, partition: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_partition_max_bytes(1 << 20)])])
}

#[tokio::test]
async fn a_partition_another_broker_leads_answers_not_leader_with_that_leader_and_its_endpoint() {
    let cluster = Cluster::of_two().await;
    let theirs = topic_over_both(&cluster).await;
    let ours = 1 - theirs;
    let one = cluster.broker(1);

    let produced: ProduceResponse = call(one, ApiKey::Produce, 10, &produce_to(theirs)).await;
    let p = &produced.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id, BrokerId(2));
    assert_eq!(p.current_leader.leader_epoch, 0);
    assert_eq!(produced.node_endpoints.len(), 1);
    assert_eq!(produced.node_endpoints[0].node_id, BrokerId(2));
    assert_eq!(produced.node_endpoints[0].port, 29092);

    let id = one.image().topic("t").unwrap().id;
    let fetched: FetchResponse = call(one, ApiKey::Fetch, 16, &fetch_from(id, theirs)).await;
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id, BrokerId(2));
    assert_eq!(fetched.node_endpoints[0].node_id, BrokerId(2));

    let listed: ListOffsetsResponse = call(
        one,
        ApiKey::ListOffsets,
        7,
        &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(theirs)
                .with_timestamp(-1)])]),
    )
    .await;
    assert_eq!(
        listed.topics[0].partitions[0].error_code,
        NOT_LEADER_OR_FOLLOWER
    );

    // Each broker serves what it leads.
    let produced: ProduceResponse = call(one, ApiKey::Produce, 10, &produce_to(ours)).await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let produced: ProduceResponse =
        call(cluster.broker(2), ApiKey::Produce, 10, &produce_to(theirs)).await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
}

#[tokio::test]
async fn metadata_from_any_broker_lists_both_brokers_and_every_partitions_leader() {
    let cluster = Cluster::of_two().await;
    let theirs = topic_over_both(&cluster).await;
    let metadata: MetadataResponse = call(
        cluster.broker(2),
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    let mut brokers: Vec<(i32, i32)> = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.port))
        .collect();
    brokers.sort();
    assert_eq!(brokers, vec![(1, 19092), (2, 29092)]);
    assert_eq!(metadata.controller_id, BrokerId(1));
    let topic = &metadata.topics[0];
    for p in &topic.partitions {
        let expected = if p.partition_index == theirs { 2 } else { 1 };
        assert_eq!(p.leader_id, BrokerId(expected));
        assert_eq!(p.replica_nodes, vec![BrokerId(expected)]);
        assert_eq!(p.isr_nodes, vec![BrokerId(expected)]);
        assert_eq!(p.error_code, 0);
    }
}

#[tokio::test]
async fn a_partition_whose_only_replica_shut_down_answers_leader_not_available() {
    let cluster = Cluster::of_two().await;
    let theirs = topic_over_both(&cluster).await;
    // Controlled shutdown: broker 2 leads nothing once it is done.
    cluster.broker(2).shutdown().await;
    cluster.broker(1).catch_up().await.unwrap();
    let image = cluster.broker(1).image();
    assert_eq!(image.partition("t", theirs).unwrap().leader, NO_NODE);

    let one = cluster.broker(1);
    let produced: ProduceResponse = call(one, ApiKey::Produce, 10, &produce_to(theirs)).await;
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code,
        LEADER_NOT_AVAILABLE
    );
    let metadata: MetadataResponse = call(
        one,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    assert_eq!(metadata.brokers.len(), 1, "a fenced broker is listed");
    let p = metadata.topics[0]
        .partitions
        .iter()
        .find(|p| p.partition_index == theirs)
        .unwrap();
    assert_eq!(p.error_code, LEADER_NOT_AVAILABLE);
    assert_eq!(p.leader_id, BrokerId(NO_NODE));
    assert_eq!(p.offline_replicas, vec![BrokerId(2)]);
}

#[tokio::test]
async fn a_topic_deleted_through_one_broker_is_removed_from_every_broker() {
    let cluster = Cluster::of_two().await;
    let theirs = topic_over_both(&cluster).await;
    let on_two = cluster.broker(2).partition("t", theirs).unwrap();
    let deleted: DeleteTopicsResponse = call(
        cluster.broker(1),
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(StrBytes::from_static_str("t"))]),
    )
    .await;
    assert_eq!(deleted.responses[0].error_code, 0);
    cluster.catch_up().await;
    for broker in &cluster.brokers {
        assert!(broker.topic("t").is_none());
        let dirs = FileDisk::new().list(broker.data_dir()).await.unwrap();
        assert!(
            dirs.iter().all(|d| !d.starts_with("t-")),
            "left behind: {dirs:?}"
        );
    }
    assert!(on_two.log.is_offline());
}

#[tokio::test]
async fn producer_ids_from_two_brokers_never_collide() {
    let cluster = Cluster::of_two().await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        for broker in &cluster.brokers {
            let id = broker.allocate_producer_id().await.unwrap();
            assert!(seen.insert(id), "producer id {id} handed out twice");
        }
    }
}

/// Writes what a single broker (before the cluster) left: `meta.toml`, a partition directory
/// with one batch, and its producer-id reservation.
async fn legacy_data_dir(dir: &Path, topic_id: uuid::Uuid) {
    let meta = format!(
        "format_version = 1\ncluster_id = \"legacy-cluster\"\n\n[topics.old]\nid = \"{topic_id}\"\npartitions = 2\n\n[topics.old.configs]\n\"retention.ms\" = \"86400000\"\n"
    );
    let disk = FileDisk::new();
    disk::write_file_atomic(&disk, &dir.join("meta.toml"), meta.as_bytes())
        .await
        .unwrap();
    disk::write_file_atomic(
        &disk,
        &dir.join("producer-ids"),
        b"faultline-producer-ids v1 3000\n",
    )
    .await
    .unwrap();
    let log = broker::log::Log::open(
        Arc::new(FileDisk::new()),
        Arc::new(ManualClock::new(T0)),
        dir.join("old-0"),
        broker::log::LogConfig::default(),
    )
    .await
    .unwrap();
    log.append(&mut builder::simple(3, 10, b'o', T0), 0)
        .await
        .unwrap();
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_single_brokers_data_directory_is_imported_once_keeping_ids_configs_records_and_producer_ids(
) {
    let dir = tempfile::tempdir().unwrap();
    let topic_id = uuid::Uuid::from_u128(0xfeed);
    legacy_data_dir(dir.path(), topic_id).await;
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    for start in 0..2 {
        let broker = Broker::open(
            config.clone(),
            Arc::new(FileDisk::new()),
            Arc::new(ManualClock::new(T0)),
        )
        .await
        .unwrap();
        assert_eq!(broker.cluster_id(), "legacy-cluster", "start {start}");
        let topic = broker.topic("old").unwrap();
        assert_eq!(topic.id, topic_id);
        assert_eq!(topic.partitions.len(), 2);
        assert_eq!(
            topic
                .configs
                .overrides
                .get("retention.ms")
                .map(String::as_str),
            Some("86400000")
        );
        assert_eq!(broker.partition("old", 0).unwrap().log.log_end_offset(), 3);
        assert!(
            broker.allocate_producer_id().await.unwrap() >= 3000,
            "a producer id the single broker may have handed out is handed out again"
        );
        assert!(!dir.path().join("meta.toml").exists());
        assert!(dir.path().join("meta.toml.imported").exists());
        assert_eq!(broker.image().topics.len(), 1, "imported twice");
        broker.shutdown().await;
    }
}

/// A plane that refuses this node's first registrations with `refusal`, then passes every
/// request on to `inner`; it counts the registrations it saw.
struct RefusingRegistrations {
    inner: Arc<SoloPlane>,
    refusals_left: std::sync::Mutex<usize>,
    refusal: broker::controller::request::ControllerError,
    registrations: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl MetadataPlane for RefusingRegistrations {
    fn image(&self) -> Arc<broker::controller::image::ClusterImage> {
        self.inner.image()
    }

    async fn wait_past(&self, offset: i64) {
        self.inner.wait_past(offset).await
    }

    async fn submit(
        &self,
        request: broker::controller::request::ControllerRequest,
    ) -> Result<
        broker::controller::request::ControllerReply,
        broker::controller::request::ControllerError,
    > {
        if matches!(
            request,
            broker::controller::request::ControllerRequest::RegisterBroker { .. }
        ) {
            self.registrations
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut left = self.refusals_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(self.refusal.clone());
            }
        }
        self.inner.submit(request).await
    }

    fn quorum_status(&self) -> broker::controller::plane::QuorumStatus {
        self.inner.quorum_status()
    }
}

/// Opens broker 1 on `plane`, counting the plane's stops.
async fn open_on(
    plane: Arc<RefusingRegistrations>,
    clock: Arc<ManualClock>,
    dir: &Path,
    stops: Arc<std::sync::atomic::AtomicUsize>,
) -> std::io::Result<Arc<Broker>> {
    let config = BrokerConfig {
        node_id: 1,
        listen: "127.0.0.1:19092".into(),
        data_dir: dir.to_path_buf(),
        broker_heartbeat_interval_ms: 10,
        ..BrokerConfig::default()
    };
    Broker::open_with_plane(
        config,
        Arc::new(FileDisk::new()),
        clock,
        Box::new(move |_: PlaneContext| -> PlaneFuture {
            Box::pin(async move {
                Ok(StartedPlane {
                    plane: plane as Arc<dyn MetadataPlane>,
                    controller_endpoint: None,
                    stop: Some(Box::new(move || {
                        Box::pin(async move {
                            stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        })
                    })),
                })
            })
        }),
    )
    .await
}

async fn refusing(
    refusals: usize,
    refusal: broker::controller::request::ControllerError,
    clock: Arc<ManualClock>,
) -> Arc<RefusingRegistrations> {
    let inner = SoloPlane::open(1, ControllerSettings::default(), clock, None, None)
        .await
        .unwrap();
    Arc::new(RefusingRegistrations {
        inner,
        refusals_left: std::sync::Mutex::new(refusals),
        refusal,
        registrations: std::sync::atomic::AtomicUsize::new(0),
    })
}

/// The bug story: a broker starting while the quorum elected a new controller got NOT_CONTROLLER
/// (or no answer) to its registration and gave up, leaving its plane running; Kafka's broker
/// keeps registering until a controller answers.
#[tokio::test]
async fn a_starting_broker_registers_again_while_no_controller_answers() {
    use broker::controller::request::ControllerError;
    let clock = Arc::new(ManualClock::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let stops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let plane = refusing(2, ControllerError::NotController(None), clock.clone()).await;
    let broker = open_on(Arc::clone(&plane), clock.clone(), dir.path(), stops.clone())
        .await
        .expect("the broker opens once a controller answers");
    assert_eq!(
        plane
            .registrations
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert!(broker.broker_epoch() >= 0);
    assert_eq!(stops.load(std::sync::atomic::Ordering::SeqCst), 0);
    broker.shutdown().await;
    assert_eq!(stops.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A registration refused for good fails the open, and the plane it started is stopped (else a
/// caller opening again would run a second replica and find its controller listener taken).
#[tokio::test]
async fn a_broker_whose_open_fails_stops_the_plane_it_started() {
    use broker::controller::request::ControllerError;
    let clock = Arc::new(ManualClock::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let stops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let plane = refusing(
        usize::MAX,
        ControllerError::ProducerIdsExhausted,
        clock.clone(),
    )
    .await;
    let opened = open_on(plane, clock, dir.path(), stops.clone()).await;
    assert!(opened.is_err(), "the open must fail");
    assert_eq!(stops.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A plane whose metadata log fails (it halts, as a KRaft node whose metadata log dir fails)
/// when this node first asks to be unfenced: the broker's open fails after its partitions
/// opened, where the simulator's disk errors made it fail.
struct HaltsAtFirstHeartbeat {
    inner: Arc<dyn MetadataPlane>,
    halted: broker::broker::Latch,
}

#[async_trait::async_trait]
impl MetadataPlane for HaltsAtFirstHeartbeat {
    fn image(&self) -> Arc<broker::controller::image::ClusterImage> {
        self.inner.image()
    }

    async fn wait_past(&self, offset: i64) {
        self.inner.wait_past(offset).await
    }

    async fn submit(
        &self,
        request: broker::controller::request::ControllerRequest,
    ) -> Result<
        broker::controller::request::ControllerReply,
        broker::controller::request::ControllerError,
    > {
        if matches!(
            request,
            broker::controller::request::ControllerRequest::Heartbeat { .. }
        ) {
            self.halted.set();
            return std::future::pending().await;
        }
        self.inner.submit(request).await
    }

    fn quorum_status(&self) -> broker::controller::plane::QuorumStatus {
        self.inner.quorum_status()
    }

    async fn halted(&self) -> String {
        self.halted.wait().await;
        "the metadata log failed".into()
    }
}

/// The bug story (60 s replication swarm, seeds 204 and 275): a broker whose open failed after
/// it had opened its partitions left them open, a follower's fetcher still appending, while the
/// directory lock went with the failed broker; the simulator's supervisor opened again at once,
/// and two logs appended to one segment file (the second found the file longer than its log
/// and recovered the first one's batches, with its own as damage at rest: a batch below the
/// high watermark an ISR member could not serve). As Kafka's broker runs its shutdown when its
/// startup fails, a failed open closes every log it opened before it lets the directory go:
/// each is closed cleanly (its marker written again) and its records are there for the next
/// open.
#[tokio::test]
async fn a_broker_whose_open_fails_after_opening_its_partitions_closes_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    // One plane for every open: the topic outlives each broker, as in a cluster.
    let plane = SoloPlane::open(1, ControllerSettings::default(), clock.clone(), None, None)
        .await
        .unwrap();
    let open = |halts: bool| {
        let config = BrokerConfig {
            node_id: 1,
            listen: "127.0.0.1:19092".into(),
            data_dir: dir.path().to_path_buf(),
            offsets_topic_replication_factor: 1,
            ..BrokerConfig::default()
        };
        let plane = Arc::clone(&plane) as Arc<dyn MetadataPlane>;
        Broker::open_with_plane(
            config,
            Arc::new(FileDisk::new()),
            clock.clone(),
            Box::new(move |_: PlaneContext| -> PlaneFuture {
                Box::pin(async move {
                    let plane = if halts {
                        Arc::new(HaltsAtFirstHeartbeat {
                            inner: plane,
                            halted: broker::broker::Latch::default(),
                        })
                    } else {
                        plane
                    };
                    Ok(StartedPlane {
                        plane,
                        controller_endpoint: None,
                        stop: None,
                    })
                })
            }),
        )
    };
    let first = open(false).await.unwrap();
    first.create_topic("t", 1, -1, &[], false).await.unwrap();
    first.catch_up().await.unwrap();
    let produced: ProduceResponse = call(&first, ApiKey::Produce, 10, &produce_to(0)).await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    first.shutdown().await;
    drop(first);
    let marker = dir.path().join("t-0").join(".clean-shutdown");
    assert!(marker.exists(), "a shutdown closes the log cleanly");

    let Err(e) = open(true).await else {
        panic!("the open must fail when the plane halts");
    };
    assert!(e.to_string().contains("metadata log failed"), "{e}");
    // The log was opened (which removes the marker) and closed again before the open
    // returned: no writer of the failed open is left on it.
    assert!(
        marker.exists(),
        "the failed open left the log it opened open"
    );

    // The failed incarnation's session ends, as it would on a real clock.
    clock.advance_ms(60_000);
    let again = open(false).await.unwrap();
    assert_eq!(again.partition("t", 0).unwrap().log.log_end_offset(), 1);
    again.shutdown().await;
}

#[tokio::test]
async fn each_groups_coordinator_is_the_leader_of_its_offsets_partition_which_loads_it() {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    let cluster = Cluster::of_two().await;
    let keys: Vec<String> = (0..20).map(|i| format!("group-{i}")).collect();
    // The first lookup creates __consumer_offsets (Kafka does the same).
    let found: FindCoordinatorResponse = call(
        cluster.broker(1),
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(
                keys.iter()
                    .map(|k| StrBytes::from_string(k.clone()))
                    .collect(),
            ),
    )
    .await;
    cluster.catch_up().await;
    let image = cluster.broker(1).image();
    let offsets = image.topic("__consumer_offsets").unwrap();
    let leader_of = |key: &str| {
        let partition = cluster.broker(1).groups().partition_for(key);
        offsets.partitions[partition as usize].leader
    };
    let mut nodes = std::collections::BTreeSet::new();
    for coordinator in &found.coordinators {
        assert_eq!(coordinator.error_code, 0, "{coordinator:?}");
        let leader = leader_of(coordinator.key.as_str());
        assert_eq!(coordinator.node_id, BrokerId(leader), "{coordinator:?}");
        assert_eq!(coordinator.port, if leader == 1 { 19092 } else { 29092 });
        nodes.insert(leader);
    }
    assert_eq!(nodes.len(), 2, "groups are spread over both brokers");
    // Each broker loads the shards of exactly the offsets partitions it leads.
    for id in [1, 2] {
        let led: Vec<i32> = (0..offsets.partitions.len() as i32)
            .filter(|&p| offsets.partitions[p as usize].leader == id)
            .collect();
        assert!(!led.is_empty());
        assert_eq!(
            cluster.broker(id).groups().loaded_shards(),
            led,
            "broker {id}"
        );
    }
}

/// The bug story (found by librdkafka's 0020 and 0030 on three brokers): the coordinator
/// checked a committed partition against the partitions it hosts, so a commit for a partition
/// another broker leads got UNKNOWN_TOPIC_OR_PARTITION and the consumer lost its position.
/// Kafka checks the cluster's metadata (`metadataCache.contains`): any partition of the cluster
/// can be committed (and its offset deleted) at any coordinator, and only one the cluster does
/// not have is refused.
#[tokio::test]
async fn a_coordinator_commits_and_deletes_offsets_of_partitions_another_broker_leads() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetCommitRequest,
        OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
        OffsetFetchResponse,
    };
    let cluster = Cluster::of_two().await;
    let elsewhere = topic_over_both(&cluster).await;
    // A group whose coordinator is broker 1, which does not lead partition `elsewhere`.
    let keys: Vec<String> = (0..20).map(|i| format!("group-{i}")).collect();
    let found: FindCoordinatorResponse = call(
        cluster.broker(1),
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(
                keys.iter()
                    .map(|k| StrBytes::from_string(k.clone()))
                    .collect(),
            ),
    )
    .await;
    cluster.catch_up().await;
    let group = found
        .coordinators
        .iter()
        .find(|c| c.error_code == 0 && c.node_id == BrokerId(1))
        .expect("a group coordinated by broker 1")
        .key
        .to_string();
    assert!(cluster.broker(1).partition("t", elsewhere).is_none());

    // Partitions 0 and 1 exist in the cluster; 2 does not.
    let committed: OffsetCommitResponse = call(
        cluster.broker(1),
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(
                    (0..3)
                        .map(|p| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(40 + i64::from(p))
                        })
                        .collect(),
                )]),
    )
    .await;
    let codes: Vec<(i32, i16)> = committed.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(codes, [(0, 0), (1, 0), (2, UNKNOWN_TOPIC_OR_PARTITION)]);

    let fetched: OffsetFetchResponse = call(
        cluster.broker(1),
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_indexes(vec![0, 1])])),
    )
    .await;
    let offsets: Vec<(i32, i64)> = fetched.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offsets, [(0, 40), (1, 41)]);

    let deleted: OffsetDeleteResponse = call(
        cluster.broker(1),
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group)))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(
                    [elsewhere, 2]
                        .into_iter()
                        .map(|p| OffsetDeleteRequestPartition::default().with_partition_index(p))
                        .collect(),
                )]),
    )
    .await;
    assert_eq!(deleted.error_code, 0);
    let codes: Vec<(i32, i16)> = deleted.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(codes, [(elsewhere, 0), (2, UNKNOWN_TOPIC_OR_PARTITION)]);
}
