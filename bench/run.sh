#!/usr/bin/env bash
# pilot's benchmarks, side by side with the peer inits, in one run:
#   bench/run.sh            (as root; BENCH_QUICK=1 for a short smoke run;
#                            PILOT_BASELINE=/path/to/older/pilot adds it as a peer: before/after)
# Installs the peers (Debian's tini, tini-static, dumb-init, catatonit), builds the static
# pilot and consul, tries to build ContainerPilot, measures (bench/measure.py) and writes
# bench/results/results.{json,md} and chart.png (bench/report.py, matplotlib from PyPI).
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

# ContainerPilot: its last release (3.8.0, 2019) predates Go modules and the module proxy
# serves no version of it, so `go` cannot fetch it; the report says so and uses published
# figures only.
cp_dir="$BENCH_WORK/containerpilot"
mkdir -p "$cp_dir"
if (cd "$cp_dir" && go mod init bench.local/cp >/dev/null 2>&1 && GOFLAGS=-mod=mod go get github.com/joyent/containerpilot@3.8.0) >"$cp_dir/log" 2>&1; then
  export CP_STATUS="fetched (not wired into the measurements)"
else
  export CP_STATUS="not built: $(tail -1 "$cp_dir/log" | cut -c1-200)"
fi

cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
venv="$cache/bench-venv"
"$venv/bin/python" -c "import matplotlib" 2>/dev/null || { python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib==3.11.2; }

python3 bench/measure.py > /dev/null
"$venv/bin/python" bench/report.py
echo "bench: results in bench/results/ (results.md, chart.png)" >&2
