# Sourced by the benchmark scripts: nginx's and haproxy's configurations as proxies, kept in one
# place so that every script measures the same peers. The caller sets out (its output folder, with
# certs/default/tls.{crt,key} and certs/combined.pem), BACKEND_PORT, PORT[nginx], TLSPORT[nginx],
# PORT[haproxy], TLSPORT[haproxy], WORKER_CONNS and HAPROXY_MAXCONN; scheme=https-full turns TLS
# session resumption off. Also the common nginx backend (start_backend) and the loop-floor tool
# (build_loop_floor).

# https-full turns session resumption off in all three.
full_handshakes() { [ "${scheme:-}" = https-full ]; }

nginx_conf() {  # workers read-timeout-seconds
  local sessions="ssl_session_cache shared:SSL:10m;"
  full_handshakes && sessions="ssl_session_cache off; ssl_session_tickets off;"
  cat <<CONF
worker_processes $1;
daemon off;
pid $PWD/$out/nginx-proxy.pid;
error_log $PWD/$out/nginx-proxy-error.log notice;
events { worker_connections $WORKER_CONNS; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:${PORT[nginx]} reuseport;
    listen 127.0.0.1:${TLSPORT[nginx]} ssl http2 reuseport;
    ssl_certificate $PWD/$out/certs/default/tls.crt;
    ssl_certificate_key $PWD/$out/certs/default/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    $sessions
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; proxy_read_timeout $2s; }
  }
}
CONF
}

haproxy_conf() {  # threads read-timeout-seconds
  local global="" bind=""
  full_handshakes && { global="  tune.ssl.cachesize 0"; bind=" no-tls-tickets"; }
  cat <<CONF
global
  nbthread $1
  maxconn $HAPROXY_MAXCONN
$global
defaults
  mode http
  timeout connect 5s
  timeout client 75s
  timeout server $2s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  bind 127.0.0.1:${TLSPORT[haproxy]} ssl crt $PWD/$out/certs/combined.pem ssl-min-ver TLSv1.2 alpn h2,http/1.1$bind
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BACKEND_PORT
CONF
}

# MARK: the common backend and the loop-floor tool

# The backend every proxy is measured in front of: nginx, one worker, fixed bodies of 13 B,
# 1 KiB and 64 KiB under $out/www. Started in the background; its PID joins `pids` (lib.sh) and
# is left in `backend`.
start_backend() {
  mkdir -p "$out/www"
  printf 'Hello, world!' > "$out/www/13"
  head -c 1024 /dev/zero | tr '\0' 'a' > "$out/www/1024"
  head -c 65536 /dev/zero | tr '\0' 'b' > "$out/www/65536"
  cat > "$out/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $PWD/$out/backend.pid;
error_log $PWD/$out/backend-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND_PORT reuseport; root $PWD/$out/www; location / { default_type text/plain; } }
}
CONF
  nginx -c "$PWD/$out/backend.conf" -p "$PWD/$out" >"$out/backend.log" 2>&1 &
  backend=$!
  pids+=("$backend")
}

# benchmarks/loop-floor, built with the shipped binary's flags (the Makefile's RELEASE_FLAGS and
# LINK_FLAGS), copied to $out/loop-floor.
build_loop_floor() {
  local flags=(-Xswiftc -enforce-exclusivity=unchecked -Xswiftc -Xfrontend -Xswiftc -enable-lexical-lifetimes=false
    --static-swift-stdlib -Xswiftc -use-ld=lld)
  swift build -c release --package-path benchmarks/loop-floor "${flags[@]}" >/dev/null
  cp "$(swift build -c release --package-path benchmarks/loop-floor --show-bin-path "${flags[@]}")/LoopFloor" "$out/loop-floor"
}
