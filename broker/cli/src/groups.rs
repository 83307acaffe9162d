//! `faultline groups list|describe|delete|reset-offsets|delete-offsets`: Kafka's
//! `kafka-consumer-groups.sh`.
//!
//! `describe` shows, per partition the group committed or is assigned, the committed offset
//! (CURRENT-OFFSET), the partition's high watermark (LOG-END-OFFSET, what a read_uncommitted
//! consumer can reach) and their difference (LAG), with the member that owns the partition.
//! `reset-offsets` prints its plan and changes nothing unless given `--execute`; like Kafka it
//! refuses while the group has members, because a live member would overwrite the new offsets
//! with its next commit (and the coordinator refuses a commit without a member id anyway).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use super::{connect, request_error, ClientArgs};
use client::{
    Admin, Client, Consumer, ConsumerConfig, GroupAdminError, GroupDescription, ListGroupsError,
    OffsetAndMetadata, SeekError,
};

/// Kafka's classic group states, as ListGroups and DescribeGroups name them.
const STATES: &[&str] = &[
    "Empty",
    "Stable",
    "PreparingRebalance",
    "CompletingRebalance",
    "Dead",
];

#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: GroupsCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups and their states.
    List {
        /// Only groups in these states: Empty, Stable, PreparingRebalance,
        /// CompletingRebalance, Dead (repeatable or comma-separated)
        #[arg(long = "state", value_name = "STATE", value_delimiter = ',', value_parser = parse_state)]
        states: Vec<String>,
    },
    /// Show a group's committed offsets, log end offsets and lag per partition, with the
    /// member that owns each partition.
    Describe {
        /// The group's id
        group: String,
        /// List the members and their assignments instead of the partitions
        #[arg(long)]
        members: bool,
    },
    /// Delete groups that have no active members, with their committed offsets.
    Delete {
        /// The groups' ids
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets while it has no active members. Prints the plan;
    /// changes nothing without --execute.
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group's committed offsets of some partitions.
    DeleteOffsets {
        /// The group's id
        group: String,
        /// TOPIC (all its partitions) or TOPIC:P,P (repeatable)
        #[arg(long = "topic", value_name = "TOPIC[:P,P]", required = true, value_parser = parse_topic_spec)]
        topics: Vec<TopicSpec>,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime"])
))]
pub struct ResetOffsetsArgs {
    /// The group's id
    pub group: String,
    /// TOPIC (all its partitions) or TOPIC:P,P (repeatable)
    #[arg(long = "topic", value_name = "TOPIC[:P,P]", value_parser = parse_topic_spec)]
    pub topics: Vec<TopicSpec>,
    /// Every partition the group has a committed offset for
    #[arg(long)]
    pub all_topics: bool,
    /// To the log start offset
    #[arg(long)]
    pub to_earliest: bool,
    /// To the log end offset (high watermark)
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (kept within the log start and log end offsets)
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// Move the committed offset by N, forward or back (kept within the log)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// To the first offset whose timestamp is at or after this time: RFC 3339
    /// (2024-05-01T12:00:00Z, UTC when no zone is given) or milliseconds since the epoch
    #[arg(long, value_name = "DATETIME", value_parser = parse_datetime)]
    pub to_datetime: Option<i64>,
    /// Change the offsets (without it, a dry run that only prints the plan)
    #[arg(long, conflicts_with = "dry_run")]
    pub execute: bool,
    /// Only print the plan (the default)
    #[arg(long)]
    pub dry_run: bool,
}

/// `--topic` of reset-offsets and delete-offsets: a topic, and some of its partitions or all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub topic: String,
    /// `None`: every partition of the topic.
    pub partitions: Option<Vec<i32>>,
}

fn parse_topic_spec(s: &str) -> Result<TopicSpec, String> {
    let (topic, partitions) = match s.split_once(':') {
        None => (s, None),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|p| *p >= 0)
                        .ok_or_else(|| format!("{p:?} is not a partition number"))
                })
                .collect::<Result<Vec<i32>, String>>()?;
            (topic, Some(partitions))
        }
    };
    if topic.is_empty() {
        return Err(format!("expected TOPIC or TOPIC:P,P, got {s:?}"));
    }
    Ok(TopicSpec {
        topic: topic.to_string(),
        partitions,
    })
}

