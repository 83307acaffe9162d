//! `faultline consume`: print a topic's records, one per line.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::{connect, request_error, ClientArgs};
use broker::log::batch::TimestampType;
use client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, PollError, SeekError, SeekTo};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Topic to read
    #[arg(long)]
    pub topic: String,
    /// Start at the earliest offset instead of the end
    #[arg(long)]
    pub from_beginning: bool,
    /// Read only this partition
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start offset: a number, earliest or latest (needs --partition)
    #[arg(long, requires = "partition")]
    pub offset: Option<String>,
    /// Exit after this many records
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit when no record arrives for this long
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Print the key before the value
    #[arg(long)]
    pub print_key: bool,
    /// Separator between key and value with --print-key
    #[arg(long, default_value = "\t", value_name = "SEP")]
    pub key_separator: String,
}

fn text(bytes: &Option<bytes::Bytes>) -> String {
    match bytes {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".to_string(),
    }
}

fn json_bytes(bytes: &Option<bytes::Bytes>) -> serde_json::Value {
    match bytes {
        Some(b) => String::from_utf8_lossy(b).into_owned().into(),
        None => serde_json::Value::Null,
    }
}

fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp_ms,
        "timestamp_type": match r.timestamp_type { TimestampType::CreateTime => "CreateTime", TimestampType::LogAppendTime => "LogAppendTime" },
        "key": json_bytes(&r.key),
        "value": json_bytes(&r.value),
        "headers": r.headers.iter().map(|h| json!({"key": h.key, "value": json_bytes(&h.value)})).collect::<Vec<_>>(),
    })
}

fn seek_error(e: SeekError) -> String {
    match e {
        SeekError::Request(r) => request_error(&r),
        other => other.to_string(),
    }
}

/// Runs `consume`; returns the exit code.
pub async fn run(args: ConsumeArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run_inner(args, out, err).await {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

async fn run_inner(
    args: ConsumeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let start = match args.offset.as_deref() {
        None if args.from_beginning => SeekTo::Earliest,
        None | Some("latest") => SeekTo::Latest,
        Some("earliest") => SeekTo::Earliest,
        Some(n) => match n.parse::<i64>() {
            Ok(offset) if offset >= 0 => SeekTo::Offset(offset),
            _ => {
                return Err(format!(
                    "--offset must be a non-negative number, earliest or latest, not {n:?}"
                ))
            }
        },
    };
    let client = connect(&args.client).await?;
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    let partitions = consumer
        .assign_topic(&args.topic)
        .await
        .map_err(seek_error)?;
    if let Some(p) = args.partition {
        if !partitions.contains(&p) {
            return Err(format!(
                "topic \"{}\" has no partition {p} ({} partitions)",
                args.topic,
                partitions.len()
            ));
        }
        consumer.assign([(args.topic.clone(), p)]);
    }
    for (topic, partition) in consumer.assignment() {
        consumer
            .seek(&topic, partition, start)
            .await
            .map_err(seek_error)?;
    }
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut idle_since = client::now();
    let mut count = 0u64;
    'poll: loop {
        if args.max_messages.is_some_and(|max| count >= max) {
            break;
        }
        let records = match consumer.poll().await {
            Ok(records) => records,
            Err(PollError::Request(e)) => return Err(request_error(&e)),
            Err(e) => return Err(e.to_string()),
        };
        if records.is_empty() {
            if idle_limit.is_some_and(|limit| idle_since.elapsed() >= limit) {
                break;
            }
            continue;
        }
        idle_since = client::now();
        for r in &records {
            if args.max_messages.is_some_and(|max| count >= max) {
                break 'poll;
            }
            if args.client.json {
                writeln!(out, "{}", record_json(r)).map_err(io)?;
            } else if args.print_key {
                writeln!(
                    out,
                    "{}{}{}",
                    text(&r.key),
                    args.key_separator,
                    text(&r.value)
                )
                .map_err(io)?;
            } else {
                writeln!(out, "{}", text(&r.value)).map_err(io)?;
            }
            count += 1;
        }
        out.flush().map_err(io)?;
    }
    let _ = writeln!(err, "Processed a total of {count} messages");
    Ok(())
}
