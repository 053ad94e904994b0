#!/bin/sh
# Tribune's Kafka broker (KRaft, one node) for compose, run in the apache/kafka image.
#
# Every listener authenticates and ACLs are enforced: clients use SASL/SCRAM-SHA-512 (one
# user per Tribune service, plus "admin"), the controller listener SASL/PLAIN with its own
# secret (anyone reaching it would otherwise act as a super user). Nothing is allowed
# without an ACL; kafka-setup applies them (setup.sh, acls.sh).
#
# Plain settings come from the KAFKA_* environment as with Kafka's own image
# (KAFKA_LOG_DIRS -> log.dirs; "__" -> "_", "___" -> "-"); secrets from:
#   BROKER_ADMIN_PASSWORD       the super user "admin" (inter-broker, healthcheck, setup)
#   BROKER_CONTROLLER_PASSWORD  the controller listener's PLAIN user "controller"
#   SCRAM_USER_<NAME>=<password>  a SCRAM user <name> (lower case), created at format time
# Passwords are written into JAAS strings: letters, digits, "-" and "_" only
# (openssl rand -hex 32).
set -eu
: "${CLUSTER_ID:?}" "${BROKER_ADMIN_PASSWORD:?}" "${BROKER_CONTROLLER_PASSWORD:?}"
KAFKA_HOME="${KAFKA_HOME:-/opt/kafka}"
CONFIG_DIR="${TRIBUNE_KAFKA_CONFIG_DIR:-$KAFKA_HOME/config}"
PROPS="$CONFIG_DIR/tribune-server.properties"
ADMIN_CONFIG="$CONFIG_DIR/tribune-admin.properties"

for secret in "$BROKER_ADMIN_PASSWORD" "$BROKER_CONTROLLER_PASSWORD"; do
  case "$secret" in *[!A-Za-z0-9_-]*) echo "broker passwords: letters, digits, - and _ only" >&2; exit 1;; esac
done

# KAFKA_FOO_BAR=x -> foo.bar=x (the JVM's own variables are not properties)
env | grep '^KAFKA_' \
  | grep -v -e '^KAFKA_HEAP_OPTS=' -e '^KAFKA_OPTS=' -e '^KAFKA_HOME=' \
    -e '^KAFKA_LOG4J_OPTS=' -e '^KAFKA_JVM_PERFORMANCE_OPTS=' -e '^KAFKA_GC_LOG_OPTS=' \
    -e '^KAFKA_JMX_OPTS=' -e '^KAFKA_DEBUG=' \
  | while IFS='=' read -r name value; do
      key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' \
        | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
      printf '%s=%s\n' "$key" "$value"
    done > "$PROPS"

scram='org.apache.kafka.common.security.scram.ScramLoginModule required'
cat >> "$PROPS" <<PROPERTIES
# --- authentication and authorization (deploy/compose/kafka/start.sh)
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=$scram username="admin" password="$BROKER_ADMIN_PASSWORD";
listener.name.host.scram-sha-512.sasl.jaas.config=$scram;
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$BROKER_CONTROLLER_PASSWORD" user_controller="$BROKER_CONTROLLER_PASSWORD";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
PROPERTIES

# The client configuration of the super user, for the healthcheck and kafka-setup.
cat > "$ADMIN_CONFIG" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$scram username="admin" password="$BROKER_ADMIN_PASSWORD";
PROPERTIES
chmod 600 "$PROPS" "$ADMIN_CONFIG"

# First start only (--ignore-formatted): format the storage with the SCRAM users, so the
# broker can authenticate its own inter-broker connection from the first second.
set -- --add-scram "SCRAM-SHA-512=[name=admin,password=$BROKER_ADMIN_PASSWORD]"
for entry in $(env | grep '^SCRAM_USER_' | cut -d= -f1); do
  user=$(printf '%s' "${entry#SCRAM_USER_}" | tr 'A-Z' 'a-z')
  password=$(printenv "$entry")
  case "$password" in ''|*[!A-Za-z0-9_-]*) echo "$entry: letters, digits, - and _ only" >&2; exit 1;; esac
  set -- "$@" --add-scram "SCRAM-SHA-512=[name=$user,password=$password]"
done
"$KAFKA_HOME/bin/kafka-storage.sh" format --config "$PROPS" --cluster-id "$CLUSTER_ID" \
  --ignore-formatted "$@"

exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$PROPS"
