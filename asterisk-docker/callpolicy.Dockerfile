# callpolicy daemon image: the Python package of this repository (pyproject.toml at the root),
# which provides the `callpolicy` command. Build from the repo root:
#   docker build -f asterisk-docker/callpolicy.Dockerfile -t callpolicy .
FROM python:3.11-slim-bookworm
COPY . /src
RUN pip install --no-cache-dir /src && rm -rf /src
# config/callpolicy.toml names the zone table relative to itself (/etc/callpolicy).
COPY --chmod=0644 config/telephone-zones.toml /etc/callpolicy/telephone-zones.toml
USER nobody
# The watchdog kills and restarts a frozen daemon: Asterisk waits forever on a connected
# FastAGI server, and a closed socket sends the call to the fallback AGI instead.
CMD ["callpolicy", "--config", "/etc/callpolicy/callpolicy.toml", "watchdog"]
