import Testing

@testable import SluiceHTTP2

/// `HTTP2Session.isAcceptable` checks words at a time; it must answer exactly as the rule of
/// RFC 9113 §8.2.1 written byte by byte.
@Suite struct FieldAcceptanceTests {
    static func reference(_ name: [UInt8], _ value: [UInt8]) -> Bool {
        guard !name.isEmpty else { return false }
        for (i, b) in name.enumerated() {
            if b == UInt8(ascii: ":") && i == 0 { continue }
            if b >= 0x41 && b <= 0x5A { return false }
            if b <= 0x20 || b >= 0x7F || b == UInt8(ascii: ":") { return false }
        }
        if value.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) { return false }
        if let f = value.first, f == 0x20 || f == 0x09 { return false }
        if let l = value.last, l == 0x20 || l == 0x09 { return false }
        return true
    }

    static func check(_ name: [UInt8], _ value: [UInt8]) -> Bool {
        name.withUnsafeBytes { n in value.withUnsafeBytes { v in HTTP2Session.isAcceptable(name: n, value: v) } }
    }

    @Test func everyByteAtEveryPositionOfNamesAndValues() {
        for length in [1, 2, 7, 8, 9, 15, 16, 17, 24] {
            for position in 0..<length {
                for b in 0...255 {
                    var name = Array(repeating: UInt8(ascii: "x"), count: length)
                    name[position] = UInt8(b)
                    #expect(Self.check(name, Array("v".utf8)) == Self.reference(name, Array("v".utf8)), "name \(name)")
                    var value = Array(repeating: UInt8(ascii: "v"), count: length)
                    value[position] = UInt8(b)
                    #expect(Self.check(Array("x".utf8), value) == Self.reference(Array("x".utf8), value), "value \(value)")
                }
            }
        }
        #expect(Self.check(Array(":path".utf8), Array("/".utf8)))
        #expect(!Self.check(Array("x:y".utf8), []))
        #expect(!Self.check([], Array("v".utf8)))
        #expect(Self.check(Array("x".utf8), []))
    }
}
