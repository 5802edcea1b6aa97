#if canImport(Glibc)
import Glibc
#endif
import SluiceRouting

/// libFuzzer entry: arbitrary text through the manifest loader and the route compiler, then a
/// lookup. Nothing may crash; problems are fine.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let set = ManifestLoader.load(text: text, file: "fuzz.yaml")
    var options = RoutingOptions()
    options.resolve = { _ in [] }
    let compiled = RouteCompiler.compile(set, options: options)
    _ = compiled.table.lookup(host: "a.example.com", path: "/x/y")
    _ = compiled.table.listing
    return 0
}

#if !FUZZING
/// Without libFuzzer (a plain `swift build`), replay the files named on the command line.
@main
struct Replay {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let f = fopen(path, "rb") else { continue }
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = fread(&buf, 1, buf.count, f)
                if n <= 0 { break }
                bytes += buf[0..<n]
            }
            fclose(f)
            _ = bytes.withUnsafeBufferPointer { fuzz($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
        }
    }
}
#endif
