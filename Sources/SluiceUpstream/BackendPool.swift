import NIOCore
import Synchronization

/// The endpoints one backend forwards to, with its selection policy. Immutable apart from
/// counters: one pool is shared by every event loop of a configuration snapshot.
///
/// Discovery (the endpoint list), health (`EndpointHealth`: active checks and passive ejection)
/// and selection are separate: selection never runs a check, it only skips what health marked
/// unavailable. Per-event-loop selection state (round-robin cursors, requests in flight, latency
/// averages) lives in slots each loop owns, so choosing takes no lock.
public final class BackendPool: @unchecked Sendable, CustomStringConvertible {
    // @unchecked: the loop slots are written only by their own event loop (see `state(_:)`).
    public let name: String
    public let endpoints: [Endpoint]
    /// The endpoints' keys, by position: comparing keys copies no endpoint.
    public let endpointKeys: [Endpoint.Key]
    /// Numbers the application gave the endpoints (for per-endpoint counters), by position.
    public let endpointIDs: [Int32]
    public let health: [EndpointHealth]
    /// The same objects, unretained, for the per-request loop (`health` keeps them alive).
    private let healthRefs: [Unmanaged<EndpointHealth>]
    public let policy: PoolPolicy
    let weights: [Int]
    let weighted: Bool
    /// Maglev lookup table (consistent hash): entry → endpoint position.
    let maglev: [Int32]
    /// Requests of this pool waiting for a new upstream connection (circuit breaking).
    public let pending = Atomic<Int>(0)
    /// Whether fewer than half the endpoints are available (then all of them are used).
    public let panicking = Atomic<Bool>(false)
    static let slots = 64
    /// One state per event loop, made on first use and owned here (retained once, released in
    /// `deinit`), so that a request reaches its loop's without reference counting.
    private let loopStates: UnsafeMutablePointer<Unmanaged<LoopState>?>

    public init(name: String, endpoints: [Endpoint], endpointIDs: [Int32]? = nil, policy: PoolPolicy = PoolPolicy(),
                weights: [Int]? = nil, health: [EndpointHealth]? = nil) {
        self.name = name
        self.endpoints = endpoints
        self.endpointKeys = endpoints.map(\.key)
        self.endpointIDs = endpointIDs ?? Array(repeating: -1, count: endpoints.count)
        self.policy = policy
        let w = weights ?? Array(repeating: 1, count: endpoints.count)
        self.weights = w
        self.weighted = Set(w).count > 1
        let h = health ?? endpoints.map { HealthRegistry.shared.health(service: name, endpoint: $0) }
        self.health = h
        self.healthRefs = h.map { Unmanaged.passUnretained($0) }
        self.maglev = policy.balance == .consistentHash ? Self.maglevTable(endpoints) : []
        loopStates = .allocate(capacity: Self.slots)
        loopStates.initialize(repeating: nil, count: Self.slots)
    }

    deinit {
        for i in 0..<Self.slots { loopStates[i]?.release() }
        loopStates.deinitialize(count: Self.slots)
        loopStates.deallocate()
    }

    public var description: String { "\(name) → \(endpoints.map(\.description).joined(separator: ", "))" }

    // MARK: - Per-loop state

    final class LoopState {
        var cursor = 0
        /// Smooth weighted round robin (nginx's): current weights.
        var current: [Int]
        /// Requests this loop has in flight per endpoint.
        var inFlight: [Int]
        /// Peak EWMA of latency per endpoint, nanoseconds, and when it was last updated.
        var ewma: [Double]
        var ewmaStamp: [Int64]
        var random: UInt64

        init(count: Int) {
            current = Array(repeating: 0, count: count)
            inFlight = Array(repeating: 0, count: count)
            ewma = Array(repeating: 0, count: count)
            ewmaStamp = Array(repeating: 0, count: count)
            var g = SystemRandomNumberGenerator()
            random = g.next() | 1
        }

        func nextRandom() -> UInt64 {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            return random
        }
    }

    /// Runs `body` with the state of event loop `loop` (0-based), unretained (the pool keeps it);
    /// only that loop may call this. Three calls per request (choose, begin, end).
    @inline(__always)
    func withState<T>(_ loop: Int, _ body: (LoopState) throws -> T) rethrows -> T {
        let slot = loop % Self.slots
        if let s = loopStates[slot] { return try s._withUnsafeGuaranteedRef(body) }
        let s = Unmanaged.passRetained(LoopState(count: endpoints.count))
        loopStates[slot] = s
        return try s._withUnsafeGuaranteedRef(body)
    }

    // MARK: - Selection

    public enum Choice: Equatable {
        case endpoint(Int)
        /// No endpoint to send to, with the reason (503).
        case unavailable(String)
    }

