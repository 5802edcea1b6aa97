#!/usr/bin/env bash
# `make run`: three echo backends on 127.0.0.1:9001-9003 and the proxy serving ingress-rules/.
# The backends are ended by PID when the proxy exits (Ctrl-C).
set -euo pipefail
bin=${1:-.build/release/sluice}
http=${2:-127.0.0.1:8080}
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

Sluice demo: ingress-rules/ served on http://$http (Ctrl-C stops everything)
Try:
  curl -H 'Host: shop.local' http://$http/
  curl -H 'Host: shop.local' http://$http/api/v1/items
  curl -H 'Host: blog.apps.local' http://$http/anything
  curl http://$http/unmatched            # the default backend
  ./.build/release/sluice routes --rules ingress-rules
  ./.build/release/sluice explain --rules ingress-rules http://shop.local/api/v1

MSG
"$bin" serve --rules ingress-rules --certs certs --http "$http" &
pids+=($!)
wait "${pids[-1]}"
