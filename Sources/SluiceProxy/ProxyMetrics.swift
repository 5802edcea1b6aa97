import Atomics
import NIOCore
import Synchronization

/// The labels of one series of request metrics: which host rule, Ingress and Service served it.
public struct StatKey: Hashable, Sendable {
    public var host: String
    public var ingress: String
    public var service: String
}

/// An endpoint of a Service, as the metrics and `/upstreams` name it.
public struct EndpointKey: Hashable, Sendable {
    public var service: String
    public var address: String

    public init(service: String, address: String) {
        self.service = service
        self.address = address
    }
}

/// Gives each series a small integer once, when a configuration is built, so that the data plane
/// counts with an array index and never hashes strings per request. Numbers are never reused:
/// series survive reloads (Prometheus counters must not go backwards).
public final class StatRegistry: Sendable {
    public static let shared = StatRegistry()

    /// Series 0 counts requests that matched no route (their Host is not a label: a client could
    /// invent unbounded values).
    public static let unrouted: Int32 = 0

    private struct State {
        var keys: [StatKey] = [StatKey(host: "_unmatched", ingress: "", service: "")]
        var index: [StatKey: Int32] = [:]
        var endpoints: [EndpointKey] = []
        var endpointIndex: [EndpointKey: Int32] = [:]
    }

    private let state = Mutex(State())

    public func id(for key: StatKey) -> Int32 {
        state.withLock { s in
            if let i = s.index[key] { return i }
            let i = Int32(s.keys.count)
            s.keys.append(key)
            s.index[key] = i
            return i
        }
    }

    public func id(for endpoint: EndpointKey) -> Int32 {
        state.withLock { s in
            if let i = s.endpointIndex[endpoint] { return i }
            let i = Int32(s.endpoints.count)
            s.endpoints.append(endpoint)
            s.endpointIndex[endpoint] = i
            return i
        }
    }

    /// Many at once under one lock (a configuration numbers all its routes together).
    public func ids(for keys: [StatKey]) -> [Int32] {
        state.withLock { s in
            keys.map { key in
                if let i = s.index[key] { return i }
                let i = Int32(s.keys.count)
                s.keys.append(key)
                s.index[key] = i
                return i
            }
        }
    }

    public var keys: [StatKey] { state.withLock { $0.keys } }
    public var endpoints: [EndpointKey] { state.withLock { $0.endpoints } }
}

/// Request counts and latency histograms of one event loop. Only that loop writes them (plain
/// integers, no atomics, no locks); a scrape asks each loop for a copy on the loop itself.
public final class LoopMetrics: @unchecked Sendable {
    // @unchecked: touched only on the owning event loop; copies leave it as values.

    /// Upper bounds of the latency buckets, in seconds (Prometheus `le`), +Inf implied.
    public static let bucketBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    static let bucketNanos: [Int64] = bucketBounds.map { Int64($0 * 1e9) }

    public struct Histogram: Sendable {
        /// Per-bucket (not cumulative) counts; the last is +Inf.
        public var counts = [Int](repeating: 0, count: LoopMetrics.bucketBounds.count + 1)
        public var sumNanos: Int64 = 0
        public var count = 0

        mutating func record(_ nanos: Int64) {
            var b = 0
            let bounds = LoopMetrics.bucketNanos
            while b < bounds.count && nanos > bounds[b] { b += 1 }
            counts[b] += 1
            sumNanos &+= nanos
            count += 1
        }

        mutating func add(_ o: Histogram) {
            for i in counts.indices { counts[i] += o.counts[i] }
            sumNanos &+= o.sumNanos
            count += o.count
        }
    }

    public struct Series: Sendable {
        /// Responses by status class: 1xx … 5xx.
        public var byClass = [Int](repeating: 0, count: 5)
        public var bytesIn = 0
        public var bytesOut = 0
        public var retries = 0
        public var duration = Histogram()
        public var upstream = Histogram()

