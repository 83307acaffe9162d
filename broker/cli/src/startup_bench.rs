//! `faultline bench startup`: how long a broker with many partitions takes to start (issue 10;
//! PERFORMANCE.md's target: 10,000 partitions in 5 s or less).
//!
//! It runs real `faultline broker` processes (this very binary) on loopback, each on its own
//! data directory under `--data-dir`:
//! - `many`: `--topics` topics of `--partitions` partitions, created through the admin API
//!   (CreateTopics, `--in-flight` requests at a time; the time and partitions per second are
//!   reported), one record produced to the last partition;
//! - `one`, the yardstick: one topic of one partition, the same way. Its start is the fixed
//!   cost (exec, the metadata quorum of one, registration) that every broker pays.
//!
//! Then each broker is stopped (SIGTERM: a clean shutdown; `--kill`: SIGKILL, so the next start
//! recovers) and started again `--rounds` times, the two alternating, and each start is timed
//! from the spawn to (1) a Metadata answer that shows the last partition led, and (2) an
//! acknowledged acks=all produce to that partition. Medians are reported, with the difference
//! per partition. Timings stay out of tests (PERFORMANCE.md).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct StartupBenchArgs {
    /// Topics of the large data directory
    #[arg(long, default_value_t = 1000)]
    pub topics: usize,
    /// Partitions of each of those topics
    #[arg(long, default_value_t = 10)]
    pub partitions: i32,
    /// Where the two data directories and the brokers' logs go (created; must be empty or
    /// missing; removed afterwards unless --keep)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Timed starts of each data directory, alternating which goes first; medians reported
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// CreateTopics requests in flight while the topics are created
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Stop the broker with SIGKILL instead of SIGTERM before each start (time a recovery)
    #[arg(long)]
    pub kill: bool,
    /// A broker setting for both brokers, as `faultline broker --set` takes it (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Keep the data directories and logs
    #[arg(long)]
    pub keep: bool,
}

#[cfg(madsim)]
pub async fn run(
    _args: StartupBenchArgs,
    _json: bool,
    _out: &mut dyn std::io::Write,
    _err: &mut dyn std::io::Write,
) -> Result<i32, String> {
    Err("this is a simulation build; build faultline normally to time a broker's start".into())
}

#[cfg(not(madsim))]
pub use real::run;

