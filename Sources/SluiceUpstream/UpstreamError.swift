import SluiceHTTP1

/// Why an upstream exchange failed; the proxy maps each to 502 or 504 and logs `description`.
public enum UpstreamError: Error, Sendable, CustomStringConvertible {
    case connectFailed(String)
    case connectTimeout
    /// The connection closed or reset before any byte of a response.
    case closedBeforeResponse
    /// The connection closed or reset inside a response.
    case closedMidResponse
    case invalidResponse(HTTP1ParseError)
    /// Bytes arrived that belong to no request.
    case unsolicitedData
    case readTimeout
    /// The upstream answered with its own gateway error (502/503/504), dropped for a retry:
    /// when no retry can follow, the client gets that status.
    case gatewayStatus(Int)

    public var status: Int {
        switch self {
        case .connectTimeout, .readTimeout: return 504
        case .gatewayStatus(let s): return s
        default: return 502
        }
    }

    public var description: String {
        switch self {
        case .connectFailed(let why): return "upstream connect failed: \(why)"
        case .connectTimeout: return "upstream connect timed out"
        case .closedBeforeResponse: return "upstream closed the connection before responding"
        case .closedMidResponse: return "upstream closed the connection inside the response"
        case .invalidResponse(let e): return "upstream sent an invalid response: \(e.reason)"
        case .unsolicitedData: return "upstream sent data without a request"
        case .readTimeout: return "upstream response timed out"
        case .gatewayStatus(let s): return "the upstream answered \(s)"
        }
    }
}
