#!/usr/bin/env bash
# The two container images, built with Debian's buildah (no Docker engine, no registry):
#   callpolicy-asterisk:local   asterisk-docker/Dockerfile            (Asterisk 22, Debian sid)
#   callpolicy:local            asterisk-docker/callpolicy.Dockerfile (the daemon, Debian bookworm)
# Nothing is pulled: the base images the Dockerfiles name (debian:sid-slim, debian:bookworm-slim)
# are made here from an mmdebstrap rootfs (`buildah from scratch` + `buildah add` + `buildah
# commit`) when buildah's storage has none, and every build runs with --pull-never. `RUN` steps
# reach Debian's mirror (the one this machine's apt sources name, written into the base) and PyPI.
#
# Usage: scripts/images.sh COMMAND
#   names              print the two image names and their Dockerfiles (no root needed)
#   build [asterisk|callpolicy|all]
#                      build what is not cached; print the image references (last lines)
#   rootfs             build the Asterisk image if needed and print its filesystem as a directory
#                      (a buildah container of the image, mounted): what scripts/asterisk-run.sh runs
#   archive DIR        build both, write DIR/<name>.oci.tar (`buildah push … oci-archive:`), print
#                      each archive's path and size
# Progress goes to stderr.
#
# Cache: each image is tagged with a content hash of everything it is built from (its Dockerfile,
# the files it copies, this script, the base image's id): localhost/<name>:<hash>. When that tag
# exists nothing is built (a second run takes about a second); otherwise `buildah bud --layers`
# reuses the unchanged steps (a code change rebuilds only the last layers). The old hashes' tags
# and rootfs containers are removed after a build unless a process still runs in one.
# Env:
#   CALLPOLICY_DEBIAN_MIRROR  Debian mirror for the bases; default: this machine's apt sources
#   CALLPOLICY_CACHE          lock file dir (default /var/cache/callpolicy)
#   PIP_CERT                  CA bundle that pip in the RUN steps trusts (default: this
#                             machine's /etc/ssl/certs/ca-certificates.crt), mounted for the build
set -euo pipefail

log() { printf 'images: %s\n' "$*" >&2; }
die() { printf 'images: ERROR: %s\n' "$*" >&2; exit 1; }

SCRIPT="$(readlink -f "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
CACHE="${CALLPOLICY_CACHE:-/var/cache/callpolicy}"
ASTERISK_IMAGE=callpolicy-asterisk
ASTERISK_DOCKERFILE=asterisk-docker/Dockerfile
DAEMON_IMAGE=callpolicy
DAEMON_DOCKERFILE=asterisk-docker/callpolicy.Dockerfile
TAG=local
SID_BASE=docker.io/library/debian:sid-slim
BOOKWORM_BASE=docker.io/library/debian:bookworm-slim
BASE_LABEL=org.callpolicy.base-key
ROOTFS_PREFIX=callpolicy-asterisk-rootfs-

usage() { sed -n '2,/^set -euo/p' "$SCRIPT" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }

# ----------------------------------------------------------------- base images
# Debian mirror from this machine's apt sources (never hard-coded in the repo).
# find_uri SUFFIX: the first deb URI whose path ends in SUFFIX (/debian or /debian-security).
find_uri() {
    local suffix="$1" f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri="$(awk 'tolower($1)=="uris:" { for (i=2;i<=NF;i++) print $i }' "$f" \
               | grep -E "${suffix}/?\$" | head -n1 || true)"
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri="$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
               | awk '$1=="deb" { print $2 }' | grep -E "${suffix}/?\$" | head -n1 || true)"
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    return 1
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1"; }
image_label() {   # image_label IMAGE LABEL: the label's value, empty if none
    buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null \
        | sed 's/^<no value>$//'
}

