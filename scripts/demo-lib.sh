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

# The HTTP API's demo tokens: a new token file (the old one's tokens stop working), one token
# per scope, named demo-<scope>; sets DEMO_TOKENS ("scope token" lines). DEMO ONLY.
demo_api_tokens() {   # demo_api_tokens CONFIG TOKENS_FILE
    local config="$1" file="$2" scope token
    rm -f "$file"
    DEMO_TOKENS=""
    for scope in read billing ops; do
        token="$("$BIN/callpolicy" --config "$config" api token add --name "demo-$scope" \
            --scope "$scope" --file "$file" 2>/dev/null)" || { say "api token add failed"; return 1; }
        DEMO_TOKENS+="$scope $token"$'\n'
    done
}

# `callpolicy api serve` under its watchdog (`api watchdog`: a frozen or dead API is
# restarted) in the background on CONFIG ([api] host/port); waits until it answers (20 s).
# Sets API_PID (the watchdog's) and API_URL.
start_api() {   # start_api CONFIG LOG
    local config="$1" log="$2" host port
    read -r host port < <("$BIN/python" -c 'import sys, tomllib
api = tomllib.load(open(sys.argv[1], "rb")).get("api", {})
print(api.get("host", "127.0.0.1"), api.get("port", 8480))' "$config")
    : >"$log"
    "$BIN/callpolicy" --config "$config" api watchdog >>"$log" 2>&1 &
    API_PID=$!
    API_URL="http://$host:$port"
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
        if ! kill -0 "$API_PID" 2>/dev/null || grep -q daemon_exited "$log"; then
            say "API failed: see $log"   # e.g. its port taken: it would only restart
            return 1
        fi
        sleep 0.1
    done
    say "API not answering after 20 s: see $log"
    return 1
}