fn parse_state(s: &str) -> Result<String, String> {
    STATES
        .iter()
        .find(|state| state.eq_ignore_ascii_case(s.trim()))
        .map(|state| state.to_string())
        .ok_or_else(|| format!("unknown group state {s:?}; one of {}", STATES.join(", ")))
}

/// `--to-datetime`: milliseconds since the epoch, or RFC 3339 (`T` or a space between date
/// and time, optional fraction, `Z` or `±HH:MM`; UTC when no zone is given).
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad =
        || format!("expected milliseconds or a date-time like 2024-05-01T12:00:00Z, got {s:?}");
    let num = |part: &str| -> Result<i64, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (date, rest) = s.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let mut date_parts = date.split('-');
    let (year, month, day) = match (
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
    ) {
        (Some(y), Some(m), Some(d), None) if y.len() == 4 => (num(y)?, num(m)?, num(d)?),
        _ => return Err(bad()),
    };
    // The zone: Z, +HH:MM, -HH:MM (or +HHMM), or nothing (UTC).
    let (time, offset_minutes) = if let Some(time) = rest.strip_suffix(['Z', 'z']) {
        (time, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (time, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = zone[1..].replace(':', "");
        if zone.len() != 4 {
            return Err(bad());
        }
        let minutes = num(&zone[..2])? * 60 + num(&zone[2..])?;
        (time, sign * minutes)
    } else {
        (rest, 0)
    };
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.split(':');
    let (hour, minute, second) = match (
        clock_parts.next(),
        clock_parts.next(),
        clock_parts.next(),
        clock_parts.next(),
    ) {
        (Some(h), Some(m), Some(s), None) => (num(h)?, num(m)?, num(s)?),
        (Some(h), Some(m), None, None) => (num(h)?, num(m)?, 0),
        _ => return Err(bad()),
    };
    let millis = match fraction {
        None => 0,
        Some(f) => {
            num(f)?;
            // Milliseconds: the first three digits, padded.
            let digits: String = f.chars().chain("000".chars()).take(3).collect();
            num(&digits)?
        }
    };
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn group_error(e: &GroupAdminError) -> String {
    match e {
        GroupAdminError::Request(r) => request_error(r),
        other => other.to_string(),
    }
}

fn seek_error(e: &SeekError) -> String {
    match e {
        SeekError::Request(r) => request_error(r),
        other => other.to_string(),
    }
}

/// Writes rows under a header, each column as wide as its widest cell, two spaces apart.
fn write_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&format!("{cell:<w$}"));
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

fn dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Runs a `groups` subcommand; returns the exit code.
pub async fn run(args: GroupsArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run_inner(args, out, err).await {
        Ok(()) => 0,
        Err(message) => {
            if !message.is_empty() {
                let _ = writeln!(err, "error: {message}");
            }
            1
        }
    }
}

/// Ok, or the error line to print (empty when the lines were printed already).
async fn run_inner(
    args: GroupsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let client = connect(&args.client).await?;
    let admin = Admin::new(client);
    let json = args.client.json;
    match args.command {
        GroupsCommand::List { states } => list(&admin, &states, json, out).await,
        GroupsCommand::Describe { group, members } => {
            describe(&admin, &group, members, json, out).await
        }
        GroupsCommand::Delete { groups } => delete(&admin, &groups, json, out, err).await,
        GroupsCommand::ResetOffsets(reset) => reset_offsets(&admin, reset, json, out).await,
        GroupsCommand::DeleteOffsets { group, topics } => {
            delete_offsets(&admin, &group, &topics, json, out).await
        }
    }
}

fn io(e: std::io::Error) -> String {
    format!("cannot write output: {e}")
}

async fn list(
    admin: &Admin,
    states: &[String],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let states: Vec<&str> = states.iter().map(String::as_str).collect();
    let groups = admin.list_groups(&states).await.map_err(|e| match e {
        ListGroupsError::Request(r) => request_error(&r),
        other => other.to_string(),
    })?;
    if json {
        for g in &groups {
            writeln!(
                out,
                "{}",
                json!({"group": g.group_id, "state": g.state, "protocol_type": g.protocol_type})
            )
            .map_err(io)?;
        }
        return Ok(());
    }
    if groups.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| vec![g.group_id.clone(), dash(g.state.as_ref())])
        .collect();
    write_table(out, &["GROUP", "STATE"], &rows).map_err(io)
}

