//! What a run's configuration permits. The runner fills this from the scenario (its broker flush
//! policy, producers' acks and idempotence) and the nemesis schedule (when nodes crashed); the
//! checker then reports a matching anomaly as *allowed*, with the cause, instead of as a
//! violation (STYLE.md item 10).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Send;

/// The permissions of one run. `Default` permits nothing: every anomaly is a violation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowances {
    /// Producers with acks=0 or acks=1 may lose acknowledged sends when the broker crashes
    /// (the leader acknowledged from memory). Applies only to sends whose `acks` is 0 or 1.
    pub acks0_or_acks1_loss_on_crash: Option<LossAllowance>,
    /// The lazy flush policy acknowledges before fsync: a power loss drops what was appended
    /// in the unsynced window before it. Applies to sends of any acks level.
    pub lazy_flush_loss_on_power_loss: Option<LossAllowance>,
    /// Producers without idempotence retry ambiguous attempts, so one value may land twice.
    pub duplicates_from_non_idempotent_retry: Option<Allowance>,
    /// Committed offsets expire (KIP-211, `offsets.retention.minutes`) this long after a group
    /// empties: a committed-offset fetch that finds nothing is allowed when, before its
    /// invocation and after the group's last acknowledged commit, the group had no commit or
    /// poll running for longer than this. `None`: offsets never expire in this run.
    pub offsets_expire_after_ms: Option<u64>,
    /// `unclean.leader.election.enable`: an out-of-sync replica may be elected and the log
    /// truncated to it, dropping acknowledged sends of any acks level. Its `crashes_ms` are the
    /// times of the leader changes.
    pub unclean_election_loss: Option<LossAllowance>,
    /// Every topic is replicated and the policy durable: consumers read only below the high
    /// watermark, which every ISR member holds synced, so a value once read survives crashes
    /// and clean leader changes (only an unclean election may drop it). The cause says why;
    /// `None`: a read value may be lost wherever a loss is allowed.
    pub reads_survive: Option<String>,
    /// Replicated topics where a loss is allowed (acks=0/1, unclean elections): a new leader
    /// that never had a lost record assigns its offset again, as Kafka does. An offset holding
    /// two values is then allowed when every value but the surviving one is an allowed loss,
    /// and a send acknowledged below an earlier acknowledged send when either acknowledged copy
    /// is an allowed loss (a leader that never had the earlier one acknowledged the later one).
    pub offset_reuse_after_loss: Option<String>,
    /// Compacted topics (`cleanup.policy` lists `compact`), by name: the cleaner may remove a
    /// record a newer record of its key replaced, and a tombstone once `delete.retention.ms`
    /// passed; the compaction checker judges what scans saw instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compacted_topics: BTreeMap<String, CompactedTopic>,
}

/// What the checker knows of one compacted topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedTopic {
    /// `delete.retention.ms`: a tombstone stays readable at least this long after its send.
    pub delete_retention_ms: u64,
    /// The run expects the cleaner to have removed records (`not_compacted` otherwise).
    pub expect_cleaning: bool,
}

/// An allowance that needs no more than its cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// Why the configuration permits it, e.g. "producers are not idempotent (retries=3)".
    pub cause: String,
}

/// Loss of a send permitted by crashes (or power losses) at known simulated times.
///
/// A send may have been lost by the crash at `c` when it was appended before `c` and was still
/// unsynced then. Its append happened between its invocation and the moment it was certainly
/// appended (its acknowledgement, or the first poll that returned it), and it is synced at the
/// latest `unsynced_window_ms` after the append. So the loss is allowed when, for some crash
/// `c`: `invoke_ms <= c` and `c < appended_by_ms + unsynced_window_ms` (no upper bound when the
/// window is `None`: nothing syncs it, or the runner does not know the bound).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossAllowance {
    /// Why the configuration permits it, e.g. "producer 2 uses acks=1".
    pub cause: String,
    /// Simulated times of the crashes (or power losses) that can drop data.
    pub crashes_ms: Vec<u64>,
    /// How long appended data may stay unsynced (lazy flush: `flush.ms` plus scheduling slack).
    pub unsynced_window_ms: Option<u64>,
}

