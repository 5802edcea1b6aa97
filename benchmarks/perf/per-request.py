"""User time per proxied request by function, from `perf record -g` samples of the proxy.

    per-request.py RATE A.data:REQUESTS [A2.data:REQUESTS ...] [-- B.data:REQUESTS ...]

RATE is the sampling frequency (Hz per thread). Each sample stands for 1/RATE s of one thread's
user time; dividing by the requests served while recording gives nanoseconds per request. Time
in the reference-counting entry points (swift_retain, swift_release, ...) is listed a second
time under the function that called them, which is where it can be removed. With `--`, the
profiles after it are a second binary, and the rows are sorted by the difference A - B.
"""
import collections
import re
import subprocess
import sys

ARC = ("swift_retain", "swift_release", "swift_isUniquelyReferenced", "swift_bridgeObjectRetain",
       "swift_bridgeObjectRelease")


def samples(path):
    """Counter of row -> samples for one perf.data file."""
    text = subprocess.run(["perf", "script", "-i", path], capture_output=True, text=True).stdout
    rows = collections.Counter()
    frames = []

    def flush():
        if not frames:
            return
        leaf = frames[0]
        rows["(all user time)"] += 1
        rows[leaf] += 1
        if any(leaf.startswith(a) for a in ARC):
            rows["(reference counting)"] += 1
            caller = frames[1] if len(frames) > 1 else "?"
            rows["  %s <- %s" % (leaf.split("_nonNull")[0], caller)] += 1

    for line in text.splitlines():
        if not line.strip():
            flush()
            frames = []
        elif line[0] in " \t":
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                frames.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1].split(" (")[0]))
    flush()
    return rows


def per_request(specs, rate):
    total = collections.Counter()
    requests = 0
    for spec in specs:
        path, n = spec.rsplit(":", 1)
        total.update(samples(path))
        requests += int(n)
    return {k: v / rate * 1e9 / requests for k, v in total.items()}


rate = float(sys.argv[1])
args = sys.argv[2:]
if "--" in args:
    a = per_request(args[:args.index("--")], rate)
    b = per_request(args[args.index("--") + 1:], rate)
    keys = sorted(set(a) | set(b), key=lambda k: -abs(a.get(k, 0) - b.get(k, 0)))
    print("%9s %9s %9s  %s" % ("A ns/req", "B ns/req", "A - B", "function"))
    for k in sorted(keys[:45], key=lambda k: -(a.get(k, 0) - b.get(k, 0))):
        print("%9.0f %9.0f %9.0f  %s" % (a.get(k, 0), b.get(k, 0), a.get(k, 0) - b.get(k, 0), k[:150]))
else:
    a = per_request(args, rate)
    print("%9s  %s" % ("ns/req", "function"))
    for k in sorted(a, key=lambda k: -a[k])[:60]:
        print("%9.0f  %s" % (a[k], k[:150]))
