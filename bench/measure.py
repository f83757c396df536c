#!/usr/bin/env python3
"""pilot's benchmarks against the peer inits and ContainerPilot 3.8.0, in one run, side by side
(bench/run.sh sets up the inputs). Absolute times are noisy on a shared machine: read the ratios.
BENCH_ONLY=startup,memory,signals,reaping,cpu,latency,consul runs a subset.

Writes bench/results/results.json, results.md and chart.png."""
import json, os, platform, signal, socket, statistics, subprocess, sys, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import agent  # noqa: E402
import procstat  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
PILOT = os.environ["PILOT_BIN"]
CONSUL = os.environ["CONSUL_BIN"]
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/pilot-bench"))
QUICK = os.environ.get("BENCH_QUICK") == "1"
# ContainerPilot 3.8.0, the system pilot replaces (bench/run.sh finds or builds it; absent: the
# rows it applies to say so). It is not a `-- CMD` init: it runs the same config files as pilot.
CP = os.environ.get("CONTAINERPILOT_BIN") or None
# pilot (and ContainerPilot) take a config path from these: a bench's `INIT -- CMD` has none.
for var in ("CONTAINERPILOT", "PILOT_CONFIG"):
    os.environ.pop(var, None)

# How each init runs a payload when it is not PID 1 (tini needs -s to reap as subreaper).
INITS = {
    "pilot": [PILOT, "run", "--"],
    "tini": ["/usr/bin/tini", "-s", "--"],
    "tini-static": ["/usr/bin/tini-static", "-s", "--"],
    "dumb-init": ["/usr/bin/dumb-init"],
    "catatonit": ["/usr/bin/catatonit", "--"],
}
# A previous pilot build (PILOT_BASELINE=/path/to/pilot) measured beside the current one, so a
# change's before/after figures come from one run on one machine.
BASELINE = os.environ.get("PILOT_BASELINE")
if BASELINE:
    INITS["pilot-baseline"] = [BASELINE, "run", "--"]
PEERS = [k for k in INITS if k != "pilot"]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def size():
    out = {}
    paths = {name: argv[0] for name, argv in INITS.items()}
    if CP:
        paths["containerpilot"] = CP
    for name, path in paths.items():
        kind = subprocess.run(["file", "-b", path], capture_output=True, text=True).stdout
        out[name] = {"bytes": os.path.getsize(path), "static": "static" in kind}
    return out


def startup_once(runs, cfg):
    """Median wall time of `INIT -- true` minus that of a bare `true`; pilot and ContainerPilot
    also with the same config of one `/bin/true` job (`NAME (config)`). The programs take turns
    run by run, so a burst of other work on the machine falls on all of them alike."""
    cases = {"true_ms": ["/bin/true"]}
    cases.update({n: a + ["/bin/true"] for n, a in INITS.items()})
    cases.update({f"{n} (config)": a for n, a in runners(cfg).items()})
    times = {n: [] for n in cases}
    for _ in range(runs):
        for n, argv in cases.items():
            t = time.perf_counter()
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[n].append(time.perf_counter() - t)
    base = median(times.pop("true_ms"))
    out = {"true_ms": base * 1e3}
    out.update({n: {"overhead_ms": (median(ts) - base) * 1e3} for n, ts in times.items()})
    return out


def startup(runs):
    """Start-up on a quiet machine and with the other core busy (`yes` pinned to CPU 1), each
    with the benchmarked programs unpinned and pinned to CPU 0."""
    cfg = config('{ name: "app", exec: "/bin/true" }')
    out = {}
    cpus = sorted(os.sched_getaffinity(0))
    for load in ("quiet", "other core busy"):
        hog = None
        if load != "quiet":
            hog = subprocess.Popen(["taskset", "-c", str(cpus[-1]), "yes"], stdout=subprocess.DEVNULL)
        try:
            for pin in ("not pinned", "pinned"):
                if pin == "pinned":
                    os.sched_setaffinity(0, {cpus[0]})
                try:
                    out[f"{load}, {pin}"] = startup_once(runs, cfg)
                finally:
                    os.sched_setaffinity(0, cpus)
        finally:
            if hog:
                hog.kill()
                hog.wait()
    return out


