//! `faultline topics reassign`: kafka-reassign-partitions.sh's `--execute`, `--verify` and
//! `--cancel` on its reassignment JSON file, its output lines word for word (the throttle
//! lines aside: Faultline has no replication throttles).
//!
//! The file: `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2,3]}]}`
//! (`log_dirs`, if given, must be "any" for each replica: there is one log directory).

use std::collections::BTreeMap;
use std::io::Write;

use client::{Admin, ReassignmentError, TopicError};

use super::request_error;

/// What the file asks: per partition, the target replicas, in file order.
pub type Targets = Vec<((String, i32), Vec<i32>)>;

/// Parses a reassignment JSON file as kafka-reassign-partitions.sh does
/// (`parsePartitionReassignmentData`), with its error messages.
pub fn parse_targets(text: &str) -> Result<Targets, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the reassignment JSON file is not valid JSON: {e}"))?;
    match value.get("version").and_then(|v| v.as_i64()) {
        Some(1) | None => {}
        Some(v) => return Err(format!("Not supported version field value {v}")),
    }
    let partitions = value
        .get("partitions")
        .and_then(|p| p.as_array())
        .ok_or("Partition reassignment list cannot be empty")?;
    if partitions.is_empty() {
        return Err("Partition reassignment list cannot be empty".into());
    }
    let mut targets: Targets = Vec::new();
    for p in partitions {
        let topic = p
            .get("topic")
            .and_then(|t| t.as_str())
            .ok_or("a partition without a \"topic\" string")?;
        let partition = p
            .get("partition")
            .and_then(|t| t.as_i64())
            .and_then(|n| i32::try_from(n).ok())
            .ok_or("a partition without a \"partition\" number")?;
        let replicas: Vec<i32> = p
            .get("replicas")
            .and_then(|r| r.as_array())
            .ok_or("a partition without a \"replicas\" list")?
            .iter()
            .map(|r| r.as_i64().and_then(|n| i32::try_from(n).ok()))
            .collect::<Option<_>>()
            .ok_or("a replica that is not a broker id")?;
        if let Some(dirs) = p.get("log_dirs").and_then(|d| d.as_array()) {
            if dirs.len() != replicas.len() {
                return Err(format!(
                    "Size of replicas list {replicas:?} is different from size of log dirs list \
                     {dirs:?} for partition {topic}-{partition}"
                ));
            }
            if dirs.iter().any(|d| d.as_str() != Some("any")) {
                return Err(
                    "log_dirs other than \"any\" are not supported: a Faultline broker \
                            has one log directory"
                        .into(),
                );
            }
        }
        if targets
            .iter()
            .any(|(k, _)| k.0 == topic && k.1 == partition)
        {
            return Err(format!(
                "Reassignment JSON file contains duplicate entries for {topic}-{partition}"
            ));
        }
        let mut seen = replicas.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != replicas.len() {
            return Err(format!(
                "Partition replica lists may not contain duplicate entries: {topic}-{partition} \
                 contains duplicate replicas"
            ));
        }
        if replicas.is_empty() {
            return Err(format!(
                "Partition replica list cannot be empty for {topic}-{partition}"
            ));
        }
        targets.push(((topic.to_string(), partition), replicas));
    }
    Ok(targets)
}

/// kafka-reassign-partitions.sh's `formatAsReassignmentJson`: sorted by topic and partition,
/// its key order, `log_dirs` all "any".
pub fn reassignment_json(assignment: &BTreeMap<(String, i32), Vec<i32>>) -> String {
    let partitions: Vec<String> = assignment
        .iter()
        .map(|((topic, partition), replicas)| {
            let list = |v: Vec<String>| v.join(",");
            format!(
                "{{\"topic\":{},\"partition\":{partition},\"replicas\":[{}],\"log_dirs\":[{}]}}",
                serde_json::Value::from(topic.as_str()),
                list(replicas.iter().map(i32::to_string).collect()),
                list(replicas.iter().map(|_| "\"any\"".to_string()).collect()),
            )
        })
        .collect();
    format!(
        "{{\"version\":1,\"partitions\":[{}]}}",
        partitions.join(",")
    )
}

