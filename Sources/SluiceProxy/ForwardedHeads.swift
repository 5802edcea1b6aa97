import NIOCore
import SluiceHTTP1
import SluiceHTTP2
#if canImport(Glibc)
import Glibc
#endif

/// What the proxy knows about the client side of a connection, rendered once per connection so
/// that adding forwarded fields is a memcpy.
///
/// A class with constant fields: a request hands it to the head writer with one reference, where
/// a struct of three arrays cost three retains and three releases per request.
final class ClientInfo: Sendable {
    let ip: [UInt8]
    let localPort: [UInt8]
    let localAuthority: [UInt8]
    // What the forwarded fields hold that is the same for every request of a connection, as two
    // pieces for the head writer instead of eight (each piece is a call and a memcpy: about 200
    // instructions a request).
    /// `\r\nx-forwarded-proto: <scheme>\r\nx-forwarded-host: `
    let protoThenHostName: StaticString
    /// `\r\nx-forwarded-port: <port>\r\nx-real-ip: <ip>\r\n`
    let portThenRealIP: [UInt8]

    convenience init(remote: SocketAddress?, local: SocketAddress?, tls: Bool) {
        self.init(remote: remote, local: Self.localParts(local), tls: tls)
    }

    /// With the local parts already rendered (they are the same for every connection to a
    /// listener: `EventLoopContext.localParts` keeps them).
    init(remote: SocketAddress?, local: (port: [UInt8], authority: [UInt8]), tls: Bool) {
        ip = Self.numericHost(remote) ?? Self.unknown
        localPort = local.port
        localAuthority = local.authority
        protoThenHostName = Self.protoThenHostName(tls: tls)
        portThenRealIP = Self.portThenRealIP(port: local.port, ip: ip)
    }

    private init(placeholderFor tls: Bool) {
        ip = Self.unknown
        localPort = []
        localAuthority = []
        protoThenHostName = Self.protoThenHostName(tls: tls)
        portThenRealIP = Self.portThenRealIP(port: [], ip: ip)
    }

    private static func protoThenHostName(tls: Bool) -> StaticString {
        tls ? "\r\nx-forwarded-proto: https\r\nx-forwarded-host: " : "\r\nx-forwarded-proto: http\r\nx-forwarded-host: "
    }

    private static func portThenRealIP(port: [UInt8], ip: [UInt8]) -> [UInt8] {
        Array("\r\nx-forwarded-port: ".utf8) + port + Array("\r\nx-real-ip: ".utf8) + ip + Array("\r\n".utf8)
    }

    /// Before the connection is active: nothing is rendered, and one shared value serves every
    /// connection of a scheme.
    static func placeholder(tls: Bool) -> ClientInfo { tls ? placeholderHTTPS : placeholderHTTP }
    private static let placeholderHTTP = ClientInfo(placeholderFor: false)
    private static let placeholderHTTPS = ClientInfo(placeholderFor: true)

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

/// Lines of a head that the proxy forwards as they came and that follow one another in the
/// buffer, copied at once: most of a head's lines are kept, so a head is a few copies instead of
/// one per line. Anything the writer adds between them must `flush` first.
struct LineRun {
    private var start = 0
    private var end = 0

    mutating func add(_ line: Range<Int>, _ w: inout HeadWriter, _ p: UnsafeRawBufferPointer) {
        if start < end && line.lowerBound == end {
            end = line.upperBound
            return
        }
        flush(&w, p)
        start = line.lowerBound
        end = line.upperBound
    }

