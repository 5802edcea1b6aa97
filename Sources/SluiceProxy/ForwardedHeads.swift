import NIOCore
import SluiceHTTP1
import SluiceHTTP2
#if canImport(Glibc)
import Glibc
#endif

/// What the proxy knows about the client side of a connection, rendered once per connection so
/// that adding forwarded fields is a memcpy.
struct ClientInfo {
    var ip: [UInt8]
    var proto: StaticString
    var localPort: [UInt8]
    var localAuthority: [UInt8]

    init(remote: SocketAddress?, local: SocketAddress?, proto: StaticString) {
        self.init(remote: remote, local: Self.localParts(local), proto: proto)
    }

    /// With the local parts already rendered (they are the same for every connection to a
    /// listener: `EventLoopContext.localParts` keeps them).
    init(remote: SocketAddress?, local: (port: [UInt8], authority: [UInt8]), proto: StaticString) {
        ip = Self.numericHost(remote) ?? Self.unknown
        self.proto = proto
        localPort = local.port
        localAuthority = local.authority
    }

    /// Before the connection is active: nothing is rendered (the values are shared).
    init(proto: StaticString) {
        ip = Self.unknown
        self.proto = proto
        localPort = []
        localAuthority = []
    }

    private static let unknown = Array("unknown".utf8)

    static func localParts(_ local: SocketAddress?) -> (port: [UInt8], authority: [UInt8]) {
        let port = local?.port ?? 0
        let portBytes = Array(String(port).utf8)
        guard let host = numericHost(local) else { return (portBytes, Array("localhost:".utf8) + portBytes) }
        let authority = host.contains(UInt8(ascii: ":")) ? [UInt8(ascii: "[")] + host + Array("]:".utf8) + portBytes
                                                         : host + [UInt8(ascii: ":")] + portBytes
        return (portBytes, authority)
    }

    /// The address in numeric form (inet_ntop straight into the bytes the headers need: no
    /// String on the way).
    static func numericHost(_ address: SocketAddress?) -> [UInt8]? {
        var text = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &text) { buf -> [UInt8]? in
            let out = buf.baseAddress!.assumingMemoryBound(to: CChar.self)
            let ok: Bool
            switch address {
            case .v4(let a)?:
                var addr = a.address.sin_addr
                ok = inet_ntop(AF_INET, &addr, out, socklen_t(buf.count)) != nil
            case .v6(let a)?:
                var addr = a.address.sin6_addr
                ok = inet_ntop(AF_INET6, &addr, out, socklen_t(buf.count)) != nil
            default:
                ok = false
            }
            guard ok else { return nil }
            return Array(UnsafeRawBufferPointer(rebasing: buf[..<strlen(out)]))
        }
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
    /// The id `next()` returned last (for the access log).
    private(set) var last: (UInt64, UInt64) = (0, 0)

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
        last = (hi, lo)
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

