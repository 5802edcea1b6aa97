import Foundation
import Testing

/// Ingress rules on disk → the running proxy → several echo backends.
@Suite("routing end to end", .serialized)
struct RoutingEndToEndTests {
    func write(_ files: [String: String]) throws -> String {
        let dir = emptyDirectory()
        for (name, text) in files {
            let url = URL(fileURLWithPath: dir).appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.writeWhole(toFile: url.path)
        }
        return dir
    }

    func backendYAML(_ name: String, port: Int) -> String {
        """
        apiVersion: v1
        kind: Service
        metadata: {name: \(name), namespace: web}
        spec: {ports: [{name: http, port: 80, targetPort: \(port)}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: \(name)-x, namespace: web, labels: {kubernetes.io/service-name: \(name)}}
        addressType: IPv4
        ports: [{name: http, port: \(port)}]
        endpoints: [{addresses: [127.0.0.1]}]
        ---

        """
    }

    @Test func hostsPathsWildcardsAndDefaults() throws {
        let stack = try Stack(backends: [], defaultBackend: false)
        stack.proxy.stop()
        for n in ["shop", "api", "wild", "fallback"] { try stack.startBackend(n) }
        let port = { (n: String) in stack.backends.first { $0.name == n }!.port }
        let ingress = """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: site, namespace: web, creationTimestamp: "2026-01-01T00:00:00Z"}
        spec:
          defaultBackend: {service: {name: fallback, port: {number: 80}}}
          rules:
            - host: shop.test
              http:
                paths:
                  - {path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}
                  - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
                  - {path: /exact, pathType: Exact, backend: {service: {name: api, port: {number: 80}}}}
                  - {path: /down, pathType: Prefix, backend: {service: {name: nobody, port: {number: 80}}}}
            - host: "*.apps.test"
              http:
                paths: [{path: /, pathType: Prefix, backend: {service: {name: wild, port: {number: 80}}}}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: nobody, namespace: web}
        spec: {ports: [{port: 80}]}
        """
        let dir = try write([
            "backends.yaml": ["shop", "api", "wild", "fallback"].map { backendYAML($0, port: port($0)) }.joined(),
            "nested/site.yaml": ingress,
        ])
        let proxy = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--https", "127.0.0.1:0", "--rules", dir, "--http", "127.0.0.1:0", "--workers", "2"])
        defer { proxy.stop() }
        let p = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
        func backend(_ host: String, _ path: String) throws -> String {
            let r = try curl(["-H", "Host: \(host)", "--path-as-is", "-w", "\n%{http_code}", "http://127.0.0.1:\(p)\(path)"])
            let lines = r.stdout.split(separator: "\n")
            if let m = r.stdout.firstMatch(of: /"backend":"([^"]+)"/) { return String(m.1) }
            return String(lines.last ?? "")
        }
        #expect(try backend("shop.test", "/") == "shop")
        #expect(try backend("SHOP.test:80", "/cart") == "shop")
        #expect(try backend("shop.test", "/api/v1") == "api")
        #expect(try backend("shop.test", "/apiary") == "shop")
        #expect(try backend("shop.test", "/exact") == "api")
        #expect(try backend("shop.test", "/exact/") == "shop")
        #expect(try backend("shop.test", "/public/../api/x") == "api")
        #expect(try backend("shop.test", "/%61pi/x") == "api")
        #expect(try backend("blog.apps.test", "/") == "wild")
        #expect(try backend("a.blog.apps.test", "/") == "fallback")
        #expect(try backend("unknown.test", "/") == "fallback")
        #expect(try backend("shop.test", "/down") == "503")
        #expect(try backend("shop.test", "/../x") == "400")
        // The client's path is what the backend sees, not the normalised one.
        let raw = try curl(["-H", "Host: shop.test", "--path-as-is", "http://127.0.0.1:\(p)/a/./b?q=1"])
        #expect(raw.stdout.contains("\"path\":\"/a/./b?q=1\""))
    }

    @Test func brokenRulesAreReportedAndTheRestServes() throws {
        let stack = try Stack(backends: ["ok"], defaultBackend: false)
        stack.proxy.stop()
        let okPort = stack.backends[0].port
        let dir = try write([
            "good.yaml": backendYAML("ok", port: okPort) + """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: good, namespace: web}
            spec: {rules: [{host: good.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: ok, port: {number: 80}}}}]}}]}
            """,
            "bad.yaml": """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: bad, namespace: web}
            spec: {rules: [{host: bad.test, http: {paths: [{path: "/a//b", pathType: Prefix, backend: {service: {name: ok, port: {number: 80}}}}]}}]}
            """,
        ])
        let check = try run(Paths.sluice, ["check", "--rules", dir])
        #expect(check.status == 1)
        #expect(check.stdout.contains("bad.yaml:4: Ingress web/bad: spec.rules[0].http.paths[0].path: must not contain '//'"), "\(check.stdout)")
        let proxy = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--https", "127.0.0.1:0", "--rules", dir, "--http", "127.0.0.1:0"])
        defer { proxy.stop() }
        let p = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
        #expect(proxy.shows("must not contain '//'"))
        let good = try curl(["-H", "Host: good.test", "http://127.0.0.1:\(p)/"])
        #expect(good.stdout.contains("\"backend\":\"ok\""))
        let bad = try curl(["-H", "Host: bad.test", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(p)/a"])
        #expect(bad.stdout == "404")
    }

    @Test func shippedRulesPassCheckAndExplain() throws {
        let rules = Paths.repo.appendingPathComponent("ingress-rules").path
        let certs = emptyDirectory()
        _ = try run(Paths.repo.appendingPathComponent("scripts/dev-certs.sh").path, [certs])
        let check = try run(Paths.sluice, ["check", "--rules", rules, "--certs", certs])
        #expect(check.status == 0, "\(check.stdout)")
        let explain = try run(Paths.sluice, ["explain", "--rules", rules, "--certs", certs, "http://shop.local/api/v1"])
        #expect(explain.stdout.contains("Prefix /api → demo/api:http"))
        #expect(explain.stdout.contains("← MATCH"))
        let routes = try run(Paths.sluice, ["routes", "--rules", rules, "--certs", certs])
        #expect(routes.stdout.contains("*.apps.local\t/\tPrefix\t→ demo/apps:80 → 127.0.0.1:9003"))
    }

    @Test func externalNameServicesResolveThroughDNS() throws {
        let stack = try Stack(backends: ["ext"], defaultBackend: false)
        stack.proxy.stop()
        let port = stack.backends[0].port
        let dir = try write(["ext.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: outside, namespace: web}
            spec: {type: ExternalName, externalName: localhost, ports: [{port: 80, targetPort: \(port)}]}
            ---
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: ext, namespace: web}
            spec: {rules: [{host: ext.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: outside, port: {number: 80}}}}]}}]}
            """])
        // localhost resolves to loopback: refused unless allowed.
        let refused = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--https", "127.0.0.1:0", "--rules", dir, "--http", "127.0.0.1:0"])
        let p1 = Int(try refused.waitFor(#"serving http on \S*:(\d+)"#))!
        let r1 = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: ext.test", "http://127.0.0.1:\(p1)/"])
        #expect(r1.stdout == "503")
        #expect(refused.shows("resolves to local addresses only"))
        refused.stop()
        let allowed = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--https", "127.0.0.1:0", "--rules", dir, "--http", "127.0.0.1:0",
                                                      "--allow-local-external-names", "--external-name-refresh", "1"])
        defer { allowed.stop() }
        let p2 = Int(try allowed.waitFor(#"serving http on \S*:(\d+)"#))!
        let r2 = try curl(["-H", "Host: ext.test", "http://127.0.0.1:\(p2)/"])
        #expect(r2.stdout.contains("\"backend\":\"ext\""), "\(r2.stdout)")
        // Re-resolution runs and, with the same answer, changes nothing that a request would see.
        usleep(1_500_000)
        #expect(try curl(["-H", "Host: ext.test", "http://127.0.0.1:\(p2)/"]).stdout.contains("\"backend\":\"ext\""))
    }
}
