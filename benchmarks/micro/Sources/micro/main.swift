import Dispatch
import Foundation
import NIOCore
import Prometheus
import SluiceHTTP1
import SluiceProxy

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
