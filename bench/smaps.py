#!/usr/bin/env python3
"""Where a running program's resident memory goes, from /proc/PID/smaps: each mapping put in
one class (program text, read-only data, relocated data (RELRO: .data.rel.ro and the GOT),
.data/.bss, the brk heap, the main stack, each thread's stack, other anonymous mappings:
malloc's mmap'd groups and large buffers), with Rss, Private and Anonymous KiB.

    python3 bench/smaps.py PID                 # one breakdown of a running process
    SCEN=health PILOT=path python3 bench/smaps.py run [SECS]

`run` starts the scenarios of bench/perf_measure.py's RSS table (a sleeping job, + a health
check every second, + Consul registration; CP_BIN adds ContainerPilot), waits SECS (default
5) and prints each breakdown as JSON. A thread's stack is the anonymous mapping that holds
its stack pointer (/proc/PID/task/TID/syscall; needs root or the same user)."""
import json, os, re, signal, subprocess, sys, tempfile, time
from pathlib import Path

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")


def mappings(pid):
    out, cur = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = HEADER.match(line)
        if m:
            cur = {"start": int(m[1], 16), "end": int(m[2], 16), "perms": m[3], "path": m[4].strip()}
            out.append(cur)
        elif cur is not None and line.endswith(" kB"):
            k, v = line.split(":", 1)
            cur[k] = int(v.split()[0])
    return out


def thread_sps(pid):
    """tid -> (name, stack pointer) of each thread blocked in a system call."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "syscall").read_text().split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        if len(fields) >= 3 and fields[0] not in ("running",):
            out[int(task.name)] = (name, int(fields[-2], 16))
    return out


def classify(pid):
    exe = os.path.realpath(f"/proc/{pid}/exe")
    sps = thread_sps(pid)
    classes = {}
    detail = []
    for m in mappings(pid):
        path, perms = m["path"], m["perms"]
        if path == exe or path.startswith(exe + " "):
            if "x" in perms:
                cls = "text"
            elif "w" in perms:
                cls = ".data/.bss"
            elif m.get("Anonymous", 0):
                cls = "RELRO (.data.rel.ro, GOT)"
            else:
                cls = "rodata"
        elif path == "[heap]":
            cls = "brk heap"
        elif path == "[stack]":
            cls = "main stack"
        elif path.startswith("["):
            cls = path
        elif path:
            cls = f"file {path}"
        else:
            owners = [f"{n} ({tid})" for tid, (n, sp) in sps.items() if m["start"] <= sp < m["end"]]
            cls = f"stack: {', '.join(owners)}" if owners else "anonymous mmap (malloc groups, buffers)"
        c = classes.setdefault(cls, {"mappings": 0, "size_kib": 0, "rss_kib": 0, "private_kib": 0, "anon_kib": 0})
        c["mappings"] += 1
        c["size_kib"] += m.get("Size", 0)
        c["rss_kib"] += m.get("Rss", 0)
        c["private_kib"] += m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
        c["anon_kib"] += m.get("Anonymous", 0)
        if m.get("Rss", 0):
            detail.append({"class": cls, "size_kib": m.get("Size", 0), "rss_kib": m["Rss"], "anon_kib": m.get("Anonymous", 0),
                           "perms": perms})
    total = {k: sum(c[k] for c in classes.values()) for k in ("rss_kib", "private_kib", "anon_kib")}
    return {"total": total, "threads": len(list(Path(f"/proc/{pid}/task").iterdir())),
            "classes": dict(sorted(classes.items(), key=lambda kv: -kv[1]["rss_kib"])),
            "anonymous mappings": [d for d in detail if d["class"].startswith("anonymous")]}


def run(secs):
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    work = Path(tempfile.mkdtemp(prefix="pilot-smaps-"))
    pilot = os.environ["PILOT"]
    cp = os.environ.get("CP_BIN")
    import agent
    consul = os.environ.get("CONSUL_BIN") or str(Path.home() / ".cache/pilot/consul-v1.16.1/consul")
    ag, port = agent.start_agent(consul, "smaps")
    time.sleep(2)
    interval = int(os.environ.get("CHECK_INTERVAL", "1"))
    health = f'health: {{ exec: "true", interval: {interval}, ttl: {max(5, 3 * interval)} }}'
    reg = 'port: 8080, interfaces: ["static:127.0.0.1"],'
    texts = {
        "sleeping job": f'{{ consul: "127.0.0.1:1", jobs: [ {{ name: "app", exec: "sleep 1000" }} ] }}',
        "health check": f'{{ consul: "127.0.0.1:1", jobs: [ {{ name: "app", exec: "sleep 1000", {health} }} ] }}',
        "health check + Consul": f'{{ consul: "127.0.0.1:{port}", jobs: [ {{ name: "smaps-app", exec: "sleep 1000", {reg} {health} }} ] }}',
    }
    out = {}
    try:
        for scen, text in texts.items():
            if os.environ.get("SCEN", "") not in scen:
                continue
            progs = {"pilot": lambda f: [pilot, "run", "-c", f]}
            if cp:
                progs["containerpilot"] = lambda f: [cp, "-config", f]
            for name, argv in progs.items():
                cfg = work / f"{name}-{len(out)}.json5"
                cfg.write_text(text.replace("jobs:", f'control: {{ socket: "{work}/{name}-{len(out)}.sock" }}, jobs:', 1))
                p = subprocess.Popen(argv(str(cfg)), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                try:
                    time.sleep(secs)
                    out[f"{scen}: {name}"] = classify(p.pid)
                finally:
                    p.send_signal(signal.SIGTERM)
                    p.wait(10)
    finally:
        ag.terminate()
        ag.wait()
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        print(json.dumps(run(float(sys.argv[2]) if len(sys.argv) > 2 else 5), indent=1))
    else:
        print(json.dumps(classify(int(sys.argv[1])), indent=1))
