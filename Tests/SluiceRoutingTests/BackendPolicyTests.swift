import Testing

@testable import SluiceRouting

/// Annotations → typed policies: values checked with file and line, the Ingress winning over
/// the Service field by field, ingress-nginx's spellings accepted on an Ingress.
@Suite struct BackendPolicyTests {
    static func yaml(service: String = "", ingress: String = "") -> String {
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          annotations:
        \(service.isEmpty ? "    {}" : service)
        spec: {ports: [{port: 80, targetPort: 8080}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        ports: [{port: 8080}]
        endpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: site
          annotations:
        \(ingress.isEmpty ? "    {}" : ingress)
        spec:
          rules: [{host: a.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
        """
    }

    static func compile(_ text: String) -> CompiledRoutes {
        RouteCompiler.compile(ManifestLoader.load(text: text, file: "t.yaml"))
    }

    @Test func serviceAnnotationsApplyAndIngressOnesWin() {
        let c = Self.compile(Self.yaml(
            service: """
                sluice.io/load-balance: least-request
                sluice.io/retries: "2"
                sluice.io/read-timeout: 30s
                sluice.io/health-check-path: /healthz
                sluice.io/health-check-interval: 2s
            """,
            ingress: """
                sluice.io/load-balance: ewma
                sluice.io/read-timeout: 250ms
            """))
        #expect(c.errors.isEmpty, "\(c.errors)")
        let p = c.table.backends[0].policy
        #expect(p.balance == .ewma)
        #expect(p.retries == 2)
        #expect(p.readTimeout == 0.25)
        #expect(p.health?.path == "/healthz")
        #expect(p.health?.interval == 2)
        #expect(p.health?.unhealthyThreshold == 3)
    }

    @Test func ingressNginxSpellings() {
        let c = Self.compile(Self.yaml(ingress: """
                nginx.ingress.kubernetes.io/upstream-hash-by: $http_x_user_id
                nginx.ingress.kubernetes.io/proxy-connect-timeout: "3"
                nginx.ingress.kubernetes.io/proxy-read-timeout: "120"
                nginx.ingress.kubernetes.io/proxy-send-timeout: "90"
                nginx.ingress.kubernetes.io/proxy-next-upstream-tries: "3"
            """))
        #expect(c.errors.isEmpty, "\(c.errors)")
        let p = c.table.backends[0].policy
        #expect(p.balance == .consistentHash(.header("x-user-id")))
        #expect(p.connectTimeout == 3)
        #expect(p.readTimeout == 120)
        #expect(p.sendTimeout == 90)
        #expect(p.retries == 2)
        let affinity = Self.compile(Self.yaml(ingress: """
                nginx.ingress.kubernetes.io/affinity: cookie
                nginx.ingress.kubernetes.io/session-cookie-name: route
            """))
        #expect(affinity.table.backends[0].policy.affinityCookie == "route")
    }

    @Test func hashByAloneImpliesConsistentHashing() {
        let c = Self.compile(Self.yaml(service: "    sluice.io/hash-by: cookie:session"))
        #expect(c.table.backends[0].policy.balance == .consistentHash(.cookie("session")))
    }

    @Test(arguments: [
        ("sluice.io/load-balance: fastest", "round-robin, least-request, ewma or consistent-hash"),
        ("sluice.io/retries: \"9\"", "an integer from 0 to 5"),
        ("sluice.io/read-timeout: soon", "a duration"),
        ("sluice.io/hash-by: \"header:\"", "client-ip, header:NAME or cookie:NAME"),
        ("sluice.io/health-check-path: healthz", "a path starting with /"),
        ("sluice.io/max-connections: \"0\"", "an integer from 1"),
        ("sluice.io/loadbalance: ewma", "unknown annotation"),
    ])
    func badValuesAreReportedWithLineAndWhatIsAllowed(_ line: String, _ allowed: String) {
        let set = ManifestLoader.load(text: Self.yaml(ingress: "    " + line), file: "t.yaml")
        let p = set.problems.first { $0.severity == .error }
        #expect(p?.line == 21, "\(set.problems)")
        #expect(p?.file == "t.yaml")
        #expect(p?.field.hasPrefix("metadata.annotations[") == true)
        #expect(p?.message.contains(allowed) == true, "\(p?.message ?? "none")")
    }

    @Test func nginxSpellingsAreNotReadOnAService() {
        let c = Self.compile(Self.yaml(service: "    nginx.ingress.kubernetes.io/load-balance: ewma"))
        #expect(c.table.backends[0].policy.balance == .roundRobin)
    }

    @Test func twoIngressesWithDifferentPoliciesGetTwoBackends() {
        var text = Self.yaml(ingress: "    sluice.io/load-balance: least-request")
        text += """

        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: other}
        spec:
          rules: [{host: b.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
        """
        let c = Self.compile(text)
        #expect(c.table.backends.count == 2)
        #expect(Set(c.table.backends.map(\.name)) == ["default/web:80"])
        #expect(Set(c.table.backends.map(\.policy.balance)) == [.leastRequest, .roundRobin])
    }
}
