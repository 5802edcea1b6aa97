"""Self cost per operation of each function, from two callgrind files of the same workload at two
sizes: (large - small) / operations. Used by benchmarks/callgrind/run.sh and
benchmarks/hotpath/instructions.sh; prints the 30 costliest and a total per shared object."""
import re
import subprocess
import sys


def costs(path):
    text = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            name = m.group(2).replace("???:", "")
            out[name] = out.get(name, 0) + int(m.group(1).replace(",", ""))
    return out


small, large, operations = costs(sys.argv[1]), costs(sys.argv[2]), float(sys.argv[3])
rows = sorted(((large.get(k, 0) - small.get(k, 0)) / operations, k) for k in set(small) | set(large))
objects = {}
for per, name in rows:
    m = re.search(r"\[([^\]]*)\]$", name)
    obj = m.group(1).split("/")[-1] if m else "?"
    objects[obj] = objects.get(obj, 0) + per
print("by object: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(objects.items(), key=lambda x: -x[1]) if v >= 50))
for per, name in reversed(rows[-30:]):
    if per >= 0.5:
        short = re.sub(r" *\[[^\]]*\]$", "", name)
        print(f"{per:8.1f}  {short}")
