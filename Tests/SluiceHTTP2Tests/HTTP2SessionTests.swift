import NIOCore
import Testing

@testable import SluiceHTTP2

// MARK: - A client that writes frames by hand

/// Just enough of an HTTP/2 client to drive a server session from a test: frames are built
/// byte by byte and HPACK uses only "literal without indexing, new name" (no Huffman), so each
/// test controls exactly what the server sees.
struct FrameWriter {
    var bytes: [UInt8] = []

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    mutating func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8]) {
        let n = payload.count
        bytes += [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags]
        bytes += [UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)]
        bytes += payload
    }

    mutating func start() {
        bytes += Self.preface
        frame(type: 4, flags: 0, stream: 0, payload: [])
    }

    static func hpack(_ fields: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        func string(_ s: String) {
            let b = Array(s.utf8)
            precondition(b.count < 127)
            out.append(UInt8(b.count))
            out += b
        }
        for (n, v) in fields {
            out.append(0x00)
            string(n)
            string(v)
        }
        return out
    }

    mutating func headers(stream: UInt32, _ fields: [(String, String)], endStream: Bool) {
        frame(type: 1, flags: 0x4 | (endStream ? 0x1 : 0), stream: stream, payload: Self.hpack(fields))
    }

    mutating func data(stream: UInt32, _ payload: [UInt8], endStream: Bool) {
        frame(type: 0, flags: endStream ? 0x1 : 0, stream: stream, payload: payload)
    }

    mutating func ping() {
        frame(type: 6, flags: 0, stream: 0, payload: [UInt8](repeating: 7, count: 8))
    }
}

struct Frame {
    var type: UInt8
    var flags: UInt8
    var stream: UInt32
    var payload: [UInt8]

    var errorCode: UInt32? {
        switch type {
        case 3: return payload.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
        case 7: return payload.dropFirst(4).prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
        default: return nil
        }
    }
}

func frames(_ b: ByteBuffer) -> [Frame] {
    let a = Array(b.readableBytesView)
    var out: [Frame] = []
    var i = 0
    while i + 9 <= a.count {
        let n = Int(a[i]) << 16 | Int(a[i + 1]) << 8 | Int(a[i + 2])
        let sid = UInt32(a[i + 5] & 0x7F) << 24 | UInt32(a[i + 6]) << 16 | UInt32(a[i + 7]) << 8 | UInt32(a[i + 8])
        out.append(Frame(type: a[i + 3], flags: a[i + 4], stream: sid, payload: Array(a[(i + 9)..<min(a.count, i + 9 + n)])))
        i += 9 + n
    }
    return out
}

final class RecordingDelegate: HTTP2SessionDelegate {
    var heads: [(HTTP2Stream, Bool)] = []
    var data: [UInt8] = []
    var ended: [Int32] = []
    var closed: [(Int32, UInt32)] = []
    var drained = 0
    var onHeaders: ((HTTP2Stream) -> Void)? = nil

    func http2StreamHeaders(_ stream: HTTP2Stream, endStream: Bool) {
        heads.append((stream, endStream))
        onHeaders?(stream)
    }
    func http2StreamData(_ stream: HTTP2Stream, _ d: UnsafeRawBufferPointer) { data += d }
    func http2StreamEnd(_ stream: HTTP2Stream) { ended.append(stream.id) }
    func http2StreamClosed(_ stream: HTTP2Stream, errorCode: UInt32) { closed.append((stream.id, errorCode)) }
    func http2StreamDrained(_ stream: HTTP2Stream) { drained += 1 }
}

final class Harness {
    let session: HTTP2Session
    let delegate = RecordingDelegate()

    init(limits: HTTP2Limits = HTTP2Limits(), memory: HTTP2MemoryPool? = nil) {
        // A clock that never moves: rate limits are per second, and the test sends in "no time".
        let fixed = NIODeadline.uptimeNanoseconds(1_000_000_000)
        session = HTTP2Session(limits: limits, memory: memory, clock: { fixed })
        session.delegate = delegate
    }

    @discardableResult
    func feed(_ w: FrameWriter) -> Bool {
        w.bytes.withUnsafeBytes { session.receive($0) }
    }

    func output() -> [Frame] {
        var out = ByteBuffer()
        session.produce(into: &out, limit: 1 << 20)
        return frames(out)
    }
}

