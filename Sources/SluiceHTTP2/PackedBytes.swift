/// Byte strings appended back to back, for field sections: an array kept at its full length
/// (zero-filled once) with the bytes in use counted beside it, so that an append is one
/// uniqueness check and one copy. `Array.append(contentsOf:)` of a raw buffer cost about 100
/// instructions per call for the 10–20-byte names and values of a request or response head
/// (callgrind, benchmarks/RESULTS.md, session 8).
public struct PackedBytes: Sendable {
    @usableFromInline var storage: [UInt8]
    /// Bytes in use, from the start.
    public private(set) var count = 0

    /// Capacity 0 allocates nothing (the empty array is shared); the first append makes room.
    public init(capacity: Int) {
        storage = capacity > 0 ? Array(repeating: 0, count: max(capacity, 16)) : []
    }

    /// Bytes held without growing.
    public var capacity: Int { storage.count }

    /// Forgets the bytes, keeping the room.
    public mutating func removeAll() { count = 0 }

    /// Appends `bytes`; returns where they are.
    @discardableResult
    public mutating func append(_ bytes: UnsafeRawBufferPointer) -> Range<Int> {
        let start = reserve(bytes.count)
        if bytes.count > 0 {
            storage.withUnsafeMutableBytes { p in
                (p.baseAddress! + start).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            }
        }
        count = start + bytes.count
        return start..<count
    }

    /// Appends `bytes` with ASCII letters made lower-case (HTTP/2 field names); returns where.
    @discardableResult
    public mutating func append(lowercasing bytes: UnsafeRawBufferPointer) -> Range<Int> {
        let start = reserve(bytes.count)
        let n = bytes.count
        if n > 0 {
            storage.withUnsafeMutableBytes { p in
                let src = bytes.baseAddress!
                let dst = p.baseAddress! + start
                var i = 0
                while i + 8 <= n {
                    let w = src.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    dst.storeBytes(of: w | (WordBytes.upperCase(w) >> 2), toByteOffset: i, as: UInt64.self)
                    i += 8
                }
                while i < n {
                    let b = src.load(fromByteOffset: i, as: UInt8.self)
                    dst.storeBytes(of: b &- 0x41 < 26 ? b | 0x20 : b, toByteOffset: i, as: UInt8.self)
                    i += 1
                }
            }
        }
        count = start + n
        return start..<count
    }

    /// Makes room for `n` more bytes; returns where they go.
    private mutating func reserve(_ n: Int) -> Int {
        if count + n > storage.count {
            storage.append(contentsOf: repeatElement(0, count: max(n, storage.count)))
        }
        return count
    }

    /// The bytes in use. Inlinable: called from SluiceProxy several times per stream, and
    /// unspecialised it went through the generic `Array.withUnsafeBytes` of the standard library.
    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }

    /// Bytes in use at `range`.
    public subscript(range: Range<Int>) -> ArraySlice<UInt8> {
        precondition(range.upperBound <= count, "beyond the bytes in use")
        return storage[range]
    }
}
