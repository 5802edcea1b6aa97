#!/usr/bin/env bash
# libFuzzer runs of the HTTP/1 parser (requests and responses: the first input byte picks) and the
# manifest loader, each bounded by FUZZ_SECONDS (default 60). Seeds: the llhttp corpus (when present), hand-made requests, and ingress-rules/.
# Crashes land in .fuzz/<target>/ as crash-* files, which the replay build can re-run:
#   swift build --product FuzzHTTP1Parser && .build/debug/FuzzHTTP1Parser .fuzz/FuzzHTTP1Parser/crash-…
# (or .build-fuzz/FuzzHTTP1Parser CRASHFILE, which runs the one input).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
corpus=${LLHTTP_CORPUS:-../shared/corpora/llhttp}
# The targets are built with swiftc and clang directly, each library as its own module with
# -sanitize=fuzzer,address. (Built through SwiftPM's --sanitize fuzzer, the library modules came
# out with or without coverage instrumentation from one build to the next, and libFuzzer then ran
# blind.) Each build is checked for its coverage counters before it runs.
swift package resolve >/dev/null
out=.build-fuzz
rm -rf "$out" && mkdir -p "$out"
flags=(-sanitize=fuzzer,address -Onone -g -parse-as-library)
yams=.build/checkouts/Yams/Sources
# SluiceHTTP1 without ReceiveBuffer.swift, its only file that needs NIO (a ByteBuffer helper).
swiftc "${flags[@]}" -emit-library -static -module-name SluiceHTTP1 -emit-module -emit-module-path "$out/SluiceHTTP1.swiftmodule" \
  $(ls Sources/SluiceHTTP1/*.swift | grep -v ReceiveBuffer.swift) -o "$out/libSluiceHTTP1.a"
swiftc "${flags[@]}" -D FUZZING -I "$out" -L "$out" -lSluiceHTTP1 Sources/FuzzHTTP1Parser/*.swift -o "$out/FuzzHTTP1Parser"
for c in "$yams"/CYaml/src/*.c; do
  clang -c -O1 -g -fsanitize=fuzzer-no-link,address -I "$yams/CYaml/include" "$c" -o "$out/cyaml-$(basename "$c" .c).o"
done
ar rcs "$out/libCYaml.a" "$out"/cyaml-*.o
swiftc "${flags[@]}" -D SWIFT_PACKAGE -emit-library -static -module-name Yams -I "$yams/CYaml/include" \
  -emit-module -emit-module-path "$out/Yams.swiftmodule" "$yams"/Yams/*.swift -o "$out/libYams.a"
swiftc "${flags[@]}" -emit-library -static -module-name SluiceRouting -I "$out" -I "$yams/CYaml/include" \
  -emit-module -emit-module-path "$out/SluiceRouting.swiftmodule" Sources/SluiceRouting/*.swift -o "$out/libSluiceRouting.a"
swiftc "${flags[@]}" -D FUZZING -I "$out" -I "$yams/CYaml/include" -L "$out" -lSluiceRouting -lYams -lCYaml \
  Sources/FuzzManifestLoader/*.swift -o "$out/FuzzManifestLoader"
for target in FuzzHTTP1Parser FuzzManifestLoader; do
  counters=$("$out/$target" -runs=0 2>&1 | sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline 8-bit counters.*/\1/p' | head -1)
  if [ "${counters:-0}" -lt 3000 ]; then echo "$target: only ${counters:-0} coverage counters: not instrumented"; exit 1; fi
  echo "$target: $counters coverage counters"
done
mkdir -p .fuzz/FuzzHTTP1Parser/seeds .fuzz/FuzzManifestLoader/seeds .fuzz/FuzzHTTP1Parser/corpus .fuzz/FuzzManifestLoader/corpus
python3 - "$corpus" .fuzz/FuzzHTTP1Parser/seeds <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
n = 0
def write(kind, raw):
    global n
    n += 1
    with open(os.path.join(dst, f"seed-{n}"), "wb") as f:
        f.write(bytes([0 if kind == "request" else 1]) + raw)
for raw in [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n"]:
    write("request", raw)
write("response", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
if os.path.isdir(src):
    for sub in ("request", "response"):
        d = os.path.join(src, sub)
        for name in sorted(os.listdir(d)):
            text = open(os.path.join(d, name), encoding="utf-8").read()
            for block in re.findall(r"```http\n(.*?)```", text, re.S):
                s = block.replace("\\\n", "").replace("\n", "\r\n")
                s = s.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t").replace("\\0", "\0")
                write(sub, s.encode("utf-8", "surrogateescape"))
print(f"{n} parser seeds")
PY
cp ingress-rules/*.yaml .fuzz/FuzzManifestLoader/seeds/
status=0
for target in FuzzHTTP1Parser FuzzManifestLoader; do
  echo "fuzzing $target for ${seconds}s"
  (cd .fuzz/$target && "../../$out/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 corpus seeds 2>&1 | grep -E "INITED|DONE|ERROR|SUMMARY|crash|stat::number_of_executed_units|stat::peak" ) || status=1
  # A run that found no coverage at all did not test anything.
  [ -n "$(ls -A .fuzz/$target/corpus 2>/dev/null)" ] || { echo "$target: empty corpus after the run"; status=1; }
  mkdir -p .fuzz/$target/corpus
done
ls .fuzz/*/crash-* 2>/dev/null && status=1
exit $status
