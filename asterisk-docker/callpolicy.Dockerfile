# callpolicy daemon image: the Python package of this repository (pyproject.toml
# at the root), which provides the `callpolicy` command. Build from the repo root:
#   docker build -f asterisk-docker/callpolicy.Dockerfile -t callpolicy .
FROM python:3.11-slim-bookworm
COPY . /src
RUN pip install --no-cache-dir /src && rm -rf /src
USER nobody
CMD ["callpolicy", "serve", "--config", "/etc/callpolicy/callpolicy.toml"]
