//! The broker: its configuration, the metadata plane it runs from, and the catalog of the
//! partitions the cluster image gives it.
//!
//! Topics, partitions, their leaders and configs live in the cluster image, which the metadata
//! plane replicates ([`crate::controller`]); this node opens, leads, follows and removes its
//! partitions as each new image says ([`crate::catalog`]). Changes (CreateTopics, DeleteTopics,
//! CreatePartitions, config changes, producer-id blocks) are requests to the active controller
//! through [`MetadataPlane::submit`], from any broker.
//!
//! # Lifecycle (Kafka's broker lifecycle)
//! [`Broker::open`] locks the data directory, starts the plane, imports a single broker's
//! `meta.toml` once (see below), registers with a fresh incarnation id and gets a broker epoch,
//! records that epoch durably in the data directory (`broker-epoch`; the next start names it
//! as its previous broker epoch, KIP-966, and a directory without one, new or on a replaced
//! drive, names none, so the controller takes this broker out of every ISR, the last member's
//! too, before it can lead from a log it no longer has), applies the image, and heartbeats until the controller unfences it (a node alone is unfenced
//! at once: it has caught up as soon as it starts). Then two tasks run until shutdown: one follows
//! the plane and applies every new image in order, the other heartbeats every
//! `broker.heartbeat.interval.ms` with the offset applied, registering again if the controller
//! forgot this incarnation. [`Broker::shutdown`] first asks for a controlled shutdown (so the
//! controller moves leaderships away), bounded by the shutdown timeout, then closes the logs.
//!
//! # A single broker's data directory
//! Before the cluster, topics lived in `<data-dir>/meta.toml` and producer ids in
//! `<data-dir>/producer-ids`. On the first start with a plane, deletions a crash interrupted are
//! finished as before (a `<topic>-<n>.<id>-delete` directory names a topic whose deletion was
//! committed), the remaining topics are imported through `ImportLegacy` (keeping their ids,
//! configs and the cluster id), and `meta.toml` is renamed `meta.toml.imported`, never read
//! again. The partition directories keep their names.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::add_partitions_to_txn_manager::AddPartitionsToTxnManager;
use crate::catalog::{self, Catalog};
use crate::clock::Clock;
use crate::config::{BrokerConfig, InvalidConfig, TopicConfigs};
use crate::controller::decide::ControllerSettings;
use crate::controller::image::{ClusterImage, Endpoint};
use crate::controller::plane::MetadataPlane;
use crate::controller::request::{
    ConfigResource, ControllerError, ControllerReply, ControllerRequest, LegacyTopic,
    NewPartitions, NewTopic, TopicError, TopicRef,
};
use crate::controller::NodeId;
use crate::disk::{self, DirLock, Disk, LockDirError};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::GroupCoordinator;
use crate::log::cleaner::CleanError;
use crate::partition::Partition;
use crate::replica::isr::IsrManager;
use crate::txn::coordinator::records::TRANSACTION_STATE_TOPIC;
use crate::txn::coordinator::{TxnCoordinator, TxnHost};
use crate::txn::producer_id::{AllocateError, ProducerIdManager};

pub use crate::catalog::Topic;

