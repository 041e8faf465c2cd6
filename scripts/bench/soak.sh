#!/usr/bin/env bash
# Load and leak check (issue 7, item 10), everything on 127.0.0.1:
#   1. STREAMS idle SSE streams held through the gateway for SOAK_SECONDS
#      while wrk drives proxied requests through the same gateway; every
#      SAMPLE_SECONDS the gateway's RSS, open descriptors and open-stream
#      gauge are printed; at the end: wrk errors, streams lost, and RSS / fd
#      drift from the end of the warm-up (WARMUP_SECONDS) to the end;
#   2. HITL_RATE decisions per second for HITL_SECONDS by HITL_CLIENTS
#      concurrent clients against main-service (real Redis, a fresh
#      PostgreSQL database, the audit consumer on): every decision must be
#      acknowledged, its signal delivered exactly once, and audited once.
# Knobs: SOAK_SECONDS (300), WARMUP_SECONDS (60), SAMPLE_SECONDS (15),
#        STREAMS (10000, clamped to the open-file limit), CONNECTIONS (32),
#        HITL_RATE (1000), HITL_SECONDS (60), HITL_CLIENTS (1000).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
# The benchmarks measure the proxy: no edge token check and no per-client
# or per-user caps (every load client shares 127.0.0.1 and no user).
export GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0 GATEWAY_MAX_STREAMS_PER_USER=0
# One backend behind every route: no per-route share of its pool.
export GATEWAY_ROUTE_MAX_POOL_PERCENT=100

SOAK_SECONDS=${SOAK_SECONDS:-300}
WARMUP_SECONDS=${WARMUP_SECONDS:-60}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-15}
STREAMS=${STREAMS:-10000}
CONNECTIONS=${CONNECTIONS:-32}
HITL_RATE=${HITL_RATE:-1000}
HITL_SECONDS=${HITL_SECONDS:-60}
HITL_CLIENTS=${HITL_CLIENTS:-1000}
BACKEND_PORT=19100 GATEWAY_PORT=18180 MAIN_PORT=18182
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SECRET="soak-secret-soak-secret-soak-secret!"

command -v wrk >/dev/null 2>&1 || apt_install wrk
require_rust
TARGET=$(target_dir)
require_curl
bash scripts/services.sh >/dev/null
cargo build --release --locked -p gateway -p main-service -p bench >/dev/null 2>&1 ||
  cargo build --release --locked -p gateway -p main-service -p bench

ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max_streams=$(( ($(ulimit -n) - 200) / 2 ))
if [ "$STREAMS" -gt "$max_streams" ]; then
  echo "note: open-file limit $(ulimit -n) allows $max_streams streams (two descriptors each in the gateway), not $STREAMS" >&2
  STREAMS=$max_streams
fi
work=$(mktemp -d)
DB="soak_$(date +%s)_$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  bench_db_drop "$DB"
  bench_groups_drop "soak-$DB"
}
trap cleanup EXIT INT TERM

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
gauge() { curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk '/^gateway_open_streams / {print $2}'; }

"$TARGET"/release/dwp-bench backend $BACKEND_PORT & pids+=("$!")
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$GATEWAY_PORT ADMIN_PORT=$((GATEWAY_PORT + 1000)) \
  AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$BACKEND_PORT \
  GATEWAY_POOL_MAX_CONNECTIONS=$((STREAMS + 1000)) GATEWAY_RECORDER_ENABLED=false \
  "$TARGET"/release/gateway & gateway_pid=$!; pids+=("$gateway_pid")
wait_for "curl -fsS http://127.0.0.1:$GATEWAY_PORT/api/main/bench" 20

