#!/usr/bin/env bash
# The paper's deployment on one machine (scripts/site.sh nodes ...; docs/site.md): separate
# nodes, each in its own network namespace on a bridge 10.141.200.0/24 that this script makes
# inside an "umbrella" namespace of its own (nothing routes beyond it, and parallel sites
# cannot collide): three Consul servers (10.141.200.1-3), the HTCondor central manager and
# submit point (10.141.200.10, Debian unstable's HTCondor from scripts/make-sid-root.sh), and
# worker nodes wnN (10.141.200.(20+N)), each the image of apptainer/worker-node.def started
# with `apptainer instance start`: pilot as init, running a Consul client agent and
# condor_master -f (Figure 2). Prometheus (--prometheus) runs in the umbrella, 10.141.200.254.
#
#   nodes up [--prometheus] [N]     start the site and N worker nodes (default 2); as root
#   nodes start NAME | stop NAME    start a worker node / stop it gracefully (SIGTERM to pilot)
#   nodes kill NAME                 SIGKILL the worker node's whole container
#   nodes fault NAME cvmfs-break|cvmfs-repair|startd-off|startd-on|master-kill
#   nodes server kill|start N       Consul server csN (1-3)
#   nodes exec [--root] CMD         on the central manager (as pilotuser in /pilot-work/jobs)
#   nodes in NAME CMD               inside worker node NAME's container
#   nodes net CMD                   in the umbrella namespace (curl http://10.141.200.1:8500/...)
#   nodes ui PATH OUT.png [TEXT...] headless Chromium shot of a Consul server's UI page
#   nodes status | down
#
# State in $PILOT_NODES (default /tmp/pilot-nodes; /pilot-work inside). WN_INTERVAL, WN_TTL,
# WN_TIMEOUT (pilot's check) and SITE_HEALTH_PERIOD (HTCondor's) shorten the periods for tests.
# Inputs as for scripts/site.sh: PILOT_STATIC, PILOT_CONSUL, PILOT_PROMETHEUS.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
site="${PILOT_NODES:-/tmp/pilot-nodes}"
mkdir -p "$site"
site="$(cd "$site" && pwd)"
submitter=1000
net=10.141.200
# Namespace names are global: derive them from the site directory.
pfx="pn$(printf %s "$site" | sha256sum | cut -c1-6)"
umbrella="$pfx-site"
export APPTAINER_CONFIGDIR=/pilot-work/apptainer   # this site's instances only

die() { echo "nodes: $*" >&2; exit 1; }
say() { echo "nodes: $*" >&2; }
alive() { [ -f "$site/$1.pid" ] && kill -0 "$(cat "$site/$1.pid")" 2>/dev/null; }
# shellcheck source=lib.sh
. "$here/scripts/site/lib.sh"   # wait_for
node_ip() {
  case "$1" in
    cs[1-3]) echo "$net.${1#cs}" ;;
    cm) echo "$net.10" ;;
    wn[0-9]|wn[0-9][0-9]) echo "$net.$((20 + ${1#wn}))" ;;
    *) die "unknown node '$1' (cs1-3, cm, wn1-wn99)" ;;
  esac
}
cm_pid() { alive cm || die "the site is not up (scripts/site.sh nodes up)"; cat "$site/cm.pid"; }
clean_env() {
  echo env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CONDOR_CONFIG=/pilot-work/etc/condor_config APPTAINER_CONFIGDIR="$APPTAINER_CONFIGDIR" TERM="${TERM:-dumb}"
}

