//! Where new partitions' replicas go: Kafka's `StripedReplicaPlacer` in spirit — round-robin over
//! the unfenced, not-shutting-down brokers with a random start, racks alternating when
//! `broker.rack` is set, every replica of a partition on a different broker. Pure.
