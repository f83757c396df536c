#!/usr/bin/env python3
"""pilot beside ContainerPilot 3.8.0 on every ContainerPilot v3 fixture and thousands of mutations
of them (scripts/compat.sh sets up the sandbox: a private network namespace with a dummy `eth0`,
a private /run). For each file:

- accept/reject: `pilot check-config -c FILE` (0 valid, 1 invalid) against
  `containerpilot -config FILE -ping`: ContainerPilot has no check-only mode, but its client
  subcommands load (render, parse, decode, validate) the config before dialling the control
  socket, which nothing serves here, so a dial error means "accepted" and anything else is the
  config's error (what its logging stanza alone would add is not checked that way);
- template output: `pilot template -c FILE` against `containerpilot -config FILE -template`,
  byte for byte;
- on the fixtures only: the order of events in a short run (debug logging, 4.5 s, SIGTERM).

Writes OUT/summary.json, OUT/summary.md (every kind of difference, counted, with an example file
each) and the examples themselves under OUT/examples/."""
import concurrent.futures, hashlib, json, os, re, signal, subprocess, sys, time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests/fixtures/containerpilot"
PILOT, CP, OUT = sys.argv[1], sys.argv[2], Path(sys.argv[3])
ROUNDS = int(os.environ.get("COMPAT_MUTATIONS", "4000"))
# Not a multiple of the fixtures' intervals (1, 3, 5 s), so no check or interval run races the SIGTERM.
RUN_SECS = 4.5
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "CONSUL": "consul",
       "APP_PORT": "8000", "LANG": "C.UTF-8"}


def seeds():
    """The fixtures and the template seed, in the order tests/config_mutations.rs uses."""
    paths = sorted([p for d in (FIX, FIX / "mistakes") for p in d.iterdir() if p.suffix == ".json5"], key=str)
    texts = [(p.relative_to(FIX).as_posix(), p.read_text()) for p in paths]
    texts.append(("template-seed", "{{ range loop 3 }}{{ . }}{{ end }}{{ .X | split \",\" | join }}{{ loop }}"))
    return texts


def mutations(texts, rounds):
    """A port of tests/config_mutations.rs's generator (same xorshift, seed and pieces), so the
    variants are the ones the test suite feeds pilot's parser."""
    pieces = ["{", "}", "[", "]", ",", ":", "\"", "{{", "}}", "\\", "/*", "//", "0x", "-1", "1e999", "interval",
              "once", "null", "\u0000", "é"]
    state = 0x9e3779b97f4a7c15
    mask = (1 << 64) - 1

    def nxt():
        nonlocal state
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        return state

    for rnd in range(rounds):
        name, seed = texts[rnd % len(texts)]
        text = list(seed)
        for _ in range(1 + nxt() % 4):
            at = nxt() % (len(text) + 1)
            if nxt() % 3 == 0 and at < len(text):
                del text[at]
            else:
                p = pieces[nxt() % len(pieces)]
                text[at:at] = list(p)
        yield f"mut{rnd:05d}-{name.replace('/', '_')}", "".join(text)