# ensure_base IMAGE SUITE: a debian:SUITE-slim stand-in from an mmdebstrap minbase rootfs,
# unless buildah's storage already has that image (a real one from a registry is used as is).
# Ours carry the label BASE_LABEL=<hash of this function's inputs>; a stale one is rebuilt.
ensure_base() {
    local image="$1" suite="$2" key mirror security tmp ctr sources=()
    key="$(printf '%s\n' "$suite" "$(declare -f ensure_base)" | sha256sum | cut -c1-16)"
    if image_exists "$image"; then
        case "$(image_label "$image" "$BASE_LABEL")" in
            "$key") return 0 ;;
            "") log "using $image from buildah's storage (not made here)"; return 0 ;;
            *) log "$image was made from an older recipe: remaking it" ;;
        esac
    fi
    mirror="${CALLPOLICY_DEBIAN_MIRROR:-$(find_uri /debian || true)}"
    [ -n "$mirror" ] || die "no Debian mirror in this machine's apt sources; set CALLPOLICY_DEBIAN_MIRROR"
    sources=("deb $mirror $suite main")
    if [ "$suite" != sid ]; then
        sources+=("deb $mirror $suite-updates main")
        security="$(find_uri /debian-security || true)"
        [ -z "$security" ] || sources+=("deb $security $suite-security main")
    fi
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (scripts/install-deps.sh)"
    tmp="$(mktemp -d /var/tmp/callpolicy-base.XXXXXX)"
    log "making $image: mmdebstrap $suite (minbase) from $mirror"
    # Like the official slim images: no docs, man pages or locales (dpkg path-exclude, kept in
    # the image for later installs). Check-Valid-Until=false: the mirror may be an expired
    # snapshot (also kept: apt in the Dockerfiles' RUN steps needs it too).
    nice -n 10 unshare --mount --propagation private -- mmdebstrap --variant=minbase --quiet \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
        "$suite" "$tmp/rootfs.tar" "${sources[@]}" >&2 \
        || { rm -rf "$tmp"; die "mmdebstrap $suite failed"; }
    ctr="$(buildah from scratch)"
    buildah add --quiet "$ctr" "$tmp/rootfs.tar" / >/dev/null
    rm -rf "$tmp"
    buildah config --label "$BASE_LABEL=$key" --cmd bash --env \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --quiet --rm "$ctr" "$image" >/dev/null
    log "made $image ($(image_id "$image" | cut -c1-12))"
}

