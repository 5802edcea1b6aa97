import Atomics
import Foundation
import SluiceProxy
import SluiceUpstream
import Dispatch

/// Renders the counters in the Prometheus text exposition format (version 0.0.4).
enum PrometheusText {
    static func render(counters c: LoopMetrics.Counters, snapshot: ConfigSnapshot, process p: ProcessMetrics) -> String {
        var out = ""
        out.reserveCapacity(16 * 1024)
        let registry = StatRegistry.shared
        let keys = registry.keys

        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func labels(_ pairs: [(String, String)]) -> String {
            pairs.isEmpty ? "" : "{" + pairs.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        func seriesLabels(_ i: Int) -> [(String, String)] {
            let k = keys[i]
            return [("host", k.host), ("ingress", k.ingress), ("service", k.service)]
        }
        let used = c.series.indices.filter { $0 < keys.count && c.series[$0].requests > 0 }

        family("sluice_requests_total", "counter", "Requests answered, by route (host rule, Ingress, Service) and status class.")
        for i in used {
            for (k, cls) in ["1xx", "2xx", "3xx", "4xx", "5xx"].enumerated() where c.series[i].byClass[k] > 0 {
                out += "sluice_requests_total\(labels(seriesLabels(i) + [("code", cls)])) \(c.series[i].byClass[k])\n"
            }
        }
        family("sluice_request_bytes_total", "counter", "Bytes received from clients (heads and bodies).")
        for i in used { out += "sluice_request_bytes_total\(labels(seriesLabels(i))) \(c.series[i].bytesIn)\n" }
        family("sluice_response_bytes_total", "counter", "Bytes sent to clients (heads and bodies).")
        for i in used { out += "sluice_response_bytes_total\(labels(seriesLabels(i))) \(c.series[i].bytesOut)\n" }
        family("sluice_retries_total", "counter", "Requests replayed on a new upstream connection.")
        for i in used { out += "sluice_retries_total\(labels(seriesLabels(i))) \(c.series[i].retries)\n" }

        func histogram(_ name: String, _ help: String, _ pick: (LoopMetrics.Series) -> LoopMetrics.Histogram) {
            family(name, "histogram", help)
            for i in used {
                let h = pick(c.series[i])
                guard h.count > 0 else { continue }
                let l = seriesLabels(i)
                var cumulative = 0
                for (b, bound) in LoopMetrics.bucketBounds.enumerated() {
                    cumulative += h.counts[b]
                    out += "\(name)_bucket\(labels(l + [("le", format(bound))])) \(cumulative)\n"
                }
                out += "\(name)_bucket\(labels(l + [("le", "+Inf")])) \(h.count)\n"
                out += "\(name)_sum\(labels(l)) \(format(Double(h.sumNanos) / 1e9))\n"
                out += "\(name)_count\(labels(l)) \(h.count)\n"
            }
        }
        histogram("sluice_request_duration_seconds", "Time from a complete request head to the end of the response.") { $0.duration }
        histogram("sluice_upstream_duration_seconds", "Time from sending a request upstream to the end of its response head.") { $0.upstream }

        family("sluice_downstream_connections", "gauge", "Open client connections (HTTP/1.1 and HTTP/2).")
        out += "sluice_downstream_connections \(c.downstreamConnections)\n"
        family("sluice_upstream_connections", "gauge", "Open upstream connections, idle or busy.")
        out += "sluice_upstream_connections \(c.upstreamConnections)\n"
        family("sluice_http2_connections_total", "counter", "Client connections that spoke HTTP/2.")
        out += "sluice_http2_connections_total \(c.h2Connections)\n"
        family("sluice_tls_handshakes_total", "counter", "Completed TLS handshakes.")
        out += "sluice_tls_handshakes_total \(c.tlsHandshakes)\n"
        family("sluice_tls_resumed_handshakes_total", "counter", "Completed TLS handshakes that resumed a session (ticket or cache).")
        out += "sluice_tls_resumed_handshakes_total \(c.tlsResumed)\n"
        family("sluice_tls_handshake_failures_total", "counter", "TLS handshakes refused or broken.")
        out += "sluice_tls_handshake_failures_total \(c.tlsFailures)\n"

        let endpointKeys = registry.endpoints
        family("sluice_endpoint_requests_total", "counter", "Requests sent to each endpoint.")
        for (i, e) in c.endpoints.enumerated() where i < endpointKeys.count && e.requests > 0 {
            out += "sluice_endpoint_requests_total\(labels([("service", endpointKeys[i].service), ("endpoint", endpointKeys[i].address)])) \(e.requests)\n"
        }
        family("sluice_endpoint_failures_total", "counter", "Connect failures, resets, timeouts and invalid responses per endpoint.")
        for (i, e) in c.endpoints.enumerated() where i < endpointKeys.count && e.requests > 0 {
            out += "sluice_endpoint_failures_total\(labels([("service", endpointKeys[i].service), ("endpoint", endpointKeys[i].address)])) \(e.failures)\n"
        }
        family("sluice_endpoint_ready", "gauge", "1 for each endpoint the current configuration routes to (ready in its EndpointSlice).")
        for b in snapshot.table.backends {
            for a in b.addresses {
                out += "sluice_endpoint_ready\(labels([("service", b.name), ("endpoint", "\(a.ip):\(a.port)")])) 1\n"
            }
        }

        let now = Int64(DispatchTime.now().uptimeNanoseconds)
        var seenHealth = Set<ObjectIdentifier>()
        var health: [(String, EndpointHealth)] = []
        for pool in snapshot.pools.compactMap({ $0 }) + (snapshot.fallback.map { [$0] } ?? []) {
            for h in pool.health where seenHealth.insert(ObjectIdentifier(h)).inserted {
                health.append((labels([("service", h.service), ("endpoint", h.endpoint.description)]), h))
            }
        }
        family("sluice_endpoint_healthy", "gauge", "1 when the endpoint passes its active health checks (or has none) and is not ejected.")
        for (l, h) in health { out += "sluice_endpoint_healthy\(l) \(h.isAvailable(now: now) ? 1 : 0)\n" }
        family("sluice_endpoint_ejections_total", "counter", "Passive outlier ejections of each endpoint.")
        for (l, h) in health { out += "sluice_endpoint_ejections_total\(l) \(h.ejections.load(ordering: .relaxed))\n" }
        family("sluice_circuit_breaker_rejections_total", "counter", "Requests answered 503 because a circuit was open.")
        out += "sluice_circuit_breaker_rejections_total \(c.circuitRejections)\n"

        family("sluice_config_generation", "gauge", "Generation of the configuration being served.")
        out += "sluice_config_generation \(snapshot.generation)\n"
        family("sluice_config_errors", "gauge", "Errors in the rule files (the files keep their last good version).")
        out += "sluice_config_errors \(snapshot.problems.filter { $0.severity == .error }.count)\n"
        family("sluice_reloads_total", "counter", "Reloads applied.")
        out += "sluice_reloads_total \(p.reloads.load(ordering: .relaxed))\n"
        family("sluice_reload_failures_total", "counter", "Reloads after which at least one file was refused.")
        out += "sluice_reload_failures_total \(p.reloadFailures.load(ordering: .relaxed))\n"
        family("sluice_ready", "gauge", "1 while serving, 0 before the first configuration and while draining.")
        out += "sluice_ready \(p.ready.load(ordering: .relaxed) ? 1 : 0)\n"
        family("process_resident_memory_bytes", "gauge", "Resident memory.")
        out += "process_resident_memory_bytes \(residentBytes())\n"
        family("process_uptime_seconds", "gauge", "Seconds since the process started.")
        let up = (ContinuousClock.now - p.startedAt).components
        out += "process_uptime_seconds \(up.seconds)\n"
        return out
    }

    static func escape(_ s: String) -> String {
        var r = ""
        for ch in s {
            switch ch {
            case "\\": r += "\\\\"
            case "\"": r += "\\\""
            case "\n": r += "\\n"
            default: r.append(ch)
            }
        }
        return r
    }

    static func format(_ d: Double) -> String {
        if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
        return String(d)
    }

    static func residentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let parts = s.split(separator: " ")
        guard parts.count > 1, let pages = Int(parts[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
