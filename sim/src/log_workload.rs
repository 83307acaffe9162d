//! The partition log on a simulated node, on the faulty disk, under power loss.
//!
//! A broker node opens one log and runs concurrent appenders and a reader against it. The
//! supervisor kills the node at seeded random moments and applies the disk's power-loss model
//! at the same instant (torn writes on); the disk also fails writes and syncs with EIO at a
//! seeded rate and adds latency, so group commits overlap appends. A node whose log went
//! offline reopens it, as a broker would. After the last crash the supervisor opens the log
//! itself and checks the history:
//!
//! - every append acknowledged under the durable policy is in the log, at its offset;
//! - no offset ever held two different batches (across acks, reads and the final log);
//! - the log holds only batches that were appended, each once, in offset order;
//! - every batch a read returned passed its CRC.
//!
//! Everything random comes from the simulator's seed, so a failing seed replays exactly.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::clock::SystemClock;
use broker::log::batch::{self, builder, BatchHeader};
use broker::log::{AppendError, FlushPolicy, Log, LogConfig};
use chaos::{FaultyDisk, FaultyDiskConfig};
use madsim::rand::Rng;
use madsim::runtime::{Handle, Runtime};

/// What one run does; every field is drawn from or fixed for the seed.
#[derive(Clone, Debug)]
pub struct LogWorkload {
    pub crashes: u32,
    pub appenders: usize,
    pub lazy: bool,
}

impl Default for LogWorkload {
    fn default() -> LogWorkload {
        LogWorkload {
            crashes: 4,
            appenders: 4,
            lazy: false,
        }
    }
}

/// What one seed's run saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub appends: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub reads: usize,
    pub crashes: u32,
    pub surviving_batches: usize,
    /// Hash of the whole event history: equal for equal seeds.
    pub trace_hash: u64,
}

#[derive(Debug, Hash)]
enum Event {
    Open {
        incarnation: u32,
        log_end_offset: u64,
    },
    Acked {
        id: u64,
        base_offset: u64,
        records: u64,
    },
    Failed {
        id: u64,
        error: String,
    },
    Read {
        offset: u64,
        id: u64,
    },
    Crash {
        at_ms: u128,
    },
}

#[derive(Default)]
struct History {
    events: Vec<Event>,
    next_id: u64,
    violations: Vec<String>,
    /// Offset → id of the batch first seen there.
    offsets: BTreeMap<u64, u64>,
}

impl History {
    fn claim_offset(&mut self, base_offset: u64, id: u64, how: &str) {
        let seen = *self.offsets.entry(base_offset).or_insert(id);
        if seen != id {
            self.violations.push(format!(
                "offset {base_offset} held batch {seen}, then batch {id} ({how})"
            ));
        }
    }
}

fn id_of(batch_bytes: &[u8]) -> u64 {
    // The first record's value starts with the id; records are uncompressed, keys null.
    let header = BatchHeader::parse(batch_bytes).expect("validated");
    let mut pos = batch::HEADER_LEN;
    for _ in 0..4 {
        // length, attributes (one byte, skipped below), timestamp delta, offset delta
        while batch_bytes[pos] & 0x80 != 0 {
            pos += 1;
        }
        pos += 1;
    }
    debug_assert!(pos < header.size());
    pos += 1; // null key: varint -1 is one byte
    while batch_bytes[pos] & 0x80 != 0 {
        pos += 1;
    }
    pos += 1;
    u64::from_be_bytes(batch_bytes[pos..pos + 8].try_into().expect("id"))
}

fn log_config(lazy: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        offset_reservation: 200,
        flush: if lazy {
            FlushPolicy::Lazy {
                flush_messages: Some(20),
                flush_ms: Some(50),
            }
        } else {
            FlushPolicy::Durable
        },
        ..LogConfig::default()
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/faultline/data/t-0")
}

