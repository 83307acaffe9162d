//! Broker and topic configuration.
//!
//! [`BrokerConfig`] is what `faultline broker` runs with: embedded defaults, overridden by a TOML
//! file (`--config`), overridden by flags. Its keys are the flags' names (`listen`,
//! `data-dir`, ...); `--print-config` prints the effective configuration as TOML.
//!
//! [`TopicConfigs`] are Kafka's topic-level settings (`retention.ms`, `segment.bytes`, ...), with
//! Kafka's names and validation, as CreateTopics, DescribeConfigs and IncrementalAlterConfigs
//! see them. Each topic stores only its overrides; the broker's defaults fill in the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::log::{FlushPolicy, LogConfig};

/// How the broker makes appended records durable (see `log::FlushPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// acks=all is answered once the batch is synced (group commit). Faultline's default.
    Durable,
    /// Kafka's default: the page cache, flushed by `flush.messages` / `flush.ms`.
    Lazy,
}

/// The default of [`BrokerConfig::num_recovery_threads_per_data_dir`]. Kafka's default is one
/// thread; here each log's open or close is a handful of syncs waited on off the runtime, and
/// on this machine's disk 32 of them at once overlap well (measured: see README, start-up).
pub const DEFAULT_RECOVERY_CONCURRENCY: u32 = 32;

/// [`BrokerConfig::replica_selector`]'s choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaSelector {
    /// Consumers read from the leader (Kafka's default: no `replica.selector.class`).
    #[default]
    Leader,
    /// Kafka's `RackAwareReplicaSelector`: the leader if it is in the consumer's rack, else the
    /// most caught-up in-sync replica in that rack, else the leader.
    RackAware,
}

