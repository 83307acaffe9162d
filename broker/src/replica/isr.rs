//! The leader's side of the ISR: which followers leave it and which join, and the task that
//! asks the controller for each change (Kafka's `isr-expiration` task, `Partition.maybeShrinkIsr`
//! and `maybeExpandIsr`, with changes sent as AlterPartition, KIP-497).
//!
//! - **Shrink**: a member whose last catch-up with the leader's log end is older than
//!   `replica.lag.time.max.ms` leaves (a stopped, partitioned or slow follower).
//! - **Expand**: a follower joins once it holds everything below the high watermark and the
//!   current leader epoch's start (KIP-320: a replica that missed this epoch's first batches
//!   never counts toward an acknowledgement).
//! - The leader never changes its ISR itself: it sends the whole new ISR with the leader and
//!   partition epochs of the image it decided on, and takes the change when the committed image
//!   reaches the partition (the catalog's `apply_role`). A change decided on a stale image is
//!   refused (INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH) and decided again from the newer one.
//! - One AlterPartition request in flight per broker, as Kafka's `AlterPartitionManager`: the
//!   changes decided while it is in flight are queued, one per partition (a newer decision
//!   replaces an unsent one), and go together in the next request once it is answered. A
//!   partition whose change is in flight decides again only after its answer. After a
//!   failover a leader changes many ISRs at once: one request per partition queued them
//!   behind one another on the controller connection and cost a metadata commit each.
//! - While an expansion is queued or in flight the joiners hold the high watermark back as
//!   members do (Kafka's maximal ISR, `Partition::set_pending_isr_expansion`): otherwise the
//!   HW could pass a joiner's log end before the controller lets it in, and the joiner, once
//!   elected, would lack records acknowledged with acks=all.
//!
//! When: every `replica.lag.time.max.ms / 2` at a fixed rate (Kafka's period), and whenever a
//! follower's fetch wakes the task ([`IsrManager::follower_may_join`]), which then only looks
//! for followers that can join, as Kafka checks expansion on every follower fetch. The wake-ups
//! never postpone the periodic check (`Schedule`).
//!
//! Broker epochs (KIP-903): a follower joins only if its last fetch came from the registration
//! the leader's image holds for it (a restarted follower may have lost what its previous
//! incarnation fetched, so that progress is not its own), and each member is named with the
//! broker epoch of its last fetch, so the controller refuses a member whose incarnation is gone
//! by the time the request arrives. Fenced, shutting-down and unregistered brokers never join
//! (KIP-841).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use uuid::Uuid;

use super::fetcher::monotonic_now;
use super::state::{BrokerId, ReplicaState};
use crate::broker::Broker;
use crate::controller::image::PartitionImage;
use crate::controller::request::{
    AlterPartitionError, AlterPartitionItem, ControllerReply, ControllerRequest, IsrMember,
};
use crate::partition::Partition;
use crate::planted::{self, Bug};

/// What the leader should ask for now, from its replica state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    /// The whole new ISR, in id order, the leader included.
    pub isr: Vec<BrokerId>,
    /// Members leaving: out of sync longer than `replica.lag.time.max.ms`.
    pub leaving: Vec<BrokerId>,
    /// Followers joining: caught up to the high watermark and the leader epoch's start.
    pub joining: Vec<BrokerId>,
}

/// The ISR members of the leader `state` that have not caught up with its log end for longer
/// than `max_lag_ms` at `now_ms`, in id order. A member not heard from since this leadership
/// began (at `leading_since_ms`) counts as caught up then, as Kafka resets an ISR member's
/// `lastCaughtUpTimeMs` when it becomes leader: a new leader gives its ISR a full lag time to
/// fetch before judging it.
pub fn out_of_sync_members(
    state: &ReplicaState,
    leading_since_ms: i64,
    now_ms: i64,
    max_lag_ms: i64,
) -> Vec<BrokerId> {
    assert!(state.is_leader(), "only a leader judges its ISR");
    if planted::is(Bug::IsrShrinkDisabled) {
        return vec![];
    }
    state
        .isr()
        .iter()
        .copied()
        .filter(|&r| r != state.local_id())
        .filter(|r| {
            let caught_up_ms = state.followers()[r]
                .last_caught_up_ms
                .unwrap_or(leading_since_ms);
            now_ms.saturating_sub(caught_up_ms) > max_lag_ms
        })
        .collect()
}

