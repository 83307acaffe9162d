//! Followers fetching from leaders (Kafka's `ReplicaFetcherThread` / `AbstractFetcherThread`).
//!
//! One fetcher task per source broker fetches every partition this broker follows from that
//! leader, over one wire connection, with Kafka's replica Fetch (v15's replica state: this
//! broker's id and broker epoch, so the leader refuses a fetch of a dead incarnation, KIP-903):
//! - each partition is fetched from its own log end, which is how the leader learns the
//!   follower's log end (and so the high watermark moves);
//! - fetched batches are appended as the leader stored them (`Partition::append_as_follower`);
//!   under the durable flush policy a fetch offset the leader could count is synced before it
//!   is sent (the sync rule below);
//! - the leader's high watermark in each response becomes this replica's
//!   (`Partition::update_high_watermark_as_follower`);
//! - a response is appended only while the replica still follows in the leader epoch it was
//!   fetched in: a fetch from an old leader can come back after the new leader's
//!   reconciliation, and its batches would then sit where the new leader holds others.
//!
//! Before a partition's first fetch in a leader epoch, the follower reconciles its log with the
//! leader's (KIP-101, KIP-279): it asks OffsetsForLeaderEpoch for the end of its latest epoch in
//! the leader's log, truncates to the divergence point ([`truncation_point`]) and repeats while
//! the answer names an epoch it does not hold (the fast double failover). It never truncates to
//! its local high watermark, which may be ahead of what the new leader has.
//!
//! The catalog drives the set ([`ReplicaFetchers::update`]) as it applies each image: a new
//! leader or epoch replaces a partition's entry (and reconciles again), a broker no longer
//! followed has its fetcher stopped. Errors back off: a connection failure for the whole
//! fetcher, a partition error (fenced, not leader yet, storage) for that partition alone.
//!
//! ## The sync rule (durable policy) and catch-up
//!
//! The fetch offset tells the leader what this replica holds, and under the durable policy the
//! leader counts it as *durable*: for the high watermark, for joining the ISR, for "caught up".
//! At the tail (an ISR member, or any replica at or past the leader's high watermark) every
//! fetch offset is therefore synced before it is sent, as before: append, sync, fetch.
//!
//! A replica far behind may append several fetches and sync once: a fetch offset `X` may be
//! sent unsynced when the leader, in the leader epoch fetched in and since this replica's last
//! truncation, has already answered with a high watermark `H > X`. Such an `X` counts for
//! nothing at the leader:
//! - the leader's high watermark never falls within its epoch (under the durable policy it is
//!   at most the leader's own durable end, which survives its log going offline; a restarted
//!   leader leads in a new epoch), so it is still at least `H > X`, and the high watermark is
//!   the minimum over the ISR that only rises: `X` cannot raise it;
//! - a replica joins the ISR only at or past the high watermark: not with `X`;
//! - this replica was not in the ISR when `H` came (an ISR member's fetch offset bounds the
//!   high watermark computed after it, and fetch offsets only rise between truncations), and
//!   joining needs an offset past `H`: no ISR bookkeeping ("caught up") is fed `X` either.
//!
//! So a power loss that takes `[durable end, X)` away loses nothing counted on this replica's
//! behalf; the first offset at or past `H` is synced before it is sent, and the sync covers
//! everything below it. A new epoch or a truncation forgets `H` (sync first again), and the
//! unsynced bytes are bounded ([`SYNC_BEHIND_BYTES`], by syncs that run beside the fetches)
//! so the sync at the tail stays short. The follower's own high watermark stays at most its
//! durable end (`ReplicaState::update_high_watermark_as_follower`). Those background syncs also
//! drop what they made durable from the page cache (`Log::flush_unless_cut_dropping_cache`):
//! committed data nobody reads from this replica soon, whose pages the next appends reuse.
//!
//! A partition behind `H` also asks for its share of `replica.fetch.response.max.bytes`
//! instead of `replica.fetch.max.bytes`: its fetches are what catch-up waits on, and nothing at
//! the leader waits on its offset. So does a partition whose last answer was full (the leader
//! held at least `replica.fetch.max.bytes` past its fetch offset), behind `H` or not: an ISR
//! member far behind the leader's log end (after a burst of acks=1 produce) otherwise fetched,
//! appended and synced 1 MiB per round trip, 35-60 MB/s here (README, "catch-up", session
//! 13), and a larger answer costs one sync all the same. The size changes no rule above: what
//! the leader may count is still only a synced fetch offset.
//!
//! ## Reading ahead during catch-up
//!
//! A fetch offset the leader counts must be in this replica's log, so a replica fetch goes out
//! only once the answer before it is appended: alone, the leader idles while this replica
//! appends, and this replica idles while the leader reads, encodes and sends. Far behind, a
//! full answer (at least `replica.fetch.max.bytes`) that ends below the high watermark it
//! carries is followed by a *read-ahead*: a consumer's Fetch (replica id -1) from where the
//! answer ends, sent before the answer is appended and answered while it is. The leader
//! records nothing for a consumer's fetch (no follower log end, no ISR bookkeeping), reads it
//! only up to its high watermark (committed records, which no truncation in this epoch
//! removes), and fences it by the current leader epoch like any fetch. Its answer is appended
//! only if the log then ends exactly where it starts, through the same checks as a replica
//! fetch's. At most [`READ_AHEAD_MAX_FETCHES`] follow one replica fetch, which then reports the
//! log end; near the high watermark (the tail) there is none, so the tail goes as before.
//!
//! Runtime rules: every request has a timeout, every `select!` is `biased;`, time is
//! `tokio::time`'s (simulated under madsim).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId as WireBrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use wire::{Connection, ConnectionConfig};

use super::BrokerId;
use crate::log::batch::BatchHeader;
use crate::log::leader_epoch::LeaderEpochCache;
use crate::log::FlushPolicy;
use crate::partition::Partition;
use crate::planted::{self, Bug};