/// One row of `describe`: a partition the group committed or is assigned.
struct PartitionRow {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    log_end_offset: Option<i64>,
    /// The member that owns the partition: (member id, host, client id).
    owner: Option<(String, String, String)>,
}

impl PartitionRow {
    fn lag(&self) -> Option<i64> {
        Some(self.log_end_offset? - self.current_offset?)
    }
}

/// The group's description and committed offsets; an error for a group that does not exist.
async fn group_and_offsets(
    admin: &Admin,
    group: &str,
) -> Result<(GroupDescription, BTreeMap<(String, i32), OffsetAndMetadata>), String> {
    let description = admin
        .describe_group(group)
        .await
        .map_err(|e| group_error(&e))?;
    let offsets = admin
        .list_group_offsets(group, None)
        .await
        .map_err(|e| group_error(&e))?;
    if description.is_dead() && description.members.is_empty() && offsets.is_empty() {
        return Err(GroupAdminError::GroupIdNotFound(group.to_string()).to_string());
    }
    Ok((description, offsets))
}

fn members_word(n: usize) -> String {
    match n {
        0 => "no active members".to_string(),
        1 => "1 member".to_string(),
        n => format!("{n} members"),
    }
}

fn assignment_text(assignment: &Option<Vec<(String, i32)>>) -> String {
    let Some(partitions) = assignment else {
        return "-".into();
    };
    if partitions.is_empty() {
        return "-".into();
    }
    let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic
            .entry(topic.as_str())
            .or_default()
            .push(partition.to_string());
    }
    by_topic
        .iter()
        .map(|(topic, ps)| format!("{topic}({})", ps.join(",")))
        .collect::<Vec<_>>()
        .join(",")
}

