import SluiceHTTP1
import SluiceRouting
import SluiceUpstream

/// The operations the hot-path benchmarks measure, shared by the ordo-one benchmark (time,
/// allocations, ARC) and the callgrind harness (instructions), so both count the same code.
public enum HotPathCases {
    // MARK: - Fixtures

    /// The layout `sluice bench-routes` measures: 10,000 Ingresses over 2,000 hosts (the first 50
    /// wildcards), three paths each, 100 Services.
    public static let table = RouteCompiler.compile(
        ManifestLoader.load(text: SyntheticRules.generate(ingresses: 10_000, hosts: 2_000), file: "generated.yaml")).table

    /// Requests as a client sends them: mixed-case host with a port, paths that need normalising.
    public static let requests: [(host: [UInt8], target: [UInt8])] = (0..<1024).map { i in
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

    public static let getRequest = Array(
        "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: shop.local\r\nUser-Agent: wrk\r\nAccept: */*\r\nX-Request-Id: 0123456789abcdef\r\n\r\n".utf8)
    public static let postRequest = Array(
        "POST /upload HTTP/1.1\r\nHost: shop.local\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n0\r\n\r\n".utf8)

    /// What the benchmark's nginx backend answers for its 13-byte body: every proxied request
    /// parses one of these too.
    public static let response = Array(
        ("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 13:21:57 GMT\r\nContent-Type: text/plain\r\n"
            + "Content-Length: 13\r\nLast-Modified: Fri, 27 Nov 2026 03:25:50 GMT\r\nConnection: keep-alive\r\n"
            + "ETag: \"6b08f83e-d\"\r\nAccept-Ranges: bytes\r\n\r\nHello, world!").utf8)

    public static let balancers: [(name: String, balance: PoolPolicy.Balance)] = [
        ("round-robin", .roundRobin), ("least-request (P2C)", .leastRequest), ("ewma (P2C)", .ewma),
        ("consistent-hash (Maglev)", .consistentHash),
    ]

    /// A pool of 10 endpoints under `balance`.
    public static func pool(_ balance: PoolPolicy.Balance) -> BackendPool {
        var policy = PoolPolicy()
        policy.balance = balance
        if balance == .consistentHash { policy.hashKey = .clientIP }
        let endpoints = (0..<10).map { try! Endpoint(host: "10.1.0.\($0 + 1)", port: 8080) }
        return BackendPool(name: "bench", endpoints: endpoints, policy: policy)
    }

    // MARK: - Operations

    /// One GET head parsed and its end reported, on a parser that is reused.
    public static func parseGet(_ parser: inout HTTP1Parser, _ p: UnsafeRawBufferPointer) {
        guard case .head = parser.parse(p) else { fatalError("parse") }
        guard case .end = parser.parse(UnsafeRawBufferPointer(rebasing: p[p.count...])) else { fatalError("end") }
    }

    /// One response: head, the 13-byte body and the end. Returns the bytes consumed.
    public static func parseResponse(_ parser: inout HTTP1Parser, _ p: UnsafeRawBufferPointer) -> Int {
        guard case .head(let n) = parser.parse(p) else { fatalError("parse") }
        guard case .body(_, let m) = parser.parse(UnsafeRawBufferPointer(rebasing: p[n...])) else { fatalError("body") }
        guard case .end(_, let k) = parser.parse(UnsafeRawBufferPointer(rebasing: p[(n + m)...])) else { fatalError("end") }
        return n + m + k
    }

    /// One chunked POST: head, body and end. Returns the bytes consumed.
    public static func parseChunkedPost(_ parser: inout HTTP1Parser, _ p: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while true {
            switch parser.parse(UnsafeRawBufferPointer(rebasing: p[offset...])) {
            case .head(let n), .needMore(let n): offset += n
            case .body(_, let n): offset += n
            case .end(_, let n): return offset + n
            case .error: fatalError("parse error")
            }
        }
    }

    /// Scratch space the proxy keeps per connection for normalised hosts and paths.
    public struct RouteScratch: ~Copyable {
        let host = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 1)
        let path = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 1)
        public init() {}
        deinit {
            host.deallocate()
            path.deallocate()
        }
    }

    /// Request `i` (of 1,024) normalised and looked up among the 10,000 Ingresses, as the proxy does.
    /// Returns whether a route matched.
    public static func route(_ i: Int, _ scratch: borrowing RouteScratch) -> Bool {
        let r = requests[i & 1023]
        return r.host.withUnsafeBytes { h in
            r.target.withUnsafeBytes { t in
                guard let hn = RequestNormalizer.host(h, into: scratch.host) else { return false }
                let raw = UnsafeRawBufferPointer(rebasing: t[..<RequestNormalizer.pathLength(t)])
                let path: UnsafeRawBufferPointer
                if RequestNormalizer.needsNormalisation(raw) {
                    guard let n = RequestNormalizer.path(raw, into: scratch.path) else { return false }
                    path = UnsafeRawBufferPointer(rebasing: scratch.path[..<n])
                } else {
                    path = raw
                }
                return table.lookup(host: UnsafeRawBufferPointer(rebasing: scratch.host[..<hn]), path: path) != nil
            }
        }
    }

    /// One load-balancing decision with the attempt's start and end, as a proxied request makes.
    /// `h` and `k` are the caller's hash and clock state.
    public static func balance(_ pool: BackendPool, _ h: inout UInt64, _ k: inout Int64) {
        h = h &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        k &+= 1
        guard case .endpoint(let i) = pool.choose(loop: 0, hash: h, now: k) else { fatalError("no endpoint") }
        pool.begin(loop: 0, i)
        _ = pool.end(loop: 0, i, outcome: .success, latencyNanos: 100_000, now: k)
    }
}
