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
#   SCENARIOS="https-close https-full" benchmarks/callgrind/run.sh   (a connection per request,
#                                                    N_CONNECTIONS=200: handshake included)
#   CACHE_SIM=1 benchmarks/callgrind/run.sh           (+ simulated cache misses per request)
#   CONNS=256 N=6000 benchmarks/callgrind/run.sh      (more client connections; N >= CONNS)
#   CALLGRIND_OPTS=--dump-instr=yes benchmarks/callgrind/run.sh   (per-instruction costs: then
#                                                    callsites.py counts calls per call site)
#   TARGET='/?bytes=65536' benchmarks/callgrind/run.sh (another request target: the echo backend
#                                                    answers `bytes=N` with a body of N bytes)
#   PROXY=haproxy benchmarks/callgrind/run.sh          (the same count for a peer: haproxy with one
#                                                    thread or nginx without a master, configured
#                                                    as in the side-by-side run, benchmarks/peers.sh)
#   PROXY=pipe SCENARIOS=http benchmarks/callgrind/run.sh   (`sluice bench-pipe`: a blind NIOPosix
#                                                    TCP pipe, the floor under any NIOPosix proxy)
#   PROXY=loop-floor SCENARIOS=http benchmarks/callgrind/run.sh   (benchmarks/loop-floor: the same
#                                                    pipe under NIOCore's pipeline on an epoll loop
#                                                    and socket channel of our own)
#   PROXY=raw-pipe SCENARIOS=http benchmarks/callgrind/run.sh   (raw-pipe.c: the same pipe straight
#                                                    on epoll, the floor of the kernel interface)
#
# valgrind 3.19 needs two work-arounds here: the binary is measured with its debug information
# stripped (it cannot read the DWARF 5 that Swift 6.3 writes; the symbol table stays), and
# sigsuspend-shim.c is preloaded (see there).
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-.build/release/sluice}
N=${N:-2000}
N_CONNECTIONS=${N_CONNECTIONS:-200}
SCENARIOS=${SCENARIOS:-"http https h2"}
PROXY=${PROXY:-sluice}
# Client connections of the keep-alive and h2 loads. More of them spread each request's state
# over more memory: with CACHE_SIM, CONNS=256 shows what that costs in cache misses.
CONNS=${CONNS:-10}
TARGET=${TARGET:-/}
case $PROXY in sluice|nginx|haproxy|pipe|raw-pipe|loop-floor) ;; *) echo "unknown proxy $PROXY (sluice, nginx, haproxy, pipe, raw-pipe, loop-floor)" >&2; exit 1 ;; esac
command -v valgrind >/dev/null || { echo "valgrind is missing (make bench-deps installs it)" >&2; exit 1; }
out=benchmarks/out/callgrind-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/rules"
gcc -O2 -shared -fPIC -o "$out/sigsuspend-shim.so" benchmarks/callgrind/sigsuspend-shim.c
strip -g -o "$out/sluice" "$SLUICE"
./scripts/dev-certs.sh "$out/certs" >/dev/null
cat "$out/certs/default/tls.crt" "$out/certs/default/tls.key" > "$out/certs/combined.pem"
source benchmarks/lib.sh
source benchmarks/peers.sh
trap stop_started EXIT

"$out/sluice" echo --listen 127.0.0.1:18380 --name backend >/dev/null 2>&1 & pids+=($!)
# CACHE_SIM=1: also simulate caches (32 KiB L1i, 48 KiB L1d, 1 MiB last level, fixed so that
# two binaries compare the same way on any host) and report misses per request.
opts=()
[ -n "${CACHE_SIM:-}" ] && opts=(--cache-sim=yes --I1=32768,8,64 --D1=49152,12,64 --LL=1048576,16,64)
# CALLGRIND_OPTS: more callgrind options, e.g. --dump-instr=yes to find which call site of a
# function retains (callsites.py, then the addresses against objdump -d).
read -r -a extra <<< "${CALLGRIND_OPTS:-}"
opts+=("${extra[@]}")
case $PROXY in
  sluice)
    LD_PRELOAD="$PWD/$out/sigsuspend-shim.so" valgrind --tool=callgrind --instr-atstart=no "${opts[@]}" \
      --callgrind-out-file="$PWD/$out/callgrind.%p" \
      "$out/sluice" serve --rules "$out/rules" --certs "$out/certs" --http 127.0.0.1:18381 --https 127.0.0.1:18391 \
      --admin 127.0.0.1:18399 --workers 1 --default-backend 127.0.0.1:18380 --log-level warning >"$out/sluice.log" 2>&1 &
    ;;
  pipe|raw-pipe|loop-floor)
    [ "$SCENARIOS" = http ] || { echo "the pipes have no TLS: SCENARIOS=http only" >&2; exit 1; }
    if [ "$PROXY" = pipe ]; then
      cmd=("$out/sluice" bench-pipe --listen 127.0.0.1:18381 --to 127.0.0.1:18380)
    elif [ "$PROXY" = loop-floor ]; then
      # Built with the shipped binary's flags (peers.sh), stripped of debug information as it is.
      build_loop_floor
      strip -g "$out/loop-floor"
      cmd=("$out/loop-floor" 18381 18380)
    else
      gcc -O2 -g -o "$out/raw-pipe" benchmarks/callgrind/raw-pipe.c
      cmd=("$out/raw-pipe" 18381 18380)
    fi
    # The shim as for Sluice (harmless for raw-pipe); set for valgrind itself: through `env`,
    # valgrind would follow env only, and the pipe would run outside it after the exec.
    LD_PRELOAD="$PWD/$out/sigsuspend-shim.so" valgrind --tool=callgrind --instr-atstart=no "${opts[@]}" \
      --callgrind-out-file="$PWD/$out/callgrind.%p" "${cmd[@]}" >"$out/$PROXY.log" 2>&1 &
    ;;
  nginx|haproxy)
    BACKEND_PORT=18380 WORKER_CONNS=4096 HAPROXY_MAXCONN=4000
    declare -A PORT=([$PROXY]=18381) TLSPORT=([$PROXY]=18391)
    if [ "$PROXY" = nginx ]; then
      # One process: the worker's requests are counted in the process callgrind follows.
      { echo "master_process off;"; nginx_conf 1 60; } > "$out/nginx-proxy.conf"
      cmd=(nginx -c "$PWD/$out/nginx-proxy.conf" -p "$PWD/$out")
    else
      haproxy_conf 1 60 > "$out/haproxy.cfg"
      cmd=(haproxy -db -f "$out/haproxy.cfg")
    fi
    valgrind --tool=callgrind --instr-atstart=no "${opts[@]}" --callgrind-out-file="$PWD/$out/callgrind.%p" \
      "${cmd[@]}" >"$out/$PROXY.log" 2>&1 &
    ;;
