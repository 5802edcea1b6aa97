import NIOCore
import Testing

@testable import SluiceUpstream

/// Selection, outlier ejection and panic mode of `BackendPool`, without sockets: endpoints are
/// addresses nobody connects to, and time is passed in.
@Suite struct BackendPoolTests {
    static func endpoints(_ n: Int, base: Int = 1) -> [Endpoint] {
        (0..<n).map { try! Endpoint(host: "10.9.\(base).\($0 + 1)", port: 8080) }
    }

    /// A pool whose health state is its own (not shared through the registry with other tests).
    static func pool(_ n: Int, policy: PoolPolicy = PoolPolicy(), weights: [Int]? = nil, name: String = #function) -> BackendPool {
        let eps = endpoints(n)
        return BackendPool(name: name, endpoints: eps, policy: policy, weights: weights,
                           health: eps.map { EndpointHealth(service: name, endpoint: $0) })
    }

    static func counts(_ p: BackendPool, _ requests: Int, hash: (Int) -> UInt64 = { _ in 0 }) -> [Int] {
        var c = [Int](repeating: 0, count: p.endpoints.count)
        for k in 0..<requests {
            guard case .endpoint(let i) = p.choose(loop: 0, hash: hash(k), now: 1) else { Issue.record("no endpoint"); break }
            c[i] += 1
        }
        return c
    }

    @Test func roundRobinIsEven() {
        #expect(Self.counts(Self.pool(3), 300) == [100, 100, 100])
    }

    @Test func smoothWeightedRoundRobinFollowsWeightsWithoutBursts() {
        let p = Self.pool(3, weights: [5, 1, 1])
        var sequence: [Int] = []
        for _ in 0..<7 {
            if case .endpoint(let i) = p.choose(loop: 0, now: 1) { sequence.append(i) }
        }
        #expect(sequence.filter { $0 == 0 }.count == 5)
        // nginx's smooth weighting interleaves: a, a, b, a, c, a, a (no five in a row).
        #expect(sequence == [0, 0, 1, 0, 2, 0, 0])
        #expect(Self.counts(p, 700) == [500, 100, 100])
    }

    @Test func leastRequestAvoidsTheBusyEndpoint() {
        var policy = PoolPolicy()
        policy.balance = .leastRequest
        let p = Self.pool(3, policy: policy)
        // Endpoint 0 has 50 requests in flight on this loop.
        for _ in 0..<50 { p.begin(loop: 0, 0) }
        let c = Self.counts(p, 3000)
        // Two random choices: endpoint 0 wins only when both picks are itself, which P2C with
        // distinct picks never does, so it gets nothing while the others share the load.
        #expect(c[0] == 0)
        #expect(abs(c[1] - c[2]) < 400, "\(c)")
    }

    @Test func ewmaPrefersTheFastEndpoint() {
        var policy = PoolPolicy()
        policy.balance = .ewma
        let p = Self.pool(2, policy: policy)
        for k in 0..<20 {
            p.begin(loop: 0, 0)
            p.end(loop: 0, 0, outcome: .success, latencyNanos: 50_000_000, now: Int64(k) * 1_000_000)
            p.begin(loop: 0, 1)
            p.end(loop: 0, 1, outcome: .success, latencyNanos: 1_000_000, now: Int64(k) * 1_000_000)
        }
        let c = Self.counts(p, 1000)
        #expect(c[1] == 1000, "\(c)")
    }

