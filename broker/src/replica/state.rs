//! [`ReplicaState`]: what one broker knows about its replica of one partition, as plain data.
//!
//! No I/O, no clock, no locks: every input (the local log's offsets, a follower's fetch, the
//! time) is an argument, so each step is testable alone and the simulator can replay it. The
//! partition feeds it and serves reads from it; replication (followers fetching, ISR changes
//! through the controller) drives it.
//!
//! Kafka's rules, as `Partition.scala` and `UnifiedLog` keep them:
//! - The **leader epoch** only rises. A broker told an older epoch than it has was fenced: that
//!   is a bug in whoever told it, not a state to enter.
//! - The **high watermark** (HW) is distinct from the **log end offset** (LEO): the HW is the
//!   offset below which every in-sync replica holds the data, the LEO where the next append goes.
//!   HW ≤ LEO always. On a leader the HW is the minimum LEO over the ISR and never goes back
//!   while it leads; on a follower it is the leader's HW, capped by the local LEO, and falls
//!   with a truncation.
//! - What counts as a replica's LEO for the HW depends on the flush policy ([`HighWatermarkBasis`]):
//!   under the durable policy only synced offsets count, so nothing a consumer saw can vanish
//!   when every replica loses power at once.
//! - The leader is always in its own ISR.
//! - With eligible leader replicas (KIP-966) the leader's HW moves only while the ISR has at
//!   least `min.insync.replicas` members: a replica that leaves a smaller ISR then holds
//!   everything committed, so the controller may elect it once the ISR is empty.

use std::collections::{BTreeMap, BTreeSet};

/// A broker's node id.
pub type BrokerId = i32;

/// What this broker is for the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Takes produces, serves consumers up to the HW, tracks its followers.
    Leader,
    /// Copies the leader's log; its HW comes from the leader.
    Follower { leader: BrokerId },
    /// The local log cannot be served (a disk failure); nothing is read or written.
    Offline,
}

/// Which of the local log's ends counts as this replica's LEO when the HW is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HighWatermarkBasis {
    /// Every appended batch counts (Kafka's default: replication is the durability).
    LogEnd,
    /// Only synced batches count (the durable flush policy).
    DurableEnd,
}

/// The local log's offsets, as the log last published them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalLog {
    /// The next offset the log will hold.
    pub log_end_offset: u64,
    /// Every offset below this is synced.
    pub durable_end_offset: u64,
}

/// A follower as the leader sees it, from its fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's LEO (as it counts for the HW), from its last fetch.
    pub log_end_offset: u64,
    /// The last time the follower had caught up with the leader's LEO; `None` if never.
    pub last_caught_up_ms: Option<i64>,
    /// When the follower last fetched, and the leader's LEO then (Kafka's
    /// `lastFetchTimeMs` / `lastFetchLeaderLogEndOffset`).
    pub last_fetch_ms: Option<i64>,
    pub leader_log_end_at_last_fetch: u64,
    /// The broker epoch (KIP-903) of the follower's incarnation that sent its last fetch in
    /// this leadership: `None` before any; -1 from a fetch that does not say.
    pub broker_epoch: Option<i64>,
}

/// A follower's fetch came from an older incarnation of the broker than the leader knows (a
/// request of a dead process, delayed in the network). Kafka's NOT_LEADER_OR_FOLLOWER.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fetch of broker {replica} in broker epoch {got}, older than its epoch {current}")]
pub struct StaleBrokerEpoch {
    pub replica: BrokerId,
    pub got: i64,
    pub current: i64,
}

/// One broker's replica of one partition. See the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    local_id: BrokerId,
    role: Role,
    leader_epoch: i32,
    /// Where the current leader epoch started in the log (KIP-320: a follower joins the ISR
    /// only once it holds this much of the leader's epoch).
    leader_epoch_start_offset: u64,
    high_watermark: u64,
    local: LocalLog,
    basis: HighWatermarkBasis,
    /// The other replicas, as the leader sees them; empty unless leading.
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// The in-sync replicas, this broker included, as the leader last had them accepted.
    isr: BTreeSet<BrokerId>,
    /// Followers the leader asked the controller to add to the ISR, not yet answered. They
    /// count for the HW meanwhile (Kafka's maximal ISR, KIP-497): were the HW to pass a
    /// joiner's LEO before the change commits, the joiner could be elected without
    /// acknowledged data.
    pending_joiners: BTreeSet<BrokerId>,
    /// Set while the log is failed or being recovered (the role is then `Offline`): the role to
    /// resume once it is recovered in place; `Offline` if it had never been told one. A role
    /// given meanwhile (the catalog applies every new image) replaces it.
    resume_as: Option<Role>,
    /// KIP-966's rule, `Some(min.insync.replicas)` with eligible leader replicas on: the HW
    /// stands still while the ISR is smaller (Kafka's `maybeIncrementLeaderHW`).
    min_isr_for_high_watermark: Option<usize>,
}

