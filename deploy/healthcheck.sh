#!/bin/bash
# The image's HEALTHCHECK: healthy while the process serves /metrics and every stage in
# it reports perfpilot_healthy 1 (0 while its deliveries have waited over 10 s for the
# broker, or during an exactly-once recovery). Port: PERFPILOT_METRICS_PORT, default 9464.
# No curl in the image: bash's /dev/tcp speaks the HTTP/1.0 request.
set -u
port="${PERFPILOT_METRICS_PORT:-9464}"
exec 3<>"/dev/tcp/127.0.0.1/$port" || { echo "nothing serves metrics on 127.0.0.1:$port"; exit 1; }
printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
body="$(timeout 5 cat <&3)"
exec 3>&-
if ! grep -q '^perfpilot_healthy{' <<<"$body"; then
  echo "no stage reports perfpilot_healthy yet"
  exit 1
fi
if grep -Eq '^perfpilot_healthy\{[^}]*\} 0$' <<<"$body"; then
  grep -E '^perfpilot_healthy\{[^}]*\} 0$' <<<"$body"
  exit 1
fi
echo healthy
