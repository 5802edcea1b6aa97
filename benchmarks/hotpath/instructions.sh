#!/usr/bin/env bash
# Instructions per operation on the hot path, counted by callgrind: repeatable to the instruction
# for the same binary and input whatever else the machine does, unlike time on this shared machine.
# Each case of HotPathInstructions (the operations of HotPathCases, which the ordo-one benchmark
# times) runs at N and 2N iterations with collection only inside its measured loop; the difference
# divided by N is the cost of one operation, with setup and one-time costs cancelled.
#
#   benchmarks/hotpath/instructions.sh                  (N=10000, every case)
#   CASES="parse-get route" ANNOTATE=1 benchmarks/hotpath/instructions.sh
#
# ANNOTATE=1 also prints the functions that cost most per operation. valgrind 3.19 cannot read the
# DWARF 5 that Swift 6.3 writes, so the binary is measured with its debug info stripped (the symbol
# table stays, so functions keep their names).
set -euo pipefail
cd "$(dirname "$0")"
N=${N:-10000}
CASES=${CASES:-"parse-get parse-post parse-response route balance-roundRobin balance-leastRequest balance-ewma balance-consistentHash"}
command -v valgrind >/dev/null || { echo "valgrind is missing (make bench-deps installs it)" >&2; exit 1; }
# The flags of the shipped binary (the Makefile's RELEASE_FLAGS) unless told otherwise.
read -r -a flags <<<"${RELEASE_FLAGS--Xswiftc -enforce-exclusivity=unchecked}"
swift build -c release --product HotPathInstructions "${flags[@]}" >/dev/null
out=../out/instructions-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
strip -g -o "$out/HotPathInstructions" "$(swift build -c release --show-bin-path "${flags[@]}")/HotPathInstructions"

collected() {  # CASE ITERATIONS -> instructions inside `measured`
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$1.$2" --toggle-collect='*measured*' \
    "$out/HotPathInstructions" "$1" "$2" 2>"$out/valgrind.$1.$2.log" >/dev/null
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/valgrind.$1.$2.log"
}

echo "| case | instructions per operation |"
echo "|---|---:|"
for c in $CASES; do
  a=$(collected "$c" "$N")
  b=$(collected "$c" $((2 * N)))
  [ -n "$a" ] && [ -n "$b" ] || { echo "callgrind failed on $c: see $out/valgrind.$c.*.log" >&2; exit 1; }
  echo "| $c | $(( (b - a) / N )) |"
done | tee "$out/instructions.md"

if [ -n "${ANNOTATE:-}" ]; then
  for c in $CASES; do
    echo
    echo "## $c: instructions per operation by function (self cost)"
    python3 ../callgrind/per-function.py "$out/callgrind.$c.$N" "$out/callgrind.$c.$((2 * N))" "$N" \
      | (swift demangle --simplified 2>/dev/null || cat) | cut -c1-150
  done
fi
echo "(raw callgrind files in benchmarks/out/$(basename "$out"))"
