#!/usr/bin/env bash
# Route table benchmark: 10,000 Ingresses over 2,000 hosts → load, compile, lookups per second.
# Targets (issue 3): compile ≤ 250 ms, lookup ≤ 200 ns on the 2-core development machine.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${SLUICE:-.build/release/sluice}" bench-routes --ingresses "${INGRESSES:-10000}" --hosts "${HOSTS:-2000}" --rounds "${ROUNDS:-5}"
