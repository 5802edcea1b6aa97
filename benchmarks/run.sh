#!/usr/bin/env bash
# Side-by-side HTTP/1.1 benchmark: Sluice, nginx and haproxy in front of one nginx backend, all on
# 127.0.0.1, interleaved (A B C, A B C, …), every load run bounded by wrk's -d.
# Writes benchmarks/out/<timestamp>/ (raw wrk output) and prints a Markdown summary of ratios.
#
#   ROUNDS=3 DURATION=10 WORKERS="1 2" CONNS="50 256" SIZES="13 1024 65536" PROXIES="sluice nginx haproxy" \
#   SCHEMES="http https https-close" ./benchmarks/run.sh
# PROXIES may also name the floors, for plain http only: pipe (`sluice bench-pipe`, a blind TCP
# pipe on NIOPosix), loop-floor (benchmarks/loop-floor: the same pipe and handler under NIOCore's
# pipeline on an epoll loop and socket channel of our own; one thread, so WORKERS=1 only) and
# raw-pipe (benchmarks/callgrind/raw-pipe.c, the same on raw epoll).
# https: keep-alive over TLS; https-close: a new connection per request (wrk resumes sessions,
# so mostly abbreviated handshakes); https-full: the same with session resumption off in all three
# proxies (no tickets, no session cache), so every connection is a full handshake;
# http-close: a new TCP connection per request without TLS; h2: HTTP/2 over TLS with h2load
# (CONNS connections, 10 streams each), latency percentiles from h2load's per-request log;
# idle: IDLE_CONNS keep-alive connections that made one request each and then stay silent, and the
# proxy's resident memory per connection (benchmarks/idle-clients.py); reload: plain keep-alive
# while each proxy's routing configuration is changed and reloaded every RELOAD_EVERY seconds
# (Sluice: a rule file rewritten and renamed over, as kubectl or an editor would; nginx: its
# config rewritten and SIGHUP to the master, which is what `nginx -s reload` and ingress-nginx do;
# haproxy: its config rewritten and SIGUSR2 to the master in master-worker mode). The change
# flips the upstream read timeout of the route under load between 60 and 61 s, so every reload
# replaces the route the requests use. Errors (non-2xx and socket errors) are the result.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-"1 2"}
# The issue's matrix by default: bodies and 256 connections where they matter (plain keep-alive),
# 50 and 256 for TLS keep-alive, 50 for handshakes and h2 (h2load -c50 -m10). CONNS and SIZES,
# when set, apply to every scheme.
CONNS_SET=${CONNS:-}
SIZES_SET=${SIZES:-}
PROXIES=${PROXIES:-"sluice nginx haproxy"}
SCHEMES=${SCHEMES:-"http https https-close https-full h2 idle reload reload-https reload-h2"}
RELOAD_EVERY=${RELOAD_EVERY:-1}
conns_for() { [ -n "$CONNS_SET" ] && { echo "$CONNS_SET"; return; }; case $1 in http|https) echo "50 256" ;; *) echo 50 ;; esac; }
sizes_for() { [ -n "$SIZES_SET" ] && { echo "$SIZES_SET"; return; }; case $1 in http) echo "13 1024 65536" ;; *) echo 13 ;; esac; }
SLUICE=${SLUICE:-.build/release/sluice}
# 9,000 by default: haproxy checks for two descriptors per maxconn at start, and the hard limit
# here is 20,000 (not raisable in this container); Sluice and nginx run at 10,000 with IDLE_CONNS.
IDLE_CONNS=${IDLE_CONNS:-9000}
# Room for the idle scenario's connections (each also needs a descriptor in the proxy).
WORKER_CONNS=4096
HAPROXY_MAXCONN=8000
case " $SCHEMES " in *" idle "*) WORKER_CONNS=$((IDLE_CONNS * 2 + 1000)); HAPROXY_MAXCONN=$((IDLE_CONNS + 500)) ;; esac
BACKEND_PORT=18080
# sluice-off: metrics and access log off; sluice-obs: metrics on and a JSON access log to a file
# (the cost of observability is sluice-obs ÷ sluice-off in the same run).
declare -A PORT=([sluice]=18081 [nginx]=18082 [haproxy]=18083 [sluice-off]=18081 [sluice-obs]=18081 [pipe]=18084 [raw-pipe]=18085 [loop-floor]=18086)
declare -A TLSPORT=([sluice]=18091 [nginx]=18092 [haproxy]=18093 [sluice-off]=18091 [sluice-obs]=18091)
out=benchmarks/out/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/www"
./scripts/dev-certs.sh "$out/certs" >/dev/null
cat "$out/certs/default/tls.crt" "$out/certs/default/tls.key" > "$out/certs/combined.pem"
source benchmarks/lib.sh
source benchmarks/peers.sh
trap stop_started EXIT
gcc -O2 -o "$out/spin" benchmarks/spin.c
case " $PROXIES " in *" raw-pipe "*) gcc -O2 -o "$out/raw-pipe" benchmarks/callgrind/raw-pipe.c ;; esac
case " $PROXIES " in *" loop-floor "*) build_loop_floor ;; esac

