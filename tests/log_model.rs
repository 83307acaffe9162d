//! A model test of the partition log (STYLE.md item 11): random appends, reads, rolls,
//! retention, flushes, sync failures, process restarts and power losses against a plain
//! in-memory model, on the faulty disk with torn writes.
//!
//! Properties checked after every operation:
//! - after any restart the log holds exactly a prefix of what was appended (from the log
//!   start), and that prefix includes every append reported durable;
//! - an offset never comes back with different bytes, and is never handed out twice;
//! - a read never returns a batch that fails its CRC.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;

use broker::log::{FlushPolicy, Log, LogConfig};
use chaos::FaultyDiskConfig;
use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
    },
    /// An acks=1 append: its offsets are shown before the sync (which follows at once, as the
    /// partition's background sync would).
    AppendShown {
        records: usize,
        value_len: usize,
    },
    /// The broker's maintenance tick: releases the offset reservation of an idle log.
    Tidy,
    Read {
        pick: usize,
        max_bytes: usize,
    },
    Flush,
    Roll,
    Retention {
        advance_ms: i64,
    },
    FailNextSync,
    Restart,
    PowerLoss,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 1usize..400).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        3 => (1usize..6, 1usize..400).prop_map(|(records, value_len)| Op::AppendShown { records, value_len }),
        1 => Just(Op::Tidy),
        3 => (any::<usize>(), 1usize..3000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Flush),
        1 => Just(Op::Roll),
        1 => (0i64..40_000).prop_map(|advance_ms| Op::Retention { advance_ms }),
        1 => Just(Op::FailNextSync),
        1 => Just(Op::Restart),
        2 => Just(Op::PowerLoss),
    ]
}

/// One appended batch as the model knows it.
#[derive(Clone, Debug)]
struct Appended {
    id: u64,
    base_offset: u64,
    bytes: Vec<u8>,
    /// Reported durable: must survive every crash.
    durable: bool,
    /// The append failed: it may or may not be in the log (never acknowledged).
    maybe: bool,
}

struct Model {
    batches: Vec<Appended>,
    /// Every offset ever handed out, with the id it was given to.
    assigned: BTreeMap<u64, u64>,
    next_id: u64,
}

impl Model {
    fn mark_durable_below(&mut self, durable_end: u64) {
        for b in &mut self.batches {
            if !b.maybe && b.base_offset < durable_end {
                b.durable = true;
            }
        }
    }
}

/// Opens the log; an open that hits the one-shot injected sync failure fails cleanly and is
/// retried, which also checks that a half-done recovery can be run again.
async fn open_retrying(f: &Fixture) -> Result<Log, TestCaseError> {
    let mut last = None;
    for _ in 0..100 {
        match Log::open(
            std::sync::Arc::new(f.disk.clone()),
            f.clock.clone(),
            f.dir.clone(),
            f.config.clone(),
        )
        .await
        {
            Ok(log) => return Ok(log),
            Err(e) => last = Some(e),
        }
    }
    Err(TestCaseError::fail(format!("log does not open: {last:?}")))
}

async fn check_after_restart(log: &Log, model: &mut Model) -> Result<(), TestCaseError> {
    let got = Fixture::read_all(log).await;
    // The log holds a prefix of the model (from the log start) that includes every durable batch.
    let start = log.log_start_offset();
    let expected: Vec<&Appended> = model
        .batches
        .iter()
        .filter(|b| b.base_offset >= start)
        .collect();
    prop_assert!(
        got.len() <= expected.len(),
        "log holds batches never appended"
    );
    for ((header, bytes), want) in got.iter().zip(&expected) {
        prop_assert_eq!(id_of(bytes), want.id, "not a prefix of what was appended");
        prop_assert_eq!(
            header.base_offset as u64,
            want.base_offset,
            "batch moved offsets"
        );
        prop_assert!(
            bytes == &want.bytes,
            "an offset came back with different bytes"
        );
    }
    for lost in &expected[got.len()..] {
        prop_assert!(
            !lost.durable,
            "lost a batch reported durable: id {} at {}",
            lost.id,
            lost.base_offset
        );
    }
    let kept: std::collections::BTreeSet<u64> = got.iter().map(|(_, b)| id_of(b)).collect();
    model
        .batches
        .retain(|b| b.base_offset < start || kept.contains(&b.id));
    for b in &mut model.batches {
        b.maybe = false; // what survived is now simply in the log
    }
    Ok(())
}