/// The ISR change the leader `state` (leading since `leading_since_ms`) wants at `now_ms`:
/// members out of sync longer than `max_lag_ms` leave (unless `expand_only`), followers that
/// can join join: caught up, and fetching as the registration `eligible` holds for them
/// (the broker epochs of the brokers neither fenced nor shutting down, from the leader's
/// image). `None` when the ISR stays as it is, or when `state` does not lead.
pub fn wanted_isr_change(
    state: &ReplicaState,
    leading_since_ms: i64,
    now_ms: i64,
    max_lag_ms: i64,
    expand_only: bool,
    eligible: &BTreeMap<BrokerId, i64>,
) -> Option<IsrChange> {
    if !state.is_leader() {
        return None;
    }
    let leaving = if expand_only {
        Vec::new()
    } else {
        out_of_sync_members(state, leading_since_ms, now_ms, max_lag_ms)
    };
    let joining: Vec<BrokerId> = state
        .followers()
        .keys()
        .copied()
        .filter(|r| {
            !state.isr().contains(r)
                && state.can_join_isr(*r)
                && state.broker_epoch_eligible(*r, eligible.get(r).copied())
        })
        .collect();
    if leaving.is_empty() && joining.is_empty() {
        return None;
    }
    let isr: BTreeSet<BrokerId> = state
        .isr()
        .iter()
        .copied()
        .filter(|r| !leaving.contains(r))
        .chain(joining.iter().copied())
        .collect();
    assert!(
        isr.contains(&state.local_id()),
        "the leader never leaves its own ISR"
    );
    Some(IsrChange {
        isr: isr.into_iter().collect(),
        leaving,
        joining,
    })
}

/// A partition, by topic id and index.
type PartitionKey = (Uuid, i32);

/// The ISR changes waiting for the controller (Kafka's `AlterPartitionManager`): at most one
/// request in flight; the changes proposed meanwhile wait, one per partition, and all go in
/// the next request. Generic over what a change carries, so its rules are tested alone.
#[derive(Debug)]
struct AlterQueue<T> {
    /// Proposed and not sent yet, one per partition.
    unsent: BTreeMap<PartitionKey, T>,
    /// The partitions of the request in flight, if one is.
    in_flight: Option<BTreeSet<PartitionKey>>,
}

impl<T> Default for AlterQueue<T> {
    fn default() -> Self {
        AlterQueue {
            unsent: BTreeMap::new(),
            in_flight: None,
        }
    }
}

impl<T> AlterQueue<T> {
    /// Queues `change` for `key`, replacing an unsent one (the newer decision saw a newer
    /// state). Refused (false) while the partition's change is in flight: it is decided again
    /// from the answer.
    fn propose(&mut self, key: PartitionKey, change: T) -> bool {
        if self.is_in_flight(key) {
            return false;
        }
        self.unsent.insert(key, change);
        true
    }

    fn is_in_flight(&self, key: PartitionKey) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|keys| keys.contains(&key))
    }

    /// The next request, every unsent change in it, unless one is in flight or none waits.
    fn next_request(&mut self) -> Option<Vec<(PartitionKey, T)>> {
        if self.in_flight.is_some() || self.unsent.is_empty() {
            return None;
        }
        let changes: Vec<(PartitionKey, T)> =
            std::mem::take(&mut self.unsent).into_iter().collect();
        self.in_flight = Some(changes.iter().map(|(key, _)| *key).collect());
        Some(changes)
    }

    /// The request in flight is answered (or failed): its partitions may propose again.
    fn answered(&mut self) {
        assert!(self.in_flight.is_some(), "an answer to a request in flight");
        self.in_flight = None;
    }
}