start_backend


start_proxy() {  # name workers → pid
  local name=$1 w=$2 port=${PORT[$1]}
  case $name in
    sluice|sluice-off|sluice-obs)
      local obs=()
      [ "$name" = sluice-off ] && obs=(--metrics off --access-log off)
      [ "$name" = sluice-obs ] && obs=(--metrics on --access-log "$out/access.log" --access-log-format json)
      [ "${scheme:-}" = https-full ] && obs+=(--tls-session-resumption off)
      local rules=(--rules "$out/empty-rules" --default-backend 127.0.0.1:$BACKEND_PORT)
      if [[ "${scheme:-}" == reload* ]]; then
        sluice_rules 60 > "$out/reload-rules/bench.yaml"
        rules=(--rules "$out/reload-rules")
      fi
      "$SLUICE" serve "${rules[@]}" --certs "$out/certs" --http 127.0.0.1:$port --https 127.0.0.1:${TLSPORT[$name]} \
        --admin 127.0.0.1:18099 --workers "$w" --log-level warning "${obs[@]}" >"$out/$name.log" 2>&1 &
      ;;
    # The floors (plain http only): a blind pipe on NIOPosix channels, and the same on raw epoll.
    pipe)
      "$SLUICE" bench-pipe --listen 127.0.0.1:$port --to 127.0.0.1:$BACKEND_PORT --threads "$w" >"$out/pipe.log" 2>&1 &
      ;;
    raw-pipe)
      "$out/raw-pipe" "$port" $BACKEND_PORT "$w" >"$out/raw-pipe.log" 2>&1 &
      ;;
    loop-floor)
      "$out/loop-floor" "$port" $BACKEND_PORT >"$out/loop-floor.log" 2>&1 &
      ;;
    nginx)
      nginx_conf "$w" 60 > "$out/nginx-proxy.conf"
      nginx -c "$PWD/$out/nginx-proxy.conf" -p "$PWD/$out" >"$out/nginx-proxy.log" 2>&1 &
      ;;
    haproxy)
      haproxy_conf "$w" 60 > "$out/haproxy.cfg"
      # -W: master-worker, so SIGUSR2 reloads (the reload scheme); -db: stay in the foreground.
      haproxy -W -db -f "$out/haproxy.cfg" >"$out/haproxy.log" 2>&1 &
      ;;
  esac
  echo $!
}

# MARK: configurations (the reload scheme writes them again with another read timeout)

# nginx_conf, haproxy_conf: benchmarks/peers.sh (sourced above).

sluice_rules() {  # read-timeout-seconds: one Ingress for every host and path, to the backend
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: bench}
spec:
  ports: [{name: http, port: 80, targetPort: $BACKEND_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: bench, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: $BACKEND_PORT}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: bench
  annotations: {sluice.io/read-timeout: "$1s"}
spec:
  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}]}}]
YAML
}

# One reload of proxy $1 (pid $2, workers $3), the read timeout flipped by the parity of $4.
reload_proxy() {
  local timeout=$((60 + $4 % 2))
  case $1 in
    sluice*)
      sluice_rules $timeout > "$out/reload-rules/.bench.yaml.tmp"
      mv "$out/reload-rules/.bench.yaml.tmp" "$out/reload-rules/bench.yaml"
      ;;
    nginx) nginx_conf "$3" $timeout > "$out/nginx-proxy.conf"; kill -HUP "$2" ;;
    haproxy) haproxy_conf "$3" $timeout > "$out/haproxy.cfg"; kill -USR2 "$2" ;;
  esac
}

# How many reloads proxy $1 applied during the run, from its own account.
reloads_applied() {
  case $1 in
    sluice*) curl -s http://127.0.0.1:18099/config | python3 -c 'import json,sys; print(json.load(sys.stdin)["reloads"])' 2>/dev/null || echo "?" ;;
    nginx) grep -c "start worker processes" "$out/nginx-proxy-error.log" || true ;;
    # the first "Loading success" is the start
    haproxy) echo $(( $(grep -c "Loading success" "$out/haproxy.log" || true) - 1 )) ;;
  esac
}

# MARK: the host's speed and the proxy's CPU, around each measured run