def rss_of(pid):
    """VmRSS and VmHWM of a process, in KiB."""
    st = Path(f"/proc/{pid}/status").read_text()
    get = lambda k: int(next(l.split()[1] for l in st.splitlines() if l.startswith(k)))
    return get("VmRSS:"), get("VmHWM:")


def context_switches(pid):
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for l in (task / "status").read_text().splitlines():
            if l.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(l.split()[1])
    return total


_configs = 0


def config(jobs, consul=None, extra=""):
    """A ContainerPilot v3 config that pilot and ContainerPilot both run unchanged: its own
    control socket (instances run side by side), `stopTimeout: -1` (ContainerPilot otherwise
    sleeps its whole stopTimeout after the jobs are done, its #479; pilot treats it as 0), and a
    `consul` address (ContainerPilot requires one; with no `port` neither talks to it)."""
    global _configs
    _configs += 1
    path = WORK / f"cfg-{_configs}.json5"
    agent = f"127.0.0.1:{consul}" if consul else "127.0.0.1:1"
    path.write_text(f'{{ consul: "{agent}", stopTimeout: -1, control: {{ socket: "{WORK}/cfg-{_configs}.sock" }},{extra}\n'
                    f'  jobs: [ {jobs} ] }}\n')
    return path


def runners(cfg):
    """The programs that run a config: pilot (and the baseline), and ContainerPilot if present."""
    out = {"pilot": [PILOT, "run", "-c", str(cfg)]}
    if BASELINE:
        out["pilot-baseline"] = [BASELINE, "run", "-c", str(cfg)]
    if CP:
        out["containerpilot"] = [CP, "-config", str(cfg)]
    return out


def service_job(name, port=True, check=None, interval=1, ttl=5, sleep="1000"):
    health = check or '"/bin/true"'
    svc = f', port: 8080, interfaces: ["static:127.0.0.1"]' if port else ""
    return f'{{ name: "{name}", exec: ["/bin/sleep", "{sleep}"]{svc}, health: {{ exec: {health}, interval: {interval}, ttl: {ttl} }} }}'


def memory_and_idle(idle_secs, consul_http):
    """RSS in each scenario: one sleeping payload (the inits with `-- sleep`, pilot also
    without a config: its embedded default; pilot and ContainerPilot with a config of one
    sleeping job), then the same job with a health check every second, then also registered in
    Consul. Idle wakeups/s (context switches of all threads) with nothing due."""
    out = {}
    scenarios = {"sleeping job": {n: a + ["/bin/sleep", "1000"] for n, a in INITS.items()}}
    sleeping = config('{ name: "app", exec: ["/bin/sleep", "1000"] }')
    scenarios["sleeping job"].update({f"{n} (config)": a for n, a in runners(sleeping).items()})
    scenarios["+ health check"] = runners(config(service_job("app", port=False)))
    scenarios["+ health check + Consul"] = runners(config(service_job("rss-app"), consul_http))
    for scen, cases in scenarios.items():
        out[scen] = {}
        for name, argv in cases.items():
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(3)
            if p.poll() is not None:
                raise RuntimeError(f"{scen}: {name}: {argv} exited ({p.returncode}): {p.stderr.read().decode()[-500:]}")
            # The median of RSS over 3 s (every 50 ms, not in step with the checks): one reading
            # depends on whether it falls before or after a check, or just after pilot gave its
            # code back (2 s after start), by up to 1.5 MiB.
            samples = []
            while len(samples) < 60:
                samples.append(rss_of(p.pid)[0])
                time.sleep(0.05)
            hwm = rss_of(p.pid)[1]
            entry = {"rss_kib": median(samples), "rss_max_kib": max(samples), "peak_kib": hwm,
                     "threads": len(list(Path(f"/proc/{p.pid}/task").iterdir()))}
            if scen == "sleeping job":
                c0 = context_switches(p.pid)
                time.sleep(idle_secs)
                entry["wakeups_per_s"] = (context_switches(p.pid) - c0) / idle_secs
            p.terminate()
            p.communicate()
            out[scen][name] = entry
    return out