    @Test func consistentHashKeepsKeysAndMovesAboutAThirdWhenOneOfThreeLeaves() {
        var policy = PoolPolicy()
        policy.balance = .consistentHash
        policy.hashKey = .clientIP
        let eps = Self.endpoints(3)
        let three = BackendPool(name: "ch", endpoints: eps, policy: policy, health: eps.map { EndpointHealth(service: "ch", endpoint: $0) })
        let two = BackendPool(name: "ch", endpoints: [eps[0], eps[2]], policy: policy,
                              health: [eps[0], eps[2]].map { EndpointHealth(service: "ch", endpoint: $0) })
        let keys = (0..<3000).map { BackendPool.fnv1a(Array("client-\($0)".utf8)) }
        func pick(_ p: BackendPool, _ h: UInt64) -> String {
            guard case .endpoint(let i) = p.choose(loop: 0, hash: h, now: 1) else { return "-" }
            return p.endpoints[i].description
        }
        var moved = 0, share = [String: Int]()
        for h in keys {
            let before = pick(three, h)
            #expect(before == pick(three, h), "the same key must land on the same endpoint")
            share[before, default: 0] += 1
            if before != pick(two, h) { moved += 1 }
        }
        // The removed endpoint's keys move, and Maglev moves only a few others (its disruption is
        // near-minimal, not exactly minimal): about a third in all.
        let removedShare = share[eps[1].description] ?? 0
        #expect(moved >= removedShare && moved - removedShare < 150, "moved \(moved), the removed endpoint had \(removedShare)")
        #expect(moved > 800 && moved < 1200, "moved \(moved) of 3000")
        for (_, n) in share { #expect(n > 800 && n < 1200, "\(share)") }
    }

    @Test func preferredEndpointWinsWhileAvailable() {
        let p = Self.pool(3)
        for _ in 0..<10 { #expect(p.choose(loop: 0, preferred: 2, now: 1) == .endpoint(2)) }
    }

    @Test func consecutiveGatewayFailuresEjectAndTheEjectionGrowsAndExpires() {
        let p = Self.pool(3)
        let now: Int64 = 1_000_000_000
        #expect(!p.end(loop: 0, 1, outcome: .gatewayFailure, latencyNanos: 0, now: now))
        #expect(!p.end(loop: 0, 1, outcome: .gatewayFailure, latencyNanos: 0, now: now))
        #expect(p.end(loop: 0, 1, outcome: .gatewayFailure, latencyNanos: 0, now: now), "the third in a row ejects")
        let c = (0..<20).compactMap { _ -> Int? in if case .endpoint(let i) = p.choose(loop: 0, now: now + 1) { return i } else { return nil } }
        #expect(!c.contains(1))
        // Back after the base ejection time (10 s); a second ejection lasts twice as long.
        #expect(p.choose(loop: 0, excluding: 0b101, now: now + 10_000_000_001) == .endpoint(1))
        for _ in 0..<3 { p.end(loop: 0, 1, outcome: .gatewayFailure, latencyNanos: 0, now: now + 11_000_000_000) }
        #expect(p.health[1].isEjected(now: now + 11_000_000_000 + 15_000_000_000))
        #expect(!p.health[1].isEjected(now: now + 11_000_000_000 + 20_000_000_001))
    }

    @Test func aSuccessResetsTheFailureCount() {
        let p = Self.pool(3)
        for _ in 0..<2 { p.end(loop: 0, 0, outcome: .gatewayFailure, latencyNanos: 0, now: 1) }
        p.end(loop: 0, 0, outcome: .success, latencyNanos: 0, now: 1)
        for _ in 0..<2 { #expect(!p.end(loop: 0, 0, outcome: .gatewayFailure, latencyNanos: 0, now: 1)) }
    }

    @Test func neverMoreThanHalfEjectedAndPanicSpreadsOverAll() {
        let p = Self.pool(4)
        for i in 0..<3 {
            for _ in 0..<3 { p.end(loop: 0, i, outcome: .gatewayFailure, latencyNanos: 0, now: 1) }
        }
        let ejected = p.health.filter { $0.isEjected(now: 2) }.count
        #expect(ejected == 2, "at most half of 4")
        // Active checks fail three of four: fewer than half available, so all four are used.
        for i in 0..<3 {
            for _ in 0..<3 { _ = p.health[i].recordCheck(success: false, healthyThreshold: 2, unhealthyThreshold: 3) }
        }
        let c = Self.counts(p, 400)
        let panicking = p.panicking.load(ordering: .relaxed)
        #expect(panicking)
        #expect(c.allSatisfy { $0 > 0 }, "\(c)")
    }

    @Test func activeChecksFlipOnlyAfterTheThresholds() {
        let h = EndpointHealth(service: "s", endpoint: Self.endpoints(1)[0])
        #expect(h.recordCheck(success: false, healthyThreshold: 2, unhealthyThreshold: 3) == nil)
        #expect(h.recordCheck(success: false, healthyThreshold: 2, unhealthyThreshold: 3) == nil)
        #expect(h.recordCheck(success: false, healthyThreshold: 2, unhealthyThreshold: 3) == false)
        #expect(!h.isAvailable(now: 1))
        #expect(h.recordCheck(success: true, healthyThreshold: 2, unhealthyThreshold: 3) == nil)
        #expect(h.recordCheck(success: true, healthyThreshold: 2, unhealthyThreshold: 3) == true)
        #expect(h.isAvailable(now: 1))
    }

    @Test func circuitOpensAtTheConnectionLimit() {
        var policy = PoolPolicy()
        policy.maxConnectionsPerEndpoint = 2
        let p = Self.pool(2, policy: policy)
        for i in 0..<2 { for _ in 0..<2 { p.begin(loop: 0, i) } }
        guard case .unavailable(let why) = p.choose(loop: 0, now: 1) else {
            Issue.record("expected the circuit to be open")
            return
        }
        #expect(why.hasPrefix("circuit open"))
        p.end(loop: 0, 1, outcome: .success, latencyNanos: 0, now: 1)
        #expect(p.choose(loop: 0, now: 1) == .endpoint(1))
    }

    /// Two loops that both saw the last slot free: only one gets it.
    @Test func theLastSlotGoesToOneLoop() {
        var policy = PoolPolicy()
        policy.maxConnectionsPerEndpoint = 1
        let p = Self.pool(1, policy: policy)
        #expect(p.choose(loop: 0, now: 1) == .endpoint(0))
        #expect(p.choose(loop: 1, now: 1) == .endpoint(0))
        #expect(p.begin(loop: 0, 0))
        #expect(!p.begin(loop: 1, 0), "the slot is taken")
        #expect(p.health[0].inFlight.total == 1, "a refused begin counts nothing")
        p.end(loop: 0, 0, outcome: .success, latencyNanos: 0, now: 1)
        #expect(p.begin(loop: 1, 0))
    }

    /// Without a limit nothing is refused.
    @Test func beginWithoutALimitAlwaysCounts() {
        let p = Self.pool(1, policy: PoolPolicy())
        for l in 0..<2 { #expect(p.begin(loop: l, 0)) }
        #expect(p.health[0].inFlight.total == 2)
    }

    /// The limit is per endpoint over all event loops, though each loop counts on its own line.
    @Test func circuitCountsEveryLoop() {
        var policy = PoolPolicy()
        policy.maxConnectionsPerEndpoint = 3
        let p = Self.pool(1, policy: policy)
        p.begin(loop: 0, 0)
        p.begin(loop: 1, 0)
        p.begin(loop: 65, 0)  // shares a slot with loop 1
        #expect(p.health[0].inFlight.total == 3)
        guard case .unavailable = p.choose(loop: 2, now: 1) else {
            Issue.record("expected the circuit to be open for a third loop")
            return
        }
        p.end(loop: 65, 0, outcome: .success, latencyNanos: 0, now: 1)
        #expect(p.health[0].inFlight.total == 2)
        #expect(p.choose(loop: 2, now: 1) == .endpoint(0))
    }
}

@Suite struct LoopCounterTests {
    @Test func sumsTheSlotsInUse() {
        let c = LoopCounter()
        #expect(c.total == 0)
        c.add(5, loop: 3)
        c.add(-2, loop: 0)
        c.add(1, loop: 3 + LoopCounter.slots)
        #expect(c.total == 4)
    }

    /// Threads adding to their own slots and to a shared one: the total is exact.
    @Test func concurrentAddsAreExact() async {
        let c = LoopCounter()
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    for k in 0..<20_000 { c.add(k % 2 == 0 ? 2 : -1, loop: t % 3) }
                }
            }
        }
        #expect(c.total == 4 * 10_000)
    }
}
