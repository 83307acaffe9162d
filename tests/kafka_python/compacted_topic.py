"""kafka-python against a Faultline broker: a topic created with cleanup.policy=compact is
described as such, refuses a record without a key (INVALID_RECORD) and takes one with a key.

Usage: compacted_topic.py BOOTSTRAP TOPIC. Exit status 0 when every check holds; the failed
check otherwise. Driven by tests/kafka_python.rs.
"""
import sys

from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaError


def main(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="faultline-kafka-python",
                             request_timeout_ms=20000)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        print("ok: create_topics with cleanup.policy=compact")
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {e[0]: e[1] for e in described[0].resources[0][4]}
        if entries.get("cleanup.policy") != "compact":
            sys.exit(f"describe_configs: cleanup.policy is {entries.get('cleanup.policy')!r}")
        print("ok: describe_configs says compact")
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, retries=0, request_timeout_ms=20000)
    try:
        try:
            producer.send(topic, value=b"no key").get(timeout=30)
            sys.exit("a record without a key was accepted by a compacted topic")
        except KafkaError as e:
            if "InvalidRecord" not in type(e).__name__ and "87" not in str(e):
                sys.exit(f"keyless record: expected INVALID_RECORD, got {type(e).__name__}: {e}")
        print("ok: keyless record refused with INVALID_RECORD")
        metadata = producer.send(topic, key=b"k", value=b"v").get(timeout=30)
        if metadata.offset < 0:
            sys.exit(f"keyed record: offset {metadata.offset}")
        print("ok: keyed record accepted")
    finally:
        producer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
