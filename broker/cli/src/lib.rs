//! The `faultline` command line: the broker, and Kafka's tools as subcommands.

pub mod bench;
pub mod cluster;
pub mod compaction_bench;
pub mod consume;
pub mod groups;
pub mod produce;
pub mod reassign;
pub mod run_broker;
pub mod startup_bench;
pub mod topics;
pub mod transaction_bench;
pub mod transactions;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use client::{Client, ClientConfig, ConnectError, RequestError};

#[derive(Debug, Parser)]
#[command(
    name = "faultline",
    version,
    about = "A Kafka-compatible broker built to be proven correct"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker (embedded defaults: a single node on 127.0.0.1:9092, data in ./faultline-data).
    Broker(run_broker::BrokerArgs),
    /// Create, list, describe, delete and alter topics.
    Topics(topics::TopicsArgs),
    /// Send lines from stdin as records.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their offsets.
    Groups(groups::GroupsArgs),
    /// Load benchmark: produce or consume as fast as the broker goes, against a yardstick.
    Bench(bench::BenchArgs),
    /// Start a local cluster (`up`), or describe a running one's nodes and metadata quorum.
    Cluster(cluster::ClusterArgs),
    /// List and describe transactions and producers; find and abort hanging transactions.
    Transactions(transactions::TransactionsArgs),
}

/// Options every client subcommand takes.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// Broker to connect to first
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_server: String,
    /// Print machine-readable JSON (one object per line) instead of text
    #[arg(long, global = true)]
    pub json: bool,
}

/// Connects for a CLI command; the error is one readable line.
pub async fn connect(args: &ClientArgs) -> Result<Client, String> {
    let mut config = ClientConfig::new(args.bootstrap_server.clone());
    config.connection.client_id = "faultline-cli".into();
    config.connection.connect_timeout = Duration::from_secs(5);
    Client::connect(config).await.map_err(|e| connect_error(&e))
}

/// A connection error as the CLI prints it.
pub fn connect_error(e: &ConnectError) -> String {
    match e {
        ConnectError::Io { addr, .. } if e.is_refused() => {
            format!("cannot connect to {addr}: connection refused (is a broker running there?)")
        }
        other => other.to_string(),
    }
}

/// A request error as the CLI prints it.
pub fn request_error(e: &RequestError) -> String {
    match e {
        RequestError::Connect(c) => connect_error(c),
        other => other.to_string(),
    }
}

/// Runs the command line; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Broker(args) => run_broker::run(args).await,
        Command::Topics(args) => {
            topics::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Command::Produce(args) => {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            produce::run(args, stdin, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Command::Consume(args) => {
            consume::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Command::Groups(args) => {
            groups::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Command::Bench(args) => {
            bench::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Command::Cluster(args) => {
            cluster::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
        Command::Transactions(args) => {
            transactions::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await
        }
    }
}
