"""kafka-python's producer through a partition leader's failover (broker/cli/tests/rdkafka_failover.rs).

    failover_produce.py BOOTSTRAP TOPIC PARTITIONS STOP_FILE

Sends record n (value "n") to partition n % PARTITIONS, about one a millisecond, with acks=all,
idempotence and a delivery timeout longer than the failover, until STOP_FILE exists; then flushes.
Prints one line per outcome as it happens: "ack N PARTITION OFFSET" or "err N ERROR", and at the
end "sent N".
"""
import os
import sys
import time

from kafka import KafkaProducer

bootstrap, topic, partitions, stop_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
producer = KafkaProducer(
    bootstrap_servers=bootstrap.split(","),
    acks="all",
    enable_idempotence=True,
    retries=2**31 - 1,
    retry_backoff_ms=50,
    delivery_timeout_ms=120000,
    request_timeout_ms=30000,
    linger_ms=5,
    metadata_max_age_ms=1000,
)


def on_ack(n):
    return lambda md: print(f"ack {n} {md.partition} {md.offset}", flush=True)


def on_err(n):
    return lambda e: print(f"err {n} {type(e).__name__}: {e}", flush=True)


n = 0
while not os.path.exists(stop_file):
    future = producer.send(topic, value=str(n).encode(), partition=n % partitions)
    future.add_callback(on_ack(n))
    future.add_errback(on_err(n))
    n += 1
    time.sleep(0.001)
producer.flush(timeout=150)
producer.close(timeout=10)
print(f"sent {n}", flush=True)
