import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A TCP listener that never accepts. With room in its accept queue, connections to it complete
/// and their bytes pile up unread (an upstream that stopped reading); with the queue filled
/// (`backlog` 0 and one connection made by `fill`), new connections hang in the SYN stage (an
/// upstream that cannot be reached in time).
final class SilentListener {
    let fd: Int32
    let port: Int
    private var fillers: [Int32] = []

    init(backlog: Int32) throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(s, backlog) == 0 else {
            close(s)
            throw TestFailure("silent listener: errno \(errno)")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) }
        }
        fd = s
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Fills the accept queue (one connection with backlog 0): Linux then drops new SYNs.
    func fill() throws {
        let c = try RawClient(port: port)
        fillers.append(dup(c.fd))
    }

    deinit {
        for f in fillers { close(f) }
        close(fd)
    }
}

/// Per-Service limits that only show when an upstream misbehaves: the send timeout, the bound on
/// requests waiting for a connection, and the retry budget.
@Suite("upstream limits", .serialized)
struct UpstreamLimitsTests {
    final class Fixture: @unchecked Sendable {
        let stack: Stack
        var proxy: ChildProcess!
        var http = 0
        var admin = 0
        let stall: SilentListener
        let hang: SilentListener

        init() throws {
            stack = try Stack(backends: ["b0", "b1", "b2"], defaultBackend: false)
            stack.proxy.stop()
            stall = try SilentListener(backlog: 64)
            hang = try SilentListener(backlog: 0)
            try hang.fill()
            let rules = emptyDirectory()
            func service(_ name: String, ports: [Int], annotations: [String: String] = [:]) -> String {
                let a = annotations.isEmpty ? "{}" : "{" + annotations.map { "\"\($0)\": \"\($1)\"" }.joined(separator: ", ") + "}"
                var y = """
                apiVersion: v1
                kind: Service
                metadata: {name: \(name), annotations: \(a)}
                spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
                ---

                """
                for (i, p) in ports.enumerated() {
                    y += """
                    apiVersion: discovery.k8s.io/v1
                    kind: EndpointSlice
                    metadata: {name: \(name)-\(i), labels: {kubernetes.io/service-name: \(name)}}
                    addressType: IPv4
                    ports: [{name: http, port: \(p)}]
                    endpoints: [{addresses: [127.0.0.1]}]
                    ---

                    """
                }
                return y
            }
            func ingress(_ host: String, _ svc: String) -> String {
                """
                apiVersion: networking.k8s.io/v1
                kind: Ingress
                metadata: {name: \(host)}
                spec:
                  rules: [{host: \(host).local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: \(svc), port: {number: 80}}}}]}}]
                ---

                """
            }
            var yaml = service("stall", ports: [stall.port], annotations: ["sluice.io/send-timeout": "1s", "sluice.io/read-timeout": "30s"])
            yaml += service("hang", ports: [hang.port], annotations: ["sluice.io/max-pending-requests": "1", "sluice.io/connect-timeout": "2s"])
            yaml += service("pool", ports: stack.backends.map(\.port), annotations: ["sluice.io/retries": "2"])
            yaml += service("answer", ports: [stack.backends[0].port], annotations: ["sluice.io/read-timeout": "2s"])
            yaml += ingress("stall", "stall") + ingress("hang", "hang") + ingress("budget", "pool") + ingress("answer", "answer")
            try yaml.writeWhole(toFile: rules + "/limits.yaml")
            proxy = try ChildProcess(Paths.sluice, ["serve", "--rules", rules, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
                                                    "--admin", "127.0.0.1:0", "--workers", "2"])
            http = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
            admin = Int(try proxy.waitFor(#"sluice admin on \S*:(\d+)"#))!
        }

        deinit {
            proxy?.stop()
            stack.stop()
        }
    }

    /// An upstream that stops reading a request body: once the proxy has been unable to write
    /// to it for the send timeout (1 s; the read timeout is 30 s), the client gets a 504.
    @Test func anUpstreamThatStopsReadingGets504AtTheSendTimeout() throws {
        let f = try Fixture()
        let client = try RawClient(port: f.http)
        let body = 256 << 20
        client.send("POST /upload HTTP/1.1\r\nHost: stall.local\r\nContent-Length: \(body)\r\n\r\n")
        // Send what the sockets take without blocking: the proxy stops reading from the client
        // once its upstream is full, so the buffers fill and the writes would block. Stop when
        // the answer has come, as curl does: after it the proxy reads and drops what still
        // arrives (a lingering close), so the rest of the body would go through.
        let flags = fcntl(client.fd, F_GETFL)
        _ = fcntl(client.fd, F_SETFL, flags | O_NONBLOCK)
        let chunk = [UInt8](repeating: 0x61, count: 1 << 16)
        var sent = 0
        let start = Date()
        var answered: pollfd { var p = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0); _ = poll(&p, 1, 0); return p }
        while sent < body && Date().timeIntervalSince(start) < 5 && answered.revents == 0 {
            let n = chunk.withUnsafeBytes { Glibc.send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { sent += n; continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { usleep(20_000); continue }
            break
        }
        _ = fcntl(client.fd, F_SETFL, flags)
        #expect(sent < body, "the whole body went through: nothing held it")
        let r = client.receive(until: "\r\n\r\n", timeout: 8)
        let elapsed = Date().timeIntervalSince(start)
        #expect(r.text.hasPrefix("HTTP/1.1 504"), "\(r.text.prefix(200))")
        #expect(elapsed > 0.9 && elapsed < 7, "answered after \(elapsed) s")
        #expect(f.proxy.shows("upstream send timeout"))
    }

    /// The same over h2c: the exchange follows the upstream's writability too (it used to time
    /// out only at the read timeout, 30 s here, ignoring `send-timeout`).
    @Test func anUpstreamThatStopsReadingGets504AtTheSendTimeoutOverHTTP2() throws {
        let f = try Fixture()
        let start = Date()
        // An endless body (/dev/zero has no size): only the send timeout can end this request.
        let r = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge", "-m", "20",
                          "-H", "Host: stall.local", "-T", "/dev/zero", "http://127.0.0.1:\(f.http)/upload"])
        let elapsed = Date().timeIntervalSince(start)
        #expect(r.stdout == "504", "\(r.stdout) \(r.stderr)")
        #expect(elapsed > 0.9 && elapsed < 8, "answered after \(elapsed) s")
        #expect(f.proxy.shows("upstream send timeout"))
    }