/// What a fetcher speaks: Fetch v15 (topic ids; the replica state with this broker's epoch,
/// KIP-903, so a leader refuses the fetches of a dead incarnation) and OffsetsForLeaderEpoch
/// v3+ (replica id).
const SPEAKS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Fetch, 15, 15),
    (ApiKey::OffsetForLeaderEpoch, 3, 4),
];
/// How long a replica fetch waits at the leader for new data (Kafka's
/// `replica.fetch.wait.max.ms`), at most: Kafka requires it below `replica.lag.time.max.ms`,
/// since an idle follower counts as caught up only when a fetch of it is answered, so the
/// fetchers wait no longer than a third of the lag time.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);

/// The replica fetch wait for a `replica.lag.time.max.ms` (see [`FETCH_MAX_WAIT`]).
pub fn fetch_max_wait(replica_lag_time_max_ms: u64) -> Duration {
    FETCH_MAX_WAIT.min(Duration::from_millis((replica_lag_time_max_ms / 3).max(1)))
}
/// Bytes a fetch asks for (Kafka's `replica.fetch.max.bytes` per partition and
/// `replica.fetch.response.max.bytes` per response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchSizes {
    pub partition_max_bytes: u32,
    pub response_max_bytes: u32,
}

impl Default for FetchSizes {
    /// Kafka's defaults: 1 MiB and 10 MiB.
    fn default() -> FetchSizes {
        FetchSizes {
            partition_max_bytes: 1 << 20,
            response_max_bytes: 10 << 20,
        }
    }
}

impl FetchSizes {
    /// What to ask of one of `partitions` partitions fetched together: a partition catching up
    /// (behind the leader's high watermark, or whose last answer was full) takes its share of
    /// the response (see the module doc).
    fn partition_max_bytes(&self, catching_up: bool, partitions: usize) -> i32 {
        let share = if catching_up {
            self.response_max_bytes / (partitions.max(1) as u32)
        } else {
            0
        };
        i32::try_from(self.partition_max_bytes.max(share)).unwrap_or(i32::MAX)
    }
}

/// A replica behind the leader's high watermark syncs at least every this many appended
/// bytes (see the module doc), so the sync before its first counted fetch stays short.
const SYNC_BEHIND_BYTES: u64 = 64 << 20;
/// Backoff after an error (Kafka's `replica.fetch.backoff.ms` is 1 s; shorter here so a
/// failover does not idle the follower for long), doubled up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bound on the OffsetsForLeaderEpoch rounds of one reconciliation; each round truncates to
/// an older epoch, so this is only a guard against a leader that keeps answering oddly.
const MAX_RECONCILE_ROUNDS: usize = 64;

/// A partition a fetcher follows.
#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    topic_id: uuid::Uuid,
    /// The leader epoch this replica follows in (sent as the current leader epoch).
    leader_epoch: i32,
    /// The log must be reconciled with the leader's before the next fetch.
    reconcile: bool,
    /// After a partition error: not fetched again before this.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The highest high watermark the leader answered with in this epoch since the last
    /// truncation: a fetch offset below it counts for nothing at the leader (module doc).
    leader_high_watermark: Option<u64>,
    /// Bytes appended since the last sync this fetcher waited for.
    unsynced_bytes: u64,
    /// The last answer was full (at least `replica.fetch.max.bytes`): the leader holds more,
    /// and the next fetch asks for the response's share (module doc).
    leader_has_more: bool,
}

impl Followed {
    fn new(partition: Arc<Partition>, topic_id: uuid::Uuid, leader_epoch: i32) -> Followed {
        Followed {
            partition,
            topic_id,
            leader_epoch,
            reconcile: true,
            retry_at: None,
            backoff: BACKOFF_MIN,
            leader_high_watermark: None,
            unsynced_bytes: 0,
            leader_has_more: false,
        }
    }

    /// Does a fetch from `offset` ask for its share of the response rather than
    /// `replica.fetch.max.bytes` (module doc)?
    fn asks_for_share(&self, offset: u64) -> bool {
        self.leader_has_more || self.behind_high_watermark(offset)
    }

    /// Is a fetch from `offset` below a high watermark the leader already answered with?
    fn behind_high_watermark(&self, offset: u64) -> bool {
        self.leader_high_watermark.is_some_and(|hw| offset < hw)
    }

