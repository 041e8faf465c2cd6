#!/usr/bin/env bash
# Gateway benchmark, in one run on this machine, the gateway as it is
# deployed (the edge token check on, per-user caps, trace context and the
# stream recorder at their defaults) beside two stock proxies:
#   1. requests/s and latency with wrk, every request carrying a valid token
#      and the identity headers a signed-in frontend sends, one of USERS
#      users after the other (scripts/bench/identities.lua): direct to the
#      backend (nginx, one worker, 1 KiB answers), through nginx (proxy_pass
#      with upstream keep-alive, as many workers as the gateway has threads),
#      through HAProxy (Debian's 2.6, `http-reuse always`, as many threads),
#      through the gateway, and through a second gateway with the token
#      check, the caps and the recorder off ("proxy only"), in ROUNDS rounds;
#      each round's ratios gateway / nginx and gateway / HAProxy. A round
#      gives each proxy DURATION in SLICES slices, taken in turns (the order
#      rotating from slice to slice), so that the machine's swings (on a
#      shared VM one proxy's rate moves by 10-20 % from one 10 s run to the
#      next) fall on all four alike instead of on whichever ran at the time;
#   2. the per-event latency an SSE event gains through the gateway, measured
#      with direct streams, gateway streams (recorder on, the default; it
#      writes to the local Redis) and the proxy-only gateway, all at once;
#   3. resident memory per open SSE stream with STREAMS idle streams of the
#      USERS users held (last, so that freeing those streams does not
#      disturb the others).
# Installs wrk, nginx and haproxy from Debian's packages when missing.
# Everything it starts listens on 127.0.0.1 and is stopped on exit.
#
# Knobs: DURATION (10s, whole seconds), SLICES (5), CONNECTIONS (64),
#        WRK_THREADS (1), ROUNDS (5),
#        USERS (1000), STREAMS (10000), LATENCY_STREAMS (20),
#        LATENCY_EVENTS (500), LATENCY_INTERVAL_MS (10).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

DURATION=${DURATION:-10s}
SLICES=${SLICES:-5}
SLICE=$((${DURATION%s} / SLICES))s
[ "${SLICE%s}" -ge 1 ] || { echo "DURATION / SLICES is under a second" >&2; exit 2; }
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-1}
ROUNDS=${ROUNDS:-5}
USERS=${USERS:-1000}
STREAMS=${STREAMS:-10000}
LATENCY_STREAMS=${LATENCY_STREAMS:-20}
LATENCY_EVENTS=${LATENCY_EVENTS:-500}
LATENCY_INTERVAL_MS=${LATENCY_INTERVAL_MS:-10}
THREADS=$(nproc)
BACKEND_PORT=19000 HTTP_BACKEND_PORT=19001
GATEWAY_PORT=18080 NGINX_PORT=18081 PLAIN_PORT=18082 HAPROXY_PORT=18083
# A throw-away signing key, shared by the gateway and the token maker only.
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export JWT_SECRET

