import NIOCore
import NIOPosix
import SluiceHTTP1

/// `sluice echo`: a small HTTP/1.1 backend for demos, tests and benchmarks.
///
/// Every request gets 200 and a JSON description of what arrived. Query parameters make it
/// misbehave on purpose for tests (`conn_seq` counts requests on the backend connection, which
/// shows upstream keep-alive): `status=N`, `delay_ms=N`, `bytes=N` (a body of N bytes,
/// streamed with backpressure), `chunked=1`, `close=1`, `drop_next=1` (close the connection
/// unanswered when its next request arrives). `GET /healthz` answers 200 `ok`.
/// `Upgrade: websocket` is accepted and every frame is echoed back.
enum EchoServer {
    static func run(host: String, port: Int, name: String, logRequests: Bool = false) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler(name: name, logRequests: logRequests))
                }
            }
            .bind(host: host, port: port).get()
        say("sluice echo '\(name)' listening on \(channel.localAddress.map { "\($0)" } ?? "?")")
        try await channel.closeFuture.get()
    }
}

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let name: String
    private var parser = HTTP1Parser(kind: .request)
    private var inbound = ByteBuffer()
    private var bodyBytes: Int64 = 0
    private var json = ""
    private var controls = Controls()
    private var websocket = false
    private var wsBuffer = ByteBuffer()
    private var streaming: (remaining: Int64, chunked: Bool)? = nil
    private var busy = false
    private var requestsOnConnection = 0
    private var dropNextRequest = false

    struct Controls {
        var status = 200
        var delayMS = 0
        var bytes: Int64? = nil
        var chunked = false
        var close = false
        /// Close the connection, unanswered, when the next request on it arrives (a keep-alive race).
        var dropNext = false
        /// Send a 103 (Early Hints) with a `link` field before the response.
        var earlyHints = false
    }

    /// Print every request head received (tests read what reached the backend).
    let logRequests: Bool

    init(name: String, logRequests: Bool = false) {
        self.logRequests = logRequests
        self.name = name
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let incoming = unwrapInboundIn(data)
        if websocket {
            var more = incoming
            wsBuffer.writeBuffer(&more)
            echoFrames(context: context)
            return
        }
        inbound.receive(incoming)
        process(context: context)
    }

    private func process(context: ChannelHandlerContext) {
        while !busy && !websocket {
            let event = inbound.withUnsafeReadableBytes { parser.parse($0) }
            switch event {
            case .needMore(let c):
                inbound.moveReaderIndex(forwardBy: c)
                return
            case .head(let c):
                if dropNextRequest {
                    busy = true
                    context.close(promise: nil)
                    return
                }
                inbound.withUnsafeReadableBytes { describe(head: parser.head, bytes: $0) }
                dropNextRequest = controls.dropNext
                inbound.moveReaderIndex(forwardBy: c)
                if parser.head.expectsContinue {
                    var b = context.channel.allocator.buffer(capacity: 32)
                    b.writeString("HTTP/1.1 100 Continue\r\n\r\n")
                    context.writeAndFlush(wrapOutboundOut(b), promise: nil)
                }
            case .body(let r, let c):
                bodyBytes += Int64(r.count)
                inbound.moveReaderIndex(forwardBy: c)
            case .end(let t, let c):
                // Trailer lines of a chunked body, reported as `"trailers": {name: value}`.
                trailers = inbound.withUnsafeReadableBytes { p in
                    String(decoding: UnsafeRawBufferPointer(rebasing: p[t]), as: UTF8.self)
                }.split(separator: "\r\n").compactMap { line -> (String, String)? in
                    guard let colon = line.firstIndex(of: ":") else { return nil }
                    var v = line[line.index(after: colon)...]
                    while v.first == " " || v.first == "\t" { v.removeFirst() }
                    while v.last == " " || v.last == "\t" { v.removeLast() }
                    return (line[..<colon].lowercased(), String(v))
                }
                inbound.moveReaderIndex(forwardBy: c)
                respond(context: context)
            case .error(let e):
                var b = context.channel.allocator.buffer(capacity: 128)
                b.writeString("HTTP/1.1 \(e.status) Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                context.writeAndFlush(wrapOutboundOut(b)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                busy = true
                return
            }
        }
    }

    private var trailers: [(String, String)] = []
    private var wsKey: String? = nil
    private var wantsClose = false
    private var isHead = false

    private func describe(head: HTTP1Head, bytes p: UnsafeRawBufferPointer) {
        func text(_ r: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: p[r]), as: UTF8.self) }
        let target = text(head.target)
        if logRequests { say("received \(text(head.methodRange)) \(target) framing=\(head.framing)") }
        controls = Controls()
        if let q = target.firstIndex(of: "?") {
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { continue }
                switch kv[0] {
                case "status": controls.status = Int(kv[1]) ?? 200
                case "delay_ms": controls.delayMS = Int(kv[1]) ?? 0
                case "bytes": controls.bytes = Int64(kv[1])
                case "chunked": controls.chunked = kv[1] == "1"
                case "close": controls.close = kv[1] == "1"
                case "drop_next": controls.dropNext = kv[1] == "1"
                case "early_hints": controls.earlyHints = kv[1] == "1"
                default: break
                }
            }
        }
        var headers: [(String, String)] = []
        wsKey = nil
        var upgradeWS = false
        for f in head.fields {
            let n = text(f.name).lowercased()
            let v = text(f.value)
            if n == "sec-websocket-key" { wsKey = v }
            if n == "upgrade" && v.lowercased() == "websocket" { upgradeWS = true }
            if let i = headers.firstIndex(where: { $0.0 == n }) {
                headers[i].1 += ", " + v
            } else {
                headers.append((n, v))
            }
        }
        if !upgradeWS { wsKey = nil }
        wantsClose = head.wantsClose || controls.close
        isHead = head.method == .head
        let host = head.hostField.map { text(head.fields[$0].value) } ?? ""
        var j = "{\"backend\":" + jsonString(name)
        j += ",\"method\":" + jsonString(text(head.methodRange))
        j += ",\"path\":" + jsonString(target)
        j += ",\"host\":" + jsonString(host)
        j += ",\"proto\":\"HTTP/\(head.versionMajor).\(head.versionMinor)\""
        j += ",\"headers\":{" + headers.map { jsonString($0.0) + ":" + jsonString($0.1) }.joined(separator: ",") + "}"
        requestsOnConnection += 1
        j += ",\"conn_seq\":\(requestsOnConnection)"
        json = j
        bodyBytes = 0
    }

    private func respond(context: ChannelHandlerContext) {
        if let key = wsKey {
            let accept = base64(sha1(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
            var b = context.channel.allocator.buffer(capacity: 256)
            b.writeString("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: \(accept)\r\n\r\n")
            context.writeAndFlush(wrapOutboundOut(b), promise: nil)
            websocket = true
            wsBuffer = inbound
            inbound = ByteBuffer()
            echoFrames(context: context)
            return
        }
        let c = controls
        if c.earlyHints {
            var b = context.channel.allocator.buffer(capacity: 96)
            b.writeString("HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n")
            context.writeAndFlush(wrapOutboundOut(b), promise: nil)
        }
        if c.delayMS > 0 {
            busy = true
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(c.delayMS))) {
                self.busy = false
                self.writeResponse(context: context, controls: c)
                self.process(context: context)
            }
            return
        }
        writeResponse(context: context, controls: c)
    }

    private func writeResponse(context: ChannelHandlerContext, controls c: Controls) {
        let path = json.contains("\"path\":\"/healthz\"") ? "/healthz" : ""
        var head = "HTTP/1.1 \(c.status) \(c.status == 200 ? "OK" : "Status")\r\nserver: sluice-echo\r\n"
        if wantsClose { head += "connection: close\r\n" }
        if let n = c.bytes {
            head += "content-type: application/octet-stream\r\n"
            head += c.chunked ? "transfer-encoding: chunked\r\n\r\n" : "content-length: \(n)\r\n\r\n"
            var b = context.channel.allocator.buffer(capacity: head.utf8.count)
            b.writeString(head)
            context.write(wrapOutboundOut(b), promise: nil)
            if isHead {
                finishResponse(context: context)
                return
            }
            streaming = (n, c.chunked)
            busy = true
            pump(context: context)
            return
        }
        let trailerJSON = trailers.isEmpty ? "" : ",\"trailers\":{" + trailers.map { jsonString($0.0) + ":" + jsonString($0.1) }.joined(separator: ",") + "}"
        trailers = []
        let body = path == "/healthz" ? "ok\n" : json + trailerJSON + ",\"body_bytes\":\(bodyBytes)}\n"
        head += "content-type: \(path == "/healthz" ? "text/plain" : "application/json")\r\n"
        var b = context.channel.allocator.buffer(capacity: head.utf8.count + body.utf8.count + 64)
        if c.chunked {
            head += "transfer-encoding: chunked\r\n\r\n"
            b.writeString(head)
            if !isHead { b.writeString(String(body.utf8.count, radix: 16) + "\r\n" + body + "\r\n0\r\n\r\n") }
        } else {
            head += "content-length: \(body.utf8.count)\r\n\r\n"
            b.writeString(head)
            if !isHead { b.writeString(body) }
        }
        context.write(wrapOutboundOut(b), promise: nil)
        finishResponse(context: context)
    }

    /// Streams `bytes=N` bodies while the channel is writable, so memory stays flat.
    private func pump(context: ChannelHandlerContext) {
        guard let s = streaming else { return }
        let chunkSize: Int64 = 64 * 1024
        // A flush can re-enter through channelWritabilityChanged: keep `streaming` current.
        while let cur = streaming, cur.remaining > 0 && context.channel.isWritable {
            let n = Int(min(chunkSize, cur.remaining))
            streaming = (cur.remaining - Int64(n), cur.chunked)
            var b = context.channel.allocator.buffer(capacity: n + 16)
            if s.chunked { b.writeString(String(n, radix: 16) + "\r\n") }
            b.writeRepeatingByte(UInt8(ascii: "x"), count: n)
            if s.chunked { b.writeString("\r\n") }
            context.writeAndFlush(wrapOutboundOut(b), promise: nil)
        }
        if let cur = streaming, cur.remaining == 0 {
            streaming = nil
            if s.chunked {
                var b = context.channel.allocator.buffer(capacity: 8)
                b.writeString("0\r\n\r\n")
                context.write(wrapOutboundOut(b), promise: nil)
            }
            busy = false
            finishResponse(context: context)
            process(context: context)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && streaming != nil { pump(context: context) }
    }

    private func finishResponse(context: ChannelHandlerContext) {
        if wantsClose {
            busy = true
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else {
            context.flush()
        }
    }

    // MARK: - WebSocket echo

    private func echoFrames(context: ChannelHandlerContext) {
        while true {
            guard let frame = wsBuffer.withUnsafeReadableBytes({ Self.parseFrame($0) }) else { return }
            wsBuffer.moveReaderIndex(forwardBy: frame.length)
            var out = context.channel.allocator.buffer(capacity: frame.payload.count + 10)
            let opcode: UInt8 = frame.opcode == 0x9 ? 0xA : frame.opcode
            out.writeInteger(UInt8(0x80 | opcode))
            if frame.payload.count < 126 {
                out.writeInteger(UInt8(frame.payload.count))
            } else if frame.payload.count < 65536 {
                out.writeInteger(UInt8(126))
                out.writeInteger(UInt16(frame.payload.count))
            } else {
                out.writeInteger(UInt8(127))
                out.writeInteger(UInt64(frame.payload.count))
            }
            out.writeBytes(frame.payload)
            if frame.opcode == 0x8 {
                context.writeAndFlush(wrapOutboundOut(out)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            }
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
    }

    static func parseFrame(_ p: UnsafeRawBufferPointer) -> (opcode: UInt8, payload: [UInt8], length: Int)? {
        guard p.count >= 2 else { return nil }
        let opcode = p[0] & 0x0F
        let masked = p[1] & 0x80 != 0
        var len = Int(p[1] & 0x7F)
        var i = 2
        if len == 126 {
            guard p.count >= 4 else { return nil }
            len = Int(p[2]) << 8 | Int(p[3])
            i = 4
        } else if len == 127 {
            guard p.count >= 10 else { return nil }
            len = 0
            for k in 2..<10 { len = len << 8 | Int(p[k]) }
            i = 10
        }
        var mask: [UInt8] = [0, 0, 0, 0]
        if masked {
            guard p.count >= i + 4 else { return nil }
            mask = [p[i], p[i + 1], p[i + 2], p[i + 3]]
            i += 4
        }
        guard p.count >= i + len else { return nil }
        var payload = [UInt8](repeating: 0, count: len)
        for k in 0..<len { payload[k] = p[i + k] ^ mask[k & 3] }
        return (opcode, payload, i + len)
    }
}

// MARK: - Helpers

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

func base64(_ bytes: [UInt8]) -> String {
    let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    var i = 0
    while i < bytes.count {
        let b0 = bytes[i], b1 = i + 1 < bytes.count ? bytes[i + 1] : 0, b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
        out.append(table[Int(b0 >> 2)])
        out.append(table[Int((b0 & 3) << 4 | b1 >> 4)])
        out.append(i + 1 < bytes.count ? table[Int((b1 & 0xF) << 2 | b2 >> 6)] : UInt8(ascii: "="))
        out.append(i + 2 < bytes.count ? table[Int(b2 & 0x3F)] : UInt8(ascii: "="))
        i += 3
    }
    return String(decoding: out, as: UTF8.self)
}

/// SHA-1, only for the WebSocket handshake of the echo backend (RFC 6455 requires it).
func sha1(_ message: [UInt8]) -> [UInt8] {
    var h: [UInt32] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    var m = message
    let bitLength = UInt64(message.count) * 8
    m.append(0x80)
    while m.count % 64 != 56 { m.append(0) }
    for k in stride(from: 56, through: 0, by: -8) { m.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(k))) }
    func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 { (x << n) | (x >> (32 - n)) }
    for chunk in stride(from: 0, to: m.count, by: 64) {
        var w = [UInt32](repeating: 0, count: 80)
        for t in 0..<16 {
            w[t] = UInt32(m[chunk + 4 * t]) << 24 | UInt32(m[chunk + 4 * t + 1]) << 16 | UInt32(m[chunk + 4 * t + 2]) << 8 | UInt32(m[chunk + 4 * t + 3])
        }
        for t in 16..<80 { w[t] = rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1) }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4]
        for t in 0..<80 {
            let f: UInt32, k: UInt32
            switch t {
            case 0..<20: f = (b & c) | (~b & d); k = 0x5A827999
            case 20..<40: f = b ^ c ^ d; k = 0x6ED9EBA1
            case 40..<60: f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC
            default: f = b ^ c ^ d; k = 0xCA62C1D6
            }
            let temp = rotl(a, 5) &+ f &+ e &+ k &+ w[t]
            e = d; d = c; c = rotl(b, 30); b = a; a = temp
        }
        h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d; h[4] = h[4] &+ e
    }
    var out: [UInt8] = []
    for v in h { for s in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
    return out
}
