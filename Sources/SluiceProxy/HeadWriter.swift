import NIOCore

/// Writes a head straight into a buffer's free space. A head is a few dozen small pieces, and
/// each `ByteBuffer` write is a capacity check, a uniqueness check and an exclusivity check
/// (NIO's, not ours to turn off); here the whole head costs one of each, and a piece is a
/// compare and a memcpy.
///
/// The writer never writes past the space it was given: a piece that does not fit marks the
/// head as overflowed and nothing more is written, and `write(into:room:_:)` starts again with
/// twice the room. Callers give a room that fits the usual head, so that is rare.
struct HeadWriter {
    private let base: UnsafeMutableRawPointer?
    private let capacity: Int
    /// Bytes written, or more than `capacity` once something did not fit.
    private(set) var count = 0

    init(_ space: UnsafeMutableRawBufferPointer) {
        base = space.baseAddress
        capacity = space.count
    }

    var overflowed: Bool { count > capacity }

    /// Writes what `body` writes at the end of `out`, in one write. `room` is the space to
    /// reserve first; the body runs again with more if it did not fit (so it may run twice).
    static func write(into out: inout ByteBuffer, room: Int, _ body: (inout HeadWriter) -> Void) {
        var room = max(room, 64)
        while true {
            var fitted = false
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { space in
                var w = HeadWriter(space)
                body(&w)
                fitted = !w.overflowed
                return fitted ? w.count : 0
            }
            if fitted { return }
            room *= 2
        }
    }

    // MARK: - Pieces

    @inline(__always)
    private mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer? {
        guard n <= capacity - count, let base else {
            count = capacity + 1
            return nil
        }
        defer { count += n }
        return base + count
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, bytes.count > 0, let dst = reserve(bytes.count) else { return }
        dst.copyMemory(from: src, byteCount: bytes.count)
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) {
        write(UnsafeRawBufferPointer(rebasing: bytes[range]))
    }

    mutating func write(_ s: StaticString) {
        guard s.utf8CodeUnitCount > 0, let dst = reserve(s.utf8CodeUnitCount) else { return }
        dst.copyMemory(from: s.utf8Start, byteCount: s.utf8CodeUnitCount)
    }

    mutating func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    mutating func write(byte: UInt8) {
        reserve(1)?.storeBytes(of: byte, as: UInt8.self)
    }

    // MARK: - Numbers

    static let hexDigits: StaticString = "0123456789abcdef"

    /// Lower-case hex without leading zeros (a chunk size).
    mutating func writeHex(_ v: Int) {
        var digits = 0
        var x = v
        repeat { digits += 1; x >>= 4 } while x > 0
        guard let dst = reserve(digits) else { return }
        let hex = Self.hexDigits.utf8Start
        for k in 0..<digits { dst.storeBytes(of: hex[(v >> (4 * (digits - 1 - k))) & 0xF], toByteOffset: k, as: UInt8.self) }
    }

    /// Exactly 16 hex digits (half a request id), eight at a time: every request writes two of
    /// these, and a digit at a time cost about 95 instructions each.
    mutating func writeHex64(_ v: UInt64) {
        guard let dst = reserve(16) else { return }
        dst.storeBytes(of: Self.hexDigits8(UInt32(truncatingIfNeeded: v >> 32)).bigEndian, as: UInt64.self)
        dst.storeBytes(of: Self.hexDigits8(UInt32(truncatingIfNeeded: v)).bigEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// The eight lower-case hex digits of `x`, most significant in the word's top byte: each
    /// nibble spread into a byte of its own, then `'0' + n`, plus `'a' - '0' - 10` where n > 9.
    @inline(__always)
    static func hexDigits8(_ x: UInt32) -> UInt64 {
        var w = UInt64(x)
        w = (w | (w << 16)) & 0x0000_FFFF_0000_FFFF
        w = (w | (w << 8)) & 0x00FF_00FF_00FF_00FF
        w = (w | (w << 4)) & 0x0F0F_0F0F_0F0F_0F0F
        let aboveNine = ((w &+ 0x0606_0606_0606_0606) & 0x1010_1010_1010_1010) >> 4
        return w &+ 0x3030_3030_3030_3030 &+ aboveNine &* 0x27
    }

    /// A non-negative decimal.
    mutating func writeDecimal(_ value: Int64) {
        let v = max(value, 0)
        var digits = 0
        var x = v
        repeat { digits += 1; x /= 10 } while x > 0
        guard let dst = reserve(digits) else { return }
        x = v
        for k in stride(from: digits - 1, through: 0, by: -1) {
            dst.storeBytes(of: UInt8(truncatingIfNeeded: x % 10) &+ 0x30, toByteOffset: k, as: UInt8.self)
            x /= 10
        }
    }
}
