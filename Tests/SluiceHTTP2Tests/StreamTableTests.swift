import Testing

@testable import SluiceHTTP2

/// The session's stream table must behave as a dictionary from id to stream under any mix of
/// opens and closes, including ids that all want the same slot and tables that grow.
@Suite struct StreamTableTests {
    @Test func behavesAsADictionary() {
        var table = StreamTable()
        var reference: [Int32: HTTP2Stream] = [:]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        var nextID: Int32 = 1
        var live: [Int32] = []  // the ids in the table, in the order they came
        for step in 0..<40_000 {
            let r = next()
            // Ids: mostly new odd ones in order (as clients open them), some far apart with the
            // same low bits (the same home slot), some reused after their stream closed.
            let id: Int32
            switch r % 5 {
            case 0: id = Int32(truncatingIfNeeded: 1 + 2 * ((r >> 8) % 64) * 1024)
            case 1: id = live.isEmpty ? 1 : live[Int((r >> 16) % UInt64(live.count))]
            default:
                id = nextID
                nextID += 2
            }
            if (r >> 40) % 3 == 0 || step > 30_000 {
                #expect(table.removeValue(forKey: id) === reference.removeValue(forKey: id), "remove \(id)")
                live.removeAll { $0 == id }
            } else if (r >> 40) % 3 == 1 {
                let s = HTTP2Stream(id: id)
                table[id] = s
                if reference.updateValue(s, forKey: id) == nil { live.append(id) }
            } else {
                #expect(table[id] === reference[id], "lookup \(id)")
            }
            #expect(table.count == reference.count)
        }
        for (id, s) in reference { #expect(table[id] === s) }
        #expect(table[2] == nil)
    }
}
