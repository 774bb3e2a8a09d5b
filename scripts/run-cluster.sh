#!/usr/bin/env bash
# `make run-cluster`: two Asterisk nodes sharing one policy in PostgreSQL, with the demo
# customers (README: "Several nodes").
#   PostgreSQL (Debian's package, started here as `postgres`) on 127.0.0.1:$CALLPOLICY_PG_PORT
#     (default 55432: a system cluster may own 5432), database `callpolicy`
#   node A  PJSIP UDP 127.0.1.1:5060, AMI 127.0.1.1:5038, its daemon's FastAGI 127.0.1.1:4573
#           (metrics 127.0.1.1:9464)
#   node B  the same on 127.0.2.1
#   the trunk: a SIPp UAS at 127.0.0.3:5080, shared by both nodes; the demo phones (identified
#   by source address) may call either node.
#   the HTTP API on node A's config (127.0.1.1:8480): one API for the shared database, its
#   /v1/status is node A's daemon; a new demo token per scope, printed
# Each node: scripts/asterisk-run.sh --node-ip (Asterisk's config) +
# scripts/callpolicy-node-config.sh
# (the daemon's), the daemon under its watchdog; its local snapshot (the fallback AGI's) and
# call-record spool in its state dir.
# Ctrl-C stops everything (the API, daemons, Asterisks, PostgreSQL) and leaves no process or
# mount.
# Env: CALLPOLICY_CLUSTER_DIR (default $REPO/build/cluster): PostgreSQL's data, node state, logs.
#      CALLPOLICY_DEMO_RESET=1 re-creates the database from config/demo-customers.toml.
#      CALLPOLICY_PG_PORT (default 55432).
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
STATE="${CALLPOLICY_CLUSTER_DIR:-$REPO/build/cluster}"
PG_PORT="${CALLPOLICY_PG_PORT:-55432}"
BIN="$REPO/.venv/bin"
ASTERISK="$REPO/scripts/asterisk-run.sh"
NODES=(a:127.0.1.1 b:127.0.2.1)
# shellcheck source=scripts/demo-lib.sh
. "$REPO/scripts/demo-lib.sh"
[ "$(id -u)" -eq 0 ] || { say "needs root (chroot, mounts, PostgreSQL as postgres)"; exit 1; }

"$REPO/scripts/install-deps.sh"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
[ -x "$PG_BIN/pg_ctl" ] || { say "no PostgreSQL server in /usr/lib/postgresql"; exit 1; }
say "Asterisk image filesystem: $("$REPO/scripts/images.sh" rootfs | tail -n 1)"

PGDATA="$STATE/postgresql"
URL="postgresql://postgres@127.0.0.1:$PG_PORT/callpolicy"
as_pg() { runuser -u postgres -- "$@"; }
psql_pg() { as_pg "$PG_BIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -d postgres -c "$1"; }

DAEMONS=()
STARTED=()
API_PID=""
cleanup() {
    # Nothing may interrupt the cleanup (see run-demo.sh).
    trap '' INT TERM PIPE HUP
    trap - EXIT
    say "stopping"
    local pid node
    [ -z "$API_PID" ] || stop_daemon "$API_PID"
    for pid in "${DAEMONS[@]}"; do stop_daemon "$pid"; done
    for node in "${STARTED[@]}"; do
        "$ASTERISK" --run-dir "$STATE/asterisk-$node" stop >>"$STATE/stop.log" 2>&1 \
            || say "asterisk $node stop failed: see $STATE/stop.log"
    done
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >>"$STATE/stop.log" 2>&1 \
            || say "PostgreSQL stop failed: see $STATE/stop.log"
    fi
    say "stopped; the database stays in $PGDATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$STATE"
STATE="$(readlink -f "$STATE")"
PGDATA="$STATE/postgresql"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres -E UTF8 --locale=C >/dev/null
fi
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-p $PG_PORT -h 127.0.0.1 -k $PGDATA" start >/dev/null \
    || { say "PostgreSQL did not start: see $PGDATA/server.log"; exit 1; }
if [ "${CALLPOLICY_DEMO_RESET:-0}" = 1 ]; then psql_pg "DROP DATABASE IF EXISTS callpolicy"; fi
if [ -z "$(psql_pg "SELECT 1 FROM pg_database WHERE datname = 'callpolicy'")" ]; then
    psql_pg "CREATE DATABASE callpolicy"
    "$BIN/callpolicy" --db "$URL" customer import "$REPO/config/demo-customers.toml" \
        --by make-run-cluster --ticket demo >&2
fi

export ASTERISK_EXTRA_CONFIG="$REPO/config/demo"   # the demo AMI user
for entry in "${NODES[@]}"; do
    node="${entry%%:*}" ip="${entry#*:}"
    mkdir -p "$STATE/node-$node"
    "$REPO/scripts/callpolicy-node-config.sh" "$ip" "$URL" >"$STATE/node-$node/callpolicy.toml"
    STARTED+=("$node")
    "$ASTERISK" --run-dir "$STATE/asterisk-$node" --state-dir "$STATE/node-$node" \
        --node-ip "$ip" start >&2
    load_forwards "$STATE/asterisk-$node"
    start_daemon "$STATE/node-$node/callpolicy.toml" "$STATE/node-$node/daemon.log" \
        "$STATE/node-$node/daemon.pid" || exit 1
    DAEMONS+=("$DAEMON_PID")
done
demo_api_tokens "$STATE/node-a/callpolicy.toml" "$STATE/node-a/api-tokens.toml" || exit 1
start_api "$STATE/node-a/callpolicy.toml" "$STATE/node-a/api.log" || exit 1

cat <<BANNER

  callpolicy cluster is running: two Asterisk 22 nodes, one policy in PostgreSQL.
database: $URL
    node A   SIP udp 127.0.1.1:5060   AMI 127.0.1.1:5038   FastAGI 127.0.1.1:4573
             daemon log $STATE/node-a/daemon.log   Asterisk log $STATE/asterisk-a/log/full
    node B   the same on 127.0.2.1 ($STATE/node-b, $STATE/asterisk-b)
    phones   127.0.0.2 acme-101, 127.0.0.4 acme-102, 127.0.0.5 bakkerij-201 (suspended):
             call either node
    trunk    expected at 127.0.0.3:5080, shared (run a SIPp UAS there to see calls)
    HTTP API $API_URL/v1/openapi.json (node A's config; log $STATE/node-a/api.log)

api: $API_URL
$(while read -r scope token; do [ -n "$scope" ] && echo "token $scope: $token"; done <<<"$DEMO_TOKENS")

  Try it (in another terminal):
    sipp -sn uas -i 127.0.0.3 -p 5080 -nostdin >/dev/null &               # the trunk
    sipp -sn uac -i 127.0.0.2 -p 5060 -s 0905123456 -m 1 127.0.1.1:5060   # 403 on node A
    $BIN/callpolicy --db $URL unblock acme --prefix 0905 --for 1h --by you --ticket T-1
    sipp -sn uac -i 127.0.0.2 -p 5060 -s 0905123456 -m 1 127.0.2.1:5060   # now passes on B
    $BIN/callpolicy --config $STATE/node-b/callpolicy.toml status          # node B's daemon
    curl -H "Authorization: Bearer <token read>" $API_URL/v1/overview       # both nodes
    kill %1                                                               # the trunk, when done

  Ctrl-C stops both nodes, the API and PostgreSQL.
BANNER
wait "${DAEMONS[@]}"