/// OS processes, files and real time: a benchmark, not broker code (clippy.toml's determinism
/// bans are for the broker), in the normal build only.
#[cfg(not(madsim))]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod real {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use serde_json::json;

    use super::StartupBenchArgs;
    use client::records::{encode_batch, ProducerIdentity, Record};
    use client::{Admin, Client, ClientConfig, NewTopic};

    /// How long a start may take before the bench gives up on it: a bound for a broken broker,
    /// not a measurement.
    const START_BOUND: Duration = Duration::from_secs(600);
    /// A broker's own shutdown bound (`shutdown-timeout-ms`, 5 s by default) and its syncs,
    /// with room; then it is killed and the bench fails.
    const STOP_BOUND: Duration = Duration::from_secs(120);
    const POLL: Duration = Duration::from_millis(5);

    /// One data directory and the broker process serving it, if running.
    struct Broker {
        name: &'static str,
        data_dir: PathBuf,
        log: PathBuf,
        addr: String,
        child: Option<Child>,
        /// The last partition: where the start's produce goes.
        last: (String, i32),
        partitions: usize,
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// What one timed start took, from the spawn.
    #[derive(Clone, Copy, Debug)]
    struct Start {
        metadata: Duration,
        produce: Duration,
        /// How long the stop before it took (SIGTERM to exit, or SIGKILL to reaped).
        stop: Duration,
    }

    fn free_addr() -> Result<String, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("cannot find a free port: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot find a free port: {e}"))?;
        Ok(addr.to_string())
    }

    impl Broker {
        fn spawn(&mut self, exe: &Path, set: &[String]) -> Result<Instant, String> {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
            let mut command = Command::new(exe);
            command
                .args(["broker", "--listen", &self.addr, "--log-level", "warn"])
                .arg("--data-dir")
                .arg(&self.data_dir);
            for pair in set {
                command.args(["--set", pair]);
            }
            let started = Instant::now();
            let child = command
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
            self.child = Some(child);
            Ok(started)
        }

        fn check_alive(&mut self) -> Result<(), String> {
            let child = self.child.as_mut().expect("started");
            match child.try_wait() {
                Ok(None) => Ok(()),
                Ok(Some(status)) => Err(format!(
                    "the {} broker exited ({status}); its log: {}",
                    self.name,
                    self.log.display()
                )),
                Err(e) => Err(format!("cannot watch the {} broker: {e}", self.name)),
            }
        }

        /// A client once the broker answers (connecting negotiates ApiVersions, which the
        /// broker answers only once it serves requests).
        async fn connect(&mut self, deadline: Instant) -> Result<Client, String> {
            loop {
                self.check_alive()?;
                let mut config = ClientConfig::new(self.addr.clone());
                config.connection.client_id = "faultline-bench-startup".into();
                config.connection.connect_timeout = Duration::from_millis(200);
                config.connection.request_timeout = START_BOUND;
                match Client::connect(config).await {
                    Ok(client) => return Ok(client),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!("the {} broker never answered: {e}", self.name))
                    }
                    Err(_) => tokio::time::sleep(POLL).await,
                }
            }
        }

        /// Until Metadata shows the last partition with a leader.
        async fn await_led(&mut self, client: &Client, deadline: Instant) -> Result<(), String> {
            let (topic, partition) = self.last.clone();
            loop {
                self.check_alive()?;
                if let Ok(meta) = client.refresh_topic(&topic, false).await {
                    if meta
                        .partitions
                        .iter()
                        .any(|p| p.index == partition && p.leader >= 0)
                    {
                        return Ok(());
                    }
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the {} broker never led {topic}-{partition}",
                        self.name
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }

        /// One record, acks=all, to the last partition, retried while the broker says it is
        /// not ready (a partition still loading answers a retriable error).
        async fn produce(&mut self, client: &Client, deadline: Instant) -> Result<(), String> {
            let (topic, partition) = self.last.clone();
            let batch = Bytes::from(encode_batch(
                &[Record {
                    value: Some(Bytes::from_static(b"startup")),
                    ..Record::default()
                }],
                ProducerIdentity::NONE,
            ));
            loop {
                self.check_alive()?;
                let answer = match client.leader(&topic, partition).await {
                    Ok(connection) => {
                        let request = ProduceRequest::default()
                            .with_acks(-1)
                            .with_timeout_ms(30_000)
                            .with_topic_data(vec![TopicProduceData::default()
                                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                                .with_partition_data(vec![PartitionProduceData::default()
                                    .with_index(partition)
                                    .with_records(Some(batch.clone()))])]);
                        match connection.send(&request).await {
                            Ok(response) => response
                                .responses
                                .first()
                                .and_then(|t| t.partition_responses.first())
                                .map_or(Some(ResponseError::UnknownServerError), |p| {
                                    ResponseError::try_from_code(p.error_code)
                                }),
                            Err(e) => return Err(format!("produce: {e}")),
                        }
                    }
                    Err(_) => Some(ResponseError::LeaderNotAvailable),
                };
                match answer {
                    None => return Ok(()),
                    Some(e) if e.is_retriable() && Instant::now() < deadline => {
                        client.invalidate(&topic);
                        tokio::time::sleep(POLL).await;
                    }
                    Some(e) => {
                        return Err(format!(
                            "produce to {topic}-{partition} on the {} broker: {e}",
                            self.name
                        ))
                    }
                }
            }
        }

        /// Stops the broker (SIGTERM and its exit, or SIGKILL); how long that took.
        async fn stop(&mut self, kill: bool) -> Result<Duration, String> {
            let mut child = self.child.take().expect("started");
            let started = Instant::now();
            if kill {
                let _ = child.kill();
                child.wait().map_err(|e| format!("cannot reap: {e}"))?;
                return Ok(started.elapsed());
            }
            let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
            // SAFETY: kill(2) on our own child, not yet reaped (its pid cannot be reused).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => return Ok(started.elapsed()),
                    Ok(Some(status)) => {
                        return Err(format!(
                            "the {} broker stopped with {status}; its log: {}",
                            self.name,
                            self.log.display()
                        ))
                    }
                    Ok(None) if started.elapsed() < STOP_BOUND => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!(
                            "the {} broker did not stop within {STOP_BOUND:?} of SIGTERM",
                            self.name
                        ));
                    }
                }
            }
        }

        /// Starts the broker and times it until it serves Metadata and a produce.
        async fn timed_start(&mut self, exe: &Path, set: &[String]) -> Result<Start, String> {
            let started = self.spawn(exe, set)?;
            let deadline = started + START_BOUND;
            let client = self.connect(deadline).await?;
            self.await_led(&client, deadline).await?;
            let metadata = started.elapsed();
            self.produce(&client, deadline).await?;
            let produce = started.elapsed();
            Ok(Start {
                metadata,
                produce,
                stop: Duration::ZERO,
            })
        }
    }

    /// Creates `topics` topics of `partitions` through the admin API, `in_flight` at a time.
    async fn create_topics(
        client: &Client,
        topics: usize,
        partitions: i32,
        in_flight: usize,
    ) -> Result<(), String> {
        let admin = Admin::new(client.clone());
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..in_flight.clamp(1, topics.max(1)) {
            let (admin, next) = (admin.clone(), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= topics {
                        return Ok::<(), String>(());
                    }
                    admin
                        .create_topic(NewTopic::new(topic_name(n), partitions))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    fn topic_name(n: usize) -> String {
        format!("startup-{n:05}")
    }

    fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
    }

    fn secs(d: Duration) -> f64 {
        (d.as_secs_f64() * 1e3).round() / 1e3
    }

    pub async fn run(
        args: StartupBenchArgs,
        json: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<i32, String> {
        if args.topics == 0 || args.partitions < 1 || args.rounds == 0 {
            return Err("--topics, --partitions and --rounds must be at least 1".into());
        }
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the faultline binary to start: {e}"))?;
        let root = &args.data_dir;
        if std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_some()) {
            return Err(format!(
                "--data-dir {} is not empty: the bench fills it and removes it",
                root.display()
            ));
        }
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let total = args.topics * usize::try_from(args.partitions).expect("positive");
        let layouts: [(&'static str, usize, i32); 2] =
            [("one", 1, 1), ("many", args.topics, args.partitions)];
        let mut brokers = Vec::new();
        for (name, topics, partitions) in layouts {
            brokers.push(Broker {
                name,
                data_dir: root.join(name),
                log: root.join(format!("{name}.log")),
                addr: free_addr()?,
                child: None,
                last: (topic_name(topics - 1), partitions - 1),
                partitions: topics * usize::try_from(partitions).expect("positive"),
            });
        }

        // Fill each data directory through a broker of its own.
        let mut creation = Duration::ZERO;
        for (broker, (_, topics, partitions)) in brokers.iter_mut().zip(layouts) {
            let started = broker.spawn(&exe, &args.set)?;
            let client = broker.connect(started + START_BOUND).await?;
            let begun = Instant::now();
            create_topics(&client, topics, partitions, args.in_flight).await?;
            if broker.name == "many" {
                creation = begun.elapsed();
            }
            broker.await_led(&client, started + START_BOUND).await?;
            broker.produce(&client, started + START_BOUND).await?;
            broker.stop(args.kill).await?;
        }
        if !json {
            let _ = writeln!(
                out,
                "created {} topics x {} partitions ({total} partitions) in {:.2} s: {:.0} \
                 partitions/s ({} CreateTopics in flight)",
                args.topics,
                args.partitions,
                creation.as_secs_f64(),
                total as f64 / creation.as_secs_f64().max(1e-9),
                args.in_flight
            );
        }

        let mut starts: [Vec<Start>; 2] = [Vec::new(), Vec::new()];
        for round in 0..args.rounds {
            let order: [usize; 2] = if round % 2 == 0 { [1, 0] } else { [0, 1] };
            for i in order {
                let broker = &mut brokers[i];
                let mut start = broker.timed_start(&exe, &args.set).await?;
                start.stop = broker.stop(args.kill).await?;
                if !json {
                    let _ = writeln!(
                        out,
                        "  round {} {:>4}: Metadata {:.3} s, produce {:.3} s, then {} {:.3} s",
                        round + 1,
                        broker.name,
                        start.metadata.as_secs_f64(),
                        start.produce.as_secs_f64(),
                        if args.kill { "kill -9" } else { "stop" },
                        start.stop.as_secs_f64()
                    );
                }
                starts[i].push(start);
            }
        }
        let medians: Vec<[Duration; 3]> = starts
            .iter()
            .map(|s| {
                [
                    median(s.iter().map(|s| s.metadata).collect()),
                    median(s.iter().map(|s| s.produce).collect()),
                    median(s.iter().map(|s| s.stop).collect()),
                ]
            })
            .collect();
        let per_partition_ms = (medians[1][1].as_secs_f64() - medians[0][1].as_secs_f64()) * 1e3
            / (brokers[1].partitions - brokers[0].partitions).max(1) as f64;
        if json {
            let value = json!({
                "topics": args.topics,
                "partitions_per_topic": args.partitions,
                "partitions": total,
                "create_s": secs(creation),
                "create_partitions_per_s": (total as f64 / creation.as_secs_f64().max(1e-9)).round(),
                "stop": if args.kill { "kill" } else { "sigterm" },
                "rounds": args.rounds,
                "many": {"metadata_s": secs(medians[1][0]), "produce_s": secs(medians[1][1]), "stop_s": secs(medians[1][2])},
                "one": {"metadata_s": secs(medians[0][0]), "produce_s": secs(medians[0][1]), "stop_s": secs(medians[0][2])},
                "per_partition_ms": (per_partition_ms * 1e3).round() / 1e3,
            });
            let _ = writeln!(out, "{value}");
        } else {
            for (i, broker) in brokers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{:>4} ({:>6} partitions): start to Metadata {:.3} s, to produce {:.3} s; \
                     {} {:.3} s (medians of {})",
                    broker.name,
                    broker.partitions,
                    medians[i][0].as_secs_f64(),
                    medians[i][1].as_secs_f64(),
                    if args.kill { "kill -9" } else { "stop" },
                    medians[i][2].as_secs_f64(),
                    args.rounds
                );
            }
            let _ = writeln!(
                out,
                "per partition: {per_partition_ms:.3} ms of start (the 'one' start is the fixed cost)"
            );
        }
        if args.keep {
            let _ = writeln!(err, "data directories and logs kept in {}", root.display());
        } else {
            drop(brokers);
            std::fs::remove_dir_all(root)
                .map_err(|e| format!("cannot remove {}: {e}", root.display()))?;
        }
        Ok(0)
    }
}
