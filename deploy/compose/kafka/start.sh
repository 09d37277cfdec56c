#!/bin/bash
# Each compose broker's entrypoint: start Kafka (the image's own /etc/kafka/docker/run). Broker 1 then, over
# its loopback-only PLAINTEXT listener (127.0.0.1:19092, reachable only inside this container), creates the
# SCRAM users (passwords from secrets-init, /run/secrets/kafka/<user>), the topics (KAFKA_NUM_PARTITIONS
# partitions, KAFKA_DEFAULT_REPLICATION_FACTOR replicas, min.insync.replicas KAFKA_MIN_INSYNC_REPLICAS) and the
# ACLs; they live in the cluster's metadata, so the other brokers only wait until the topics exist. Idempotent:
# run on every start. Clients get only the SASL/SCRAM listener (kafka-N:9092) and only what the ACLs below grant
# their user; /tmp/lt-kafka-ready tells the health check that set-up finished.
set -euo pipefail
BIN=/opt/kafka/bin
LOCAL=127.0.0.1:19092
rm -f /tmp/lt-kafka-ready
/etc/kafka/docker/run &
broker=$!
trap 'kill -TERM "$broker"; wait "$broker"' TERM INT

until "$BIN/kafka-broker-api-versions.sh" --bootstrap-server "$LOCAL" >/dev/null 2>&1; do
    kill -0 "$broker" 2>/dev/null || exit 1
    sleep 1
done

if [ "${KAFKA_NODE_ID:-1}" != "1" ]; then
    until "$BIN/kafka-topics.sh" --bootstrap-server "$LOCAL" --list 2>/dev/null | grep -qx 'alerts.dlq'; do
        kill -0 "$broker" 2>/dev/null || exit 1
        sleep 2
    done
    touch /tmp/lt-kafka-ready
    echo "kafka ${KAFKA_NODE_ID}: the cluster's topics are in place"
    wait "$broker"
    exit $?
fi

umask 077
for user in gateway quota saga analytics notifier; do
    printf 'SCRAM-SHA-512=[iterations=8192,password=%s]\n' "$(cat "/run/secrets/kafka/$user")" >/tmp/scram.properties
    "$BIN/kafka-configs.sh" --bootstrap-server "$LOCAL" --alter --entity-type users --entity-name "$user" \
        --add-config-file /tmp/scram.properties >/dev/null
done
rm -f /tmp/scram.properties

TOPICS="usage.recorded quota.commands quota.freeze-requests saga.replies purchase.events quota.events alerts"
for topic in $TOPICS; do
    for name in "$topic" "$topic.dlq"; do
        retention=""  # the broker's default (7 days); dead letters are kept 30 days for an operator to look at
        [ "$name" = "$topic.dlq" ] && retention="--config retention.ms=2592000000"
        # Retried until every broker has joined: replication needs as many brokers as replicas.
        until "$BIN/kafka-topics.sh" --bootstrap-server "$LOCAL" --create --if-not-exists --topic "$name" \
            --partitions "${KAFKA_NUM_PARTITIONS:-12}" --replication-factor "${KAFKA_DEFAULT_REPLICATION_FACTOR:-3}" \
            --config "min.insync.replicas=${KAFKA_MIN_INSYNC_REPLICAS:-2}" $retention >/dev/null; do
            kill -0 "$broker" 2>/dev/null || exit 1
            sleep 2
        done
    done
done

acl() {  # acl USER OPERATION RESOURCE-ARGS...
    local user=$1 op=$2
    shift 2
    "$BIN/kafka-acls.sh" --bootstrap-server "$LOCAL" --add --allow-principal "User:$user" --operation "$op" "$@" >/dev/null
}
for user in gateway quota saga analytics notifier; do
    acl "$user" Describe --topic '*'   # topic names only: ensure_topics lists them at start-up
done
# Who may produce what: only the gateway reports usage, only the saga sends CreditTokens/DebitTokens, only
# analytics asks for freezes (quota also accepts each command type only from its own topic).
acl gateway Write --topic usage.recorded
acl saga Write --topic quota.commands --topic purchase.events --topic saga.replies.dlq
acl analytics Write --topic alerts --topic quota.freeze-requests --topic usage.recorded.dlq
acl quota Write --topic saga.replies --topic quota.events --topic usage.recorded.dlq --topic quota.commands.dlq \
    --topic quota.freeze-requests.dlq
acl notifier Write --topic purchase.events.dlq --topic alerts.dlq --topic quota.events.dlq
# Who may consume what, each in its own consumer group.
acl quota Read --topic usage.recorded --topic quota.commands --topic quota.freeze-requests --group quota
acl saga Read --topic saga.replies --group saga
acl analytics Read --topic usage.recorded --group analytics
acl notifier Read --topic purchase.events --topic alerts --topic quota.events --group notifier

touch /tmp/lt-kafka-ready
echo "kafka: SCRAM users, topics and ACLs ready"
wait "$broker"
