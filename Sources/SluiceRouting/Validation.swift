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

    /// A structural check of PEM text (OpenSSL parses it for real when TLS is served).
    public static func pemError(certificate: String, key: String) -> String? {
        if !certificate.contains("-----BEGIN CERTIFICATE-----") || !certificate.contains("-----END CERTIFICATE-----") {
            return "tls.crt is not a PEM certificate"
        }
        if !(key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----")) {
            return "tls.key is not a PEM private key"
        }
        return nil
    }
}
