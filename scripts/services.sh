#!/usr/bin/env bash
# Installs and runs the services goalworker needs, on loopback only, without Docker:
#
#   Kafka       Apache Kafka (scripts/kafka/pom.xml pins the version), one KRaft node that is
#               both broker and controller, on 127.0.0.1:9092 (controller on 127.0.0.1:9093).
#               Its jars come from Maven Central through Maven.
#   PostgreSQL  Debian's postgresql package, in a private cluster on 127.0.0.1:55432 with
#               role and database "goalworker" (password "goalworker").
#
# Usage: scripts/services.sh up|down|status|env
#   up      install what is missing, start what is stopped; leaves running services alone
#   down    stop what `up` started (the data stays)
#   status  say what runs
#   env     print export lines:  eval "$(scripts/services.sh env)"
#
# Settings (environment):
#   GOALWORKER_KAFKA_BOOTSTRAP  a broker to use instead; then no Kafka is started
#   GOALWORKER_DATABASE_URL     a database to use instead; then no PostgreSQL is started
#       (set to the local defaults that `env` prints, they still mean "the local services")
#   SERVICES_DIR                state folder (default: <repo>/.services); logs in its logs/
#   KAFKA_PORT, KAFKA_CONTROLLER_PORT, PG_PORT   loopback ports (9092, 9093, 55432)
#   KAFKA_HEAP                  broker heap flags (default "-Xms256m -Xmx1g")
#   KAFKA_START_TIMEOUT         seconds to wait for the broker (default 120)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${SERVICES_DIR:-$ROOT/.services}
[[ $STATE == /* ]] || STATE=$PWD/$STATE
LOGS=$STATE/logs

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${KAFKA_HEAP:--Xms256m -Xmx1g}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
KAFKA_POM=$ROOT/scripts/kafka/pom.xml
KAFKA_LOG4J=$ROOT/scripts/kafka/log4j.properties
KAFKA_TOOLS_LOG4J=$ROOT/scripts/kafka/tools-log4j.properties
KAFKA_DIR=$STATE/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_PIDFILE=$KAFKA_DIR/kafka.pid

PG_PORT=${PG_PORT:-55432}
PG_DIR=$STATE/pg
PG_DATA=$PG_DIR/data
PG_SOCKET_DIR=/tmp
# PostgreSQL refuses to run as root: as root the cluster belongs to the "postgres" OS user.
if [ "$(id -u)" = 0 ]; then PG_OS_USER=postgres; else PG_OS_USER=$(id -un); fi

LOCAL_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
LOCAL_DATABASE_URL=postgresql+psycopg://goalworker:goalworker@127.0.0.1:$PG_PORT/goalworker

say() { echo "services: $*"; }
die() { echo "services: error: $*" >&2; exit 1; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

python() { if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$@"; else python3 "$@"; fi; }

# Serialises `up` and `down`, so that two at once cannot start two brokers. The services
# started must not inherit the lock's descriptor (9>&- where they start), or they would hold it.
take_lock() {
  mkdir -p "$STATE"
  command -v flock >/dev/null || return 0
  exec 9>"$STATE/.lock"
  flock -w 900 9 || die "another services.sh holds $STATE/.lock"
}

# -- Kafka -------------------------------------------------------------------------------------

# A broker given by GOALWORKER_KAFKA_BOOTSTRAP that is not the local default one.
kafka_external() {
  local bootstrap=${GOALWORKER_KAFKA_BOOTSTRAP:-}
  [ -n "$bootstrap" ] && [ "${bootstrap//localhost/127.0.0.1}" != "$LOCAL_BOOTSTRAP" ]
}

# True when pid $1 is the broker of this state folder.
kafka_is_ours() {
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] \
    && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $KAFKA_CONF"
}

# Prints the pid of this state folder's broker; fails when none runs.
# The pid file is checked first; a lost or stale one is mended by a look through /proc.
kafka_pid() {
  local pid proc
  if [ -f "$KAFKA_PIDFILE" ]; then
    pid=$(<"$KAFKA_PIDFILE")
    if kafka_is_ours "$pid"; then echo "$pid"; return 0; fi
  fi
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    if kafka_is_ours "$pid"; then
      echo "$pid" >"$KAFKA_PIDFILE"
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# True when a Kafka broker on 127.0.0.1:$KAFKA_PORT answers a metadata request and names at
# least one live broker. A broker only serves clients once it has started, so this means ready.
kafka_answers() {
  python - "$KAFKA_PORT" <<'PY'
import socket, struct, sys

port = int(sys.argv[1])
client_id = b"goalworker-services"
correlation_id = 4242
# MetadataRequest v4 (understood by Kafka 1.0 to 4.x): header v1, then topics = null (all)
# and allow_auto_topic_creation = false.
request = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
request += struct.pack(">ib", -1, 0)


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


try:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.settimeout(3)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", read_exactly(sock, 4))
        response = read_exactly(sock, size)
    # Response: correlation id, throttle time, then the array of live brokers.
    got_id, _throttle_ms, brokers = struct.unpack_from(">iii", response)
except (OSError, struct.error):
    sys.exit(1)
sys.exit(0 if got_id == correlation_id and brokers > 0 else 1)
PY
}

# Copies the broker's jars into $KAFKA_LIBS; again only when scripts/kafka/pom.xml changes.
kafka_jars() {
  local wanted stamp=$KAFKA_LIBS/.pom.sha256
  wanted=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(<"$stamp")" = "$wanted" ]; then return 0; fi
  command -v mvn >/dev/null || die "kafka: mvn is missing (apt-get install maven)"
  say "kafka: resolving the broker jars from Maven Central into $KAFKA_LIBS (once; log: $LOGS/kafka-maven.log)"
  rm -rf "$KAFKA_LIBS.new"
  mvn -B -ntp -Dstyle.color=never -f "$KAFKA_POM" -Dmaven.repo.local="$STATE/m2" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.new" >"$LOGS/kafka-maven.log" 2>&1 \
    || die "kafka: Maven could not resolve the broker jars, see $LOGS/kafka-maven.log"
  echo "$wanted" >"$KAFKA_LIBS.new/.pom.sha256"
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.new" "$KAFKA_LIBS"
  local jars=("$KAFKA_LIBS"/*.jar) broker=("$KAFKA_LIBS"/kafka_2.13-*.jar)
  say "kafka: $(basename "${broker[0]}" .jar), ${#jars[@]} jars"
}

kafka_config() {
  cat >"$KAFKA_CONF" <<PROPS
# Written by scripts/services.sh at each start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA

# One node, made for tests.
num.partitions=6
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=8388608
PROPS
}

# Runs a Kafka tool class with the broker's jars; its logging goes to kafka-tools.log.
kafka_tool() {
  java -Xmx256m -Dkafka.logs.dir="$LOGS" -Dlog4j.configuration="file:$KAFKA_TOOLS_LOG4J" \
    -cp "$KAFKA_LIBS/*" "$@"
}

# Formats the storage once; an already formatted folder is kept as it is.
kafka_format() {
  if [ -f "$KAFKA_DATA/meta.properties" ]; then return 0; fi
  local cluster_id
  cluster_id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$LOGS/kafka-tools.log") \
    || die "kafka: could not make a cluster id, see $LOGS/kafka-tools.log"
  say "kafka: formatting $KAFKA_DATA (cluster id $cluster_id)"
  mkdir -p "$KAFKA_DATA"
  kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF" \
    >>"$LOGS/kafka-tools.log" 2>&1 || die "kafka: formatting failed, see $LOGS/kafka-tools.log"
}

kafka_start() {
  local heap
  read -r -a heap <<<"$KAFKA_HEAP"
  say "kafka: starting on 127.0.0.1:$KAFKA_PORT (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT), log: $LOGS/kafka.log"
  # setsid: its own session, so a Ctrl-C in the shell that ran `up` does not reach the broker.
  nohup setsid java "${heap[@]}" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOGS" -Dlog4j.configuration="file:$KAFKA_LOG4J" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" >>"$LOGS/kafka.out" 2>&1 </dev/null 9>&- &
  echo $! >"$KAFKA_PIDFILE"
}

kafka_wait() {
  local pid=$1 deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until kafka_answers; do
    kafka_is_ours "$pid" \
      || die "kafka: the broker stopped while starting, see $LOGS/kafka.log and $LOGS/kafka.out"
    [ "$SECONDS" -lt "$deadline" ] \
      || die "kafka: no answer on 127.0.0.1:$KAFKA_PORT after ${KAFKA_START_TIMEOUT}s, see $LOGS/kafka.log (pid $pid left running; 'services.sh down' stops it)"
    sleep 0.5
  done
}

kafka_up() {
  if kafka_external; then
    say "kafka: using $GOALWORKER_KAFKA_BOOTSTRAP (GOALWORKER_KAFKA_BOOTSTRAP); starting none"
    return 0
  fi
  local pid
  if pid=$(kafka_pid); then
    if ! kafka_answers; then
      say "kafka: pid $pid is still starting; waiting"
      kafka_wait "$pid"
    fi
    say "kafka: running (pid $pid) on 127.0.0.1:$KAFKA_PORT, log: $LOGS/kafka.log"
    if [ "$(cat "$KAFKA_LIBS/.pom.sha256" 2>/dev/null)" != "$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)" ]; then
      say "kafka: note: scripts/kafka/pom.xml changed since these jars were resolved; 'down' then 'up' switches"
    fi
    return 0
  fi
  if kafka_answers; then
    say "kafka: a broker not started from $STATE answers on 127.0.0.1:$KAFKA_PORT; using it"
    return 0
  fi
  port_open "$KAFKA_PORT" && die "kafka: 127.0.0.1:$KAFKA_PORT is taken by something that is not a Kafka broker"
  port_open "$KAFKA_CONTROLLER_PORT" && die "kafka: the controller port 127.0.0.1:$KAFKA_CONTROLLER_PORT is taken"
  command -v java >/dev/null || die "kafka: java is missing (Java 17 is needed)"
  mkdir -p "$KAFKA_DIR" "$LOGS"
  kafka_jars
  kafka_config
  kafka_format
  kafka_start
  pid=$(<"$KAFKA_PIDFILE")
  kafka_wait "$pid"
  say "kafka: ready (pid $pid)"
}

kafka_down() {
  local pid
  if ! pid=$(kafka_pid); then
    say "kafka: not running"
    rm -f "$KAFKA_PIDFILE"
    return 0
  fi
  say "kafka: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kafka_is_ours "$pid" && [ "$waited" -lt 120 ]; do sleep 0.5; waited=$((waited + 1)); done
  if kafka_is_ours "$pid"; then
    say "kafka: still running after 60s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$KAFKA_PIDFILE" "$KAFKA_DIR/pid"  # (pid: the name older versions of this script used)
  say "kafka: stopped"
}

kafka_status() {
  local pid
  if kafka_external; then
    say "kafka: external, $GOALWORKER_KAFKA_BOOTSTRAP (GOALWORKER_KAFKA_BOOTSTRAP); not managed here"
  elif pid=$(kafka_pid); then
    if kafka_answers; then
      say "kafka: running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    else
      say "kafka: pid $pid runs but does not answer on 127.0.0.1:$KAFKA_PORT (yet?)"
    fi
  elif kafka_answers; then
    say "kafka: a broker not started from here answers on 127.0.0.1:$KAFKA_PORT"
  else
    say "kafka: stopped"
  fi
  if ! kafka_external; then
    local broker=("$KAFKA_LIBS"/kafka_2.13-*.jar) version="no jars yet"
    [ ! -e "${broker[0]}" ] || version=$(basename "${broker[0]}" .jar)
    say "       $version, data: $KAFKA_DATA, log: $LOGS/kafka.log"
  fi
}

# -- PostgreSQL --------------------------------------------------------------------------------

# A database given by GOALWORKER_DATABASE_URL that is not the local default one.
pg_external() {
  local url=${GOALWORKER_DATABASE_URL:-}
  url=${url//localhost/127.0.0.1}
  [ -n "$url" ] && [ "${url/postgresql:/postgresql+psycopg:}" != "$LOCAL_DATABASE_URL" ]
}

# The bin folder of the newest PostgreSQL that Debian installed, or nothing.
pg_bin() {
  local initdb
  initdb=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
  [ ! -x "$initdb" ] || dirname "$initdb"
  return 0
}

# Runs a command as the OS user who owns the cluster.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

pg_install() {
  [ "$(id -u)" = 0 ] || die "postgres: PostgreSQL is not installed; as root: apt-get install postgresql"
  say "postgres: installing Debian's postgresql package (once; log: $LOGS/postgres-apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update && apt-get install -y --no-install-recommends postgresql; } \
    >"$LOGS/postgres-apt.log" 2>&1 || die "postgres: apt-get failed, see $LOGS/postgres-apt.log"
}

pg_init() {
  local bin=$1
  [ -f "$PG_DATA/PG_VERSION" ] && return 0
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then
    chmod 755 "$STATE" "$PG_DIR"
    chown "$PG_OS_USER:" "$PG_DIR"
  fi
  pg_as_owner test -w "$PG_DIR" \
    || die "postgres: the $PG_OS_USER OS user cannot write $PG_DIR (is a parent folder closed to it?); set SERVICES_DIR elsewhere"
  say "postgres: creating a cluster in $PG_DATA"
  pg_as_owner "$bin/initdb" -D "$PG_DATA" -U "$PG_OS_USER" -E UTF8 --locale=C.UTF-8 --data-checksums \
    --auth-local=peer --auth-host=scram-sha-256 >"$LOGS/postgres-initdb.log" 2>&1 \
    || die "postgres: initdb failed, see $LOGS/postgres-initdb.log"
  # Also in the file, so that a hand-run pg_ctl start stays on loopback and on this port.
  pg_as_owner tee -a "$PG_DATA/postgresql.conf" >/dev/null <<CONF

# Set by scripts/services.sh (which repeats them on its pg_ctl command line).
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
CONF
}

pg_running() { [ -n "$1" ] && [ -f "$PG_DATA/PG_VERSION" ] && pg_as_owner "$1/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_start() {
  local bin=$1
  port_open "$PG_PORT" && die "postgres: 127.0.0.1:$PG_PORT is taken by another server"
  say "postgres: starting on 127.0.0.1:$PG_PORT, log: $LOGS/postgres.log"
  touch "$LOGS/postgres.log"
  [ "$(id -u)" != 0 ] || chown "$PG_OS_USER:" "$LOGS/postgres.log"
  pg_as_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$LOGS/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_SOCKET_DIR -c max_connections=200" \
    start >/dev/null 9>&- || die "postgres: did not start, see $LOGS/postgres.log"
}

pg_sql() {
  pg_as_owner "$1/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" \
    -U "$PG_OS_USER" -d postgres -c "$2"
}

# The goalworker role and database, made once.
pg_provision() {
  local bin=$1
  if [ "$(pg_sql "$bin" "SELECT 1 FROM pg_roles WHERE rolname = 'goalworker'")" != 1 ]; then
    say "postgres: creating role goalworker"
    pg_sql "$bin" "CREATE ROLE goalworker LOGIN PASSWORD 'goalworker' CREATEDB"
  fi
  if [ "$(pg_sql "$bin" "SELECT 1 FROM pg_database WHERE datname = 'goalworker'")" != 1 ]; then
    say "postgres: creating database goalworker"
    pg_sql "$bin" "CREATE DATABASE goalworker OWNER goalworker"
  fi
}

pg_up() {
  if pg_external; then
    say "postgres: using GOALWORKER_DATABASE_URL; starting none"
    return 0
  fi
  mkdir -p "$LOGS"
  local bin
  bin=$(pg_bin)
  if [ -z "$bin" ]; then
    pg_install
    bin=$(pg_bin)
    [ -n "$bin" ] || die "postgres: no initdb under /usr/lib/postgresql after installing"
  fi
  if pg_running "$bin"; then
    say "postgres: running on 127.0.0.1:$PG_PORT, log: $LOGS/postgres.log"
  elif "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; then
    say "postgres: a server not started from $STATE answers on 127.0.0.1:$PG_PORT; using it as it is"
    return 0
  else
    pg_init "$bin"
    pg_start "$bin"
  fi
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 30 \
    || die "postgres: not accepting connections on 127.0.0.1:$PG_PORT, see $LOGS/postgres.log"
  pg_provision "$bin"
  say "postgres: ready, database goalworker on 127.0.0.1:$PG_PORT"
}

pg_down() {
  local bin
  bin=$(pg_bin)
  if ! pg_running "$bin"; then
    say "postgres: not running"
    return 0
  fi
  say "postgres: stopping"
  pg_as_owner "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null \
    || die "postgres: pg_ctl stop failed, see $LOGS/postgres.log"
  say "postgres: stopped"
}

pg_status() {
  local bin
  bin=$(pg_bin)
  if pg_external; then
    say "postgres: external, GOALWORKER_DATABASE_URL; not managed here"
    return 0
  elif pg_running "$bin"; then
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; then
      say "postgres: running on 127.0.0.1:$PG_PORT"
    else
      say "postgres: running but not accepting connections on 127.0.0.1:$PG_PORT (yet?)"
    fi
  elif [ -z "$bin" ]; then
    say "postgres: not installed"
  else
    say "postgres: stopped"
  fi
  say "          data: $PG_DATA, log: $LOGS/postgres.log"
}

# -- main --------------------------------------------------------------------------------------

print_env() {
  printf 'export GOALWORKER_KAFKA_BOOTSTRAP=%q\n' "${GOALWORKER_KAFKA_BOOTSTRAP:-$LOCAL_BOOTSTRAP}"
  printf 'export GOALWORKER_DATABASE_URL=%q\n' "${GOALWORKER_DATABASE_URL:-$LOCAL_DATABASE_URL}"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  case "${1:-}" in
    up)
      take_lock
      pg_up
      kafka_up
      say "logs: $LOGS"
      ;;
    down)
      take_lock
      kafka_down
      pg_down
      ;;
    status)
      kafka_status
      pg_status
      ;;
    env) print_env ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