    fn back_off(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn succeeded(&mut self) {
        self.retry_at = None;
        self.backoff = BACKOFF_MIN;
    }
}

type Key = (String, i32);

/// The state one fetcher task shares with the catalog.
struct Shared {
    local_id: BrokerId,
    /// This broker's epoch (its registration), sent with every fetch; -1 until registered.
    broker_epoch: Arc<AtomicI64>,
    fetch_max_wait: Duration,
    sizes: FetchSizes,
    source: BrokerId,
    addr: String,
    partitions: Mutex<BTreeMap<Key, Followed>>,
    /// The sync each catching-up partition last started beside its fetches
    /// ([`sync_before_fetch`]).
    background_syncs: Mutex<BTreeMap<Key, tokio::task::JoinHandle<()>>>,
    changed: Notify,
    stopped: AtomicBool,
    /// Read-ahead fetches sent, by every fetcher of this broker.
    read_ahead_fetches: Arc<AtomicU64>,
}

impl Shared {
    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Followed>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn background_syncs(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<Key, tokio::task::JoinHandle<()>>> {
        self.background_syncs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Applies `f` to the entry for `key` if it is still the one fetched in `epoch` (the
    /// catalog may have replaced it meanwhile).
    fn update(&self, key: &Key, epoch: i32, f: impl FnOnce(&mut Followed)) {
        if let Some(followed) = self.partitions().get_mut(key) {
            if followed.leader_epoch == epoch {
                f(followed);
            }
        }
    }
}

/// A partition this broker should follow: from which leader, in which epoch.
pub struct FollowTarget {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub index: i32,
    pub partition: Arc<Partition>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
}

/// This broker's fetchers, one per source broker.
pub struct ReplicaFetchers {
    local_id: BrokerId,
    broker_epoch: Arc<AtomicI64>,
    fetch_max_wait: Duration,
    sizes: FetchSizes,
    fetchers: Mutex<BTreeMap<BrokerId, Arc<Shared>>>,
    read_ahead_fetches: Arc<AtomicU64>,
}

impl std::fmt::Debug for ReplicaFetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaFetchers")
            .field("local_id", &self.local_id)
            .finish()
    }
}

impl Drop for ReplicaFetchers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl ReplicaFetchers {
    /// Fetchers of broker `local_id`, whose replica fetches wait at most `fetch_max_wait` at
    /// the leader (see [`fetch_max_wait`]) and ask for `sizes`.
    pub fn new(local_id: BrokerId, fetch_max_wait: Duration, sizes: FetchSizes) -> ReplicaFetchers {
        ReplicaFetchers {
            local_id,
            broker_epoch: Arc::new(AtomicI64::new(-1)),
            fetch_max_wait,
            sizes,
            fetchers: Mutex::new(BTreeMap::new()),
            read_ahead_fetches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Read-ahead fetches sent since start (module doc), by every fetcher.
    pub fn read_ahead_fetches(&self) -> u64 {
        self.read_ahead_fetches.load(Ordering::Relaxed)
    }

    /// This broker registered with `broker_epoch`: every fetch from now on says so, and leaders
    /// refuse the fetches of its previous incarnations (KIP-903).
    pub fn set_broker_epoch(&self, broker_epoch: i64) {
        self.broker_epoch.store(broker_epoch, Ordering::Release);
    }

    /// Makes the fetchers follow exactly `targets`, each leader reached at `addrs[leader]`
    /// (`host:port`). Partitions whose leader or epoch changed are reconciled again before
    /// their next fetch; fetchers left with nothing stop.
    pub fn update(&self, targets: Vec<FollowTarget>, addrs: &BTreeMap<BrokerId, String>) {
        let mut wanted: BTreeMap<BrokerId, Vec<FollowTarget>> = BTreeMap::new();
        for target in targets {
            assert_ne!(
                target.leader, self.local_id,
                "a broker never follows itself"
            );
            if addrs.contains_key(&target.leader) {
                wanted.entry(target.leader).or_default().push(target);
            }
        }
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|e| e.into_inner());
        // Stop the fetchers of sources no longer followed, or now reached elsewhere.
        let stale: Vec<BrokerId> = fetchers
            .iter()
            .filter(|(source, shared)| {
                !wanted.contains_key(source) || addrs.get(source) != Some(&shared.addr)
            })
            .map(|(&source, _)| source)
            .collect();
        for source in stale {
            if let Some(shared) = fetchers.remove(&source) {
                shared.stop();
            }
        }
        for (source, targets) in wanted {
            let shared = fetchers.entry(source).or_insert_with(|| {
                let shared = Arc::new(Shared {
                    local_id: self.local_id,
                    broker_epoch: Arc::clone(&self.broker_epoch),
                    fetch_max_wait: self.fetch_max_wait,
                    sizes: self.sizes,
                    source,
                    addr: addrs[&source].clone(),
                    partitions: Mutex::new(BTreeMap::new()),
                    background_syncs: Mutex::new(BTreeMap::new()),
                    changed: Notify::new(),
                    stopped: AtomicBool::new(false),
                    read_ahead_fetches: Arc::clone(&self.read_ahead_fetches),
                });
                tokio::spawn(run(Arc::clone(&shared)));
                tracing::info!(source, addr = %shared.addr, "replica fetcher started");
                shared
            });
            let mut partitions = shared.partitions();
            let mut next = BTreeMap::new();
            for target in targets {
                let key = (target.topic, target.index);
                let kept = partitions.remove(&key).filter(|f| {
                    f.leader_epoch == target.leader_epoch
                        && f.topic_id == target.topic_id
                        && Arc::ptr_eq(&f.partition, &target.partition)
                });
                let followed = kept.unwrap_or_else(|| {
                    Followed::new(target.partition, target.topic_id, target.leader_epoch)
                });
                next.insert(key, followed);
            }
            *partitions = next;
            drop(partitions);
            shared.changed.notify_one();
        }
    }

    /// The source brokers fetched from, and the partitions fetched from each (for tests and
    /// diagnostics).
    pub fn sources(&self) -> BTreeMap<BrokerId, Vec<(String, i32)>> {
        self.fetchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&source, shared)| (source, shared.partitions().keys().cloned().collect()))
            .collect()
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_all(&self) {
        let fetchers =
            std::mem::take(&mut *self.fetchers.lock().unwrap_or_else(|e| e.into_inner()));
        for shared in fetchers.values() {
            shared.stop();
        }
    }
}

/// Where a follower truncates after the leader answered OffsetsForLeaderEpoch for its latest
/// epoch (Kafka's `AbstractFetcherThread.getOffsetTruncationState`): the offset, and whether
/// the reconciliation is complete (else ask again with the latest epoch left after truncating).
///
/// `leader_epoch`/`leader_end_offset` are the leader's answer (-1/-1: it knows no epoch at or
/// below the one asked). The target may be at or past `log_end_offset`: nothing to cut then.
pub fn truncation_point(
    local: &LeaderEpochCache,
    log_end_offset: u64,
    leader_epoch: i32,
    leader_end_offset: i64,
) -> (u64, bool) {
    if leader_epoch < 0 || leader_end_offset < 0 {
        // The leader holds no epoch this replica knows: none of this log is known to match.
        return (0, true);
    }
    let leader_end = leader_end_offset as u64;
    match local.end_offset_for(leader_epoch, log_end_offset) {
        // Both hold that epoch: the logs agree up to where the shorter of the two ends it.
        Some((epoch, local_end)) if epoch == leader_epoch => {
            (leader_end.min(local_end).min(log_end_offset), true)
        }
        // This replica's nearest older epoch ends after the leader's: cut there and ask again
        // (the leader may have ended that older epoch earlier still).
        Some((_, local_end)) => (leader_end.min(local_end).min(log_end_offset), false),
        // This replica holds no epoch that old: the leader's end offset is the bound.
        None => (leader_end.min(log_end_offset), true),
    }
}

/// The part of fetched `records` that continues a log ending at `log_end_offset`: batches
/// wholly below it are dropped (already held), and a trailing partial batch is dropped (a
/// response cut mid-batch). `Err` if a batch straddles the log end: the logs diverged.
pub fn records_to_append(records: &[u8], log_end_offset: u64) -> Result<&[u8], u64> {
    let mut start = None;
    let mut end = 0;
    for (pos, header) in whole_batches(records) {
        end = pos + header.size();
        let base = header.base_offset as u64;
        if (header.last_offset() as u64) < log_end_offset {
            continue;
        }
        if base < log_end_offset {
            return Err(base);
        }
        start.get_or_insert(pos);
    }
    Ok(match start {
        Some(start) => &records[start..end],
        None => &[],
    })
}

/// The whole batches at the front of `records`, each with its position: a trailing partial
/// batch (a response cut mid-batch) or unparsable bytes end it.
fn whole_batches(records: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(records.get(pos..)?).ok()?;
        if pos + header.size() > records.len() {
            return None;
        }
        let at = pos;
        pos += header.size();
        Some((at, header))
    })
}

