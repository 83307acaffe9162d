//! `faultline topics create|list|describe|delete|alter|elect-leaders|reassign`.

use std::io::Write;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::json;

use super::{connect, request_error, ClientArgs};
use client::{
    Admin, ConfigChange, CreateTopicError, ElectLeadersError, ElectionType, NewTopic, TopicError,
    TopicMetadata,
};
use kafka_protocol::error::ResponseError;

#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        /// Name of the topic to create: 1 to 249 of a-z A-Z 0-9 . _ - (a name that differs from
        /// an existing one only by . versus _ is refused, as Kafka does)
        #[arg(long)]
        topic: String,
        /// Number of partitions (default: the broker's num.partitions)
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's)
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config override, e.g. retention.ms=60000 (repeatable)
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions and configs.
    Describe {
        /// Name of the topic to describe
        #[arg(long)]
        topic: String,
    },
    /// Delete a topic.
    Delete {
        /// Name of the topic to delete
        #[arg(long)]
        topic: String,
    },
    /// Change a topic's configs or grow its partitions.
    Alter {
        /// Name of the topic to alter
        #[arg(long)]
        topic: String,
        /// New total number of partitions
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a config, e.g. retention.ms=60000 (repeatable)
        #[arg(long = "add-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        add_configs: Vec<(String, String)>,
        /// Remove a config override (repeatable)
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Elect partition leaders, as kafka-leader-election.sh does: the preferred replica, or
    /// (unclean) any live replica of a partition without a leader.
    #[command(group(ArgGroup::new("which").required(true).args(["topic", "all_topic_partitions"])))]
    ElectLeaders {
        /// preferred: give the leadership back to the first replica if it is in sync;
        /// unclean: elect a live out-of-sync replica of a partition without a leader (records
        /// it lacks are lost)
        #[arg(long, value_enum, ignore_case = true)]
        election_type: Election,
        /// The topic whose partitions to elect (all of them unless --partition)
        #[arg(long)]
        topic: Option<String>,
        /// One partition of --topic
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
        /// Every partition of every topic
        #[arg(long)]
        all_topic_partitions: bool,
    },
    /// Move partitions' replicas between brokers, as kafka-reassign-partitions.sh does
    /// (--execute starts the moves, --verify shows whether they are done, --cancel reverts the
    /// ones still running).
    #[command(group(ArgGroup::new("action").required(true).args(["execute", "verify", "cancel"])))]
    Reassign {
        /// kafka-reassign-partitions.sh's JSON: {"version":1,"partitions":[{"topic":"t",
        /// "partition":0,"replicas":[1,2,3]}]}
        #[arg(long, value_name = "FILE")]
        reassignment_json_file: std::path::PathBuf,
        /// Start the reassignment the file describes
        #[arg(long)]
        execute: bool,
        /// Show whether the reassignment the file describes is done
        #[arg(long)]
        verify: bool,
        /// Cancel the reassignments of the file that are still running
        #[arg(long)]
        cancel: bool,
        /// With --execute: start even though other reassignments are running
        #[arg(long, requires = "execute")]
        additional: bool,
        /// With --execute: refuse a target of another size than the partition has (KIP-860)
        #[arg(long, requires = "execute")]
        disallow_replication_factor_change: bool,
    },
}

/// `--election-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Election {
    Preferred,
    Unclean,
}

impl Election {
    /// As kafka-leader-election.sh prints it.
    fn name(self) -> &'static str {
        match self {
            Election::Preferred => "PREFERRED",
            Election::Unclean => "UNCLEAN",
        }
    }
}

/// An error as a Java exception prints itself (`Throwable.toString`), which is how
/// kafka-leader-election.sh reports a failed election.
fn exception(error: &ResponseError, message: Option<&str>) -> String {
    let class = match error {
        ResponseError::RequestTimedOut => "TimeoutException".to_string(),
        ResponseError::Unknown(code) => format!("UnknownServerException (error code {code})"),
        other => format!("{other:?}Exception"),
    };
    let message = message.map_or_else(|| error.to_string(), str::to_string);
    format!("org.apache.kafka.common.errors.{class}: {message}")
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn topic_error(e: &TopicError) -> String {
    match e {
        TopicError::Request(r) => request_error(r),
        other => other.to_string(),
    }
}

/// A topic's replication factor as kafka-topics.sh reports it: the replicas of its first
/// partition.
fn replication_factor(t: &TopicMetadata) -> usize {
    t.partitions
        .iter()
        .min_by_key(|p| p.index)
        .map_or(0, |p| p.replicas.len())
}

fn topic_json(t: &TopicMetadata) -> serde_json::Value {
    json!({
        "name": t.name,
        "id": t.id.to_string(),
        "partition_count": t.partitions.len(),
        "replication_factor": replication_factor(t),
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.index,
            // null when the partition has no leader (kafka-topics.sh says "none").
            "leader": (p.leader >= 0).then_some(p.leader),
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
        })).collect::<Vec<_>>(),
    })
}

