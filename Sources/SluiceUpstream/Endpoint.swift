import NIOCore

/// One backend address a pool can send requests to.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int
    public let address: SocketAddress
    /// The address as plain bytes, for comparisons on the request path: comparing two
    /// `Endpoint`s copies two strings and an address box (reference counting each).
    public let key: Key

    public init(host: String, port: Int) throws {
        self.host = host
        self.port = port
        self.address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        self.key = Key(address, port: port, host: host)
    }

    public init(address: SocketAddress) {
        self.host = address.ipAddress ?? "?"
        self.port = address.port ?? 0
        self.address = address
        self.key = Key(address, port: self.port, host: self.host)
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

extension Endpoint {
    /// An IP address, port and a hash of the host name in three words. Equal keys mean the same
    /// socket address (the host hash only keeps endpoints apart that `==` keeps apart; were two
    /// hashes to collide, the endpoints would still be the same address). A Unix socket has no
    /// key (`exact` is false) and is compared as a whole.
    public struct Key: Hashable, Sendable {
        var high: UInt64 = 0
        var low: UInt64 = 0
        var rest: UInt64 = 0
        public var exact: Bool { rest & 1 == 1 }

        init(_ address: SocketAddress, port: Int, host: String) {
            var h = Hasher()
            h.combine(host)
            let hostHash = UInt64(truncatingIfNeeded: h.finalize())
            let tail = UInt64(UInt16(truncatingIfNeeded: port)) << 8
            switch address {
            case .v4(let a):
                low = UInt64(a.address.sin_addr.s_addr)
                rest = (hostHash << 24) | tail | 0b101
            case .v6(let a):
                withUnsafeBytes(of: a.address.sin6_addr) { p in
                    high = p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
                    low = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                }
                rest = (hostHash << 24) | tail | 0b111
            case .unixDomainSocket:
                rest = 0
            }
        }

        init() {}
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
