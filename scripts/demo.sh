#!/usr/bin/env bash
# `make demo`: the seed incident replayed through the real dist/ebb.wasm on a simulated clock,
# as it happened and with its two fixes, with SLO verdicts and reports; then the filter up close,
# one `ebb request` at a time, `ebb proxy` on real sockets, and a live `ebb gameday` against it.
# Every command is printed: rerun and vary them.
set -euo pipefail
cd "$(dirname "$0")/.."
EBB=${EBB:-target/release/ebb}
WASM=${WASM:-dist/ebb.wasm}
POOLS=examples/bitbucket-pools.json
bold() { if [ -z "${NO_COLOR:-}" ] && [ -t 1 ]; then printf '\n\033[1m%s\033[0m\n' "$*"; else printf '\n%s\n' "$*"; fi; }
show() { printf '  $ %s\n' "$*"; "$@" | grep -E "$PICK" | sed 's/^/    /'; }

OUT=out/demo; mkdir -p "$OUT"
# The Bitbucket pools plus one fault, as a static configuration (xDS, Istio) would carry it.
with_fault() {
  local file="$OUT/$1.json"
  sed -e '$d' "$POOLS" > "$file"
  printf '  ,"faults": [%s]\n}\n' "$2" >> "$file"
  echo "@$file"
}

replay() { # scenario, then what to say about it
  local name=$1; shift
  bold "$*"
  printf '  $ %s replay scenarios/%s.json --json %s/%s.json --html %s/%s.html\n' "$EBB" "$name" "$OUT" "$name" "$OUT" "$name"
  local code=0
  "$EBB" replay "scenarios/$name.json" --plugin "$WASM" --json "$OUT/$name.json" --html "$OUT/$name.html" | sed 's/^/    /' || code=$?
  # 1 = an SLO missed: for the incident as it happened, that is the point.
  [ "$code" -le 1 ] || exit "$code"
}

replay bitbucket-2021-02-05 "A. 2021-02-05 as it happened: only customer-impact alerts. Ten hours, every request through ebb.wasm."
replay bitbucket-2021-02-05-capacity-alert "B. The same night with the capacity alert the incident report added afterwards."
replay bitbucket-2021-02-05-restore-on-abort "C. The same night with deploy tooling that restores pools when it aborts."

bold "The filter up close: one request at a time through dist/ebb.wasm (ebb request)."

bold "1. A healthy proxy: the request reaches the web pool; all 10 hosts are in it."
PICK='^step|upstream got|^  :authority|ebb.pool.web.(available|expected)_hosts|ebb.armed'
show "$EBB" request --plugin "$WASM" --config @"$POOLS" --authority bitbucket.org --log-level warn

bold "2. 00:10 UTC: a rolling deploy of the web pool aborts at batch 2 and leaves it drained."
DEPLOY='{"id":"deploy-0010","ttl":"10h","deploy":{"pool":"web","batches":5,"batch_interval":"2m","abort_at_batch":2,"on_abort":"leave_drained"}}'
PICK='^step|ebb.pool.web.(available|expected)_hosts|deploy_in_progress|ebb.active_faults'
echo "  during the rollout (1m in):"
show "$EBB" request --plugin "$WASM" --config "$(with_fault deploy "$DEPLOY")" --authority bitbucket.org --at 1m --log-level warn
echo "  seven hours later (night traffic fits; nothing customer-facing fails):"
show "$EBB" request --plugin "$WASM" --config "$(with_fault deploy "$DEPLOY")" --authority bitbucket.org --at 7h --log-level warn
echo "  -> available_hosts < expected_hosts with no deploy in progress: the capacity alert's signal"
echo "     (deploy/prometheus/ebb-alerts.yaml), the alert the incident lacked."

bold "3. 00:10 UTC, the SSH path (network filter, root_id ebb_tcp): new git connections are closed."
SSH='{"id":"ssh-reset","ttl":"11m","reset":{"pool":"ssh","percent":100}}'
PICK='^step|close|ebb.pool.ssh.(available_hosts|reset_total|requests_total)'
show "$EBB" request --plugin "$WASM" --config "$(with_fault ssh "$SSH")" --root-id ebb_tcp --tcp --data 'git-upload-pack' --property destination.port=22 --log-level warn

