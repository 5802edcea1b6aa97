// MARK: - Byte classes of RFC 9110 / RFC 9112

/// Character classes as bit flags in one 256-entry table, so that every grammar check on the hot
/// path is one load and one AND instead of a chain of comparisons.
@usableFromInline
enum ByteClass {
    /// tchar: field names, methods, transfer codings, chunk extension names.
    @usableFromInline static let token: UInt8 = 1 << 0
    /// field-vchar / SP / HTAB: what may appear inside a field value (no CR, LF, NUL or other CTLs).
    @usableFromInline static let fieldValue: UInt8 = 1 << 1
    /// What a request-target may contain: visible ASCII only (no space, no control, no obs-text).
    @usableFromInline static let target: UInt8 = 1 << 2
    /// Hex digits of a chunk size.
    @usableFromInline static let hex: UInt8 = 1 << 3
    /// Decimal digits.
    @usableFromInline static let digit: UInt8 = 1 << 4
    /// qdtext of a quoted-string (chunk extension values).
    @usableFromInline static let qdtext: UInt8 = 1 << 5
    /// reason-phrase bytes: HTAB / SP / VCHAR / obs-text.
    @usableFromInline static let reason: UInt8 = 1 << 6
    /// Bytes allowed in a Host field: reg-name, IP-literal brackets, port colon.
    @usableFromInline static let host: UInt8 = 1 << 7

    /// The table, allocated once and never freed, so the scanners index a raw pointer.
    @usableFromInline nonisolated(unsafe) static let pointer: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        p.initialize(from: table, count: 256)
        return UnsafePointer(p)
    }()

    /// The table's pointer, for a type to hold once (it has no state to share, only a constant).
    @usableFromInline
    struct Table: @unchecked Sendable {
        @usableFromInline let pointer: UnsafePointer<UInt8>
        @inlinable init() { pointer = ByteClass.pointer }
    }

    @usableFromInline static let table: [UInt8] = {
        var t = [UInt8](repeating: 0, count: 256)
        let tokenExtras = Array("!#$%&'*+-.^_`|~".utf8)
        for b in 0..<256 {
            let c = UInt8(b)
            var f: UInt8 = 0
            let isAlpha = (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
            let isDigit = c >= 0x30 && c <= 0x39
            if isAlpha || isDigit || tokenExtras.contains(c) { f |= token }
            if (c >= 0x21 && c <= 0x7E) || c >= 0x80 || c == 0x20 || c == 0x09 { f |= fieldValue; f |= reason }
            if c >= 0x21 && c <= 0x7E { f |= target }
            if isDigit || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66) { f |= hex }
            if isDigit { f |= digit }
            if c == 0x09 || c == 0x20 || c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E) || c >= 0x80 {
                f |= qdtext
            }
            // reg-name = unreserved / pct-encoded / sub-delims; plus ":" for the port and "[]" for IP literals.
            if isAlpha || isDigit || Array("-._~%!$&'()*+,;=:[]".utf8).contains(c) { f |= host }
            t[b] = f
        }
        return t
    }()
}

// MARK: - Eight bytes at a time

/// Word-at-a-time tests for the long runs of the head (field values, request targets): one load
/// and a few ALU operations per eight bytes instead of a table lookup per byte. They only say
/// whether a word is certainly plain; the caller rescans any other word byte by byte, so errors
/// are found and named exactly as before.
@usableFromInline
enum SWAR {
    @usableFromInline static let ones: UInt64 = 0x0101_0101_0101_0101
    @usableFromInline static let highs: UInt64 = 0x8080_8080_8080_8080

    /// Whether any byte of `w` is below `n` (n ≤ 0x80). A borrow can flag a byte above a true
    /// hit, never a word without one, so the answer is exact.
    @inlinable @inline(__always)
    static func hasLess(_ w: UInt64, _ n: UInt8) -> Bool {
        (w &- ones &* UInt64(n)) & ~w & highs != 0
    }

    /// Whether any byte of `w` equals `c`.
    @inlinable @inline(__always)
    static func hasByte(_ w: UInt64, _ c: UInt8) -> Bool {
        let x = w ^ (ones &* UInt64(c))
        return (x &- ones) & ~x & highs != 0
    }

    /// No byte of `w` can end or spoil a field value: no control character other than HTAB, no
    /// DEL. A word holding an HTAB is not plain either (the byte scan accepts it).
    @inlinable @inline(__always)
    static func isPlainFieldValue(_ w: UInt64) -> Bool {
        !hasLess(w, 0x20) && !hasByte(w, 0x7F)
    }

    /// Every byte of `w` is visible ASCII other than "#": request-target bytes that need no look.
    @inlinable @inline(__always)
    static func isPlainTarget(_ w: UInt64) -> Bool {
        w & highs == 0 && !hasLess(w, 0x21) && !hasByte(w, 0x7F) && !hasByte(w, 0x23)
    }

    @inlinable @inline(__always)
    static func word(_ base: UnsafeRawPointer, _ i: Int) -> UInt64 {
        UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
    }

    /// The end of the run of `[start, end)` that `plain` accepts eight bytes at a time: `end`
    /// when the run is all of it, else where a byte-by-byte scan must take over. (Testing the last
    /// few bytes as one masked word too was tried: it cost more instructions than it saved.)
    @inlinable @inline(__always)
    static func plainPrefix(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ plain: (UInt64) -> Bool) -> Int {
        guard let base = b.baseAddress else { return start }
        var i = start
        while i + 8 <= end && plain(word(base, i)) { i += 8 }
        return i
    }
}

/// Compares a token (bytes already checked to be tchar) with a lower-case literal of the same
/// length made of letters, digits and "-". Setting bit 0x20 lower-cases a letter and leaves a
/// digit or "-" as it is, and no other tchar becomes one of those, so one OR per eight bytes
/// compares exactly.
@inlinable @inline(__always)
func sameToken(_ p: UnsafeRawPointer, _ literal: StaticString) -> Bool {
    let n = literal.utf8CodeUnitCount
    let l = UnsafeRawPointer(literal.utf8Start)
    var k = 0
    while k + 8 <= n {
        let word = p.loadUnaligned(fromByteOffset: k, as: UInt64.self) | 0x2020_2020_2020_2020
        if word != l.loadUnaligned(fromByteOffset: k, as: UInt64.self) { return false }
        k += 8
    }
    while k < n {
        if p.load(fromByteOffset: k, as: UInt8.self) | 0x20 != l.load(fromByteOffset: k, as: UInt8.self) { return false }
        k += 1
    }
    return true
}

/// `sameToken` for the non-empty token at `[s, e)` of `b`, of any length.
@inlinable @inline(__always)
func tokenIs(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int, _ literal: StaticString) -> Bool {
    e - s == literal.utf8CodeUnitCount && sameToken(b.baseAddress! + s, literal)
}

@inlinable
func asciiLower(_ b: UInt8) -> UInt8 {
    (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
}

/// Compares bytes against a lower-case ASCII literal, ignoring the case of the input.
@inlinable
func equalsLowercased(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ literal: StaticString) -> Bool {
    let n = end - start
    guard n == literal.utf8CodeUnitCount else { return false }
    let l = literal.utf8Start
    var i = 0
    while i < n {
        if asciiLower(p[start + i]) != l[i] { return false }
        i += 1
    }
    return true
}
