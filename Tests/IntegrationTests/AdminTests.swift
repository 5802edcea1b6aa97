import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The admin listener: metrics that move by exactly what was sent, JSON that matches the rules,
/// readiness during a drain, the access log, and the status page in a real browser.
@Suite("Admin and observability", .serialized)
struct AdminTests {
    final class Fixture: @unchecked Sendable {
        let stack: Stack
        let rules: String
        var proxy: ChildProcess!
        var http = 0
        var admin = 0

        init(extra: [String] = []) throws {
            stack = try Stack(backends: ["web", "api"], defaultBackend: false)
            stack.proxy.stop()
            rules = emptyDirectory()
            var yaml = stack.servicesYAML
            yaml += """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: site, namespace: default}
            spec:
              rules:
              - host: web.local
                http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
              - host: api.local
                http: {paths: [{path: /v1, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]}
            """
            try yaml.writeWhole(toFile: rules + "/site.yaml")
            proxy = try ChildProcess(Paths.sluice, ["serve", "--rules", rules, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
                                                    "--admin", "127.0.0.1:0", "--workers", "2", "--drain-timeout", "10"] + extra)
            http = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
            admin = Int(try proxy.waitFor(#"sluice admin on \S*:(\d+)"#))!
        }

        func get(_ path: String) throws -> String {
            try curl(["-s", "http://127.0.0.1:\(admin)\(path)"]).stdout
        }

        func json(_ path: String) throws -> Any {
            try JSONSerialization.jsonObject(with: Data(try get(path).utf8))
        }

        deinit {
            proxy?.stop()
            stack.stop()
        }
    }

    /// The value of one sample line (`name{labels} value`), 0 when absent.
    static func sample(_ metrics: String, _ prefix: String) -> Double {
        for line in metrics.split(separator: "\n") where line.hasPrefix(prefix + " ") {
            return Double(line.split(separator: " ").last ?? "") ?? 0
        }
        return 0
    }

    @Test func metricsMoveByExactlyWhatWasSent() throws {
        let f = try Fixture()
        let route = #"{host="web.local",ingress="default/site",service="default/web:80""#
        let before = try f.get("/metrics")
        for _ in 0..<7 { _ = try curl(["-H", "Host: web.local", "http://127.0.0.1:\(f.http)/page"]) }
        for _ in 0..<3 { _ = try curl(["-H", "Host: web.local", "http://127.0.0.1:\(f.http)/fail?status=503"]) }
        for _ in 0..<2 { _ = try curl(["-H", "Host: nowhere.local", "http://127.0.0.1:\(f.http)/"]) }
        _ = try curl(["--http2-prior-knowledge", "-H", "Host: api.local", "http://127.0.0.1:\(f.http)/v1/x"])
        let after = try f.get("/metrics")
        func delta(_ series: String) -> Double { Self.sample(after, series) - Self.sample(before, series) }
        #expect(delta("sluice_requests_total\(route),code=\"2xx\"}") == 7)
        #expect(delta("sluice_requests_total\(route),code=\"5xx\"}") == 3)
        #expect(delta(#"sluice_requests_total{host="_unmatched",ingress="",service="",code="4xx"}"#) == 2)
        #expect(delta(#"sluice_requests_total{host="api.local",ingress="default/site",service="default/api:80",code="2xx"}"#) == 1)
        #expect(delta("sluice_request_duration_seconds_count\(route)}") == 10)
        #expect(delta("sluice_upstream_duration_seconds_count\(route)}") == 10)
        #expect(delta("sluice_request_duration_seconds_bucket\(route),le=\"+Inf\"}") == 10)
        #expect(delta("sluice_response_bytes_total\(route)}") > 10 * 100)
        #expect(delta("sluice_request_bytes_total\(route)}") > 10 * 30)
        let web = f.stack.backends[0].port
        #expect(delta(#"sluice_endpoint_requests_total{service="default/web:80",endpoint="127.0.0.1:\#(web)"}"#) == 10)
        #expect(delta("sluice_http2_connections_total") == 1)
        #expect(Self.sample(after, #"sluice_endpoint_ready{service="default/web:80",endpoint="127.0.0.1:\#(web)"}"#) == 1)
        #expect(Self.sample(after, "sluice_config_generation") == 1)
        #expect(Self.sample(after, "sluice_ready") == 1)
        #expect(after.contains("# TYPE sluice_request_duration_seconds histogram"))
    }

    @Test func jsonEndpointsMatchTheConfiguration() throws {
        let f = try Fixture()
        let routes = try #require(try f.json("/routes") as? [[String: Any]])
        let hosts = Set(routes.compactMap { $0["host"] as? String })
        #expect(hosts == ["web.local", "api.local"])
        let api = try #require(routes.first { $0["host"] as? String == "api.local" })
        #expect(api["path"] as? String == "/v1")
        #expect(api["pathType"] as? String == "Prefix")
        #expect(api["ingress"] as? String == "default/site")
        #expect(api["endpoints"] as? [String] == ["127.0.0.1:\(f.stack.backends[1].port)"])
        #expect((api["source"] as? String ?? "").hasSuffix("site.yaml:\(11 * 2 + 7)") || (api["source"] as? String ?? "").contains("site.yaml:"))

        let up = try #require(try f.json("/upstreams") as? [String: Any])
        let services = try #require(up["services"] as? [[String: Any]])
        #expect(Set(services.compactMap { $0["name"] as? String }) == ["default/web:80", "default/api:80"])

        let config = try #require(try f.json("/config") as? [String: Any])
        #expect(config["generation"] as? Int == 1)
        let files = try #require(config["files"] as? [[String: Any]])
        #expect(files.compactMap { $0["path"] as? String }.contains { $0.hasSuffix("/site.yaml") })

        // A broken file: reported with file and line, served from its last good version.
        try "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules: [{host: \"bad host\"}]\n"
            .writeWhole(toFile: f.rules + "/site.yaml")
        var broken: [String: Any] = [:]
        for _ in 0..<50 {
            broken = try #require(try f.json("/config") as? [String: Any])
            if (broken["generation"] as? Int ?? 1) > 1 { break }
            usleep(100_000)
        }
        let problems = try #require(broken["problems"] as? [[String: Any]])
        let p = try #require(problems.first { ($0["file"] as? String ?? "").hasSuffix("site.yaml") && $0["severity"] as? String == "error" })
        #expect(p["line"] as? Int == 5)
        #expect((broken["files"] as? [[String: Any]])?.first?["servingLastGood"] as? Bool == true)
        let still = try curl(["-H", "Host: web.local", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(f.http)/"])
        #expect(still.stdout == "200")
    }

    @Test func readinessFlipsWhileDraining() throws {
        let f = try Fixture()
        #expect(try f.get("/readyz") == "ready\n")
        let slow = try ChildProcess(Paths.tool("curl")!, ["-sS", "-H", "Host: web.local", "http://127.0.0.1:\(f.http)/slow?delay_ms=2000"])
        usleep(300_000)
        f.proxy.signal(SIGTERM)
        usleep(300_000)
        let during = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(f.admin)/readyz"])
        #expect(during.stdout == "503", "readyz during the drain answered \(during.stdout)")
        #expect(try f.get("/healthz") == "ok\n")
        #expect(slow.waitForExit(timeout: 10) == 0)
    }

    @Test func accessLogLinesAndReopenOnSIGUSR1() throws {
        let dir = emptyDirectory()
        let path = dir + "/access.log"
        let f = try Fixture(extra: ["--access-log", path, "--access-log-format", "json"])
        _ = try curl(["-H", "Host: web.local", "-H", "X-Request-Id: trace-42", "http://127.0.0.1:\(f.http)/a?q=\"1\""])
        _ = try curl(["-H", "Host: nowhere.local", "http://127.0.0.1:\(f.http)/missing"])
        var lines: [[String: Any]] = []
        for _ in 0..<30 {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            if lines.count >= 2 { break }
            usleep(100_000)
        }
        #expect(lines.count == 2)
        // Each worker writes its own batches: lines of different connections may interleave.
        let first = try #require(lines.first { $0["path"] as? String != "/missing" })
        #expect(first["method"] as? String == "GET")
        #expect(first["host"] as? String == "web.local")
        #expect(first["path"] as? String == "/a?q=\"1\"")
        #expect(first["status"] as? Int == 200)
        #expect(first["request_id"] as? String == "trace-42")
        #expect(first["upstream"] as? String == "127.0.0.1:\(f.stack.backends[0].port)")
        #expect(first["upstream_status"] as? Int == 200)
        #expect((first["bytes"] as? Int ?? 0) > 100)
        #expect(first["client"] as? String == "127.0.0.1")
        #expect((first["route"] as? String ?? "").contains("default/site"))
        #expect(lines.first { $0["path"] as? String == "/missing" }?["status"] as? Int == 404)
        // logrotate: move the file, signal, and new lines go to a new file at the path.
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        f.proxy.signal(SIGUSR1)
        usleep(300_000)
        _ = try curl(["-H", "Host: web.local", "http://127.0.0.1:\(f.http)/after-rotate"])
        var reopened = ""
        for _ in 0..<30 {
            reopened = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if reopened.contains("after-rotate") { break }
            usleep(100_000)
        }
        #expect(reopened.contains("/after-rotate"))
        #expect(!((try? String(contentsOfFile: path + ".1", encoding: .utf8)) ?? "").contains("after-rotate"))
    }

    @Test func adminRefusesPublicAddressesUnlessAllowed() throws {
        let refused = try ChildProcess(Paths.sluice, ["serve", "--rules", emptyDirectory(), "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
                                                      "--admin", "0.0.0.0:0"])
        #expect(refused.waitForExit(timeout: 20) != 0)
        #expect(refused.shows("--admin-public"))
        let allowed = try ChildProcess(Paths.sluice, ["serve", "--rules", emptyDirectory(), "--http", "127.0.0.1:0", "--https", "127.0.0.1:0",
                                                      "--admin", "0.0.0.0:0", "--admin-public"])
        defer { allowed.stop() }
        _ = try allowed.waitFor(#"sluice admin on \S*:(\d+)"#)
    }

    @Test func statusPageRendersInHeadlessChromium() throws {
        guard let chromium = Paths.tool("chromium") ?? Paths.tool("chromium-browser") else {
            print("SKIPPED statusPageRendersInHeadlessChromium: chromium is not installed (`make test` installs it with apt)")
            return
        }
        let f = try Fixture()
        for _ in 0..<20 { _ = try curl(["-H", "Host: web.local", "http://127.0.0.1:\(f.http)/"]) }
        let url = "http://127.0.0.1:\(f.admin)/"
        let common = ["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage",
                      "--user-data-dir=" + emptyDirectory(), "--virtual-time-budget=7000"]
        let dom = try run(chromium, common + ["--dump-dom", url], timeout: 90)
        #expect(dom.stdout.contains("<td>web.local</td>"), "routes table: \(dom.stdout.prefix(400)) \(dom.stderr.suffix(400))")
        #expect(dom.stdout.contains("<td>api.local</td>"))
        #expect(dom.stdout.contains("default/web:80"))
        let series = dom.stdout.range(of: #"data-series="(\d+)""#, options: .regularExpression).map { String(dom.stdout[$0]) }
        #expect(series != nil && series != #"data-series="0""#, "the chart drew no series")
        #expect(dom.stdout.contains(#"data-ready="1""#))
        let shot = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-status-page.png").path
        _ = try run(chromium, common + ["--window-size=1280,1000", "--screenshot=" + shot, url], timeout: 90)
        #expect(FileManager.default.fileExists(atPath: shot))
        print("status page screenshot: \(shot)")
    }
}