# A node's namespace, joined to the bridge by a veth pair (its end is eth0 inside).
add_node_ns() {
  local name=$1 ns="$pfx-$1" ip; ip=$(node_ip "$1")
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$umbrella" link del "v-$name" 2>/dev/null || true
  ip -n "$umbrella" link add "v-$name" type veth peer name eth0 netns "$ns"
  ip -n "$umbrella" link set "v-$name" master br-site up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

make_network() {
  command -v ip >/dev/null || die "ip not found: apt-get install iproute2"
  ip netns del "$umbrella" 2>/dev/null || true
  ip netns add "$umbrella"
  ip -n "$umbrella" link set lo up
  ip -n "$umbrella" link add br-site type bridge
  ip -n "$umbrella" addr add "$net.254/24" dev br-site
  ip -n "$umbrella" link set br-site up
  {
    echo "127.0.0.1 localhost"
    for i in 1 2 3; do echo "$net.$i cs$i.pilot.site cs$i"; done
    echo "$net.10 cm.pilot.site cm"
    for i in $(seq 1 20); do echo "$net.$((20 + i)) wn$i.pilot.site wn$i"; done
    echo "$net.254 monitor.pilot.site monitor"
  } > "$site/etc/hosts"
}

start_server() {
  local i=$1 consul; consul="$(consul_bin)"
  alive "cs$i" && return
  [ -e "/run/netns/$pfx-cs$i" ] || add_node_ns "cs$i"
  mkdir -p "$site/cs$i"
  # raft_multiplier 1: production timing (the default 5 is for laptops).
  ip netns exec "$pfx-cs$i" setsid "$consul" agent -server -bootstrap-expect 3 -node "cs$i" \
    -bind "$net.$i" -client 0.0.0.0 -ui -data-dir "$site/cs$i" \
    -retry-join "$net.1" -retry-join "$net.2" -retry-join "$net.3" \
    -dns-port -1 -grpc-port -1 -hcl 'performance { raft_multiplier = 1 }' -hcl 'disable_update_check = true' \
    >> "$site/cs$i.log" 2>&1 < /dev/null &
  echo $! > "$site/cs$i.pid"
}

consul_bin() { echo "${PILOT_CONSUL:-$("$here/scripts/install-consul.sh")}"; }

leader() { ip netns exec "$umbrella" curl -sf --max-time 2 "http://$net.$1:8500/v1/status/leader" | grep -q ":8300"; }

# The worker-node image as a sandbox directory (see scripts/site.sh build_image). Debootstrap
# runs again only when the definition changes; the files its %files section copies (pilot, its
# config, HTCondor's) are copied into the sandbox at every start, as %files would.
build_image() {
  local pilot="${PILOT_STATIC:-$("$here/scripts/build-static.sh")}"
  local img="$site/images/worker-node" stamp
  # Comments do not count: only what debootstrap and %files see.
  stamp=$(grep -v '^[[:space:]]*#' "$here/apptainer/worker-node.def" | sha256sum | cut -d' ' -f1)
  if ! { [ -f "$img.stamp" ] && [ "$(cat "$img.stamp")" = "$stamp" ] && [ -d "$img/etc/condor" ]; }; then
    say "building the worker-node image (apptainer/worker-node.def: Debian unstable and HTCondor by debootstrap; a few minutes, once)"
    rm -rf "$site/build" "$img" "$img.stamp"
    mkdir -p "$site/build/target/x86_64-unknown-linux-musl/release" "$site/build/apptainer" "$site/build/scripts/site" "$site/images"
    cp "$pilot" "$site/build/target/x86_64-unknown-linux-musl/release/pilot"
    cp "$here/apptainer/worker-node.def" "$site/build/apptainer/"
    cp -r "$here/scripts/site/worker-node" "$site/build/scripts/site/"
    PILOT_WORK="$site" "$here/scripts/in-sid-root.sh" sh -c \
      'cd /pilot-work/build && apptainer build --notest --sandbox /pilot-work/images/worker-node apptainer/worker-node.def' \
      > "$site/images/build.log" 2>&1 || die "apptainer build failed; see $site/images/build.log"
    echo "$stamp" > "$img.stamp"
  fi
  install -m 0755 "$pilot" "$img/usr/local/bin/pilot"
  install -m 0644 "$here/scripts/site/worker-node/pilot.json5" "$img/etc/pilot/pilot.json5"
  install -m 0644 "$here/scripts/site/worker-node/condor.config" "$img/etc/condor/config.d/50-worker-node"
  install -m 0755 "$here/scripts/site/worker-node/site-health" "$img/usr/local/libexec/site-health"
  install -m 0755 "$here/scripts/site/worker-node/condor-master-session" "$img/usr/local/bin/condor-master-session"
}

start_cm() {
  printf 'include : /etc/condor/condor_config\nLOCAL_CONFIG_FILE = /pilot-work/etc/cm.config\n' > "$site/etc/condor_config"
  cp "$here/scripts/site/nodes/cm.config" "$site/etc/cm.config"
  add_node_ns cm
  PILOT_WORK="$site" ip netns exec "$pfx-cm" unshare --uts "$here/scripts/in-sid-root.sh" /pilot-src/scripts/site/nodes/cm.sh \
    > "$site/cm.log" 2>&1 < /dev/null &
  echo $! > "$site/cm.pid"
  wait_for 60 enter_cm 1 condor_status -schedd -af Name || die "the central manager did not start; see $site/cm.log and $site/cm/log/"
}

# Run a command on the central manager (its namespaces and root), as root or the submitter.
enter_cm() {
  local as_root=$1; shift
  local pid; pid=$(cm_pid)
  # shellcheck disable=SC2046
  if [ "$as_root" = 1 ]; then
    nsenter -t "$pid" -m -u -n -r -w $(clean_env) HOME=/root sh -c 'cd / && exec "$@"' sh "$@"
  else
    nsenter -t "$pid" -m -u -n -r -w setpriv --reuid $submitter --regid $submitter --init-groups \
      $(clean_env) HOME=/home/pilotuser USER=pilotuser sh -c 'cd /pilot-work/jobs && exec "$@"' sh "$@"
  fi
}

# Apptainer, from the central manager's mount namespace (the sid root), in a node's network.
apptainer_in() {
  local ns=$1; shift
  # shellcheck disable=SC2046
  nsenter -t "$(cm_pid)" -m -r -w --net="/run/netns/$ns" $(clean_env) HOME=/root sh -c 'cd / && exec "$@"' sh apptainer "$@"
}

wn_start() {
  local name=$1; node_ip "$name" >/dev/null
  local d="$site/nodes/$name"
  mkdir -p "$d/state" "$d/consul" "$d/cvmfs/grid.cern.ch"
  echo "grid.cern.ch stand-in: remove (scripts/site.sh nodes fault $name cvmfs-break) to break CVMFS" > "$d/cvmfs/grid.cern.ch/README"
  echo "SITE_HEALTH_PERIOD = ${SITE_HEALTH_PERIOD:-60}" > "$d/state/local.config"
  # HTCondor's state directories, owned by the image's condor user (as a package would make them).
  local ids; ids=$(awk -F: '$1 == "condor" {print $3 ":" $4}' "$site/images/worker-node/etc/passwd")
  [ -n "$ids" ] || die "the worker-node image has no condor user"
  local sub
  for sub in log spool execute lock run cred_dir; do mkdir -p "$d/state/condor/$sub"; done
  chown -R "$ids" "$d/state/condor"
  chmod 0700 "$d/state/condor/cred_dir"
  add_node_ns "$name"
  # HTCondor runs as root in the container and switches to each job's owner: it needs these
  # capabilities (--keep-privs would ask for all, which fails where the machine lacks some).
  apptainer_in "$pfx-$name" instance start --no-init --ipc --uts --hostname "$name" --contain --cleanenv --writable-tmpfs \
    --add-caps "$wn_caps" \
    --env "CHECKPOINT_DISABLE=1,WN_INTERVAL=${WN_INTERVAL:-60},WN_TTL=${WN_TTL:-120},WN_TIMEOUT=${WN_TIMEOUT:-60}" \
    -B /pilot-work/etc/hosts:/etc/hosts -B /pilot-work/bin/consul:/usr/local/bin/consul \
    -B "/pilot-work/nodes/$name/state:/srv/node" -B "/pilot-work/nodes/$name/consul:/consul/data" \
    -B "/pilot-work/nodes/$name/cvmfs:/cvmfs" \
    /pilot-work/images/worker-node "$name"
  # Kept so that `down` can end the container even when the central manager is gone.
  wn_pid "$name" > "$site/$name.pid"
}

wn_caps=CAP_SETUID,CAP_SETGID,CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_DAC_READ_SEARCH,CAP_FOWNER,CAP_KILL,CAP_SYS_PTRACE,CAP_NET_BIND_SERVICE

# The pid (on this machine) of PID 1 of a worker node's container: Apptainer's appinit, which an
# instance always has, with pilot as its one child (the reaper of the rest, as a subreaper).
wn_pid() {
  local pid
  pid=$(apptainer_in "$umbrella" instance list --json "$1" | python3 -c \
    'import json,sys; i=json.load(sys.stdin)["instances"]; print(i[0]["pid"] if i else "")')
  [ -n "$pid" ] || die "no worker node $1"
  echo "$pid"
}

wn_stop() { apptainer_in "$umbrella" instance stop -t "${WN_STOP_WAIT:-90}" "$1" && rm -f "$site/$1.pid"; }

wn_kill() {
  local pid; pid=$(wn_pid "$1")
  # PID 1 of the container's PID namespace: the kernel kills everything else in it.
  kill -KILL "$pid"
  wait_for 30 sh -c "! kill -0 $pid" || die "$1's container (pid $pid) did not die"
  rm -f "$site/$1.pid"
  apptainer_in "$umbrella" instance list "$1" >/dev/null 2>&1 || true
}

in_wn() { local name=$1; shift; apptainer_in "$pfx-$name" exec --cleanenv "instance://$name" "$@"; }

fault() {
  local name=$1 what=$2 d="$site/nodes/$1/cvmfs"
  case "$what" in
    cvmfs-break) mv "$d/grid.cern.ch" "$d/.grid.cern.ch.broken" ;;
    cvmfs-repair) mv "$d/.grid.cern.ch.broken" "$d/grid.cern.ch" ;;
    startd-off) in_wn "$name" condor_off -startd ;;
    startd-on) in_wn "$name" condor_on -startd ;;
    master-kill) in_wn "$name" sh -c 'kill -KILL $(pidof condor_master)' ;;
    *) die "fault NAME cvmfs-break|cvmfs-repair|startd-off|startd-on|master-kill" ;;
  esac
}

