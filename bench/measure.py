#!/usr/bin/env python3
"""pilot's benchmarks against the peer inits, in one run, side by side (bench/run.sh sets up
the inputs). Absolute times are noisy on a shared machine: read the ratios.

Writes bench/results/results.json, results.md and chart.png."""
import json, os, platform, signal, socket, statistics, subprocess, sys, threading, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
PILOT = os.environ["PILOT_BIN"]
CONSUL = os.environ["CONSUL_BIN"]
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/pilot-bench"))
QUICK = os.environ.get("BENCH_QUICK") == "1"

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
    for name, argv in INITS.items():
        path = argv[0]
        kind = subprocess.run(["file", "-b", path], capture_output=True, text=True).stdout
        out[name] = {"bytes": os.path.getsize(path), "static": "static" in kind}
    return out


def startup(runs):
    """Median wall time of `INIT -- true` minus that of a bare `true`."""
    def timed(argv):
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ts.append(time.perf_counter() - t)
        return median(ts)
    base = timed(["/bin/true"])
    return {"true_ms": base * 1e3, **{n: {"overhead_ms": (timed(a + ["/bin/true"]) - base) * 1e3} for n, a in INITS.items()}}


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


def memory_and_idle(idle_secs):
    """RSS running one sleeping payload; pilot also with a health check every second and
    with Consul registration. Idle wakeups/s with nothing due (payload asleep, no timers)."""
    out = {}
    cfg = WORK / "health.json5"
    cfg.write_text('{ jobs: [ { name: "app", exec: "sleep 1000", health: { exec: "true", interval: 1, ttl: 5 } } ] }')
    cases = {n: a + ["/bin/sleep", "1000"] for n, a in INITS.items()}
    cases["pilot + health check"] = [PILOT, "run", "-c", str(cfg)]
    if BASELINE:
        cases["pilot-baseline + health check"] = [BASELINE, "run", "-c", str(cfg)]
    for name, argv in cases.items():
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        rss, hwm = rss_of(p.pid)
        entry = {"rss_kib": rss, "peak_kib": hwm}
        if "health" not in name:
            c0 = context_switches(p.pid)
            time.sleep(idle_secs)
            entry["wakeups_per_s"] = (context_switches(p.pid) - c0) / idle_secs
        p.terminate()
        p.wait()
        out[name] = entry
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
    """Create and reap n orphans as PID 1 of a new PID namespace; seconds."""
    out = {}
    for name, argv in INITS.items():
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc"] + argv + [str(WORK / "orphans"), str(n)], capture_output=True, text=True, timeout=600)
        out[name] = {"seconds": float(r.stdout.strip().splitlines()[-1])}
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_agent():
    http = free_port()
    args = [CONSUL, "agent", "-dev", "-node", f"bench-{http}", "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-http-port", str(http), "-server-port", str(free_port()), "-serf-lan-port", str(free_port()),
            "-serf-wan-port", "-1", "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-https-port", "-1"]
    agent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            import urllib.request
            if len(urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/status/leader").read()) > 4:
                return agent, http
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("consul agent did not start")


def services(http):
    import urllib.request
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/agent/services"))


def consul_load(secs, churn):
    agent, http = start_agent()
    try:
        proxy = CountingProxy(http)
        cfg = WORK / "consul.json5"
        cfg.write_text(f'''{{ consul: "127.0.0.1:{proxy.port}", jobs: [ {{ name: "bench-app", exec: "sleep 1000", port: 8080,
            interfaces: ["static:127.0.0.1"], health: {{ exec: "true", interval: 1, ttl: 5 }} }} ] }}''')
        p = subprocess.Popen([PILOT, "run", "-c", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)  # registered, steady state
        with proxy.lock:
            r0, c0 = proxy.requests, proxy.connections
        time.sleep(secs)
        with proxy.lock:
            r1, c1 = proxy.requests, proxy.connections
        rss, hwm = rss_of(p.pid)
        p.terminate()
        p.wait()
        result = {"requests_per_interval": (r1 - r0) / secs, "new_connections_per_interval": (c1 - c0) / secs, "rss_kib": rss, "peak_kib": hwm}

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
    finally:
        agent.terminate()
        agent.wait()


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    mem = next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(int(mem) / 2**20, 1), "kernel": platform.release()}


def main():
    WORK.mkdir(parents=True, exist_ok=True)
    n = 3 if QUICK else 1
    r = {"machine": machine(), "containerpilot": os.environ.get("CP_STATUS", "not attempted")}
    r["size"] = size()
    r["startup"] = startup(30 if QUICK else 300)
    r["memory_idle"] = memory_and_idle(2 if QUICK else 10)
    r["signals"] = signal_latency(100 if QUICK else 1000)
    r["reaping"] = reaping(1000 if QUICK else 10000)
    r["consul"] = consul_load(3 if QUICK else 10, 20 if QUICK else 200)
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
