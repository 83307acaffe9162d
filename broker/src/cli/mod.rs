//! The `faultline` command line: the broker, and Kafka's tools as subcommands.

pub mod run_broker;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "faultline", version, about = "A Kafka-compatible broker built to be proven correct")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker (single node; embedded defaults: 127.0.0.1:9092, ./faultline-data).
    Broker(run_broker::BrokerArgs),
}

/// Runs the command line; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Broker(args) => run_broker::run(args).await,
    }
}
