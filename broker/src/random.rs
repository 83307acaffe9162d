//! The runtime's randomness: seeded by the simulator in simulation builds, the OS otherwise.
//! Broker code draws random numbers only here (clippy forbids `rand::thread_rng` elsewhere).

/// A random `u128` (topic ids, cluster id).
#[allow(clippy::disallowed_methods)]
pub fn random_u128() -> u128 {
    madsim::rand::random::<u128>()
}

/// A random `u64`.
#[allow(clippy::disallowed_methods)]
pub fn random_u64() -> u64 {
    madsim::rand::random::<u64>()
}