echo "== $STREAMS idle streams held for ${SOAK_SECONDS}s while wrk -c$CONNECTIONS drives proxied requests"
"$TARGET"/release/dwp-bench streams "127.0.0.1:$GATEWAY_PORT" "/api/aura/test/stream?events=0" "$STREAMS" "$SOAK_SECONDS" >"$work/streams.out" &
streams_pid=$!
wait_for "grep -q '^open' $work/streams.out" 120
wrk -t2 -c"$CONNECTIONS" -d"${SOAK_SECONDS}s" "http://127.0.0.1:$GATEWAY_PORT/api/main/bench" >"$work/wrk.out" &
wrk_pid=$!
printf '%6s %10s %8s %8s\n' seconds rss_kib fds streams | tee "$work/samples"
start=$(date +%s)
while kill -0 "$wrk_pid" 2>/dev/null; do
  printf '%6d %10d %8d %8s\n' $(( $(date +%s) - start )) "$(rss_kib $gateway_pid)" "$(fds $gateway_pid)" "$(gauge)" | tee -a "$work/samples"
  sleep "$SAMPLE_SECONDS"
done
wait "$wrk_pid"
wait "$streams_pid" || true
cat "$work/streams.out"
grep -E 'Requests/sec|requests in|Non-2xx|Socket errors' "$work/wrk.out"
wait_for "[ \"\$(gauge)\" = 0 ]" 10
sleep 15 # jemalloc returns freed pages on its ~10 s decay timer
after_rss=$(rss_kib $gateway_pid); after_fds=$(fds $gateway_pid)
awk -v w="$WARMUP_SECONDS" -v s="$STREAMS" -v ar="$after_rss" -v af="$after_fds" 'NR > 1 {
    if (base == "" && $1 >= w) { base = $2; basefd = $3 }
    if (base != "") { last = $2; lastfd = $3; if ($2 > max) max = $2; if ($4 != s) lost++ }
  } END {
    printf "after warm-up: RSS %d KiB, fds %d; at the end: RSS %d KiB (%+.1f %%), max %d KiB, fds %d; samples with fewer than %d streams: %d\n", base, basefd, last, (last / base - 1) * 100, max, lastfd, s, lost + 0;
    printf "streams closed (15 s later): RSS %d KiB, fds %d\n", ar, af }' "$work/samples"
if grep -qE 'Non-2xx|Socket errors' "$work/wrk.out" || ! grep -q "failed 0" "$work/streams.out"; then
  echo "FAIL: errors under load" >&2; exit 1
fi

echo "== HITL: $HITL_RATE decisions/s for ${HITL_SECONDS}s by $HITL_CLIENTS clients"
DATABASE_URL=$(bench_db_create "$DB")
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$MAIN_PORT ADMIN_PORT=$((MAIN_PORT + 1000)) JWT_SECRET=$SECRET REDIS_URL=$REDIS_URL \
  DATABASE_URL="$DATABASE_URL" CONSUMER_GROUP="soak-$DB" CONSUMER_GROUP_START='$' \
  "$TARGET"/release/main-service & pids+=("$!")
wait_for "curl -fsS http://127.0.0.1:$MAIN_PORT/main/health/ready | grep -q postgres.:.UP" 30
wait_for_group "soak-$DB" dwp:hitl-decisions
decisions=$((HITL_RATE * HITL_SECONDS))
out=$("$TARGET"/release/dwp-bench hitl "127.0.0.1:$MAIN_PORT" "$REDIS_URL" "$SECRET" "$decisions" "$HITL_CLIENTS" "$HITL_RATE")
echo "$out"
audited() { psql -w "$DATABASE_URL" -tAc "SELECT count(*) FROM hitl_decision"; }
wait_for "[ \"\$(audited)\" -ge $decisions ]" 120 || true
rows=$(audited)
distinct=$(psql -w "$DATABASE_URL" -tAc "SELECT count(DISTINCT request_id) FROM hitl_decision")
echo "audit rows: $rows ($distinct distinct requests) for $decisions decisions"
awk -v o="$out" -v d="$decisions" -v r="$rows" -v u="$distinct" 'BEGIN {
  n = split(o, f, " "); for (i = 1; i < n; i += 2) v[f[i]] = f[i + 1];
  ok = v["decisions_ok"] == d && v["signals"] == d && v["missing"] == 0 && v["delivered_twice"] == 0 && r == d && u == d;
  printf "HITL: %d of %d acknowledged, %d signals, %d missing, %d delivered twice, %d audit rows: %s\n", v["decisions_ok"], d, v["signals"], v["missing"], v["delivered_twice"], r, ok ? "exactly once" : "FAIL";
  exit !ok }'
