#!/usr/bin/env bash
# A schema registry with Confluent's REST API, on loopback, for perfpilot's tests and for
# trying `--schema-registry` by hand: Apicurio Registry 2.4 (in-memory storage), built
# from Maven Central (scripts/schema-registry/pom.xml) into a cache outside the clone.
#
#   scripts/schema-registry.sh build    build the runnable jar (once; cached by the pom's hash)
#   scripts/schema-registry.sh start    build if needed, start it, wait until it answers, and
#                                       print its Confluent-compatible URL
#   scripts/schema-registry.sh url      print that URL (when started)
#   scripts/schema-registry.sh tls-url  the same API over https (a self-signed certificate for
#                                       127.0.0.1, made at start)
#   scripts/schema-registry.sh ca       the path of that certificate (PEM), to trust it
#   scripts/schema-registry.sh stop     stop it
#   scripts/schema-registry.sh python   a Python with confluent-kafka's AvroSerializer (a venv
#                                       in the cache, made once); prints its path
#
# Environment:
#   PERFPILOT_REGISTRY_CACHE  where the build and the venv go (default ~/.cache/perfpilot/schema-registry)
#   PERFPILOT_REGISTRY_DIR    pid file and log (default /tmp/perfpilot-schema-registry)
#   PERFPILOT_REGISTRY_PORT   port on 127.0.0.1 (default 18081)
#   PERFPILOT_REGISTRY_TLS_PORT  https port on 127.0.0.1 (default 18444)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/schema-registry"
CACHE="${PERFPILOT_REGISTRY_CACHE:-$HOME/.cache/perfpilot/schema-registry}"
DIR="${PERFPILOT_REGISTRY_DIR:-/tmp/perfpilot-schema-registry}"
PORT="${PERFPILOT_REGISTRY_PORT:-18081}"
TLS_PORT="${PERFPILOT_REGISTRY_TLS_PORT:-18444}"
CONFLUENT_KAFKA_VERSION="2.16.1"

log() { echo "schema-registry.sh: $*" >&2; }
die() { log "$*"; exit 1; }

url() { echo "http://127.0.0.1:$PORT/apis/ccompat/v7"; }
tls_url() { echo "https://127.0.0.1:$TLS_PORT/apis/ccompat/v7"; }

build() {
  local h out
  h="$( (cd "$SRC" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)"
  out="$CACHE/jar-$h"
  if [ -f "$out/.complete" ]; then echo "$out/schema-registry-1-runner.jar"; return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to build the registry"
  command -v java >/dev/null || die "Java 17+ is needed to run the registry"
  log "building Apicurio Registry from Maven Central into $out (once)"
  rm -rf "$CACHE"/jar-*; mkdir -p "$out"
  cp -r "$SRC/pom.xml" "$SRC/src" "$out/"
  (cd "$out" && mvn -q -B package -DskipTests >&2) || die "Maven could not build the registry (see above)"
  mv "$out/target/schema-registry-1-runner.jar" "$out/" || die "the runnable jar is missing after the build"
  rm -rf "$out/target"
  touch "$out/.complete"
  echo "$out/schema-registry-1-runner.jar"
}

answering() { curl -fsS -o /dev/null --max-time 2 "$(url)/subjects" 2>/dev/null; }

start() {
  local jar pid
  jar="$(build)"
  mkdir -p "$DIR"
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null && answering; then
    url; return 0
  fi
  if [ ! -f "$DIR/tls.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -keyout "$DIR/tls.key" -out "$DIR/tls.crt" >/dev/null 2>&1 \
      || die "openssl could not make the registry's certificate"
  fi
  log "starting the registry on 127.0.0.1:$PORT and https on $TLS_PORT (log: $DIR/registry.log)"
  nohup java -Xmx512m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
    -Dquarkus.http.ssl-port="$TLS_PORT" \
    -Dquarkus.http.ssl.certificate.files="$DIR/tls.crt" \
    -Dquarkus.http.ssl.certificate.key-files="$DIR/tls.key" \
    -jar "$jar" >"$DIR/registry.log" 2>&1 &
  pid=$!
  echo "$pid" >"$DIR/pid"
  for _ in $(seq 1 120); do
    if answering; then url; return 0; fi
    kill -0 "$pid" 2>/dev/null || die "the registry exited; its log: $(tail -20 "$DIR/registry.log")"
    sleep 0.5
  done
  die "the registry did not answer within 60 s; its log: $(tail -20 "$DIR/registry.log")"
}

stop() {
  if [ -f "$DIR/pid" ]; then
    kill "$(cat "$DIR/pid")" 2>/dev/null || true
    rm -f "$DIR/pid"
  fi
}

python_env() {
  local venv="$CACHE/python-confluent-kafka-$CONFLUENT_KAFKA_VERSION"
  if [ ! -f "$venv/.complete" ]; then
    command -v python3 >/dev/null || die "python3 is needed"
    log "making a Python venv with confluent-kafka $CONFLUENT_KAFKA_VERSION in $venv (once)"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/pip" install -q "confluent-kafka[avro,schemaregistry]==$CONFLUENT_KAFKA_VERSION" >&2 \
      || die "pip could not install confluent-kafka"
    touch "$venv/.complete"
  fi
  echo "$venv/bin/python"
}

case "${1:-}" in
  build) build >/dev/null ;;
  start) start ;;
  url) url ;;
  tls-url) tls_url ;;
  ca) echo "$DIR/tls.crt" ;;
  stop) stop ;;
  python) python_env ;;
  *) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