impl std::str::FromStr for ReplicaSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<ReplicaSelector, String> {
        match s {
            "leader" => Ok(ReplicaSelector::Leader),
            // Kafka's class name, as a Kafka config file names it.
            "rack-aware" | "org.apache.kafka.common.replica.RackAwareReplicaSelector" => {
                Ok(ReplicaSelector::RackAware)
            }
            other => Err(format!(
                "Invalid value {other:?} for configuration replica-selector: expected leader or \
                 rack-aware"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Address clients are told to connect to (Metadata); defaults to `listen`.
    pub advertised_listener: Option<String>,
    pub data_dir: PathBuf,
    pub node_id: i32,
    /// Create a topic when a client first asks for it (`auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: i32,
    /// `socket.request.max.bytes`: larger frames close the connection.
    pub socket_request_max_bytes: usize,
    /// `log.flush.policy`-like switch: durable or lazy.
    pub flush_mode: FlushMode,
    /// Defaults for every topic's `flush.messages` / `flush.ms` under the lazy mode.
    pub log_flush_interval_messages: Option<u64>,
    pub log_flush_interval_ms: Option<i64>,
    /// `log.segment.bytes`, `log.roll.ms`, `log.retention.ms` (-1: keep forever),
    /// `log.retention.bytes` (-1: no limit), `message.max.bytes`.
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub message_max_bytes: u64,
    /// `log.retention.check.interval.ms`: how often retention runs.
    pub log_retention_check_interval_ms: u64,
    /// `group.initial.rebalance.delay.ms`: how long a new group's first rebalance waits for
    /// more members (Kafka's default 3000; 0 forms groups at once, as in tests).
    pub group_initial_rebalance_delay_ms: i64,
    /// `offsets.retention.minutes`: committed offsets of an empty group expire this long after
    /// it became empty (KIP-211).
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are removed.
    pub offsets_retention_check_interval_ms: u64,
    /// `offsets.topic.num.partitions`: partitions `__consumer_offsets` is created with (groups
    /// are spread over them). An existing offsets topic keeps the count it has.
    pub offsets_topic_num_partitions: i32,
    /// `max.connections`: connections open at once; a new one over it is closed at once.
    pub max_connections: u32,
    /// `max.connections.per.ip`: connections open at once from one client address.
    pub max_connections_per_ip: u32,
    /// `max.connections.per.ip.overrides`: per-address exceptions to the above (in TOML, a
    /// table of address = limit; 0 refuses an address).
    pub max_connections_per_ip_overrides: BTreeMap<std::net::IpAddr, u32>,
    /// How long a shutdown (SIGTERM) may wait for connections to flush their responses, after
    /// parked requests were answered; connections still busy then are closed regardless.
    pub shutdown_timeout_ms: u64,
    /// tracing filter, e.g. `info` or `broker=debug`; `RUST_LOG` wins when set.
    pub log_level: String,
    /// Where this node's replica of the metadata log listens for the quorum's traffic (raft
    /// RPC), Kafka's controller listener. Needed by every node of a cluster: voters are dialled
    /// on it and learners receive the log on it. Unset with no `controller-quorum`: a cluster
    /// of one, with no quorum network.
    pub controller_listen: Option<String>,
    /// `controller.quorum.voters`: `1@127.0.0.1:9093,2@127.0.0.1:9193,...`. Unset: this node is
    /// a quorum of one (itself the only voter). See [`BrokerConfig::quorum_voters`].
    pub controller_quorum: Option<String>,
    /// `broker.rack`: placement spreads a partition's replicas over racks.
    pub broker_rack: Option<String>,
    /// `replica.selector.class` (KIP-392): which replica a leader sends a consumer to read
    /// from when the consumer names its rack (Fetch v11+ `rack_id`, librdkafka's
    /// `client.rack`).
    pub replica_selector: ReplicaSelector,
    /// `broker.heartbeat.interval.ms`: how often the broker heartbeats to the active controller.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker without a heartbeat this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `default.replication.factor`: replicas of a topic created without one.
    pub default_replication_factor: i16,
    /// `min.insync.replicas`: the default of the topic config of that name (acks=all is refused
    /// while the ISR is smaller).
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable`: the default of the topic config of that name (may a
    /// replica outside the ISR lead when no ISR member is alive, losing what it lacks).
    pub unclean_leader_election_enable: bool,
    /// `eligible.leader.replicas.enable` (KIP-966's `eligible.leader.replicas.version` feature,
    /// off by default): a leader's high watermark moves only while its ISR has at least
    /// `min.insync.replicas` members, replicas leaving an ISR below that become eligible
    /// leaders, and when no ISR member is left one of them leads without losing anything.
    /// Cluster-wide: give every node the same value.
    pub eligible_leader_replicas_enable: bool,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets`, capped at the live
    /// brokers when it is created.
    pub offsets_topic_replication_factor: i16,
    /// `auto.leader.rebalance.enable`: the controller gives leaderships back to preferred
    /// replicas (the first of each partition's replicas) once they are in sync again.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often it looks.
    pub leader_imbalance_check_interval_seconds: u64,
    /// `replica.lag.time.max.ms`: an ISR member that has not caught up with the leader's log
    /// end for this long leaves the ISR; the leader checks every half of it.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`: what a follower asks of one partition per fetch (Kafka: 1 MiB).
    pub replica_fetch_max_bytes: u32,
    /// `replica.fetch.response.max.bytes`: what a follower asks of one fetch in all (Kafka:
    /// 10 MiB). A partition too far behind to move the high watermark may take all of it (see
    /// `replica::fetcher`).
    pub replica_fetch_response_max_bytes: u32,
    /// Metadata log entries between snapshots of the cluster image (Kafka counts bytes:
    /// `metadata.log.max.record.bytes.between.snapshots`); the log is purged below a snapshot.
    pub metadata_snapshot_every: u64,
    /// `log.cleaner.enable`: run the log cleaner, which compacts topics whose
    /// `cleanup.policy` holds `compact`.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.dedupe.buffer.size`: the cleaner's offset map budget in bytes (its keys and
    /// their latest offsets); a larger one cleans more of a log per pass.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// `log.cleaner.io.max.bytes.per.second`: the cleaner's read plus write rate cap.
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: how long the cleaner sleeps when no log needs cleaning.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.min.cleanable.ratio`, `log.cleaner.delete.retention.ms`,
    /// `log.cleaner.min.compaction.lag.ms`, `log.cleaner.max.compaction.lag.ms`: the defaults
    /// of the topic configs `min.cleanable.dirty.ratio`, `delete.retention.ms`,
    /// `min.compaction.lag.ms`, `max.compaction.lag.ms`.
    pub log_cleaner_min_cleanable_ratio: f64,
    pub log_cleaner_delete_retention_ms: i64,
    pub log_cleaner_min_compaction_lag_ms: i64,
    pub log_cleaner_max_compaction_lag_ms: i64,
    /// `num.recovery.threads.per.data.dir`: how many partition logs are opened (recovered),
    /// created or closed at once at start, topic creation and clean shutdown. Those are mostly
    /// waits on the disk's syncs, which overlap (the file system commits them together), so
    /// this bounds concurrent tasks, not CPU threads.
    pub num_recovery_threads_per_data_dir: u32,
    /// `transaction.state.log.num.partitions`: partitions `__transaction_state` is created
    /// with (transactional ids are spread over them).
    pub transaction_state_log_num_partitions: i32,
    /// `transaction.state.log.replication.factor`: replicas of `__transaction_state`, capped
    /// at the live brokers when it is created.
    pub transaction_state_log_replication_factor: i16,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask
    /// for (INVALID_TRANSACTION_TIMEOUT above it).
    pub transaction_max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often the
    /// coordinator aborts transactions past their timeout.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// `transactional.id.expiration.ms`: a transactional id with no transaction in flight that
    /// was not updated for this long is removed (a tombstone in `__transaction_state`).
    pub transactional_id_expiration_ms: i32,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`: how often the coordinator
    /// removes expired transactional ids.
    pub transaction_remove_expired_transaction_cleanup_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            listen: "127.0.0.1:9092".into(),
            advertised_listener: None,
            data_dir: PathBuf::from("./faultline-data"),
            node_id: 1,
            auto_create_topics: true,
            num_partitions: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            flush_mode: FlushMode::Durable,
            log_flush_interval_messages: None,
            log_flush_interval_ms: None,
            log_segment_bytes: 1 << 30,
            log_roll_ms: 7 * 24 * 60 * 60 * 1000,
            log_retention_ms: 7 * 24 * 60 * 60 * 1000,
            log_retention_bytes: -1,
            message_max_bytes: 1_048_588,
            log_retention_check_interval_ms: 300_000,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            offsets_topic_num_partitions: 50,
            // Kafka's defaults: no limit (Int.MaxValue).
            max_connections: i32::MAX as u32,
            max_connections_per_ip: i32::MAX as u32,
            max_connections_per_ip_overrides: BTreeMap::new(),
            shutdown_timeout_ms: 5_000,
            log_level: "info".into(),
            controller_listen: None,
            controller_quorum: None,
            broker_rack: None,
            replica_selector: ReplicaSelector::Leader,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            eligible_leader_replicas_enable: false,
            offsets_topic_replication_factor: 3,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            metadata_snapshot_every: 1_000,
            log_cleaner_enable: true,
            log_cleaner_dedupe_buffer_size: 128 * 1024 * 1024,
            log_cleaner_io_max_bytes_per_second: f64::MAX,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_min_cleanable_ratio: 0.5,
            log_cleaner_delete_retention_ms: 24 * 60 * 60 * 1000,
            log_cleaner_min_compaction_lag_ms: 0,
            log_cleaner_max_compaction_lag_ms: i64::MAX,
            num_recovery_threads_per_data_dir: DEFAULT_RECOVERY_CONCURRENCY,
            transaction_state_log_num_partitions: 50,
            transaction_state_log_replication_factor: 3,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_remove_expired_transaction_cleanup_interval_ms: 3_600_000,
        }
    }
}

impl BrokerConfig {
    /// Parses a TOML configuration file's text; unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<BrokerConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Refuses out-of-range values at start, with Kafka's message and Kafka's bounds (a
    /// `num.partitions` of 0 or a `log.segment.bytes` of 0 is accepted by a TOML parser and
    /// breaks the first topic or the first append much later).
    pub fn validate(&self) -> Result<(), InvalidBrokerConfig> {
        fn at_least(key: &'static str, value: i64, min: i64) -> Result<(), InvalidBrokerConfig> {
            if value < min {
                return Err(InvalidBrokerConfig {
                    key,
                    value: value.to_string(),
                    reason: format!("Value must be at least {min}"),
                });
            }
            Ok(())
        }
        fn at_most(key: &'static str, value: i64, max: i64) -> Result<(), InvalidBrokerConfig> {
            if value > max {
                return Err(InvalidBrokerConfig {
                    key,
                    value: value.to_string(),
                    reason: format!("Value must be no more than {max}"),
                });
            }
            Ok(())
        }
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        at_least("node-id", self.node_id.into(), 0)?;
        at_least("num-partitions", self.num_partitions.into(), 1)?;
        at_most(
            "num-partitions",
            self.num_partitions.into(),
            crate::broker::MAX_PARTITIONS_PER_TOPIC.into(),
        )?;
        at_least(
            "socket-request-max-bytes",
            int(self.socket_request_max_bytes as u64),
            1,
        )?;
        if let Some(v) = self.log_flush_interval_messages {
            at_least("log-flush-interval-messages", int(v), 1)?;
        }
        if let Some(v) = self.log_flush_interval_ms {
            at_least("log-flush-interval-ms", v, 0)?;
        }
        // Kafka: at least the size of a v0 record's overhead, and an int.
        at_least("log-segment-bytes", int(self.log_segment_bytes), 14)?;
        at_most(
            "log-segment-bytes",
            int(self.log_segment_bytes),
            i32::MAX.into(),
        )?;
        at_least("log-roll-ms", self.log_roll_ms, 1)?;
        at_least("log-retention-ms", self.log_retention_ms, -1)?;
        at_least("log-retention-bytes", self.log_retention_bytes, -1)?;
        at_most(
            "message-max-bytes",
            int(self.message_max_bytes),
            i32::MAX.into(),
        )?;
        at_least(
            "log-retention-check-interval-ms",
            int(self.log_retention_check_interval_ms),
            1,
        )?;
        at_least(
            "group-initial-rebalance-delay-ms",
            self.group_initial_rebalance_delay_ms,
            0,
        )?;
        at_least(
            "offsets-retention-minutes",
            self.offsets_retention_minutes,
            1,
        )?;
        at_least(
            "offsets-retention-check-interval-ms",
            int(self.offsets_retention_check_interval_ms),
            1,
        )?;
        at_least(
            "offsets-topic-num-partitions",
            self.offsets_topic_num_partitions.into(),
            1,
        )?;
        at_most(
            "offsets-topic-num-partitions",
            self.offsets_topic_num_partitions.into(),
            crate::broker::MAX_PARTITIONS_PER_TOPIC.into(),
        )?;
        at_least(
            "transaction-state-log-num-partitions",
            self.transaction_state_log_num_partitions.into(),
            1,
        )?;
        at_most(
            "transaction-state-log-num-partitions",
            self.transaction_state_log_num_partitions.into(),
            crate::broker::MAX_PARTITIONS_PER_TOPIC.into(),
        )?;
        at_least(
            "transaction-state-log-replication-factor",
            self.transaction_state_log_replication_factor.into(),
            1,
        )?;
        at_least(
            "transaction-max-timeout-ms",
            self.transaction_max_timeout_ms.into(),
            1,
        )?;
        at_least(
            "transaction-abort-timed-out-transaction-cleanup-interval-ms",
            int(self.transaction_abort_timed_out_transaction_cleanup_interval_ms),
            1,
        )?;
        at_least(
            "transactional-id-expiration-ms",
            self.transactional_id_expiration_ms.into(),
            1,
        )?;
        at_least(
            "transaction-remove-expired-transaction-cleanup-interval-ms",
            int(self.transaction_remove_expired_transaction_cleanup_interval_ms),
            1,
        )?;
        at_least(
            "broker-heartbeat-interval-ms",
            int(self.broker_heartbeat_interval_ms),
            1,
        )?;
        at_least(
            "broker-session-timeout-ms",
            int(self.broker_session_timeout_ms),
            1,
        )?;
        // A session shorter than the heartbeat interval fences every broker between two beats.
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms {
            return Err(InvalidBrokerConfig {
                key: "broker-heartbeat-interval-ms",
                value: self.broker_heartbeat_interval_ms.to_string(),
                reason: format!(
                    "Value must be less than broker-session-timeout-ms ({})",
                    self.broker_session_timeout_ms
                ),
            });
        }
        at_least(
            "default-replication-factor",
            self.default_replication_factor.into(),
            1,
        )?;
        at_least("min-insync-replicas", self.min_insync_replicas.into(), 1)?;
        at_least(
            "offsets-topic-replication-factor",
            self.offsets_topic_replication_factor.into(),
            1,
        )?;
        at_least(
            "leader-imbalance-check-interval-seconds",
            int(self.leader_imbalance_check_interval_seconds),
            1,
        )?;
        at_least(
            "replica-lag-time-max-ms",
            int(self.replica_lag_time_max_ms),
            1,
        )?;
        // A response holds at least one partition's worth.
        at_least(
            "replica-fetch-response-max-bytes",
            self.replica_fetch_response_max_bytes.into(),
            self.replica_fetch_max_bytes.into(),
        )?;
        // Kafka: the dedupe buffer must hold at least one entry per cleaner thread.
        at_least(
            "log-cleaner-dedupe-buffer-size",
            int(self.log_cleaner_dedupe_buffer_size),
            1024 * 1024,
        )?;
        at_least(
            "log-cleaner-backoff-ms",
            int(self.log_cleaner_backoff_ms),
            0,
        )?;
        if !(0.0..=1.0).contains(&self.log_cleaner_min_cleanable_ratio) {
            return Err(InvalidBrokerConfig {
                key: "log-cleaner-min-cleanable-ratio",
                value: self.log_cleaner_min_cleanable_ratio.to_string(),
                reason: "Value must be no more than 1".into(),
            });
        }
        if self.log_cleaner_io_max_bytes_per_second.is_nan()
            || self.log_cleaner_io_max_bytes_per_second <= 0.0
        {
            return Err(InvalidBrokerConfig {
                key: "log-cleaner-io-max-bytes-per-second",
                value: self.log_cleaner_io_max_bytes_per_second.to_string(),
                reason: "Value must be positive".into(),
            });
        }
        at_least(
            "log-cleaner-delete-retention-ms",
            self.log_cleaner_delete_retention_ms,
            0,
        )?;
        at_least(
            "log-cleaner-min-compaction-lag-ms",
            self.log_cleaner_min_compaction_lag_ms,
            0,
        )?;
        at_least(
            "log-cleaner-max-compaction-lag-ms",
            self.log_cleaner_max_compaction_lag_ms,
            1,
        )?;
        at_least(
            "metadata-snapshot-every",
            int(self.metadata_snapshot_every),
            1,
        )?;
        at_least(
            "num-recovery-threads-per-data-dir",
            self.num_recovery_threads_per_data_dir.into(),
            1,
        )?;
        if self
            .broker_rack
            .as_deref()
            .is_some_and(|r| r.trim().is_empty())
        {
            return Err(InvalidBrokerConfig {
                key: "broker-rack",
                value: "\"\"".into(),
                reason: "Value must not be empty (leave it unset for no rack)".into(),
            });
        }
        let voters = self.quorum_voters()?;
        self.check_controller_listen(&voters)?;
        Ok(())
    }

