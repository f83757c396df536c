#!/usr/bin/env python3
"""Turn bench/results/results.json into results.md (tables with pilot/peer ratios, and the goals
of issue 14 with their measured ratio, met or not) and chart.png (the ratios, log scale)."""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
r = json.loads((OUT / "results.json").read_text())
INIT_PEERS = [n for n in ["tini", "tini-static", "dumb-init", "catatonit", "pilot-baseline"] if n in r["size"]]
CP = "containerpilot"
HAS_CP = CP in r["size"]
MIB = 1024


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "–"


def met(ok):
    return "**met**" if ok else "**not met**"


def kind_of(name):
    """The pilot a row compares with: the config-run pilot for config rows, else the plain one."""
    return "pilot (config)" if name.endswith("(config)") else "pilot"


m = r["machine"]
lines = ["# pilot benchmarks", "",
         f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}; run {m['date']}"
         + (f", {r['bench_seconds']} s" if "bench_seconds" in r else "") + ".", "",
         f"ContainerPilot: {r['containerpilot']}.", ""]
if r.get("note"):
    lines += [f"Note: {r['note']}", ""]
lines += ["Medians unless said otherwise; a ratio is pilot's figure over the peer's (below 1: pilot is smaller, "
          "faster or cheaper). Rows marked *(config)* run the same ContainerPilot v3 config file under pilot "
          "(`pilot run -c FILE`) and ContainerPilot (`containerpilot -config FILE`); the other rows run "
          "`INIT -- CMD` (pilot without a config: its embedded default).", ""]

s = r["size"]
st = r.get("startup", {})
mem = r.get("memory_idle", {})
cpu = r.get("cpu_per_check", {})
lat = r.get("latency", {})
sg = r.get("signals", {})

# ---- goals ---------------------------------------------------------------------------------
goals = []
if HAS_CP:
    b, c = s["pilot"]["bytes"], s[CP]["bytes"]
    goals.append(("static binary", f"{b / 1e6:.2f} MB", f"{c / 1e6:.2f} MB", ratio(b, c), "≤ 2.0 MB (≤ 1/5 of CP)",
                  met(b <= 2.0e6 and b <= c / 5)))
else:
    b = s["pilot"]["bytes"]
    goals.append(("static binary", f"{b / 1e6:.2f} MB", "–", "–", "≤ 2.0 MB", met(b <= 2.0e6)))
for scen, v in mem.items():
    p = v.get("pilot (config)") or v.get("pilot")
    c = v.get(f"{CP} (config)") or v.get(CP)
    if p and c:
        goals.append((f"RSS, {scen}", f"{p['rss_kib'] / MIB:.2f} MiB", f"{c['rss_kib'] / MIB:.2f} MiB",
                      ratio(p["rss_kib"], c["rss_kib"]), "≤ 1/5 of CP's", met(p["rss_kib"] <= c["rss_kib"] / 5)))
if not HAS_CP:
    goals.append(("RSS ≤ 1/5 of CP's; CPU per check ≤ 0.5× CP's", "–", "absent", "–", "needs ContainerPilot",
                  "not measured"))
if "sleeping job" in mem:
    p = mem["sleeping job"]["pilot"]["rss_kib"]
    ts = mem["sleeping job"].get("tini-static", {}).get("rss_kib")
    goals.append(("RSS, embedded default (`pilot run -- sleep`)", f"{p / MIB:.2f} MiB", "–",
                  f"{ratio(p, ts)} tini-static" if ts else "–", "≤ 1.0 MiB", met(p <= MIB)))
if "+ health check + Consul" in mem:
    p = mem["+ health check + Consul"]["pilot"]["rss_kib"]
    goals.append(("RSS, + health check + Consul registration", f"{p / MIB:.2f} MiB", "–", "–", "≤ 2.0 MiB",
                  met(p <= 2 * MIB)))
for cond, v in st.items():
    if "tini-static" in v:
        p, t = v["pilot"]["overhead_ms"], v["tini-static"]["overhead_ms"]
        goals.append((f"start-up overhead, {cond}", f"{p:.2f} ms", "–", f"{ratio(p, t)} tini-static",
                      "≤ 1.2× tini-static's", met(p <= 1.2 * t)))
for cond, v in st.items():
    if f"{CP} (config)" in v:
        p, c = v["pilot (config)"]["overhead_ms"], v[f"{CP} (config)"]["overhead_ms"]
        goals.append((f"start-up, same config, {cond}", f"{p:.2f} ms", f"{c:.2f} ms", ratio(p, c), "– (reported)", "–"))
