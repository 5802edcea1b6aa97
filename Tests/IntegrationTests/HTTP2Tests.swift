import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// HTTP/2 to clients (ALPN h2 on the TLS listener, prior knowledge on the plain one), checked
/// with curl, nghttp, h2load and a Python script that sends what correct clients refuse to.
@Suite("HTTP/2", .serialized)
struct HTTP2Tests {
    final class Fixture: @unchecked Sendable {
        let stack: Stack
        let certs: String
        var proxy: ChildProcess!
        var http = 0
        var https = 0

        init(extra: [String] = []) throws {
            stack = try Stack(backends: ["shop", "apps", "h2"], defaultBackend: false)
            stack.proxy.stop()
            certs = emptyDirectory()
            _ = try run(Paths.repo.appendingPathComponent("scripts/dev-certs.sh").path, [certs])
            let rules = emptyDirectory()
            var yaml = stack.servicesYAML
            yaml += """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: shop}
            spec:
              tls: [{hosts: [shop.local], secretName: shop-tls}]
              rules: [{host: shop.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}}]
            ---
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: apps, annotations: {sluice.io/ssl-redirect: "false"}}
            spec:
              tls: [{hosts: ["*.apps.local"], secretName: wildcard-apps-tls}]
              rules: [{host: "*.apps.local", http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: apps, port: {number: 80}}}}]}}]
            ---
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: h2}
            spec:
              rules: [{host: h2.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: h2, port: {number: 80}}}}]}}]
            """
            try yaml.writeWhole(toFile: rules + "/site.yaml")
            proxy = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--rules", rules, "--certs", certs, "--http", "127.0.0.1:0",
                                                    "--https", "127.0.0.1:0", "--drain-timeout", "10"] + extra)
            http = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
            https = Int(try proxy.waitFor(#"serving https on \S*:(\d+)"#))!
        }

        var tlsArgs: [String] {
            ["--http2", "--cacert", certs + "/dev-ca/ca.crt", "--resolve", "shop.local:\(https):127.0.0.1"]
        }

        /// Runs scripts/h2-probe.py (system Python, where apt's python3-h2 lives).
        func probe(_ name: String, authority: String = "h2.local", extra: [String] = []) throws -> [String: Any] {
            let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"
            let r = try run(python, [Paths.repo.appendingPathComponent("scripts/h2-probe.py").path, name, String(http), authority] + extra, timeout: 30)
            guard let data = r.stdout.data(using: .utf8), let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw TestFailure("h2-probe \(name) printed no result: \(r.stdout) \(r.stderr)")
            }
            return json
        }

