#!/usr/bin/env python3
"""Replication benchmarks on three `faultline broker` processes on loopback (issue 11).

    scripts/bench_replication.py [--bin target/release/faultline] [--seconds 5] [--rounds 2]
                                 [--failovers 5] [--catch-ups 1] [--shutdowns 5]
                                 [--mode all|throughput|catch-up|failover|shutdown]
                                 [--dir /tmp/faultline-bench-replication]

Build the broker first: `cargo build --release -p faultline-cli --bin faultline`. The machine is
shared: say so in NOTICE.md before a run. Four measurements (`--mode all` runs the first three;
`--mode NAME` runs one), on one cluster (node i on its own
client and quorum ports, data in DIR/node-i, log in DIR/node-i.log), default broker settings
(durable flush policy, broker.session.timeout.ms 9 s, heartbeat 2 s):

1. Produce throughput, `faultline bench produce` (1 KiB records, 256 KiB batches, 5 requests in
   flight, one partition, the bench's own pipelined Produce driver) against topics of
   replication factor 1 and 3 with acks=1 and acks=all, in the same run, each on a fresh topic
   (deleted afterwards), alternating the order over --rounds rounds; the median is reported,
   and RF 3 as a ratio of RF 1 with the same acks.
2. Follower catch-up: a follower of an RF 3 topic is killed with SIGKILL, --seconds of acks=1
   produce go to the leader, the follower is started again; the rate is the bytes its log
   gained over the time from its first fetched byte to holding the leader's whole log (its
   segment files' sizes, read every 10 ms), the time from its restart to caught up, and from its
   restart to its return to the ISR (which under the durable policy also waits for its sync),
   and the follower's and the leader's CPU seconds per GB replayed with the load average.
   --catch-ups repeats it (each on a fresh topic).
3. Failover: an acks=all producer (kafka-python, `pip install "kafka-python<3"`, one record at a
   time, retries until delivery.timeout.ms, metadata refreshed on errors) writes an RF 3
   topic (min.insync.replicas 2); the partition's leader is killed with SIGKILL; the time is
   from the kill to the acknowledgement of the first record sent after it, which the new leader
   gave (so it includes the client's own error handling: its retry backoff is 20 ms, its
   reconnect backoff at most 200 ms). The killed node is started again and the ISR refills
   before the next of --failovers runs. Kafka's bound: broker.session.timeout.ms + 1 s.
4. Controlled shutdown (`--mode shutdown`, kafka-python): an idempotent acks=all producer (one
   record at a time) and a consumer run against an RF 3 topic (min.insync.replicas 2); the
   partition's leader gets SIGTERM (controlled shutdown: the controller moves its leaderships
   away before it exits); the measure is the longest gap between two consecutive
   acknowledgements, and between two consecutive consumed records, from 2 s before the signal
   to 3 s after the process exited. The node is started again and the ISR refills before the
   next of --shutdowns runs (each on a fresh topic; with --shutdown-controller-leads, one the
   active controller leads). Issue 11's target: no gap over 1 s.

Prints each run as it ends, then a summary table (markdown).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, binary, directory, nodes=3):
        self.bin = binary
        self.dir = directory
        self.ids = list(range(1, nodes + 1))
        self.ports = {i: free_port() for i in self.ids}
        self.cports = {i: free_port() for i in self.ids}
        self.voters = ",".join(f"{i}@127.0.0.1:{self.cports[i]}" for i in self.ids)
        self.procs = {}
        for i in self.ids:
            self.start(i)
        self.await_formed()

    def addr(self, i):
        return f"127.0.0.1:{self.ports[i]}"

    def bootstrap(self):
        return ",".join(self.addr(i) for i in self.ids)

    def data(self, i):
        return os.path.join(self.dir, f"node-{i}")

    def start(self, i):
        log = open(os.path.join(self.dir, f"node-{i}.log"), "ab")
        self.procs[i] = subprocess.Popen(
            [self.bin, "broker", "--node-id", str(i), "--listen", self.addr(i),
             "--controller-listen", f"127.0.0.1:{self.cports[i]}",
             "--controller-quorum", self.voters, "--data-dir", self.data(i),
             "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        return time.monotonic()

    def kill9(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    def cli(self, *args, via=None):
        run = subprocess.run([self.bin, *args, "--bootstrap-server", via or self.bootstrap()],
                             capture_output=True, text=True)
        return run

    def await_formed(self):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            run = self.cli("cluster", "describe", "--json", via=self.addr(1))
            if run.returncode == 0:
                d = json.loads(run.stdout)
                nodes = d.get("nodes") or []
                if (d.get("active_controller") is not None and len(nodes) == len(self.ids)
                        and all(n.get("fenced") is False for n in nodes)):
                    return
            time.sleep(0.2)
        sys.exit("the cluster did not form; logs in " + self.dir)

    def describe(self, topic, via=None):
        for i in ([via] if via else self.live()):
            run = self.cli("topics", "describe", "--topic", topic, "--json", via=self.addr(i))
            if run.returncode == 0:
                return json.loads(run.stdout)
        return None

    def live(self):
        return [i for i in self.ids if self.procs[i].poll() is None]

    def await_isr(self, topic, size, bound=120, poll=0.1):
        """Waits until every live node shows partition 0 led with an ISR of `size`; its leader."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            views = [self.describe(topic, via=i) for i in self.live()]
            parts = [v["partitions"][0] for v in views if v]
            if (len(parts) == len(views) and parts and all(p["leader"] > 0 for p in parts)
                    and all(len(p["isr"]) == size for p in parts)
                    and len({p["leader"] for p in parts}) == 1):
                return parts[0]["leader"]
            time.sleep(poll)
        sys.exit(f"{topic}: no ISR of {size}: {views}")

    def create(self, topic, rf, configs=()):
        args = ["topics", "create", "--topic", topic, "--partitions", "1",
                "--replication-factor", str(rf)]
        for c in configs:
            args += ["--config", c]
        run = self.cli(*args)
        if run.returncode != 0:
            sys.exit(f"create {topic}: {run.stderr}")
        return self.await_isr(topic, rf)

    def delete(self, topic):
        self.cli("topics", "delete", "--topic", topic)

    def log_bytes(self, i, topic):
        d = os.path.join(self.data(i), f"{topic}-0")
        try:
            return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
                       if f.endswith(".log"))
        except FileNotFoundError:
            return 0


