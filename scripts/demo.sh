#!/usr/bin/env bash
# `make demo`: the seed incident replayed through the real dist/ebb.wasm on a simulated clock,
# as it happened and with its two fixes, with SLO verdicts and reports; then the filter up close,
# one `ebb request` at a time. Every command is printed: rerun and vary them.
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

bold "Reports: open $OUT/bitbucket-2021-02-05.html (timeline chart, events, SLO verdicts); JSON for CI beside it."
echo "Next: make test (everything); docs/scenarios.md (write your own incident); docs/staging.md (put ebb in staging Envoy)."