for scen, v in cpu.items():
    if CP in v:
        p, c = v["pilot"]["ms_per_check"], v[CP]["ms_per_check"]
        goals.append((f"CPU per health check incl. the check, {scen}", f"{p:.3f} ms", f"{c:.3f} ms", ratio(p, c),
                      "≤ 0.5× CP", met(p <= 0.5 * c)))
for scen, v in cpu.items():
    if CP in v and "own_ms_per_check" in v["pilot"]:
        p, c = v["pilot"]["own_ms_per_check"], v[CP]["own_ms_per_check"]
        goals.append((f"own CPU per health check (without the reaped check), {scen}", f"{p:.3f} ms", f"{c:.3f} ms",
                      ratio(p, c), "≤ 0.5× CP", met(p <= 0.5 * c)))
for key, what in (("ttl_update_ms", "CPU per TTL update"), ("own_ttl_update_ms", "own CPU per TTL update")):
    v = cpu.get("with Consul", {})
    if CP in v and key in v["pilot"]:
        p, c = v["pilot"][key], v[CP][key]
        goals.append((what, f"{p:.3f} ms", f"{c:.3f} ms", ratio(p, c), "– (reported)", "–"))
if "check_program_alone_ms" in r:
    goals.append(("the check program alone (`/bin/true`, no supervisor)", f"{r['check_program_alone_ms']:.3f} ms",
                  "(same)", "–", "– (the same for both)", "–"))
if sg and "tini" in sg:
    p, t = sg["pilot"]["p50_us"], sg["tini"]["p50_us"]
    goals.append(("signal delivery p50", f"{p:.1f} µs", "–", f"{ratio(p, t)} tini", "≤ tini's", met(p <= t)))
for ev, v in (lat.get("pilot") or {}).items():
    if ev == "failures":
        continue
    c = lat.get(CP, {}).get(ev)
    goals.append((f"latency {ev.replace('_', ' ')} p50", f"{v['p50_s']:.3f} s", f"{c['p50_s']:.3f} s" if c else "–",
                  ratio(v["p50_s"], c["p50_s"]) if c else "–", "– (reported)", "–"))

lines += ["## Against the goals (issue 14)", "", "| figure | pilot | ContainerPilot | ratio | goal | met? |",
          "|---|---:|---:|---:|---|---|"]
lines += [f"| {' | '.join(g)} |" for g in goals]

# ---- size ----------------------------------------------------------------------------------
lines += ["", "## Binary size", "", "| program | bytes | static | pilot / it |", "|---|---:|---|---:|"]
for n, v in s.items():
    lines.append(f"| {n} | {v['bytes']:,} | {'yes' if v['static'] else 'no'} | {ratio(s['pilot']['bytes'], v['bytes'])} |")

# ---- start-up ------------------------------------------------------------------------------
if st:
    conds = list(st)
    lines += ["", "## Start-up: wall time of `INIT -- true` (or a config of one `/bin/true` job) over a bare `true`", "",
              "ms, and pilot / it in brackets. *Other core busy*: `yes > /dev/null` pinned to the other CPU; "
              "*pinned*: the program (and its payload) pinned to CPU 0, the busy one's neighbour.", "",
              "| program | " + " | ".join(conds) + " |", "|---|" + "---:|" * len(conds)]
    names = [n for n in st[conds[0]] if n != "true_ms"]
    for n in names:
        cells = [f"{st[c][n]['overhead_ms']:.2f} ({ratio(st[c][kind_of(n)]['overhead_ms'], st[c][n]['overhead_ms'])})"
                 for c in conds]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("| *bare `true`* | " + " | ".join(f"{st[c]['true_ms']:.2f}" for c in conds) + " |")