const META_FILE: &str = "meta.toml";
const META_FILE_IMPORTED: &str = "meta.toml.imported";
/// How long a starting broker keeps trying to register before giving up (Kafka's
/// `initial.broker.registration.timeout.ms` default).
const INITIAL_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a follower task waits for a new image before applying the current one again (which
/// retries partition changes a disk error failed).
const REAPPLY_INTERVAL: Duration = Duration::from_secs(1);
pub use crate::topic_name::{validate_topic_name, MAX_TOPIC_NAME_LEN};
/// Partitions one topic may have. Each is a directory of files, so a request for two billion
/// (found by the protocol fuzzer) must be refused, not attempted.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredMeta {
    format_version: u32,
    cluster_id: String,
    #[serde(default)]
    topics: BTreeMap<String, StoredTopic>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredTopic {
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// Why an admin change (create, delete, grow a topic, change configs) failed. Mapped to Kafka
/// codes at the protocol boundary.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The controller refused this topic or resource.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The request as a whole failed (no controller, the quorum lost leadership, ...).
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The change was committed but this node's partitions could not follow it yet (a disk
    /// error); they follow at the next apply. KAFKA_STORAGE_ERROR.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Why a topic could not be created.
pub type CreateTopicError = AdminError;
/// Why a topic could not be deleted or changed.
pub type TopicChangeError = AdminError;

/// A flag that is set once and can be awaited (a Notify, not a watch channel: watch picks
/// notifiers with a thread-local RNG, which the simulator cannot seed).
#[derive(Default)]
pub struct Latch {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Latch {
    /// Sets the latch and wakes every waiter; later waits return at once.
    pub fn set(&self) {
        self.set.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once the latch is set.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `set` in between is not missed.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// What a plane needs from the broker to start.
#[derive(Clone, Debug)]
pub struct PlaneContext {
    pub node_id: NodeId,
    /// The cluster id of a single broker's data directory being imported: the metadata log
    /// keeps it if the log is new.
    pub cluster_id_if_new: Option<String>,
    pub settings: ControllerSettings,
}

/// A started metadata plane, as the broker holds it.
pub struct StartedPlane {
    pub plane: Arc<dyn MetadataPlane>,
    /// Where the quorum reaches this node (its registration's `controller_endpoint`, so the
    /// active controller adds it as a learner); `None` for a quorum of one.
    pub controller_endpoint: Option<Endpoint>,
    /// Stops the plane, at the end of [`Broker::shutdown`].
    pub stop: Option<StopPlane>,
}

/// Stops a plane.
pub type StopPlane = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;
/// The future that starts a metadata plane.
pub type PlaneFuture = Pin<Box<dyn Future<Output = io::Result<StartedPlane>> + Send>>;
/// Starts this node's metadata plane, once the broker has read what it must give it.
pub type StartPlane = Box<dyn FnOnce(PlaneContext) -> PlaneFuture + Send>;

/// This node's replica of the metadata quorum on openraft (`controller.quorum.voters`; none:
/// a quorum of one, with its log in the data directory and no network).
pub fn raft_plane(config: &BrokerConfig, disk: Arc<dyn Disk>) -> StartPlane {
    let config = config.clone();
    Box::new(move |ctx: PlaneContext| -> PlaneFuture {
        Box::pin(async move {
            let quorum = config
                .quorum_config(ctx.cluster_id_if_new)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let plane = crate::controller::raft::RaftPlane::start(quorum, disk).await?;
            let stopped = Arc::clone(&plane);
            Ok(StartedPlane {
                controller_endpoint: plane.controller_endpoint(),
                plane: plane as Arc<dyn MetadataPlane>,
                stop: Some(Box::new(move || {
                    Box::pin(async move { stopped.shutdown().await })
                })),
            })
        })
    })
}

/// A [`crate::solo_plane::SoloPlane`] on the data directory's disk: a node that is its own
/// quorum, without a metadata log (tests).
pub fn solo_plane(disk: Arc<dyn Disk>, clock: Arc<dyn Clock>, data_dir: PathBuf) -> StartPlane {
    Box::new(move |ctx: PlaneContext| -> PlaneFuture {
        Box::pin(async move {
            let plane = crate::solo_plane::SoloPlane::open(
                ctx.node_id,
                ctx.settings,
                clock,
                Some((disk, data_dir)),
                ctx.cluster_id_if_new,
            )
            .await?;
            Ok(StartedPlane {
                plane: plane as Arc<dyn MetadataPlane>,
                controller_endpoint: None,
                stop: None,
            })
        })
    })
}

/// Where a partition request goes, from the image this node applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such topic or partition. UNKNOWN_TOPIC_OR_PARTITION.
    UnknownTopicOrPartition,
    /// Another broker leads it. NOT_LEADER_OR_FOLLOWER, with the leader where the version
    /// carries it (KIP-951).
    NotLeader { leader: NodeId, leader_epoch: i32 },
    /// No replica can lead it now. LEADER_NOT_AVAILABLE.
    LeaderNotAvailable,
    /// This node leads it but its log could not be opened (a disk error). KAFKA_STORAGE_ERROR.
    NotOpen,
}

/// The host and port of an advertised `HOST:PORT` listener.
pub fn endpoint_of(advertised: &str) -> Endpoint {
    match advertised.rsplit_once(':') {
        Some((host, port)) => Endpoint {
            host: host.trim_matches(['[', ']']).to_string(),
            port: port.parse().unwrap_or(9092),
        },
        None => Endpoint {
            host: advertised.to_string(),
            port: 9092,
        },
    }
}

/// The broker: configuration, its metadata plane and the catalog of its partitions.
/// The log cleaner's state between passes: its offset map (allocated once, reused), its
/// throttle, and the logs it gave up on.
#[derive(Debug)]
pub struct LogCleaner {
    map: crate::log::cleaner::OffsetMap,
    throttler: crate::log::cleaner::Throttler,
    uncleanable: std::collections::BTreeSet<PathBuf>,
}

pub struct Broker {
    pub config: BrokerConfig,
    clock: Arc<dyn Clock>,
    plane: Arc<dyn MetadataPlane>,
    /// Where the quorum reaches this node (its registration carries it).
    controller_endpoint: Option<Endpoint>,
    stop_plane: std::sync::Mutex<Option<StopPlane>>,
    catalog: Catalog,
    /// Fresh at every start, and at every rejoin after a replicated log failed
    /// ([`Broker::rejoin_after_log_failure`]): tells the controller a restart from a retry.
    incarnation_id: std::sync::Mutex<Uuid>,
    /// Set while this broker steps down and rejoins after a replicated log failed.
    rejoining: AtomicBool,
    /// The epoch the controller gave this incarnation's registration.
    broker_epoch: AtomicI64,
    producer_ids: ProducerIdManager,
    groups: Arc<GroupCoordinator>,
    /// The transaction coordinator (the ids of the `__transaction_state` partitions this
    /// broker leads).
    txns: Arc<TxnCoordinator>,
    /// Asks other brokers' transaction coordinators to verify transactional produces (KIP-890
    /// part 1, [`crate::add_partitions_to_txn_manager`]).
    add_partitions_to_txn_manager: Arc<AddPartitionsToTxnManager>,
    /// The ISR changes of the partitions this broker leads ([`crate::replica::isr`]).
    isr_manager: Arc<IsrManager>,
    /// True once shutdown began: parked requests are answered at once, none park any more.
    stopping: Latch,
    /// True once the logs are closing: the follower and heartbeat tasks end.
    closed: Latch,
    /// Connections closed at once because a `max.connections` limit was reached.
    connections_refused: std::sync::atomic::AtomicU64,
    /// Consumer fetches this broker served as a follower (KIP-392).
    follower_reads: std::sync::atomic::AtomicU64,
    /// The data directory's `.lock`, held until the broker is dropped or shut down: a second
    /// broker on the same directory would append to the same logs and lose acknowledged records.
    dir_lock: std::sync::Mutex<Option<DirLock>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

fn controller_io(e: ControllerError) -> io::Error {
    io::Error::other(format!("metadata quorum: {e}"))
}

/// A single broker's `meta.toml`, with the deletions a crash interrupted finished.
async fn read_legacy_meta(disk: &dyn Disk, data_dir: &Path) -> io::Result<Option<StoredMeta>> {
    let meta_path = data_dir.join(META_FILE);
    let mut meta: StoredMeta = match disk::read_file(disk, &meta_path).await {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| io::Error::other(format!("{} is not UTF-8", meta_path.display())))?;
            toml::from_str(&text)
                .map_err(|e| io::Error::other(format!("{}: {e}", meta_path.display())))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A `-delete` directory naming a topic the file still holds committed that deletion.
    let doomed: std::collections::BTreeSet<Uuid> = disk
        .list(data_dir)
        .await?
        .iter()
        .filter_map(|n| catalog::deleted_topic_id(n))
        .collect();
    let finished: Vec<(String, i32)> = meta
        .topics
        .iter()
        .filter(|(_, t)| Uuid::parse_str(&t.id).is_ok_and(|id| doomed.contains(&id)))
        .map(|(name, t)| (name.clone(), t.partitions))
        .collect();
    for (name, partitions) in finished {
        for index in 0..partitions {
            match disk
                .remove_dir_all(&data_dir.join(format!("{name}-{index}")))
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        meta.topics.remove(&name);
        tracing::info!(topic = %name, "finished deleting a topic a restart interrupted");
    }
    Ok(Some(meta))
}

impl Broker {
    /// Opens the node its configuration describes: a replica of the metadata quorum on
    /// openraft (a quorum of one without `controller.quorum.voters`: today's single broker).
    pub async fn open(
        config: BrokerConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Arc<Broker>> {
        let start = raft_plane(&config, Arc::clone(&disk));
        Broker::open_with_plane(config, disk, clock, start).await
    }

    /// Opens the data directory, starts the metadata plane with `start_plane`, imports a single
    /// broker's `meta.toml` once, registers, opens the partitions the image gives this node and
    /// returns once the controller has unfenced it (see the module doc).
    pub async fn open_with_plane(
        config: BrokerConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        start_plane: StartPlane,
    ) -> io::Result<Arc<Broker>> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let data_dir = config.data_dir.clone();
        match disk.create_dir_all(&data_dir).await {
            Ok(()) => {}
            // EEXIST from mkdir: the name is taken by something that is not a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!(
                        "data directory {} exists and is not a directory",
                        data_dir.display()
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
        // Before reading anything: another broker may be rewriting what we would read.
        let dir_lock = disk.lock_dir(&data_dir).await.map_err(|e| {
            let kind = match e {
                LockDirError::InUse { .. } => io::ErrorKind::ResourceBusy,
                LockDirError::Io { ref source, .. } => source.kind(),
            };
            io::Error::new(kind, e)
        })?;
        let legacy = read_legacy_meta(disk.as_ref(), &data_dir).await?;
        let started = start_plane(PlaneContext {
            node_id: config.node_id,
            cluster_id_if_new: legacy.as_ref().map(|m| m.cluster_id.clone()),
            settings: config.controller_settings(),
        })
        .await?;
        let catalog = Catalog::new(config.clone(), Arc::clone(&disk), Arc::clone(&clock));
        let groups = GroupCoordinator::new(Arc::clone(&clock), config.group_config());
        let txns = TxnCoordinator::new(Arc::clone(&clock), config.txn_config());
        let add_partitions_to_txn_manager = AddPartitionsToTxnManager::new(config.node_id);
        let broker = Arc::new(Broker {
            config,
            clock,
            plane: started.plane,
            controller_endpoint: started.controller_endpoint,
            stop_plane: std::sync::Mutex::new(started.stop),
            catalog,
            incarnation_id: std::sync::Mutex::new(Uuid::from_u128(crate::random::random_u128())),
            rejoining: AtomicBool::new(false),
            broker_epoch: AtomicI64::new(-1),
            producer_ids: ProducerIdManager::new(),
            groups,
            add_partitions_to_txn_manager,
            txns,
            isr_manager: Arc::default(),
            stopping: Latch::default(),
            closed: Latch::default(),
            connections_refused: std::sync::atomic::AtomicU64::new(0),
            follower_reads: std::sync::atomic::AtomicU64::new(0),
            dir_lock: std::sync::Mutex::new(Some(dir_lock)),
        });
        let host: Weak<dyn TxnHost> = Arc::downgrade(&broker) as Weak<dyn TxnHost>;
        broker.txns.set_host(host);
        let started = {
            let plane = Arc::clone(&broker.plane);
            tokio::select! {
                biased;
                // A metadata log that fails while the broker starts stops it from ever catching
                // up (registration would wait out its timeout): give up at once.
                reason = plane.halted() => Err(io::Error::other(reason)),
                started = broker.start(legacy, disk.as_ref()) => started,
            }
        };
        if let Err(e) = started {
            // What started would outlive this failed open, as Kafka's broker runs its shutdown
            // when its startup fails. The partitions opened before the failure, with their
            // fetchers, are closed first: the directory lock goes with the broker, and a caller
            // that opens again would otherwise have a second writer on each log (a follower's
            // appends landing past the new log's end). The plane's replica, listener and tasks
            // next: a second replica on the same metadata log, its controller listener taken.
            broker.closed.set();
            broker.catalog.close_after_failed_start().await;
            broker.stop_plane().await;
            drop(
                broker
                    .dir_lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            );
            return Err(e);
        }
        tracing::info!(node_id = broker.config.node_id, cluster_id = %broker.cluster_id(),
            broker_epoch = broker.broker_epoch(), topics = broker.catalog.topics().len(),
            data_dir = %broker.config.data_dir.display(), "broker storage open");
        Ok(broker)
    }

    /// The part of [`Broker::open_with_plane`] that runs on a started plane: imports a single
    /// broker's `meta.toml`, registers, opens this node's partitions and waits to be unfenced.
    async fn start(
        self: &Arc<Self>,
        legacy: Option<StoredMeta>,
        disk: &dyn Disk,
    ) -> io::Result<()> {
        self.catalog.remove_deleted_leftovers().await?;
        // Before any partition opens (see `log::clean_shutdown`).
        self.catalog.begin_run().await?;
        if let Some(meta) = legacy {
            import_legacy(
                self.plane.as_ref(),
                self.config.node_id,
                disk,
                &self.config.data_dir,
                meta,
            )
            .await?;
        }
        self.register().await.map_err(controller_io)?;
        self.catalog
            .apply(self.plane.image())
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.wait_unfenced().await?;
        // Caught up with the metadata log: what the image does not give this node is stray.
        self.catalog.remove_strays().await?;
        // Groups and committed offsets, if any group ever committed (the topic is created on
        // first use): the shards of the offsets partitions this node leads.
        let image = self.catalog.applied_image();
        let loaded = self.follow_offsets_leaderships(&image).await;
        let txn_records = self.follow_transaction_state_leaderships(&image).await;
        if image.topic(TRANSACTION_STATE_TOPIC).is_some() {
            tracing::info!(
                records = txn_records,
                shards = ?self.txns.loaded_shards(),
                "transaction state loaded"
            );
        }
        if image.topic(OFFSETS_TOPIC).is_some() {
            tracing::info!(
                records = loaded,
                shards = ?self.groups.loaded_shards(),
                "committed offsets and groups loaded"
            );
        }
        // Only a data directory from before compaction has one to migrate (no task otherwise).
        if !self.internal_topics_not_compacted().is_empty() {
            tokio::spawn(compact_internal_topics(Arc::downgrade(self)));
        }
        tokio::spawn(follow_plane(Arc::downgrade(self)));
        tokio::spawn(heartbeat(Arc::downgrade(self)));
        tokio::spawn(crate::replica::isr::run(Arc::downgrade(self)));
        Ok(())
    }

    /// Resolves, with the reason, once this node must halt: its replica of the metadata log
    /// stopped for good (the log's disk failed). Kafka halts such a node (the process exits and
    /// a supervisor restarts it; it recovers from its log and snapshot): `faultline broker`
    /// exits with a non-zero code, the simulator restarts the node.
    pub async fn halted(&self) -> String {
        self.plane.halted().await
    }

    /// Stops the metadata plane (once; later calls do nothing).
    async fn stop_plane(&self) {
        let stop = self
            .stop_plane
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(stop) = stop {
            stop().await;
        }
    }

    /// Registers this incarnation with the controller (Kafka's BrokerRegistration). As Kafka's
    /// broker does, it retries every heartbeat interval while the previous incarnation's session
    /// lives (a quick restart: DUPLICATE_BROKER_REGISTRATION) and while the quorum has no
    /// controller to answer (NOT_CONTROLLER, or unavailable mid-election), until
    /// [`INITIAL_REGISTRATION_TIMEOUT`] has passed. A registration whose outcome was unknown is
    /// safe to send again: the same incarnation registering twice gets its epoch back.
    async fn register(&self) -> Result<(), ControllerError> {
        // KIP-966's previous broker epoch: this process's own last registration (its logs are
        // as it left them), else the one its log directory recorded; none for a directory
        // that holds nothing of an earlier registration (new, or its drive replaced).
        let previous_broker_epoch = match self.broker_epoch() {
            epoch if epoch >= 0 => epoch,
            _ => self.catalog.recorded_broker_epoch().await,
        };
        let request = ControllerRequest::RegisterBroker {
            id: self.config.node_id,
            incarnation_id: self.incarnation_id(),
            endpoint: endpoint_of(self.config.advertised()),
            controller_endpoint: self.controller_endpoint.clone(),
            rack: self.config.broker_rack.clone(),
            previous_broker_epoch,
        };
        let backoff = Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        // Counted in attempts, not read off a clock: the sleeps between them are the backoff.
        let mut attempts_left =
            (INITIAL_REGISTRATION_TIMEOUT.as_millis() / backoff.as_millis().max(1)).max(1);
        let reply = loop {
            let retriable = match self.plane.submit(request.clone()).await {
                Err(e @ ControllerError::DuplicateRegistration(_)) => {
                    tracing::info!(
                        %e,
                        "the previous incarnation's session is still alive; registering again soon"
                    );
                    e
                }
                Err(e @ (ControllerError::NotController(_) | ControllerError::Unavailable(_))) => {
                    tracing::info!(%e, "no controller answered the registration; retrying");
                    e
                }
                other => break other?,
            };
            attempts_left -= 1;
            if attempts_left == 0 {
                return Err(retriable);
            }
            tokio::time::sleep(backoff).await;
        };
        let ControllerReply::Registered { epoch } = reply else {
            panic!("the controller answered a registration with {reply:?}");
        };
        self.broker_epoch.store(epoch, Ordering::Release);
        self.catalog.fetchers().set_broker_epoch(epoch);
        // Before this incarnation can join any ISR (it is fenced until its first heartbeat
        // after this): a log directory that holds its logs says so at the next start.
        if let Err(e) = self.catalog.record_broker_epoch(epoch).await {
            // Not fatal: the next start then names the epoch recorded before (still this
            // directory's), or none, which only costs ISR memberships.
            tracing::warn!(%e, broker_epoch = epoch, "could not record the broker epoch");
        }
        tracing::info!(node_id = self.config.node_id, broker_epoch = epoch, incarnation = %self.incarnation_id(), "registered");
        Ok(())
    }

    /// One heartbeat with the offset this node applied; registers again if the controller
    /// forgot this incarnation (a new controller, or a fencing after a long pause).
    async fn send_heartbeat(&self, want_shutdown: bool) -> Result<(bool, bool), ControllerError> {
        let request = ControllerRequest::Heartbeat {
            id: self.config.node_id,
            epoch: self.broker_epoch(),
            caught_up_offset: self.catalog.applied_image().metadata_offset,
            want_shutdown,
        };
        match self.plane.submit(request).await {
            Ok(ControllerReply::Heartbeat {
                fenced,
                shutdown_complete,
            }) => Ok((fenced, shutdown_complete)),
            Ok(other) => panic!("the controller answered a heartbeat with {other:?}"),
            Err(ControllerError::StaleBrokerEpoch { .. } | ControllerError::NotRegistered(_)) => {
                self.register().await?;
                Ok((true, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Heartbeats until the controller unfences this broker (once it has caught up with the
    /// metadata log); a node alone is unfenced by its first heartbeat.
    async fn wait_unfenced(&self) -> io::Result<()> {
        loop {
            match self.send_heartbeat(false).await {
                Ok((false, _)) => break,
                Ok((true, _)) => {}
                Err(e) => tracing::info!(%e, "heartbeat failed; retrying"),
            }
            // Until the image moves, or a heartbeat interval: the controller unfences once
            // this node has caught up.
            let applied = self.catalog.applied_image().metadata_offset;
            let interval = Duration::from_millis(self.config.broker_heartbeat_interval_ms);
            let woken = tokio::time::timeout(interval, self.plane.wait_past(applied)).await;
            if woken.is_ok() && self.plane.image().metadata_offset <= applied {
                tokio::time::sleep(interval).await;
            }
            self.catch_up()
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        // The unfencing is itself a record: apply it (and the leaderships it gave back).
        self.catch_up()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        tracing::info!(broker_epoch = self.broker_epoch(), "unfenced");
        Ok(())
    }

    /// Applies the plane's latest image to this node's partitions now (after a change this
    /// broker submitted, so its answer and the next request see the change here).
    pub async fn catch_up(&self) -> Result<(), catalog::ApplyError> {
        let image = self.plane.image();
        let applied = self.catalog.apply(Arc::clone(&image)).await;
        // Whatever part of the image was applied: the group shards follow its leaderships.
        self.follow_offsets_leaderships(&image).await;
        self.follow_transaction_state_leaderships(&image).await;
        applied
    }

    /// Loads the transaction coordinator's shard of every `__transaction_state` partition this
    /// node leads in `image`, and unloads the others (as [`Self::follow_offsets_leaderships`]).
    async fn follow_transaction_state_leaderships(&self, image: &ClusterImage) -> usize {
        let Some(topic) = image.topic(TRANSACTION_STATE_TOPIC) else {
            return 0;
        };
        let count = i32::try_from(topic.partitions.len()).expect("partition count fits i32");
        match self.txns.partition_count() {
            None => self.txns.set_partition_count(count),
            Some(set) if set == count => {}
            Some(set) => {
                tracing::error!(
                    set,
                    count,
                    "{TRANSACTION_STATE_TOPIC} changed its partition count: ids stay placed by the first"
                );
                return 0;
            }
        }
        let mut loads = Vec::new();
        for (index, assignment) in topic.partitions.iter().enumerate() {
            let index = i32::try_from(index).expect("partition index fits i32");
            match self.catalog.partition(TRANSACTION_STATE_TOPIC, index) {
                Some(partition) if assignment.leader == self.config.node_id => {
                    loads.push(self.txns.load_shard(index, partition));
                }
                _ => self.txns.unload_shard(index),
            }
        }
        let mut records = 0;
        for load in loads {
            match load.await {
                Ok(n) => records += n,
                Err(e) => tracing::warn!(%e, "a transaction state partition did not load; retried"),
            }
        }
        records
    }

    /// Loads the group shard of every `__consumer_offsets` partition this node leads in
    /// `image` and holds, and unloads the others (Kafka's onElection and onResignation).
    /// Returns how many records the loads replayed. A failed load is retried at the next call.
    async fn follow_offsets_leaderships(&self, image: &ClusterImage) -> usize {
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return 0;
        };
        let count = i32::try_from(topic.partitions.len()).expect("partition count fits i32");
        match self.groups.partition_count() {
            None => self.groups.set_partition_count(count),
            Some(set) if set == count => {}
            Some(set) => {
                // Groups are placed by the count they were placed with; moving them would
                // part them from their offsets. Kafka never changes it either.
                tracing::error!(
                    set,
                    count,
                    "{OFFSETS_TOPIC} changed its partition count: groups stay placed by the first"
                );
                return 0;
            }
        }
        let mut loads = Vec::new();
        for (index, assignment) in topic.partitions.iter().enumerate() {
            let index = i32::try_from(index).expect("partition index fits i32");
            let local = self.catalog.partition(OFFSETS_TOPIC, index);
            match local {
                Some(partition) if assignment.leader == self.config.node_id => {
                    loads.push(self.groups.load_shard(index, partition));
                }
                _ => {
                    self.groups.unload_shard(index);
                }
            }
        }
        let mut records = 0;
        for load in loads {
            match load.await {
                Ok(n) => records += n,
                Err(e) => tracing::warn!(%e, "an offsets partition did not load; retried"),
            }
        }
        records
    }

    /// Controlled shutdown (Kafka's): asks the controller to move this broker's leaderships
    /// away and waits until it leads nothing, bounded by `shutdown.timeout.ms`. Run while the
    /// broker still serves (`server::serve`), and again, at once done, by [`Broker::shutdown`].
    pub async fn controlled_shutdown(&self) {
        let bound = Duration::from_millis(self.config.shutdown_timeout_ms);
        let done = async {
            loop {
                match self.send_heartbeat(true).await {
                    Ok((_, true)) => return,
                    Ok((_, false)) => {}
                    Err(e) => tracing::info!(%e, "controlled shutdown heartbeat failed; retrying"),
                }
                let _ = self.catch_up().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        match tokio::time::timeout(bound, done).await {
            Ok(()) => {
                let _ = self.catch_up().await;
                tracing::info!("controlled shutdown complete");
            }
            Err(_) => tracing::warn!(
                timeout_ms = self.config.shutdown_timeout_ms,
                "controlled shutdown not complete at the shutdown bound; closing anyway"
            ),
        }
    }

    pub fn cluster_id(&self) -> String {
        self.plane.image().cluster_id.clone()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The metadata plane this broker runs from.
    pub fn plane(&self) -> &Arc<dyn MetadataPlane> {
        &self.plane
    }

    /// The image this node's partitions reflect (what the handlers answer from).
    pub fn image(&self) -> Arc<ClusterImage> {
        self.catalog.applied_image()
    }

    /// The epoch of this broker's current registration.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    pub fn incarnation_id(&self) -> Uuid {
        *self
            .incarnation_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A producer id never handed out before in the cluster: from this broker's block, a new
    /// block from the controller when it is used up (Kafka's AllocateProducerIds).
    pub async fn allocate_producer_id(&self) -> Result<i64, AllocateError> {
        self.producer_ids
            .allocate(|| async {
                let reply = self
                    .plane
                    .submit(ControllerRequest::AllocateProducerIds {
                        broker: self.config.node_id,
                        epoch: self.broker_epoch(),
                    })
                    .await;
                match reply {
                    Ok(ControllerReply::ProducerIds { first, count }) => Ok((first, count)),
                    Ok(other) => {
                        panic!("the controller answered AllocateProducerIds with {other:?}")
                    }
                    Err(ControllerError::ProducerIdsExhausted) => Err(AllocateError::Exhausted),
                    Err(e) => Err(AllocateError::Unavailable(e.to_string())),
                }
            })
            .await
    }

    /// `__consumer_offsets`, created on first use as Kafka does (`offsets.topic.num.partitions`
    /// partitions, compacted: the log cleaner keeps the latest commit of each key and drops
    /// deleted ones, so loading a shard reads what is live, not every commit ever made). The
    /// shards of the partitions this node leads load as the image is applied
    /// ([`Broker::catch_up`]).
    pub async fn offsets_topic(&self) -> Result<(), AdminError> {
        if self.image().topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        self.internal_topic(
            OFFSETS_TOPIC,
            self.config.offsets_topic_num_partitions,
            self.config.offsets_topic_replication_factor,
        )
        .await
    }

    /// `__transaction_state`, created on first use as Kafka does
    /// (`transaction.state.log.num.partitions` partitions, compacted, replicated
    /// `transaction.state.log.replication.factor` times, capped at the live brokers).
    pub async fn transaction_state_topic(&self) -> Result<(), AdminError> {
        if self.image().topic(TRANSACTION_STATE_TOPIC).is_some() {
            return Ok(());
        }
        self.internal_topic(
            TRANSACTION_STATE_TOPIC,
            self.config.transaction_state_log_num_partitions,
            self.config.transaction_state_log_replication_factor,
        )
        .await
    }

    /// The coordinators' internal topics whose `cleanup.policy` lacks `compact`: only those of a
    /// data directory written before compaction existed (stored as `delete`, or not stored,
    /// which is the broker's default `delete`).
    fn internal_topics_not_compacted(&self) -> Vec<&'static str> {
        let image = self.image();
        [OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC]
            .into_iter()
            .filter(|name| {
                image.topic(name).is_some_and(|topic| {
                    !topic
                        .configs
                        .get("cleanup.policy")
                        .is_some_and(|p| p.split(',').any(|v| v.trim() == "compact"))
                })
            })
            .collect()
    }

    /// Kafka forces `cleanup.policy=compact` on its internal topics: each one found without it
    /// gets it (its other configs kept), through the metadata log, so every broker's logs agree
    /// and the cleaner takes them. Returns whether none is left to change.
    pub async fn compact_internal_topics(&self) -> bool {
        let mut done = true;
        for name in self.internal_topics_not_compacted() {
            let Some(current) = self.image().topic(name).map(|t| t.configs.clone()) else {
                continue;
            };
            let mut overrides = current;
            overrides.insert("cleanup.policy".into(), "compact".into());
            match self
                .set_topic_configs(name, TopicConfigs { overrides }, false)
                .await
            {
                Ok(()) => tracing::info!(
                    topic = name,
                    "internal topic from before compaction: cleanup.policy set to compact"
                ),
                Err(e) => {
                    tracing::info!(topic = name, %e, "could not set cleanup.policy=compact yet; retried");
                    done = false;
                }
            }
        }
        done
    }

    /// Creates an internal topic of the coordinators (compacted, kept forever, replicated
    /// `replication_factor` times capped at the live brokers); a concurrent creation is fine.
    async fn internal_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<(), AdminError> {
        // Kafka's `offsets.topic.segment.bytes` (100 MiB): segments roll, so the cleaner can
        // take all but the active one.
        let configs = [
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), (100 << 20).to_string()),
        ];
        let replication_factor =
            offsets_topic_replication_factor(replication_factor, &self.plane.image());
        match self
            .create_topic(name, partitions, replication_factor, &configs, false)
            .await
        {
            Ok(_) | Err(AdminError::Topic(TopicError::AlreadyExists(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The transaction coordinator.
    pub fn txns(&self) -> &Arc<TxnCoordinator> {
        &self.txns
    }

    /// The verifier of transactional produces against other brokers' coordinators.
    pub fn add_partitions_to_txn_manager(&self) -> &Arc<AddPartitionsToTxnManager> {
        &self.add_partitions_to_txn_manager
    }

    /// The ISR manager: the fetch path tells it when a follower may join an ISR.
    pub fn isr_manager(&self) -> &Arc<IsrManager> {
        &self.isr_manager
    }

    /// The group coordinator (the groups of the offsets partitions this broker leads).
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// Every topic of the applied image, with the partitions this node holds.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.catalog.topics()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.catalog.topic(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.catalog.topic_by_id(id)
    }

    /// The local replica of a partition, whatever its role.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.catalog.partition(topic, index)
    }

    /// The local replica a consumer may read from while this node follows the partition
    /// (KIP-392), else where the fetch should go: the leader. Only an ISR member serves, so a
    /// consumer is sent back to the leader once this replica falls out of sync (Kafka's
    /// follower keeps serving from its stale high watermark until the client's lease on it
    /// ends) or stops being a replica.
    pub fn follower_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<Arc<Partition>, RouteError> {
        let image = self.image();
        let assignment = image
            .partition(topic, index)
            .ok_or(RouteError::UnknownTopicOrPartition)?;
        if !assignment.is_online() {
            return Err(RouteError::LeaderNotAvailable);
        }
        let not_here = RouteError::NotLeader {
            leader: assignment.leader,
            leader_epoch: assignment.leader_epoch,
        };
        let node = self.config.node_id;
        if assignment.leader == node || !assignment.isr.contains(&node) {
            return Err(not_here);
        }
        match self.partition(topic, index) {
            Some(partition) if partition.is_follower() => Ok(partition),
            _ => Err(not_here),
        }
    }

    /// The partition if this node leads it (produce, fetch, list offsets, delete records),
    /// else where the request should go.
    pub fn leader_partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, RouteError> {
        let image = self.image();
        let assignment = image
            .partition(topic, index)
            .ok_or(RouteError::UnknownTopicOrPartition)?;
        if !assignment.is_online() {
            return Err(RouteError::LeaderNotAvailable);
        }
        if assignment.leader != self.config.node_id {
            return Err(RouteError::NotLeader {
                leader: assignment.leader,
                leader_epoch: assignment.leader_epoch,
            });
        }
        self.partition(topic, index).ok_or(RouteError::NotOpen)
    }

    /// Submits `request` to the active controller and applies its outcome here before
    /// returning, so the answer and whatever the client asks next see the change.
    pub async fn submit(&self, request: ControllerRequest) -> Result<ControllerReply, AdminError> {
        let reply = self.plane.submit(request).await?;
        if let Err(e) = self.catch_up().await {
            // Committed: the partitions follow at the next apply.
            tracing::warn!(%e, "a committed change is not applied here yet");
        }
        Ok(reply)
    }

    /// Creates one topic. `partitions` and `replication_factor` of -1 mean the defaults. With
    /// `validate_only`, checks everything and changes nothing (the topic returned has no
    /// partitions).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<Arc<Topic>, AdminError> {
        let topic = NewTopic {
            name: name.to_string(),
            num_partitions: partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: configs.iter().cloned().collect(),
        };
        let reply = self
            .submit(ControllerRequest::CreateTopics {
                topics: vec![topic],
                validate_only,
            })
            .await?;
        let ControllerReply::CreateTopics(mut results) = reply else {
            panic!("the controller answered CreateTopics with {reply:?}");
        };
        assert_eq!(results.len(), 1, "one result per topic");
        let (_, result) = results.remove(0);
        let created = result?;
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.to_string(),
                id: created.id,
                configs: TopicConfigs {
                    overrides: configs.iter().cloned().collect(),
                },
                partitions: Vec::new(),
            }));
        }
        let topic = self
            .topic(name)
            .filter(|t| t.id == created.id)
            .ok_or_else(|| {
                AdminError::Storage(format!("topic {name} created but not open here"))
            })?;
        let expected = self
            .image()
            .topic(name)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&self.config.node_id))
                    .count()
            })
            .unwrap_or(0);
        if topic.partitions.len() != expected {
            return Err(AdminError::Storage(format!(
                "topic {name} created; {} of its {expected} local partitions are open",
                topic.partitions.len()
            )));
        }
        Ok(topic)
    }

    /// Deletes a topic (the controller commits it; every broker removes its partitions).
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, AdminError> {
        let reply = self
            .submit(ControllerRequest::DeleteTopics {
                topics: vec![TopicRef::Name(name.to_string())],
            })
            .await?;
        let ControllerReply::DeleteTopics(mut results) = reply else {
            panic!("the controller answered DeleteTopics with {reply:?}");
        };
        assert_eq!(results.len(), 1, "one result per topic");
        Ok(results.remove(0).1?)
    }

    /// CreatePartitions: grows a topic to `total` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let reply = self
            .submit(ControllerRequest::CreatePartitions {
                topics: vec![NewPartitions {
                    topic: name.to_string(),
                    count: total,
                    assignments: Vec::new(),
                }],
                validate_only,
            })
            .await?;
        let ControllerReply::CreatePartitions(mut results) = reply else {
            panic!("the controller answered CreatePartitions with {reply:?}");
        };
        assert_eq!(results.len(), 1, "one result per topic");
        Ok(results.remove(0).1?)
    }

    /// Replaces a topic's config overrides with `configs` (AlterConfigs; IncrementalAlterConfigs
    /// computes the new set). All or nothing: the controller validates everything before it
    /// commits anything, and a change that is not committed changes nothing anywhere.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        for (key, value) in &configs.overrides {
            TopicConfigs::validate(key, value)
                .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        }
        let log_config = configs.log_config(&self.config);
        log_config.validate().map_err(|reason| {
            TopicError::InvalidConfig(
                InvalidConfig {
                    name: "topic configs".into(),
                    value: format!("{:?}", configs.overrides),
                    reason,
                }
                .to_string(),
            )
        })?;
        let current = self
            .image()
            .topic(name)
            .map(|t| t.configs.clone())
            .ok_or(TopicError::UnknownTopic)?;
        let mut changes: BTreeMap<String, Option<String>> = current
            .keys()
            .filter(|k| !configs.overrides.contains_key(*k))
            .map(|k| (k.clone(), None))
            .collect();
        for (key, value) in &configs.overrides {
            changes.insert(key.clone(), Some(value.clone()));
        }
        let reply = self
            .submit(ControllerRequest::AlterConfigs {
                resources: vec![(ConfigResource::Topic(name.to_string()), changes)],
                validate_only,
            })
            .await?;
        let ControllerReply::AlterConfigs(mut results) = reply else {
            panic!("the controller answered AlterConfigs with {reply:?}");
        };
        assert_eq!(results.len(), 1, "one result per resource");
        results.remove(0).1?;
        if !validate_only {
            tracing::info!(topic = name, "topic configs changed");
        }
        Ok(())
    }

    /// Runs retention and lazy flushes on every partition, and recovers partitions whose log
    /// went offline after a disk error; the server calls it periodically. A replicated
    /// partition's failed log is not recovered here: the broker steps down and rejoins
    /// ([`Broker::rejoin_after_log_failure`]), which recovers it once its leaderships moved.
    pub async fn run_maintenance(self: &Arc<Self>, retention: bool) {
        let replicated_failure = self.topics().iter().any(|t| {
            t.partitions
                .iter()
                .any(|p| p.log.is_replicated() && p.log.is_failed())
        });
        if replicated_failure && !self.rejoining.swap(true, Ordering::AcqRel) {
            tokio::spawn(rejoin_after_log_failure(Arc::downgrade(self)));
        }
        for topic in self.topics() {
            for partition in &topic.partitions {
                if partition.log.is_replicated() && partition.log.is_failed() {
                    continue;
                }
                if partition.recover_if_offline().await {
                    tracing::info!(topic = %topic.name, partition = partition.index,
                        "partition back online after a disk error");
                }
                let _ = partition.log.flush_if_due().await;
                partition.log.tidy_checkpoint().await;
                if retention {
                    if let Err(e) = partition.log.apply_retention().await {
                        tracing::warn!(topic = %topic.name, partition = partition.index, %e, "retention failed");
                    }
                }
            }
        }
        self.catalog.checkpoint_high_watermarks(false).await;
    }

    /// The log cleaner's working state, sized by `log.cleaner.dedupe.buffer.size` and
    /// throttled by `log.cleaner.io.max.bytes.per.second` ([`Broker::clean_dirtiest_log`]).
    /// A cleaning stops (before its commit point) once `abort` is set.
    pub fn log_cleaner(&self, abort: Arc<std::sync::atomic::AtomicBool>) -> LogCleaner {
        let rate = self.config.log_cleaner_io_max_bytes_per_second;
        LogCleaner {
            map: crate::log::cleaner::OffsetMap::new(
                usize::try_from(self.config.log_cleaner_dedupe_buffer_size).unwrap_or(usize::MAX),
            ),
            throttler: crate::log::cleaner::Throttler::new((rate < f64::MAX).then_some(rate))
                .with_abort(abort),
            uncleanable: std::collections::BTreeSet::new(),
        }
    }

    /// Cleans the one local compacted log that most needs it (Kafka's
    /// `LogCleanerManager.grabFilthiestCompactedLog`: a log with a record past
    /// `max.compaction.lag.ms` first, then the highest dirty ratio over its
    /// `min.cleanable.dirty.ratio`), up to its high watermark. Every replica cleans its own
    /// log, as in Kafka. Returns whether it cleaned one.
    pub async fn clean_dirtiest_log(&self, cleaner: &mut LogCleaner) -> bool {
        let now = self.clock.now_ms();
        let mut dirtiest: Option<((bool, f64), Arc<Partition>, String)> = None;
        for topic in self.topics() {
            for partition in &topic.partitions {
                if cleaner.uncleanable.contains(partition.log.dir()) {
                    continue;
                }
                // A cheap look first, then the bound the cleaning really has: the LSO.
                let due = |bound| {
                    partition
                        .log
                        .cleanable(bound, now)
                        .filter(|c: &crate::log::cleaner::Cleanable| c.is_due())
                };
                if due(partition.high_watermark()).is_none() {
                    continue;
                }
                let Ok(lso) = partition.last_stable_offset().await else {
                    continue;
                };
                let Some(cleanable) = due(lso) else {
                    continue;
                };
                let rank = (cleanable.past_max_compaction_lag, cleanable.dirty_ratio());
                if dirtiest.as_ref().is_none_or(|(best, _, _)| {
                    rank.partial_cmp(best) == Some(std::cmp::Ordering::Greater)
                }) {
                    dirtiest = Some((rank, Arc::clone(partition), topic.name.clone()));
                }
            }
        }
        let Some((_, partition, topic)) = dirtiest else {
            return false;
        };
        let LogCleaner { map, throttler, .. } = cleaner;
        let result = partition.clean_log(map, throttler).await;
        match result {
            Ok(stats) => stats.is_some(),
            Err(e @ (CleanError::Corrupt { .. } | CleanError::OffsetMapTooSmall(_))) => {
                // As Kafka marks a partition uncleanable: the rest of the broker goes on.
                tracing::error!(topic, partition = partition.index, %e,
                    "the log cannot be cleaned: it is left as it is until the broker restarts");
                cleaner
                    .uncleanable
                    .insert(partition.log.dir().to_path_buf());
                false
            }
            Err(CleanError::Aborted) => false,
            Err(e) => {
                tracing::warn!(topic, partition = partition.index, %e, "cleaning failed; retried later");
                false
            }
        }
    }

    /// Stores group memberships whose store failed earlier; the server calls it every
    /// maintenance tick.
    pub async fn store_changed_groups(&self) {
        if let Err(e) = self.groups.store_dirty_groups().await {
            tracing::warn!(%e, "storing group membership failed; retried next time");
        }
    }

    /// Removes committed offsets that expired (KIP-211); the server calls it every
    /// `offsets.retention.check.interval.ms`.
    pub async fn expire_offsets(&self) {
        match self.groups.expire_offsets().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired committed offsets removed"),
            Err(e) => tracing::warn!(%e, "expiring committed offsets failed; retried next time"),
        }
    }

    /// The first step of a shutdown: parked requests are answered now, with what Kafka answers
    /// when a broker stops (a parked fetch with the data there is, a parked JoinGroup or
    /// SyncGroup with NOT_COORDINATOR, as when the coordinator unloads the group), and requests
    /// that arrive later are not parked. Logs stay open, so acks=all produces still complete.
    pub fn begin_shutdown(&self) {
        self.stopping.set();
        let answered = self.groups.unload();
        self.txns.unload();
        tracing::info!(
            parked_group_requests = answered,
            "shutdown begun: parked requests answered"
        );
    }

    /// Has shutdown begun ([`Broker::begin_shutdown`])?
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_set()
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub async fn stopping(&self) {
        self.stopping.wait().await;
    }

    /// Counts a connection closed at once for being over a connection limit.
    pub fn count_refused_connection(&self) {
        self.connections_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections closed at once because `max.connections` or `max.connections.per.ip` was
    /// reached, since start.
    pub fn connections_refused(&self) -> u64 {
        self.connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a consumer fetch served by this broker as a follower.
    pub fn count_follower_read(&self) {
        self.follower_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Consumer fetches (of one partition each) this broker served as a follower, since start:
    /// how an operator sees that fetch-from-follower is in use.
    pub fn follower_reads(&self) -> u64 {
        self.follower_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Read-ahead fetches this broker's followers sent while catching up, since start (see
    /// `replica::fetcher`, "Reading ahead during catch-up").
    pub fn replica_read_ahead_fetches(&self) -> u64 {
        self.catalog.fetchers().read_ahead_fetches()
    }

    /// Clean shutdown: a controlled shutdown (leaderships moved away, bounded by the shutdown
    /// timeout), then sync and close every log, leaving the clean-shutdown markers.
    pub async fn shutdown(&self) {
        self.controlled_shutdown().await;
        self.closed.set();
        self.catalog.close_all().await;
        self.stop_plane().await;
        tracing::info!("broker storage closed");
        // Every log is closed: the directory is free for the next broker (as Kafka releases
        // its `.lock` at the end of a shutdown).
        drop(
            self.dir_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

/// `offsets.topic.replication.factor`, capped at the live brokers of `image` (at least 1), as
/// Kafka did before 0.11 (later Kafka refuses to create the topic until enough brokers are up,
/// which would leave a cluster of one without groups under the default of 3).
fn offsets_topic_replication_factor(configured: i16, image: &ClusterImage) -> i16 {
    let live = i16::try_from(image.live_brokers().count()).unwrap_or(i16::MAX);
    if configured > live {
        tracing::warn!(
            configured,
            live_brokers = live,
            "offsets.topic.replication.factor is above the live brokers: {OFFSETS_TOPIC} is \
             created with {} replica(s)",
            live.max(1)
        );
        return live.max(1);
    }
    configured
}

/// Imports a single broker's topics into the metadata log once, then retires `meta.toml`.
async fn import_legacy(
    plane: &dyn MetadataPlane,
    node: NodeId,
    disk: &dyn Disk,
    data_dir: &Path,
    meta: StoredMeta,
) -> io::Result<()> {
    if !plane.image().legacy_imported {
        // The ids the single broker may have handed out stay used: the cluster's floor.
        let producer_id_floor = crate::txn::producer_id::legacy_reserved_end(disk, data_dir)
            .await?
            .unwrap_or(0);
        let mut topics = Vec::new();
        for (name, stored) in meta.topics {
            let id = Uuid::parse_str(&stored.id)
                .map_err(|e| io::Error::other(format!("topic {name}: bad id: {e}")))?;
            topics.push(LegacyTopic {
                name,
                id,
                partitions: stored.partitions,
                configs: stored.configs,
            });
        }
        let count = topics.len();
        let reply = plane
            .submit(ControllerRequest::ImportLegacy {
                cluster_id: meta.cluster_id,
                topics,
                node,
                producer_id_floor,
            })
            .await
            .map_err(controller_io)?;
        assert_eq!(
            reply,
            ControllerReply::Imported,
            "the controller answers an import"
        );
        tracing::info!(
            topics = count,
            "a single broker's topics imported into the metadata log"
        );
    }
    // Imported (now or by an earlier start that crashed before this rename): never read again.
    disk.rename(
        &data_dir.join(META_FILE),
        &data_dir.join(META_FILE_IMPORTED),
    )
    .await?;
    disk.sync_dir(data_dir).await
}

/// Follows the plane: applies every new image to the partitions, in order, until the broker
/// closes. Applies the current image again now and then, which finishes partition changes a
/// disk error failed.
async fn follow_plane(broker: Weak<Broker>) {
    loop {
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if strong.closed.is_set() {
            return;
        }
        let plane = Arc::clone(&strong.plane);
        let applied = strong.catalog.applied_image().metadata_offset;
        drop(strong);
        // Holds no strong reference while waiting: a dropped broker ends this task.
        let woken = tokio::time::timeout(REAPPLY_INTERVAL, plane.wait_past(applied)).await;
        if woken.is_ok() && plane.image().metadata_offset <= applied {
            // Woken with no newer image: wait the interval rather than spin (a loop that is
            // never pending would stop the simulator's clock).
            tokio::time::sleep(REAPPLY_INTERVAL).await;
        }
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if strong.closed.is_set() {
            return;
        }
        if let Err(e) = strong.catch_up().await {
            tracing::debug!(%e, "image not fully applied; retried");
        }
    }
}

/// A replicated partition's log failed (an I/O error): this broker steps down and rejoins, as
/// Kafka's broker halts when its only log dir fails and comes back with a new broker epoch.
/// A leader that recovered its log in place and led on in the same leader epoch would serve a
/// log its followers need not match (the recovery may drop a tail they hold, and the next
/// appends reuse those offsets with the same epoch). So, in order:
/// 1. a controlled shutdown: the controller moves every leadership of this broker to another
///    ISR member (or to none), takes it out of every ISR and fences it; retried until done;
/// 2. the failed logs are recovered in place, now as followers (or replicas of a partition
///    without a leader), which skip no offset;
/// 3. a new incarnation registers (a new broker epoch, fenced until it has caught up with the
///    metadata log) and is unfenced: its partitions follow the new leaders, reconcile and
///    truncate, and rejoin the ISR by the usual rules.
///
/// Partitions of one replica are recovered in place by maintenance as before: there is no
/// other replica to lead or to disagree with.
async fn rejoin_after_log_failure(broker: Weak<Broker>) {
    let interval = {
        let Some(strong) = broker.upgrade() else {
            return;
        };
        tracing::error!(broker_epoch = strong.broker_epoch(),
            "a replicated partition's log failed: stepping down, rejoining with a new broker epoch after recovery");
        Duration::from_millis(strong.config.broker_heartbeat_interval_ms)
    };
    // 1. Leaderships move away and the broker is fenced (shutting down) before any recovery.
    loop {
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if strong.is_stopping() {
            return;
        }
        match strong.send_heartbeat(true).await {
            Ok((_, true)) => {
                // The partitions take the roles the step-down gave them before recovering.
                if let Err(e) = strong.catch_up().await {
                    tracing::info!(%e, "image not fully applied after stepping down");
                }
                break;
            }
            Ok((_, false)) => {}
            Err(e) => tracing::info!(%e, "step-down heartbeat failed; retrying"),
        }
        drop(strong);
        tokio::time::sleep(interval).await;
    }
    // 2. Recover every failed log; one that cannot be recovered yet is retried.
    loop {
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if strong.is_stopping() {
            return;
        }
        let mut failed = 0;
        for topic in strong.topics() {
            for partition in &topic.partitions {
                let _ = partition.recover_if_offline().await;
                if partition.log.is_failed() {
                    failed += 1;
                }
            }
        }
        if failed == 0 {
            break;
        }
        tracing::info!(failed, "failed logs not recovered yet; retrying");
        drop(strong);
        tokio::time::sleep(interval).await;
    }
    // 3. A new incarnation: a new broker epoch, fenced until caught up.
    let Some(strong) = broker.upgrade() else {
        return;
    };
    *strong
        .incarnation_id
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Uuid::from_u128(crate::random::random_u128());
    loop {
        if strong.is_stopping() {
            return;
        }
        match strong.register().await {
            Ok(()) => break,
            Err(e) => tracing::info!(%e, "registration after a log failure failed; retrying"),
        }
        tokio::time::sleep(interval).await;
    }
    match strong.wait_unfenced().await {
        Ok(()) => tracing::info!(
            broker_epoch = strong.broker_epoch(),
            "rejoined after a log failure"
        ),
        Err(e) => tracing::warn!(%e, "not unfenced after a log failure; the heartbeats go on"),
    }
    strong.rejoining.store(false, Ordering::Release);
}

/// Migrates the internal topics of a data directory from before compaction
/// ([`Broker::compact_internal_topics`]), retrying until it is done or the broker closes.
async fn compact_internal_topics(broker: Weak<Broker>) {
    loop {
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if strong.closed.is_set() || strong.stopping.is_set() {
            return;
        }
        if strong.compact_internal_topics().await {
            return;
        }
        drop(strong);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When the next heartbeat goes (Kafka's `BrokerLifecycleManager`): a heartbeat interval after
/// an answered one; after a failed one, a backoff from 100 ms doubling with each failure in a
/// row, capped at `broker.session.timeout.ms`, with 2 % jitter. A broker that waited a whole
/// interval after a failure (a heartbeat itself may take up to half the session before it
/// fails) had little of its session left for the next, and was fenced for one lost heartbeat.
#[derive(Debug)]
struct HeartbeatSchedule {
    interval: Duration,
    session_timeout: Duration,
    failed_attempts: u32,
}

impl HeartbeatSchedule {
    const INITIAL_BACKOFF_MS: f64 = 100.0;
    const JITTER: f64 = 0.02;

    fn new(interval: Duration, session_timeout: Duration) -> HeartbeatSchedule {
        HeartbeatSchedule {
            interval,
            session_timeout,
            failed_attempts: 0,
        }
    }

    fn after_success(&mut self) -> Duration {
        self.failed_attempts = 0;
        self.interval
    }

    /// `draw` in [0, 1) picks the jitter.
    fn after_failure(&mut self, draw: f64) -> Duration {
        let exp = self.failed_attempts.min(62);
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        let cap_ms = self.session_timeout.as_millis() as f64;
        let term = (Self::INITIAL_BACKOFF_MS * 2f64.powi(exp as i32)).min(cap_ms);
        let factor = 1.0 - Self::JITTER + 2.0 * Self::JITTER * draw;
        Duration::from_millis((term * factor) as u64)
    }
}

/// Heartbeats every `broker.heartbeat.interval.ms` until the broker closes; a failed heartbeat
/// is retried sooner ([`HeartbeatSchedule`]).
async fn heartbeat(broker: Weak<Broker>) {
    let Some(mut schedule) = broker.upgrade().map(|b| {
        HeartbeatSchedule::new(
            Duration::from_millis(b.config.broker_heartbeat_interval_ms),
            Duration::from_millis(b.config.broker_session_timeout_ms),
        )
    }) else {
        return;
    };
    let mut wait = schedule.interval;
    loop {
        tokio::time::sleep(wait).await;
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if strong.closed.is_set() || strong.stopping.is_set() {
            return;
        }
        wait = match strong.send_heartbeat(false).await {
            Ok((fenced, _)) => {
                if fenced {
                    tracing::warn!(
                        broker_epoch = strong.broker_epoch(),
                        "this broker is fenced"
                    );
                }
                schedule.after_success()
            }
            Err(e) => {
                let draw = (crate::random::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let backoff = schedule.after_failure(draw);
                tracing::info!(%e, retry_in_ms = backoff.as_millis() as u64, "heartbeat failed; retrying");
                backoff
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::MetadataRecord;

    #[test]
    fn a_failed_heartbeat_is_retried_within_a_fraction_of_the_session_not_after_a_whole_interval() {
        // Kafka's defaults: a heartbeat every 2 s, a session of 9 s. A heartbeat that fails
        // may have taken half the session already; the next must not wait another interval.
        let interval = Duration::from_millis(2_000);
        let session = Duration::from_millis(9_000);
        let mut schedule = HeartbeatSchedule::new(interval, session);
        assert_eq!(schedule.after_success(), interval);
        let retries: Vec<u128> = (0..4)
            .map(|_| schedule.after_failure(0.5).as_millis())
            .collect();
        assert_eq!(retries, vec![100, 200, 400, 800], "from 100 ms, doubling");
        let total: u128 = retries.iter().sum();
        assert!(
            total < session.as_millis() / 4,
            "four retries in a row fit in a quarter of the session: {total} ms"
        );
        for _ in 0..100 {
            assert!(schedule.after_failure(0.999) <= session.mul_f64(1.02));
        }
        let jittered = HeartbeatSchedule::new(interval, session).after_failure(0.0);
        assert_eq!(jittered.as_millis(), 98, "2 % jitter");
        assert_eq!(
            schedule.after_success(),
            interval,
            "an answered heartbeat resets the backoff"
        );
        assert_eq!(schedule.after_failure(0.5).as_millis(), 100);
    }

    /// An image with brokers `1..=registered`, the first `live` of them unfenced.
    fn image(registered: i32, live: i32) -> ClusterImage {
        let mut image = ClusterImage::empty();
        for id in 1..=registered {
            image.apply(
                image.metadata_offset + 1,
                &[MetadataRecord::RegisterBroker {
                    id,
                    incarnation_id: Uuid::from_u128(id as u128),
                    epoch: i64::from(id),
                    endpoint: endpoint_of("127.0.0.1:9092"),
                    controller_endpoint: None,
                    rack: None,
                }],
            );
        }
        for id in 1..=live {
            image.apply(
                image.metadata_offset + 1,
                &[MetadataRecord::UnfenceBroker {
                    id,
                    epoch: i64::from(id),
                }],
            );
        }
        image
    }

    #[test]
    fn the_offsets_topic_takes_the_configured_replicas_capped_at_the_live_brokers() {
        assert_eq!(offsets_topic_replication_factor(3, &image(1, 1)), 1);
        assert_eq!(offsets_topic_replication_factor(3, &image(3, 2)), 2);
        assert_eq!(offsets_topic_replication_factor(3, &image(5, 5)), 3);
        assert_eq!(offsets_topic_replication_factor(1, &image(3, 3)), 1);
        assert_eq!(offsets_topic_replication_factor(3, &image(0, 0)), 1);
    }
}
