import Dispatch
import Foundation
import NIOCore
import Prometheus
import SluiceHTTP1
import SluiceProxy
import SluiceUpstream

// Microbenchmarks: nanoseconds per operation, medians of 5 runs. Timings vary with the machine's
// load; compare lines of the same run only.

func measure(_ name: String, operations: Int, threads: Int = 1, _ body: @escaping @Sendable (Int) -> Void) {
    var results: [Double] = []
    for _ in 0..<5 {
        let group = DispatchGroup()
        let start = ContinuousClock.now
        for t in 0..<threads {
            group.enter()
            Thread.detachNewThread {
                body(t)
                group.leave()
            }
        }
        group.wait()
        let elapsed = ContinuousClock.now - start
        let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
        results.append(ns / Double(operations))
    }
    results.sort()
    let line = "\(name)".padding(toLength: 62, withPad: " ", startingAt: 0)
    print("\(line) \(String(format: "%8.1f", results[2])) ns/op (wall, \(threads) thread\(threads == 1 ? "" : "s"))")
}

// MARK: - Metrics: Sluice's per-loop counters against swift-prometheus

let n = 5_000_000
for threads in [1, 2] {
    // Sluice: each event loop records into its own LoopMetrics (no atomics, no lock).
    let loops = (0..<threads).map { _ in LoopMetrics() }
    nonisolated(unsafe) let ours = loops
    measure("sluice LoopMetrics.record (counters + 2 histograms)", operations: n * threads, threads: threads) { t in
        let m = ours[t]
        for i in 0..<n {
            m.record(stat: 3, status: 200, durationNanos: Int64(150_000 + (i & 1023) * 1000), upstreamNanos: 120_000,
                     bytesIn: 80, bytesOut: 200, retried: false)
        }
    }
    // swift-prometheus: one shared series per route, as a straightforward integration would use it.
    let registry = PrometheusCollectorRegistry()
    let labels = [("host", "shop.local"), ("ingress", "default/shop"), ("service", "default/shop:80")]
    let requests = registry.makeCounter(name: "requests_total", labels: labels + [("code", "2xx")])
    let bytesIn = registry.makeCounter(name: "request_bytes_total", labels: labels)
    let bytesOut = registry.makeCounter(name: "response_bytes_total", labels: labels)
    let buckets: [Double] = LoopMetrics.bucketBounds
    let duration = registry.makeValueHistogram(name: "request_duration_seconds", labels: labels, buckets: buckets)
    let upstream = registry.makeValueHistogram(name: "upstream_duration_seconds", labels: labels, buckets: buckets)
    measure("swift-prometheus 3 counters + 2 histograms (shared series)", operations: n * threads, threads: threads) { _ in
        for i in 0..<n {
            requests.increment()
            bytesIn.increment(by: Int64(80))
            bytesOut.increment(by: Int64(200))
            duration.record(Double(150_000 + (i & 1023) * 1000) / 1e9)
            upstream.record(0.000120)
        }
    }
}

// MARK: - Parser

let request = Array("GET /api/v1/items?page=2 HTTP/1.1\r\nHost: shop.local\r\nUser-Agent: wrk\r\nAccept: */*\r\nX-Request-Id: 0123456789abcdef\r\n\r\n".utf8)
measure("HTTP1Parser: parse one GET head (\(request.count) bytes)", operations: 2_000_000) { _ in
    var parser = HTTP1Parser(kind: .request)
    request.withUnsafeBytes { p in
        for _ in 0..<2_000_000 {
            guard case .head = parser.parse(p) else { fatalError("parse") }
            guard case .end = parser.parse(UnsafeRawBufferPointer(rebasing: p[p.count...])) else { fatalError("end") }
        }
    }
}

// MARK: - Load-balancing policies: choose + begin + end for one request, 10 endpoints

let endpoints = (0..<10).map { try! Endpoint(host: "10.1.0.\($0 + 1)", port: 8080) }
let policies: [(String, PoolPolicy, [Int]?)] = {
    var rr = PoolPolicy()
    rr.balance = .roundRobin
    var lr = PoolPolicy()
    lr.balance = .leastRequest
    var ew = PoolPolicy()
    ew.balance = .ewma
    var ch = PoolPolicy()
    ch.balance = .consistentHash
    ch.hashKey = .clientIP
    var cb = PoolPolicy()
    cb.maxConnectionsPerEndpoint = 1000
    return [("round-robin", rr, nil), ("weighted round-robin (smooth)", rr, [5, 1, 1, 3, 1, 1, 2, 1, 1, 1]),
            ("least-request (P2C)", lr, nil), ("ewma (P2C)", ew, nil), ("consistent-hash (Maglev)", ch, nil),
            ("round-robin + max-connections", cb, nil)]
}()
for (name, policy, weights) in policies {
    let pool = BackendPool(name: "bench-\(name)", endpoints: endpoints, policy: policy, weights: weights)
    nonisolated(unsafe) let p = pool
    measure("policy \(name): choose + begin + end", operations: 2_000_000) { _ in
        var h: UInt64 = 0x9E3779B97F4A7C15
        for k in 0..<2_000_000 {
            h = h &* 6364136223846793005 &+ 1442695040888963407
            guard case .endpoint(let i) = p.choose(loop: 0, hash: h, now: Int64(k)) else { fatalError("no endpoint") }
            p.begin(loop: 0, i)
            p.end(loop: 0, i, outcome: .success, latencyNanos: 100_000, now: Int64(k))
        }
    }
}
