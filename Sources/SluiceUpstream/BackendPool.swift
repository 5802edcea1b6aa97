import Synchronization

/// The endpoints one route forwards to, with the selection policy. Immutable apart from the
/// selection cursor, so one pool is shared by every event loop of a configuration snapshot.
public final class BackendPool: Sendable, CustomStringConvertible {
    public let name: String
    public let endpoints: [Endpoint]
    /// Numbers the application gave the endpoints (for per-endpoint counters), by position.
    public let endpointIDs: [Int32]
    private let cursor = Atomic<UInt64>(0)

    public init(name: String, endpoints: [Endpoint], endpointIDs: [Int32]? = nil) {
        self.name = name
        self.endpoints = endpoints
        self.endpointIDs = endpointIDs ?? Array(repeating: -1, count: endpoints.count)
    }

    /// Round robin: the position of the next endpoint; nil when the pool has none.
    public func nextIndex() -> Int? {
        let n = endpoints.count
        if n == 0 { return nil }
        if n == 1 { return 0 }
        return Int(cursor.wrappingAdd(1, ordering: .relaxed).oldValue % UInt64(n))
    }

    /// Round robin over the endpoints; nil when the pool has none.
    public func next() -> Endpoint? {
        let n = endpoints.count
        if n == 0 { return nil }
        if n == 1 { return endpoints[0] }
        let i = cursor.wrappingAdd(1, ordering: .relaxed).oldValue
        return endpoints[Int(i % UInt64(n))]
    }

    /// Another endpoint than `avoiding`, for a retry; the same one when it is the only one.
    public func next(avoiding: Endpoint) -> Endpoint? {
        for _ in 0..<endpoints.count {
            if let e = next(), e != avoiding { return e }
        }
        return next()
    }

    public var description: String { "\(name) → \(endpoints.map(\.description).joined(separator: ", "))" }
}
