#!/usr/bin/env bash
# Where the whole machine's time goes while each proxy is loaded: perf samples every CPU (kernel
# included; we run as root here) for a few seconds in the middle of a wrk run, and system.py turns
# the samples into microseconds per request for each process (the proxy, the nginx backend, wrk),
# the idle time, and, inside the proxy, user time and the kernel paths a proxied request takes
# (epoll, reads, writes, the loopback TCP send and the receive it runs for the peer).
#
#   benchmarks/perf/system.sh          (PROXIES="sluice nginx haproxy pipe" CONNS=256 ROUNDS=3)
#   PROXIES="pipe loop-floor" benchmarks/perf/system.sh   (the floors: see benchmarks/run.sh)
#
# Same backend and peers as benchmarks/run.sh (one worker each, 13-byte body, plain HTTP/1.1).
# The run answers two questions that req/s alone cannot: is the proxy the bottleneck (the host is
# busy and the proxy takes most of it) or is time lost elsewhere; and does a proxy's kernel time
# per request differ from another's, and on which path. Time per request on this shared machine
# moves by tens of percent from minute to minute: compare proxies within a round.
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-.build/release/sluice}
PROXIES=${PROXIES:-"sluice nginx haproxy pipe"}
CONNS=${CONNS:-256}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-13}
RECORD=${RECORD:-4}
command -v perf >/dev/null || { echo "perf is missing (make bench-deps installs linux-perf)" >&2; exit 1; }
BACKEND_PORT=18080
declare -A PORT=([sluice]=18081 [nginx]=18082 [haproxy]=18083 [pipe]=18084 [loop-floor]=18086)
declare -A TLSPORT=([sluice]=18091 [nginx]=18092 [haproxy]=18093)
WORKER_CONNS=4096
HAPROXY_MAXCONN=8000
out=benchmarks/out/system-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/empty-rules"
./scripts/dev-certs.sh "$out/certs" >/dev/null
cat "$out/certs/default/tls.crt" "$out/certs/default/tls.key" > "$out/certs/combined.pem"
source benchmarks/lib.sh
source benchmarks/peers.sh
trap stop_started EXIT
case " $PROXIES " in *" loop-floor "*) build_loop_floor ;; esac
start_backend
wait_port $BACKEND_PORT

for r in $(seq "$ROUNDS"); do
  for p in $PROXIES; do
    case $p in
      sluice)
        "$SLUICE" serve --rules "$out/empty-rules" --default-backend 127.0.0.1:$BACKEND_PORT --certs "$out/certs" \
          --http 127.0.0.1:${PORT[sluice]} --https 127.0.0.1:${TLSPORT[sluice]} --admin 127.0.0.1:18099 --workers 1 \
          --log-level warning >"$out/sluice.log" 2>&1 & ;;
      loop-floor) "$out/loop-floor" ${PORT[loop-floor]} $BACKEND_PORT >"$out/loop-floor.log" 2>&1 & ;;
      pipe) "$SLUICE" bench-pipe --listen 127.0.0.1:${PORT[pipe]} --to 127.0.0.1:$BACKEND_PORT --threads 1 >"$out/pipe.log" 2>&1 & ;;
      nginx) nginx_conf 1 60 > "$out/nginx-proxy.conf"; nginx -c "$PWD/$out/nginx-proxy.conf" -p "$PWD/$out" >"$out/nginx-proxy.log" 2>&1 & ;;
      haproxy) haproxy_conf 1 60 > "$out/haproxy.cfg"; haproxy -W -db -f "$out/haproxy.cfg" >"$out/haproxy.log" 2>&1 & ;;
      *) echo "unknown proxy $p" >&2; exit 1 ;;
    esac
    proxy=$!; pids+=($proxy)
    wait_port "${PORT[$p]}"
    run="$out/$p-$r"
    url="http://127.0.0.1:${PORT[$p]}/$SIZE"
    wrk -t1 -c"$CONNS" -d1s "$url" >/dev/null 2>&1 || true   # warm the upstream pool
    # The proxy's processes (nginx's and haproxy's workers are children of their masters), the
    # backend's, and wrk's, for system.py to group the samples by.
    { echo "proxy $proxy $(pgrep -P "$proxy" | tr '\n' ' ')"; echo "backend $backend $(pgrep -P "$backend" | tr '\n' ' ')"; } > "$run.pids"
    wrk -t1 -c"$CONNS" -d"$((RECORD + 3))s" "$url" > "$run.wrk" 2>&1 &
    load=$!
    echo "wrk $load" >> "$run.pids"
    sleep 1.5
    perf record -a -g -e cpu-clock -F 1000 -o "$run.data" -- sleep "$RECORD" >/dev/null 2>&1
    wait $load || true
    kill "$proxy"; wait "$proxy" 2>/dev/null || true
    grep -q "Requests/sec" "$run.wrk" || { echo "load failed: see $run.wrk" >&2; exit 1; }
    sleep 0.5
  done
done
python3 benchmarks/perf/system.py "$out" "$RECORD" $PROXIES | tee "$out/summary.md"
echo "(perf data in $out)"
