/// Why a message was rejected. The reason is a `StaticString` so that rejecting costs no allocation.
public struct HTTP1ParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// 400: the message violates RFC 9112/9110 syntax or framing rules.
        case malformed
        /// 414: the request line exceeds the configured limit.
        case uriTooLong
        /// 431: a field line, the whole head or the number of fields exceeds its limit.
        case headerFieldsTooLarge
        /// 501: a transfer coding we do not implement.
        case notImplemented
        /// 505: an HTTP major version other than 1.
        case versionNotSupported
        /// 417: an expectation other than `100-continue`.
        case expectationFailed
        /// The peer closed the connection before the message was complete.
        case truncated
    }

    public var kind: Kind
    public var reason: StaticString

    @inlinable
    public init(_ kind: Kind, _ reason: StaticString) {
        self.kind = kind
        self.reason = reason
    }

    /// The status a server answers this error with.
    public var status: Int {
        switch kind {
        case .malformed, .truncated: return 400
        case .uriTooLong: return 414
        case .headerFieldsTooLarge: return 431
        case .notImplemented: return 501
        case .versionNotSupported: return 505
        case .expectationFailed: return 417
        }
    }

    public var description: String { "\(status) \(reason)" }

    public static func == (lhs: HTTP1ParseError, rhs: HTTP1ParseError) -> Bool {
        lhs.kind == rhs.kind && lhs.reason.description == rhs.reason.description
    }
}