let get: [(String, String)] = [(":method", "GET"), (":scheme", "https"), (":authority", "shop.local"), (":path", "/cart?x=1")]

// MARK: - Tests

@Suite struct HTTP2SessionTests {
    @Test func requestHeadArrivesWithPseudoFieldsSeparated() {
        let h = Harness()
        var w = FrameWriter()
        w.start()
        w.headers(stream: 1, get + [("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")], endStream: true)
        #expect(h.feed(w))
        #expect(h.delegate.heads.count == 1)
        guard let (s, end) = h.delegate.heads.first else { return }
        #expect(end)
        #expect(s.requestEnded)
        let text = { (r: Range<Int>?) in r.map { String(decoding: s.headerBytes[$0], as: UTF8.self) } }
        #expect(text(s.method) == "GET")
        #expect(text(s.path) == "/cart?x=1")
        #expect(text(s.authority) == "shop.local")
        #expect(s.fields.count == 3)
        #expect(s.fields.filter { s.fieldNamed($0, "cookie") }.count == 2)
        // The server's SETTINGS, the ACK of the client's.
        let out = h.output()
        #expect(out.contains { $0.type == 4 && $0.flags & 1 == 0 })
        #expect(out.contains { $0.type == 4 && $0.flags & 1 == 1 })
    }

    @Test(arguments: [
        ("Accept", "*/*"),            // upper-case name
        ("connection", "close"),      // connection-specific
        ("transfer-encoding", "chunked"),
        ("te", "gzip"),               // only "trailers" is allowed
        ("x-bad", " leading"),        // leading whitespace
        ("x-bad", "trailing "),
        ("x-bad", "a\rb"),
        ("x-bad", "a\u{0}b"),
    ])
    func malformedFieldResetsTheStream(name: String, value: String) {
        let h = Harness()
        var w = FrameWriter()
        w.start()
        w.headers(stream: 1, get + [(name, value)], endStream: true)
        #expect(h.feed(w))
        #expect(h.delegate.heads.isEmpty, "a malformed request must never reach the proxy")
        let rst = h.output().first { $0.type == 3 }
        #expect(rst?.stream == 1)
        #expect(rst?.errorCode == 1)  // PROTOCOL_ERROR
    }

    @Test func missingPseudoFieldResetsTheStream() {
        let h = Harness()
        var w = FrameWriter()
        w.start()
        w.headers(stream: 1, [(":method", "GET"), (":scheme", "https"), (":authority", "a")], endStream: true)
        #expect(h.feed(w))
        #expect(h.delegate.heads.isEmpty)
        #expect(h.output().contains { $0.type == 3 && $0.stream == 1 })
    }

    @Test func oversizedFieldSectionIsFlaggedNotForwarded() {
        var limits = HTTP2Limits()
        limits.maxHeaderListSize = 300
        let h = Harness(limits: limits)
        var w = FrameWriter()
        w.start()
        let big = String(repeating: "v", count: 100)
        w.headers(stream: 1, get + [("x-a", big), ("x-b", big), ("x-c", big)], endStream: true)
        #expect(h.feed(w))
        #expect(h.delegate.heads.first?.0.headersTooLarge == true)
    }