def run(argv, timeout=10):
    try:
        r = subprocess.run(argv, capture_output=True, env=ENV, timeout=timeout, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        return "timeout", e.stdout or b"", e.stderr or b""


def norm(msg):
    """An error message without its specifics (positions, quoted values, numbers), for bucketing."""
    msg = msg.strip().splitlines()[0] if msg.strip() else ""
    msg = re.sub(r"^time=\S+ level=\w+ msg=", "", msg)
    msg = re.sub(r"^\S+Z ", "", msg)  # ContainerPilot's timestamp
    msg = re.sub(r"\S+\.json5", "FILE", msg)
    msg = re.sub(r'"[^"]*"|\'[^\']*\'|`[^`]*`', "Q", msg)
    msg = re.sub(r"\d+", "N", msg)
    return msg[:140]


def compare(name, text, work):
    f = work / f"{name}.json5"
    f.write_bytes(text.encode("utf-8", "surrogatepass"))
    pc, pout, perr = run([PILOT, "check-config", "-c", str(f)])
    cc, cout, cerr = run([CP, "-config", str(f), "-ping"])
    cmsg = (cerr + cout).decode("utf-8", "replace")
    if pc not in (0, 1):
        pv = f"pilot-crash({pc})"
    else:
        pv = "accept" if pc == 0 else "reject"
    if cc == "timeout":
        cv = "cp-timeout"
    elif "dial unix" in cmsg or "/v3/ping" in cmsg or "connect:" in cmsg:
        cv = "accept"
    elif cc != 0:
        cv = "reject"
    else:
        cv = "accept"
    if cv == "accept" and pc == 1:
        # -ping does not set up logging: run it for real (1.5 s) to see whether that refuses.
        rc, rout, rerr = run([CP, "-config", str(f)], timeout=1.5)
        if rc not in ("timeout", 0):
            cv, cmsg = "reject", (rerr + rout).decode("utf-8", "replace")
    pt, ptout, pterr = run([PILOT, "template", "-c", str(f)])
    ct, ctout, cterr = run([CP, "-config", str(f), "-template"])
    if pt not in (0, 1):
        tv = f"pilot-crash({pt})"
    elif pt == 0 and ct == 0:
        tv = "identical" if ptout == ctout else "differ"
    elif pt != 0 and ct != 0:
        tv = "both refuse"
    else:
        tv = "pilot refuses" if pt != 0 else "cp refuses"
    pmsg = (perr + pout).decode("utf-8", "replace")
    pdiag = next((l for l in pmsg.splitlines() if "error" in l.lower()), pmsg.strip().splitlines()[0] if pmsg.strip() else "")
    return {"name": name, "pilot": pv, "cp": cv, "template": tv, "cp_error": norm(cmsg) if cv == "reject" else "",
            "pilot_error": norm(pdiag.split(": ", 1)[-1]) if pv == "reject" else "",
            "cp_msg": cmsg.strip()[:300], "pilot_msg": pmsg.strip()[:300],
            "template_diff": first_diff(ptout, ctout) if tv == "differ" else "",
            "template_cp_msg": norm(cterr.decode("utf-8", "replace")) if tv == "pilot refuses" else "",
            "template_pilot_msg": norm(pterr.decode("utf-8", "replace").split(": ", 1)[-1]) if tv == "cp refuses" else ""}


def first_diff(a, b):
    i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return f"at byte {i}: pilot {a[max(0, i - 20):i + 30]!r} / cp {b[max(0, i - 20):i + 30]!r}"


EVENT_RE = re.compile(r"event:? \{(\w+),? ([^}]*)\}")


def events(argv, cfg_text, work, name):
    """The events a program publishes in a RUN_SECS run of the config (debug logging), then SIGTERM."""
    f = work / f"ev-{name}.json5"
    dbg = 'logging: { level: "DEBUG", format: "text" }'
    if re.search(r"logging:\s*\{[^}]*\}", cfg_text):
        cfg_text = re.sub(r"logging:\s*\{[^}]*\}", dbg, cfg_text, count=1)
    else:
        cfg_text = re.sub(r"^\{", "{ " + dbg + ",", cfg_text, count=1, flags=re.M)
    f.write_text(cfg_text)
    p = subprocess.Popen(argv(f), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    time.sleep(RUN_SECS)
    p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
    try:
        os.killpg(p.pid, signal.SIGKILL)  # leftovers of either
    except OSError:
        pass
    evs = []
    for m in EVENT_RE.finditer(out.decode("utf-8", "replace")):
        code = m.group(1)[0].lower() + m.group(1)[1:]
        evs.append((code, m.group(2).strip()))
    return evs


# ContainerPilot's debug log names a job's health events StatusHealthy/StatusUnhealthy (what
# `each: "healthy"` matches); its `error` events carry the Go error text as their source.
CODES = {"statusHealthy": "healthy", "statusUnhealthy": "unhealthy"}


def per_source(evs):
    """Each source's events in order, repeats collapsed (a restart loop's count depends on the
    backoff, row 16), `error` events left out (their text is each program's own), and
    ContainerPilot's telemetry pseudo-job `containerpilot` left out (pilot has none). What is left
    is independent of how two unrelated jobs' events interleave, which no program orders."""
    out = {}
    for code, src in evs:
        code = CODES.get(code, code)
        if code == "error" or src == "containerpilot":
            continue
        seq = out.setdefault(src, [])
        if not seq or seq[-1] != code:
            seq.append(code)
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "files"
    work.mkdir(exist_ok=True)
    (OUT / "examples").mkdir(exist_ok=True)
    texts = seeds()
    cases = [(f"fixture-{n.replace('/', '_')}", t) for n, t in texts if n != "template-seed"]
    cases += list(mutations(texts, ROUNDS))
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=int(os.environ.get("COMPAT_JOBS", "3"))) as ex:
        results = list(ex.map(lambda c: compare(c[0], c[1], work), cases))
    took = time.monotonic() - t0

    # Buckets of differences, each with a count and one example kept.
    buckets = defaultdict(list)
    for r, (name, text) in zip(results, cases):
        if r["pilot"] != r["cp"]:
            key = ("accept/reject", f"pilot {r['pilot']}, ContainerPilot {r['cp']}",
                   r["cp_error"] if r["cp"] == "reject" else r["pilot_error"])
            buckets[key].append((name, text, r))
        if r["template"] not in ("identical", "both refuse"):
            key = ("template", r["template"], r["template_cp_msg"] or r["template_pilot_msg"] or
                   re.sub(r"\d+", "N", r["template_diff"])[:80])
            buckets[key].append((name, text, r))
    summary = {"cases": len(cases), "fixtures": sum(1 for n, _ in cases if n.startswith("fixture-")), "seconds": round(took),
               "verdicts": Counter(f"pilot {r['pilot']} / cp {r['cp']}" for r in results),
               "templates": Counter(r["template"] for r in results),
               "fixtures_detail": [r for r in results if r["name"].startswith("fixture-")], "buckets": []}
    for key, items in sorted(buckets.items(), key=lambda kv: -len(kv[1])):
        name, text, r = items[0]
        ex = OUT / "examples" / f"{hashlib.sha1(repr(key).encode()).hexdigest()[:10]}.json5"
        ex.write_bytes(text.encode("utf-8", "surrogatepass"))
        summary["buckets"].append({"what": key[0], "verdicts": key[1], "message": key[2], "count": len(items),
                                   "example": ex.name, "cp_msg": r["cp_msg"], "pilot_msg": r["pilot_msg"],
                                   "template_diff": r["template_diff"]})

    # Event order of short runs, fixtures only.
    if os.environ.get("COMPAT_EVENTS", "1") == "1":
        evs = []
        for n, t in texts:
            if n == "template-seed" or n.startswith("mistakes/"):
                continue
            pe = events(lambda f: [PILOT, "run", "-c", str(f)], t, work, "pilot-" + n.replace("/", "_"))
            ce = events(lambda f: [CP, "-config", str(f)], t, work, "cp-" + n.replace("/", "_"))
            ps, cs = per_source(pe), per_source(ce)
            differ = {src: {"pilot": ps.get(src, []), "cp": cs.get(src, [])} for src in sorted(set(ps) | set(cs))
                      if ps.get(src) != cs.get(src)}
            evs.append({"fixture": n, "identical": differ == {}, "differ": differ,
                        "pilot_raw": [f"{c}:{s_}" for c, s_ in pe], "cp_raw": [f"{c}:{s_}" for c, s_ in ce]})
        summary["events"] = evs
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1, default=list) + "\n")

    lines = [f"# pilot vs ContainerPilot: {summary['cases']} configs ({summary['fixtures']} fixtures, the rest mutations), "
             f"{summary['seconds']} s", "", "## Verdicts", ""]
    lines += [f"- {k}: {v}" for k, v in summary["verdicts"].most_common()]
    lines += ["", "## Template output", ""] + [f"- {k}: {v}" for k, v in summary["templates"].most_common()]
    lines += ["", "## Differences, by kind", "", "| what | verdicts | message | count | example |", "|---|---|---|---:|---|"]
    for b in summary["buckets"]:
        lines.append(f"| {b['what']} | {b['verdicts']} | `{b['message']}` | {b['count']} | {b['example']} |")
    if "events" in summary:
        lines += ["", f"## Event order of {RUN_SECS} s runs (fixtures): each source's events in order, repeats collapsed", "",
                  "| fixture | source | pilot | ContainerPilot |", "|---|---|---|---|"]
        for e in summary["events"]:
            if e["identical"]:
                lines.append(f"| {e['fixture']} | every source | identical | identical |")
            for src, d in e["differ"].items():
                lines.append(f"| {e['fixture']} | {src} | {' '.join(d['pilot']) or '–'} | {' '.join(d['cp']) or '–'} |")
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