bold "4. Every fault expires: a 5m drain, 6 minutes later, with no traffic in between."
SHORT='{"id":"short","ttl":"5m","drain":{"pool":"api","hosts":3}}'
PICK='ebb.pool.api.available_hosts|ebb.active_faults|faults_expired|expired'
show "$EBB" request --plugin "$WASM" --config "$(with_fault short "$SHORT")" --authority api.bitbucket.org --at 6m --log-level info

bold "5. A classic abort at 100% on /api: answered locally, never forwarded."
ABORT='{"id":"api-503","abort":{"status":503,"match":{"path_prefix":"/api"}}}'
PICK='^step|local reply|status|x-ebb-fault|ebb.aborted_total'
show "$EBB" request --plugin "$WASM" --config "$(with_fault abort "$ABORT")" --authority bitbucket.org --path /api/2.0/repositories --log-level warn

# 6. Real sockets: the staging bootstrap served by `ebb proxy` in front of two local servers.
proxy_demo() {
  command -v python3 >/dev/null && command -v curl >/dev/null || { echo "  (skipped: needs python3 and curl)"; return; }
  local dir; dir=$(mktemp -d)
  local key=demo-proxy-key-7c2e9a4b1f6d8e3a5c0b9d7e2f4a6c81
  sed "s/CHANGE-ME-ebb-staging-placeholder-key/$key/" deploy/envoy/envoy.yaml > "$dir/envoy.yaml"
  mkdir -p "$dir/web"; echo "hello from the web pool" > "$dir/web/index.html"
  python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$dir/web" > "$dir/web.log" 2>&1 & local up=$!
  local port=""; for _ in $(seq 50); do port=$(grep -o 'port [0-9]*' "$dir/web.log" 2>/dev/null | head -1 | cut -d' ' -f2 || true); [ -n "$port" ] && break; sleep 0.1; done
  printf '  $ %s proxy deploy/envoy/envoy.yaml --wasm-file /etc/envoy/ebb.wasm=%s --cluster web=127.0.0.1:%s ... (ports: any free)\n' "$EBB" "$WASM" "$port"
  "$EBB" proxy "$dir/envoy.yaml" --wasm-file "/etc/envoy/ebb.wasm=$WASM" --listener ingress_http=127.0.0.1:0 \
    --listener ingress_ssh=127.0.0.1:0 --listener ebb_control=127.0.0.1:0 --admin 127.0.0.1:0 \
    --cluster web=127.0.0.1:"$port" --cluster api=127.0.0.1:"$port" --cluster ssh=127.0.0.1:"$port" \
    > "$dir/proxy.out" 2> "$dir/proxy.err" & local px=$!
  for _ in $(seq 100); do grep -q '^ready' "$dir/proxy.out" 2>/dev/null && break; sleep 0.1; done
  local ingress control admin
  ingress=$(awk '$2=="ingress_http"{print $3}' "$dir/proxy.out"); control=$(awk '$2=="ebb_control"{print $3}' "$dir/proxy.out")
  admin=$(awk '$2=="admin"{print $3}' "$dir/proxy.out")
  if [ -z "$ingress" ]; then sed 's/^/    /' "$dir/proxy.err"; kill $up $px 2>/dev/null; return; fi
  echo "  $ curl http://$ingress/"; curl -s "http://$ingress/" | sed 's/^/    /'
  echo "  $ scripts/ebb-ctl --url http://$control add '{\"id\":\"drain\",\"ttl\":\"5m\",\"drain\":{\"pool\":\"web\",\"hosts\":4}}'"
  EBB_KEY=$key scripts/ebb-ctl --url "http://$control" add '{"id":"drain","ttl":"5m","drain":{"pool":"web","hosts":4}}' > /dev/null
  sleep 1.2
  echo "  $ curl http://$admin/stats/prometheus | grep web"
  curl -s "http://$admin/stats/prometheus" | grep -E '^ebb_pool_(available|expected)_hosts\{ebb_pool="web"\}|^envoy_cluster_upstream_rq_xx\{envoy_cluster_name="web",envoy_response_code_class="2"\}' | sed 's/^/    /'
  echo "  $ scripts/ebb-ctl --url http://$control clear-all    # the kill switch"
  EBB_KEY=$key scripts/ebb-ctl --url "http://$control" clear-all | sed 's/^/    /'; echo
  kill -TERM $px; wait $px 2>/dev/null || true; kill $up 2>/dev/null || true; wait $up 2>/dev/null || true
  rm -rf "$dir"
}
bold "6. Real sockets: deploy/envoy/envoy.yaml served by ebb proxy (2 workers) in front of a local server."
proxy_demo

