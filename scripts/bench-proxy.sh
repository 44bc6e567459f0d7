#!/usr/bin/env bash
# `make bench-proxy`: requests/s, added latency and proxy CPU per request, with wrk, for one
# upstream reached directly, through nginx (the reference proxy), and through `ebb proxy` with no
# filter, with ebb.wasm and no fault, and with ebb.wasm and a 50 % capacity drain that does not shed
# at this load. All in one run, interleaved, on loopback; then memory over a 1-minute run at 1,000
# connections (MEMORY_DURATION=0 skips it); or, with INSTRUCTIONS=1, instructions per request under
# callgrind. EBB_B=PATH adds a second ebb binary's no-filter row to every round (A B A B) and prints
# the medians; with EBB_B_WASM=1 its row runs ebb.wasm instead, next to the first binary's. SEPARATE_UPSTREAM=1 runs the upstream as an nginx of its own rather than inside the
# reference nginx proxy's processes. Figures go to docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
EBB=${EBB:-target/release/ebb}
WASM=${WASM:-dist/ebb.wasm}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
for tool in nginx wrk; do
  command -v $tool >/dev/null || { echo "bench-proxy needs $tool (apt-get install nginx wrk)" >&2; exit 2; }
done
[ -x "$EBB" ] && [ -f "$WASM" ] || { echo "run make build first" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The upstream: nginx answering 200 "ok" from memory. By default the reference nginx proxy runs in
# the same two worker processes as the upstream, so that a request can cross the proxy and the
# upstream within one process; SEPARATE_UPSTREAM=1 runs the upstream as an nginx of its own (two
# more worker processes), as it is for ebb proxy, so that both proxies meet the same arrangement.
UP=$(free_port); NG=$(free_port)
upstream_server="server { listen 127.0.0.1:$UP; location / { return 200 \"ok\"; } }"
proxy_server="server { listen 127.0.0.1:$NG; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx_conf() { # $1 = name, $2 = its servers
  cat > "$work/$1.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/$1.pid;
error_log $work/$1.error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  $2
}
EOF
  nginx -c "$work/$1.conf" -p "$work" & pids+=($!)
}
if [ "${SEPARATE_UPSTREAM:-0}" = 1 ]; then
  nginx_conf upstream "$upstream_server"
  nginx_conf nginx "$proxy_server"
else
  nginx_conf nginx "$upstream_server $proxy_server"
fi

bootstrap() { # $1 = with wasm (0/1)
  local filters="" 
  if [ "$1" = 1 ] || { [ "$1" = 2 ] && [ "${EBB_B_WASM:-0}" = 1 ]; }; then
    filters='
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: ebb
                root_id: ebb
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {"pools": [{"name": "web", "match": {"cluster": "web"}, "hosts": 10, "capacity_per_host": 1000}],
                     "control": {"key": "bench-key-2b9f0c1d8e7a6f5b4c3d2e1f0a9b8c7d"}}
                vm_config:
                  vm_id: ebb
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: '"$WASM"' } }'
  fi
  cat <<EOF
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
stats_config:
  stats_tags:
  - tag_name: ebb_pool
    regex: '^(?:wasmcustom\.)?ebb\.pool(\.([a-z0-9_-]+))\.[a-z_]+\$'
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: web }
          http_filters:$filters
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: web
    type: STATIC
    load_assignment:
      cluster_name: web
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP } } }
EOF
}

