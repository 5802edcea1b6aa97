#!/usr/bin/env bash
# Where a proxied request's user time goes, including what instruction counts cannot show:
# atomic operations, cache lines moving between the cores, cache misses. perf samples the running
# proxy (cpu-clock, user space: this VM has no hardware counters) while h2load loads it, and
# per-request.py turns the samples into nanoseconds of user time per request, by function, with
# the reference counting listed again under its callers.
#
#   benchmarks/perf/profile.sh                    (SCENARIO=h2 WORKERS=2 DURATION=5 ROUNDS=1)
#   BASE=/tmp/sluice-before ROUNDS=3 benchmarks/perf/profile.sh   (two binaries, alternated;
#                                                  rows sorted by the difference, this one - BASE)
#
# Scenarios: h2 (h2load -cCONNS -m10 over TLS), https and http (h2load --h1 -cCONNS); CONNS=50
# unless set. Sluice runs in
# front of `sluice echo` on 127.0.0.1:18480-18499. Time here varies by ten percent from minute to
# minute: compare two binaries only within one alternated run, and confirm a gain with the
# callgrind count or a side-by-side run.
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-.build/release/sluice}
BASE=${BASE:-}
SCENARIO=${SCENARIO:-h2}
WORKERS=${WORKERS:-2}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-1}
CONNS=${CONNS:-50}
RATE=4000
command -v perf >/dev/null || { echo "perf is missing (make bench-deps installs linux-perf)" >&2; exit 1; }
out=benchmarks/out/perf-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/rules"
./scripts/dev-certs.sh "$out/certs" >/dev/null
source benchmarks/lib.sh
trap stop_started EXIT

"$SLUICE" echo --listen 127.0.0.1:18480 --name backend >/dev/null 2>&1 & pids+=($!)
wait_port 18480
case $SCENARIO in
  h2) load=(h2load -t1 -c"$CONNS" -m10 https://127.0.0.1:18491/) ;;
  https) load=(h2load --h1 -t1 -c"$CONNS" https://127.0.0.1:18491/) ;;
  http) load=(h2load --h1 -t1 -c"$CONNS" http://127.0.0.1:18481/) ;;
  *) echo "unknown scenario $SCENARIO" >&2; exit 1 ;;
esac

# One profile: start BIN, warm it, record while the load runs. Prints "file:requests".
profile() {  # NAME BIN
  local name=$1 bin=$2
  "$bin" serve --rules "$out/rules" --certs "$out/certs" --http 127.0.0.1:18481 --https 127.0.0.1:18491 \
    --admin 127.0.0.1:18499 --workers "$WORKERS" --default-backend 127.0.0.1:18480 --log-level warning >"$out/$name.log" 2>&1 &
  local proxy=$!
  wait_port 18481; wait_port 18491
  "${load[@]}" -D 2 >/dev/null 2>&1  # warm: upstream pool, first-time allocations
  "${load[@]}" -D $((DURATION + 2)) >"$out/$name.load" 2>&1 &
  local loader=$!
  sleep 1
  perf record -e cpu-clock:u -F $RATE -g -o "$out/$name.data" -p "$proxy" -- sleep "$DURATION" >/dev/null 2>&1
  wait $loader
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  grep -qE "^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx" "$out/$name.load" || { echo "load $name failed: see $out/$name.load" >&2; exit 1; }
  local rps
  rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$out/$name.load")
  echo "$name: $rps req/s" >&2
  # Requests served while perf recorded: the run's rate over the recorded seconds.
  echo "$out/$name.data:$(python3 -c "print(int($rps * $DURATION))")"
}

a=() b=()
for r in $(seq "$ROUNDS"); do
  a+=("$(profile "a$r" "$SLUICE")")
  [ -n "$BASE" ] && b+=("$(profile "b$r" "$BASE")")
done
if [ -n "$BASE" ]; then
  python3 benchmarks/perf/per-request.py $RATE "${a[@]}" -- "${b[@]}" | (swift demangle --simplified 2>/dev/null || cat)
else
  python3 benchmarks/perf/per-request.py $RATE "${a[@]}" | (swift demangle --simplified 2>/dev/null || cat)
fi
echo "(perf data in $out)"