# ---- memory --------------------------------------------------------------------------------
if mem:
    lines += ["", "## Memory and idle wakeups, per scenario", "",
              "RSS: the median of 60 readings 3–6 s after start (a few health checks; pilot gives back its start-up "
              "code 2 s after start), and their maximum; peak: VmHWM; wakeups: context switches per second of all "
              "threads with nothing due.", "",
              "| scenario | program | RSS KiB | max KiB | peak KiB | threads | wakeups/s idle | pilot RSS / it |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for scen, v in mem.items():
        for n, e in v.items():
            w = f"{e['wakeups_per_s']:.2f}" if "wakeups_per_s" in e else "–"
            ref = v.get(kind_of(n)) or v["pilot"]
            mx = f"{e['rss_max_kib']:,}" if "rss_max_kib" in e else "–"
            lines.append(f"| {scen} | {n} | {e['rss_kib']:,.0f} | {mx} | {e['peak_kib']:,} | {e.get('threads', '–')} | {w} | "
                         f"{ratio(ref['rss_kib'], e['rss_kib'])} |")

# ---- CPU per check -------------------------------------------------------------------------
if cpu:
    lines += ["", "## CPU per health check (whole process, the check included; and the program's own)", "",
              "User+system CPU of each program's whole life (all threads and the reaped checks: wait4's "
              "rusage, µs precision), copies living 2.5 s and 20.5 s, all programs and both scenarios at the same time; the difference over the "
              "difference in checks (one a second). *With Consul*: the job is a service, so each check also "
              "sends a TTL update; the difference of the two scenarios is the cost of that update.", "",
              "*Own*: the program's threads alone, without the checks it reaped (the sum of "
              "/proc/PID/task/*/schedstat's run time, ns, read just before each copy is stopped). "
              + (f"The check program run alone (`/bin/true`, its own CPU without a supervisor) costs "
                 f"{r['check_program_alone_ms']:.3f} ms: the same for every supervisor, and most of a check. "
                 if "check_program_alone_ms" in r else ""), "",
              "| scenario | program | checks | ms per check | pilot / it | own ms per check | pilot own / it "
              "| ms per TTL update | own ms per TTL update |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for scen, v in cpu.items():
        for n, e in v.items():
            ttl = f"{e['ttl_update_ms']:.3f}" if "ttl_update_ms" in e else "–"
            own_ttl = f"{e['own_ttl_update_ms']:.3f}" if "own_ttl_update_ms" in e else "–"
            own = f"{e['own_ms_per_check']:.3f}" if "own_ms_per_check" in e else "–"
            own_ratio = (ratio(v["pilot"]["own_ms_per_check"], e["own_ms_per_check"])
                         if "own_ms_per_check" in e and "own_ms_per_check" in v["pilot"] else "–")
            lines.append(f"| {scen} | {n} | {e['checks']:.0f} | {e['ms_per_check']:.3f} | "
                         f"{ratio(v['pilot']['ms_per_check'], e['ms_per_check'])} | {own} | {own_ratio} | {ttl} | {own_ttl} |")

# ---- latencies -----------------------------------------------------------------------------
if lat:
    lc = r.get("latency_config", {})
    lines += ["", "## Latencies a site sees in Consul's catalog", "",
              f"One service, a health check every {lc.get('interval_s', '?')} s with TTL {lc.get('ttl_s', '?')} s, "
              "against a real Consul agent (dev mode, loopback); the catalog polled every 5 ms. Seconds over "
              f"{lat['pilot']['start_to_passing']['runs']} runs each. *start → passing*: from starting the "
              "program to the service passing; *failing → critical*: from the check starting to fail to the service's "
              "check critical; *SIGTERM → gone*: from SIGTERM to the service gone from the catalog.", "",
              "| event | program | p50 s | p90 s | pilot p50 / it |", "|---|---|---:|---:|---:|"]
    for ev in [e for e in lat["pilot"] if e != "failures"]:
        for n, v in lat.items():
            lines.append(f"| {ev.replace('_', ' ')} | {n} | {v[ev]['p50_s']:.3f} | {v[ev]['p90_s']:.3f} | "
                         f"{ratio(lat['pilot'][ev]['p50_s'], v[ev]['p50_s'])} |")

    for n, v in lat.items():
        for f in v.get("failures", []):
            lines.append(f"\nFailed run ({n}): {f}")

# ---- signals, reaping ----------------------------------------------------------------------
if sg:
    lines += ["", "## Signal delivery to the payload (µs)", "",
              "ContainerPilot forwards no signal to its jobs (SIGTERM and SIGINT stop them, SIGHUP and SIGUSR2 "
              "are events, SIGUSR1 kills ContainerPilot itself), so it has no row.", "",
              "| init | p50 | p99 | pilot p50 / it |", "|---|---:|---:|---:|"]
    for n, v in sg.items():
        lines.append(f"| {n} | {v['p50_us']:.1f} | {v['p99_us']:.1f} | {ratio(sg['pilot']['p50_us'], v['p50_us'])} |")
rp = r.get("reaping", {})
if rp:
    lines += ["", "## Create and reap orphans as PID 1 (s)", "", "| init | seconds | pilot / it |", "|---|---:|---:|"]
    for n, v in rp.items():
        lines.append(f"| {n} | {v['seconds']:.3f} | {ratio(rp[kind_of(n)]['seconds'], v['seconds'])} |")

# ---- Consul load ---------------------------------------------------------------------------
c = r.get("consul")
if c:
    lines += ["", "## Consul load per TTL refresh (through a counting proxy; check every 1 s)", "",
              "| program | HTTP requests per interval | new TCP connections per interval | RSS KiB |", "|---|---:|---:|---:|"]
    for n, v in c.items():
        if n != "churn":
            lines.append(f"| {n} | {v['requests_per_interval']:.2f} | {v['new_connections_per_interval']:.2f} | {v['rss_kib']:,} |")
    ch = c["churn"]
    lines += ["", f"Churn (pilot): {ch['pilots']} short-lived pilots registering and deregistering against one agent, "
              f"20 at a time, in {ch['seconds']:.1f} s; stale registrations left: **{ch['stale_registrations']}**."]

lines += ["", "The scale benchmark (1,000 pilots against a Consul cluster) is `bench/scale.sh`; its results are in "
          "[scale.md](scale.md).", "", "![ratios](chart.png)", ""]
(OUT / "results.md").write_text("\n".join(lines))

# ---- chart ---------------------------------------------------------------------------------
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

quiet = st.get("quiet, not pinned", {})
init_metrics = {
    "size": lambda n: s[n]["bytes"],
    "start-up": lambda n: max(quiet[n]["overhead_ms"], 1e-3),
    "RSS": lambda n: mem["sleeping job"][n]["rss_kib"],
    "signal p50": lambda n: sg[n]["p50_us"],
    "reaping": lambda n: rp[n]["seconds"],
}
fig, axes = plt.subplots(1, 2 if HAS_CP else 1, figsize=(14 if HAS_CP else 9, 5), squeeze=False)
ax = axes[0][0]
width = 0.8 / max(1, len(INIT_PEERS))
for i, peer in enumerate(INIT_PEERS):
    vals = []
    for f in init_metrics.values():
        try:
            vals.append(f("pilot") / f(peer))
        except (KeyError, ZeroDivisionError):
            vals.append(float("nan"))
    ax.bar([x + i * width for x in range(len(init_metrics))], vals, width, label=f"pilot / {peer}")
ax.axhline(1, color="black", linewidth=0.8)
ax.set_yscale("log")
ax.set_xticks([x + width * (len(INIT_PEERS) - 1) / 2 for x in range(len(init_metrics))])
ax.set_xticklabels(list(init_metrics))
ax.set_ylabel("pilot / peer (log; below 1 = pilot smaller or faster)")
ax.set_title("pilot vs the inits (`INIT -- CMD`)")
ax.legend(fontsize=8)

if HAS_CP:
    ax = axes[0][1]
    bars, goal = {}, {}
    bars["size"] = s["pilot"]["bytes"] / s[CP]["bytes"]
    goal["size"] = 0.2
    for scen, v in mem.items():
        p, cpv = v.get("pilot (config)") or v.get("pilot"), v.get(f"{CP} (config)") or v.get(CP)
        if p and cpv:
            bars[f"RSS\n{scen}"] = p["rss_kib"] / cpv["rss_kib"]
            goal[f"RSS\n{scen}"] = 0.2
    for cond, v in st.items():
        if f"{CP} (config)" in v:
            bars[f"start-up\n{cond}"] = max(v["pilot (config)"]["overhead_ms"], 1e-3) / max(v[f"{CP} (config)"]["overhead_ms"], 1e-3)
    for scen, v in cpu.items():
        if CP in v:
            bars[f"CPU/check\n{scen}"] = v["pilot"]["ms_per_check"] / v[CP]["ms_per_check"]
            goal[f"CPU/check\n{scen}"] = 0.5
    for ev in [e for e in lat.get("pilot", {}) if e != "failures"]:
        if CP in lat:
            bars[ev.replace("_to_", "→\n").replace("_", " ")] = lat["pilot"][ev]["p50_s"] / lat[CP][ev]["p50_s"]
    xs = range(len(bars))
    ax.bar(xs, list(bars.values()), 0.6, color="tab:purple", label="pilot / ContainerPilot")
    for i, k in enumerate(bars):
        if k in goal:
            ax.plot([i - 0.35, i + 0.35], [goal[k]] * 2, color="tab:red", linewidth=2, label="goal" if i == 0 else None)
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(list(bars), fontsize=6.5, rotation=60, ha="right")
    ax.set_title("pilot vs ContainerPilot 3.8.0 (same config)")
    ax.legend(fontsize=8)
fig.suptitle(f"pilot benchmarks — {m['date']}")
fig.tight_layout()
fig.savefig(OUT / "chart.png", dpi=110)
