#!/usr/bin/env python3
"""Turn bench/results/scale.json into scale.md."""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
r = json.loads((OUT / "scale.json").read_text())
s = r.get("steady", {})
st = r.get("sigterm", {})
sk = r.get("sigkill_half", {})


def fmt(x, unit=" s"):
    return "never (within the limit)" if x is None else f"{x}{unit}"


lines = [f"# pilot at scale: {r['n']:,} pilots against a Consul cluster", "",
         f"Run {r['date']} on {r['cores']} cores ({r['total_s']} s in all). Three Consul servers and four client "
         "agents (1.16.1) on loopback addresses of their own; each pilot has one service (`sleep`) with a health "
         f"check (`/bin/true`) every {r['interval_s']} s, TTL {r['ttl_s']} s, `deregisterCriticalServiceAfter: "
         f"\"{r['deregister_critical_after']}\"`, and talks to one of the four clients (round robin). "
         f"Agent settings: `{r['agent_hcl']}`.", ""]
if r.get("note"):
    lines += [f"Note: {r['note']}", ""]
lines += ["| figure | value |", "|---|---:|",
          f"| cluster start (3 servers elect, 4 clients join) | {r['cluster_start_s']} s |",
          f"| launching {r['n']:,} pilots (fork+exec from one Python loop) | {r['launch_s']:.1f} s |",
          f"| start → all {r['n']:,} passing in the catalog | {fmt(r['all_passing_s'])} |"]
if "passing_at_limit" in r:
    lines.append(f"| passing when the wait ended | {r['passing_at_limit']} |")
if s:
    lines += [f"| pilots alive at steady state | {r['pilots_alive']:,} |",
              f"| pilots' memory: sum of RSS / sum of PSS | {s['pilots_rss_mib']:,} MiB / {s['pilots_pss_mib']:,} MiB |",
              f"| PSS per pilot | {s['pilot_pss_kib_each']:,} KiB |",
              f"| 3 servers' CPU | {s['servers_cpu_percent']} % of one core |",
              f"| 4 client agents' CPU | {s['clients_cpu_percent']} % of one core |",
              "| agents' RSS (MiB) | " + ", ".join(f"{k} {v}" for k, v in s["agents_rss_mib"].items()) + " |"]
pc = r.get("pilot_cpu")
if pc:
    lines += [f"| a pilot's CPU over its whole life (wait4 rusage, checks included): round 1, {pc['round1_checks']} checks | {pc['round1_life_ms']} ms |",
              f"| … round 2's SIGTERMed half, {pc['round2_checks']} checks | {pc['round2_life_ms']} ms |",
              f"| CPU per check per pilot (the difference; check and TTL update included) | {pc['ms_per_check']} ms |",
              f"| all pilots' CPU at steady state (per check × pilots / interval) | {pc['steady_cpu_percent_all']} % of one core |"]
if st:
    lines += [f"| SIGTERM to all → catalog empty | {fmt(st['all_gone_s'])} |",
              f"| SIGTERM to all → every pilot exited | {st['pilots_exit_s']} s |"]
    if st.get("stale_after_limit"):
        lines.append(f"| stale registrations left after SIGTERM | {st['stale_after_limit']} |")
if sk:
    lines += [f"| round 2: start → all passing | {fmt(r.get('round2_all_passing_s'))} |",
              f"| SIGKILL {sk['killed']:,} + SIGTERM {sk['termed']:,}: SIGTERMed ones gone after | {fmt(sk['stale_right_after_sigterms_s'])} |",
              f"| stale registrations of the SIGKILLed | {sk['stale_max']} |",
              f"| … all gone (TTL lapse, then deregisterCriticalServiceAfter and Consul's reaper) after | {fmt(sk['all_gone_s'])} |",
              f"| stale at the end of the wait | {sk['stale_at_end']} |"]
lines += ["", "Catalog size over time after SIGKILL of half (seconds, registrations): "
          + ", ".join(f"{t}: {n}" for t, n in sk.get("samples", [])), ""]
notes = OUT / "scale-notes.md"
if notes.exists():
    lines += [notes.read_text()]
(OUT / "scale.md").write_text("\n".join(lines))
