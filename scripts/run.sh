#!/usr/bin/env bash
# Builds and runs the local stack in the foreground. Ctrl-C stops every
# process this script started, and nothing else.
#
# Today the stack is the gateway on :8080 (main-service and the reference
# agent arrive with their issues; until then the gateway answers 502 for
# routes whose upstream is not running).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_rust
require_curl

cargo build --release --locked -p gateway

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

export SERVER_PORT=${GATEWAY_PORT:-8080}
target/release/gateway &
pids+=($!)
wait_for "curl -fsS http://127.0.0.1:$SERVER_PORT/health" 30

cat <<TXT

  gateway       http://127.0.0.1:$SERVER_PORT   (health: /health, metrics: /metrics)
  Aura-Platform ${AURA_PLATFORM_URI:-http://localhost:9000}
  main-service  ${MAIN_SERVICE_URI:-http://localhost:8081}

  Try:  curl -N -X POST http://127.0.0.1:$SERVER_PORT/api/aura/test/stream \\
          -H 'X-Tenant-ID: tenant1' -H 'Content-Type: application/json' \\
          -d '{"prompt":"hello","context":{}}'

  Ctrl-C stops everything started here.
TXT
wait "${pids[@]}"
