#!/usr/bin/env bash
# The Kafka Streams peer of perfpilot's detector (bench/peer-kafka-streams): builds it
# with Maven into a cache outside the clone, and runs it. `perfpilot bench peer` calls
# `scripts/peer-streams.sh run ...`.
#
#   scripts/peer-streams.sh build        compile it and fetch its jars (once; cached by
#                                        the sources' hash)
#   scripts/peer-streams.sh run ARGS...  build if needed, then exec the JVM with ARGS:
#                                        --bootstrap-servers B --input T --output T
#                                        --application-id ID --schemas DIR
#                                        --guarantee at_least_once|exactly_once_v2
#
# Environment:
#   PERFPILOT_PEER_CACHE   where the build goes (default ~/.cache/perfpilot/peer-kafka-streams)
#   PERFPILOT_PEER_JAVA_OPTS  JVM options (default none: the JVM's own heap sizing)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/../bench/peer-kafka-streams"
CACHE="${PERFPILOT_PEER_CACHE:-$HOME/.cache/perfpilot/peer-kafka-streams}"

log() { echo "peer-streams.sh: $*" >&2; }
die() { log "$*"; exit 1; }

hash_sources() {
  (cd "$SRC" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

build() {
  local h out
  h="$(hash_sources)"
  out="$CACHE/$h"
  if [ -f "$out/.complete" ]; then echo "$out"; return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to build the Kafka Streams peer"
  command -v java >/dev/null || die "Java 17+ is needed to run the Kafka Streams peer"
  log "building the Kafka Streams peer into $out"
  rm -rf "${CACHE:?}"/*; mkdir -p "$out/libs"
  mvn -q -B -f "$SRC/pom.xml" -Dpeer.build.directory="$out/target" package dependency:copy-dependencies \
    -DoutputDirectory="$out/libs" -DincludeScope=runtime >&2 \
    || die "Maven could not build the peer (see above)"
  cp "$out"/target/peer-kafka-streams-*.jar "$out/libs/" || die "the peer's jar is missing after the build"
  touch "$out/.complete"
  echo "$out"
}

case "${1:-}" in
  build) build >/dev/null ;;
  run)
    shift
    out="$(build)"
    # shellcheck disable=SC2086
    exec java ${PERFPILOT_PEER_JAVA_OPTS:-} -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
      -cp "$out/libs/*" dev.perfpilot.peer.PeerDetector "$@"
    ;;
  *) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
