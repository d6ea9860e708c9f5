#!/usr/bin/env bash
# Apache Kafka for perfpilot's tests and benchmarks: fetches the broker's jars from Maven
# Central into a cache outside the clone, formats KRaft storage and runs one
# broker+controller process on 127.0.0.1 (loopback only).
#
#   scripts/kafka.sh fetch            download the jars (once; cached)
#   scripts/kafka.sh start            start a broker on a free port, print its bootstrap address
#   scripts/kafka.sh stop             stop it
#   scripts/kafka.sh restart          stop it and start it again on its data, same address
#   scripts/kafka.sh status           say whether it runs, and where
#   scripts/kafka.sh bootstrap        print the bootstrap address of the running broker
#   scripts/kafka.sh sasl-bootstrap   print its SASL_PLAINTEXT listener (user perfpilot,
#                                     password perfpilot-secret; PLAIN, SCRAM-SHA-256/512)
#   scripts/kafka.sh cluster-start    start a 3-node KRaft cluster (each node broker+controller),
#                                     replication factor 3, min ISR 2; print its bootstrap list
#   scripts/kafka.sh cluster-stop     stop it
#   scripts/kafka.sh cluster-bootstrap  print its bootstrap list
#   scripts/kafka.sh node-kill N      SIGKILL node N (1-3) of the cluster
#   scripts/kafka.sh node-stop N      stop node N cleanly (SIGTERM)
#   scripts/kafka.sh node-start N     start node N again on its data
#   scripts/kafka.sh node-pause N     freeze node N (SIGSTOP): it holds its connections
#                                     but answers nothing, like a host cut off the network
#   scripts/kafka.sh node-resume N    thaw node N (SIGCONT)
#   scripts/kafka.sh cluster-pause    freeze all three nodes; cluster-resume thaws them
#
# Environment:
#   PERFPILOT_KAFKA_VERSION  broker version (default 4.1.1)
#   PERFPILOT_KAFKA_CACHE    jar cache (default ~/.cache/perfpilot)
#   PERFPILOT_KAFKA_DIR      state: data, logs, pid, bootstrap file (default /tmp/perfpilot-kafka)
#   PERFPILOT_KAFKA_PORT     client port (default: the first free port from 19092)
#   PERFPILOT_KAFKA_CLUSTER_DIR  state of the 3-node cluster (default /tmp/perfpilot-kafka-cluster)
set -euo pipefail

VERSION="${PERFPILOT_KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="${PERFPILOT_LOG4J_VERSION:-2.24.3}"
CACHE="${PERFPILOT_KAFKA_CACHE:-$HOME/.cache/perfpilot}"
LIBS="$CACHE/kafka-$VERSION/libs"
DIR="${PERFPILOT_KAFKA_DIR:-/tmp/perfpilot-kafka}"
CDIR="${PERFPILOT_KAFKA_CLUSTER_DIR:-/tmp/perfpilot-kafka-cluster}"
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
  local port cport sport
  port="${PERFPILOT_KAFKA_PORT:-$(free_port 19092)}"
  cport="$(free_port $((port + 1)))"
  sport="$(free_port $((cport + 1)))"
  # A second listener, SASL_PLAINTEXT on loopback, for the security tests: user
  # perfpilot with password perfpilot-secret, by PLAIN and by SCRAM-SHA-256/512.
  cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_perfpilot="perfpilot-secret";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
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
  write_log4j "$DIR"
  local id
  id="$(java $(single_jopts) -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  [ -n "$id" ] || die "StorageTool random-uuid printed nothing"
  java $(single_jopts) -cp "$LIBS/*" kafka.tools.StorageTool format --standalone -t "$id" \
    -c "$DIR/server.properties" \
    --add-scram 'SCRAM-SHA-256=[name=perfpilot,password=perfpilot-secret]' \
    --add-scram 'SCRAM-SHA-512=[name=perfpilot,password=perfpilot-secret]' \
    > "$DIR/format.log" 2>&1 || { cat "$DIR/format.log" >&2; die "format failed"; }
  echo "127.0.0.1:$port" > "$DIR/bootstrap"
  echo "127.0.0.1:$sport" > "$DIR/sasl-bootstrap"
  launch_single
}

