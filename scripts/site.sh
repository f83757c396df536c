#!/usr/bin/env bash
# The paper's site on one machine: a node-local Consul agent, an HTCondor pool (Debian
# unstable's minicondor, with Apptainer, inside the root of scripts/make-sid-root.sh) and the
# pilot worker-node image, all on loopback. docs/site.md walks through it.
#
#   scripts/site.sh up [--prometheus]   start it all (builds what is missing; as root)
#   scripts/site.sh exec [--root] CMD   run CMD in the site: as the submitting user pilotuser in
#                                       /pilot-work/jobs, or as root; HTCondor's tools work there
#   scripts/site.sh worker-node start|stop NAME   the paper's long-running container (instance);
#                                       WN_INTERVAL/WN_TTL set its check (default 60/120 s)
#   scripts/site.sh ui PATH OUT.png [TEXT...]   headless Chromium shot of the Consul UI page
#                                       PATH once it shows every TEXT (also OUT.html)
#   scripts/site.sh status              what runs, where
#   scripts/site.sh down                stop everything (the directory stays, with the image)
#   scripts/site.sh nodes ...           the paper's deployment instead: separate nodes in network
#                                       namespaces, three Consul servers, worker-node containers
#                                       with HTCondor inside (scripts/site/nodes.sh says how)
#
# The site lives in $PILOT_SITE (default /tmp/pilot-site), which is /pilot-work inside.
# Inputs, when set: PILOT_STATIC (the static pilot, else scripts/build-static.sh builds it),
# PILOT_CONSUL, PILOT_PROMETHEUS (else scripts/install-*.sh build them once).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
site="${PILOT_SITE:-/tmp/pilot-site}"
submitter=1000   # pilotuser in the root (scripts/make-sid-root.sh)

die() { echo "site: $*" >&2; exit 1; }
say() { echo "site: $*" >&2; }
alive() { [ -f "$site/$1.pid" ] && kill -0 "$(cat "$site/$1.pid")" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
consul_addr() { cat "$site/consul.addr"; }

# shellcheck source=site/lib.sh
. "$here/scripts/site/lib.sh"   # wait_for

# Run a command in the pool's mount namespace and root, with a clean environment.
enter() {
  local as_root=$1; shift
  alive pool || die "the site is not up (scripts/site.sh up)"
  local env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    CONDOR_CONFIG=/pilot-work/etc/condor_config CONSUL_HTTP_ADDR="$(consul_addr)" TERM="${TERM:-dumb}")
  if [ "$as_root" = 1 ]; then
    nsenter -t "$(cat "$site/pool.pid")" -m -r -w "${env[@]}" HOME=/root sh -c 'cd / && exec "$@"' sh "$@"
  else
    nsenter -t "$(cat "$site/pool.pid")" -m -r -w setpriv --reuid $submitter --regid $submitter --init-groups \
      "${env[@]}" HOME=/home/pilotuser USER=pilotuser sh -c 'cd /pilot-work/jobs && exec "$@"' sh "$@"
  fi
}

start_consul() {
  local consul="${PILOT_CONSUL:-$("$here/scripts/install-consul.sh")}"
  local http serf server
  http=$(free_port) serf=$(free_port) server=$(free_port)
  mkdir -p "$site/consul"
  # A dev agent: a one-node cluster, in memory, with the UI; every listener on loopback.
  setsid "$consul" agent -dev -node pilot-site -bind 127.0.0.1 -client 127.0.0.1 \
    -http-port "$http" -serf-lan-port "$serf" -server-port "$server" -serf-wan-port -1 \
    -dns-port -1 -grpc-port -1 -grpc-tls-port -1 -https-port -1 \
    > "$site/consul/consul.log" 2>&1 < /dev/null &
  echo $! > "$site/consul.pid"
  echo "127.0.0.1:$http" > "$site/consul.addr"
  wait_for 30 sh -c "curl -sf http://127.0.0.1:$http/v1/status/leader | grep -q :" \
    || die "consul did not elect itself leader; see $site/consul/consul.log"
}

