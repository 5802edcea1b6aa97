import Benchmark
import HotPathCases
import SluiceHTTP1

// Per operation: wall time, heap allocations (malloc interposer) and retains/releases. Issue 9's
// goal is zero allocations per request in the parser and the router; time varies with the machine.
// The operations are `HotPathCases`', which the callgrind harness (instructions.sh) counts too.

let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal, .retainCount, .releaseCount]
var config: Benchmark.Configuration { .init(metrics: metrics, scalingFactor: .kilo, maxDuration: .seconds(3), maxIterations: 10_000) }

let benchmarks: @Sendable () -> Void = {
    // A control: proves the malloc counter counts (one array, one allocation per operation).
    Benchmark("Control: allocate one [UInt8] of 64", configuration: config) { benchmark in
        for i in benchmark.scaledIterations {
            blackHole([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 64))
        }
    }

    // MARK: - Parser

    Benchmark("HTTP1Parser: GET head (\(HotPathCases.getRequest.count) B)", configuration: config) { benchmark in
        var parser = HTTP1Parser(kind: .request)
        HotPathCases.getRequest.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations { HotPathCases.parseGet(&parser, p) }
        }
    }

    Benchmark("HTTP1Parser: chunked POST, head + body + end", configuration: config) { benchmark in
        var parser = HTTP1Parser(kind: .request)
        HotPathCases.postRequest.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations { blackHole(HotPathCases.parseChunkedPost(&parser, p)) }
        }
    }

    Benchmark("HTTP1Parser: response head + 13 B body + end (nginx's)", configuration: config) { benchmark in
        var parser = HTTP1Parser(kind: .response)
        HotPathCases.response.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations { blackHole(HotPathCases.parseResponse(&parser, p)) }
        }
    }

    // MARK: - Router

    Benchmark("Router: normalise host + path, lookup (10,000 Ingresses)", configuration: config) { benchmark in
        _ = HotPathCases.table.routes.count
        let scratch = HotPathCases.RouteScratch()
        var i = 0
        var hits = 0
        benchmark.startMeasurement()  // the table is built above, once, outside the measurement
        for _ in benchmark.scaledIterations {
            if HotPathCases.route(i, scratch) { hits &+= 1 }
            i &+= 1
        }
        blackHole(hits)
    }

    // MARK: - Load balancing (10 endpoints)

    for (name, balance) in HotPathCases.balancers {
        let pool = HotPathCases.pool(balance)
        Benchmark("BackendPool \(name): choose + begin + end", configuration: config) { benchmark in
            var h: UInt64 = 0x9E37_79B9_7F4A_7C15
            var k: Int64 = 0
            for _ in benchmark.scaledIterations { HotPathCases.balance(pool, &h, &k) }
        }
    }
}