# 7. A live game day: `ebb gameday` drives ebb proxy through its signed control API, watches its
# state and metrics, answers with the scenario's own alert rule and runbook, and cleans up.
gameday_demo() {
  command -v curl >/dev/null || { echo "  (skipped: needs curl)"; return; }
  local dir; dir=$(mktemp -d)
  local key=demo-gameday-key-3b8e1f6a2d9c4e7b0a5f8d1c6e3b9a72
  sed "s/CHANGE-ME-ebb-staging-placeholder-key/$key/" deploy/envoy/envoy.yaml > "$dir/envoy.yaml"
  (umask 077; printf '%s\n' "$key" > "$dir/control.key")
  "$EBB" proxy "$dir/envoy.yaml" --wasm-file "/etc/envoy/ebb.wasm=$WASM" --listener ingress_http=127.0.0.1:0 \
    --listener ingress_ssh=127.0.0.1:0 --listener ebb_control=127.0.0.1:0 --admin 127.0.0.1:0 \
    --cluster web=127.0.0.1:9 --cluster api=127.0.0.1:9 --cluster ssh=127.0.0.1:9 \
    > "$dir/proxy.out" 2> "$dir/proxy.err" & local px=$!
  for _ in $(seq 100); do grep -q '^ready' "$dir/proxy.out" 2>/dev/null && break; sleep 0.1; done
  local control admin
  control=$(awk '$2=="ebb_control"{print $3}' "$dir/proxy.out"); admin=$(awk '$2=="admin"{print $3}' "$dir/proxy.out")
  if [ -z "$control" ]; then sed 's/^/    /' "$dir/proxy.err"; kill $px 2>/dev/null; rm -rf "$dir"; return; fi
  local scenario=scenarios/gameday-aborted-deploy.json
  echo "  $ $EBB gameday $scenario --target edge=http://$control --time-scale 30 --dry-run"
  "$EBB" gameday "$scenario" --target "edge=http://$control" --time-scale 30 --dry-run | cut -c1-150 | sed 's/^/    /'
  echo "  $ EBB_KEY_FILE=control.key $EBB gameday $scenario --target edge=http://$control \\"
  echo "      --metrics http://$admin/stats/prometheus --time-scale 30 --html $OUT/gameday.html --console 127.0.0.1:0"
  echo "    (20 scenario minutes in 40 seconds; progress on stderr, one line per command and change;"
  echo "     open the 'console:' URL in a browser to watch it live and Halt it)"
  local code=0 console=()
  [ -f dist/console/index.html ] && console=(--console 127.0.0.1:0)
  EBB_KEY_FILE="$dir/control.key" "$EBB" gameday "$scenario" --target "edge=http://$control" \
    --metrics "http://$admin/stats/prometheus" --time-scale 30 --html "$OUT/gameday.html" "${console[@]}" 2>&1 | sed 's/^/    /' || code=$?
  echo "  $ scripts/ebb-ctl --url http://$control faults    # nothing left behind"
  EBB_KEY_FILE="$dir/control.key" scripts/ebb-ctl --url "http://$control" faults | sed 's/^/    /'
  kill -TERM $px; wait $px 2>/dev/null || true
  rm -rf "$dir"
  [ "$code" -eq 0 ] || exit "$code"
}
bold "7. A live game day: ebb gameday plays the aborted deploy against ebb proxy at 30x, judges its SLOs, cleans up."
gameday_demo

bold "Reports: open $OUT/bitbucket-2021-02-05.html (timeline chart, events, SLO verdicts); JSON for CI beside it."
echo "Next: make test (everything); docs/scenarios.md (write your own incident); docs/proxy.md (ebb proxy); docs/staging.md (put ebb in staging Envoy)."