fn run(ops: Vec<Op>, lazy: bool, seed: u64) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let flush = if lazy {
            FlushPolicy::Lazy {
                flush_messages: None,
                flush_ms: None,
            }
        } else {
            FlushPolicy::Durable
        };
        let config = LogConfig {
            segment_bytes: 3_000,
            index_interval_bytes: 700,
            retention_ms: Some(60_000),
            offset_reservation: 50,
            flush,
            ..LogConfig::default()
        };
        let f = Fixture::new(
            seed,
            FaultyDiskConfig {
                torn_writes: true,
                ..FaultyDiskConfig::default()
            },
            config,
        );
        let mut log = f.open().await;
        let mut model = Model {
            batches: Vec::new(),
            assigned: BTreeMap::new(),
            next_id: 0,
        };
        for op in ops {
            match op {
                Op::Append { records, value_len } => {
                    let id = model.next_id;
                    model.next_id += 1;
                    let mut bytes =
                        batch_with_id(id, records, value_len, f.clock.now_ms_for_test());
                    match log.append(&mut bytes, 0).await {
                        Ok(info) => {
                            for offset in info.base_offset..=info.last_offset {
                                prop_assert!(
                                    model.assigned.insert(offset, id).is_none(),
                                    "offset {offset} handed out twice"
                                );
                            }
                            model.batches.push(Appended {
                                id,
                                base_offset: info.base_offset,
                                bytes,
                                durable: !lazy,
                                maybe: false,
                            });
                        }
                        Err(_) => {
                            // Offline after an injected fault: the batch is indefinite.
                            let base_offset = broker::log::batch::BatchHeader::parse(&bytes)
                                .unwrap()
                                .base_offset as u64;
                            model.batches.push(Appended {
                                id,
                                base_offset,
                                bytes,
                                durable: false,
                                maybe: true,
                            });
                        }
                    }
                }
                Op::AppendShown { records, value_len } => {
                    let id = model.next_id;
                    model.next_id += 1;
                    let mut bytes =
                        batch_with_id(id, records, value_len, f.clock.now_ms_for_test());
                    match log.append_unsynced(&mut bytes, 0).await {
                        Ok(info) => {
                            for offset in info.base_offset..=info.last_offset {
                                prop_assert!(
                                    model.assigned.insert(offset, id).is_none(),
                                    "offset {offset} handed out twice"
                                );
                            }
                            let synced = log.wait_append_durable(&info).await.is_ok();
                            model.batches.push(Appended {
                                id,
                                base_offset: info.base_offset,
                                bytes,
                                durable: synced,
                                maybe: false,
                            });
                        }
                        Err(_) => {
                            let base_offset = broker::log::batch::BatchHeader::parse(&bytes)
                                .unwrap()
                                .base_offset as u64;
                            model.batches.push(Appended {
                                id,
                                base_offset,
                                bytes,
                                durable: false,
                                maybe: true,
                            });
                        }
                    }
                }
                Op::Tidy => log.tidy_checkpoint().await,
                Op::Read { pick, max_bytes } => {
                    let (start, end) = (log.log_start_offset(), log.log_end_offset());
                    let offset = start + (pick as u64 % (end - start + 1));
                    if let Ok(read) = log.read(offset, max_bytes, None).await {
                        for (header, bytes) in batches(&read.records) {
                            let base = header.base_offset as u64;
                            let want = model
                                .batches
                                .iter()
                                .find(|b| b.base_offset == base && !b.maybe);
                            let want = want.ok_or_else(|| {
                                TestCaseError::fail(format!(
                                    "read a batch at {base} never acknowledged"
                                ))
                            })?;
                            prop_assert!(
                                bytes == want.bytes,
                                "offset {base} came back with different bytes"
                            );
                        }
                    }
                }
                Op::Flush => {
                    if log.flush().await.is_ok() {
                        model.mark_durable_below(log.durable_end_offset());
                    }
                }
                Op::Roll => {
                    let _ = log.roll().await;
                    model.mark_durable_below(log.durable_end_offset());
                }
                Op::Retention { advance_ms } => {
                    f.clock.advance_ms(advance_ms);
                    let _ = log.apply_retention().await;
                    model.mark_durable_below(log.durable_end_offset());
                }
                Op::FailNextSync => f.disk.fail_next_sync(),
                Op::Restart | Op::PowerLoss => {
                    drop(log);
                    if matches!(op, Op::PowerLoss) {
                        f.disk.crash();
                    }
                    log = open_retrying(&f).await?;
                    check_after_restart(&log, &mut model).await?;
                    // New offsets start past everything ever handed out.
                    if let Some((&max, _)) = model.assigned.iter().next_back() {
                        prop_assert!(
                            log.log_end_offset() > max,
                            "log end {} would reuse offset {max}",
                            log.log_end_offset()
                        );
                    }
                }
            }
            let offline = log
                .read(log.log_start_offset(), 1, None)
                .await
                .is_err_and(|e| matches!(e, broker::log::ReadError::Offline(_)));
            if !lazy && !offline {
                prop_assert_eq!(
                    log.durable_end_offset(),
                    log.log_end_offset(),
                    "durable policy left unsynced offsets"
                );
            }
        }
        drop(log);
        f.disk.crash();
        let log = open_retrying(&f).await?;
        check_after_restart(&log, &mut model).await
    })
}

trait NowForTest {
    fn now_ms_for_test(&self) -> i64;
}
impl NowForTest for broker::clock::ManualClock {
    fn now_ms_for_test(&self) -> i64 {
        broker::clock::Clock::now_ms(self)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_durable_log_keeps_every_acknowledged_batch_through_any_crash(
        ops in proptest::collection::vec(op(), 1..60), seed in any::<u64>()
    ) {
        run(ops, false, seed)?;
    }

    #[test]
    fn the_lazy_log_keeps_a_prefix_with_every_flushed_batch_and_never_reuses_an_offset(
        ops in proptest::collection::vec(op(), 1..60), seed in any::<u64>()
    ) {
        run(ops, true, seed)?;
    }
}
