#!/usr/bin/env bash
# Runs librdkafka's own integration test suite against a Faultline broker.
#
#   tests/librdkafka/run.sh                  # every test in allowlist.txt, then local.txt
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
# each test on its own (`TESTS=<n> test-runner -p1 -V <version>`, full mode unless the test's
# line in the list says `-Q`, with the reason beside it), under a time limit, with its output in
# $RUN_DIR/<n>.log. A broker that died is reported and restarted for the next test.
#
# A pass counts only when the test reached the broker: the broker logs each connection's request
# count when it ends (debug, target broker::server), and a test of allowlist.txt whose run added
# no request is reported NOT RUN and fails the suite (quick mode, a skipped sub-test or a test
# that only talks to librdkafka's mock cluster would otherwise "pass" doing nothing). Tests that
# never reach a broker by design (local unit tests, mock-cluster tests) are in local.txt: they
# run after the broker tests and are reported apart, never as broker passes.
#
# Environment:
#   CARGO_TARGET_DIR      where cargo builds and where the runner is cached
#   RDK_TEST_TIMEOUT      seconds per test (default 300)
#   RDK_BROKER_VERSION    broker version the runner assumes for TEST_BRKVER gates (default 3.9.0)
#   RDK_RUNNER_ARGS       extra test-runner arguments for every test (default: none, full mode)
#   TEST_LEVEL, TEST_DEBUG, SUBTESTS   passed through to the runner (see its README)
#   FAULTLINE_BIN         use this broker binary instead of building one
#   RUN_DIR               where logs go (default: a new directory under the cache)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TIMEOUT=${RDK_TEST_TIMEOUT:-300}
BROKER_VERSION=${RDK_BROKER_VERSION:-3.9.0}
RUNNER_ARGS=${RDK_RUNNER_ARGS:-}

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
# allowlist.txt and local.txt: "<number> [runner args]  # why"; lines starting with # are
# excluded tests. KIND says whether a test must reach the broker (broker) or never does (local).
declare -a TESTS=() ARGS=() KIND=()
if [ $# -gt 0 ]; then
    for t in "$@"; do
        kind=broker
        line=$(grep -E "^$t( |$)" "$HERE/allowlist.txt" | sed 's/#.*//' || true)
        if [ -z "$line" ] && grep -qE "^$t( |$)" "$HERE/local.txt"; then
            kind=local
            line=$(grep -E "^$t( |$)" "$HERE/local.txt" | sed 's/#.*//')
        fi
        TESTS+=("$t"); ARGS+=("$(echo "$line" | cut -s -d' ' -f2-)"); KIND+=("$kind")
    done
else
    for list in allowlist local; do
        kind=broker; [ $list = local ] && kind=local
        while read -r t rest; do
            TESTS+=("$t"); ARGS+=("$rest"); KIND+=("$kind")
        done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/$list.txt")
    done
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
    RUST_LOG=info,broker::server=debug "$FAULTLINE_BIN" broker --config "$RUN_DIR/broker.toml" \
        --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >>"$RUN_DIR/broker.log" 2>&1 &
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
# Requests the broker handled on connections that ended after byte $1 of its log.
requests_since() {
    tail -c +"$(($1 + 1))" "$RUN_DIR/broker.log" | sed 's/\x1b\[[0-9;]*m//g' | awk '
        /connection ended/ { for (i = 1; i <= NF; i++) if ($i ~ /^requests=[0-9]+$/) { sub(/^requests=/, "", $i); n += $i } }
        END { print n + 0 }'
}

# What a failed test leaves for a reader who has only this output: the test's last lines, the
# broker's warnings and errors since the test began, and the machine's memory and disk.
diagnose() {
    local t=$1 from=$2
    printf '   --- last lines of %s.log\n' "$t"
    sed 's/\x1b\[[0-9;]*m//g' "$RUN_DIR/$t.log" | tail -n 25 | cut -c1-240 | sed 's/^/   | /'
    printf '   --- broker warnings and errors during %s\n' "$t"
    tail -c +"$((from + 1))" "$RUN_DIR/broker.log" | sed 's/\x1b\[[0-9;]*m//g' \
        | grep -E ' (WARN|ERROR) ' | tail -n 25 | cut -c1-240 | sed 's/^/   | /' || true
    printf '   --- broker pid %s: %s\n' "$BROKER_PID" \
        "$(ps -o rss=,vsz=,stat= -p "$BROKER_PID" 2>/dev/null | awk '{printf "rss %d MiB, vsz %d MiB, state %s", $1/1024, $2/1024, $3}')"
    free -m | sed 's/^/   | /'
    df -h "$DATA_DIR" "$RUN_DIR" | sed 's/^/   | /'
}

declare -a PASSED=() FAILED=() SKIPPED=() NOT_RUN=() LOCAL_PASSED=()
for i in "${!TESTS[@]}"; do
    t=${TESTS[$i]}
    started=$SECONDS
    log_bytes=$(stat -c %s "$RUN_DIR/broker.log")
    # shellcheck disable=SC2086 # RUNNER_ARGS and per-test args are word lists
    if (cd "$CACHE/tests" && TESTS=$t timeout --kill-after=10 "$TIMEOUT" \
            ./test-runner -p1 -V "$BROKER_VERSION" $RUNNER_ARGS ${ARGS[$i]}) >"$RUN_DIR/$t.log" 2>&1; then
        # Connections of the finished runner end within moments; give the broker's log a beat.
        sleep 0.5
        requests=$(requests_since "$log_bytes")
        if ! grep -qE "Test ${t}_[^ ]* PASSED" "$RUN_DIR/$t.log"; then
            SKIPPED+=("$t"); verdict="SKIP (filtered: see log)"
        elif [ "${KIND[$i]}" = local ]; then
            LOCAL_PASSED+=("$t"); verdict="PASS (local/mock, $requests broker requests)"
        elif [ "$requests" -eq 0 ]; then
            NOT_RUN+=("$t"); verdict="NOT RUN (passed without a broker request)"
        else
            PASSED+=("$t"); verdict="PASS ($requests requests)"
        fi
    else
        rc=$?
        FAILED+=("$t")
        verdict="FAIL (exit $rc)"
        [ "$rc" = 124 ] && verdict="FAIL (timed out after ${TIMEOUT}s)"
    fi
    printf '%s %-44s %4ss  %s\n' "$t" "$verdict" "$((SECONDS - started))" "$RUN_DIR/$t.log"
    if [ "${verdict#FAIL}" != "$verdict" ]; then
        # CI keeps only this output: show why, and the machine's state, right here.
        diagnose "$t" "$log_bytes"
    fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        printf '%s   the broker died during this test (see %s); restarting it\n' "$t" "$RUN_DIR/broker.log"
        wait "$BROKER_PID" 2>/dev/null || true
        start_broker
    fi
done

echo
echo "passed against the broker (${#PASSED[@]}): ${PASSED[*]:-}"
echo "failed (${#FAILED[@]}): ${FAILED[*]:-}"
echo "not run: passed without reaching the broker (${#NOT_RUN[@]}): ${NOT_RUN[*]:-}"
echo "skipped by the runner (${#SKIPPED[@]}): ${SKIPPED[*]:-}"
echo "local/mock tests, not broker tests (${#LOCAL_PASSED[@]} passed): ${LOCAL_PASSED[*]:-}"
echo "logs: $RUN_DIR"
[ ${#FAILED[@]} -eq 0 ] && [ ${#NOT_RUN[@]} -eq 0 ]
