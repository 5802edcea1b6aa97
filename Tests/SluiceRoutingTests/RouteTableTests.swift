import SluiceRouting
import Testing

// MARK: - Manifest builders (real YAML through the real loader)

/// A Service `name` with one ready endpoint whose port tells which service answered.
func service(_ name: String, port: Int, namespace: String = "default") -> String {
    """
    apiVersion: v1
    kind: Service
    metadata: {name: \(name), namespace: \(namespace)}
    spec:
      ports: [{name: http, port: 80, targetPort: \(port)}]
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: \(name)-1
      namespace: \(namespace)
      labels: {kubernetes.io/service-name: \(name)}
    addressType: IPv4
    ports: [{name: http, port: \(port)}]
    endpoints: [{addresses: ["10.0.0.\(port % 250)"]}]
    ---

    """
}

/// An Ingress whose paths are `(host, path, type, service)`.
func ingress(_ name: String, created: String = "2026-01-01T00:00:00Z", paths: [(String?, String, String, String)],
             defaultBackend: String? = nil, className: String? = "sluice") -> String {
    var byHost: [(String?, [(String, String, String)])] = []
    for (h, p, t, s) in paths {
        if let i = byHost.firstIndex(where: { $0.0 == h }) { byHost[i].1.append((p, t, s)) } else { byHost.append((h, [(p, t, s)])) }
    }
    var y = """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: \(name)
      namespace: default
      creationTimestamp: "\(created)"
    spec:

    """
    if let className { y += "  ingressClassName: \(className)\n" }
    if let d = defaultBackend { y += "  defaultBackend: {service: {name: \(d), port: {number: 80}}}\n" }
    if !byHost.isEmpty { y += "  rules:\n" }
    for (h, ps) in byHost {
        y += h.map { "    - host: \"\($0)\"\n      http:\n" } ?? "    - http:\n"
        y += "        paths:\n"
        for (p, t, s) in ps {
            y += "          - {path: \"\(p)\", pathType: \(t), backend: {service: {name: \(s), port: {number: 80}}}}\n"
        }
    }
    return y + "---\n"
}

