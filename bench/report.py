#!/usr/bin/env python3
"""Turn bench/results/results.json into results.md (tables with pilot/peer ratios) and
chart.png (the ratios, log scale)."""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
r = json.loads((OUT / "results.json").read_text())
PEERS = ["tini", "tini-static", "dumb-init", "catatonit"]
# A previous pilot measured in the same run (bench/run.sh with PILOT_BASELINE set).
if "pilot-baseline" in r["size"]:
    PEERS.append("pilot-baseline")
# ContainerPilot 3.8.0 could not be built here (see the note); these are figures from its
# own release page / docs, not measured in this run.
CP_PUBLISHED = "ContainerPilot 3.8.0: not measured in this run (see note)"


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "–"


lines = [f"# pilot benchmarks", "", f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['mem_gib']} GiB, Linux {r['machine']['kernel']}; run {r['machine']['date']}.",
         "", f"ContainerPilot: {r['containerpilot']}.", "", "Medians; a ratio is pilot's figure over the peer's (below 1: pilot is smaller or faster).", ""]

s = r["size"]
lines += ["## Binary size", "", "| init | bytes | static | pilot / it |", "|---|---:|---|---:|"]
for n, v in s.items():
    lines.append(f"| {n} | {v['bytes']:,} | {'yes' if v['static'] else 'no'} | {ratio(s['pilot']['bytes'], v['bytes'])} |")

st = r["startup"]
lines += ["", f"## Start-up overhead of `INIT -- true` over a bare `true` ({st['true_ms']:.2f} ms)", "", "| init | overhead ms | pilot / it |", "|---|---:|---:|"]
for n in ["pilot"] + PEERS:
    lines.append(f"| {n} | {st[n]['overhead_ms']:.2f} | {ratio(st['pilot']['overhead_ms'], st[n]['overhead_ms'])} |")

m = r["memory_idle"]
lines += ["", "## Memory (one sleeping payload) and idle wakeups", "", "| init | RSS KiB | peak KiB | wakeups/s idle | pilot RSS / it |", "|---|---:|---:|---:|---:|"]
for n, v in m.items():
    w = f"{v['wakeups_per_s']:.2f}" if "wakeups_per_s" in v else "–"
    lines.append(f"| {n} | {v['rss_kib']:,} | {v['peak_kib']:,} | {w} | {ratio(m['pilot']['rss_kib'], v['rss_kib'])} |")
c = r["consul"]
lines.append(f"| pilot + Consul registration + health check | {c['rss_kib']:,} | {c['peak_kib']:,} | – | – |")

sg = r["signals"]
lines += ["", "## Signal delivery to the payload (µs)", "", "| init | p50 | p99 | pilot p50 / it |", "|---|---:|---:|---:|"]
for n, v in sg.items():
    lines.append(f"| {n} | {v['p50_us']:.1f} | {v['p99_us']:.1f} | {ratio(sg['pilot']['p50_us'], v['p50_us'])} |")

rp = r["reaping"]
lines += ["", "## Create and reap orphans as PID 1 (s)", "", "| init | seconds | pilot / it |", "|---|---:|---:|"]
for n, v in rp.items():
    lines.append(f"| {n} | {v['seconds']:.3f} | {ratio(rp['pilot']['seconds'], v['seconds'])} |")

ch = c["churn"]
lines += ["", "## Consul load (pilot only: the peers do not talk to Consul)", "",
          f"- HTTP requests per health interval (1 s, TTL refresh): **{c['requests_per_interval']:.2f}**; new TCP connections per interval: **{c['new_connections_per_interval']:.2f}**",
          f"- Churn: {ch['pilots']} short-lived pilots registering and deregistering against one agent in {ch['seconds']:.1f} s; stale registrations left: **{ch['stale_registrations']}**",
          "", "## Against the goals (issue 6)", "",
          f"- static binary ≤ 2.5 MB: {s['pilot']['bytes'] / 1e6:.2f} MB — {'met' if s['pilot']['bytes'] <= 2.5e6 else 'not met'}",
          f"- RSS ≤ 3 MB: {m['pilot']['rss_kib'] / 1024:.2f} MiB (with a health check {m['pilot + health check']['rss_kib'] / 1024:.2f}, with Consul {c['rss_kib'] / 1024:.2f}) — {'met' if c['rss_kib'] <= 3 * 1024 else 'not met'}",
          f"- start-up overhead ≤ 1.3× tini's: {ratio(st['pilot']['overhead_ms'], st['tini']['overhead_ms'])}",
          f"- 0 idle wakeups: {m['pilot']['wakeups_per_s']:.2f}/s",
          f"- 1 request and no new connection per TTL refresh: {c['requests_per_interval']:.2f} requests, {c['new_connections_per_interval']:.2f} connections",
          "", "![ratios](chart.png)", ""]
(OUT / "results.md").write_text("\n".join(lines))

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

metrics = {
    "size": lambda n: s[n]["bytes"],
    "start-up overhead": lambda n: max(st[n]["overhead_ms"], 1e-3),
    "RSS": lambda n: m[n]["rss_kib"],
    "signal p50": lambda n: sg[n]["p50_us"],
    "reaping": lambda n: rp[n]["seconds"],
}
fig, ax = plt.subplots(figsize=(9, 4.5))
width = 0.8 / len(PEERS)
for i, peer in enumerate(PEERS):
    vals = [f("pilot") / f(peer) for f in metrics.values()]
    ax.bar([x + i * width for x in range(len(metrics))], vals, width, label=f"pilot / {peer}")
ax.axhline(1, color="black", linewidth=0.8)
ax.set_yscale("log")
ax.set_xticks([x + width * (len(PEERS) - 1) / 2 for x in range(len(metrics))])
ax.set_xticklabels(list(metrics))
ax.set_ylabel("pilot / peer (log; below 1 = pilot smaller or faster)")
ax.set_title(f"pilot vs peer inits — {r['machine']['date']}")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "chart.png", dpi=110)
