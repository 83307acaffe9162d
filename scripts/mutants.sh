#!/usr/bin/env bash
# Mutation testing over the durability-critical code, with the simulation as the test command
# (issue 13). Configuration: .cargo/mutants.toml (which files, the madsim test build);
# the test: sim/tests/mutants.rs (which scenarios, how many seeds).
#
#   scripts/mutants.sh [cargo-mutants options...]
#
# Examples:
#   scripts/mutants.sh --list                          # the mutants, nothing built
#   scripts/mutants.sh -F '^broker/src/log/truncate\.rs:'   # one file (--file would add to,
#                                                        # not narrow, the configured globs)
#   scripts/mutants.sh --shard 3/16                    # one CI machine's share
#   FAULTLINE_MUTANTS_SEEDS=1..6 scripts/mutants.sh    # a bigger seed budget
#
# Environment:
#   FAULTLINE_MUTANTS_SCENARIOS  comma-separated scenario names (default: the list in
#                                sim/tests/mutants.rs)
#   FAULTLINE_MUTANTS_SEEDS      seeds per scenario, A..B (default 1..3)
#   MUTANTS_TIMEOUT              seconds one mutant's simulation may take (default 900)
#   MUTANTS_BUILD_TIMEOUT        seconds one mutant's build may take (default 1800)
#   MUTANTS_OUTPUT               directory that gets mutants.out (default: the repository root)
#
# Writes mutants.out/ (cargo-mutants' own outcomes.json, logs and diffs) and
# mutants.out/report/ (report.md, index.html, summary.json: every mutant, its outcome, and the
# scenario and seed that caught it). Exit: cargo-mutants' own (0 all caught, 2 some missed,
# 3 some timed out, 1 a usage error).
#
# It mutates the tree in place (--in-place, one mutant at a time): the simulation target
# (target/sim) stays warm and only the broker and the sim test rebuild per mutant. So it refuses
# to start with uncommitted changes under broker/src, and checks afterwards that every file was
# restored. Do not edit or commit while it runs.
set -uo pipefail
cd "$(dirname "$0")/.."

# The project's build profile (the same as the warm targets).
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
out=${MUTANTS_OUTPUT:-.}

listing=0
for a in "$@"; do case $a in --list|--list-files) listing=1;; esac; done

if [ $listing = 0 ] && ! git diff --quiet HEAD -- broker/src; then
  echo "error: broker/src has uncommitted changes; --in-place mutation would mix them in" >&2
  exit 1
fi

# --workspace: the mutated files are in the broker package, not the root one. No baseline run:
# the unmutated suite is the ordinary CI's job, and skipping it saves one whole
# test run. So the timeouts are explicit.
cargo mutants --workspace --in-place --baseline=skip \
  --timeout "${MUTANTS_TIMEOUT:-900}" --build-timeout "${MUTANTS_BUILD_TIMEOUT:-1800}" \
  --output "$out" "$@"
rc=$?
[ $listing = 1 ] && exit $rc

if grep -rl "changed by cargo-mutants" broker/src; then
  echo "error: a mutation was left in the files above; git checkout them" >&2
  exit 1
fi
if [ -f "$out/mutants.out/outcomes.json" ]; then
  cargo sim audit --mutants "$out/mutants.out" --out "$out/mutants.out/report" ||
    echo "warning: the mutants report was not written" >&2
fi
exit $rc