# ----------------------------------------------------------------- the two images
# key_of BASE FILE...: hash of the files' contents (paths relative to the repo), this script and
# the base image's id.
key_of() {
    local base="$1"; shift
    {
        (cd "$REPO" && find "$@" -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc' -print0 \
            | sort -z | xargs -0 sha256sum)
        sha256sum "$SCRIPT"
        image_id "$base"
    } | sha256sum | cut -c1-16
}

# build_image NAME DOCKERFILE BASE FILE...: localhost/NAME:<key> and NAME:local, built unless
# cached; prints localhost/NAME:<key>.
build_image() {
    local name="$1" dockerfile="$2" base="$3" key ref start ca pip=(); shift 3
    key="$(key_of "$base" "$dockerfile" "$@")"
    ref="localhost/$name:$key"
    if image_exists "$ref"; then
        log "cached: $ref"
    else
        log "building $ref from $dockerfile"
        start=$(date +%s)
        # pip in the RUN steps trusts what this machine's pip trusts (a TLS-inspecting proxy's
        # CA): the bundle is mounted for the build only, never part of the image.
        ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
        # (its directory on /mnt, which the base has: a file mount would leave its mount point)
        if [ -r "$ca" ]; then
            pip=(-v "$(dirname "$ca"):/mnt:ro" --build-arg "PIP_CERT=/mnt/$(basename "$ca")")
        fi
        (cd "$REPO" && nice -n 10 buildah bud --quiet --isolation chroot --pull-never --layers \
            --force-rm --format docker --network host --ignorefile "$dockerfile.dockerignore" -f "$dockerfile" "${pip[@]}" \
            --label "org.callpolicy.key=$key" -t "$ref" .) >&2 \
            || die "buildah bud -f $dockerfile failed"
        log "built $ref in $(( $(date +%s) - start ))s"
    fi
    buildah tag "$ref" "localhost/$name:$TAG"
    drop_old "$name" "$key"
    echo "$ref"
}

# Is a process running with its root inside DIR (an Asterisk run of an old rootfs)?
in_use() {
    local p
    for p in /proc/[0-9]*; do
        case "$(readlink "$p/root" 2>/dev/null)" in "$1"|"$1"/*) return 0 ;; esac
    done
    return 1
}

# drop_old NAME KEY: remove NAME's other hash tags (and their rootfs containers) unless in use.
# Their layers stay as buildah's layer cache until `buildah rmi --prune`.
drop_old() {
    local name="$1" key="$2" ref ctr dir
    for ref in $(buildah images --format '{{.Name}}:{{.Tag}}'); do
        case "$ref" in
            "localhost/$name:$TAG"|"localhost/$name:$key") continue ;;
            "localhost/$name:"*) ;;
            *) continue ;;
        esac
        if [ "$name" = "$ASTERISK_IMAGE" ]; then
            ctr="$ROOTFS_PREFIX${ref##*:}"
            if buildah inspect --type container "$ctr" >/dev/null 2>&1; then
                dir="$(buildah inspect --type container --format '{{.MountPoint}}' "$ctr")"
                if [ -n "$dir" ] && in_use "$dir"; then continue; fi
                buildah umount "$ctr" >/dev/null 2>&1 || true
                buildah rm "$ctr" >/dev/null
            fi
        fi
        log "removing old $ref"
        buildah rmi "$ref" >/dev/null 2>&1 || true
    done
}

build_asterisk() {
    ensure_base "$SID_BASE" sid
    build_image "$ASTERISK_IMAGE" "$ASTERISK_DOCKERFILE" "$SID_BASE" \
        asterisk-docker/Dockerfile.dockerignore asterisk-docker/packages.txt \
        asterisk-docker/fallback-requirements.txt config/asterisk dialplan \
        agi/callpolicy agi/fallback-agi
}

build_daemon() {
    ensure_base "$BOOKWORM_BASE" bookworm
    build_image "$DAEMON_IMAGE" "$DAEMON_DOCKERFILE" "$BOOKWORM_BASE" \
        asterisk-docker/callpolicy.Dockerfile.dockerignore pyproject.toml agi
}

# The Asterisk image's filesystem as a directory: a buildah container of the image (its writable
# layer only gets the mount points scripts/asterisk-run.sh needs), mounted.
rootfs() {
    local ref key ctr dir d
    ref="$(build_asterisk | tail -n1)"
    key="${ref##*:}"
    ctr="$ROOTFS_PREFIX$key"
    if ! buildah inspect --type container "$ctr" >/dev/null 2>&1; then
        buildah from --quiet --pull-never --name "$ctr" "$ref" >/dev/null
    fi
    dir="$(buildah mount "$ctr")"
    [ -x "$dir/usr/sbin/asterisk" ] || die "no /usr/sbin/asterisk in $ref ($dir)"
    for d in proc dev tmp run/asterisk etc/asterisk var/log/asterisk var/spool/asterisk \
             var/lib/asterisk var/cache/asterisk opt/callpolicy/agi var/lib/callpolicy; do
        [ -d "$dir/$d" ] || mkdir -p "$dir/$d"
    done
    for d in etc/hosts etc/resolv.conf; do
        # buildah leaves these empty or absent; asterisk-run.sh mounts per-run ones over them
        [ -f "$dir/$d" ] && [ ! -L "$dir/$d" ] || { rm -f "$dir/$d"; : > "$dir/$d"; }
    done
    echo "$dir"
}

archive() {
    local out="$1" ref name file
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    for ref in "$(build_asterisk | tail -n1)" "$(build_daemon | tail -n1)"; do
        name="${ref#localhost/}"; name="${name%%:*}"
        file="$out/$name.oci.tar"
        rm -f "$file"
        buildah push --quiet "$ref" "oci-archive:$file:$name:$TAG" >&2 \
            || die "buildah push $ref failed"
        printf '%s\t%s\t%s:%s (%s)\n' "$file" "$(du -h "$file" | cut -f1)" "$name" "$TAG" "$ref"
    done
}

[ $# -ge 1 ] || usage
CMD="$1"; shift
if [ "$CMD" = names ]; then
    printf '%s:%s %s\n' "$ASTERISK_IMAGE" "$TAG" "$ASTERISK_DOCKERFILE" \
        "$DAEMON_IMAGE" "$TAG" "$DAEMON_DOCKERFILE"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (buildah's storage, mmdebstrap)"
command -v buildah >/dev/null || die "buildah is missing (scripts/install-deps.sh)"
mkdir -p "$CACHE"
# One builder at a time (a second caller waits, then finds the images cached).
exec 9>"$CACHE/.images.lock"
flock 9
case "$CMD" in
    build)
        case "${1:-all}" in
            asterisk) build_asterisk ;;
            callpolicy) build_daemon ;;
            all) build_asterisk; build_daemon ;;
            *) usage ;;
        esac ;;
    rootfs) rootfs ;;
    archive) [ $# -eq 1 ] || usage; archive "$1" ;;
    *) usage ;;
esac
