# callpolicy daemon image: the Python package of this repository (pyproject.toml at the root),
# which provides the `callpolicy` command, on Debian bookworm's python3 (3.11, the version the
# tests run on). Build from the repo root:
#   docker build -f asterisk-docker/callpolicy.Dockerfile -t callpolicy:local .
# Without a Docker engine, scripts/images.sh (`make image`) builds it with buildah from a
# debian:bookworm-slim made locally. PYTHON_BASE names another Debian base with python3 >= 3.11.
ARG PYTHON_BASE=debian:bookworm-slim
FROM ${PYTHON_BASE}
RUN set -eux; \
    apt-get -o Acquire::Check-Valid-Until=false update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv; \
    apt-get clean; rm -rf /var/lib/apt/lists/*
# Only what pip needs (no .venv, no .git, whatever the engine does with ignore files).
COPY pyproject.toml /src/
COPY agi/ /src/agi/
# A CA bundle for pip, when a TLS-inspecting proxy stands between the build and PyPI
# (scripts/images.sh mounts this machine's for the build; it is not in the image).
ARG PIP_CERT
# A venv: Debian's python3 is "externally managed"; pip reaches PyPI (setuptools, dependencies).
RUN set -eux; \
    python3 -m venv /opt/callpolicy; \
    /opt/callpolicy/bin/pip install --no-cache-dir --disable-pip-version-check --no-input /src; \
    rm -rf /src; \
    /opt/callpolicy/bin/callpolicy --help >/dev/null
ENV PATH=/opt/callpolicy/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The zone table (art. 3.8) and the must-reach list ship inside the package (callpolicy/data).
USER nobody
# The watchdog kills and restarts a frozen daemon: Asterisk waits forever on a connected
# FastAGI server, and a closed socket sends the call to the fallback AGI instead.
CMD ["callpolicy", "--config", "/etc/callpolicy/callpolicy.toml", "watchdog"]