impl ReplicaState {
    /// A replica that has not been told its role yet: offline, epoch -1 (Kafka's "no epoch"),
    /// HW 0 (the log's recovered HW is the partition's business).
    pub fn new(local_id: BrokerId, basis: HighWatermarkBasis, local: LocalLog) -> ReplicaState {
        assert!(local.durable_end_offset <= local.log_end_offset);
        ReplicaState {
            local_id,
            role: Role::Offline,
            leader_epoch: -1,
            leader_epoch_start_offset: 0,
            high_watermark: 0,
            local,
            basis,
            followers: BTreeMap::new(),
            isr: BTreeSet::new(),
            pending_joiners: BTreeSet::new(),
            resume_as: None,
            min_isr_for_high_watermark: None,
        }
    }

    /// The single-broker partition of today: leader of itself, ISR = {self}, HW = what this
    /// broker's own log counts (its log end, or its durable end under the durable policy).
    pub fn sole_leader(
        local_id: BrokerId,
        leader_epoch: i32,
        basis: HighWatermarkBasis,
        local: LocalLog,
    ) -> ReplicaState {
        let mut state = ReplicaState::new(local_id, basis, local);
        state.become_leader(leader_epoch, &[local_id], &[local_id]);
        state.maybe_increment_high_watermark();
        state
    }

    pub fn local_id(&self) -> BrokerId {
        self.local_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn leader_epoch_start_offset(&self) -> u64 {
        self.leader_epoch_start_offset
    }

    /// The offset below which consumers may read.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> u64 {
        self.local.log_end_offset
    }

    pub fn local_log(&self) -> LocalLog {
        self.local
    }

    pub fn basis(&self) -> HighWatermarkBasis {
        self.basis
    }

    pub fn isr(&self) -> &BTreeSet<BrokerId> {
        &self.isr
    }

    pub fn followers(&self) -> &BTreeMap<BrokerId, FollowerProgress> {
        &self.followers
    }

    /// This replica's own LEO as it counts for the HW.
    fn local_countable_end(&self) -> u64 {
        match self.basis {
            HighWatermarkBasis::LogEnd => self.local.log_end_offset,
            HighWatermarkBasis::DurableEnd => self.local.durable_end_offset,
        }
    }

    /// The epoch may stay the same only when the role stays leader (an ISR or replica change,
    /// Kafka's partition epoch) or when an offline leader comes back (its log recovered in
    /// place); every other change of role needs a newer epoch.
    fn check_epoch(&self, epoch: i32, same_epoch_allowed: bool) {
        assert!(
            epoch >= self.leader_epoch,
            "leader epoch went back from {} to {epoch}",
            self.leader_epoch
        );
        assert!(
            epoch > self.leader_epoch || same_epoch_allowed,
            "role change from {:?} without a newer leader epoch than {epoch}",
            self.role
        );
    }

    /// Leads from `epoch` with these replicas (this broker among them) and this ISR (this broker
    /// in it). The HW is kept, capped by the local LEO: a new leader's HW is only a lower
    /// bound until its followers report (Kafka does the same), and it never rises from here
    /// except through [`ReplicaState::maybe_increment_high_watermark`].
    pub fn become_leader(&mut self, epoch: i32, replicas: &[BrokerId], isr: &[BrokerId]) {
        self.check_epoch(epoch, matches!(self.role, Role::Leader | Role::Offline));
        assert!(
            replicas.contains(&self.local_id),
            "a leader is one of the replicas"
        );
        assert!(isr.contains(&self.local_id), "a leader is in its own ISR");
        assert!(
            isr.iter().all(|r| replicas.contains(r)),
            "every ISR member is a replica"
        );
        let new_epoch =
            epoch > self.leader_epoch || self.resume_as.unwrap_or(self.role) != Role::Leader;
        if new_epoch {
            // Followers' progress from an earlier leadership says nothing about this one.
            self.followers.clear();
            self.leader_epoch_start_offset = self.local.log_end_offset;
        }
        let mut followers = BTreeMap::new();
        for &replica in replicas.iter().filter(|&&r| r != self.local_id) {
            let known = self.followers.get(&replica).copied();
            followers.insert(
                replica,
                known.unwrap_or(FollowerProgress {
                    log_end_offset: 0,
                    last_caught_up_ms: None,
                    last_fetch_ms: None,
                    leader_log_end_at_last_fetch: 0,
                    broker_epoch: None,
                }),
            );
        }
        self.followers = followers;
        self.isr = isr.iter().copied().collect();
        // A joiner now in the ISR has joined; one no longer a replica never will. A new
        // epoch starts with no expansion in flight.
        if new_epoch {
            self.pending_joiners.clear();
        }
        let (isr_now, followers_now) = (&self.isr, &self.followers);
        self.pending_joiners
            .retain(|r| !isr_now.contains(r) && followers_now.contains_key(r));
        self.leader_epoch = epoch;
        self.take_role(Role::Leader);
        self.high_watermark = self.high_watermark.min(self.local.log_end_offset);
        assert!(self.high_watermark <= self.local.log_end_offset);
        assert!(self.isr.contains(&self.local_id));
    }

