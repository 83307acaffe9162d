#![cfg(not(madsim))]
//! `faultline topics|produce|consume|groups` run in-process against a broker on the in-memory
//! disk, as a user meets them first.
//!
//! The bugs these guard against: on a full disk `produce` said nothing for minutes and then
//! one "may or may not have been written" line per record, and `consume` of the offline
//! partition printed "Processed a total of 0 messages" and exited 0; `consume` had no
//! `--group`, so README's group examples could not be followed with our own tools; topics
//! `a.b` and `a_b` could both exist; `groups list` printed nothing at all with no group;
//! `topics create --help` had an empty `--topic`; stopping `consume` skipped its summary;
//! errors named the topic twice.

use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use chaos::{FaultyDisk, FaultyDiskConfig};
use clap::Parser;
use cli::{Cli, Command};
use tokio::net::TcpListener;

struct TestBroker {
    addr: String,
    disk: FaultyDisk,
    _broker: Arc<Broker>,
}

async fn start_broker() -> TestBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = BrokerConfig {
        data_dir: "/data".into(),
        listen: addr.clone(),
        group_initial_rebalance_delay_ms: 0,
        ..BrokerConfig::default()
    };
    let disk = FaultyDisk::new(7, FaultyDiskConfig::default());
    let broker = Broker::open(config, Arc::new(disk.clone()), Arc::new(SystemClock))
        .await
        .unwrap();
    tokio::spawn(broker::server::serve(
        Arc::clone(&broker),
        listener,
        std::future::pending::<()>(),
    ));
    TestBroker {
        addr,
        disk,
        _broker: broker,
    }
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

