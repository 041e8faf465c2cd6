#!/usr/bin/env bash
# Stream-recorder benchmark, end to end, in one run against the local Redis
# and PostgreSQL (a fresh database, dropped at the end):
#   1. events per second from the gateway's tee to committed agent_task rows:
#      STREAMS concurrent agent streams of EVENTS events each, sent as fast as
#      the backend can, relayed by the gateway (recorder on), consumed by
#      main-service; timed from the first request to the last entry applied;
#   2. the relay latency of the same kind of streams through a gateway with
#      the tee on and one with it off, side by side in the same run (the tee
#      may add at most 5 percent).
# Everything it starts listens on 127.0.0.1 and is stopped on exit.
# Knobs: STREAMS (100), EVENTS (1000), LATENCY_EVENTS (300), LATENCY_INTERVAL_MS (10),
#        ROUNDS (5; the latency figures are the median of the rounds).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
# The benchmarks measure the proxy: no edge token check and no per-client
# or per-user caps (every load client shares 127.0.0.1 and no user).
export GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0 GATEWAY_MAX_STREAMS_PER_USER=0
# One backend behind every route: no per-route share of its pool.
export GATEWAY_ROUTE_MAX_POOL_PERCENT=100

STREAMS=${STREAMS:-100}
EVENTS=${EVENTS:-1000}
LATENCY_EVENTS=${LATENCY_EVENTS:-300}
LATENCY_INTERVAL_MS=${LATENCY_INTERVAL_MS:-10}
ROUNDS=${ROUNDS:-5}
BACKEND_PORT=19100 TEE_PORT=18180 NOTEE_PORT=18182 MAIN_PORT=18183
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SECRET="bench-secret-bench-secret-bench-secret"
DB="bench_recorder_$(date +%s)_$$"

require_rust
TARGET=$(target_dir)
require_curl
bash scripts/services.sh >/dev/null
cargo build --release --locked -p gateway -p main-service -p bench >/dev/null 2>&1 \
  || cargo build --release --locked -p gateway -p main-service -p bench

DATABASE_URL=$(bench_db_create "$DB")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bench_db_drop "$DB"; bench_groups_drop "bench-$DB"
}
trap cleanup EXIT INT TERM

"$TARGET"/release/dwp-bench backend $BACKEND_PORT & pids+=($!)
RUST_LOG=${MAIN_LOG:-warn} SERVER_HOST=127.0.0.1 SERVER_PORT=$MAIN_PORT ADMIN_PORT=$((MAIN_PORT + 1000)) JWT_SECRET=$SECRET REDIS_URL=$REDIS_URL \
  DATABASE_URL="$DATABASE_URL" CONSUMER_GROUP="bench-$DB" CONSUMER_GROUP_START='$' \
  "$TARGET"/release/main-service & pids+=($!)
for port in $TEE_PORT $NOTEE_PORT; do
  recorder=false
  [ "$port" = "$TEE_PORT" ] && recorder=true
  RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$port ADMIN_PORT=$((port + 1000)) GATEWAY_RECORDER_ENABLED=$recorder \
    REDIS_URL=$REDIS_URL AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT \
    MAIN_SERVICE_URI=http://127.0.0.1:$MAIN_PORT "$TARGET"/release/gateway & pids+=($!)
done
wait_for "curl -fsS http://127.0.0.1:$MAIN_PORT/main/health/ready | grep -q '\"postgres\":\"UP\"'" 30
wait_for "curl -fsS http://127.0.0.1:$TEE_PORT/health" 10
wait_for "curl -fsS http://127.0.0.1:$NOTEE_PORT/health" 10
# Let the consumer group exist before the first entry is written.
wait_for_group "bench-$DB" dwp:agent-task-events

# metric PORT NAME: NAME on the admin listener of the process on PORT (PORT + 1000).
metric() { curl -fsS "http://127.0.0.1:$(( $1 + 1000 ))/metrics" | awk -v m="$2" 'index($0, m) == 1 { print $NF; exit }'; }
applied() {
  local n
  n=$(metric $MAIN_PORT 'main_stream_entries_total{stream="dwp:agent-task-events",result="applied"}')
  echo "${n:-0}"
}

# Each stream: EVENTS events plus [DONE].
expected=$(( STREAMS * (EVENTS + 1) ))
echo "== recorder end to end: $STREAMS streams x $EVENTS events ($expected entries) through the gateway into agent_task"
start=$(date +%s.%N)
"$TARGET"/release/dwp-bench latency "127.0.0.1:$TEE_PORT" "/api/aura/test/stream?events=$EVENTS&interval_ms=0" "$STREAMS" >/dev/null
relayed=$(date +%s.%N)
# Done when every entry the tee wrote is applied (dropped ones never arrive).
caught_up() { [ $(( $(applied) + $(metric $TEE_PORT gateway_recorder_dropped_total) )) -ge $expected ]; }
wait_for caught_up 300
done_at=$(date +%s.%N)
got=$(applied)
written=$(metric $TEE_PORT gateway_recorder_events_total)
dropped=$(metric $TEE_PORT gateway_recorder_dropped_total)
rows=$(psql -w "$DATABASE_URL" -Atc "SELECT status || ' ' || count(*) FROM agent_task GROUP BY status" | tr '\n' ' ')
awk -v s="$start" -v r="$relayed" -v d="$done_at" -v n="$got" -v w="$written" -v x="$dropped" -v rows="$rows" 'BEGIN {
  printf "relayed in %.2f s; all applied %.2f s after the first request\n", r - s, d - s;
  printf "entries written by the tee %d, dropped %d, applied by main-service %d   rows: %s\n", w, x, n, rows;
  printf "recorder throughput end to end: %.0f events/s\n", n / (d - s) }'

echo "== relay latency with the tee on vs off: $STREAMS streams through each gateway at the same time, $LATENCY_EVENTS events every ${LATENCY_INTERVAL_MS} ms, $ROUNDS rounds"
path="/api/aura/test/stream?events=$LATENCY_EVENTS&interval_ms=$LATENCY_INTERVAL_MS"
work=$(mktemp -d)
for round in $(seq "$ROUNDS"); do
  "$TARGET"/release/dwp-bench latency "127.0.0.1:$NOTEE_PORT" "$path" "$STREAMS" >>"$work/off" &
  off_job=$!
  "$TARGET"/release/dwp-bench latency "127.0.0.1:$TEE_PORT" "$path" "$STREAMS" >>"$work/on"
  wait $off_job
  echo "round $round: tee on  $(tail -n 1 "$work/on")"
  echo "round $round: tee off $(tail -n 1 "$work/off")"
done
# Median over the rounds of each percentile.
median() { awk -v f="$2" '{ print $f }' "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
on50=$(median "$work/on" 4) on99=$(median "$work/on" 6) off50=$(median "$work/off" 4) off99=$(median "$work/off" 6)
rm -rf "$work"
awk -v a="$on50" -v b="$on99" -v c="$off50" -v d="$off99" 'BEGIN {
  printf "median of rounds: tee on p50 %d us, p99 %d us; tee off p50 %d us, p99 %d us\n", a, b, c, d;
  printf "tee on / off: p50 %.3f, p99 %.3f   (target: at most 1.05)\n", a / c, b / d }'
