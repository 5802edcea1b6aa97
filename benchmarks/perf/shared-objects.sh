#!/usr/bin/env bash
# Reference counting on objects that more than one event loop touches. Every retain and release
# is an atomic write to the object's header; when two loops write the same object, its cache line
# moves between the cores each time, which costs far more than the write (and shows in no
# instruction count). perf's uprobes on swift_retain and swift_release record the object of each
# call for half a second under load (two workers); shared-objects.py lists the objects written
# from more than one thread, with the callers that wrote them.
#
#   benchmarks/perf/shared-objects.sh                     (SCENARIO=https: wrk -c50; http; h2)
#
# Needs root (uprobes). The program slows down a lot while probed, so read the counts as
# proportions. Objects in libswiftCore's data segment (the empty array) are immortal: their
# calls write nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-.build/release/sluice}
SCENARIO=${SCENARIO:-https}
command -v perf >/dev/null || { echo "perf is missing (make bench-deps installs linux-perf)" >&2; exit 1; }
core=$(ldd "$SLUICE" | awk '/libswiftCore.so/ {print $3}')
out=benchmarks/out/shared-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/rules"
./scripts/dev-certs.sh "$out/certs" >/dev/null
source benchmarks/lib.sh
cleanup() {
  stop_started
  perf probe -q -d 'probe_libswiftCore:sluice_*' 2>/dev/null || true
}
trap cleanup EXIT
perf probe -q -x "$core" 'sluice_retain=swift_retain obj=%di:u64'
perf probe -q -x "$core" 'sluice_release=swift_release obj=%di:u64'

"$SLUICE" echo --listen 127.0.0.1:18480 --name backend >/dev/null 2>&1 & pids+=($!)
"$SLUICE" serve --rules "$out/rules" --certs "$out/certs" --http 127.0.0.1:18481 --https 127.0.0.1:18491 \
  --admin 127.0.0.1:18499 --workers 2 --default-backend 127.0.0.1:18480 --log-level warning >"$out/sluice.log" 2>&1 &
proxy=$!; pids+=($proxy)
wait_port 18480; wait_port 18481; wait_port 18491
case $SCENARIO in
  h2) load=(h2load -t1 -c50 -m10 -D 6 https://127.0.0.1:18491/) ;;
  https) load=(wrk -t1 -c50 -d6s https://127.0.0.1:18491/) ;;
  http) load=(wrk -t1 -c50 -d6s http://127.0.0.1:18481/) ;;
  *) echo "unknown scenario $SCENARIO" >&2; exit 1 ;;
esac
"${load[@]}" >"$out/load.txt" 2>&1 &
loader=$!
sleep 2
perf record -q -e probe_libswiftCore:sluice_retain -e probe_libswiftCore:sluice_release -g -o "$out/probe.data" -p "$proxy" -- sleep 0.5 >/dev/null 2>&1
wait $loader
python3 benchmarks/perf/shared-objects.py "$out/probe.data" 12 | (swift demangle --simplified 2>/dev/null || cat) | cut -c1-300
