//! A compacted log on a simulated node, on the faulty disk, while its cleaner runs, under power
//! loss.
//!
//! A broker node opens one compacted log (small segments, `delete.retention.ms` of
//! [`DELETE_RETENTION_MS`]) and runs keyed appenders (overwrites of a few keys, and tombstones),
//! a cleaner that cleans the log again and again up to its durable end, and a reader that scans
//! the log from its start. The supervisor kills the node at seeded random moments with power
//! loss (torn writes on), the disk fails writes and syncs with EIO at a seeded rate and adds
//! latency, so crashes and faults land in the middle of cleanings (mid-copy, mid-swap). A node
//! whose log went offline reopens it, as a broker would. The checker (issue 14's rules):
//!
//! - offsets never change: an offset read (or acknowledged) once with a key and value always
//!   holds that key and value;
//! - a scan from the log start up to the durable end it read to sees, for every key, the latest
//!   acknowledged record below that point or a later one, never an older one;
//! - a key may be missing from a scan only if its latest acknowledged record below the point is
//!   a tombstone at least [`DELETE_RETENTION_MS`] old (a tombstone is kept that long);
//! - the same, on the final log after the last crash.
//!
//! Everything random comes from the simulator's seed, so a failing seed replays exactly.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::clock::{Clock, SystemClock};
use broker::log::batch::{self, builder};
use broker::log::cleaner::{OffsetMap, Throttler};
use broker::log::records;
use broker::log::{AppendError, Log, LogConfig};
use chaos::{FaultyDisk, FaultyDiskConfig};
use madsim::rand::Rng;
use madsim::runtime::{Handle, Runtime};

/// How long a tombstone must stay readable (`delete.retention.ms` of the log).
pub const DELETE_RETENTION_MS: i64 = 300;
/// Keys of the workload: few, so records are overwritten often.
const KEYS: u64 = 12;

/// What one run does.
#[derive(Clone, Debug)]
pub struct CompactionWorkload {
    pub crashes: u32,
    pub appenders: usize,
}

impl Default for CompactionWorkload {
    fn default() -> CompactionWorkload {
        CompactionWorkload {
            crashes: 12,
            appenders: 4,
        }
    }
}

/// What one seed's run saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub acknowledged: usize,
    pub cleanings: usize,
    pub scans: usize,
    pub crashes: u32,
    /// Hash of the whole event history: equal for equal seeds.
    pub trace_hash: u64,
}

/// One acknowledged record: key, value (`None`: a tombstone), the clock when it was written.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Written {
    key: u64,
    value: Option<u64>,
    at_ms: i64,
}

#[derive(Default)]
struct History {
    events: Vec<String>,
    next_value: u64,
    violations: Vec<String>,
    /// Offset → the record acknowledged there.
    acknowledged: BTreeMap<u64, Written>,
    /// Offset → (key, value) first seen there, by acks and reads.
    seen: BTreeMap<u64, (u64, Option<u64>)>,
    cleanings: usize,
    scans: usize,
}

impl History {
    fn claim(&mut self, offset: u64, key: u64, value: Option<u64>, how: &str) {
        let first = *self.seen.entry(offset).or_insert((key, value));
        if first != (key, value) {
            self.violations.push(format!(
                "offset {offset} held key {} value {:?}, then key {key} value {value:?} ({how})",
                first.0, first.1
            ));
        }
    }

    /// Checks a scan from the log start that read every offset below `point`: `found` is the
    /// last record of each key in it.
    fn check_scan(
        &mut self,
        point: u64,
        found: &BTreeMap<u64, (u64, Option<u64>)>,
        now_ms: i64,
        how: &str,
    ) {
        let mut latest: BTreeMap<u64, (u64, &Written)> = BTreeMap::new();
        for (offset, w) in self.acknowledged.range(..point) {
            latest.insert(w.key, (*offset, w));
        }
        let mut violations = Vec::new();
        for (key, (offset, w)) in latest {
            match found.get(&key) {
                Some((at, _)) if *at >= offset => {}
                Some((at, value)) => violations.push(format!(
                    "{how} up to {point}: key {key} reads value {value:?} at {at}, older than \
                     the acknowledged {:?} at {offset}",
                    w.value
                )),
                None if w.value.is_none() && now_ms - w.at_ms >= DELETE_RETENTION_MS => {}
                None => violations.push(format!(
                    "{how} up to {point}: key {key} is missing; its latest record below is {:?} \
                     at {offset}, written {} ms ago",
                    w.value,
                    now_ms - w.at_ms
                )),
            }
        }
        self.violations.extend(violations);
    }
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 256,
        offset_reservation: 200,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: DELETE_RETENTION_MS,
        ..LogConfig::default()
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/faultline/data/compacted-0")
}

