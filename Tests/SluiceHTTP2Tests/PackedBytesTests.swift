import SluiceHTTP2
import Testing

@Suite struct PackedBytesTests {
    @Test func appendsBackToBackAndGrows() {
        var packed = PackedBytes(capacity: 0)
        var expected: [UInt8] = []
        var ranges: [Range<Int>] = []
        for i in 0..<200 {
            let piece = (0..<(i % 37)).map { UInt8(truncatingIfNeeded: i &* 31 &+ $0) }
            ranges.append(piece.withUnsafeBytes { packed.append($0) })
            expected += piece
        }
        #expect(packed.count == expected.count)
        #expect(packed.capacity >= expected.count)
        packed.withUnsafeBytes { #expect(Array($0) == expected) }
        var offset = 0
        for (i, r) in ranges.enumerated() {
            #expect(r == offset..<(offset + i % 37))
            #expect(Array(packed[r]) == Array(expected[r]))
            offset = r.upperBound
        }
    }

    @Test func lowerCasesOnlyASCIILetters() {
        var packed = PackedBytes(capacity: 4)
        let all = (0...255).map { UInt8($0) }
        let r = all.withUnsafeBytes { packed.append(lowercasing: $0) }
        #expect(Array(packed[r]) == all.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 })
        // Every start and length around the eight-byte steps, over bytes next to the letters.
        let edges: [UInt8] = [0x00, 0x40, 0x41, 0x42, 0x59, 0x5A, 0x5B, 0x60, 0x61, 0x7A, 0x7B, 0x7F, 0x80, 0xC1, 0xDA, 0xFF]
        for offset in 0..<8 {
            for length in 0..<40 {
                let input = (0..<(offset + length)).map { edges[($0 &* 7 &+ length) % edges.count] }
                let r = input.withUnsafeBytes { packed.append(lowercasing: UnsafeRawBufferPointer(rebasing: $0[offset...])) }
                #expect(Array(packed[r]) == input[offset...].map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }, "\(offset) \(length)")
            }
        }
    }

    @Test func removeAllKeepsRoomAndForgetsBytes() {
        var packed = PackedBytes(capacity: 64)
        Array("hello".utf8).withUnsafeBytes { _ = packed.append($0) }
        let room = packed.capacity
        packed.removeAll()
        #expect(packed.count == 0)
        #expect(packed.capacity == room)
        packed.withUnsafeBytes { #expect($0.isEmpty) }
        let r = Array("x".utf8).withUnsafeBytes { packed.append($0) }
        #expect(r == 0..<1)
        // A copy is a value: appending to it leaves the original alone.
        var copy = packed
        Array("yz".utf8).withUnsafeBytes { _ = copy.append($0) }
        #expect(packed.count == 1)
        #expect(copy.count == 3)
        packed.withUnsafeBytes { #expect(Array($0) == Array("x".utf8)) }
    }
}
