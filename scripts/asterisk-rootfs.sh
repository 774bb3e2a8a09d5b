#!/usr/bin/env bash
# Build (once) and cache a Debian sid root filesystem with Asterisk installed,
# for running Asterisk without Docker (see scripts/asterisk-run.sh), and with
# what the fallback AGI (agi/fallback-agi) needs: sid's python3 (packages.txt)
# and the pure-Python packages of asterisk-docker/fallback-requirements.txt in
# /opt/callpolicy/lib, installed with the HOST's pip and byte-compiled by sid's
# python3. The callpolicy code itself is not in the rootfs: asterisk-run.sh
# mounts it at /opt/callpolicy/agi per run (/opt/callpolicy/fallback-agi is a
# symlink to agi/fallback-agi), so code changes need no rebuild.
#
# Usage: scripts/asterisk-rootfs.sh
#   stdout: the rootfs path (last line); progress goes to stderr.
# Env:
#   CALLPOLICY_CACHE          cache dir (default /var/cache/callpolicy); the rootfs
#                             lands in $CALLPOLICY_CACHE/rootfs-<key>
#   CALLPOLICY_DEBIAN_MIRROR  Debian mirror URL; default: read from this machine's
#                             apt sources (/etc/apt/sources.list.d/*.sources, sources.list)
# The key is a hash of asterisk-docker/packages.txt, asterisk-docker/fallback-requirements.txt
# and of this script, so editing any of them builds a new rootfs. A build goes into a temp dir and is renamed into place
# only when complete, so an interrupted build never leaves a rootfs that looks valid.
set -euo pipefail

log() { printf 'asterisk-rootfs: %s\n' "$*" >&2; }
die() { printf 'asterisk-rootfs: ERROR: %s\n' "$*" >&2; exit 1; }

SCRIPT="$(readlink -f "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
PACKAGES_TXT="$REPO/asterisk-docker/packages.txt"
REQUIREMENTS_TXT="$REPO/asterisk-docker/fallback-requirements.txt"
CACHE="${CALLPOLICY_CACHE:-/var/cache/callpolicy}"

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap root mode, chroot)"
[ -r "$PACKAGES_TXT" ] || die "missing $PACKAGES_TXT"
[ -r "$REQUIREMENTS_TXT" ] || die "missing $REQUIREMENTS_TXT"

# packages.txt -> comma-separated list (comments and blank lines stripped)
PACKAGES="$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PACKAGES_TXT" | grep -v '^$' | paste -sd, -)"
[ -n "$PACKAGES" ] || die "no packages in $PACKAGES_TXT"

KEY="$(cat "$PACKAGES_TXT" "$REQUIREMENTS_TXT" "$SCRIPT" | sha256sum | cut -c1-16)"
ROOTFS="$CACHE/rootfs-$KEY"
MARKER=".callpolicy-rootfs-complete"

if [ -f "$ROOTFS/$MARKER" ]; then
    log "cached: $ROOTFS"
    echo "$ROOTFS"
    exit 0
fi

# Debian mirror from this machine's apt sources (never hard-coded in the repo).
find_mirror() {
    local f uri
    # deb822 .sources: the first URIs whose path ends in /debian (not debian-security)
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri="$(awk 'tolower($1)=="uris:" { for (i=2;i<=NF;i++) print $i }' "$f" \
               | grep -E '/debian/?$' | head -n1 || true)"
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    # one-line format: deb [opts] URI suite components
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri="$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
               | awk '$1=="deb" { print $2 }' | grep -E '/debian/?$' | head -n1 || true)"
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    return 1
}
MIRROR="${CALLPOLICY_DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ]; then
    MIRROR="$(find_mirror)" || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set CALLPOLICY_DEBIAN_MIRROR"
fi

# The host's pip installs the fallback AGI's pure-Python packages into the rootfs
# (the rootfs gets no pip of its own): the repo's venv (scripts/install-deps.sh),
# else the system python3's pip.
HOST_PY=""
for py in "$REPO/.venv/bin/python" python3; do
    if "$py" -m pip --version >/dev/null 2>&1; then HOST_PY="$py"; break; fi
done
[ -n "$HOST_PY" ] || die "no pip on this machine (run scripts/install-deps.sh first)"

if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap (apt-get)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mmdebstrap; } >&2 \
        || die "could not install mmdebstrap"
fi

mkdir -p "$CACHE"
# One builder at a time per cache dir (a second caller waits, then finds it cached).
exec 9>"$CACHE/.rootfs.lock"
flock 9
if [ -f "$ROOTFS/$MARKER" ]; then
    log "cached (built by a concurrent run): $ROOTFS"
    echo "$ROOTFS"
    exit 0
fi
# Remove a directory tree, first unmounting anything mounted below it (an older
# build killed with SIGKILL may have left mmdebstrap's /proc, /sys, /dev mounts),
# and never crossing into another file system.
remove_tree() {
    local d="$1" m
    [ -e "$d" ] || return 0
    awk -v d="$d/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$d"
}
# We hold the lock: any leftover temp dir is from an interrupted build.
for old in "$CACHE"/.rootfs-*.tmp.*; do
    [ -e "$old" ] || continue
    log "removing leftover of an interrupted build: $old"
    remove_tree "$old"