/// A change waiting in the queue: the request entry and the partition it changes.
struct QueuedChange {
    partition: Arc<Partition>,
    item: AlterPartitionItem,
}

/// The broker's ISR manager: what is in flight, and the wake-up a follower's fetch gives.
#[derive(Default)]
pub struct IsrManager {
    /// The changes for the controller: queued, and the request in flight.
    queue: Mutex<AlterQueue<QueuedChange>>,
    /// Partitions whose last expansion was refused: a fetch's wake-up does not ask again
    /// before the next periodic check (a follower that cannot join, say one shutting down,
    /// would otherwise cost a request per fetch).
    refused: Mutex<HashSet<PartitionKey>>,
    /// Per partition this broker leads: the leader epoch and when this manager first saw it
    /// lead in it (the start of the members' lag clock, see [`out_of_sync_members`]).
    leading_since: Mutex<std::collections::HashMap<PartitionKey, (i32, i64)>>,
    /// Set by a follower's fetch that may let it join.
    wake: tokio::sync::Notify,
    /// Partition changes the controller committed (or found already made), since start.
    changes: std::sync::atomic::AtomicU64,
    /// AlterPartition requests sent, since start.
    requests: std::sync::atomic::AtomicU64,
}

impl IsrManager {
    /// A follower fetched and may now be able to join an ISR: check expansions soon. Cheap;
    /// called from the fetch path.
    pub fn follower_may_join(&self) {
        // One stored permit: wake-ups while a check runs are not lost, nor do they pile up.
        self.wake.notify_one();
    }

    /// ISR changes this broker asked for and the controller committed, since start.
    pub fn changes_committed(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// AlterPartition requests this broker sent, since start (each with one or more
    /// partitions' changes).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, AlterQueue<QueuedChange>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When this broker began leading `key` in `leader_epoch`, as first seen at `now_ms`.
    fn leading_since(&self, key: PartitionKey, leader_epoch: i32, now_ms: i64) -> i64 {
        let mut leading = self.leading_since.lock().unwrap_or_else(|e| e.into_inner());
        let entry = leading.entry(key).or_insert((leader_epoch, now_ms));
        if entry.0 != leader_epoch {
            *entry = (leader_epoch, now_ms);
        }
        entry.1
    }

    /// Forgets the leaderships not in `led` (a full pass saw every partition this broker leads).
    fn retain_leaderships(&self, led: &BTreeSet<PartitionKey>) {
        self.leading_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| led.contains(key));
    }

    fn lock_refused(&self) -> std::sync::MutexGuard<'_, HashSet<PartitionKey>> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which check the ISR manager runs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// The periodic one: members leave, followers join, refusals are forgotten.
    Full,
    /// A follower's fetch woke the manager: only followers that can join are looked for.
    ExpandOnly,
}

/// When the ISR manager checks: a full check at a fixed rate, every `replica.lag.time.max.ms
/// / 2` (Kafka schedules its `isr-expiration` task so), and an expansion-only check whenever a
/// follower's fetch wakes it in between. A wake-up never postpones the next full check: were
/// its timer restarted on each, a follower fetching more often than the period (every
/// follower at the leader's log end, parked fetches ending every `replica.fetch.wait.max.ms`)
/// would starve it, and with it every shrink and every retry of a refused expansion.
struct Schedule {
    period: Duration,
    next_full: tokio::time::Instant,
}

impl Schedule {
    fn new(period: Duration) -> Schedule {
        Schedule {
            period,
            next_full: monotonic_now() + period,
        }
    }

    /// Waits for the next check: the full one once it is due (first when both are), else the
    /// next wake-up from `wake`.
    async fn next(&mut self, wake: &tokio::sync::Notify) -> Check {
        // A due full check goes first without polling the timer: the simulator's `sleep_until`
        // waits at least 1 ms even for a deadline already past, so a wake-up always ready
        // would otherwise win every time there.
        let check = if monotonic_now() >= self.next_full {
            Check::Full
        } else {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(self.next_full) => Check::Full,
                () = wake.notified() => Check::ExpandOnly,
            }
        };
        if check == Check::Full {
            // From now, not from the missed deadline: a broker stalled past several periods
            // runs one full check, not a burst of them.
            self.next_full = monotonic_now() + self.period;
        }
        check
    }
}

