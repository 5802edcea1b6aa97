#!/usr/bin/env bash
# `make run`: three echo backends on 127.0.0.1:9001-9003 and the proxy serving ingress-rules/.
# The backends are ended by PID when the proxy exits (Ctrl-C).
set -euo pipefail
bin=${1:-.build/release/sluice}
http=${2:-127.0.0.1:8080}
https=${3:-127.0.0.1:8443}
tport=${https##*:}
port=${http##*:}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for spec in shop:9001 api:9002 apps:9003; do
  name=${spec%%:*}; p=${spec##*:}
  "$bin" echo --listen "127.0.0.1:$p" --name "$name" &
  pids+=($!)
done
cat <<MSG

Sluice demo: ingress-rules/ served on http://$http and https://$https (Ctrl-C stops everything)
Try:
  curl --cacert certs/dev-ca/ca.crt --resolve shop.local:$tport:127.0.0.1 https://shop.local:$tport/api/v1/items
  curl --cacert certs/dev-ca/ca.crt --resolve shop.local:$tport:127.0.0.1 https://shop.local:$tport/
  curl -i -H 'Host: shop.local' http://$http/cart        # 308 to https (shop.local has TLS)
  curl -H 'Host: blog.apps.local' http://$http/anything  # wildcard host (ssl-redirect off)
  curl -H 'Host: api.local' http://$http/v2/things
  curl --http2 --cacert certs/dev-ca/ca.crt --resolve shop.local:$tport:127.0.0.1 https://shop.local:$tport/   # HTTP/2 (ALPN)
  curl --http2-prior-knowledge -H 'Host: api.local' http://$http/v2/things                                   # h2c
  curl http://$http/unmatched                            # the default backend
  open http://127.0.0.1:9901/   (status page; /metrics, /routes, /upstreams, /config)
  ./.build/release/sluice routes --rules ingress-rules
  ./.build/release/sluice explain --rules ingress-rules http://shop.local/api/v1

MSG
"$bin" serve --rules ingress-rules --certs certs --http "$http" --https "$https" --access-log stdout --access-log-format combined &
pids+=($!)
wait "${pids[-1]}"
