#!/usr/bin/env bash
# Heap allocations and reference-counting operations per proxied request, counted in the real proxy
# under real load: Sluice runs with an LD_PRELOAD counter (malloc-count.c) in front of `sluice
# echo`, and the counts taken across a bounded wrk/h2load run are divided by the requests it
# completed. Everything the process does in that window is included (timers, access log, metrics),
# so they are upper bounds for the forwarding path itself. ARC operations are retains plus releases
# of non-null objects called from the binary (NIO's included); swift_retain and swift_release
# are atomic, so this is the repeatable measure of what was ~12 % of the proxy's CPU in perf.
#
#   benchmarks/allocs/run.sh            (SCENARIOS="http https h2" DURATION=5)
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-.build/release/sluice}
DURATION=${DURATION:-5}
SCENARIOS=${SCENARIOS:-"http https h2"}
out=benchmarks/out/allocs-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
gcc -O2 -shared -fPIC -o "$out/malloc-count.so" benchmarks/allocs/malloc-count.c -lpthread
./scripts/dev-certs.sh "$out/certs" >/dev/null
mkdir -p "$out/rules"
source benchmarks/lib.sh
trap stop_started EXIT

"$SLUICE" echo --listen 127.0.0.1:18280 --name backend >/dev/null 2>&1 & pids+=($!)
MALLOC_COUNT_FILE="$PWD/$out/count" LD_PRELOAD="$PWD/$out/malloc-count.so" \
  "$SLUICE" serve --rules "$out/rules" --certs "$out/certs" --http 127.0.0.1:18281 --https 127.0.0.1:18291 \
  --admin 127.0.0.1:18299 --workers 1 --default-backend 127.0.0.1:18280 --log-level warning >"$out/sluice.log" 2>&1 & pids+=($!)
wait_port 18280; wait_port 18281; wait_port 18291

counts() { sleep 0.3; cat "$out/count"; }

echo "| scenario | requests | allocations | per request | ARC operations per request |"
echo "|---|---:|---:|---:|---:|"
for s in $SCENARIOS; do
  case $s in
    http)  load=(wrk -t1 -c50 -d"${DURATION}s" http://127.0.0.1:18281/) ;;
    https) load=(wrk -t1 -c50 -d"${DURATION}s" https://127.0.0.1:18291/) ;;
    h2)    load=(h2load -t1 -c50 -m10 -D"$DURATION" https://127.0.0.1:18291/) ;;
  esac
  # Warm: connections, upstream pool, first-time allocations.
  if [ "$s" = h2 ]; then h2load -t1 -c50 -m10 -D1 https://127.0.0.1:18291/ >/dev/null 2>&1 || true
  else wrk -t1 -c50 -d1s "${load[@]: -1}" >/dev/null 2>&1 || true; fi
  read -r a _ ra la < <(counts)
  "${load[@]}" > "$out/$s.txt" 2>&1 || true
  read -r b _ rb lb < <(counts)
  if [ "$s" = h2 ]; then
    n=$(sed -n 's/^requests: [0-9]* total, [0-9]* started, [0-9]* done, \([0-9]*\) succeeded.*/\1/p' "$out/$s.txt")
  else
    n=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$out/$s.txt")
  fi
  # The load's own connections open and close inside the window; with 50 kept-alive connections
  # that setup is spread over every request.
  arc=$(( (rb - ra) + (lb - la) ))
  echo "| $s (c=50, keep-alive) | $n | $((b - a)) | $(python3 -c "print(f'{($b - $a) / max(1, $n):.2f}')") | $(python3 -c "print(f'{$arc / max(1, $n):.0f}')") |"
done
