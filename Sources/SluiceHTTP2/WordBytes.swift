/// Tests on eight bytes at a time, for the field checks and copies of this module (SluiceHTTP1 has
/// its own: the modules do not import each other). Each answer is exact for the whole word.
enum WordBytes {
    static let ones: UInt64 = 0x0101_0101_0101_0101
    static let highs: UInt64 = 0x8080_8080_8080_8080

    /// Whether any byte of `w` is below `n` (n ≤ 0x80). A borrow can flag a byte above a true
    /// hit, never a word without one.
    @inline(__always)
    static func hasLess(_ w: UInt64, _ n: UInt8) -> Bool {
        (w &- ones &* UInt64(n)) & ~w & highs != 0
    }

    /// Whether any byte of `w` equals `c`.
    @inline(__always)
    static func hasByte(_ w: UInt64, _ c: UInt8) -> Bool {
        let x = w ^ (ones &* UInt64(c))
        return (x &- ones) & ~x & highs != 0
    }

    /// The high bit of each byte of `w` that is 'A'...'Z', nothing else: shifted right by 2, the
    /// bit that makes those bytes lower-case.
    @inline(__always)
    static func upperCase(_ w: UInt64) -> UInt64 {
        let low7 = w & 0x7F7F_7F7F_7F7F_7F7F
        let atLeastA = low7 &+ 0x3F3F_3F3F_3F3F_3F3F  // 0x80 + byte - 'A'
        let pastZ = low7 &+ 0x2525_2525_2525_2525  // 0x80 + byte - ('Z' + 1)
        return atLeastA & ~pastZ & ~w & highs
    }
}
