#!/usr/bin/env bash
# Runs librdkafka's own integration test suite against a Faultline broker.
#
#   tests/librdkafka/run.sh                      # every test in allowlist.txt, then local.txt
#   tests/librdkafka/run.sh 0017 0081            # just these (allow-listed or not)
#   tests/librdkafka/run.sh --build-only         # build the test runner and the broker, then stop
#   tests/librdkafka/run.sh --cluster 3          # every test in cluster.txt against three brokers
#   tests/librdkafka/run.sh --cluster 3 --short  # cluster.txt's short list (what CI runs)
#   tests/librdkafka/run.sh --cluster 3 0017     # just these, against three brokers
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
# auto-creation on, 4 partitions per auto-created topic), writes a test.conf pointing at it
# (RDKAFKA_TEST_CONF), and runs each test on its own (`TESTS=<n> test-runner -p1 -V <version>`,
# full mode unless the test's line in the list says `-Q`, with the reason beside it), under a
# time limit, with its output in $RUN_DIR/<n>.log. A broker that died is reported and restarted
# for the next test. Tests run in lanes (RDK_LANES, default 3 on one broker): each lane has its
# own broker, data directory and test.conf, and takes the list's next test when its last ends.
# One run.sh at a time per runner: a second waits.
#
# Cluster mode (`--cluster N` or RDK_CLUSTER=N): N `faultline broker` processes on free ports,
# the first up to 5 of them voters of the metadata quorum (as `faultline cluster up` lays them
# out), with the same broker.toml, data in node-i/ and logs in $RUN_DIR/broker-i.log. test.conf
# lists all of them; tests start once every node is registered and unfenced; requests are
# counted over every node's log; a node that died is restarted on its own ports and data
# directory. Topics get min(3, N) replicas (RDK_REPLICATION_FACTOR), spread over the brokers.
# The default list is cluster.txt (local.txt is not run: it never reaches a broker).
#
# A pass counts only when the test reached the broker: the broker logs each connection's request
# count when it ends (debug, target broker::server), and a test of allowlist.txt (or cluster.txt)
# whose run added no request is reported NOT RUN and fails the suite (quick mode, a skipped
# sub-test or a test that only talks to librdkafka's mock cluster would otherwise "pass" doing
# nothing). Tests that never reach a broker by design (local unit tests, mock-cluster tests) are
# in local.txt: they run after the broker tests and are reported apart, never as broker passes.
#
# Tests that create topics with Kafka's kafka-topics.sh (0077's compacted topics, 0052's
# timestamp types) get kafka/bin/kafka-topics.sh, a shim over `faultline topics` (KAFKA_PATH
# points at kafka/; it refuses any argument it does not know).
#
# Environment:
#   CARGO_TARGET_DIR      where cargo builds and where the runner is cached
#   RDK_TEST_TIMEOUT      seconds per test (default 300)
#   RDK_BROKER_VERSION    broker version the runner assumes for TEST_BRKVER gates (default 3.9.0)
#   RDK_RUNNER_ARGS       extra test-runner arguments for every test (default: none, full mode)
#   TEST_LEVEL, TEST_DEBUG, SUBTESTS   passed through to the runner (see its README)
#   FAULTLINE_BIN         use this broker binary instead of building one
#   RUN_DIR               where logs go (default: a new directory under the cache)
#   RDK_CLUSTER           number of brokers for cluster mode (as --cluster N)
#   RDK_LANES             tests run at once, each lane on brokers of its own (default 3 on one
#                         broker, 1 in cluster mode)
#   RDK_REPLICATION_FACTOR  default-replication-factor of the brokers (replicas of auto-created
#                         topics and of topics created without one); default: 1 on one broker,
#                         min(3, N) in cluster mode, as Kafka's own 3-broker test clusters
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TIMEOUT=${RDK_TEST_TIMEOUT:-300}
BROKER_VERSION=${RDK_BROKER_VERSION:-3.9.0}
RUNNER_ARGS=${RDK_RUNNER_ARGS:-}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# 0: one broker with no quorum flags (a cluster of one); N: N brokers on one metadata quorum.
NODES=${RDK_CLUSTER:-0}
SHORT=0
if [ "${1:-}" = "--cluster" ]; then
    NODES=${2:-}
    shift 2 || true
    if [ "${1:-}" = "--short" ]; then
        SHORT=1
        shift
    fi
fi
[[ "$NODES" =~ ^[0-9]+$ ]] && [ "$NODES" -le 99 ] || die "--cluster takes a number of brokers (1-99), got '$NODES'"

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

