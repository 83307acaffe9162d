//! Scenario files: declarative TOML stating the cluster, topics, workload, faults (scripted or
//! swarm) and expectations of one simulated run. No logic lives in a file (STYLE.md item 12);
//! the format is documented in `scenarios/README.md`.
//!
//! Every table refuses unknown keys, and a malformed file is reported with its path, line,
//! column and what was expected ([`ScenarioError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use chaos::nemesis::FaultKind;
use serde::{Deserialize, Serialize};

/// A parsed scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    /// Defaults to the file's stem.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Length of the workload and fault window, in simulated milliseconds.
    pub duration_ms: u64,
    /// After healing: how long every acknowledged record has to become readable.
    #[serde(default = "default_liveness_timeout_ms")]
    pub liveness_timeout_ms: u64,
    pub cluster: ClusterSpec,
    pub topics: Vec<TopicSpec>,
    pub workload: WorkloadSpec,
    #[serde(default)]
    pub faults: Vec<toml::Spanned<ScriptedFault>>,
    pub swarm: Option<SwarmSpec>,
    #[serde(default)]
    pub expect: Expectations,
}

fn default_liveness_timeout_ms() -> u64 {
    30_000
}

/// The brokers and their configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSpec {
    #[serde(default = "one")]
    pub brokers: u32,
    /// How many of the brokers (the first ones) vote in the metadata quorum; the rest are
    /// learners. Default: min(brokers, 3).
    pub controllers: Option<u32>,
    /// Client nodes the workload runs on (producers and consumers are spread over them).
    #[serde(default = "one")]
    pub clients: u32,
    #[serde(default = "durable")]
    pub flush_mode: FlushModeSpec,
    /// Lazy mode: `log.flush.interval.messages` / `log.flush.interval.ms`.
    pub flush_messages: Option<u64>,
    pub flush_ms: Option<i64>,
    pub segment_bytes: Option<u64>,
    /// `offsets.retention.minutes` and `offsets.retention.check.interval.ms` (KIP-211 expiry).
    pub offsets_retention_minutes: Option<i64>,
    pub offsets_retention_check_interval_ms: Option<u64>,
    /// `replica.lag.time.max.ms`: how long an ISR member may go without catching up before the
    /// leader shrinks it out (Kafka's 30 s by default; scenarios shorten it to fit their runs).
    pub replica_lag_time_max_ms: Option<u64>,
    /// `replica.fetch.max.bytes` and `replica.fetch.response.max.bytes` (Kafka's 1 MiB and
    /// 10 MiB): scenarios shrink them so a follower's catch-up takes many fetches.
    pub replica_fetch_max_bytes: Option<u32>,
    pub replica_fetch_response_max_bytes: Option<u32>,
    /// `broker.session.timeout.ms` and `broker.heartbeat.interval.ms` (Kafka's 9 s and 2 s): how
    /// soon the controller fences a dead broker and moves its leaderships.
    pub broker_session_timeout_ms: Option<u64>,
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// `log.cleaner.backoff.ms`: how long the log cleaner sleeps when no log needs cleaning
    /// (Kafka's 15 s; compaction scenarios shorten it so the cleaner runs during the window).
    pub log_cleaner_backoff_ms: Option<u64>,
    /// The broker defaults of `min.insync.replicas` and `unclean.leader.election.enable` (a
    /// topic's `configs` override them).
    pub min_insync_replicas: Option<i32>,
    #[serde(default)]
    pub unclean_leader_election_enable: bool,
    /// `eligible.leader.replicas.enable` (KIP-966) on every node.
    #[serde(default)]
    pub eligible_leader_replicas_enable: bool,
    #[serde(default)]
    pub disk: DiskSpec,
}

fn one() -> u32 {
    1
}

impl ClusterSpec {
    /// The number of voters of the metadata quorum.
    pub fn voters(&self) -> u32 {
        self.controllers.unwrap_or(self.brokers.min(3))
    }
}