start_prometheus() {
  local prometheus="${PILOT_PROMETHEUS:-$("$here/scripts/install-prometheus.sh")}"
  local port; port=$(free_port)
  mkdir -p "$site/prometheus"
  # Every pilot with a telemetry stanza registers a `containerpilot` service: scrape them all.
  cat > "$site/prometheus/prometheus.yml" <<EOF
global: { scrape_interval: 5s }
scrape_configs:
  - job_name: containerpilot
    consul_sd_configs: [{ server: "$(consul_addr)", services: [containerpilot], refresh_interval: 5s }]
    relabel_configs:
      - { source_labels: [__meta_consul_service_id], target_label: instance }
EOF
  setsid "$prometheus" --config.file="$site/prometheus/prometheus.yml" --storage.tsdb.path="$site/prometheus/data" \
    --web.listen-address="127.0.0.1:$port" > "$site/prometheus/prometheus.log" 2>&1 < /dev/null &
  echo $! > "$site/prometheus.pid"
  echo "127.0.0.1:$port" > "$site/prometheus.addr"
  wait_for 30 curl -sf "http://127.0.0.1:$port/-/ready" || die "prometheus did not start; see $site/prometheus/prometheus.log"
}

# The worker-node image as a sandbox directory: an unprivileged Apptainer mounts a SIF through
# squashfuse and /dev/fuse, which this machine keeps root-only (so the slot lacks HasSIF);
# WLCG sites ship unpacked images the same way (/cvmfs/unpacked.cern.ch). Rebuilt only when
# pilot, the definition or the examples change.
build_image() {
  local pilot="${PILOT_STATIC:-$("$here/scripts/build-static.sh")}"
  local stamp
  stamp=$(cat "$pilot" "$here/apptainer/pilot.def" "$here"/apptainer/examples/* | sha256sum | cut -d' ' -f1)
  if [ -f "$site/images/pilot.stamp" ] && [ "$(cat "$site/images/pilot.stamp")" = "$stamp" ] && [ -x "$site/images/pilot/usr/local/bin/pilot" ]; then
    return
  fi
  say "building the pilot image (apptainer/pilot.def, Debian bookworm by debootstrap; about a minute)"
  rm -rf "$site/build" "$site/images/pilot" "$site/images/pilot.stamp"
  mkdir -p "$site/build/target/x86_64-unknown-linux-musl/release" "$site/build/apptainer" "$site/images"
  cp "$pilot" "$site/build/target/x86_64-unknown-linux-musl/release/pilot"
  cp -r "$here/apptainer/pilot.def" "$here/apptainer/examples" "$site/build/apptainer/"
  # --notest: the build's %test would ask for every capability (see make-sid-root.sh);
  # HTCondor runs `apptainer test` before each job anyway.
  PILOT_WORK="$site" "$here/scripts/in-sid-root.sh" sh -c \
    'cd /pilot-work/build && apptainer build --notest --sandbox /pilot-work/images/pilot apptainer/pilot.def' \
    > "$site/images/build.log" 2>&1 || die "apptainer build failed; see $site/images/build.log"
  echo "$stamp" > "$site/images/pilot.stamp"
}

write_config() {
  local collector; collector=$(free_port)
  mkdir -p "$site/etc"
  printf 'include : /etc/condor/condor_config\nLOCAL_CONFIG_FILE = /pilot-work/etc/site.config\n' > "$site/etc/condor_config"
  sed -e "s/@COLLECTOR_PORT@/$collector/" -e "s/@CONSUL_PORT@/$(consul_addr | cut -d: -f2)/" \
    "$here/scripts/site/condor.config" > "$site/etc/site.config"
  cp "$here/apptainer/examples/htcondor-payload.json5" "$here/scripts/site/worker-node.json5" "$site/etc/"
  rm -rf "$site/etc/standins" && cp -r "$here/scripts/site/standins" "$site/etc/standins"
}

up() {
  local with_prometheus=0
  [ "${1:-}" = "--prometheus" ] && with_prometheus=1
  [ "$(id -u)" -eq 0 ] || die "run as root (the pool runs in a private mount namespace)"
  command -v nsenter >/dev/null || die "nsenter not found: apt-get install util-linux"
  down >/dev/null 2>&1 || true
  # A fresh pool each time: an old queue would start its jobs again.
  rm -rf "$site/condor"
  mkdir -p "$site/jobs" "$site/worker"
  chmod 0755 "$site"
  chown $submitter:$submitter "$site/jobs"
  "$here/scripts/make-sid-root.sh" >/dev/null
  build_image
  start_consul
  write_config
  PILOT_WORK="$site" setsid "$here/scripts/in-sid-root.sh" /pilot-src/scripts/site/pool.sh \
    > "$site/pool.log" 2>&1 < /dev/null &
  echo $! > "$site/pool.pid"
  # The execute point is ready when its slot advertises Apptainer.
  wait_for 120 sh -c "'$here/scripts/site.sh' exec --root condor_status -af HasSingularity | grep -q true" \
    || die "no HTCondor slot with Apptainer after 120 s; see $site/pool.log and $site/condor/log/condor/"
  [ $with_prometheus = 1 ] && start_prometheus
  status
}

worker_node() {
  local action=$1 name=$2
  case "$action" in
    start)
      # The site admin's long-running container (the paper's mode): pilot's startscript runs
      # the worker-node config; the stand-ins and their fault switch are bound in.
      enter 1 apptainer instance start \
        --env "CONSUL_HTTP_ADDR=$(consul_addr),WN_INTERVAL=${WN_INTERVAL:-60},WN_TTL=${WN_TTL:-120},STANDIN_STATE=/srv/worker" \
        -B /pilot-work/etc/standins:/usr/local/sbin -B /pilot-work/worker:/srv/worker \
        -B /pilot-work/etc/worker-node.json5:/etc/pilot/pilot.json5 \
        /pilot-work/images/pilot "$name" ;;
    stop) enter 1 apptainer instance stop "$name" ;;
    *) die "worker-node start|stop NAME" ;;
  esac
}

ui() {
  local path=$1 out=$2; shift 2
  command -v chromium >/dev/null || die "chromium not found: apt-get install chromium (scripts/setup-test-deps.sh does)"
  python3 "$here/scripts/site/ui.py" "http://$(consul_addr)$path" "$out" "$@"
}

status() {
  alive consul && echo "consul      http://$(consul_addr)/ui/  (CONSUL_HTTP_ADDR=$(consul_addr))"
  alive prometheus && echo "prometheus  http://$(cat "$site/prometheus.addr")/"
  alive pool && echo "htcondor    condor_master pid $(cat "$site/pool.pid"); scripts/site.sh exec condor_q"
  echo "site dir    $site (/pilot-work inside)"
}

down() {
  if alive pool; then
    # Instances are not the pool's children: stop them first, then the pool (which vacates
    # its jobs: SIGTERM, then SIGKILL after MachineMaxVacateTime).
    enter 1 apptainer instance stop --all >/dev/null 2>&1 || true
    kill -TERM "$(cat "$site/pool.pid")"
    wait_for 40 sh -c "! kill -0 $(cat "$site/pool.pid")" || kill -KILL "$(cat "$site/pool.pid")"
  fi
  for p in prometheus consul; do
    if alive $p; then
      kill -TERM "$(cat "$site/$p.pid")"
      wait_for 10 sh -c "! kill -0 $(cat "$site/$p.pid")" || kill -KILL "$(cat "$site/$p.pid")"
    fi
  done
  rm -f "$site"/*.pid "$site"/*.addr
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  up) up "$@" ;;
  exec)
    if [ "${1:-}" = "--root" ]; then shift; enter 1 "$@"; else enter 0 "$@"; fi ;;
  worker-node) [ $# -eq 2 ] || die "worker-node start|stop NAME"; worker_node "$@" ;;
  ui) [ $# -ge 2 ] || die "ui PATH OUT.png [TEXT...]"; ui "$@" ;;
  status) status ;;
  down) down ;;
  nodes) exec "$here/scripts/site/nodes.sh" "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