        let host: UnsafeRawBufferPointer? = hostValue.map { UnsafeRawBufferPointer(rebasing: p[$0]) }
        writeForwardedFields(into: &out, client: client, host: host, addRequestID: !hasRequestID, ids: &ids) { out in
            guard xffCount > 0 else { return }
            for f in head.fields where f.known == .xForwardedFor && !f.value.isEmpty {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.value]))
                out.writeStaticString(", ")
            }
        }
        writeFraming(into: &out, framing)
        if upgrade { out.writeStaticString("connection: upgrade\r\n") }
        out.writeStaticString("\r\n")
    }

    /// The HTTP/1.1 head for a request that arrived over HTTP/2 (RFC 9113 §8.3): `:authority`
    /// becomes Host, cookie crumbs are joined into one field, the proxy frames the body, and
    /// fields that only the proxy may set are dropped. nghttp2 and `HTTP2Session` have already
    /// refused connection-specific fields, upper-case names and CR/LF/NUL in values.
    static func writeRequestHead(
        into out: inout ByteBuffer, stream s: HTTP2Stream, authority: Range<Int>, client: ClientInfo,
        framing: HTTP1BodyFraming, ids: inout RequestIDGenerator
    ) {
        s.headerBytes.withUnsafeBytes { p in
            func named(_ r: Range<Int>, _ lit: StaticString) -> Bool {
                guard r.count == lit.utf8CodeUnitCount else { return false }
                let l = lit.utf8Start
                for k in 0..<r.count where p[r.lowerBound + k] != l[k] { return false }
                return true
            }
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[s.method!]))
            out.writeInteger(UInt8(ascii: " "))
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[s.path!]))
            out.writeStaticString(" HTTP/1.1\r\nhost: ")
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[authority]))
            out.writeStaticString("\r\n")
            var hasRequestID = false
            var cookies = 0
            var xff = 0
            for f in s.fields {
                let n = f.name
                switch n.count {
                case 2 where named(n, "te"): continue
                case 4 where named(n, "host"): continue
                case 6 where named(n, "cookie"):
                    cookies += 1
                    continue
                case 6 where named(n, "expect"): continue
                case 7 where named(n, "upgrade"): continue
                case 9 where named(n, "x-real-ip"): continue
                case 10 where named(n, "connection") || named(n, "keep-alive"): continue
                case 12 where named(n, "x-request-id"): hasRequestID = true
                case 14 where named(n, "content-length"): continue
                case 15 where named(n, "x-forwarded-for"):
                    xff += 1
                    continue
                case 16 where named(n, "x-forwarded-host") || named(n, "x-forwarded-port") || named(n, "proxy-connection"): continue
                case 17 where named(n, "x-forwarded-proto") || named(n, "transfer-encoding"): continue
                default: break
                }
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[n]))
                out.writeStaticString(": ")
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.value]))
                out.writeStaticString("\r\n")
            }
            if cookies > 0 {
                // RFC 9113 §8.2.3: crumbs are joined with "; " for an HTTP/1.1 hop.
                out.writeStaticString("cookie: ")
                var first = true
                for f in s.fields where named(f.name, "cookie") {
                    if !first { out.writeStaticString("; ") }
                    first = false
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.value]))
                }
                out.writeStaticString("\r\n")
            }
            writeForwardedFields(into: &out, client: client, host: UnsafeRawBufferPointer(rebasing: p[authority]),
                                 addRequestID: !hasRequestID, ids: &ids) { out in
                guard xff > 0 else { return }
                for f in s.fields where named(f.name, "x-forwarded-for") && !f.value.isEmpty {
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: p[f.value]))
                    out.writeStaticString(", ")
                }
            }
        }
        writeFraming(into: &out, framing)
        out.writeStaticString("\r\n")
    }

    /// The HTTP/2 response fields for an upstream's HTTP/1.1 head: hop-by-hop fields and those
    /// the Connection field names are dropped, names lower-cased (RFC 9113 §8.2.2).
    static func responseFields(head: HTTP1Head, bytes p: UnsafeRawBufferPointer, keepContentLength: Bool, extra: [UInt8]?) -> HTTP2HeaderBlock {
        var block = HTTP2HeaderBlock(capacity: head.headLength + 16)
        responseFields(into: &block, head: head, bytes: p, keepContentLength: keepContentLength, extra: extra)
        return block
    }

    /// The same, appended to `block` (a reused one).
    static func responseFields(into block: inout HTTP2HeaderBlock, head: HTTP1Head, bytes p: UnsafeRawBufferPointer,
                               keepContentLength: Bool, extra: [UInt8]?) {
        var status: (UInt8, UInt8, UInt8) = (
            UInt8(truncatingIfNeeded: 0x30 + head.status / 100), UInt8(truncatingIfNeeded: 0x30 + (head.status / 10) % 10),
            UInt8(truncatingIfNeeded: 0x30 + head.status % 10))
        withUnsafeBytes(of: &status) { block.add(":status", $0) }
        let dropNamed = head.connectionNamesOtherFields
        for f in head.fields {
            switch f.known {
            case .connection, .keepAlive, .proxyConnection, .te, .transferEncoding, .upgrade:
                continue
            case .contentLength:
                if !keepContentLength { continue }
            case .other:
                if dropNamed && head.connectionLists(UnsafeRawBufferPointer(rebasing: p[f.name]), in: p) { continue }
            default:
                break
            }
            block.add(lowercasing: UnsafeRawBufferPointer(rebasing: p[f.name]), UnsafeRawBufferPointer(rebasing: p[f.value]))
        }
        if let extra { addFieldLine(&block, extra) }
    }

    /// Adds a complete `name: value\r\n` line (the proxy's own, e.g. HSTS) to an h2 block.
    static func addFieldLine(_ block: inout HTTP2HeaderBlock, _ line: [UInt8]) {
        line.withUnsafeBytes { l in
            guard let colon = l.firstIndex(of: UInt8(ascii: ":")) else { return }
            var v = colon + 1
            while v < l.count && l[v] == 0x20 { v += 1 }
            var e = l.count
            while e > v && (l[e - 1] == 0x0A || l[e - 1] == 0x0D) { e -= 1 }
            block.add(lowercasing: UnsafeRawBufferPointer(rebasing: l[0..<colon]), UnsafeRawBufferPointer(rebasing: l[v..<e]))
        }
    }

    /// Chunked trailers (`name: value\r\n` lines, validated by the parser) as an h2 block.
    static func trailerFields(_ trailers: ByteBuffer) -> HTTP2HeaderBlock {
        var block = HTTP2HeaderBlock(capacity: trailers.readableBytes)
        trailers.withUnsafeReadableBytes { p in
            var i = 0
            while i < p.count {
                var e = i
                while e < p.count && p[e] != 0x0A { e += 1 }
                let lineEnd = e > i && p[e - 1] == 0x0D ? e - 1 : e
                if let colon = p[i..<lineEnd].firstIndex(of: UInt8(ascii: ":")) {
                    var v = colon + 1
                    while v < lineEnd && (p[v] == 0x20 || p[v] == 0x09) { v += 1 }
                    var ve = lineEnd
                    while ve > v && (p[ve - 1] == 0x20 || p[ve - 1] == 0x09) { ve -= 1 }
                    let name = UnsafeRawBufferPointer(rebasing: p[i..<colon])
                    // Framing and connection fields never travel as h2 trailers.
                    if !isHopByHop(name) {
                        block.add(lowercasing: name, UnsafeRawBufferPointer(rebasing: p[v..<ve]))
                    }
                }
                i = e + 1
            }
        }
        return block
    }

    static func isHopByHop(_ name: UnsafeRawBufferPointer) -> Bool {
        for lit in ["connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "content-length"]
        where lit.utf8.count == name.count {
            if zip(lit.utf8, name).allSatisfy({ $0 == ($1 | 0x20) || $0 == $1 }) { return true }
        }
        return false
    }

    /// The fields the proxy adds to every forwarded request, whatever protocol it arrived in:
    /// X-Forwarded-For (the client's chain, which `priorChain` writes, then the client),
    /// -Proto, -Host, -Port, X-Real-IP and, unless the client sent one, X-Request-Id.
    static func writeForwardedFields(
        into out: inout ByteBuffer, client: ClientInfo, host: UnsafeRawBufferPointer?, addRequestID: Bool,
        ids: inout RequestIDGenerator, priorChain: (inout ByteBuffer) -> Void
    ) {
        out.writeStaticString("x-forwarded-for: ")
        priorChain(&out)
        out.writeBytes(client.ip)
        out.writeStaticString("\r\nx-forwarded-proto: ")
        out.writeStaticString(client.proto)
        out.writeStaticString("\r\nx-forwarded-host: ")
        if let host {
            out.writeBytes(host)
        } else {
            out.writeBytes(client.localAuthority)
        }
        out.writeStaticString("\r\nx-forwarded-port: ")
        out.writeBytes(client.localPort)
        out.writeStaticString("\r\nx-real-ip: ")
        out.writeBytes(client.ip)
        out.writeStaticString("\r\n")
        if addRequestID {
            let (hi, lo) = ids.next()
            out.writeStaticString("x-request-id: ")
            writeHex64(&out, hi)
            writeHex64(&out, lo)
            out.writeStaticString("\r\n")
        }
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

    /// The framing field of a body the proxy frames itself.
    static func writeFraming(into out: inout ByteBuffer, _ framing: HTTP1BodyFraming) {
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
    }

    // Digits go into the buffer in one write each: a write per digit was a capacity check and
    // a call per byte (32 of them for every request id).

    /// `SIZE CRLF` of a chunk.
    static func writeChunkHeader(_ out: inout ByteBuffer, size: Int) {
        var digits = 0
        var v = size
        repeat { digits += 1; v >>= 4 } while v > 0
        let hex = hexDigits.utf8Start
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: digits + 2) { p in
            for k in 0..<digits { p[k] = hex[(size >> (4 * (digits - 1 - k))) & 0xF] }
            p[digits] = UInt8(ascii: "\r")
            p[digits + 1] = UInt8(ascii: "\n")
            return digits + 2
        }
    }

    static func writeHex64(_ out: inout ByteBuffer, _ v: UInt64) {
        let hex = hexDigits.utf8Start
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: 16) { p in
            for k in 0..<16 { p[k] = hex[Int((v >> (4 * UInt64(15 - k))) & 0xF)] }
            return 16
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
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: n) { p in
                for k in 0..<n { p[k] = d[n - 1 - k] }
                return n
            }
        }
    }
}
