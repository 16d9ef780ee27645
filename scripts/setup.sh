#!/usr/bin/env bash
# Installs what flowscope needs to build and test, idempotently: Debian packages, the nightly
# rust-src component, and bpf-linker built against LLVM 22 (the LLVM of the nightly toolchain).
# Quick (a few seconds) when everything is already there. Needs root for apt.
set -euo pipefail

export PATH="$HOME/.cargo/bin:/usr/lib/llvm-22/bin:$PATH"
log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages: LLVM 22 for bpf-linker, and the network tools the test bed drives.
packages=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
          iproute2 iptables iputils-ping conntrack iperf3 tcpdump util-linux procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The nightly toolchain builds the kernel programs (-Z build-std=core needs rust-src).
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi

# 3. bpf-linker, linked against LLVM 22.
if ! bpf-linker --version >/dev/null 2>&1; then
  log "building bpf-linker against LLVM 22 (a few minutes, once)"
  cargo install bpf-linker --locked --no-default-features --features llvm-22
fi

# 4. Kernel features the agent relies on.
[[ -r /sys/kernel/btf/vmlinux ]] || log "warning: no /sys/kernel/btf/vmlinux: drop tracing needs BTF"
log "ready"