async fn describe(
    admin: &Admin,
    group: &str,
    members_only: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let (description, offsets) = group_and_offsets(admin, group).await?;
    let mut rows: BTreeMap<(String, i32), PartitionRow> = BTreeMap::new();
    for ((topic, partition), committed) in &offsets {
        rows.insert(
            (topic.clone(), *partition),
            PartitionRow {
                topic: topic.clone(),
                partition: *partition,
                current_offset: Some(committed.offset),
                log_end_offset: None,
                owner: None,
            },
        );
    }
    for m in &description.members {
        for (topic, partition) in m.assignment.iter().flatten() {
            let row = rows
                .entry((topic.clone(), *partition))
                .or_insert_with(|| PartitionRow {
                    topic: topic.clone(),
                    partition: *partition,
                    current_offset: None,
                    log_end_offset: None,
                    owner: None,
                });
            row.owner = Some((
                m.member_id.clone(),
                m.client_host.clone(),
                m.client_id.clone(),
            ));
        }
    }
    // The log end offset (high watermark) of each; "-" for a partition that is gone.
    let consumer = Consumer::new(admin.client().clone(), ConsumerConfig::default());
    for row in rows.values_mut() {
        row.log_end_offset = match consumer.list_offset(&row.topic, row.partition, -1).await {
            Ok(offset) => Some(offset),
            Err(SeekError::Request(e)) => return Err(request_error(&e)),
            Err(_) => None,
        };
    }
    let member_json = |m: &client::GroupMember| {
        json!({
            "member_id": m.member_id,
            "group_instance_id": m.group_instance_id,
            "client_id": m.client_id,
            "host": m.client_host,
            "assignment": m.assignment.as_ref().map(|a| a
                .iter()
                .map(|(t, p)| json!({"topic": t, "partition": p}))
                .collect::<Vec<_>>()),
        })
    };
    if json {
        let value = json!({
            "group": description.group_id,
            "state": description.state,
            "protocol_type": description.protocol_type,
            "assignment_strategy": description.assignment_strategy,
            "coordinator": {
                "id": description.coordinator.node_id,
                "host": description.coordinator.host,
                "port": description.coordinator.port,
            },
            "members": description.members.iter().map(member_json).collect::<Vec<_>>(),
            "partitions": rows.values().map(|r| json!({
                "topic": r.topic,
                "partition": r.partition,
                "current_offset": r.current_offset,
                "log_end_offset": r.log_end_offset,
                "lag": r.lag(),
                "consumer_id": r.owner.as_ref().map(|o| &o.0),
                "host": r.owner.as_ref().map(|o| &o.1),
                "client_id": r.owner.as_ref().map(|o| &o.2),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{value}").map_err(io)?;
        return Ok(());
    }
    let mut state_line = format!(
        "Consumer group \"{group}\": state {}, {}",
        description.state,
        members_word(description.members.len())
    );
    if !description.assignment_strategy.is_empty() {
        state_line.push_str(&format!(
            ", assignment strategy {}",
            description.assignment_strategy
        ));
    }
    writeln!(out, "{state_line}.").map_err(io)?;
    if members_only {
        if description.members.is_empty() {
            return Ok(());
        }
        writeln!(out).map_err(io)?;
        let table: Vec<Vec<String>> = description
            .members
            .iter()
            .map(|m| {
                vec![
                    group.to_string(),
                    m.member_id.clone(),
                    m.client_host.clone(),
                    m.client_id.clone(),
                    dash(m.assignment.as_ref().map(Vec::len)),
                    assignment_text(&m.assignment),
                ]
            })
            .collect();
        return write_table(
            out,
            &[
                "GROUP",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
                "#PARTITIONS",
                "ASSIGNMENT",
            ],
            &table,
        )
        .map_err(io);
    }
    let mut table: Vec<Vec<String>> = rows
        .values()
        .map(|r| {
            vec![
                group.to_string(),
                r.topic.clone(),
                r.partition.to_string(),
                dash(r.current_offset),
                dash(r.log_end_offset),
                dash(r.lag()),
                dash(r.owner.as_ref().map(|o| &o.0)),
                dash(r.owner.as_ref().map(|o| &o.1)),
                dash(r.owner.as_ref().map(|o| &o.2)),
            ]
        })
        .collect();
    // Members with nothing assigned still get a line, as in Kafka.
    for m in &description.members {
        if m.assignment.as_ref().is_none_or(Vec::is_empty) {
            table.push(vec![
                group.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                m.member_id.clone(),
                m.client_host.clone(),
                m.client_id.clone(),
            ]);
        }
    }
    if table.is_empty() {
        return Ok(());
    }
    writeln!(out).map_err(io)?;
    write_table(
        out,
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &table,
    )
    .map_err(io)
}

async fn delete(
    admin: &Admin,
    groups: &[String],
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let results = admin.delete_groups(&names).await;
    let mut failed = false;
    for (group, result) in names.iter().zip(results) {
        match result {
            Ok(()) => {
                if json {
                    writeln!(out, "{}", json!({"group": group, "deleted": true})).map_err(io)?;
                } else {
                    writeln!(out, "Deleted consumer group \"{group}\".").map_err(io)?;
                }
            }
            Err(e) => {
                failed = true;
                let message = match &e {
                    GroupAdminError::NonEmptyGroup { .. } => format!(
                        "cannot delete consumer group \"{group}\": it has active members \
                         (NON_EMPTY_GROUP); stop its consumers first"
                    ),
                    GroupAdminError::GroupIdNotFound(_) => format!(
                        "cannot delete consumer group \"{group}\": it does not exist \
                         (GROUP_ID_NOT_FOUND)"
                    ),
                    other => format!(
                        "cannot delete consumer group \"{group}\": {}",
                        group_error(other)
                    ),
                };
                if json {
                    let error = e.kafka_error().map(|k| client::admin::error_name(&k));
                    writeln!(
                        out,
                        "{}",
                        json!({"group": group, "deleted": false, "error": error, "message": message})
                    )
                    .map_err(io)?;
                }
                writeln!(err, "error: {message}").map_err(io)?;
            }
        }
    }
    if failed {
        // The error lines are out already.
        return Err(String::new());
    }
    Ok(())
}

/// The partitions `specs` name, checked against the topics' metadata.
async fn resolve_partitions(
    client: &Client,
    specs: &[TopicSpec],
) -> Result<Vec<(String, i32)>, String> {
    let mut partitions = BTreeSet::new();
    for spec in specs {
        let meta = client
            .refresh_topic(&spec.topic, false)
            .await
            .map_err(|e| match e {
                client::MetadataError::Request(r) => request_error(&r),
                other => other.to_string(),
            })?;
        match &spec.partitions {
            None => partitions.extend(
                meta.partitions
                    .iter()
                    .map(|p| (spec.topic.clone(), p.index)),
            ),
            Some(wanted) => {
                for &p in wanted {
                    if !meta.partitions.iter().any(|m| m.index == p) {
                        return Err(format!(
                            "partition {}-{p} does not exist (topic \"{}\" has {} partitions)",
                            spec.topic,
                            spec.topic,
                            meta.partitions.len()
                        ));
                    }
                    partitions.insert((spec.topic.clone(), p));
                }
            }
        }
    }
    Ok(partitions.into_iter().collect())
}

/// Where reset-offsets moves each partition.
#[derive(Clone, Copy, Debug)]
enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    ShiftBy(i64),
    Datetime(i64),
}

async fn reset_offsets(
    admin: &Admin,
    args: ResetOffsetsArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let group = args.group.as_str();
    let to = if args.to_earliest {
        ResetTo::Earliest
    } else if args.to_latest {
        ResetTo::Latest
    } else if let Some(offset) = args.to_offset {
        ResetTo::Offset(offset)
    } else if let Some(n) = args.shift_by {
        ResetTo::ShiftBy(n)
    } else if let Some(ms) = args.to_datetime {
        ResetTo::Datetime(ms)
    } else {
        unreachable!("clap requires one of the --to options")
    };
    let description = admin
        .describe_group(group)
        .await
        .map_err(|e| group_error(&e))?;
    // Dead: the coordinator does not know the group; the commit creates it, as in Kafka.
    if !(description.state == "Empty" || description.is_dead()) {
        return Err(format!(
            "assignments can only be reset if the group \"{group}\" is inactive, but the current \
             state is {} ({}); stop its consumers first",
            description.state,
            members_word(description.members.len())
        ));
    }
    let partitions = if args.all_topics {
        let committed = admin
            .list_group_offsets(group, None)
            .await
            .map_err(|e| group_error(&e))?;
        if committed.is_empty() {
            return Err(format!(
                "consumer group \"{group}\" has no committed offsets; name the partitions with --topic"
            ));
        }
        committed.into_keys().collect()
    } else {
        resolve_partitions(admin.client(), &args.topics).await?
    };
    let current = admin
        .list_group_offsets(group, Some(&partitions))
        .await
        .map_err(|e| group_error(&e))?;
    let consumer = Consumer::new(admin.client().clone(), ConsumerConfig::default());
    let mut plan: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, partition) in &partitions {
        let earliest = consumer
            .list_offset(topic, *partition, -2)
            .await
            .map_err(|e| seek_error(&e))?;
        let latest = consumer
            .list_offset(topic, *partition, -1)
            .await
            .map_err(|e| seek_error(&e))?;
        let committed = current.get(&(topic.clone(), *partition)).map(|c| c.offset);
        let wanted = match to {
            ResetTo::Earliest => earliest,
            ResetTo::Latest => latest,
            ResetTo::Offset(offset) => offset,
            ResetTo::ShiftBy(n) => committed
                .ok_or_else(|| {
                    format!(
                        "cannot shift the offset of partition {topic}-{partition}: the group has no \
                         committed offset for it"
                    )
                })?
                .saturating_add(n),
            ResetTo::Datetime(ms) => {
                match consumer
                    .list_offset(topic, *partition, ms)
                    .await
                    .map_err(|e| seek_error(&e))?
                {
                    // No record at or after the time: the log end, as Kafka does.
                    -1 => latest,
                    offset => offset,
                }
            }
        };
        plan.insert(
            (topic.clone(), *partition),
            wanted.clamp(earliest, latest.max(earliest)),
        );
    }
    if args.execute {
        admin
            .alter_group_offsets(group, &plan)
            .await
            .map_err(|e| match e {
                GroupAdminError::NonEmptyGroup { .. } => format!(
                    "assignments can only be reset if the group \"{group}\" is inactive, but a \
                     member joined meanwhile ({}); stop its consumers first",
                    e.kafka_error()
                        .map(|k| client::admin::error_name(&k))
                        .unwrap_or_default()
                ),
                other => group_error(&other),
            })?;
    }
    if json {
        for ((topic, partition), new_offset) in &plan {
            let previous = current.get(&(topic.clone(), *partition)).map(|c| c.offset);
            writeln!(
                out,
                "{}",
                json!({
                    "group": group,
                    "topic": topic,
                    "partition": partition,
                    "previous_offset": previous,
                    "new_offset": new_offset,
                    "executed": args.execute,
                })
            )
            .map_err(io)?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|((topic, partition), offset)| {
            vec![
                group.to_string(),
                topic.clone(),
                partition.to_string(),
                offset.to_string(),
            ]
        })
        .collect();
    write_table(out, &["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows).map_err(io)?;
    if !args.execute {
        writeln!(
            out,
            "Dry run: no offsets were changed. Add --execute to reset them."
        )
        .map_err(io)?;
    }
    Ok(())
}

async fn delete_offsets(
    admin: &Admin,
    group: &str,
    specs: &[TopicSpec],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let partitions = resolve_partitions(admin.client(), specs).await?;
    admin
        .delete_group_offsets(group, &partitions)
        .await
        .map_err(|e| match e {
            GroupAdminError::Partition {
                topic,
                error: kafka_protocol::error::ResponseError::GroupSubscribedToTopic,
                ..
            } => format!(
                "cannot delete the offsets of consumer group \"{group}\" for topic \"{topic}\": \
                 its active members subscribe to it (GROUP_SUBSCRIBED_TO_TOPIC)"
            ),
            other => group_error(&other),
        })?;
    for (topic, partition) in &partitions {
        if json {
            writeln!(
                out,
                "{}",
                json!({"group": group, "topic": topic, "partition": partition, "deleted": true})
            )
            .map_err(io)?;
        } else {
            writeln!(
                out,
                "Deleted the offset of consumer group \"{group}\" for {topic}-{partition}."
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_as_rfc3339_or_milliseconds() {
        assert_eq!(parse_datetime("0"), Ok(0));
        assert_eq!(parse_datetime("1714564800000"), Ok(1_714_564_800_000));
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_datetime("2024-05-01T12:00:00Z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(parse_datetime("2024-05-01T12:00:00"), Ok(1_714_564_800_000));
        assert_eq!(
            parse_datetime("2024-05-01T14:00:00.250+02:00"),
            Ok(1_714_564_800_250)
        );
        assert_eq!(
            parse_datetime("2024-05-01 07:00:00.5-0500"),
            Ok(1_714_564_800_500)
        );
        assert_eq!(
            parse_datetime("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "yesterday",
            "2024-05-01",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn topic_specs_name_a_topic_or_some_of_its_partitions() {
        assert_eq!(
            parse_topic_spec("orders"),
            Ok(TopicSpec {
                topic: "orders".into(),
                partitions: None
            })
        );
        assert_eq!(
            parse_topic_spec("orders:0,2"),
            Ok(TopicSpec {
                topic: "orders".into(),
                partitions: Some(vec![0, 2])
            })
        );
        assert!(parse_topic_spec("orders:x").is_err());
        assert!(parse_topic_spec(":1").is_err());
    }

    #[test]
    fn group_states_are_matched_without_case() {
        assert_eq!(parse_state("stable"), Ok("Stable".to_string()));
        assert!(parse_state("running").is_err());
    }
}
