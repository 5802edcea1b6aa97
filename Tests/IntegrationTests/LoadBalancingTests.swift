import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Backend pools with three real echo backends: policies, affinity, health, ejection, retries,
/// timeouts and circuit breaking, driven through the running proxy.
@Suite("Load balancing and backend health", .serialized)
struct LoadBalancingTests {
    final class Fixture: @unchecked Sendable {
        let stack: Stack
        var proxy: ChildProcess!
        var http = 0
        var admin = 0
        let rules: String

        init() throws {
            stack = try Stack(backends: ["b0", "b1", "b2"], defaultBackend: false)
            stack.proxy.stop()
            rules = emptyDirectory()
            // One Service over the three backends (one EndpointSlice each: their ports differ),
            // actively checked every second.
            var yaml = """
            apiVersion: v1
            kind: Service
            metadata:
              name: pool
              annotations:
                sluice.io/health-check-path: /healthz
                sluice.io/health-check-interval: 1s
                sluice.io/health-check-timeout: 500ms
                sluice.io/health-check-healthy-threshold: "1"
                sluice.io/health-check-unhealthy-threshold: "2"
            spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
            ---

            """
            for b in stack.backends {
                yaml += """
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {name: pool-\(b.name), labels: {kubernetes.io/service-name: pool}}
                addressType: IPv4
                ports: [{name: http, port: \(b.port)}]
                endpoints: [{addresses: [127.0.0.1]}]
                ---

                """
            }
            func ingress(_ name: String, _ annotations: [String: String]) -> String {
                let a = annotations.isEmpty ? "{}" : "{" + annotations.map { "\"\($0)\": \"\($1)\"" }.joined(separator: ", ") + "}"
                return """
                apiVersion: networking.k8s.io/v1
                kind: Ingress
                metadata: {name: \(name), annotations: \(a)}
                spec:
                  rules: [{host: \(name).local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: pool, port: {number: 80}}}}]}}]
                ---

                """
            }
            yaml += ingress("rr", [:])
            yaml += ingress("lr", ["sluice.io/load-balance": "least-request"])
            yaml += ingress("ch", ["sluice.io/hash-by": "header:x-user"])
            yaml += ingress("aff", ["sluice.io/affinity": "cookie"])
            yaml += ingress("slow", ["sluice.io/read-timeout": "1s"])
            yaml += ingress("cb", ["sluice.io/max-connections": "1"])
            yaml += ingress("retry", ["sluice.io/retries": "2"])
            try yaml.writeWhole(toFile: rules + "/pool.yaml")
            proxy = try ChildProcess(Paths.sluice, ["serve", "--rules", rules, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
                                                    "--admin", "127.0.0.1:0", "--workers", "2"])
            http = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
            admin = Int(try proxy.waitFor(#"sluice admin on \S*:(\d+)"#))!
        }

        /// `count` requests on one keep-alive connection; the backend name of each answer.
        func backends(host: String, count: Int, path: String = "/", extra: [String] = []) throws -> [String] {
            var args = ["-s", "-H", "Host: \(host)"] + extra
            for _ in 0..<count { args.append("http://127.0.0.1:\(http)\(path)") }
            let r = try curl(args, timeout: 60)
            return r.stdout.matches(of: /"backend":"(b\d)"/).map { String($0.1) }
        }

        func endpointState(_ port: Int) throws -> [String: Any]? {
            let r = try curl(["-s", "http://127.0.0.1:\(admin)/upstreams"])
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            for s in json?["services"] as? [[String: Any]] ?? [] {
                for e in s["endpoints"] as? [[String: Any]] ?? [] where e["address"] as? String == "127.0.0.1:\(port)" { return e }
            }
            return nil
        }

        deinit {
            proxy?.stop()
            stack.stop()
        }
    }

    static func tally(_ names: [String]) -> [String: Int] {
        names.reduce(into: [:]) { $0[$1, default: 0] += 1 }
    }

    @Test func roundRobinAndLeastRequestSpreadEvenly() throws {
        let f = try Fixture()
        let rr = Self.tally(try f.backends(host: "rr.local", count: 300))
        // One connection is served by one worker: its round robin is exact.
        #expect(rr == ["b0": 100, "b1": 100, "b2": 100], "\(rr)")
        // Sequential requests all see zero in flight, so least-request breaks ties at random:
        // each backend's share is binomial (n = 300, p = 1/3, sd ≈ 8); ±40 is 5 sd.
        let lr = Self.tally(try f.backends(host: "lr.local", count: 300))
        #expect(lr.count == 3 && lr.values.allSatisfy { abs($0 - 100) <= 40 }, "\(lr)")
    }

    @Test func consistentHashKeepsAKeyOnOneBackend() throws {
        let f = try Fixture()
        var owner: [String: String] = [:]
        for user in 0..<30 {
            let got = Set(try f.backends(host: "ch.local", count: 4, extra: ["-H", "X-User: user-\(user)"]))
            #expect(got.count == 1, "user-\(user) went to \(got)")
            owner["user-\(user)"] = got.first
        }
        #expect(Set(owner.values).count == 3, "30 keys should reach all three backends: \(Self.tally(Array(owner.values)))")
    }

    @Test func affinityCookieSticksAndCannotBeForged() throws {
        let f = try Fixture()
        let first = try curl(["-s", "-i", "-H", "Host: aff.local", "http://127.0.0.1:\(f.http)/"])
        let cookie = try #require(first.stdout.firstMatch(of: /(?i)set-cookie: (sluice-affinity=[^;\r\n]+)/).map { String($0.1) })
        let pinned = try #require(first.stdout.firstMatch(of: /"backend":"(b\d)"/).map { String($0.1) })
        let again = try f.backends(host: "aff.local", count: 20, extra: ["-H", "Cookie: other=1; \(cookie)"])
        #expect(again.count == 20 && again.allSatisfy { $0 == pinned }, "\(Self.tally(again))")
        // A cookie naming an endpoint without the proxy's signature is ignored (and replaced).
        let forged = String(cookie.dropLast(4)) + "0000"
        let r = try curl(["-s", "-i", "-H", "Host: aff.local", "-H", "Cookie: \(forged)", "http://127.0.0.1:\(f.http)/"])
        #expect(r.stdout.lowercased().contains("set-cookie: sluice-affinity="))
    }

    @Test func slowBackendGets504AtTheIngressReadTimeout() throws {
        let f = try Fixture()
        let start = Date()
        let r = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: slow.local", "http://127.0.0.1:\(f.http)/?delay_ms=4000"])
        let elapsed = Date().timeIntervalSince(start)
        #expect(r.stdout == "504")
        #expect(elapsed > 0.9 && elapsed < 2.6, "answered after \(elapsed) s")
    }

    @Test func circuitOpensBeyondTheConnectionLimit() throws {
        let f = try Fixture()
        // Six slow requests at once, one allowed per endpoint: three wait for their backends,
        // three are refused at once.
        var clients: [ChildProcess] = []
        for _ in 0..<6 {
            clients.append(try ChildProcess(Paths.tool("curl")!, ["-s", "-w", "\n%{http_code}", "-H", "Host: cb.local",
                                                                   "http://127.0.0.1:\(f.http)/?delay_ms=1500"]))
        }
        for c in clients { _ = c.waitForExit(timeout: 10) }
        let codes = clients.map { String($0.output.split(separator: "\n").last ?? "") }
        #expect(codes.filter { $0 == "200" }.count == 3, "\(codes)")
        #expect(codes.filter { $0 == "503" }.count == 3, "\(codes)")
        #expect(clients.contains { $0.output.contains("circuit open") })
    }

    @Test func gatewayErrorsAreRetriedOnAnotherEndpointWhenAllowed() throws {
        let f = try Fixture()
        // b0 answers 503 through its query parameter on every request: with retries 2 the proxy
        // moves to another backend, whose answer (200) reaches the client.
        let r = try curl(["-s", "-w", "\n%{http_code}", "-H", "Host: retry.local", "http://127.0.0.1:\(f.http)/?status=503"])
        // Every backend honours status=503, so all attempts fail: 1 + 2 retries, then the 503.
        #expect(r.stdout.hasSuffix("\n503"))
        let metrics = try curl(["-s", "http://127.0.0.1:\(f.admin)/metrics"]).stdout
        #expect(metrics.contains(#"sluice_retries_total{host="retry.local",ingress="default/retry",service="default/pool:80"} 1"#), "\(metrics.split(separator: "\n").filter { $0.hasPrefix("sluice_retries_total") })")
        let endpoints = metrics.split(separator: "\n").filter { $0.hasPrefix("sluice_endpoint_requests_total") }
        #expect(endpoints.count == 3, "three endpoints tried: \(endpoints)")
    }

    @Test func aBackendDyingUnderLoadCostsNoErrorsAndComesBack() throws {
        let f = try Fixture()
        guard let wrk = Paths.tool("wrk") else {
            Issue.record("wrk missing: `make test` installs it")
            return
        }
        let victim = f.stack.backends[1]
        let load = try ChildProcess(wrk, ["-t1", "-c50", "-d6s", "-H", "Host: rr.local", "http://127.0.0.1:\(f.http)/"])
        usleep(1_500_000)
        victim.process.stop()
        let killed = Date()
        var ejectedAfter: Double? = nil
        while Date().timeIntervalSince(killed) < 3 {
            if let e = try f.endpointState(victim.port), (e["ejected"] as? Bool == true || e["healthy"] as? Bool == false) {
                ejectedAfter = Date().timeIntervalSince(killed)
                break
            }
            usleep(20_000)
        }
        #expect(load.waitForExit(timeout: 20) == 0)
        let out = load.output
        #expect(!out.contains("Non-2xx"), "\(out)")
        #expect(!out.contains("Socket errors"), "\(out)")
        #expect((ejectedAfter ?? 99) < 1.0, "out of rotation after \(ejectedAfter ?? -1) s")
        #expect(f.proxy.shows("endpoint ejected") || f.proxy.shows("failed its health checks", within: 0))

        // Back on the same port: in rotation again within one check interval (1 s) and a bit.
        let revived = try ChildProcess(Paths.sluice, ["echo", "--listen", "127.0.0.1:\(victim.port)", "--name", "b1"])
        defer { revived.stop() }
        _ = try revived.waitFor(#"listening on"#)
        let back = Date()
        var servedAgain: Double? = nil
        while Date().timeIntervalSince(back) < 5 {
            if try f.backends(host: "rr.local", count: 6).contains("b1") {
                servedAgain = Date().timeIntervalSince(back)
                break
            }
            usleep(50_000)
        }
        #expect((servedAgain ?? 99) < 2.2, "traffic returned after \(servedAgain ?? -1) s")
    }

    @Test func allBackendsDownGivesFast503s() throws {
        let f = try Fixture()
        for b in f.stack.backends { b.process.stop() }
        // The health checks notice (2 failures at 1 s intervals); then requests fail at once.
        usleep(3_000_000)
        let start = Date()
        let r = try curl(["-s", "-w", "\n%{http_code}", "-H", "Host: rr.local", "http://127.0.0.1:\(f.http)/"])
        #expect(r.stdout.hasSuffix("\n503"), "\(r.stdout)")
        #expect(r.stdout.contains("no healthy endpoint"))
        #expect(Date().timeIntervalSince(start) < 0.5)
    }
}