esac
proxy=$!; pids+=($proxy)
wait_port 18380; wait_port 18381; case $PROXY in *pipe|loop-floor) ;; *) wait_port 18391 ;; esac
callgrind_control -i on "$proxy" >/dev/null 2>&1

# The totals of a dump: instructions, and with CACHE_SIM the L1i, L1d, last-level instruction and
# last-level data misses (callgrind_annotate's columns: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw).
total() {
  callgrind_annotate "$1" 2>/dev/null | sed -n 's/^ *\(.*\) PROGRAM TOTALS.*/\1/p' | tr -d , | sed 's/([^)]*)//g' |
    awk -v sim="${CACHE_SIM:-}" '{ for (i = 1; i <= NF; i++) if ($i == ".") $i = 0; if (sim) print $1, $4, $5 + $6, $7, $8 + $9; else print $1 }'
}
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

if [ -n "${CACHE_SIM:-}" ]; then
  echo "| scenario | instructions per request | L1i misses | L1d misses | LL instruction misses | LL data misses |"
  echo "|---|---:|---:|---:|---:|---:|"
else
  echo "| scenario | instructions per request |"
  echo "|---|---:|"
fi
for s in $SCENARIOS; do
  case $s in
    http)  load=(h2load --h1 -t1 -c"$CONNS" "http://127.0.0.1:18381$TARGET") ;;
    https) load=(h2load --h1 -t1 -c"$CONNS" "https://127.0.0.1:18391$TARGET") ;;
    h2)    load=(h2load -t1 -c"$CONNS" -m10 "https://127.0.0.1:18391$TARGET") ;;
    # A new TLS connection per request, resumed as wrk resumes (https-close) or not (https-full).
    https-close) load=(python3 benchmarks/callgrind/tls-connections.py https://127.0.0.1:18391/) ;;
    https-full)  load=(python3 benchmarks/callgrind/tls-connections.py --full https://127.0.0.1:18391/) ;;
    *) echo "unknown scenario $s" >&2; exit 1 ;;
  esac
  # A connection per request costs a handshake each: fewer of them give the same precision.
  case $s in https-*) n=$N_CONNECTIONS ;; *) n=$N ;; esac
  "${load[@]}" -n $((n / 4)) >/dev/null 2>&1  # warm: upstream pool, first-time allocations
  small=$(measure "$s-small" "$n" "${load[@]}")
  large=$(measure "$s-large" $((3 * n)) "${load[@]}")
  python3 -c 'import sys; a, b, n = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[4])
print("| " + sys.argv[3] + " | " + " | ".join(str((int(y) - int(x)) // n) for x, y in zip(a, b)) + " |")' \
    "$(total "$small")" "$(total "$large")" "$s" $((2 * n))
  echo "$small $large" >"$out/$s.files"
done | tee "$out/instructions.md"

if [ -n "${ANNOTATE:-}" ]; then
  for s in $SCENARIOS; do
    echo
    echo "## $s: instructions per request by function (self cost)"
    read -r small large <"$out/$s.files"
    case $s in https-*) n=$N_CONNECTIONS ;; *) n=$N ;; esac
    python3 benchmarks/callgrind/per-function.py "$small" "$large" $((2 * n)) | (swift demangle --simplified 2>/dev/null || cat) | cut -c1-150
  done
fi
echo "(raw callgrind files in $out)"