fn durable() -> FlushModeSpec {
    FlushModeSpec::Durable
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushModeSpec {
    Durable,
    Lazy,
}

/// The broker disks' standing fault configuration (the nemesis changes it during the run).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskSpec {
    #[serde(default)]
    pub torn_writes: bool,
    #[serde(default)]
    pub write_eio_rate: f64,
    #[serde(default)]
    pub sync_eio_rate: f64,
    /// `[min, max]` microseconds per disk operation.
    pub latency_us: Option<[u64; 2]>,
    pub capacity_bytes: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TopicSpec {
    pub name: String,
    #[serde(default = "one_i32")]
    pub partitions: i32,
    #[serde(default = "one_i16")]
    pub replication_factor: i16,
    /// Topic config overrides, e.g. `{ "flush.ms" = "50" }`.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

fn one_i32() -> i32 {
    1
}

fn one_i16() -> i16 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkloadSpec {
    #[serde(default)]
    pub producers: Vec<ProducerSpec>,
    #[serde(default)]
    pub consumers: Vec<ConsumerSpec>,
    /// Admin clients creating topics through the cluster while the faults strike.
    #[serde(default)]
    pub admins: Vec<AdminSpec>,
}

/// An admin client that creates topics `admin-<n>-<i>` one after another (CreateTopics against
/// any broker, which forwards it to the active controller).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminSpec {
    #[serde(default = "one")]
    pub count: u32,
    /// Topics created per simulated second, per admin.
    pub rate: f64,
    /// Partitions of each topic.
    #[serde(default = "default_admin_partitions")]
    pub partitions: i32,
    /// The CreateTopics request's timeout (and the client's).
    #[serde(default = "default_admin_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_admin_partitions() -> i32 {
    3
}

fn default_admin_timeout_ms() -> u64 {
    5_000
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum AcksSpec {
    #[serde(rename = "0")]
    None,
    #[serde(rename = "1")]
    Leader,
    #[serde(rename = "all")]
    All,
}

impl fmt::Display for AcksSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcksSpec::None => "0",
            AcksSpec::Leader => "1",
            AcksSpec::All => "all",
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProducerSpec {
    /// How many producer processes of this kind.
    #[serde(default = "one")]
    pub count: u32,
    pub topic: String,
    pub acks: AcksSpec,
    #[serde(default)]
    pub idempotent: bool,
    /// Distinct keys (`k0`..); 0: no keys, partitions chosen at random by the seed.
    #[serde(default)]
    pub keys: u64,
    /// Share of sends that are tombstones (a key with a null value; the value's counter
    /// travels in the `v` header, so a read tombstone still names its send). Needs `keys`.
    #[serde(default)]
    pub tombstone_rate: f64,
    /// Records per simulated second, per producer.
    pub rate: f64,
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// A transactional producer (`transactional.id`, acks = "all"): records go out in
    /// transactions of `records-per-transaction`, each committed, or aborted with probability
    /// `abort-rate` (see [`crate::txn_workload`]).
    #[serde(default)]
    pub transactional: bool,
    #[serde(default = "default_records_per_transaction")]
    pub records_per_transaction: u32,
    #[serde(default)]
    pub abort_rate: f64,
    /// Consume-transform-produce: each transaction reads records of this topic
    /// (read_committed), writes one record per input, and sends the input offsets of `group`
    /// to the transaction.
    pub input: Option<String>,
    /// The consumer group of `input` (default `<topic>-transformers`).
    pub group: Option<String>,
    /// How many transactional ids the `count` processes share (default: one each). Processes
    /// with the same id fence each other in turn: each takes over, as a replacement does, when
    /// the other is fenced, stuck or silent.
    pub transactional_ids: Option<u32>,
    /// `transaction.timeout.ms`.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Consume-transform-produce that sends each poll's outputs before its next poll, so a
    /// transaction's reads and writes interleave. Two loops reading each other's outputs can
    /// then form a cycle of reads (G1c) if a read_committed read ever returns an open
    /// transaction's write: with every input read before the first send, no cycle can form.
    #[serde(default)]
    pub interleave: bool,
}

impl ProducerSpec {
    /// The consumer group whose input offsets a consume-transform-produce producer sends to
    /// its transactions.
    pub fn input_group(&self) -> Option<String> {
        self.input.as_ref().map(|_| {
            self.group
                .clone()
                .unwrap_or_else(|| format!("{}-transformers", self.topic))
        })
    }
}

fn default_records_per_transaction() -> u32 {
    10
}
fn default_transaction_timeout_ms() -> u64 {
    10_000
}

fn default_linger_ms() -> u64 {
    2
}
fn default_retries() -> u32 {
    5
}
fn default_request_timeout_ms() -> u64 {
    2_000
}
fn default_delivery_timeout_ms() -> u64 {
    10_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsumerSpec {
    #[serde(default = "one")]
    pub count: u32,
    pub topic: String,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Consume as members of this consumer group (subscribe; the coordinator shares the
    /// partitions) instead of reading every partition.
    pub group: Option<String>,
    /// How a group member commits: `sync` after every poll that returned records (default),
    /// or `auto` (enable.auto.commit, every `auto-commit-interval-ms`).
    #[serde(default)]
    pub commit: CommitSpec,
    #[serde(default = "default_auto_commit_interval_ms")]
    pub auto_commit_interval_ms: u64,
    /// `session.timeout.ms` of a group member.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Each member leaves after a time drawn from `[min, max]` ms and a new one joins in its
    /// place; unset: members stay for the whole run.
    pub churn_ms: Option<[u64; 2]>,
    /// How a churning member leaves: `close` (commits, LeaveGroup), `crash` (vanishes; the
    /// session timeout hands its partitions on) or `mixed` (the seed picks each time).
    #[serde(default)]
    pub churn: ChurnSpec,
    /// Before each commit, the member fetches the group's committed offsets of the partitions
    /// it commits (each fetch goes into the history): an acknowledged commit that was lost
    /// shows as a regression at the next commit, instead of being overwritten unseen.
    #[serde(default)]
    pub fetch_before_commit: bool,
    /// `isolation.level`: `read_uncommitted` (default) or `read_committed` (fetches stop at
    /// the last stable offset and drop aborted transactions; each poll records the LSO).
    #[serde(default)]
    pub isolation_level: IsolationLevel,
    /// `max.partition.fetch.bytes` (Kafka's 1 MiB by default): 1 makes every fetch return one
    /// batch (the broker always returns the first whole batch), so a reader steps through the
    /// log batch by batch, e.g. across the last stable offset.
    pub max_partition_fetch_bytes: Option<i32>,
    /// Scan every partition from its log start up to the high watermark, again and again
    /// (each scan a fresh consumer id, abandoned at its first failed poll), `scan-pause-ms`
    /// apart: what the compaction checker judges a compacted log by. Not with `group`.
    #[serde(default)]
    pub scan: bool,
    #[serde(default = "default_scan_pause_ms")]
    pub scan_pause_ms: u64,
}

fn default_scan_pause_ms() -> u64 {
    200
}

/// A consumer's `isolation.level`, spelled as Kafka's setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    #[default]
    ReadUncommitted,
    ReadCommitted,
}

impl IsolationLevel {
    pub fn client(self) -> client::IsolationLevel {
        match self {
            IsolationLevel::ReadUncommitted => client::IsolationLevel::ReadUncommitted,
            IsolationLevel::ReadCommitted => client::IsolationLevel::ReadCommitted,
        }
    }

    pub fn history(self) -> crate::history::IsolationLevel {
        match self {
            IsolationLevel::ReadUncommitted => crate::history::IsolationLevel::ReadUncommitted,
            IsolationLevel::ReadCommitted => crate::history::IsolationLevel::ReadCommitted,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitSpec {
    #[default]
    Sync,
    Auto,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChurnSpec {
    Close,
    Crash,
    #[default]
    Mixed,
}

fn default_auto_commit_interval_ms() -> u64 {
    1_000
}
fn default_session_timeout_ms() -> u64 {
    6_000
}

fn default_max_wait_ms() -> u64 {
    100
}

/// Who a fault strikes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum TargetSpec {
    /// `broker:<id>`
    Broker(u32),
    /// `client:<n>`
    Client(u32),
    /// `leader:<topic>/<partition>`: resolved when the fault is applied.
    Leader { topic: String, partition: i32 },
    /// `controller`: the active controller (the metadata quorum's leader), resolved when the
    /// fault is applied.
    Controller,
    /// `voters`: every voter of the metadata quorum at once (e.g. a power loss of all of them).
    Voters,
    /// `follower-voter`: a voter that does not lead the quorum (the lowest-id one whose plane
    /// runs), resolved when the fault is applied.
    FollowerVoter,
    /// `any-broker`: the seed picks one when the schedule is made.
    AnyBroker,
    /// `any-client`: the seed picks one when the schedule is made.
    AnyClient,
}

impl TryFrom<String> for TargetSpec {
    type Error = String;
    fn try_from(s: String) -> Result<TargetSpec, String> {
        let expected = "expected a target: \"broker:<id>\", \"client:<n>\", \
                        \"leader:<topic>/<partition>\", \"controller\", \"voters\", \
                        \"follower-voter\", \"any-broker\" or \"any-client\"";
        match s.as_str() {
            "controller" => return Ok(TargetSpec::Controller),
            "voters" => return Ok(TargetSpec::Voters),
            "follower-voter" => return Ok(TargetSpec::FollowerVoter),
            "any-broker" => return Ok(TargetSpec::AnyBroker),
            "any-client" => return Ok(TargetSpec::AnyClient),
            _ => {}
        }
        let Some((role, rest)) = s.split_once(':') else {
            return Err(format!("{expected}, found {s:?}"));
        };
        match role {
            "broker" => rest
                .parse()
                .map(TargetSpec::Broker)
                .map_err(|_| format!("{expected}, found {s:?}")),
            "client" => rest
                .parse()
                .map(TargetSpec::Client)
                .map_err(|_| format!("{expected}, found {s:?}")),
            "leader" => {
                let (topic, partition) = rest
                    .rsplit_once('/')
                    .ok_or_else(|| format!("{expected}, found {s:?}"))?;
                let partition = partition
                    .parse()
                    .map_err(|_| format!("{expected}, found {s:?}"))?;
                Ok(TargetSpec::Leader {
                    topic: topic.to_string(),
                    partition,
                })
            }
            _ => Err(format!("{expected}, found {s:?}")),
        }
    }
}

impl From<TargetSpec> for String {
    fn from(t: TargetSpec) -> String {
        t.to_string()
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Broker(id) => write!(f, "broker:{id}"),
            TargetSpec::Client(n) => write!(f, "client:{n}"),
            TargetSpec::Leader { topic, partition } => write!(f, "leader:{topic}/{partition}"),
            TargetSpec::Controller => f.write_str("controller"),
            TargetSpec::Voters => f.write_str("voters"),
            TargetSpec::FollowerVoter => f.write_str("follower-voter"),
            TargetSpec::AnyBroker => f.write_str("any-broker"),
            TargetSpec::AnyClient => f.write_str("any-client"),
        }
    }
}

/// A fault kind by its kebab-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct KindSpec(pub FaultKind);

impl TryFrom<String> for KindSpec {
    type Error = String;
    fn try_from(s: String) -> Result<KindSpec, String> {
        FaultKind::from_name(&s).map(KindSpec).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "expected a fault kind, one of {}; found {s:?}",
                names.join(", ")
            )
        })
    }
}

/// One scripted fault: at simulated time `at-ms`, do `fault` to `target`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScriptedFault {
    pub at_ms: u64,
    pub fault: KindSpec,
    /// Required for node faults; for `cut-link`, the sending side.
    pub target: Option<TargetSpec>,
    /// `cut-link`: the receiving side.
    pub to: Option<TargetSpec>,
    /// `split`: the nodes on one side; every link between them and the rest is cut.
    pub group: Option<Vec<TargetSpec>>,
    /// Undo the fault this long after it (restart after a crash, resume after a pause, ...).
    pub for_ms: Option<u64>,
    /// Repeat every this many ms (from `at-ms`) ...
    pub every_ms: Option<u64>,
    /// ... until this time (default: the end of the fault window).
    pub until_ms: Option<u64>,
    /// `packet-loss`: probability per packet.
    pub rate: Option<f64>,
    /// `latency`: range in ms.
    pub min_ms: Option<u64>,
    pub max_ms: Option<u64>,
    /// `disk-eio`: rates of failing appends and syncs.
    pub write_rate: Option<f64>,
    pub sync_rate: Option<f64>,
    /// `disk-torn`: on or off (default on).
    pub on: Option<bool>,
    /// `disk-full`: bytes of room left.
    pub headroom_bytes: Option<u64>,
    /// `clock-skew`: how far the broker's clock moves from true time (negative: behind).
    pub offset_ms: Option<i64>,
    /// `slow-disk`: how much longer every append and sync takes.
    pub latency_ms: Option<u64>,
    /// `hold`: the Kafka API of the requests held, as Kafka names it (`EndTxn`, `Produce`).
    pub api: Option<String>,
    /// `hold` of `Produce`: only produce requests of transactional producers.
    pub transactional: Option<bool>,
    /// `hold`: at most this many requests (default: every matching one while it lasts).
    pub count: Option<u32>,
}

/// Whether `name` is a Kafka API as Kafka spells it (`EndTxn`, `Produce`, ...).
pub fn is_api_name(name: &str) -> bool {
    kafka_protocol::messages::ApiKey::iter().any(|k| format!("{k:?}") == name)
}

/// Swarm testing: the seed picks which of `kinds` are on, their rates and targets.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SwarmSpec {
    /// The kinds the seed chooses from (each is on with probability 1/2, at least one).
    pub kinds: Vec<KindSpec>,
    #[serde(default = "default_swarm_start_ms")]
    pub start_ms: u64,
    /// Default: the end of the fault window.
    pub end_ms: Option<u64>,
    /// Mean gap between faults; the seed scales it by 0.5..2.
    #[serde(default = "default_mean_interval_ms")]
    pub mean_interval_ms: u64,
    /// Longest a fault lasts before it is undone.
    #[serde(default = "default_max_fault_ms")]
    pub max_fault_ms: u64,
}

