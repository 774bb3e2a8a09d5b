# The two commands: `make run` (the product) and `make test` (everything).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: deps run test unit lint bench-micro cli image

deps:
	@scripts/install-deps.sh

## The product: Asterisk 22 + the policy daemon with the demo customers (Ctrl-C stops it).
run:
	@scripts/run-demo.sh

## Two Asterisk nodes + two daemons on one PostgreSQL (127.0.0.1:55432), the demo customers
## (README: "Several nodes"; Ctrl-C stops it).
.PHONY: run-cluster
run-cluster:
	@scripts/run-cluster.sh

## The two container images (buildah: no engine, no registry) as OCI archives in build/images/,
## for `docker load` / `podman load` (README: "Container images").
image: deps
	@scripts/images.sh archive build/images

## All tests: ruff, unit tests, and integration tests against a real Asterisk with SIPp.
## Three pytest-xdist workers: the integration tests in one (one Asterisk, one after another),
## the rest spread over the other two.
test: deps
	$(BIN)/ruff check agi tests bench
	$(BIN)/mypy agi
	$(BIN)/python -m pytest -n 3 --dist loadgroup

## Unit tests only (no Asterisk).
unit: deps
	$(BIN)/python -m pytest tests/unit

lint: deps
	$(BIN)/ruff check agi tests bench
	$(BIN)/mypy agi

## Decisions per second, 10 and 100 000 customers.
bench-micro: deps
	$(BIN)/python bench/decisions.py

## Propagation on PostgreSQL, LISTEN/NOTIFY vs. the poll (a throw-away server; ~1 min)
.PHONY: bench-propagation
bench-propagation: deps
	$(BIN)/python bench/propagation.py --customers $(or $(CUSTOMERS),100000)

## The ops CLI from the project's venv: make cli ARGS="check --customer acme 0905123456"
cli: deps
	@$(BIN)/callpolicy $(ARGS)

## SIPp load benchmark, bare Asterisk vs. the policy in one run, in a private network namespace
## (as root, ~10 min; bench/README.md): make bench [CUSTOMERS=10] [BENCH_ARGS="--pin none"]
.PHONY: bench
bench: deps
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null && [ -x $(BIN)/py-spy ] \
		|| $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[bench]'
	@scripts/images.sh build asterisk >/dev/null   # before the bench's network namespace
	$(BIN)/python bench/load.py --customers $(or $(CUSTOMERS),100000) $(BENCH_ARGS)
