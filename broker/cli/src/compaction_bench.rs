//! `faultline bench compaction`: what compacting `__consumer_offsets` buys and costs (issue 14).
//!
//! In one process, on the real disk under `--data-dir`:
//! 1. a broker whose offsets topic has one partition gets `--commits` offset commits of one
//!    group over `--partitions` partitions of one topic, appended to the offsets partition as
//!    the coordinator writes them (batches of `--batch` commits);
//! 2. the broker starts again: timed from `Broker::open` to the offsets partition loaded
//!    (its groups served), with the uncompacted log (*before*);
//! 3. the log is read once from its start, timed (the yardstick), then cleaned, timed: the
//!    cleaner's MB/s is reported next to the plain read's, with the offset map's memory and
//!    the process's peak RSS;
//! 4. the broker starts again, timed, with the compacted log (*after*).
//!
//! Timings stay out of tests (PERFORMANCE.md).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct CompactionBenchArgs {
    /// Offset commits to write (one group)
    #[arg(long, default_value_t = 1_000_000)]
    pub commits: u64,
    /// Partitions the group commits offsets for (the keys)
    #[arg(long, default_value_t = 100)]
    pub partitions: u64,
    /// Commits per batch (a consumer's commit of several partitions is one batch)
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Where the data directory goes (created; must be empty or missing; removed afterwards
    /// unless --keep)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The cleaner's offset map budget (log.cleaner.dedupe.buffer.size)
    #[arg(long, default_value_t = 128 << 20)]
    pub dedupe_buffer_size: u64,
    /// Keep the data directory
    #[arg(long)]
    pub keep: bool,
}

#[cfg(madsim)]
pub async fn run(
    _args: CompactionBenchArgs,
    _json: bool,
    _out: &mut dyn std::io::Write,
    _err: &mut dyn std::io::Write,
) -> Result<i32, String> {
    Err("this is a simulation build; build faultline normally to run benchmarks".into())
}

#[cfg(not(madsim))]
pub use real::run;

#[cfg(not(madsim))]
mod real {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use broker::broker::Broker;
    use broker::clock::{Clock, SystemClock};
    use broker::config::BrokerConfig;
    use broker::disk::FileDisk;
    use broker::group::offsets::{self, CommittedOffset, OffsetKey, OFFSETS_TOPIC};
    use broker::log::batch::builder;
    use broker::log::cleaner::{OffsetMap, Throttler};

    use super::CompactionBenchArgs;

    const GROUP: &str = "bench-group";
    const TOPIC: &str = "bench-topic";

    fn config(args: &CompactionBenchArgs) -> BrokerConfig {
        BrokerConfig {
            data_dir: args.data_dir.clone(),
            listen: "127.0.0.1:0".into(),
            offsets_topic_num_partitions: 1,
            offsets_topic_replication_factor: 1,
            log_cleaner_dedupe_buffer_size: args.dedupe_buffer_size,
            ..BrokerConfig::default()
        }
    }

    async fn open(args: &CompactionBenchArgs) -> Result<Arc<Broker>, String> {
        Broker::open(
            config(args),
            Arc::new(FileDisk::new()),
            Arc::new(SystemClock),
        )
        .await
        .map_err(|e| format!("broker open: {e}"))
    }

