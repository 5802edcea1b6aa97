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
