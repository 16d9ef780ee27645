#!/usr/bin/env bash
# The demo: builds the reference scenario of the seed lab in network namespaces (node, pod-a,
# pod-b, world), starts the agent on the node, sends the lab's traffic (ping and wget to
# 1.0.0.1, DNS-like UDP, pod-a -> pod-b, a packet the node's firewall drops) and shows what
# flowscope saw. Everything is removed at the end. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/lib/llvm-22/bin:$PATH"

./scripts/setup.sh
cargo build --locked --bins -q
exec ./target/debug/demo "$@"
