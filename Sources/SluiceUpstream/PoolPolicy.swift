import NIOCore

/// The data plane's view of a backend's policy (the routing module compiles annotations into it).
public struct PoolPolicy: Sendable, Hashable {
    public enum Balance: Sendable, Hashable {
        case roundRobin
        case leastRequest
        case ewma
        case consistentHash
    }

    public enum HashKey: Sendable, Hashable {
        case clientIP
        case header(String)
        case cookie(String)
    }

    public var balance = Balance.roundRobin
    public var hashKey: HashKey? = nil
    public var affinityCookie: String? = nil
    public var retries = 0
    public var connectTimeout: TimeAmount? = nil
    public var readTimeout: TimeAmount? = nil
    public var sendTimeout: TimeAmount? = nil
    public var maxConnectionsPerEndpoint: Int? = nil
    public var maxPendingRequests: Int? = nil
    /// Largest request body accepted (413 beyond).
    public var maxBodySize: Int64? = nil

    public init() {}
}

/// How one attempt at an endpoint ended, for load balancing and outlier detection.
public enum AttemptOutcome: Sendable {
    case success
    /// Connect failure, reset, timeout or an invalid response: the endpoint did not answer.
    case gatewayFailure
    /// The endpoint answered 5xx.
    case serverError
    /// The client went away or the request was refused before the endpoint could answer.
    case abandoned
}
