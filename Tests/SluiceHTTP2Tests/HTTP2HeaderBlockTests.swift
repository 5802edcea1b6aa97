import CNGHTTP2
import Testing

@testable import SluiceHTTP2

/// HTTP/2 field names must be lower-case (RFC 9113 §8.2.1); names from an HTTP/1.1 upstream
/// arrive in any case and only ASCII letters change.
@Suite struct HTTP2HeaderBlockTests {
    @Test func namesAreLowerCasedAndValuesKeptAsTheyCame() {
        var block = HTTP2HeaderBlock(capacity: 4)  // small, so that adding grows it
        let fields: [(String, String)] = [("Content-Type", "Text/Plain"), ("X-Mixed-CASE-09_~!", "AbC"), ("etag", "\"W/Xy\""),
                                          ("ZZ@[`{", "v")]
        for (name, value) in fields {
            Array(name.utf8).withUnsafeBytes { n in Array(value.utf8).withUnsafeBytes { v in block.add(lowercasing: n, v) } }
        }
        block.add(":status", "200")
        let seen: [(String, String)] = block.withNV { nv, count in
            (0..<count).map { i in
                let e = nv[i]
                return (String(decoding: UnsafeBufferPointer(start: e.name, count: e.namelen), as: UTF8.self),
                        String(decoding: UnsafeBufferPointer(start: e.value, count: e.valuelen), as: UTF8.self))
            }
        }
        #expect(seen.map(\.0) == ["content-type", "x-mixed-case-09_~!", "etag", "zz@[`{", ":status"])
        #expect(seen.map(\.1) == ["Text/Plain", "AbC", "\"W/Xy\"", "v", "200"])
    }
}
