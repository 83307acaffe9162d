//! Which stretch of a partition ("walk") each poll of a consumer-group member belongs to.
//!
//! The poll checks ([`crate::checker`]) see one consumer id as one uninterrupted walk over a
//! partition: its offsets must only go forwards. A group member's position legitimately goes
//! back whenever the group takes a partition away and hands it back (possibly within a single
//! poll): the member then resumes from the group's committed offset, as Kafka's consumer does
//! after any rebalance. So every assignment the member receives ends all its walks, and the
//! polls after it start new ones.
//!
//! An assignment is known by the client's [`client::RebalanceListener::on_partitions_assigned`]
//! call, counted by the workload. The member id and generation the member holds after a poll
//! cannot tell it: a member whose membership was lost before the poll, and lost again after
//! being reassigned during it, reads ("", -1) both times (group-swarm seed 40: a walk over t-3
//! at 110 "went back" to the committed 100).

use std::collections::BTreeMap;

use crate::history::Process;

/// (topic, partition).
pub type TopicPartition = (String, i32);

/// One assigned partition's part of a poll, as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPoll {
    pub tp: TopicPartition,
    /// The walk it continues; `None`: it starts a new walk (see [`Walks::begin`]).
    pub walk: Option<Process>,
    /// Where the poll started: the position before the poll on a continuing walk, the first
    /// record returned on a new one.
    pub from: i64,
    pub records: Vec<(i64, u64)>,
}

/// One member's walks, one per partition it holds.
#[derive(Debug, Default)]
pub struct Walks {
    walks: BTreeMap<TopicPartition, Process>,
    /// How many assignments the member had received when the walks were last updated.
    assignments: u64,
}

impl Walks {
    pub fn new() -> Walks {
        Walks::default()
    }

    /// Sorts out one completed poll. `assignments`: how many assignments the member has
    /// received so far (counting the ones during this poll); `assignment`: the partitions it
    /// holds now; `before`: the positions it reported before the poll; `returned`: the
    /// records the poll returned, per partition. A partition whose walk is not known yet and
    /// that returned nothing has no position to report and is left out.
    pub fn after_poll(
        &mut self,
        assignments: u64,
        assignment: &[TopicPartition],
        before: &BTreeMap<TopicPartition, i64>,
        mut returned: BTreeMap<TopicPartition, Vec<(i64, u64)>>,
    ) -> Vec<PartitionPoll> {
        assert!(
            assignments >= self.assignments,
            "the assignment count went back from {} to {assignments}",
            self.assignments
        );
        if assignments != self.assignments {
            // Every partition held now was (re)assigned and starts at its committed offset.
            self.assignments = assignments;
            self.walks.clear();
        }
        self.walks.retain(|tp, _| assignment.contains(tp));
        let mut polls = Vec::new();
        for tp in assignment {
            let records = returned.remove(tp).unwrap_or_default();
            let walk = self.walks.get(tp).copied();
            let from = match (walk, before.get(tp), records.first()) {
                (Some(_), Some(&position), _) => position,
                (_, _, Some(&(first, _))) => first,
                _ => continue,
            };
            polls.push(PartitionPoll {
                tp: tp.clone(),
                walk,
                from,
                records,
            });
        }
        polls
    }

    /// `walk` is the id of the walk that `tp`'s poll started.
    pub fn begin(&mut self, tp: &TopicPartition, walk: Process) {
        let earlier = self.walks.insert(tp.clone(), walk);
        assert!(earlier.is_none(), "{tp:?} was already on walk {earlier:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    fn records(offsets: std::ops::RangeInclusive<i64>) -> Vec<(i64, u64)> {
        offsets.map(|o| (o, 1000 + o as u64)).collect()
    }

    /// One poll of t-3 returning `offsets` after position `position`, with `assignments`.
    fn poll_t3(
        walks: &mut Walks,
        assignments: u64,
        position: Option<i64>,
        offsets: std::ops::RangeInclusive<i64>,
    ) -> PartitionPoll {
        let before = position.map(|p| (tp(3), p)).into_iter().collect();
        let returned = [(tp(3), records(offsets))].into_iter().collect();
        let mut polls = walks.after_poll(assignments, &[tp(3)], &before, returned);
        assert_eq!(polls.len(), 1);
        polls.remove(0)
    }

    #[test]
    fn polls_between_assignments_continue_one_walk_from_the_position_before_each_poll() {
        let mut walks = Walks::new();
        let first = poll_t3(&mut walks, 1, None, 100..=105);
        assert_eq!((first.walk, first.from), (None, 100));
        walks.begin(&tp(3), 7);
        let second = poll_t3(&mut walks, 1, Some(106), 106..=109);
        assert_eq!((second.walk, second.from), (Some(7), 106));
    }

    #[test]
    fn a_partition_taken_away_and_handed_back_within_one_poll_starts_a_new_walk() {
        // group-swarm seed 40: the member held t-3 at position 110 (its commits of 110 failed:
        // its membership had expired); during the next poll it rejoined, was assigned t-3
        // again and resumed from the committed 100; its membership expired again before the
        // poll returned, so its member id and generation read the same as before the poll.
        let mut walks = Walks::new();
        poll_t3(&mut walks, 1, None, 106..=109);
        walks.begin(&tp(3), 7);
        let after = poll_t3(&mut walks, 2, Some(110), 100..=120);
        assert_eq!(
            (after.walk, after.from),
            (None, 100),
            "the reassigned partition resumes from its committed offset on a new walk"
        );
    }

    #[test]
    fn a_partition_no_longer_held_ends_its_walk_and_one_never_polled_is_left_out() {
        let mut walks = Walks::new();
        poll_t3(&mut walks, 1, None, 5..=6);
        walks.begin(&tp(3), 7);
        // t-3 was given up (a rejoin in progress); t-1 is held but has no position yet.
        let polls = walks.after_poll(1, &[tp(1)], &BTreeMap::new(), BTreeMap::new());
        assert!(polls.is_empty());
        let back = poll_t3(&mut walks, 1, Some(7), 7..=8);
        assert_eq!((back.walk, back.from), (None, 7));
    }

    #[test]
    fn a_walk_with_no_new_records_still_reports_its_position() {
        let mut walks = Walks::new();
        poll_t3(&mut walks, 1, None, 5..=6);
        walks.begin(&tp(3), 7);
        let before = [(tp(3), 7)].into_iter().collect();
        let polls = walks.after_poll(1, &[tp(3)], &before, BTreeMap::new());
        assert_eq!(
            polls,
            vec![PartitionPoll {
                tp: tp(3),
                walk: Some(7),
                from: 7,
                records: Vec::new(),
            }]
        );
    }
}
