#!/usr/bin/env python3
"""Calls per request from each call site to the functions named, from two callgrind dumps.

    benchmarks/callgrind/callsites.py SMALL LARGE swift_retain,swift_release 4000 \\
        | swift demangle --simplified

SMALL and LARGE are the two dumps a scenario of run.sh writes (its `<scenario>.files`), 4000 the
requests between them (2N). Each row: calls per request, the call instruction's address, the
function called, the caller. Run with CALLGRIND_OPTS='--dump-instr=yes' so that the addresses
are those of the calls; `objdump -d` of the unstripped binary around an address then shows what
is being retained.
"""
import collections
import re
import sys


def parse(path, targets):
    names = {}

    def name(token):
        # Names are compressed: "(12) full name" the first time, "(12)" after.
        m = re.match(r'\((\d+)\)(?: (.*))?', token)
        if not m:
            return token
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names[m.group(1)]

    fn = cfn = None
    last = 0
    pending = None
    out = collections.Counter()
    for line in open(path):
        line = line.rstrip('\n')
        if line.startswith('fn='):
            fn = name(line[3:])
        elif line.startswith('cfn='):
            cfn = name(line[4:])
        elif line.startswith('calls='):
            pending = int(line.split()[0][6:])
        elif line and line[0] in '0123456789+-*':
            token = line.split()[0]
            # Positions are absolute, relative to the previous one (+n, -n) or the same (*).
            if token.startswith('0x'):
                position = int(token, 16)
            elif token[0] in '+-':
                step = int(token[1:], 16) if token[1:].startswith('0x') else int(token[1:])
                position = last + step if token[0] == '+' else last - step
            elif token == '*':
                position = last
            else:
                position = int(token)
            last = position
            if pending is not None:
                if cfn and any(t in cfn for t in targets):
                    out[(fn, hex(position), cfn)] += pending
                pending = None
    return out


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    small, large, targets, requests = sys.argv[1], sys.argv[2], sys.argv[3].split(','), float(sys.argv[4])
    a, b = parse(small, targets), parse(large, targets)
    rows = sorted((((b[k] - a.get(k, 0)) / requests), k) for k in b)
    for per_request, (caller, address, callee) in reversed(rows):
        if per_request >= 0.5:
            print("%5.2f %s %s %s" % (per_request, address, callee.split()[0], caller))


if __name__ == '__main__':
    main()
