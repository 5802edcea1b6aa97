import Foundation

/// How requests are spread over a backend's endpoints, checked, retried and bounded, compiled from
/// `sluice.io/…` annotations (and ingress-nginx's spellings on an Ingress). A Service's
/// annotations apply wherever it is a backend; an Ingress's apply to its own paths and win.
public struct BackendPolicy: Sendable, Hashable, CustomStringConvertible {
    public enum Balance: Sendable, Hashable {
        case roundRobin
        /// Power of two choices on requests in flight.
        case leastRequest
        /// Peak EWMA of response latency (times requests in flight).
        case ewma
        case consistentHash(HashKey)
    }

    public enum HashKey: Sendable, Hashable, CustomStringConvertible {
        case clientIP
        /// A request field, by lower-case name.
        case header(String)
        case cookie(String)

        public var description: String {
            switch self {
            case .clientIP: return "client-ip"
            case .header(let n): return "header:\(n)"
            case .cookie(let n): return "cookie:\(n)"
            }
        }
    }

    public struct HealthCheck: Sendable, Hashable {
        /// HTTP GET of this path; nil means a TCP connect.
        public var path: String?
        public var interval: Double = 5
        public var timeout: Double = 1
        public var healthyThreshold = 2
        public var unhealthyThreshold = 3
    }

    public var balance = Balance.roundRobin
    /// Cookie session affinity: the proxy sets this cookie (signed) to pin a client to an endpoint.
    public var affinityCookie: String? = nil
    /// Extra attempts on another endpoint for 502/503/504 and timeouts (idempotent requests only).
    public var retries = 0
    public var connectTimeout: Double? = nil
    public var readTimeout: Double? = nil
    public var sendTimeout: Double? = nil
    /// Requests in flight per endpoint (busy upstream connections) before the circuit opens.
    public var maxConnectionsPerEndpoint: Int? = nil
    /// Requests waiting for a new upstream connection before the circuit opens.
    public var maxPendingRequests: Int? = nil
    /// Largest request body accepted (413 beyond); nil: no limit.
    public var maxBodySize: Int64? = nil
    /// `ip:port` → weight for round robin (1 otherwise).
    public var weights: [String: Int] = [:]
    public var health: HealthCheck? = nil

    public init() {}

    public var isDefault: Bool { self == BackendPolicy() }

    public var description: String {
        var parts: [String] = []
        switch balance {
        case .roundRobin: if !weights.isEmpty { parts.append("weighted round-robin") }
        case .leastRequest: parts.append("least-request")
        case .ewma: parts.append("ewma")
        case .consistentHash(let k): parts.append("consistent-hash by \(k)")
        }
        if let c = affinityCookie { parts.append("affinity cookie \(c)") }
        if retries > 0 { parts.append("retries \(retries)") }
        if let t = connectTimeout { parts.append("connect-timeout \(t)s") }
        if let t = readTimeout { parts.append("read-timeout \(t)s") }
        if let t = sendTimeout { parts.append("send-timeout \(t)s") }
        if let m = maxConnectionsPerEndpoint { parts.append("max-connections \(m)") }
        if let m = maxPendingRequests { parts.append("max-pending-requests \(m)") }
        if let m = maxBodySize { parts.append("max-body-size \(m)") }
        if let h = health { parts.append("health \(h.path.map { "GET \($0)" } ?? "tcp") every \(h.interval)s") }
        return parts.joined(separator: ", ")
    }
}

/// The policy fields one object's annotations set (nil: not set there).
public struct PolicyOverrides: Sendable, Equatable {
    var balance: BackendPolicy.Balance? = nil
    var hashKey: BackendPolicy.HashKey? = nil
    var affinity: Bool? = nil
    var affinityCookie: String? = nil
    var retries: Int? = nil
    var connectTimeout: Double? = nil
    var readTimeout: Double? = nil
    var sendTimeout: Double? = nil
    var maxConnections: Int? = nil
    var maxPending: Int? = nil
    var maxBodySize: Int64? = nil
    var weights: [String: Int]? = nil
    var healthPath: String? = nil
    var healthInterval: Double? = nil
    var healthTimeout: Double? = nil
    var healthyThreshold: Int? = nil
    var unhealthyThreshold: Int? = nil

    public init() {}

