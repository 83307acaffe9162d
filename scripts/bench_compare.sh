#!/usr/bin/env bash
# Same-run comparison of two `faultline` binaries as single brokers (PERFORMANCE.md's "no
# regression" rule: a change may not cost more than 5 % of the single-broker figures).
#
#   scripts/bench_compare.sh OLD_BIN NEW_BIN [ROUNDS]
#
# Each round starts OLD's broker, then NEW's (alternating which goes first), each on a fresh
# data directory, and drives it with NEW's `faultline bench` (the same client for both, so only
# the broker differs), yardsticks off:
#   produce-1k-all   1 KiB records, 256 KiB batches, acks=all, 5 s
#   produce-100-1    100 B records, 16 KiB batches, acks=1, 5 s (its own topic)
#   consume          1 MiB fetches of the 1 KiB topic from its start, 5 s
# and prints every run, then the median of each figure per binary and NEW / OLD.
# Environment: BENCH_DIR (default /tmp/faultline-bench-compare; emptied), BENCH_SECONDS (5).
set -euo pipefail

OLD=${1:?usage: scripts/bench_compare.sh OLD_BIN NEW_BIN [ROUNDS]}
NEW=${2:?usage: scripts/bench_compare.sh OLD_BIN NEW_BIN [ROUNDS]}
ROUNDS=${3:-3}
DIR=${BENCH_DIR:-/tmp/faultline-bench-compare}
SECS=${BENCH_SECONDS:-5}
RESULTS=$(mktemp)
BROKER_PID=

stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID"
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=
}
trap 'stop_broker; rm -f "$RESULTS"' EXIT

# One field of a bench's JSON line.
field() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(d["broker"][sys.argv[1]])' "$1"; }

run_one() {
    local name=$1 bin=$2 port addr
    rm -rf "$DIR" && mkdir -p "$DIR"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    addr=127.0.0.1:$port
    "$bin" broker --listen "$addr" --data-dir "$DIR/data" --log-level warn 2>>"$DIR.$name.log" &
    BROKER_PID=$!
    for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    local p1 p2 c
    p1=$("$NEW" bench --bootstrap-server "$addr" --json produce --duration "$SECS" --acks all \
        --record-size 1024 --batch-size 262144 --yardstick=false | field msgs_per_s)
    p2=$("$NEW" bench --bootstrap-server "$addr" --json produce --duration "$SECS" --acks 1 \
        --record-size 100 --batch-size 16384 --topic bench-small --yardstick=false | field msgs_per_s)
    c=$("$NEW" bench --bootstrap-server "$addr" --json consume --duration "$SECS" \
        --yardstick=false | field mb_per_s)
    stop_broker
    printf '%s %s %s %s\n' "$name" "$p1" "$p2" "$c" | tee -a "$RESULTS"
}

echo "binary produce-1k-all(msg/s) produce-100-1(msg/s) consume(MB/s)"
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
        run_one old "$OLD"; run_one new "$NEW"
    else
        run_one new "$NEW"; run_one old "$OLD"
    fi
done
rm -rf "$DIR"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = ["produce 1 KiB acks=all (msg/s)", "produce 100 B acks=1 (msg/s)", "consume 1 MiB fetches (MB/s)"]
med = {who: [statistics.median(float(r[i + 1]) for r in rows if r[0] == who) for i in range(3)] for who in ("old", "new")}
for i, n in enumerate(names):
    print(f"{n:<34} old {med['old'][i]:>12,.0f}  new {med['new'][i]:>12,.0f}  new/old {med['new'][i] / med['old'][i]:.3f}")
PY