fn default_swarm_start_ms() -> u64 {
    500
}
fn default_mean_interval_ms() -> u64 {
    1_000
}
fn default_max_fault_ms() -> u64 {
    2_000
}

/// The anomaly kinds a scenario may allow. Each maps onto the checker's allowances, which the
/// runner grants only when the configuration justifies them (see `scenarios/README.md`);
/// every other anomaly kind is always a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllowSpec {
    /// Acknowledged records lost: by a crash under acks=0/1, by a power loss under the lazy
    /// flush policy (within its unsynced window), or by a bit flip at rest in their segment.
    LostWrite,
    /// One value at two offsets: retries of a non-idempotent producer.
    Duplicate,
    /// Partitions or acknowledged records not readable within the liveness bound.
    Unavailable,
}

impl fmt::Display for AllowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllowSpec::LostWrite => "lost-write",
            AllowSpec::Duplicate => "duplicate",
            AllowSpec::Unavailable => "unavailable",
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Expectations {
    /// Anomaly kinds the configuration allows: reported as allowed, never as violations.
    #[serde(default)]
    pub allow: Vec<AllowSpec>,
    /// After the run, once every member closed and the group stayed empty for
    /// `offsets-retention-minutes`, its committed offsets must be gone (KIP-211), and not before.
    #[serde(default)]
    pub offsets_expire: bool,
    /// `[from, to]` ms of the fault window in which the cluster must keep serving: some send
    /// is acknowledged and some poll returns records, both within it (e.g. the partitions a
    /// surviving broker leads while the metadata quorum has lost its majority).
    pub serving_during: Option<[u64; 2]>,
    /// `[from, to]` ms of the fault window in which the metadata quorum must accept changes:
    /// some CreateTopics of the admin workload is invoked and acknowledged within it (e.g. after
    /// the active controller's metadata log failed: a new controller was elected).
    pub metadata_during: Option<[u64; 2]>,
    /// At least this many times a broker must halt because its metadata log failed (and be
    /// restarted by its supervisor, the harness): a scenario about a failing metadata log
    /// fails when the fault struck no write, or when a node ran on with a dead quorum replica.
    #[serde(default)]
    pub metadata_halts: u32,
    /// Brokers that must be fenced during the run (some image shows them fenced after they
    /// were serving) and serve again after the heal (unfenced). As in Kafka, a broker fenced
    /// for a lapsed session keeps its registration: its next heartbeat, once caught up,
    /// unfences it with the same broker epoch; only a new incarnation registers anew.
    #[serde(default)]
    pub fenced: Vec<u32>,
    /// Brokers whose leaders must shrink them out of some ISR during the run while they stay
    /// registered and unfenced (left behind, e.g. on a slow disk, not fenced for a lapsed
    /// session), and which must be back in every ISR of their partitions after the heal,
    /// within `liveness-timeout-ms`. A scenario about an ISR shrink states it here, so that it
    /// fails when no shrink happened.
    #[serde(default)]
    pub out_of_isr: Vec<u32>,
    /// After the heal, every replica on a live, unfenced broker must be back in its
    /// partition's ISR (Kafka's promise: a follower that can reach its leader catches up and
    /// rejoins), within a bound made of every timeout that delays it; otherwise the violation
    /// `replica-never-rejoined` (a follower stuck reconciling passes every other check).
    #[serde(default)]
    pub isr_complete_at_end: bool,
    /// Violations this run must find, by kind as the reports name them (`lost_write`; the
    /// file may write `lost-write`): the run passes only when it finds a violation of each of
    /// these kinds and none of another kind. The half of a scenario pair that does not allow
    /// an anomaly states it here, so CI proves the checker still calls it a violation.
    #[serde(default)]
    pub violations: Vec<String>,
    /// The log cleaner must have removed records from every compacted topic during the run
    /// (scans passed over offsets known to hold a record without returning it): a compaction
    /// scenario whose cleaner never ran fails (`not_compacted`) instead of passing vacuously.
    #[serde(default)]
    pub records_cleaned: bool,
}

