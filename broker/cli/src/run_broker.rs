//! `faultline broker`: run a broker until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::disk::{self, FileDisk};

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Address to listen on [config: listen]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address clients are told to connect to [config: advertised-listener]
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,
    /// Data directory [config: data-dir]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// This broker's id [config: node-id]
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Address this node's replica of the metadata log listens on for quorum traffic; needed
    /// in a cluster, by voters and learners alike [config: controller-listen]
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listen: Option<String>,
    /// The metadata quorum's voters, Kafka's controller.quorum.voters form:
    /// 1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293. A node not listed joins as a
    /// learner. Unset: a cluster of one [config: controller-quorum]
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub controller_quorum: Option<String>,
    /// This broker's rack (broker.rack): replicas of a partition go to different racks
    /// [config: broker-rack]
    #[arg(long, value_name = "RACK")]
    pub broker_rack: Option<String>,
    /// Where consumers that name their rack (client.rack) read: leader (the default) or
    /// rack-aware, an in-sync replica in their rack (Kafka's replica.selector.class =
    /// RackAwareReplicaSelector) [config: replica-selector]
    #[arg(long, value_name = "leader|rack-aware")]
    pub replica_selector: Option<String>,
    /// TOML configuration file; flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. info or broker=debug; RUST_LOG wins [config: log-level]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Set any key of the TOML file, e.g. num-partitions=3 or flush-mode=lazy (repeatable;
    /// overrides the file, as kafka-server-start.sh's --override does; the flags above win)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
}

/// A `--set` value as TOML: a number, boolean or quoted string as written, anything else (a
/// path, an address, `lazy`) as a string.
fn toml_value(text: &str) -> toml::Value {
    let document = format!("v = {text}");
    match document.parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").expect("the key just written"),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// Defaults, then the file, then the flags.
pub async fn effective_config(args: &BrokerArgs) -> Result<BrokerConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let bytes = disk::read_file(&FileDisk::new(), path)
                .await
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("config file {} is not UTF-8", path.display()))?;
            BrokerConfig::from_toml(&text)
                .map_err(|e| format!("config file {}: {e}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    if !args.set.is_empty() {
        // Through the file's own schema: every key of it can be set, unknown keys are refused.
        let mut table: toml::Table = toml::from_str(&config.to_toml()).expect("config round-trips");
        for pair in &args.set {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("--set expects KEY=VALUE, got {pair:?}"))?;
            table.insert(key.trim().to_string(), toml_value(value.trim()));
        }
        config = BrokerConfig::from_toml(&table.to_string())
            .map_err(|e| format!("--set: {}", e.trim_end()))?;
    }
    if let Some(v) = &args.listen {
        config.listen = v.clone();
    }
    if let Some(v) = &args.advertised_listener {
        config.advertised_listener = Some(v.clone());
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = &args.log_level {
        config.log_level = v.clone();
    }
    if let Some(v) = &args.controller_listen {
        config.controller_listen = Some(v.clone());
    }
    if let Some(v) = &args.controller_quorum {
        config.controller_quorum = Some(v.clone());
    }
    if let Some(v) = &args.broker_rack {
        config.broker_rack = Some(v.clone());
    }
    if let Some(v) = &args.replica_selector {
        config.replica_selector = v.parse()?;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in a file or a pipe they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(all(unix, not(madsim)))]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(all(unix, not(madsim))))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Why the broker could not open its data directory, in one line that names it once.
pub fn open_error(config: &BrokerConfig, e: &std::io::Error) -> String {
    let speaks_for_itself = e
        .get_ref()
        .is_some_and(|inner| inner.is::<disk::LockDirError>())
        || e.kind() == std::io::ErrorKind::NotADirectory;
    if speaks_for_itself {
        e.to_string()
    } else {
        format!(
            "cannot open data directory {}: {e}",
            config.data_dir.display()
        )
    }
}

/// Serves until `shutdown` (then `Ok`) or until the node must halt (`Err` with the reason): its
/// replica of the metadata log failed. Kafka halts such a node at once, without a controlled
/// shutdown (its quorum replica can neither commit nor follow one), and a supervisor restarts
/// it; nothing acknowledged depends on a clean close (appends are synced before they are
/// acknowledged under the durable policy, and the page cache outlives the process).
pub async fn serve_until_halted(
    broker: &Arc<Broker>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    tokio::select! {
        biased;
        reason = broker.halted() => Err(reason),
        () = broker::server::serve(Arc::clone(broker), listener, shutdown) => Ok(()),
    }
}

pub async fn run(args: BrokerArgs) -> i32 {
    let config = match effective_config(&args).await {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return 0;
    }
    init_tracing(&config.log_level);
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen);
            return 1;
        }
    };
    let broker = match Broker::open(
        config.clone(),
        Arc::new(FileDisk::new()),
        Arc::new(SystemClock),
    )
    .await
    {
        Ok(broker) => broker,
        Err(e) => {
            eprintln!("error: {}", open_error(&config, &e));
            return 1;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.clone());
    tracing::info!(listen = %local, advertised = config.advertised(), node_id = config.node_id, "faultline broker started");
    if let Err(reason) = serve_until_halted(&broker, listener, shutdown_signal()).await {
        tracing::error!(%reason, "fatal: halting the broker (exit code 1); restart it to recover from its metadata log");
        eprintln!("fatal: {reason}; the broker halts");
        return 1;
    }
    tracing::info!("connections closed; syncing and closing logs");
    broker.shutdown().await;
    tracing::info!("faultline broker stopped cleanly");
    0
}
