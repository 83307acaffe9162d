//! When each group next needs a [`Input::Tick`](super::machine::Input::Tick), from the
//! `next_deadline` of its last step's outputs, and the task that delivers them.
//!
//! Time is the broker's [`Clock`] (virtual under madsim); the task wakes through tokio's
//! (simulated) sleep every [`TICK`] and steps only the groups whose deadline has passed, so the
//! moments at which sessions expire do not depend on how many groups there are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::machine::Millis;
use super::GroupCoordinator;
use crate::clock::Clock;

/// How often deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// The pending deadline of every group that has one.
#[derive(Debug, Default)]
pub struct Timers {
    by_deadline: BTreeSet<(Millis, String)>,
    by_group: BTreeMap<String, Millis>,
}

impl Timers {
    /// Group `id` next needs a tick at `deadline` (`None`: never, until its next step).
    pub fn set(&mut self, id: &str, deadline: Option<Millis>) {
        if let Some(old) = self.by_group.remove(id) {
            let removed = self.by_deadline.remove(&(old, id.to_string()));
            assert!(removed, "the two indexes agree");
        }
        if let Some(deadline) = deadline {
            self.by_group.insert(id.to_string(), deadline);
            self.by_deadline.insert((deadline, id.to_string()));
        }
        assert_eq!(self.by_group.len(), self.by_deadline.len());
    }

    /// The groups whose deadline is at or before `now`, in deadline order; they are forgotten
    /// (stepping them sets their next deadline again).
    pub fn take_due(&mut self, now: Millis) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((deadline, _)) = self.by_deadline.first() {
            if *deadline > now {
                break;
            }
            let (deadline, id) = self.by_deadline.pop_first().expect("a first");
            assert_eq!(self.by_group.remove(&id), Some(deadline));
            due.push(id);
        }
        assert_eq!(self.by_group.len(), self.by_deadline.len());
        due
    }

    pub fn deadline(&self, id: &str) -> Option<Millis> {
        self.by_group.get(id).copied()
    }
}

/// Starts the task that ticks due groups; it stops when the coordinator is dropped.
pub fn spawn(coordinator: &Arc<GroupCoordinator>, clock: Arc<dyn Clock>) {
    let weak: Weak<GroupCoordinator> = Arc::downgrade(coordinator);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            let Some(coordinator) = weak.upgrade() else {
                return;
            };
            let writes = coordinator.tick_steps(clock.now_ms());
            drop(coordinator);
            if !writes.is_empty() {
                // Stores (a group emptied by expiry) finish on their own task: a slow disk must
                // not hold back the next deadlines.
                tokio::spawn(async move {
                    for (shard, write) in writes {
                        let _ = shard.finish(write).await;
                    }
                });
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_groups_come_out_in_deadline_order_once_and_a_new_deadline_replaces_the_old() {
        let mut timers = Timers::default();
        timers.set("b", Some(20));
        timers.set("a", Some(30));
        timers.set("c", Some(10));
        timers.set("a", Some(5));
        timers.set("d", None);
        assert_eq!(timers.take_due(4), Vec::<String>::new());
        assert_eq!(timers.take_due(20), vec!["a", "c", "b"]);
        assert_eq!(timers.take_due(100), Vec::<String>::new());
        assert_eq!(timers.deadline("a"), None);
    }
}
