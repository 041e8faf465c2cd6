#!/usr/bin/env bash
# Walks the integration checklist through the gateway of a running stack
# (`make run` in another terminal), printing each step: log in, open an agent
# stream, read the `hitl` event and its requestId, approve it, see the signal
# and the stream finish with `end` and `[DONE]`, then the agent_task row with
# its plan steps; then the same with a rejection.
# Knobs: GATEWAY_URL (http://127.0.0.1:8080), DEMO_TENANT, DEMO_USER, DEMO_PASSWORD.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_curl

BASE=${GATEWAY_URL:-http://127.0.0.1:8080}
TENANT=${DEMO_TENANT:-1} USER_ID=${DEMO_USER:-admin} PASSWORD=${DEMO_PASSWORD:-admin1234!}
work=$(mktemp -d)
stream_pid=""
cleanup() { [ -n "$stream_pid" ] && kill "$stream_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
json_field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }

curl -fsS "$BASE/health" >/dev/null || { echo "no gateway at $BASE: start the stack with 'make run' first" >&2; exit 1; }

step "1. log in as $USER_ID of $TENANT (POST /api/auth/login)"
login=$(curl -sS "$BASE/api/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"$USER_ID\",\"password\":\"$PASSWORD\",\"tenantId\":\"$TENANT\"}")
TOKEN=$(echo "$login" | json_field accessToken)
echo "${login//"$TOKEN"/<token>}"
[ -n "$TOKEN" ] || { echo "login failed" >&2; exit 1; }
auth=(-H "Authorization: Bearer $TOKEN" -H "X-Tenant-ID: $TENANT" -H "X-User-ID: $USER_ID")

run() {
  local decision=$1 prompt=$2
  step "2. open the stream (POST /api/aura/test/stream, prompt: \"$prompt\")"
  : >"$work/stream"
  curl -sSN -D "$work/headers" "$BASE/api/aura/test/stream" "${auth[@]}" \
    -H 'content-type: application/json' -H 'Accept: text/event-stream' -H 'X-DWP-Source: FRONTEND' \
    -d "{\"prompt\":\"$prompt\",\"context\":{}}" >"$work/stream" &
  stream_pid=$!
  wait_for "grep -q '^event: hitl' $work/stream" 30
  cat "$work/stream"
  local task request session
  task=$(tr -d '\r' <"$work/headers" | awk 'tolower($1) == "x-dwp-task-id:" { print $2 }')
  request=$(grep -A1 '^event: hitl' "$work/stream" | json_field requestId)
  echo "task id (X-DWP-Task-ID): $task"
  echo "hitl requestId: $request"

  step "3. the pending request (GET /api/aura/hitl/requests/$request)"
  curl -sS "$BASE/api/aura/hitl/requests/$request" "${auth[@]}"; echo
  session=$(curl -sS "$BASE/api/aura/hitl/requests/$request" "${auth[@]}" | json_field sessionId)

  step "4. $decision it (POST /api/aura/hitl/$decision/$request)"
  local body="{\"userId\":\"$USER_ID\"}"
  [ "$decision" = reject ] && body="{\"userId\":\"$USER_ID\",\"reason\":\"Not now\"}"
  curl -sS -X POST "$BASE/api/aura/hitl/$decision/$request" "${auth[@]}" -H 'content-type: application/json' -d "$body"; echo

  step "5. the signal the agent received (GET /api/aura/hitl/signals/$session)"
  curl -sS "$BASE/api/aura/hitl/signals/$session" "${auth[@]}"; echo

  step "6. the rest of the stream"
  wait "$stream_pid" || true
  stream_pid=""
  sed -n '/^event: hitl/,$p' "$work/stream" | tail -n +3
  grep -q '^data: \[DONE\]' "$work/stream" || { echo "the stream did not end with [DONE]" >&2; exit 1; }

  step "7. the agent_task row (GET /api/main/agent/tasks/$task)"
  local row
  for _ in $(seq 50); do
    row=$(curl -sS "$BASE/api/main/agent/tasks/$task" "${auth[@]}")
    case "$row" in *'"status":"COMPLETED"'* | *'"status":"FAILED"'*) break ;; esac
    sleep 0.2
  done
  echo "$row"
  case "$row" in *E1004*) echo "(not recorded yet: main-service's recorder consumer may still be working through older entries of dwp:agent-task-events; see main_stream_entries_total on :8091/metrics)" ;; esac
}

run approve "merge feature/login into main"
run reject "delete every mail older than a year"

step "8. the other decision is refused (409), the same one again is answered (alreadyProcessed), an unknown request is 404"
last=$(grep -A1 '^event: hitl' "$work/stream" | json_field requestId)
curl -sS -o /dev/null -w "the other decision: %{http_code}\n" -X POST "$BASE/api/aura/hitl/approve/$last" "${auth[@]}" || true
curl -sS -X POST "$BASE/api/aura/hitl/reject/$last" "${auth[@]}"; echo
curl -sS -o /dev/null -w "unknown request: %{http_code}\n" -X POST "$BASE/api/aura/hitl/approve/req_000000000000" "${auth[@]}"
