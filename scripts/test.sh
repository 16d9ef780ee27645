#!/usr/bin/env bash
# The whole test suite: set-up, build, then every test (unit, gRPC/CLI and the privileged
# end-to-end tests in network namespaces). Run as root. Privileged tests run one at a time:
# some look at the BPF programs loaded on the whole machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/lib/llvm-22/bin:$PATH"

./scripts/setup.sh
echo "== build"
cargo build --locked --bins
echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --locked --all-targets -- -D warnings
echo "== tests"
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --locked --no-fail-fast -- --test-threads=1
echo "== benchmark harness (smoke: checks that every benchmark can measure; numbers meaningless)"
# Debug build: the harness starts the agent and relay built next to it (target/debug).
cargo build --locked -p bench
target/debug/bench --smoke
