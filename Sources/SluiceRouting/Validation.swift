import Foundation

/// The API server's validation rules for the fields Sluice reads (a file-based controller has no
/// API server in front of it, so it checks them itself).
public enum Validation {
    static func isAlnum(_ c: Character) -> Bool {
        c.isASCII && (c.isLowercase || c.isNumber)
    }

    /// RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
    public static func isDNS1123Label(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 63, let f = s.first, let l = s.last, isAlnum(f), isAlnum(l) else { return false }
        return s.allSatisfy { isAlnum($0) || $0 == "-" }
    }

    /// RFC 1035 label (Service names): as 1123 but starting with a letter.
    public static func isDNS1035Label(_ s: String) -> Bool {
        guard isDNS1123Label(s), let f = s.first, f.isLetter else { return false }
        return true
    }

    public static func isDNS1123Subdomain(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNS1123Label(String($0)) }
    }

    public static func isIPAddress(_ s: String) -> Bool {
        isIPv4(s) || (s.contains(":") && s.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." })
    }

    static func isIPv4(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isNumber) && Int(p)! <= 255 }
    }

    /// Why `host` is not allowed in an Ingress rule or TLS entry, or nil.
    public static func hostError(_ host: String) -> String? {
        if host.isEmpty { return "must not be empty (omit host to match every host)" }
        if host == "*" { return "a bare '*' is not allowed; use '*.example.com'" }
        if isIPAddress(host) || (host.hasPrefix("[") && host.hasSuffix("]")) { return "must be a DNS name, not an IP address" }
        if host.contains(":") { return "must not contain a port" }
        if host != host.lowercased() { return "must be lower case" }
        var name = Substring(host)
        if host.hasPrefix("*.") {
            name = host.dropFirst(2)
        } else if host.contains("*") {
            return "a wildcard must be the whole first label, as in '*.example.com'"
        }
        if name.contains("*") { return "a wildcard must be the whole first label, as in '*.example.com'" }
        if !isDNS1123Subdomain(String(name)) {
            return "'\(host)' is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.')"
        }
        return nil
    }

    /// Why `path` is not allowed for `type`, or nil.
    public static func pathError(_ path: String, type: PathType) -> String? {
        if path.isEmpty {
            return type == .implementationSpecific ? nil : "required for pathType \(type.rawValue)"
        }
        if !path.hasPrefix("/") { return "must be an absolute path (start with '/')" }
        for c in path.unicodeScalars where c.value <= 0x20 || c.value >= 0x7F || c == "?" || c == "#" {
            return "must not contain spaces, control characters, '?' or '#'"
        }
        if type == .implementationSpecific { return nil }
        for bad in ["//", "/./", "/../", "%2f", "%2F"] where path.contains(bad) {
            return "must not contain '\(bad)'"
        }
        if path.hasSuffix("/..") || path.hasSuffix("/.") { return "must not end with '/..' or '/.'" }
        return nil
    }

    /// Parses the PEM blocks far enough to know they hold DER (base64 that decodes to one whole
    /// ASN.1 SEQUENCE each). OpenSSL checks the contents, and that the key fits, when TLS is served.
    public static func pemError(certificate: String, key: String) -> String? {
        let certs = pemBlocks(certificate)
        if certs.isEmpty || !certs.allSatisfy({ $0.label == "CERTIFICATE" }) {
            return "tls.crt is not a PEM certificate (BEGIN CERTIFICATE blocks expected)"
        }
        for (i, c) in certs.enumerated() where !isDERSequence(c.der) {
            return "tls.crt: certificate \(i + 1) is not valid base64 DER"
        }
        let keys = pemBlocks(key)
        guard let k = keys.first, k.label.hasSuffix("PRIVATE KEY") else {
            return "tls.key is not a PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY expected)"
        }
        if !isDERSequence(k.der) { return "tls.key is not valid base64 DER" }
        return nil
    }

    /// `-----BEGIN X-----` … `-----END X-----` blocks, base64-decoded (empty DER when it is not base64).
    static func pemBlocks(_ text: String) -> [(label: String, der: [UInt8])] {
        var out: [(String, [UInt8])] = []
        var label: String? = nil
        var body = ""
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("-----BEGIN ") && line.hasSuffix("-----") {
                label = String(line.dropFirst(11).dropLast(5))
                body = ""
            } else if line.hasPrefix("-----END "), let l = label {
                out.append((l, Data(base64Encoded: body).map { [UInt8]($0) } ?? []))
                label = nil
            } else if label != nil, !line.contains(":") {
                body += line
            }
        }
        return out
    }

    /// One DER SEQUENCE whose length covers the bytes exactly.
    static func isDERSequence(_ d: [UInt8]) -> Bool {
        guard d.count >= 2, d[0] == 0x30 else { return false }
        var len = Int(d[1])
        var header = 2
        if len & 0x80 != 0 {
            let n = len & 0x7F
            guard n >= 1, n <= 4, d.count >= 2 + n else { return false }
            len = 0
            for k in 0..<n { len = len << 8 | Int(d[2 + k]) }
            header = 2 + n
        }
        return header + len == d.count
    }
}
