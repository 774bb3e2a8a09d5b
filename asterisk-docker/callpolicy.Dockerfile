# callpolicy daemon image: the Python package of this repository (pyproject.toml at the root),
# which provides the `callpolicy` command. Build from the repo root:
#   docker build -f asterisk-docker/callpolicy.Dockerfile -t callpolicy .
FROM python:3.11-slim-bookworm
COPY . /src
RUN pip install --no-cache-dir /src && rm -rf /src
# The zone table (art. 3.8) and the must-reach list ship inside the package (callpolicy/data).
USER nobody
# The watchdog kills and restarts a frozen daemon: Asterisk waits forever on a connected
# FastAGI server, and a closed socket sends the call to the fallback AGI instead.
CMD ["callpolicy", "--config", "/etc/callpolicy/callpolicy.toml", "watchdog"]
