//! `faultline cluster up|describe`: a local cluster of `faultline broker` processes in one
//! command (what `rpk container start` or `confluent local` give their users), and what the
//! cluster says about its nodes and its metadata quorum.
//!
//! `up` lays the nodes out on fixed ports (node `i` serves clients on `base + 100 * (i - 1)` and
//! the quorum one port above, KRaft's `1@127.0.0.1:9093,2@127.0.0.1:9193,...`), starts one
//! child process of this very binary per node, each with its own data directory and log file,
//! waits until every one answers, prints the bootstrap servers, and stops them all (SIGTERM,
//! then SIGKILL after a bound) on Ctrl-C or SIGTERM, or as soon as one of them dies.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{connect_error, request_error, ClientArgs};
use broker::protocol::describe_quorum::{self as quorum_tags, METADATA_TOPIC};
use wire::connection::{Connection, ConnectionConfig};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster of broker processes; Ctrl-C stops them all.
    Up(UpArgs),
    /// Show the nodes, the active controller, broker epochs, fencing and the metadata offset.
    Describe {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Clone, Debug, Args)]
pub struct UpArgs {
    /// Number of brokers (node ids 1..=N); up to 5 of them are the metadata quorum's voters
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=MAX_BROKERS as i64))]
    pub brokers: u16,
    /// Directory for the nodes' data directories (node-1, ...) and logs (node-1.log, ...)
    #[arg(long, value_name = "DIR", default_value = "./faultline-cluster")]
    pub data_dir: PathBuf,
    /// Client port of node 1; node i listens on base + 100 * (i - 1), its quorum listener one
    /// port above
    #[arg(long, value_name = "PORT", default_value_t = 9092)]
    pub base_port: u16,
    /// A broker setting for every node, as `faultline broker --set` takes it (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// How long to wait for every node to answer before giving up
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub start_timeout_ms: u64,
    /// Print the started cluster as one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// More would not fit the port layout below 65535 with room to spare, and is no longer local.
pub const MAX_BROKERS: u16 = 99;

/// One node of a local cluster: where it listens, where it keeps its data and its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub id: i32,
    pub listen: String,
    pub controller_listen: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// The whole local cluster, before anything starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPlan {
    pub nodes: Vec<NodePlan>,
    /// `controller.quorum.voters` for every node.
    pub voters: String,
}

impl ClusterPlan {
    pub fn bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.listen.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How many of `brokers` nodes vote in the metadata quorum: an odd number, at most 5, as
/// Kafka advises for KRaft (an even count tolerates no more failures than the odd one below it
/// and needs one more node for every commit); the others join as learners.
pub fn voter_count(brokers: usize) -> usize {
    match brokers {
        0 => 0,
        1 | 2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

/// Lays out `brokers` nodes on 127.0.0.1 from `base_port`, under `dir`.
pub fn plan(brokers: u16, base_port: u16, dir: &Path) -> Result<ClusterPlan, String> {
    if !(1..=MAX_BROKERS).contains(&brokers) {
        return Err(format!(
            "--brokers must be 1 to {MAX_BROKERS}, got {brokers}"
        ));
    }
    if base_port == 0 {
        return Err("--base-port must be a port (1-65534): the voters' addresses are fixed before they start".into());
    }
    let last = u32::from(base_port) + 100 * (u32::from(brokers) - 1) + 1;
    if last > u32::from(u16::MAX) {
        return Err(format!(
            "--base-port {base_port} leaves no room for {brokers} brokers (node {brokers} would need port {last})"
        ));
    }
    let nodes: Vec<NodePlan> = (1..=i32::from(brokers))
        .map(|id| {
            let port = u32::from(base_port) + 100 * (id as u32 - 1);
            NodePlan {
                id,
                listen: format!("127.0.0.1:{port}"),
                controller_listen: format!("127.0.0.1:{}", port + 1),
                data_dir: dir.join(format!("node-{id}")),
                log: dir.join(format!("node-{id}.log")),
            }
        })
        .collect();
    let voters = nodes
        .iter()
        .take(voter_count(nodes.len()))
        .map(|n| format!("{}@{}", n.id, n.controller_listen))
        .collect::<Vec<_>>()
        .join(",");
    Ok(ClusterPlan { nodes, voters })
}

impl NodePlan {
    /// The `faultline broker` arguments that start this node.
    pub fn broker_args(&self, voters: &str, set: &[String]) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "broker".into(),
            "--node-id".into(),
            self.id.to_string().into(),
            "--listen".into(),
            self.listen.clone().into(),
            "--controller-listen".into(),
            self.controller_listen.clone().into(),
            "--controller-quorum".into(),
            voters.into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
        ];
        for pair in set {
            args.push("--set".into());
            args.push(pair.into());
        }
        args
    }
}

/// Runs a `cluster` subcommand; returns the exit code.
pub async fn run(args: ClusterArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match args.command {
        ClusterCommand::Up(up) => supervisor::up(up, out, err).await,
        ClusterCommand::Describe { client } => match describe(&client, out).await {
            Ok(()) => 0,
            Err(message) => {
                let _ = writeln!(err, "error: {message}");
                1
            }
        },
    }
}

/// The versions `cluster describe` speaks: DescribeCluster v2 adds fencing, DescribeQuorum v2
/// the nodes (where Faultline's broker epochs ride as tagged fields).
const DESCRIBE_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
];

