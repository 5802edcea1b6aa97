import NIOCore
import SluiceUpstream

/// The attempts one request makes at a backend's endpoints: which endpoint is in use, which were
/// tried, the retries spent, and the per-loop counters the request holds. The HTTP/1.1 handler
/// and the HTTP/2 exchange share it; what each does with a choice (write, connect, answer) stays
/// theirs. Everything happens on the request's event loop.
///
/// The accessors the request path calls are `mutating`: the value lives in a property of the
/// handler or exchange, and a non-mutating call copied all of it (two retains and three releases
/// per request, counted by callgrind).
struct UpstreamAttempts {
    /// The request's pool, unretained: `holder` keeps it alive. Every loop shares a pool, and a
    /// retain and a release of it per request moved its cache line between the cores.
    private var poolRef: Unmanaged<BackendPool>? = nil
    /// The snapshot the request was routed by (it owns the pool).
    private var holder: LoopSnapshot? = nil
    /// The endpoint of the attempt in progress (position in `pool`), or -1.
    private(set) var index = -1
    /// Attempts made so far (a late connect callback compares it with its own).
    private(set) var count = 0
    private(set) var lastFailure: UpstreamError? = nil
    private var started = NIODeadline.uptimeNanoseconds(0)
    private var tried: UInt64 = 0
    private var retriesDone = 0
    private var countedAsRetry = false
    private var waiting = false
    private var hash: UInt64 = 0
    private var preferred: Int? = nil

    /// A request goes to `pool`: `hash` is its consistent-hash key, `preferred` the endpoint its
    /// affinity cookie names.
    mutating func begin(_ pool: Unmanaged<BackendPool>, of snapshot: LoopSnapshot, hash: UInt64, preferred: Int?, loop: EventLoopContext) {
        self = UpstreamAttempts()
        self.poolRef = pool
        self.holder = snapshot
        self.hash = hash
        self.preferred = preferred
        loop.liveRequests += 1
    }

    /// Chooses an endpoint, skipping those already tried; with `.endpoint` an attempt is open.
    mutating func next(loop: EventLoopContext) -> BackendPool.Choice {
        guard let poolRef else { return .unavailable("no backend") }
        // A lost race for an endpoint's last slot (a connection limit, another loop) leaves that
        // endpoint full for the next choice: a few rounds settle it.
        for _ in 0..<8 {
            let choice = poolRef._withUnsafeGuaranteedRef { loop.choose($0, hash: hash, preferred: preferred, excluding: tried) }
            guard case .endpoint(let i) = choice else { return choice }
            guard poolRef._withUnsafeGuaranteedRef({ $0.begin(loop: loop.index, i) }) else { continue }
            index = i
            if i < 64 { tried |= 1 << UInt64(i) }
            count += 1
            started = loop.now
            return choice
        }
        loop.metrics.circuitRejection()
        return .unavailable("circuit open: the endpoints of \(poolRef.takeUnretainedValue().name) are at their connection limit")
    }

    /// Runs `body` with the request's pool, unretained; nil when the request has none.
    @inline(__always)
    mutating func withPool<T>(_ body: (BackendPool) throws -> T) rethrows -> T? {
        guard let poolRef else { return nil }
        return try poolRef._withUnsafeGuaranteedRef(body)
    }

    /// The pool, retained: for the paths that do not run on every request.
    var pool: BackendPool? { poolRef?.takeUnretainedValue() }

    var hasPool: Bool { mutating get { poolRef != nil } }

    /// The pool's timeouts (nil: the proxy's defaults apply). Read by the periodic timeout check.
    var connectTimeout: TimeAmount? { mutating get { withPool { $0.policy.connectTimeout } ?? nil } }
    var readTimeout: TimeAmount? { mutating get { withPool { $0.policy.readTimeout } ?? nil } }
    var sendTimeout: TimeAmount? { mutating get { withPool { $0.policy.sendTimeout } ?? nil } }

    /// The `set-cookie` value that pins the client to the chosen endpoint, when the policy asks
    /// for affinity and the request did not already carry it.
    var affinityCookie: String? {
        mutating get {
            guard index >= 0, preferred != index, let poolRef else { return nil }
            let i = index
            return poolRef._withUnsafeGuaranteedRef { pool -> String? in
                guard let name = pool.policy.affinityCookie else { return nil }
                return "\(name)=\(RequestKeys.affinityValue(pool: pool, index: i)); Path=/; HttpOnly; SameSite=Lax"
            }
        }
    }

    /// A new upstream connection is needed: nil, or why the circuit is open (the attempt is then
    /// over and the request must be answered 503).
    mutating func waitForConnection(loop: EventLoopContext) -> String? {
        guard let pool else { return nil }
        if let limit = pool.policy.maxPendingRequests, pool.pending.load(ordering: .relaxed) >= limit {
            loop.metrics.circuitRejection()
            end(.abandoned, loop: loop)
            return "circuit open: \(limit) requests of \(pool.name) already wait for a connection"
        }
        pool.pending.wrappingAdd(1, ordering: .relaxed)
        waiting = true
        return nil
    }

    /// The connection arrived (or the attempt ended): no longer waiting for one.
    mutating func connected() {
        if waiting, let pool {
            waiting = false
            pool.pending.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    /// The attempt in progress ended: feeds load balancing and outlier detection.
    mutating func end(_ outcome: AttemptOutcome, loop: EventLoopContext) {
        guard index >= 0, let poolRef else { return }
        connected()
        poolRef._withUnsafeGuaranteedRef { loop.endAttempt($0, index, outcome: outcome, started: started) }
        index = -1
    }

    /// Whether `retry` would allow another attempt now (nothing changes). An upstream's own
    /// 502/503/504 is dropped only when it does: otherwise it is the answer.
    func mayRetry(replayable: Bool, idempotent: Bool, loop: EventLoopContext) -> Bool {
        guard let pool else { return false }
        let allowed = replayable ? count < min(pool.endpoints.count, 3) + 1 : (idempotent && retriesDone < pool.policy.retries)
        // The budget bounds retries of work an endpoint may have done (5xx, timeouts); an attempt
        // that reached no endpoint (refused, reset before reading) costs the backends nothing.
        return allowed && (replayable || loop.retryBudgetAllows)
    }

    /// After a failed attempt: whether another endpoint may be tried (the caller then calls
    /// `next`). `replayable`: nothing reached an endpoint that could have acted on it (a connect
    /// failure, or an idempotent request reset before any response byte), so up to three more
    /// endpoints; otherwise only idempotent requests, as often as `sluice.io/retries` allows,
    /// and within the loop's retry budget.
    mutating func retry(after error: UpstreamError, replayable: Bool, idempotent: Bool, loop: EventLoopContext) -> Bool {
        guard let pool, mayRetry(replayable: replayable, idempotent: idempotent, loop: loop) else { return false }
        if !replayable { retriesDone += 1 }
        lastFailure = error
        if !countedAsRetry {
            countedAsRetry = true
            loop.liveRetries += 1
        }
        // A single endpoint whose kept-alive connection was closed under us: a new connection
        // to the same endpoint is the retry.
        if replayable && pool.endpoints.count == 1 && count == 1 { tried = 0 }
        return true
    }

    /// The request is over: release what it held on the loop.
    mutating func close(loop: EventLoopContext) {
        end(.abandoned, loop: loop)
        if poolRef != nil {
            poolRef = nil
            holder = nil
            loop.liveRequests -= 1
        }
        if countedAsRetry {
            countedAsRetry = false
            loop.liveRetries -= 1
        }
    }
}