/// The runtime's monotonic now: virtual under the simulator, where `tokio::time::Instant` is
/// std's (which madsim intercepts), hence the allowance clippy needs in that build.
#[allow(clippy::disallowed_methods)]
pub(crate) fn monotonic_now() -> Instant {
    Instant::now()
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One fetcher: loops until stopped. See the module doc.
async fn run(shared: Arc<Shared>) {
    let mut connection: Option<Connection> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        if shared.is_stopped() {
            tracing::info!(source = shared.source, "replica fetcher stopped");
            return;
        }
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = monotonic_now();
        let (ready, next_retry): (Vec<(Key, Followed)>, Option<Instant>) = {
            let partitions = shared.partitions();
            let ready = partitions
                .iter()
                .filter(|(_, f)| f.retry_at.is_none_or(|t| t <= now))
                .map(|(k, f)| (k.clone(), f.clone()))
                .collect();
            let next = partitions.values().filter_map(|f| f.retry_at).min();
            (ready, next)
        };
        if ready.is_empty() {
            let wait = next_retry.map_or(BACKOFF_MAX, |t| t.saturating_duration_since(now));
            tokio::select! {
                biased;
                () = &mut changed => {}
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let conn = match connection.take().filter(|c| !c.is_closed()) {
            Some(conn) => conn,
            None => {
                let config = ConnectionConfig {
                    client_id: format!("faultline-replica-{}", shared.local_id),
                    connect_timeout: Duration::from_secs(5),
                    request_timeout: Duration::from_secs(10),
                };
                match Connection::connect(&shared.addr, config, SPEAKS).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!(source = shared.source, addr = %shared.addr, %e,
                            "replica fetcher cannot connect; backing off");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
        };
        match fetch_round(&shared, &conn, ready).await {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                connection = Some(conn);
            }
            Err(e) => {
                tracing::debug!(source = shared.source, %e, "replica fetch failed; reconnecting");
                conn.close();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Reconciles the partitions that need it, then fetches the others once. `Err` only for a
/// failure of the connection (the whole fetcher backs off); partition errors back off that
/// partition.
async fn fetch_round(
    shared: &Shared,
    conn: &Connection,
    ready: Vec<(Key, Followed)>,
) -> Result<(), wire::RequestError> {
    let mut fetchable = Vec::new();
    for (key, followed) in ready {
        if !followed.reconcile {
            fetchable.push((key, followed));
            continue;
        }
        match reconcile(shared, conn, &key, &followed).await? {
            Ok(()) => {
                shared.update(&key, followed.leader_epoch, |f| {
                    f.reconcile = false;
                    f.succeeded();
                });
                fetchable.push((key, followed));
            }
            Err(reason) => {
                tracing::debug!(topic = %key.0, partition = key.1, %reason,
                    "reconciliation with the leader failed; backing off");
                shared.update(&key, followed.leader_epoch, |f| f.back_off(monotonic_now()));
            }
        }
    }
    if fetchable.is_empty() {
        return Ok(());
    }
    fetch_once(shared, conn, fetchable).await
}

/// OffsetsForLeaderEpoch rounds and truncation until this replica's log is a prefix of the
/// leader's (as far as epochs tell). The outer `Err` is a connection failure; the inner one a
/// partition error to back off from.
async fn reconcile(
    shared: &Shared,
    conn: &Connection,
    key: &Key,
    followed: &Followed,
) -> Result<Result<(), String>, wire::RequestError> {
    let partition = &followed.partition;
    for _ in 0..MAX_RECONCILE_ROUNDS {
        // Read once no append fetched in an older epoch is in flight (they are refused from
        // now on): what it added is seen here and truncated if the new leader lacks it.
        let (cache, log_end_offset) = partition.follower_log().await;
        let Some(latest) = cache.latest_epoch() else {
            // No epoch recorded: an empty log, or one whose batches carry none. Nothing can
            // be matched, so whatever it holds is fetched again.
            if log_end_offset > partition.log.log_start_offset() {
                if let Err(e) = partition
                    .truncate_to(partition.log.log_start_offset())
                    .await
                {
                    return Ok(Err(e.to_string()));
                }
            }
            return Ok(Ok(()));
        };
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(WireBrokerId(shared.local_id))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name(&key.0))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(key.1)
                    .with_current_leader_epoch(followed.leader_epoch)
                    .with_leader_epoch(latest)])]);
        let response = conn.send(&request).await?;
        let Some(answer) = response
            .topics
            .iter()
            .filter(|t| t.topic.0.as_str() == key.0)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == key.1)
        else {
            return Ok(Err("the leader did not answer for the partition".into()));
        };
        if answer.error_code != 0 {
            return Ok(Err(format!(
                "OffsetsForLeaderEpoch error {:?}",
                ResponseError::try_from_code(answer.error_code)
            )));
        }
        let (target, complete) = truncation_point(
            &cache,
            log_end_offset,
            answer.leader_epoch,
            answer.end_offset,
        );
        if target < log_end_offset && !planted::is(Bug::FollowerSkipsTruncation) {
            tracing::info!(topic = %key.0, partition = key.1, from = log_end_offset, to = target,
                local_epoch = latest, leader_epoch = answer.leader_epoch,
                leader_end_offset = answer.end_offset, "truncating to the leader's log");
            if let Err(e) = partition.truncate_to(target).await {
                return Ok(Err(e.to_string()));
            }
        }
        if complete {
            return Ok(Ok(()));
        }
    }
    Ok(Err("reconciliation did not converge".into()))
}

