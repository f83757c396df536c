#!/usr/bin/env bash
# pilot's benchmarks, side by side with the peer inits, in one run:
#   bench/run.sh            (as root; BENCH_QUICK=1 for a short smoke run;
#                            PILOT_BASELINE=/path/to/older/pilot adds it as a peer: before/after;
#                            CONTAINERPILOT=/path/to/containerpilot: the ContainerPilot peer;
#                            BENCH_ONLY=startup,memory,signals,reaping,cpu,latency,consul: a subset;
#                            BENCH_NOTE="...": a line for the report, e.g. what else ran)
# Installs the peers (Debian's tini, tini-static, dumb-init, catatonit), builds the static
# pilot and consul, finds or builds ContainerPilot 3.8.0, measures (bench/measure.py) and
# writes bench/results/results.{json,md} and chart.png (bench/report.py, matplotlib from PyPI).
# The scale benchmark (1,000 pilots against a Consul cluster) is bench/scale.sh; where a
# scenario's RSS goes, mapping by mapping, is bench/smaps.py (docs/runtime-footprint.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (PID namespaces for the reaping benchmark, apt for the peers)" >&2; exit 1; }
need=()
for p in tini dumb-init catatonit; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
command -v gcc >/dev/null || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

export PILOT_BIN="$(scripts/build-static.sh)"
export CONSUL_BIN="$(scripts/install-consul.sh)"
export BENCH_WORK="${BENCH_WORK:-$(mktemp -d)}"
gcc -O2 -o "$BENCH_WORK/sigpayload" bench/sigpayload.c
gcc -O2 -o "$BENCH_WORK/orphans" bench/orphans.c

# ContainerPilot 3.8.0, the system pilot replaces: $CONTAINERPILOT if set, else built from its
# release source by the peers' build script when this checkout sits beside it (../shared, or
# ../../shared for a git worktree one level down; bench/containerpilot.sh, the only place that looks there),
# else absent: the report says which.
export CONTAINERPILOT_BIN="" CP_STATUS
if [ -n "${CONTAINERPILOT:-}" ]; then
  [ -x "$CONTAINERPILOT" ] || { echo "bench: CONTAINERPILOT=$CONTAINERPILOT is not an executable" >&2; exit 1; }
  CONTAINERPILOT_BIN="$(realpath "$CONTAINERPILOT")"
  CP_STATUS="from CONTAINERPILOT=$CONTAINERPILOT"
elif CONTAINERPILOT_BIN="$(bench/containerpilot.sh "$BENCH_WORK/cp" 2>"$BENCH_WORK/containerpilot.log")"; then
  CP_STATUS="built from its 3.8.0 release source by the peers' build script (bench/containerpilot.sh)"
else
  CONTAINERPILOT_BIN=""
  CP_STATUS="absent (set CONTAINERPILOT=/path; bench/containerpilot.sh: $(tail -1 "$BENCH_WORK/containerpilot.log"))"
fi
if [ -n "$CONTAINERPILOT_BIN" ]; then
  CP_STATUS="$CP_STATUS; $("$CONTAINERPILOT_BIN" -version | tr '\n' ' ' | sed 's/ $//')"
fi
echo "bench: ContainerPilot: $CP_STATUS" >&2
unset CONTAINERPILOT  # pilot would read it as its config path

cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
venv="$cache/bench-venv"
"$venv/bin/python" -c "import matplotlib" 2>/dev/null || { python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib==3.11.2; }

python3 bench/measure.py > /dev/null
"$venv/bin/python" bench/report.py
echo "bench: results in bench/results/ (results.md, chart.png)" >&2
