//! Where new partitions' replicas go: Kafka's `StripedReplicaPlacer` in spirit — round-robin over
//! the unfenced, not-shutting-down brokers with a random start, racks alternating when
//! `broker.rack` is set, every replica of a partition on a different broker. Pure.
//!
//! A port of Kafka's `StripedReplicaPlacer`: brokers are grouped by rack (racks sorted, brokers
//! sorted within each rack, each list with a random start); partition `p` starts at rack
//! `offset + p`, its leader is the next unfenced broker of the first rack that has one, and its
//! followers come one per rack, round-robin, unfenced brokers before fenced ones. Once every
//! unfenced broker has led one partition, the racks and brokers are shuffled so the next round
//! does not repeat the same sets. Brokers in controlled shutdown are never placed on; fenced
//! brokers may hold followers, never a leader.

use std::collections::BTreeMap;

use super::decide::Entropy;
use super::image::{Assignment, ClusterImage};
use super::NodeId;

/// A broker placement may use (Kafka's `UsableBroker`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsableBroker {
    pub id: NodeId,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// The registered brokers not in controlled shutdown, by id.
pub fn usable_brokers(image: &ClusterImage) -> Vec<UsableBroker> {
    image
        .brokers
        .values()
        .filter(|b| !b.shutting_down)
        .map(|b| UsableBroker {
            id: b.id,
            rack: b.rack.clone(),
            fenced: b.fenced,
        })
        .collect()
}

/// Why replicas could not be placed (INVALID_REPLICATION_FACTOR), Kafka's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlacementError(pub String);

/// A uniform draw in `0..n` (`n > 0`).
fn below(entropy: &mut dyn Entropy, n: usize) -> usize {
    debug_assert!(n > 0);
    (entropy.next_u128() % n as u128) as usize
}

/// Fisher-Yates with the caller's entropy (Java's `Collections.shuffle` in spirit).
fn shuffle<T>(items: &mut [T], entropy: &mut dyn Entropy) {
    for i in (1..items.len()).rev() {
        let j = below(entropy, i + 1);
        items.swap(i, j);
    }
}

#[derive(Debug, Default)]
struct BrokerList {
    brokers: Vec<NodeId>,
    /// Brokers taken during the current iteration epoch.
    index: usize,
    /// Added to `index` (mod the length) to pick the next broker.
    offset: usize,
    epoch: usize,
}

impl BrokerList {
    fn initialize(&mut self, entropy: &mut dyn Entropy) {
        if !self.brokers.is_empty() {
            self.brokers.sort_unstable();
            self.offset = below(entropy, self.brokers.len());
        }
    }

    /// The next broker in this iteration epoch, or `None` when each was taken once. A new
    /// epoch starts one further along, so consecutive partitions get different brokers.
    fn next(&mut self, epoch: usize) -> Option<NodeId> {
        if self.brokers.is_empty() {
            return None;
        }
        if self.epoch != epoch {
            self.epoch = epoch;
            self.index = 0;
            self.offset = (self.offset + 1) % self.brokers.len();
        }
        if self.index >= self.brokers.len() {
            return None;
        }
        let broker = self.brokers[(self.index + self.offset) % self.brokers.len()];
        self.index += 1;
        Some(broker)
    }
}

#[derive(Debug, Default)]
struct Rack {
    fenced: BrokerList,
    unfenced: BrokerList,
}

impl Rack {
    fn next(&mut self, epoch: usize) -> Option<NodeId> {
        self.unfenced
            .next(epoch)
            .or_else(|| self.fenced.next(epoch))
    }
}

/// Kafka's `RackList`: the racks in order, and where the next partition starts.
struct RackList {
    racks: BTreeMap<Option<String>, Rack>,
    /// Sorted at first (no rack first), shuffled after each full round.
    names: Vec<Option<String>>,
    total: usize,
    unfenced: usize,
    epoch: usize,
    offset: usize,
}

impl RackList {
    fn new(brokers: &[UsableBroker], entropy: &mut dyn Entropy) -> RackList {
        let mut racks: BTreeMap<Option<String>, Rack> = BTreeMap::new();
        let mut unfenced = 0;
        for broker in brokers {
            let rack = racks.entry(broker.rack.clone()).or_default();
            if broker.fenced {
                rack.fenced.brokers.push(broker.id);
            } else {
                unfenced += 1;
                rack.unfenced.brokers.push(broker.id);
            }
        }
        for rack in racks.values_mut() {
            rack.fenced.initialize(entropy);
            rack.unfenced.initialize(entropy);
        }
        let names: Vec<Option<String>> = racks.keys().cloned().collect();
        let offset = if names.is_empty() {
            0
        } else {
            below(entropy, names.len())
        };
        RackList {
            racks,
            names,
            total: brokers.len(),
            unfenced,
            epoch: 0,
            offset,
        }
    }