    /// The policy of a Service's port as one Ingress uses it: the Ingress's fields win.
    public static func effective(service: PolicyOverrides?, ingress: PolicyOverrides?) -> BackendPolicy {
        let s = service ?? PolicyOverrides(), i = ingress ?? PolicyOverrides()
        var p = BackendPolicy()
        let key = i.hashKey ?? s.hashKey
        if let b = i.balance ?? s.balance {
            p.balance = b
        } else if let key {
            p.balance = .consistentHash(key)
        }
        if case .consistentHash = p.balance, let key { p.balance = .consistentHash(key) }
        if i.affinity ?? s.affinity ?? false { p.affinityCookie = i.affinityCookie ?? s.affinityCookie ?? "sluice-affinity" }
        p.retries = i.retries ?? s.retries ?? 0
        p.connectTimeout = i.connectTimeout ?? s.connectTimeout
        p.readTimeout = i.readTimeout ?? s.readTimeout
        p.sendTimeout = i.sendTimeout ?? s.sendTimeout
        p.maxConnectionsPerEndpoint = i.maxConnections ?? s.maxConnections
        p.maxPendingRequests = i.maxPending ?? s.maxPending
        if let m = i.maxBodySize ?? s.maxBodySize, m > 0 { p.maxBodySize = m }
        p.weights = i.weights ?? s.weights ?? [:]
        // Active checks belong to the Service: they probe its endpoints, whoever routes to them.
        if s.healthPath != nil || s.healthInterval != nil || s.healthTimeout != nil || s.healthyThreshold != nil || s.unhealthyThreshold != nil {
            var h = BackendPolicy.HealthCheck()
            h.path = s.healthPath
            if let v = s.healthInterval { h.interval = v }
            if let v = s.healthTimeout { h.timeout = v }
            if let v = s.healthyThreshold { h.healthyThreshold = v }
            if let v = s.unhealthyThreshold { h.unhealthyThreshold = v }
            p.health = h
        }
        return p
    }

