#!/usr/bin/env bash
# Compare pilot with the real ContainerPilot 3.8.0 on every ContainerPilot v3 fixture and on
# thousands of mutations of them: accept/reject, template output byte for byte, and the event
# order of short runs of the fixtures. A maintainers' tool, not part of the test suite (it needs
# the peer). docs/compat.md holds the table of every difference it found, each classified.
#   scripts/compat.sh CONTAINERPILOT [OUT]     (as root: a private network and mount namespace)
# CONTAINERPILOT: the binary, or "build" to have bench/containerpilot.sh build it with the
# peers' build script beside this checkout. OUT (default a temp dir) gets summary.md, summary.json
# and one example file per kind of difference. COMPAT_MUTATIONS (4000), COMPAT_JOBS (3),
# COMPAT_EVENTS=0 (skip the runs), PILOT_BIN (else scripts/build-static.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "compat: run as root (unshare of the network and mount namespaces)" >&2; exit 1; }
cp_bin="$1"
out="$(realpath -m "${2:-$(mktemp -d /var/tmp/pilot-compat.XXXXXX)}")"
mkdir -p "$out"
if [ "$cp_bin" = build ]; then
  cp_bin="$(bench/containerpilot.sh "$out/cp")" || { echo "compat: give CONTAINERPILOT as a path" >&2; exit 1; }
fi
cp_bin="$(realpath "$cp_bin")"
"$cp_bin" -version >&2
pilot="$(realpath "${PILOT_BIN:-$(scripts/build-static.sh)}")"
# A private network namespace with loopback and an eth0 (one end of a veth pair whose other end
# is in the same namespace: interface specs resolve the same for both, nothing leaves the
# machine) and a private /run (ContainerPilot's default control socket is
# /var/run/containerpilot.socket).
exec unshare --net --mount --propagation private -- bash -c '
  set -e
  ip link set lo up
  ip link add eth0 type veth peer name veth1 && ip addr add 10.99.0.2/24 dev eth0 && ip link set veth1 up && ip link set eth0 up
  mount -t tmpfs tmpfs /run
  exec python3 scripts/compat.py "$1" "$2" "$3"' compat "$pilot" "$cp_bin" "$out"