# CPU ticks of a proxy, "user system": its own and its direct children's, which are nginx's and
# haproxy's workers under their masters.
cpu_ticks() {  # pid
  local user=0 sys=0 p u k
  for p in $1 $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    # utime and stime are fields 14 and 15; the command name before them may hold spaces, so
    # the fields are counted from its ")".
    read -r u k < <(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
    user=$((user + u)); sys=$((sys + k))
  done
  echo "$user $sys"
}
# Writes RUN.host: the host's speed just before the run (benchmarks/spin.c: a CPU loop and TCP
# round trips over loopback) and the proxy's user and system CPU during it, which summarize.py
# turns into CPU per request.
# A failed probe leaves "-" in the file rather than stopping the benchmark.
measure_begin() {
  read -r spin_ms loopback_us < <("$out/spin" || true) || true
  spin_ms=${spin_ms:--}; loopback_us=${loopback_us:--}
  read -r user_before sys_before < <(cpu_ticks "$1")
}
measure_end() {  # pid run
  local user sys
  read -r user sys < <(cpu_ticks "$1")
  printf 'spin_ms %s\nloopback_us %s\nuser_ticks %s\nsys_ticks %s\nticks_per_second %s\n' "$spin_ms" "$loopback_us" \
    "$((user - user_before))" "$((sys - sys_before))" "$(getconf CLK_TCK)" > "$2.host"
}

mkdir -p "$out/empty-rules" "$out/reload-rules"
wait_port $BACKEND_PORT
{
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024/1024)" GiB"}' /proc/meminfo), $(uname -r)"
  echo "versions: $("$SLUICE" --version 2>/dev/null || echo sluice-dev) | $(nginx -v 2>&1) | $(haproxy -v | head -1) | $(wrk -v 2>&1 | head -1)"
  echo "settings: rounds=$ROUNDS duration=${DURATION}s workers=[$WORKERS] schemes=[$SCHEMES] conns=[${CONNS_SET:-by scheme}] sizes=[${SIZES_SET:-by scheme}]"
} > "$out/meta.txt"

for scheme in $SCHEMES; do
for w in $WORKERS; do
  for c in $(conns_for "$scheme"); do
    for size in $(sizes_for "$scheme"); do
      for r in $(seq "$ROUNDS"); do
        for p in $PROXIES; do
          case $p in *pipe) [ "$scheme" = http ] || continue ;; loop-floor) [ "$scheme" = http ] && [ "$w" = 1 ] || continue ;; esac
          pid=$(start_proxy "$p" "$w")
          pids+=("$pid")
          wait_port "${PORT[$p]}"
          case $scheme in
            http|reload) url="http://127.0.0.1:${PORT[$p]}/$size"; extra=() ;;
            http-close) url="http://127.0.0.1:${PORT[$p]}/$size"; extra=(-H "Connection: close") ;;
            https) wait_port "${TLSPORT[$p]}"; url="https://127.0.0.1:${TLSPORT[$p]}/$size"; extra=() ;;
            https-close|https-full) wait_port "${TLSPORT[$p]}"; url="https://127.0.0.1:${TLSPORT[$p]}/$size"; extra=(-H "Connection: close") ;;
            h2|reload-https|reload-h2) wait_port "${TLSPORT[$p]}"; url="https://127.0.0.1:${TLSPORT[$p]}/$size"; extra=() ;;
            idle) url=""; extra=() ;;
          esac
          run="$out/$scheme-w$w-c$c-s$size-r$r-$p"
          if [ "$scheme" = idle ]; then
            run="$out/$scheme-w$w-c$IDLE_CONNS-s13-r$r-$p"
            timeout 300 python3 benchmarks/idle-clients.py "${PORT[$p]}" "$IDLE_CONNS" "$pid" > "$run.txt" 2>&1 || true
          elif [ "$scheme" = h2 ]; then
            # warm the upstream pool, then measure; h2load stops itself after -D seconds
            h2load -t1 -c"$c" -m10 -D1 "$url" >/dev/null 2>&1 || true
            measure_begin "$pid"
            h2load -t1 -c"$c" -m10 -D"$DURATION" --log-file="$run.log" "$url" > "$run.txt" 2>&1 || true
            measure_end "$pid" "$run"
          elif [[ "$scheme" == reload* ]]; then
            : > "$out/nginx-proxy-error.log"
            if [ "$scheme" = reload-h2 ]; then
              # h2load does not open a new connection for one the proxy ends (GOAWAY, close):
              # a connection lost to a reload is a client lost for the rest of the run.
              h2load -t1 -c"$c" -m10 -D1 "$url" >/dev/null 2>&1 || true
              h2load -t1 -c"$c" -m10 -D"$DURATION" --log-file="$run.log" "$url" > "$run.txt" 2>&1 &
            else
              wrk -t1 -c"$c" -d1s "$url" >/dev/null 2>&1 || true
              wrk -t1 -c"$c" -d"${DURATION}s" --latency "$url" > "$run.txt" 2>&1 &
            fi
            load=$!
            sent=0
            for i in $(seq $(python3 -c "print(int(($DURATION - 0.5) / $RELOAD_EVERY))")); do
              sleep "$RELOAD_EVERY"
              reload_proxy "$p" "$pid" "$w" "$i"
              sent=$i
            done
            wait "$load" || true
            echo "reloads: sent $sent, applied $(reloads_applied "$p")" >> "$run.txt"
          else
            wrk -t1 -c"$c" -d1s "${extra[@]}" "$url" >/dev/null 2>&1 || true
            measure_begin "$pid"
            wrk -t1 -c"$c" -d"${DURATION}s" --latency "${extra[@]}" "$url" > "$run.txt" 2>&1 || true
            measure_end "$pid" "$run"
          fi
          kill "$pid" 2>/dev/null || true
          wait "$pid" 2>/dev/null || true
          sleep 0.5
        done
      done
    done
  done
done
done
python3 benchmarks/summarize.py "$out" | tee "$out/summary.md"