/// The kinds of finding the harness reports itself (the checker's are
/// [`crate::checker::AnomalyKind`]).
pub const HARNESS_KINDS: [&str; 3] = ["invariant", "unavailable", "hanging_transaction"];

/// Whether `kind` (snake_case) names a finding a run can report.
pub fn is_finding_kind(kind: &str) -> bool {
    HARNESS_KINDS.contains(&kind)
        || crate::checker::AnomalyKind::ALL
            .iter()
            .any(|k| k.name() == kind)
}

/// A scenario file that could not be loaded.
#[derive(Debug)]
pub struct ScenarioError {
    pub path: String,
    /// 1-based line and column, when the error has a position.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(col)) => write!(f, "{}:{line}:{col}: {}", self.path, self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        #[allow(clippy::disallowed_methods)] // the CLI reads the operator's file, not broker data
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            path: shown.clone(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Scenario::parse(&text, &shown, &stem)
    }

    /// Parses and validates scenario text; `path` names it in errors, `stem` is the default name.
    pub fn parse(text: &str, path: &str, stem: &str) -> Result<Scenario, ScenarioError> {
        let at = |offset: Option<usize>, message: String| {
            let (line, column) = offset.map(|o| line_col(text, o)).unzip();
            ScenarioError {
                path: path.to_string(),
                line,
                column,
                message,
            }
        };
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            at(e.span().map(|s| s.start), message)
        })?;
        if scenario.name.is_empty() {
            scenario.name = stem.to_string();
        }
        for kind in &mut scenario.expect.violations {
            *kind = kind.replace('-', "_");
        }
        scenario
            .validate()
            .map_err(|(offset, message)| at(offset, message))?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), (Option<usize>, String)> {
        let whole = |m: String| (None, m);
        if self.duration_ms == 0 {
            return Err(whole("duration-ms must be positive".into()));
        }
        if self.cluster.brokers == 0 || self.cluster.brokers > 250 {
            return Err(whole("cluster.brokers must be 1..=250".into()));
        }
        if let Some(c) = self.cluster.controllers {
            if c == 0 || c > self.cluster.brokers || c % 2 == 0 {
                return Err(whole(format!(
                    "cluster.controllers must be odd and at most cluster.brokers ({}), found {c}",
                    self.cluster.brokers
                )));
            }
        }
        if self.cluster.clients == 0 || self.cluster.clients > 250 {
            return Err(whole("cluster.clients must be 1..=250".into()));
        }
        if self.topics.is_empty() {
            return Err(whole("at least one [[topics]] is needed".into()));
        }
        for t in &self.topics {
            if t.partitions < 1 {
                return Err(whole(format!(
                    "topic {}: partitions must be at least 1",
                    t.name
                )));
            }
            if t.replication_factor < 1 || t.replication_factor as u32 > self.cluster.brokers {
                return Err(whole(format!(
                    "topic {}: replication-factor {} needs 1..={} (the number of brokers)",
                    t.name, t.replication_factor, self.cluster.brokers
                )));
            }
        }
        if let Some(unknown) = self.expect.violations.iter().find(|k| !is_finding_kind(k)) {
            let known: Vec<&str> = crate::checker::AnomalyKind::ALL
                .iter()
                .map(|k| k.name())
                .chain(HARNESS_KINDS)
                .collect();
            return Err(whole(format!(
                "expect.violations: unknown kind {unknown:?}, expected one of {}",
                known.join(", ")
            )));
        }
        let topic_known = |name: &str| self.topics.iter().any(|t| t.name == name);
        for p in &self.workload.producers {
            if !topic_known(&p.topic) {
                return Err(whole(format!(
                    "producer topic {:?} is not in [[topics]]",
                    p.topic
                )));
            }
            if p.rate.is_nan() || p.rate <= 0.0 {
                return Err(whole(format!(
                    "producer of {:?}: rate must be positive",
                    p.topic
                )));
            }
            if p.transactional && p.acks != AcksSpec::All {
                return Err(whole(format!(
                    "producer of {:?}: a transactional producer needs acks = \"all\"",
                    p.topic
                )));
            }
            if !(0.0..=1.0).contains(&p.abort_rate) {
                return Err(whole(format!(
                    "producer of {:?}: abort-rate must be in 0..=1",
                    p.topic
                )));
            }
            let transactional_only = p.input.is_some()
                || p.group.is_some()
                || p.transactional_ids.is_some()
                || p.abort_rate > 0.0;
            if transactional_only && !p.transactional {
                return Err(whole(format!(
                    "producer of {:?}: input, group, transactional-ids and abort-rate need \
                     transactional = true",
                    p.topic
                )));
            }
            if p.interleave && p.input.is_none() {
                return Err(whole(format!(
                    "producer of {:?}: interleave needs an input topic",
                    p.topic
                )));
            }
            if let Some(input) = p.input.as_deref().filter(|t| !topic_known(t)) {
                return Err(whole(format!(
                    "producer of {:?}: input topic {input:?} is not in [[topics]]",
                    p.topic
                )));
            }
            if p.transactional_ids.is_some_and(|n| n == 0 || n > p.count)
                || p.records_per_transaction == 0
            {
                return Err(whole(format!(
                    "producer of {:?}: transactional-ids must be 1..=count and \
                     records-per-transaction positive",
                    p.topic
                )));
            }
            if p.idempotent && p.acks != AcksSpec::All {
                return Err(whole(format!(
                    "producer of {:?}: idempotence needs acks = \"all\"",
                    p.topic
                )));
            }
        }
        for p in &self.workload.producers {
            if !(0.0..=1.0).contains(&p.tombstone_rate) {
                return Err(whole(format!(
                    "producer of {:?}: tombstone-rate must be in 0..=1",
                    p.topic
                )));
            }
            if p.tombstone_rate > 0.0 && p.keys == 0 {
                return Err(whole(format!(
                    "producer of {:?}: tombstones need keys",
                    p.topic
                )));
            }
            if p.keys == 0 && self.compacted(&p.topic) {
                return Err(whole(format!(
                    "producer of {:?}: a compacted topic refuses keyless records; set keys",
                    p.topic
                )));
            }
        }
        for c in &self.workload.consumers {
            if !topic_known(&c.topic) {
                return Err(whole(format!(
                    "consumer topic {:?} is not in [[topics]]",
                    c.topic
                )));
            }
            if c.scan && c.group.is_some() {
                return Err(whole(format!(
                    "consumer of {:?}: a scanning consumer reads every partition itself, not in a group",
                    c.topic
                )));
            }
        }
        if self.expect.metadata_during.is_some() && self.workload.admins.is_empty() {
            return Err(whole(
                "expect.metadata-during needs an admin workload ([[workload.admins]])".into(),
            ));
        }
        if self.expect.records_cleaned && !self.topics.iter().any(|t| self.compacted(&t.name)) {
            return Err(whole(
                "expect.records-cleaned needs a topic with cleanup.policy compact".into(),
            ));
        }
        for f in &self.faults {
            let offset = Some(f.span().start);
            let fault = f.get_ref();
            let kind = fault.fault.0;
            let needs_node = !matches!(
                kind,
                FaultKind::Heal
                    | FaultKind::PacketLoss
                    | FaultKind::Latency
                    | FaultKind::Split
                    | FaultKind::Hold
            );
            let complain = |m: String| Err((offset, format!("fault {kind}: {m}")));
            if needs_node && fault.target.is_none() {
                return complain("needs a target".into());
            }
            if let Some(TargetSpec::Broker(id)) = &fault.target {
                if *id == 0 || *id > self.cluster.brokers {
                    return complain(format!("there is no broker {id}"));
                }
            }
            if let Some(TargetSpec::Client(n)) = &fault.target {
                if *n == 0 || *n > self.cluster.clients {
                    return complain(format!("there is no client {n}"));
                }
            }
            let disk_or_crash = matches!(
                kind,
                FaultKind::Crash
                    | FaultKind::Restart
                    | FaultKind::DiskEio
                    | FaultKind::DiskTorn
                    | FaultKind::BitFlip
                    | FaultKind::DiskFull
                    | FaultKind::ClockSkew
                    | FaultKind::DiskWipe
                    | FaultKind::SlowDisk
                    | FaultKind::MetadataDiskEio
            );
            if disk_or_crash
                && matches!(
                    fault.target,
                    Some(TargetSpec::Client(_) | TargetSpec::AnyClient)
                )
            {
                return complain(
                    "targets brokers only (clients have no disk, no broker clock and are not crashed)"
                    .into(),
                );
            }
            let hold_keys =
                fault.api.is_some() || fault.transactional.is_some() || fault.count.is_some();
            if hold_keys && kind != FaultKind::Hold {
                return complain("`api`, `transactional` and `count` belong to hold".into());
            }
            match kind {
                FaultKind::Hold
                    if !matches!(
                        fault.target,
                        None | Some(TargetSpec::Client(_) | TargetSpec::AnyClient)
                    ) =>
                {
                    return complain(
                        "holds a client's requests: target \"client:<n>\", \"any-client\", \
                         or none for every client"
                            .into(),
                    )
                }
                FaultKind::Hold if !fault.api.as_deref().is_some_and(is_api_name) => {
                    return complain(format!(
                        "needs `api`, a Kafka API as Kafka names it (\"EndTxn\", \"Produce\", \
                         ...), found {:?}",
                        fault.api
                    ))
                }
                FaultKind::Hold
                    if fault.transactional == Some(true)
                        && fault.api.as_deref() != Some("Produce") =>
                {
                    return complain("`transactional` selects produce requests only".into())
                }
                FaultKind::Hold if fault.count == Some(0) => {
                    return complain("count must be positive".into())
                }
                FaultKind::CutLink if fault.to.is_none() => return complain("needs `to`".into()),
                FaultKind::Split if fault.group.as_ref().is_none_or(|g| g.is_empty()) => {
                    return complain("needs `group`, a non-empty list of targets".into())
                }
                FaultKind::PacketLoss if !fault.rate.is_some_and(|r| (0.0..=1.0).contains(&r)) => {
                    return complain("needs `rate` in 0..=1".into())
                }
                FaultKind::Latency if fault.min_ms.is_none() || fault.max_ms.is_none() => {
                    return complain("needs `min-ms` and `max-ms`".into())
                }
                FaultKind::DiskEio if fault.write_rate.is_none() && fault.sync_rate.is_none() => {
                    return complain("needs `write-rate` and/or `sync-rate`".into())
                }
                FaultKind::DiskFull if fault.headroom_bytes.is_none() => {
                    return complain("needs `headroom-bytes`".into())
                }
                FaultKind::ClockSkew if fault.offset_ms.is_none() => {
                    return complain("needs `offset-ms`".into())
                }
                FaultKind::SlowDisk if fault.latency_ms.is_none_or(|l| l == 0) => {
                    return complain(
                        "needs `latency-ms`, a positive delay per write and sync".into(),
                    )
                }
                _ => {}
            }
            if fault.every_ms == Some(0) {
                return complain("every-ms must be positive".into());
            }
        }
        if let Some(id) = self
            .expect
            .out_of_isr
            .iter()
            .find(|&&id| id == 0 || id > self.cluster.brokers)
        {
            return Err(whole(format!("expect.out-of-isr: there is no broker {id}")));
        }
        if let Some(swarm) = &self.swarm {
            if swarm.kinds.is_empty() {
                return Err(whole(
                    "swarm.kinds must name at least one fault kind".into(),
                ));
            }
            if swarm.mean_interval_ms == 0 {
                return Err(whole("swarm.mean-interval-ms must be positive".into()));
            }
        }
        Ok(())
    }

    /// Whether topic `name` is compacted: its `cleanup.policy` lists `compact`.
    pub fn compacted(&self, name: &str) -> bool {
        self.topics.iter().any(|t| {
            t.name == name
                && t.configs
                    .get("cleanup.policy")
                    .is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"))
        })
    }

    /// Whether `kind` is allowed by the expectations.
    pub fn allows(&self, kind: AllowSpec) -> bool {
        self.expect.allow.contains(&kind)
    }

    /// The end of the fault window.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
