import CNGHTTP2

/// A response field section being built for nghttp2: names and values in one byte array, turned
/// into `nghttp2_nv` entries only for the call that submits them (nghttp2 copies them).
public struct HTTP2HeaderBlock {
    private var bytes: PackedBytes
    private var entries: [(name: Range<Int>, value: Range<Int>)] = []

    public init(capacity: Int = 256) {
        bytes = PackedBytes(capacity: capacity)
        entries.reserveCapacity(12)
    }

    public var count: Int { entries.count }

    /// Empties the block, keeping its capacity (a connection reuses one block per response).
    public mutating func removeAll() {
        bytes.removeAll()
        entries.removeAll(keepingCapacity: true)
    }

    /// The bytes the block holds room for (a reused block that grew large is not kept).
    public var capacity: Int { bytes.capacity }

    public mutating func add(_ name: StaticString, _ value: UnsafeRawBufferPointer) {
        let n = bytes.append(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        entries.append((n, bytes.append(value)))
    }

    public mutating func add(_ name: StaticString, _ value: String) {
        var v = value
        v.withUTF8 { add(name, UnsafeRawBufferPointer($0)) }
    }

    public mutating func add(_ name: StaticString, _ value: [UInt8]) {
        value.withUnsafeBytes { add(name, $0) }
    }

    /// Adds a field whose name arrived in any case: HTTP/2 names are lower-case.
    public mutating func add(lowercasing name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) {
        let n = bytes.append(lowercasing: name)
        entries.append((n, bytes.append(value)))
    }

    func withNV<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        // nghttp2 copies names and values (NGHTTP2_NV_FLAG_NONE) and never writes through them.
        bytes.withUnsafeBytes { b in
            let base = UnsafeMutablePointer(mutating: (b.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!).assumingMemoryBound(to: UInt8.self))
            // On the stack for the usual few dozen fields: no allocation per response.
            return withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(entries.count, 1)) { nv in
                for (i, e) in entries.enumerated() {
                    (nv.baseAddress! + i).initialize(to: nghttp2_nv(
                        name: base + e.name.lowerBound, value: base + e.value.lowerBound,
                        namelen: e.name.count, valuelen: e.value.count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
                }
                return body(UnsafePointer(nv.baseAddress!), entries.count)
            }
        }
    }
}
