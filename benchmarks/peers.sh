# Sourced by the benchmark scripts: nginx's and haproxy's configurations as proxies, kept in one
# place so that every script measures the same peers. The caller sets out (its output folder, with
# certs/default/tls.{crt,key} and certs/combined.pem), BACKEND_PORT, PORT[nginx], TLSPORT[nginx],
# PORT[haproxy], TLSPORT[haproxy], WORKER_CONNS and HAPROXY_MAXCONN; scheme=https-full turns TLS
# session resumption off.

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
