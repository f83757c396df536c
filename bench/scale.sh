#!/usr/bin/env bash
# pilot at scale: SCALE_N (default 1000) concurrent pilots, each with a service health-checked
# every 10 s, against three Consul servers and four client agents, all on loopback addresses of
# their own (never beyond 127.0.0.0/8; data in a temp dir). Writes bench/results/scale.{json,md}.
#   bench/scale.sh                  (as root, for the file and process limits)
#   SCALE_N=50 bench/scale.sh       (a quick run)
# Other knobs: SCALE_STEADY_SECS (30), SCALE_WAIT_LIMIT (150 s per wait),
# SCALE_AGENT_HCL (agent limits; default raises http_max_conns_per_client to 4096),
# SCALE_DEREGISTER_AFTER (1m), SCALE_KEEP=1 (keep the temp dir: agents' and pilots' logs), BENCH_NOTE.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "scale: run as root (process and file limits of 1,000 pilots)" >&2; exit 1; }
export PILOT_BIN="${PILOT_BIN:-$(scripts/build-static.sh)}"
export CONSUL_BIN="${CONSUL_BIN:-$(scripts/install-consul.sh)}"
n="${SCALE_N:-1000}"
# Each pilot with a service has about five threads, and a check spawns a process every 10 s.
need=$((n * 20 + 10000))
for f in pid_max threads-max; do
  cur=$(cat /proc/sys/kernel/$f)
  if [ "$cur" -lt "$need" ]; then
    echo "scale: kernel.$f is $cur, $n pilots need about $need: raise it (sysctl) or lower SCALE_N" >&2
    exit 1
  fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -u)" = unlimited ] || [ "$(ulimit -u)" -ge "$need" ] || ulimit -u "$need" 2>/dev/null || {
  echo "scale: ulimit -u is $(ulimit -u), $n pilots need about $need" >&2; exit 1; }
python3 bench/scale.py > /dev/null
python3 bench/scale_report.py
echo "scale: results in bench/results/scale.md" >&2