done
[ -e "$ROOTFS" ] && { log "removing incomplete $ROOTFS"; remove_tree "$ROOTFS"; }

TMP="$CACHE/.rootfs-$KEY.tmp.$$"
trap 'remove_tree "$TMP"' EXIT
trap 'exit 130' INT TERM HUP
log "building Debian sid rootfs with: $PACKAGES"
log "mirror: $MIRROR"
start=$(date +%s)
# Check-Valid-Until=false: the mirror may be a snapshot whose sid Release file has expired.
# In a private mount namespace: the /proc, /sys, /dev mounts mmdebstrap makes in
# the target disappear with it, even if it is killed.
unshare --mount --propagation private -- mmdebstrap --variant=minbase \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="$PACKAGES" \
    sid "$TMP" "$MIRROR" >&2 || die "mmdebstrap failed"

# Name resolution that fails fast (Asterisk blocks on DNS look-ups of its own
# hostname and of A.ROOT-SERVERS.NET otherwise). asterisk-run.sh bind-mounts
# per-run copies over these two; they are here for a plain `chroot ROOTFS ...`.
rm -f "$TMP/etc/hosts" "$TMP/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$TMP/etc/hosts"
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$TMP/etc/resolv.conf"
chmod 0644 "$TMP/etc/hosts" "$TMP/etc/resolv.conf"
# Mount points that asterisk-run.sh bind-mounts per run: create them here so a
# run never has to write into the cached rootfs.
mkdir -p "$TMP/run/asterisk" "$TMP/var/log/asterisk" "$TMP/var/spool/asterisk" \
         "$TMP/var/lib/asterisk" "$TMP/var/cache/asterisk" \
         "$TMP/etc/asterisk" "$TMP/proc" "$TMP/dev" "$TMP/tmp"
chroot "$TMP" asterisk -V >&2 || die "asterisk does not run in the new rootfs"
chroot "$TMP" id asterisk >&2 || die "no asterisk user in the new rootfs"

# The fallback AGI (see agi/fallback-agi): /opt/callpolicy/lib (its Python packages),
# /opt/callpolicy/agi (mount point for the code, per run), /opt/callpolicy/fallback-agi
# (the path the dialplan runs), /var/lib/callpolicy (mount point for a state dir there).
LIB=/opt/callpolicy/lib
chroot "$TMP" /usr/bin/python3 -V >&2 || die "no python3 in the new rootfs (packages.txt)"
log "installing $(grep -cE '^[A-Za-z0-9]' "$REQUIREMENTS_TXT") Python packages into $LIB with $HOST_PY's pip"
# --no-deps + --require-hashes: exactly the pinned list; --only-binary: no builds on the host.
"$HOST_PY" -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
    --only-binary=:all: --require-hashes --no-compile --target "$TMP$LIB" \
    -r "$REQUIREMENTS_TXT" >&2 || die "pip install of $REQUIREMENTS_TXT failed"
rm -rf "${TMP:?}$LIB/bin"
compiled="$(find "$TMP$LIB" -type f \( -name '*.so' -o -name '*.so.*' \) | head -n 3)"
[ -z "$compiled" ] || die "compiled code in $LIB (only pure-Python packages may go there): $compiled"
# Byte-compile with sid's python3: the rootfs is read-only at run time, and
# importing these uncompiled costs each fallback call ~0.3 s more (measured).
chroot "$TMP" /usr/bin/python3 -m compileall -q -q "$LIB" >&2 || die "compileall of $LIB failed"
chroot "$TMP" /usr/bin/python3 -I -S -c '
import sys; sys.path.insert(0, "/opt/callpolicy/lib")
import sqlite3, tomllib, asyncio, phonenumbers, structlog, aiosqlite, asterisk.agi
print("fallback python: %s, sqlite %s" % (sys.version.split()[0], sqlite3.sqlite_version))
' >&2 || die "the fallback's Python packages do not import under the rootfs's python3"
mkdir -p "$TMP/opt/callpolicy/agi" "$TMP/var/lib/callpolicy"
ln -s agi/fallback-agi "$TMP/opt/callpolicy/fallback-agi"
date -u +%FT%TZ > "$TMP/$MARKER"
mv -T "$TMP" "$ROOTFS"
trap - EXIT
log "built in $(( $(date +%s) - start ))s: $ROOTFS"

# Drop rootfs of older keys (~350 MB each), unless a process still runs in one.
for old in "$CACHE"/rootfs-*; do
    if [ ! -d "$old" ] || [ "$old" = "$ROOTFS" ]; then continue; fi
    in_use=0
    for p in /proc/[0-9]*; do
        case "$(readlink "$p/root" 2>/dev/null)" in "$old"|"$old"/*) in_use=1; break ;; esac
    done
    if [ "$in_use" = 0 ]; then log "removing old $old"; remove_tree "$old"; fi
done
echo "$ROOTFS"