    /// The voters of the metadata quorum, parsed from `controller-quorum`
    /// (`controller.quorum.voters`: `ID@HOST:PORT` separated by commas); empty when unset, which
    /// makes this node a quorum of one. Refused: an entry that is not `ID@HOST:PORT`, an id
    /// below 0, port 0 (the others could not dial it), an id or an address listed twice.
    pub fn quorum_voters(&self) -> Result<Vec<QuorumVoter>, InvalidBrokerConfig> {
        let Some(text) = self.controller_quorum.as_deref() else {
            return Ok(Vec::new());
        };
        let bad = |reason: String| InvalidBrokerConfig {
            key: "controller-quorum",
            value: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(bad(
                "Value must list the voters as ID@HOST:PORT separated by commas, \
                 e.g. 1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293 \
                 (leave it unset for a cluster of one)"
                    .into(),
            ));
        }
        let mut voters: Vec<QuorumVoter> = Vec::new();
        for entry in text.split(',').map(str::trim) {
            let Some((id, address)) = entry.split_once('@') else {
                return Err(bad(format!("voter {entry:?} is not ID@HOST:PORT")));
            };
            let Some(id) = id.trim().parse::<i32>().ok().filter(|id| *id >= 0) else {
                return Err(bad(format!(
                    "voter {entry:?}: {id:?} is not a node id (an integer of at least 0)"
                )));
            };
            let Some((host, port)) = parse_host_port(address) else {
                return Err(bad(format!(
                    "voter {entry:?}: {address:?} is not HOST:PORT"
                )));
            };
            if port == 0 {
                return Err(bad(format!(
                    "voter {entry:?}: port 0 is not an address the other voters can dial"
                )));
            }
            if voters.iter().any(|v| v.id == id) {
                return Err(bad(format!("voter id {id} is listed twice")));
            }
            if let Some(other) = voters.iter().find(|v| v.host == host && v.port == port) {
                return Err(bad(format!(
                    "voters {} and {id} have the same address {address}",
                    other.id
                )));
            }
            voters.push(QuorumVoter { id, host, port });
        }
        Ok(voters)
    }

    /// `controller-listen` against the quorum: a cluster of one has no quorum network; in a
    /// cluster every node needs it (voters are dialled there, learners receive the log there),
    /// and a voter must listen on the port the others dial.
    fn check_controller_listen(&self, voters: &[QuorumVoter]) -> Result<(), InvalidBrokerConfig> {
        let me = voters.iter().find(|v| v.id == self.node_id);
        let bad = |reason: String| InvalidBrokerConfig {
            key: "controller-listen",
            value: self
                .controller_listen
                .clone()
                .unwrap_or_else(|| "(unset)".into()),
            reason,
        };
        let Some(listen) = self.controller_listen.as_deref() else {
            return match (voters.is_empty(), me) {
                (true, _) => Ok(()),
                (false, Some(me)) => Err(bad(format!(
                    "node {} is voter {me} in controller-quorum, so it must listen there: \
                     set controller-listen",
                    self.node_id
                ))),
                (false, None) => Err(bad(format!(
                    "node {} is not a voter in controller-quorum: it joins as a learner and \
                     receives the metadata log on controller-listen, which must be set",
                    self.node_id
                ))),
            };
        };
        if voters.is_empty() {
            return Err(bad(
                "Value needs controller-quorum: with no quorum a node is a cluster of one and \
                 listens for no quorum traffic"
                    .into(),
            ));
        }
        let Some((_, port)) = parse_host_port(listen) else {
            return Err(bad("Value is not HOST:PORT".into()));
        };
        if let Some(me) = me {
            if port != me.port {
                return Err(bad(format!(
                    "node {} is voter {me} in controller-quorum, but controller-listen is on \
                     port {port}",
                    self.node_id
                )));
            }
        }
        if listen == self.listen {
            return Err(bad(format!(
                "Value must differ from listen ({}): client and quorum traffic need their own \
                 listeners",
                self.listen
            )));
        }
        Ok(())
    }