    /// Chooses an endpoint for one request on event loop `loop`. `hash` is the request's key for
    /// consistent hashing; `preferred` an endpoint the client is pinned to (affinity cookie);
    /// `excluding` endpoints already tried (a bit set over positions, for retries).
    public func choose(loop: Int, hash: UInt64 = 0, preferred: Int? = nil, excluding: UInt64 = 0, now: Int64) -> Choice {
        let n = endpoints.count
        if n == 0 { return .unavailable("no ready endpoint for \(name)") }
        // One pass over the shared health state, without reference counting (the pool keeps
        // every EndpointHealth alive): which endpoints are in rotation.
        var availableMask: UInt64 = 0
        var available = 0
        var failingChecks = false
        for i in 0..<n {
            let ok = healthRefs[i]._withUnsafeGuaranteedRef { h -> Bool in
                if !h.isActiveHealthy { failingChecks = true; return false }
                return !h.isEjected(now: now)
            }
            if ok {
                available += 1
                if i < 64 { availableMask |= 1 << UInt64(i) }
            }
        }
        // None available (every endpoint failed its checks): answer at once rather than try
        // endpoints known to be down. Some, but fewer than half: spread over all (panic mode).
        if available == 0 && failingChecks {
            return .unavailable("no healthy endpoint for \(name) (all fail their health checks)")
        }
        let panic = available * 2 < n
        if panic != panicking.load(ordering: .relaxed) { panicking.store(panic, ordering: .relaxed) }
        let limit = policy.maxConnectionsPerEndpoint ?? Int.max
        var full = 0
        func eligible(_ i: Int) -> Bool {
            if i < 64 {
                if excluding & (1 << UInt64(i)) != 0 { return false }
                if !panic && availableMask & (1 << UInt64(i)) == 0 { return false }
            } else if !panic && !health[i].isAvailable(now: now) {
                return false
            }
            if limit != Int.max && healthRefs[i]._withUnsafeGuaranteedRef({ $0.limitedInFlight.load(ordering: .relaxed) }) >= limit {
                full += 1
                return false
            }
            return true
        }
        if let p = preferred, p < n, eligible(p) { return .endpoint(p) }
        let chosen = withState(loop) { s -> Int in
            var chosen = -1
            switch policy.balance {
            case .roundRobin:
                if weighted {
                    // Smooth weighted round robin over the eligible endpoints.
                    var total = 0
                    for i in 0..<n where eligible(i) {
                        s.current[i] += weights[i]
                        total += weights[i]
                        if chosen < 0 || s.current[i] > s.current[chosen] { chosen = i }
                    }
                    if chosen >= 0 { s.current[chosen] -= total }
                } else {
                    for k in 0..<n {
                        let i = (s.cursor + k) % n
                        if eligible(i) {
                            chosen = i
                            s.cursor = (i + 1) % n
                            break
                        }
                    }
                }
            case .leastRequest, .ewma:
                // Power of two choices among the eligible endpoints.
                var candidates = 0
                var a = -1, b = -1
                for i in 0..<n where eligible(i) {
                    candidates += 1
                    // Reservoir-sample two distinct candidates.
                    if a < 0 { a = i; continue }
                    if b < 0 { b = i; continue }
                    let r = Int(s.nextRandom() % UInt64(candidates))
                    if r == 0 { a = i } else if r == 1 { b = i }
                }
                if b < 0 {
                    chosen = a
                } else {
                    func cost(_ i: Int) -> Double {
                        if policy.balance == .leastRequest { return Double(s.inFlight[i]) }
                        return max(s.ewma[i], 1) * Double(s.inFlight[i] + 1)
                    }
                    let ca = cost(a), cb = cost(b)
                    chosen = ca < cb ? a : cb < ca ? b : (s.nextRandom() & 1 == 0 ? a : b)
                }
            case .consistentHash:
                // Maglev: the table entry for the key, then the next entries until one can serve.
                let m = maglev.count
                var k = Int(hash % UInt64(m))
                for _ in 0..<m {
                    let i = Int(maglev[k])
                    if eligible(i) {
                        chosen = i
                        break
                    }
                    k = (k + 1) % m
                }
            }
            return chosen
        }
        if chosen >= 0 { return .endpoint(chosen) }
        if full > 0 {
            return .unavailable("circuit open: every endpoint of \(name) has \(limit) requests in flight")
        }
        return .unavailable("no available endpoint for \(name) (unhealthy, ejected or already tried)")
    }

    // MARK: - Feedback

    /// A request goes to endpoint `i`. With a connection limit, false when another event loop
    /// took the endpoint's last slot since `choose` saw it free: nothing was counted, and the
    /// caller chooses again.
    @discardableResult
    public func begin(loop: Int, _ i: Int) -> Bool {
        if let limit = policy.maxConnectionsPerEndpoint,
           !healthRefs[i]._withUnsafeGuaranteedRef({ $0.reserve(limit: limit) }) {
            return false
        }
        withState(loop) { $0.inFlight[i] += 1 }
        healthRefs[i]._withUnsafeGuaranteedRef { $0.inFlight.add(1, loop: loop) }
        return true
    }

