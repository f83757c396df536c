#!/usr/bin/env python3
"""pilot at scale (bench/scale.sh sets up the inputs): N concurrent pilots, each with a service
health-checked every 10 s, against a Consul cluster of three servers and four client agents, all
on loopback addresses of their own (127.X.0.1-3 servers, 127.X.1.1-4 clients; data in a temp
dir). Measures pilot's total CPU and memory, the agents' and servers' CPU, the time until all N
are passing in the catalog, and, after stopping them all (SIGTERM; then, in a second round,
SIGKILL of half and SIGTERM of the rest), how many registrations stay behind and for how long.

Writes bench/results/scale.json and scale.md."""
import json, os, random, resource, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
PILOT = os.environ["PILOT_BIN"]
CONSUL = os.environ["CONSUL_BIN"]
N = int(os.environ.get("SCALE_N", "1000"))
INTERVAL, TTL = 10, 30
# Consul's own default (200 connections per client address) would refuse pilots beyond 200 per
# agent, every one of them coming from 127.0.0.1: a site with more pilots per node raises it.
AGENT_HCL = os.environ.get("SCALE_AGENT_HCL", "limits { http_max_conns_per_client = 4096 }")
# How long a registration of a SIGKILLed pilot stays once its TTL has lapsed (Consul's minimum
# is 1m; pilot's default 10m would outlast the benchmark).
DEREG = os.environ.get("SCALE_DEREGISTER_AFTER", "1m")
SERVICE = "scale-worker"
for var in ("CONTAINERPILOT", "PILOT_CONFIG"):  # a config path pilot would take over -c's
    os.environ.pop(var, None)
STEADY = float(os.environ.get("SCALE_STEADY_SECS", "30"))
WAIT_LIMIT = float(os.environ.get("SCALE_WAIT_LIMIT", "150"))