def own_cpu(pid):
    """See procstat.own_run_ns."""
    return procstat.own_run_ns(pid) / 1e9


def reap_cpu(p):
    """Stop a process and reap it: the CPU seconds (user+system, microsecond precision) of its
    whole life, all its threads and every child it reaped (the health checks) included. wait4's
    rusage rather than /proc/PID/stat, whose clock ticks (10 ms) are coarser than a check.
    Also its own CPU (without its children) just before it is stopped."""
    if p.returncode is not None:
        raise RuntimeError(f"{p.args}: ended early ({p.returncode})")
    own = own_cpu(p.pid)
    os.kill(p.pid, signal.SIGTERM)  # not p.terminate(): it may reap the process (poll) first
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime, own


def check_alone(argv, runs):
    """The check program's own CPU (ms per run), run alone `runs` times: the children's rusage
    of this process, so the cost of starting it (fork, exec in the parent) is not included.
    What any supervisor pays for `exec: argv` on top of its own work."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        pid = os.posix_spawn(argv[0], argv, os.environ)
        os.waitpid(pid, 0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / runs * 1e3


def cpu_per_check(short, long, instances, consul_http):
    """CPU per health check of the whole process, the check included (and the process's own,
    without the reaped checks: `own_`): `instances` copies of each
    program with a check every second live `short` seconds, as many live `long` seconds; the
    difference of their CPU over the difference of their checks is the cost of one check (start-up
    and shutdown cancel out). Without a service (no Consul traffic), then with one (a TTL update
    per check): the difference of the two is the cost of a TTL update."""
    # Every copy of every program in both scenarios lives at the same time, so other work on the
    # machine weighs on all of them alike.
    groups = {}
    for scen, port in (("without Consul", False), ("with Consul", True)):
        for prog in runners(config(service_job("x", port=False))):
            for g, life in enumerate((short, long)):
                for i in range(instances):
                    job = service_job(f"cpu-{prog.replace('-', '')[:10]}-{int(port)}{g}-{i}-{os.getpid()}", port=port)
                    argv = runners(config(job, consul_http if port else None))[prog]
                    groups.setdefault((life, scen, prog), []).append(
                        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    t0 = time.monotonic()
    cpu, own = {}, {}
    for key, procs in sorted(groups.items(), key=lambda kv: kv[0][0]):
        time.sleep(max(0, t0 + key[0] - time.monotonic()))
        both = [reap_cpu(p) for p in procs]
        cpu[key] = sum(b[0] for b in both) / instances
        own[key] = sum(b[1] for b in both) / instances
    out = {}
    for _, scen, prog in groups:
        per_check = (cpu[long, scen, prog] - cpu[short, scen, prog]) / (long - short)
        own_per_check = (own[long, scen, prog] - own[short, scen, prog]) / (long - short)
        out.setdefault(scen, {})[prog] = {"checks": instances * (long - short), "ms_per_check": per_check * 1e3,
                                          "own_ms_per_check": own_per_check * 1e3,
                                          "short_life_cpu_ms": cpu[short, scen, prog] * 1e3}
    for prog in out["with Consul"]:
        for k in ("", "own_"):
            out["with Consul"][prog][f"{k}ttl_update_ms"] = (out["with Consul"][prog][f"{k}ms_per_check"]
                                                            - out["without Consul"][prog][f"{k}ms_per_check"])
    return out


def http_json(port, path):
    import urllib.request
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5))


def wait_until(pred, limit, step=0.005):
    t = time.perf_counter()
    while time.perf_counter() - t < limit:
        if pred():
            return time.perf_counter()
        time.sleep(step)
    return None


def site_latencies(runs, consul_http, ttl):
    """What a site sees in Consul's catalog, per program, over `runs` runs of one service
    (health check every second, TTL `ttl` s): start -> passing; the check starts failing ->
    critical; SIGTERM -> gone from the catalog. Seconds, p50 and p90."""
    out = {}
    for prog in list(runners(config(service_job("x", port=False)))):
        lat = {"start_to_passing": [], "failing_to_critical": [], "sigterm_to_gone": []}
        failures = []
        for i in range(runs):
            name = f"lat-{prog.replace('-', '')[:10]}-{i}-{os.getpid()}"
            flag = WORK / f"{name}.fail"
            flag.unlink(missing_ok=True)
            check = f'["/usr/bin/test", "!", "-e", "{flag}"]'
            argv = runners(config(service_job(name, check=check, ttl=ttl), consul_http))[prog]
            passing = lambda: len(http_json(consul_http, f"/v1/health/service/{name}?passing=1")) > 0
            critical = lambda: any(c["Status"] == "critical" for c in http_json(consul_http, f"/v1/health/checks/{name}"))
            gone = lambda: len(http_json(consul_http, f"/v1/catalog/service/{name}")) == 0
            t0 = time.perf_counter()
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                t1 = wait_until(passing, 30)
                if t1 is None:
                    raise RuntimeError(f"{prog}: {name} never passing")
                lat["start_to_passing"].append(t1 - t0)
                flag.touch()
                t2 = time.perf_counter()
                t3 = wait_until(critical, 30)
                if t3 is None:
                    raise RuntimeError(f"{prog}: {name} never critical")
                lat["failing_to_critical"].append(t3 - t2)
                flag.unlink()
                wait_until(passing, 30)
                t4 = time.perf_counter()
                p.terminate()
                t5 = wait_until(gone, 30)
                if t5 is None:
                    raise RuntimeError(f"{prog}: {name} still in the catalog 30 s after SIGTERM")
                lat["sigterm_to_gone"].append(t5 - t4)
            except RuntimeError as e:  # counted and shown, not the end of the whole bench
                failures.append(str(e))
            finally:
                p.terminate()
                p.wait()
        out[prog] = {k: {"p50_s": pct(v, 50) if v else float("nan"), "p90_s": pct(v, 90) if v else float("nan"),
                         "runs": len(v)} for k, v in lat.items()}
        out[prog]["failures"] = failures
    return out


def signal_latency(count):
    """Send SIGUSR1 to the init; the payload stamps its arrival. p50/p99 in microseconds."""
    out = {}
    for name, argv in INITS.items():
        p = subprocess.Popen(argv + [str(WORK / "sigpayload")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout.readline().strip() == "ready"
        lat = []
        for _ in range(count):
            t = time.monotonic_ns()
            os.kill(p.pid, signal.SIGUSR1)
            got = int(p.stdout.readline())
            lat.append((got - t) / 1e3)
        p.terminate()
        p.wait()
        out[name] = {"p50_us": pct(lat, 50), "p99_us": pct(lat, 99)}
    return out


def reaping(n):
    """Create and reap n orphans as PID 1 of a new PID namespace; seconds. ContainerPilot (and
    pilot beside it) run the payload as a config job writing straight to stdout."""
    out = {}
    cases = {name: argv + [str(WORK / "orphans"), str(n)] for name, argv in INITS.items()}
    cfg = config(f'{{ name: "app", exec: ["{WORK}/orphans", "{n}"], logging: {{ raw: true }} }}')
    cases.update({f"{k} (config)": v for k, v in runners(cfg).items() if k != "pilot-baseline"})
    for name, argv in cases.items():
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc"] + argv, capture_output=True, text=True, timeout=600)
        nums = [l for l in r.stdout.strip().splitlines() if l.replace(".", "", 1).isdigit()]
        out[name] = {"seconds": float(nums[-1])}
    return out


class CountingProxy:
    """A TCP proxy in front of the agent that counts connections and HTTP requests."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            with self.lock:
                self.connections += 1
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pipe, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c, False), daemon=True).start()

    def pipe(self, src, dst, count):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    n = sum(data.count(m) for m in (b"GET /", b"PUT /", b"POST /"))
                    with self.lock:
                        self.requests += n
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def start_agent():
    return agent.start_agent(CONSUL, "bench")


