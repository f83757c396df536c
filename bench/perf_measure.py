#!/usr/bin/env python3
"""Runtime figures of issue 14 for one or more pilot builds beside tini-static and
ContainerPilot: RSS (with the anonymous/file split and the thread count) per scenario,
start-up overhead (quiet and with the other core busy, pinned and not), CPU per health
check (whole process incl. reaped children, from /proc/PID/stat), signal delivery latency.

    PILOTS="before=/tmp/pilot-old after=target/x86_64-unknown-linux-musl/release/pilot" \
    CP_BIN=/path/to/containerpilot CONSUL_BIN=/path/to/consul \
    python3 bench/perf_measure.py [rss|startup|cpu|signals ...]

Every figure is the median of REPEAT runs (default 3): the machine is shared, so read the
medians and the ratios. Prints one JSON document. Not a replacement for bench/measure.py:
a focused tool for before/after comparisons of pilot's run-time costs. (ContainerPilot's
path is CP_BIN, not CONTAINERPILOT: pilot reads $CONTAINERPILOT as its config file.)"""
import json, os, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(tempfile.mkdtemp(prefix="pilot-perf-"))
REPEAT = int(os.environ.get("REPEAT", "3"))
PILOTS = dict(p.split("=", 1) for p in os.environ.get("PILOTS", "").split())
CP = os.environ.get("CP_BIN")
TINI = os.environ.get("TINI", "/usr/bin/tini-static")
CONSUL = os.environ.get("CONSUL_BIN") or str(Path.home() / ".cache/pilot/consul-v1.16.1/consul")
CLK = os.sysconf("SC_CLK_TCK")
# The check's program (CHECK_EXEC=/path/to/static-noop to see the supervisors' own cost)
# and interval in seconds (CHECK_INTERVAL); RSS is the median of readings over the 2 s
# before RSS_SECS after start; SCEN keeps
# only the scenarios whose name contains it.
CHECK_EXEC = os.environ.get("CHECK_EXEC", "true")
RSS_SECS = float(os.environ.get("RSS_SECS", "5"))
SCEN = os.environ.get("SCEN", "")
med = statistics.median


def status(pid):
    st = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        st[k] = v.split()[0] if v.split() else ""
    return {"rss_kib": int(st["VmRSS"]), "anon_kib": int(st["RssAnon"]), "file_kib": int(st["RssFile"]),
            "threads": int(st["Threads"])}


CGROUP = Path("/sys/fs/cgroup/cpuacct")


def cpu_ns(pid):
    """CPU time of the process and everything below it, in ns: its own cgroup's
    cpuacct.usage when cgroup v1's cpuacct is writable (ns-exact, includes the checks
    still running), else /proc/PID/stat's utime+stime+cutime+cstime (clock ticks: the
    process and the children it reaped)."""
    cg = CGROUP / f"pilot-perf-{pid}"
    if cg.exists():
        return int((cg / "cpuacct.usage").read_text())
    s = Path(f"/proc/{pid}/stat").read_text()
    f = s[s.rfind(")") + 2:].split()
    return sum(int(x) for x in f[11:15]) * 10**9 // CLK


def own_cgroup(pid):
    try:
        cg = CGROUP / f"pilot-perf-{pid}"
        cg.mkdir()
        (cg / "cgroup.procs").write_text(str(pid))
    except OSError:
        pass


def drop_cgroup(pid):
    try:
        (CGROUP / f"pilot-perf-{pid}").rmdir()
    except OSError:
        pass


def write(name, text):
    p = WORK / name
    p.write_text(text)
    return str(p)


def cp_argv(cfg):
    return [CP, "-config", cfg]


sys.path.insert(0, str(Path(__file__).resolve().parent))
import agent  # noqa: E402
import procstat  # noqa: E402


def start_agent():
    return agent.start_agent(CONSUL, "perf")