        mutating func add(_ o: Series) {
            for i in 0..<5 { byClass[i] += o.byClass[i] }
            bytesIn += o.bytesIn
            bytesOut += o.bytesOut
            retries += o.retries
            duration.add(o.duration)
            upstream.add(o.upstream)
        }

        public var requests: Int { byClass.reduce(0, +) }
    }

    public struct EndpointSeries: Sendable {
        public var requests = 0
        /// Connect failures, resets, timeouts and invalid responses.
        public var failures = 0

        mutating func add(_ o: EndpointSeries) {
            requests += o.requests
            failures += o.failures
        }
    }

    public struct Counters: Sendable {
        public var series: [Series] = []
        public var endpoints: [EndpointSeries] = []
        public var tlsHandshakes = 0
        /// Of those, abbreviated ones (a session ticket or cached session was accepted).
        public var tlsResumed = 0
        public var tlsFailures = 0
        public var h2Connections = 0
        public var circuitRejections = 0
        public var downstreamConnections = 0
        public var upstreamConnections = 0

        public mutating func add(_ o: Counters) {
            if series.count < o.series.count { series += Array(repeating: Series(), count: o.series.count - series.count) }
            for i in o.series.indices { series[i].add(o.series[i]) }
            if endpoints.count < o.endpoints.count { endpoints += Array(repeating: EndpointSeries(), count: o.endpoints.count - endpoints.count) }
            for i in o.endpoints.indices { endpoints[i].add(o.endpoints[i]) }
            tlsHandshakes += o.tlsHandshakes
            tlsResumed += o.tlsResumed
            tlsFailures += o.tlsFailures
            h2Connections += o.h2Connections
            circuitRejections += o.circuitRejections
            downstreamConnections += o.downstreamConnections
            upstreamConnections += o.upstreamConnections
        }
    }

    public internal(set) var counters = Counters()

    public init() {}

    /// One finished request.
    public func record(stat: Int32, status: Int, durationNanos: Int64, upstreamNanos: Int64, bytesIn: Int, bytesOut: Int, retried: Bool) {
        let i = Int(stat)
        if i >= counters.series.count {
            counters.series += Array(repeating: Series(), count: i + 1 - counters.series.count)
        }
        let c = min(max(status / 100, 1), 5) - 1
        counters.series[i].byClass[c] += 1
        counters.series[i].bytesIn += bytesIn
        counters.series[i].bytesOut += bytesOut
        if retried { counters.series[i].retries += 1 }
        counters.series[i].duration.record(durationNanos)
        if upstreamNanos >= 0 { counters.series[i].upstream.record(upstreamNanos) }
    }

    func recordEndpoint(_ id: Int32, failed: Bool) {
        let i = Int(id)
        if i >= counters.endpoints.count {
            counters.endpoints += Array(repeating: EndpointSeries(), count: i + 1 - counters.endpoints.count)
        }
        counters.endpoints[i].requests += 1
        if failed { counters.endpoints[i].failures += 1 }
    }

    func tlsHandshake(failed: Bool, resumed: Bool = false) {
        if failed { counters.tlsFailures += 1 } else { counters.tlsHandshakes += 1 }
        if resumed { counters.tlsResumed += 1 }
    }

    func h2Connection() { counters.h2Connections += 1 }

    func circuitRejection() { counters.circuitRejections += 1 }
}

/// Process-wide facts that change rarely (reloads), kept in atomics.
public final class ProcessMetrics: Sendable {
    public static let shared = ProcessMetrics()
    public let reloads = ManagedAtomic<Int>(0)
    /// Reloads after which at least one file was refused (it keeps serving its last good version).
    public let reloadFailures = ManagedAtomic<Int>(0)
    public let generation = ManagedAtomic<Int>(1)
    public let startedAt = ContinuousClock.now
    /// Set once the first configuration serves; cleared when a shutdown starts draining.
    public let ready = ManagedAtomic<Bool>(false)
}
