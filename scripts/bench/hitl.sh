#!/usr/bin/env bash
# HITL benchmark, in one run against the local Redis:
#   1. redis-benchmark SET and PUBLISH at the same concurrency (the reference);
#   2. decisions per second through main-service with CLIENTS concurrent
#      clients, each approving its own pending requests, as fast as they can
#      (saturation), and the time from sending an approve call to the agent's
#      subscriber receiving the signal;
#   3. that time again at RATE decisions per second (the target load), which
#      is what the latency target is about (at saturation it is queueing).
# Prints the ratio of decisions/s to raw Redis round trips/s.
# Knobs: DECISIONS (20000), CLIENTS (32), RATE (5000), RATE_DECISIONS (15000),
#        CONSUMERS_ENABLED (true), MAIN_LOG (warn),
#        MAIN_SERVICE_BIN (another build to compare, e.g. an older commit).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

DECISIONS=${DECISIONS:-20000}
CLIENTS=${CLIENTS:-32}
RATE=${RATE:-5000}
RATE_DECISIONS=${RATE_DECISIONS:-15000}
PORT=18181
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SECRET="bench-secret-bench-secret-bench-secret"

require_rust
TARGET=$(target_dir)
require_curl
bash scripts/services.sh >/dev/null
cargo build --release --locked -p main-service -p bench >/dev/null 2>&1 || cargo build --release --locked -p main-service -p bench

DB="bench_hitl_$(date +%s)_$$"
DATABASE_URL=$(bench_db_create "$DB")
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; bench_db_drop "$DB"; bench_groups_drop "bench-$DB"; }
trap cleanup EXIT INT TERM

# The decision audit consumer runs too (as in production), in its own group.
RUST_LOG=${MAIN_LOG:-warn} SERVER_HOST=127.0.0.1 SERVER_PORT=$PORT ADMIN_PORT=$((PORT + 1000)) JWT_SECRET=$SECRET REDIS_URL=$REDIS_URL \
  DATABASE_URL="$DATABASE_URL" CONSUMER_GROUP="bench-$DB" CONSUMER_GROUP_START='$' CONSUMERS_ENABLED=${CONSUMERS_ENABLED:-true} CONSUMER_BATCH=${CONSUMER_BATCH:-200} \
  "${MAIN_SERVICE_BIN:-"$TARGET"/release/main-service}" & pid=$!
wait_for "curl -fsS http://127.0.0.1:$PORT/main/health/ready" 20
[ "${CONSUMERS_ENABLED:-true}" = true ] && wait_for_group "bench-$DB" dwp:hitl-decisions

echo "== redis-benchmark, $CLIENTS clients"
# -q prints progress lines ended by CR, then "NAME: N requests per second, ...".
rps() { tr '\r' '\n' | awk -F': ' '/requests per second/ { split($NF, a, " "); print a[1] }' | tail -n 1; }
set_rps=$(redis-benchmark -h 127.0.0.1 -p 6379 -c "$CLIENTS" -n 200000 -q -t set | rps)
pub_rps=$(redis-benchmark -h 127.0.0.1 -p 6379 -c "$CLIENTS" -n 200000 -q PUBLISH bench:channel msg | rps)
echo "SET      $set_rps req/s"
echo "PUBLISH  $pub_rps req/s"

echo "== main-service: $DECISIONS approvals by $CLIENTS clients as fast as they can, each on its own pending request"
out=$("$TARGET"/release/dwp-bench hitl "127.0.0.1:$PORT" "$REDIS_URL" "$SECRET" "$DECISIONS" "$CLIENTS")
echo "$out"
if [ "${CONSUMERS_ENABLED:-true}" = true ]; then
  # The paced run measures the steady state: let the audit consumer finish
  # the saturated run's backlog first.
  audited() { curl -fsS "http://127.0.0.1:$((PORT + 1000))/metrics" | awk 'index($0, "main_stream_entries_total{stream=\"dwp:hitl-decisions\",result=\"applied\"}") == 1 { print $NF }'; }
  wait_for "[ \"\$(audited)\" -ge $DECISIONS ]" 60
fi
echo "== main-service: $RATE_DECISIONS approvals at $RATE per second (the target load), $CLIENTS clients"
paced=$("$TARGET"/release/dwp-bench hitl "127.0.0.1:$PORT" "$REDIS_URL" "$SECRET" "$RATE_DECISIONS" "$CLIENTS" "$RATE")
echo "$paced"
awk -v o="$out" -v q="$paced" -v s="$set_rps" -v p="$pub_rps" 'BEGIN {
  n = split(o, f, " "); for (i = 1; i < n; i += 2) v[f[i]] = f[i + 1];
  n = split(q, f, " "); for (i = 1; i < n; i += 2) w[f[i]] = f[i + 1];
  printf "saturated: decisions/s %d (target >= 5000)   approve->signal p50 %.2f ms, p99 %.2f ms\n", v["decisions_per_s"], v["approve_to_signal_p50_us"] / 1000, v["p99_us"] / 1000;
  printf "at %d/s:   approve->signal p50 %.2f ms, p99 %.2f ms (target p99 < 5 ms)\n", w["decisions_per_s"], w["approve_to_signal_p50_us"] / 1000, w["p99_us"] / 1000;
  printf "ratio decisions/s : Redis SET/s %.3f   : Redis PUBLISH/s %.3f   (a decision is a GET and one script of SET, SET, PUBLISH)\n", v["decisions_per_s"] / s, v["decisions_per_s"] / p }'
