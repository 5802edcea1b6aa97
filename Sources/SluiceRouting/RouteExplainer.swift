/// `sluice explain`: which host entry and path rule a URL meets, which others were considered,
/// and why they lost. String-based on purpose: it is the readable twin of the table's lookup.
public enum RouteExplainer {
    /// Whether a rule matches a (normalised) request path, by DESIGN.md's definitions.
    public static func matches(rule: String, type: PathType, path: String) -> Bool {
        if type == .exact { return rule == path }
        let r = rule.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        let p = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        let ruleSegs = Array(r.last == "" ? r.dropLast() : r[...])
        let pathSegs = Array(p)
        if ruleSegs.count > pathSegs.count { return false }
        for (a, b) in zip(ruleSegs, pathSegs) where a != b { return false }
        return true
    }

    public static func explain(url: String, table: RouteTable, fallback: String?) -> [String] {
        var rest = Substring(url)
        if let r = rest.range(of: "://") { rest = rest[r.upperBound...] }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = String(rest[..<slash])
        var target = String(rest[slash...])
        if target.isEmpty { target = "/" }
        var hostBytes = [UInt8](repeating: 0, count: 1024)
        let hn = Array(authority.utf8).withUnsafeBytes { a in
            hostBytes.withUnsafeMutableBytes { RequestNormalizer.host(a, into: $0) }
        } ?? 0
        let host = String(decoding: hostBytes[0..<hn], as: UTF8.self)
        let rawPath = String(target.prefix { $0 != "?" })
        var pathBytes = [UInt8](repeating: 0, count: rawPath.utf8.count + 8)
        let pn = Array(rawPath.utf8).withUnsafeBytes { a in pathBytes.withUnsafeMutableBytes { RequestNormalizer.path(a, into: $0) } }
        guard let pn else { return ["request: host \(host), path \(rawPath)", "result: 400 — the path climbs above the root"] }
        let path = String(decoding: pathBytes[0..<pn], as: UTF8.self)

        var out = ["request: host \(host.isEmpty ? "(none)" : host), path \(rawPath)" + (path != rawPath ? " (normalised: \(path))" : "")]
        let winner = table.lookup(host: host, path: path)
        var decided = false
        for entry in table.candidates(host: host) {
            out.append("host entry \(entry.pattern):")
            for r in entry.routes {
                let ok = matches(rule: r.path, type: r.pathType, path: path)
                var line = "  \(r.pathType.rawValue) \(r.path) → \(table.backends[r.backend].name)  [Ingress \(r.ingress), \(r.file):\(r.line)]"
                if !decided, let w = winner, w == r {
                    line += "  ← MATCH (longest matching path\(r.pathType == .exact ? ", Exact" : ""))"
                    decided = true
                } else if ok {
                    line += decided || winner != nil ? "  matches, but loses to a longer, Exact or older rule" : "  matches"
                } else {
                    line += "  does not match" + (r.pathType == .exact ? " (Exact is byte for byte)" : " (segments differ)")
                }
                out.append(line)
            }
        }
        if let w = winner {
            if w.host == nil && w.matchLength == 0 && w.ingress.contains("/") && table.defaultRoute >= 0 && table.routes[Int(table.defaultRoute)] == w {
                out.append("no rule matched: the default backend of Ingress \(w.ingress) serves it")
            }
            let b = table.backends[w.backend]
            if b.addresses.isEmpty {
                out.append("result: 503 — \(b.problem ?? "no ready endpoint")")
            } else {
                out.append("result: \(b.name) → " + b.addresses.map { "\($0.ip):\($0.port)" }.joined(separator: ", "))
            }
        } else if let fallback {
            out.append("result: no route; --default-backend \(fallback) serves it")
        } else {
            out.append("result: 404 — no rule for host \(host.isEmpty ? "(none)" : host) and path \(path), and no default backend")
        }
        return out
    }
}