    /// Parses the annotations Sluice knows. Each bad value yields a problem naming the annotation
    /// and what is allowed; unknown `sluice.io/` keys are reported too (a typo must not pass).
    public static func parse(_ annotations: [(key: String, value: String, line: Int)], isIngress: Bool,
                             problem: (Int, String, String) -> Void) -> PolicyOverrides {
        var o = PolicyOverrides()
        for (key, raw, line) in annotations {
            let value = raw.trimmingCharacters(in: .whitespaces)
            let field = "metadata.annotations[\(key)]"
            func bad(_ allowed: String) { problem(line, field, "'\(raw)' is not valid: \(allowed)") }
            func duration() -> Double? {
                guard let d = parseDuration(value), d > 0, d <= 3600 else { bad("a duration such as 5, 5s, 250ms or 1m (at most 1h)"); return nil }
                return d
            }
            func integer(_ range: ClosedRange<Int>) -> Int? {
                guard let n = Int(value), range.contains(n) else { bad("an integer from \(range.lowerBound) to \(range.upperBound)"); return nil }
                return n
            }
            switch key {
            case "sluice.io/load-balance":
                switch value {
                case "round-robin": o.balance = .roundRobin
                case "least-request": o.balance = .leastRequest
                case "ewma": o.balance = .ewma
                case "consistent-hash": o.balance = .consistentHash(.clientIP)
                default: bad("round-robin, least-request, ewma or consistent-hash")
                }
            case "sluice.io/hash-by":
                if value == "client-ip" { o.hashKey = .clientIP }
                else if value.hasPrefix("header:"), isToken(String(value.dropFirst(7))) { o.hashKey = .header(String(value.dropFirst(7)).lowercased()) }
                else if value.hasPrefix("cookie:"), isToken(String(value.dropFirst(7))) { o.hashKey = .cookie(String(value.dropFirst(7))) }
                else { bad("client-ip, header:NAME or cookie:NAME") }
            case "sluice.io/affinity":
                if value == "cookie" { o.affinity = true } else if value == "none" { o.affinity = false } else { bad("cookie or none") }
            case "sluice.io/affinity-cookie-name",
                 "nginx.ingress.kubernetes.io/session-cookie-name" where isIngress:
                if isToken(value) { o.affinityCookie = value } else { bad("a cookie name (token characters)") }
            case "sluice.io/retries":
                o.retries = integer(0...5)
            case "sluice.io/connect-timeout": o.connectTimeout = duration()
            case "sluice.io/read-timeout": o.readTimeout = duration()
            case "sluice.io/send-timeout": o.sendTimeout = duration()
            case "sluice.io/max-connections": o.maxConnections = integer(1...100_000)
            case "sluice.io/max-pending-requests": o.maxPending = integer(0...100_000)
            case "sluice.io/max-body-size",
                 "nginx.ingress.kubernetes.io/proxy-body-size" where isIngress:
                if let n = parseSize(value) { o.maxBodySize = n } else { bad("a size such as 0 (no limit), 512k, 10m or 1g") }
            case "sluice.io/endpoint-weights":
                var w: [String: Int] = [:]
                for part in value.split(separator: ",") {
                    let kv = part.split(separator: "=").map { $0.trimmingCharacters(in: .whitespaces) }
                    guard kv.count == 2, kv[0].contains(":"), let n = Int(kv[1]), (1...1000).contains(n) else {
                        bad("a list of IP:PORT=WEIGHT (weight 1-1000), comma-separated")
                        w = [:]
                        break
                    }
                    w[kv[0]] = n
                }
                if !w.isEmpty { o.weights = w }
            case "sluice.io/health-check-path":
                if value.hasPrefix("/"), !value.contains(" ") { o.healthPath = value } else { bad("a path starting with /") }
            case "sluice.io/health-check-interval": o.healthInterval = duration()
            case "sluice.io/health-check-timeout": o.healthTimeout = duration()
            case "sluice.io/health-check-healthy-threshold": o.healthyThreshold = integer(1...20)
            case "sluice.io/health-check-unhealthy-threshold": o.unhealthyThreshold = integer(1...20)
            // ingress-nginx's spellings, on an Ingress.
            case "nginx.ingress.kubernetes.io/load-balance" where isIngress:
                switch value {
                case "round_robin": o.balance = .roundRobin
                case "ewma": o.balance = .ewma
                default: bad("round_robin or ewma")
                }
            case "nginx.ingress.kubernetes.io/upstream-hash-by" where isIngress:
                if value == "$remote_addr" || value == "$binary_remote_addr" { o.hashKey = .clientIP }
                else if value.hasPrefix("$http_") { o.hashKey = .header(value.dropFirst(6).replacingOccurrences(of: "_", with: "-").lowercased()) }
                else if value.hasPrefix("$cookie_") { o.hashKey = .cookie(String(value.dropFirst(8))) }
                else { bad("$remote_addr, $http_NAME or $cookie_NAME (other nginx variables are not supported)") }
                if o.hashKey != nil && o.balance == nil { o.balance = .consistentHash(o.hashKey!) }
            case "nginx.ingress.kubernetes.io/affinity" where isIngress:
                if value == "cookie" { o.affinity = true } else { bad("cookie") }
            case "nginx.ingress.kubernetes.io/proxy-connect-timeout" where isIngress: o.connectTimeout = duration()
            case "nginx.ingress.kubernetes.io/proxy-read-timeout" where isIngress: o.readTimeout = duration()
            case "nginx.ingress.kubernetes.io/proxy-send-timeout" where isIngress: o.sendTimeout = duration()
            case "nginx.ingress.kubernetes.io/proxy-next-upstream-tries" where isIngress:
                // Tries include the first attempt.
                if let n = integer(1...6) { o.retries = n - 1 }
            case "sluice.io/ssl-redirect", "sluice.io/hsts":
                break  // TLS annotations, read by the certificate builder
            default:
                if key.hasPrefix("sluice.io/") {
                    problem(line, field, "unknown annotation; known: load-balance, hash-by, affinity, affinity-cookie-name, retries, connect-timeout, read-timeout, send-timeout, max-connections, max-pending-requests, max-body-size, endpoint-weights, health-check-path, health-check-interval, health-check-timeout, health-check-healthy-threshold, health-check-unhealthy-threshold, ssl-redirect, hsts")
                }
            }
        }
        return o
    }

    /// `1024`, `512k`, `10m`, `1g` (nginx's units) → bytes.
    public static func parseSize(_ s: String) -> Int64? {
        let lower = s.lowercased()
        var mult: Int64 = 1
        var digits = Substring(lower)
        if let last = lower.last, "kmg".contains(last) {
            mult = last == "k" ? 1024 : last == "m" ? 1 << 20 : 1 << 30
            digits = lower.dropLast()
        }
        guard let n = Int64(digits), n >= 0, n <= (Int64(1) << 50) / mult else { return nil }
        return n * mult
    }

    /// `5`, `5s`, `250ms`, `1m` → seconds.
    static func parseDuration(_ s: String) -> Double? {
        if s.hasSuffix("ms") { return Double(s.dropLast(2)).map { $0 / 1000 } }
        if s.hasSuffix("s") { return Double(s.dropLast()) }
        if s.hasSuffix("m") { return Double(s.dropLast()).map { $0 * 60 } }
        return Double(s)
    }

    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }
}