# The JVM flags of Kafka's own kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS): G1 aiming
# at 20 ms pauses. Without the pause goal a young collection stopped the broker for
# ~28 ms, 16 times in a 15 s latency bench, and made the produce → decision tail.
single_jopts() {
  echo "-Xms256m -Xmx768m ${KAFKA_GC_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20" \
    "-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}" \
    "-XX:MaxInlineLevel=15 -Djava.awt.headless=true -Dlog4j2.configurationFile=$DIR/log4j2.properties"
}

# launch_single: runs the broker of $DIR on its formatted data and waits until it serves.
launch_single() {
  local port; port="$(cut -d: -f2 < "$DIR/bootstrap")"
  # A restart must wait for this start's line, not the last one's.
  [ -f "$DIR/server.log" ] && mv "$DIR/server.log" "$DIR/server.log.previous"
  nohup java $(single_jopts) -cp "$LIBS/*" kafka.Kafka "$DIR/server.properties" > "$DIR/stdout.log" 2>&1 &
  echo $! > "$DIR/pid"
  local deadline=$((SECONDS + 90))
  until grep -q 'Kafka Server started' "$DIR/server.log" 2>/dev/null && port_open "$port"; do
    if ! running; then tail -n 40 "$DIR/stdout.log" "$DIR/server.log" >&2 2>/dev/null; die "broker exited during start-up"; fi
    [ $SECONDS -lt $deadline ] || { tail -n 40 "$DIR/server.log" >&2; die "broker did not start within 90 s"; }
    sleep 0.5
  done
  log "Apache Kafka $VERSION is up at 127.0.0.1:$port (pid $(cat "$DIR/pid"), logs in $DIR)"
  echo "127.0.0.1:$port"
}

# restart: stops the broker and starts it again on its data, at the same address (its
# topics, offsets and transactions survive; `start` always begins empty).
restart() {
  [ -f "$DIR/server.properties" ] && [ -f "$DIR/bootstrap" ] \
    || die "no broker state in $DIR to restart (run start first)"
  fetch
  stop
  launch_single
}

# write_log4j DIR: the broker's logging (the POM brings no SLF4J binding; fetch adds one).
write_log4j() {
  cat > "$1/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $1/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = warn
PROPS
}

node_java_opts() {
  echo "-Xms128m -Xmx512m -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true -Dlog4j2.configurationFile=$1/log4j2.properties"
}

# launch_node N: starts node N of the cluster on its existing properties and data.
launch_node() {
  local n=$1 nd="$CDIR/node$1"
  [ -f "$nd/server.properties" ] || die "node $n has no properties; run cluster-start first"
  if [ -f "$nd/pid" ] && kill -0 "$(cat "$nd/pid")" 2>/dev/null; then log "node $n already running"; return 0; fi
  local port; port="$(cat "$nd/port")"
  : > "$nd/server.log"
  # shellcheck disable=SC2046
  nohup java $(node_java_opts "$nd") -cp "$LIBS/*" kafka.Kafka "$nd/server.properties" > "$nd/stdout.log" 2>&1 &
  echo $! > "$nd/pid"
}

wait_node() {
  local n=$1 nd="$CDIR/node$1" deadline=$((SECONDS + 120))
  until grep -q 'Kafka Server started' "$nd/server.log" 2>/dev/null && port_open "$(cat "$nd/port")"; do
    kill -0 "$(cat "$nd/pid")" 2>/dev/null || { tail -n 40 "$nd/stdout.log" "$nd/server.log" >&2 2>/dev/null; die "node $n exited during start-up"; }
    [ $SECONDS -lt $deadline ] || { tail -n 40 "$nd/server.log" >&2; die "node $n did not start within 120 s"; }
    sleep 0.5
  done
}

