//! `faultline produce`: each line of stdin becomes one record.

use std::io::Write;

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use client::AttemptFailure;

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
    /// delivery.timeout.ms: how long a record is retried (through a leader's failover, a full
    /// disk, ...) before it is reported as not acknowledged
    #[arg(long, default_value_t = 120_000)]
    pub delivery_timeout_ms: u64,
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
    input: impl AsyncBufRead + Unpin,
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
        delivery_timeout: std::time::Duration::from_millis(args.delivery_timeout_ms),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config)
        .await
        .map_err(|e| e.to_string())?;
    let mut failures = producer.attempt_failures();
    let mut reported = Reported::default();
    let mut deliveries = std::collections::VecDeque::new();
    let mut lines = input.lines();
    let mut number = 0u64;
    let mut bad_input = None;
    loop {
        // A failed attempt is said the moment it happens, while stdin is still being read.
        let line = tokio::select! {
            biased;
            Some(failure) = failures.recv() => {
                reported.attempt(&failure, err);
                continue;
            }
            line = lines.next_line() => line.map_err(|e| format!("cannot read stdin: {e}"))?,
        };
        let Some(line) = line else { break };
        number += 1;
        let text = line.strip_suffix('\r').unwrap_or(&line);
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
        deliveries.push_back((number, producer.send(record).await));
    }
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let (mut acknowledged, mut failed, mut unknown) = (0u64, 0u64, 0u64);
    let mut lost = LostLines::default();
    while let Some((number, delivery)) = deliveries.pop_front() {
        tokio::pin!(delivery);
        let outcome = loop {
            tokio::select! {
                biased;
                Some(failure) = failures.recv() => reported.attempt(&failure, err),
                outcome = &mut delivery => break outcome,
            }
        };
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
                lost.add(number, format!("not written: {error}"), err);
            }
            SendOutcome::Unknown { reason } => {
                unknown += 1;
                lost.add(
                    number,
                    format!("may or may not have been written: {reason}"),
                    err,
                );
            }
        }
    }
    lost.flush(err);
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

/// Failed attempts already said, by partition and reason: the first is printed at once, the
/// retries of the same trouble are not repeated.
#[derive(Default)]
struct Reported {
    said: Vec<(String, i32, String)>,
}

impl Reported {
    fn attempt(&mut self, failure: &AttemptFailure, err: &mut dyn Write) {
        let key = (
            failure.topic.clone(),
            failure.partition,
            failure.reason.clone(),
        );
        if self.said.contains(&key) {
            return;
        }
        self.said.push(key);
        let then = if failure.retrying {
            "retrying"
        } else {
            "giving up"
        };
        // Kafka's name for a broker error, as its tools print it (KAFKA_STORAGE_ERROR).
        let code = failure
            .error
            .map(|e| format!("{} ", client::admin::error_name(&e)))
            .unwrap_or_default();
        let _ = writeln!(
            err,
            "error: partition {}-{}: {} records (attempt {}): {code}({}); {then}",
            failure.topic, failure.partition, failure.records, failure.attempt, failure.reason
        );
        let _ = err.flush();
    }
}

/// Records that were not acknowledged, said once per run of consecutive lines with the same
/// outcome (a batch of a thousand fails as one), not once per line.
#[derive(Default)]
struct LostLines {
    run: Option<(u64, u64, String)>,
}

impl LostLines {
    fn add(&mut self, number: u64, what: String, err: &mut dyn Write) {
        if let Some((_, last, current)) = &mut self.run {
            if *current == what && *last + 1 == number {
                *last = number;
                return;
            }
        }
        self.flush(err);
        self.run = Some((number, number, what));
    }

    fn flush(&mut self, err: &mut dyn Write) {
        if let Some((first, last, what)) = self.run.take() {
            let lines = if first == last {
                format!("line {first}")
            } else {
                format!("lines {first}-{last} ({} records)", last - first + 1)
            };
            let _ = writeln!(err, "error: {lines} {what}");
        }
    }
}