    fn shuffle(&mut self, entropy: &mut dyn Entropy) {
        shuffle(&mut self.names, entropy);
        for rack in self.racks.values_mut() {
            shuffle(&mut rack.fenced.brokers, entropy);
            shuffle(&mut rack.unfenced.brokers, entropy);
        }
    }

    fn rack(&mut self, index: usize) -> &mut Rack {
        self.racks
            .get_mut(&self.names[index])
            .expect("every rack name has a rack")
    }

    /// One partition's replicas; the caller checked there are enough brokers and an unfenced one.
    fn place(&mut self, replication_factor: usize, entropy: &mut dyn Entropy) -> Assignment {
        // Every unfenced broker led once: shuffle so the next round differs (not with one
        // unfenced broker, which would loop forever).
        if self.epoch == self.unfenced && self.unfenced > 1 {
            self.shuffle(entropy);
            self.epoch = 0;
        }
        if self.offset == self.names.len() {
            self.offset = 0;
        }
        let epoch = self.epoch;
        let mut replicas = Vec::with_capacity(replication_factor);
        let mut first_rack = Some(self.offset);
        loop {
            let index = first_rack.expect("set above");
            if let Some(leader) = self.rack(index).unfenced.next(epoch) {
                replicas.push(leader);
                break;
            }
            first_rack = Some((index + 1) % self.names.len());
        }
        let mut rack_index = self.offset;
        for _ in 1..replication_factor {
            let follower = loop {
                let found = if Some(rack_index) == first_rack {
                    // The leader's rack gives no follower in this pass.
                    first_rack = None;
                    None
                } else {
                    self.rack(rack_index).next(epoch)
                };
                rack_index = (rack_index + 1) % self.names.len();
                if let Some(follower) = found {
                    break follower;
                }
            };
            replicas.push(follower);
        }
        self.epoch += 1;
        self.offset += 1;
        debug_assert!(
            distinct(&replicas),
            "placement put two replicas on one broker: {replicas:?}"
        );
        replicas
    }
}

fn distinct(replicas: &[NodeId]) -> bool {
    replicas
        .iter()
        .enumerate()
        .all(|(i, r)| !replicas[..i].contains(r))
}

/// Places `num_partitions` new partitions of `replication_factor` replicas each over `brokers`
/// (see the module doc). Kafka's errors and messages: the factor must be positive, some broker
/// must be unfenced, and there must be as many usable brokers as replicas.
pub fn place(
    brokers: &[UsableBroker],
    num_partitions: usize,
    replication_factor: i32,
    entropy: &mut dyn Entropy,
) -> Result<Vec<Assignment>, PlacementError> {
    if replication_factor <= 0 {
        return Err(PlacementError(format!(
            "Invalid replication factor {replication_factor}: the replication factor must be positive."
        )));
    }
    let mut racks = RackList::new(brokers, entropy);
    if racks.unfenced == 0 {
        return Err(PlacementError(
            "All brokers are currently fenced.".to_string(),
        ));
    }
    let factor = replication_factor as usize;
    if factor > racks.total {
        return Err(PlacementError(format!(
            "The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
            racks.total
        )));
    }
    Ok((0..num_partitions)
        .map(|_| racks.place(factor, entropy))
        .collect())
}

/// Checks one explicit replica assignment as Kafka's `validateManualPartitionAssignment` does
/// (INVALID_REPLICA_ASSIGNMENT): not empty, every broker registered, no broker twice, and as
/// many replicas as the other partitions (`replication_factor`, when known).
pub fn validate_assignment(
    image: &ClusterImage,
    assignment: &[NodeId],
    replication_factor: Option<usize>,
) -> Result<(), String> {
    if assignment.is_empty() {
        return Err("The manual partition assignment includes an empty replica list.".to_string());
    }
    let mut sorted = assignment.to_vec();
    sorted.sort_unstable();
    for (i, broker) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(broker) {
            return Err(format!(
                "The manual partition assignment includes broker {broker}, but no such broker is registered."
            ));
        }
        if i > 0 && sorted[i - 1] == *broker {
            return Err(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            ));
        }
    }
    if let Some(factor) = replication_factor {
        if sorted.len() != factor {
            return Err(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {factor} replica(s).",
                sorted.len()
            ));
        }
    }
    Ok(())
}
