#!/usr/bin/env bash
# `make soak`: wrk for SOAK_SECONDS (default 600) against the proxy while the rules are rewritten
# every RELOAD_EVERY seconds (rename-over saves) and one of three backends flaps (killed, then
# restarted, every FLAP_EVERY seconds). Samples the proxy's RSS every 10 s and prints the curve,
# wrk's summary and the reload count. Every process is started here and ended by PID; wrk stops
# itself after -d. Output: benchmarks/out/soak-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-600}
RELOAD_EVERY=${RELOAD_EVERY:-3}
FLAP_EVERY=${FLAP_EVERY:-10}
BIN=${SLUICE:-.build/release/sluice}
out=benchmarks/out/soak-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/rules"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=($(free_port) $(free_port) $(free_port))
proxy_port=$(free_port)
for i in 0 1 2; do
  "$BIN" echo --listen "127.0.0.1:${ports[$i]}" --name "b$i" >"$out/echo$i.log" 2>&1 & pids+=($!)
done
flapper_pid_file="$out/flapping.pid"
echo "${pids[2]}" > "$flapper_pid_file"
{
  cat <<YAML
apiVersion: v1
kind: Service
metadata:
  name: pool
  annotations: {sluice.io/health-check-path: /healthz, sluice.io/health-check-interval: 1s, sluice.io/health-check-healthy-threshold: "1", sluice.io/health-check-unhealthy-threshold: "2"}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
YAML
  for i in 0 1 2; do cat <<YAML
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pool-$i, labels: {kubernetes.io/service-name: pool}}
addressType: IPv4
ports: [{name: http, port: ${ports[$i]}}]
endpoints: [{addresses: [127.0.0.1]}]
YAML
  done
} > "$out/rules/pool.yaml"
write_ingress() {  # generation → a rename-over save that changes the routes
  local g=$1
  cat > "$out/rules/.site.yaml.tmp" <<YAML
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  rules:
  - host: soak.local
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: pool, port: {number: 80}}}}]}
  - host: gen$g.soak.local
    http: {paths: [{path: /g$g, pathType: Prefix, backend: {service: {name: pool, port: {number: 80}}}}]}
YAML
  mv "$out/rules/.site.yaml.tmp" "$out/rules/site.yaml"
}
write_ingress 0
"$BIN" serve --rules "$out/rules" --http "127.0.0.1:$proxy_port" --https 127.0.0.1:0 --admin 127.0.0.1:0 --workers 2 \
  --log-level info >"$out/proxy.log" 2>&1 & proxy=$!; pids+=($proxy)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$proxy_port) 2>/dev/null && break; sleep 0.1; done
echo "soak: ${SECONDS_TOTAL}s, reload every ${RELOAD_EVERY}s, backend b2 flapping every ${FLAP_EVERY}s; output in $out"
wrk -t2 -c100 -d"${SECONDS_TOTAL}s" --latency -H "Host: soak.local" "http://127.0.0.1:$proxy_port/" > "$out/wrk.txt" 2>&1 & wrk_pid=$!; pids+=($wrk_pid)
start=$(date +%s); g=0; last_flap=$start; flapping_up=1
echo "seconds,rss_kib" > "$out/rss.csv"
next_sample=$start
while kill -0 "$wrk_pid" 2>/dev/null; do
  now=$(date +%s)
  if [ "$now" -ge "$next_sample" ]; then
    echo "$((now - start)),$(awk '/VmRSS/ {print $2}' /proc/$proxy/status)" >> "$out/rss.csv"
    next_sample=$((next_sample + 10))
  fi
  g=$((g + 1)); write_ingress $g
  if [ $((now - last_flap)) -ge "$FLAP_EVERY" ]; then
    last_flap=$now
    if [ $flapping_up = 1 ]; then
      kill -9 "$(cat "$flapper_pid_file")" 2>/dev/null || true; flapping_up=0
    else
      "$BIN" echo --listen "127.0.0.1:${ports[2]}" --name b2 >>"$out/echo2.log" 2>&1 & pids+=($!); echo $! > "$flapper_pid_file"; flapping_up=1
    fi
  fi
  sleep "$RELOAD_EVERY"
done
wait "$wrk_pid" || true
alive=$(kill -0 "$proxy" 2>/dev/null && echo yes || echo NO)
echo "== wrk"; grep -E "requests in|Non-2xx|Socket errors|Requests/sec|99%" "$out/wrk.txt" || true
echo "== proxy alive at the end: $alive"
echo "== reloads applied: $(grep -c 'reload applied' "$out/proxy.log" || true) of $g rule writes"
echo "== ejections: $(grep -c 'endpoint ejected' "$out/proxy.log" || true), failed health checks: $(grep -c 'failed its health checks' "$out/proxy.log" || true)"
echo "== RSS (KiB) every 10 s:"; tr '\n' ' ' < "$out/rss.csv"; echo
python3 - "$out/rss.csv" <<'PY'
import csv, sys
rows = [(int(r["seconds"]), int(r["rss_kib"])) for r in csv.DictReader(open(sys.argv[1]))]
if len(rows) > 3:
    first = rows[len(rows) // 4][1]; last = rows[-1][1]
    print(f"RSS after warm-up {first} KiB, at the end {last} KiB, max {max(r[1] for r in rows)} KiB, growth {last - first:+d} KiB")
PY
[ "$alive" = yes ]