    /// Follows `leader` from `epoch`. The HW is kept (capped by the local LEO) until the leader
    /// sends its own; the leader's view of followers and the ISR are dropped.
    pub fn become_follower(&mut self, epoch: i32, leader: BrokerId) {
        assert_ne!(leader, self.local_id, "a follower follows another broker");
        self.check_epoch(
            epoch,
            self.role == Role::Follower { leader } || self.role == Role::Offline,
        );
        self.take_role(Role::Follower { leader });
        self.leader_epoch = epoch;
        self.followers.clear();
        self.isr.clear();
        self.pending_joiners.clear();
        self.high_watermark = self.high_watermark.min(self.local.log_end_offset);
        assert!(self.high_watermark <= self.local.log_end_offset);
    }

    /// The local log cannot be served (a disk failure). The epoch, HW, followers and ISR are
    /// kept: the replica resumes with them once the log is recovered.
    pub fn go_offline(&mut self) {
        if self.resume_as.is_none() {
            self.resume_as = Some(self.role);
            self.role = Role::Offline;
        }
    }

    /// The role this replica takes back once its log is recovered (`None` unless it went
    /// offline after an I/O error).
    pub fn resumes_as(&self) -> Option<Role> {
        self.resume_as
    }

    /// Takes `role` now, or once the log is recovered if it is offline.
    fn take_role(&mut self, role: Role) {
        match self.resume_as {
            Some(_) => {
                assert_eq!(
                    self.role,
                    Role::Offline,
                    "a replica resuming later is offline"
                );
                self.resume_as = Some(role);
            }
            None => self.role = role,
        }
    }

    /// The local log was recovered in place: back to the role held before going offline, in
    /// the same epoch, with the HW capped by what the recovered log holds (a restart of the
    /// replica; a leader's HW never goes back while it leads, and this starts a new stint).
    /// A replica that was never online stays offline until told its role.
    pub fn come_back_online(&mut self) {
        assert_eq!(
            self.role,
            Role::Offline,
            "only an offline replica comes back"
        );
        if let Some(role) = self.resume_as.take() {
            self.role = role;
        }
        self.high_watermark = self.high_watermark.min(self.local.log_end_offset);
        assert!(self.high_watermark <= self.local.log_end_offset);
    }

    /// The local log moved: an append, a sync, a truncation (a follower's) or a recovery. On a
    /// leader the LEO never falls below the HW (what consumers may have read is never taken
    /// back by the leader itself); on a follower a truncation takes the HW down with it.
    pub fn update_local_log(&mut self, local: LocalLog) {
        assert!(
            local.durable_end_offset <= local.log_end_offset,
            "durable end {} beyond log end {}",
            local.durable_end_offset,
            local.log_end_offset
        );
        if self.role == Role::Leader {
            assert!(
                local.log_end_offset >= self.high_watermark,
                "a leader's log end {} fell below its high watermark {}",
                local.log_end_offset,
                self.high_watermark
            );
        }
        self.local = local;
        self.high_watermark = self.high_watermark.min(local.log_end_offset);
        assert!(self.high_watermark <= self.local.log_end_offset);
    }

    /// A follower fetched: on the leader, records its LEO (which may go back, after the
    /// follower truncated) and when it was last caught up, by Kafka's rule
    /// (`Replica.updateFetchState`): now, if it reached the leader's LEO; else the time of its
    /// previous fetch, if it has reached the LEO the leader had then. Under steady production a
    /// follower that keeps up rarely meets the current LEO exactly, yet is never behind by more
    /// than one fetch.
    pub fn update_follower_log_end(&mut self, replica: BrokerId, log_end_offset: u64, now_ms: i64) {
        assert_eq!(self.role, Role::Leader, "only a leader tracks followers");
        assert_ne!(replica, self.local_id);
        let leader_end = self.local.log_end_offset;
        let progress = self
            .followers
            .get_mut(&replica)
            .unwrap_or_else(|| panic!("broker {replica} is not a replica of this partition"));
        assert!(
            log_end_offset <= leader_end,
            "follower {replica} claims log end {log_end_offset} beyond the leader's {leader_end}"
        );
        progress.log_end_offset = log_end_offset;
        let caught_up = if log_end_offset >= leader_end {
            Some(now_ms)
        } else if log_end_offset >= progress.leader_log_end_at_last_fetch {
            progress.last_fetch_ms
        } else {
            None
        };
        if let Some(at) = caught_up {
            progress.last_caught_up_ms = Some(progress.last_caught_up_ms.map_or(at, |t| t.max(at)));
        }
        progress.last_fetch_ms = Some(now_ms);
        progress.leader_log_end_at_last_fetch = leader_end;
    }