/// One replica Fetch for `fetchable`, and what each partition's answer means.
async fn fetch_once(
    shared: &Shared,
    conn: &Connection,
    fetchable: Vec<(Key, Followed)>,
) -> Result<(), wire::RequestError> {
    // The sync rule (module doc): each fetch offset the leader could count is durable first.
    let mut ready = Vec::with_capacity(fetchable.len());
    for (key, mut followed) in fetchable {
        match sync_before_fetch(shared, &key, &followed).await {
            Ok(false) => {}
            Ok(true) => {
                followed.unsynced_bytes = 0;
                shared.update(&key, followed.leader_epoch, |f| f.unsynced_bytes = 0);
            }
            Err(e) => {
                tracing::debug!(topic = %key.0, partition = key.1, %e,
                    "a follower's sync failed; backing off");
                shared.update(&key, followed.leader_epoch, |f| f.back_off(monotonic_now()));
                continue;
            }
        }
        ready.push((key, followed));
    }
    let fetchable = ready;
    if fetchable.is_empty() {
        return Ok(());
    }
    let mut topics: BTreeMap<uuid::Uuid, Vec<FetchPartition>> = BTreeMap::new();
    for ((_, index), followed) in &fetchable {
        let log = &followed.partition.log;
        let fetch_offset = log.log_end_offset();
        let max_bytes = shared
            .sizes
            .partition_max_bytes(followed.asks_for_share(fetch_offset), fetchable.len());
        topics.entry(followed.topic_id).or_default().push(
            FetchPartition::default()
                .with_partition(*index)
                .with_current_leader_epoch(followed.leader_epoch)
                .with_fetch_offset(fetch_offset as i64)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(log.log_start_offset() as i64)
                .with_partition_max_bytes(max_bytes),
        );
    }
    let request = sessionless_fetch(shared, shared.fetch_max_wait.as_millis() as i32, topics)
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(WireBrokerId(shared.local_id))
                .with_replica_epoch(shared.broker_epoch.load(Ordering::Acquire)),
        );
    let timeout = shared.fetch_max_wait + conn.request_timeout();
    let response = conn.send_with_timeout(&request, timeout).await?;
    if response.error_code != 0 {
        tracing::debug!(
            source = shared.source,
            error = response.error_code,
            "replica fetch refused"
        );
        for (key, followed) in &fetchable {
            shared.update(key, followed.leader_epoch, |f| f.back_off(monotonic_now()));
        }
        return Ok(());
    }
    let mut pending = answers(&fetchable, response);
    // The read-ahead chain (module doc): while one answer is appended, the next is already
    // asked for, by a fetch the leader counts for nothing.
    for _ in 0..READ_AHEAD_MAX_FETCHES {
        let ahead: Vec<(usize, u64)> = pending
            .iter()
            .filter_map(|(i, data)| read_ahead_from(&shared.sizes, data).map(|from| (*i, from)))
            .collect();
        if ahead.is_empty() || shared.is_stopped() {
            break;
        }
        let request = read_ahead_request(shared, &fetchable, &ahead);
        shared.read_ahead_fetches.fetch_add(1, Ordering::Relaxed);
        // The request first: polled first, it is written before the append takes the thread.
        let (next, applied) = tokio::join!(
            conn.send_with_timeout(&request, conn.request_timeout()),
            apply_all(shared, &fetchable, std::mem::take(&mut pending)),
        );
        let next = next?;
        if next.error_code != 0 {
            return Ok(());
        }
        // A long chain keeps the unsynced bytes bounded as the replica fetches do (the sync
        // rule): what it appended is below the high watermark, so the sync runs beside it.
        for &(i, _) in &ahead {
            let (key, fetched) = &fetchable[i];
            let current = shared
                .partitions()
                .get(key)
                .filter(|f| f.leader_epoch == fetched.leader_epoch)
                .cloned();
            if let Some(current) = current {
                if let Ok(true) = sync_before_fetch(shared, key, &current).await {
                    shared.update(key, current.leader_epoch, |f| f.unsynced_bytes = 0);
                }
            }
        }
        // An answer continues a partition only if everything before it was appended: the log
        // ends exactly where the read-ahead started.
        pending = answers(&fetchable, next)
            .into_iter()
            .filter(|(i, _)| {
                ahead.iter().any(|&(j, from)| {
                    j == *i
                        && applied.contains(i)
                        && fetchable[j].1.partition.log.log_end_offset() == from
                })
            })
            .collect();
    }
    apply_all(shared, &fetchable, pending).await;
    Ok(())
}

/// At most this many read-ahead fetches follow one replica fetch, so the leader hears this
/// replica's log end (its next replica fetch) at least every this many answers. Each replica
/// fetch is a round trip the append does not overlap (about a fifth of the follower's time
/// when it was one in 7, perf in README).
const READ_AHEAD_MAX_FETCHES: usize = 16;

/// Each partition's answer in a fetch response, by its index in `fetchable`.
fn answers(
    fetchable: &[(Key, Followed)],
    response: kafka_protocol::messages::FetchResponse,
) -> Vec<(
    usize,
    kafka_protocol::messages::fetch_response::PartitionData,
)> {
    let mut out = Vec::new();
    for topic in response.responses {
        for data in topic.partitions {
            if let Some(i) = fetchable
                .iter()
                .position(|(k, f)| f.topic_id == topic.topic_id && k.1 == data.partition_index)
            {
                out.push((i, data));
            }
        }
    }
    out
}