/// Ingress default/bad with one path on host ok.test (the line of `path:` is the 9th).
func onePathIngress(_ path: String, _ type: String = "Prefix") -> String {
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: bad, namespace: default}
    spec:
      rules:
        - host: ok.test
          http:
            paths:
              - path: "\(path)"
                pathType: \(type)
                backend: {service: {name: a, port: {number: 80}}}
    """
}

func compile(_ yaml: String, options: RoutingOptions = RoutingOptions()) -> CompiledRoutes {
    RouteCompiler.compile(ManifestLoader.load(text: yaml, file: "test.yaml"), options: options)
}

/// Which service a request reaches (by the endpoint port), or nil for 404.
func reach(_ c: CompiledRoutes, _ host: String, _ path: String) -> String? {
    guard let r = c.table.lookup(host: host, path: path) else { return nil }
    return c.table.backends[r.backend].name.split(separator: "/").last.map { String($0.split(separator: ":")[0]) }
}

let services = ["a", "b", "c", "d", "dflt"].enumerated().map { service($0.element, port: 9000 + $0.offset) }.joined()

// MARK: - The reference's examples table

struct PathSemanticsTests {
    /// rule type, rule paths, request path, the rule path expected to win (nil: no match).
    static let examples: [(String, [String], String, String?)] = [
        ("Prefix", ["/"], "/anything/at/all", "/"),
        ("Exact", ["/foo"], "/foo", "/foo"),
        ("Exact", ["/foo"], "/bar", nil),
        ("Exact", ["/foo"], "/foo/", nil),
        ("Exact", ["/foo/"], "/foo", nil),
        ("Prefix", ["/foo"], "/foo", "/foo"),
        ("Prefix", ["/foo"], "/foo/", "/foo"),
        ("Prefix", ["/foo/"], "/foo", "/foo/"),
        ("Prefix", ["/foo/"], "/foo/", "/foo/"),
        ("Prefix", ["/aaa/bb"], "/aaa/bbb", nil),
        ("Prefix", ["/aaa/bbb"], "/aaa/bbb", "/aaa/bbb"),
        ("Prefix", ["/aaa/bbb/"], "/aaa/bbb", "/aaa/bbb/"),
        ("Prefix", ["/aaa/bbb"], "/aaa/bbb/", "/aaa/bbb"),
        ("Prefix", ["/aaa/bbb"], "/aaa/bbb/ccc", "/aaa/bbb"),
        ("Prefix", ["/aaa/bbb"], "/aaa/bbbxyz", nil),
        ("Prefix", ["/", "/aaa"], "/aaa/ccc", "/aaa"),
        ("Prefix", ["/", "/aaa", "/aaa/bbb"], "/aaa/bbb", "/aaa/bbb"),
        ("Prefix", ["/", "/aaa", "/aaa/bbb"], "/ccc", "/"),
        ("Prefix", ["/aaa"], "/ccc", nil),
    ]

    @Test(arguments: examples.indices)
    func referenceExample(_ i: Int) {
        let (type, rules, request, winner) = Self.examples[i]
        let svcs = ["a", "b", "c"]
        let paths = rules.enumerated().map { (Optional("h.test"), $0.element, type, svcs[$0.offset]) }
        let c = compile(services + ingress("i", paths: paths))
        #expect(c.errors.isEmpty, "\(c.errors)")
        let got = c.table.lookup(host: "h.test", path: request)
        #expect(got?.path == winner, "\(type) \(rules) for \(request)")
        // The string-based reference matcher agrees with the table.
        let anyMatch = rules.contains { RouteExplainer.matches(rule: $0, type: PathType(rawValue: type)!, path: request) }
        #expect(anyMatch == (winner != nil))
    }

    @Test func exactBeatsPrefixOfSameLength() {
        let c = compile(services + ingress("i", paths: [("h.test", "/foo", "Prefix", "a"), ("h.test", "/foo", "Exact", "b")]))
        #expect(reach(c, "h.test", "/foo") == "b")
        #expect(reach(c, "h.test", "/foo/x") == "a")
    }

    @Test func exactBeatsPrefixWithTrailingSlash() {
        let c = compile(services + ingress("i", paths: [("h.test", "/foo/", "Prefix", "a"), ("h.test", "/foo", "Exact", "b")]))
        #expect(reach(c, "h.test", "/foo") == "b")
        #expect(reach(c, "h.test", "/foo/") == "a")
    }

    @Test func prefixNeverMatchesInsideASegment() {
        let c = compile(services + ingress("i", paths: [("h.test", "/v1", "Prefix", "a")]))
        #expect(reach(c, "h.test", "/v1") == "a")
        #expect(reach(c, "h.test", "/v1/x") == "a")
        #expect(reach(c, "h.test", "/v11") == nil)
        #expect(reach(c, "h.test", "/v1abc") == nil)
    }

    @Test func longestMatchAcrossIngressesSharingAHost() {
        let c = compile(services + ingress("one", created: "2026-01-01T00:00:00Z", paths: [("h.test", "/test/foo", "Prefix", "a")])
                        + ingress("two", created: "2026-01-02T00:00:00Z", paths: [("h.test", "/test", "Prefix", "b")]))
        #expect(reach(c, "h.test", "/test/fo") == "b")
        #expect(reach(c, "h.test", "/test/foo/a/b") == "a")
    }

    @Test func fullTieGoesToTheOldestIngressWithAWarning() {
        let yaml = services + ingress("newer", created: "2026-03-01T00:00:00Z", paths: [("h.test", "/x", "Prefix", "a")])
            + ingress("older", created: "2026-02-01T00:00:00Z", paths: [("h.test", "/x", "Prefix", "b")])
        let c = compile(yaml)
        #expect(reach(c, "h.test", "/x") == "b")
        #expect(c.problems.contains { $0.severity == .warning && $0.message.contains("ties with Ingress default/older") })
        // Same timestamp: namespace/name order decides.
        let same = compile(services + ingress("zz", paths: [("h.test", "/x", "Exact", "a")]) + ingress("aa", paths: [("h.test", "/x", "Exact", "b")]))
        #expect(reach(same, "h.test", "/x") == "b")
    }

    @Test func implementationSpecificIsPrefix() {
        let c = compile(services + ingress("i", paths: [("h.test", "/app", "ImplementationSpecific", "a")]))
        #expect(reach(c, "h.test", "/app/x") == "a")
        #expect(reach(c, "h.test", "/apple") == nil)
    }
}

// MARK: - Hosts

struct HostSemanticsTests {
    static let yaml = services
        + ingress("i", paths: [("foo.com", "/", "Prefix", "a"), ("*.foo.com", "/", "Prefix", "b"), (nil, "/nohost", "Prefix", "c")],
                  defaultBackend: "dflt")

    @Test(arguments: [
        ("foo.com", "/", "a"),
        ("bar.foo.com", "/", "b"),
        ("baz.bar.foo.com", "/", "dflt"),  // a wildcard covers exactly one label
        ("foo.com.", "/", "a"),            // trailing dot removed by normalisation (see the proxy)
        ("other.com", "/nohost", "c"),
        ("other.com", "/", "dflt"),
        ("bar.foo.com", "/nohost", "b"),   // the wildcard's Prefix / wins before the host-less rules
    ])
    func hostMatching(host: String, path: String, expected: String) {
        let c = compile(Self.yaml)
        var h = host
        if h.hasSuffix(".") { h.removeLast() }
        #expect(reach(c, h, path) == expected, "\(host)\(path)")
    }

    @Test func hostFallsThroughToWildcardThenHostless() {
        let c = compile(services + ingress("i", paths: [("a.foo.com", "/exact-only", "Exact", "a"), ("*.foo.com", "/w", "Prefix", "b"), (nil, "/", "Prefix", "c")]))
        #expect(reach(c, "a.foo.com", "/exact-only") == "a")
        #expect(reach(c, "a.foo.com", "/w/1") == "b")
        #expect(reach(c, "a.foo.com", "/zzz") == "c")
    }

    @Test func noDefaultBackendMeans404() {
        let c = compile(services + ingress("i", paths: [("foo.com", "/a", "Prefix", "a")]))
        #expect(reach(c, "foo.com", "/b") == nil)
        #expect(reach(c, "x.com", "/a") == nil)
    }

    @Test func normalisedRequestHost() {
        var out = [UInt8](repeating: 0, count: 64)
        for (raw, want) in [("Foo.COM:8080", "foo.com"), ("foo.com.", "foo.com"), ("FOO.com.:80", "foo.com"), ("[::1]:80", "[::1]")] {
            let n = Array(raw.utf8).withUnsafeBytes { r in out.withUnsafeMutableBytes { RequestNormalizer.host(r, into: $0) } }!
            #expect(String(decoding: out[0..<n], as: UTF8.self) == want)
        }
    }
}

// MARK: - Path normalisation

struct PathNormalisationTests {
    func norm(_ s: String) -> String? {
        var out = [UInt8](repeating: 0, count: s.utf8.count + 4)
        guard let n = Array(s.utf8).withUnsafeBytes({ r in out.withUnsafeMutableBytes { RequestNormalizer.path(r, into: $0) } }) else { return nil }
        return String(decoding: out[0..<n], as: UTF8.self)
    }

    @Test(arguments: [
        ("/a/b", "/a/b"), ("/a/./b", "/a/b"), ("/a/../b", "/b"), ("/public/../admin", "/admin"), ("/%61dmin", "/admin"),
        ("/a%2Fb", "/a%2Fb"), ("/a%2fb", "/a%2Fb"), ("/a/b/", "/a/b/"), ("/a/.", "/a/"), ("/a/..", "/"), ("/%2e%2e/x", nil),
        ("/..", nil), ("/a/%2E%2E/b", "/b"), ("/~user", "/~user"), ("/%7Euser", "/~user"), ("/", "/"),
    ] as [(String, String?)])
    func normalises(_ raw: String, _ want: String?) {
        #expect(norm(raw) == want, "\(raw)")
    }

    @Test func encodedSlashCannotSplitASegment() {
        let c = compile(services + ingress("i", paths: [("h.test", "/admin/x", "Prefix", "a"), ("h.test", "/", "Prefix", "b")]))
        let p = norm("/admin%2Fx")!
        #expect(reach(c, "h.test", p) == "b")
        #expect(reach(c, "h.test", norm("/public/../admin/x")!) == "a")
        #expect(reach(c, "h.test", norm("/%61dmin/x")!) == "a")
    }
}
