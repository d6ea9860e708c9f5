#!/usr/bin/env bash
# Apache Kafka for perfpilot's tests and benchmarks: fetches the broker's jars from Maven
# Central into a cache outside the clone, formats KRaft storage and runs one
# broker+controller process on 127.0.0.1 (loopback only).
#
#   scripts/kafka.sh fetch            download the jars (once; cached)
#   scripts/kafka.sh start            start a broker on a free port, print its bootstrap address
#   scripts/kafka.sh stop             stop it
#   scripts/kafka.sh status           say whether it runs, and where
#   scripts/kafka.sh bootstrap        print the bootstrap address of the running broker
#
# Environment:
#   PERFPILOT_KAFKA_VERSION  broker version (default 4.1.1)
#   PERFPILOT_KAFKA_CACHE    jar cache (default ~/.cache/perfpilot)
#   PERFPILOT_KAFKA_DIR      state: data, logs, pid, bootstrap file (default /tmp/perfpilot-kafka)
#   PERFPILOT_KAFKA_PORT     client port (default: the first free port from 19092)
set -euo pipefail

VERSION="${PERFPILOT_KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="${PERFPILOT_LOG4J_VERSION:-2.24.3}"
CACHE="${PERFPILOT_KAFKA_CACHE:-$HOME/.cache/perfpilot}"
LIBS="$CACHE/kafka-$VERSION/libs"
DIR="${PERFPILOT_KAFKA_DIR:-/tmp/perfpilot-kafka}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); [ "$p" -lt 65000 ] || die "no free port found"; done
  echo "$p"
}

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the broker from Maven Central"
  command -v java >/dev/null || die "Java 17+ is needed to run the broker"
  log "fetching org.apache.kafka:kafka_2.13:$VERSION and its dependencies into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIBS" -Dkafka.version="$VERSION" -Dlog4j.version="$LOG4J_VERSION" >&2 \
    || die "Maven could not fetch the broker (see above)"
  ls "$LIBS"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka_2.13 jar missing after fetch"
  touch "$LIBS/.complete"
}

running() { [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; }

start() {
  fetch
  if running; then log "already running (pid $(cat "$DIR/pid"))"; cat "$DIR/bootstrap"; return 0; fi
  rm -rf "$DIR"; mkdir -p "$DIR/data"
  local port cport
  port="${PERFPILOT_KAFKA_PORT:-$(free_port 19092)}"
  cport="$(free_port $((port + 1)))"
  cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.cleaner.backoff.ms=1000
PROPS
  cat > "$DIR/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $DIR/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = warn
PROPS
  local cp="$LIBS/*"
  local jopts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
               "-Dlog4j2.configurationFile=$DIR/log4j2.properties")
  local id
  id="$(java "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  [ -n "$id" ] || die "StorageTool random-uuid printed nothing"
  java "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format --standalone -t "$id" \
    -c "$DIR/server.properties" > "$DIR/format.log" 2>&1 || { cat "$DIR/format.log" >&2; die "format failed"; }
  nohup java "${jopts[@]}" -cp "$cp" kafka.Kafka "$DIR/server.properties" > "$DIR/stdout.log" 2>&1 &
  echo $! > "$DIR/pid"
  local deadline=$((SECONDS + 90))
  until grep -q 'Kafka Server started' "$DIR/server.log" 2>/dev/null && port_open "$port"; do
    if ! running; then tail -n 40 "$DIR/stdout.log" "$DIR/server.log" >&2 2>/dev/null; die "broker exited during start-up"; fi
    [ $SECONDS -lt $deadline ] || { tail -n 40 "$DIR/server.log" >&2; die "broker did not start within 90 s"; }
    sleep 0.5
  done
  echo "127.0.0.1:$port" > "$DIR/bootstrap"
  log "Apache Kafka $VERSION is up at 127.0.0.1:$port (pid $(cat "$DIR/pid"), logs in $DIR)"
  echo "127.0.0.1:$port"
}

stop() {
  if ! running; then log "not running"; return 0; fi
  local pid; pid="$(cat "$DIR/pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$DIR/pid"
  log "stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running at $(cat "$DIR/bootstrap") (pid $(cat "$DIR/pid"))"; else echo "not running"; exit 1; fi ;;
  bootstrap) running || die "not running"; cat "$DIR/bootstrap" ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
