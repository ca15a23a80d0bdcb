# One command to install and run, one to check everything (see README).
#   make run    installs distblob and runs it on the embedded defaults
#   make test   installs what the tests need, then runs every gate and test
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Debian packages the tests run for real (the Go registry, skopeo, Redis).
DEBIAN_PACKAGES := docker-registry skopeo redis-server

.PHONY: run test deps debian-deps install lint test-rust test-python bench-smoke bench

run:
	$(PIP) install -q .
	distblob serve

# A native module built before abi3 (_native.cpython-3XX-*.so) would be imported before the
# abi3 one the install builds (_native.abi3.so): remove it.
install:
	rm -f python/distblob/_native.cpython-*.so
	$(PIP) install -q -e '.[test]'

debian-deps:
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES); \
	fi

deps: debian-deps install

lint:
	cargo fmt --check
	cargo clippy --all-targets --all-features -- -D warnings
	ruff check python tests benches
	ruff format --check python tests benches
	mypy --strict python/
	$(PYTHON) -m mypy.stubtest distblob._native

test-rust:
	cargo test --quiet

test-python:
	$(PYTHON) -m pytest -q

bench-smoke:
	$(PYTHON) -m benches.compare --quick
	$(PYTHON) -m benches.ingest --quick

bench:
	$(PYTHON) -m benches.compare --json benches/results.json

.PHONY: docs  ## Build the docs site (mkdocs build --strict)
docs:
	$(PYTHON) -m mkdocs build --strict

test: deps lint docs test-rust test-python bench-smoke