# One run at a time per runner: each run has its own brokers and test.conf files, but two runs
# at once would share the machine's cores and make the tests' own timeouts flaky.
exec 9>"$CACHE/run.lock"
if ! flock -n 9; then
    log "another run.sh is using $CACHE: waiting for it"
    flock 9
fi

# --- which tests ----------------------------------------------------------------------------
# allowlist.txt and local.txt: "<number> [runner args]  # why"; lines starting with # are
# excluded tests. KIND says whether a test must reach the broker (broker) or never does (local).
# Cluster mode reads cluster.txt first, for its tests and their arguments.
BROKER_LIST=allowlist
[ "$NODES" -gt 0 ] && BROKER_LIST=cluster
declare -a TESTS=() ARGS=() KIND=()
if [ $# -gt 0 ]; then
    for t in "$@"; do
        kind=broker
        line=$(grep -hE "^$t( |$)" "$HERE/$BROKER_LIST.txt" "$HERE/allowlist.txt" | head -1 | sed 's/#.*//' || true)
        if [ -z "$line" ] && grep -qE "^$t( |$)" "$HERE/local.txt"; then
            kind=local
            line=$(grep -E "^$t( |$)" "$HERE/local.txt" | sed 's/#.*//')
        fi
        TESTS+=("$t"); ARGS+=("$(echo "$line" | cut -s -d' ' -f2-)"); KIND+=("$kind")
    done
else
    lists="allowlist local"
    [ "$NODES" -gt 0 ] && lists=cluster
    for list in $lists; do
        kind=broker; [ $list = local ] && kind=local
        # --short: only the lines whose comment starts with "short:".
        pick='.'
        [ "$SHORT" = 1 ] && pick='#[[:space:]]*short:'
        while read -r t rest; do
            TESTS+=("$t"); ARGS+=("$rest"); KIND+=("$kind")
        done < <(grep -E "$pick" "$HERE/$list.txt" | sed -e 's/#.*//' -e '/^[[:space:]]*$/d')
    done
fi

RUN_DIR=${RUN_DIR:-$CACHE/runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN_DIR"
DATA_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/faultline-librdkafka.XXXXXX")

# Lanes: tests run LANES at a time, each lane with brokers, data and test.conf of its own, taking
# the next test of the list when its last one ends. Most of a test's time is its own waiting
# (timeouts, session expiry, sleeps), so three lanes on two cores take about a third of the wall
# time of one. Three for one broker, one for a cluster (three brokers a lane).
LANES=${RDK_LANES:-$([ "$NODES" -eq 0 ] && echo 3 || echo 1)}
[[ "$LANES" =~ ^[0-9]+$ ]] && [ "$LANES" -ge 1 ] || die "RDK_LANES must be a number of lanes (1 or more), got '$LANES'"
[ "$LANES" -gt "${#TESTS[@]}" ] && LANES=${#TESTS[@]}
[ "$LANES" -ge 1 ] || die "no tests to run"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The suite's "default" scenario (tests/scenarios/default.json): auto-created topics get
# 4 partitions.
# In cluster mode, topics get min(3, N) replicas unless RDK_REPLICATION_FACTOR says otherwise.
REPLICATION_FACTOR=${RDK_REPLICATION_FACTOR:-$(( NODES >= 3 ? 3 : (NODES >= 1 ? NODES : 1) ))}
[[ "$REPLICATION_FACTOR" =~ ^[0-9]+$ ]] && [ "$REPLICATION_FACTOR" -ge 1 ] \
    || die "RDK_REPLICATION_FACTOR must be a number of replicas, got '$REPLICATION_FACTOR'"
cat >"$RUN_DIR/broker.toml" <<EOF
auto-create-topics = true
num-partitions = 4
default-replication-factor = $REPLICATION_FACTOR
EOF
log "topics created without a replication factor get $REPLICATION_FACTOR replicas"

# Node i (from 1): its pid, client port, quorum port and log. One broker: node 1, a new port at
# each start, its log broker.log. A cluster: ports fixed for the whole run (the voters are
# named by address), logs broker-i.log. With several lanes, each lane's logs say its lane
# (broker-lane2.log, broker-lane2-3.log) and its data is in lane-k/ of the data directory.
declare -a PIDS=() PORTS=() CPORTS=() LOGS=() NODE_IDS=()
lay_out_nodes() {
    local lane=$1 tag= i voters
    [ "$LANES" -gt 1 ] && tag=-lane$lane
    DATA_DIR=$DATA_ROOT/lane-$lane
    mkdir -p "$DATA_DIR"
    CONF=$RUN_DIR/test$tag.conf
    LANE_SAY=; [ "$LANES" -gt 1 ] && LANE_SAY="lane $lane: "
    if [ "$NODES" -eq 0 ]; then
        NODE_IDS=(1)
        LOGS[1]=$RUN_DIR/broker$tag.log
    else
        # As `faultline cluster up`: an odd number of voters, at most 5 (1 of 1-2, 3 of 3-4).
        voters=$(( NODES >= 5 ? 5 : (NODES >= 3 ? 3 : 1) ))
        VOTERS=
        for i in $(seq 1 "$NODES"); do
            NODE_IDS+=("$i")
            PORTS[i]=$(free_port)
            CPORTS[i]=$(free_port)
            LOGS[i]=$RUN_DIR/broker$tag-$i.log
            [ "$i" -le "$voters" ] && VOTERS=${VOTERS:+$VOTERS,}$i@127.0.0.1:${CPORTS[i]}
        done
    fi
    for i in "${NODE_IDS[@]}"; do : >>"${LOGS[i]}"; done
}

start_node() {
    local i=$1
    local -a where=()
    if [ "$NODES" -eq 0 ]; then
        PORTS[i]=$(free_port)
        where=(--data-dir "$DATA_DIR")
    else
        where=(--node-id "$i" --controller-listen "127.0.0.1:${CPORTS[i]}"
               --controller-quorum "$VOTERS" --data-dir "$DATA_DIR/node-$i")
    fi
    RUST_LOG=info,broker::server=debug "$FAULTLINE_BIN" broker --config "$RUN_DIR/broker.toml" \
        --listen "127.0.0.1:${PORTS[i]}" "${where[@]}" >>"${LOGS[i]}" 2>&1 &
    PIDS[i]=$!
}

# Is every node registered and unfenced, with an active controller, as the first node that
# answers sees it?
cluster_formed() {
    local i described
    for i in "${NODE_IDS[@]}"; do
        described=$("$FAULTLINE_BIN" cluster describe --json \
            --bootstrap-server "127.0.0.1:${PORTS[i]}" 2>/dev/null) || continue
        printf '%s' "$described" | python3 -c '
import json, sys
d = json.load(sys.stdin)
nodes = d.get("nodes") or []
formed = d.get("active_controller") is not None and len(nodes) == int(sys.argv[1]) \
    and all(n.get("fenced") is False for n in nodes)
sys.exit(0 if formed else 1)' "$NODES"
        return
    done
    return 1
}

# Waits until every node listens (and a cluster has formed), then writes test.conf naming every
# node.
await_brokers() {
    local i listening list=
    for _ in $(seq 1 600); do
        listening=0
        for i in "${NODE_IDS[@]}"; do
            kill -0 "${PIDS[i]}" 2>/dev/null || die "broker node $i exited at start: ${LOGS[i]}"
            (exec 3<>"/dev/tcp/127.0.0.1/${PORTS[i]}") 2>/dev/null && listening=$((listening + 1))
        done
        if [ "$listening" -eq "${#NODE_IDS[@]}" ] && { [ "$NODES" -eq 0 ] || cluster_formed; }; then
            for i in "${NODE_IDS[@]}"; do list=${list:+$list,}127.0.0.1:${PORTS[i]}; done
            # For tests that run kafka-topics.sh (test_kafka_topics()): the shim in kafka/bin
            # does what they ask with the faultline CLI; BROKERS for its --bootstrap-server
            # form, ZK_ADDRESS (the brokers too) for its --zookeeper form.
            export KAFKA_PATH=$HERE/kafka BROKERS=$list ZK_ADDRESS=$list FAULTLINE_BIN
            export RDKAFKA_TEST_CONF=$CONF
            cat >"$CONF" <<EOF
# Written by tests/librdkafka/run.sh
metadata.broker.list=$list
broker.address.family=v4
EOF
            for i in "${NODE_IDS[@]}"; do
                if [ "$NODES" -eq 0 ]; then
                    log "${LANE_SAY}broker pid ${PIDS[i]} on 127.0.0.1:${PORTS[i]}, data in $DATA_DIR"
                else
                    log "${LANE_SAY}broker node $i pid ${PIDS[i]} on 127.0.0.1:${PORTS[i]} (quorum ${CPORTS[i]}), data in $DATA_DIR/node-$i"
                fi
            done
            return 0
        fi
        sleep 0.1
    done
    die "brokers not ready within 60 s: ${LOGS[*]}"
}

stop_brokers() {
    local i pid
    for i in "${NODE_IDS[@]}"; do
        pid=${PIDS[i]:-}
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; fi
    done
    for i in "${NODE_IDS[@]}"; do
        pid=${PIDS[i]:-}
        [ -n "$pid" ] || continue
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        wait "$pid" 2>/dev/null || true
        PIDS[i]=
    done
}

# The runner links librdkafka's shared libraries from the tree it was built in.
export LD_LIBRARY_PATH=$CACHE/src:$CACHE/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# Where each node's log stood when the current test began.
declare -a FROM=()
mark_logs() {
    local i
    for i in "${NODE_IDS[@]}"; do FROM[i]=$(stat -c %s "${LOGS[i]}"); done
}
# Every node's log since mark_logs, without colour codes; in a cluster each line says its node.
logs_since_mark() {
    local i prefix=
    for i in "${NODE_IDS[@]}"; do
        [ "$NODES" -gt 0 ] && prefix="[node $i] "
        tail -c +"$((FROM[i] + 1))" "${LOGS[i]}" | sed -e 's/\x1b\[[0-9;]*m//g' -e "s/^/$prefix/"
    done
}
# Requests the brokers handled on connections that ended since mark_logs.
requests_since_mark() {
    logs_since_mark | awk '
        /connection ended/ { for (i = 1; i <= NF; i++) if ($i ~ /^requests=[0-9]+$/) { sub(/^requests=/, "", $i); n += $i } }
        END { print n + 0 }'
}

# What a failed test leaves for a reader who has only this output: the test's last lines, the
# brokers' warnings and errors since the test began, and the machine's memory and disk.
diagnose() {
    local t=$1 i
    printf '   --- last lines of %s.log\n' "$t"
    sed 's/\x1b\[[0-9;]*m//g' "$RUN_DIR/$t.log" | tail -n 25 | cut -c1-240 | sed 's/^/   | /'
    printf '   --- broker warnings and errors during %s\n' "$t"
    logs_since_mark | grep -E ' (WARN|ERROR) ' | tail -n 25 | cut -c1-240 | sed 's/^/   | /' || true
    for i in "${NODE_IDS[@]}"; do
        printf '   --- broker%s pid %s: %s\n' "$([ "$NODES" -gt 0 ] && echo " node $i")" "${PIDS[i]}" \
            "$(ps -o rss=,vsz=,stat= -p "${PIDS[i]}" 2>/dev/null | awk '{printf "rss %d MiB, vsz %d MiB, state %s", $1/1024, $2/1024, $3}')"
    done
    free -m | sed 's/^/   | /'
    df -h "$DATA_DIR" "$RUN_DIR" | sed 's/^/   | /'
}

# The next test of the list for whichever lane asks first (an index into TESTS), or nothing
# when the list is done.
echo 0 >"$RUN_DIR/.next"
next_test() {
    local n
    {
        flock 8
        n=$(<"$RUN_DIR/.next")
        echo $((n + 1)) >"$RUN_DIR/.next"
    } 8>"$RUN_DIR/.next.lock"
    [ "$n" -lt "${#TESTS[@]}" ] && echo "$n"
}

# Test TESTS[i] on this lane's brokers. Its verdict line (and a failure's diagnosis) is printed
# whole, under a lock, so that lanes' lines never interleave; its outcome goes to .outcomes.
run_test() {
    local i=$1 t=${TESTS[$1]} started=$SECONDS requests verdict outcome rc n restarted
    mark_logs
    # shellcheck disable=SC2086 # RUNNER_ARGS and per-test args are word lists
    if (cd "$CACHE/tests" && TESTS=$t timeout --kill-after=10 "$TIMEOUT" \
            ./test-runner -p1 -V "$BROKER_VERSION" $RUNNER_ARGS ${ARGS[$i]}) >"$RUN_DIR/$t.log" 2>&1; then
        # Connections of the finished runner end within moments; give the broker's log a beat.
        sleep 0.5
        requests=$(requests_since_mark)
        if ! grep -qE "Test ${t}_[^ ]* PASSED" "$RUN_DIR/$t.log"; then
            outcome=SKIPPED; verdict="SKIP (filtered: see log)"
        elif [ "${KIND[$i]}" = local ]; then
            outcome=LOCAL_PASSED; verdict="PASS (local/mock, $requests broker requests)"
        elif [ "$requests" -eq 0 ]; then
            outcome=NOT_RUN; verdict="NOT RUN (passed without a broker request)"
        else
            outcome=PASSED; verdict="PASS ($requests requests)"
        fi
    else
        rc=$?
        outcome=FAILED
        verdict="FAIL (exit $rc)"
        [ "$rc" = 124 ] && verdict="FAIL (timed out after ${TIMEOUT}s)"
    fi
    {
        printf '%s %-44s %4ss  %s\n' "$t" "$verdict" "$((SECONDS - started))" "$RUN_DIR/$t.log"
        if [ "$outcome" = FAILED ]; then
            # CI keeps only this output: show why, and the machine's state, right here.
            diagnose "$t"
        fi
    } >"$RUN_DIR/$t.verdict"
    { flock 8; cat "$RUN_DIR/$t.verdict"; } 8>"$RUN_DIR/.print.lock"
    rm -f "$RUN_DIR/$t.verdict"
    echo "$i $outcome $t" >>"$RUN_DIR/.outcomes"
    restarted=0
    for n in "${NODE_IDS[@]}"; do
        if ! kill -0 "${PIDS[n]}" 2>/dev/null; then
            printf '%s   %sbroker node %s died during this test (see %s); restarting it\n' "$t" "$LANE_SAY" "$n" "${LOGS[n]}"
            wait "${PIDS[n]}" 2>/dev/null || true
            start_node "$n"
            restarted=1
        fi
    done
    [ "$restarted" = 1 ] && await_brokers
    return 0
}

# One lane, in a subshell of its own: brokers up, tests until the list is done, brokers down.
lane() {
    local i
    trap stop_brokers EXIT
    trap 'exit 143' TERM INT
    lay_out_nodes "$1"
    for i in "${NODE_IDS[@]}"; do start_node "$i"; done
    await_brokers
    while i=$(next_test); do run_test "$i"; done
}

declare -a LANE_PIDS=()
cleanup() {
    local pid
    for pid in "${LANE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${LANE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Brokers of a lane killed in the middle of a test.
    pkill -TERM -f -- "--data-dir $DATA_ROOT/" 2>/dev/null || true
    rm -rf "$DATA_ROOT"
}
trap cleanup EXIT
[ "$LANES" -gt 1 ] && log "$LANES lanes: $LANES tests at a time, each lane on brokers of its own"
: >"$RUN_DIR/.outcomes"
for lane_number in $(seq 1 "$LANES"); do
    lane "$lane_number" &
    LANE_PIDS+=("$!")
done
lanes_failed=0
for pid in "${LANE_PIDS[@]}"; do wait "$pid" || lanes_failed=1; done
LANE_PIDS=()

declare -a PASSED=() FAILED=() SKIPPED=() NOT_RUN=() LOCAL_PASSED=()
while read -r _ outcome t; do
    case $outcome in
        PASSED) PASSED+=("$t") ;;
        FAILED) FAILED+=("$t") ;;
        SKIPPED) SKIPPED+=("$t") ;;
        NOT_RUN) NOT_RUN+=("$t") ;;
        LOCAL_PASSED) LOCAL_PASSED+=("$t") ;;
    esac
done < <(sort -n "$RUN_DIR/.outcomes")
# A lane that died (its brokers never came up) leaves tests without an outcome.
declare -a MISSING=()
for t in "${TESTS[@]}"; do
    grep -qE " $t\$" "$RUN_DIR/.outcomes" || MISSING+=("$t")
done

echo
echo "passed against the broker (${#PASSED[@]}): ${PASSED[*]:-}"
echo "failed (${#FAILED[@]}): ${FAILED[*]:-}"
echo "not run: passed without reaching the broker (${#NOT_RUN[@]}): ${NOT_RUN[*]:-}"
echo "skipped by the runner (${#SKIPPED[@]}): ${SKIPPED[*]:-}"
echo "local/mock tests, not broker tests (${#LOCAL_PASSED[@]} passed): ${LOCAL_PASSED[*]:-}"
echo "no outcome: a lane stopped before them (${#MISSING[@]}): ${MISSING[*]:-}"
echo "logs: $RUN_DIR"
[ ${#FAILED[@]} -eq 0 ] && [ ${#NOT_RUN[@]} -eq 0 ] && [ ${#MISSING[@]} -eq 0 ] && [ "$lanes_failed" = 0 ]
