import SluiceHTTP1
import Testing

/// Our own table of requests and responses, each parsed whole, split at every offset and byte by
/// byte (`parseAllWays`), with the outcome the RFCs require.
struct HTTP1ParserTests {
    static let rejectedRequests: [(String, String, HTTP1ParseError.Kind)] = [
        ("CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .malformed),
        ("TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", .malformed),
        ("differing CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", .malformed),
        ("CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", .malformed),
        ("negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", .malformed),
        ("CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", .malformed),
        ("empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", .malformed),
        ("TE chunked not last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .malformed),
        ("TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .malformed),
        ("TE quoted", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", .malformed),
        ("TE leading comma", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n", .malformed),
        ("TE trailing comma", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", .malformed),
        ("TE with control byte", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\u{0B}\r\n\r\n", .malformed),
        ("TE high byte", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ch\u{FF}unked\r\n\r\n", .malformed),
        ("TE unknown only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", .malformed),
        ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .notImplemented),
        ("TE on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .malformed),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", .malformed),
        ("space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n", .malformed),
        ("tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nX\t: 1\r\n\r\n", .malformed),
        ("empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", .malformed),
        ("non-token name", "GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", .malformed),
        ("line without colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", .malformed),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", .malformed),
        ("bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", .malformed),
        ("bare LF line", "GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", .malformed),
        ("lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", .malformed),
        ("bad version", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", .malformed),
        ("two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", .malformed),
        ("space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", .malformed),
        ("control in target", "GET /a\u{01}b HTTP/1.1\r\nHost: a\r\n\r\n", .malformed),
        ("fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", .malformed),
        ("trailing space after version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", .malformed),
        ("missing Host", "GET / HTTP/1.1\r\n\r\n", .malformed),
        ("duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", .malformed),
        ("Host with userinfo", "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", .malformed),
        ("Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .malformed),
        ("Host with bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", .malformed),
        ("empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", .malformed),
        ("absolute-form with userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", .malformed),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", .versionNotSupported),
        ("unknown expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", .expectationFailed),
        ("chunk size with sign", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", .malformed),
        ("chunk size 0x", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", .malformed),
        ("chunk size underscore", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n", .malformed),
        ("chunk size space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", .malformed),
        ("chunk size 17 digits", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n", .malformed),
        ("chunk data longer", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", .malformed),
        ("chunk ext bad char", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a b\r\nhello\r\n0\r\n\r\n", .malformed),
        ("trailer with Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", .malformed),
    ]

    @Test(arguments: rejectedRequests.indices)
    func rejectsRequest(_ i: Int) {
        let (name, raw, kind) = Self.rejectedRequests[i]
        let (outcome, disagreements) = parseAllWays(Array(raw.utf8), kind: .request)
        #expect(outcome.error?.kind == kind, "\(name): \(outcome)")
        #expect(disagreements.isEmpty, "\(name): \(disagreements.prefix(2))")
    }

    @Test func chunkedBodyWithExtensionsAndTrailers() {
        let raw = "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;q=\"a\\\"b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        let (o, d) = parseAllWays(Array(raw.utf8), kind: .request)
        #expect(d.isEmpty)
        #expect(o.error == nil)
        #expect(o.messages.count == 2)
        #expect(String(decoding: o.messages[0].body, as: UTF8.self) == "hello world")
        #expect(o.messages[0].trailers == [["X-Sum", "1"]])
        #expect(o.messages[1].startLine == ["GET", "/next", "1.1"])
    }

    @Test func contentLengthBodyAndPipelining() {
        let raw = "PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\n\r\nHEAD /c HTTP/1.1\r\nHost: a\r\n\r\n"
        let (o, d) = parseAllWays(Array(raw.utf8), kind: .request)
        #expect(d.isEmpty)
        #expect(o.messages.map { $0.startLine[1] } == ["/a", "/b", "/c"])
        #expect(o.messages.map(\.complete) == [true, true, true])
        #expect(o.messages[0].body == Array("hello".utf8))
    }

    @Test func headFacts() {
        var p = HTTP1Parser(kind: .request)
        let raw = Array("GET http://Example.com:8080/x?y HTTP/1.0\r\nHost: other\r\nConnection: keep-alive, Upgrade, X-Hop\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n".utf8)
        let e = raw.withUnsafeBytes { p.parse($0) }
        #expect(e == .head(consumed: raw.count))
        let h = p.head
        #expect(h.method == .get)
        #expect(h.targetForm == .absolute)
        #expect(String(decoding: raw[h.targetAuthority!], as: UTF8.self) == "Example.com:8080")
        #expect(String(decoding: raw[h.targetPathAndQuery], as: UTF8.self) == "/x?y")
        #expect(h.keepAliveRequested && !h.wantsClose)
        #expect(h.connectionUpgrade && h.hasUpgrade && h.connectionNamesOtherFields)
        #expect(!h.expectsContinue, "HTTP/1.0 ignores Expect: 100-continue")
        #expect(h.framing == .none)
    }

    @Test func limits() {
        let small = HTTP1Limits(maxLineLength: 32, maxHeadLength: 128, maxFieldCount: 3)
        let longLine = "GET /" + String(repeating: "a", count: 40) + " HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(parseAllWays(Array(longLine.utf8), kind: .request, limits: small).whole.error?.kind == .uriTooLong)
        let longField = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "v", count: 40) + "\r\n\r\n"
        #expect(parseAllWays(Array(longField.utf8), kind: .request, limits: small).whole.error?.kind == .headerFieldsTooLarge)
        let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
        #expect(parseAllWays(Array(many.utf8), kind: .request, limits: small).whole.error?.kind == .headerFieldsTooLarge)
        let big = "GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X: 0123456789012345678\r\n", count: 2) + "Y: " + String(repeating: "z", count: 29) + "\r\n\r\n"
        #expect(parseAllWays(Array(big.utf8), kind: .request, limits: HTTP1Limits(maxLineLength: 64, maxHeadLength: 96, maxFieldCount: 10)).whole.error?.kind == .headerFieldsTooLarge)
    }

    /// Field offsets are stored as Int32: however large a head the limits allow, the parser
    /// holds it below that, when it is made and when its limits change.
    @Test func headLengthStaysWithinTheOffsetsFieldsCanHold() {
        var p = HTTP1Parser(kind: .request, limits: HTTP1Limits(maxHeadLength: .max))
        #expect(p.limits.maxHeadLength == Int(Int32.max))
        p.limits = HTTP1Limits(maxHeadLength: Int(Int32.max) + 10)
        #expect(p.limits.maxHeadLength == Int(Int32.max))
        p.limits.maxHeadLength = 1000
        #expect(p.limits.maxHeadLength == 1000)
    }

    // MARK: Responses

    @Test(arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false, "abc", true),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false, "abc", true),
        ("HTTP/1.1 200 OK\r\n\r\nuntil close", false, "until close", true),       // close-delimited (needs finish)
        ("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", false, "", true),
        ("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, "", true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, "", true),                 // response to HEAD
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw", false, "raw", true),     // TE without chunked: close-delimited
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false, "abc", false),          // truncated
    ])
    func responseFraming(raw: String, toHead: Bool, body: String, complete: Bool) {
        let (o, d) = parseAllWays(Array(raw.utf8), kind: .response, responseToHead: toHead, finish: true)
        #expect(d.isEmpty)
        #expect(String(decoding: o.messages.first?.body ?? [], as: UTF8.self) == body)
        if complete {
            #expect(o.error == nil && o.messages.first?.complete == true, "\(o)")
        } else {
            #expect(o.error?.kind == .truncated, "\(o)")
        }
    }

    @Test func informationalThenFinal() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        let (o, d) = parseAllWays(Array(raw.utf8), kind: .response)
        #expect(d.isEmpty)
        #expect(o.messages.map { $0.startLine[1] } == ["100", "103", "200"])
        #expect(o.messages.last?.body == Array("ok".utf8))
    }

    @Test func responseRejections() {
        for raw in ["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", "HTTP/1.1 200 OK\r\nX: a\u{0}\r\n\r\n",
                    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"] {
            #expect(parseAllWays(Array(raw.utf8), kind: .response).whole.error != nil, "\(raw.debugDescription)")
        }
    }
}