start_ebb() { # $1 = with wasm; prints the ingress address, leaves the pid in EBB_PID
  bootstrap "$1" > "$work/b$1.yaml"
  "$EBB" proxy "$work/b$1.yaml" --concurrency 2 > "$work/out$1" 2> "$work/err$1" & EBB_PID=$!; pids+=($EBB_PID)
  for _ in $(seq 100); do grep -q '^ready' "$work/out$1" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$work/out$1" || { cat "$work/err$1" >&2; exit 2; }
}
# INSTRUCTIONS=1: instead of timings, instructions per request under valgrind's callgrind, which
# counts the same for the same binary and load whatever else the machine runs (wrk -c4, 20 s, one
# worker, after a 2 s warm-up that is not counted). For A/B work on a busy machine.
if [ "${INSTRUCTIONS:-0}" = 1 ]; then
  command -v valgrind >/dev/null || { echo "INSTRUCTIONS=1 needs valgrind (apt-get install valgrind)" >&2; exit 2; }
  echo "| path | requests | instructions/request |"
  echo "|---|---|---|"
  for with in 0 1; do
    bootstrap "$with" > "$work/i$with.yaml"
    valgrind --tool=callgrind --callgrind-out-file="$work/cg$with" "$EBB" proxy "$work/i$with.yaml" --concurrency 1 \
      > "$work/iout$with" 2> "$work/ierr$with" & pids+=($!)
    for _ in $(seq 300); do grep -q '^ready' "$work/iout$with" 2>/dev/null && break; sleep 0.2; done
    grep -q '^ready' "$work/iout$with" || { cat "$work/ierr$with" >&2; exit 2; }
    url="http://$(awk '$2=="ingress"{print $3}' "$work/iout$with")/"
    admin=$(awk '$2=="admin"{print $3}' "$work/iout$with")
    wrk -t1 -c4 -d2s "$url" > /dev/null
    callgrind_control -z > /dev/null 2>&1
    reqs=$(wrk -t1 -c4 -d20s "$url" | awk '/requests in/{print $1}')
    callgrind_control -d > /dev/null 2>&1
    curl -s -X POST "http://$admin/quitquitquit" > /dev/null
    wait "${pids[-1]}" 2>/dev/null || true
    total=$(callgrind_annotate "$work/cg$with.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
    name=$([ "$with" = 1 ] && echo "ebb proxy + ebb.wasm, no fault" || echo "ebb proxy, no filter")
    printf '| %s | %s | %s |\n' "$name" "$reqs" "$((total / reqs))"
  done
  exit 0
fi

# PINGORA=1: a pass-through Pingora proxy (scripts/pingora-bench, outside the workspace; its first
# build compiles Pingora and needs cmake) as one more row, two threads like the others.
if [ "${PINGORA:-0}" = 1 ]; then
  command -v cmake >/dev/null || { echo "PINGORA=1 needs cmake (apt-get install cmake)" >&2; exit 2; }
  cargo build --quiet --release --manifest-path scripts/pingora-bench/Cargo.toml --target-dir target/pingora-bench
  PG=$(free_port)
  UPSTREAM=127.0.0.1:$UP LISTEN=127.0.0.1:$PG THREADS=2 target/pingora-bench/release/pingora-bench \
    > "$work/pingora.out" 2>&1 & PINGORA_PID=$!; pids+=($PINGORA_PID)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PG/" && break; sleep 0.1; done
fi
start_ebb 0; EBB0_PID=$EBB_PID; EBB0=$(awk '$2=="ingress"{print $3}' "$work/out0")
# EBB_B=PATH: a second ebb binary (a change under test) as one more no-filter row in every round,
# right after the first's (A B A B ...), and the medians of both and of nginx at the end.
if [ -n "${EBB_B:-}" ]; then
  EBB_A=$EBB; EBB=$EBB_B; start_ebb 2; EBBB_PID=$EBB_PID; EBBB=$(awk '$2=="ingress"{print $3}' "$work/out2"); EBB=$EBB_A
fi
start_ebb 1; EBB1_PID=$EBB_PID; EBB1=$(awk '$2=="ingress"{print $3}' "$work/out1")
sleep 0.5

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name, url, pid of the proxy (or -)
  local before after out rps p50 p99 reqs cpu
  [ "$3" != - ] && before=$(cpu_ticks "$3")
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
  [ "$3" != - ] && after=$(cpu_ticks "$3")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out"); p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  cpu="-"
  if [ "$3" != - ]; then cpu=$(awk -v t=$((after-before)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t/hz/n*1e6}'); fi
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "$cpu"
  echo "$rps $cpu" >> "$work/rows-${1%% (round*}"
}
median() { # file of "rps cpu" lines: the median of each column
  sort -n "$1" | awk '{r[NR]=$1} END{printf "%s", r[int((NR+1)/2)]}'
  printf ' req/s, '
  awk '{print $2}' "$1" | sort -n | awk '{c[NR]=$1} END{printf "%s µs/request\n", c[int((NR+1)/2)]}'
}
nginx_cpu_pid=- # nginx runs as several processes: its CPU is not attributed here
echo "| path | requests/s | p50 | p99 | proxy CPU µs/request |"
echo "|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  run "direct (round $round)" "http://127.0.0.1:$UP/" -
  run "nginx proxy_pass (round $round)" "http://127.0.0.1:$NG/" "$nginx_cpu_pid"
  if [ "${PINGORA:-0}" = 1 ]; then run "pingora pass-through (round $round)" "http://127.0.0.1:$PG/" "$PINGORA_PID"; fi
  run "ebb proxy, no filter (round $round)" "http://$EBB0/" "$EBB0_PID"
  if [ -n "${EBB_B:-}" ] && [ "${EBB_B_WASM:-0}" != 1 ]; then run "ebb proxy B, no filter (round $round)" "http://$EBBB/" "$EBBB_PID"; fi
  run "ebb proxy + ebb.wasm, no fault (round $round)" "http://$EBB1/" "$EBB1_PID"
  if [ "${EBB_B_WASM:-0}" = 1 ]; then run "ebb proxy B + ebb.wasm, no fault (round $round)" "http://$EBBB/" "$EBBB_PID"; fi
done
if [ -n "${EBB_B:-}" ]; then
  echo
  b_row="ebb proxy B, no filter"; [ "${EBB_B_WASM:-0}" = 1 ] && b_row="ebb proxy B + ebb.wasm, no fault"
  for row in "nginx proxy_pass" "ebb proxy, no filter" "ebb proxy + ebb.wasm, no fault" "$b_row"; do
    echo "median over $ROUNDS rounds, $row: $(median "$work/rows-$row")"
  done
fi
# A 50 % capacity drain of 10 000 slots: 5 000 remain, far above wrk's connections, so none shed.
ADMIN1=$(awk '$2=="admin"{print $3}' "$work/out1")
EBB_KEY=bench-key-2b9f0c1d8e7a6f5b4c3d2e1f0a9b8c7d scripts/ebb-ctl --url "http://$EBB1" \
  add '{"id":"drain","ttl":"10m","drain":{"pool":"web","fraction":0.5}}' > /dev/null
for _ in $(seq 50); do
  curl -s "http://$ADMIN1/stats/prometheus" | grep -q 'ebb_pool_available_hosts{ebb_pool="web"} 5' && break
  sleep 0.1
done
curl -s "http://$ADMIN1/stats/prometheus" | grep -q 'ebb_pool_available_hosts{ebb_pool="web"} 5' || {
  echo "the drain did not land:" >&2; curl -s "http://$ADMIN1/stats/prometheus" | grep ebb_pool >&2; exit 2; }
for round in $(seq "$ROUNDS"); do
  run "ebb proxy + ebb.wasm, 50 % capacity drain (round $round)" "http://$EBB1/" "$EBB1_PID"
done

# Memory under a long, wide load: 1,000 concurrent connections for MEMORY_DURATION through ebb.wasm
# with the drain still active (none shed: 5,000 slots). RSS of the proxy every 5 s; flat means no
# per-request or per-connection state is kept once a request ends.
MEMORY_DURATION=${MEMORY_DURATION:-60}
if [ "$MEMORY_DURATION" != 0 ]; then
  rss() { awk '/^VmRSS/{print $2}' "/proc/$EBB1_PID/status"; }
  echo
  echo "| seconds into a ${MEMORY_DURATION} s run at 1,000 connections | ebb proxy RSS (KiB) |"
  echo "|---|---|"
  echo "| before | $(rss) |"
  wrk -t2 -c1000 -d"${MEMORY_DURATION}s" "http://$EBB1/" > "$work/memory-wrk" &
  wrk_pid=$!
  for s in $(seq 5 5 "$MEMORY_DURATION"); do sleep 5; echo "| $s | $(rss) |"; done
  wait "$wrk_pid"
  sleep 1
  echo "| after (idle) | $(rss) |"
  awk '/requests in/{printf "%s requests, ", $1} /Socket errors/{printf "%s ", $0} /Non-2xx/{printf "%s", $0} END{print ""}' "$work/memory-wrk"
fi