command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v nginx >/dev/null 2>&1 || apt_install nginx-light
command -v haproxy >/dev/null 2>&1 || apt_install haproxy
require_rust
TARGET=$(target_dir)
require_curl
cargo build --release --locked -p gateway -p bench >/dev/null 2>&1 || cargo build --release --locked -p gateway -p bench

ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The gateway holds two descriptors per stream (client and upstream side).
max_streams=$(( ($(ulimit -n) - 200) / 2 ))
if [ "$STREAMS" -gt "$max_streams" ]; then
  echo "note: open-file limit $(ulimit -n) (hard limit; raising it needs CAP_SYS_RESOURCE) allows $max_streams streams, not $STREAMS" >&2
  STREAMS=$max_streams
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pidfile in "$work"/*.pid; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

require_free_ports $BACKEND_PORT $HTTP_BACKEND_PORT $GATEWAY_PORT $NGINX_PORT $PLAIN_PORT $HAPROXY_PORT
"$TARGET"/release/dwp-bench tokens "$JWT_SECRET" "$USERS" >"$work/tokens"
export BENCH_TOKENS=$work/tokens
"$TARGET"/release/dwp-bench backend $BACKEND_PORT & backend_pid=$!; pids+=("$backend_pid")
nginx_backend_config $HTTP_BACKEND_PORT "$work" >"$work/backend.conf"
nginx -c "$work/backend.conf" -p "$work" & pids+=("$!")
# The deployed gateway: every default, except the two sized for the
# STREAMS streams of the memory figure (all from 127.0.0.1): the pool and
# the per-address cap. Agent streams go to the SSE backend, the rest to nginx.
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$GATEWAY_PORT ADMIN_PORT=$((GATEWAY_PORT + 1000)) \
  AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$HTTP_BACKEND_PORT \
  GATEWAY_POOL_MAX_CONNECTIONS=$((STREAMS + 1000)) GATEWAY_SSE_HEARTBEAT_SECS=15 \
  GATEWAY_MAX_REQUESTS_PER_CLIENT=$((STREAMS + 1000)) \
  "$TARGET"/release/gateway & gateway_pid=$!; pids+=("$gateway_pid")
# The proxy-only gateway: no token check, no caps, no recorder.
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$PLAIN_PORT ADMIN_PORT=off GATEWAY_RECORDER_ENABLED=false \
  GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0 \
  GATEWAY_MAX_STREAMS_PER_USER=0 GATEWAY_ROUTE_MAX_POOL_PERCENT=100 \
  AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$HTTP_BACKEND_PORT \
  "$TARGET"/release/gateway & plain_pid=$!; pids+=("$plain_pid")

cat >"$work/nginx.conf" <<NGINX
worker_processes $THREADS;
pid $work/nginx.pid;
error_log $work/error.log warn;
daemon off;
events { worker_connections 65536; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$HTTP_BACKEND_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
$(nginx_proxy_location)
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" & nginx_pid=$!; pids+=("$nginx_pid")
haproxy_config $HAPROXY_PORT $HTTP_BACKEND_PORT "$THREADS" >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" & haproxy_pid=$!; pids+=("$haproxy_pid")

token_line=$(head -n 1 "$work/tokens")
auth=(-H "Authorization: Bearer ${token_line#*$'\t'}" -H "X-Tenant-ID: 1" -H "X-User-ID: ${token_line%%$'\t'*}")
wait_for "curl -fsS http://127.0.0.1:$HTTP_BACKEND_PORT/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$BACKEND_PORT/main/bench" 20
as_user() { curl -fsS "${auth[@]}" "$@"; }
wait_for "as_user http://127.0.0.1:$GATEWAY_PORT/api/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$PLAIN_PORT/api/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$NGINX_PORT/api/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$HAPROXY_PORT/api/main/bench" 20
if curl -fsS -o /dev/null http://127.0.0.1:$GATEWAY_PORT/api/main/bench 2>/dev/null; then
  echo "the deployed gateway answered a request without a token" >&2
  exit 1
fi

# CPU time (user and system, clock ticks) and context switches (voluntary
# and not) of the given processes and their threads: "user system switches".
cpu_ticks() {
  local user=0 sys=0 switches=0 pid stat
  for pid in "$@"; do
    for stat in /proc/"$pid"/task/*/stat; do
      read -r -a f < <(sed 's/.*) //' "$stat")
      user=$((user + f[11])) sys=$((sys + f[12]))
    done
    switches=$((switches + $(awk '/ctxt_switches/ {n += $2} END {print n}' /proc/"$pid"/task/*/status)))
  done
  echo "$user $sys $switches"
}

# One slice of a round: wrk for a duration (SLICE, or DURATION for the
# backend alone) on a URL, the given processes' CPU counted; appends to FILE
# "requests seconds user system switches p50 p99 errors" (ticks; latencies
# in us).
slice_wrk() { # file duration url pids...
  local file=$1 duration=$2 url=$3 c0 c1 out
  shift 3
  c0=$(cpu_ticks "$@")
  out=$(wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$duration" --latency -s scripts/bench/identities.lua "$url")
  c1=$(cpu_ticks "$@")
  awk -v a="$c0" -v b="$c1" -v nominal="${duration%s}" '
    function us(v) { if (v ~ /ms$/) return v * 1000; if (v ~ /us$/) return v + 0; if (v ~ /s$/) return v * 1e6; return v + 0 }
    / requests in / { n = $1; secs = $4 + 0 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    /Non-2xx|Socket errors/ { errors++ }
    END {
      split(a, x, " "); split(b, y, " ")
      printf "%d %.3f %d %d %d %.0f %.0f %d\n", n, (secs > 0 ? secs : nominal), y[1] - x[1], y[2] - x[2], y[3] - x[3], p50, p99, errors }' \
    <<<"$out" >>"$file"
}

# A proxy's round from its slices: a line on stderr (p50 the slices' mean,
# p99 their worst), "req/s CPU-us" on stdout.
round_of() { # name file
  awk -v name="$1" -v hz="$(getconf CLK_TCK)" '
    { n += $1; secs += $2; u += $3; s += $4; sw += $5; p50 += $6; if ($7 > p99) p99 = $7; errors += $8 }
    END {
      printf "%-10s %12.2f req/s   p50 %6.0fus   p99 %6.0fus   CPU %5.1f us/request (system %5.1f)   %5.1f switches/100   %s\n",
        name, n / secs, p50 / NR, p99, (u + s) / hz * 1e6 / n, s / hz * 1e6 / n, sw * 100 / n, (errors ? "ERRORS in " errors " slices" : "") > "/dev/stderr"
      printf "%.2f %.1f\n", n / secs, (u + s) / hz * 1e6 / n }' "$2"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "== machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== HTTP: wrk -t$WRK_THREADS -c$CONNECTIONS, $DURATION per proxy and round in $SLICES slices taken in turns, GET of a 1 KiB JSON body with a valid token of one of $USERS users, $ROUNDS rounds (cores: $THREADS)" >&2
nginx_pids=$(pgrep -P "$nginx_pid" | tr '\n' ' ')
slice_wrk "$work/direct.slices" "$DURATION" "http://127.0.0.1:$HTTP_BACKEND_PORT/main/bench"
direct=$(round_of direct "$work/direct.slices" | cut -d' ' -f1)
# Warm-up, not counted: upstream connections opened, allocator arenas grown.
for port in $NGINX_PORT $HAPROXY_PORT $GATEWAY_PORT $PLAIN_PORT; do
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d2s -s scripts/bench/identities.lua "http://127.0.0.1:$port/api/main/bench" >/dev/null
done
: >"$work/nginx.rps"; : >"$work/haproxy.rps"; : >"$work/gateway.rps"; : >"$work/plain.rps"
proxies=(nginx gateway haproxy plain)
for ((round = 1; round <= ROUNDS; round++)); do
  for name in "${proxies[@]}"; do : >"$work/$name.slices"; done
  for ((slice = 0; slice < SLICES; slice++)); do
    for ((i = 0; i < ${#proxies[@]}; i++)); do
      name=${proxies[(i + slice + round) % ${#proxies[@]}]}
      # shellcheck disable=SC2086
      case $name in
        nginx) slice_wrk "$work/$name.slices" "$SLICE" "http://127.0.0.1:$NGINX_PORT/api/main/bench" $nginx_pids ;;
        gateway) slice_wrk "$work/$name.slices" "$SLICE" "http://127.0.0.1:$GATEWAY_PORT/api/main/bench" "$gateway_pid" ;;
        haproxy) slice_wrk "$work/$name.slices" "$SLICE" "http://127.0.0.1:$HAPROXY_PORT/api/main/bench" "$haproxy_pid" ;;
        plain) slice_wrk "$work/$name.slices" "$SLICE" "http://127.0.0.1:$PLAIN_PORT/api/main/bench" "$plain_pid" ;;
      esac
    done
  done
  echo "-- round $round" >&2
  round_of nginx "$work/nginx.slices" >>"$work/nginx.rps"
  round_of gateway "$work/gateway.slices" >>"$work/gateway.rps"
  round_of haproxy "$work/haproxy.slices" >>"$work/haproxy.rps"
  round_of proxy-only "$work/plain.slices" >>"$work/plain.rps"
done
echo "== machine load after the rounds: $(cut -d' ' -f1-3 /proc/loadavg)"
# Each round's ratios: the gateway against the references run beside it in
# that round (free of the machine's slow drift, which moves all alike).
paste -d' ' "$work/nginx.rps" "$work/haproxy.rps" "$work/gateway.rps" "$work/plain.rps" | awk '
  { printf "round %d: gateway/nginx %.3f   gateway/haproxy %.3f   proxy-only/nginx %.3f   proxy-only/haproxy %.3f\n", NR, $5 / $1, $5 / $3, $7 / $1, $7 / $3
    if ($5 < $1 || $5 < $3) short++ }
  END { printf "rounds with the gateway below a reference: %d of %d   (target: 0; token check on)\n", short, NR }'
for name in nginx haproxy gateway plain; do
  printf '%s %s %s\n' "$name" "$(cut -d' ' -f1 "$work/$name.rps" | median)" "$(cut -d' ' -f2 "$work/$name.rps" | median)"
done | awk -v d="$direct" '
  { rps[$1] = $2; cpu[$1] = $3 }
  END {
    printf "median req/s: nginx %.0f, haproxy %.0f, gateway %.0f, proxy-only gateway %.0f, direct %.0f\n", rps["nginx"], rps["haproxy"], rps["gateway"], rps["plain"], d
    printf "median ratios: gateway/nginx %.2f   gateway/haproxy %.2f   proxy-only/nginx %.2f\n", rps["gateway"] / rps["nginx"], rps["gateway"] / rps["haproxy"], rps["plain"] / rps["nginx"]
    printf "median CPU per request: nginx %.1f us, haproxy %.1f us, gateway %.1f us, proxy-only %.1f us\n", cpu["nginx"], cpu["haproxy"], cpu["gateway"], cpu["plain"] }'

echo "== SSE per-event latency: $LATENCY_STREAMS streams each direct, through the gateway (recorder on) and through the proxy-only gateway (recorder off), all at the same time, $LATENCY_EVENTS events every ${LATENCY_INTERVAL_MS} ms each"
path="/aura/test/stream?events=$LATENCY_EVENTS&interval_ms=$LATENCY_INTERVAL_MS"
"$TARGET"/release/dwp-bench latency "127.0.0.1:$BACKEND_PORT" "$path" "$LATENCY_STREAMS" >"$work/direct.lat" &
direct_job=$!
"$TARGET"/release/dwp-bench latency "127.0.0.1:$PLAIN_PORT" "/api$path" "$LATENCY_STREAMS" >"$work/plain.lat" &
plain_job=$!
"$TARGET"/release/dwp-bench latency "127.0.0.1:$GATEWAY_PORT" "/api$path" "$LATENCY_STREAMS" >"$work/gateway.lat"
wait $direct_job $plain_job
direct_lat=$(cat "$work/direct.lat")
gateway_lat=$(cat "$work/gateway.lat")
plain_lat=$(cat "$work/plain.lat")
recorded=$(curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk '/^gateway_recorder_events_total / {print $2}')
dropped=$(curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk '/^gateway_recorder_dropped_total / {print $2}')
echo "direct            $direct_lat"
echo "gateway           $gateway_lat   (recorder: $recorded events written, $dropped dropped)"
echo "proxy-only        $plain_lat"
awk -v d="$direct_lat" -v g="$gateway_lat" -v n="$plain_lat" 'BEGIN {
  split(d, a, " "); split(g, b, " "); split(n, c, " ");
  printf "added per-event latency: p50 %d us, p99 %d us   (target: p99 < 500 us)\n", b[4] - a[4], b[6] - a[6];
  printf "gateway vs proxy-only: p50 %d vs %d us, p99 %d vs %d us   (p50 ratio %.2f)\n", b[4], c[4], b[6], c[6], b[4] / c[4] }'

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "== SSE memory: $STREAMS concurrent idle streams of $USERS users held through the gateway"
before=$(rss_kib $gateway_pid)
"$TARGET"/release/dwp-bench streams "127.0.0.1:$GATEWAY_PORT" "/api/aura/test/stream?events=0" "$STREAMS" 8 >"$work/streams.out" &
streams_pid=$!
wait_for "grep -q '^open' $work/streams.out" 120
sleep 2
during=$(rss_kib $gateway_pid)
open_line=$(cat "$work/streams.out")
open_gauge=$(curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk '/^gateway_open_streams / {print $2}')
wait $streams_pid || true
awk -v b="$before" -v d="$during" -v n="$STREAMS" -v o="$open_line" -v g="$open_gauge" \
  'BEGIN { printf "%s   gateway open-stream gauge %s   RSS before %d KiB, with streams %d KiB   per stream %.1f KiB   (target <= 16 KiB)\n", o, g, b, d, (d - b) / n }'
