#!/usr/bin/env bash
# Installs what flowscope needs to build and test, idempotently: Debian packages, the nightly
# rust-src component, and bpf-linker built against LLVM 22 (the LLVM of the nightly toolchain).
# Quick (a few seconds) when everything is already there. Needs root for apt.
set -euo pipefail

export PATH="$HOME/.cargo/bin:/usr/lib/llvm-22/bin:$PATH"
log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages: LLVM 22 for bpf-linker, the network tools the test bed drives,
#    Prometheus (the metrics tests start their own server and promtool inside a test namespace),
#    dnsmasq's binary without its system service (dnsmasq-base: the L7 tests start their own
#    DNS server in the world namespace), and Chromium (the web view's test drives it headless).
packages=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
          iproute2 iptables iputils-ping conntrack iperf3 tcpdump util-linux procps prometheus
          dnsmasq-base chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's prometheus package would start a machine-wide server on :9090. Forbid service
  # starts during the install (policy-rc.d exit 101 = "action forbidden"), unless the machine
  # already has a policy of its own.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT # also when the install fails
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Under systemd the unit is also enabled at install: disable it, and stop it if anything
  # started it anyway. Only when this run installed the package: a prometheus the machine's
  # owner runs is none of our business.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null \
     && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
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

# 4. kubernetes-validate (PyPI): the deploy test checks every rendered Kubernetes manifest
#    against the API's schemas with it. (kubectl, which renders them, comes with the machine:
#    Debian's own kubernetes-client is too old for today's kustomizations.)
kv_version=1.37.0
if [[ "$(python3 -c 'import kubernetes_validate.version as v; print(v.__version__)' 2>/dev/null)" != "$kv_version" ]]; then
  log "installing kubernetes-validate $kv_version"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "kubernetes-validate==$kv_version" \
    || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --break-system-packages "kubernetes-validate==$kv_version"
fi
command -v kubectl >/dev/null || log "warning: no kubectl: the deploy test cannot render deploy/kubernetes"

# 5. protobuf (PyPI): flowctl's tests read `flowctl observe -o json` with Python protobuf's
#    protojson, an implementation independent of ours, as Hubble's own tools would read it.
pb_version=6.33.6
if [[ "$(python3 -c 'import google.protobuf as p; print(p.__version__)' 2>/dev/null)" != "$pb_version" ]]; then
  log "installing protobuf $pb_version (Python)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "protobuf==$pb_version" \
    || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --break-system-packages "protobuf==$pb_version"
fi

# 6. The OTLP tests' receiver (testbed/tests/otlp_receiver.py), built from the OpenTelemetry
#    project's own Python packages so that it shares no code with the agent's encoder:
#    opentelemetry-proto (messages and gRPC stubs; needs protobuf >=5,<7, so 6.33.6 above fits),
#    grpcio, and googleapis-common-protos (google.rpc.Status and RetryInfo).
otel_pkgs=("opentelemetry-proto==1.45.2" "grpcio==1.85.3" "googleapis-common-protos==1.72.0")
if ! python3 - "${otel_pkgs[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
PY
then
  log "installing ${otel_pkgs[*]} (Python)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "${otel_pkgs[@]}" "protobuf==$pb_version" \
    || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --break-system-packages "${otel_pkgs[@]}" "protobuf==$pb_version"
fi

# 7. websocket-client (PyPI): the web view's test speaks Chrome's DevTools protocol to the
#    headless Chromium with it (testbed/tests/web/cdp.py).
ws_version=1.8.0
if [[ "$(python3 -c 'import websocket; print(websocket.__version__)' 2>/dev/null)" != "$ws_version" ]]; then
  log "installing websocket-client $ws_version (Python)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "websocket-client==$ws_version" \
    || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --break-system-packages "websocket-client==$ws_version"
fi

# 8. Kernel features the agent relies on.
[[ -r /sys/kernel/btf/vmlinux ]] || log "warning: no /sys/kernel/btf/vmlinux: drop tracing needs BTF"
log "ready"