    /// What this node's metadata quorum starts with ([`crate::controller::raft::RaftPlane`]):
    /// the voters (none: a quorum of one, no network), the controller listener, the snapshot
    /// interval and the controller's settings. `cluster_id_if_new` is the id an empty metadata
    /// log takes (a single broker's data directory keeps its own).
    pub fn quorum_config(
        &self,
        cluster_id_if_new: Option<String>,
    ) -> Result<crate::controller::raft::QuorumConfig, InvalidBrokerConfig> {
        use crate::controller::raft::{QuorumConfig, QuorumTimeouts, Voter};
        let voters = self.quorum_voters()?;
        self.check_controller_listen(&voters)?;
        Ok(QuorumConfig {
            node_id: self.node_id,
            voters: voters
                .iter()
                .map(|v| Voter {
                    id: v.id,
                    address: v.address(),
                })
                .collect(),
            listen: self.controller_listen.clone(),
            // A voter is dialled where the voters list says; a learner where it listens.
            advertised: None,
            data_dir: self.data_dir.clone(),
            cluster_id_if_new,
            snapshot_every: self.metadata_snapshot_every,
            timeouts: QuorumTimeouts::default(),
            settings: self.controller_settings(),
        })
    }

    /// The active controller's settings this configuration gives.
    pub fn controller_settings(&self) -> crate::controller::decide::ControllerSettings {
        crate::controller::decide::ControllerSettings {
            broker_session_timeout_ms: i64::try_from(self.broker_session_timeout_ms)
                .unwrap_or(i64::MAX),
            default_num_partitions: self.num_partitions,
            default_replication_factor: self.default_replication_factor,
            unclean_leader_election_enable: self.unclean_leader_election_enable,
            eligible_leader_replicas_enable: self.eligible_leader_replicas_enable,
            min_insync_replicas: usize::try_from(self.min_insync_replicas).unwrap_or(1),
            auto_leader_rebalance_enable: self.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_ms: i64::try_from(
                self.leader_imbalance_check_interval_seconds
                    .saturating_mul(1_000),
            )
            .unwrap_or(i64::MAX),
            ..crate::controller::decide::ControllerSettings::default()
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// The address clients are told to use.
    pub fn advertised(&self) -> &str {
        self.advertised_listener.as_deref().unwrap_or(&self.listen)
    }

    /// The transaction coordinator's settings.
    pub fn txn_config(&self) -> crate::txn::coordinator::TxnConfig {
        crate::txn::coordinator::TxnConfig {
            num_partitions: self.transaction_state_log_num_partitions,
            max_timeout_ms: self.transaction_max_timeout_ms,
            abort_check_interval_ms: self
                .transaction_abort_timed_out_transaction_cleanup_interval_ms,
            id_expiration_ms: self.transactional_id_expiration_ms,
            remove_expired_interval_ms: self
                .transaction_remove_expired_transaction_cleanup_interval_ms,
        }
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> crate::group::GroupConfig {
        crate::group::GroupConfig {
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms.max(0),
            offsets_retention_ms: self.offsets_retention_minutes.saturating_mul(60_000),
            offsets_topic_num_partitions: self.offsets_topic_num_partitions,
            ..crate::group::GroupConfig::default()
        }
    }

    /// The broker-wide defaults as topic configs, by Kafka name.
    pub fn topic_defaults(&self) -> BTreeMap<&'static str, String> {
        TOPIC_CONFIG_NAMES
            .iter()
            .filter_map(|&name| Some((name, self.topic_default(name)?)))
            .collect()
    }

    /// The broker-wide default of one topic config (None for a name that is not one), built
    /// alone: the produce path asks for `min.insync.replicas` per request, and building every
    /// default as a string each time cost 2.3 % of a simulated swarm run.
    pub fn topic_default(&self, name: &str) -> Option<String> {
        let opt = |v: Option<i64>| v.map_or("9223372036854775807".to_string(), |v| v.to_string());
        Some(match name {
            "cleanup.policy" => "delete".to_string(),
            "compression.type" => "producer".to_string(),
            "delete.retention.ms" => self.log_cleaner_delete_retention_ms.to_string(),
            "max.compaction.lag.ms" => self.log_cleaner_max_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.log_cleaner_min_cleanable_ratio.to_string(),
            "min.compaction.lag.ms" => self.log_cleaner_min_compaction_lag_ms.to_string(),
            "flush.messages" => opt(self.log_flush_interval_messages.map(|v| v as i64)),
            "file.delete.delay.ms" => FILE_DELETE_DELAY_MS_DEFAULT.to_string(),
            "flush.ms" => opt(self.log_flush_interval_ms),
            "max.message.bytes" => self.message_max_bytes.to_string(),
            "message.format.version" => MESSAGE_FORMAT_VERSION_DEFAULT.to_string(),
            "message.timestamp.type" => "CreateTime".to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "retention.bytes" => self.log_retention_bytes.to_string(),
            "retention.ms" => self.log_retention_ms.to_string(),
            "segment.bytes" => self.log_segment_bytes.to_string(),
            "segment.ms" => self.log_roll_ms.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election_enable.to_string(),
            _ => return None,
        })
    }
}

/// One voter of the metadata quorum (an entry of `controller.quorum.voters`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumVoter {
    pub id: i32,
    /// As written, without the brackets of an IPv6 address.
    pub host: String,
    pub port: u16,
}

impl QuorumVoter {
    /// `host:port`, bracketing an IPv6 host, ready to dial.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for QuorumVoter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, self.address())
    }
}

/// `HOST:PORT` (an IPv6 host in brackets) as host and port; `None` when it is not that shape.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').filter(|h| h.contains(':'))?,
        // An unbracketed IPv6 address is ambiguous: which colon ends the host?
        None if host.contains(':') => return None,
        None => host,
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || "@,[]/".contains(c))
    {
        return None;
    }
    Some((host.to_string(), port))
}

/// Why a broker config was refused at start, in Kafka's words (`ConfigException`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid value {value} for configuration {key}: {reason}")]
pub struct InvalidBrokerConfig {
    /// The key as the TOML file and `--set` spell it.
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

/// Why a topic config was refused. Kafka: INVALID_CONFIG.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for topic config {name}: {reason}")]
pub struct InvalidConfig {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// One described config: its name, effective value, and whether that is the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub is_default: bool,
}

impl ConfigEntry {
    pub fn new(name: impl Into<String>, value: impl Into<String>, is_default: bool) -> ConfigEntry {
        ConfigEntry {
            name: name.into(),
            value: value.into(),
            is_default,
        }
    }
}

/// A topic's configuration overrides, by Kafka name. Only the supported names are accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfigs {
    pub overrides: BTreeMap<String, String>,
}

/// The topic configs Faultline supports, as Kafka names them.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.format.version",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// `file.delete.delay.ms`'s default: Kafka's `log.segment.delete.delay.ms`.
pub const FILE_DELETE_DELAY_MS_DEFAULT: i64 = 60_000;

