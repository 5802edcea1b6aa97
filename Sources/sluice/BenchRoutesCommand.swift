import ArgumentParser
import Foundation
import SluiceProxy
import SluiceRouting

/// `sluice bench-routes`: generates N Ingresses over H hosts, then reports load + compile time
/// and route lookups per second. Used by benchmarks/routes.sh; not part of the stable CLI.
struct BenchRoutes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-routes", abstract: "Benchmark rule loading, compiling and lookups.", shouldDisplay: false)

    @Option var ingresses = 10_000
    @Option var hosts = 2_000
    @Option var lookups = 2_000_000
    @Option var rounds = 5
    @Option(help: "Also write the generated manifests into this folder (for reload tests).")
    var write: String?

    @Option(help: "Split the written manifests into this many files.")
    var files = 1

    @Option(help: "Point every generated endpoint at this IP:PORT (a real backend, for reload benchmarks).")
    var endpoint: String?

    @Flag(help: "Only write the manifests; skip the measurements.")
    var writeOnly = false

    @Option(help: "With --write: time this many reloads, each adding one Ingress to one file (no traffic).")
    var reloads = 0

    /// A temporary file beside the target, then rename(2): a running Sluice watching the folder
    /// never reads half a file. (Foundation's `atomically: true` does the same through a
    /// `/tmp/TemporaryDirectory.*` that it leaves behind on Linux, one per file.)
    static func writeWhole(_ text: String, to path: String) throws {
        let tmp = (path as NSString).deletingLastPathComponent + "/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        try text.write(toFile: tmp, atomically: false, encoding: .utf8)
        guard rename(tmp, path) == 0 else {
            let e = errno
            try? FileManager.default.removeItem(atPath: tmp)
            throw ValidationError("cannot rename \(tmp) to \(path): errno \(e)")
        }
    }

    func run() throws {
        let yaml = SyntheticRules.generate(ingresses: ingresses, hosts: hosts, endpoint: endpoint)
        if let write {
            try FileManager.default.createDirectory(atPath: write, withIntermediateDirectories: true)
            let docs = yaml.components(separatedBy: "\n---\n")
            let per = (docs.count + files - 1) / max(1, files)
            for f in 0..<max(1, files) {
                let part = docs[min(docs.count, f * per)..<min(docs.count, (f + 1) * per)].joined(separator: "\n---\n")
                try Self.writeWhole(part, to: write + "/generated-\(f).yaml")
            }
            if writeOnly { return }
            if reloads > 0 {
                benchReloads(directory: write)
                return
            }
        }
        var loadTimes: [Double] = [], compileTimes: [Double] = []
        var compiled: CompiledRoutes? = nil
        for _ in 0..<rounds {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let set = ManifestLoader.load(text: yaml, file: "generated.yaml")
            let t1 = DispatchTime.now().uptimeNanoseconds
            let c = RouteCompiler.compile(set)
            let t2 = DispatchTime.now().uptimeNanoseconds
            loadTimes.append(Double(t1 - t0) / 1e6)
            compileTimes.append(Double(t2 - t1) / 1e6)
            compiled = c
        }
        guard let c = compiled else { return }
        if !c.errors.isEmpty { print("unexpected errors: \(c.errors.prefix(3))") }

        // Requests: a mix of exact hosts, wildcard hosts, deep and shallow paths, misses.
        var requests: [([UInt8], [UInt8])] = []
        var g = SystemRandomNumberGenerator()
        for i in 0..<4096 {
            let k = Int.random(in: 0..<ingresses, using: &g)
            let h = k % hosts
            var host = h < 50 ? "x\(i).wild\(h).example.com" : "host\(h).example.com"
            if i % 8 == 0 { host = "unknown\(i).example.net" }
            let path: String
            switch i % 4 {
            case 0: path = "/api/v\(k)/items/\(i)"
            case 1: path = "/static/app\(k).js"
            case 2: path = "/svc\(k)/deep/path/segment/\(i)"
            default: path = "/svc\(k)/shallow"
            }
            requests.append((Array(host.utf8), Array(path.utf8)))
        }
        var hits = 0
        var best = Double.infinity
        for _ in 0..<rounds {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for k in 0..<lookups {
                let (h, p) = requests[k & 4095]
                h.withUnsafeBytes { hb in p.withUnsafeBytes { pb in
                    if c.table.lookup(host: hb, path: pb) != nil { hits &+= 1 }
                } }
            }
            let t1 = DispatchTime.now().uptimeNanoseconds
            best = min(best, Double(t1 - t0) / Double(lookups))
        }
        func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        print("ingresses=\(ingresses) hosts=\(hosts) routes=\(c.table.routes.count) backends=\(c.table.backends.count) yaml=\(yaml.utf8.count / 1024) KiB")
        print(String(format: "load (YAML → objects): median %.1f ms", median(loadTimes)))
        print(String(format: "compile (objects → RouteTable): median %.1f ms", median(compileTimes)))
        print(String(format: "load + compile: median %.1f ms", median(zip(loadTimes, compileTimes).map { $0 + $1 })))
        print(String(format: "lookup: %.1f ns (best of %d rounds of %d), %.1f M lookups/s, hit ratio %.2f",
                     best, rounds, lookups, 1000 / best, Double(hits) / Double(rounds * lookups)))
    }

    /// The reload pipeline alone: the phases `ConfigLoader` times, for a one-Ingress change.
    func benchReloads(directory: String) {
        let loader = ConfigLoader(rulesDirectory: directory, options: RoutingOptions(), fallback: nil)
        _ = loader.load(generation: 1)
        var rows: [(Double, Double, Double, Double)] = []
        for r in 0..<reloads {
            let file = directory + "/generated-\(r % max(1, files)).yaml"
            let extra = "\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: added\(r), namespace: bench}\nspec:\n  ingressClassName: sluice\n  rules: [{host: added\(r).example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: svc1, port: {number: 80}}}}]}}]\n"
            if let h = FileHandle(forWritingAtPath: file) {
                h.seekToEndOfFile()
                h.write(Data(extra.utf8))
                h.closeFile()
            }
            // The server reads a file only after the debounce; a file younger than the cache's
            // settle time would be left at its previous version.
            usleep(60_000)
            let t0 = ContinuousClock.now
            _ = loader.load(generation: r + 2)
            let total = ContinuousClock.now - t0
            let (l, c, sn) = loader.lastTimings.withLock { $0 }
            func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
            rows.append((ms(total), ms(l), ms(c), ms(sn)))
        }
        func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        print(String(format: "reload of %d Ingresses in %d files (one file changed): median total %.1f ms = load %.1f + compile %.1f + snapshot %.1f; max total %.1f ms",
                     ingresses, files, median(rows.map(\.0)), median(rows.map(\.1)), median(rows.map(\.2)), median(rows.map(\.3)), rows.map(\.0).max() ?? 0))
    }
}