        deinit {
            proxy?.stop()
            stack.stop()
        }
    }

    static func response(_ result: [String: Any], stream: String = "1") -> [String: Any]? {
        (result["responses"] as? [String: Any])?[stream] as? [String: Any]
    }

    // MARK: - Forwarding

    @Test func alpnChoosesH2OnTheTLSListener() throws {
        let f = try Fixture()
        let r = try curl(f.tlsArgs + ["-w", "\n%{http_version}", "https://shop.local:\(f.https)/cart?id=7"])
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.last == "2", "curl negotiated \(lines.last ?? "nothing")")
        #expect(r.stdout.contains(#""backend":"shop""#))
        #expect(r.stdout.contains(#""path":"/cart?id=7""#))
        #expect(r.stdout.contains(#""x-forwarded-proto":"https""#))
        #expect(r.stdout.contains(#""host":"shop.local:\#(f.https)""#), "the authority becomes the upstream Host")
        // HTTP/1.1 clients on the same listener are unaffected.
        let h1 = try curl(["--http1.1", "--cacert", f.certs + "/dev-ca/ca.crt", "--resolve", "shop.local:\(f.https):127.0.0.1",
                           "-w", "\n%{http_version}", "https://shop.local:\(f.https)/"])
        #expect(h1.stdout.hasSuffix("\n1.1"))
    }

    @Test func priorKnowledgeOnThePlainListener() throws {
        let f = try Fixture()
        let r = try curl(["--http2-prior-knowledge", "-H", "Host: h2.local", "-w", "\n%{http_version}", "http://127.0.0.1:\(f.http)/x"])
        #expect(r.stdout.hasSuffix("\n2"))
        #expect(r.stdout.contains(#""backend":"h2""#))
        #expect(r.stdout.contains(#""x-forwarded-proto":"http""#))
        let h1 = try curl(["-H", "Host: h2.local", "-w", "\n%{http_version}", "http://127.0.0.1:\(f.http)/x"])
        #expect(h1.stdout.hasSuffix("\n1.1"))
        #expect(h1.stdout.contains(#""backend":"h2""#))
    }

    /// A large response over h2c comes at the pace of the sockets. On a plain socket the flush
    /// at the end of an output round writes at once, and the channel reports itself writable
    /// again while that round is still running: the handler dropped that wake-up, so the rest of
    /// the response waited for the next 500 ms timeout tick (128 KiB per tick, 94 s for 50 MB).
    /// The limit is a stall detector, not a speed target: 50 MB at the old pace needs 94 s.
    @Test func aLargeResponseOverPriorKnowledgeDoesNotWaitForTheTimeoutTick() throws {
        let f = try Fixture()
        let r = try curl(["--http2-prior-knowledge", "-H", "Host: h2.local", "-o", "/dev/null", "-m", "30", "-w", "%{size_download}",
                          "http://127.0.0.1:\(f.http)/big?bytes=50000000"], timeout: 40)
        #expect(r.stdout == "50000000", "received \(r.stdout) bytes (curl exit \(r.status))")
    }

    /// The method and target are read from the stream's pseudo-fields: a HEAD stream ends
    /// after the head (nghttp waits for the end of the stream, which curl -I does not), and an
    /// asterisk-form target is refused.
    @Test func headAndAsteriskTargetsOverH2() throws {
        let f = try Fixture()
        let head = try run("nghttp", ["-t", "5", "-s", "-H", ":method: HEAD", "-H", ":authority: h2.local", "http://127.0.0.1:\(f.http)/x"], timeout: 15)
        #expect(head.status == 0, "nghttp exit \(head.status): \(head.stdout) \(head.stderr)")
        #expect(head.stdout.contains(" 200 "), "\(head.stdout)")
        let star = try curl(["--http2-prior-knowledge", "-w", "\n%{http_code}", "-X", "OPTIONS", "--request-target", "*",
                             "-H", "Host: h2.local", "http://127.0.0.1:\(f.http)"], timeout: 10)
        #expect(star.stdout.hasSuffix("\n400"), "\(star.stdout)")
        #expect(star.stdout.contains("asterisk-form"), "\(star.stdout)")
    }

    @Test func requestBodiesWithAndWithoutContentLength() throws {
        let f = try Fixture()
        let file = scratchPath("sluice-h2-body")
        defer { try? FileManager.default.removeItem(atPath: file) }
        var bytes = [UInt8](repeating: 0, count: 3_000_000)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        _ = FileManager.default.createFile(atPath: file, contents: Data(bytes))
        let sized = try curl(f.tlsArgs + ["--data-binary", "@" + file, "https://shop.local:\(f.https)/upload"])
        #expect(sized.stdout.contains(#""body_bytes":3000000"#))
        #expect(sized.stdout.contains(#""content-length":"3000000""#))
        // Without content-length the proxy frames the body as chunked for the HTTP/1.1 upstream.
        let streamed = try curl(["--http2-prior-knowledge", "-H", "Host: h2.local", "-H", "Content-Length:", "--data-binary", "@" + file,
                                 "http://127.0.0.1:\(f.http)/upload"])
        #expect(streamed.stdout.contains(#""body_bytes":3000000"#))
        #expect(streamed.stdout.contains(#""transfer-encoding":"chunked""#))
        // An empty POST still tells the upstream its length.
        let empty = try curl(["--http2-prior-knowledge", "-H", "Host: h2.local", "-X", "POST", "http://127.0.0.1:\(f.http)/e"])
        #expect(empty.stdout.contains(#""content-length":"0""#))
        // `expect: 100-continue`: the proxy answers 100 once the request has an upstream, so the
        // client sends at once instead of waiting out its timeout (5 s here); `expect` is not
        // forwarded. Over TLS (ALPN h2) and over h2c.
        for args in [f.tlsArgs + ["https://shop.local:\(f.https)/upload"],
                     ["--http2-prior-knowledge", "-H", "Host: h2.local", "http://127.0.0.1:\(f.http)/upload"]] {
            let start = Date()
            let r = try curl(["-s", "-v", "--expect100-timeout", "5", "-H", "Expect: 100-continue", "--data-binary", "@" + file] + args)
            let elapsed = Date().timeIntervalSince(start)
            #expect(r.stderr.contains("< HTTP/2 100"), "\(r.stderr.suffix(600))")
            #expect(r.stdout.contains(#""body_bytes":3000000"#))
            #expect(!r.stdout.contains(#""expect""#), "expect was forwarded: \(r.stdout.prefix(400))")
            #expect(elapsed < 3, "the body waited for curl's timeout: \(elapsed) s")
        }
    }

    /// Request trailers (gRPC-style clients send them) reach an upstream whose body is chunked;
    /// fields that cannot be trailers are left out. With a declared length there is no place
    /// for them in HTTP/1.1 and they are dropped.
    @Test func requestTrailersReachAChunkedUpstream() throws {
        let f = try Fixture()
        let file = scratchPath("sluice-h2-trailers")
        defer { try? FileManager.default.removeItem(atPath: file) }
        _ = FileManager.default.createFile(atPath: file, contents: Data(repeating: 0x61, count: 100_000))
        let base = ["-d", file, "--trailer", "x-checksum: abc123", "--trailer", "host: evil.example", "-H", ":authority: h2.local"]
        let chunked = try run("nghttp", base + ["--no-content-length", "http://127.0.0.1:\(f.http)/t"], timeout: 30)
        #expect(chunked.stdout.contains(#""body_bytes":100000"#), "\(chunked.stdout.prefix(600)) \(chunked.stderr)")
        #expect(chunked.stdout.contains(#""transfer-encoding":"chunked""#))
        #expect(chunked.stdout.contains(#""trailers":{"x-checksum":"abc123"}"#), "\(chunked.stdout.prefix(800))")
        let sized = try run("nghttp", base + ["http://127.0.0.1:\(f.http)/t"], timeout: 30)
        #expect(sized.stdout.contains(#""body_bytes":100000"#))
        #expect(!sized.stdout.contains(#""trailers""#))
    }

    /// An upstream's 103 (Early Hints) reaches the client before the final response, over
    /// HTTP/1.1 and over h2 (TLS and h2c); hop-by-hop fields stay behind.
    @Test func earlyHintsAreRelayed() throws {
        let f = try Fixture()
        for args in [["--http1.1", "-H", "Host: h2.local", "http://127.0.0.1:\(f.http)/page?early_hints=1"],
                     ["--http2-prior-knowledge", "-H", "Host: h2.local", "http://127.0.0.1:\(f.http)/page?early_hints=1"],
                     f.tlsArgs + ["https://shop.local:\(f.https)/page?early_hints=1"]] {
            let r = try curl(["-s", "-v", "-o", "/dev/null"] + args)
            let heads = r.stderr.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("< ") }.map { $0.dropFirst(2).trimmingCharacters(in: .whitespacesAndNewlines) }
            let hints = heads.firstIndex { $0.hasPrefix("HTTP/") && $0.contains(" 103") }
            let final = heads.firstIndex { $0.hasPrefix("HTTP/") && $0.contains(" 200") }
            #expect(hints != nil && final != nil && hints! < final!, "\(heads)")
            #expect(heads.contains("link: </style.css>; rel=preload; as=style"), "\(heads)")
        }
    }

    @Test func manyParallelStreams() throws {
        let f = try Fixture()
        guard Paths.tool("nghttp") != nil, Paths.tool("h2load") != nil else {
            Issue.record("nghttp/h2load missing: `make test` installs nghttp2-client")
            return
        }
        // 64 streams at once on one connection, each a separate upstream exchange.
        let urls = (0..<64).map { "http://127.0.0.1:\(f.http)/s\($0)?delay_ms=50" }
        let n = try run("nghttp", ["-n", "-s", "-H", ":authority: h2.local"] + urls, timeout: 60)
        #expect(n.status == 0, "\(n.stderr)")
        // `-s` prints one statistics line per request, with its status.
        let ok = n.stdout.components(separatedBy: "\n").filter { $0.contains("/s") && $0.contains("200") }
        #expect(ok.count == 64, "nghttp printed: \(n.stdout.prefix(600))")
        let load = try run("h2load", ["-n", "4000", "-c", "4", "-m", "32", "-H", ":authority: h2.local", "http://127.0.0.1:\(f.http)/load"], timeout: 60)
        #expect(load.stdout.contains("4000 succeeded, 0 failed, 0 errored, 0 timeout"), "\(load.stdout)")
        #expect(load.stdout.contains("status codes: 4000 2xx"))
    }

    @Test func slowReadersDoNotMakeTheProxyBuffer() throws {
        let f = try Fixture()
        let before = f.proxy.memoryKiB(peak: false) ?? 0
        // A reader limited to 1 MB/s of a 300 MB body, for 4 seconds.
        let slow = try curl(["--http2-prior-knowledge", "-H", "Host: h2.local", "--limit-rate", "1M", "-o", "/dev/null",
                             "http://127.0.0.1:\(f.http)/big?bytes=300000000"], timeout: 4)
        #expect(slow.status != 0, "the download cannot have finished")
        // A reader that never opens its flow-control window beyond one byte.
        let stuck = try f.probe("tiny-window", extra: ["3"])
        #expect(Self.response(stuck)?["status"] as? Int == 200)
        #expect((stuck["body_bytes"] as? Int ?? 0) <= 1)
        let after = f.proxy.memoryKiB(peak: true) ?? 0
        #expect(after - before < 16 * 1024, "peak RSS grew from \(before) KiB to \(after) KiB")
    }

    // MARK: - RFC 9113 §8 conversion rules

    @Test func cookieCrumbsAreJoinedForTheUpstream() throws {
        let f = try Fixture()
        let r = try f.probe("cookie-crumbs")
        let body = Self.response(r)?["body"] as? String ?? ""
        #expect(body.contains(#""cookie":"a=1; b=2; c=3""#), "\(body)")
    }

    @Test func hostServesWhenAuthorityIsAbsentAndMustAgreeWhenPresent() throws {
        let f = try Fixture()
        let hostOnly = try f.probe("host-only")
        #expect(Self.response(hostOnly)?["status"] as? Int == 200)
        let body = Self.response(hostOnly)?["body"] as? String
        #expect(body?.contains(#""backend":"h2""#) == true)
        let mismatch = try f.probe("authority-host-mismatch")
        #expect(Self.response(mismatch)?["status"] as? Int == 400)
    }

    @Test(arguments: ["uppercase-name", "connection-field", "value-whitespace", "content-length-mismatch"])
    func malformedStreamsAreResetAndNeverForwarded(_ name: String) throws {
        let f = try Fixture()
        let r = try f.probe(name)
        let resets = r["resets"] as? [String: Any] ?? [:]
        #expect(resets["1"] as? Int == 1, "expected RST_STREAM(PROTOCOL_ERROR), got \(r)")
        #expect(Self.response(r) == nil)
        #expect(r["goaway"] is NSNull, "one bad stream must not end the connection")
        #expect(!f.stack.backends[2].process.output.contains("X-Upper"))
    }

    @Test func limitsAnswer431And414() throws {
        let f = try Fixture()
        #expect(Self.response(try f.probe("many-fields"))?["status"] as? Int == 431)
        #expect(Self.response(try f.probe("long-path"))?["status"] as? Int == 414)
    }

    @Test func streamsBeyondTheConcurrencyLimitAreRefused() throws {
        let f = try Fixture(extra: ["--h2-max-concurrent-streams", "4"])
        // A client that could not have seen the limit yet: the extra streams are refused
        // (REFUSED_STREAM, safe to retry) and the others are served.
        let r = try f.probe("over-concurrency")
        let answered = (r["responses"] as? [String: Any] ?? [:]).values.compactMap { ($0 as? [String: Any])?["status"] as? Int }
        let refused = (r["resets"] as? [String: Int] ?? [:]).values.filter { $0 == 7 }
        #expect(answered.count == 4 && answered.allSatisfy { $0 == 200 }, "\(r)")
        #expect(refused.count == 4, "\(r)")
        // One that acknowledged the limit and ignores it loses the connection (PROTOCOL_ERROR).
        let acked = try f.probe("over-concurrency-acked")
        #expect(acked["goaway"] as? Int == 1, "\(acked)")
    }

    @Test(arguments: [("ping-flood", 11), ("settings-flood", 11), ("empty-data-flood", 11), ("window-overflow", 3), ("rapid-reset", -1)])
    func floodsAndWindowAbuseEndTheConnection(_ name: String, _ code: Int) throws {
        let f = try Fixture()
        let r = try f.probe(name)
        #expect(r["goaway"] is Int, "expected GOAWAY, got \(r)")
        if code >= 0 { #expect(r["goaway"] as? Int == code) }
        #expect(r["closed"] as? Bool == true)
        // The proxy is unharmed.
        let ok = try curl(["--http2-prior-knowledge", "-H", "Host: h2.local", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(f.http)/"])
        #expect(ok.stdout == "200")
    }

    @Test func hostOfAnotherCertificateOnACoalescedConnectionGets421() throws {
        let f = try Fixture()
        // SNI shop.local, :authority blog.apps.local: a browser reusing the connection wrongly.
        let r = try curl(f.tlsArgs + ["-H", "Host: blog.apps.local", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                                      "https://shop.local:\(f.https)/"])
        #expect(r.stdout == "421 2")
    }

    // MARK: - Shutdown

    @Test func gracefulShutdownLetsOpenStreamsFinish() throws {
        let f = try Fixture()
        let slow = try ChildProcess(Paths.tool("curl")!, ["-sS", "--http2-prior-knowledge", "-H", "Host: h2.local", "-w", "\n%{http_code}",
                                                         "http://127.0.0.1:\(f.http)/slow?delay_ms=1500"])
        usleep(400_000)
        f.proxy.signal(SIGTERM)
        #expect(slow.waitForExit(timeout: 10) == 0)
        #expect(slow.output.hasSuffix("\n200"), "\(slow.output)")
        #expect(f.proxy.waitForExit(timeout: 10) != nil)
    }
}
