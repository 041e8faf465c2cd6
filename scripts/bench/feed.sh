#!/usr/bin/env bash
# HITL live-feed benchmark, in one run against the local Redis and
# PostgreSQL (a fresh database, dropped at the end): the time from an
# agent's `hitl` event (as its run's client receives it) to the
# `hitl_request` event on its owner's open feed, end to end through the
# real gateway (token check on), aura-sim, main-service and its consumers.
#   1. the reference round: FEEDS_REF feeds (users), RATE pausing runs a second;
#   2. the target round: FEEDS feeds (users), the same RATE.
# Each run is approved through the gateway as soon as it pauses and read to
# its end. Prints p50 / p99 of both rounds and the ratio of their p99s.
# Knobs: FEEDS (1000), FEEDS_REF (10), RATE (100), ROUND_SECS (30).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

FEEDS=${FEEDS:-1000}
FEEDS_REF=${FEEDS_REF:-10}
RATE=${RATE:-100}
SECONDS_PER_ROUND=${ROUND_SECS:-30}
MAIN_PORT=18281 AURA_PORT=18282 GATEWAY_PORT=18283
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SECRET="bench-secret-bench-secret-bench-secret"
DB="bench_feed_$(date +%s)_$$"

require_rust
TARGET=$(target_dir)
require_curl
bash scripts/services.sh >/dev/null
cargo build --release --locked -p gateway -p main-service -p aura-sim -p bench >/dev/null 2>&1 \
  || cargo build --release --locked -p gateway -p main-service -p aura-sim -p bench
# Each feed is a descriptor in the client, two in the gateway, one in main-service.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DATABASE_URL=$(bench_db_create "$DB")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bench_db_drop "$DB"; bench_groups_drop "bench-$DB"
}
trap cleanup EXIT INT TERM

export RUST_LOG=${BENCH_LOG:-warn} SERVER_HOST=127.0.0.1 JWT_SECRET=$SECRET REDIS_URL=$REDIS_URL
SERVER_PORT=$MAIN_PORT ADMIN_PORT=$((MAIN_PORT + 1000)) DATABASE_URL="$DATABASE_URL" \
  CONSUMER_GROUP="bench-$DB" CONSUMER_GROUP_START='$' HITL_FEED_MAX_PER_USER=10 \
  "$TARGET"/release/main-service & pids+=($!)
# Random session ids: a user's runs may start within one second (the
# real agent's ids would then collide, which the decision path refuses).
SERVER_PORT=$AURA_PORT AURA_SIM_SESSION_IDS=random AURA_SIM_EVENT_DELAY_MS=10 \
  "$TARGET"/release/aura-sim & pids+=($!)
# As deployed (token check, trace context, recorder), but every load client
# shares 127.0.0.1: no per-address or per-user caps; a pool that holds the
# feeds (each an upstream connection, within the feed route's share).
SERVER_PORT=$GATEWAY_PORT ADMIN_PORT=$((GATEWAY_PORT + 1000)) \
  AURA_PLATFORM_URI=http://127.0.0.1:$AURA_PORT MAIN_SERVICE_URI=http://127.0.0.1:$MAIN_PORT \
  GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0 GATEWAY_MAX_STREAMS_PER_USER=0 \
  GATEWAY_POOL_MAX_CONNECTIONS=$((FEEDS * 3 + 500)) \
  "$TARGET"/release/gateway & pids+=($!)
wait_for "curl -fsS http://127.0.0.1:$MAIN_PORT/main/health/ready | grep -q '\"postgres\":\"UP\"'" 30
wait_for "curl -fsS http://127.0.0.1:$AURA_PORT/health" 20
wait_for "curl -fsS http://127.0.0.1:$GATEWAY_PORT/health" 20
wait_for_group "bench-$DB" dwp:agent-task-events

round() {
  "$TARGET"/release/dwp-bench feed "127.0.0.1:$GATEWAY_PORT" "$SECRET" "$1" "$RATE" "$SECONDS_PER_ROUND"
}
echo "== reference: $FEEDS_REF open feeds, $RATE pausing runs/s for ${SECONDS_PER_ROUND}s"
ref=$(round "$FEEDS_REF")
echo "$ref"
echo "== target: $FEEDS open feeds, $RATE pausing runs/s for ${SECONDS_PER_ROUND}s"
out=$(round "$FEEDS")
echo "$out"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v r="$ref" -v o="$out" 'BEGIN {
  n = split(r, f, " "); for (i = 1; i < n; i += 2) a[f[i]] = f[i + 1];
  n = split(o, f, " "); for (i = 1; i < n; i += 2) b[f[i]] = f[i + 1];
  printf "reference (%d feeds): hitl -> feed p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d measured, %d missing)\n", a["feeds"], a["hitl_to_feed_p50_us"] / 1000, a["p99_us"] / 1000, a["max_us"] / 1000, a["measured"], a["missing"];
  printf "target (%d feeds):    hitl -> feed p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d measured, %d missing); target p99 < 100 ms\n", b["feeds"], b["hitl_to_feed_p50_us"] / 1000, b["p99_us"] / 1000, b["max_us"] / 1000, b["measured"], b["missing"];
  printf "ratio p99 target / reference %.2f\n", (a["p99_us"] > 0 ? b["p99_us"] / a["p99_us"] : 0) }'
