#!/usr/bin/env bash
# recover-pool.sh: restore the pool named in an Alertmanager webhook notification, through the ebb
# filter's signed control API. An example of recovery tooling that runs unchanged in three places:
#
#   - in a replay, as a scenario's recovery program ("run": ["../scripts/recover-pool.sh"]): ebb
#     sets EBB_CONTROL_URL to its loopback control server, EBB_KEY to the replay's key and
#     EBB_TIMESTAMP to the simulated clock;
#   - behind an Alertmanager webhook receiver, `ebb webhook` (or anything that pipes the
#     notification to stdin), against staging Envoy: EBB_CONTROL_URL=http://127.0.0.1:9902
#     EBB_KEY_FILE=/etc/ebb/control.key (deploy/alertmanager/ebb-gameday.yml);
#   - by hand: recover-pool.sh < notification.json
#
#   recover-pool.sh [--verbose] [--dry-run] < webhook.json
#
# Restores the pool of every firing alert in the notification (each pool once): its `pool` label,
# or `ebb_pool` as alerts from deploy/prometheus/ebb-alerts.yaml carry it, with
# scripts/ebb-ctl beside this script. Reads the JSON with jq, else python3, else sed (which
# expects one alert per notification, as Alertmanager's webhook receives from a rule grouped
# by alertname and pool).
#
# Exit status: 0 every pool restored (or nothing to do); 1 a restore was refused; 2 bad input or
# usage, or the control API could not be reached.
set -euo pipefail

prog=recover-pool
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
verbose=0
dry_run=()

while (($#)); do
  case $1 in
    --verbose | -v) verbose=1; shift ;;
    --dry-run) dry_run=(--dry-run); shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) printf '%s: unknown argument %s (see --help)\n' "$prog" "$1" >&2; exit 2 ;;
  esac
done

say() { ((verbose)) && printf '%s: %s\n' "$prog" "$*" >&2 || true; }

url=${EBB_CONTROL_URL:-${EBB_URL:-http://127.0.0.1:9902}}
notification=$(cat)
[[ -n $notification ]] || { printf '%s: no webhook JSON on stdin\n' "$prog" >&2; exit 2; }

# The pools of the firing alerts, one a line.
pools_of() {
  if command -v jq >/dev/null 2>&1; then
    jq -r '.alerts[]? | select(.status == "firing") | .labels.pool // .labels.ebb_pool // empty'
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, sys
for alert in json.load(sys.stdin).get("alerts", []):
    labels = alert.get("labels", {})
    pool = labels.get("pool") or labels.get("ebb_pool")
    if alert.get("status") == "firing" and pool:
        print(pool)'
  else
    # No JSON parser: the notification's own status and the first "pool" (or "ebb_pool") label.
    local text
    text=$(tr -d '\n')
    [[ $text =~ \"status\"[[:space:]]*:[[:space:]]*\"firing\" ]] || return 0
    printf '%s\n' "$text" | sed -n 's/.*"\(ebb_\)\{0,1\}pool"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\2/p' | head -n1
  fi
}

if ! pools=$(printf '%s' "$notification" | pools_of); then
  printf '%s: the webhook JSON cannot be read\n' "$prog" >&2
  exit 2
fi
pools=$(printf '%s\n' "$pools" | awk 'NF && !seen[$0]++')
if [[ -z $pools ]]; then
  say "no firing alert with a pool label: nothing to restore"
  exit 0
fi

status=0
while IFS= read -r pool; do
  say "restoring pool $pool via $url (alert ${EBB_ALERT:-?})"
  if "$here/ebb-ctl" --url "$url" "${dry_run[@]}" restore "$pool"; then
    say "pool $pool restored"
  else
    rc=$?
    printf '%s: restoring pool %s failed (ebb-ctl exit %s)\n' "$prog" "$pool" "$rc" >&2
    ((rc > status)) && status=$rc
  fi
done <<<"$pools"
exit "$status"