/// Runs the ISR manager of `broker` until it begins to shut down (a stopping broker hands its
/// leaderships away) or is dropped.
pub(crate) async fn run(broker: Weak<Broker>) {
    let Some(strong) = broker.upgrade() else {
        return;
    };
    let period = Duration::from_millis((strong.config.replica_lag_time_max_ms / 2).max(1));
    let manager = Arc::clone(strong.isr_manager());
    drop(strong);
    let mut schedule = Schedule::new(period);
    loop {
        // Holds no strong reference while waiting: a dropped broker ends this task.
        let check = schedule.next(&manager.wake).await;
        let Some(strong) = broker.upgrade() else {
            return;
        };
        if strong.is_stopping() {
            return;
        }
        if check == Check::Full {
            manager.lock_refused().clear();
        }
        check_all(&strong, check == Check::ExpandOnly);
    }
}

/// Looks at every partition this broker leads and sends the AlterPartitions they need.
fn check_all(broker: &Arc<Broker>, expand_only: bool) {
    let image = broker.image();
    let now_ms = broker.clock().now_ms();
    let max_lag_ms = i64::try_from(broker.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
    let me = broker.config.node_id;
    let manager = broker.isr_manager();
    let eligible = eligible_brokers(&image);
    let mut led = BTreeSet::new();
    for topic in broker.topics() {
        let Some(wanted) = image.topic(&topic.name).filter(|t| t.id == topic.id) else {
            continue;
        };
        for partition in &topic.partitions {
            let Some(assignment) = usize::try_from(partition.index)
                .ok()
                .and_then(|i| wanted.partitions.get(i))
            else {
                continue;
            };
            if assignment.leader != me {
                continue;
            }
            let key = (topic.id, partition.index);
            led.insert(key);
            let leading_since_ms = manager.leading_since(key, assignment.leader_epoch, now_ms);
            if expand_only && manager.lock_refused().contains(&key) {
                continue;
            }
            let state = partition.replica_state();
            if !reflects(&state, assignment) {
                // The catalog has not applied this image to the partition yet: decide once it
                // has, so the request carries the epochs the state was judged under.
                continue;
            }
            let Some(change) = wanted_isr_change(
                &state,
                leading_since_ms,
                now_ms,
                max_lag_ms,
                expand_only,
                &eligible,
            ) else {
                continue;
            };
            let mut queue = manager.lock_queue();
            if queue.is_in_flight(key) {
                continue;
            }
            // Kafka's maximal ISR: from now until the answer, the joiners hold the high
            // watermark back as members do, so it cannot pass what they hold before the
            // controller lets them in.
            if !change.joining.is_empty() && !partition.set_pending_isr_expansion(&change.joining) {
                // No longer the leader: nothing to ask.
                continue;
            }
            log_change(partition, &state, assignment, &change, now_ms);
            let item = AlterPartitionItem {
                topic_id: topic.id,
                partition: partition.index,
                leader_epoch: assignment.leader_epoch,
                partition_epoch: assignment.partition_epoch,
                new_isr: change
                    .isr
                    .iter()
                    .map(|&id| IsrMember {
                        id,
                        broker_epoch: if id == me {
                            broker.broker_epoch()
                        } else {
                            // -1 for a member not heard from in this leadership (Kafka's
                            // `addBrokerEpochToIsr`): if it died meanwhile, the controller
                            // removed it and the partition epoch refuses this request.
                            state.followers()[&id].broker_epoch.unwrap_or(-1)
                        },
                    })
                    .collect(),
            };
            let queued = queue.propose(
                key,
                QueuedChange {
                    partition: Arc::clone(partition),
                    item,
                },
            );
            assert!(queued, "checked not in flight under the same lock");
        }
    }
    if !expand_only {
        manager.retain_leaderships(&led);
    }
    // Everything this check decided goes in one request (or waits for the one in flight).
    maybe_send(broker);
}

/// Sends the queued changes in one AlterPartition unless a request is in flight (its answer
/// sends what queued meanwhile).
fn maybe_send(broker: &Arc<Broker>) {
    let manager = broker.isr_manager();
    let Some(changes) = manager.lock_queue().next_request() else {
        return;
    };
    manager
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(send(Arc::clone(broker), changes));
}

/// The brokers a follower may join an ISR as (neither fenced nor shutting down), with the broker
/// epoch of their registration in `image`.
pub fn eligible_brokers(image: &crate::controller::image::ClusterImage) -> BTreeMap<BrokerId, i64> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.shutting_down)
        .map(|b| (b.id, b.epoch))
        .collect()
}