cluster_start() {
  fetch
  if [ -f "$CDIR/bootstrap" ] && [ -f "$CDIR/node1/pid" ] && kill -0 "$(cat "$CDIR/node1/pid")" 2>/dev/null; then
    log "cluster already running"; cat "$CDIR/bootstrap"; return 0
  fi
  cluster_stop >/dev/null 2>&1 || true
  rm -rf "$CDIR"; mkdir -p "$CDIR"
  local ports=() cports=() p=29092 n
  for n in 1 2 3; do
    p="$(free_port "$p")"; ports+=("$p"); p=$((p + 1))
    p="$(free_port "$p")"; cports+=("$p"); p=$((p + 1))
  done
  local voters="1@127.0.0.1:${cports[0]},2@127.0.0.1:${cports[1]},3@127.0.0.1:${cports[2]}"
  local id
  id="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  [ -n "$id" ] || die "StorageTool random-uuid printed nothing"
  for n in 1 2 3; do
    local nd="$CDIR/node$n" port="${ports[$((n - 1))]}" cport="${cports[$((n - 1))]}"
    mkdir -p "$nd/data"
    echo "$port" > "$nd/port"
    cat > "$nd/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$nd/data
num.partitions=4
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.cleaner.backoff.ms=1000
unclean.leader.election.enable=false
PROPS
    write_log4j "$nd"
    # shellcheck disable=SC2046
    java $(node_java_opts "$nd") -cp "$LIBS/*" kafka.tools.StorageTool format -t "$id" \
      -c "$nd/server.properties" > "$nd/format.log" 2>&1 || { cat "$nd/format.log" >&2; die "format of node $n failed"; }
  done
  for n in 1 2 3; do launch_node "$n"; done
  for n in 1 2 3; do wait_node "$n"; done
  echo "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" > "$CDIR/bootstrap"
  log "3-node Apache Kafka $VERSION cluster is up at $(cat "$CDIR/bootstrap") (logs in $CDIR/node*)"
  cat "$CDIR/bootstrap"
}

node_signal() {
  local n=$1 sig=$2 nd="$CDIR/node$1"
  [ -f "$nd/pid" ] || { log "node $n is not running"; return 0; }
  local pid; pid="$(cat "$nd/pid")"
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$nd/pid"
  log "node $n stopped (SIG$sig)"
}

node_freeze() {
  local n=$1 sig=$2 nd="$CDIR/node$1"
  [ -f "$nd/pid" ] || die "node $n is not running"
  kill "-$sig" "$(cat "$nd/pid")" || die "cannot send SIG$sig to node $n"
  log "node $n: SIG$sig"
}

cluster_stop() {
  # All at once: a node stopped last would wait for a controller quorum that is gone.
  local n pid
  for n in 1 2 3; do
    [ -f "$CDIR/node$n/pid" ] && kill -TERM "$(cat "$CDIR/node$n/pid")" 2>/dev/null || true
  done
  for n in 1 2 3; do [ -d "$CDIR/node$n" ] && node_signal "$n" TERM; done
  rm -f "$CDIR/bootstrap"
}

node_arg() {
  case "${1:-}" in 1|2|3) ;; *) die "expected a node number 1-3, got '${1:-}'" ;; esac
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
  restart) restart ;;
  status) if running; then echo "running at $(cat "$DIR/bootstrap") (pid $(cat "$DIR/pid"))"; else echo "not running"; exit 1; fi ;;
  bootstrap) running || die "not running"; cat "$DIR/bootstrap" ;;
  sasl-bootstrap) running || die "not running"; cat "$DIR/sasl-bootstrap" ;;
  cluster-start) cluster_start ;;
  cluster-stop) cluster_stop ;;
  cluster-bootstrap) [ -f "$CDIR/bootstrap" ] || die "cluster not running"; cat "$CDIR/bootstrap" ;;
  node-kill) node_arg "${2:-}"; node_signal "$2" KILL ;;
  node-stop) node_arg "${2:-}"; node_signal "$2" TERM ;;
  node-start) node_arg "${2:-}"; fetch; launch_node "$2"; wait_node "$2"; log "node $2 is up" ;;
  node-pause) node_arg "${2:-}"; node_freeze "$2" STOP ;;
  node-resume) node_arg "${2:-}"; node_freeze "$2" CONT ;;
  cluster-pause) for n in 1 2 3; do node_freeze "$n" STOP; done ;;
  cluster-resume) for n in 1 2 3; do node_freeze "$n" CONT; done ;;
  *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