    mutating func flush(_ w: inout HeadWriter, _ p: UnsafeRawBufferPointer) {
        if start < end { w.write(p, start..<end) }
        start = 0
        end = 0
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
    /// The request head sent upstream. `framing` is how the proxy will frame the body it forwards.
    static func writeRequestHead(
        into out: inout ByteBuffer, head: HTTP1Head, bytes p: UnsafeRawBufferPointer,
        client: ClientInfo, framing: HTTP1BodyFraming, upgrade: Bool, ids: inout RequestIDGenerator
    ) {
        // The original lines, at most once more for an absolute-form authority or the client's
        // X-Forwarded-For chain (rare: the writer then starts again with more room), and ours.
        let room = head.headLength + ownFieldsRoom(client)
        HeadWriter.write(into: &out, room: room) { w in
            writeRequestHead(into: &w, head: head, bytes: p, client: client, framing: framing, upgrade: upgrade, ids: &ids)
        }
    }

    /// Room for what the proxy adds to a request head: the forwarded fields, a request id, the
    /// framing, `connection: upgrade` and the blank line (about 230 bytes of names and digits).
    private static func ownFieldsRoom(_ client: ClientInfo) -> Int {
        320 + 2 * client.ip.count + client.localAuthority.count + client.localPort.count
    }

    private static func writeRequestHead(
        into w: inout HeadWriter, head: HTTP1Head, bytes p: UnsafeRawBufferPointer,
        client: ClientInfo, framing: HTTP1BodyFraming, upgrade: Bool, ids: inout RequestIDGenerator
    ) {
        // Request line, always as HTTP/1.1; an absolute-form target becomes origin-form. The
        // parser accepts only `method SP target SP HTTP/d.d CRLF`, so an HTTP/1.1 line in origin
        // form goes out as it came, in the same copy as the field lines that follow it.
        var run = LineRun()
        if head.targetForm != .absolute && head.versionMajor == 1 && head.versionMinor == 1 {
            run.add(head.startLine, &w, p)
        } else {
            w.write(p, head.methodRange)
            w.write(byte: UInt8(ascii: " "))
            if head.targetForm == .absolute {
                if head.targetPathAndQuery.isEmpty {
                    w.write(byte: UInt8(ascii: "/"))
                } else {
                    if p[head.targetPathAndQuery.lowerBound] == UInt8(ascii: "?") { w.write(byte: UInt8(ascii: "/")) }
                    w.write(p, head.targetPathAndQuery)
                }
            } else {
                w.write(p, head.target)
            }
            w.write(" HTTP/1.1\r\n")
        }

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
                if upgrade { run.add(f.line, &w, p) }
                continue
            case .host:
                if let authority = head.targetAuthority, head.targetForm == .absolute {
                    // RFC 9112 §3.2.2: the target's authority replaces Host.
                    run.flush(&w, p)
                    w.write("host: ")
                    w.write(p, authority)
                    w.write("\r\n")
                    hostValue = authority
                } else {
                    run.add(f.line, &w, p)
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
            run.add(f.line, &w, p)
        }
        run.flush(&w, p)
        if hostValue == nil {
            // HTTP/1.0 without Host: the upstream speaks 1.1 and needs one.
            w.write("host: ")
            if let authority = head.targetAuthority {
                w.write(p, authority)
                hostValue = authority
            } else {
                w.write(client.localAuthority)
            }
            w.write("\r\n")
        }

        let host: UnsafeRawBufferPointer? = hostValue.map { UnsafeRawBufferPointer(rebasing: p[$0]) }
        writeForwardedFields(into: &w, client: client, host: host, addRequestID: !hasRequestID, ids: &ids) { w in
            guard xffCount > 0 else { return }
            for f in head.fields where f.known == .xForwardedFor && !f.value.isEmpty {
                w.write(p, f.value)
                w.write(", ")
            }
        }
        writeFraming(into: &w, framing)
        if upgrade { w.write("connection: upgrade\r\n") }
        w.write("\r\n")
    }

    /// The HTTP/1.1 head for a request that arrived over HTTP/2 (RFC 9113 §8.3): `:authority`
    /// becomes Host, cookie crumbs are joined into one field, the proxy frames the body, and
    /// fields that only the proxy may set are dropped. nghttp2 and `HTTP2Session` have already
    /// refused connection-specific fields, upper-case names and CR/LF/NUL in values.
    static func writeRequestHead(
        into out: inout ByteBuffer, stream s: HTTP2Stream, authority: Range<Int>, client: ClientInfo,
        framing: HTTP1BodyFraming, ids: inout RequestIDGenerator
    ) {
        // Every field as `name: value\r\n` (the pseudo-fields' bytes are in `headerBytes` too,
        // and pay for the request line), Host and X-Forwarded-Host, and ours.
        let room = s.headerBytes.count + 4 * s.fields.count + 2 * authority.count + ownFieldsRoom(client)
        HeadWriter.write(into: &out, room: room) { w in
            writeRequestHead(into: &w, stream: s, authority: authority, client: client, framing: framing, ids: &ids)
        }
    }

    private static func writeRequestHead(
        into w: inout HeadWriter, stream s: HTTP2Stream, authority: Range<Int>, client: ClientInfo,
        framing: HTTP1BodyFraming, ids: inout RequestIDGenerator
    ) {
        s.headerBytes.withUnsafeBytes { p in
            func named(_ r: Range<Int>, _ lit: StaticString) -> Bool {
                guard r.count == lit.utf8CodeUnitCount else { return false }
                let l = lit.utf8Start
                for k in 0..<r.count where p[r.lowerBound + k] != l[k] { return false }
                return true
            }
            w.write(p, s.method!)
            w.write(byte: UInt8(ascii: " "))
            w.write(p, s.path!)
            w.write(" HTTP/1.1\r\nhost: ")
            w.write(p, authority)
            w.write("\r\n")
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
                w.write(p, n)
                w.write(": ")
                w.write(p, f.value)
                w.write("\r\n")
            }
            if cookies > 0 {
                // RFC 9113 §8.2.3: crumbs are joined with "; " for an HTTP/1.1 hop.
                w.write("cookie: ")
                var first = true
                for f in s.fields where named(f.name, "cookie") {
                    if !first { w.write("; ") }
                    first = false
                    w.write(p, f.value)
                }
                w.write("\r\n")
            }
            writeForwardedFields(into: &w, client: client, host: UnsafeRawBufferPointer(rebasing: p[authority]),
                                 addRequestID: !hasRequestID, ids: &ids) { w in
                guard xff > 0 else { return }
                for f in s.fields where named(f.name, "x-forwarded-for") && !f.value.isEmpty {
                    w.write(p, f.value)
                    w.write(", ")
                }
            }
        }
        writeFraming(into: &w, framing)
        w.write("\r\n")
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
        into w: inout HeadWriter, client: ClientInfo, host: UnsafeRawBufferPointer?, addRequestID: Bool,
        ids: inout RequestIDGenerator, priorChain: (inout HeadWriter) -> Void
    ) {
        w.write("x-forwarded-for: ")
        priorChain(&w)
        w.write(client.ip)
        w.write(client.protoThenHostName)
        if let host {
            w.write(host)
        } else {
            w.write(client.localAuthority)
        }
        w.write(client.portThenRealIP)
        if addRequestID {
            let (hi, lo) = ids.next()
            w.write("x-request-id: ")
            w.writeHex64(hi)
            w.writeHex64(lo)
            w.write("\r\n")
        }
    }