/// Does the partition's replica state show `assignment` (this broker leading in its epoch
/// with its ISR)?
fn reflects(state: &ReplicaState, assignment: &PartitionImage) -> bool {
    state.is_leader()
        && state.leader_epoch() == assignment.leader_epoch
        && state
            .isr()
            .iter()
            .copied()
            .eq(assignment.isr.iter().copied().collect::<BTreeSet<_>>())
}

fn log_change(
    partition: &Partition,
    state: &ReplicaState,
    assignment: &PartitionImage,
    change: &IsrChange,
    now_ms: i64,
) {
    if !change.leaving.is_empty() {
        let lagging: Vec<String> = change
            .leaving
            .iter()
            .map(|r| {
                let p = state.followers()[r];
                format!(
                    "(brokerId: {r}, endOffset: {}, lastCaughtUpTimeMs: {:?}, lagMs: {:?})",
                    p.log_end_offset,
                    p.last_caught_up_ms,
                    p.last_caught_up_ms.map(|t| now_ms - t)
                )
            })
            .collect();
        tracing::info!(partition = ?partition, from = ?assignment.isr, to = ?change.isr,
            high_watermark = state.high_watermark(), log_end_offset = state.log_end_offset(),
            out_of_sync = %lagging.join(", "), "shrinking the ISR");
    }
    if !change.joining.is_empty() {
        tracing::info!(partition = ?partition, from = ?assignment.isr, to = ?change.isr,
            joining = ?change.joining, high_watermark = state.high_watermark(),
            "expanding the ISR");
    }
}

