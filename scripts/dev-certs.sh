#!/usr/bin/env bash
# Creates a local development CA and certificates for the demo hosts, once.
# certs/dev-ca/ca.crt is the CA to trust (curl --cacert certs/dev-ca/ca.crt ...).
set -euo pipefail
dir=${1:-certs}
mkdir -p "$dir"
if [ -f "$dir/default/tls.crt" ] && [ -f "$dir/default/tls.key" ]; then
  exit 0
fi
mkdir -p "$dir/dev-ca" "$dir/default"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=Sluice development CA" -keyout "$dir/dev-ca/ca.key" -out "$dir/dev-ca/ca.crt" 2>/dev/null
make_cert() {  # name, CN, SANs
  local name=$1 cn=$2 sans=$3
  mkdir -p "$dir/$name"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
    -keyout "$dir/$name/tls.key" -out "$dir/$name/tls.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name/tls.csr" -CA "$dir/dev-ca/ca.crt" -CAkey "$dir/dev-ca/ca.key" \
    -CAcreateserial -days 825 -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth' "$sans") \
    -out "$dir/$name/tls.crt" 2>/dev/null
  rm -f "$dir/$name/tls.csr"
}
make_cert default localhost "DNS:localhost,IP:127.0.0.1"
make_cert shop-tls shop.local "DNS:shop.local"
make_cert wildcard-apps-tls '*.apps.local' "DNS:*.apps.local"
echo "development certificates created in $dir/ (trust with: curl --cacert $dir/dev-ca/ca.crt ...)"
