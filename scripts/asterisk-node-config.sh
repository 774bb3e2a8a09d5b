#!/usr/bin/env bash
# Asterisk's config of one node of a cluster (make run-cluster, README: "Several nodes"):
# rewrites, in place, a copy of the shipped config (config/asterisk/*.conf + dialplan/*.conf,
# + config/demo/manager-users.conf if there) so that every 127.0.0.1 this Asterisk binds or
# reaches its daemon at becomes NODE_IP: PJSIP UDP NODE_IP:5060 and its media, AMI NODE_IP:5038
# (an AMI user permitted from 127.0.0.1 is also permitted from NODE_IP), FastAGI
# agi://NODE_IP:4573; and `systemname = node-NODE_IP` (asterisk.conf), which prefixes the
# node's channel uniqueids: call records are keyed by uniqueid, and two Asterisks number their
# calls alike. NODE_IP 127.0.0.1 changes nothing.
# Used by scripts/asterisk-run.sh --node-ip and asterisk-docker/compose-cluster.yaml (mounted
# into the Asterisk image, run before Asterisk starts).
#
# Usage: asterisk-node-config.sh ETC_DIR NODE_IP
set -euo pipefail
die() { printf 'asterisk-node-config: %s\n' "$*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 ETC_DIR NODE_IP"
etc="$1" ip="$2"
[[ "$ip" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "NODE_IP $ip: a loopback address (127.x.y.z)"
[ "$ip" = "127.0.0.1" ] && exit 0
sed -i -E -e "s/^(bind[[:space:]]*=[[:space:]]*)127\\.0\\.0\\.1:/\\1$ip:/" \
    -e "s/^(media_address[[:space:]]*=[[:space:]]*)127\\.0\\.0\\.1\\b/\\1$ip/" "$etc/pjsip.conf"
sed -i -E "s/^\[options\]\$/[options]\nsystemname = node-$ip/" "$etc/asterisk.conf"
sed -i -E "s/^(bindaddr[[:space:]]*=[[:space:]]*)127\\.0\\.0\\.1\\b/\\1$ip/" "$etc/manager.conf"
sed -i -E "s|agi://127\\.0\\.0\\.1:|agi://$ip:|" "$etc/extensions.conf"
if [ -f "$etc/manager-users.conf" ]; then
    sed -i -E "s|^(permit[[:space:]]*=[[:space:]]*127\\.0\\.0\\.1/255\\.255\\.255\\.255)\$|\\1\\npermit = $ip/255.255.255.255|" \
        "$etc/manager-users.conf"
fi
grep -q "^systemname = node-$ip\$" "$etc/asterisk.conf" && grep -q "^bind = $ip:5060" "$etc/pjsip.conf" \
    && grep -q "^bindaddr = $ip\$" "$etc/manager.conf" && grep -q "agi://$ip:" "$etc/extensions.conf" \
    || die "could not make the config of node $ip in $etc (config/asterisk or dialplan changed?)"
