#!/usr/bin/env bash
# One real SIP call through the real Asterisk (Docker-less path):
#   phone bare-phone (SIPp UAC, 127.0.0.6:5060, the [bare] context: no policy) -> Asterisk (127.0.0.1:5060)
#   -> trunk (SIPp UAS, 127.0.0.3:5080), dialling 092101299.
# Passes when the UAC got 200 OK (then ACK, BYE, 200) and the trunk received the
# INVITE for sip:092101299@127.0.0.3. Exits non-zero otherwise.
#
# Usage: scripts/smoke-call.sh
# Env:
#   SMOKE_DIR   where logs go (default: a new /tmp/callpolicy-smoke.XXXXXX, kept)
#   RUN_DIR     Asterisk run dir (default $SMOKE_DIR/asterisk); see asterisk-run.sh
#   SMOKE_NUMBER  number dialled (default 092101299)
# If an Asterisk is already running in RUN_DIR it is used and left running;
# otherwise it is started and stopped again.
set -euo pipefail

SCRIPT="$(readlink -f "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
NUMBER="${SMOKE_NUMBER:-092101299}"
SMOKE_DIR="${SMOKE_DIR:-$(mktemp -d /tmp/callpolicy-smoke.XXXXXX)}"
mkdir -p "$SMOKE_DIR"
export RUN_DIR="${RUN_DIR:-$SMOKE_DIR/asterisk}"
RUN="$REPO/scripts/asterisk-run.sh"

log() { printf 'smoke-call: %s\n' "$*" >&2; }
fail() { printf 'smoke-call: FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root"
if ! command -v sipp >/dev/null 2>&1; then
    log "installing SIPp (Debian package sip-tester)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y sip-tester; } >&2 \
        || fail "could not install sip-tester"
fi

UAS_PID=""
STARTED_ASTERISK=0
cleanup() {
    local rc=$?
    if [ -n "$UAS_PID" ] && kill -0 "$UAS_PID" 2>/dev/null; then
        kill -TERM "$UAS_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$UAS_PID" 2>/dev/null || true
    fi
    if [ "$STARTED_ASTERISK" = 1 ]; then
        "$RUN" stop >&2 || rc=1
    fi
    log "artifacts: $SMOKE_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

udp_bound() {   # udp_bound HEXIP HEXPORT  (as in /proc/net/udp)
    awk -v ip="$1" -v port="$2" 'NR>1 { split($2,a,":"); if (a[1]==ip && a[2]==port) f=1 } END { exit !f }' /proc/net/udp
}

# 1. Asterisk
if "$RUN" status >/dev/null 2>&1; then
    log "using the Asterisk already running in $RUN_DIR"
else
    "$RUN" start || fail "asterisk did not start"
    STARTED_ASTERISK=1
fi

cd "$SMOKE_DIR"
rm -f trunk.log trunk-messages.log uac.log uac-messages.log uas.out uac.out ./*_errors.log

# 2. Trunk: SIPp UAS on 127.0.0.3:5080, one call, bounded.
udp_bound 0300007F 13D8 && fail "UDP 127.0.0.3:5080 already in use (a stray SIPp?)"
timeout --kill-after=5 40 sipp -sf "$REPO/tests/sipp/uas_trunk.xml" -i 127.0.0.3 -p 5080 \
    -m 1 -nostdin -timeout 30s -timeout_error \
    -trace_logs -log_file trunk.log -trace_msg -message_file trunk-messages.log \
    -trace_err >uas.out 2>&1 &
UAS_PID=$!
for _ in $(seq 1 50); do udp_bound 0300007F 13D8 && break; sleep 0.1; done
udp_bound 0300007F 13D8 || { cat uas.out >&2; fail "SIPp UAS did not bind 127.0.0.3:5080"; }

# 3. Phone bare-phone: SIPp UAC from 127.0.0.6:5060, one call, bounded.
log "calling $NUMBER from bare-phone (127.0.0.6) via 127.0.0.1:5060"
t0=$(date +%s.%N)
uac_rc=0
timeout --kill-after=5 30 sipp -sf "$REPO/tests/sipp/uac_call.xml" -i 127.0.0.6 -p 5060 \
    -s "$NUMBER" -key caller 092101101 -m 1 -nostdin -timeout 20s -timeout_error \
    -trace_logs -log_file uac.log -trace_msg -message_file uac-messages.log \
    -trace_err 127.0.0.1:5060 >uac.out 2>&1 || uac_rc=$?
t1=$(date +%s.%N)

# 4. The trunk finishes its call (BYE, then a 2 s timewait) and exits. If the
#    phone's call was not answered, do not wait for the trunk's timeout.
if ! grep -q '^FINAL_STATUS 200 ' uac.log 2>/dev/null; then
    kill -TERM "$UAS_PID" 2>/dev/null || true
fi
uas_rc=0
wait "$UAS_PID" || uas_rc=$?
UAS_PID=""

ok=1
[ "$uac_rc" -eq 0 ] || { log "UAC exit code $uac_rc (see $SMOKE_DIR/uac.out, uac-messages.log)"; ok=0; }
[ "$uas_rc" -eq 0 ] || { log "UAS exit code $uas_rc (see $SMOKE_DIR/uas.out, trunk-messages.log)"; ok=0; }
grep -q '^FINAL_STATUS 200 ' uac.log 2>/dev/null \
    || { log "UAC did not get 200 OK: $(cat uac.log 2>/dev/null)"; ok=0; }
grep -q "^INVITE_RECEIVED ruri=sip:$NUMBER@127.0.0.3" trunk.log 2>/dev/null \
    || { log "trunk did not receive INVITE sip:$NUMBER@127.0.0.3"; ok=0; }

if [ "$ok" != 1 ]; then
    log "---- uac.out (tail)"; tail -n 15 uac.out >&2 || true
    log "---- uas.out (tail)"; tail -n 15 uas.out >&2 || true
    log "---- asterisk full log (tail)"; tail -n 20 "$RUN_DIR/log/full" >&2 || true
    fail "smoke call failed"
fi
log "trunk received: $(grep '^INVITE_RECEIVED' trunk.log)"
log "PASS: call to $NUMBER answered by the trunk and hung up cleanly ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')s, incl. 1 s talk)"