/// Connects to the first bootstrap server that answers.
async fn connect_any(args: &ClientArgs) -> Result<Connection, String> {
    let config = ConnectionConfig {
        client_id: "faultline-cli".into(),
        connect_timeout: std::time::Duration::from_secs(5),
        ..ConnectionConfig::default()
    };
    let servers = client::ClientConfig::new(args.bootstrap_server.clone()).bootstrap_servers;
    let mut last = format!("no bootstrap server in {:?}", args.bootstrap_server);
    for addr in &servers {
        match Connection::connect(addr, config.clone(), DESCRIBE_VERSIONS).await {
            Ok(connection) => return Ok(connection),
            Err(e) => last = connect_error(&e),
        }
    }
    Err(last)
}

/// One node as `cluster describe` shows it; `None` where this broker's answer does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NodeView {
    id: i32,
    endpoint: Option<String>,
    rack: Option<String>,
    role: Option<&'static str>,
    broker_epoch: Option<i64>,
    fenced: Option<bool>,
    metadata_offset: Option<i64>,
}

async fn describe(args: &ClientArgs, out: &mut dyn Write) -> Result<(), String> {
    let connection = connect_any(args).await?;
    let fenced_known = connection
        .version_for(ApiKey::DescribeCluster)
        .is_ok_and(|v| v >= 2);
    let cluster: DescribeClusterResponse = connection
        .send(&DescribeClusterRequest::default().with_include_fenced_brokers(fenced_known))
        .await
        .map_err(|e| request_error(&e))?;
    if cluster.error_code != 0 {
        let error = ResponseError::try_from_code(cluster.error_code)
            .unwrap_or(ResponseError::Unknown(cluster.error_code));
        return Err(format!(
            "DescribeCluster: {}{}",
            client::admin::error_name(&error),
            cluster
                .error_message
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ));
    }
    let mut nodes: std::collections::BTreeMap<i32, NodeView> = cluster
        .brokers
        .iter()
        .map(|b| {
            (
                b.broker_id.0,
                NodeView {
                    id: b.broker_id.0,
                    endpoint: Some(format!("{}:{}", b.host, b.port)),
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                    fenced: fenced_known.then_some(b.is_fenced),
                    ..NodeView::default()
                },
            )
        })
        .collect();
    // The quorum, where the broker speaks DescribeQuorum (a single broker of old does not).
    let quorum: Option<DescribeQuorumResponse> = if connection.supports(ApiKey::DescribeQuorum) {
        let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        Some(
            connection
                .send(&request)
                .await
                .map_err(|e| request_error(&e))?,
        )
    } else {
        None
    };
    let partition = quorum
        .as_ref()
        .and_then(|q| q.topics.first())
        .and_then(|t| t.partitions.first())
        .filter(|p| p.error_code == 0);
    let mut voters: Option<Vec<i32>> = None;
    if let Some(p) = partition {
        voters = Some(p.current_voters.iter().map(|v| v.replica_id.0).collect());
        for (replicas, is_voter) in [(&p.current_voters, true), (&p.observers, false)] {
            for r in replicas {
                let id = r.replica_id.0;
                let node = nodes.entry(id).or_insert_with(|| NodeView {
                    id,
                    ..NodeView::default()
                });
                node.role = Some(match (is_voter, id == p.leader_id.0) {
                    (true, true) => "Leader",
                    (true, false) => "Follower",
                    (false, _) => "Observer",
                });
                node.metadata_offset = (r.log_end_offset >= 0).then_some(r.log_end_offset);
            }
        }
    }
    if let Some(q) = &quorum {
        for n in &q.nodes {
            if let Some(node) = nodes.get_mut(&n.node_id.0) {
                node.broker_epoch = quorum_tags::broker_epoch(&n.unknown_tagged_fields);
                if let Some(fenced) = quorum_tags::fenced(&n.unknown_tagged_fields) {
                    node.fenced = Some(fenced);
                }
            }
        }
    }
    let controller = (cluster.controller_id.0 >= 0).then_some(cluster.controller_id.0);
    let leader_epoch = partition.map(|p| p.leader_epoch);
    let metadata_offset = partition.map(|p| p.high_watermark);
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    if args.json {
        let value = json!({
            "cluster_id": cluster.cluster_id.to_string(),
            "active_controller": controller,
            "leader_epoch": leader_epoch,
            "metadata_offset": metadata_offset,
            "voters": voters,
            "nodes": nodes.values().map(|n| json!({
                "id": n.id,
                "endpoint": n.endpoint,
                "rack": n.rack,
                "role": n.role,
                "broker_epoch": n.broker_epoch,
                "fenced": n.fenced,
                "metadata_offset": n.metadata_offset,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{value}").map_err(io)?;
        return Ok(());
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let list = |v: &[i32]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    writeln!(out, "ClusterId:         {}", cluster.cluster_id).map_err(io)?;
    writeln!(
        out,
        "ActiveController:  {}",
        or_dash(controller.map(|c| c.to_string()))
    )
    .map_err(io)?;
    writeln!(
        out,
        "LeaderEpoch:       {}",
        or_dash(leader_epoch.map(|e| e.to_string()))
    )
    .map_err(io)?;
    writeln!(
        out,
        "MetadataOffset:    {}",
        or_dash(metadata_offset.map(|o| o.to_string()))
    )
    .map_err(io)?;
    writeln!(
        out,
        "Voters:            {}",
        or_dash(voters.as_deref().map(list))
    )
    .map_err(io)?;
    let rows: Vec<[String; 7]> = nodes
        .values()
        .map(|n| {
            [
                n.id.to_string(),
                or_dash(n.endpoint.clone()),
                or_dash(n.rack.clone()),
                or_dash(n.role.map(String::from)),
                or_dash(n.broker_epoch.map(|e| e.to_string())),
                or_dash(n.fenced.map(|f| f.to_string())),
                or_dash(n.metadata_offset.map(|o| o.to_string())),
            ]
        })
        .collect();
    let header = [
        "NODE-ID",
        "ENDPOINT",
        "RACK",
        "ROLE",
        "BROKER-EPOCH",
        "FENCED",
        "METADATA-OFFSET",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out).map_err(io)?;
    writeln!(out, "{}", line(header.to_vec())).map_err(io)?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect())).map_err(io)?;
    }
    Ok(())
}

#[cfg(madsim)]
mod supervisor {
    use super::UpArgs;
    use std::io::Write;

    pub async fn up(_args: UpArgs, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
        let _ = writeln!(
            err,
            "error: this is a simulation build; build faultline normally to run a cluster"
        );
        2
    }
}

/// The processes: OS processes, files and real time, so not broker code (clippy.toml's
/// determinism bans are for the broker; this runs only in the normal build).
#[cfg(not(madsim))]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod supervisor {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::{plan, NodePlan, UpArgs};
    use wire::connection::{Connection, ConnectionConfig};

    fn brokers(n: usize) -> String {
        if n == 1 {
            "1 broker".into()
        } else {
            format!("{n} brokers")
        }
    }

    /// How long a node may take to stop after SIGTERM before it is killed: the broker's own
    /// shutdown bound (`shutdown-timeout-ms`, 5 s by default) and its log syncs, with room.
    const STOP_GRACE: Duration = Duration::from_secs(20);
    /// How often the supervisor looks for a node that died.
    const POLL: Duration = Duration::from_millis(100);

    /// The running nodes; whatever is still running when this is dropped (a panic, an early
    /// return) is killed, so `cluster up` never leaves brokers behind it.
    struct Nodes(Vec<(NodePlan, Child)>);

    impl Drop for Nodes {
        fn drop(&mut self) {
            for (_, child) in &mut self.0 {
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    /// SIGTERM to a child not yet reaped (so its pid cannot have been reused).
    fn terminate(child: &mut Child) {
        if matches!(child.try_wait(), Ok(None)) {
            let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
            // SAFETY: kill(2) with a pid we own and have not reaped; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }

    /// The last lines of a node's log, to say why it died without sending the user digging.
    fn log_tail(path: &std::path::Path, lines: usize) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let all: Vec<String> = text.lines().map(String::from).collect();
        all[all.len().saturating_sub(lines)..].to_vec()
    }

    fn died(node: &NodePlan, pid: u32, status: ExitStatus, err: &mut dyn Write) {
        let _ = writeln!(
            err,
            "error: node {} (pid {pid}) exited ({status}); its log: {}",
            node.id,
            node.log.display()
        );
        for line in log_tail(&node.log, 5) {
            let _ = writeln!(err, "  | {line}");
        }
    }

    /// The first node found dead, with its exit status.
    fn first_dead(nodes: &mut Nodes) -> Option<(usize, ExitStatus)> {
        nodes
            .0
            .iter_mut()
            .enumerate()
            .find_map(|(i, (_, child))| child.try_wait().ok().flatten().map(|s| (i, s)))
    }

    /// Stops every node still running: SIGTERM, then SIGKILL after [`STOP_GRACE`].
    async fn stop_all(nodes: &mut Nodes, out: &mut dyn Write) {
        for (_, child) in &mut nodes.0 {
            terminate(child);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (node, child) in &mut nodes.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        let _ = writeln!(out, "Stopped node {} ({status}).", node.id);
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                    _ => {
                        let _ = child.kill();
                        let status = child.wait();
                        let _ = writeln!(
                            out,
                            "Killed node {}: still running {}s after SIGTERM ({}).",
                            node.id,
                            STOP_GRACE.as_secs(),
                            status.map(|s| s.to_string()).unwrap_or_default()
                        );
                        break;
                    }
                }
            }
        }
    }

    /// Does a broker answer on `addr`? (Connecting negotiates ApiVersions: a broker that
    /// answers that serves requests.)
    async fn answers(addr: &str) -> bool {
        let config = ConnectionConfig {
            client_id: "faultline-cluster-up".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        };
        Connection::connect(addr, config, super::DESCRIBE_VERSIONS)
            .await
            .is_ok()
    }

    /// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed here, before any
    /// child starts, so a signal never finds the default action (death, orphaning the brokers).
    fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                biased;
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }

    pub async fn up(args: UpArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
        let stop = match stop_signal() {
            Ok(stop) => stop,
            Err(e) => {
                let _ = writeln!(err, "error: cannot handle signals: {e}");
                return 1;
            }
        };
        tokio::pin!(stop);
        let plan = match plan(args.brokers, args.base_port, &args.data_dir) {
            Ok(plan) => plan,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return 2;
            }
        };
        // Every port free before anything starts: a clash found by a child is a dead node and
        // a log to read; found here it is one line.
        for node in &plan.nodes {
            for (addr, what) in [
                (&node.listen, "listener"),
                (&node.controller_listen, "quorum listener"),
            ] {
                if let Err(e) = std::net::TcpListener::bind(addr.as_str()) {
                    let _ = writeln!(
                        err,
                        "error: cannot use {addr} for node {}'s {what}: {e} (choose another --base-port)",
                        node.id
                    );
                    return 1;
                }
            }
        }
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                let _ = writeln!(err, "error: cannot find the faultline binary to start: {e}");
                return 1;
            }
        };
        let mut nodes = Nodes(Vec::new());
        for node in &plan.nodes {
            let log = std::fs::create_dir_all(&args.data_dir).and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&node.log)
            });
            let log = match log.and_then(|log| Ok((log.try_clone()?, log))) {
                Ok(log) => log,
                Err(e) => {
                    let _ = writeln!(
                        err,
                        "error: cannot open log file {}: {e}",
                        node.log.display()
                    );
                    return 1;
                }
            };
            let child = Command::new(&exe)
                .args(node.broker_args(&plan.voters, &args.set))
                .stdin(Stdio::null())
                .stdout(log.0)
                .stderr(log.1)
                .spawn();
            match child {
                Ok(child) => nodes.0.push((node.clone(), child)),
                Err(e) => {
                    let _ = writeln!(err, "error: cannot start node {}: {e}", node.id);
                    return 1;
                }
            }
        }
        if !args.json {
            let _ = writeln!(
                out,
                "Starting {} in {} (quorum voters {}):",
                brokers(plan.nodes.len()),
                args.data_dir.display(),
                plan.voters
            );
            for (node, child) in &nodes.0 {
                let _ = writeln!(
                    out,
                    "  node {} (pid {}): {}, quorum {}, data {}, log {}",
                    node.id,
                    child.id(),
                    node.listen,
                    node.controller_listen,
                    node.data_dir.display(),
                    node.log.display()
                );
            }
            let _ = out.flush();
        }

        // Up: every node answers; a node that dies first, or a stop, ends the wait.
        let deadline = Instant::now() + Duration::from_millis(args.start_timeout_ms);
        let mut waiting: Vec<usize> = (0..nodes.0.len()).collect();
        while !waiting.is_empty() {
            if let Some((i, status)) = first_dead(&mut nodes) {
                let (node, child) = &nodes.0[i];
                died(node, child.id(), status, err);
                stop_all(&mut nodes, out).await;
                return 1;
            }
            if Instant::now() >= deadline {
                let node = &nodes.0[waiting[0]].0;
                let _ = writeln!(
                    err,
                    "error: node {} did not answer on {} within {} ms; its log: {}",
                    node.id,
                    node.listen,
                    args.start_timeout_ms,
                    node.log.display()
                );
                stop_all(&mut nodes, out).await;
                return 1;
            }
            let addr = nodes.0[waiting[0]].0.listen.clone();
            tokio::select! {
                biased;
                _ = &mut stop => {
                    stop_all(&mut nodes, out).await;
                    return 0;
                }
                up = answers(&addr) => {
                    if up {
                        waiting.remove(0);
                    } else {
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        }
        if args.json {
            let value = json!({
                "bootstrap_servers": plan.bootstrap_servers(),
                "voters": plan.voters,
                "nodes": nodes.0.iter().map(|(n, child)| json!({
                    "id": n.id,
                    "pid": child.id(),
                    "listen": n.listen,
                    "controller_listen": n.controller_listen,
                    "data_dir": n.data_dir,
                    "log": n.log,
                })).collect::<Vec<_>>(),
            });
            let _ = writeln!(out, "{value}");
        } else {
            let _ = writeln!(out, "Bootstrap servers: {}", plan.bootstrap_servers());
            let _ = writeln!(out, "Ctrl-C stops the cluster.");
        }
        let _ = out.flush();

        // Running: until asked to stop, or until a node dies (then the rest are stopped too: a
        // cluster missing a node it was started with is not what the user asked for).
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => {
                    if !args.json {
                        let _ = writeln!(out, "Stopping {}...", brokers(nodes.0.len()));
                    }
                    stop_all(&mut nodes, out).await;
                    return 0;
                }
                _ = tokio::time::sleep(POLL) => {
                    if let Some((i, status)) = first_dead(&mut nodes) {
                        let (node, child) = &nodes.0[i];
                        died(node, child.id(), status, err);
                        stop_all(&mut nodes, out).await;
                        return 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_cluster_is_laid_out_as_the_readme_shows_it() {
        let plan = plan(3, 9092, Path::new("/tmp/c")).unwrap();
        assert_eq!(
            plan.voters,
            "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293"
        );
        assert_eq!(
            plan.bootstrap_servers(),
            "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
        );
        assert_eq!(plan.nodes[1].data_dir, Path::new("/tmp/c/node-2"));
        assert_eq!(plan.nodes[1].log, Path::new("/tmp/c/node-2.log"));
        let args: Vec<String> = plan.nodes[1]
            .broker_args(&plan.voters, &["num-partitions=3".into()])
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "broker --node-id 2 --listen 127.0.0.1:9192 --controller-listen 127.0.0.1:9193 \
             --controller-quorum 1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293 \
             --data-dir /tmp/c/node-2 --set num-partitions=3"
        );
    }

    #[test]
    fn voters_are_an_odd_number_of_at_most_five_and_the_rest_are_learners() {
        let counts: Vec<usize> = (1..=8).map(voter_count).collect();
        assert_eq!(counts, [1, 1, 3, 3, 5, 5, 5, 5]);
        let plan = plan(7, 9092, Path::new("d")).unwrap();
        assert_eq!(plan.voters.split(',').count(), 5);
        assert!(!plan.voters.contains("6@"));
    }

    #[test]
    fn a_layout_that_does_not_fit_the_ports_is_refused() {
        assert!(plan(3, 65400, Path::new("d"))
            .unwrap_err()
            .contains("leaves no room for 3 brokers"));
        assert!(plan(1, 0, Path::new("d")).is_err());
        assert!(plan(0, 9092, Path::new("d")).is_err());
        // Node 3's quorum port is the last that fits.
        assert!(plan(3, 65535 - 201, Path::new("d")).is_ok());
    }
}