    /// The attempt at endpoint `i` ended. Returns true when it got the endpoint ejected.
    @discardableResult
    public func end(loop: Int, _ i: Int, outcome: AttemptOutcome, latencyNanos: Int64, now: Int64) -> Bool {
        withState(loop) { s in
            s.inFlight[i] = max(0, s.inFlight[i] - 1)
            healthRefs[i]._withUnsafeGuaranteedRef { h in
                h.inFlight.add(-1, loop: loop)
                if policy.maxConnectionsPerEndpoint != nil { h.limitedInFlight.wrappingSubtract(1, ordering: .relaxed) }
            }
            if policy.balance == .ewma, outcome == .success || outcome == .serverError {
                // Peak EWMA (decay time 10 s): a slower sample replaces the average at once.
                let last = s.ewmaStamp[i]
                let decay = last == 0 ? 0 : exp(-Double(now - last) / 10e9)
                let sample = Double(latencyNanos)
                s.ewma[i] = sample > s.ewma[i] ? sample : s.ewma[i] * decay + sample * (1 - decay)
                s.ewmaStamp[i] = now
            }
        }
        switch outcome {
        case .success:
            healthRefs[i]._withUnsafeGuaranteedRef { h in
                // Stores only when something is to be reset: a shared cache line stays clean.
                if h.consecutiveGatewayFailures.load(ordering: .relaxed) != 0 { h.consecutiveGatewayFailures.store(0, ordering: .relaxed) }
                if h.consecutive5xx.load(ordering: .relaxed) != 0 { h.consecutive5xx.store(0, ordering: .relaxed) }
            }
        case .gatewayFailure:
            let h = health[i]
            if h.consecutiveGatewayFailures.wrappingAdd(1, ordering: .relaxed).newValue >= Self.gatewayFailuresToEject {
                return eject(i, now: now)
            }
        case .serverError:
            let h = health[i]
            if h.consecutive5xx.wrappingAdd(1, ordering: .relaxed).newValue >= Self.serverErrorsToEject {
                return eject(i, now: now)
            }
        case .abandoned:
            break
        }
        return false
    }

    static let gatewayFailuresToEject = 3
    static let serverErrorsToEject = 5
    static let baseEjection: Int64 = 10_000_000_000

    /// Passive outlier detection: out for a time that grows with each ejection (10 s, 20 s, …,
    /// at most 5 min), and never more than half of the pool at once.
    private func eject(_ i: Int, now: Int64) -> Bool {
        let h = health[i]
        if h.isEjected(now: now) { return false }
        var ejected = 0
        for e in health where e.isEjected(now: now) { ejected += 1 }
        if (ejected + 1) * 2 > endpoints.count { return false }
        let count = h.ejections.wrappingAdd(1, ordering: .relaxed).newValue
        h.ejectedUntil.store(now + Self.baseEjection * Int64(min(count, 30)), ordering: .relaxed)
        h.consecutiveGatewayFailures.store(0, ordering: .relaxed)
        h.consecutive5xx.store(0, ordering: .relaxed)
        return true
    }

    // MARK: - Maglev

    /// Maglev's lookup table (Eisenbud et al., NSDI 2016): each endpoint fills the table in its
    /// own permutation order, so removing one endpoint moves only the entries it owned.
    static func maglevTable(_ endpoints: [Endpoint]) -> [Int32] {
        let n = endpoints.count
        guard n > 0 else { return [] }
        let m = n <= 50 ? 5003 : 65537  // primes, at least 100 entries per endpoint
        var offset = [Int](repeating: 0, count: n), skip = [Int](repeating: 0, count: n), next = [Int](repeating: 0, count: n)
        for (i, e) in endpoints.enumerated() {
            let name = Array(e.description.utf8)
            offset[i] = Int(fnv1a(name, seed: 0xcbf29ce484222325) % UInt64(m))
            skip[i] = Int(fnv1a(name, seed: 0x84222325cbf29ce4) % UInt64(m - 1)) + 1
        }
        var table = [Int32](repeating: -1, count: m)
        var filled = 0
        while true {
            for i in 0..<n {
                var c = (offset[i] + next[i] * skip[i]) % m
                while table[c] >= 0 {
                    next[i] += 1
                    c = (offset[i] + next[i] * skip[i]) % m
                }
                table[c] = Int32(i)
                next[i] += 1
                filled += 1
                if filled == m { return table }
            }
        }
    }

    public static func fnv1a<S: Sequence>(_ bytes: S, seed: UInt64 = 0xcbf29ce484222325) -> UInt64 where S.Element == UInt8 {
        var h = seed
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100000001b3
        }
        // Final mix (the low bits of FNV are weak for a modulus).
        h ^= h >> 33
        h = h &* 0xff51afd7ed558ccd
        h ^= h >> 33
        return h
    }
}

#if canImport(Glibc)
import Glibc
#endif