/// Runs a `topics` subcommand; returns the exit code.
pub async fn run(args: TopicsArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run_inner(args, out).await {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

async fn run_inner(args: TopicsArgs, out: &mut dyn Write) -> Result<(), String> {
    let client = connect(&args.client).await?;
    let admin = Admin::new(client);
    let json = args.client.json;
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    match args.command {
        TopicsCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let new = NewTopic {
                name: topic.clone(),
                partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs,
            };
            admin.create_topic(new).await.map_err(|e| match e {
                CreateTopicError::Request(r) => request_error(&r),
                other => other.to_string(),
            })?;
            if json {
                writeln!(out, "{}", json!({"created": topic})).map_err(io)?;
            } else {
                writeln!(out, "Created topic {topic}.").map_err(io)?;
            }
        }
        TopicsCommand::List => {
            let topics = admin.list_topics().await.map_err(|e| request_error(&e))?;
            for t in &topics {
                if json {
                    writeln!(out, "{}", topic_json(t)).map_err(io)?;
                } else {
                    writeln!(out, "{}", t.name).map_err(io)?;
                }
            }
        }
        TopicsCommand::Describe { topic } => {
            let meta = admin
                .describe_topic(&topic)
                .await
                .map_err(|e| topic_error(&e))?;
            let configs = admin
                .describe_topic_config(&topic)
                .await
                .map_err(|e| topic_error(&e))?;
            // As kafka-topics.sh: the running reassignments, if the cluster can say (a broker
            // without ListPartitionReassignments shows none).
            let indexes = meta.partitions.iter().map(|p| p.index).collect();
            let reassigning = admin
                .list_partition_reassignments(Some(vec![(topic.clone(), indexes)]))
                .await
                .unwrap_or_default();
            // KIP-966's eligible leader replicas, where the cluster keeps them (a broker
            // without DescribeTopicPartitions, or with ELR off, shows no Elr columns).
            let elr = admin
                .describe_topic_partitions(&topic)
                .await
                .unwrap_or_default();
            let elr_of = |index: i32| {
                elr.iter()
                    .find(|e| e.partition == index)
                    .filter(|e| e.elr.is_some())
            };
            let factor = |p: &client::PartitionMetadata| {
                // kafka-topics.sh: the replicas without the ones being added.
                let adding = reassigning
                    .iter()
                    .find(|r| r.partition == p.index)
                    .map_or(0, |r| r.adding.len());
                p.replicas.len() - adding
            };
            let replication_factor = |t: &TopicMetadata| {
                t.partitions
                    .iter()
                    .min_by_key(|p| p.index)
                    .map_or(0, factor)
            };
            if json {
                let mut value = topic_json(&meta);
                if let Some(partitions) = value["partitions"].as_array_mut() {
                    for p in partitions {
                        let index = p["partition"].as_i64().unwrap_or(-1);
                        if let Some(e) = i32::try_from(index).ok().and_then(elr_of) {
                            p["elr"] = json!(e.elr);
                            p["last_known_elr"] = json!(e.last_known_elr);
                        }
                    }
                }
                value["configs"] = configs
                    .iter()
                    .map(|c| json!({"name": c.name, "value": c.value, "default": c.is_default, "read_only": c.read_only}))
                    .collect::<Vec<_>>()
                    .into();
                writeln!(out, "{value}").map_err(io)?;
            } else {
                let overrides: Vec<String> = configs
                    .iter()
                    .filter(|c| !c.is_default)
                    .map(|c| format!("{}={}", c.name, c.value.as_deref().unwrap_or("")))
                    .collect();
                // kafka-topics.sh's layout, field for field.
                writeln!(
                    out,
                    "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
                    meta.name,
                    meta.id,
                    meta.partitions.len(),
                    replication_factor(&meta),
                    overrides.join(",")
                )
                .map_err(io)?;
                let list = |v: &[i32]| {
                    v.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                for p in &meta.partitions {
                    let moving = reassigning
                        .iter()
                        .find(|r| r.partition == p.index)
                        .map(|r| {
                            format!(
                                "\tAdding Replicas: {}\tRemoving Replicas: {}",
                                list(&r.adding),
                                list(&r.removing)
                            )
                        })
                        .unwrap_or_default();
                    // kafka-topics.sh's columns after the reassignment's.
                    let eligible = elr_of(p.index)
                        .map(|e| {
                            format!(
                                "\tElr: {}\tLastKnownElr: {}",
                                list(e.elr.as_deref().unwrap_or_default()),
                                list(e.last_known_elr.as_deref().unwrap_or_default())
                            )
                        })
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}{moving}{eligible}",
                        meta.name,
                        p.index,
                        if p.leader >= 0 {
                            p.leader.to_string()
                        } else {
                            "none".to_string()
                        },
                        list(&p.replicas),
                        list(&p.isr)
                    )
                    .map_err(io)?;
                }
            }
        }
        TopicsCommand::Delete { topic } => {
            admin
                .delete_topic(&topic)
                .await
                .map_err(|e| topic_error(&e))?;
            if json {
                writeln!(out, "{}", json!({"deleted": topic})).map_err(io)?;
            } else {
                writeln!(out, "Deleted topic {topic}.").map_err(io)?;
            }
        }
        TopicsCommand::Alter {
            topic,
            partitions,
            add_configs,
            delete_configs,
        } => {
            if partitions.is_none() && add_configs.is_empty() && delete_configs.is_empty() {
                return Err(
                    "nothing to alter: give --partitions, --add-config or --delete-config".into(),
                );
            }
            if let Some(total) = partitions {
                admin
                    .create_partitions(&topic, total)
                    .await
                    .map_err(|e| topic_error(&e))?;
            }
            let changes: Vec<ConfigChange> = add_configs
                .into_iter()
                .map(|(k, v)| ConfigChange::Set(k, v))
                .chain(delete_configs.into_iter().map(ConfigChange::Delete))
                .collect();
            if !changes.is_empty() {
                admin
                    .alter_topic_config(&topic, &changes)
                    .await
                    .map_err(|e| topic_error(&e))?;
            }
            if json {
                writeln!(out, "{}", json!({"altered": topic})).map_err(io)?;
            } else {
                writeln!(out, "Altered topic {topic}.").map_err(io)?;
            }
        }
        TopicsCommand::ElectLeaders {
            election_type,
            topic,
            partition,
            all_topic_partitions: _,
        } => {
            let partitions = match (topic, partition) {
                (None, _) => None,
                (Some(topic), Some(p)) => Some(vec![(topic, vec![p])]),
                (Some(topic), None) => {
                    let meta = admin
                        .describe_topic(&topic)
                        .await
                        .map_err(|e| topic_error(&e))?;
                    let indexes = meta.partitions.iter().map(|p| p.index).collect();
                    Some(vec![(topic, indexes)])
                }
            };
            let election = match election_type {
                Election::Preferred => ElectionType::Preferred,
                Election::Unclean => ElectionType::Unclean,
            };
            let mut results =
                admin
                    .elect_leaders(election, partitions)
                    .await
                    .map_err(|e| match e {
                        ElectLeadersError::Request(r) => request_error(&r),
                        other => other.to_string(),
                    })?;
            results.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            let name = |r: &client::ElectionResult| format!("{}-{}", r.topic, r.partition);
            let succeeded: Vec<String> = results
                .iter()
                .filter(|r| r.error.is_none())
                .map(name)
                .collect();
            let noop: Vec<String> = results
                .iter()
                .filter(|r| matches!(&r.error, Some((ResponseError::ElectionNotNeeded, _))))
                .map(name)
                .collect();
            let failed: Vec<_> = results
                .iter()
                .filter_map(|r| match &r.error {
                    Some((ResponseError::ElectionNotNeeded, _)) | None => None,
                    Some((error, message)) => Some((name(r), error, message.as_deref())),
                })
                .collect();
            if json {
                let value = json!({
                    "election_type": election_type.name(),
                    "elected": succeeded,
                    "not_needed": noop,
                    "failed": failed.iter().map(|(p, error, message)| json!({
                        "partition": p,
                        "error": client::admin::error_name(error),
                        "message": message,
                    })).collect::<Vec<_>>(),
                });
                writeln!(out, "{value}").map_err(io)?;
            } else {
                // kafka-leader-election.sh's lines, word for word.
                if !succeeded.is_empty() {
                    writeln!(
                        out,
                        "Successfully completed leader election ({}) for partitions {}",
                        election_type.name(),
                        succeeded.join(", ")
                    )
                    .map_err(io)?;
                }
                if !noop.is_empty() {
                    writeln!(
                        out,
                        "Valid replica already elected for partitions {}",
                        noop.join(", ")
                    )
                    .map_err(io)?;
                }
                for (p, error, message) in &failed {
                    writeln!(
                        out,
                        "Error completing leader election ({}) for partition: {p}: {}",
                        election_type.name(),
                        exception(error, *message)
                    )
                    .map_err(io)?;
                }
            }
            if !failed.is_empty() {
                return Err(format!("{} replica(s) could not be elected", failed.len()));
            }
        }
        TopicsCommand::Reassign {
            reassignment_json_file,
            execute,
            verify,
            cancel: _,
            additional,
            disallow_replication_factor_change,
        } => {
            #[allow(clippy::disallowed_methods)] // the CLI reads the operator's file
            let text = std::fs::read_to_string(&reassignment_json_file)
                .map_err(|e| format!("cannot read {}: {e}", reassignment_json_file.display()))?;
            let targets = crate::reassign::parse_targets(&text)?;
            if execute {
                crate::reassign::execute(
                    &admin,
                    &targets,
                    additional,
                    !disallow_replication_factor_change,
                    out,
                )
                .await?;
            } else if verify {
                crate::reassign::verify(&admin, &targets, out).await?;
            } else {
                crate::reassign::cancel(&admin, &targets, out).await?;
            }
        }
    }
    Ok(())
}