/// `message.format.version`'s default in Kafka 3.x, which ignores the setting once the
/// inter-broker protocol is 3.0 or later: every batch is magic v2 (all Faultline stores).
pub const MESSAGE_FORMAT_VERSION_DEFAULT: &str = "3.0-IV1";

/// The release lines Kafka 3.x accepts as a `message.format.version` (its `MetadataVersion`
/// keys: three parts before 1.0, two after, each with optional `-IVn` variants).
const MESSAGE_FORMAT_RELEASES: &[&str] = &[
    "0.8.0", "0.8.1", "0.8.2", "0.9.0", "0.10.0", "0.10.1", "0.10.2", "0.11.0", "1.0", "1.1",
    "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "3.0", "3.1", "3.2", "3.3",
    "3.4", "3.5", "3.6", "3.7", "3.8", "3.9",
];

/// Is `value` a version Kafka 3.x takes for `message.format.version`? As Kafka's
/// `MetadataVersion.fromVersionString`: only the release line's parts count (`0.10.0.0` is
/// `0.10.0`, `2.8.1` is `2.8`), and that line, or one of its internal versions (`3.0-IV1`),
/// must exist.
fn is_message_format_version(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    let line_parts = if value.starts_with("0.") { 3 } else { 2 };
    let key = if parts.len() > line_parts {
        parts[..line_parts].join(".")
    } else {
        value.to_string()
    };
    let release = match key.split_once("-IV") {
        Some((release, iv)) if !iv.is_empty() && iv.bytes().all(|b| b.is_ascii_digit()) => release,
        Some(_) => return false,
        None => key.as_str(),
    };
    MESSAGE_FORMAT_RELEASES.contains(&release)
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_i64(name: &str, value: &str, min: i64) -> Result<i64, InvalidConfig> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, "not an integer"))?;
    if v < min {
        return Err(invalid(name, value, format!("must be at least {min}")));
    }
    Ok(v)
}

/// A boolean config as Kafka's `ConfigDef` parses one: `true` or `false`, any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The list configs among the topic configs (IncrementalAlterConfigs APPEND and SUBTRACT
/// work on them).
pub const TOPIC_LIST_CONFIG_NAMES: &[&str] = &["cleanup.policy"];

/// `cleanup.policy`, a list as Kafka's: `compact`, `delete`, or both, comma-separated (and
/// whitespace around each item ignored). Returns (compact, delete).
pub fn parse_cleanup_policy(value: &str) -> Result<(bool, bool), String> {
    let mut compact = false;
    let mut delete = false;
    for item in value.split(',').map(str::trim) {
        match item {
            "compact" => compact = true,
            "delete" => delete = true,
            _ => {
                return Err(format!(
                    "Invalid value {item:?}: expected compact or delete"
                ))
            }
        }
    }
    Ok((compact, delete))
}