def services(http):
    import urllib.request
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/agent/services"))


def consul_load(secs, churn, http):
    """pilot's requests and connections per TTL refresh (through a counting proxy), and a churn
    of short-lived pilots against the agent on port `http`."""
    proxy = CountingProxy(http)
    result = {}
    for prog, argv in runners(config(service_job("bench-app"), proxy.port)).items():
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)  # registered, steady state
        with proxy.lock:
            r0, c0 = proxy.requests, proxy.connections
        time.sleep(secs)
        with proxy.lock:
            r1, c1 = proxy.requests, proxy.connections
        rss, hwm = rss_of(p.pid)
        p.terminate()
        p.wait()
        result[prog] = {"requests_per_interval": (r1 - r0) / secs, "new_connections_per_interval": (c1 - c0) / secs,
                        "rss_kib": rss, "peak_kib": hwm}

    # Churn: short-lived pilots, 20 at a time, registering at once (initial_status).
    ccfg = WORK / "churn.json5"
    ccfg.write_text(f'''{{ consul: "127.0.0.1:{http}", jobs: [ {{ name: "churn", exec: "sleep 0.5", port: 8080, initial_status: "passing",
        interfaces: ["static:127.0.0.1"], health: {{ exec: "true", interval: 10, ttl: 30 }} }} ] }}''')
    t = time.perf_counter()
    done, live = 0, []
    while done < churn:
        while len(live) < 20 and done + len(live) < churn:
            live.append(subprocess.Popen([PILOT, "run", "-c", str(ccfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        live[0].wait()
        live.pop(0)
        done += 1
    elapsed = time.perf_counter() - t
    stale = [s for s in services(http).values() if s["Service"] == "churn"]
    result["churn"] = {"pilots": churn, "seconds": elapsed, "stale_registrations": len(stale)}
    return result


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    mem = next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(int(mem) / 2**20, 1), "kernel": platform.release()}


def main():
    WORK.mkdir(parents=True, exist_ok=True)
    r = {"machine": machine(), "containerpilot": os.environ.get("CP_STATUS", "not attempted"),
         "note": os.environ.get("BENCH_NOTE", "")}
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    want = lambda k: not only or k in only
    t0 = time.monotonic()
    agent, http = start_agent()
    try:
        r["size"] = size()
        if want("startup"):
            r["startup"] = startup(30 if QUICK else 150)
        if want("memory"):
            r["memory_idle"] = memory_and_idle(2 if QUICK else 10, http)
        if want("signals"):
            r["signals"] = signal_latency(100 if QUICK else 1000)
        if want("reaping"):
            r["reaping"] = reaping(1000 if QUICK else 10000)
        if want("cpu"):
            r["cpu_per_check"] = cpu_per_check(2.5, 6.5 if QUICK else 20.5, 4 if QUICK else 8, http)
            r["check_program_alone_ms"] = check_alone(["/bin/true"], 500 if QUICK else 2000)
        if want("latency"):
            r["latency"] = site_latencies(3 if QUICK else 20, http, ttl=3)
            r["latency_config"] = {"interval_s": 1, "ttl_s": 3}
        if want("consul"):
            r["consul"] = consul_load(3 if QUICK else 10, 20 if QUICK else 200, http)
    finally:
        agent.terminate()
        agent.wait()
    r["bench_seconds"] = round(time.monotonic() - t0)
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
