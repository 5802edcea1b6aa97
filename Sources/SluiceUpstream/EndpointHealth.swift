import NIOCore
import Synchronization

/// What is known about one endpoint of one Service: the active checker's verdict, passive
/// ejection, and requests in flight (for circuit breaking). Shared by every pool and event loop
/// that sends to the endpoint, and kept across reloads (`HealthRegistry`), so a reload neither
/// forgets an ejection nor resets a check.
public final class EndpointHealth: Sendable {
    public let service: String
    public let endpoint: Endpoint
    /// Set by active health checks (true until a check says otherwise).
    let activeHealthy = Atomic<Bool>(true)
    let checkSuccesses = Atomic<Int>(0)
    let checkFailures = Atomic<Int>(0)
    /// Uptime nanoseconds until which passive outlier detection keeps the endpoint out; 0 = in.
    let ejectedUntil = Atomic<Int64>(0)
    public let ejections = Atomic<Int>(0)
    let consecutiveGatewayFailures = Atomic<Int>(0)
    let consecutive5xx = Atomic<Int>(0)
    /// Requests in flight to the endpoint, over all event loops (`total`).
    public let inFlight = LoopCounter()
    /// The same count, as one atomic, kept only by pools with a connection limit: a slot is
    /// taken with a compare-and-exchange, so two loops cannot both take the last one (with the
    /// per-loop counts, each could read the sum below the limit and go ahead). Pools without a
    /// limit never touch it, so their requests write no line another core reads.
    let limitedInFlight = Atomic<Int>(0)

    /// Takes one of `limit` slots; false when all are taken.
    func reserve(limit: Int) -> Bool {
        var seen = limitedInFlight.load(ordering: .relaxed)
        while seen < limit {
            let (exchanged, now) = limitedInFlight.compareExchange(expected: seen, desired: seen + 1, ordering: .relaxed)
            if exchanged { return true }
            seen = now
        }
        return false
    }

    init(service: String, endpoint: Endpoint) {
        self.service = service
        self.endpoint = endpoint
    }

    public var isActiveHealthy: Bool { activeHealthy.load(ordering: .relaxed) }

    public func isEjected(now: Int64) -> Bool {
        let until = ejectedUntil.load(ordering: .relaxed)
        return until != 0 && until > now
    }

    public func isAvailable(now: Int64) -> Bool {
        isActiveHealthy && !isEjected(now: now)
    }

    /// One active check's result; returns the new verdict when it flipped.
    public func recordCheck(success: Bool, healthyThreshold: Int, unhealthyThreshold: Int) -> Bool? {
        if success {
            checkFailures.store(0, ordering: .relaxed)
            let n = checkSuccesses.wrappingAdd(1, ordering: .relaxed).newValue
            if !isActiveHealthy && n >= healthyThreshold {
                activeHealthy.store(true, ordering: .relaxed)
                // A backend that passes its checks again is back, whatever passive detection said.
                ejectedUntil.store(0, ordering: .relaxed)
                consecutiveGatewayFailures.store(0, ordering: .relaxed)
                consecutive5xx.store(0, ordering: .relaxed)
                return true
            }
        } else {
            checkSuccesses.store(0, ordering: .relaxed)
            let n = checkFailures.wrappingAdd(1, ordering: .relaxed).newValue
            if isActiveHealthy && n >= unhealthyThreshold {
                activeHealthy.store(false, ordering: .relaxed)
                return false
            }
        }
        return nil
    }
}

/// The `EndpointHealth` of every (Service, endpoint) ever configured, so that a new pool built by
/// a reload finds the state the old one had.
public final class HealthRegistry: Sendable {
    public static let shared = HealthRegistry()
    private let entries = Mutex<[String: EndpointHealth]>([:])

    public func health(service: String, endpoint: Endpoint) -> EndpointHealth {
        let key = service + "|" + endpoint.description
        return entries.withLock { e in
            if let h = e[key] { return h }
            let h = EndpointHealth(service: service, endpoint: endpoint)
            e[key] = h
            return h
        }
    }

    public var all: [EndpointHealth] { entries.withLock { Array($0.values) } }
}
