#!/usr/bin/env bash
# Runs librdkafka's own integration test suite against a Faultline broker.
#
#   tests/librdkafka/run.sh                  # every test in allowlist.txt
#   tests/librdkafka/run.sh 0017 0081        # just these (allow-listed or not)
#   tests/librdkafka/run.sh --build-only     # build the test runner and the broker, then stop
#
# The suite's sources ship inside the rdkafka-sys crate (librdkafka/tests/). The test runner is
# built once into $CARGO_TARGET_DIR/librdkafka-tests/<version>/ (default target dir:
# <repo>/target): when cargo has already built librdkafka for the `rdkafka` dev-dependency
# (`cargo test -p faultline --test rdkafka_admin --no-run`), that configured and built tree is
# copied and only tests/ is compiled (about 2-3 minutes on 2 cores); otherwise librdkafka is
# configured and built from the registry source first (several minutes more).
#
# Each run starts `faultline broker` (built with `cargo build -p faultline-cli --bin faultline`) on a
# free 127.0.0.1 port with a fresh data directory and the suite's default scenario (topic
# auto-creation on, 4 partitions per auto-created topic), writes test.conf pointing at it, and runs
# each test on its own (`TESTS=<n> test-runner -p1 -Q -V <version>`), under a time limit, with
# its output in $RUN_DIR/<n>.log. A broker that died is reported and restarted for the next test.
#
# Environment:
#   CARGO_TARGET_DIR      where cargo builds and where the runner is cached
#   RDK_TEST_TIMEOUT      seconds per test (default 300)
#   RDK_BROKER_VERSION    broker version the runner assumes for TEST_BRKVER gates (default 3.9.0)
#   RDK_RUNNER_ARGS       extra test-runner arguments for every test (default -Q: quick mode)
#   TEST_LEVEL, TEST_DEBUG, SUBTESTS   passed through to the runner (see its README)
#   FAULTLINE_BIN         use this broker binary instead of building one
#   RUN_DIR               where logs go (default: a new directory under the cache)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TIMEOUT=${RDK_TEST_TIMEOUT:-300}
BROKER_VERSION=${RDK_BROKER_VERSION:-3.9.0}
RUNNER_ARGS=${RDK_RUNNER_ARGS:--Q}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# --- the librdkafka source ------------------------------------------------------------------
SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-*/librdkafka 2>/dev/null | sort -V | tail -1)
[ -n "$SRC" ] || die "no rdkafka-sys source in the cargo registry: run cargo test -p faultline --test rdkafka_admin --no-run first"
VERSION=$(basename "$(dirname "$SRC")")            # rdkafka-sys-4.10.0+2.12.1
CACHE=$TARGET/librdkafka-tests/$VERSION
RUNNER=$CACHE/tests/test-runner

build_runner() {
    local started=$SECONDS built
    rm -rf "$CACHE"
    mkdir -p "$(dirname "$CACHE")"
    # The newest librdkafka that cargo configured and built from this same source.
    built=$(ls -td "$TARGET"/*/build/rdkafka-sys-*/out 2>/dev/null | while read -r d; do
        if [ -f "$d/src/librdkafka.a" ] && [ -f "$d/src-cpp/librdkafka++.a" ] && [ -f "$d/Makefile.config" ]; then
            echo "$d"; break
        fi
    done || true)
    if [ -n "$built" ]; then
        log "reusing the librdkafka cargo built in $built"
        cp -a "$built" "$CACHE"            # keeps mtimes: make will not rebuild the libraries
    else
        log "no cargo-built librdkafka under $TARGET: configuring and building $SRC"
        cp -a "$SRC" "$CACHE"
        (cd "$CACHE" && ./configure --disable-ssl --disable-gssapi --disable-curl --disable-zstd \
            && make -j"$(nproc)" libs) >"$CACHE.build.log" 2>&1 || die "librdkafka build failed: $CACHE.build.log"
        log "librdkafka built in $((SECONDS - started)) s"
    fi
    log "building the test runner"
    make -C "$CACHE/tests" -j"$(nproc)" test-runner >"$CACHE/tests/build.log" 2>&1 \
        || die "test runner build failed: $CACHE/tests/build.log"
    log "test runner ready in $((SECONDS - started)) s: $RUNNER"
}

[ -x "$RUNNER" ] || build_runner