/// The items of a list config's value (empty for an empty value).
pub fn list_items(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl TopicConfigs {
    /// IncrementalAlterConfigs APPEND (`subtract` false) or SUBTRACT on a list config: the
    /// items are added (those not yet there) to, or removed from, the effective value (the
    /// override, else the broker default), as Kafka's `ConfigAdminManager` does.
    pub fn alter_list(
        &mut self,
        broker: &BrokerConfig,
        name: &str,
        items: &str,
        subtract: bool,
    ) -> Result<(), InvalidConfig> {
        if !TOPIC_LIST_CONFIG_NAMES.contains(&name) {
            return Err(invalid(
                name,
                items,
                "not a list config: APPEND and SUBTRACT apply only to lists",
            ));
        }
        let mut current = list_items(&self.effective(broker, name).unwrap_or_default());
        for item in list_items(items) {
            if subtract {
                current.retain(|c| *c != item);
            } else if !current.contains(&item) {
                current.push(item);
            }
        }
        self.set(name, &current.join(","))
    }

    /// The topic's `min.insync.replicas`: its override, else the broker default. What the
    /// produce path checks acks=all against.
    pub fn min_insync_replicas(&self, broker: &BrokerConfig) -> usize {
        // Per produce request: the override parsed in place, the default without strings.
        match self.overrides.get("min.insync.replicas") {
            Some(v) => v.trim().parse::<usize>().unwrap_or(1),
            None => usize::try_from(broker.min_insync_replicas).unwrap_or(1),
        }
        .max(1)
    }

    /// Checks one setting.
    pub fn validate(name: &str, value: &str) -> Result<(), InvalidConfig> {
        match name {
            "cleanup.policy" => parse_cleanup_policy(value)
                .map(drop)
                .map_err(|reason| invalid(name, value, reason)),
            "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
                _ => Err(invalid(name, value, "expected a number in [0, 1]")),
            },
            "min.compaction.lag.ms" | "delete.retention.ms" => parse_i64(name, value, 0).map(drop),
            // Accepted as Kafka does, with no effect: Kafka delays removing a deleted segment's
            // files for readers that mapped them; here a read in flight holds its file open,
            // so the files go at once.
            "file.delete.delay.ms" => parse_i64(name, value, 0).map(drop),
            "max.compaction.lag.ms" => parse_i64(name, value, 1).map(drop),
            "compression.type" => crate::compression::parse_compression_type(value)
                .map(drop)
                .map_err(|e| invalid(name, value, e.to_string())),
            "message.format.version" if is_message_format_version(value) => Ok(()),
            "message.format.version" => Err(invalid(
                name,
                value,
                "expected a Kafka version such as 2.8 or 3.0-IV1",
            )),
            "message.timestamp.type" => match value {
                "CreateTime" | "LogAppendTime" => Ok(()),
                _ => Err(invalid(name, value, "expected CreateTime or LogAppendTime")),
            },
            "retention.ms" | "retention.bytes" => parse_i64(name, value, -1).map(drop),
            "segment.bytes" => {
                let v = parse_i64(name, value, 14)?;
                if v > i32::MAX as i64 {
                    return Err(invalid(name, value, "must fit in 2^31-1"));
                }
                Ok(())
            }
            "segment.ms" | "flush.ms" | "flush.messages" | "min.insync.replicas" => {
                parse_i64(name, value, 1).map(drop)
            }
            "max.message.bytes" => parse_i64(name, value, 0).map(drop),
            "unclean.leader.election.enable" => parse_bool(value)
                .map(drop)
                .ok_or_else(|| invalid(name, value, "expected true or false")),
            _ => Err(invalid(name, value, "unknown or unsupported topic config")),
        }
    }

    /// Sets (after validating) one override.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), InvalidConfig> {
        Self::validate(name, value)?;
        self.overrides.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// The effective value: the override, else the broker default.
    pub fn effective(&self, broker: &BrokerConfig, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| broker.topic_default(name))
    }

    /// Every supported config with its effective value.
    pub fn describe(&self, broker: &BrokerConfig) -> Vec<ConfigEntry> {
        let defaults = broker.topic_defaults();
        TOPIC_CONFIG_NAMES
            .iter()
            .map(|&name| match self.overrides.get(name) {
                Some(v) => ConfigEntry::new(name, v.clone(), false),
                None => {
                    ConfigEntry::new(name, defaults.get(name).cloned().unwrap_or_default(), true)
                }
            })
            .collect()
    }

    /// The log configuration these settings give.
    pub fn log_config(&self, broker: &BrokerConfig) -> LogConfig {
        let get = |name: &str| -> i64 {
            self.effective(broker, name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1)
        };
        let positive = |v: i64| (v >= 0).then_some(v);
        let (compact, delete) = self
            .effective(broker, "cleanup.policy")
            .and_then(|v| parse_cleanup_policy(&v).ok())
            .unwrap_or((false, true));
        let flush = match broker.flush_mode {
            FlushMode::Durable => FlushPolicy::Durable,
            FlushMode::Lazy => FlushPolicy::Lazy {
                flush_messages: positive(get("flush.messages"))
                    .filter(|&v| v < i64::MAX)
                    .map(|v| v as u64),
                flush_ms: positive(get("flush.ms")).filter(|&v| v < i64::MAX),
            },
        };
        LogConfig {
            segment_bytes: get("segment.bytes").max(14) as u64,
            segment_ms: get("segment.ms").max(1),
            retention_ms: positive(get("retention.ms")),
            retention_bytes: positive(get("retention.bytes")).map(|v| v as u64),
            max_message_bytes: get("max.message.bytes").max(0) as u64,
            log_append_time: self.effective(broker, "message.timestamp.type").as_deref()
                == Some("LogAppendTime"),
            compression: self
                .effective(broker, "compression.type")
                .and_then(|v| crate::compression::parse_compression_type(&v).ok())
                .flatten(),
            flush,
            compact,
            delete,
            min_cleanable_dirty_ratio: self
                .effective(broker, "min.cleanable.dirty.ratio")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.5),
            min_compaction_lag_ms: get("min.compaction.lag.ms").max(0),
            // Never below the minimum (the controller refuses that pair in one request; a
            // broker default and a topic override can still meet so).
            max_compaction_lag_ms: get("max.compaction.lag.ms")
                .max(1)
                .max(get("min.compaction.lag.ms")),
            delete_retention_ms: get("delete.retention.ms").max(0),
            ..LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_overrides_defaults_and_unknown_keys_are_refused() {
        let config =
            BrokerConfig::from_toml("listen = \"127.0.0.1:9999\"\nnum-partitions = 3\n").unwrap();
        assert_eq!(config.listen, "127.0.0.1:9999");
        assert_eq!(config.num_partitions, 3);
        assert_eq!(config.data_dir, PathBuf::from("./faultline-data"));
        assert!(BrokerConfig::from_toml("lisen = \"x\"")
            .unwrap_err()
            .contains("lisen"));
        let round_trip = BrokerConfig::from_toml(&config.to_toml()).unwrap();
        assert_eq!(round_trip, config);
    }

    /// librdkafka's tests 0081 (CreateTopics with `compression.type=lz4`) and 0092
    /// (AlterConfigs with `message.format.version`) were refused as unknown configs.
    #[test]
    fn compression_type_and_message_format_version_are_accepted_as_kafka_accepts_them() {
        use crate::log::batch::Compression;
        let broker = BrokerConfig::default();
        let mut topic = TopicConfigs::default();
        assert_eq!(
            topic.log_config(&broker).compression,
            None,
            "producer by default"
        );
        for (value, codec) in [
            ("producer", None),
            ("uncompressed", Some(Compression::None)),
            ("gzip", Some(Compression::Gzip)),
            ("snappy", Some(Compression::Snappy)),
            ("lz4", Some(Compression::Lz4)),
            ("zstd", Some(Compression::Zstd)),
        ] {
            topic.set("compression.type", value).unwrap();
            assert_eq!(topic.log_config(&broker).compression, codec, "{value}");
        }
        assert!(topic.set("compression.type", "none").is_err());
        assert!(topic.set("compression.type", "brotli").is_err());
        let accepted = [
            "0.10.0.0",
            "0.10.0",
            "0.11.0-IV2",
            "1.0",
            "2.8.1",
            "2.8.1-IV0",
            "3.0-IV1",
        ];
        for version in accepted {
            topic.set("message.format.version", version).unwrap();
        }
        let refused = ["", "3", "0.10", "4.0", "9.9", "2.8-IV", "x.y", "3.0-IVx"];
        for version in refused {
            assert!(
                topic.set("message.format.version", version).is_err(),
                "{version:?}"
            );
        }
        let described = TopicConfigs::default().describe(&broker);
        assert!(described.contains(&ConfigEntry::new("compression.type", "producer", true)));
        assert!(described.contains(&ConfigEntry::new("message.format.version", "3.0-IV1", true)));
        assert!(topic.describe(&broker).contains(&ConfigEntry::new(
            "compression.type",
            "zstd",
            false
        )));
    }

    /// `cleanup.policy` was refused unless `delete`; it is Kafka's list config.
    #[test]
    fn cleanup_policy_is_a_list_of_compact_and_delete_that_append_and_subtract_change() {
        let broker = BrokerConfig::default();
        let mut topic = TopicConfigs::default();
        let log = topic.log_config(&broker);
        assert!(!log.compact && log.delete, "delete by default");
        for (value, compact, delete) in [
            ("compact", true, false),
            ("delete", false, true),
            ("compact,delete", true, true),
            ("delete, compact", true, true),
        ] {
            topic.set("cleanup.policy", value).unwrap();
            let log = topic.log_config(&broker);
            assert_eq!((log.compact, log.delete), (compact, delete), "{value}");
        }
        for refused in ["", "compacted", "compact,,delete", "none"] {
            assert!(topic.set("cleanup.policy", refused).is_err(), "{refused:?}");
        }
        let mut topic = TopicConfigs::default();
        topic
            .alter_list(&broker, "cleanup.policy", "compact", false)
            .unwrap();
        assert_eq!(topic.overrides["cleanup.policy"], "delete,compact");
        topic
            .alter_list(&broker, "cleanup.policy", "compact", false)
            .unwrap();
        assert_eq!(topic.overrides["cleanup.policy"], "delete,compact");
        topic
            .alter_list(&broker, "cleanup.policy", "delete", true)
            .unwrap();
        assert_eq!(topic.overrides["cleanup.policy"], "compact");
        assert!(
            topic
                .alter_list(&broker, "cleanup.policy", "compact", true)
                .is_err(),
            "a policy of nothing is refused"
        );
        assert!(topic
            .alter_list(&broker, "retention.ms", "1", false)
            .is_err());
        topic.set("min.cleanable.dirty.ratio", "0.1").unwrap();
        topic.set("min.compaction.lag.ms", "1000").unwrap();
        topic.set("max.compaction.lag.ms", "60000").unwrap();
        topic.set("delete.retention.ms", "5000").unwrap();
        assert!(topic.set("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(topic.set("max.compaction.lag.ms", "0").is_err());
        let log = topic.log_config(&broker);
        assert_eq!(log.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(log.min_compaction_lag_ms, 1000);
        assert_eq!(log.max_compaction_lag_ms, 60_000);
        assert_eq!(log.delete_retention_ms, 5000);
        assert_eq!(log.max_segment_ms(), 60_000);
        let described = TopicConfigs::default().describe(&broker);
        assert!(described.contains(&ConfigEntry::new("cleanup.policy", "delete", true)));
        assert!(described.contains(&ConfigEntry::new("min.cleanable.dirty.ratio", "0.5", true)));
    }

    fn quorum(node_id: i32, listen: Option<&str>, voters: &str) -> BrokerConfig {
        BrokerConfig {
            node_id,
            controller_listen: listen.map(String::from),
            controller_quorum: Some(voters.into()),
            ..BrokerConfig::default()
        }
    }

    fn refusal(config: &BrokerConfig) -> String {
        config.validate().expect_err("refused").to_string()
    }

    #[test]
    fn quorum_voters_are_parsed_from_kraft_form_and_a_node_without_them_is_a_cluster_of_one() {
        assert_eq!(BrokerConfig::default().quorum_voters(), Ok(Vec::new()));
        BrokerConfig::default().validate().unwrap();
        let config = quorum(
            2,
            Some("0.0.0.0:9193"),
            " 1@127.0.0.1:9093, 2@127.0.0.1:9193,3@[::1]:9293",
        );
        config.validate().unwrap();
        let voters = config.quorum_voters().unwrap();
        let shown: Vec<String> = voters.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            shown,
            ["1@127.0.0.1:9093", "2@127.0.0.1:9193", "3@[::1]:9293"]
        );
        assert_eq!(voters[2].host, "::1");
        // A node that is not a voter joins as a learner, on a port of its choosing.
        quorum(4, Some("127.0.0.1:0"), "1@127.0.0.1:9093")
            .validate()
            .unwrap();
    }

    #[test]
    fn a_malformed_quorum_is_refused_with_the_entry_at_fault() {
        let refused = [
            ("", "Value must list the voters as ID@HOST:PORT"),
            ("1@127.0.0.1:9093,", "voter \"\" is not ID@HOST:PORT"),
            (
                "1-127.0.0.1:9093",
                "voter \"1-127.0.0.1:9093\" is not ID@HOST:PORT",
            ),
            (
                "x@127.0.0.1:9093",
                "voter \"x@127.0.0.1:9093\": \"x\" is not a node id (an integer of at least 0)",
            ),
            ("-1@127.0.0.1:9093", "\"-1\" is not a node id"),
            (
                "1@127.0.0.1",
                "voter \"1@127.0.0.1\": \"127.0.0.1\" is not HOST:PORT",
            ),
            ("1@127.0.0.1:70000", "\"127.0.0.1:70000\" is not HOST:PORT"),
            ("1@:9093", "\":9093\" is not HOST:PORT"),
            ("1@::1:9093", "\"::1:9093\" is not HOST:PORT"),
            (
                "1@127.0.0.1:0",
                "port 0 is not an address the other voters can dial",
            ),
            (
                "1@127.0.0.1:9093,1@127.0.0.1:9193",
                "voter id 1 is listed twice",
            ),
            (
                "1@127.0.0.1:9093,2@127.0.0.1:9093",
                "voters 1 and 2 have the same address 127.0.0.1:9093",
            ),
        ];
        for (voters, reason) in refused {
            let message = refusal(&quorum(1, Some("127.0.0.1:9093"), voters));
            let expected = format!("Invalid value {voters} for configuration controller-quorum: ");
            assert!(message.starts_with(&expected), "{voters:?}: {message}");
            assert!(message.contains(reason), "{voters:?}: {message}");
        }
    }

    #[test]
    fn controller_listen_must_match_the_nodes_place_in_the_quorum() {
        let voters = "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293";
        assert_eq!(
            refusal(&quorum(2, None, voters)),
            "Invalid value (unset) for configuration controller-listen: node 2 is voter \
             2@127.0.0.1:9193 in controller-quorum, so it must listen there: set controller-listen"
        );
        assert_eq!(
            refusal(&quorum(2, Some("127.0.0.1:9194"), voters)),
            "Invalid value 127.0.0.1:9194 for configuration controller-listen: node 2 is voter \
             2@127.0.0.1:9193 in controller-quorum, but controller-listen is on port 9194"
        );
        assert!(refusal(&quorum(4, None, voters)).contains(
            "node 4 is not a voter in controller-quorum: it joins as a learner and receives the \
             metadata log on controller-listen, which must be set"
        ));
        let alone = BrokerConfig {
            controller_listen: Some("127.0.0.1:9093".into()),
            ..BrokerConfig::default()
        };
        assert!(refusal(&alone).contains("Value needs controller-quorum"));
        let same = BrokerConfig {
            listen: "127.0.0.1:9093".into(),
            ..quorum(1, Some("127.0.0.1:9093"), voters)
        };
        assert!(refusal(&same).contains("Value must differ from listen (127.0.0.1:9093)"));
        assert!(refusal(&quorum(1, Some("9093"), voters)).contains("Value is not HOST:PORT"));
    }

    #[test]
    fn cluster_settings_have_kafkas_defaults_and_bounds() {
        let config = BrokerConfig::default();
        assert_eq!(config.broker_heartbeat_interval_ms, 2_000);
        assert_eq!(config.broker_session_timeout_ms, 9_000);
        assert_eq!(config.default_replication_factor, 1);
        assert_eq!(config.offsets_topic_num_partitions, 50);
        let settings = config.controller_settings();
        assert_eq!(settings.broker_session_timeout_ms, 9_000);
        assert_eq!(settings.default_replication_factor, 1);
        assert_eq!(settings.default_num_partitions, 1);
        let refused = [
            (
                "broker-heartbeat-interval-ms = 9000",
                "Invalid value 9000 for configuration broker-heartbeat-interval-ms: Value must be \
                 less than broker-session-timeout-ms (9000)",
            ),
            (
                "broker-session-timeout-ms = 0",
                "Invalid value 0 for configuration broker-session-timeout-ms: Value must be at least 1",
            ),
            (
                "default-replication-factor = 0",
                "Invalid value 0 for configuration default-replication-factor: Value must be at least 1",
            ),
            (
                "offsets-topic-num-partitions = 0",
                "Invalid value 0 for configuration offsets-topic-num-partitions: Value must be at least 1",
            ),
            (
                "metadata-snapshot-every = 0",
                "Invalid value 0 for configuration metadata-snapshot-every: Value must be at least 1",
            ),
            (
                "num-recovery-threads-per-data-dir = 0",
                "Invalid value 0 for configuration num-recovery-threads-per-data-dir: Value must be at least 1",
            ),
            (
                "broker-rack = \"\"",
                "Invalid value \"\" for configuration broker-rack: Value must not be empty (leave \
                 it unset for no rack)",
            ),
        ];
        for (toml, message) in refused {
            let config = BrokerConfig::from_toml(toml).unwrap();
            assert_eq!(refusal(&config), message, "{toml}");
        }
        let file = "node-id = 3\ncontroller-listen = \"127.0.0.1:9293\"\n\
                    controller-quorum = \"1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293\"\n\
                    broker-rack = \"r1\"\n";
        let config = BrokerConfig::from_toml(file).unwrap();
        config.validate().unwrap();
        assert_eq!(config.broker_rack.as_deref(), Some("r1"));
        assert_eq!(BrokerConfig::from_toml(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn consumers_read_from_the_leader_unless_the_rack_aware_selector_is_chosen() {
        assert_eq!(
            BrokerConfig::default().replica_selector,
            ReplicaSelector::Leader
        );
        let config = BrokerConfig::from_toml("replica-selector = \"rack-aware\"\n").unwrap();
        assert_eq!(config.replica_selector, ReplicaSelector::RackAware);
        assert_eq!(BrokerConfig::from_toml(&config.to_toml()).unwrap(), config);
        assert!(BrokerConfig::from_toml("replica-selector = \"closest\"\n").is_err());
        assert_eq!(
            "org.apache.kafka.common.replica.RackAwareReplicaSelector".parse(),
            Ok(ReplicaSelector::RackAware)
        );
        assert!("closest".parse::<ReplicaSelector>().is_err());
    }

    #[test]
    fn the_quorum_starts_with_the_voters_listener_and_settings_of_the_configuration() {
        let config = BrokerConfig {
            metadata_snapshot_every: 10,
            broker_session_timeout_ms: 6_000,
            num_partitions: 3,
            data_dir: "/d".into(),
            ..quorum(
                2,
                Some("127.0.0.1:9193"),
                "1@127.0.0.1:9093,2@127.0.0.1:9193",
            )
        };
        let quorum = config.quorum_config(Some("abc".into())).unwrap();
        assert_eq!(quorum.node_id, 2);
        let voters: Vec<(i32, &str)> = quorum
            .voters
            .iter()
            .map(|v| (v.id, v.address.as_str()))
            .collect();
        assert_eq!(voters, [(1, "127.0.0.1:9093"), (2, "127.0.0.1:9193")]);
        assert_eq!(quorum.listen.as_deref(), Some("127.0.0.1:9193"));
        assert_eq!(quorum.data_dir, PathBuf::from("/d"));
        assert_eq!(quorum.cluster_id_if_new.as_deref(), Some("abc"));
        assert_eq!(quorum.snapshot_every, 10);
        assert_eq!(quorum.settings.broker_session_timeout_ms, 6_000);
        assert_eq!(quorum.settings.default_num_partitions, 3);
        // No quorum flags: a quorum of one, with no network.
        let alone = BrokerConfig::default().quorum_config(None).unwrap();
        assert!(alone.voters.is_empty() && alone.listen.is_none());
        assert!(quorum_config_refused());
    }

    fn quorum_config_refused() -> bool {
        quorum(3, None, "1@127.0.0.1:9093,3@127.0.0.1:9293")
            .quorum_config(None)
            .is_err()
    }

    #[test]
    fn connection_limit_overrides_are_a_table_of_addresses_and_a_bad_address_is_refused() {
        let config = BrokerConfig::from_toml(
            "max-connections-per-ip = 10\n[max-connections-per-ip-overrides]\n\"10.0.0.7\" = 100\n\"::1\" = 0\n",
        )
        .unwrap();
        assert_eq!(config.max_connections_per_ip, 10);
        assert_eq!(config.max_connections, i32::MAX as u32, "Kafka's default");
        assert_eq!(
            config.max_connections_per_ip_overrides,
            BTreeMap::from([
                ("10.0.0.7".parse().unwrap(), 100),
                ("::1".parse().unwrap(), 0)
            ])
        );
        assert_eq!(BrokerConfig::from_toml(&config.to_toml()).unwrap(), config);
        assert!(BrokerConfig::from_toml(
            "[max-connections-per-ip-overrides]\n\"not-an-address\" = 1\n"
        )
        .is_err());
    }

    #[test]
    fn replication_settings_have_kafkas_defaults_bounds_and_topic_overrides() {
        let config = BrokerConfig::default();
        assert_eq!(config.replica_lag_time_max_ms, 30_000);
        assert_eq!(config.min_insync_replicas, 1);
        assert!(!config.unclean_leader_election_enable);
        assert_eq!(config.offsets_topic_replication_factor, 3);
        assert!(!config.controller_settings().unclean_leader_election_enable);
        assert!(!config.eligible_leader_replicas_enable);
        assert!(!config.controller_settings().eligible_leader_replicas_enable);
        assert!(config.controller_settings().auto_leader_rebalance_enable);
        assert_eq!(
            config
                .controller_settings()
                .leader_imbalance_check_interval_ms,
            300_000
        );
        let refused = [
            (
                "replica-lag-time-max-ms = 0",
                "Invalid value 0 for configuration replica-lag-time-max-ms: Value must be at least 1",
            ),
            (
                "leader-imbalance-check-interval-seconds = 0",
                "Invalid value 0 for configuration leader-imbalance-check-interval-seconds: Value \
                 must be at least 1",
            ),
            (
                "min-insync-replicas = 0",
                "Invalid value 0 for configuration min-insync-replicas: Value must be at least 1",
            ),
            (
                "offsets-topic-replication-factor = 0",
                "Invalid value 0 for configuration offsets-topic-replication-factor: Value must \
                 be at least 1",
            ),
        ];
        for (toml, message) in refused {
            let config = BrokerConfig::from_toml(toml).unwrap();
            assert_eq!(refusal(&config), message, "{toml}");
        }
        let config = BrokerConfig::from_toml(
            "min-insync-replicas = 2\nunclean-leader-election-enable = true\n\
             replica-lag-time-max-ms = 500\noffsets-topic-replication-factor = 1\n\
             eligible-leader-replicas-enable = true\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert!(config.controller_settings().unclean_leader_election_enable);
        assert!(config.controller_settings().eligible_leader_replicas_enable);
        assert_eq!(config.controller_settings().min_insync_replicas, 2);
        assert_eq!(BrokerConfig::from_toml(&config.to_toml()).unwrap(), config);
        // The broker values are the topics' defaults; a topic overrides them.
        let mut topic = TopicConfigs::default();
        assert_eq!(topic.min_insync_replicas(&config), 2);
        let described = topic.describe(&config);
        assert!(described.contains(&ConfigEntry::new("min.insync.replicas", "2", true)));
        assert!(described.contains(&ConfigEntry::new(
            "unclean.leader.election.enable",
            "true",
            true
        )));
        topic.set("min.insync.replicas", "3").unwrap();
        topic
            .set("unclean.leader.election.enable", "FALSE")
            .unwrap();
        assert_eq!(topic.min_insync_replicas(&config), 3);
        assert!(topic.describe(&config).contains(&ConfigEntry::new(
            "unclean.leader.election.enable",
            "FALSE",
            false
        )));
        assert!(topic.set("min.insync.replicas", "0").is_err());
        assert!(topic.set("unclean.leader.election.enable", "yes").is_err());
        assert_eq!(
            TopicConfigs::default().min_insync_replicas(&BrokerConfig::default()),
            1
        );
    }

    #[test]
    fn every_supported_topic_config_has_a_broker_default_and_nothing_else_does() {
        let mut broker = BrokerConfig {
            min_insync_replicas: 2,
            ..BrokerConfig::default()
        };
        let defaults = broker.topic_defaults();
        assert_eq!(
            defaults.keys().copied().collect::<Vec<_>>(),
            TOPIC_CONFIG_NAMES.to_vec()
        );
        assert_eq!(defaults["min.insync.replicas"], "2");
        assert_eq!(broker.topic_default("no.such.config"), None);
        // The produce path's shortcut agrees with the effective value, both ways.
        let mut topic = TopicConfigs::default();
        assert_eq!(topic.min_insync_replicas(&broker), 2);
        broker.min_insync_replicas = -1;
        assert_eq!(topic.min_insync_replicas(&broker), 1);
        topic.set("min.insync.replicas", " 3").unwrap();
        assert_eq!(
            topic.effective(&broker, "min.insync.replicas").as_deref(),
            Some(" 3")
        );
        assert_eq!(topic.min_insync_replicas(&broker), 3);
    }

    #[test]
    fn topic_configs_are_validated_with_kafka_names_and_feed_the_log_config() {
        let broker = BrokerConfig::default();
        let mut topic = TopicConfigs::default();
        topic.set("retention.ms", "1000").unwrap();
        topic
            .set("message.timestamp.type", "LogAppendTime")
            .unwrap();
        assert!(topic.set("retention.ms", "soon").is_err());
        assert!(topic.set("segment.bytes", "10").is_err());
        assert!(topic.set("cleanup.policy", "compacted").is_err());
        assert!(topic.set("no.such.config", "1").is_err());
        let log = topic.log_config(&broker);
        assert_eq!(log.retention_ms, Some(1000));
        assert!(log.log_append_time);
        assert_eq!(log.retention_bytes, None);
        assert_eq!(log.segment_bytes, 1 << 30);
        let described = topic.describe(&broker);
        assert!(described.contains(&ConfigEntry::new("retention.ms", "1000", false)));
        assert!(described.contains(&ConfigEntry::new(
            "segment.bytes",
            (1u64 << 30).to_string(),
            true
        )));
    }
}
