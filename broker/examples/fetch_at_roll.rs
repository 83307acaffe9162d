//! Fetch latency at the tail of a log while its segments roll (issue 9, defect 9).
//!
//! A writer task appends 16 KiB batches of 1 KiB records to a [`Log`] on the real disk
//! ([`FileDisk`]) with a small `segment.bytes`, so it rolls every few milliseconds; a reader
//! task follows the tail as a consumer's fetch would (`Log::read` with 1 MiB `max_bytes` from
//! the next offset, bounded by the high watermark; at the end it waits for the writer's next
//! append, like a long-polling fetch); a maintenance task applies retention every 100 ms as the
//! broker does, which keeps the log at `retention.bytes`. Each `Log::read` is timed. Reported per round and as the median
//! of the rounds: read latency p50/p99/p99.9/max, reads, rolls and the writer's MB/s.
//!
//! What it exposes: a roll syncs the old segment and writes its indexes and the checkpoint
//! (several fsyncs); a reader must not wait for any of them.
//!
//! Run: `cargo run --release -p broker --example fetch_at_roll [-- --policy lazy|durable
//! --seconds 5 --rounds 3 --segment-mib 4]`. An example rather than a criterion bench: it
//! measures a distribution under a concurrent writer, not one operation, and it builds without
//! the integration tests' dependencies (librdkafka). Scratch space: `$FAULTLINE_BENCH_DIR`,
//! else `target/bench-scratch` (disk-backed, not tmpfs).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[cfg(not(madsim))]
mod real {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use broker::clock::SystemClock;
    use broker::disk::FileDisk;
    use broker::log::batch::{builder, BatchHeader};
    use broker::log::{FlushPolicy, Log, LogConfig};
    use tokio::sync::Notify;

    const RECORD_BYTES: usize = 1024;
    const RECORDS_PER_BATCH: usize = 16;
    const READ_MAX_BYTES: usize = 1 << 20;
    const MIB: u64 = 1 << 20;

    struct Options {
        policy: FlushPolicy,
        policy_name: String,
        seconds: f64,
        rounds: usize,
        segment_bytes: u64,
    }

    fn options() -> Options {
        let mut o = Options {
            policy: FlushPolicy::Lazy {
                flush_messages: None,
                flush_ms: None,
            },
            policy_name: "lazy".into(),
            seconds: 5.0,
            rounds: 3,
            segment_bytes: 4 * MIB,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = args.get(i + 1).cloned().unwrap_or_default();
            match args[i].as_str() {
                "--policy" => {
                    o.policy = match value.as_str() {
                        "durable" => FlushPolicy::Durable,
                        "lazy" => o.policy,
                        other => panic!("--policy lazy|durable, not {other}"),
                    };
                    o.policy_name = value;
                    i += 2;
                }
                "--seconds" => {
                    o.seconds = value.parse().expect("--seconds N");
                    i += 2;
                }
                "--rounds" => {
                    o.rounds = value.parse().expect("--rounds N");
                    i += 2;
                }
                "--segment-mib" => {
                    o.segment_bytes = value.parse::<u64>().expect("--segment-mib N") * MIB;
                    i += 2;
                }
                // Anything else is ignored.
                _ => i += 1,
            }
        }
        o
    }

