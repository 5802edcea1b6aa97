import NIOCore
import SluiceHTTP1

/// What the proxy knows about the client side of a connection, rendered once per connection so
/// that adding forwarded fields is a memcpy.
struct ClientInfo {
    var ip: [UInt8]
    var proto: StaticString
    var localPort: [UInt8]
    var localAuthority: [UInt8]

    init(remote: SocketAddress?, local: SocketAddress?, proto: StaticString) {
        ip = Array((remote?.ipAddress ?? "unknown").utf8)
        self.proto = proto
        let port = local?.port ?? 0
        localPort = Array(String(port).utf8)
        let host = local?.ipAddress ?? "localhost"
        localAuthority = Array((host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)").utf8)
    }
}

/// How the proxy ends its own head for the connection it writes to.
enum ConnectionDirective {
    case none, close, keepAlive, upgrade
}

/// A cheap generator of request ids (32 hex digits) for requests that arrive without one.
struct RequestIDGenerator {
    private var a: UInt64
    private var b: UInt64

    init() {
        var g = SystemRandomNumberGenerator()
        a = g.next() | 1
        b = g.next() | 1
    }

    /// xorshift128+: not for secrets, only for correlating log lines.
    mutating func next() -> (UInt64, UInt64) {
        func step(_ s0: inout UInt64, _ s1: inout UInt64) -> UInt64 {
            var x = s0
            let y = s1
            s0 = y
            x ^= x << 23
            s1 = x ^ y ^ (x >> 17) ^ (y >> 26)
            return s1 &+ y
        }
        let hi = step(&a, &b)
        let lo = step(&a, &b)
        return (hi, lo)
    }
}

// MARK: - Writing heads

/// Rewrites heads between client and upstream: the original field lines are copied as bytes,
/// hop-by-hop fields are dropped, and the proxy adds its own framing and forwarded fields.
enum ForwardedHeads {
    static let hexDigits: StaticString = "0123456789abcdef"

