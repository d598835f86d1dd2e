#!/usr/bin/env bash
# The test command: prerequisites, formatting, lints, then every test (snapshots are
# compared, never written: INSTA_UPDATE=no).
set -euo pipefail
cd "$(dirname "$0")/.."
export INSTA_UPDATE=no

./scripts/prereqs.sh
./scripts/clear-test-leftovers.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# --no-fail-fast: one red test binary must not hide the results of the others. --all-targets:
# the benchmarks run too, at a small scale that checks their outcome.
cargo test --workspace --all-targets --locked --no-fail-fast
