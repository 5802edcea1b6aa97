/// A session's open streams by id: open addressing with linear probing on the id's low bits.
/// Client stream ids are odd and increasing, so streams opened one after another take slots
/// one after another. A `Dictionary` hashed every id with SipHash: about six lookups per
/// request at ~100 instructions each (callgrind, benchmarks/RESULTS.md, session 8).
struct StreamTable {
    /// 0 marks a free slot (stream 0 is the connection, never a stream here).
    private var keys: [Int32]
    private var values: [HTTP2Stream?]
    private(set) var count = 0

    init(capacity: Int = 16) {
        var c = 16
        while c < capacity { c *= 2 }
        keys = Array(repeating: 0, count: c)
        values = Array(repeating: nil, count: c)
    }

    private var mask: Int { keys.count - 1 }

    private func home(_ id: Int32) -> Int { Int(UInt32(bitPattern: id) >> 1) & mask }

    /// The slot of `id`, or of the free slot where it would go.
    private func slot(_ id: Int32) -> Int {
        var i = home(id)
        while keys[i] != 0 && keys[i] != id { i = (i + 1) & mask }
        return i
    }

    subscript(id: Int32) -> HTTP2Stream? {
        get {
            let i = slot(id)
            return keys[i] == id ? values[i] : nil
        }
        set {
            guard let newValue else {
                removeValue(forKey: id)
                return
            }
            precondition(id != 0, "stream 0 is the connection")
            var i = slot(id)
            if keys[i] != id {
                if (count + 1) * 2 > keys.count {
                    grow()
                    i = slot(id)
                }
                keys[i] = id
                count += 1
            }
            values[i] = newValue
        }
    }

    @discardableResult
    mutating func removeValue(forKey id: Int32) -> HTTP2Stream? {
        var i = slot(id)
        guard keys[i] == id else { return nil }
        let removed = values[i]
        keys[i] = 0
        values[i] = nil
        count -= 1
        // Backward shift: move up every entry after the hole that may no longer be reached.
        var j = i
        while true {
            j = (j + 1) & mask
            if keys[j] == 0 { break }
            let h = home(keys[j])
            // The entry at j can stay when its home lies cyclically in (i, j].
            let stays = i <= j ? (h > i && h <= j) : (h > i || h <= j)
            if !stays {
                keys[i] = keys[j]
                values[i] = values[j]
                keys[j] = 0
                values[j] = nil
                i = j
            }
        }
        return removed
    }

    private mutating func grow() {
        let oldKeys = keys
        let oldValues = values
        keys = Array(repeating: 0, count: oldKeys.count * 2)
        values = Array(repeating: nil, count: oldKeys.count * 2)
        for (k, v) in zip(oldKeys, oldValues) where k != 0 {
            let i = slot(k)
            keys[i] = k
            values[i] = v
        }
    }
}
