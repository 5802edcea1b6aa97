/// Turns a request's Host and target into the bytes the route table matches: lower-case host
/// without port or trailing dot; path without query, dot-segments removed, unreserved
/// percent-escapes decoded, `%2F` kept encoded (so an encoded slash never splits a segment).
/// Output goes into caller-owned scratch memory: nothing is allocated per request.
public enum RequestNormalizer {
    /// Writes the normalised host into `out` and returns its length, or nil if it does not fit.
    @inlinable
    public static func host(_ h: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int? {
        var end = h.count
        if end > 0 && h[0] == UInt8(ascii: "[") {
            // IP literal: keep up to the bracket.
            if let close = h.firstIndex(of: UInt8(ascii: "]")) { end = close + 1 }
        } else if let colon = h.firstIndex(of: UInt8(ascii: ":")) {
            end = colon
        }
        if end > 0 && h[end - 1] == UInt8(ascii: ".") { end -= 1 }
        guard end <= out.count else { return nil }
        for i in 0..<end {
            let c = h[i]
            out[i] = (c >= 0x41 && c <= 0x5A) ? c | 0x20 : c
        }
        return end
    }

    /// Whether the path needs rewriting (a dot-segment or a percent-escape); most do not.
    @inlinable
    public static func needsNormalisation(_ p: UnsafeRawBufferPointer) -> Bool {
        var prevSlash = false
        for c in p {
            if c == UInt8(ascii: "%") { return true }
            if c == UInt8(ascii: ".") && prevSlash { return true }
            prevSlash = c == UInt8(ascii: "/")
        }
        return false
    }

    /// The length of the path part of an origin-form target (up to `?`).
    @inlinable
    public static func pathLength(_ target: UnsafeRawBufferPointer) -> Int {
        target.firstIndex(of: UInt8(ascii: "?")) ?? target.count
    }

    /// Writes the normalised path of `path` (no query) into `out`; returns its length, or nil when
    /// it does not fit or climbs above the root.
    public static func path(_ path: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int? {
        // Pass 1: decode unreserved escapes (RFC 3986 §6.2.2.2) into out.
        var n = 0
        var i = 0
        let count = path.count
        guard count <= out.count else { return nil }
        while i < count {
            var c = path[i]
            if c == UInt8(ascii: "%"), i + 2 < count, let hi = hexValue(path[i + 1]), let lo = hexValue(path[i + 2]) {
                let v = hi << 4 | lo
                if isUnreserved(v) {
                    c = v
                    i += 3
                    out[n] = c
                    n += 1
                    continue
                }
                // Kept encoded, upper-cased hex (so %2f and %2F compare equal).
                out[n] = UInt8(ascii: "%")
                out[n + 1] = upperHex(hi)
                out[n + 2] = upperHex(lo)
                n += 3
                i += 3
                continue
            }
            out[n] = c
            n += 1
            i += 1
        }
        // Pass 2: remove dot-segments in place (RFC 3986 §5.2.4), segment by segment.
        var w = 0
        var r = 0
        while r < n {
            // At a '/' (or the start): look at the segment that follows.
            var s = r
            if out[s] == UInt8(ascii: "/") { s += 1 }
            var e = s
            while e < n && out[e] != UInt8(ascii: "/") { e += 1 }
            let len = e - s
            if len == 1 && out[s] == UInt8(ascii: ".") {
                r = e
                if r >= n { out[w] = UInt8(ascii: "/"); w += 1 }
                continue
            }
            if len == 2 && out[s] == UInt8(ascii: ".") && out[s + 1] == UInt8(ascii: ".") {
                // Drop the last written segment.
                if w == 0 { return nil }
                while w > 0 && out[w - 1] != UInt8(ascii: "/") { w -= 1 }
                if w > 0 { w -= 1 }
                r = e
                if r >= n { out[w] = UInt8(ascii: "/"); w += 1 }
                continue
            }
            // Copy "/segment".
            for k in r..<e {
                out[w] = out[k]
                w += 1
            }
            r = e
        }
        if w == 0 {
            out[0] = UInt8(ascii: "/")
            w = 1
        }
        return w
    }

    @inlinable
    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    @inlinable
    static func upperHex(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x41 + v - 10 }

    @inlinable
    static func isUnreserved(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
            || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "~")
    }
}
