import Logging
import NIOCore
import SluiceHTTP1
import SluiceHTTP2
import SluiceRouting
import SluiceTLS
import SluiceUpstream

/// Everything one event loop shares between its client connections.
final class EventLoopContext: @unchecked Sendable {
    // @unchecked: used only on `eventLoop`; the config store and settings are Sendable values.
    let eventLoop: EventLoop
    let upstreams: UpstreamConnectionPool
    let registry: ConnectionRegistry
    let config: ConfigStore
    let settings: ProxySettings
    let logger: Logger

    let listeners: ListenerInfo

    /// This loop's position among the workers (its slot in pools' per-loop state).
    let index: Int
    /// An empty buffer of this loop's own, left in place of a buffer let go of. `ByteBuffer()`
    /// is NIO's one shared empty buffer: assigning it wrote its reference count from every
    /// loop, a cache line moved between the cores several times per request.
    let emptyBuffer = ByteBufferAllocator().buffer(capacity: 1)
    /// Buffers the loop's connections write into and give back as soon as they are passed on:
    /// one still in cache from the previous connection, rather than one per connection.
    let buffers: BufferPool
    /// nghttp2's allocations for every HTTP/2 session on the loop: a new stream's blocks are the
    /// ones a stream on any connection has just freed. Enough kept for a few hundred streams in
    /// flight (about six blocks each); swept with the connections.
    let http2Memory: HTTP2MemoryPool
    /// Request ids for requests that come without one: one generator per loop, seeded once
    /// (seeding one per connection cost two getrandom calls on every accept).
    var ids = RequestIDGenerator()

