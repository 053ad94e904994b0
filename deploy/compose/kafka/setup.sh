#!/bin/sh
# One-shot (the kafka-setup service): brings the broker's SCRAM users and ACLs in line with
# this compose file, every time the stack starts. Tribune's processes wait for it.
#
#   BROKER_ADMIN_PASSWORD           the super user's password (as given to the broker)
#   SCRAM_USER_<NAME>=<password>    each service's SCRAM user (created, or its password reset)
#   KAFKA_BOOTSTRAP                 the broker (default kafka:9092)
#   TOPIC_PREFIX                    the services' TRIBUNE_TOPIC_PREFIX (default: none)
set -eu
: "${BROKER_ADMIN_PASSWORD:?}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"
export KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
export KAFKA_COMMAND_CONFIG="${TMPDIR:-/tmp}/tribune-admin.properties"
umask 077
cat > "$KAFKA_COMMAND_CONFIG" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$BROKER_ADMIN_PASSWORD";
PROPERTIES

for entry in $(env | grep '^SCRAM_USER_' | cut -d= -f1); do
  user=$(printf '%s' "${entry#SCRAM_USER_}" | tr 'A-Z' 'a-z')
  password=$(printenv "$entry")
  case "$password" in ''|*[!A-Za-z0-9_-]*) echo "$entry: letters, digits, - and _ only" >&2; exit 1;; esac
  "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --command-config "$KAFKA_COMMAND_CONFIG" --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[password=$password]" > /dev/null
  echo "SCRAM user $user set"
done

exec sh "$(dirname "$0")/acls.sh"
