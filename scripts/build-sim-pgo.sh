#!/usr/bin/env bash
# The release simulator, optimised with the profile of its own runs (profile-guided optimisation).
# Builds an instrumented simulator, runs it over training seeds of every scenario, merges the
# profile, and builds the optimised simulator with it (both in the `sim-release` profile: fat LTO,
# one codegen unit). The same program as `cargo build --profile sim-release`'s, with the same
# trace for every seed (session 14: all 71 scenarios at seeds 1 and 2), about 40 % cheaper to
# run than `sim-release` alone (README, "The release audit").
#
#   scripts/build-sim-pgo.sh          # then: target/sim-pgo/sim audit scenarios/ --seeds 1..1000 …
#
# Environment:
#   FAULTLINE_PGO_DIR          where the builds, the profile and the binary go (default
#                              target/sim-pgo; the binary is $FAULTLINE_PGO_DIR/sim)
#   FAULTLINE_PGO_SCENARIOS    what the training runs (default scenarios/: every shipped scenario)
#   FAULTLINE_PGO_SEEDS        training seeds (default 1000..1002: outside the seeds the audit and
#                              CI usually run, so a measurement on 1..N is not on trained seeds)
#
# Needs llvm-profdata of the toolchain's own LLVM: `rustup component add llvm-tools`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_INCREMENTAL=0
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  echo "error: $profdata is missing; install it with: rustup component add llvm-tools" >&2
  exit 1
fi
dir=${FAULTLINE_PGO_DIR:-target/sim-pgo}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
scenarios=${FAULTLINE_PGO_SCENARIOS:-scenarios/}
seeds=${FAULTLINE_PGO_SEEDS:-1000..1002}

# `--target` keeps the profiling flags off build scripts and proc macros (cargo applies
# build.rustflags to them too when no target is named). `--cfg madsim` is the simulation build.
build() { # FLAG TARGET_SUBDIR
  cargo build --profile sim-release --target "$host" -p sim --target-dir "$dir/$2" \
    --config "build.rustflags=['--cfg','madsim','$1']" \
    --config "build.rustdocflags=['--cfg','madsim']"
}

echo "==> the instrumented simulator" >&2
rm -rf "$dir/profiles"
mkdir -p "$dir/profiles"
build "-Cprofile-generate=$dir/profiles" instrumented

echo "==> training: sweep $scenarios --seeds $seeds" >&2
# A failing seed trains as well as a passing one: the sweep's verdicts do not matter here (its
# table and progress go to training.log).
LLVM_PROFILE_FILE="$dir/profiles/sim-%p-%m.profraw" \
  "$dir/instrumented/$host/sim-release/sim" sweep "$scenarios" --seeds "$seeds" \
  --jobs "$(nproc)" >"$dir/training.log" 2>&1 || true
if ! compgen -G "$dir/profiles/*.profraw" >/dev/null; then
  echo "error: the training wrote no profile" >&2
  exit 1
fi
"$profdata" merge -o "$dir/profiles/merged.profdata" "$dir/profiles"/*.profraw
# Named by its content: cargo does not watch the file a flag names, so a new profile must be a
# new flag for the optimised build to be rebuilt with it.
sum=$(sha256sum "$dir/profiles/merged.profdata" | cut -c1-16)
mv "$dir/profiles/merged.profdata" "$dir/profiles/sim-$sum.profdata"

echo "==> the optimised simulator" >&2
build "-Cprofile-use=$dir/profiles/sim-$sum.profdata" optimised
cp "$dir/optimised/$host/sim-release/sim" "$dir/sim"
echo "$dir/sim"