    @Test func contentLengthDisagreeingWithDataResetsTheStream() {
        let h = Harness()
        var w = FrameWriter()
        w.start()
        w.headers(stream: 1, [(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/"), ("content-length", "5")], endStream: false)
        w.data(stream: 1, Array("abc".utf8), endStream: true)
        h.feed(w)
        #expect(h.delegate.ended.isEmpty)
        #expect(h.output().contains { $0.type == 3 && $0.stream == 1 && $0.errorCode == 1 })
    }

    @Test func pingFloodEndsTheConnectionWithEnhanceYourCalm() {
        var limits = HTTP2Limits()
        limits.maxControlFramesPerSecond = 50
        let h = Harness(limits: limits)
        var w = FrameWriter()
        w.start()
        for _ in 0..<200 { w.ping() }
        #expect(h.feed(w) == false)
        let out = h.output()
        let goaway = out.first { $0.type == 7 }
        #expect(goaway?.errorCode == 0xB)
        // The ACKs stop at the limit: the flood cost at most that much work.
        #expect(out.filter { $0.type == 6 }.count <= 50)
        #expect(h.session.isFinished)
    }

    @Test func requestWindowReopensOnlyWhenTheApplicationConsumes() {
        var limits = HTTP2Limits()
        limits.initialStreamWindow = 1000
        limits.connectionWindow = 65535
        let h = Harness(limits: limits)
        var w = FrameWriter()
        w.start()
        // The client acknowledges the server's SETTINGS: the 1000-byte window applies from here.
        w.frame(type: 4, flags: 1, stream: 0, payload: [])
        w.headers(stream: 1, [(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/")], endStream: false)
        w.data(stream: 1, [UInt8](repeating: 0x61, count: 900), endStream: false)
        h.feed(w)
        #expect(h.delegate.data.count == 900)
        #expect(!h.output().contains { $0.type == 8 && $0.stream == 1 }, "no WINDOW_UPDATE before the bytes were passed on")
        h.session.consume(h.delegate.heads[0].0, 900)
        #expect(h.output().contains { $0.type == 8 && $0.stream == 1 })
    }

    @Test func responseBodyStreamsWithTrailersAndReportsDrain() {
        var limits = HTTP2Limits()
        limits.streamHighWater = 100
        let h = Harness(limits: limits)
        var w = FrameWriter()
        w.start()
        w.headers(stream: 1, get, endStream: true)
        h.feed(w)
        _ = h.output()
        let s = h.delegate.heads[0].0
        var head = HTTP2HeaderBlock()
        head.add(":status", "200")
        h.session.respond(s, headers: head, hasBody: true)
        var body = ByteBuffer()
        body.writeBytes([UInt8](repeating: 0x62, count: 300))
        #expect(h.session.send(s, body), "above the high-water mark the source must pause")
        var trailers = HTTP2HeaderBlock()
        trailers.add("x-checksum", "abc")
        h.session.end(s, trailers: trailers)
        let out = h.output()
        #expect(out.filter { $0.type == 0 }.map(\.payload.count).reduce(0, +) == 300)
        let last = out.last { $0.type == 1 }
        #expect(((last?.flags ?? 0) & 0x1) == 1, "trailers end the stream")
        #expect(h.delegate.drained == 1)
        #expect(h.delegate.closed.map(\.0) == [1])
    }

    @Test func goAwayLetsOpenStreamsFinish() {
        let h = Harness()
        var w = FrameWriter()
        w.start()
        w.headers(stream: 1, get, endStream: true)
        h.feed(w)
        h.session.goAway()
        #expect(h.output().contains { $0.type == 7 && $0.errorCode == 0 })
        #expect(!h.session.isFinished, "stream 1 still waits for its response")
        var head = HTTP2HeaderBlock()
        head.add(":status", "204")
        h.session.respond(h.delegate.heads[0].0, headers: head, hasBody: false)
        _ = h.output()
        #expect(h.session.openStreams == 0)
    }
}

// MARK: - Stream storage reuse

/// Remembers what each request head held when it arrived, without keeping the streams (a kept
/// stream is never reused).
final class SnapshotDelegate: HTTP2SessionDelegate {
    struct Seen {
        var id: Int32
        var fields: [String]
        var path: String?
    }
    var seen: [Seen] = []
    var closed: [Int32] = []
    var respond: ((HTTP2Stream) -> Void)? = nil

    func http2StreamHeaders(_ stream: HTTP2Stream, endStream: Bool) {
        let text = { (r: Range<Int>) in String(decoding: stream.headerBytes[r], as: UTF8.self) }
        seen.append(Seen(id: stream.id, fields: stream.fields.map { text($0.name) + ": " + text($0.value) },
                         path: stream.path.map(text)))
        respond?(stream)
    }
    func http2StreamData(_ stream: HTTP2Stream, _ d: UnsafeRawBufferPointer) {}
    func http2StreamEnd(_ stream: HTTP2Stream) {}
    func http2StreamClosed(_ stream: HTTP2Stream, errorCode: UInt32) { closed.append(stream.id) }
    func http2StreamDrained(_ stream: HTTP2Stream) {}
}

extension HTTP2SessionTests {
    /// A closed stream's buffers serve the next stream, and nothing of the old request shows.
    /// (Whether the buffers were reused is seen in the allocation count of benchmarks/allocs.)
    @Test func aNewStreamStartsEmptyOnReusedStorage() {
        let fixed = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let session = HTTP2Session(clock: { fixed })
        let delegate = SnapshotDelegate()
        session.delegate = delegate
        // The session holds its delegate strongly (the server handler drops it at close); this
        // delegate's closure holds the session, so the test ends the cycle the same way.
        defer { session.delegate = nil }
        delegate.respond = { s in
            var head = HTTP2HeaderBlock()
            head.add(":status", "204")
            session.respond(s, headers: head, hasBody: false)
        }
        func feed(_ w: FrameWriter) { _ = w.bytes.withUnsafeBytes { session.receive($0) } }
        func drain() { var out = ByteBuffer(); session.produce(into: &out, limit: 1 << 20) }

        var w = FrameWriter()
        w.start()
        // Stream 1 stays open (no END_STREAM), so the session is not idle in between.
        w.headers(stream: 1, get, endStream: false)
        w.headers(stream: 3, get + [("x-first", "one"), ("cookie", "secret=1")], endStream: true)
        feed(w)
        drain()
        #expect(delegate.closed == [3])

        var w2 = FrameWriter()
        w2.headers(stream: 5, [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/b")], endStream: true)
        feed(w2)
        drain()
        #expect(delegate.seen.count == 3)
        guard delegate.seen.count == 3 else { return }
        let third = delegate.seen[2]
        #expect(third.id == 5)
        #expect(third.fields.isEmpty, "fields of an earlier request leaked: \(third.fields)")
        #expect(third.path == "/b")
        #expect(delegate.seen[1].fields == ["x-first: one", "cookie: secret=1"])

        // Once released (an idle connection), new streams allocate again.
        session.releaseSpares()
        var w3 = FrameWriter()
        w3.headers(stream: 7, get, endStream: true)
        feed(w3)
        #expect(delegate.seen.last?.fields.isEmpty == true)
    }
}

// MARK: - Priorities

extension HTTP2SessionTests {
    /// The server announces RFC 9218 (SETTINGS_NO_RFC7540_PRIORITIES = 1). Clients that still
    /// send RFC 7540 signals (PRIORITY frames, HEADERS with a dependency, even on a stream not
    /// yet opened) are served as if they had not; a `priority` field is passed on like any other.
    @Test func rfc7540PrioritySignalsAreIgnoredAndRFC9218IsAnnounced() {
        let h = Harness()
        var w = FrameWriter()
        w.start()
        // PRIORITY for idle stream 5: depends on stream 0, weight 200.
        w.frame(type: 2, flags: 0, stream: 5, payload: [0, 0, 0, 0, 200])
        // HEADERS with PRIORITY (0x20): exclusive dependency on stream 5, weight 16.
        let block = FrameWriter.hpack(get + [("priority", "u=1, i")])
        w.frame(type: 1, flags: 0x4 | 0x1 | 0x20, stream: 1, payload: [0x80, 0, 0, 5, 15] + block)
        w.headers(stream: 3, get, endStream: true)
        #expect(h.feed(w))
        #expect(h.delegate.heads.map(\.0.id) == [1, 3])
        let first = h.delegate.heads.first?.0
        #expect(first.map { s in s.fields.contains { s.fieldNamed($0, "priority") } } == true)

        let out = h.output()
        let settings = out.first { $0.type == 4 && $0.flags & 1 == 0 }
        var entries: [UInt16: UInt32] = [:]
        if let p = settings?.payload {
            for i in stride(from: 0, to: p.count - 5, by: 6) {
                entries[UInt16(p[i]) << 8 | UInt16(p[i + 1])] = p[(i + 2)..<(i + 6)].reduce(0) { $0 << 8 | UInt32($1) }
            }
        }
        #expect(entries[0x9] == 1, "SETTINGS_NO_RFC7540_PRIORITIES")
        #expect(!out.contains { $0.type == 7 || $0.type == 3 }, "no GOAWAY or RST_STREAM")

        for (s, _) in h.delegate.heads {
            var head = HTTP2HeaderBlock()
            head.add(":status", "204")
            h.session.respond(s, headers: head, hasBody: false)
        }
        let answers = h.output().filter { $0.type == 1 }
        #expect(Set(answers.map(\.stream)) == [1, 3])
    }
}