    /// On the leader, before [`ReplicaState::update_follower_log_end`]: the fetch of `replica`
    /// carries `broker_epoch` (-1: unsaid), and the leader's image registers the broker in
    /// `registered`. A fetch older than either is refused (Kafka's
    /// `Replica.updateFetchStateOrThrow`): a dead incarnation's fetch, delayed in the network,
    /// would move the follower's progress to what that incarnation held, not what the live one
    /// holds. A newer epoch than the last fetch's starts the follower's fetch history afresh:
    /// a restarted follower may have lost what its previous incarnation fetched, so that
    /// incarnation's fetches say nothing of when this one caught up.
    pub fn check_follower_broker_epoch(
        &mut self,
        replica: BrokerId,
        broker_epoch: i64,
        registered: Option<i64>,
    ) -> Result<(), StaleBrokerEpoch> {
        assert_eq!(self.role, Role::Leader, "only a leader tracks followers");
        let progress = self
            .followers
            .get_mut(&replica)
            .unwrap_or_else(|| panic!("broker {replica} is not a replica of this partition"));
        if broker_epoch == -1 {
            progress.broker_epoch = Some(-1);
            return Ok(());
        }
        let current = registered.max(progress.broker_epoch).unwrap_or(-1);
        if broker_epoch < current {
            return Err(StaleBrokerEpoch {
                replica,
                got: broker_epoch,
                current,
            });
        }
        if progress.broker_epoch != Some(broker_epoch) {
            progress.last_fetch_ms = None;
            progress.leader_log_end_at_last_fetch = 0;
            progress.broker_epoch = Some(broker_epoch);
        }
        Ok(())
    }

    /// The HW this replica had before a restart (the high-watermark checkpoint), capped by the
    /// recovered log. Only before the replica is told any role: from then on the HW moves by
    /// the rules above.
    pub fn restore_high_watermark(&mut self, high_watermark: u64) {
        assert_eq!(self.role, Role::Offline, "restored before any role");
        assert_eq!(self.leader_epoch, -1, "restored before any epoch");
        self.high_watermark = high_watermark.min(self.local.log_end_offset);
        assert!(self.high_watermark <= self.local.log_end_offset);
    }

    /// On a leader: the followers whose addition to the ISR it has asked the controller for
    /// (replacing any earlier set; empty once answered). They hold the HW back like ISR members
    /// until then (see `pending_joiners`).
    pub fn set_pending_isr_expansion(&mut self, joiners: &[BrokerId]) {
        assert_eq!(self.role, Role::Leader, "only a leader expands its ISR");
        for joiner in joiners {
            assert!(
                self.followers.contains_key(joiner),
                "broker {joiner} is not a follower of this partition"
            );
        }
        self.pending_joiners = joiners.iter().copied().collect();
    }

    /// The followers whose ISR expansion is in flight.
    pub fn pending_isr_expansion(&self) -> &BTreeSet<BrokerId> {
        &self.pending_joiners
    }

