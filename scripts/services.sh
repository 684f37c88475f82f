#!/usr/bin/env bash
# Installs and starts the services goalworker needs, on loopback, without Docker:
#   Apache Kafka (KRaft, single node) from the broker jars Maven resolves from Maven Central,
#   PostgreSQL from Debian's packages, in a private cluster.
# Usage: scripts/services.sh up|down|status|env
# A service given by GOALWORKER_KAFKA_BOOTSTRAP or GOALWORKER_DATABASE_URL is used, not started.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${SERVICES_DIR:-$ROOT/.services}
LOGS=$STATE/logs
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
PG_PORT=${PG_PORT:-55432}
DEFAULT_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
DEFAULT_DB_URL=postgresql+psycopg://goalworker:goalworker@127.0.0.1:$PG_PORT/goalworker

say() { echo "services: $*"; }
die() { echo "services: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# -- Kafka ---------------------------------------------------------------------------------

kafka_libs() {
  if ! ls "$STATE/kafka/libs"/kafka_2.13-*.jar >/dev/null 2>&1; then
    say "kafka: resolving broker jars from Maven Central (first run only)"
    mvn -q -B -Dmaven.repo.local="$STATE/m2" -f "$ROOT/scripts/kafka/pom.xml" \
      dependency:copy-dependencies -DoutputDirectory="$STATE/kafka/libs" -DincludeScope=runtime
  fi
}

kafka_config() {
  local dir=$STATE/kafka
  mkdir -p "$dir/data" "$LOGS"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=8388608
PROPS
}

kafka_java() {
  java -Xms256m -Xmx1g -Dkafka.logs.dir="$LOGS" \
    -Dlog4j.configuration="file:$ROOT/scripts/kafka/log4j.properties" \
    -cp "$STATE/kafka/libs/*" "$@"
}

kafka_up() {
  if [ -n "${GOALWORKER_KAFKA_BOOTSTRAP:-}" ] && [ "$GOALWORKER_KAFKA_BOOTSTRAP" != "$DEFAULT_BOOTSTRAP" ]; then
    say "kafka: using $GOALWORKER_KAFKA_BOOTSTRAP (GOALWORKER_KAFKA_BOOTSTRAP), starting none"
    return
  fi
  if port_open "$KAFKA_PORT"; then
    say "kafka: already answering on 127.0.0.1:$KAFKA_PORT"
    return
  fi
  command -v java >/dev/null || die "kafka: java is missing (Java 17 is needed)"
  command -v mvn >/dev/null || die "kafka: mvn is missing (Maven resolves the broker jars)"
  kafka_libs
  kafka_config
  if [ ! -f "$STATE/kafka/data/meta.properties" ]; then
    say "kafka: formatting storage in $STATE/kafka/data"
    kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
      -c "$STATE/kafka/server.properties" >> "$LOGS/kafka-format.log" 2>&1 \
      || die "kafka: formatting failed, see $LOGS/kafka-format.log"
  fi
  say "kafka: starting on 127.0.0.1:$KAFKA_PORT, log: $LOGS/kafka.log"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Dkafka.logs.dir="$LOGS" \
    -Dlog4j.configuration="file:$ROOT/scripts/kafka/log4j.properties" \
    -cp "$STATE/kafka/libs/*" kafka.Kafka "$STATE/kafka/server.properties" \
    > "$LOGS/kafka.out" 2>&1 &
  echo $! > "$STATE/kafka/pid"
  for _ in $(seq 1 120); do
    if grep -q "Kafka Server started" "$LOGS/kafka.log" 2>/dev/null && port_open "$KAFKA_PORT"; then
      say "kafka: ready"
      return
    fi
    kill -0 "$(cat "$STATE/kafka/pid")" 2>/dev/null || die "kafka: exited at start, see $LOGS/kafka.out and $LOGS/kafka.log"
    sleep 0.5
  done
  die "kafka: not ready after 60s, see $LOGS/kafka.log"
}

kafka_down() {
  local pidfile=$STATE/kafka/pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "kafka: stopping"
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 60); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# -- PostgreSQL ----------------------------------------------------------------------------

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_up() {
  if [ -n "${GOALWORKER_DATABASE_URL:-}" ] && [ "$GOALWORKER_DATABASE_URL" != "$DEFAULT_DB_URL" ]; then
    say "postgres: using GOALWORKER_DATABASE_URL, starting none"
    return
  fi
  local bin data=$STATE/pg/data
  bin=$(pg_bin)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    say "postgres: installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql >/dev/null
    bin=$(pg_bin)
  fi
  mkdir -p "$STATE/pg" "$LOGS"
  if [ "$(id -u)" = 0 ]; then chown postgres "$STATE/pg" "$LOGS"; chmod 755 "$STATE" "$STATE/pg"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    say "postgres: creating a cluster in $data"
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      >> "$LOGS/postgres-initdb.log" 2>&1 || die "postgres: initdb failed, see $LOGS/postgres-initdb.log"
  fi
  if as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "postgres: already running on 127.0.0.1:$PG_PORT"
  else
    say "postgres: starting on 127.0.0.1:$PG_PORT, log: $LOGS/postgres.log"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$LOGS/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c max_connections=200" start >/dev/null \
      || die "postgres: did not start, see $LOGS/postgres.log"
  fi
  as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qtAc \
    "SELECT 1 FROM pg_roles WHERE rolname='goalworker'" | grep -q 1 \
    || as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qc \
      "CREATE ROLE goalworker LOGIN PASSWORD 'goalworker' CREATEDB"
  as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname='goalworker'" | grep -q 1 \
    || as_postgres "$bin/psql" -h /tmp -p "$PG_PORT" -U postgres -qc "CREATE DATABASE goalworker OWNER goalworker"
  say "postgres: ready"
}

pg_down() {
  local bin data=$STATE/pg/data
  bin=$(pg_bin)
  if [ -n "$bin" ] && [ -f "$data/PG_VERSION" ] && as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "postgres: stopping"
    as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
}

case "${1:-}" in
  up) pg_up; kafka_up ;;
  down) kafka_down; pg_down ;;
  status)
    if port_open "$KAFKA_PORT"; then say "kafka: up on 127.0.0.1:$KAFKA_PORT"; else say "kafka: down"; fi
    if port_open "$PG_PORT"; then say "postgres: up on 127.0.0.1:$PG_PORT"; else say "postgres: down"; fi ;;
  env)
    echo "export GOALWORKER_KAFKA_BOOTSTRAP=${GOALWORKER_KAFKA_BOOTSTRAP:-$DEFAULT_BOOTSTRAP}"
    echo "export GOALWORKER_DATABASE_URL=${GOALWORKER_DATABASE_URL:-$DEFAULT_DB_URL}" ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
