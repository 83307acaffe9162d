//! Criterion benchmarks of the partition log on the real disk ([`FileDisk`]), each against a
//! yardstick measured in the same run on the same kind of file in the same directory (see
//! `/work/shared/PERFORMANCE.md`): report the log's median and its ratio to the yardstick.
//!
//! - `append-lazy-{16,256}KiB`: one task appends the same 1 KiB-record batch over and over under
//!   `FlushPolicy::Lazy` (no flush triggers), vs `write`: plain sequential `write` of the same
//!   bytes to a file. Both write fresh page-cache pages (the files only grow).
//! - `append-durable-{16,256}KiB`: 8 tasks on a 2-worker runtime append concurrently under
//!   `FlushPolicy::Durable` (group commit), vs `write+fdatasync/8`: one thread writes the same
//!   bytes and calls `fdatasync` after every 8 batches.
//! - `read-1MiB`: sequential `Log::read` with 1 MiB `max_bytes` over a 256 MiB log of 16 KiB
//!   batches held in the page cache, vs `pread`: the same byte ranges of the same segment file
//!   into a reused buffer (`pread+crc32c` adds the CRC the log must check, for information).
//! - `recovery-{tail,full}`: `Log::open` of a 256 MiB log (16 KiB batches, 96 MiB segments) left
//!   without a clean shutdown; `tail` keeps `log.checkpoint` (the last segment is scanned),
//!   `full` deletes it first (every segment is scanned). Yardstick: `pread+crc32c` of the bytes
//!   the recovery scans, in 1 MiB chunks. Pages are warm (the log was just written and synced).
//!
//! Appending logs and yardstick files are recreated before they would pass 1 GiB (the segment
//! size), outside the timed region, so a run never holds more than ~1 GiB per benchmark on disk.
//! The durable groups warm up for 0.5 s and measure for 2 s because all they write reaches the
//! device (~8 GiB per run, measured); the lazy files are deleted before writeback.
//! Scratch space: `$FAULTLINE_BENCH_DIR`, else `target/bench-scratch` under the repository
//! (it must be a disk-backed file system, not tmpfs).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[cfg(not(madsim))]
mod real {
    use std::fs::{self, File, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use broker::clock::SystemClock;
    use broker::disk::FileDisk;
    use broker::log::batch::builder;
    use broker::log::{FlushPolicy, Log, LogConfig};
    use criterion::{Criterion, SamplingMode, Throughput};
    use tokio::runtime::Runtime;

    const RECORD_BYTES: usize = 1024;
    const TIMESTAMP_MS: i64 = 1_700_000_000_000;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// Segment size of the appending logs; logs and yardstick files are recreated before this.
    const SEGMENT_BYTES: u64 = GIB;
    /// Concurrent appenders in the durable benchmarks.
    const APPENDERS: usize = 8;
    /// Batches per `fdatasync` in the durable yardstick.
    const SYNC_GROUP: u64 = 8;
    const READ_MAX_BYTES: usize = 1 << 20;
    const READ_LOG_BYTES: u64 = 256 * MIB;
    const RECOVERY_LOG_BYTES: u64 = 256 * MIB;
    const RECOVERY_SEGMENT_BYTES: u64 = 96 * MIB;

    fn lazy() -> FlushPolicy {
        FlushPolicy::Lazy {
            flush_messages: None,
            flush_ms: None,
        }
    }

    fn config(flush: FlushPolicy, segment_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes,
            flush,
            retention_ms: None,
            ..LogConfig::default()
        }
    }

    /// One uncompressed v2 batch of `records` 1 KiB records.
    fn batch(records: usize) -> Vec<u8> {
        builder::simple(records, RECORD_BYTES, b'x', TIMESTAMP_MS)
    }

