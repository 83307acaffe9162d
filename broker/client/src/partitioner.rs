//! Choosing a partition, exactly as Kafka's Java producer does by default.
//!
//! - A record with a key goes to `toPositive(murmur2(key)) % numPartitions`, where `murmur2` is
//!   Kafka's `Utils.murmur2` (seed `0x9747b28c`, Java's signed 32-bit arithmetic) and
//!   `toPositive` clears the sign bit. Keyed records therefore land on the same partitions as
//!   with the Java client, librdkafka's `murmur2_random` partitioner and franz-go's default.
//! - A record without a key uses the *sticky* partition of its topic (KIP-480/KIP-794): every
//!   keyless record goes to the same partition until a batch for it is sealed, then a new
//!   partition is drawn at random (the runtime's seeded randomness), different from the last one
//!   when there is a choice.

use std::collections::BTreeMap;

/// Kafka's `Utils.murmur2`: the 32-bit MurmurHash2 with seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java's switch falls through from 3 to 1; bytes are sign-extended then masked with 0xff.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition of a keyed record among `num_partitions` (> 0).
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> i32 {
    assert!(num_partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % num_partitions
}

/// Sticky partition choice for keyless records, per topic.
#[derive(Debug, Default)]
pub struct StickyPartitioner {
    current: BTreeMap<String, i32>,
}

impl StickyPartitioner {
    /// The partition for the next keyless record of `topic`.
    pub fn partition(&mut self, topic: &str, num_partitions: i32) -> i32 {
        assert!(num_partitions > 0, "a topic has at least one partition");
        match self.current.get(topic) {
            Some(&p) if p < num_partitions => p,
            _ => {
                let p = random_partition(num_partitions, None);
                self.current.insert(topic.to_string(), p);
                p
            }
        }
    }

    /// A batch of `topic`'s sticky partition `sealed` was sealed: move on to another partition.
    pub fn on_batch_sealed(&mut self, topic: &str, sealed: i32, num_partitions: i32) {
        if self.current.get(topic) == Some(&sealed) && num_partitions > 0 {
            let next = random_partition(num_partitions, Some(sealed));
            self.current.insert(topic.to_string(), next);
        }
    }
}

fn random_partition(num_partitions: i32, avoid: Option<i32>) -> i32 {
    let n = num_partitions as u64;
    match avoid {
        Some(last) if num_partitions > 1 => {
            // Uniform over the other n-1 partitions.
            let pick = (broker::random::random_u64() % (n - 1)) as i32;
            if pick >= last {
                pick + 1
            } else {
                pick
            }
        }
        _ => (broker::random::random_u64() % n) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2` (apache/kafka,
    /// clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
    #[test]
    fn murmur2_matches_kafkas_utils_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keyed_partitions_clear_the_sign_bit_instead_of_taking_abs() {
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
        // murmur2("21") is negative: toPositive, then modulo.
        assert_eq!(
            partition_for_key(b"21", 7),
            (-973_932_308i32 & 0x7fff_ffff) % 7
        );
        for n in 1..20 {
            let p = partition_for_key(b"foobar", n);
            assert!((0..n).contains(&p));
        }
    }

    // An async test so that, in the simulation build, the runtime's seeded randomness exists.
    #[tokio::test]
    async fn sticky_partition_holds_until_a_batch_is_sealed_then_moves() {
        let mut sticky = StickyPartitioner::default();
        let first = sticky.partition("t", 4);
        assert_eq!(sticky.partition("t", 4), first);
        sticky.on_batch_sealed("t", first, 4);
        let second = sticky.partition("t", 4);
        assert_ne!(first, second);
        // A single partition topic stays put.
        assert_eq!(sticky.partition("one", 1), 0);
        sticky.on_batch_sealed("one", 0, 1);
        assert_eq!(sticky.partition("one", 1), 0);
    }
}
