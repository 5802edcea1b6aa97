import NIOCore
import SluiceHTTP1
import Testing
@testable import SluiceProxy

/// The head rewriting rules, without a channel.
struct ForwardedHeadsTests {
    func parse(_ s: String, kind: HTTP1Parser.Kind = .request) -> (HTTP1Head, [UInt8]) {
        var p = HTTP1Parser(kind: kind)
        let bytes = Array(s.utf8)
        let e = bytes.withUnsafeBytes { p.parse($0) }
        guard case .head = e else { Issue.record("no head: \(e)"); return (HTTP1Head(), bytes) }
        return (p.head, bytes)
    }

    func requestHead(_ s: String, framing: HTTP1BodyFraming = .none, upgrade: Bool = false, tls: Bool = false) -> String {
        let (head, bytes) = parse(s)
        var out = ByteBuffer()
        var ids = RequestIDGenerator()
        let client = ClientInfo(remote: try! SocketAddress(ipAddress: "192.0.2.7", port: 5555),
                                local: try! SocketAddress(ipAddress: "127.0.0.1", port: 8080), tls: tls)
        bytes.withUnsafeBytes { p in
            ForwardedHeads.writeRequestHead(into: &out, head: head, bytes: p, client: client, framing: framing, upgrade: upgrade, ids: &ids)
        }
        return String(buffer: out)
    }

    @Test func hopByHopFieldsAreDroppedAndFramingRewritten() {
        let out = requestHead("POST /x HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nTransfer-Encoding: chunked\r\nX-Keep: yes\r\n\r\n", framing: .chunked)
        #expect(out.hasPrefix("POST /x HTTP/1.1\r\nHost: a.test\r\nX-Keep: yes\r\n"))
        for gone in ["Connection:", "X-Hop", "Keep-Alive", "TE:", "Proxy-Connection", "Transfer-Encoding: chunked"] {
            #expect(!out.contains(gone), "\(gone) forwarded")
        }
        #expect(out.contains("transfer-encoding: chunked\r\n"))
        #expect(out.contains("x-forwarded-for: 192.0.2.7\r\n"))
        #expect(out.contains("x-real-ip: 192.0.2.7\r\n"))
        #expect(out.contains("x-forwarded-port: 8080\r\n"))
        #expect(out.hasSuffix("\r\n\r\n"))
    }

    @Test(arguments: [false, true])
    func forwardedFieldsAreWrittenWhole(tls: Bool) throws {
        let out = requestHead("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", tls: tls)
        let scheme = tls ? "https" : "http"
        let prefix = "GET / HTTP/1.1\r\nHost: a.test\r\nx-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: \(scheme)\r\n"
            + "x-forwarded-host: a.test\r\nx-forwarded-port: 8080\r\nx-real-ip: 192.0.2.7\r\nx-request-id: "
        #expect(out.hasPrefix(prefix))
        let id = try #require(out.dropFirst(prefix.count).split(separator: "\r\n").first)
        #expect(id.count == 32 && id.allSatisfy(\.isHexDigit))
        #expect(out.hasSuffix("\r\n\r\n"))
    }

    @Test func clientForwardedValuesAreReplacedExceptTheForChain() {
        let out = requestHead("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 9.9.9.9\r\n\r\n")
        #expect(out.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 192.0.2.7\r\n"))
        #expect(out.contains("x-forwarded-proto: http\r\n"))
        #expect(!out.contains("https"))
        #expect(!out.contains("9.9.9.9"))
    }

    @Test func absoluteFormBecomesOriginFormWithItsHost() {
        let out = requestHead("GET http://b.test:81?q HTTP/1.1\r\nHost: ignored\r\n\r\n")
        #expect(out.hasPrefix("GET /?q HTTP/1.1\r\nhost: b.test:81\r\n"))
        #expect(!out.contains("ignored\r\n"))
        #expect(out.contains("x-forwarded-host: b.test:81\r\n"))
    }

    @Test func http10WithoutHostGetsOne() {
        let out = requestHead("GET / HTTP/1.0\r\n\r\n")
        #expect(out.hasPrefix("GET / HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"))
    }

