#!/usr/bin/env bash
# The one test command: formatting, lints in both builds, the normal suite, the simulation suite.
# Usage: scripts/test.sh            (from the repository root)
# Seeds: the simulation suite runs fixed seed ranges; FAULTLINE_SIM_SEEDS=A..B widens the log
# workload sweep, and MADSIM_TEST_SEED picks the seed of #[madsim::test] tests (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "clippy (normal build)"
cargo clippy --workspace --all-targets -- -D warnings

step "clippy (simulation build)"
cargo simclippy --workspace --all-targets -- -D warnings

step "normal test suite"
cargo test --workspace

step "librdkafka's own test suite against the broker (tests/librdkafka/allowlist.txt)"
tests/librdkafka/run.sh

# The short list of cluster.txt (about 2 minutes): tests whose clients use several brokers at
# once. The whole list (about 11 minutes): tests/librdkafka/run.sh --cluster 3
step "librdkafka's own tests against three brokers (tests/librdkafka/cluster.txt, short list)"
tests/librdkafka/run.sh --cluster 3 --short

step "simulation test suite (seeded, with madsim's determinism check)"
MADSIM_TEST_SEED="${MADSIM_TEST_SEED:-1}" MADSIM_TEST_CHECK_DETERMINISM=1 cargo simtest --workspace
