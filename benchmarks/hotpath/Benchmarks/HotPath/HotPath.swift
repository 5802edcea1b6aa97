import Benchmark
import SluiceHTTP1
import SluiceRouting
import SluiceUpstream

// Per operation: wall time, heap allocations (malloc interposer) and retains/releases. Issue 9's
// goal is zero allocations per request in the parser and the router; time varies with the machine.

let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal, .retainCount, .releaseCount]
var config: Benchmark.Configuration { .init(metrics: metrics, scalingFactor: .kilo, maxDuration: .seconds(3), maxIterations: 10_000) }

// MARK: - Fixtures

/// The layout `sluice bench-routes` measures: 10,000 Ingresses over 2,000 hosts (the first 50
/// wildcards), three paths each, 100 Services.
let table = RouteCompiler.compile(ManifestLoader.load(text: SyntheticRules.generate(ingresses: 10_000, hosts: 2_000),
                                                      file: "generated.yaml")).table

/// Requests as a client sends them: mixed-case host with a port, paths that need normalising.
let requests: [(host: [UInt8], target: [UInt8])] = (0..<1024).map { i in
    let k = (i &* 7919) % 10_000
    let h = k % 2_000
    let host = h < 50 ? "X\(i).Wild\(h).example.com:8443" : "Host\(h).Example.com"
    let target: String
    switch i % 4 {
    case 0: target = "/api/v\(k)/items/\(i)?page=2"
    case 1: target = "/static/app\(k).js"
    case 2: target = "/svc\(k)/./deep/%61/segment"
    default: target = "/nothing/here"
    }
    return (Array(host.utf8), Array(target.utf8))
}

let getRequest = Array("GET /api/v1/items?page=2 HTTP/1.1\r\nHost: shop.local\r\nUser-Agent: wrk\r\nAccept: */*\r\nX-Request-Id: 0123456789abcdef\r\n\r\n".utf8)
let postRequest = Array("POST /upload HTTP/1.1\r\nHost: shop.local\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n0\r\n\r\n".utf8)

let endpoints = (0..<10).map { try! Endpoint(host: "10.1.0.\($0 + 1)", port: 8080) }

let benchmarks: @Sendable () -> Void = {
    // A control: proves the malloc counter counts (one array, one allocation per operation).
    Benchmark("Control: allocate one [UInt8] of 64", configuration: config) { benchmark in
        for i in benchmark.scaledIterations {
            blackHole([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 64))
        }
    }

    // MARK: - Parser

    Benchmark("HTTP1Parser: GET head (\(getRequest.count) B)", configuration: config) { benchmark in
        var parser = HTTP1Parser(kind: .request)
        getRequest.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations {
                guard case .head = parser.parse(p) else { fatalError("parse") }
                guard case .end = parser.parse(UnsafeRawBufferPointer(rebasing: p[p.count...])) else { fatalError("end") }
            }
        }
    }

    Benchmark("HTTP1Parser: chunked POST, head + body + end", configuration: config) { benchmark in
        var parser = HTTP1Parser(kind: .request)
        postRequest.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations {
                var offset = 0
                loop: while true {
                    switch parser.parse(UnsafeRawBufferPointer(rebasing: p[offset...])) {
                    case .head(let n), .needMore(let n): offset += n
                    case .body(_, let n): offset += n
                    case .end(_, let n):
                        offset += n
                        break loop
                    case .error: fatalError("parse error")
                    }
                }
                blackHole(offset)
            }
        }
    }

    // MARK: - Router

    Benchmark("Router: normalise host + path, lookup (10,000 Ingresses)", configuration: config) { benchmark in
        let hostScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 1)
        let pathScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 1)
        defer {
            hostScratch.deallocate()
            pathScratch.deallocate()
        }
        var i = 0
        var hits = 0
        for _ in benchmark.scaledIterations {
            let r = requests[i & 1023]
            i &+= 1
            r.host.withUnsafeBytes { h in
                r.target.withUnsafeBytes { t in
                    guard let hn = RequestNormalizer.host(h, into: hostScratch) else { return }
                    let raw = UnsafeRawBufferPointer(rebasing: t[..<RequestNormalizer.pathLength(t)])
                    let path: UnsafeRawBufferPointer
                    if RequestNormalizer.needsNormalisation(raw) {
                        guard let n = RequestNormalizer.path(raw, into: pathScratch) else { return }
                        path = UnsafeRawBufferPointer(rebasing: pathScratch[..<n])
                    } else {
                        path = raw
                    }
                    if table.lookup(host: UnsafeRawBufferPointer(rebasing: hostScratch[..<hn]), path: path) != nil { hits &+= 1 }
                }
            }
        }
        blackHole(hits)
    }

    // MARK: - Load balancing (10 endpoints)

    for (name, balance) in [("round-robin", PoolPolicy.Balance.roundRobin), ("least-request (P2C)", .leastRequest),
                            ("ewma (P2C)", .ewma), ("consistent-hash (Maglev)", .consistentHash)] {
        var policy = PoolPolicy()
        policy.balance = balance
        if balance == .consistentHash { policy.hashKey = .clientIP }
        let pool = BackendPool(name: "bench-\(name)", endpoints: endpoints, policy: policy)
        Benchmark("BackendPool \(name): choose + begin + end", configuration: config) { benchmark in
            var h: UInt64 = 0x9E37_79B9_7F4A_7C15
            var k: Int64 = 0
            for _ in benchmark.scaledIterations {
                h = h &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                k &+= 1
                guard case .endpoint(let i) = pool.choose(loop: 0, hash: h, now: k) else { fatalError("no endpoint") }
                pool.begin(loop: 0, i)
                pool.end(loop: 0, i, outcome: .success, latencyNanos: 100_000, now: k)
            }
        }
    }
}