def bench_produce(cluster, topic, acks, seconds):
    run = cluster.cli("bench", "--json", "produce", "--topic", topic, "--acks", acks,
                      "--duration", str(seconds), "--yardstick=false")
    if run.returncode != 0:
        sys.exit(f"bench produce {topic}: {run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])["broker"]


def throughput(cluster, seconds, rounds):
    configs = [(1, "1"), (1, "all"), (3, "1"), (3, "all")]
    results = {c: [] for c in configs}
    for r in range(rounds):
        order = configs if r % 2 == 0 else list(reversed(configs))
        for rf, acks in order:
            topic = f"tp-rf{rf}-acks{acks}-{r}"
            cluster.create(topic, rf)
            b = bench_produce(cluster, topic, acks, seconds)
            results[(rf, acks)].append(b)
            print(f"produce RF {rf} acks={acks}: {b['msgs_per_s']:.0f} msg/s, "
                  f"{b['mb_per_s']} MB/s, p50 {b['latency_us']['p50']:.0f} us, "
                  f"p99 {b['latency_us']['p99']:.0f} us, errors {b['errors']}", flush=True)
            # Followers finish fetching before the next run, which they would slow.
            if rf == 3:
                leader = cluster.await_isr(topic, 3)
                target = cluster.log_bytes(leader, topic)
                deadline = time.monotonic() + 120
                while (any(cluster.log_bytes(i, topic) < target for i in cluster.ids)
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
            cluster.delete(topic)
    return results


def cpu_seconds(pid):
    """User plus system CPU seconds of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def catch_up(cluster, seconds, run=0):
    topic = f"catch-up-{run}"
    leader = cluster.create(topic, 3)
    # Not the active controller: its death would stall CreateTopics (which the bench sends)
    # until a new one is elected, which is not what this measures.
    controller = json.loads(cluster.cli("cluster", "describe", "--json",
                                         via=cluster.addr(leader)).stdout)["active_controller"]
    follower = next(i for i in cluster.ids if i not in (leader, controller))
    cluster.kill9(follower)
    bench_produce(cluster, topic, "1", seconds)
    target = cluster.log_bytes(leader, topic)
    before = cluster.log_bytes(follower, topic)
    started = cluster.start(follower)
    pids = (cluster.procs[follower].pid, cluster.procs[leader].pid)
    first = None
    deadline = time.monotonic() + 300
    while True:
        now = time.monotonic()
        held = cluster.log_bytes(follower, topic)
        if first is None and held > before:
            first = now
            cpu0 = [cpu_seconds(p) for p in pids]
            load = os.getloadavg()[0]
        if held >= target:
            break
        if now > deadline:
            sys.exit(f"follower {follower} holds {held} of {target} bytes after 300 s")
        time.sleep(0.01)
    done = time.monotonic()
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
    cluster.await_isr(topic, 3, poll=0.02)
    in_isr = time.monotonic()
    replayed = target - before
    result = {
        "follower": follower,
        "replayed_bytes": replayed,
        "mb_per_s": replayed / 1e6 / max(done - first, 1e-3),
        "restart_to_caught_up_s": done - started,
        "first_byte_after_restart_s": first - started,
        "restart_to_isr_s": in_isr - started,
        # The machine is shared: CPU per GB replayed says more than the rate alone.
        "follower_cpu_s_per_gb": cpu[0] / (replayed / 1e9),
        "leader_cpu_s_per_gb": cpu[1] / (replayed / 1e9),
        "load_average": load,
    }
    print(f"catch-up: node {follower} replayed {replayed / 1e6:.0f} MB at "
          f"{result['mb_per_s']:.0f} MB/s ({done - first:.2f} s from its first fetched byte; "
          f"{result['restart_to_caught_up_s']:.2f} s from its restart; back in the ISR "
          f"{result['restart_to_isr_s']:.2f} s after its restart; CPU per GB: follower "
          f"{result['follower_cpu_s_per_gb']:.2f} s, leader {result['leader_cpu_s_per_gb']:.2f} s; "
          f"load average {load:.1f})", flush=True)
    cluster.delete(topic)
    return result


def failovers(cluster, runs):
    try:
        from kafka import KafkaProducer
    except ImportError:
        print("failover: skipped, kafka-python is not installed "
              "(pip install \"kafka-python<3\")", flush=True)
        return None
    topic = "failover"
    cluster.create(topic, 3, ["min.insync.replicas=2"])
    producer = KafkaProducer(
        bootstrap_servers=cluster.bootstrap().split(","), acks="all", retries=2**31 - 1,
        delivery_timeout_ms=120000, request_timeout_ms=30000, retry_backoff_ms=20,
        reconnect_backoff_ms=20, reconnect_backoff_max_ms=200, metadata_max_age_ms=500,
        linger_ms=0, max_in_flight_requests_per_connection=1)
    acks = []  # (sent at, acknowledged at), monotonic
    errors = []
    stop = threading.Event()

    def produce():
        n = 0
        while not stop.is_set():
            sent = time.monotonic()
            try:
                producer.send(topic, str(n).encode(), partition=0).get(timeout=130)
                acks.append((sent, time.monotonic()))
            except Exception as e:  # noqa: BLE001 - reported, the bench carries on
                errors.append(f"{type(e).__name__}: {e}")
            n += 1

    thread = threading.Thread(target=produce)
    thread.start()
    times = []
    try:
        for run in range(runs):
            leader = cluster.await_isr(topic, 3)
            steady = len(acks)
            while len(acks) < steady + 200:
                time.sleep(0.01)
            killed_at = time.monotonic()
            cluster.kill9(leader)
            while True:
                after = [a for s, a in acks[steady:] if s > killed_at]
                if after:
                    first = min(after)
                    break
                if time.monotonic() - killed_at > 120:
                    sys.exit(f"no acks=all acknowledgement within 120 s of the kill: {errors[-3:]}")
                time.sleep(0.005)
            took = first - killed_at
            times.append(took)
            print(f"failover {run + 1}: leader {leader} killed, first acks=all acknowledgement "
                  f"{took * 1000:.0f} ms later", flush=True)
            cluster.start(leader)
    finally:
        stop.set()
        thread.join()
        producer.close(timeout=10)
    return {"runs_ms": [round(t * 1000) for t in times], "errors": len(errors),
            "p50_ms": round(statistics.median(times) * 1000),
            "max_ms": round(max(times) * 1000)}


def longest_gap(times, start, end):
    """The longest interval between consecutive events of `times` (monotonic) that overlaps
    [start, end]: from the last event before `start` to the first after `end` (or `end` itself,
    if none came: that silence counts too). Returns the gap and when it began."""
    times = sorted(times)
    before = [t for t in times if t < start][-1:] or [start]
    after = [t for t in times if t > end][:1] or [end]
    points = before + [t for t in times if start <= t <= end] + after
    return max((b - a, a) for a, b in zip(points, points[1:]))


def shutdowns(cluster, runs, controller_leads=False):
    try:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    except ImportError:
        print("shutdown: skipped, kafka-python is not installed "
              "(pip install \"kafka-python<3\")", flush=True)
        return None
    results, errors = [], []
    for run in range(runs):
        # With --shutdown-controller-leads, a fresh topic per run until the active controller
        # leads it: the node shut down is then both (the harder case: the controller moves too).
        for attempt in range(12):
            topic = f"controlled-shutdown-{run}-{attempt}"
            leader = cluster.create(topic, 3, ["min.insync.replicas=2"])
            controller = json.loads(cluster.cli("cluster", "describe", "--json",
                                                via=cluster.addr(leader)).stdout)
            controller = controller["active_controller"]
            if not controller_leads or leader == controller:
                break
        results.append(shutdown_once(cluster, topic, leader, controller, errors, run,
                                     KafkaConsumer, KafkaProducer, TopicPartition))
    ack_gaps = [r["ack_gap_ms"] for r in results]
    read_gaps = [r["read_gap_ms"] for r in results]
    return {"runs": results, "errors": errors,
            "ack_gap_p50_ms": statistics.median(ack_gaps), "ack_gap_max_ms": max(ack_gaps),
            "read_gap_p50_ms": statistics.median(read_gaps), "read_gap_max_ms": max(read_gaps)}


def shutdown_once(cluster, topic, leader, controller, errors, run,
                  KafkaConsumer, KafkaProducer, TopicPartition):
    producer = KafkaProducer(
        bootstrap_servers=cluster.bootstrap().split(","), acks="all", enable_idempotence=True,
        retries=2**31 - 1, delivery_timeout_ms=120000, request_timeout_ms=30000,
        retry_backoff_ms=20, reconnect_backoff_ms=20, reconnect_backoff_max_ms=200,
        metadata_max_age_ms=30000, linger_ms=0, max_in_flight_requests_per_connection=1)
    consumer = KafkaConsumer(
        bootstrap_servers=cluster.bootstrap().split(","), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=100, retry_backoff_ms=20,
        reconnect_backoff_ms=20, reconnect_backoff_max_ms=200, metadata_max_age_ms=30000,
        request_timeout_ms=30000)
    consumer.assign([TopicPartition(topic, 0)])
    acks, consumed = [], []
    stop = threading.Event()

    def produce():
        n = 0
        while not stop.is_set():
            try:
                producer.send(topic, str(n).encode(), partition=0).get(timeout=130)
                acks.append(time.monotonic())
            except Exception as e:  # noqa: BLE001 - reported, the bench carries on
                errors.append(f"produce {type(e).__name__}: {e}")
            n += 1

    def consume():
        while not stop.is_set():
            try:
                batch = consumer.poll(timeout_ms=100)
            except Exception as e:  # noqa: BLE001 - reported, the bench carries on
                errors.append(f"consume {type(e).__name__}: {e}")
                continue
            now = time.monotonic()
            for records in batch.values():
                consumed.extend([now] * len(records))

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    try:
        while len(acks) < 200 or len(consumed) < 200:
            time.sleep(0.01)
        time.sleep(2)
        signalled = time.monotonic()
        cluster.procs[leader].send_signal(signal.SIGTERM)
        cluster.procs[leader].wait(timeout=60)
        exited = time.monotonic()
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        producer.close(timeout=10)
        consumer.close()
    start, end = signalled - 2, exited + 3
    ack_gap, ack_at = longest_gap(list(acks), start, end)
    read_gap, read_at = longest_gap(list(consumed), start, end)
    result = {"leader": leader, "was_controller": leader == controller,
              "exit_ms": round((exited - signalled) * 1000),
              "ack_gap_ms": round(ack_gap * 1000),
              "ack_gap_from_signal_ms": round((ack_at - signalled) * 1000),
              "read_gap_ms": round(read_gap * 1000),
              "read_gap_from_signal_ms": round((read_at - signalled) * 1000)}
    print(f"shutdown {run + 1}: leader {leader}"
          f"{' (the active controller)' if result['was_controller'] else ''} exited "
          f"{result['exit_ms']} ms after SIGTERM; longest gap between acknowledgements "
          f"{result['ack_gap_ms']} ms (began {result['ack_gap_from_signal_ms']} ms after "
          f"the signal), between consumed records {result['read_gap_ms']} ms (began "
          f"{result['read_gap_from_signal_ms']} ms after)", flush=True)
    cluster.start(leader)
    cluster.await_formed()
    cluster.await_isr(topic, 3)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/faultline"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--catch-ups", type=int, default=1)
    ap.add_argument("--shutdowns", type=int, default=5)
    ap.add_argument("--shutdown-controller-leads", action="store_true",
                    help="shut down a leader that is also the active controller")
    ap.add_argument("--mode", default="all",
                    choices=["all", "throughput", "catch-up", "failover", "shutdown"])
    ap.add_argument("--dir", default="/tmp/faultline-bench-replication")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    cluster = Cluster(args.bin, args.dir)
    produced = caught = failed_over = shut = None
    mode = args.mode
    try:
        if mode in ("all", "throughput"):
            produced = throughput(cluster, args.seconds, args.rounds)
        if mode in ("all", "catch-up"):
            caught = [catch_up(cluster, args.seconds, r) for r in range(args.catch_ups)]
        if mode in ("all", "failover"):
            failed_over = failovers(cluster, args.failovers)
        if mode == "shutdown":
            shut = shutdowns(cluster, args.shutdowns, args.shutdown_controller_leads)
    finally:
        cluster.stop_all()
    print()
    if produced:
        med = {c: statistics.median(b["msgs_per_s"] for b in runs)
               for c, runs in produced.items()}
        p99 = {c: statistics.median(b["latency_us"]["p99"] for b in runs)
               for c, runs in produced.items()}
        print("| produce, 1 KiB records, 256 KiB batches | msg/s (median) | p99 latency | "
              "vs RF 1 |")
        print("|---|---|---|---|")
        for rf, acks in [(1, "1"), (1, "all"), (3, "1"), (3, "all")]:
            ratio = med[(rf, acks)] / med[(1, acks)]
            print(f"| RF {rf}, acks={acks} | {med[(rf, acks)]:,.0f} | "
                  f"{p99[(rf, acks)] / 1000:.1f} ms | {ratio:.2f} |")
    if caught:
        rates = [c["mb_per_s"] for c in caught]
        print(f"follower catch-up, {len(caught)} run(s): median "
              f"{statistics.median(rates):.0f} MB/s (runs {[round(r) for r in rates]}); "
              f"restart to caught up {[round(c['restart_to_caught_up_s'], 2) for c in caught]} s, "
              f"to the ISR {[round(c['restart_to_isr_s'], 2) for c in caught]} s")
    if failed_over:
        print(f"failover (kill -9 of the leader to the first acks=all acknowledgement), "
              f"{len(failed_over['runs_ms'])} runs: median {failed_over['p50_ms']} ms, "
              f"max {failed_over['max_ms']} ms; runs {failed_over['runs_ms']}; "
              f"{failed_over['errors']} errors reached the producer")
    if shut:
        print(f"controlled shutdown of the leader, {len(shut['runs'])} runs: longest gap between "
              f"acknowledgements p50 {shut['ack_gap_p50_ms']:.0f} ms, max "
              f"{shut['ack_gap_max_ms']} ms; between consumed records p50 "
              f"{shut['read_gap_p50_ms']:.0f} ms, max {shut['read_gap_max_ms']} ms; "
              f"{len(shut['errors'])} errors reached the clients {shut['errors'][:3]}")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
