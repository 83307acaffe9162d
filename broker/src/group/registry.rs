//! The groups this coordinator holds, by id, each with the settings the coordinator gives it.

use std::collections::BTreeMap;

use super::machine::{Group, GroupSnapshot, Millis};

/// Every group, in id order (the order ListGroups answers in and the timer ticks in).
#[derive(Debug)]
pub struct Registry {
    groups: BTreeMap<String, Group>,
    /// `group.initial.rebalance.delay.ms`, given to every group created or restored here.
    initial_rebalance_delay_ms: i64,
}

impl Registry {
    pub fn new(initial_rebalance_delay_ms: i64) -> Registry {
        assert!(initial_rebalance_delay_ms >= 0);
        Registry {
            groups: BTreeMap::new(),
            initial_rebalance_delay_ms,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Group> {
        self.groups.get_mut(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.groups.contains_key(id)
    }

    /// Group `id`, created Empty at `now` if it does not exist.
    pub fn get_or_create(&mut self, id: &str, now: Millis) -> &mut Group {
        let delay = self.initial_rebalance_delay_ms;
        let group = self.groups.entry(id.to_string()).or_insert_with(|| {
            let mut group = Group::new(id, now);
            group.initial_rebalance_delay_ms = delay;
            group
        });
        assert_eq!(group.id, id);
        group
    }

    /// Puts back a group as `__consumer_offsets` stored it (at load).
    pub fn restore(&mut self, id: &str, stored: GroupSnapshot, now: Millis) -> &Group {
        let mut group = Group::restore(id, stored, now);
        group.initial_rebalance_delay_ms = self.initial_rebalance_delay_ms;
        let previous = self.groups.insert(id.to_string(), group);
        assert!(previous.is_none(), "a group is restored once");
        &self.groups[id]
    }

    pub fn remove(&mut self, id: &str) -> Option<Group> {
        let group = self.groups.remove(id);
        assert!(!self.groups.contains_key(id));
        group
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Group)> {
        self.groups.iter_mut()
    }

    pub fn ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }
}