def configs(consul_port):
    """The same config text for pilot and ContainerPilot (each gets its own control socket)."""
    consul = f"127.0.0.1:{consul_port}" if consul_port else "127.0.0.1:1"
    interval = int(os.environ.get("CHECK_INTERVAL", "1"))
    health = f'health: {{ exec: "{CHECK_EXEC}", interval: {interval}, ttl: {max(5, 3 * interval)} }}'
    reg = 'port: 8080, interfaces: ["static:127.0.0.1"],' if consul_port else ""
    return {
        "sleep": f'{{ consul: "{consul}", jobs: [ {{ name: "app", exec: "sleep 1000" }} ] }}',
        "health": f'{{ consul: "{consul}", jobs: [ {{ name: "app", exec: "sleep 1000", {reg} {health} }} ] }}',
    }


def cp_config(text, tag):
    # ContainerPilot's default socket is a fixed path: give each run its own.
    return text.replace("jobs:", f'control: {{ socket: "{WORK}/cp-{tag}.sock" }}, jobs:', 1)


def scenarios(agent_port):
    """name -> {program: argv}"""
    c = configs(None)
    out = {"embedded (-- sleep)": {n: [p, "run", "--", "/bin/sleep", "1000"] for n, p in PILOTS.items()},
           "one sleeping job (config)": {n: [p, "run", "-c", write("sleep.json5", c["sleep"])] for n, p in PILOTS.items()},
           "health check, no Consul": {n: [p, "run", "-c", write("health.json5", c["health"])] for n, p in PILOTS.items()}}
    out["embedded (-- sleep)"]["tini-static"] = [TINI, "-s", "--", "/bin/sleep", "1000"]
    if CP:
        out["embedded (-- sleep)"]["containerpilot"] = cp_argv(write("cp-sleep.json5", cp_config(c["sleep"], "s")))
        out["one sleeping job (config)"]["containerpilot"] = cp_argv(write("cp-sleep.json5", cp_config(c["sleep"], "s")))
        out["health check, no Consul"]["containerpilot"] = cp_argv(write("cp-health.json5", cp_config(c["health"], "h")))
    if agent_port:
        c = configs(agent_port)
        name = "health check + Consul"
        out[name] = {n: [p, "run", "-c", write("consul.json5", c["health"])] for n, p in PILOTS.items()}
        if CP:
            out[name]["containerpilot"] = cp_argv(write("cp-consul.json5", cp_config(c["health"], "c")))
    return out


def run_for(argv, secs, probe):
    log = open(WORK / "last.log", "w")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    own_cgroup(p.pid)
    try:
        return probe(p.pid, secs)
    except (FileNotFoundError, KeyError, ProcessLookupError):
        raise SystemExit(f"{argv} exited early: {(WORK / 'last.log').read_text()[-2000:]}")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        time.sleep(0.2)
        drop_cgroup(p.pid)


def rss(agent_port):
    out = {}
    for scen, progs in scenarios(agent_port).items():
        if SCEN not in scen:
            continue
        out[scen] = {}
        for name, argv in progs.items():
            def probe(pid, secs):
                # Each field's median over 2 s of readings every 50 ms: one reading falls
                # before or after a check (or pilot's trim of its code) and moves by 1.5 MiB.
                time.sleep(max(0, secs - 2))
                readings = []
                for _ in range(40):
                    readings.append(status(pid))
                    time.sleep(0.05)
                return {k: med([r[k] for r in readings]) for k in readings[0]}
            runs = [run_for(argv, RSS_SECS, probe) for _ in range(REPEAT)]
            out[scen][name] = {k: med([r[k] for r in runs]) for k in runs[0]}
    return out


def cpu_per_check(agent_port, secs=int(os.environ.get("CHECK_SECS", "20"))):
    """CPU (ms) per health check of interval CHECK_INTERVAL (1 s), whole process incl. the
    checks, and the process's own (without its children), over `secs`."""
    out = {}
    for scen, progs in scenarios(agent_port).items():
        if "health" not in scen or SCEN not in scen:
            continue
        out[scen] = {}
        for name, argv in progs.items():
            def probe(pid, s):
                time.sleep(3)  # started, registered: steady state
                t0, o0 = cpu_ns(pid), own_ns(pid)
                time.sleep(s)
                n = s / int(os.environ.get("CHECK_INTERVAL", "1"))
                return (cpu_ns(pid) - t0) / 1e6 / n, (own_ns(pid) - o0) / 1e6 / n
            runs = [run_for(argv, secs, probe) for _ in range(REPEAT)]
            out[scen][name] = {"ms_per_check": med([r[0] for r in runs]), "own_ms_per_check": med([r[1] for r in runs])}
    return out


