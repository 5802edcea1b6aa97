// MARK: - Field

/// Fields the parser recognises while scanning, so that framing and forwarding decisions never
/// compare names again.
public enum HTTP1KnownField: UInt8, Sendable {
    case other
    case host
    case contentLength
    case transferEncoding
    case connection
    case keepAlive
    case proxyConnection
    case te
    case upgrade
    case expect
    case trailer
    case xForwardedFor
    case xForwardedProto
    case xForwardedHost
    case xForwardedPort
    case xRealIP
    case xRequestID
    case forwarded
}

/// One field line as byte offsets into the buffer the head was parsed from. Offsets, not strings:
/// the forwarder writes the original bytes back out.
public struct HTTP1Field: Sendable, Equatable {
    public var lineStart: Int32
    public var nameEnd: Int32
    public var valueStart: Int32
    public var valueEnd: Int32
    /// The end of the line including its CRLF.
    public var lineEnd: Int32
    public var known: HTTP1KnownField

    @inlinable public var name: Range<Int> { Int(lineStart)..<Int(nameEnd) }
    @inlinable public var value: Range<Int> { Int(valueStart)..<Int(valueEnd) }
    @inlinable public var line: Range<Int> { Int(lineStart)..<Int(lineEnd) }
}

// MARK: - Head

public enum HTTP1Method: UInt8, Sendable {
    case get, head, post, put, delete, connect, options, trace, patch, other

    /// The method named by `bytes` (case-sensitive, RFC 9110 §9.1); `.other` for any other.
    public init(bytes: UnsafeRawBufferPointer) {
        self = HTTP1Parser.classifyMethod(bytes, 0, bytes.count)
    }

    /// RFC 9110 §9.2.2: a request with this method may be sent again without changing its effect.
    public var isIdempotent: Bool {
        switch self {
        case .get, .head, .put, .delete, .options, .trace: return true
        case .post, .connect, .patch, .other: return false
        }
    }
}

public enum HTTP1TargetForm: UInt8, Sendable {
    case origin, absolute, authority, asterisk
}

/// How the body that follows a head is delimited (RFC 9112 §6.3).
public enum HTTP1BodyFraming: Sendable, Equatable {
    case none
    case contentLength(Int64)
    case chunked
    /// Responses only: the body ends when the connection closes.
    case closeDelimited
}

/// A parsed request or response head. Every range is an offset into the buffer that was passed to
/// `HTTP1Parser.parse` when it returned `.head`; the head stays valid until the next `parse` call.
public struct HTTP1Head: Sendable {
    // Start line.
    public var method: HTTP1Method = .other
    public var methodRange: Range<Int> = 0..<0
    public var target: Range<Int> = 0..<0
    public var targetForm: HTTP1TargetForm = .origin
    /// For absolute-form and authority-form targets: the authority inside the target.
    public var targetAuthority: Range<Int>? = nil
    /// For absolute-form targets: path and query inside the target (empty when the target had none).
    public var targetPathAndQuery: Range<Int> = 0..<0
    public var versionMajor: UInt8 = 1
    public var versionMinor: UInt8 = 1
    public var status: Int = 0
    public var reason: Range<Int> = 0..<0
    /// The start line including its CRLF.
    public var startLine: Range<Int> = 0..<0

    // Fields.
    public var fields: [HTTP1Field] = []
    /// Index into `fields` of the single Host field.
    public var hostField: Int? = nil
    /// The whole head including the empty line.
    public var headLength: Int = 0

    // Semantics derived from the fields.
    public var framing: HTTP1BodyFraming = .none
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    public var wantsClose: Bool = false
    /// HTTP/1.0 with `Connection: keep-alive`.
    public var keepAliveRequested: Bool = false
    public var connectionUpgrade: Bool = false
    /// The `Connection` field names fields other than close, keep-alive and upgrade.
    public var connectionNamesOtherFields: Bool = false
    public var hasUpgrade: Bool = false
    public var expectsContinue: Bool = false
    /// A response `Transfer-Encoding` carries codings besides `chunked`.
    public var hasOtherTransferCodings: Bool = false

    public init() {
        fields.reserveCapacity(32)
    }

    @inlinable public var isHTTP11OrLater: Bool { versionMajor > 1 || (versionMajor == 1 && versionMinor >= 1) }
    @inlinable public var isInformational: Bool { status >= 100 && status < 200 }

    @usableFromInline
    mutating func reset() {
        method = .other
        methodRange = 0..<0
        target = 0..<0
        targetForm = .origin
        targetAuthority = nil
        targetPathAndQuery = 0..<0
        versionMajor = 1
        versionMinor = 1
        status = 0
        reason = 0..<0
        startLine = 0..<0
        fields.removeAll(keepingCapacity: true)
        hostField = nil
        headLength = 0
        framing = .none
        wantsClose = false
        keepAliveRequested = false
        connectionUpgrade = false
        connectionNamesOtherFields = false
        hasUpgrade = false
        expectsContinue = false
        hasOtherTransferCodings = false
    }

    /// Whether `name` (lower-case ASCII) is listed as a token in any `Connection` field.
    public func connectionLists(_ name: UnsafeRawBufferPointer, in bytes: UnsafeRawBufferPointer) -> Bool {
        for f in fields where f.known == .connection {
            var i = Int(f.valueStart)
            let end = Int(f.valueEnd)
            while i < end {
                while i < end && (bytes[i] == 0x2C || bytes[i] == 0x20 || bytes[i] == 0x09) { i += 1 }
                let s = i
                while i < end && bytes[i] != 0x2C && bytes[i] != 0x20 && bytes[i] != 0x09 { i += 1 }
                if i - s == name.count {
                    var same = true
                    for k in 0..<name.count where asciiLower(bytes[s + k]) != asciiLower(name[k]) {
                        same = false
                        break
                    }
                    if same { return true }
                }
            }
        }
        return false
    }
}
