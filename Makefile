# Convenience targets; the scripts they call are the source of truth.
.PHONY: build run test check bench test-vm fuzz torture

build:
	./scripts/build-static.sh -p cloudlet --bin cloudlet

run:
	./scripts/run.sh

test:
	./scripts/test.sh

check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	./scripts/bench.sh

# Every fuzz target for FUZZ_SECONDS (default 60) each; fails on a finding.
fuzz:
	./scripts/fuzz.sh

test-vm:
	./scripts/vm-test.sh

# Server SIGKILLs, hostile requests and idle connections against real processes, counted.
torture:
	./scripts/torture.sh
