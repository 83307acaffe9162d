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
    /// TOML configuration file; flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. info or broker=debug; RUST_LOG wins [config: log-level]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
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
    Ok(config)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
            eprintln!(
                "error: cannot open data directory {}: {e}",
                config.data_dir.display()
            );
            return 1;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.clone());
    tracing::info!(listen = %local, advertised = config.advertised(), node_id = config.node_id, "faultline broker started");
    broker::server::serve(Arc::clone(&broker), listener, shutdown_signal()).await;
    tracing::info!("shutting down: connections drained, closing logs");
    broker.shutdown().await;
    tracing::info!("faultline broker stopped cleanly");
    0
}
