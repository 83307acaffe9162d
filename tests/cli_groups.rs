#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! `faultline groups` run in-process against a real broker, with librdkafka as the consumer
//! whose group is being administered: it commits the offsets and holds the live memberships.
//!
//! The bugs these guard against: a lag computed from the wrong end of the log (log start
//! instead of high watermark) or from a stale committed offset; a member's assignment shown
//! empty because its ConsumerProtocolAssignment bytes were not decoded; a "dry run" that
//! commits; a reset that goes through while a live member owns the partitions (its next commit
//! would silently undo the reset); and errors that reach the operator as a Rust debug dump
//! instead of one line naming the group and Kafka's error.

mod common_broker;

use std::time::{Duration, Instant};

use clap::Parser;
use cli::{self, Cli, Command};
use common_broker::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Runs `faultline <args> --bootstrap-server <broker>` in-process: (exit code, stdout, stderr).
fn cli(broker: &TestBroker, args: &[&str]) -> (i32, String, String) {
    let bootstrap = broker.bootstrap();
    let argv = std::iter::once("faultline")
        .chain(args.iter().copied())
        .chain(["--bootstrap-server", bootstrap.as_str()]);
    let parsed = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Command::Groups(groups_args) = parsed.command else {
        panic!("not a groups command: {args:?}");
    };
    broker.block_on(async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli::groups::run(groups_args, &mut out, &mut err).await;
        (
            code,
            String::from_utf8(out).expect("utf-8 stdout"),
            String::from_utf8(err).expect("utf-8 stderr"),
        )
    })
}

/// The whitespace-separated cells of each output line.
fn cells(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The table row whose first cells are `prefix`.
fn row<'a>(table: &'a [Vec<String>], prefix: &[&str]) -> &'a [String] {
    table
        .iter()
        .find(|r| r.len() >= prefix.len() && r.iter().zip(prefix).all(|(c, p)| c == p))
        .unwrap_or_else(|| panic!("no row starting with {prefix:?} in {table:?}"))
}

/// A consumer of `group` that never joins it: it only commits and reads committed offsets.
fn group_client(broker: &TestBroker, group: &str) -> BaseConsumer {
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    config.create().expect("consumer")
}

/// Commits `offsets` of `topic` for `group` from outside the group (generation -1).
fn commit(broker: &TestBroker, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer = group_client(broker, group);
    let mut list = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("offset");
    }
    consumer.commit(&list, CommitMode::Sync).expect("commit");
}

