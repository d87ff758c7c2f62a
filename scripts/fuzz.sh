#!/usr/bin/env bash
# Runs the fuzz targets of tests/fuzz (libFuzzer, coverage-guided) on stable Rust, each for a
# bounded time, starting from the seeds in tests/fuzz/corpus/<target>/. Fails on the first
# finding: the input that crashed is written to tests/fuzz/artifacts/<target>/ (reproduce it with
# `scripts/fuzz.sh --run <target> <file>`). `make fuzz` and scripts/test.sh call this.
#
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (default 60) each
#   scripts/fuzz.sh manifest ovsdb       only those
#   scripts/fuzz.sh --run TARGET FILE..  run TARGET once on each FILE (reproduce a crash)
#   scripts/fuzz.sh --build              only build
#
# New inputs the fuzzer finds go to tests/fuzz/target/corpus/<target>/ (not committed); the
# seeds in the repository are hand-picked and small.
#
# No sanitizer: the code under test is safe Rust, so what libFuzzer looks for is a panic (an
# unwrap, an index out of bounds, an overflow: the build keeps overflow checks and debug
# assertions), a stack overflow, a timeout (FUZZ_TIMEOUT seconds per input, default 10) or an
# input that takes more than FUZZ_RSS_MB (default 2048) MiB.
set -euo pipefail
caller_dir="$PWD"
cd "$(dirname "$0")/../tests/fuzz"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

TARGETS=(manifest cluster api_bodies ovsdb shim_proto)
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
# Two jobs: a runner in CI or on a laptop has two cores to spare, and the targets are run one
# after the other anyway.
JOBS="${FUZZ_BUILD_JOBS:-2}"
triple="$(rustc -vV | sed -n 's/^host: //p')"

# What cargo-fuzz passes with `--sanitizer none`, all of it stable rustc: SanitizerCoverage's
# 8-bit edge counters, PC table and comparison tracing, which libFuzzer reads. An explicit
# --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cforce-frame-pointers=yes"
export CARGO_TARGET_DIR="$PWD/target"

build() {
  echo "==> building the fuzz targets (instrumented, release)"
  # Not --locked: the committed lock starts from the workspace's, and a dependency the workspace
  # gained since is resolved to the same version rather than failing the build.
  cargo build --release --target "$triple" -j "$JOBS" --bins
}
bin() { echo "$CARGO_TARGET_DIR/$triple/release/$1"; }

case "${1:-}" in
  --build)
    build
    exit 0
    ;;
  --run)
    target="${2:?--run TARGET FILE..}"
    shift 2
    files=()
    for file in "$@"; do
      case "$file" in /*) files+=("$file") ;; *) files+=("$caller_dir/$file") ;; esac
    done
    build
    exec "$(bin "$target")" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" "${files[@]}"
    ;;
esac

if (($#)); then TARGETS=("$@"); fi
build
for target in "${TARGETS[@]}"; do
  corpus="$CARGO_TARGET_DIR/corpus/$target"
  artifacts="$PWD/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  echo "==> fuzzing $target for ${SECONDS_EACH}s"
  # The generated corpus first (the fuzzer adds to it), then the seeds (read only).
  if ! "$(bin "$target")" "$corpus" "corpus/$target" \
    -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
    -max_len=65536 -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$corpus.log"; then
    tail -n 40 "$corpus.log"
    echo "fuzz: $target found a crash; the input is in $artifacts/" >&2
    exit 1
  fi
  # "#<execs> DONE cov: <edges> ft: <features> corp: <inputs>/<size> ... exec/s: <rate>"
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$corpus.log" | tail -n 1 || true)"
  echo "fuzz: $target: ${done_line:-no summary (see $corpus.log)}"
done
