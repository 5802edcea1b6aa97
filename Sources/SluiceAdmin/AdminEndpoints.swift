import Atomics
import Foundation
import Dispatch
import SluiceProxy
import SluiceUpstream
import SluiceRouting

/// What each admin path answers. Everything is computed per request from the current snapshot
/// and a fresh copy of the counters: nothing here is cached between scrapes.
struct AdminEndpoints: Sendable {
    let server: ProxyServer
    let reloader: ReloadCoordinator

    func respond(method: String, target: String) async -> AdminResponse {
        guard method == "GET" || method == "HEAD" else { return .text(405, "GET or HEAD\n") }
        let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        switch path {
        case "/healthz":
            return .text(200, "ok\n")
        case "/readyz":
            let ready = ProcessMetrics.shared.ready.load(ordering: .relaxed)
            return .text(ready ? 200 : 503, ready ? "ready\n" : "not ready\n")
        case "/metrics":
            let counters = await server.collectCounters()
            let text = PrometheusText.render(counters: counters, snapshot: server.config.snapshot, process: ProcessMetrics.shared)
            return .text(200, text, type: "text/plain; version=0.0.4; charset=utf-8")
        case "/routes":
            return .json(routes())
        case "/upstreams":
            return .json(upstreams(await server.collectCounters()))
        case "/config":
            return .json(config())
        case "/", "/index.html":
            return AdminResponse(status: 200, contentType: "text/html; charset=utf-8", body: Array(StatusPage.html.utf8))
        default:
            return .text(404, "not found: try /, /healthz, /readyz, /metrics, /routes, /upstreams, /config\n")
        }
    }

    // MARK: - /routes

    struct RouteJSON: Encodable {
        var host: String
        var path: String
        var pathType: String
        var ingress: String
        var service: String
        var endpoints: [String]
        var problem: String?
        var source: String
    }

    func routes() -> [RouteJSON] {
        let snap = server.config.snapshot
        var out: [RouteJSON] = snap.table.routes.map { r in
            let b = snap.table.backends[r.backend]
            return RouteJSON(host: r.host ?? "*", path: r.path, pathType: r.pathType.rawValue, ingress: r.ingress, service: b.name,
                             endpoints: b.addresses.map { "\($0.ip):\($0.port)" }, problem: b.problem, source: "\(r.file):\(r.line)")
        }
        if let f = snap.fallback {
            out.append(RouteJSON(host: "*", path: "/", pathType: "Fallback", ingress: "--default-backend", service: f.name,
                                 endpoints: f.endpoints.map(\.description), problem: nil, source: "command line"))
        }
        return out
    }

    // MARK: - /upstreams

    struct EndpointJSON: Encodable {
        var address: String
        /// Ready in the configuration (EndpointSlice `ready`, or listed in Endpoints).
        var ready: Bool
        /// Passes its active health checks (true when it has none).
        var healthy: Bool
        /// Out of rotation by passive outlier detection right now.
        var ejected: Bool
        var ejections: Int
        var inFlight: Int
        var requests: Int
        var failures: Int
    }

    struct ServiceJSON: Encodable {
        var name: String
        /// Load balancing, retries, timeouts, limits, health checks (empty: the defaults).
        var policy: String
        var endpoints: [EndpointJSON]
        var problem: String?
        var requests: Int
        var errors: Int
        var byClass: [String: Int]
    }

    struct UpstreamsJSON: Encodable {
        var generation: Int
        var time: Double
        var services: [ServiceJSON]
    }

    func upstreams(_ counters: LoopMetrics.Counters) -> UpstreamsJSON {
        let snap = server.config.snapshot
        let registry = StatRegistry.shared
        let endpointKeys = registry.endpoints
        var endpointIndex: [EndpointKey: Int] = [:]
        for (i, k) in endpointKeys.enumerated() { endpointIndex[k] = i }
        // Request totals per service, over every route that sends to it.
        var perService: [String: [Int]] = [:]
        for (i, key) in registry.keys.enumerated() where i < counters.series.count && i != Int(StatRegistry.unrouted) {
            var v = perService[key.service] ?? [0, 0, 0, 0, 0]
            for c in 0..<5 { v[c] += counters.series[i].byClass[c] }
            perService[key.service] = v
        }
        var services: [(String, [String], String?, String)] = snap.table.backends.map { b in
            (b.name, b.addresses.map { "\($0.ip):\($0.port)" }, b.problem, b.policy.description)
        }
        if let f = snap.fallback { services.append((f.name, f.endpoints.map(\.description), nil, "")) }
        let now = Int64(DispatchTime.now().uptimeNanoseconds)
        var seen = Set<String>()
        var out: [ServiceJSON] = []
        for (name, addresses, problem, policy) in services where seen.insert(name).inserted {
            let eps = addresses.map { a -> EndpointJSON in
                let i = endpointIndex[EndpointKey(service: name, address: a)]
                let s = i.flatMap { $0 < counters.endpoints.count ? counters.endpoints[$0] : nil }
                let h = (try? Endpoint(parsing: a)).map { HealthRegistry.shared.health(service: name, endpoint: $0) }
                return EndpointJSON(address: a, ready: true, healthy: h?.isActiveHealthy ?? true, ejected: h?.isEjected(now: now) ?? false,
                                    ejections: h?.ejections.load(ordering: .relaxed) ?? 0, inFlight: h?.inFlight.total ?? 0,
                                    requests: s?.requests ?? 0, failures: s?.failures ?? 0)
            }
            let v = perService[name] ?? [0, 0, 0, 0, 0]
            out.append(ServiceJSON(name: name, policy: policy, endpoints: eps, problem: problem, requests: v.reduce(0, +), errors: v[4],
                                   byClass: ["1xx": v[0], "2xx": v[1], "3xx": v[2], "4xx": v[3], "5xx": v[4]]))
        }
        return UpstreamsJSON(generation: snap.generation, time: Date().timeIntervalSince1970, services: out)
    }

    // MARK: - /config

    struct ProblemJSON: Encodable {
        var severity: String
        var file: String
        var line: Int
        var object: String
        var field: String
        var message: String
    }

    struct FileJSON: Encodable {
        var path: String
        /// The file has errors and serves its last good version.
        var servingLastGood: Bool
        var problems: [ProblemJSON]
    }

    struct ConfigJSON: Encodable {
        var generation: Int
        var reloads: Int
        var reloadFailures: Int
        var rulesDirectory: String
        var files: [FileJSON]
        var problems: [ProblemJSON]
        var routes: Int
        var backends: Int
    }

    func config() -> ConfigJSON {
        let snap = server.config.snapshot
        let loader = reloader.loader
        let (files, lastGood) = loader.files
        let problems = snap.problems.map {
            ProblemJSON(severity: $0.severity.rawValue, file: $0.file, line: $0.line, object: $0.object, field: $0.field, message: $0.message)
        }
        let byFile = Dictionary(grouping: problems, by: \.file)
        let p = ProcessMetrics.shared
        return ConfigJSON(
            generation: snap.generation, reloads: p.reloads.load(ordering: .relaxed), reloadFailures: p.reloadFailures.load(ordering: .relaxed),
            rulesDirectory: loader.rulesDirectory,
            files: files.map { FileJSON(path: $0, servingLastGood: lastGood.contains($0), problems: byFile[$0] ?? []) },
            problems: problems, routes: snap.table.routes.count, backends: snap.table.backends.count)
    }
}