    /// The response head sent to the client.
    static func writeResponseHead(
        into out: inout ByteBuffer, head: HTTP1Head, bytes p: UnsafeRawBufferPointer,
        keepContentLength: Bool, chunked: Bool, connection: ConnectionDirective, extra: [UInt8]? = nil
    ) {
        // At most the original lines, and ours: always enough.
        HeadWriter.write(into: &out, room: head.headLength + 64 + (extra?.count ?? 0)) { w in
            writeResponseHead(into: &w, head: head, bytes: p, keepContentLength: keepContentLength, chunked: chunked,
                              connection: connection, extra: extra)
        }
    }

    private static func writeResponseHead(
        into w: inout HeadWriter, head: HTTP1Head, bytes p: UnsafeRawBufferPointer,
        keepContentLength: Bool, chunked: Bool, connection: ConnectionDirective, extra: [UInt8]?
    ) {
        // "HTTP/x.y " is 9 bytes; the status code, reason and CRLF follow unchanged (an
        // HTTP/1.1 status line goes out whole, in one copy with the field lines after it).
        var run = LineRun()
        if head.versionMajor == 1 && head.versionMinor == 1 {
            run.add(head.startLine, &w, p)
        } else {
            w.write("HTTP/1.1 ")
            run.add((head.startLine.lowerBound + 9)..<head.startLine.upperBound, &w, p)
        }
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
            run.add(f.line, &w, p)
        }
        run.flush(&w, p)
        if chunked { w.write("transfer-encoding: chunked\r\n") }
        if let extra { w.write(extra) }
        switch connection {
        case .none: break
        case .close: w.write("connection: close\r\n")
        case .keepAlive: w.write("connection: keep-alive\r\n")
        case .upgrade: w.write("connection: upgrade\r\n")
        }
        w.write("\r\n")
    }

    /// The framing field of a body the proxy frames itself.
    static func writeFraming(into w: inout HeadWriter, _ framing: HTTP1BodyFraming) {
        switch framing {
        case .contentLength(let n):
            w.write("content-length: ")
            w.writeDecimal(n)
            w.write("\r\n")
        case .chunked:
            w.write("transfer-encoding: chunked\r\n")
        case .none, .closeDelimited:
            break
        }
    }

    // MARK: - Numbers on their own

    /// `SIZE CRLF` of a chunk.
    static func writeChunkHeader(_ out: inout ByteBuffer, size: Int) {
        HeadWriter.write(into: &out, room: 18) { w in
            w.writeHex(size)
            w.write("\r\n")
        }
    }

    static func writeHex64(_ out: inout ByteBuffer, _ v: UInt64) {
        HeadWriter.write(into: &out, room: 16) { $0.writeHex64(v) }
    }

    static func writeDecimal(_ out: inout ByteBuffer, _ v: Int64) {
        HeadWriter.write(into: &out, room: 20) { $0.writeDecimal(v) }
    }
}