    init(eventLoop: EventLoop, index: Int = 0, config: ConfigStore, settings: ProxySettings, logger: Logger, listeners: ListenerInfo) {
        self.eventLoop = eventLoop
        self.index = index
        self.listeners = listeners
        self.config = config
        self.settings = settings
        self.logger = logger
        self.upstreams = UpstreamConnectionPool(
            eventLoop: eventLoop, connectTimeout: settings.upstreamConnectTimeout,
            idleTimeout: settings.upstreamIdleTimeout, responseLimits: settings.responseLimits)
        let buffers = BufferPool()
        self.buffers = buffers
        let http2Memory = HTTP2MemoryPool(keepPerClass: 1024)
        self.http2Memory = http2Memory
        self.registry = ConnectionRegistry(eventLoop: eventLoop, buffers: buffers, http2Memory: http2Memory)
        let version = config.version
        self.held = LoopSnapshot(config.snapshot, version: version)
        self.scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.scratchSize, alignment: 8)
        self.accessLog = settings.accessLog.map { AccessLogBuffer(writer: $0) }
    }

    // MARK: Configuration

    private var held: LoopSnapshot

    /// The current configuration, as this loop holds it: loaded again only after a reload.
    var snapshot: LoopSnapshot {
        let version = config.version
        if version != held.version { held = LoopSnapshot(config.snapshot, version: version) }
        return held
    }

    // MARK: Time

    /// The time of the I/O event being handled on this loop, set by the handlers for the
    /// event's duration: a proxied request otherwise read the clock about a dozen times.
    private(set) var eventTime: NIODeadline? = nil

    /// The event's time, or the clock outside one.
    var now: NIODeadline { eventTime ?? .now() }

    /// Runs `body` with `time` as the loop's event time, restoring the outer one after.
    @inline(__always)
    func during<T>(_ time: NIODeadline, _ body: () throws -> T) rethrows -> T {
        let outer = eventTime
        eventTime = time
        defer { eventTime = outer }
        return try body()
    }

    // MARK: Listener addresses

    /// The rendered local port and authority of each local address connections arrived on
    /// (a handful: the listeners), so that a connection does not format them again.
    private var localPartsByAddress: [SocketAddress: (port: [UInt8], authority: [UInt8])] = [:]

    func localParts(_ address: SocketAddress?) -> (port: [UInt8], authority: [UInt8]) {
        guard let address else { return ClientInfo.localParts(nil) }
        if let known = localPartsByAddress[address] { return known }
        let parts = ClientInfo.localParts(address)
        if localPartsByAddress.count < 64 { localPartsByAddress[address] = parts }
        return parts
    }

    // MARK: Retry budget

    /// Requests in progress on this loop, and how many of them are retries: retries of 5xx and
    /// timeouts may be at most a fifth of live requests (or 3), so a failing backend cannot
    /// cause a retry storm.
    var liveRequests = 0
    var liveRetries = 0

    var retryBudgetAllows: Bool { liveRetries < max(3, liveRequests / 5) }

    /// An attempt at a pool's endpoint ended: feeds load balancing and outlier detection, and
    /// logs an ejection or a change of panic mode.
    func endAttempt(_ pool: BackendPool, _ index: Int, outcome: AttemptOutcome, started: NIODeadline) {
        let now = self.now
        if settings.metricsEnabled, pool.endpointIDs[index] >= 0 {
            // Every attempt counts for its endpoint (a retried request counts at each).
            metrics.recordEndpoint(pool.endpointIDs[index], failed: outcome == .gatewayFailure || outcome == .serverError)
        }
        if pool.end(loop: self.index, index, outcome: outcome, latencyNanos: (now - started).nanoseconds, now: Int64(now.uptimeNanoseconds)) {
            let h = pool.health[index]
            logger.warning("endpoint ejected", metadata: [
                "service": "\(pool.name)", "endpoint": "\(pool.endpoints[index])", "ejections": "\(h.ejections.load(ordering: .relaxed))",
                "reason": "\(outcome == .serverError ? "consecutive 5xx" : "consecutive connect failures or resets")",
            ])
        }
    }

    /// Chooses an endpoint, logging when the pool enters or leaves panic mode.
    func choose(_ pool: BackendPool, hash: UInt64, preferred: Int?, excluding: UInt64) -> BackendPool.Choice {
        let was = pool.panicking.load(ordering: .relaxed)
        let c = pool.choose(loop: index, hash: hash, preferred: preferred, excluding: excluding, now: Int64(now.uptimeNanoseconds))
        if case .unavailable(let why) = c, why.hasPrefix("circuit open") { metrics.circuitRejection() }
        let now = pool.panicking.load(ordering: .relaxed)
        if now != was {
            if now {
                logger.warning("fewer than half of the endpoints are available: spreading over all of them (panic mode)", metadata: ["service": "\(pool.name)"])
            } else {
                logger.info("panic mode over: enough endpoints are available again", metadata: ["service": "\(pool.name)"])
            }
        }
        return c
    }

    // MARK: Accounting

    let metrics = LoopMetrics()
    let accessLog: AccessLogBuffer?
    /// `ingress host → service` per metrics series, for log lines (filled on first use).
    private var routeNames: [[UInt8]] = []

    func startAccounting() {
        guard accessLog != nil else { return }
        // The task runs on this loop, the only one that touches the buffer.
        eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { _ in
            self.accessLog?.flush()
        }
    }

    /// One request is over: count it, and log it when an access log is on.
    /// `client` is read only when the access log is on (reading it copied the client's address
    /// out of the connection, a retain and a release per request for nothing).
    /// `fields` is inout only to be read in place: passed by value, the optional struct was copied
    /// out of the handler on every request, access log on or off.
    func finish(_ r: inout ExchangeRecord, status: Int, fields: inout AccessLogFields?, client: @autoclosure () -> [UInt8]) {
        guard r.open else { return }
        r.open = false
        let now = self.now
        r.upstreamDone(now: now)
        if settings.metricsEnabled {
            metrics.record(stat: r.stat, status: status, durationNanos: (now - r.start).nanoseconds, upstreamNanos: r.upstreamNanos,
                           bytesIn: r.bytesIn, bytesOut: r.bytesOut, retried: r.retried)
        }
        if let accessLog, let fields {
            accessLog.append(r, fields: fields, status: status, client: client(), route: routeName(r.stat), now: now)
        }
    }

    private func routeName(_ stat: Int32) -> [UInt8] {
        let i = Int(stat)
        if i < routeNames.count && !routeNames[i].isEmpty { return routeNames[i] }
        let keys = StatRegistry.shared.keys
        if routeNames.count < keys.count { routeNames += Array(repeating: [], count: keys.count - routeNames.count) }
        guard i < keys.count else { return Array("-".utf8) }
        let k = keys[i]
        routeNames[i] = i == 0 ? Array("-".utf8) : Array("\(k.ingress) \(k.host) -> \(k.service)".utf8.filter { $0 != UInt8(ascii: "\"") })
        return routeNames[i]
    }

    deinit { scratch.deallocate() }

    // MARK: Routing

    /// Normalisation scratch space: the event loop routes one request at a time, so one buffer
    /// serves all its connections and routing allocates nothing.
    static let scratchSize = 64 * 1024
    private let scratch: UnsafeMutableRawBufferPointer

    /// Calls `body` with the normalised host (in the scratch space; false when it does not fit).
    func withNormalisedHost(_ host: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Bool) -> Bool {
        let out = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<1024])
        guard let n = RequestNormalizer.host(host, into: out) else { return false }
        return body(UnsafeRawBufferPointer(rebasing: out[0..<n]))
    }

    /// Normalises host and path (query excluded) and asks the snapshot; nil when the path cannot
    /// be normalised (it climbs above the root).
    func route(_ snapshot: ConfigSnapshot, host: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer) -> ConfigSnapshot.Decision? {
        let hostOut = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<1024])
        let pathOut = UnsafeMutableRawBufferPointer(rebasing: scratch[1024...])
        guard let hn = RequestNormalizer.host(host, into: hostOut) else { return .noRoute }
        let rawPath = UnsafeRawBufferPointer(rebasing: target[0..<RequestNormalizer.pathLength(target)])
        let h = UnsafeRawBufferPointer(rebasing: hostOut[0..<hn])
        if rawPath.isEmpty {
            return snapshot.decide(host: h, path: UnsafeRawBufferPointer(rebasing: Self.rootPath[...]))
        }
        if !RequestNormalizer.needsNormalisation(rawPath) {
            return snapshot.decide(host: h, path: rawPath)
        }
        guard let pn = RequestNormalizer.path(rawPath, into: pathOut) else { return nil }
        return snapshot.decide(host: h, path: UnsafeRawBufferPointer(rebasing: pathOut[0..<pn]))
    }

    /// What the TLS configuration says about a request's host, before routing.
    enum HostPolicy {
        case proceed(hsts: [UInt8]?)
        /// Another certificate than the one SNI chose serves this host (421).
        case misdirected(String)
        /// A plain-HTTP request for a TLS host: 308 to this location.
        case redirect(String)
    }

    /// Plain HTTP decides on the bytes first; Strings are built only for TLS connections and
    /// for redirects.
    func hostPolicy(_ snapshot: ConfigSnapshot, tls: Bool, sni: ObjectIdentifier?,
                    host raw: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer, memo: inout HostPolicyMemo) -> HostPolicy {
        if !tls {
            if snapshot.redirectHosts.isEmpty { return .proceed(hsts: nil) }
            if !withNormalisedHost(raw, { snapshot.mayRedirect(normalisedHost: $0) }) { return .proceed(hsts: nil) }
        } else if let hsts = memo.lookup(snapshot, host: raw) {
            return .proceed(hsts: hsts)
        }
        let policy = decideHostPolicy(snapshot, tls: tls, sni: sni, host: raw, target: target)
        if tls, case .proceed(let hsts) = policy { memo.store(snapshot, host: raw, hsts: hsts) }
        return policy
    }

    private func decideHostPolicy(_ snapshot: ConfigSnapshot, tls: Bool, sni: ObjectIdentifier?,
                                  host raw: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer) -> HostPolicy {
        var host = String(decoding: raw, as: UTF8.self).lowercased()
        if !host.hasPrefix("["), let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        if host.hasSuffix(".") { host.removeLast() }
        if tls {
            if let sni, let forHost = snapshot.certificates.identity(forHost: host), sni != forHost {
                return .misdirected(host)
            }
            return .proceed(hsts: snapshot.hsts(host: host))
        }
        guard snapshot.redirectsToHTTPS(host: host) else { return .proceed(hsts: nil) }
        let httpsPort = listeners.httpsPort.load(ordering: .relaxed)
        let port = httpsPort == 443 ? "" : ":\(httpsPort)"
        let t = String(decoding: target, as: UTF8.self)
        return .redirect("https://\(host)\(port)\(t.isEmpty ? "/" : t)")
    }

    nonisolated(unsafe) static let rootPath: UnsafeRawBufferPointer = {
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
        p[0] = UInt8(ascii: "/")
        return UnsafeRawBufferPointer(p)
    }()
}