def own_ns(pid):
    """See procstat.own_run_ns."""
    return procstat.own_run_ns(pid)


def startup(runs=int(os.environ.get("STARTUP_RUNS", "200"))):
    """Median wall time of `INIT -- /bin/true` minus a bare /bin/true's, in ms, in four
    conditions: quiet or with `yes` pinned to CPU 1; the init unpinned or pinned to CPU 0."""
    inits = {n: [p, "run", "--"] for n, p in PILOTS.items()}
    inits["tini-static"] = [TINI, "-s", "--"]
    out = {}
    for busy in (False, True):
        hog = subprocess.Popen(["taskset", "-c", "1", "yes"], stdout=subprocess.DEVNULL) if busy else None
        try:
            for pinned in (False, True):
                cond = f"{'busy' if busy else 'quiet'}, {'pinned' if pinned else 'not pinned'}"
                def timed(argv):
                    if pinned:
                        os.sched_setaffinity(0, {0})
                    try:
                        ts = []
                        for _ in range(runs):
                            t = time.perf_counter()
                            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                            ts.append(time.perf_counter() - t)
                        return med(ts)
                    finally:
                        os.sched_setaffinity(0, set(range(os.cpu_count())))
                reps = []
                for _ in range(REPEAT):
                    base = timed(["/bin/true"])
                    reps.append({n: (timed(a + ["/bin/true"]) - base) * 1e3 for n, a in inits.items()})
                out[cond] = {n: {"overhead_ms": med([r[n] for r in reps])} for n in inits}
        finally:
            if hog:
                hog.kill()
                hog.wait()
    return out


def signals(count=int(os.environ.get("SIGNALS", "1000"))):
    payload = WORK / "sigpayload"
    subprocess.run(["gcc", "-O2", "-o", str(payload), str(HERE / "sigpayload.c")], check=True)
    inits = {n: [p, "run", "--"] for n, p in PILOTS.items()}
    inits["tini-static"] = [TINI, "-s", "--"]
    out = {}
    for name, argv in inits.items():
        p50s, p99s = [], []
        for _ in range(REPEAT):
            p = subprocess.Popen(argv + [str(payload)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert p.stdout.readline().strip() == "ready"
            lat = []
            for _ in range(count):
                t = time.monotonic_ns()
                os.kill(p.pid, signal.SIGUSR1)
                lat.append((int(p.stdout.readline()) - t) / 1e3)
            p.terminate()
            p.wait()
            lat.sort()
            p50s.append(lat[len(lat) // 2])
            p99s.append(lat[int(len(lat) * 0.99)])
        out[name] = {"p50_us": med(p50s), "p99_us": med(p99s)}
    return out


def main():
    what = sys.argv[1:] or ["rss", "startup", "cpu", "signals"]
    r = {"repeat": REPEAT, "loadavg": os.getloadavg(), "check": CHECK_EXEC,
         "check_interval_s": int(os.environ.get("CHECK_INTERVAL", "1")), "rss_after_s": RSS_SECS}
    agent = None
    try:
        port = None
        if {"rss", "cpu"} & set(what) and Path(CONSUL).exists():
            agent, port = start_agent()
            time.sleep(2)
        if "rss" in what:
            r["rss"] = rss(port)
        if "cpu" in what:
            r["cpu_per_check"] = cpu_per_check(port)
        if "startup" in what:
            r["startup"] = startup()
        if "signals" in what:
            r["signals"] = signals()
    finally:
        if agent:
            agent.terminate()
            agent.wait()
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
