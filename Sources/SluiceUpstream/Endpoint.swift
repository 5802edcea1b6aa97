import NIOCore

/// One backend address a pool can send requests to.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var address: SocketAddress

    public init(host: String, port: Int) throws {
        self.host = host
        self.port = port
        self.address = try SocketAddress.makeAddressResolvingHost(host, port: port)
    }

    public init(address: SocketAddress) {
        self.host = address.ipAddress ?? "?"
        self.port = address.port ?? 0
        self.address = address
    }

    /// Parses `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
    public init(parsing spec: String) throws {
        guard let colon = spec.lastIndex(of: ":"), let port = Int(spec[spec.index(after: colon)...]), port > 0, port < 65536 else {
            throw EndpointError.invalid(spec)
        }
        var host = String(spec[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { throw EndpointError.invalid(spec) }
        try self.init(host: host, port: port)
    }

    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

public enum EndpointError: Error, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let s): return "invalid address '\(s)': expected HOST:PORT"
        }
    }
}
