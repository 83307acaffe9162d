"""kafka-python's admin client against a Faultline broker: list and describe topics, the
cluster and a consumer group. Each asks for authorized operations; the broker has no
authorizer, so each answer must hold every operation that applies to the resource.

Usage: admin_describe.py BOOTSTRAP TOPIC. Exit status 0 when every check holds; the failed
check otherwise. Driven by tests/kafka_python.rs.
"""
import sys

from kafka.admin import KafkaAdminClient

TOPIC_OPERATIONS = {"READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE",
                    "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
CLUSTER_OPERATIONS = {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
                      "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
GROUP_OPERATIONS = {"READ", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {sorted(got)}, want {sorted(want)}")
    print(f"ok: {what}")


def main(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="faultline-kafka-python",
                             request_timeout_ms=20000)
    try:
        topics = admin.list_topics()
        if topic not in topics:
            sys.exit(f"list_topics: {topic} missing from {topics}")
        print(f"ok: list_topics has {topic}")
        described = admin.describe_topics([topic])
        check("describe_topics operations", set(described[0]["authorized_operations"]),
              TOPIC_OPERATIONS)
        cluster = admin.describe_cluster()
        check("describe_cluster operations", set(cluster["authorized_operations"]),
              CLUSTER_OPERATIONS)
        group = admin.describe_consumer_groups(["faultline-kafka-python-group"])[0]
        check("describe_consumer_groups operations", set(group.authorized_operations),
              GROUP_OPERATIONS)
    finally:
        admin.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
