#!/usr/bin/env bash
# Run the real Asterisk 22 (Debian sid) without Docker, from the Asterisk container image's
# filesystem (scripts/images.sh rootfs: the image asterisk-docker/Dockerfile builds, cached by
# content hash, as a mounted buildah container), in a chroot + private mount namespace.
#
# Usage: scripts/asterisk-run.sh [--run-dir DIR] [--state-dir DIR] COMMAND
#   start          build/reuse the image, copy config and the fallback AGI's code,
#                  start Asterisk, wait until fully booted (fails with the log tail
#                  if it does not come up)
#   stop           stop Asterisk (core stop now, then TERM, then KILL); idempotent
#   restart        stop + start
#   status         exit 0 if running and answering, 3 if stopped, 1 if not answering
#   rx 'CLI CMD'   run `asterisk -rx 'CLI CMD'` against this run (e.g. rx 'pjsip show endpoints')
#   exec CMD [ARG...]  run CMD as an AGI script that Asterisk starts runs: in the run's
#                  chroot and mount namespace, as Asterisk's uid/gid (no supplementary
#                  groups), with Asterisk's environment and working directory; stdin,
#                  stdout, stderr and the exit status pass through. E.g.
#                  exec /opt/callpolicy/fallback-agi --check
#   paths          print RUN_DIR, rootfs, full log, console log, pid, state dir
#
# Env:
#   RUN_DIR                per-run state dir (default /tmp/callpolicy-asterisk); --run-dir wins
#   ASTERISK_EXTRA_CONFIG  (start) a directory whose *.conf are added to /etc/asterisk, e.g.
#                          config/demo (the demo AMI user, manager-users.conf)
#   CALLPOLICY_STATE_DIR   (start) the callpolicy state dir for the fallback AGI; --state-dir
#                          wins. An absolute host directory (created if missing) holding
#                          callpolicy.toml, the SQLite database its [store] path names
#                          (name it *.db, give its ABSOLUTE path) and whatever else the config
#                          names (e.g. a zones_file). It is bind-mounted read-write at the
#                          SAME path inside the chroot, so the host's daemon/CLI and the
#                          in-chroot fallback use one config and one database, and Asterisk
#                          gets CALLPOLICY_CONFIG=<dir>/callpolicy.toml in its environment
#                          (CALLPOLICY_DB is removed from it). Without it, Asterisk gets
#                          neither and the fallback AGI fails (the dialplan's last resort).
#                          Permissions, made at each start (SQLite in WAL mode: a read-only
#                          reader must be able to create the -wal/-shm files when they are
#                          absent, and reads a change still in the -wal even when it cannot
#                          write the -shm): the dir gets the asterisk gid, g+rwx, setgid
#                          (new files get that group) and sticky (asterisk cannot delete or
#                          rename root's files); its files get the asterisk gid, *.toml g+r,
#                          the rest g+rw (a root-created -wal/-shm then copies the database's
#                          mode and is group-writable too). Use a dedicated directory: the
#                          asterisk uid/gid (101 in the rootfs) may name another user/group on
#                          the host, and whoever has them can change the database.
#   ASTERISK_NODE_IP       (start) one node of a cluster (make run-cluster, README: "Several
#                          nodes"): the loopback address this Asterisk binds instead of
#                          127.0.0.1 (scripts/asterisk-node-config.sh rewrites the copied
#                          config: SIP IP:5060, AMI IP:5038, FastAGI agi://IP:4573).
#                          --node-ip wins. Default 127.0.0.1: the shipped config unchanged.
#   ASTERISK_BOOT_TIMEOUT  seconds to wait for "fully booted" (default 30)
#   CALLPOLICY_CACHE       lock dir of scripts/images.sh
#
# RUN_DIR layout (everything a run writes; the cached rootfs stays read-only):
#   callpolicy/     agi/fallback-agi + agi/callpolicy/ as of the start, byte-compiled by
#                   the rootfs's python3          -> /opt/callpolicy/agi (ro); the rootfs
#                   has /opt/callpolicy/fallback-agi -> agi/fallback-agi and the packages
#                   in /opt/callpolicy/lib (see asterisk-docker/Dockerfile)
#   etc/asterisk/   config/asterisk/*.conf + dialplan/*.conf   -> /etc/asterisk (ro)
#   etc/hosts, etc/resolv.conf                                 -> /etc/hosts, /etc/resolv.conf (ro)
#   log/            -> /var/log/asterisk   (log/full is the full log)
#   spool/ lib/ cache/ run/ tmp/ -> /var/spool/asterisk /var/lib/asterisk /var/cache/asterisk
#                                   /run/asterisk (run/asterisk.ctl = control socket) /tmp
#   console.log     Asterisk's stdout/stderr (early start-up errors land here)
#   asterisk.pid, state, exit-status (written when Asterisk exits)
# A state dir under /tmp is mounted on a directory made in RUN_DIR/tmp (the chroot's
# /tmp); anywhere else, on a directory of the rootfs (/var/lib/callpolicy exists
# there; another path gets its empty mount point created in the cached rootfs once).
#
# How it isolates: `unshare --mount` gives Asterisk a private mount namespace in
# which the rootfs is bind-mounted read-only over itself, /proc and the per-run
# directories are mounted in, then `chroot` + `asterisk -f`. These mounts are
# invisible on the host and vanish with the last process of the namespace, so a
# crashed Asterisk cannot leave mounts behind either; `stop` also kills any
# straggler left in that namespace.
set -euo pipefail