duration-ms = 1000
[cluster]
[[topics]]
name = "t"
[workload]
[[workload.producers]]
topic = "t"
acks = "all"
rate = 10
"#;

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let s = Scenario::parse(MINIMAL, "x.toml", "x").unwrap();
        assert_eq!(s.name, "x");
        assert_eq!(s.cluster.brokers, 1);
        assert_eq!(s.workload.producers[0].acks, AcksSpec::All);
    }

    #[test]
    fn expected_violations_are_read_in_either_spelling_and_unknown_kinds_are_refused() {
        let text = format!("{MINIMAL}[expect]\nviolations = [\"lost-write\", \"invariant\"]\n");
        let s = Scenario::parse(&text, "x.toml", "x").unwrap();
        assert_eq!(s.expect.violations, ["lost_write", "invariant"]);
        let text = format!("{MINIMAL}[expect]\nviolations = [\"lost-data\"]\n");
        let e = Scenario::parse(&text, "x.toml", "x").unwrap_err();
        assert!(e.message.contains("unknown kind \"lost_data\""), "{e}");
        assert!(e.message.contains("idempotent_retry_refused"), "{e}");
    }

    #[test]
    fn an_unknown_key_names_the_file_line_and_expected_keys() {
        let text = MINIMAL.replace("rate = 10", "rate = 10\nspeed = 3");
        let e = Scenario::parse(&text, "bad.toml", "bad").unwrap_err();
        assert_eq!(e.path, "bad.toml");
        assert_eq!(e.line, Some(11), "{e}");
        assert!(e.message.contains("unknown field `speed`"), "{e}");
        assert!(e.to_string().starts_with("bad.toml:11:"), "{e}");
    }

    #[test]
    fn a_bad_target_says_what_was_expected_at_its_line() {
        let text =
            format!("{MINIMAL}\n[[faults]]\nat-ms = 5\nfault = \"crash\"\ntarget = \"brokr:1\"\n");
        let e = Scenario::parse(&text, "bad.toml", "bad").unwrap_err();
        assert_eq!(e.line, Some(15), "{e}");
        assert!(e.message.contains("expected a target"), "{e}");
    }

    #[test]
    fn a_fault_missing_a_parameter_is_reported_at_its_table() {
        let text = format!("{MINIMAL}\n[[faults]]\nat-ms = 5\nfault = \"packet-loss\"\n");
        let e = Scenario::parse(&text, "bad.toml", "bad").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        assert!(e.message.contains("needs `rate`"), "{e}");
    }

    #[test]
    fn a_metadata_drive_fault_aims_at_a_follower_voter_and_metadata_during_needs_admins() {
        let s = Scenario::parse(
            &format!(
                "{MINIMAL}[[workload.admins]]\nrate = 1\n[[faults]]\nat-ms = 5\n\
                 fault = \"metadata-disk-eio\"\ntarget = \"follower-voter\"\nfor-ms = 100\n\
                 [expect]\nmetadata-during = [10, 900]\nmetadata-halts = 1\n"
            ),
            "x.toml",
            "x",
        )
        .unwrap();
        let fault = s.faults[0].get_ref();
        assert_eq!(fault.fault.0, FaultKind::MetadataDiskEio);
        assert_eq!(fault.target, Some(TargetSpec::FollowerVoter));
        assert_eq!(s.expect.metadata_during, Some([10, 900]));
        assert_eq!(s.expect.metadata_halts, 1);
        let e = Scenario::parse(
            &format!("{MINIMAL}[expect]\nmetadata-during = [10, 900]\n"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("needs an admin workload"), "{e}");
        let e = Scenario::parse(
            &format!(
                "{MINIMAL}[[faults]]\nat-ms = 5\nfault = \"metadata-disk-eio\"\ntarget = \"client:1\"\n"
            ),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("targets brokers only"), "{e}");
    }

    #[test]
    fn a_slow_disk_needs_its_latency_and_a_disk_wipe_a_broker() {
        let fault = |body: &str| format!("{MINIMAL}\n[[faults]]\nat-ms = 5\n{body}");
        let s = Scenario::parse(
            &fault(
                "fault = \"slow-disk\"\ntarget = \"broker:1\"\nlatency-ms = 300\nfor-ms = 100\n",
            ),
            "x.toml",
            "x",
        )
        .unwrap();
        assert_eq!(s.faults[0].get_ref().fault.0, FaultKind::SlowDisk);
        assert_eq!(s.faults[0].get_ref().latency_ms, Some(300));
        let e = Scenario::parse(
            &fault("fault = \"slow-disk\"\ntarget = \"broker:1\"\n"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("needs `latency-ms`"), "{e}");
        let e = Scenario::parse(
            &fault("fault = \"disk-wipe\"\ntarget = \"client:1\"\n"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("targets brokers only"), "{e}");
        let e = Scenario::parse(
            &format!("{MINIMAL}[expect]\nout-of-isr = [2]\n"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("there is no broker 2"), "{e}");
    }

    #[test]
    fn a_compacted_topic_needs_keyed_producers_and_tombstones_need_keys() {
        let compacted = MINIMAL.replace(
            "name = \"t\"\n",
            "name = \"t\"\nconfigs = { \"cleanup.policy\" = \"compact,delete\" }\n",
        );
        let e = Scenario::parse(&compacted, "bad.toml", "bad").unwrap_err();
        assert!(e.message.contains("refuses keyless records"), "{e}");
        let keyed = compacted.replace("rate = 10", "rate = 10\nkeys = 4\ntombstone-rate = 0.2");
        let s = Scenario::parse(
            &format!("{keyed}[expect]\nrecords-cleaned = true\n"),
            "x.toml",
            "x",
        )
        .unwrap();
        assert!(s.compacted("t"));
        assert_eq!(s.workload.producers[0].tombstone_rate, 0.2);
        let e = Scenario::parse(
            &MINIMAL.replace("rate = 10", "rate = 10\ntombstone-rate = 0.2"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("tombstones need keys"), "{e}");
        let e = Scenario::parse(
            &format!("{MINIMAL}[expect]\nrecords-cleaned = true\n"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("needs a topic with cleanup.policy compact"),
            "{e}"
        );
    }

    #[test]
    fn a_transactional_producer_needs_acks_all_and_its_keys_need_it() {
        let txn = format!(
            "{MINIMAL}[[topics]]\nname = \"in\"\n[[workload.producers]]\ncount = 2\n\
             topic = \"t\"\nacks = \"all\"\nrate = 5\ntransactional = true\n\
             input = \"in\"\nabort-rate = 0.25\ntransactional-ids = 1\n"
        );
        let s = Scenario::parse(&txn, "x.toml", "x").unwrap();
        let p = &s.workload.producers[1];
        assert!(p.transactional);
        assert_eq!(p.records_per_transaction, 10);
        assert_eq!(p.input_group().as_deref(), Some("t-transformers"));
        let e = Scenario::parse(
            &txn.replace(
                "acks = \"all\"\nrate = 5\ntrans",
                "acks = \"1\"\nrate = 5\ntrans",
            ),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("needs acks = \"all\""), "{e}");
        let e = Scenario::parse(
            &txn.replace("transactional = true\n", ""),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("need transactional = true"), "{e}");
        let e = Scenario::parse(
            &txn.replace("input = \"in\"", "input = \"nope\""),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("input topic \"nope\""), "{e}");
        let interleaved = Scenario::parse(&format!("{txn}interleave = true\n"), "x.toml", "x");
        assert!(interleaved.unwrap().workload.producers[1].interleave);
        let e = Scenario::parse(
            &format!("{txn}interleave = true\n").replace("input = \"in\"\n", ""),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("interleave needs an input topic"), "{e}");
        let e = Scenario::parse(
            &txn.replace("abort-rate = 0.25", "abort-rate = 2"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("abort-rate must be in 0..=1"), "{e}");
    }

    #[test]
    fn a_hold_names_a_kafka_api_and_a_client_or_none() {
        let fault =
            |body: &str| format!("{MINIMAL}\n[[faults]]\nat-ms = 5\nfault = \"hold\"\n{body}");
        let s = Scenario::parse(
            &fault("target = \"client:1\"\napi = \"EndTxn\"\ncount = 1\nfor-ms = 3000\n"),
            "x.toml",
            "x",
        )
        .unwrap();
        let f = s.faults[0].get_ref();
        assert_eq!(f.fault.0, FaultKind::Hold);
        assert_eq!((f.api.as_deref(), f.count), (Some("EndTxn"), Some(1)));
        let s = Scenario::parse(
            &fault("api = \"Produce\"\ntransactional = true\n"),
            "x.toml",
            "x",
        )
        .unwrap();
        assert_eq!(s.faults[0].get_ref().transactional, Some(true));
        let refused = |body: &str, why: &str| {
            let e = Scenario::parse(&fault(body), "bad.toml", "bad").unwrap_err();
            assert!(e.message.contains(why), "{e}");
        };
        refused("api = \"EndTransaction\"\n", "needs `api`, a Kafka API");
        refused(
            "target = \"broker:1\"\napi = \"EndTxn\"\n",
            "holds a client's requests",
        );
        refused(
            "api = \"EndTxn\"\ntransactional = true\n",
            "`transactional` selects produce requests only",
        );
        refused("api = \"EndTxn\"\ncount = 0\n", "count must be positive");
        let e = Scenario::parse(
            &format!("{MINIMAL}\n[[faults]]\nat-ms = 5\nfault = \"crash\"\ntarget = \"broker:1\"\napi = \"Produce\"\n"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("belong to hold"), "{e}");
    }

    #[test]
    fn a_clock_skew_names_a_broker_and_its_offset() {
        let fault = |body: &str| {
            format!("{MINIMAL}\n[[faults]]\nat-ms = 5\nfault = \"clock-skew\"\n{body}")
        };
        let s = Scenario::parse(
            &fault("target = \"broker:1\"\noffset-ms = -90000\nfor-ms = 100\n"),
            "x.toml",
            "x",
        )
        .unwrap();
        assert_eq!(s.faults[0].get_ref().fault.0, FaultKind::ClockSkew);
        assert_eq!(s.faults[0].get_ref().offset_ms, Some(-90_000));
        let e = Scenario::parse(&fault("target = \"broker:1\"\n"), "bad.toml", "bad").unwrap_err();
        assert!(e.message.contains("needs `offset-ms`"), "{e}");
        let e = Scenario::parse(
            &fault("target = \"client:1\"\noffset-ms = 5\n"),
            "bad.toml",
            "bad",
        )
        .unwrap_err();
        assert!(e.message.contains("targets brokers only"), "{e}");
    }
}