def free_port(addr):
    s = socket.socket()
    s.bind((addr, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(addr, path, timeout=10):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
        return json.load(r)


class Consul:
    """Three servers and four clients on their own loopback addresses."""

    def __init__(self, base):
        x = random.randint(100, 250)
        self.dir = base
        self.procs = {}
        self.http = {}
        serf = {}
        specs = [(f"server{i}", f"127.{x}.0.{i + 1}", True) for i in range(3)]
        specs += [(f"client{i}", f"127.{x}.1.{i + 1}", False) for i in range(4)]
        for name, addr, _ in specs:
            serf[name] = (addr, free_port(addr))
        joins = [f"{a}:{p}" for n, (a, p) in serf.items() if n.startswith("server")]
        for name, addr, server in specs:
            http = free_port(addr)
            self.http[name] = f"{addr}:{http}"
            args = [CONSUL, "agent", "-node", f"{name}-{x}", "-data-dir", str(base / name), "-bind", addr,
                    "-client", addr, "-http-port", str(http), "-server-port", str(free_port(addr)),
                    "-serf-lan-port", str(serf[name][1]), "-serf-wan-port", "-1", "-dns-port", "-1",
                    "-grpc-port", "-1", "-grpc-tls-port", "-1", "-https-port", "-1", "-retry-interval", "1s",
                    "-log-level", "warn", "-hcl", AGENT_HCL]
            if server:
                args += ["-server", "-bootstrap-expect", "3", "-hcl", "performance { raft_multiplier = 1 }"]
            for j in joins:
                if j != f"{addr}:{serf[name][1]}":
                    args += ["-retry-join", j]
            log = open(base / f"{name}.log", "w")
            self.procs[name] = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        t = time.monotonic()
        for name, addr in self.http.items():
            while True:
                try:
                    if len(get(addr, "/v1/status/leader", 2)) > 2 and (
                            name.startswith("server") or get(addr, "/v1/agent/self", 2)["Member"]["Status"] == 1):
                        break
                except OSError:
                    pass
                if time.monotonic() - t > 90:
                    raise SystemExit(f"scale: consul {name} not ready in 90 s; see {base}/{name}.log")
                time.sleep(0.2)
        self.clients = [a for n, a in self.http.items() if n.startswith("client")]
        self.server = self.http["server0"]

    def count(self, passing):
        q = "?passing=1" if passing else ""
        path = f"/v1/health/service/{SERVICE}{q}" if passing else f"/v1/catalog/service/{SERVICE}"
        return len(get(self.server, path, 30))

    def stop(self):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_secs(pid):
    """utime+stime of a process and of the children it reaped (/proc/PID/stat), seconds."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def mem_kib(pid):
    """(RSS, PSS) in KiB: RSS counts the shared pages of the one static binary in every pilot,
    PSS shares them out, so the sum of PSS is what N pilots really take."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    get_ = lambda k: next((int(l.split()[1]) for l in rollup if l.startswith(k)), 0)
    return get_("Rss:"), get_("Pss:")


def children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_count(consul, want, passing, limit):
    """Seconds until the catalog holds `want` instances (passing ones if `passing`), or None;
    and the samples (seconds, count) on the way."""
    t = time.monotonic()
    samples = []
    while True:
        try:
            n = consul.count(passing)
        except OSError:
            n = -1
        el = time.monotonic() - t
        samples.append((round(el, 1), n))
        if n == want:
            return el, samples
        if el > limit:
            return None, samples
        time.sleep(0.5)


def launch(consul, work, cfg):
    pilots = []
    t = time.monotonic()
    for i in range(N):
        env = dict(os.environ, SCALE_I=str(i), SCALE_AGENT=consul.clients[i % len(consul.clients)])
        with open(work / f"pilot-{i}.log", "w") as log:
            p = subprocess.Popen([PILOT, "run", "-c", str(cfg)], env=env, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log)
        p.started = time.monotonic()
        pilots.append(p)
    return pilots, time.monotonic() - t


def stop(pilots, sig):
    """Signal each pilot (os.kill: Popen's methods may reap a pilot before wait4 sees it)."""
    for p in pilots:
        p.stopped = time.monotonic()
        os.kill(p.pid, sig)


def reap(pilots, leftovers=()):
    """Wait for every pilot; (mean CPU seconds of a whole life: all threads and the reaped health
    checks, from wait4's rusage at microsecond precision, and mean checks in that life)."""
    cpu, checks = 0.0, 0
    for p in pilots:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu += ru.ru_utime + ru.ru_stime
        checks += int((p.stopped - p.started) // INTERVAL)
    for pid in leftovers:  # the jobs of SIGKILLed pilots (their own process groups)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    return cpu / max(1, len(pilots)), checks / max(1, len(pilots))


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    if pid_max < N * 20:
        print(f"scale: pid_max {pid_max} may be too small for {N} pilots (about 15 threads each)", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="pilot-scale-"))
    r = {"n": N, "interval_s": INTERVAL, "ttl_s": TTL, "deregister_critical_after": DEREG, "agent_hcl": AGENT_HCL,
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(), "pid_max": pid_max,
         "threads_max": threads_max, "note": os.environ.get("BENCH_NOTE", "")}
    cfg = work / "scale.json5"
    cfg.write_text(f'''{{
  consul: "{{{{ .SCALE_AGENT }}}}",
  control: {{ socket: "{work}/p-{{{{ .SCALE_I }}}}.sock" }},
  jobs: [ {{ name: "{SERVICE}", exec: ["/bin/sleep", "100000"], port: 8080, interfaces: ["static:127.0.0.1"],
    health: {{ exec: "/bin/true", interval: {INTERVAL}, ttl: {TTL} }},
    consul: {{ deregisterCriticalServiceAfter: "{DEREG}" }} }} ]
}}
''')
    t0 = time.monotonic()
    consul = Consul(work)
    r["cluster_start_s"] = round(time.monotonic() - t0, 1)
    pilots = []
    try:
        # Round 1: start N, wait until all pass, measure a steady window, stop all with SIGTERM.
        pilots, r["launch_s"] = launch(consul, work, cfg)
        el, samples = wait_count(consul, N, True, WAIT_LIMIT)
        r["all_passing_s"] = None if el is None else round(el + r["launch_s"], 1)
        r["passing_samples"] = samples[:: max(1, len(samples) // 40)]
        if el is None:
            r["passing_at_limit"] = samples[-1][1]
        live = [p for p in pilots if p.poll() is None]
        r["pilots_alive"] = len(live)
        agents = consul.procs
        a0 = {n: cpu_secs(p.pid) for n, p in agents.items()}
        t = time.monotonic()
        time.sleep(STEADY)
        el = time.monotonic() - t
        a1 = {n: cpu_secs(p.pid) for n, p in agents.items()}
        mems = [mem_kib(p.pid) for p in live]
        r["steady"] = {
            "seconds": round(el, 1),
            "pilots_rss_mib": round(sum(m[0] for m in mems) / 1024, 1),
            "pilots_pss_mib": round(sum(m[1] for m in mems) / 1024, 1),
            "pilot_pss_kib_each": round(sum(m[1] for m in mems) / max(1, len(mems))),
            "servers_cpu_percent": round(sum(a1[n] - a0[n] for n in a1 if n.startswith("server")) / el * 100, 1),
            "clients_cpu_percent": round(sum(a1[n] - a0[n] for n in a1 if n.startswith("client")) / el * 100, 1),
            "agents_rss_mib": {n: round(mem_kib(p.pid)[0] / 1024, 1) for n, p in agents.items()},
            "passing_now": consul.count(True),
        }
        t = time.monotonic()
        stop(live, signal.SIGTERM)
        gone, samples = wait_count(consul, 0, False, WAIT_LIMIT)
        life1 = reap(live)
        r["sigterm"] = {"all_gone_s": None if gone is None else round(gone, 1),
                        "stale_after_limit": None if gone is not None else samples[-1][1],
                        "pilots_exit_s": round(time.monotonic() - t, 1),
                        "samples": samples[:: max(1, len(samples) // 20)]}

        # Round 2: start N again; when all pass, SIGKILL half and SIGTERM the other half.
        pilots, launch2 = launch(consul, work, cfg)
        el, _ = wait_count(consul, N, True, WAIT_LIMIT)
        r["round2_all_passing_s"] = None if el is None else round(el + launch2, 1)
        killed = pilots[::2]
        termed = pilots[1::2]
        leftovers = [c for p in killed for c in children(p.pid)]
        t = time.monotonic()
        stop(killed, signal.SIGKILL)
        stop(termed, signal.SIGTERM)
        samples = []
        first_half = None
        while time.monotonic() - t < WAIT_LIMIT:
            n = consul.count(False)
            el = round(time.monotonic() - t, 1)
            samples.append((el, n))
            if first_half is None and n <= len(killed):
                first_half = el
            if n == 0:
                break
            time.sleep(1)
        reap(killed, leftovers)
        life2 = reap(termed)
        # Whole lives with more checks (round 1) and fewer (round 2's SIGTERMed half): start-up
        # and shutdown cancel out of the difference, which is the checks' (and TTL updates').
        per_check = (life1[0] - life2[0]) / max(1e-9, life1[1] - life2[1])
        r["pilot_cpu"] = {"round1_life_ms": round(life1[0] * 1e3, 2), "round1_checks": round(life1[1], 2),
                          "round2_life_ms": round(life2[0] * 1e3, 2), "round2_checks": round(life2[1], 2),
                          "ms_per_check": round(per_check * 1e3, 3),
                          "steady_cpu_percent_all": round(per_check * r["pilots_alive"] / INTERVAL * 100, 2)}
        r["sigkill_half"] = {"killed": len(killed), "termed": len(termed),
                             "stale_right_after_sigterms_s": first_half,
                             "stale_max": max((n for _, n in samples if _ >= (first_half or 0)), default=None),
                             "all_gone_s": samples[-1][0] if samples and samples[-1][1] == 0 else None,
                             "stale_at_end": samples[-1][1] if samples else None,
                             "samples": samples[:: max(1, len(samples) // 30)]}
    finally:
        for p in pilots:
            if p.poll() is None:
                p.kill()
                p.wait()
        consul.stop()
        r["total_s"] = round(time.monotonic() - t0)
        if os.environ.get("SCALE_KEEP") == "1":
            print(f"scale: logs and data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