impl LossAllowance {
    /// The crash that may have dropped a send invoked at `invoke_ms` and certainly appended by
    /// `appended_by_ms` (`None`: not known to be appended).
    fn crash_covering(&self, invoke_ms: u64, appended_by_ms: Option<u64>) -> Option<u64> {
        self.crashes_ms.iter().copied().find(|&crash| {
            invoke_ms <= crash
                && match (appended_by_ms, self.unsynced_window_ms) {
                    (Some(appended), Some(window)) => crash < appended.saturating_add(window),
                    _ => true,
                }
        })
    }
}

impl Allowances {
    /// The cause under which losing `send` is allowed, or `None` when it is a violation.
    pub(crate) fn loss(&self, send: &Send<'_>, appended_by_ms: Option<u64>) -> Option<String> {
        let invoke = send.op.invoke_ms;
        if let Some(allowance) = &self.acks0_or_acks1_loss_on_crash {
            if matches!(send.acks, 0 | 1) {
                if let Some(crash) = allowance.crash_covering(invoke, appended_by_ms) {
                    return Some(format!(
                        "{} (acks={}, crash at {crash} ms)",
                        allowance.cause, send.acks
                    ));
                }
            }
        }
        self.lazy_or_unclean_loss(send, appended_by_ms)
    }

    /// The cause under which losing `send`, a value some consumer read, is allowed: as
    /// [`Allowances::loss`], unless [`Allowances::reads_survive`] says a read value cannot be
    /// lost but to an unclean election.
    pub(crate) fn read_loss(&self, send: &Send<'_>, appended_by_ms: Option<u64>) -> Option<String> {
        match &self.reads_survive {
            Some(_) => self.unclean_loss(send),
            None => self.loss(send, appended_by_ms),
        }
    }

    fn lazy_or_unclean_loss(&self, send: &Send<'_>, appended_by_ms: Option<u64>) -> Option<String> {
        let invoke = send.op.invoke_ms;
        if let Some(allowance) = &self.lazy_flush_loss_on_power_loss {
            if let Some(crash) = allowance.crash_covering(invoke, appended_by_ms) {
                let appended = appended_by_ms.map_or("?".to_string(), |ms| ms.to_string());
                return Some(format!(
                    "{} (invoked {invoke} ms, appended by {appended} ms, power loss at {crash} ms)",
                    allowance.cause
                ));
            }
        }
        self.unclean_loss(send)
    }

    fn unclean_loss(&self, send: &Send<'_>) -> Option<String> {
        let allowance = self.unclean_election_loss.as_ref()?;
        let change = allowance.crash_covering(send.op.invoke_ms, None)?;
        Some(format!(
            "{} (leader change at {change} ms)",
            allowance.cause
        ))
    }

    /// The cause under which a committed-offset fetch invoked at `fetch_ms` may find nothing,
    /// when the group had no commit or poll running from `idle_from_ms` to `idle_to_ms` (after
    /// its last acknowledged commit); `None` when that is a violation.
    pub(crate) fn offsets_expired(
        &self,
        idle_from_ms: u64,
        idle_to_ms: u64,
        fetch_ms: u64,
    ) -> Option<String> {
        let expire_after = self.offsets_expire_after_ms?;
        (idle_to_ms > idle_from_ms.saturating_add(expire_after)).then(|| {
            format!(
                "offsets expired (offsets.retention.minutes) after the group emptied (idle from \
                 {idle_from_ms} to {idle_to_ms} ms, fetched at {fetch_ms} ms, expiry after \
                 {expire_after} ms)"
            )
        })
    }

    pub(crate) fn duplicate(&self) -> Option<String> {
        self.duplicates_from_non_idempotent_retry
            .as_ref()
            .map(|a| a.cause.clone())
    }
}