    /// Opens the broker and waits for the offsets partition to be loaded: the start-up a
    /// group's members wait out (COORDINATOR_LOAD_IN_PROGRESS until then).
    async fn timed_start(args: &CompactionBenchArgs) -> Result<(Duration, Arc<Broker>), String> {
        let started = Instant::now();
        let broker = open(args).await?;
        let deadline = started + Duration::from_secs(600);
        while broker.groups().loaded_shards() != vec![0] {
            if Instant::now() > deadline {
                return Err("the offsets partition did not load within 600 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok((started.elapsed(), broker))
    }

    /// Peak resident memory of this process (VmHWM), in bytes, where /proc has it.
    #[allow(clippy::disallowed_methods)]
    fn peak_rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub async fn run(
        args: CompactionBenchArgs,
        json: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<i32, String> {
        if args.partitions == 0 || args.batch == 0 || args.commits == 0 {
            return Err("--commits, --partitions and --batch must be positive".into());
        }
        #[allow(clippy::disallowed_methods)]
        let empty = std::fs::read_dir(&args.data_dir).map_or(true, |mut d| d.next().is_none());
        if !empty {
            return Err(format!("{} is not empty", args.data_dir.display()));
        }

        // 1. The commits.
        let broker = open(&args).await?;
        broker
            .offsets_topic()
            .await
            .map_err(|e| format!("creating {OFFSETS_TOPIC}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let partition = loop {
            match broker.partition(OFFSETS_TOPIC, 0) {
                Some(p) if p.replica_state().is_leader() => break p,
                _ if Instant::now() > deadline => return Err("no offsets partition".into()),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let now = SystemClock.now_ms();
        let written = Instant::now();
        let mut commit = 0;
        while commit < args.commits {
            let records: Vec<builder::Record> = (commit..(commit + args.batch).min(args.commits))
                .map(|i| builder::Record {
                    key: Some(offsets::encode_key(&OffsetKey {
                        group: GROUP.into(),
                        topic: TOPIC.into(),
                        partition: (i % args.partitions) as i32,
                    })),
                    value: Some(offsets::encode_value(&CommittedOffset {
                        offset: i as i64,
                        leader_epoch: 0,
                        metadata: None,
                        commit_timestamp_ms: now,
                    })),
                    timestamp_ms: now,
                })
                .collect();
            commit += records.len() as u64;
            let mut batch = builder::batch(&records);
            partition
                .log
                .append_unsynced(&mut batch, partition.leader_epoch())
                .await
                .map_err(|e| format!("append: {e}"))?;
        }
        partition.log.flush().await.map_err(|e| e.to_string())?;
        let write_time = written.elapsed();
        let log_bytes = partition.log.size_bytes().await;
        drop(partition);
        broker.shutdown().await;
        drop(broker);

        // 2. Start with the uncompacted log.
        let (start_before, broker) = timed_start(&args).await?;
        let partition = broker
            .partition(OFFSETS_TOPIC, 0)
            .ok_or("no offsets partition after the restart")?;
        let committed = broker
            .groups()
            .committed_for_group(GROUP)
            .map_err(|e| format!("{e:?}"))?;

        // 3. A plain read of the log, then the cleaning of the same log.
        partition.log.roll().await.map_err(|e| e.to_string())?;
        let read_started = Instant::now();
        let mut offset = partition.log.log_start_offset();
        let mut read_bytes = 0u64;
        let end = partition.log.log_end_offset();
        while offset < end {
            let read = partition
                .log
                .read(offset, 1 << 20, None)
                .await
                .map_err(|e| e.to_string())?;
            if read.records.is_empty() {
                break;
            }
            read_bytes += read.records.len() as u64;
            let mut pos = 0;
            while pos < read.records.len() {
                let header = broker::log::batch::BatchHeader::parse(&read.records[pos..])
                    .map_err(|e| e.to_string())?;
                offset = header.last_offset() as u64 + 1;
                pos += header.size();
            }
        }
        let read_time = read_started.elapsed();
        let mut map = OffsetMap::new(args.dedupe_buffer_size as usize);
        let mut throttler = Throttler::new(None);
        let clean_started = Instant::now();
        let mut cleaned_read = 0u64;
        let mut passes = 0;
        while let Some(stats) = partition
            .log
            .clean(partition.high_watermark(), &mut map, &mut throttler)
            .await
            .map_err(|e| format!("cleaning: {e}"))?
        {
            cleaned_read += stats.bytes_read;
            passes += 1;
        }
        let clean_time = clean_started.elapsed();
        let map_bytes = map.used_bytes();
        let compacted_bytes = partition.log.size_bytes().await;
        drop(partition);
        broker.shutdown().await;
        drop(broker);

        // 4. Start with the compacted log.
        let (start_after, broker) = timed_start(&args).await?;
        let committed_after = broker
            .groups()
            .committed_for_group(GROUP)
            .map_err(|e| format!("{e:?}"))?;
        broker.shutdown().await;
        drop(broker);
        if committed_after != committed {
            let _ = writeln!(err, "error: the committed offsets differ after compaction");
            return Ok(1);
        }
        let mb = |bytes: u64, t: Duration| bytes as f64 / 1e6 / t.as_secs_f64().max(1e-9);
        let read_mb_s = mb(read_bytes, read_time);
        let clean_mb_s = mb(cleaned_read, clean_time);
        let rss = peak_rss_bytes().unwrap_or(0);
        if json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({
                    "commits": args.commits, "keys": args.partitions,
                    "log_bytes": log_bytes, "compacted_bytes": compacted_bytes,
                    "write_s": write_time.as_secs_f64(),
                    "start_before_s": start_before.as_secs_f64(),
                    "start_after_s": start_after.as_secs_f64(),
                    "plain_read_mb_s": read_mb_s, "clean_mb_s": clean_mb_s,
                    "clean_to_read": clean_mb_s / read_mb_s, "clean_passes": passes,
                    "offset_map_bytes": map_bytes, "peak_rss_bytes": rss,
                })
            );
        } else {
            let _ = writeln!(
                out,
                "{} commits to one group ({} keys): log {:.1} MB, compacted {:.3} MB ({} pass{})",
                args.commits,
                args.partitions,
                log_bytes as f64 / 1e6,
                compacted_bytes as f64 / 1e6,
                passes,
                if passes == 1 { "" } else { "es" }
            );
            let _ = writeln!(
                out,
                "start-up (open to offsets partition loaded): before {:.3} s, after {:.3} s",
                start_before.as_secs_f64(),
                start_after.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "cleaner {clean_mb_s:.0} MB/s read of the log, plain read {read_mb_s:.0} MB/s \
                 (ratio {:.2}); offset map {:.1} KB; peak RSS {:.0} MB",
                clean_mb_s / read_mb_s,
                map_bytes as f64 / 1e3,
                rss as f64 / 1e6
            );
        }
        if !args.keep {
            #[allow(clippy::disallowed_methods)]
            let _ = std::fs::remove_dir_all(&args.data_dir);
        }
        Ok(0)
    }
}