    /// On a leader: moves the HW up to the minimum LEO over the ISR, if that is higher. Returns
    /// the new HW if it moved. Never moves it back.
    pub fn maybe_increment_high_watermark(&mut self) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        if let Some(min_isr) = self.min_isr_for_high_watermark {
            // Under min.insync.replicas with ELR on: the replicas that left the ISR meanwhile
            // are eligible leaders, and hold only what is committed now.
            if self.isr.len() < min_isr
                && !crate::planted::is(crate::planted::Bug::ElrHighWatermarkIgnoresMinIsr)
            {
                return None;
            }
        }
        let local = self.local_countable_end();
        let candidate = self
            .isr
            .iter()
            .chain(&self.pending_joiners)
            .filter(|&&r| r != self.local_id)
            .map(|r| self.followers[r].log_end_offset)
            .fold(local, u64::min);
        assert!(candidate <= self.local.log_end_offset);
        if candidate <= self.high_watermark {
            return None;
        }
        self.high_watermark = candidate;
        assert!(self.high_watermark <= self.local.log_end_offset);
        Some(candidate)
    }

    /// On a follower: the leader's HW arrived in a fetch response. Kept capped by the local LEO
    /// (the follower may not have the data yet), and under the durable policy by the durable
    /// end (a follower far behind may append several fetches before it syncs, see
    /// `replica::fetcher`; what it serves and checkpoints stays what a power loss keeps); it
    /// may fall, as a leader change can lower it.
    pub fn update_high_watermark_as_follower(&mut self, leader_high_watermark: u64) {
        assert!(
            matches!(self.role, Role::Follower { .. }),
            "only a follower takes the leader's high watermark"
        );
        self.high_watermark = leader_high_watermark.min(self.local_countable_end());
        assert!(self.high_watermark <= self.local.log_end_offset);
    }

    /// On a leader: the ISR members whose last catch-up is older than `max_lag_ms`
    /// (`replica.lag.time.max.ms`), in id order. The leader itself never lags.
    pub fn out_of_sync_replicas(&self, now_ms: i64, max_lag_ms: i64) -> Vec<BrokerId> {
        assert_eq!(self.role, Role::Leader, "only a leader judges its ISR");
        self.isr
            .iter()
            .copied()
            .filter(|&r| r != self.local_id)
            .filter(|r| {
                self.followers[r]
                    .last_caught_up_ms
                    .is_none_or(|t| now_ms - t > max_lag_ms)
            })
            .collect()
    }

    /// On a leader: may `replica` join the ISR? Only once it holds everything below the HW and
    /// the start of the current leader epoch (KIP-320), so a replica that missed this epoch's
    /// first batches never counts toward an acknowledgement.
    pub fn can_join_isr(&self, replica: BrokerId) -> bool {
        assert_eq!(self.role, Role::Leader, "only a leader judges its ISR");
        let Some(progress) = self.followers.get(&replica) else {
            return false;
        };
        progress.log_end_offset >= self.high_watermark
            && progress.log_end_offset >= self.leader_epoch_start_offset
    }

    /// On a leader: may `replica`, registered in the leader's image with `registered` (`None`:
    /// not registered, fenced or shutting down), join the ISR as far as broker epochs go
    /// (KIP-903, Kafka's `isBrokerEpochIsrEligible`)? Only if its last fetch came from that
    /// registration (or did not say): progress a previous incarnation made is not this one's.
    pub fn broker_epoch_eligible(&self, replica: BrokerId, registered: Option<i64>) -> bool {
        assert_eq!(self.role, Role::Leader, "only a leader judges its ISR");
        let fetched = self.followers.get(&replica).and_then(|p| p.broker_epoch);
        match (fetched, registered) {
            (Some(fetched), Some(registered)) => fetched == -1 || fetched == registered,
            _ => false,
        }
    }

    /// KIP-966's high-watermark rule: `Some(min.insync.replicas)` when eligible leader replicas
    /// are on (the HW then moves only while the ISR has that many members), `None` when off.
    pub fn set_min_isr_for_high_watermark(&mut self, min_isr: Option<usize>) {
        self.min_isr_for_high_watermark = min_isr;
    }

    /// On a leader: the ISR the controller accepted (an AlterPartition). The leader stays in it.
    pub fn set_isr(&mut self, isr: &[BrokerId]) {
        assert_eq!(self.role, Role::Leader, "only a leader has its ISR changed");
        assert!(isr.contains(&self.local_id), "a leader is in its own ISR");
        assert!(
            isr.iter()
                .all(|r| *r == self.local_id || self.followers.contains_key(r)),
            "every ISR member is a replica"
        );
        self.isr = isr.iter().copied().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: BrokerId = 1;

    fn log(log_end_offset: u64, durable_end_offset: u64) -> LocalLog {
        LocalLog {
            log_end_offset,
            durable_end_offset,
        }
    }

    fn leader_of_three(basis: HighWatermarkBasis) -> ReplicaState {
        let mut s = ReplicaState::new(ME, basis, log(0, 0));
        s.become_leader(5, &[1, 2, 3], &[1, 2, 3]);
        s
    }

    #[test]
    fn a_sole_leader_s_high_watermark_is_its_log_end_under_the_lazy_policy() {
        let mut s = ReplicaState::sole_leader(ME, 0, HighWatermarkBasis::LogEnd, log(10, 4));
        assert_eq!(s.high_watermark(), 10);
        s.update_local_log(log(15, 4));
        assert_eq!(s.maybe_increment_high_watermark(), Some(15));
        assert_eq!(s.isr().iter().copied().collect::<Vec<_>>(), vec![ME]);
    }

    #[test]
    fn a_sole_leader_s_high_watermark_follows_its_durable_end_under_the_durable_policy() {
        let mut s = ReplicaState::sole_leader(ME, 0, HighWatermarkBasis::DurableEnd, log(10, 4));
        assert_eq!(s.high_watermark(), 4);
        s.update_local_log(log(15, 4));
        assert_eq!(s.maybe_increment_high_watermark(), None);
        assert_eq!(s.high_watermark(), 4);
        s.update_local_log(log(15, 15));
        assert_eq!(s.maybe_increment_high_watermark(), Some(15));
    }

    #[test]
    fn the_high_watermark_is_the_minimum_log_end_over_the_isr() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(10, 0));
        assert_eq!(s.maybe_increment_high_watermark(), None, "followers at 0");
        s.update_follower_log_end(2, 7, 100);
        assert_eq!(s.maybe_increment_high_watermark(), None, "follower 3 at 0");
        s.update_follower_log_end(3, 4, 100);
        assert_eq!(s.maybe_increment_high_watermark(), Some(4));
        s.update_follower_log_end(3, 10, 101);
        assert_eq!(s.maybe_increment_high_watermark(), Some(7));
        assert_eq!(s.high_watermark(), 7);
    }

    #[test]
    fn a_follower_that_reaches_the_leaders_previous_log_end_counts_as_caught_up_then() {
        // The bug: only meeting the current LEO counted, so under steady production a
        // follower one fetch behind was never caught up and left the ISR.
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(10, 0));
        s.update_follower_log_end(2, 5, 100);
        assert_eq!(s.followers()[&2].last_caught_up_ms, None);
        s.update_local_log(log(20, 0));
        // At 10 = the LEO of its previous fetch (at 100): caught up as of then.
        s.update_follower_log_end(2, 10, 200);
        assert_eq!(s.followers()[&2].last_caught_up_ms, Some(100));
        s.update_local_log(log(30, 0));
        s.update_follower_log_end(2, 20, 300);
        assert_eq!(s.followers()[&2].last_caught_up_ms, Some(200));
        // Falling behind the previous LEO: no newer time.
        s.update_local_log(log(60, 0));
        s.update_follower_log_end(2, 25, 400);
        assert_eq!(s.followers()[&2].last_caught_up_ms, Some(200));
        s.update_follower_log_end(2, 60, 500);
        assert_eq!(s.followers()[&2].last_caught_up_ms, Some(500));
        assert_eq!(s.out_of_sync_replicas(550, 100), vec![3]);
    }

    #[test]
    fn a_delayed_fetch_of_a_dead_incarnation_is_refused_even_before_the_leader_sees_its_successor_registered(
    ) {
        // Seed 4 of replication-swarm: a fetch at 90 that broker 3 sent before it restarted
        // arrived after the new incarnation had fetched to 148; taking it moved 3's progress
        // back below the HW the leader had raised with 3 in its ISR.
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(148, 0));
        s.check_follower_broker_epoch(3, 7, Some(6)).unwrap();
        s.update_follower_log_end(3, 148, 100);
        assert_eq!(
            s.check_follower_broker_epoch(3, 6, Some(6)),
            Err(StaleBrokerEpoch {
                replica: 3,
                got: 6,
                current: 7
            })
        );
        assert_eq!(s.followers()[&3].log_end_offset, 148);
        assert!(s.broker_epoch_eligible(3, Some(7)));
        assert!(
            !s.broker_epoch_eligible(3, Some(8)),
            "registered again since"
        );
        assert!(!s.broker_epoch_eligible(3, None), "fenced or shutting down");
        assert!(!s.broker_epoch_eligible(2, Some(3)), "never fetched");
    }

    #[test]
    fn a_new_incarnation_of_a_follower_is_not_caught_up_by_its_predecessors_fetches() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(10, 0));
        s.check_follower_broker_epoch(2, 4, Some(4)).unwrap();
        s.update_follower_log_end(2, 5, 100);
        s.update_local_log(log(20, 0));
        // The restarted follower holds 10, the LEO of the dead one's last fetch: that fetch
        // was not its own, so it is not caught up as of then.
        s.check_follower_broker_epoch(2, 5, Some(5)).unwrap();
        s.update_follower_log_end(2, 10, 200);
        assert_eq!(s.followers()[&2].last_caught_up_ms, None);
        assert_eq!(s.followers()[&2].broker_epoch, Some(5));
    }

    #[test]
    fn a_follower_whose_isr_expansion_is_in_flight_holds_the_high_watermark_back() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(0, 0));
        s.become_leader(5, &[1, 2, 3], &[1, 2]);
        s.update_local_log(log(10, 0));
        s.update_follower_log_end(2, 10, 100);
        s.update_follower_log_end(3, 4, 100);
        s.set_pending_isr_expansion(&[3]);
        assert_eq!(s.maybe_increment_high_watermark(), Some(4));
        // The expansion commits: 3 is in the ISR, no longer pending, and still counts.
        s.become_leader(5, &[1, 2, 3], &[1, 2, 3]);
        assert!(s.pending_isr_expansion().is_empty());
        assert_eq!(s.maybe_increment_high_watermark(), None);
        s.update_follower_log_end(3, 10, 101);
        assert_eq!(s.maybe_increment_high_watermark(), Some(10));
    }

    #[test]
    fn a_refused_isr_expansion_no_longer_holds_the_high_watermark_back() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(0, 0));
        s.become_leader(5, &[1, 2, 3], &[1, 2]);
        s.update_local_log(log(10, 0));
        s.update_follower_log_end(2, 10, 100);
        s.set_pending_isr_expansion(&[3]);
        assert_eq!(s.maybe_increment_high_watermark(), None, "3 is at 0");
        s.set_pending_isr_expansion(&[]);
        assert_eq!(s.maybe_increment_high_watermark(), Some(10));
        // A new epoch starts with nothing in flight.
        s.set_pending_isr_expansion(&[3]);
        s.become_leader(6, &[1, 2, 3], &[1, 2]);
        assert!(s.pending_isr_expansion().is_empty());
    }

    #[test]
    fn a_replica_outside_the_isr_does_not_hold_the_high_watermark_back() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(10, 0));
        s.update_follower_log_end(2, 10, 100);
        s.set_isr(&[1, 2]);
        assert_eq!(s.maybe_increment_high_watermark(), Some(10));
    }

    #[test]
    fn with_eligible_leader_replicas_the_high_watermark_stands_still_below_min_insync_replicas() {
        for elr in [false, true] {
            let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
            s.set_min_isr_for_high_watermark(elr.then_some(2));
            s.update_local_log(log(10, 0));
            s.update_follower_log_end(2, 6, 100);
            s.update_follower_log_end(3, 4, 100);
            assert_eq!(s.maybe_increment_high_watermark(), Some(4));
            // An ISR of two is min.insync.replicas: the HW moves.
            s.set_isr(&[1, 2]);
            assert_eq!(s.maybe_increment_high_watermark(), Some(6));
            // Alone, below it: broker 2 left holding offsets up to 6, and would be elected
            // from the ELR with them; the HW must not pass 6.
            s.set_isr(&[1]);
            let moved = s.maybe_increment_high_watermark();
            if elr {
                assert_eq!((moved, s.high_watermark()), (None, 6));
            } else {
                assert_eq!(moved, Some(10));
            }
            // Back at min.insync.replicas, it moves again.
            s.update_follower_log_end(2, 10, 101);
            s.set_isr(&[1, 2]);
            assert_eq!(s.maybe_increment_high_watermark().unwrap_or(10), 10);
            assert_eq!(s.high_watermark(), 10);
        }
    }

    #[test]
    fn the_leader_s_high_watermark_never_goes_back_when_a_follower_truncates() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(10, 0));
        s.update_follower_log_end(2, 10, 100);
        s.update_follower_log_end(3, 10, 100);
        assert_eq!(s.maybe_increment_high_watermark(), Some(10));
        s.update_follower_log_end(3, 6, 101);
        assert_eq!(s.maybe_increment_high_watermark(), None);
        assert_eq!(s.high_watermark(), 10);
    }

    #[test]
    #[should_panic(expected = "fell below its high watermark")]
    fn a_leader_s_log_end_below_its_high_watermark_is_a_bug() {
        let mut s = ReplicaState::sole_leader(ME, 0, HighWatermarkBasis::LogEnd, log(10, 10));
        s.update_local_log(log(9, 9));
    }

    #[test]
    #[should_panic(expected = "leader epoch went back")]
    fn an_older_leader_epoch_is_refused() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.become_follower(4, 2);
    }

    #[test]
    #[should_panic(expected = "without a newer leader epoch")]
    fn following_in_the_epoch_one_led_is_refused() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.become_follower(5, 2);
    }

    #[test]
    fn an_isr_change_keeps_the_epoch_and_the_followers_progress() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(10, 0));
        s.update_follower_log_end(2, 8, 100);
        s.become_leader(5, &[1, 2, 3], &[1, 2]);
        assert_eq!(s.leader_epoch(), 5);
        assert_eq!(s.followers()[&2].log_end_offset, 8);
        assert_eq!(s.maybe_increment_high_watermark(), Some(8));
    }

    #[test]
    fn a_follower_takes_the_leader_s_high_watermark_capped_by_its_log_end() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(5, 5));
        s.become_follower(3, 2);
        s.update_high_watermark_as_follower(9);
        assert_eq!(s.high_watermark(), 5);
        s.update_local_log(log(12, 12));
        s.update_high_watermark_as_follower(9);
        assert_eq!(s.high_watermark(), 9);
        assert_eq!(
            s.maybe_increment_high_watermark(),
            None,
            "followers do not compute it"
        );
    }

    #[test]
    fn under_the_durable_policy_a_follower_s_high_watermark_stops_at_what_it_has_synced() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::DurableEnd, log(5, 5));
        s.become_follower(3, 2);
        s.update_local_log(log(12, 7));
        s.update_high_watermark_as_follower(9);
        assert_eq!(s.high_watermark(), 7);
        s.update_local_log(log(12, 12));
        s.update_high_watermark_as_follower(9);
        assert_eq!(s.high_watermark(), 9);
    }

    #[test]
    fn a_follower_s_truncation_takes_its_high_watermark_down() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(12, 12));
        s.become_follower(3, 2);
        s.update_high_watermark_as_follower(12);
        s.update_local_log(log(7, 7));
        assert_eq!(s.high_watermark(), 7);
    }

    #[test]
    fn a_new_leader_starts_from_its_own_high_watermark_and_waits_for_followers() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(12, 12));
        s.become_follower(3, 2);
        s.update_high_watermark_as_follower(9);
        s.become_leader(4, &[1, 2], &[1, 2]);
        assert_eq!(s.high_watermark(), 9);
        assert_eq!(s.leader_epoch_start_offset(), 12);
        assert_eq!(
            s.maybe_increment_high_watermark(),
            None,
            "follower 2 unknown"
        );
        s.update_follower_log_end(2, 12, 100);
        assert_eq!(s.maybe_increment_high_watermark(), Some(12));
    }

    #[test]
    fn a_follower_joins_the_isr_only_past_the_high_watermark_and_the_epoch_start() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(20, 20));
        s.become_follower(3, 2);
        s.update_high_watermark_as_follower(10);
        s.become_leader(4, &[1, 2], &[1]);
        assert_eq!(s.maybe_increment_high_watermark(), Some(20));
        s.update_local_log(log(30, 30));
        s.update_follower_log_end(2, 15, 100);
        assert!(!s.can_join_isr(2), "below the HW");
        s.update_follower_log_end(2, 20, 101);
        assert!(s.can_join_isr(2), "at the HW and the epoch start");
        assert!(!s.can_join_isr(9), "not a replica");
    }

    #[test]
    fn a_follower_that_stops_catching_up_falls_out_of_sync() {
        let mut s = leader_of_three(HighWatermarkBasis::LogEnd);
        s.update_local_log(log(10, 0));
        s.update_follower_log_end(2, 10, 1_000);
        s.update_follower_log_end(3, 10, 1_000);
        assert!(s.out_of_sync_replicas(30_000, 30_000).is_empty());
        s.update_local_log(log(20, 0));
        s.update_follower_log_end(2, 20, 25_000);
        s.update_follower_log_end(3, 15, 25_000);
        assert_eq!(s.out_of_sync_replicas(31_001, 30_000), vec![3]);
    }

    #[test]
    fn an_offline_leader_comes_back_in_its_epoch_with_its_high_watermark() {
        let mut s = ReplicaState::sole_leader(ME, 2, HighWatermarkBasis::DurableEnd, log(10, 10));
        s.go_offline();
        assert_eq!(s.role(), Role::Offline);
        assert_eq!(s.maybe_increment_high_watermark(), None);
        s.update_local_log(log(12, 12));
        s.come_back_online();
        assert_eq!(s.role(), Role::Leader);
        assert_eq!(s.leader_epoch(), 2);
        assert_eq!(s.high_watermark(), 10);
        assert_eq!(s.maybe_increment_high_watermark(), Some(12));
    }

    #[test]
    fn a_log_that_lost_unsynced_batches_brings_an_offline_replica_s_high_watermark_down() {
        let mut s = ReplicaState::sole_leader(ME, 0, HighWatermarkBasis::LogEnd, log(10, 4));
        s.go_offline();
        s.update_local_log(log(6, 6));
        s.come_back_online();
        assert_eq!(s.high_watermark(), 6);
    }

    #[test]
    fn a_follower_that_went_offline_comes_back_a_follower() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(5, 5));
        s.become_follower(3, 2);
        s.go_offline();
        s.come_back_online();
        assert_eq!(s.role(), Role::Follower { leader: 2 });
    }

    #[test]
    fn a_role_given_while_the_log_is_being_recovered_is_taken_when_it_comes_back() {
        // The catalog applies the image whenever it changes, so it can hand a role to a replica
        // whose log is being reopened: the replica stays offline and resumes in the new role.
        let mut s = ReplicaState::sole_leader(ME, 2, HighWatermarkBasis::LogEnd, log(10, 10));
        s.go_offline();
        s.become_leader(3, &[ME], &[ME]);
        assert_eq!(s.role(), Role::Offline);
        assert_eq!(s.maybe_increment_high_watermark(), None);
        s.become_follower(4, 2);
        assert_eq!(s.role(), Role::Offline);
        s.come_back_online();
        assert_eq!(s.role(), Role::Follower { leader: 2 });
        assert_eq!(s.leader_epoch(), 4);
    }

    #[test]
    fn a_replica_never_told_its_role_that_goes_offline_takes_the_role_given_meanwhile() {
        let mut s = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(5, 5));
        s.go_offline();
        s.become_leader(1, &[ME], &[ME]);
        assert_eq!(s.role(), Role::Offline);
        s.come_back_online();
        assert_eq!(s.role(), Role::Leader);
        let mut untold = ReplicaState::new(ME, HighWatermarkBasis::LogEnd, log(5, 5));
        untold.go_offline();
        untold.come_back_online();
        assert_eq!(untold.role(), Role::Offline, "still waiting to be told");
    }
}
