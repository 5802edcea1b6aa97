"""Objects whose reference count more than one thread wrote, from `perf record -g` of uprobes on
swift_retain and swift_release that capture the object (see shared-objects.sh).

    shared-objects.py PROBE.data [ROWS]
"""
import collections
import re
import subprocess
import sys

text = subprocess.run(["perf", "script", "-i", sys.argv[1], "-F", "tid,event,trace,ip,sym"],
                      capture_output=True, text=True).stdout
threads = collections.defaultdict(set)
calls = collections.Counter()
callers = collections.defaultdict(collections.Counter)
obj = None
depth = 0
for line in text.splitlines():
    m = re.match(r"\s*(\d+)\s+probe_libswiftCore:\w+:.*obj=(0x[0-9a-f]+|\d+)", line)
    if m and int(m.group(2), 0) == 0:
        obj = None  # a retain or release of nil writes nothing
    elif m:
        obj, depth = m.group(2), 0
        threads[obj].add(m.group(1))
        calls[obj] += 1
    elif obj is not None and line.strip():
        depth += 1
        if depth == 2:  # the first frame is swift_retain/release itself, the second its caller
            parts = line.strip().split(None, 1)
            callers[obj][parts[1] if len(parts) > 1 else "?"] += 1
    else:
        obj = None
total = sum(calls.values())
shared = [o for o in calls if len(threads[o]) > 1]
in_shared = sum(calls[o] for o in shared)
print(f"{total} retains and releases recorded; {in_shared} ({100.0 * in_shared / max(total, 1):.1f} %) "
      "on objects that more than one thread wrote:")
for o in sorted(shared, key=lambda o: -calls[o])[:int(sys.argv[2]) if len(sys.argv) > 2 else 12]:
    top = "; ".join(f"{c[:90]} x{n}" for c, n in callers[o].most_common(4))
    print(f"{calls[o]:8d}  object {int(o, 0):#x}  threads {len(threads[o])}  {top}")
