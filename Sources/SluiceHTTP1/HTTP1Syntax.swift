/// The syntax rules of RFC 9110/9112 that other front ends (HTTP/2) must apply exactly as the
/// HTTP/1.1 parser does, so that what one front end refuses the other does not forward.
public enum HTTP1Syntax {
    /// `uri-host [ ":" port ]` with no userinfo, path or whitespace; nil when valid. `table` is
    /// `ByteClass.pointer`, passed in by a caller that already holds it.
    @inlinable
    public static func hostProblem(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> StaticString? {
        hostProblem(b, s, e, table: ByteClass.pointer)
    }

    @inlinable
    static func hostProblem(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int, table: UnsafePointer<UInt8>) -> StaticString? {
        if s == e { return "Empty Host" }
        if b[s] != 0x5B {
            // A name or an IPv4 address, then an optional port: the common case, in one pass
            // that gives the same answers as the general scan below. The loops only find where
            // the plain bytes end and the answer is worked out there once: with the answers
            // inside, the loop set up its return value on every byte (17 instructions a byte).
            var k = s
            while k < e {
                let c = b[k]
                if table[Int(c)] & ByteClass.host == 0 || c == 0x3A || c == 0x5B || c == 0x5D { break }
                k += 1
            }
            if k == e { return nil }
            if table[Int(b[k])] & ByteClass.host == 0 { return "Invalid character in Host" }
            if b[k] != 0x3A { return "Invalid Host" }
            let colon = k
            k += 1
            while k < e && b[k] &- 0x30 < 10 { k += 1 }
            if k < e {
                let c = b[k]
                if table[Int(c)] & ByteClass.host == 0 { return "Invalid character in Host" }
                if c == 0x5B || c == 0x5D || c == 0x3A { return "Invalid Host" }
                return "Invalid port in Host"
            }
            if colon == s { return "Empty Host" }
            if e - colon - 1 > 5 { return "Invalid port in Host" }
            return nil
        }
        return generalHostProblem(b, s, e)
    }

    /// Every form of Host, IP literals included; `hostProblem` answers the others itself, and a
    /// test holds the two to the same answers.
    @usableFromInline
    static func generalHostProblem(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> StaticString? {
        if s == e { return "Empty Host" }
        let table = ByteClass.pointer
        var colon = -1
        var inLiteral = false
        for k in s..<e {
            let c = b[k]
            if table[Int(c)] & ByteClass.host == 0 { return "Invalid character in Host" }
            if c == 0x5B {
                if k != s { return "Invalid Host" }
                inLiteral = true
            } else if c == 0x5D {
                if !inLiteral { return "Invalid Host" }
                inLiteral = false
            } else if c == 0x3A && !inLiteral {
                if colon >= 0 { return "Invalid Host" }
                colon = k
            } else if colon >= 0 && (c < 0x30 || c > 0x39) {
                return "Invalid port in Host"
            } else if inLiteral == false && b[s] == 0x5B && colon < 0 {
                return "Invalid Host"
            }
        }
        if inLiteral { return "Invalid Host" }
        if colon == s { return "Empty Host" }
        if colon >= 0 && e - colon - 1 > 5 { return "Invalid port in Host" }
        return nil
    }

    /// An origin-form target (`/path?query`): the bytes the request line allows, no fragment.
    @inlinable
    public static func originTargetProblem(_ b: UnsafeRawBufferPointer) -> StaticString? {
        guard b.first == 0x2F else { return "Invalid request target" }
        let table = ByteClass.pointer
        for c in b {
            if table[Int(c)] & ByteClass.target == 0 { return "Invalid character in request target" }
            if c == 0x23 { return "Fragment in request target" }
        }
        return nil
    }

    /// A method token (RFC 9110 §9.1).
    @inlinable
    public static func isToken(_ b: UnsafeRawBufferPointer) -> Bool {
        guard !b.isEmpty else { return false }
        let table = ByteClass.pointer
        for c in b where table[Int(c)] & ByteClass.token == 0 { return false }
        return true
    }
}
