#!/usr/bin/env bash
# Install what pilot's tests need on a fresh Debian machine (Rust itself comes by rustup):
#   python3     - test payloads (signal printer, pty runner, launcher with a signal mask)
#   util-linux  - unshare, to run pilot as PID 1 in a new PID (and user) namespace
#   mandoc      - lints man/pilot.1
#   prometheus  - promtool checks the metrics exposition; a real Prometheus scrapes pilot
#                 through consul_sd_configs
#   python3-prometheus-client - its strict OpenMetrics parser checks pilot's OpenMetrics answer
#   htcondor    - (PyPI, in a venv under ~/.cache/pilot) writes job ads as HTCondor does
#   chromium    - headless, renders the Consul UI of the end-to-end site (tests/site.rs)
#   zsh, fish   - syntax-check the completions `pilot completions zsh|fish` prints
#   qemu-user-static, gcc-aarch64-linux-gnu (+ libc6-dev-arm64-cross: C headers for ring),
#               the aarch64-unknown-linux-musl Rust target
#               - build the aarch64 static binary (cross gcc for ring's C code) and run it
#                 under qemu-aarch64-static (tests/aarch64.rs, scripts/release.sh)
#   iproute2, curl - the worker-node site's network namespaces and its Consul API (tests/worker_node.rs)
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v python3 >/dev/null || need+=(python3)
command -v unshare >/dev/null || need+=(util-linux)
command -v mandoc  >/dev/null || need+=(mandoc)
command -v promtool >/dev/null || need+=(prometheus)
/usr/bin/python3 -c "import prometheus_client.openmetrics.parser" 2>/dev/null || need+=(python3-prometheus-client)
command -v chromium >/dev/null || need+=(chromium)
command -v zsh     >/dev/null || need+=(zsh)
command -v fish    >/dev/null || need+=(fish)
command -v strace  >/dev/null || need+=(strace)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/include/stdint.h ] || need+=(libc6-dev-arm64-cross)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup-test-deps: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# HTCondor's own Python bindings (PyPI), to write job ads the way HTCondor does.
cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
venv="$cache/htcondor-venv"
if ! "$venv/bin/python" -c "import classad2" 2>/dev/null; then
  python3 -c "import venv, ensurepip" 2>/dev/null || {
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  }
  echo "setup-test-deps: installing the htcondor Python package into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q htcondor==25.14.1
fi

command -v cargo >/dev/null || { echo "setup-test-deps: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
# The aarch64 static binary (tests/aarch64.rs): Rust's musl target for ARM worker nodes.
rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl >&2
