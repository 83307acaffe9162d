#!/usr/bin/env bash
# kafka-topics.sh for librdkafka's test suite, backed by the `faultline topics` CLI.
#
# librdkafka's tests call `$KAFKA_PATH/bin/kafka-topics.sh` (test_kafka_topics() in
# tests/test.c) to create, alter and delete topics the Admin API path does not cover (0077's
# compacted topics, 0052's timestamp types, 0045's partition growth). tests/librdkafka/run.sh
# points KAFKA_PATH at this directory and exports FAULTLINE_BIN and BROKERS. The forms taken:
#
#   --bootstrap-server HOST:PORT[,...] | --zookeeper HOST:PORT[,...]   (the broker to talk to:
#                                run.sh sets ZK_ADDRESS to the brokers too, for the old form)
#   --create --topic T [--partitions N] [--replication-factor N] [--config K=V]... [--if-not-exists]
#   --alter  --topic T [--partitions N] [--config K=V]... [--delete-config K]...
#   --delete --topic T [--if-exists]
#   --list
#   --describe [--topic T]
#
# Anything else is refused with exit status 2 and a message: a test must never believe a
# topic was set up the way it asked when it was not.
set -euo pipefail

die() { printf 'kafka-topics.sh (faultline shim): %s\n' "$*" >&2; exit 2; }

bin=${FAULTLINE_BIN:-}
[ -n "$bin" ] && [ -x "$bin" ] || die "FAULTLINE_BIN must name the faultline binary (run.sh exports it)"

all_args="$*"
action= bootstrap= topic= partitions= replication= if_exists=0 if_not_exists=0
declare -a configs=() deleted=()
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case $1 in
        --bootstrap-server|--zookeeper) need "$@"; bootstrap=$2; shift 2 ;;
        --create|--alter|--delete|--list|--describe)
            [ -z "$action" ] || die "one action at a time: $action and $1"
            action=${1#--}; shift ;;
        --topic) need "$@"; topic=$2; shift 2 ;;
        --partitions) need "$@"; [[ $2 =~ ^[0-9]+$ ]] || die "--partitions takes a number, got '$2'"
            partitions=$2; shift 2 ;;
        --replication-factor) need "$@"; [[ $2 =~ ^[0-9]+$ ]] || die "--replication-factor takes a number, got '$2'"
            replication=$2; shift 2 ;;
        --config) need "$@"; [[ $2 == ?*=* ]] || die "--config takes KEY=VALUE, got '$2'"
            configs+=("$2"); shift 2 ;;
        --delete-config) need "$@"; deleted+=("$2"); shift 2 ;;
        --if-exists) if_exists=1; shift ;;
        --if-not-exists) if_not_exists=1; shift ;;
        *) die "unsupported argument '$1' (in: $all_args)" ;;
    esac
done
[ -n "$action" ] || die "no action (--create, --alter, --delete, --list or --describe)"
[ -n "$bootstrap" ] || die "no --bootstrap-server (or --zookeeper)"
# The CLI connects to one broker and learns the rest from its metadata.
server=${bootstrap%%,*}
[ -n "$topic" ] || [ "$action" = list ] || [ "$action" = describe ] || die "--$action needs --topic"

exists() { "$bin" topics list --bootstrap-server "$server" | grep -qxF "$topic"; }

args=(topics "$action" --bootstrap-server "$server")
[ -n "$topic" ] && args+=(--topic "$topic")
case $action in
    create)
        [ ${#deleted[@]} -eq 0 ] || die "--delete-config is for --alter"
        [ $if_exists = 0 ] || die "--if-exists is for --alter and --delete"
        if [ $if_not_exists = 1 ] && exists; then exit 0; fi
        [ -n "$partitions" ] && args+=(--partitions "$partitions")
        [ -n "$replication" ] && args+=(--replication-factor "$replication")
        for c in "${configs[@]}"; do args+=(--config "$c"); done ;;
    alter)
        [ -z "$replication" ] || die "--replication-factor cannot be altered (kafka-reassign-partitions.sh does that)"
        [ -n "$partitions" ] || [ ${#configs[@]} -gt 0 ] || [ ${#deleted[@]} -gt 0 ] || die "--alter needs --partitions or --config"
        if [ $if_exists = 1 ] && ! exists; then exit 0; fi
        [ -n "$partitions" ] && args+=(--partitions "$partitions")
        for c in "${configs[@]}"; do args+=(--add-config "$c"); done
        for c in "${deleted[@]}"; do args+=(--delete-config "$c"); done ;;
    delete)
        [ -z "$partitions$replication" ] && [ ${#configs[@]} -eq 0 ] && [ ${#deleted[@]} -eq 0 ] \
            || die "--delete takes only --topic"
        if [ $if_exists = 1 ] && ! exists; then exit 0; fi ;;
    list|describe)
        [ -z "$partitions$replication" ] && [ ${#configs[@]} -eq 0 ] && [ ${#deleted[@]} -eq 0 ] \
            || die "--$action takes only --topic" ;;
esac
printf 'kafka-topics.sh (faultline shim): faultline %s\n' "${args[*]}" >&2
exec "$bin" "${args[@]}"
