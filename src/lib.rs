//! The `faultline` root package owns the workspace's integration tests (`tests/`) and
//! benchmarks (`benches/`). The broker lives in the `broker` crate, fault injection in `chaos`
//! and the simulation harness in `sim`; see README.md.