    /// An upload slower than the read timeout (2 s here; the body takes about 3 s) to an
    /// upstream that answers 1.5 s after it: the upstream's time to answer starts when the
    /// request has been sent whole. It was counted from the attach, and such a request got a 504.
    @Test func aSlowUploadDoesNotUseUpTheReadTimeout() throws {
        let f = try Fixture()
        let body = emptyDirectory() + "/body"
        try String(repeating: "x", count: 80_000).write(toFile: body, atomically: false, encoding: .utf8)
        for args in [["--http1.1"], ["--http2-prior-knowledge"]] {
            let start = Date()
            let r = try curl(["-s", "-w", "\n%{http_code}", "-m", "20", "--limit-rate", "25K", "-H", "Host: answer.local",
                              "--data-binary", "@" + body, "http://127.0.0.1:\(f.http)/?delay_ms=1500"] + args)
            let elapsed = Date().timeIntervalSince(start)
            #expect(r.stdout.hasSuffix("\n200"), "\(args): \(r.stdout.suffix(300))")
            #expect(r.stdout.contains("\"body_bytes\":80000"), "\(args): \(r.stdout.prefix(300))")
            #expect(elapsed > 3.5, "\(args): the upload took only \(elapsed) s, not longer than the read timeout")
        }
    }

    /// With connections to the endpoint hanging, one request may wait for a connection
    /// (`max-pending-requests: 1`); the next is refused at once rather than queued.
    @Test func requestsBeyondMaxPendingAreRefusedAtOnce() throws {
        let f = try Fixture()
        let waiting = try ChildProcess(Paths.tool("curl")!, ["-s", "-w", "\n%{http_code}", "-H", "Host: hang.local", "http://127.0.0.1:\(f.http)/"])
        defer { waiting.stop() }
        usleep(500_000)  // the first request's connect is in progress (its SYN was dropped)
        let start = Date()
        let refused = try curl(["-s", "-w", "\n%{http_code}", "-H", "Host: hang.local", "http://127.0.0.1:\(f.http)/"])
        let elapsed = Date().timeIntervalSince(start)
        #expect(refused.stdout.hasSuffix("\n503"), "\(refused.stdout)")
        #expect(refused.stdout.contains("already wait for a connection"), "\(refused.stdout)")
        #expect(elapsed < 1, "refused after \(elapsed) s: it waited")
        // The waiting request ends with the connect timeout (a gateway error), not a refusal.
        _ = waiting.waitForExit(timeout: 15)
        let code = waiting.output.split(separator: "\n").last.map(String.init) ?? ""
        #expect(code == "504" || code == "502", "the waiting request got \(code): \(waiting.output)")
    }

    /// Every backend fails (503 after 400 ms) and the policy allows two retries: when twenty
    /// requests fail at once, only a fifth of the live requests (at least three) per worker may
    /// be retried, so a failing backend does not get three times the load.
    @Test func theRetryBudgetBoundsRetriesWhenEverythingFails() throws {
        let f = try Fixture()
        var clients: [ChildProcess] = []
        for _ in 0..<20 {
            clients.append(try ChildProcess(Paths.tool("curl")!, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: budget.local",
                                                                   "http://127.0.0.1:\(f.http)/?status=503&delay_ms=400"]))
        }
        for c in clients { _ = c.waitForExit(timeout: 20) }
        let codes = clients.map { $0.output.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(codes.allSatisfy { $0 == "503" }, "\(codes)")
        let metrics = try curl(["-s", "http://127.0.0.1:\(f.admin)/metrics"]).stdout
        let retried = metrics.split(separator: "\n")
            .filter { $0.hasPrefix("sluice_retries_total{") && $0.contains(#"host="budget.local""#) }
            .compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }
            .reduce(0, +)
        // Two workers, at most three retried requests each at a time; without the budget all 20.
        #expect(retried >= 1 && retried <= 8, "\(retried) requests were retried")

        // The same over HTTP/2 (20 streams of one connection, so one worker), with h2load (curl
        // 7.88 cannot reuse an h2c connection): every stream is answered, the ones refused a
        // retry with the upstream's own 503.
        let h2 = try run(Paths.tool("h2load") ?? "/usr/bin/h2load",
                         ["-n", "20", "-c", "1", "-m", "20", "-H", ":authority: budget.local", "http://127.0.0.1:\(f.http)/?status=503&delay_ms=400"],
                         timeout: 30)
        #expect(h2.stdout.contains("20 done"), "\(h2.stdout)")
        #expect(h2.stdout.contains("status codes: 0 2xx, 0 3xx, 0 4xx, 20 5xx"), "\(h2.stdout)")
    }
}