SCRIPT="$(readlink -f "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
RUN_DIR="${RUN_DIR:-/tmp/callpolicy-asterisk}"
STATE_DIR="${CALLPOLICY_STATE_DIR:-}"
NODE_IP="${ASTERISK_NODE_IP:-127.0.0.1}"
BOOT_TIMEOUT="${ASTERISK_BOOT_TIMEOUT:-30}"
MARKER=".callpolicy-run"

log() { printf 'asterisk-run: %s\n' "$*" >&2; }
die() { printf 'asterisk-run: ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$SCRIPT" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --run-dir) [ $# -ge 2 ] || usage; RUN_DIR="$2"; shift 2 ;;
        --run-dir=*) RUN_DIR="${1#*=}"; shift ;;
        --state-dir) [ $# -ge 2 ] || usage; STATE_DIR="$2"; shift 2 ;;
        --state-dir=*) STATE_DIR="${1#*=}"; shift ;;
        --node-ip) [ $# -ge 2 ] || usage; NODE_IP="$2"; shift 2 ;;
        --node-ip=*) NODE_IP="${1#*=}"; shift ;;
        -h|--help) usage ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage
CMD="$1"; shift

[ "$(id -u)" -eq 0 ] || die "must run as root (chroot, mount namespace)"
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$(pwd)/$RUN_DIR" ;; esac
RUN_DIR="${RUN_DIR%/}"
if [ -z "$RUN_DIR" ] || [ "$RUN_DIR" = "/" ]; then die "refusing RUN_DIR=/"; fi

# ----------------------------------------------------------------- helpers
read_state() {   # sets PID ROOTFS MNTNS RUN_STATE_DIR (empty if unknown)
    PID=""; ROOTFS=""; MNTNS=""; RUN_STATE_DIR=""
    if [ -f "$RUN_DIR/state" ]; then
        # shellcheck disable=SC1091
        . "$RUN_DIR/state"
    fi
}

# Is $PID our asterisk (alive, named asterisk, chrooted into $ROOTFS)?
pid_is_ours() {
    [ -n "${PID:-}" ] && [ -d "/proc/$PID" ] || return 1
    [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = "asterisk" ] || return 1
    [ "$(readlink "/proc/$PID/root" 2>/dev/null)" = "$ROOTFS" ] || return 1
}

# asterisk -rx inside the run's namespace + chroot. Bounded in time.
ast_rx() {   # ast_rx SECONDS 'cli command'
    local secs="$1"; shift
    timeout --kill-after=2 "$secs" \
        nsenter --target "$PID" --mount -- chroot "$ROOTFS" asterisk -rx "$*"
}

# Run "$@" as an AGI script of this Asterisk would run: its namespace and chroot
# (nsenter --root/--wd: the target's root and cwd), its effective uid/gid without
# supplementary groups (as Asterisk runs), its environment (as the process started).
as_asterisk() {
    local uid gid env=()
    uid="$(awk '/^Uid:/ { print $3 }' "/proc/$PID/status")"
    gid="$(awk '/^Gid:/ { print $3 }' "/proc/$PID/status")"
    if [ -z "$uid" ] || [ -z "$gid" ]; then die "cannot read the credentials of asterisk pid $PID"; fi
    mapfile -d '' env < "/proc/$PID/environ"
    nsenter --target "$PID" --mount --root --wd --setuid "$uid" --setgid "$gid" -- \
        /usr/bin/env -i "${env[@]}" "$@"
}

