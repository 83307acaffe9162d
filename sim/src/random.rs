//! Random streams of their own, one per concern of a run, each derived from the run's seed and
//! a label: the fault plan (`faults`), the brokers' disks (`disks`), each workload process
//! (`workload/<process>`) and each group member's churn (`membership/<process>`).
//!
//! Why not the simulator's one global generator: every draw from it shifts every later draw,
//! so adding a producer (or a client that draws a key) used to change a seed's fault plan, and
//! a failing seed stopped meaning the same faults after an unrelated change of the workload.
//! With a stream per concern, a seed's fault plan depends only on the faults and the cluster's
//! shape. The simulator's own generator still decides scheduling and the network; that is its
//! business.

use madsim::rand::{Error, RngCore};

/// SplitMix64 seeded from (seed, label): small, fast, and good enough for drawing faults and
/// workload choices (it is not the simulator's generator, so it never disturbs its draws).
#[derive(Clone, Debug)]
pub struct Stream {
    state: u64,
}

impl Stream {
    pub fn new(seed: u64, label: &str) -> Stream {
        // FNV-1a over the seed and the label, so that labels never share a stream.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in seed.to_le_bytes().iter().chain(label.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Stream { state: hash }
    }
}

impl RngCore for Stream {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use madsim::rand::Rng;

    #[test]
    fn one_seed_and_label_always_give_the_same_stream_and_labels_give_different_ones() {
        let draw = |seed, label| -> Vec<u64> {
            let mut s = Stream::new(seed, label);
            (0..4).map(|_| s.gen_range(0..1_000_000)).collect()
        };
        assert_eq!(draw(7, "faults"), draw(7, "faults"));
        assert_ne!(draw(7, "faults"), draw(7, "workload/1"));
        assert_ne!(draw(7, "faults"), draw(8, "faults"));
    }
}
