"""Microseconds per request by process and by kernel path, from system.sh's whole-machine samples.

    system.py OUT RECORD_SECONDS PROXY...

For each PROXY-ROUND in OUT: the run's req/s (wrk), the processes (PROXY-ROUND.pids) and the
samples (PROXY-ROUND.data, cpu-clock at 1 kHz on every CPU). One sample is 1 ms of one CPU, so
samples / (req/s * seconds) * 1000 is microseconds per request. Prints the median over rounds.
"""
import collections
import re
import statistics
import subprocess
import sys

RATE = 1000  # perf record -F
# Kernel paths inside the proxy, by a function on the sample's stack (inclusive).
PATHS = [
    ("epoll_wait", "do_epoll_wait"),
    ("  re-poll of ready sockets", "ep_item_poll.isra.0"),
    ("read / recv", "sock_recvmsg"),
    ("write / send", "tcp_sendmsg"),
    ("  peer's receive, run by the sender", "tcp_v4_rcv"),
    ("  waking the peer", "sock_def_readable"),
    ("fdget_pos (read, write)", "fdget_pos"),
    ("fdget (recv, send, writev)", "fdget"),
    ("scheduler", "schedule"),
]


def samples(path, groups):
    """Per group: sample count, and for the proxy: user samples and samples per kernel path."""
    text = subprocess.run(["perf", "script", "-i", path, "-F", "pid,ip,sym,dso"], capture_output=True, text=True).stdout
    count = collections.Counter()
    proxy_user = 0
    proxy_paths = collections.Counter()
    for block in text.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if not lines:
            continue
        try:
            pid = int(lines[0].split()[0])
        except (ValueError, IndexError):
            continue
        group = "idle" if pid == 0 else groups.get(pid, "other")
        count[group] += 1
        if group != "proxy":
            continue
        frames = [ln.strip() for ln in lines[1:]]
        if frames and "[kernel.kallsyms]" not in frames[0]:
            proxy_user += 1
        # A frame: "address symbol (object)".
        names = {f.split(" ", 1)[1].rsplit(" (", 1)[0] for f in frames if " " in f}
        for label, fn in PATHS:
            if fn in names:
                proxy_paths[label] += 1
    return count, proxy_user, proxy_paths


def main():
    out, seconds, proxies = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    r = 1
    while True:
        found = False
        for p in proxies:
            base = f"{out}/{p}-{r}"
            try:
                wrk = open(base + ".wrk").read()
            except FileNotFoundError:
                continue
            found = True
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
            groups = {}
            for line in open(base + ".pids"):
                name, *ids = line.split()
                for i in ids:
                    groups[int(i)] = name
            count, user, paths = samples(base + ".data", groups)
            per = 1e6 / RATE / (rps * seconds)  # µs per request for one sample
            row = rows[p]
            row["req/s"].append(rps)
            for g in ("proxy", "backend", "wrk", "idle", "other"):
                row[g].append(count[g] * per)
            row["proxy user"].append(user * per)
            row["proxy kernel"].append((count["proxy"] - user) * per)
            for label, _ in PATHS:
                row[label].append(paths[label] * per)
        if not found:
            break
        r += 1
    keys = ["req/s", "proxy", "proxy user", "proxy kernel"] + [label for label, _ in PATHS] + ["backend", "wrk", "idle", "other"]
    print(f"µs per request (median of {r - 1} rounds; req/s as measured; the proxy's kernel paths are inclusive)\n")
    print("| | " + " | ".join(proxies) + " |")
    print("|---|" + "---:|" * len(proxies))
    for k in keys:
        cells = []
        for p in proxies:
            v = rows[p][k]
            cells.append(("%.0f" % statistics.median(v)) if k == "req/s" else ("%.2f" % statistics.median(v)) if v else "-")
        print(f"| {k} | " + " | ".join(cells) + " |")


main()