/// The group's committed offsets of `topic`'s `partitions`, read by librdkafka (OffsetFetch);
/// `None` where nothing is committed.
fn committed(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Vec<Option<i64>> {
    let consumer = group_client(broker, group);
    let mut wanted = TopicPartitionList::new();
    for &p in partitions {
        wanted.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(wanted, WAIT)
        .expect("OffsetFetch");
    partitions
        .iter()
        .map(
            |&p| match got.find_partition(topic, p).expect("partition").offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// Sends `count` records to `topic`/`partition`, with timestamps `first_ms`, `first_ms + 1000`...
fn produce(broker: &TestBroker, topic: &str, partition: i32, count: usize, first_ms: i64) {
    let producer = producer(&broker.bootstrap(), &[("acks", "all")]);
    let records: Vec<Outgoing> = (0..count)
        .map(|i| Outgoing {
            partition: Some(partition),
            value: Some(format!("r{i}").into_bytes()),
            timestamp: Some(first_ms + 1000 * i as i64),
            ..Outgoing::default()
        })
        .collect();
    send_ok(&producer, topic, &records);
}

/// A live member of `group` subscribed to `topic`, polled until it owns `partitions` of it.
fn live_member(broker: &TestBroker, group: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("client.id", "groups-test-client")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = config.create().expect("group consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = consumer.poll(Duration::from_millis(50));
        let owned = consumer.assignment().expect("assignment").count();
        if owned == partitions as usize {
            return consumer;
        }
        assert!(
            Instant::now() < deadline,
            "never assigned {partitions} partitions"
        );
    }
}

/// Closes `member` (LeaveGroup) and waits until its group, now without members, is Empty: the
/// leave may reach the coordinator after librdkafka's close returns.
fn leave(broker: &TestBroker, group: &str, member: BaseConsumer) {
    drop(member);
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out, err) = cli(broker, &["groups", "describe", group, "--json"]);
        assert_eq!((code, err.as_str()), (0, ""), "{out}");
        let value: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        if value["state"] == "Empty" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after the member left",
            value["state"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn list_shows_each_group_with_its_state_and_filters_by_state() {
    let broker = TestBroker::start();
    let topic = topic_name("listed");
    broker.create_topic(&topic, 1, &[]);
    let idle = topic_name("idle");
    let busy = topic_name("busy");
    commit(&broker, &idle, &topic, &[(0, 0)]);
    let _member = live_member(&broker, &busy, &topic, 1);

    let (code, out, err) = cli(&broker, &["groups", "list"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let table = cells(&out);
    assert_eq!(table[0], ["GROUP", "STATE"]);
    assert_eq!(row(&table, &[&idle]), [idle.as_str(), "Empty"]);
    assert_eq!(row(&table, &[&busy]), [busy.as_str(), "Stable"]);

    let (code, out, _) = cli(&broker, &["groups", "list", "--state", "stable"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("GROUP{}STATE\n{busy}  Stable\n", " ".repeat(busy.len() - 3))
    );

    let (code, out, _) = cli(&broker, &["groups", "list", "--state", "Empty", "--json"]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["group"], idle.as_str());
    assert_eq!(lines[0]["state"], "Empty");
}

#[test]
fn describe_shows_the_committed_offset_log_end_offset_and_lag_of_each_partition() {
    let broker = TestBroker::start();
    let topic = topic_name("lagging");
    broker.create_topic(&topic, 3, &[]);
    produce(&broker, &topic, 0, 10, 1_000_000);
    produce(&broker, &topic, 1, 4, 1_000_000);
    let group = topic_name("readers");
    // Partition 2 is empty and never committed: not the group's, so not shown.
    commit(&broker, &group, &topic, &[(0, 3), (1, 4)]);

    let (code, out, err) = cli(&broker, &["groups", "describe", &group]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(format!("Consumer group \"{group}\": state Empty, no active members.").as_str())
    );
    assert_eq!(lines.next(), Some(""));
    let table = cells(&out)[2..].to_vec();
    assert_eq!(
        table[0],
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ]
    );
    assert_eq!(
        &table[1..],
        [
            [&group, &topic, "0", "3", "10", "7", "-", "-", "-"],
            [&group, &topic, "1", "4", "4", "0", "-", "-", "-"],
        ]
    );

    // One more record on partition 1: the lag follows the log end.
    produce(&broker, &topic, 1, 1, 2_000_000);
    let (code, out, _) = cli(&broker, &["groups", "describe", &group, "--json"]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(value["group"], group.as_str());
    assert_eq!(value["state"], "Empty");
    assert_eq!(value["members"], serde_json::json!([]));
    let partitions = value["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2);
    assert_eq!(partitions[1]["partition"], 1);
    assert_eq!(partitions[1]["current_offset"], 4);
    assert_eq!(partitions[1]["log_end_offset"], 5);
    assert_eq!(partitions[1]["lag"], 1);
    assert_eq!(partitions[1]["consumer_id"], serde_json::Value::Null);
}

#[test]
fn describe_of_a_group_with_a_live_member_shows_the_member_and_its_assignment() {
    let broker = TestBroker::start();
    let topic = topic_name("owned");
    broker.create_topic(&topic, 3, &[]);
    produce(&broker, &topic, 2, 5, 1_000_000);
    let group = topic_name("members");
    let member = live_member(&broker, &group, &topic, 3);

    let (code, out, err) = cli(&broker, &["groups", "describe", &group]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let first = out.lines().next().expect("state line");
    assert!(
        first.starts_with(&format!(
            "Consumer group \"{group}\": state Stable, 1 member"
        )),
        "{out}"
    );
    let table = cells(&out);
    for partition in ["0", "1", "2"] {
        let r = row(&table, &[&group, &topic, partition]);
        assert_eq!(r.len(), 9, "{r:?}");
        assert!(r[6].starts_with("groups-test-client"), "consumer id: {r:?}");
        assert_eq!(r[8], "groups-test-client", "client id: {r:?}");
        // Nothing committed yet: no current offset and no lag, but the log end is known.
        assert_eq!(r[3], "-");
        assert_eq!(r[5], "-");
    }
    assert_eq!(row(&table, &[&group, &topic, "2"])[4], "5");

    let (code, out, _) = cli(&broker, &["groups", "describe", &group, "--members"]);
    assert_eq!(code, 0, "{out}");
    let table = cells(&out);
    let header = row(&table, &["GROUP", "CONSUMER-ID"]);
    assert_eq!(
        header,
        [
            "GROUP",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
            "#PARTITIONS",
            "ASSIGNMENT"
        ]
    );
    let r = row(&table, &[&group]);
    assert_eq!(r[3], "groups-test-client");
    assert_eq!(r[4], "3");
    assert_eq!(r[5], format!("{topic}(0,1,2)"));

    let (code, out, _) = cli(&broker, &["groups", "describe", &group, "--json"]);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(value["protocol_type"], "consumer");
    let members = value["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["client_id"], "groups-test-client");
    assert_eq!(
        members[0]["assignment"],
        serde_json::json!([
            {"topic": topic, "partition": 0},
            {"topic": topic, "partition": 1},
            {"topic": topic, "partition": 2},
        ])
    );
    drop(member);
}

#[test]
fn delete_refuses_a_group_with_members_readably_and_deletes_an_empty_one() {
    let broker = TestBroker::start();
    let topic = topic_name("deleted");
    broker.create_topic(&topic, 1, &[]);
    let busy = topic_name("busy");
    let idle = topic_name("idle");
    let member = live_member(&broker, &busy, &topic, 1);
    commit(&broker, &idle, &topic, &[(0, 0)]);

    let (code, out, err) = cli(&broker, &["groups", "delete", &busy]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "error: cannot delete consumer group \"{busy}\": it has active members \
             (NON_EMPTY_GROUP); stop its consumers first\n"
        )
    );

    let (code, out, err) = cli(&broker, &["groups", "delete", &idle]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out, format!("Deleted consumer group \"{idle}\".\n"));
    assert_eq!(
        committed(&broker, &idle, &topic, &[0]),
        [None],
        "offsets deleted"
    );
    let (_, out, _) = cli(&broker, &["groups", "list"]);
    assert!(!out.contains(&idle), "{out}");

    // Once its member leaves, the busy group can go too; per-group results in JSON.
    leave(&broker, &busy, member);
    let (code, out, err) = cli(&broker, &["groups", "delete", &busy, "never-was", "--json"]);
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines[0]["group"], busy.as_str());
    assert_eq!(lines[0]["deleted"], true);
    assert_eq!(lines[1]["group"], "never-was");
    assert_eq!(lines[1]["deleted"], false);
    assert_eq!(lines[1]["error"], "GROUP_ID_NOT_FOUND");
    assert_eq!(
        err,
        "error: cannot delete consumer group \"never-was\": it does not exist \
         (GROUP_ID_NOT_FOUND)\n"
    );
}

#[test]
fn reset_offsets_dry_run_changes_nothing_and_execute_moves_the_committed_offsets() {
    let broker = TestBroker::start();
    let topic = topic_name("reset");
    broker.create_topic(&topic, 2, &[]);
    produce(&broker, &topic, 0, 10, 1_000_000);
    produce(&broker, &topic, 1, 10, 1_000_000);
    let group = topic_name("resetters");
    commit(&broker, &group, &topic, &[(0, 5), (1, 6)]);

    // A dry run prints the plan, Kafka's columns, and commits nothing.
    let (code, out, err) = cli(
        &broker,
        &[
            "groups",
            "reset-offsets",
            &group,
            "--topic",
            &topic,
            "--to-earliest",
        ],
    );
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let table = cells(&out);
    assert_eq!(table[0], ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]);
    assert_eq!(row(&table, &[&group, &topic, "0"])[3], "0");
    assert_eq!(row(&table, &[&group, &topic, "1"])[3], "0");
    assert!(out.ends_with("Dry run: no offsets were changed. Add --execute to reset them.\n"));
    assert_eq!(
        committed(&broker, &group, &topic, &[0, 1]),
        [Some(5), Some(6)]
    );

    let reset = |extra: &[&str]| {
        let mut args = vec!["groups", "reset-offsets", group.as_str(), "--execute"];
        args.extend_from_slice(extra);
        let (code, out, err) = cli(&broker, &args);
        assert_eq!((code, err.as_str()), (0, ""), "{extra:?}: {out}");
        assert!(!out.contains("Dry run"), "{out}");
        committed(&broker, &group, &topic, &[0, 1])
    };
    assert_eq!(
        reset(&["--topic", &topic, "--to-earliest"]),
        [Some(0), Some(0)]
    );
    assert_eq!(
        reset(&["--topic", &format!("{topic}:1"), "--to-offset", "7"]),
        [Some(0), Some(7)]
    );
    assert_eq!(
        reset(&["--all-topics", "--shift-by", "-2"]),
        [Some(0), Some(5)]
    );
    assert_eq!(
        reset(&["--topic", &topic, "--shift-by", "3"]),
        [Some(3), Some(8)]
    );
    // Beyond the log: kept within it, as Kafka does.
    assert_eq!(
        reset(&["--topic", &format!("{topic}:0"), "--to-offset", "99"]),
        [Some(10), Some(8)]
    );
    assert_eq!(
        reset(&["--topic", &topic, "--shift-by=-100"]),
        [Some(0), Some(0)]
    );
    assert_eq!(
        reset(&["--topic", &topic, "--to-latest"]),
        [Some(10), Some(10)]
    );
    // Record i has timestamp 1_000_000 + 1000 * i: 1_004_500 ms is just after record 4's.
    assert_eq!(
        reset(&["--topic", &format!("{topic}:0"), "--to-datetime", "1004500"]),
        [Some(5), Some(10)]
    );
    assert_eq!(
        reset(&[
            "--topic",
            &format!("{topic}:1"),
            "--to-datetime",
            "1970-01-01T00:16:43Z"
        ]),
        [Some(5), Some(3)]
    );

    // JSON: one object per partition, with the offset it had.
    let (code, out, _) = cli(
        &broker,
        &[
            "groups",
            "reset-offsets",
            &group,
            "--topic",
            &format!("{topic}:0"),
            "--to-offset",
            "1",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(value["previous_offset"], 5);
    assert_eq!(value["new_offset"], 1);
    assert_eq!(value["executed"], false);
    assert_eq!(
        committed(&broker, &group, &topic, &[0, 1]),
        [Some(5), Some(3)]
    );
}

#[test]
fn reset_offsets_is_refused_while_the_group_has_active_members() {
    let broker = TestBroker::start();
    let topic = topic_name("guarded");
    broker.create_topic(&topic, 1, &[]);
    produce(&broker, &topic, 0, 10, 1_000_000);
    let group = topic_name("active");
    let member = live_member(&broker, &group, &topic, 1);
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(4))
        .expect("offset");
    member
        .commit(&offsets, CommitMode::Sync)
        .expect("member commit");

    for mode in [&[][..], &["--execute"][..]] {
        let mut args = vec![
            "groups",
            "reset-offsets",
            group.as_str(),
            "--topic",
            topic.as_str(),
            "--to-earliest",
        ];
        args.extend_from_slice(mode);
        let (code, out, err) = cli(&broker, &args);
        assert_eq!(code, 1, "{mode:?}");
        assert_eq!(out, "");
        assert_eq!(
            err,
            format!(
                "error: assignments can only be reset if the group \"{group}\" is inactive, but \
                 the current state is Stable (1 member); stop its consumers first\n"
            )
        );
    }
    assert_eq!(committed(&broker, &group, &topic, &[0]), [Some(4)]);

    // Once the member has left, the same reset goes through.
    leave(&broker, &group, member);
    let (code, _, err) = cli(
        &broker,
        &[
            "groups",
            "reset-offsets",
            &group,
            "--topic",
            &topic,
            "--to-earliest",
            "--execute",
        ],
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(committed(&broker, &group, &topic, &[0]), [Some(0)]);
}

#[test]
fn an_unknown_group_or_topic_gives_one_readable_error_line() {
    let broker = TestBroker::start();
    let (code, out, err) = cli(&broker, &["groups", "describe", "no-such-group"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "",
            "error: consumer group \"no-such-group\" does not exist\n"
        )
    );
    let (code, out, err) = cli(
        &broker,
        &["groups", "describe", "no-such-group", "--members", "--json"],
    );
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "",
            "error: consumer group \"no-such-group\" does not exist\n"
        )
    );
    let (code, _, err) = cli(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "g",
            "--topic",
            "no-such-topic",
            "--to-earliest",
        ],
    );
    assert_eq!(
        (code, err.as_str()),
        (1, "error: topic \"no-such-topic\" does not exist\n")
    );
    let (code, _, err) = cli(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "g",
            "--all-topics",
            "--to-latest",
        ],
    );
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: consumer group \"g\" has no committed offsets; name the partitions with --topic\n"
        )
    );
}

#[test]
fn delete_offsets_removes_a_partitions_committed_offset_unless_members_subscribe() {
    let broker = TestBroker::start();
    let topic = topic_name("forgotten");
    broker.create_topic(&topic, 2, &[]);
    let group = topic_name("forgetters");
    commit(&broker, &group, &topic, &[(0, 0), (1, 0)]);

    let (code, out, err) = cli(
        &broker,
        &[
            "groups",
            "delete-offsets",
            &group,
            "--topic",
            &format!("{topic}:1"),
        ],
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        format!("Deleted the offset of consumer group \"{group}\" for {topic}-1.\n")
    );
    assert_eq!(committed(&broker, &group, &topic, &[0, 1]), [Some(0), None]);

    let member = live_member(&broker, &group, &topic, 2);
    let (code, _, err) = cli(
        &broker,
        &["groups", "delete-offsets", &group, "--topic", &topic],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "error: cannot delete the offsets of consumer group \"{group}\" for topic \"{topic}\": \
             its active members subscribe to it (GROUP_SUBSCRIBED_TO_TOPIC)\n"
        )
    );
    drop(member);
}
