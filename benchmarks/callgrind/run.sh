#!/usr/bin/env bash
# Instructions per proxied request in the whole proxy (NIO, OpenSSL, nghttp2 and the Swift runtime
# included), counted by callgrind: repeatable within about half a percent, where time on this shared
# machine varies by ten percent. Sluice (one worker) runs under callgrind in front of
# `sluice echo`; each scenario sends N and then 3N requests on new client connections (h2load),
# and the difference divided by 2N is the cost of one request, with handshakes and warm-up
# cancelled. Kernel work is not counted (callgrind sees user space only).
#
#   benchmarks/callgrind/run.sh                   (SCENARIOS="http https h2" N=2000)
#   ANNOTATE=1 SCENARIOS=h2 benchmarks/callgrind/run.sh     (+ the costliest functions)
#
# valgrind 3.19 needs two work-arounds here: the binary is measured with its debug information
# stripped (it cannot read the DWARF 5 that Swift 6.3 writes; the symbol table stays), and
# sigsuspend-shim.c is preloaded (see there).
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-.build/release/sluice}
N=${N:-2000}
SCENARIOS=${SCENARIOS:-"http https h2"}
command -v valgrind >/dev/null || { echo "valgrind is missing (make bench-deps installs it)" >&2; exit 1; }
out=benchmarks/out/callgrind-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/rules"
gcc -O2 -shared -fPIC -o "$out/sigsuspend-shim.so" benchmarks/callgrind/sigsuspend-shim.c
strip -g -o "$out/sluice" "$SLUICE"
./scripts/dev-certs.sh "$out/certs" >/dev/null
source benchmarks/lib.sh
trap stop_started EXIT

"$out/sluice" echo --listen 127.0.0.1:18380 --name backend >/dev/null 2>&1 & pids+=($!)
LD_PRELOAD="$PWD/$out/sigsuspend-shim.so" valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$PWD/$out/callgrind.%p" \
  "$out/sluice" serve --rules "$out/rules" --certs "$out/certs" --http 127.0.0.1:18381 --https 127.0.0.1:18391 \
  --admin 127.0.0.1:18399 --workers 1 --default-backend 127.0.0.1:18380 --log-level warning >"$out/sluice.log" 2>&1 &
proxy=$!; pids+=($proxy)
wait_port 18380; wait_port 18381; wait_port 18391
callgrind_control -i on "$proxy" >/dev/null 2>&1

total() { callgrind_annotate "$1" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,; }
# One dump of the requests of one load: zero the counters, load, dump; prints the dump's file.
measure() {  # NAME REQUESTS LOAD...
  local name=$1 n=$2; shift 2
  callgrind_control -z "$proxy" >/dev/null 2>&1
  "$@" -n "$n" >"$out/$name.txt" 2>&1
  # Every request answered 2xx: a failing upstream would be counted as an error path, not a request.
  grep -qE "^status codes: $n 2xx" "$out/$name.txt" || { echo "load $name failed: see $out/$name.txt" >&2; exit 1; }
  callgrind_control -d "$name" "$proxy" >/dev/null 2>&1
  sleep 0.5
  ls -t "$out"/callgrind.$proxy.* | head -1
}

echo "| scenario | instructions per request |"
echo "|---|---:|"
for s in $SCENARIOS; do
  case $s in
    http)  load=(h2load --h1 -t1 -c10 http://127.0.0.1:18381/) ;;
    https) load=(h2load --h1 -t1 -c10 https://127.0.0.1:18391/) ;;
    h2)    load=(h2load -t1 -c10 -m10 https://127.0.0.1:18391/) ;;
    *) echo "unknown scenario $s" >&2; exit 1 ;;
  esac
  "${load[@]}" -n 500 >/dev/null 2>&1  # warm: upstream pool, first-time allocations
  small=$(measure "$s-small" "$N" "${load[@]}")
  large=$(measure "$s-large" $((3 * N)) "${load[@]}")
  echo "| $s | $(( ($(total "$large") - $(total "$small")) / (2 * N) )) |"
  echo "$small $large" >"$out/$s.files"
done | tee "$out/instructions.md"

if [ -n "${ANNOTATE:-}" ]; then
  for s in $SCENARIOS; do
    echo
    echo "## $s: instructions per request by function (self cost)"
    read -r small large <"$out/$s.files"
    python3 benchmarks/callgrind/per-function.py "$small" "$large" $((2 * N)) | (swift demangle --simplified 2>/dev/null || cat) | cut -c1-150
  done
fi
echo "(raw callgrind files in $out)"