    @Test func upgradeIsKeptOnlyWhenTunnelling() {
        let up = requestHead("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", upgrade: true)
        #expect(up.contains("Upgrade: websocket\r\n"))
        #expect(up.contains("connection: upgrade\r\n"))
        let plain = requestHead("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
        #expect(!plain.contains("Upgrade"))
    }

    @Test func responseHeadIsReframed() {
        let (head, bytes) = parse("HTTP/1.0 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\n", kind: .response)
        var out = ByteBuffer()
        bytes.withUnsafeBytes { p in
            ForwardedHeads.writeResponseHead(into: &out, head: head, bytes: p, keepContentLength: false, chunked: true, connection: .close)
        }
        #expect(String(buffer: out) == "HTTP/1.1 200 OK\r\nX-App: 1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
    }

    /// Kept lines are copied in runs: the bytes on either side of dropped lines, after a start
    /// line kept as it came (HTTP/1.1) or rewritten (HTTP/1.0), are exact.
    @Test func keptLinesAroundDroppedOnesAreExact() {
        let request = requestHead("GET /a?b HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nConnection: close\r\nX-One: 1\r\nKeep-Alive: 5\r\nX-Two: 2\r\nX-Three: 3\r\n\r\n")
        #expect(request.hasPrefix("GET /a?b HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nX-One: 1\r\nX-Two: 2\r\nX-Three: 3\r\nx-forwarded-for: "))
        let old = requestHead("GET /a HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\nX-One: 1\r\n\r\n")
        #expect(old.hasPrefix("GET /a HTTP/1.1\r\nHost: a.test\r\nX-One: 1\r\nx-forwarded-for: "))
        let (head, bytes) = parse("HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive\r\nContent-Length: 3\r\nX-App: 1\r\n\r\n", kind: .response)
        var out = ByteBuffer()
        bytes.withUnsafeBytes { p in
            ForwardedHeads.writeResponseHead(into: &out, head: head, bytes: p, keepContentLength: true, chunked: false, connection: .none)
        }
        #expect(String(buffer: out) == "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 3\r\nX-App: 1\r\n\r\n")
    }

    @Test func headsLongerThanTheRoomFirstGivenAreWrittenWhole() {
        // A long Host is written twice (as is and as X-Forwarded-Host), more than the room the
        // writer reserves at first: it starts again with more.
        let host = String(repeating: "h", count: 250) + ".test"
        let chain = (1...150).map { "10.0.0.\($0 % 250)" }.joined(separator: ", ")
        let out = requestHead("GET /p HTTP/1.1\r\nHost: \(host)\r\nX-Forwarded-For: \(chain)\r\n\r\n")
        #expect(out.hasPrefix("GET /p HTTP/1.1\r\nHost: \(host)\r\n"))
        #expect(out.contains("x-forwarded-for: \(chain), 192.0.2.7\r\n"))
        #expect(out.contains("x-forwarded-host: \(host)\r\n"))
        #expect(out.contains("x-request-id: "))
        #expect(out.hasSuffix("\r\n\r\n"))
        #expect(out.components(separatedBy: "\r\n").count == 10)
    }

    @Test func theWriterStopsAtItsSpaceAndTheBufferGetsAllOrNothing() {
        var storage = [UInt8](repeating: 0, count: 8)
        storage.withUnsafeMutableBytes { space in
            var w = HeadWriter(UnsafeMutableRawBufferPointer(rebasing: space[0..<6]))
            w.write("abcd")
            #expect(!w.overflowed)
            w.write("efg")
            #expect(w.overflowed)
            w.write(byte: UInt8(ascii: "z"))  // nothing more once over
        }
        #expect(String(decoding: storage, as: UTF8.self) == "abcd\0\0\0\0")

        var b = ByteBuffer(string: "kept|")
        HeadWriter.write(into: &b, room: 4) { w in
            for _ in 0..<100 { w.write("0123456789") }
        }
        #expect(String(buffer: b) == "kept|" + String(repeating: "0123456789", count: 100))
    }

    @Test func chunkHeadersAreLowercaseHex() {
        for (n, s) in [(1, "1"), (15, "f"), (16, "10"), (65536, "10000"), (0, "0")] {
            var b = ByteBuffer()
            ForwardedHeads.writeChunkHeader(&b, size: n)
            #expect(String(buffer: b) == s + "\r\n")
        }
    }

    @Test func numbersAreWrittenWhole() {
        var b = ByteBuffer()
        ForwardedHeads.writeHex64(&b, 0x0123_4567_89ab_cdef)
        ForwardedHeads.writeHex64(&b, 0)
        ForwardedHeads.writeHex64(&b, .max)
        #expect(String(buffer: b) == "0123456789abcdef" + "0000000000000000" + "ffffffffffffffff")
        // Every digit in every position, and the carries between nibbles, against String(radix:).
        var values: [UInt64] = [0xfedc_ba98_7654_3210, 0x9a9a_9a9a_a9a9_a9a9, 1 << 63, 0x8000_0001_0000_000f]
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<1000 {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            values.append(x)
        }
        for v in values {
            var h = ByteBuffer()
            ForwardedHeads.writeHex64(&h, v)
            let expected = String(v, radix: 16)
            #expect(String(buffer: h) == String(repeating: "0", count: 16 - expected.count) + expected)
        }
        for (v, s) in [(Int64(0), "0"), (7, "7"), (10, "10"), (65536, "65536"), (.max, "9223372036854775807")] {
            var d = ByteBuffer()
            ForwardedHeads.writeDecimal(&d, v)
            #expect(String(buffer: d) == s)
        }
    }

    @Test func clientAddressesAreRenderedNumerically() throws {
        let v4 = ClientInfo(remote: try SocketAddress(ipAddress: "192.0.2.7", port: 5555),
                            local: try SocketAddress(ipAddress: "127.0.0.1", port: 8080), tls: false)
        #expect(String(decoding: v4.ip, as: UTF8.self) == "192.0.2.7")
        #expect(String(decoding: v4.localPort, as: UTF8.self) == "8080")
        #expect(String(decoding: v4.localAuthority, as: UTF8.self) == "127.0.0.1:8080")
        let v6 = ClientInfo(remote: try SocketAddress(ipAddress: "2001:db8::1", port: 5555),
                            local: try SocketAddress(ipAddress: "::1", port: 8443), tls: true)
        #expect(String(decoding: v6.ip, as: UTF8.self) == "2001:db8::1")
        #expect(String(decoding: v6.localAuthority, as: UTF8.self) == "[::1]:8443")
        let none = ClientInfo(remote: nil, local: nil, tls: false)
        #expect(String(decoding: none.ip, as: UTF8.self) == "unknown")
        #expect(String(decoding: none.localAuthority, as: UTF8.self) == "localhost:0")
    }
}