start_prometheus() {
  local prometheus="${PILOT_PROMETHEUS:-$("$here/scripts/install-prometheus.sh")}"
  mkdir -p "$site/prometheus"
  cat > "$site/prometheus/prometheus.yml" <<PROM
global: { scrape_interval: 5s }
scrape_configs:
  - job_name: containerpilot
    consul_sd_configs: [{ server: "$net.1:8500", services: [containerpilot], refresh_interval: 5s }]
    relabel_configs:
      - { source_labels: [__meta_consul_node], target_label: instance }
PROM
  ip netns exec "$umbrella" setsid "$prometheus" --config.file="$site/prometheus/prometheus.yml" \
    --storage.tsdb.path="$site/prometheus/data" --web.listen-address="$net.254:9090" \
    > "$site/prometheus/prometheus.log" 2>&1 < /dev/null &
  echo $! > "$site/prometheus.pid"
  wait_for 30 ip netns exec "$umbrella" curl -sf "http://$net.254:9090/-/ready" \
    || die "prometheus did not start; see $site/prometheus/prometheus.log"
}

up() {
  local with_prometheus=0 n=2
  while [ $# -gt 0 ]; do
    case "$1" in --prometheus) with_prometheus=1 ;; [0-9]*) n=$1 ;; *) die "up [--prometheus] [N]" ;; esac
    shift
  done
  [ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, the central manager's mount namespace)"
  command -v nsenter >/dev/null || die "nsenter not found: apt-get install util-linux"
  command -v curl >/dev/null || die "curl not found: apt-get install curl"
  down >/dev/null 2>&1 || true
  # Half a site is no use to anyone: take it down if anything below fails.
  trap 'say "up failed: taking the site down"; down >/dev/null 2>&1' EXIT
  rm -rf "$site/cm" "$site/nodes" "$site"/cs[1-3] "$site/prometheus" "$site/apptainer" "$site"/*.log
  mkdir -p "$site/jobs" "$site/etc" "$site/bin" "$site/apptainer"
  chmod 0755 "$site"
  chown $submitter:$submitter "$site/jobs"
  "$here/scripts/make-sid-root.sh" >/dev/null
  build_image
  cp "$(consul_bin)" "$site/bin/consul"
  make_network
  for i in 1 2 3; do start_server "$i"; done
  wait_for 60 sh -c "'$0' net curl -sf --max-time 2 http://$net.1:8500/v1/status/leader | grep -q :8300" \
    || die "the Consul servers elected no leader in 60 s; see $site/cs*.log"
  start_cm
  for i in $(seq 1 "$n"); do wn_start "wn$i"; done
  [ $with_prometheus = 1 ] && start_prometheus
  trap - EXIT
  status
}

status() {
  for i in 1 2 3; do alive "cs$i" && echo "consul server cs$i  http://$net.$i:8500/ui/ (pid $(cat "$site/cs$i.pid"))"; done
  alive cm && echo "central manager  $net.10, condor_master pid $(cat "$site/cm.pid"); scripts/site.sh nodes exec condor_q"
  alive cm && apptainer_in "$umbrella" instance list 2>/dev/null | sed 1d | awk '{print "worker node      " $1 " pid " $2}'
  alive prometheus && echo "prometheus       http://$net.254:9090/"
  echo "namespaces       $umbrella (bridge br-site $net.0/24) and $pfx-*; scripts/site.sh nodes net CMD"
  echo "site dir         $site (/pilot-work inside)"
}

stop_pid() {
  local name=$1 limit=$2
  if alive "$name"; then
    kill -TERM "$(cat "$site/$name.pid")"
    wait_for "$limit" sh -c "! kill -0 $(cat "$site/$name.pid")" || kill -KILL "$(cat "$site/$name.pid")"
  fi
  rm -f "$site/$name.pid"
}

down() {
  local f pid
  for f in "$site"/wn*.pid; do
    [ -f "$f" ] || continue
    # PID 1 of the worker node's PID namespace (the kernel ends everything in it), if that
    # pid is still Apptainer's appinit and not a reused one.
    pid=$(cat "$f")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = appinit ] && kill -KILL "$pid" 2>/dev/null
    rm -f "$f"
  done
  stop_pid cm 30
  stop_pid prometheus 10
  for i in 1 2 3; do stop_pid "cs$i" 10; done
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^$pfx-" || true); do ip netns del "$ns"; done
  rm -rf "$site/apptainer"
}

server() {
  local action=$1 i=$2
  case "$action" in
    kill) alive "cs$i" && kill -KILL "$(cat "$site/cs$i.pid")"; rm -f "$site/cs$i.pid" ;;
    start) start_server "$i" ;;
    *) die "server kill|start N" ;;
  esac
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  up) up "$@" ;;
  start) [ $# -eq 1 ] || die "start NAME"; wn_start "$1" ;;
  stop) [ $# -eq 1 ] || die "stop NAME"; wn_stop "$1" ;;
  kill) [ $# -eq 1 ] || die "kill NAME"; wn_kill "$1" ;;
  fault) [ $# -eq 2 ] || die "fault NAME WHAT"; fault "$@" ;;
  server) [ $# -eq 2 ] && [[ "$2" =~ ^[1-3]$ ]] || die "server kill|start 1-3"; server "$@" ;;
  exec) if [ "${1:-}" = "--root" ]; then shift; enter_cm 1 "$@"; else enter_cm 0 "$@"; fi ;;
  in) [ $# -ge 2 ] || die "in NAME CMD"; in_wn "$@" ;;
  net) ip netns exec "$umbrella" "$@" ;;
  ui)
    [ $# -ge 2 ] || die "ui PATH OUT.png [TEXT...]"
    command -v chromium >/dev/null || die "chromium not found: apt-get install chromium (scripts/setup-test-deps.sh does)"
    path=$1 out=$2; shift 2
    ip netns exec "$umbrella" python3 "$here/scripts/site/ui.py" "http://$net.1:8500$path" "$out" "$@" ;;
  status) status ;;
  down) down ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
