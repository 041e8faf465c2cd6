# DWP backend. `make run` brings the local stack up; `make test` runs every test.
# Both install and start Redis and PostgreSQL first when they are missing.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help run demo test test-faults test-api fuzz soak lint lint-deploy image-check compose-up fmt bench bench-gateway bench-instructions bench-hitl bench-recorder bench-feed bench-resume bench-h2 services migrate build release clean

help:
	@echo "make run      - install/start Redis and PostgreSQL, build, run the local stack"
	@echo "make test     - the same services, then every test of the workspace"
	@echo "make test-faults - only the fault suite (Redis/PostgreSQL restarts, agent killed, 1,000 clients leaving)"
	@echo "make test-api - schemathesis against main-service's /main/openapi.json (real Redis and PostgreSQL)"
	@echo "make fuzz     - cargo fuzz on the SSE parser, route matching, header rules and upstream HTTP/1.1 parsing (FUZZ_SECONDS=60 each)"
	@echo "make lint     - fmt, clippy -D warnings (function length, unwrap, visibility), rustdoc, module cycles, shellcheck, cargo-deny"
	@echo "make lint-deploy - offline checks of deploy/ (hadolint, compose schema, kustomize + kubernetes-validate)"
	@echo "make image-check - build the three images with buildah (offline-made bases), check /health from each"
	@echo "make compose-up  - the stack in containers (needs a Docker engine)"
	@echo "make migrate  - apply the database migrations to DATABASE_URL"
	@echo "make demo     - walk the integration checklist through a running stack (make run first)"
	@echo "make soak     - 5 min of 10,000 idle streams + proxied load, then 1,000 HITL decisions/s for 1 min"
	@echo "make bench    - the benchmarks (figures go to docs/PERFORMANCE.md by hand)"

services:
	@bash scripts/services.sh

build:
	$(CARGO) build --workspace --locked

release:
	$(CARGO) build --workspace --release --locked

# Applies the database migrations to DATABASE_URL (the contract's default).
migrate: services
	DATABASE_URL=$${DATABASE_URL:-postgres://dwp_user:dwp_password@localhost:5432/dwp_main} $(CARGO) run --locked -q -p migration -- up

run: services
	@bash scripts/run.sh

demo:
	@bash scripts/demo.sh

test: services
	# The end-to-end suite (crates/e2e) starts the binaries as processes.
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --all-features --locked
	@bash scripts/test/schemathesis.sh
	@bash scripts/deploy/check.sh
	@bash scripts/deploy/image_check.sh

# schemathesis against main-service's OpenAPI document (make test runs it too).
test-api: services
	$(CARGO) build --locked -p main-service
	@bash scripts/test/schemathesis.sh

# cargo fuzz on the SSE parser, routes and header rules (FUZZ_SECONDS each).
fuzz:
	@bash scripts/test/fuzz.sh

# The fault suite alone; `make test` runs it with everything else.
test-faults: services
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --locked -p e2e --test faults -- --nocapture

lint-deploy:
	@bash scripts/deploy/check.sh

# Builds the three images with buildah from offline-made base images and
# checks each binary's /health from the built image (make test runs it too).
image-check: services
	@bash scripts/deploy/image_check.sh

compose-up:
	docker compose -f deploy/compose.yaml up --build

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked
	python3 scripts/lint/module_cycles_test.py
	python3 scripts/lint/module_cycles.py crates/*/src migrations/src
	bash scripts/lint/shell.sh
	bash scripts/lint/deny.sh

fmt:
	$(CARGO) fmt --all

bench: bench-gateway bench-instructions bench-hitl bench-recorder bench-feed bench-resume bench-h2

# Five minutes of 10,000 idle streams plus proxied load, then 1,000 HITL
# decisions per second for a minute (not part of `make bench`).
soak: release
	@bash scripts/bench/soak.sh

bench-gateway: release
	@bash scripts/bench/gateway.sh

# User-space instructions per request, gateway and nginx (callgrind).
bench-instructions: release
	@bash scripts/bench/instructions.sh

bench-hitl: release
	@bash scripts/bench/hitl.sh

bench-recorder: release
	@bash scripts/bench/recorder.sh

# From an agent's hitl event to the hitl_request on its owner's live feed,
# with 1,000 open feeds and 100 pausing runs a second.
bench-feed: release
	@bash scripts/bench/feed.sh

# Resumable streams: added relay latency, resume latency with 1,000 events
# to replay, memory per detached run.
bench-resume: release
	@bash scripts/bench/resume.sh

# HTTP/2 over TLS through the gateway and through nginx (h2load), as a ratio.
bench-h2: release
	@bash scripts/bench/h2.sh

clean:
	$(CARGO) clean