fn reassignment_error(e: ReassignmentError) -> String {
    match e {
        ReassignmentError::Request(r) => request_error(&r),
        other => other.to_string(),
    }
}

/// The current replicas of every partition named (the target first, then the replicas being
/// removed, while one runs); an unknown topic or partition is an error, as in Kafka.
async fn current_replicas(
    admin: &Admin,
    targets: &Targets,
) -> Result<BTreeMap<(String, i32), Vec<i32>>, String> {
    let mut current = BTreeMap::new();
    let mut described = BTreeMap::new();
    for ((topic, partition), _) in targets {
        if !described.contains_key(topic) {
            let meta = admin.describe_topic(topic).await.map_err(|e| match e {
                TopicError::Request(r) => request_error(&r),
                TopicError::UnknownTopic(_) => format!("Topic {topic} not found"),
                other => other.to_string(),
            })?;
            described.insert(topic.clone(), meta);
        }
        let meta = &described[topic];
        let p = meta
            .partitions
            .iter()
            .find(|p| p.index == *partition)
            .ok_or_else(|| format!("Unable to find partition: {topic}-{partition}"))?;
        current.insert((topic.clone(), *partition), p.replicas.clone());
    }
    Ok(current)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn names(parts: &[(String, i32)]) -> String {
    let mut parts = parts.to_vec();
    parts.sort();
    parts
        .iter()
        .map(|(t, p)| format!("{t}-{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `--execute`: prints the current assignment (to roll back with), then starts the moves.
pub async fn execute(
    admin: &Admin,
    targets: &Targets,
    additional: bool,
    allow_replication_factor_change: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let running = admin
        .list_partition_reassignments(None)
        .await
        .map_err(reassignment_error)?;
    if !running.is_empty() && !additional {
        return Err(
            "Cannot execute because there is an existing partition assignment.  Use \
                    --additional to override this and create a new partition assignment in \
                    addition to the existing one. The --additional flag can also be used to \
                    change the throttle by resubmitting the current reassignment."
                .into(),
        );
    }
    let current = current_replicas(admin, targets).await?;
    writeln!(
        out,
        "Current partition replica assignment\n\n{}\n\nSave this to use as the \
         --reassignment-json-file option during rollback",
        reassignment_json(&current)
    )
    .map_err(io)?;
    let results = admin
        .alter_partition_reassignments(
            targets
                .iter()
                .map(|((t, p), r)| (t.clone(), *p, Some(r.clone())))
                .collect(),
            allow_replication_factor_change,
        )
        .await
        .map_err(reassignment_error)?;
    let mut failed: Vec<_> = results
        .iter()
        .filter_map(|r| {
            r.error.as_ref().map(|(code, message)| {
                let message = message.clone().unwrap_or_else(|| code.to_string());
                ((r.topic.clone(), r.partition), message)
            })
        })
        .collect();
    if !failed.is_empty() {
        failed.sort();
        let lines: Vec<String> = failed
            .iter()
            .map(|((t, p), m)| format!("{t}-{p}: {m}"))
            .collect();
        return Err(format!(
            "Error reassigning partition(s):\n{}",
            lines.join("\n")
        ));
    }
    let parts: Vec<(String, i32)> = targets.iter().map(|(k, _)| k.clone()).collect();
    writeln!(
        out,
        "Successfully started partition reassignment{} for {}",
        plural(parts.len()),
        names(&parts)
    )
    .map_err(io)?;
    Ok(())
}

/// `--verify`: per partition, whether its move is done. True when every one is.
pub async fn verify(admin: &Admin, targets: &Targets, out: &mut dyn Write) -> Result<bool, String> {
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let running = admin
        .list_partition_reassignments(Some(group_by_topic(targets)))
        .await
        .map_err(reassignment_error)?;
    let current = current_replicas(admin, targets).await?;
    let mut sorted: Vec<_> = targets.clone();
    sorted.sort();
    writeln!(out, "Status of partition reassignment:").map_err(io)?;
    let mut all_done = true;
    for ((topic, partition), target) in &sorted {
        let ongoing = running
            .iter()
            .any(|r| &r.topic == topic && r.partition == *partition);
        let now = &current[&(topic.clone(), *partition)];
        if ongoing {
            all_done = false;
            writeln!(
                out,
                "Reassignment of partition {topic}-{partition} is still in progress."
            )
            .map_err(io)?;
        } else if now == target {
            writeln!(
                out,
                "Reassignment of partition {topic}-{partition} is completed."
            )
            .map_err(io)?;
        } else {
            let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            writeln!(
                out,
                "There is no active reassignment of partition {topic}-{partition}, but replica \
                 set is {} rather than {}.",
                list(now),
                list(target)
            )
            .map_err(io)?;
        }
    }
    Ok(all_done)
}

/// `--cancel`: cancels the moves of the file that are still running.
pub async fn cancel(admin: &Admin, targets: &Targets, out: &mut dyn Write) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot write output: {e}");
    let running = admin
        .list_partition_reassignments(Some(group_by_topic(targets)))
        .await
        .map_err(reassignment_error)?;
    let to_cancel: Vec<(String, i32)> = targets
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|(t, p)| running.iter().any(|r| &r.topic == t && r.partition == *p))
        .collect();
    if to_cancel.is_empty() {
        writeln!(
            out,
            "None of the specified partition reassignments are active."
        )
        .map_err(io)?;
        return Ok(());
    }
    let results = admin
        .alter_partition_reassignments(
            to_cancel
                .iter()
                .map(|(t, p)| (t.clone(), *p, None))
                .collect(),
            true,
        )
        .await
        .map_err(reassignment_error)?;
    let mut cancelled = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r.error {
            None => cancelled.push((r.topic, r.partition)),
            Some((code, message)) => failed.push(format!(
                "{}-{}: {}",
                r.topic,
                r.partition,
                message.unwrap_or_else(|| code.to_string())
            )),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        return Err(format!(
            "Error cancelling partition reassignment{} for:\n{}",
            plural(failed.len()),
            failed.join("\n")
        ));
    }
    writeln!(
        out,
        "Successfully cancelled partition reassignment{} for: {}",
        plural(cancelled.len()),
        names(&cancelled)
    )
    .map_err(io)?;
    Ok(())
}

fn group_by_topic(targets: &Targets) -> Vec<(String, Vec<i32>)> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for ((topic, partition), _) in targets {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    by_topic.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reassignment_file_reads_kafkas_format_and_refuses_what_kafka_refuses() {
        let targets = parse_targets(
            r#"{"version":1,"partitions":[{"topic":"b","partition":1,"replicas":[3,1],"log_dirs":["any","any"]},
                {"topic":"a","partition":0,"replicas":[2]}]}"#,
        )
        .unwrap();
        assert_eq!(
            targets,
            vec![(("b".into(), 1), vec![3, 1]), (("a".into(), 0), vec![2])]
        );
        let refused = |text: &str| parse_targets(text).unwrap_err();
        assert_eq!(
            refused(r#"{"version":1,"partitions":[]}"#),
            "Partition reassignment list cannot be empty"
        );
        assert!(
            refused(r#"{"partitions":[{"topic":"a","partition":0,"replicas":[1,1]}]}"#)
                .contains("duplicate replicas")
        );
        assert!(refused(
            r#"{"partitions":[{"topic":"a","partition":0,"replicas":[1]},{"topic":"a","partition":0,"replicas":[2]}]}"#
        )
        .contains("duplicate entries for a-0"));
        assert_eq!(
            refused(r#"{"version":2,"partitions":[]}"#),
            "Not supported version field value 2"
        );
    }

    #[test]
    fn the_rollback_json_is_kafkas_layout_sorted_by_partition() {
        let current = BTreeMap::from([
            (("t".to_string(), 1), vec![2, 3]),
            (("t".to_string(), 0), vec![1]),
        ]);
        assert_eq!(
            reassignment_json(&current),
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1],"log_dirs":["any"]},{"topic":"t","partition":1,"replicas":[2,3],"log_dirs":["any","any"]}]}"#
        );
        // What it prints reads back as the same targets.
        let back = parse_targets(&reassignment_json(&current)).unwrap();
        assert_eq!(back.len(), 2);
    }
}
