import Atomics
import NIOCore
import Synchronization
import SluiceRouting
import SluiceTLS
import SluiceUpstream

/// One immutable configuration: built off the event loops, swapped whole, read once per request.
public final class ConfigSnapshot: Sendable, AtomicReference {
    public let generation: Int
    public let table: RouteTable
    /// One pool per `table.backends` entry (nil where the backend has no endpoint: 503).
    public let pools: [BackendPool?]
    /// `--default-backend`: serves requests that no rule and no Ingress default backend match.
    public let fallback: BackendPool?
    public let problems: [ConfigProblem]
    /// Certificates by server name (served by the HTTPS listener's SNI callback).
    public let certificates: CertificateStore
    /// Hosts whose plain-HTTP requests get a 308 to https (exact names, and `*.suffix` as ".suffix").
    public let redirectHosts: Set<String>
    /// Hashes of `redirectHosts`, so that a plain request is checked without building a String.
    let redirectExactHashes: Set<UInt64>
    let redirectSuffixHashes: Set<UInt64>
    /// Hosts whose TLS responses carry Strict-Transport-Security (the header line, CRLF included).
    public let hstsHosts: [String: [UInt8]]
    /// The metrics series of each route (parallel to `table.routes`), and of the fallback.
    public let routeStats: [Int32]
    public let fallbackStat: Int32

    public init(generation: Int, table: RouteTable = RouteTable(), fallback: BackendPool? = nil, problems: [ConfigProblem] = [],
                certificates: CertificateStore = CertificateStore(), redirectHosts: Set<String> = [], hstsHosts: [String: [UInt8]] = [:]) {
        self.hstsHosts = hstsHosts
        self.generation = generation
        self.table = table
        self.fallback = fallback
        self.problems = problems
        self.certificates = certificates
        self.redirectHosts = redirectHosts
        var exact = Set<UInt64>(), suffix = Set<UInt64>()
        for h in redirectHosts {
            let bytes = Array(h.utf8)
            if h.hasPrefix(".") {
                suffix.insert(bytes.dropFirst().withUnsafeBytes { Self.hostHash($0) })
            } else {
                exact.insert(bytes.withUnsafeBytes { Self.hostHash($0) })
            }
        }
        redirectExactHashes = exact
        redirectSuffixHashes = suffix
        let registry = StatRegistry.shared
        var pools: [BackendPool?] = []
        for b in table.backends {
            let endpoints = b.addresses.compactMap { try? Endpoint(host: $0.ip, port: $0.port) }
            let ids = endpoints.map { registry.id(for: EndpointKey(service: b.name, address: $0.description)) }
            let weights = endpoints.map { b.policy.weights[$0.description] ?? 1 }
            pools.append(endpoints.isEmpty ? nil : BackendPool(name: b.name, endpoints: endpoints, endpointIDs: ids,
                                                               policy: Self.poolPolicy(b.policy), weights: weights))
        }
        self.pools = pools
        self.routeStats = registry.ids(for: table.routes.map { r in
            StatKey(host: r.host ?? "*", ingress: r.ingress, service: table.backends[r.backend].name)
        })
        if let fallback {
            fallbackStat = registry.id(for: StatKey(host: "*", ingress: "--default-backend", service: fallback.name))
            for e in fallback.endpoints { _ = registry.id(for: EndpointKey(service: fallback.name, address: e.description)) }
        } else {
            fallbackStat = StatRegistry.unrouted
        }
    }

    /// The data plane's form of a backend's policy.
    static func poolPolicy(_ p: BackendPolicy) -> PoolPolicy {
        var o = PoolPolicy()
        switch p.balance {
        case .roundRobin: o.balance = .roundRobin
        case .leastRequest: o.balance = .leastRequest
        case .ewma: o.balance = .ewma
        case .consistentHash(let key):
            o.balance = .consistentHash
            switch key {
            case .clientIP: o.hashKey = .clientIP
            case .header(let n): o.hashKey = .header(n)
            case .cookie(let n): o.hashKey = .cookie(n)
            }
        }
        o.affinityCookie = p.affinityCookie
        o.retries = p.retries
        func amount(_ s: Double?) -> TimeAmount? { s.map { .nanoseconds(Int64($0 * 1e9)) } }
        o.connectTimeout = amount(p.connectTimeout)
        o.readTimeout = amount(p.readTimeout)
        o.sendTimeout = amount(p.sendTimeout)
        o.maxConnectionsPerEndpoint = p.maxConnectionsPerEndpoint
        o.maxPendingRequests = p.maxPendingRequests
        o.maxBodySize = p.maxBodySize
        return o
    }