# --- the broker -----------------------------------------------------------------------------
if [ -z "${FAULTLINE_BIN:-}" ]; then
    log "building the broker"
    (cd "$ROOT" && cargo build -q -p faultline-cli --bin faultline)
    FAULTLINE_BIN=$TARGET/debug/faultline
fi
[ -x "$FAULTLINE_BIN" ] || die "no broker binary at $FAULTLINE_BIN"

[ "${1:-}" = "--build-only" ] && exit 0

# --- which tests ----------------------------------------------------------------------------
# allowlist.txt: "<number> [runner args]  # why"; lines starting with # are excluded tests.
declare -a TESTS=() ARGS=()
if [ $# -gt 0 ]; then
    for t in "$@"; do
        line=$(grep -E "^$t( |$)" "$HERE/allowlist.txt" | sed 's/#.*//' || true)
        TESTS+=("$t"); ARGS+=("$(echo "$line" | cut -s -d' ' -f2-)")
    done
else
    while read -r t rest; do
        TESTS+=("$t"); ARGS+=("$rest")
    done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/allowlist.txt")
fi

RUN_DIR=${RUN_DIR:-$CACHE/runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN_DIR"
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/faultline-librdkafka.XXXXXX")
BROKER_PID=

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The suite's "default" scenario (tests/scenarios/default.json): auto-created topics get
# 4 partitions.
cat >"$RUN_DIR/broker.toml" <<EOF
auto-create-topics = true
num-partitions = 4
EOF

start_broker() {
    PORT=$(free_port)
    "$FAULTLINE_BIN" broker --config "$RUN_DIR/broker.toml" --listen "127.0.0.1:$PORT" \
        --data-dir "$DATA_DIR" >>"$RUN_DIR/broker.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            cat >"$CACHE/tests/test.conf" <<EOF
# Written by tests/librdkafka/run.sh
metadata.broker.list=127.0.0.1:$PORT
broker.address.family=v4
EOF
            log "broker pid $BROKER_PID on 127.0.0.1:$PORT, data in $DATA_DIR"
            return 0
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || die "broker exited at start: $RUN_DIR/broker.log"
        sleep 0.1
    done
    die "broker did not listen on 127.0.0.1:$PORT within 10 s"
}

stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID"
        for _ in $(seq 1 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$BROKER_PID" 2>/dev/null && kill -KILL "$BROKER_PID"
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=
}

cleanup() { stop_broker; rm -rf "$DATA_DIR"; }
trap cleanup EXIT

# The runner links librdkafka's shared libraries from the tree it was built in.
export LD_LIBRARY_PATH=$CACHE/src:$CACHE/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
start_broker
declare -a PASSED=() FAILED=() SKIPPED=()
for i in "${!TESTS[@]}"; do
    t=${TESTS[$i]}
    started=$SECONDS
    # shellcheck disable=SC2086 # RUNNER_ARGS and per-test args are word lists
    if (cd "$CACHE/tests" && TESTS=$t timeout --kill-after=10 "$TIMEOUT" \
            ./test-runner -p1 -V "$BROKER_VERSION" $RUNNER_ARGS ${ARGS[$i]}) >"$RUN_DIR/$t.log" 2>&1; then
        if grep -qE "Test ${t}_[^ ]* PASSED" "$RUN_DIR/$t.log"; then
            PASSED+=("$t"); verdict=PASS
        else
            SKIPPED+=("$t"); verdict="SKIP (filtered: see log)"
        fi
    else
        rc=$?
        FAILED+=("$t")
        verdict="FAIL (exit $rc)"
        [ "$rc" = 124 ] && verdict="FAIL (timed out after ${TIMEOUT}s)"
    fi
    printf '%s %-28s %4ss  %s\n' "$t" "$verdict" "$((SECONDS - started))" "$RUN_DIR/$t.log"
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        printf '%s   the broker died during this test (see %s); restarting it\n' "$t" "$RUN_DIR/broker.log"
        wait "$BROKER_PID" 2>/dev/null || true
        start_broker
    fi
done

echo
echo "passed (${#PASSED[@]}): ${PASSED[*]:-}"
echo "failed (${#FAILED[@]}): ${FAILED[*]:-}"
echo "skipped (${#SKIPPED[@]}): ${SKIPPED[*]:-}"
echo "logs: $RUN_DIR"
[ ${#FAILED[@]} -eq 0 ]