    fn scratch_root() -> PathBuf {
        let root = std::env::var_os("FAULTLINE_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch")
            });
        std::fs::create_dir_all(&root).expect("create scratch root");
        root
    }

    struct Round {
        latencies_ns: Vec<u64>,
        rolls: u64,
        appended_bytes: u64,
        elapsed: Duration,
    }

    impl Round {
        fn percentiles(&mut self) -> [u64; 4] {
            self.latencies_ns.sort_unstable();
            let l = &self.latencies_ns;
            let at = |q: f64| l[((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1];
            [at(0.50), at(0.99), at(0.999), l[l.len() - 1]]
        }
    }

    fn us(ns: u64) -> String {
        format!("{:.1} µs", ns as f64 / 1e3)
    }

    async fn round(dir: &Path, o: &Options) -> Round {
        let config = LogConfig {
            segment_bytes: o.segment_bytes,
            flush: o.policy,
            retention_ms: None,
            retention_bytes: Some(8 * o.segment_bytes),
            ..LogConfig::default()
        };
        let log = Arc::new(
            Log::open(
                Arc::new(FileDisk::new()),
                Arc::new(SystemClock),
                dir.to_path_buf(),
                config,
            )
            .await
            .expect("open log"),
        );
        let appended = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let appended_bytes = Arc::new(AtomicU64::new(0));
        let template = builder::simple(RECORDS_PER_BATCH, RECORD_BYTES, b'x', 1_700_000_000_000);
        let run_for = Duration::from_secs_f64(o.seconds);
        let start = Instant::now();

        let writer = {
            let (log, appended, stop, bytes) = (
                Arc::clone(&log),
                Arc::clone(&appended),
                Arc::clone(&stop),
                Arc::clone(&appended_bytes),
            );
            tokio::spawn(async move {
                let mut buf = template.clone();
                while start.elapsed() < run_for {
                    buf.copy_from_slice(&template);
                    log.append(&mut buf, 0).await.expect("append");
                    bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    appended.notify_waiters();
                }
                stop.store(true, Ordering::Release);
                appended.notify_waiters();
            })
        };
        let maintenance = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    log.apply_retention().await.expect("retention");
                }
            })
        };
        let durable = o.policy == FlushPolicy::Durable;
        let reader = {
            let (log, appended, stop) =
                (Arc::clone(&log), Arc::clone(&appended), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut offset = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let notified = appended.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let began = Instant::now();
                    // Bounded as a consumer's fetch is, by the high watermark: the durable
                    // end under the durable policy, the log end under the lazy one.
                    let high_watermark = durable.then(|| log.durable_end_offset());
                    let read = match log.read(offset, READ_MAX_BYTES, high_watermark).await {
                        Ok(read) => read,
                        // Retention passed the reader (it fell a whole log behind): catch up.
                        Err(broker::log::ReadError::OffsetOutOfRange {
                            log_start_offset, ..
                        }) => {
                            offset = log_start_offset;
                            continue;
                        }
                        Err(e) => panic!("read: {e}"),
                    };
                    latencies.push(began.elapsed().as_nanos() as u64);
                    let mut pos = 0;
                    while let Ok(h) = BatchHeader::parse(&read.records[pos..]) {
                        offset = h.last_offset() as u64 + 1;
                        pos += h.size();
                    }
                    if read.records.is_empty() {
                        notified.await;
                    }
                }
                latencies
            })
        };
        writer.await.expect("writer");
        let latencies_ns = reader.await.expect("reader");
        maintenance.await.expect("maintenance");
        let elapsed = start.elapsed();
        // Rolls, counted from the bytes: a segment holds at most `segment.bytes`.
        let appended_bytes = appended_bytes.load(Ordering::Relaxed);
        let rolls = appended_bytes / o.segment_bytes.max(1);
        Round {
            latencies_ns,
            rolls,
            appended_bytes,
            elapsed,
        }
    }

    pub fn main() {
        let o = options();
        let scratch = tempfile::Builder::new()
            .prefix("fetch-at-roll-")
            .tempdir_in(scratch_root())
            .expect("scratch dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        eprintln!(
            "fetch at the tail while rolling: {} policy, {} MiB segments, 16 KiB batches, 1 MiB reads, {} s x {} rounds, scratch {}",
            o.policy_name,
            o.segment_bytes / MIB,
            o.seconds,
            o.rounds,
            scratch.path().display()
        );
        let mut rounds = Vec::new();
        for i in 0..o.rounds {
            let dir = scratch.path().join(format!("round-{i}"));
            let mut r = rt.block_on(round(&dir, &o));
            let [p50, p99, p999, max] = r.percentiles();
            eprintln!(
                "  round {i}: read p50 {}  p99 {}  p99.9 {}  max {}  ({} reads, ~{} rolls, writer {:.0} MB/s)",
                us(p50),
                us(p99),
                us(p999),
                us(max),
                r.latencies_ns.len(),
                r.rolls,
                r.appended_bytes as f64 / r.elapsed.as_secs_f64() / 1e6
            );
            std::fs::remove_dir_all(&dir).expect("remove round dir");
            rounds.push(r);
        }
        // The median round of each figure, as the other benchmarks report.
        let median = |f: &dyn Fn(&mut Round) -> u64, rounds: &mut Vec<Round>| {
            let mut v: Vec<u64> = rounds.iter_mut().map(f).collect();
            v.sort_unstable();
            v[(v.len() - 1) / 2]
        };
        let p = |i: usize| move |r: &mut Round| r.percentiles()[i];
        let mb = |r: &mut Round| (r.appended_bytes as f64 / r.elapsed.as_secs_f64() / 1e6) as u64;
        println!(
            "fetch-at-roll {}: read p50 {}  p99 {}  p99.9 {}  max {}  writer {} MB/s (medians of {} rounds)",
            o.policy_name,
            us(median(&p(0), &mut rounds)),
            us(median(&p(1), &mut rounds)),
            us(median(&p(2), &mut rounds)),
            us(median(&p(3), &mut rounds)),
            median(&mb, &mut rounds),
            rounds.len()
        );
        handoff(&rt, scratch.path());
    }

    /// Where a page-cache read should run: inline on a runtime worker, or handed to tokio's
    /// blocking pool and awaited (what `FileDisk` does only when `RWF_NOWAIT` says the read
    /// would wait for the device). Warm pages of one 64 MiB file; medians of 2,000 reads.
    fn handoff(rt: &tokio::runtime::Runtime, dir: &Path) {
        use std::os::unix::fs::FileExt;
        let path = dir.join("handoff");
        let file = Arc::new(std::fs::File::create_new(&path).expect("create"));
        let chunk = vec![0x5au8; MIB as usize];
        for i in 0..64 {
            file.write_all_at(&chunk, i * MIB).expect("write");
        }
        let len = 64 * MIB;
        for size in [4096usize, MIB as usize] {
            let (inline, pool) = rt.block_on(async {
                let mut inline = Vec::new();
                let mut pool = Vec::new();
                let mut buf = vec![0u8; size];
                let mut pos = 0u64;
                for _ in 0..2000 {
                    pos = (pos + size as u64) % (len - size as u64);
                    let began = Instant::now();
                    file.read_exact_at(&mut buf, pos).expect("pread");
                    inline.push(began.elapsed().as_nanos() as u64);
                    let began = Instant::now();
                    let f = Arc::clone(&file);
                    buf = tokio::task::spawn_blocking(move || {
                        f.read_exact_at(&mut buf, pos).expect("pread");
                        buf
                    })
                    .await
                    .expect("blocking read");
                    pool.push(began.elapsed().as_nanos() as u64);
                }
                (inline, pool)
            });
            let med = |mut v: Vec<u64>| {
                v.sort_unstable();
                v[v.len() / 2]
            };
            println!(
                "pread {} B of warm pages: inline {}  on the blocking pool {} (medians of 2,000)",
                size,
                us(med(inline)),
                us(med(pool))
            );
        }
        std::fs::remove_file(&path).expect("remove");
    }
}

#[cfg(not(madsim))]
fn main() {
    real::main();
}

#[cfg(madsim)]
fn main() {}
