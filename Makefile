# One command to install and run, one to check everything (see README); `make help` (or plain
# `make`) lists every target.
#   make run    installs distblob and runs it on the embedded defaults
#   make test   installs what the tests need, then runs every gate and test
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Debian packages the tests run for real (the Go registry, skopeo, Redis).
DEBIAN_PACKAGES := docker-registry skopeo redis-server

.DEFAULT_GOAL := help

# Each target is declared on a `.PHONY: target  ## what it does` line, which help lists (as in
# pydantic-core's Makefile), in this file's order.
.PHONY: help  ## List the targets
help:
	@grep -E '^\.PHONY: .*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = "^\\.PHONY: *| *## "}; {printf "  make %-12s %s\n", $$2, $$3}'

.PHONY: run  ## Install distblob and serve ./distblob-data on 127.0.0.1:5000
run:
	$(PIP) install -q .
	distblob serve

.PHONY: test  ## Install what the tests need, then run every gate and test (what CI runs)
test: deps lint docs test-rust test-python bench-smoke wheel-check

# A native module built before abi3 (_native.cpython-3XX-*.so) would be imported before the
# abi3 one the install builds (_native.abi3.so): remove it.
.PHONY: install  ## Install distblob in place (editable) with the test and docs requirements
install:
	rm -f python/distblob/_native.cpython-*.so
	$(PIP) install -q -e '.[test]'

.PHONY: debian-deps  ## Install the Debian packages the tests run (docker-registry, skopeo, Redis)
debian-deps:
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES); \
	fi

.PHONY: deps  ## debian-deps, then install
deps: debian-deps install

.PHONY: lint  ## cargo fmt and clippy, ruff, mypy --strict and stubtest
lint:
	cargo fmt --check
	cargo clippy --all-targets --all-features -- -D warnings
	ruff check python tests benches scripts
	ruff format --check python tests benches scripts
	mypy --strict python/
	$(PYTHON) -m mypy.stubtest distblob._native

.PHONY: docs  ## Build the docs site (mkdocs build --strict)
docs:
	$(PYTHON) -m mkdocs build --strict

.PHONY: test-rust  ## cargo test (the core, without Python)
test-rust:
	cargo test --quiet

.PHONY: test-python  ## pytest, the whole suite
test-python:
	$(PYTHON) -m pytest -q

.PHONY: bench-smoke  ## The benchmarks at tiny sizes: they still run (the figures mean nothing)
bench-smoke:
	$(PYTHON) -m benches.compare --quick
	$(PYTHON) -m benches.ingest --quick
	$(PYTHON) -m benches.small_blobs --quick
	$(PYTHON) -m benches.gc_stress --go --distblob --quick
	$(PYTHON) -m benches.gc --smoke
	$(PYTHON) -m benches.gc_push --smoke

.PHONY: bench  ## Every benchmark scenario side by side, into benches/results.json
bench:
	$(PYTHON) -m benches.compare --json benches/results.json

.PHONY: wheel-check  ## Build the one abi3 wheel, install it where no Rust is, smoke-test it
wheel-check:
	PYTHON=$(PYTHON) bash scripts/wheel-check.sh
