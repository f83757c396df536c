#!/usr/bin/env bash
# The optional ContainerPilot 3.8.0 peer, built from its release source by the peers' build
# script when this checkout sits beside it (../shared, or ../../shared for a git worktree one
# level down). bench/ is the only part of the project that looks there.
#   bench/containerpilot.sh OUT     prints the binary's path (OUT/containerpilot), or says
#                                   on stderr which script it looked for and exits 1
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bench/containerpilot.sh OUT}"
build=../shared/peers/containerpilot/build.sh
[ -x "$build" ] || [ ! -x "../$build" ] || build="../$build"
[ -x "$build" ] || { echo "no peers' build script at $build" >&2; exit 1; }
mkdir -p "$out"
"$build" "$out/containerpilot"