    /// The request head sent upstream. `framing` is how the proxy will frame the body it forwards.
    static func writeRequestHead(
        into out: inout ByteBuffer, head: HTTP1Head, bytes p: UnsafeRawBufferPointer,
        client: ClientInfo, framing: HTTP1BodyFraming, upgrade: Bool, ids: inout RequestIDGenerator
    ) {
        // Request line, always as HTTP/1.1; an absolute-form target becomes origin-form.
        out.writeBytes(UnsafeRawBufferPointer(rebasing: p[head.methodRange]))
        out.writeInteger(UInt8(ascii: " "))
        if head.targetForm == .absolute {
            if head.targetPathAndQuery.isEmpty {
                out.writeInteger(UInt8(ascii: "/"))
            } else {
                if p[head.targetPathAndQuery.lowerBound] == UInt8(ascii: "?") { out.writeInteger(UInt8(ascii: "/")) }
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[head.targetPathAndQuery]))
            }
        } else {
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[head.target]))
        }
        out.writeStaticString(" HTTP/1.1\r\n")

        var hasRequestID = false
        var hostValue: Range<Int>? = nil
        var xffCount = 0
        let dropNamed = head.connectionNamesOtherFields
        for f in head.fields {
            switch f.known {
            case .connection, .keepAlive, .proxyConnection, .te, .transferEncoding, .contentLength, .expect,
                 .xForwardedProto, .xForwardedHost, .xForwardedPort, .xRealIP:
                continue
            case .xForwardedFor:
                xffCount += 1
                continue
            case .upgrade:
                if upgrade { out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.line])) }
                continue
            case .host:
                if let authority = head.targetAuthority, head.targetForm == .absolute {
                    // RFC 9112 §3.2.2: the target's authority replaces Host.
                    out.writeStaticString("host: ")
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: p[authority]))
                    out.writeStaticString("\r\n")
                    hostValue = authority
                } else {
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.line]))
                    hostValue = f.value
                }
                continue
            case .xRequestID:
                hasRequestID = true
            case .other:
                if dropNamed && head.connectionLists(UnsafeRawBufferPointer(rebasing: p[f.name]), in: p) { continue }
            default:
                break
            }
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.line]))
        }
        if hostValue == nil {
            // HTTP/1.0 without Host: the upstream speaks 1.1 and needs one.
            out.writeStaticString("host: ")
            if let authority = head.targetAuthority {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[authority]))
                hostValue = authority
            } else {
                out.writeBytes(client.localAuthority)
            }
            out.writeStaticString("\r\n")
        }

        out.writeStaticString("x-forwarded-for: ")
        if xffCount > 0 {
            for f in head.fields where f.known == .xForwardedFor && !f.value.isEmpty {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.value]))
                out.writeStaticString(", ")
            }
        }
        out.writeBytes(client.ip)
        out.writeStaticString("\r\nx-forwarded-proto: ")
        out.writeStaticString(client.proto)
        out.writeStaticString("\r\nx-forwarded-host: ")
        if let hostValue {
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[hostValue]))
        } else {
            out.writeBytes(client.localAuthority)
        }
        out.writeStaticString("\r\nx-forwarded-port: ")
        out.writeBytes(client.localPort)
        out.writeStaticString("\r\nx-real-ip: ")
        out.writeBytes(client.ip)
        out.writeStaticString("\r\n")
        if !hasRequestID {
            let (hi, lo) = ids.next()
            out.writeStaticString("x-request-id: ")
            writeHex64(&out, hi)
            writeHex64(&out, lo)
            out.writeStaticString("\r\n")
        }
        switch framing {
        case .contentLength(let n):
            out.writeStaticString("content-length: ")
            writeDecimal(&out, n)
            out.writeStaticString("\r\n")
        case .chunked:
            out.writeStaticString("transfer-encoding: chunked\r\n")
        case .none, .closeDelimited:
            break
        }
        if upgrade { out.writeStaticString("connection: upgrade\r\n") }
        out.writeStaticString("\r\n")
    }

    /// The response head sent to the client.
    static func writeResponseHead(
        into out: inout ByteBuffer, head: HTTP1Head, bytes p: UnsafeRawBufferPointer,
        keepContentLength: Bool, chunked: Bool, connection: ConnectionDirective, extra: [UInt8]? = nil
    ) {
        // "HTTP/x.y " is 9 bytes; the status code, reason and CRLF follow unchanged.
        out.writeStaticString("HTTP/1.1 ")
        out.writeBytes(UnsafeRawBufferPointer(rebasing: p[(head.startLine.lowerBound + 9)..<head.startLine.upperBound]))
        let dropNamed = head.connectionNamesOtherFields
        for f in head.fields {
            switch f.known {
            case .connection, .keepAlive, .proxyConnection, .te, .transferEncoding:
                continue
            case .upgrade:
                if connection != .upgrade { continue }
            case .contentLength:
                if !keepContentLength { continue }
            case .other:
                if dropNamed && head.connectionLists(UnsafeRawBufferPointer(rebasing: p[f.name]), in: p) { continue }
            default:
                break
            }
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.line]))
        }
        if chunked { out.writeStaticString("transfer-encoding: chunked\r\n") }
        if let extra { out.writeBytes(extra) }
        switch connection {
        case .none: break
        case .close: out.writeStaticString("connection: close\r\n")
        case .keepAlive: out.writeStaticString("connection: keep-alive\r\n")
        case .upgrade: out.writeStaticString("connection: upgrade\r\n")
        }
        out.writeStaticString("\r\n")
    }

    /// `SIZE CRLF` of a chunk.
    static func writeChunkHeader(_ out: inout ByteBuffer, size: Int) {
        var digits = 0
        var v = size
        repeat { digits += 1; v >>= 4 } while v > 0
        let hex = hexDigits.utf8Start
        for k in stride(from: digits - 1, through: 0, by: -1) {
            out.writeInteger(hex[(size >> (4 * k)) & 0xF])
        }
        out.writeStaticString("\r\n")
    }

    static func writeHex64(_ out: inout ByteBuffer, _ v: UInt64) {
        let hex = hexDigits.utf8Start
        for k in stride(from: 15, through: 0, by: -1) {
            out.writeInteger(hex[Int((v >> (4 * UInt64(k))) & 0xF)])
        }
    }

    static func writeDecimal(_ out: inout ByteBuffer, _ v: Int64) {
        if v == 0 {
            out.writeInteger(UInt8(ascii: "0"))
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        var x = v
        withUnsafeMutableBytes(of: &digits) { d in
            while x > 0 {
                d[n] = UInt8(x % 10) + 0x30
                x /= 10
                n += 1
            }
            for k in stride(from: n - 1, through: 0, by: -1) { out.writeInteger(d[k]) }
        }
    }
}
