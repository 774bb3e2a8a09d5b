# Shared by scripts/run-demo.sh (one node) and scripts/run-cluster.sh (two nodes): sourced,
# with REPO and BIN set. Every function is bounded in time.

say() { printf 'run: %s\n' "$*" >&2 || true; }

# The demo's call forwards (config/demo-forwards.txt) into one Asterisk's AstDB.
load_forwards() {   # load_forwards RUN_DIR
    local number target _
    while read -r number target _; do
        case "$number" in ''|\#*) continue ;; esac
        RUN_DIR="$1" "$REPO/scripts/asterisk-run.sh" rx \
            "database put callforward $number $target" >/dev/null
    done < "$REPO/config/demo-forwards.txt"
}

# The daemon under its watchdog, in the background, on CONFIG; waits until it listens
# (20 s). Sets DAEMON_PID (the watchdog's pid). Fails with the log's path.
start_daemon() {   # start_daemon CONFIG LOG PIDFILE
    local config="$1" log="$2" pidfile="$3"
    : >"$log"
    "$BIN/callpolicy" --config "$config" watchdog --pidfile "$pidfile" >>"$log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 200); do
        grep -q '"event": "listening"' "$log" && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || { say "daemon failed: see $log"; return 1; }
        sleep 0.1
    done
    say "daemon not listening after 20 s: see $log"
    return 1
}

# TERM the watchdog (it stops its daemon), KILL after 5 s. Idempotent.
stop_daemon() {   # stop_daemon PID
    local pid="$1"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
