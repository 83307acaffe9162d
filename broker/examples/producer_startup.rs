//! Start-up time of a partition holding idempotent data (issue 9, defect 11): how long
//! `Log::open` + `Partition::open` take with producer snapshots, and without them (the state
//! rebuilt by reading every segment, as before snapshots existed), after a clean shutdown and
//! after an unclean one. Kept out of the test suite; run it in a release build:
//!
//! ```sh
//! cargo run --release -p broker --example producer_startup -- /work/startup-data 10
//! rm -r /work/startup-data
//! ```
//!
//! Arguments: a directory (created; the data is written once and reused by later runs) and the
//! size in GiB. 1,000 idempotent producers append 16-record batches of 1 KiB records, round
//! robin, under the lazy flush policy with 1 GiB segments (the default). Reads run on a warm
//! page cache (the machine is shared; its caches are not dropped).

// Real files and real time: meaningless (and its clock disallowed) in the simulation build.
#[cfg(madsim)]
fn main() {
    eprintln!("producer_startup measures real files: run it in the normal build");
}

#[cfg(not(madsim))]
fn main() {
    real::main();
}

#[cfg(not(madsim))]
mod real {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use broker::clock::{Clock, SystemClock};
    use broker::disk::{Disk, FileDisk};
    use broker::log::batch::builder;
    use broker::log::{FlushPolicy, Log, LogConfig};
    use broker::partition::Partition;
    use tokio::time::Instant;

    const PRODUCERS: i64 = 1_000;
    const RECORDS_PER_BATCH: usize = 16;
    const RECORD_BYTES: usize = 1024;

    fn config() -> LogConfig {
        LogConfig {
            flush: FlushPolicy::Lazy {
                flush_messages: None,
                flush_ms: None,
            },
            retention_ms: None,
            ..LogConfig::default()
        }
    }

    async fn open(disk: &Arc<dyn Disk>, dir: &Path) -> (Partition, f64) {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let started = Instant::now();
        let log = Log::open(Arc::clone(disk), clock, dir.to_path_buf(), config())
            .await
            .expect("log opens");
        let partition = Partition::open("startup".into(), 0, log, 1)
            .await
            .expect("partition opens");
        (partition, started.elapsed().as_secs_f64())
    }

    async fn write(disk: &Arc<dyn Disk>, dir: &Path, gib: u64) {
        let (partition, _) = open(disk, dir).await;
        let partition = Arc::new(partition);
        let target = gib << 30;
        let value = vec![b'x'; RECORD_BYTES - 30];
        let mut next_seq = vec![0i32; PRODUCERS as usize];
        let mut written = 0u64;
        let mut batches = 0u64;
        let started = Instant::now();
        while written < target {
            let pid = (batches % PRODUCERS as u64) as i64;
            let records: Vec<builder::Record> = (0..RECORDS_PER_BATCH)
                .map(|_| builder::Record {
                    key: None,
                    value: Some(value.clone()),
                    timestamp_ms: 0,
                })
                .collect();
            let seq = next_seq[pid as usize];
            let mut batch = builder::with_producer(builder::batch(&records), pid, 0, seq);
            written += batch.len() as u64;
            partition
                .append_unexposed(&mut batch)
                .await
                .expect("append");
            next_seq[pid as usize] = seq + RECORDS_PER_BATCH as i32;
            batches += 1;
        }
        partition.close().await.expect("clean close");
        println!(
            "wrote {:.2} GiB in {batches} batches ({} records) in {:.1} s",
            written as f64 / (1u64 << 30) as f64,
            batches * RECORDS_PER_BATCH as u64,
            started.elapsed().as_secs_f64()
        );
    }

    fn snapshot_names(names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|n| n.ends_with(".snapshot"))
            .cloned()
            .collect()
    }

    /// Moves every snapshot aside (so an open rebuilds from the log start), or back.
    async fn set_aside(disk: &Arc<dyn Disk>, dir: &Path, aside: bool) {
        for name in disk.list(dir).await.unwrap() {
            let from = dir.join(&name);
            if aside && name.ends_with(".snapshot") {
                disk.rename(&from, &dir.join(format!("{name}.aside")))
                    .await
                    .unwrap();
            } else if !aside && name.ends_with(".snapshot.aside") {
                disk.rename(&from, &dir.join(name.trim_end_matches(".aside")))
                    .await
                    .unwrap();
            }
        }
        disk.sync_dir(dir).await.unwrap();
    }

    /// Opens, reports, and leaves the log as an unclean stop would (no clean-shutdown marker,
    /// none of the close's snapshot) or cleanly closed.
    async fn measure(disk: &Arc<dyn Disk>, dir: &Path, what: &str, leave_clean: bool) {
        let (partition, seconds) = open(disk, dir).await;
        let report = partition.log.recovery().clone();
        println!(
            "{what}: {seconds:.3} s (log clean={}, segments={}, scanned {:.2} GiB; producers={}, snapshot={:?})",
            report.clean,
            report.segments,
            report.bytes_scanned as f64 / (1u64 << 30) as f64,
            partition.producer_state().await.unwrap().len(),
            partition.producer_state_snapshot(),
        );
        if leave_clean {
            partition.close().await.expect("close");
        }
    }

    #[tokio::main(flavor = "current_thread")]
    pub async fn main() {
        let mut args = std::env::args().skip(1);
        let dir = PathBuf::from(args.next().expect("usage: producer_startup DIR GIB"));
        let gib: u64 = args.next().map_or(10, |g| g.parse().expect("GIB"));
        let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
        let log_dir = dir.join("startup-0");
        disk.create_dir_all(&log_dir).await.unwrap();
        if disk.list(&log_dir).await.unwrap().is_empty() {
            write(&disk, &log_dir, gib).await;
        }
        // Warm the page cache the same way for every measurement.
        measure(&disk, &log_dir, "warm-up, clean, snapshots", true).await;

        measure(&disk, &log_dir, "clean shutdown, with snapshots", true).await;
        set_aside(&disk, &log_dir, true).await;
        measure(
            &disk,
            &log_dir,
            "clean shutdown, without snapshots (before)",
            true,
        )
        .await;
        // The close above wrote a new snapshot at the end: drop it, bring the roll ones back.
        for name in snapshot_names(&disk.list(&log_dir).await.unwrap()) {
            disk.remove(&log_dir.join(name)).await.unwrap();
        }
        set_aside(&disk, &log_dir, false).await;

        // An unclean stop: open (which consumes the clean-shutdown marker) and do not close; the
        // clean close's snapshot at the log end is gone too, as after a kill -9.
        let (partition, _) = open(&disk, &log_dir).await;
        let end = partition.log.log_end_offset();
        drop(partition);
        let end_snapshot = format!("{end:020}.snapshot");
        broker::disk::remove_if_exists(disk.as_ref(), &log_dir.join(&end_snapshot))
            .await
            .unwrap();
        measure(&disk, &log_dir, "unclean stop, with roll snapshots", false).await;
        set_aside(&disk, &log_dir, true).await;
        measure(
            &disk,
            &log_dir,
            "unclean stop, without snapshots (before)",
            false,
        )
        .await;
        set_aside(&disk, &log_dir, false).await;
        let (partition, _) = open(&disk, &log_dir).await;
        partition.close().await.unwrap();
    }
}
