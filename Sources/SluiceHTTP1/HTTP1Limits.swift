/// Size limits a parser enforces while reading a head. Defaults are DESIGN.md's.
public struct HTTP1Limits: Sendable, Equatable {
    /// The longest request line (414) or field line (431), CRLF excluded.
    public var maxLineLength: Int
    /// The longest head, start line to the empty line inclusive (431).
    public var maxHeadLength: Int
    /// The most field lines in a head or a trailer section (431).
    public var maxFieldCount: Int

    public init(maxLineLength: Int = 16 * 1024, maxHeadLength: Int = 64 * 1024, maxFieldCount: Int = 100) {
        self.maxLineLength = maxLineLength
        self.maxHeadLength = maxHeadLength
        self.maxFieldCount = maxFieldCount
    }

    public static let `default` = HTTP1Limits()
}
