//! `faultline consume`: print a topic's records, one per line.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::{connect, request_error, ClientArgs};
use broker::log::batch::TimestampType;
use client::{
    Consumer, ConsumerConfig, ConsumerRecord, GroupConsumer, GroupConsumerConfig, GroupPollError,
    OffsetAndMetadata, OffsetReset, PollError, SeekError, SeekTo,
};

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
    /// Join this consumer group (subscribe to --topic, take the partitions the group assigns
    /// and commit what was printed, as kafka-console-consumer.sh --group does); a group with
    /// committed offsets resumes from them
    #[arg(long, value_name = "GROUP", conflicts_with_all = ["partition", "offset"])]
    pub group: Option<String>,
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

/// How often `consume --group` commits what it printed (Kafka's auto.commit.interval.ms is
/// 5 s; a tool someone stops with Ctrl-C commits then too).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

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

/// Runs `consume` until its limits or Ctrl-C; returns the exit code.
pub async fn run(args: ConsumeArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    run_until(args, out, err, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Runs `consume` until its limits or until `stop` resolves (Ctrl-C for the binary); either
/// way it prints its summary, and with --group commits and leaves the group. Exit code 1 when
/// a partition was offline (KAFKA_STORAGE_ERROR) or on an error.
pub async fn run_until(
    args: ConsumeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stop: impl std::future::Future<Output = ()>,
) -> i32 {
    let mut count = 0u64;
    let result = run_inner(args, out, err, stop, &mut count).await;
    let _ = writeln!(err, "Processed a total of {count} messages");
    match result {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

/// A plain consumer of assigned partitions, or a member of a group.
enum Source {
    Assigned(Consumer),
    Group(Box<GroupConsumer>),
}

impl Source {
    async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, String> {
        let fetch = |e: PollError| match e {
            PollError::Request(e) => request_error(&e),
            e => e.to_string(),
        };
        match self {
            Source::Assigned(c) => c.poll().await.map_err(fetch),
            Source::Group(g) => g.poll().await.map_err(|e| match e {
                GroupPollError::Fetch(e) => fetch(e),
                e => e.to_string(),
            }),
        }
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        match self {
            Source::Assigned(c) => c.assignment(),
            Source::Group(g) => g.assignment(),
        }
    }

    fn offline_partitions(&self) -> Vec<(String, i32)> {
        match self {
            Source::Assigned(c) => c.offline_partitions(),
            Source::Group(g) => g.offline_partitions(),
        }
    }

    /// With a group: commits the offsets after the records printed so far. The consumer's
    /// own auto-commit would commit its positions, which pass records fetched but not
    /// printed (--max-messages stops inside a poll's records).
    async fn commit(&mut self, printed: &BTreeMap<(String, i32), i64>, err: &mut dyn Write) {
        let Source::Group(g) = self else { return };
        if printed.is_empty() {
            return;
        }
        let offsets = printed
            .iter()
            .map(|(key, &next)| {
                let offset = OffsetAndMetadata {
                    offset: next,
                    leader_epoch: None,
                    metadata: None,
                };
                (key.clone(), offset)
            })
            .collect();
        let outcome = g.commit_offsets(offsets).await;
        if !outcome.is_committed() {
            let _ = writeln!(
                err,
                "error: committing the offsets of group {:?} failed: {outcome:?}",
                g.config().group_id
            );
        }
    }

    /// Commits what was printed and leaves the group.
    async fn close(mut self, printed: &BTreeMap<(String, i32), i64>, err: &mut dyn Write) {
        self.commit(printed, err).await;
        if let Source::Group(g) = self {
            g.close().await;
        }
    }
}

async fn run_inner(
    args: ConsumeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stop: impl std::future::Future<Output = ()>,
    count: &mut u64,
) -> Result<i32, String> {
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
    let mut source = match &args.group {
        Some(group) => {
            let mut config = GroupConsumerConfig::new(group.clone());
            // Where the group has no committed offset: Kafka's console consumer starts at the
            // end, or at the beginning with --from-beginning.
            config.fetch.auto_offset_reset = if args.from_beginning {
                OffsetReset::Earliest
            } else {
                OffsetReset::Latest
            };
            config.enable_auto_commit = false;
            let mut consumer = GroupConsumer::new(client, config);
            consumer.subscribe([args.topic.clone()]);
            Source::Group(Box::new(consumer))
        }
        None => {
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
            Source::Assigned(consumer)
        }
    };
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut idle_since = client::now();
    let mut reported_offline: Vec<(String, i32)> = Vec::new();
    // With --group: the next offset of each partition after what was printed, committed about
    // every second and on the way out.
    let mut printed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut next_commit = client::now() + COMMIT_INTERVAL;
    tokio::pin!(stop);
    let outcome: Result<(), String> = async {
        'poll: loop {
            if args.max_messages.is_some_and(|max| *count >= max) {
                break;
            }
            let records = tokio::select! {
                records = source.poll() => records?,
                () = &mut stop => break,
            };
            // Said at once, once per partition: retrying an offline log can take forever.
            let offline = source.offline_partitions();
            for (topic, partition) in &offline {
                if !reported_offline.contains(&(topic.clone(), *partition)) {
                    reported_offline.push((topic.clone(), *partition));
                    let _ = writeln!(
                        err,
                        "error: partition {topic}-{partition} is offline: its log cannot be \
                         read on the broker (KAFKA_STORAGE_ERROR from Fetch)"
                    );
                }
            }
            let assignment = source.assignment();
            if !assignment.is_empty() && assignment.iter().all(|p| offline.contains(p)) {
                break;
            }
            if records.is_empty() {
                if idle_limit.is_some_and(|limit| idle_since.elapsed() >= limit) {
                    break;
                }
                continue;
            }
            idle_since = client::now();
            for r in &records {
                if args.max_messages.is_some_and(|max| *count >= max) {
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
                *count += 1;
                printed.insert((r.topic.to_string(), r.partition), r.offset + 1);
            }
            out.flush().map_err(io)?;
            if client::now() >= next_commit {
                source.commit(&printed, err).await;
                next_commit = client::now() + COMMIT_INTERVAL;
            }
        }
        Ok(())
    }
    .await;
    source.close(&printed, err).await;
    outcome?;
    Ok(if reported_offline.is_empty() { 0 } else { 1 })
}
