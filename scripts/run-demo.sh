#!/usr/bin/env bash
# `make run`: the product on this machine, with the demo customers.
#   Asterisk 22 (the callpolicy-asterisk image's filesystem, chroot) on 127.0.0.1:5060,
#   AMI 127.0.0.1:5038
#   callpolicy daemon (FastAGI 127.0.0.1:4573) under its watchdog, embedded SQLite
#   the HTTP API on 127.0.0.1:8480 ([api] of config/demo.toml), a new demo token per scope
# Ctrl-C stops everything and leaves no process or mount behind.
# Env: CALLPOLICY_DEMO_DIR (default /var/lib/callpolicy-demo): database, config, logs.
#      CALLPOLICY_DEMO_RESET=1 re-creates the database from config/demo-customers.toml.
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
STATE="${CALLPOLICY_DEMO_DIR:-/var/lib/callpolicy-demo}"
export RUN_DIR="${RUN_DIR:-$STATE/asterisk}"
export CALLPOLICY_STATE_DIR="$STATE"
export ASTERISK_EXTRA_CONFIG="$REPO/config/demo"   # the demo AMI user
BIN="$REPO/.venv/bin"
ASTERISK="$REPO/scripts/asterisk-run.sh"
# shellcheck source=scripts/demo-lib.sh
. "$REPO/scripts/demo-lib.sh"
[ "$(id -u)" -eq 0 ] || { say "needs root (chroot, mounts)"; exit 1; }

"$REPO/scripts/install-deps.sh"
say "Asterisk image filesystem: $("$REPO/scripts/images.sh" rootfs | tail -n 1)"

mkdir -p "$STATE"
# The fallback AGI reads the same files inside Asterisk's chroot, where only the state dir is
# visible (at the same path): config and database live there (the zone table and the
# must-reach list ship inside the callpolicy package).
cp "$REPO/config/demo.toml" "$STATE/callpolicy.toml"
export CALLPOLICY_CONFIG="$STATE/callpolicy.toml"
DB="$STATE/callpolicy.db"
if [ "${CALLPOLICY_DEMO_RESET:-0}" = 1 ]; then rm -f "$DB" "$DB-wal" "$DB-shm"; fi
if [ ! -f "$DB" ]; then
    "$BIN/callpolicy" customer import "$REPO/config/demo-customers.toml" --by make-run \
        --ticket demo >&2
fi

DAEMON_PID=""
API_PID=""
cleanup() {
    # Nothing may interrupt the cleanup: not a second Ctrl-C, not a closed terminal or pipe
    # (`make run | tee log`: tee dies with the Ctrl-C, then every message would SIGPIPE us).
    trap '' INT TERM PIPE HUP
    trap - EXIT
    say "stopping"
    stop_daemon "$API_PID"
    stop_daemon "$DAEMON_PID"
    "$ASTERISK" stop >>"$STATE/stop.log" 2>&1 || say "asterisk stop failed: see $STATE/stop.log"
    say "stopped; the database stays in $DB"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

"$ASTERISK" start >&2
load_forwards "$RUN_DIR"
start_daemon "$CALLPOLICY_CONFIG" "$STATE/daemon.log" "$STATE/daemon.pid" || exit 1
demo_api_tokens "$CALLPOLICY_CONFIG" "$STATE/api-tokens.toml" || exit 1
start_api "$CALLPOLICY_CONFIG" "$STATE/api.log" || exit 1

cat <<BANNER

  callpolicy is running.
    SIP (Asterisk 22)   udp 127.0.0.1:5060    phones are identified by source address:
                        127.0.0.2 acme-101 (on site)   127.0.0.4 acme-102 (nomadic)
                        127.0.0.5 bakkerij-201 (suspended customer)
    trunk               expected at 127.0.0.3:5080 (run a SIPp UAS there to see calls)
    FastAGI daemon      127.0.0.1:4573   log: $STATE/daemon.log (one JSON line per decision)
    AMI                 127.0.0.1:5038   Asterisk log: $RUN_DIR/log/full (grep callpolicy:)
    database            $DB
    HTTP API            $API_URL/v1/openapi.json   log: $STATE/api.log

api: $API_URL
$(while read -r scope token; do [ -n "$scope" ] && echo "token $scope: $token"; done <<<"$DEMO_TOKENS")

  Try it (in another terminal):
    sipp -sn uas -i 127.0.0.3 -p 5080 -nostdin >/dev/null &   # the trunk
    sipp -sn uac -i 127.0.0.2 -p 5060 -s 092101299 -m 1 127.0.0.1:5060   # allowed
    sipp -sn uac -i 127.0.0.2 -p 5060 -s 0905123456 -m 1 127.0.0.1:5060  # 403 premium
    $BIN/callpolicy --db $DB unblock acme --prefix 0905 --for 1h --by you --ticket T-1
    $BIN/callpolicy --db $DB check --customer acme 0905123456   # why?
    $BIN/callpolicy --config $STATE/callpolicy.toml status      # the daemon: AMI, live calls
    curl -H "Authorization: Bearer <token ops>" $API_URL/v1/customers/acme
    kill %1                                                   # the trunk, when done

  Ctrl-C stops Asterisk, the daemon and the API.
BANNER
wait "$DAEMON_PID"
