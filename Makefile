# Convenience targets; the scripts they call are the source of truth.
.PHONY: build run test check bench test-vm torture

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

test-vm:
	./scripts/vm-test.sh

# Server SIGKILLs, hostile requests and idle connections against real processes, counted.
torture:
	./scripts/torture.sh
