#!/usr/bin/env bash
# `make demo`: the seed incident's failure, injected by the real dist/ebb.wasm running in the
# harness host on a simulated clock. Each step is one `ebb request`; read the commands to learn
# the tool. (The full ten-hour replay with alert verdicts is `ebb replay`, issue 4.)
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

bold "Next: make test (everything), docs/staging.md (put ebb in staging Envoy)."
