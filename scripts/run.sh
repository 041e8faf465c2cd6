#!/usr/bin/env bash
# Builds and runs the local stack in the foreground: main-service on :8081
# (migrations applied, a demo account created), aura-sim (the reference
# agent) on :9000 and the gateway on :8080 in front of both.
# Ctrl-C stops every process this script started, and nothing else.
# TLS=1 serves the gateway over TLS (HTTP/2 by ALPN) with a development
# certificate for localhost, generated once into .run/tls/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_rust
TARGET=$(target_dir)
require_curl

cargo build --release --locked -p gateway -p main-service -p aura-sim

# A development secret, generated once and kept in .run/ (git-ignored), so
# that tokens minted for local testing stay valid across restarts.
mkdir -p .run
if [ -z "${JWT_SECRET:-}" ]; then
  [ -s .run/jwt_secret ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >.run/jwt_secret)
  JWT_SECRET=$(cat .run/jwt_secret)
fi
export JWT_SECRET
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
# The web frontend's dev server, under either name.
export CORS_ALLOWED_ORIGINS=${CORS_ALLOWED_ORIGINS:-http://localhost:4200,http://127.0.0.1:4200}

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# The database exists (scripts/services.sh); the schema and a demo account:
# `user add` applies pending migrations first; an existing account is fine.
# The account is the one the real web frontend expects unchanged: tenant
# "1" (a constant in the frontend) and the sign-in form's pre-filled
# admin / admin1234!. For a local stack only; never deploy it.
DEMO_TENANT=${DEMO_TENANT:-1} DEMO_USER=${DEMO_USER:-admin} DEMO_PASSWORD=${DEMO_PASSWORD:-admin1234!}
if ! out=$(printf '%s\n' "$DEMO_PASSWORD" | "$TARGET"/release/main-service user add \
    --tenant "$DEMO_TENANT" --username "$DEMO_USER" --password-stdin 2>&1); then
  case "$out" in *"already exists"*) ;; *) echo "$out" >&2; exit 1 ;; esac
fi

scheme=http
curl_tls=()
if [ "${TLS:-0}" = 1 ]; then
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  mkdir -p .run/tls
  if [ ! -s .run/tls/cert.pem ] || [ ! -s .run/tls/key.pem ]; then
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout .run/tls/key.pem -out .run/tls/cert.pem -days 365 -subj /CN=localhost \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null)
  fi
  export GATEWAY_TLS_CERT_FILE=$PWD/.run/tls/cert.pem GATEWAY_TLS_KEY_FILE=$PWD/.run/tls/key.pem
  scheme=https
  curl_tls=(--cacert .run/tls/cert.pem)
fi

MAIN_PORT=${MAIN_PORT:-8081}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
AURA_PORT=${AURA_PORT:-9000}
SERVER_PORT=$MAIN_PORT "$TARGET"/release/main-service &
pids+=($!)
SERVER_PORT=$AURA_PORT "$TARGET"/release/aura-sim &
pids+=($!)
SERVER_PORT=$GATEWAY_PORT MAIN_SERVICE_URI=http://127.0.0.1:$MAIN_PORT \
  AURA_PLATFORM_URI=http://127.0.0.1:$AURA_PORT "$TARGET"/release/gateway &
pids+=($!)
wait_for "curl -fsS http://127.0.0.1:$MAIN_PORT/main/health/ready" 30
wait_for "curl -fsS http://127.0.0.1:$AURA_PORT/health" 30
wait_for "curl -fsS ${curl_tls[*]} $scheme://localhost:$GATEWAY_PORT/health" 30

cat <<TXT

  gateway       $scheme://localhost:$GATEWAY_PORT   (health: /health; metrics: http://127.0.0.1:8090/metrics)
  main-service  http://127.0.0.1:$MAIN_PORT   (health: /main/health, ready: /main/health/ready; metrics: http://127.0.0.1:8091/metrics)
  aura-sim      http://127.0.0.1:$AURA_PORT   (the reference agent; health: /health)

  Demo account: tenant $DEMO_TENANT, user $DEMO_USER, password $DEMO_PASSWORD
  The development JWT secret is in .run/jwt_secret (HS256; claims sub, tenant_id, exp).
  Log in and list your tasks:
    TOKEN=\$(curl -s http://127.0.0.1:$GATEWAY_PORT/api/auth/login -H 'content-type: application/json' \\
      -d '{"username":"$DEMO_USER","password":"$DEMO_PASSWORD","tenantId":"$DEMO_TENANT"}' \\
      | sed 's/.*"accessToken":"\([^"]*\)".*/\1/')
    curl -s http://127.0.0.1:$GATEWAY_PORT/api/main/agent/tasks \\
      -H 'X-Tenant-ID: $DEMO_TENANT' -H 'X-User-ID: $DEMO_USER' -H "Authorization: Bearer \$TOKEN"
  Open an agent stream (a prompt with merge/delete/send waits for approval):
    curl -N http://127.0.0.1:$GATEWAY_PORT/api/aura/test/stream -H 'content-type: application/json' \\
      -H 'Accept: text/event-stream' -H 'X-Tenant-ID: $DEMO_TENANT' -H 'X-User-ID: $DEMO_USER' \\
      -H "Authorization: Bearer \$TOKEN" -d '{"prompt":"summarise my inbox","context":{}}'
  The whole checklist, step by step:  make demo
  The real web frontend (dwp-frontend) on http://localhost:4200 signs in unchanged
  with $DEMO_USER / $DEMO_PASSWORD (tenant $DEMO_TENANT); see README.md.

  HTTP/2: TLS=1 make run serves the gateway over TLS (ALPN h2) with the certificate
  in .run/tls/cert.pem: curl --http2 --cacert .run/tls/cert.pem https://localhost:$GATEWAY_PORT/health
  Without TLS, GATEWAY_H2C=true make run also takes HTTP/2 with prior knowledge:
    curl --http2-prior-knowledge http://127.0.0.1:$GATEWAY_PORT/health

  Ctrl-C stops everything started here.
TXT
wait "${pids[@]}"
