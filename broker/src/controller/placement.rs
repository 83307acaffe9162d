//! Where new partitions' replicas go: round-robin over the brokers not in controlled shutdown
//! with a random start, racks alternating when `broker.rack` is set, every replica of a
//! partition on a different broker, leaders on unfenced brokers only. Pure.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::{Endpoint, MetadataRecord};
    use uuid::Uuid;

    /// A counter: every draw is the next integer, so starts are predictable.
    struct Counting(u128);

    impl Entropy for Counting {
        fn next_u128(&mut self) -> u128 {
            self.0 += 1;
            self.0 - 1
        }
    }

    fn broker(id: NodeId, rack: Option<&str>, fenced: bool) -> UsableBroker {
        UsableBroker {
            id,
            rack: rack.map(String::from),
            fenced,
        }
    }

    #[test]
    fn partitions_are_striped_over_the_brokers_from_a_rotating_start() {
        let brokers: Vec<_> = (1..=3).map(|id| broker(id, None, false)).collect();
        let placed = place(&brokers, 6, 1, &mut Counting(0)).unwrap();
        let leaders: Vec<NodeId> = placed.iter().map(|a| a[0]).collect();
        // Every broker leads two of six partitions, consecutive partitions on different ones.
        for id in 1..=3 {
            assert_eq!(
                leaders.iter().filter(|l| **l == id).count(),
                2,
                "{leaders:?}"
            );
        }
        for pair in leaders.windows(2) {
            assert_ne!(pair[0], pair[1], "{leaders:?}");
        }
    }

    #[test]
    fn replicas_of_a_partition_are_on_distinct_brokers_and_alternate_racks() {
        let brokers = vec![
            broker(1, Some("a"), false),
            broker(2, Some("a"), false),
            broker(3, Some("b"), false),
            broker(4, Some("b"), false),
        ];
        let mut entropy = Counting(7);
        for replicas in place(&brokers, 20, 2, &mut entropy).unwrap() {
            assert_ne!(replicas[0], replicas[1]);
            let rack = |id: NodeId| if id <= 2 { "a" } else { "b" };
            assert_ne!(rack(replicas[0]), rack(replicas[1]), "{replicas:?}");
        }
    }

    #[test]
    fn a_fenced_broker_holds_followers_but_never_leads() {
        let brokers = vec![broker(1, None, false), broker(2, None, true)];
        for replicas in place(&brokers, 10, 2, &mut Counting(3)).unwrap() {
            assert_eq!(replicas[0], 1, "{replicas:?}");
            assert_eq!(replicas[1], 2);
        }
    }

    #[test]
    fn too_few_brokers_are_refused_with_kafkas_message() {
        let brokers = vec![broker(1, None, false)];
        let e = place(&brokers, 1, 3, &mut Counting(0)).unwrap_err();
        assert_eq!(
            e.0,
            "The target replication factor of 3 cannot be reached because only 1 broker(s) are registered."
        );
        let e = place(&[broker(1, None, true)], 1, 1, &mut Counting(0)).unwrap_err();
        assert_eq!(e.0, "All brokers are currently fenced.");
        assert!(place(&brokers, 1, 0, &mut Counting(0)).is_err());
        assert!(place(&[], 1, 1, &mut Counting(0)).is_err());
    }

    #[test]
    fn brokers_in_controlled_shutdown_are_not_usable() {
        let mut image = ClusterImage::empty();
        let register = |id: NodeId, epoch: i64| MetadataRecord::RegisterBroker {
            id,
            incarnation_id: Uuid::from_u128(id as u128),
            epoch,
            endpoint: Endpoint {
                host: "h".into(),
                port: 1,
            },
            controller_endpoint: None,
            rack: None,
        };
        image.apply(0, &[register(1, 0), register(2, 1)]);
        image.apply(
            1,
            &[
                MetadataRecord::UnfenceBroker { id: 1, epoch: 0 },
                MetadataRecord::BrokerShuttingDown { id: 2, epoch: 1 },
            ],
        );
        assert_eq!(usable_brokers(&image), vec![broker(1, None, false)]);
    }

    #[test]
    fn explicit_assignments_name_registered_brokers_once_each_with_one_replication_factor() {
        let mut image = ClusterImage::empty();
        image.apply(
            0,
            &[MetadataRecord::RegisterBroker {
                id: 1,
                incarnation_id: Uuid::from_u128(1),
                epoch: 0,
                endpoint: Endpoint {
                    host: "h".into(),
                    port: 1,
                },
                controller_endpoint: None,
                rack: None,
            }],
        );
        assert_eq!(validate_assignment(&image, &[1], Some(1)), Ok(()));
        assert_eq!(
            validate_assignment(&image, &[1, 9], None).unwrap_err(),
            "The manual partition assignment includes broker 9, but no such broker is registered."
        );
        assert_eq!(
            validate_assignment(&image, &[1, 1], None).unwrap_err(),
            "The manual partition assignment includes the broker 1 more than once."
        );
        assert_eq!(
            validate_assignment(&image, &[1], Some(2)).unwrap_err(),
            "The manual partition assignment includes a partition with 1 replica(s), but this is not consistent with previous partitions, which have 2 replica(s)."
        );
        assert!(validate_assignment(&image, &[], None).is_err());
    }
}