async fn open(disk: &FaultyDisk, lazy: bool) -> Log {
    loop {
        match Log::open(
            Arc::new(disk.clone()),
            Arc::new(SystemClock),
            dir(),
            log_config(lazy),
        )
        .await
        {
            Ok(log) => return log,
            Err(e) => {
                tracing::debug!(%e, "log open failed; retrying");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// The simulated broker node: opens the log, appends and reads until the log goes offline,
/// then reopens it. Runs until the node is killed.
async fn node_main(
    disk: FaultyDisk,
    history: Arc<Mutex<History>>,
    workload: LogWorkload,
    incarnation: u32,
) {
    loop {
        let log = Arc::new(open(&disk, workload.lazy).await);
        history.lock().unwrap().events.push(Event::Open {
            incarnation,
            log_end_offset: log.log_end_offset(),
        });
        let mut tasks = Vec::new();
        for _ in 0..workload.appenders {
            let (log, history) = (Arc::clone(&log), Arc::clone(&history));
            tasks.push(tokio::spawn(async move {
                loop {
                    let (id, records, value_len) = {
                        let mut h = history.lock().unwrap();
                        h.next_id += 1;
                        let mut rng = madsim::rand::thread_rng();
                        (
                            h.next_id,
                            rng.gen_range(1..8usize),
                            rng.gen_range(8..600usize),
                        )
                    };
                    let recs: Vec<builder::Record> = (0..records)
                        .map(|_| {
                            let mut value = id.to_be_bytes().to_vec();
                            value.resize(value_len, id as u8);
                            builder::Record {
                                key: None,
                                value: Some(value),
                                timestamp_ms: 1_700_000_000_000,
                            }
                        })
                        .collect();
                    let mut bytes = builder::batch(&recs);
                    match log.append(&mut bytes, 0).await {
                        Ok(info) => {
                            let mut h = history.lock().unwrap();
                            h.claim_offset(info.base_offset, id, "acknowledged");
                            h.events.push(Event::Acked {
                                id,
                                base_offset: info.base_offset,
                                records: records as u64,
                            });
                        }
                        Err(e) => {
                            let offline = matches!(e, AppendError::Offline(_));
                            history.lock().unwrap().events.push(Event::Failed {
                                id,
                                error: e.to_string(),
                            });
                            if offline {
                                return;
                            }
                        }
                    }
                    let pause = madsim::rand::thread_rng().gen_range(0..3u64);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        let reader = {
            let (log, history) = (Arc::clone(&log), Arc::clone(&history));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(7)).await;
                    let offsets = log.offsets();
                    let span = offsets.log_end_offset - offsets.log_start_offset + 1;
                    let offset =
                        offsets.log_start_offset + madsim::rand::thread_rng().gen_range(0..span);
                    // Consumers see only what is durable (the high watermark of a single broker).
                    match log
                        .read(offset, 4096, Some(offsets.durable_end_offset))
                        .await
                    {
                        Ok(read) => {
                            let mut pos = 0;
                            let mut h = history.lock().unwrap();
                            while pos < read.records.len() {
                                match batch::validate(&read.records[pos..]) {
                                    Ok(header) if header.records_count == 0 => pos += header.size(),
                                    Ok(header) => {
                                        let id = id_of(&read.records[pos..]);
                                        h.claim_offset(header.base_offset as u64, id, "read");
                                        h.events.push(Event::Read {
                                            offset: header.base_offset as u64,
                                            id,
                                        });
                                        pos += header.size();
                                    }
                                    Err(e) => {
                                        h.violations.push(format!(
                                            "read at {offset} served a bad batch: {e}"
                                        ));
                                        break;
                                    }
                                }
                            }
                        }
                        Err(broker::log::ReadError::Offline(_)) => return,
                        Err(_) => {}
                    }
                }
            })
        };
        for task in tasks {
            let _ = task.await;
        }
        reader.abort();
        tracing::debug!("log offline: reopening");
    }
}

/// Runs the workload for one seed on a fresh simulator.
pub fn run_seed(seed: u64, workload: &LogWorkload) -> Result<Outcome, String> {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let workload = workload.clone();
    runtime.block_on(async move { supervise(seed, workload).await })
}

async fn supervise(seed: u64, workload: LogWorkload) -> Result<Outcome, String> {
    let faults = FaultyDiskConfig {
        torn_writes: true,
        write_eio_rate: 0.002,
        sync_eio_rate: 0.01,
        latency: Some((Duration::from_micros(20), Duration::from_millis(2))),
        ..FaultyDiskConfig::default()
    };
    let disk = FaultyDisk::new(madsim::rand::random(), faults.clone());
    let history = Arc::new(Mutex::new(History::default()));
    let handle = Handle::current();
    let incarnation = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let node = {
        let (disk, history, workload, incarnation) = (
            disk.clone(),
            Arc::clone(&history),
            workload.clone(),
            Arc::clone(&incarnation),
        );
        handle
            .create_node()
            .name("broker-1")
            .ip("10.0.0.1".parse().expect("ip"))
            .init(move || {
                let n = incarnation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                node_main(disk.clone(), Arc::clone(&history), workload.clone(), n)
            })
            .build()
    };
    for _ in 0..workload.crashes {
        let uptime = madsim::rand::thread_rng().gen_range(20..300u64);
        tokio::time::sleep(Duration::from_millis(uptime)).await;
        // Kill and power loss at the same instant: no task of the node runs in between.
        handle.kill(node.id());
        disk.crash();
        let now = madsim::time::TimeHandle::current().elapsed().as_millis();
        history
            .lock()
            .unwrap()
            .events
            .push(Event::Crash { at_ms: now });
        tokio::time::sleep(Duration::from_millis(5)).await;
        handle.restart(node.id());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.kill(node.id());
    disk.crash();

    // The final read happens on a healthy disk: the faults are over, the data is what it is.
    disk.set_config(FaultyDiskConfig {
        torn_writes: true,
        ..FaultyDiskConfig::default()
    });
    let log = open(&disk, workload.lazy).await;
    let mut final_batches = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let read = log
            .read(offset, 1 << 20, None)
            .await
            .map_err(|e| format!("final read at {offset}: {e}"))?;
        if read.records.is_empty() {
            break;
        }
        let mut pos = 0;
        while pos < read.records.len() {
            let header = batch::validate(&read.records[pos..])
                .map_err(|e| format!("final read: bad batch: {e}"))?;
            if header.records_count > 0 {
                final_batches.push((header.base_offset as u64, id_of(&read.records[pos..])));
            }
            offset = header.last_offset() as u64 + 1;
            pos += header.size();
        }
    }

    let mut h = history.lock().unwrap();
    let mut in_log = BTreeMap::new();
    let mut previous: Option<u64> = None;
    for &(base_offset, id) in &final_batches {
        if in_log.insert(id, base_offset).is_some() {
            h.violations
                .push(format!("batch {id} appears twice in the final log"));
        }
        if id == 0 || id > h.next_id {
            h.violations
                .push(format!("batch {id} at {base_offset} was never appended"));
        }
        if previous.is_some_and(|p| base_offset <= p) {
            h.violations
                .push(format!("offsets not increasing at {base_offset}"));
        }
        previous = Some(base_offset);
        h.claim_offset(base_offset, id, "final log");
    }
    let acked: Vec<(u64, u64)> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Acked {
                id, base_offset, ..
            } => Some((*id, *base_offset)),
            _ => None,
        })
        .collect();
    if !workload.lazy {
        for &(id, base_offset) in &acked {
            match in_log.get(&id) {
                Some(&at) if at == base_offset => {}
                Some(&at) => h.violations.push(format!(
                    "acknowledged batch {id} moved from {base_offset} to {at}"
                )),
                None => h.violations.push(format!(
                    "acknowledged batch {id} at offset {base_offset} was lost"
                )),
            }
        }
    }
    if !h.violations.is_empty() {
        return Err(h.violations.join("\n"));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    h.events.hash(&mut hasher);
    final_batches.hash(&mut hasher);
    Ok(Outcome {
        seed,
        appends: h.next_id as usize,
        acknowledged: acked.len(),
        failed: h
            .events
            .iter()
            .filter(|e| matches!(e, Event::Failed { .. }))
            .count(),
        reads: h
            .events
            .iter()
            .filter(|e| matches!(e, Event::Read { .. }))
            .count(),
        crashes: workload.crashes,
        surviving_batches: final_batches.len(),
        trace_hash: hasher.finish(),
    })
}
