//! `faultline produce`: each line of stdin becomes one record.

use std::io::Write;

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::{connect, ClientArgs};
use client::{
    Acks, MetadataError, Producer, ProducerConfig, ProducerRecord, SendOutcome, UnknownReason,
};

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Topic to write to
    #[arg(long)]
    pub topic: String,
    /// acks: 0, 1 or all
    #[arg(long, default_value = "all", value_parser = |s: &str| s.parse::<Acks>())]
    pub acks: Acks,
    /// Split each line at the first SEP into key and value
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Write every record to this partition instead of partitioning by key
    #[arg(long)]
    pub partition: Option<i32>,
    /// A header on every record, KEY=VALUE (repeatable; repeated keys are kept)
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
}

/// Runs `produce` reading lines from `input`; returns the exit code: 0 when every record was
/// acknowledged (with acks=0: sent), 1 otherwise.
pub async fn run(
    args: ProduceArgs,
    input: impl AsyncBufRead + Unpin,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match run_inner(args, input, out, err).await {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

async fn run_inner(
    args: ProduceArgs,
    mut input: impl AsyncBufRead + Unpin,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, String> {
    let mut headers = Vec::new();
    for h in &args.headers {
        match h.split_once('=') {
            Some((k, v)) => headers.push((k.to_string(), v.to_string())),
            None => return Err(format!("--header expects KEY=VALUE, got {h:?}")),
        }
    }
    let client = connect(&args.client).await?;
    match client.topic_metadata(&args.topic, true).await {
        Ok(_) => {}
        Err(MetadataError::Request(e)) => return Err(super::request_error(&e)),
        Err(e) => return Err(e.to_string()),
    }
    let config = ProducerConfig {
        acks: args.acks,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config)
        .await
        .map_err(|e| e.to_string())?;
    let mut deliveries = Vec::new();
    let mut line = String::new();
    let mut number = 0u64;
    let mut bad_input = None;
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .await
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        let text = line.strip_suffix('\n').unwrap_or(&line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let (key, value) = match &args.key_separator {
            Some(sep) => match text.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => {
                    bad_input = Some(format!("line {number} has no key separator {sep:?}"));
                    break;
                }
            },
            None => (None, text.to_string()),
        };
        let mut record = ProducerRecord::new(args.topic.clone(), value.into_bytes());
        record.key = key.map(|k| k.into_bytes().into());
        record.partition = args.partition;
        for (k, v) in &headers {
            record = record.with_header(k.clone(), v.clone().into_bytes());
        }
        deliveries.push((number, producer.send(record).await));
    }
    producer.flush().await;
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let (mut acknowledged, mut failed, mut unknown) = (0u64, 0u64, 0u64);
    for (number, delivery) in deliveries {
        let outcome = delivery.await;
        if args.client.json {
            let value = match &outcome {
                SendOutcome::Acknowledged { partition, offset } => {
                    json!({"line": number, "outcome": "acknowledged", "partition": partition, "offset": offset})
                }
                SendOutcome::Failed { error } => {
                    json!({"line": number, "outcome": "failed", "error": error.to_string()})
                }
                SendOutcome::Unknown { reason } => {
                    json!({"line": number, "outcome": "unknown", "reason": reason.to_string()})
                }
            };
            writeln!(out, "{value}").map_err(io)?;
        }
        match outcome {
            SendOutcome::Acknowledged { .. } => acknowledged += 1,
            SendOutcome::Unknown {
                reason: UnknownReason::NotAcknowledged,
            } => acknowledged += 1,
            SendOutcome::Failed { error } => {
                failed += 1;
                let _ = writeln!(err, "error: line {number} was not written: {error}");
            }
            SendOutcome::Unknown { reason } => {
                unknown += 1;
                let _ = writeln!(
                    err,
                    "error: line {number} may or may not have been written: {reason}"
                );
            }
        }
    }
    producer.close().await;
    if let Some(message) = bad_input {
        return Err(message);
    }
    if failed + unknown > 0 {
        let _ = writeln!(
            err,
            "error: {} of {} records not acknowledged ({failed} failed, {unknown} unknown)",
            failed + unknown,
            acknowledged + failed + unknown
        );
        return Ok(1);
    }
    Ok(0)
}
