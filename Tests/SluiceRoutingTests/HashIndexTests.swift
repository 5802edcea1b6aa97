@testable import SluiceRouting
import Testing

/// The routing table's hash index must answer as a map from hash to entries, newest first,
/// whatever the hashes share: full collisions, the same top bits, and numbering with gaps.
@Suite struct HashIndexTests {
    @Test func answersAsAMapFromHashToEntriesNewestFirst() {
        var index = HashIndex()
        var expected: [UInt64: [Int32]] = [:]
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        // 5,000 entries with gaps in their numbering; a third share one of a few hashes, and
        // some differ from another only in their low bits (the same bucket, not the same hash).
        var entry: Int32 = 0
        for k in 0..<5_000 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            let hash: UInt64
            switch k % 3 {
            case 0: hash = UInt64(k % 7)
            case 1: hash = state & ~0xFF | UInt64(k % 5)
            default: hash = state
            }
            entry += Int32(1 + k % 3)
            index.insert(hash, entry)
            expected[hash, default: []].insert(entry, at: 0)
        }
        for (hash, entries) in expected {
            var found: [Int32] = []
            var i = index.first(hash)
            while i >= 0 {
                found.append(i)
                i = index.next(i)
            }
            #expect(found == entries, "hash \(hash)")
        }
        #expect(index.first(0xDEAD_BEEF_0000_0001) == -1)
        #expect(HashIndex().first(42) == -1)
    }
}