    /// Active health checks the configuration asks for: (endpoint health, check) pairs.
    public var healthChecks: [(EndpointHealth, BackendPolicy.HealthCheck)] {
        var out: [(EndpointHealth, BackendPolicy.HealthCheck)] = []
        var seen = Set<ObjectIdentifier>()
        for (k, b) in table.backends.enumerated() {
            guard let check = b.policy.health, let pool = pools[k] else { continue }
            for h in pool.health where seen.insert(ObjectIdentifier(h)).inserted { out.append((h, check)) }
        }
        return out
    }

    /// The outcome of routing one request.
    public enum Decision {
        /// Forward to the pool; the second value is the route's metrics series. Unretained: the
        /// snapshot owns its pools, and a request holds its snapshot (`LoopSnapshot`) while it
        /// uses one. Retaining the pool, an object every event loop shares, cost a cache-line
        /// transfer between the cores per retain and per release.
        case forward(Unmanaged<BackendPool>, Int32)
        /// The route exists but its backend cannot take requests (503), with the reason.
        case unavailable(String, Int32)
        case noRoute
    }

    /// Routes normalised host and path bytes.
    @inlinable
    public func decide(host: UnsafeRawBufferPointer, path: UnsafeRawBufferPointer) -> Decision {
        guard let r = table.lookup(host: host, path: path) else {
            if let fallback { return .forward(.passUnretained(fallback), fallbackStat) }
            return .noRoute
        }
        let b = table.routes[r].backend
        if let pool = pools[b] { return .forward(.passUnretained(pool), routeStats[r]) }
        return .unavailable(table.backends[b].problem ?? "no ready endpoint for \(table.backends[b].name)", routeStats[r])
    }

    /// FNV-1a over a normalised host.
    static func hostHash(_ p: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in p {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }

    /// A cheap, allocation-free first check of a normalised host against the redirect hosts
    /// (false means certainly no redirect; true is confirmed by `redirectsToHTTPS`).
    func mayRedirect(normalisedHost h: UnsafeRawBufferPointer) -> Bool {
        if redirectExactHashes.contains(Self.hostHash(h)) { return true }
        if redirectSuffixHashes.isEmpty { return false }
        guard let dot = h.firstIndex(of: UInt8(ascii: ".")), dot + 1 < h.count else { return false }
        return redirectSuffixHashes.contains(Self.hostHash(UnsafeRawBufferPointer(rebasing: h[(dot + 1)...])))
    }

    /// Whether a plain-HTTP request for this (normalised) host must be redirected to https.
    public func redirectsToHTTPS(host: String) -> Bool {
        if redirectHosts.isEmpty { return false }
        if redirectHosts.contains(host) { return true }
        if let dot = host.firstIndex(of: ".") { return redirectHosts.contains(String(host[dot...])) }
        return false
    }

    /// The HSTS header line for a host served over TLS, if its Ingress asks for one.
    public func hsts(host: String) -> [UInt8]? {
        if hstsHosts.isEmpty { return nil }
        if let v = hstsHosts[host] { return v }
        if let dot = host.firstIndex(of: ".") { return hstsHosts[String(host[dot...])] }
        return nil
    }

    /// Every endpoint this configuration can send to (idle connections to others are closed).
    public var endpoints: Set<Endpoint> {
        var s = Set(fallback?.endpoints ?? [])
        for p in pools { if let p { s.formUnion(p.endpoints) } }
        return s
    }
}

/// The reference to the current snapshot. A reload stores a new one; requests in flight keep
/// the snapshot they loaded.
///
/// Event loops do not load the snapshot per request: loading an atomic reference writes to the
/// shared atomic and retains the shared snapshot, and with two loops each write moved a cache
/// line between the cores. A loop reads `version` (a line written only by reloads) and loads
/// the snapshot only when it changed (`EventLoopContext.snapshot`).
public final class ConfigStore: Sendable {
    private let current: ManagedAtomic<ConfigSnapshot>
    private let stores = Atomic<Int>(0)

    public init(_ initial: ConfigSnapshot) {
        current = ManagedAtomic(initial)
    }

    @inlinable
    public var snapshot: ConfigSnapshot { load() }

    @usableFromInline
    func load() -> ConfigSnapshot { current.load(ordering: .acquiring) }

    /// Changes with every `store`. Read before the snapshot, it is never newer than it.
    public var version: Int { stores.load(ordering: .acquiring) }

    public func store(_ next: ConfigSnapshot) {
        current.store(next, ordering: .releasing)
        stores.wrappingAdd(1, ordering: .releasing)
    }
}
