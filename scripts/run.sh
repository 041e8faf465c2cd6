#!/usr/bin/env bash
# Builds and runs the local stack in the foreground: main-service on :8081
# and the gateway on :8080 in front of it (Aura-Platform's stand-in arrives
# with its issue; until then /api/aura/** other than HITL answers 502).
# Ctrl-C stops every process this script started, and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_rust
require_curl

cargo build --release --locked -p gateway -p main-service

# A development secret, generated once and kept in .run/ (git-ignored), so
# that tokens minted for local testing stay valid across restarts.
mkdir -p .run
if [ -z "${JWT_SECRET:-}" ]; then
  [ -s .run/jwt_secret ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >.run/jwt_secret)
  JWT_SECRET=$(cat .run/jwt_secret)
fi
export JWT_SECRET
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

MAIN_PORT=${MAIN_PORT:-8081}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
SERVER_PORT=$MAIN_PORT target/release/main-service &
pids+=($!)
SERVER_PORT=$GATEWAY_PORT MAIN_SERVICE_URI=http://127.0.0.1:$MAIN_PORT target/release/gateway &
pids+=($!)
wait_for "curl -fsS http://127.0.0.1:$MAIN_PORT/main/health/ready" 30
wait_for "curl -fsS http://127.0.0.1:$GATEWAY_PORT/health" 30

cat <<TXT

  gateway       http://127.0.0.1:$GATEWAY_PORT   (health: /health, metrics: /metrics)
  main-service  http://127.0.0.1:$MAIN_PORT   (health: /main/health, ready: /main/health/ready, metrics: /metrics)
  Aura-Platform ${AURA_PLATFORM_URI:-http://localhost:9000}

  The development JWT secret is in .run/jwt_secret (HS256; claims sub, tenant_id, exp).
  Try:  curl -s http://127.0.0.1:$GATEWAY_PORT/api/aura/hitl/requests/req_0123456789ab \\
          -H 'X-Tenant-ID: tenant1' -H 'X-User-ID: user123' -H "Authorization: Bearer \$TOKEN"

  Ctrl-C stops everything started here.
TXT
wait "${pids[@]}"
