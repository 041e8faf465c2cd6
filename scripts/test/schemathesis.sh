#!/usr/bin/env bash
# Property-based API tests of main-service from its own OpenAPI document
# (GET /main/openapi.json): schemathesis (PyPI, pinned, in .venv-schemathesis)
# generates valid and invalid requests for every operation against a real
# main-service on real Redis and a fresh PostgreSQL database, with a real
# login token, and fails on any 5xx, any response outside its schema, any
# undocumented status or content type.
# Knobs: MAX_EXAMPLES per operation (60), SEED, MAIN_SERVICE_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

venv=.venv-schemathesis
if [ ! -x "$venv/bin/schemathesis" ]; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check schemathesis==4.32.5
fi
require_rust
TARGET=$(target_dir)
require_curl
bin=${MAIN_SERVICE_BIN:-"$TARGET"/debug/main-service}
[ -x "$bin" ] || cargo build --locked -p main-service

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SECRET="schemathesis-secret-0123456789abcdef"
DB="st_$(date +%s)_$$"
DATABASE_URL=$(bench_db_create "$DB")
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; bench_db_drop "$DB"; bench_groups_drop "st-$DB"; }
trap cleanup EXIT INT TERM

printf 'schemathesis-password' | DATABASE_URL=$DATABASE_URL "$bin" user add --tenant tenant1 --username st-user --password-stdin >/dev/null
RUST_LOG=${MAIN_LOG:-error} SERVER_HOST=127.0.0.1 SERVER_PORT=$PORT ADMIN_PORT=off JWT_SECRET=$SECRET DATABASE_URL=$DATABASE_URL \
  CONSUMER_GROUP="st-$DB" CONSUMER_GROUP_START='$' \
  LOGIN_MAX_FAILURES=1000000 LOGIN_MAX_FAILURES_PER_CLIENT=1000000 HITL_MAX_PENDING_PER_USER=1000000 \
  HITL_FEED_MAX_SECS=1 HITL_FEED_MAX_PER_USER=1000 \
  "$bin" & pid=$!
wait_for "curl -fsS http://127.0.0.1:$PORT/main/health/ready | grep -q postgres.:.UP" 30
token=$(curl -fsS -H 'content-type: application/json' \
  -d '{"username":"st-user","password":"schemathesis-password","tenantId":"tenant1"}' \
  "http://127.0.0.1:$PORT/auth/login" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["accessToken"])')

echo "== schemathesis against main-service's own OpenAPI document"
"$venv/bin/schemathesis" run "http://127.0.0.1:$PORT/main/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${MAX_EXAMPLES:-60}" ${SEED:+--seed "$SEED"} \
  --generation-database none --no-color \
  -H "Authorization: Bearer $token" -H "X-User-ID: st-user" -H "X-Tenant-ID: tenant1"