/// Opens the log, retrying a disk error; fails after many tries (a log that can never open
/// again lost the data the checker asks for).
async fn open(disk: &FaultyDisk) -> Result<Log, String> {
    let mut last = String::new();
    for _ in 0..200 {
        match Log::open(
            Arc::new(disk.clone()),
            Arc::new(SystemClock),
            dir(),
            log_config(),
        )
        .await
        {
            Ok(log) => return Ok(log),
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    Err(format!("the log never opened again: {last}"))
}

/// Every record from the log start up to `point` (exclusive): offset → (key, value).
async fn scan(log: &Log, point: u64) -> Result<Vec<(u64, u64, Option<u64>)>, String> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < point {
        let read = log
            .read(offset, 64 * 1024, Some(point))
            .await
            .map_err(|e| format!("read at {offset}: {e}"))?;
        if read.records.is_empty() {
            return Err(format!("read at {offset} below {point} returned nothing"));
        }
        let mut pos = 0;
        while pos < read.records.len() {
            let header = batch::validate(&read.records[pos..])
                .map_err(|e| format!("read at {offset} served a bad batch: {e}"))?;
            let bytes = &read.records[pos..pos + header.size()];
            for r in records::decode(bytes, 1 << 20).map_err(|e| e.to_string())? {
                let key = u64::from_be_bytes(
                    r.key
                        .as_deref()
                        .and_then(|k| k.try_into().ok())
                        .ok_or("bad key")?,
                );
                let value = r
                    .value
                    .map(|v| u64::from_be_bytes(v[..8].try_into().expect("8 bytes")));
                out.push((
                    header.base_offset as u64 + r.offset_delta as u64,
                    key,
                    value,
                ));
            }
            offset = header.last_offset() as u64 + 1;
            pos += header.size();
        }
    }
    Ok(out)
}

fn record_scan(
    history: &Mutex<History>,
    point: u64,
    records: &[(u64, u64, Option<u64>)],
    now_ms: i64,
    how: &str,
) {
    let mut h = history.lock().unwrap();
    let mut last: BTreeMap<u64, (u64, Option<u64>)> = BTreeMap::new();
    for &(offset, key, value) in records {
        h.claim(offset, key, value, how);
        last.insert(key, (offset, value));
    }
    h.check_scan(point, &last, now_ms, how);
    h.scans += 1;
    h.events
        .push(format!("{how} to {point}: {} records", records.len()));
}

/// The simulated broker node: opens the log; appends, cleans and scans until it goes
/// offline; then reopens it. Runs until the node is killed.
async fn node_main(disk: FaultyDisk, history: Arc<Mutex<History>>, workload: CompactionWorkload) {
    loop {
        let log = match open(&disk).await {
            Ok(log) => Arc::new(log),
            Err(e) => {
                history.lock().unwrap().violations.push(e);
                return;
            }
        };
        history
            .lock()
            .unwrap()
            .events
            .push(format!("open at {}", log.log_end_offset()));
        let mut tasks = Vec::new();
        for _ in 0..workload.appenders {
            let (log, history) = (Arc::clone(&log), Arc::clone(&history));
            tasks.push(tokio::spawn(async move {
                loop {
                    let (key, value) = {
                        let mut h = history.lock().unwrap();
                        h.next_value += 1;
                        let mut rng = madsim::rand::thread_rng();
                        let key = rng.gen_range(0..KEYS);
                        let value = (!rng.gen_bool(0.15)).then_some(h.next_value);
                        (key, value)
                    };
                    let padding = madsim::rand::thread_rng().gen_range(8..120usize);
                    let now = SystemClock.now_ms();
                    let mut bytes = builder::batch(&[builder::Record {
                        key: Some(key.to_be_bytes().to_vec()),
                        value: value.map(|v| {
                            let mut bytes = v.to_be_bytes().to_vec();
                            bytes.resize(8 + padding, v as u8);
                            bytes
                        }),
                        timestamp_ms: now,
                    }]);
                    match log.append(&mut bytes, 0).await {
                        Ok(info) => {
                            let mut h = history.lock().unwrap();
                            h.claim(info.base_offset, key, value, "acknowledged");
                            h.acknowledged.insert(
                                info.base_offset,
                                Written {
                                    key,
                                    value,
                                    at_ms: now,
                                },
                            );
                        }
                        Err(AppendError::Offline(_)) => return,
                        Err(e) => history
                            .lock()
                            .unwrap()
                            .events
                            .push(format!("append failed: {e}")),
                    }
                    let pause = madsim::rand::thread_rng().gen_range(0..4u64);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        let cleaner = {
            let (log, history) = (Arc::clone(&log), Arc::clone(&history));
            tokio::spawn(async move {
                let mut map = OffsetMap::new(64 * 1024);
                let mut throttler = Throttler::new(None);
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let point = log.durable_end_offset();
                    match log.clean(point, &mut map, &mut throttler).await {
                        Ok(Some(_)) => history.lock().unwrap().cleanings += 1,
                        Ok(None) => {}
                        Err(e) => history
                            .lock()
                            .unwrap()
                            .events
                            .push(format!("clean failed: {e}")),
                    }
                    if log.is_offline() {
                        return;
                    }
                }
            })
        };
        let reader = {
            let (log, history) = (Arc::clone(&log), Arc::clone(&history));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    let point = log.durable_end_offset();
                    let now = SystemClock.now_ms();
                    match scan(&log, point).await {
                        Ok(records) => record_scan(&history, point, &records, now, "scan"),
                        Err(_) if log.is_offline() => return,
                        Err(e) => history.lock().unwrap().violations.push(e),
                    }
                }
            })
        };
        for task in tasks {
            let _ = task.await;
        }
        cleaner.abort();
        reader.abort();
    }
}

/// Runs the workload for one seed on a fresh simulator.
pub fn run_seed(seed: u64, workload: &CompactionWorkload) -> Result<Outcome, String> {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let workload = workload.clone();
    runtime.block_on(async move { supervise(seed, workload).await })
}

async fn supervise(seed: u64, workload: CompactionWorkload) -> Result<Outcome, String> {
    let faults = FaultyDiskConfig {
        torn_writes: true,
        write_eio_rate: 0.002,
        sync_eio_rate: 0.005,
        latency: Some((Duration::from_micros(20), Duration::from_millis(2))),
        ..FaultyDiskConfig::default()
    };
    let disk = FaultyDisk::new(madsim::rand::random(), faults);
    let history = Arc::new(Mutex::new(History::default()));
    let handle = Handle::current();
    let node = {
        let (disk, history, workload) = (disk.clone(), Arc::clone(&history), workload.clone());
        handle
            .create_node()
            .name("broker-1")
            .ip("10.0.0.1".parse().expect("ip"))
            .init(move || node_main(disk.clone(), Arc::clone(&history), workload.clone()))
            .build()
    };
    for _ in 0..workload.crashes {
        let uptime = madsim::rand::thread_rng().gen_range(200..700u64);
        tokio::time::sleep(Duration::from_millis(uptime)).await;
        handle.kill(node.id());
        disk.crash();
        history.lock().unwrap().events.push("crash".into());
        tokio::time::sleep(Duration::from_millis(5)).await;
        handle.restart(node.id());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.kill(node.id());
    disk.crash();

    // The final read happens on a healthy disk: the faults are over, the data is what it is.
    disk.set_config(FaultyDiskConfig {
        torn_writes: true,
        ..FaultyDiskConfig::default()
    });
    let log = open(&disk).await?;
    let point = log.log_end_offset();
    let records = scan(&log, point).await?;
    record_scan(
        &history,
        point,
        &records,
        SystemClock.now_ms(),
        "final scan",
    );

    let h = history.lock().unwrap();
    if !h.violations.is_empty() {
        return Err(h.violations.join("\n"));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    h.events.hash(&mut hasher);
    h.acknowledged.hash(&mut hasher);
    records.hash(&mut hasher);
    Ok(Outcome {
        seed,
        acknowledged: h.acknowledged.len(),
        cleanings: h.cleanings,
        scans: h.scans,
        crashes: workload.crashes,
        trace_hash: hasher.finish(),
    })
}