/// Sends one AlterPartition with `changes` and takes each partition's outcome: a committed
/// change is applied to the partitions at once; a refusal waits for the next check, which
/// decides from the newer image. Then the changes queued meanwhile go.
async fn send(broker: Arc<Broker>, changes: Vec<(PartitionKey, QueuedChange)>) {
    let request = ControllerRequest::AlterPartition {
        broker: broker.config.node_id,
        broker_epoch: broker.broker_epoch(),
        partitions: changes.iter().map(|(_, c)| c.item.clone()).collect(),
    };
    let outcome = broker.plane().submit(request).await;
    let manager = broker.isr_manager();
    match outcome {
        Ok(ControllerReply::AlterPartition(outcomes)) => {
            let mut committed = false;
            for (key, change) in &changes {
                let partition = &change.partition;
                let result = outcomes
                    .iter()
                    .find(|o| (o.topic_id, o.partition) == *key)
                    .map(|o| &o.result);
                match result {
                    Some(Ok(changed)) => {
                        committed = true;
                        manager
                            .changes
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(partition = ?partition, isr = ?changed.isr,
                            partition_epoch = changed.partition_epoch, "ISR change committed");
                    }
                    Some(Err(e)) => {
                        match e {
                            // Decided on an older image: the next check decides again from the
                            // newer one.
                            AlterPartitionError::InvalidUpdateVersion { .. }
                            | AlterPartitionError::FencedLeaderEpoch { .. }
                            | AlterPartitionError::NotController => {
                                tracing::info!(partition = ?partition, error = %e,
                                    "ISR change refused; deciding again from the newer image")
                            }
                            AlterPartitionError::IneligibleReplica(_)
                            | AlterPartitionError::UnknownTopicOrPartition
                            | AlterPartitionError::InvalidRequest(_) => {
                                tracing::info!(partition = ?partition, error = %e, "ISR change refused")
                            }
                        }
                        // Not committed: the joiners stop holding the high watermark back.
                        partition.set_pending_isr_expansion(&[]);
                        manager.lock_refused().insert(*key);
                    }
                    None => {
                        // Not answered for this partition (Kafka re-sends it): decided again
                        // at the next check; the joiners keep holding the high watermark back.
                        tracing::warn!(partition = ?partition,
                            "ISR change missing from the AlterPartition answer; retried at the next check");
                        manager.lock_refused().insert(*key);
                    }
                }
            }
            if committed {
                // This node's image already holds them (submit answers once applied here).
                if let Err(e) = broker.catch_up().await {
                    tracing::debug!(%e, "image not fully applied; the follower task retries");
                }
            }
        }
        Ok(other) => panic!("the controller answered AlterPartition with {other:?}"),
        Err(e) => {
            // The whole request refused (a stale broker epoch) or not answered (maybe
            // committed): the joiners keep holding the high watermark back until the next
            // check asks again and gets a definite answer.
            tracing::info!(partitions = changes.len(), error = %e,
                "ISR changes not answered; retried at the next check");
            let mut refused = manager.lock_refused();
            refused.extend(changes.iter().map(|(key, _)| *key));
        }
    }
    manager.lock_queue().answered();
    maybe_send(&broker);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{HighWatermarkBasis, LocalLog};

    const ME: BrokerId = 1;
    const LAG_MS: i64 = 30_000;

    /// Each broker's registered epoch: broker `r` is in epoch `10 * r`.
    fn registered() -> BTreeMap<BrokerId, i64> {
        [(1, 10), (2, 20), (3, 30)].into_iter().collect()
    }

    /// A fetch of follower `r` from its registered incarnation.
    fn fetch(s: &mut ReplicaState, r: BrokerId, end: u64, now_ms: i64) {
        let epoch = registered()[&r];
        s.check_follower_broker_epoch(r, epoch, Some(epoch))
            .unwrap();
        s.update_follower_log_end(r, end, now_ms);
    }

    fn change_at(
        s: &ReplicaState,
        since_ms: i64,
        now_ms: i64,
        lag_ms: i64,
        expand_only: bool,
    ) -> Option<IsrChange> {
        wanted_isr_change(s, since_ms, now_ms, lag_ms, expand_only, &registered())
    }

    fn log(end: u64) -> LocalLog {
        LocalLog {
            log_end_offset: end,
            durable_end_offset: end,
        }
    }

    /// Broker 1 leads replicas [1, 2, 3] with `isr`, its log at 10, every follower caught up
    /// at time 1000.
    fn leader(isr: &[BrokerId]) -> ReplicaState {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(0));
        s.become_leader(3, &[1, 2, 3], isr);
        s.update_local_log(log(10));
        fetch(&mut s, 2, 10, 1_000);
        fetch(&mut s, 3, 10, 1_000);
        s.maybe_increment_high_watermark();
        s
    }

    #[test]
    fn an_isr_whose_members_keep_up_stays_as_it_is() {
        let s = leader(&[1, 2, 3]);
        assert_eq!(change_at(&s, 0, 1_000 + LAG_MS, LAG_MS, false), None);
    }

    #[test]
    fn a_member_not_caught_up_for_longer_than_the_lag_time_leaves() {
        let mut s = leader(&[1, 2, 3]);
        s.update_local_log(log(20));
        fetch(&mut s, 2, 20, 20_000);
        fetch(&mut s, 3, 15, 20_000);
        assert_eq!(change_at(&s, 0, 1_000 + LAG_MS, LAG_MS, false), None);
        assert_eq!(
            change_at(&s, 0, 1_001 + LAG_MS, LAG_MS, false),
            Some(IsrChange {
                isr: vec![1, 2],
                leaving: vec![3],
                joining: vec![],
            })
        );
        assert_eq!(
            change_at(&s, 0, 1_001 + LAG_MS, LAG_MS, true),
            None,
            "a fetch's wake-up only looks for followers that can join"
        );
    }

    #[test]
    fn a_follower_joins_once_it_reaches_the_high_watermark_and_the_epoch_start() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(20));
        // Broker 1 becomes leader at log end 20 (the epoch starts there) with ISR {1}.
        s.become_leader(4, &[1, 2, 3], &[1]);
        s.maybe_increment_high_watermark();
        s.update_local_log(log(30));
        s.maybe_increment_high_watermark();
        assert_eq!(s.high_watermark(), 30);
        fetch(&mut s, 2, 25, 100);
        fetch(&mut s, 3, 30, 100);
        assert_eq!(
            change_at(&s, 0, 100, LAG_MS, true),
            Some(IsrChange {
                isr: vec![1, 3],
                leaving: vec![],
                joining: vec![3],
            }),
            "2 is below the high watermark"
        );
        fetch(&mut s, 2, 30, 101);
        assert_eq!(
            change_at(&s, 0, 101, LAG_MS, false).unwrap().isr,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_follower_below_the_leader_epochs_start_does_not_join_even_at_the_high_watermark() {
        // The durable policy, nothing synced: the high watermark stays at 0 while the new
        // leader's epoch starts at its log end, 20.
        let mut s = ReplicaState::new(
            ME,
            HighWatermarkBasis::DurableEnd,
            LocalLog {
                log_end_offset: 20,
                durable_end_offset: 0,
            },
        );
        s.become_follower(3, 2);
        s.become_leader(4, &[1, 2], &[1]);
        fetch(&mut s, 2, 15, 100);
        assert_eq!(s.high_watermark(), 0);
        assert_eq!(change_at(&s, 0, 100, LAG_MS, false), None);
        fetch(&mut s, 2, 20, 101);
        assert_eq!(
            change_at(&s, 0, 101, LAG_MS, false).unwrap().joining,
            vec![2]
        );
    }

    #[test]
    fn a_new_leader_gives_its_isr_a_full_lag_time_before_judging_it() {
        // Elected at 50_000 with ISR [1, 2, 3]; no follower has fetched from it yet.
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(10));
        s.become_leader(7, &[1, 2, 3], &[1, 2, 3]);
        let since = 50_000;
        assert_eq!(
            change_at(&s, since, since + LAG_MS, LAG_MS, false),
            None,
            "members not heard from yet count as caught up when the leadership began"
        );
        fetch(&mut s, 2, 10, since + 100);
        let change = change_at(&s, since, since + LAG_MS + 1, LAG_MS, false).unwrap();
        assert_eq!((change.isr, change.leaving), (vec![1, 2], vec![3]));
    }

    #[test]
    fn members_leave_and_followers_join_in_one_change() {
        let mut s = leader(&[1, 2]);
        fetch(&mut s, 3, 10, 40_000);
        let change = change_at(&s, 0, 1_001 + LAG_MS, LAG_MS, false).unwrap();
        assert_eq!(change.isr, vec![1, 3]);
        assert_eq!((change.leaving, change.joining), (vec![2], vec![3]));
    }

    #[test]
    fn a_restarted_follower_joins_only_on_the_progress_of_its_new_incarnation() {
        // Seed 4 of replication-swarm: follower 3 had fetched to 10 before it restarted with
        // less; progress its dead incarnation made must not let the new one join.
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(10));
        s.become_leader(4, &[1, 2, 3], &[1, 2]);
        fetch(&mut s, 2, 10, 100);
        s.check_follower_broker_epoch(3, 30, Some(30)).unwrap();
        s.update_follower_log_end(3, 10, 100);
        s.maybe_increment_high_watermark();
        let restarted: BTreeMap<BrokerId, i64> = [(1, 10), (2, 20), (3, 31)].into_iter().collect();
        assert_eq!(
            wanted_isr_change(&s, 0, 101, LAG_MS, true, &restarted),
            None,
            "the last fetch came from broker epoch 30, the registration is 31"
        );
        assert_eq!(
            s.check_follower_broker_epoch(3, 30, Some(31)),
            Err(crate::replica::state::StaleBrokerEpoch {
                replica: 3,
                got: 30,
                current: 31
            }),
            "a delayed fetch of the dead incarnation is refused"
        );
        s.check_follower_broker_epoch(3, 31, Some(31)).unwrap();
        s.update_follower_log_end(3, 10, 102);
        assert_eq!(
            wanted_isr_change(&s, 0, 102, LAG_MS, true, &restarted)
                .unwrap()
                .joining,
            vec![3]
        );
        let fenced: BTreeMap<BrokerId, i64> = [(1, 10), (2, 20)].into_iter().collect();
        assert_eq!(
            wanted_isr_change(&s, 0, 102, LAG_MS, true, &fenced),
            None,
            "a fenced or shutting-down broker never joins"
        );
    }

    /// The bug (replica-never-rejoined in seven replication scenarios): the periodic check's
    /// timer restarted on every wake-up, and a follower at the leader's log end wakes the
    /// manager on each fetch, more often than the period. The full check never ran while such
    /// fetches went on, so a refused expansion was never retried (the follower stayed outside
    /// the ISR for good) and no lagging member left meanwhile.
    #[tokio::test]
    async fn wake_ups_from_fetches_more_frequent_than_the_period_do_not_postpone_the_full_check() {
        let wake = tokio::sync::Notify::new();
        let mut schedule = Schedule::new(Duration::from_millis(20));
        let give_up = monotonic_now() + Duration::from_secs(30);
        let mut expand_only = 0;
        loop {
            // A fetch every millisecond, each waking the manager.
            tokio::time::sleep(Duration::from_millis(1)).await;
            wake.notify_one();
            match schedule.next(&wake).await {
                Check::Full => break,
                Check::ExpandOnly => expand_only += 1,
            }
            assert!(
                monotonic_now() < give_up,
                "no full check after {expand_only} wake-ups"
            );
        }
    }

    fn key(index: i32) -> PartitionKey {
        (Uuid::from_u128(7), index)
    }

    #[test]
    fn the_changes_decided_together_go_in_one_request_and_those_decided_meanwhile_in_the_next() {
        let mut queue = AlterQueue::default();
        for index in 0..50 {
            assert!(queue.propose(key(index), format!("shrink {index}")));
        }
        let first = queue.next_request().expect("one request");
        assert_eq!(first.len(), 50, "every partition's change in it");
        assert!(
            first
                .iter()
                .enumerate()
                .all(|(i, (k, _))| *k == key(i as i32)),
            "one entry per partition"
        );
        // While it is in flight: no second request; a partition in it does not propose again;
        // others queue, the newest decision per partition winning.
        assert!(!queue.propose(key(3), "again".to_string()));
        assert!(queue.propose(key(60), "expand 60 with 2".to_string()));
        assert!(queue.propose(key(61), "shrink 61".to_string()));
        assert!(queue.propose(key(60), "expand 60 with 2 and 3".to_string()));
        assert!(queue.next_request().is_none(), "one request in flight");
        queue.answered();
        assert!(
            queue.propose(key(3), "again".to_string()),
            "answered: free again"
        );
        let second = queue.next_request().expect("the queued ones");
        assert_eq!(
            second,
            vec![
                (key(3), "again".to_string()),
                (key(60), "expand 60 with 2 and 3".to_string()),
                (key(61), "shrink 61".to_string()),
            ]
        );
        queue.answered();
        assert!(queue.next_request().is_none(), "nothing left");
    }

    #[test]
    fn a_follower_or_an_offline_replica_wants_no_change() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(10));
        assert_eq!(change_at(&s, 0, 0, LAG_MS, false), None);
        s.become_follower(1, 2);
        assert_eq!(change_at(&s, 0, 0, LAG_MS, false), None);
    }
}