/// The TLS host policy of the last Host a connection sent. Clients send the same Host on every
/// request of a connection, and deciding it builds Strings (lowercasing, the certificate and HSTS
/// lookups): about a tenth of an HTTP/2 stream's setup before this memo.
struct HostPolicyMemo {
    private var host: [UInt8] = []
    private var generation = -1
    private var snapshotID: ObjectIdentifier? = nil
    private var hsts: [UInt8]? = nil

    /// The remembered HSTS line (`.some(nil)`: none) when `raw` is the remembered Host under the
    /// same snapshot; nil when the policy must be decided again.
    func lookup(_ snapshot: ConfigSnapshot, host raw: UnsafeRawBufferPointer) -> [UInt8]?? {
        // The generation and the identity together: an address can be reused by a later snapshot.
        guard generation == snapshot.generation, snapshotID == ObjectIdentifier(snapshot),
              host.withUnsafeBytes({ HTTP2Stream.same($0, raw) }) else { return nil }
        return .some(hsts)
    }

    mutating func store(_ snapshot: ConfigSnapshot, host raw: UnsafeRawBufferPointer, hsts: [UInt8]?) {
        generation = snapshot.generation
        snapshotID = ObjectIdentifier(snapshot)
        host.removeAll(keepingCapacity: true)
        host.append(contentsOf: raw)
        self.hsts = hsts
    }
}
