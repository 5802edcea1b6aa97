@testable import SluiceHTTP1
import Testing

/// The word-at-a-time scans and the one-pass Host check must answer exactly as the byte-by-byte
/// rules they shortcut. Deterministic pseudo-random inputs, many of them, plus every byte value at
/// every position of a word.
@Suite struct WordScanTests {
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    static func bytes(of w: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: w >> (8 * UInt64($0))) } }

    /// Words to try: random ones, and plain backgrounds with each byte value at each position.
    static func words() -> [UInt64] {
        var r = Random(state: 0x2545_F491_4F6C_DD1D)
        var all: [UInt64] = (0..<20_000).map { _ in r.next() }
        for background in [UInt64(0x6161_6161_6161_6161), 0x2020_2020_2020_2020, 0xFFFF_FFFF_FFFF_FFFF, 0x7E7E_7E7E_7E7E_7E7E] {
            for position in 0..<8 {
                for v in 0...255 {
                    let shift = UInt64(8 * position)
                    all.append(background & ~(0xFF << shift) | UInt64(v) << shift)
                }
            }
        }
        return all
    }

    @Test func wordTestsAgreeWithByteTests() {
        for w in Self.words() {
            let b = Self.bytes(of: w)
            #expect(SWAR.hasLess(w, 0x20) == b.contains { $0 < 0x20 }, "hasLess 0x20 \(b)")
            #expect(SWAR.hasLess(w, 0x21) == b.contains { $0 < 0x21 }, "hasLess 0x21 \(b)")
            #expect(SWAR.hasByte(w, 0x7F) == b.contains(0x7F), "hasByte 0x7F \(b)")
            #expect(SWAR.hasByte(w, 0x23) == b.contains(0x23), "hasByte 0x23 \(b)")
            #expect(SWAR.isPlainFieldValue(w) == b.allSatisfy { $0 >= 0x20 && $0 != 0x7F }, "field value \(b)")
            #expect(SWAR.isPlainTarget(w) == b.allSatisfy { $0 >= 0x21 && $0 <= 0x7E && $0 != 0x23 }, "target \(b)")
        }
    }

    @Test func sameTokenAgreesWithCaseInsensitiveComparison() {
        let names: [StaticString] = ["te", "host", "expect", "upgrade", "x-real-ip", "connection", "keep-alive", "x-request-id",
                                     "content-length", "x-forwarded-for", "x-forwarded-host", "transfer-encoding"]
        let tchar = Array("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        var r = Random(state: 0x9E37_79B9_7F4A_7C15)
        for name in names {
            let literal = Array(UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            var candidates: [[UInt8]] = []
            // The name in random case, the name with one byte swapped for each tchar, random tokens.
            for _ in 0..<200 { candidates.append(literal.map { r.next() & 1 == 0 ? $0 : Self.upper($0) }) }
            for i in literal.indices { for c in tchar { var v = literal; v[i] = c; candidates.append(v) } }
            for _ in 0..<500 { candidates.append(literal.map { _ in tchar[Int(r.next() % UInt64(tchar.count))] }) }
            for v in candidates {
                v.withUnsafeBytes { p in
                    #expect(sameToken(p.baseAddress!, name) == equalsLowercased(p, 0, p.count, name), "\(String(decoding: v, as: UTF8.self)) against \(name)")
                }
            }
        }
    }

    static func upper(_ c: UInt8) -> UInt8 { (c >= 0x61 && c <= 0x7A) ? c - 0x20 : c }

    @Test func oneScanHostCheckAgreesWithTheGeneralOne() {
        let alphabet = Array("aZ09.-_~%!$&'()*+,;=:[]@/ \t#?".utf8) + [0x00, 0x7F, 0x80, 0xFF]
        var r = Random(state: 0xD1B5_4A32_D192_ED03)
        var checked = 0
        for length in 1...12 {
            for _ in 0..<4_000 {
                var v = (0..<length).map { _ in alphabet[Int(r.next() % UInt64(alphabet.count))] }
                // Mostly plausible hosts with ports, so the port rules are reached often.
                if r.next() % 2 == 0 { v = Array("host".utf8) + [0x3A] + v.map { r.next() % 3 == 0 ? $0 : UInt8(0x30 + r.next() % 10) } }
                if v.first == 0x5B { continue }
                v.withUnsafeBytes { p in
                    let fast = HTTP1Syntax.hostProblem(p, 0, p.count).map { "\($0)" }
                    let general = HTTP1Syntax.generalHostProblem(p, 0, p.count).map { "\($0)" }
                    #expect(fast == general, "\(v)")
                }
                checked += 1
            }
        }
        #expect(checked > 20_000)
        for host in ["shop.local", "shop.local:8443", "10.0.0.1:80", "a:", ":80", "a:123456", "a:8a", "a]b", "a[b", "a:1:2", "a b"] {
            Array(host.utf8).withUnsafeBytes { p in
                #expect(HTTP1Syntax.hostProblem(p, 0, p.count).map { "\($0)" } == HTTP1Syntax.generalHostProblem(p, 0, p.count).map { "\($0)" }, "\(host)")
            }
        }
    }
}

/// The same rules seen through the parser: a byte of each kind at every position of values and
/// targets long enough to span several words, so that both the word scan and the byte scan meet it.
@Suite struct WordScanParserTests {
    static let special: [(byte: UInt8, allowedInValue: Bool, allowedInTarget: Bool)] = [
        (0x09, true, false), (0x20, true, false), (0x00, false, false), (0x1F, false, false), (0x7F, false, false),
        (0x80, true, false), (0xFF, true, false), (0x23, true, false), (0x7E, true, true), (0x21, true, true),
    ]

    @Test func fieldValuesAcrossWords() {
        for (byte, allowed, _) in Self.special {
            for length in [1, 3, 7, 8, 9, 15, 16, 17, 20] {
                for position in 0..<length {
                    var value = Array(repeating: UInt8(ascii: "v"), count: length)
                    value[position] = byte
                    for trailing in [[], [0x20], [0x09, 0x20, 0x09]] as [[UInt8]] {
                        let raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX-Long: ".utf8) + value + trailing + Array("\r\n\r\n".utf8)
                        let (o, d) = parseAllWays(raw, kind: .request)
                        #expect(d.isEmpty)
                        guard allowed else {
                            #expect(o.error?.kind == .malformed, "\(byte) at \(position) of \(length)")
                            continue
                        }
                        // Surrounding whitespace is not part of the value, wherever the last word ends.
                        var expected = value[...]
                        while let last = expected.last, last == 0x20 || last == 0x09 { expected.removeLast() }
                        while let first = expected.first, first == 0x20 || first == 0x09 { expected.removeFirst() }
                        #expect(o.error == nil, "\(byte) at \(position) of \(length)")
                        #expect(o.messages.first?.fields.last == ["X-Long", latin1IfNotUTF8(expected)], "\(byte) at \(position) of \(length)")
                    }
                }
            }
        }
    }

    @Test func requestTargetsAcrossWords() {
        for (byte, _, allowed) in Self.special where byte != 0x20 {
            for length in [2, 7, 8, 9, 16, 17, 20] {
                for position in 1..<length {
                    var target = Array(repeating: UInt8(ascii: "t"), count: length)
                    target[0] = UInt8(ascii: "/")
                    target[position] = byte
                    let raw = Array("GET ".utf8) + target + Array(" HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
                    let (o, d) = parseAllWays(raw, kind: .request)
                    #expect(d.isEmpty)
                    if allowed {
                        #expect(o.messages.first?.startLine == ["GET", String(decoding: target, as: UTF8.self), "1.1"], "\(byte) at \(position) of \(length)")
                    } else {
                        #expect(o.error?.kind == .malformed, "\(byte) at \(position) of \(length)")
                    }
                }
            }
        }
    }
}