    fn current_thread() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn scratch_root() -> PathBuf {
        let root = std::env::var_os("FAULTLINE_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-scratch"));
        fs::create_dir_all(&root).expect("create scratch root");
        root
    }

    async fn open_log(dir: &Path, config: LogConfig) -> Log {
        Log::open(
            Arc::new(FileDisk::new()),
            Arc::new(SystemClock),
            dir.to_path_buf(),
            config,
        )
        .await
        .expect("open log")
    }

    /// Times `iters` batches of `batch_len` bytes in chunks that fit one file of
    /// `SEGMENT_BYTES`: `run(n)` prepares room for `n` batches (untimed) and returns the time
    /// the `n` batches took.
    fn chunked(iters: u64, batch_len: usize, mut run: impl FnMut(u64) -> Duration) -> Duration {
        let per_file = (SEGMENT_BYTES / batch_len as u64).max(1);
        let mut left = iters;
        let mut total = Duration::ZERO;
        while left > 0 {
            let n = left.min(per_file);
            total += run(n);
            left -= n;
        }
        total
    }

    /// A log that is recreated (in a new directory, the old one deleted) before it would roll.
    struct LogSink {
        root: PathBuf,
        name: String,
        generation: u32,
        config: LogConfig,
        log: Option<Arc<Log>>,
        written: u64,
        total_written: u64,
    }

    impl LogSink {
        fn new(root: &Path, name: String, config: LogConfig) -> LogSink {
            LogSink {
                root: root.to_path_buf(),
                name,
                generation: 0,
                config,
                log: None,
                written: 0,
                total_written: 0,
            }
        }

        fn dir(&self) -> PathBuf {
            self.root.join(format!("{}-{}", self.name, self.generation))
        }

        /// The log, recreated first if `bytes` more would not fit its active segment.
        async fn with_room(&mut self, bytes: u64) -> Arc<Log> {
            if self.log.is_none() || self.written + bytes > SEGMENT_BYTES {
                if self.log.take().is_some() {
                    fs::remove_dir_all(self.dir()).expect("remove old log");
                    self.generation += 1;
                }
                let log = open_log(&self.dir(), self.config.clone()).await;
                self.log = Some(Arc::new(log));
                self.written = 0;
            }
            self.written += bytes;
            self.total_written += bytes;
            Arc::clone(self.log.as_ref().expect("opened above"))
        }
    }

    /// A plain file that is recreated before it would pass `SEGMENT_BYTES`.
    struct FileSink {
        root: PathBuf,
        name: String,
        generation: u32,
        file: Option<File>,
        written: u64,
        total_written: u64,
    }

    impl FileSink {
        fn new(root: &Path, name: String) -> FileSink {
            FileSink {
                root: root.to_path_buf(),
                name,
                generation: 0,
                file: None,
                written: 0,
                total_written: 0,
            }
        }

        fn path(&self) -> PathBuf {
            self.root
                .join(format!("{}-{}.log", self.name, self.generation))
        }

        fn with_room(&mut self, bytes: u64) -> &mut File {
            if self.file.is_none() || self.written + bytes > SEGMENT_BYTES {
                if self.file.take().is_some() {
                    fs::remove_file(self.path()).expect("remove old file");
                    self.generation += 1;
                }
                let file = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(self.path())
                    .expect("create file");
                self.file = Some(file);
                self.written = 0;
            }
            self.written += bytes;
            self.total_written += bytes;
            self.file.as_mut().expect("opened above")
        }
    }

    impl Drop for LogSink {
        fn drop(&mut self) {
            if self.log.take().is_some() {
                let _ = fs::remove_dir_all(self.dir());
            }
        }
    }

    impl Drop for FileSink {
        fn drop(&mut self) {
            if self.file.take().is_some() {
                let _ = fs::remove_file(self.path());
            }
        }
    }

    fn report_written(what: &str, bytes: u64) {
        eprintln!(
            "  [{what}: {:.2} GiB written in total]",
            bytes as f64 / GIB as f64
        );
    }

    fn append_lazy(c: &mut Criterion, root: &Path, records: usize) {
        let template = batch(records);
        let len = template.len();
        let mut group = c.benchmark_group(format!("append-lazy-{}KiB", records));
        group.throughput(Throughput::Bytes(len as u64));

        let rt = current_thread();
        let mut sink = LogSink::new(
            root,
            format!("lazy-{records}"),
            config(lazy(), SEGMENT_BYTES),
        );
        let mut buf = template.clone();
        group.bench_function("log", |b| {
            b.iter_custom(|iters| {
                chunked(iters, len, |n| {
                    rt.block_on(async {
                        let log = sink.with_room(n * len as u64).await;
                        let start = Instant::now();
                        for _ in 0..n {
                            log.append(&mut buf, 0).await.expect("append");
                        }
                        start.elapsed()
                    })
                })
            })
        });
        report_written("log", sink.total_written);
        drop(sink);

        let mut file_sink = FileSink::new(root, format!("lazy-yardstick-{records}"));
        group.bench_function("write", |b| {
            b.iter_custom(|iters| {
                chunked(iters, len, |n| {
                    let file = file_sink.with_room(n * len as u64);
                    let start = Instant::now();
                    for _ in 0..n {
                        file.write_all(&template).expect("write");
                    }
                    start.elapsed()
                })
            })
        });
        report_written("write", file_sink.total_written);
        drop(file_sink);
        group.finish();
    }

    fn append_durable(c: &mut Criterion, root: &Path, records: usize) {
        let template = batch(records);
        let len = template.len();
        let mut group = c.benchmark_group(format!("append-durable-{}KiB", records));
        group.throughput(Throughput::Bytes(len as u64));
        // Every durable byte reaches the disk: keep the warm-up short to bound what a run writes.
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut sink = LogSink::new(
            root,
            format!("durable-{records}"),
            config(FlushPolicy::Durable, SEGMENT_BYTES),
        );
        group.bench_function(format!("log-{APPENDERS}-appenders"), |b| {
            b.iter_custom(|iters| {
                chunked(iters, len, |n| {
                    rt.block_on(async {
                        let log = sink.with_room(n * len as u64).await;
                        let bufs: Vec<Vec<u8>> = (0..APPENDERS).map(|_| template.clone()).collect();
                        let start = Instant::now();
                        let tasks: Vec<_> = bufs
                            .into_iter()
                            .enumerate()
                            .map(|(i, mut buf)| {
                                let share = n / APPENDERS as u64
                                    + u64::from((i as u64) < n % APPENDERS as u64);
                                let log = Arc::clone(&log);
                                tokio::spawn(async move {
                                    for _ in 0..share {
                                        log.append(&mut buf, 0).await.expect("append");
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("appender task");
                        }
                        start.elapsed()
                    })
                })
            })
        });
        report_written("log", sink.total_written);
        drop(sink);

        let mut file_sink = FileSink::new(root, format!("durable-yardstick-{records}"));
        group.bench_function(format!("write+fdatasync/{SYNC_GROUP}"), |b| {
            b.iter_custom(|iters| {
                chunked(iters, len, |n| {
                    let file = file_sink.with_room(n * len as u64);
                    let start = Instant::now();
                    for i in 1..=n {
                        file.write_all(&template).expect("write");
                        if i % SYNC_GROUP == 0 || i == n {
                            file.sync_data().expect("fdatasync");
                        }
                    }
                    start.elapsed()
                })
            })
        });
        report_written("write+fdatasync", file_sink.total_written);
        drop(file_sink);
        group.finish();
    }

    fn read(c: &mut Criterion, root: &Path) {
        const RECORDS: usize = 16;
        let template = batch(RECORDS);
        let len = template.len();
        let batches_per_read = (READ_MAX_BYTES / len).max(1);
        let read_bytes = batches_per_read * len;
        let reads = (READ_LOG_BYTES / read_bytes as u64).max(1);
        let dir = root.join("read");
        let rt = current_thread();

        let log = rt.block_on(async {
            let log = open_log(&dir, config(lazy(), SEGMENT_BYTES)).await;
            let mut buf = template.clone();
            for _ in 0..reads * batches_per_read as u64 {
                log.append(&mut buf, 0).await.expect("append");
            }
            log.flush().await.expect("flush");
            // Check the shape once: every read returns exactly `batches_per_read` batches.
            let first = log.read(0, READ_MAX_BYTES, None).await.expect("read");
            assert_eq!(first.records.len(), read_bytes);
            log
        });
        let end = log.log_end_offset();
        let log_bytes = reads * read_bytes as u64;
        eprintln!(
            "read log: {} MiB in {} batches of {len} B; {read_bytes} B ({batches_per_read} batches) per read",
            log_bytes / MIB,
            reads * batches_per_read as u64
        );

        let mut group = c.benchmark_group("read-1MiB");
        group.throughput(Throughput::Bytes(read_bytes as u64));
        let offsets_per_read = (batches_per_read * RECORDS) as u64;
        let mut offset = 0;
        group.bench_function("log", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        if offset >= end {
                            offset = 0;
                        }
                        let got = log.read(offset, READ_MAX_BYTES, None).await.expect("read");
                        debug_assert_eq!(got.records.len(), read_bytes);
                        offset += offsets_per_read;
                    }
                    start.elapsed()
                })
            })
        });

        let file = File::open(dir.join(format!("{:020}.log", 0))).expect("open segment");
        let mut buf = vec![0u8; read_bytes];
        let mut pos = 0;
        group.bench_function("pread", |b| {
            b.iter(|| {
                if pos >= log_bytes {
                    pos = 0;
                }
                file.read_exact_at(&mut buf, pos).expect("pread");
                pos += read_bytes as u64;
            })
        });
        let mut pos = 0;
        group.bench_function("pread+crc32c", |b| {
            b.iter(|| {
                if pos >= log_bytes {
                    pos = 0;
                }
                file.read_exact_at(&mut buf, pos).expect("pread");
                pos += read_bytes as u64;
                std::hint::black_box(
                    buf.chunks(len)
                        .map(|batch| crc32c::crc32c(&batch[21..]))
                        .fold(0, u32::wrapping_add),
                )
            })
        });
        group.finish();
        drop(log);
        fs::remove_dir_all(&dir).expect("remove read log");
    }

    /// pread + crc32c of whole files in 1 MiB chunks: the least a recovery scan must do.
    fn read_and_checksum(paths: &[PathBuf], buf: &mut [u8]) -> u32 {
        let mut crc = 0;
        for path in paths {
            let file = File::open(path).expect("open segment");
            let mut pos = 0;
            loop {
                let n = file.read_at(buf, pos).expect("pread");
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                pos += n as u64;
            }
        }
        crc
    }

    fn recovery(c: &mut Criterion, root: &Path) {
        let template = batch(16);
        let dir = root.join("recovery");
        let log_config = config(lazy(), RECOVERY_SEGMENT_BYTES);
        let rt = current_thread();
        rt.block_on(async {
            let log = open_log(&dir, log_config.clone()).await;
            let mut buf = template.clone();
            for _ in 0..RECOVERY_LOG_BYTES / template.len() as u64 {
                log.append(&mut buf, 0).await.expect("append");
            }
            // Synced so that no open pays for writing the pages back, then dropped without a
            // clean close: every open below is an unclean restart.
            log.flush().await.expect("flush");
        });
        let mut segments: Vec<(PathBuf, u64)> = fs::read_dir(&dir)
            .expect("list log")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| {
                let size = fs::metadata(&p).expect("stat").len();
                (p, size)
            })
            .collect();
        segments.sort();
        let full: Vec<PathBuf> = segments.iter().map(|(p, _)| p.clone()).collect();
        let full_bytes: u64 = segments.iter().map(|(_, s)| s).sum();
        let (tail_path, tail_bytes) = segments.last().cloned().expect("a segment");
        let tail = vec![tail_path];
        eprintln!(
            "recovery log: {:.1} MiB in {} segments ({:?} MiB); tail segment {:.1} MiB",
            full_bytes as f64 / MIB as f64,
            segments.len(),
            segments.iter().map(|(_, s)| s / MIB).collect::<Vec<_>>(),
            tail_bytes as f64 / MIB as f64
        );
        let mut chunk = vec![0u8; MIB as usize];

        for (name, paths, bytes, drop_checkpoint) in [
            ("recovery-tail", &tail, tail_bytes, false),
            ("recovery-full", &full, full_bytes, true),
        ] {
            let mut group = c.benchmark_group(name);
            group.sampling_mode(SamplingMode::Flat);
            group.throughput(Throughput::Bytes(bytes));
            group.bench_function("log-open", |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            if drop_checkpoint {
                                fs::remove_file(dir.join("log.checkpoint"))
                                    .expect("remove checkpoint");
                            }
                            let start = Instant::now();
                            let log = open_log(&dir, log_config.clone()).await;
                            total += start.elapsed();
                            drop(log);
                        }
                        total
                    })
                })
            });
            group.bench_function("pread+crc32c", |b| {
                b.iter(|| read_and_checksum(paths, &mut chunk))
            });
            group.finish();
        }
        fs::remove_dir_all(&dir).expect("remove recovery log");
    }

    pub fn main() {
        let scratch = tempfile::Builder::new()
            .prefix("log-bench-")
            .tempdir_in(scratch_root())
            .expect("scratch dir");
        let root = scratch.path();
        eprintln!("scratch directory: {}", root.display());
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        for records in [16, 256] {
            append_lazy(&mut c, root, records);
        }
        for records in [16, 256] {
            append_durable(&mut c, root, records);
        }
        read(&mut c, root);
        recovery(&mut c, root);
        c.final_summary();
    }
}

#[cfg(not(madsim))]
fn main() {
    real::main();
}

#[cfg(madsim)]
fn main() {}