# The callpolicy state dir (--state-dir / CALLPOLICY_STATE_DIR): absolute, canonical,
# created if missing, group-owned by the rootfs's asterisk gid (see the header).
prepare_state_dir() {   # prepare_state_dir GID; sets STATE_DIR, STATE_MNT
    local gid="$1" f
    case "$STATE_DIR" in /*) ;; *) STATE_DIR="$(pwd)/$STATE_DIR" ;; esac
    mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
    STATE_DIR="$(readlink -f "$STATE_DIR")"
    case "$STATE_DIR/" in
        /*/*/) ;;
        *) die "state dir $STATE_DIR: use a dedicated directory, not a top-level one" ;;
    esac
    case "$STATE_DIR/" in
        /proc/*|/dev/*|/sys/*|/etc/*|/usr/*|/opt/callpolicy/*|/run/asterisk/*|/var/lib/asterisk/*|\
        /var/log/asterisk/*|/var/spool/asterisk/*|/var/cache/asterisk/*)
            die "state dir $STATE_DIR: not there (a system directory or one this script mounts)" ;;
        "$RUN_DIR"/*) die "state dir $STATE_DIR is inside RUN_DIR $RUN_DIR (wiped at each start)" ;;
    esac
    case "$STATE_DIR" in *$'\n'*|*,*) die "state dir path with a newline or comma" ;; esac
    chgrp "$gid" "$STATE_DIR" || die "cannot chgrp $STATE_DIR"
    chmod u+rwx,g+rwxs,+t "$STATE_DIR" || die "cannot chmod $STATE_DIR"
    for f in "$STATE_DIR"/* "$STATE_DIR"/.[!.]*; do
        if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
        chgrp "$gid" "$f"
        case "$f" in *.toml) chmod g+r "$f" ;; *) chmod g+rw "$f" ;; esac
    done
    [ -f "$STATE_DIR/callpolicy.toml" ] \
        || log "WARNING: no $STATE_DIR/callpolicy.toml yet: the fallback AGI fails until there is one"
    case "$STATE_DIR/" in
        /tmp/*) STATE_MNT="$RUN_DIR/tmp${STATE_DIR#/tmp}" ;;   # the chroot's /tmp is RUN_DIR/tmp
        *)  STATE_MNT="$ROOTFS$STATE_DIR"
            if [ ! -d "$STATE_MNT" ]; then
                log "creating the mount point $STATE_DIR in the rootfs (an empty directory)"
            fi ;;
    esac
    mkdir -p "$STATE_MNT" || die "cannot create the mount point $STATE_MNT"
}

# PIDs of every process in mount namespace $MNTNS (the run's namespace).
ns_pids() {
    [ -n "${MNTNS:-}" ] || return 0
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$MNTNS" ] && echo "${p#/proc/}"
    done
    return 0
}

show_logs() {
    log "---- $RUN_DIR/console.log (tail)"
    { tail -n 20 "$RUN_DIR/console.log" 2>/dev/null; echo; } >&2 || true
    log "---- $RUN_DIR/log/full (errors/warnings, tail)"
    grep -E 'ERROR|WARNING' "$RUN_DIR/log/full" 2>/dev/null | tail -n 20 >&2 || true
}

udp_port_busy() {   # $NODE_IP:5060 or 0.0.0.0:5060 already bound?
    local hex
    hex="$(printf '%02X' $(echo "$NODE_IP" | tr '.' ' ') | sed -E 's/(..)(..)(..)(..)/\4\3\2\1/')"
    awk -v ip="$hex" 'NR>1 { split($2,a,":"); if ((a[1]==ip || a[1]=="00000000") && a[2]=="13C4") f=1 } END { exit !f }' /proc/net/udp
}

# ----------------------------------------------------------------- commands
do_stop() {
    read_state
    if [ -z "$PID" ] && [ -z "$MNTNS" ]; then
        log "not running ($RUN_DIR)"
        return 0
    fi
    if pid_is_ours; then
        log "stopping asterisk pid $PID"
        ast_rx 5 'core stop now' >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do pid_is_ours || break; sleep 0.1; done
        if pid_is_ours; then log "still running: SIGTERM"; kill -TERM "$PID" 2>/dev/null || true; fi
        for _ in $(seq 1 30); do pid_is_ours || break; sleep 0.1; done
        if pid_is_ours; then log "still running: SIGKILL"; kill -KILL "$PID" 2>/dev/null || true; fi
        for _ in $(seq 1 30); do pid_is_ours || break; sleep 0.1; done
        pid_is_ours && die "asterisk pid $PID would not die"
        # gone for good (reaped by the supervisor), not just a zombie
        for _ in $(seq 1 30); do [ -d "/proc/$PID" ] || break; sleep 0.1; done
    fi
    # Anything else left in the run's mount namespace (e.g. a hung `asterisk -rx`)
    # keeps the namespace and its mounts alive: end it.
    local left
    left="$(ns_pids | tr '\n' ' ')"
    if [ -n "${left// /}" ]; then
        log "killing leftovers in the run's namespace: $left"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$RUN_DIR/state" "$RUN_DIR/asterisk.pid"
    log "stopped"
}

do_start() {
    read_state
    if pid_is_ours; then
        die "already running in $RUN_DIR (pid $PID); run '$0 --run-dir $RUN_DIR stop' first"
    fi
    [ -z "$PID$MNTNS" ] || do_stop   # stale state from a crashed run: clean up

    # Refuse to wipe a directory that is not ours.
    if [ -e "$RUN_DIR" ] && [ ! -f "$RUN_DIR/$MARKER" ] && [ -n "$(ls -A "$RUN_DIR" 2>/dev/null)" ]; then
        die "$RUN_DIR exists, is not empty and is not a callpolicy run dir; pick another RUN_DIR"
    fi
    if udp_port_busy; then
        die "UDP $NODE_IP:5060 is already in use (another Asterisk run? 'ss -ulpn | grep 5060')"
    fi

    ROOTFS="$("$REPO/scripts/images.sh" rootfs | tail -n1)" \
        || die "no Asterisk image (scripts/images.sh rootfs failed, see above)"
    [ -x "$ROOTFS/usr/sbin/asterisk" ] || die "no asterisk in rootfs $ROOTFS"

    local uid gid
    uid="$(chroot "$ROOTFS" id -u asterisk)" || die "no asterisk user in $ROOTFS"
    gid="$(chroot "$ROOTFS" id -g asterisk)"

    rm -rf "$RUN_DIR"
    mkdir -p "$RUN_DIR"
    touch "$RUN_DIR/$MARKER"
    mkdir -p "$RUN_DIR/etc/asterisk" "$RUN_DIR/log" "$RUN_DIR/spool" "$RUN_DIR/lib" \
             "$RUN_DIR/cache" "$RUN_DIR/run" "$RUN_DIR/tmp"

    # Config: repo's config/asterisk/*.conf + dialplan/*.conf, one flat /etc/asterisk, plus
    # $ASTERISK_EXTRA_CONFIG/*.conf (deployment files such as manager-users.conf; the demo and
    # the tests use config/demo).
    local f name
    for f in "$REPO"/config/asterisk/*.conf "$REPO"/dialplan/*.conf \
             ${ASTERISK_EXTRA_CONFIG:+"$ASTERISK_EXTRA_CONFIG"/*.conf}; do
        [ -f "$f" ] || continue
        name="$(basename "$f")"
        [ -e "$RUN_DIR/etc/asterisk/$name" ] && die "config name clash: $name is in both config/asterisk/ and dialplan/"
        cp "$f" "$RUN_DIR/etc/asterisk/$name"
    done
    [ -f "$RUN_DIR/etc/asterisk/asterisk.conf" ] || die "no config/asterisk/asterisk.conf in $REPO"
    "$REPO/scripts/asterisk-node-config.sh" "$RUN_DIR/etc/asterisk" "$NODE_IP" \
        || die "no config for node $NODE_IP (see above)"

    # The fallback AGI's code as of now (the rootfs has its packages): copied, so a
    # run uses one version of it, and byte-compiled by the rootfs's python3 (the
    # mount is read-only at run time; uncompiled, every call would compile it).
    mkdir -p "$RUN_DIR/callpolicy"
    tar -C "$REPO/agi" --exclude=__pycache__ --exclude='*.pyc' -cf - fallback-agi callpolicy \
        | tar -C "$RUN_DIR/callpolicy" -xf - || die "cannot copy $REPO/agi into $RUN_DIR/callpolicy"
    chmod -R u+rwX,go+rX,go-w "$RUN_DIR/callpolicy"
    chmod 0755 "$RUN_DIR/callpolicy/fallback-agi"
    if [ -d "$ROOTFS/opt/callpolicy/agi" ]; then
        # shellcheck disable=SC2016
        unshare --mount --propagation private -- bash -c '
            set -e
            mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"   # never write the cache
            mount --bind "$2" "$1/opt/callpolicy/agi"
            chroot "$1" /usr/bin/python3 -m compileall -q -q /opt/callpolicy/agi/callpolicy
            chroot "$1" /usr/bin/python3 -c "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], \"exec\")" \
                /opt/callpolicy/agi/fallback-agi
        ' compile "$ROOTFS" "$RUN_DIR/callpolicy" >&2 \
            || log "WARNING: the callpolicy code does not compile under the rootfs's python3: the fallback AGI will fail"
    else
        log "WARNING: rootfs $ROOTFS has no /opt/callpolicy: no fallback AGI"
    fi
    STATE_MNT=""
    if [ -n "$STATE_DIR" ]; then prepare_state_dir "$gid"; fi
    chown -R 0:"$gid" "$RUN_DIR/etc/asterisk"
    chmod 0750 "$RUN_DIR/etc/asterisk"
    chmod 0640 "$RUN_DIR/etc/asterisk"/*

    # Name resolution that never blocks: Asterisk looks up its own hostname and
    # A.ROOT-SERVERS.NET at start; a slow resolver stalls its threads and calls.
    printf '127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$(hostname)" \
        > "$RUN_DIR/etc/hosts"
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$RUN_DIR/etc/resolv.conf"
    chmod 0644 "$RUN_DIR/etc/hosts" "$RUN_DIR/etc/resolv.conf"

    # /var/lib/asterisk starts as the package's (sounds/moh symlinks), astdb is per run.
    cp -a "$ROOTFS/var/lib/asterisk/." "$RUN_DIR/lib/"
    chown -R "$uid:$gid" "$RUN_DIR/log" "$RUN_DIR/spool" "$RUN_DIR/lib" "$RUN_DIR/cache" "$RUN_DIR/run"
    chmod 0750 "$RUN_DIR/log" "$RUN_DIR/spool" "$RUN_DIR/lib" "$RUN_DIR/cache" "$RUN_DIR/run"
    chmod 1777 "$RUN_DIR/tmp"

    # The inner script runs in the new mount namespace, then becomes asterisk.
    # shellcheck disable=SC2016
    local inner='
set -eu
R="$1"; D="$2"; S="$3"
mount --make-rprivate /
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --bind "$D/etc/asterisk"     "$R/etc/asterisk"
mount --bind "$D/etc/hosts"        "$R/etc/hosts"
mount --bind "$D/etc/resolv.conf"  "$R/etc/resolv.conf"
mount --bind "$D/log"              "$R/var/log/asterisk"
mount --bind "$D/spool"            "$R/var/spool/asterisk"
mount --bind "$D/lib"              "$R/var/lib/asterisk"
mount --bind "$D/cache"            "$R/var/cache/asterisk"
mount --bind "$D/run"              "$R/run/asterisk"
mount --bind "$D/tmp"              "$R/tmp"
if [ -d "$R/opt/callpolicy/agi" ]; then
    mount --bind "$D/callpolicy"   "$R/opt/callpolicy/agi"
    mount -o remount,bind,ro "$R/opt/callpolicy/agi"
fi
unset CALLPOLICY_DB CALLPOLICY_CONFIG
if [ -n "$S" ]; then
    # the same path inside (mount point made by prepare_state_dir)
    mount --bind "$S" "$R$S"
    export CALLPOLICY_CONFIG="$S/callpolicy.toml"
fi
for m in etc/asterisk etc/hosts etc/resolv.conf; do mount -o remount,bind,ro "$R/$m"; done
# the rootfs itself read-only: a run can never modify the cache
mount -o remount,bind,ro "$R"
exec chroot "$R" /usr/sbin/asterisk -f -n
'
    : > "$RUN_DIR/console.log"
    log "starting asterisk (rootfs $ROOTFS, run dir $RUN_DIR)"
    local t0 ; t0=$(date +%s.%N)
    # A small supervisor (its own session, detached from our terminal) starts
    # Asterisk and reaps it: without it a stopped Asterisk stays a zombie until
    # PID 1 gets round to it. It records the exit status in $RUN_DIR/exit-status.
    # shellcheck disable=SC2016
    setsid bash -c '
        unshare --mount --propagation private -- bash -c "$1" inner "$2" "$3" "$4" \
            </dev/null >>"$3/console.log" 2>&1 &
        echo $! > "$3/asterisk.pid.tmp" && mv "$3/asterisk.pid.tmp" "$3/asterisk.pid"
        wait $!; echo $? > "$3/exit-status"
    ' supervisor "$inner" "$ROOTFS" "$RUN_DIR" "$STATE_DIR" </dev/null >>"$RUN_DIR/console.log" 2>&1 &
    for _ in $(seq 1 50); do [ -s "$RUN_DIR/asterisk.pid" ] && break; sleep 0.05; done
    PID="$(cat "$RUN_DIR/asterisk.pid" 2>/dev/null || true)"
    [ -n "$PID" ] || die "could not start asterisk (see $RUN_DIR/console.log)"
    # unshare, bash and chroot exec, so $PID becomes the asterisk process itself.
    for _ in $(seq 1 50); do
        [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = "asterisk" ] && break
        [ -d "/proc/$PID" ] || break
        sleep 0.05
    done
    MNTNS="$(readlink "/proc/$PID/ns/mnt" 2>/dev/null || true)"
    printf 'PID=%s\nROOTFS=%q\nMNTNS=%q\nRUN_STATE_DIR=%q\n' "$PID" "$ROOTFS" "$MNTNS" \
        "$STATE_DIR" > "$RUN_DIR/state"

    # Wait for "fully booted".
    local deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
    while :; do
        if ! pid_is_ours; then
            show_logs
            rm -f "$RUN_DIR/state" "$RUN_DIR/asterisk.pid"
            sleep 0.2
            [ -f "$RUN_DIR/exit-status" ] && log "asterisk exit status: $(cat "$RUN_DIR/exit-status")"
            die "asterisk exited during start-up (see above, $RUN_DIR/console.log, $RUN_DIR/log/full)"
        fi
        if [ -S "$RUN_DIR/run/asterisk.ctl" ] && ast_rx 5 'core waitfullybooted' >/dev/null 2>&1; then
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            show_logs
            do_stop || true
            die "asterisk not fully booted after ${BOOT_TIMEOUT}s"
        fi
        sleep 0.2
    done
    local t1 ; t1=$(date +%s.%N)
    log "fully booted in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')s: pid $PID"
    # Surface configuration problems early (they do not stop Asterisk from booting).
    if grep -qE 'ERROR' "$RUN_DIR/log/full" 2>/dev/null; then
        log "WARNING: errors in $RUN_DIR/log/full:"
        grep -E 'ERROR' "$RUN_DIR/log/full" | tail -n 10 >&2
    fi
    # Can the fallback AGI decide? (as Asterisk would run it; a warning, never fatal)
    if [ -n "$STATE_DIR" ]; then
        local check   # bounded: the fallback has its own watchdog
        if check="$(as_asterisk /opt/callpolicy/fallback-agi --check 2>&1)"; then
            log "fallback AGI: ${check#callpolicy-fallback-agi: }"
        else
            log "WARNING: the fallback AGI cannot decide yet: ${check#callpolicy-fallback-agi: }"
        fi
    fi
    log "full log: $RUN_DIR/log/full   CLI: $0 --run-dir $RUN_DIR rx 'core show channels'"
}

do_status() {
    read_state
    if ! pid_is_ours; then
        echo "stopped ($RUN_DIR)"
        return 3
    fi
    if ast_rx 5 'core show uptime' 2>/dev/null; then
        echo "running: pid $PID, run dir $RUN_DIR"
        return 0
    fi
    echo "running but not answering on the CLI: pid $PID, run dir $RUN_DIR"
    return 1
}

case "$CMD" in
    start)   do_start ;;
    stop)    do_stop ;;
    restart)   # keeps the run's state dir unless --state-dir/CALLPOLICY_STATE_DIR says otherwise
        read_state; STATE_DIR="${STATE_DIR:-$RUN_STATE_DIR}"
        do_stop; do_start ;;
    status)  do_status ;;
    rx)
        [ $# -ge 1 ] || die "usage: $0 rx 'CLI command'"
        read_state
        pid_is_ours || die "asterisk is not running in $RUN_DIR"
        ast_rx "${RX_TIMEOUT:-30}" "$*"
        ;;
    exec)
        [ $# -ge 1 ] || die "usage: $0 exec COMMAND [ARG...]"
        read_state
        pid_is_ours || die "asterisk is not running in $RUN_DIR"
        as_asterisk "$@"
        ;;
    paths)
        read_state
        printf 'RUN_DIR=%s\nROOTFS=%s\nFULL_LOG=%s\nCONSOLE_LOG=%s\nPID=%s\nSTATE_DIR=%s\n' \
            "$RUN_DIR" "$ROOTFS" "$RUN_DIR/log/full" "$RUN_DIR/console.log" "$PID" "$RUN_STATE_DIR"
        ;;
    *) usage ;;
esac
