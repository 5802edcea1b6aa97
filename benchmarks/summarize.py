#!/usr/bin/env python3
"""Summarises a benchmarks/run.sh output folder: median req/s, p50, p99 per proxy, the proxy's CPU
per request, the host's speed during the runs, and Sluice's ratios.

The ratios are paired: each round ran the proxies back to back (A B C), so Sluice's req/s in a round
is divided by the peer's in the same round, and the median of those per-round ratios is reported
with their range. The host's speed swings by several times within minutes; runs seconds apart
share it far more often than the medians of whole sets do."""
import re, statistics, sys, pathlib, collections

def reload_notes(t):
    """For the reload schemes: the reloads made and the reloads the proxy reports applying."""
    notes = collections.Counter()
    reloads = re.search(r"reloads: sent (\d+), applied (\S+)", t)
    if reloads:
        notes["reloads made"] += int(reloads.group(1))
        notes["reloads applied"] += int(reloads.group(2)) if reloads.group(2).isdigit() else 0
    return notes

def parse_h2load(path, t):
    """h2load prints req/s and counts; p50/p99 come from its per-request log (µs durations)."""
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", t)
    counts = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", t)
    non2xx = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", t)
    durations = []
    log = path.with_suffix(".log")
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].isdigit():
                durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    def pct(q):
        return durations[min(len(durations) - 1, int(q * len(durations)))] if durations else None
    errs = sum(int(x) for x in non2xx.groups()) if non2xx else 0
    failed = collections.Counter({w: int(n) for n, w in zip(counts.groups(), ["failed", "errored", "timeout"])}) if counts else collections.Counter({"no summary": 1})
    failed.update(reload_notes(t))
    return (float(rps.group(1)) if rps else 0.0, pct(0.50), pct(0.99), errs, failed)

def parse(path):
    t = path.read_text()
    if t.startswith("idle:"):
        m = re.search(r"idle: (\d+) connections, rss before (\d+) KiB, after (\d+) KiB, per connection ([\d.]+) KiB, failed (\d+)", t)
        # (held connections, KiB per connection, -, failed, "") in the req/s, p50, p99 slots
        return (float(m.group(4)), float(m.group(1)), None, int(m.group(5)), collections.Counter()) if m else (0.0, None, None, 0, collections.Counter({"no result": 1}))
    if "h2load" in t or "finished in" in t:
        return parse_h2load(path, t)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", t, re.M)
        if not m: return None
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    # Counts summed over the rounds: wrk's socket errors (a read error is a request that got no
    # answer), and for the reload scheme the reloads made and the reloads the proxy reports.
    notes = collections.Counter()
    sock = re.search(r"Socket errors: (.*)", t)
    if sock:
        for kind, n in re.findall(r"(\w+) (\d+)", sock.group(1)):
            notes[f"socket {kind}"] += int(n)
    notes.update(reload_notes(t))
    if not rps:
        notes["no result"] += 1
    return (float(rps.group(1)) if rps else 0.0, lat(50), lat(99), int(errors.group(1)) if errors else 0, notes)

def requests_done(t):
    """Requests completed in the measured run (wrk: "N requests in"; h2load: "N done")."""
    m = re.search(r"(\d+) requests in [\d.]+\w+,", t) or re.search(r"requests: \d+ total, \d+ started, (\d+) done", t)
    return int(m.group(1)) if m else 0

def host(path):
    """RUN.host from run.sh: the host's speed before the run (the CPU loop's ms, a loopback round
    trip's µs) and the proxy's CPU µs per request (user, system)."""
    f = path.with_suffix(".host")
    if not f.exists():
        return None, None
    v = dict(line.split() for line in f.read_text().splitlines() if line.strip())
    n = requests_done(path.read_text())
    per = 1e6 / float(v["ticks_per_second"]) / n if n else None
    cpu = (float(v["user_ticks"]) * per, float(v["sys_ticks"]) * per) if per and "user_ticks" in v else None
    def number(key):
        try: return float(v.get(key, "nan"))
        except ValueError: return float("nan")  # "-": the probe failed
    return (number("spin_ms"), number("loopback_us")), cpu

def describe(non2xx, notes):
    """The errors column: what failed over all rounds, then how many reloads were applied."""
    parts = [f"{non2xx} non-2xx"] if non2xx else []
    parts += [f"{k} {v}" for k, v in sorted(notes.items()) if v and not k.startswith("reloads")]
    if notes.get("reloads made"):
        parts.append(f"{notes['reloads applied']} of {notes['reloads made']} reloads applied")
    return "; ".join(parts) if parts else "0"