/// Runs `faultline <args> --bootstrap-server <broker>` in-process with `stdin`; a `consume`
/// stops when `stop` resolves, as Ctrl-C stops it.
async fn faultline_until(
    broker: &TestBroker,
    args: &[&str],
    stdin: &str,
    stop: impl std::future::Future<Output = ()>,
) -> Run {
    let argv = std::iter::once("faultline")
        .chain(args.iter().copied())
        .chain(["--bootstrap-server", broker.addr.as_str()]);
    let parsed = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = match parsed.command {
        Command::Topics(a) => cli::topics::run(a, &mut out, &mut err).await,
        Command::Produce(a) => cli::produce::run(a, stdin.as_bytes(), &mut out, &mut err).await,
        Command::Consume(a) => cli::consume::run_until(a, &mut out, &mut err, stop).await,
        Command::Groups(a) => cli::groups::run(a, &mut out, &mut err).await,
        other => panic!("not a client command: {other:?}"),
    };
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

async fn faultline(broker: &TestBroker, args: &[&str], stdin: &str) -> Run {
    faultline_until(broker, args, stdin, std::future::pending()).await
}

fn lines(n: usize) -> String {
    (1..=n).map(|i| format!("record-{i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_produce_names_the_partition_and_consume_says_it_is_offline() {
    let broker = start_broker().await;
    let created = faultline(&broker, &["topics", "create", "--topic", "full"], "").await;
    assert_eq!(created.code, 0, "{}", created.err);
    // One record first: a partition never written has no directory, and a failed first write
    // leaves nothing for its recovery to fail on (it comes back online, empty, at once).
    let first = faultline(&broker, &["produce", "--topic", "full"], &lines(1)).await;
    assert_eq!(first.code, 0, "{}", first.err);
    // Not one more byte fits.
    broker.disk.set_capacity(Some(broker.disk.used_bytes()));
    // A full disk alone heals: maintenance recovers the offline log in place within a tick
    // (recovery needs no space when the failed append assigned no offset), so the consume
    // below could find the partition online and empty. Failing every sync under the
    // partition's directory makes each recovery fail too, and keeps it offline throughout.
    broker.disk.fail_io_under("/data/full-0");

    // The records are retried until the delivery timeout; a short one ends the run sooner.
    let produced = faultline(
        &broker,
        &[
            "produce",
            "--topic",
            "full",
            "--delivery-timeout-ms",
            "3000",
        ],
        &lines(1000),
    )
    .await;
    assert_eq!(produced.code, 1);
    let err: Vec<&str> = produced.err.lines().collect();
    // First, the failed attempt as it happened, naming the partition and Kafka's error.
    assert!(
        err[0].starts_with("error: partition full-0: ")
            && err[0].contains(" records (attempt 1): KAFKA_STORAGE_ERROR (")
            && err[0].ends_with("; retrying"),
        "{}",
        produced.err
    );
    // Then one line for the whole batch, not one per record, and the total.
    let per_line: Vec<&&str> = err
        .iter()
        .filter(|l| l.contains("may or may not"))
        .collect();
    assert_eq!(per_line.len(), 1, "{}", produced.err);
    assert!(
        per_line[0]
            .starts_with("error: lines 1-1000 (1000 records) may or may not have been written"),
        "{}",
        produced.err
    );
    assert_eq!(
        err.last().unwrap(),
        &"error: 1000 of 1000 records not acknowledged (0 failed, 1000 unknown)"
    );

    let consumed = faultline(
        &broker,
        // The idle limit only bounds a broken run, which said nothing and exited 0.
        &[
            "consume",
            "--topic",
            "full",
            "--from-beginning",
            "--timeout-ms",
            "10000",
        ],
        "",
    )
    .await;
    assert_eq!(consumed.code, 1, "{}", consumed.err);
    assert_eq!(
        consumed.err,
        "error: partition full-0 is offline: its log cannot be read on the broker \
         (KAFKA_STORAGE_ERROR from Fetch)\nProcessed a total of 0 messages\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_group_commits_what_it_printed_and_the_next_run_resumes_there() {
    let broker = start_broker().await;
    let created = faultline(
        &broker,
        &[
            "topics",
            "create",
            "--topic",
            "greetings",
            "--partitions",
            "1",
        ],
        "",
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.err);
    let produced = faultline(&broker, &["produce", "--topic", "greetings"], &lines(5)).await;
    assert_eq!(produced.code, 0, "{}", produced.err);

    let first = faultline(
        &broker,
        &[
            "consume",
            "--topic",
            "greetings",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "3",
        ],
        "",
    )
    .await;
    assert_eq!(first.code, 0, "{}", first.err);
    assert_eq!(first.out, "record-1\nrecord-2\nrecord-3\n");

    // The group's committed offset is what was printed, as `groups describe` shows it.
    let described = faultline(&broker, &["groups", "describe", "billing"], "").await;
    assert_eq!(described.code, 0, "{}", described.err);
    let row: Vec<&str> = described
        .out
        .lines()
        .find(|l| l.starts_with("billing"))
        .unwrap_or_else(|| panic!("{}", described.out))
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        ["billing", "greetings", "0", "3", "5"],
        "{}",
        described.out
    );

    // Without --from-beginning a group with commits resumes from them.
    let second = faultline(
        &broker,
        &[
            "consume",
            "--topic",
            "greetings",
            "--group",
            "billing",
            "--max-messages",
            "2",
        ],
        "",
    )
    .await;
    assert_eq!(second.code, 0, "{}", second.err);
    assert_eq!(second.out, "record-4\nrecord-5\n");
    assert!(second.err.ends_with("Processed a total of 2 messages\n"));
}

/// Output that fires `printed` once it holds `lines` lines.
struct StopAfterLines {
    out: Vec<u8>,
    lines: usize,
    printed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::io::Write for StopAfterLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        if self.out.iter().filter(|&&b| b == b'\n').count() >= self.lines {
            if let Some(printed) = self.printed.take() {
                let _ = printed.send(());
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_consume_prints_its_summary() {
    let broker = start_broker().await;
    let produced = faultline(&broker, &["produce", "--topic", "stopped"], &lines(2)).await;
    assert_eq!(produced.code, 0, "{}", produced.err);
    // Stopped (Ctrl-C) while it waits for more records, once it has printed both: the stop
    // future is the one the signal resolves in the binary.
    let (printed_tx, printed_rx) = tokio::sync::oneshot::channel::<()>();
    let mut out = StopAfterLines {
        out: Vec::new(),
        lines: 2,
        printed: Some(printed_tx),
    };
    let parsed = Cli::try_parse_from([
        "faultline",
        "consume",
        "--topic",
        "stopped",
        "--from-beginning",
        "--bootstrap-server",
        broker.addr.as_str(),
    ])
    .unwrap();
    let Command::Consume(args) = parsed.command else {
        panic!("not consume")
    };
    let mut err = Vec::new();
    let code = cli::consume::run_until(args, &mut out, &mut err, async {
        let _ = printed_rx.await;
    })
    .await;
    let consumed = Run {
        code,
        out: String::from_utf8(out.out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    };
    assert_eq!(consumed.code, 0, "{}", consumed.err);
    assert_eq!(consumed.out, "record-1\nrecord-2\n");
    assert_eq!(consumed.err, "Processed a total of 2 messages\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_that_differ_only_by_dot_and_underscore_collide_and_errors_name_the_topic_once() {
    let broker = start_broker().await;
    let created = faultline(&broker, &["topics", "create", "--topic", "a.b"], "").await;
    assert_eq!(created.code, 0, "{}", created.err);
    let collides = faultline(&broker, &["topics", "create", "--topic", "a_b"], "").await;
    assert_eq!(collides.code, 1);
    assert_eq!(
        collides.err,
        "error: cannot create topic: Topic 'a_b' collides with existing topic: a.b\n"
    );
    let listed = faultline(&broker, &["topics", "list"], "").await;
    assert_eq!(listed.out, "a.b\n");

    let invalid = faultline(&broker, &["topics", "create", "--topic", "no way"], "").await;
    assert_eq!(invalid.code, 1);
    assert_eq!(
        invalid.err.matches("no way").count(),
        1,
        "the name twice: {}",
        invalid.err
    );
    let exists = faultline(&broker, &["topics", "create", "--topic", "a.b"], "").await;
    assert_eq!(exists.err.matches("a.b").count(), 1, "{}", exists.err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_list_prints_its_header_when_there_is_no_group() {
    let broker = start_broker().await;
    let listed = faultline(&broker, &["groups", "list"], "").await;
    assert_eq!(listed.code, 0, "{}", listed.err);
    assert_eq!(listed.out, "GROUP  STATE\n");
}

#[test]
fn topics_create_help_describes_the_topic_flag() {
    let help = Cli::try_parse_from(["faultline", "topics", "create", "--help"])
        .expect_err("--help stops parsing")
        .to_string();
    let lines: Vec<&str> = help.lines().collect();
    let flag = lines
        .iter()
        .position(|l| l.trim_start().starts_with("--topic"))
        .unwrap_or_else(|| panic!("{help}"));
    // The flag's line, or the line under it in long help.
    let described = lines[flag..=flag + 1].join(" ");
    assert!(described.contains("Name of the topic to create"), "{help}");
}
