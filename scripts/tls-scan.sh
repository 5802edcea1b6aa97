#!/usr/bin/env bash
# Extended TLS check: sslscan against a running sluice with development certificates.
# Fails when an old protocol, a non-forward-secret or non-AEAD TLS 1.2 suite, compression or
# renegotiation is offered. Every process started here is ended by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SLUICE:-.build/release/sluice}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
./scripts/dev-certs.sh "$work/certs" >/dev/null
mkdir -p "$work/rules"
"$bin" serve --rules "$work/rules" --certs "$work/certs" --http 127.0.0.1:0 --https 127.0.0.1:18443 >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q 'serving https' "$work/log" && break; sleep 0.1; done
sslscan --no-colour 127.0.0.1:18443 | tee "$work/scan"
fail=0
grep -E '^(SSLv2|SSLv3|TLSv1\.0|TLSv1\.1) +enabled' "$work/scan" && { echo "FAIL: an old protocol is enabled"; fail=1; }
grep -E '^(Preferred|Accepted) +TLSv1\.2' "$work/scan" | grep -vE 'ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)' && { echo "FAIL: a weak TLS 1.2 suite"; fail=1; }
grep -qiE 'Compression disabled|does not support compression' "$work/scan" || { echo "FAIL: compression not reported disabled"; fail=1; }
grep -iE 'Insecure session renegotiation supported|Session renegotiation supported' "$work/scan" | grep -vi 'not supported' && { echo "FAIL: renegotiation"; fail=1; }
[ $fail = 0 ] && echo "tls-scan: no weak protocol, suite, compression or renegotiation"
exit $fail