def median_of(values):
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None

out = pathlib.Path(sys.argv[1])
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for f in sorted(out.glob("*-w*-c*-s*-r*-*.txt")):
    m = re.match(r"([\w-]+?)-w(\d+)-c(\d+)-s(\d+)-r(\d+)-([\w-]+)\.txt", f.name)
    scheme, w, c, s, r, proxy = m.groups()
    runs[(scheme, int(w), int(c), int(s))][proxy].append(parse(f) + host(f) + (int(r),))

print((out / "meta.txt").read_text())
print("| scheme | workers | conns | body | proxy | median req/s | p50 ms | p99 ms | CPU µs/req (user + sys) | host: loop ms / loopback µs | errors | sluice ÷ proxy (req/s), per round: median (range) |")
print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|")
idle = {k: v for k, v in runs.items() if k[0] == "idle"}
for key in idle:
    del runs[key]
for key in sorted(runs):
    scheme, w, c, s = key
    med = {}
    for proxy, rs in runs[key].items():
        med[proxy] = (statistics.median(x[0] for x in rs),
                      statistics.median(x[1] for x in rs if x[1] is not None) if any(x[1] for x in rs) else None,
                      statistics.median(x[2] for x in rs if x[2] is not None) if any(x[2] for x in rs) else None,
                      sum(x[3] for x in rs), sum((x[4] for x in rs), collections.Counter()),
                      median_of(x[6][0] for x in rs if x[6]), median_of(x[6][1] for x in rs if x[6]), median_of(x[5][0] for x in rs if x[5]), median_of(x[5][1] for x in rs if x[5]))
    # Sluice's req/s ÷ the peer's, round by round.
    by_round = {proxy: {x[7]: x[0] for x in rs} for proxy, rs in runs[key].items()}
    def paired(peer):
        ours, theirs = by_round.get("sluice", {}), by_round.get(peer, {})
        rs = sorted(ours[r] / theirs[r] for r in ours if r in theirs and theirs[r])
        if not rs: return ""
        return f"{statistics.median(rs):.2f}" + (f" ({rs[0]:.2f}–{rs[-1]:.2f})" if len(rs) > 1 else "")
    order = ["sluice", "nginx", "haproxy", "sluice-off", "sluice-obs"]
    for proxy in order + sorted(p for p in med if p not in order):
        if proxy not in med: continue
        rps, p50, p99, errs, sock, user, sys_, spin, loopback = med[proxy]
        if proxy == "sluice-obs" and "sluice-off" in med and med["sluice-off"][0]:
            ratio = f"obs ÷ off = {rps / med['sluice-off'][0]:.3f}"
        else:
            ratio = "" if proxy.startswith("sluice") or not rps else paired(proxy)
        e = describe(errs, sock)
        print(f"| {scheme} | {w} | {c} | {s} B | {proxy} | {rps:,.0f} | {p50 if p50 is not None else '-':.3} | {p99 if p99 is not None else '-':.3} | "
              f"{f'{user:.1f} + {sys_:.1f}' if user is not None else '-'} | {f'{spin:.0f} / {loopback:.1f}' if spin is not None else '-'} | {e} | {ratio} |")

if idle:
    print()
    print("Idle keep-alive connections (one request each, then silent): resident memory per connection,")
    print("median of the rounds; lower is better, so Sluice's ratio is peer ÷ Sluice.")
    print()
    print("| workers | connections | proxy | KiB per connection | failed | peer ÷ sluice |")
    print("|---:|---:|---|---:|---:|---:|")
    for key in sorted(idle):
        _, w, c, _ = key
        med = {p: (statistics.median(x[0] for x in rs), sum(x[3] for x in rs)) for p, rs in idle[key].items()}
        for proxy in ["sluice", "nginx", "haproxy"] + sorted(p for p in med if p not in ("sluice", "nginx", "haproxy")):
            if proxy not in med: continue
            kib, failed = med[proxy]
            ratio = "" if proxy == "sluice" or "sluice" not in med or not med["sluice"][0] else f"{kib / med['sluice'][0]:.2f}"
            print(f"| {w} | {c} | {proxy} | {kib:.2f} | {failed} | {ratio} |")