/// Where a read-ahead fetch continues a partition's answer, if it should: the answer was a
/// full one (at least `replica.fetch.max.bytes`: the leader has more), without error, and it
/// ends below the high watermark it carries, so the next bytes are committed ones that a
/// consumer's fetch reads as well.
fn read_ahead_from(
    sizes: &FetchSizes,
    data: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Option<u64> {
    let records = data.records.as_deref().unwrap_or_default();
    if data.error_code != 0 || records.len() < sizes.partition_max_bytes as usize {
        return None;
    }
    let end = whole_batches_end(records)?;
    (data.high_watermark >= 0 && end < data.high_watermark as u64).then_some(end)
}

/// The offset after the last whole batch of `records`.
fn whole_batches_end(records: &[u8]) -> Option<u64> {
    whole_batches(records)
        .last()
        .map(|(_, header)| header.last_offset() as u64 + 1)
}

/// A consumer's Fetch (replica id -1) of `ahead`'s partitions from the given offsets: the
/// leader reads it up to its high watermark, answers at once, and records nothing for it
/// (no follower log end, no ISR bookkeeping). The current leader epoch fences it as any
/// fetch (KIP-320).
fn read_ahead_request(
    shared: &Shared,
    fetchable: &[(Key, Followed)],
    ahead: &[(usize, u64)],
) -> FetchRequest {
    let mut topics: BTreeMap<uuid::Uuid, Vec<FetchPartition>> = BTreeMap::new();
    for &(i, from) in ahead {
        let ((_, index), followed) = &fetchable[i];
        topics.entry(followed.topic_id).or_default().push(
            FetchPartition::default()
                .with_partition(*index)
                .with_current_leader_epoch(followed.leader_epoch)
                .with_fetch_offset(from as i64)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(shared.sizes.partition_max_bytes(true, fetchable.len())),
        );
    }
    sessionless_fetch(shared, 0, topics)
}

/// A Fetch of `topics` outside any fetch session (a replica fetcher sends every partition
/// each time), reading uncommitted data, with this broker's response size limit.
fn sessionless_fetch(
    shared: &Shared,
    max_wait_ms: i32,
    topics: BTreeMap<uuid::Uuid, Vec<FetchPartition>>,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(i32::try_from(shared.sizes.response_max_bytes).unwrap_or(i32::MAX))
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Applies each partition's answer in turn and records the outcome; the indexes of those
/// applied without error.
async fn apply_all(
    shared: &Shared,
    fetchable: &[(Key, Followed)],
    pending: Vec<(
        usize,
        kafka_protocol::messages::fetch_response::PartitionData,
    )>,
) -> Vec<usize> {
    let mut applied = Vec::new();
    for (i, data) in pending {
        let (key, followed) = &fetchable[i];
        let full = data.records.as_deref().map_or(0, |r| r.len())
            >= shared.sizes.partition_max_bytes as usize;
        let outcome = apply_partition(followed, &data).await;
        drop(data);
        let epoch = followed.leader_epoch;
        match outcome {
            Applied::Ok {
                appended_bytes,
                high_watermark,
            } => {
                shared.update(key, epoch, |f| {
                    f.succeeded();
                    f.unsynced_bytes += appended_bytes;
                    f.leader_high_watermark = f.leader_high_watermark.max(high_watermark);
                    f.leader_has_more = full;
                });
                applied.push(i);
            }
            Applied::Reconcile(reason) => {
                tracing::info!(topic = %key.0, partition = key.1, %reason,
                    "follower log does not continue the leader's: reconciling");
                shared.update(key, epoch, |f| {
                    f.reconcile = true;
                    // The log may be cut below it: sync before the next fetch again.
                    f.leader_high_watermark = None;
                });
            }
            Applied::BackOff(reason) => {
                tracing::debug!(topic = %key.0, partition = key.1, %reason,
                    "replica fetch of a partition failed; backing off");
                shared.update(key, epoch, |f| f.back_off(monotonic_now()));
            }
        }
    }
    applied
}

enum Applied {
    /// Appended (maybe nothing); the leader's high watermark in the response, if it gave one.
    Ok {
        appended_bytes: u64,
        high_watermark: Option<u64>,
    },
    Reconcile(String),
    BackOff(String),
}

/// Under the durable policy, syncs this replica's log before a fetch from its log end unless
/// that offset counts for nothing at the leader (the sync rule, module doc). Returns whether a
/// sync covering the log end was done or started (the unsynced bytes count from 0 again).
///
/// Behind the leader's high watermark, the sync that bounds the unsynced bytes runs beside the
/// fetches instead of before the next one: nothing at the leader waits on this offset, and
/// holding the fetch up for it (tens of milliseconds per 64 MiB) only slowed the catch-up. One
/// such sync runs at a time per partition (the next waits for it), so the unsynced bytes stay
/// under twice [`SYNC_BEHIND_BYTES`]. A failure takes the log offline as any sync's does, and
/// the next append or sync reports it.
async fn sync_before_fetch(
    shared: &Shared,
    key: &Key,
    followed: &Followed,
) -> Result<bool, crate::log::LogOffline> {
    let log = &followed.partition.log;
    if log.config().flush != FlushPolicy::Durable {
        return Ok(false);
    }
    let end = log.log_end_offset();
    if log.durable_end_offset() >= end {
        return Ok(false);
    }
    if followed.behind_high_watermark(end) {
        if followed.unsynced_bytes < SYNC_BEHIND_BYTES {
            return Ok(false);
        }
        let previous = shared.background_syncs().remove(key);
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        let partition = Arc::clone(&followed.partition);
        let sync = tokio::spawn(async move {
            // What it syncs is committed data replayed behind the leader: out of the page
            // cache with it, so the next appends reuse the pages (`Log` says why).
            if let Err(e) = partition.log.flush_unless_cut_dropping_cache().await {
                tracing::debug!(%e, "a catching-up follower's sync failed");
            }
        });
        shared.background_syncs().insert(key.clone(), sync);
        return Ok(true);
    }
    log.wait_durable(end).await?;
    Ok(true)
}

/// Appends a partition's fetched batches (synced before the next fetch if the sync rule says
/// so, [`sync_before_fetch`]) and takes the leader's high watermark.
async fn apply_partition(
    followed: &Followed,
    data: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Applied {
    let partition = &followed.partition;
    match ResponseError::try_from_code(data.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            return Applied::Reconcile("fetch offset out of the leader's range".into())
        }
        Some(error) => return Applied::BackOff(format!("{error:?}")),
    }
    let records = data.records.as_deref().unwrap_or_default();
    let log_end_offset = partition.log.log_end_offset();
    let fresh = match records_to_append(records, log_end_offset) {
        Ok(fresh) => fresh,
        Err(base) => {
            return Applied::Reconcile(format!(
                "a batch at {base} straddles the log end {log_end_offset}"
            ))
        }
    };
    if !fresh.is_empty() {
        if let Err(e) = partition
            .append_as_follower(fresh, followed.leader_epoch)
            .await
        {
            use crate::log::FollowerAppendError;
            return match e {
                FollowerAppendError::NotContiguous { .. }
                | FollowerAppendError::EpochWentBack { .. } => Applied::Reconcile(e.to_string()),
                _ => Applied::BackOff(e.to_string()),
            };
        }
    }
    let high_watermark = (data.high_watermark >= 0).then_some(data.high_watermark as u64);
    if let (Some(hw), true) = (high_watermark, partition.is_follower()) {
        partition.update_high_watermark_as_follower(hw);
    }
    Applied::Ok {
        appended_bytes: fresh.len() as u64,
        high_watermark,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::builder;

    fn cache(entries: &[(i32, u64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(epoch, start) in entries {
            c.assign(epoch, start);
        }
        c
    }

    #[test]
    fn a_follower_in_the_leaders_latest_epoch_truncates_to_the_shorter_end() {
        // Old leader wrote epoch 0 to 15; the new leader holds epoch 0 to 10 only.
        let local = cache(&[(0, 0)]);
        assert_eq!(truncation_point(&local, 15, 0, 10), (10, true));
        // A follower behind the leader keeps all it has.
        assert_eq!(truncation_point(&local, 7, 0, 10), (7, true));
    }

    #[test]
    fn a_follower_ahead_in_an_epoch_the_leader_never_had_truncates_in_rounds() {
        // The fast double failover (KIP-279): this replica led epoch 2 from offset 12 and
        // wrote to 20; the leader never had epoch 2 and answers epoch 1, ended at 14.
        let local = cache(&[(0, 0), (2, 12)]);
        // This replica's nearest epoch ≤ 1 is 0, ended at 12: cut to 12, not complete.
        assert_eq!(truncation_point(&local, 20, 1, 14), (12, false));
        // Asked again with epoch 0 (what is left), the leader ends it at 10.
        let local = cache(&[(0, 0)]);
        assert_eq!(truncation_point(&local, 12, 0, 10), (10, true));
    }

    #[test]
    fn the_truncation_point_never_depends_on_the_local_high_watermark() {
        // Same epochs, same leader answer: the point is the leader's end, whatever this
        // replica's high watermark was (it is not even an input).
        let local = cache(&[(0, 0), (3, 40)]);
        assert_eq!(truncation_point(&local, 50, 3, 45), (45, true));
    }

    #[test]
    fn an_undefined_answer_refetches_everything() {
        let local = cache(&[(5, 0)]);
        assert_eq!(truncation_point(&local, 9, -1, -1), (0, true));
    }

    #[test]
    fn a_replica_with_no_epoch_as_old_as_the_leaders_answer_cuts_at_the_leaders_end() {
        let local = cache(&[(4, 3)]);
        assert_eq!(truncation_point(&local, 9, 2, 5), (5, true));
    }

    fn batches(ranges: &[(u64, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(base, count) in ranges {
            let mut b = builder::simple(count as usize, 4, b'x', 1_700_000_000_000);
            b[..8].copy_from_slice(&(base as i64).to_be_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn batches_already_held_are_skipped_and_a_partial_tail_is_dropped() {
        let all = batches(&[(0, 2), (2, 3), (5, 1)]);
        let first_len = batches(&[(0, 2)]).len();
        assert_eq!(records_to_append(&all, 2).unwrap(), &all[first_len..]);
        assert_eq!(records_to_append(&all, 6).unwrap(), &[] as &[u8]);
        let cut = &all[..all.len() - 3];
        let kept = records_to_append(cut, 0).unwrap();
        assert_eq!(kept, &all[..batches(&[(0, 2), (2, 3)]).len()]);
    }

    #[test]
    fn a_replica_fetch_waits_less_than_the_lag_time_that_would_call_an_idle_follower_out_of_sync() {
        assert_eq!(fetch_max_wait(30_000), FETCH_MAX_WAIT);
        assert_eq!(fetch_max_wait(300), Duration::from_millis(100));
        assert_eq!(fetch_max_wait(0), Duration::from_millis(1));
    }

    #[test]
    fn a_partition_behind_the_leaders_high_watermark_asks_for_its_share_of_the_response() {
        let sizes = FetchSizes::default();
        assert_eq!(sizes.partition_max_bytes(false, 1), 1 << 20);
        assert_eq!(sizes.partition_max_bytes(true, 1), 10 << 20);
        assert_eq!(sizes.partition_max_bytes(true, 4), (10 << 20) / 4);
        assert_eq!(
            sizes.partition_max_bytes(true, 100),
            1 << 20,
            "never less than replica.fetch.max.bytes"
        );
    }

    /// Partition t-0 on real files under `dir`, default log config, a follower of broker 1 in
    /// leader epoch 1.
    async fn follower_of_broker_1(dir: &std::path::Path) -> Arc<Partition> {
        let log = crate::log::Log::open(
            Arc::new(crate::disk::FileDisk::new()),
            Arc::new(crate::clock::ManualClock::new(1_700_000_000_000)),
            dir.join("t-0"),
            crate::log::LogConfig::default(),
        )
        .await
        .unwrap();
        let partition = Arc::new(
            Partition::open_unassigned("t".into(), 0, log, 2)
                .await
                .unwrap(),
        );
        partition.become_follower(1, 1);
        partition
    }

    #[tokio::test]
    async fn a_far_behind_followers_background_sync_drops_what_it_synced_from_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let partition = follower_of_broker_1(dir.path()).await;
        let shared = shared_state();
        let key: Key = ("t".into(), 0);
        let mut followed = Followed::new(Arc::clone(&partition), uuid::Uuid::nil(), 1);
        followed.leader_high_watermark = Some(10_000);
        // 2 MiB of batches, 64 KiB each.
        let mut fetched = Vec::new();
        for i in 0..32u64 {
            let mut b = builder::simple(64, 1000, b'a' + i as u8, 1_700_000_000_000);
            b[..8].copy_from_slice(&((i * 64) as i64).to_be_bytes());
            fetched.extend_from_slice(&b);
        }
        partition.append_as_follower(&fetched, 1).await.unwrap();
        let segment = crate::log::segment::path(&dir.path().join("t-0"), 0, ".log");
        let cached = crate::disk::resident_pages(&segment);
        assert!(
            cached >= 400,
            "appended bytes are in the page cache ({cached} pages)"
        );

        followed.unsynced_bytes = SYNC_BEHIND_BYTES;
        assert!(sync_before_fetch(&shared, &key, &followed).await.unwrap());
        let sync = shared.background_syncs().remove(&key).unwrap();
        sync.await.unwrap();
        assert_eq!(partition.log.durable_end_offset(), 32 * 64);
        let left = crate::disk::resident_pages(&segment);
        assert!(left <= 2, "{left} pages of the synced range still cached");
        let disk = crate::disk::FileDisk::new();
        assert_eq!(
            crate::disk::read_file(&disk, &segment).await.unwrap(),
            fetched,
            "the bytes read back the same from the device"
        );
    }

    #[tokio::test]
    async fn a_follower_at_the_tail_whose_last_answer_was_full_asks_for_its_share_next() {
        let dir = tempfile::tempdir().unwrap();
        let partition = follower_of_broker_1(dir.path()).await;
        let full = batches(&[(0, 3)]);
        let mut shared = shared_state();
        // replica.fetch.max.bytes is one answer's size: that answer is a full one.
        shared.sizes = FetchSizes {
            partition_max_bytes: full.len() as u32,
            response_max_bytes: 100 * full.len() as u32,
        };
        let key: Key = ("t".into(), 0);
        let followed = Followed::new(Arc::clone(&partition), uuid::Uuid::nil(), 1);
        shared.partitions().insert(key.clone(), followed.clone());
        let fetchable = vec![(key.clone(), followed)];
        // The leader's high watermark is the answer's end: this replica is at the tail (an
        // ISR member), where its fetch offset counts.
        let answer = |records: Vec<u8>, high_watermark: i64| {
            kafka_protocol::messages::fetch_response::PartitionData::default()
                .with_high_watermark(high_watermark)
                .with_records(Some(records.into()))
        };

        let applied = apply_all(&shared, &fetchable, vec![(0, answer(full, 3))]).await;
        assert_eq!(applied, vec![0]);
        let now = shared.partitions()[&key].clone();
        assert!(!now.behind_high_watermark(partition.log.log_end_offset()));
        assert!(now.asks_for_share(partition.log.log_end_offset()));
        assert_eq!(
            shared.sizes.partition_max_bytes(now.asks_for_share(3), 1),
            100 * shared.sizes.partition_max_bytes as i32,
            "a full answer: the leader holds more, the next fetch asks for the response"
        );

        let short = batches(&[(3, 1)]);
        apply_all(&shared, &fetchable, vec![(0, answer(short, 4))]).await;
        let now = shared.partitions()[&key].clone();
        assert!(
            !now.asks_for_share(partition.log.log_end_offset()),
            "a short answer: the leader had no more, back to replica.fetch.max.bytes"
        );
    }

    #[test]
    fn a_batch_straddling_the_log_end_means_the_logs_diverged() {
        let all = batches(&[(0, 2), (2, 3)]);
        assert_eq!(records_to_append(&all, 3), Err(2));
    }
    /// A fetcher's shared state for one source, for the sync rule's tests.
    fn shared_state() -> Shared {
        Shared {
            local_id: 2,
            broker_epoch: Arc::new(AtomicI64::new(1)),
            fetch_max_wait: FETCH_MAX_WAIT,
            sizes: FetchSizes::default(),
            source: 1,
            addr: "127.0.0.1:1".into(),
            partitions: Mutex::new(BTreeMap::new()),
            background_syncs: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            stopped: AtomicBool::new(false),
            read_ahead_fetches: Arc::new(AtomicU64::new(0)),
        }
    }

    #[tokio::test]
    async fn a_follower_behind_the_high_watermark_syncs_beside_its_fetches_and_at_the_tail_before_them(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let partition = follower_of_broker_1(dir.path()).await;
        assert_eq!(partition.log.config().flush, FlushPolicy::Durable);
        let shared = shared_state();
        let key: Key = ("t".into(), 0);
        let mut followed = Followed::new(Arc::clone(&partition), uuid::Uuid::nil(), 1);
        // The leader answered a high watermark of 100: offsets below it count for nothing.
        followed.leader_high_watermark = Some(100);

        partition
            .append_as_follower(&batches(&[(0, 2)]), 1)
            .await
            .unwrap();
        assert!(!sync_before_fetch(&shared, &key, &followed).await.unwrap());
        assert_eq!(partition.log.durable_end_offset(), 0, "under the bound");

        // Past the bound: a sync starts, and it syncs the log end.
        followed.unsynced_bytes = SYNC_BEHIND_BYTES;
        assert!(sync_before_fetch(&shared, &key, &followed).await.unwrap());
        let sync = shared
            .background_syncs()
            .remove(&key)
            .expect("the sync runs beside the fetches");
        sync.await.unwrap();
        assert_eq!(partition.log.durable_end_offset(), 2);

        // One at a time: the next waits for the one before.
        partition
            .append_as_follower(&batches(&[(2, 2)]), 1)
            .await
            .unwrap();
        assert!(sync_before_fetch(&shared, &key, &followed).await.unwrap());
        partition
            .append_as_follower(&batches(&[(4, 2)]), 1)
            .await
            .unwrap();
        assert!(sync_before_fetch(&shared, &key, &followed).await.unwrap());
        assert!(
            partition.log.durable_end_offset() >= 4,
            "the second sync did not wait for the first"
        );
        let sync = shared.background_syncs().remove(&key).unwrap();
        sync.await.unwrap();
        assert_eq!(partition.log.durable_end_offset(), 6);

        // At the leader's high watermark the fetch offset counts: synced before it is sent.
        partition
            .append_as_follower(&batches(&[(6, 4)]), 1)
            .await
            .unwrap();
        followed.leader_high_watermark = Some(10);
        followed.unsynced_bytes = 0;
        assert!(sync_before_fetch(&shared, &key, &followed).await.unwrap());
        assert_eq!(partition.log.durable_end_offset(), 10);
        assert!(shared.background_syncs().is_empty());
    }
}
