#!/usr/bin/env bash
# Installs what callpolicy needs on a fresh Debian machine of this kind, and nothing twice:
#   - Debian packages: SIPp (sip-tester), buildah (builds the container images, scripts/images.sh),
#     mmdebstrap (makes their Debian base images), python3-yaml (tests/unit/test_compose.py),
#     python3-venv, postgresql (the PostgreSQL backend's tests start their own server with it),
#     chromium + chromium-driver (tests/integration/test_status_page.py: headless, via selenium)
#   - the Python venv .venv with callpolicy and its test tools (pip, from pyproject.toml)
# Idempotent and quick when everything is there. Run as root (apt-get).
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PY="${PYTHON:-python3}"
DEBS=(sip-tester buildah mmdebstrap python3-yaml postgresql chromium chromium-driver)

missing=()
for pkg in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
"$PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: need root to install ${missing[*]} (apt-get)" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

stamp="$VENV/.installed-$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "install-deps: preparing $VENV" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[test]" >&2
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
