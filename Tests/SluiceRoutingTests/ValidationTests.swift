import SluiceRouting
import Testing

/// Each validation error, with its exact `file:line: kind ns/name: field: message`.
struct ValidationTests {
    func problems(_ yaml: String) -> [String] {
        compile(yaml).problems.map(\.description)
    }

    func onePath(_ path: String, _ type: String = "Prefix") -> String {
        services + onePathIngress(path, type)
    }

    /// Line of the `path:` key above: the services block, then 9 lines.
    var pathLine: Int { services.split(separator: "\n", omittingEmptySubsequences: false).count + 8 }

    @Test(arguments: [
        ("foo", "must be an absolute path (start with '/')"),
        ("/a//b", "must not contain '//'"),
        ("/a/./b", "must not contain '/./'"),
        ("/a/../b", "must not contain '/../'"),
        ("/a%2fb", "must not contain '%2f'"),
        ("/a%2Fb", "must not contain '%2F'"),
        ("/a/..", "must not end with '/..' or '/.'"),
        ("/a/.", "must not end with '/..' or '/.'"),
        ("/a b", "must not contain spaces, control characters, '?' or '#'"),
    ])
    func invalidPaths(_ path: String, _ message: String) {
        let p = problems(onePath(path))
        #expect(p == ["test.yaml:\(pathLine): Ingress default/bad: spec.rules[0].http.paths[0].path: \(message)"], "\(p)")
    }

    @Test func invalidPathTypeAndMissingPathType() {
        let p = problems(onePath("/x", "Regex"))
        #expect(p == ["test.yaml:\(pathLine + 1): Ingress default/bad: spec.rules[0].http.paths[0].pathType: 'Regex' is not one of Exact, Prefix, ImplementationSpecific"])
    }

    func oneHost(_ host: String) -> String {
        services + """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: bad, namespace: default}
        spec:
          rules:
            - host: "\(host)"
              http:
                paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
        """
    }

    var hostLine: Int { services.split(separator: "\n", omittingEmptySubsequences: false).count + 5 }

    @Test(arguments: [
        ("*", "a bare '*' is not allowed; use '*.example.com'"),
        ("10.0.0.1", "must be a DNS name, not an IP address"),
        ("foo.com:8080", "must not contain a port"),
        ("Foo.com", "must be lower case"),
        ("foo.*.com", "a wildcard must be the whole first label, as in '*.example.com'"),
        ("*foo.com", "a wildcard must be the whole first label, as in '*.example.com'"),
        ("foo_bar.com", "'foo_bar.com' is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.')"),
        ("-foo.com", "'-foo.com' is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.')"),
    ])
    func invalidHosts(_ host: String, _ message: String) {
        let p = problems(oneHost(host))
        #expect(p == ["test.yaml:\(hostLine): Ingress default/bad: spec.rules[0].host: \(message)"], "\(p)")
    }

    @Test func backendNeedsExactlyOneOfServiceOrResource() {
        let yaml = """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: both, namespace: default}
        spec:
          defaultBackend:
            service: {name: a, port: {number: 80}}
            resource: {apiGroup: x, kind: Bucket, name: b}
        """
        #expect(problems(yaml) == ["test.yaml:6: Ingress default/both: spec.defaultBackend: exactly one of service or resource may be set, not both"])
        let neither = yaml.replacingOccurrences(of: "    service: {name: a, port: {number: 80}}\n    resource: {apiGroup: x, kind: Bucket, name: b}", with: "    {}")
        #expect(problems(neither).first?.hasSuffix("spec.defaultBackend: exactly one of service or resource must be set") == true)
    }

    @Test func missingServiceAndPortAndEndpoints() {
        let yaml = service("a", port: 9000) + """
        apiVersion: v1
        kind: Service
        metadata: {name: empty}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: refs}
        spec:
          rules:
            - host: r.test
              http:
                paths:
                  - {path: /missing, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}
                  - {path: /port, pathType: Prefix, backend: {service: {name: a, port: {number: 81}}}}
                  - {path: /empty, pathType: Prefix, backend: {service: {name: empty, port: {number: 80}}}}
        """
        let c = compile(yaml)
        let msgs = c.problems.map(\.description)
        #expect(msgs.contains { $0.hasSuffix("Ingress default/refs: spec.rules[0].http.paths[0].backend.service: Service default/nope not found") })
        #expect(msgs.contains { $0.hasSuffix("Ingress default/refs: spec.rules[0].http.paths[1].backend.service: Service default/a has no port 81 (it has: http/80)") })
        #expect(msgs.contains { $0.contains("warning: Ingress default/refs: spec.rules[0].http.paths[2].backend.service: Service default/empty has no endpoints") })
        // The routes still exist and answer 503 with the reason.
        let r = c.table.lookup(host: "r.test", path: "/missing")!
        #expect(c.table.backends[r.backend].problem == "Service default/nope not found")
    }

    @Test func oneBrokenIngressDoesNotStopTheOthers() {
        let c = compile(onePath("/a//b") + "\n---\n" + ingress("good", paths: [("good.test", "/", "Prefix", "b")]))
        #expect(c.errors.count == 1)
        #expect(reach(c, "good.test", "/") == "b")
        #expect(reach(c, "ok.test", "/") == nil)
    }

    @Test func unknownKindsAndOtherClassesAreReportedAndSkipped() {
        let yaml = services + """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        ---

        """ + ingress("theirs", paths: [("t.test", "/", "Prefix", "a")], className: "nginx")
            + ingress("ours", paths: [("o.test", "/", "Prefix", "a")])
        let c = compile(yaml)
        #expect(c.errors.isEmpty)
        #expect(c.problems.contains { $0.description.contains("Deployment default/web: kind: kind Deployment (apps/v1) is not used by Sluice; skipped") })
        #expect(c.ignored.contains { $0.hasPrefix("Ingress default/theirs") && $0.contains("class 'nginx'") })
        #expect(reach(c, "o.test", "/") == "a")
        #expect(reach(c, "t.test", "/") == nil)
        #expect(c.served == ["default/ours"], "TLS redirects and HSTS follow only served Ingresses")
        var strict = RoutingOptions()
        strict.watchIngressWithoutClass = false
        let classless = compile(services + ingress("none", paths: [("n.test", "/", "Prefix", "a")], className: nil), options: strict)
        #expect(reach(classless, "n.test", "/") == nil)
        #expect(reach(compile(services + ingress("none", paths: [("n.test", "/", "Prefix", "a")], className: nil)), "n.test", "/") == "a")
    }

    @Test func invalidYAMLNamesTheLine() {
        let p = problems("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n   bad: indent\n")
        #expect(p.count == 1)
        #expect(p.first?.hasPrefix("test.yaml:5: not valid YAML") == true, "\(p)")
    }

    @Test func wrongApiVersionIsAnError() {
        let p = problems("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\nspec: {}\n")
        #expect(p == ["test.yaml:1: Ingress default/old: apiVersion: Ingress must be networking.k8s.io/v1, not 'extensions/v1beta1'"])
    }

    @Test func kubectlListOutputAndEndpointsObjects() {
        let yaml = """
        apiVersion: v1
        kind: List
        items:
          - apiVersion: v1
            kind: Service
            metadata: {name: legacy, namespace: prod}
            spec: {ports: [{name: web, port: 80, targetPort: 8080}]}
          - apiVersion: v1
            kind: Endpoints
            metadata: {name: legacy, namespace: prod}
            subsets:
              - addresses: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]
                notReadyAddresses: [{ip: 10.1.0.3}]
                ports: [{name: web, port: 8080}]
          - apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: legacy, namespace: prod, creationTimestamp: "2025-05-05T00:00:00Z"}
            spec:
              rules:
                - host: legacy.test
                  http:
                    paths: [{path: /, pathType: Prefix, backend: {service: {name: legacy, port: {name: web}}}}]
        """
        let c = compile(yaml)
        #expect(c.errors.isEmpty, "\(c.problems)")
        let r = c.table.lookup(host: "legacy.test", path: "/x")!
        #expect(c.table.backends[r.backend].addresses.map { "\($0.ip):\($0.port)" } == ["10.1.0.1:8080", "10.1.0.2:8080"])
    }

    @Test func notReadyEndpointsAreNotRouted() {
        let yaml = """
        apiVersion: v1
        kind: Service
        metadata: {name: s}
        spec: {ports: [{port: 80, targetPort: 8080}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
        addressType: IPv4
        ports: [{port: 8080}]
        endpoints:
          - addresses: [10.0.0.1]
            conditions: {ready: false}
          - addresses: [10.0.0.2]
        ---

        """ + ingress("i", paths: [("s.test", "/", "Prefix", "s")])
        let c = compile(yaml)
        let r = c.table.lookup(host: "s.test", path: "/")!
        #expect(c.table.backends[r.backend].addresses == [.init(ip: "10.0.0.2", port: 8080)])
    }

    @Test func externalNameResolvesAndRefusesLocalAnswers() {
        let yaml = """
        apiVersion: v1
        kind: Service
        metadata: {name: ext}
        spec: {type: ExternalName, externalName: api.example.test, ports: [{port: 443}]}
        ---

        """ + ingress("i", paths: [("e.test", "/", "Prefix", "ext")]).replacingOccurrences(of: "number: 80", with: "number: 443")
        var o = RoutingOptions()
        o.resolve = { _ in ["203.0.113.9"] }
        let c = compile(yaml, options: o)
        let r = c.table.lookup(host: "e.test", path: "/")!
        #expect(c.table.backends[r.backend].addresses == [.init(ip: "203.0.113.9", port: 443)])
        o.resolve = { _ in ["127.0.0.1"] }
        let local = compile(yaml, options: o)
        let lr = local.table.lookup(host: "e.test", path: "/")!
        #expect(local.table.backends[lr.backend].problem?.contains("local addresses only") == true)
    }

    @Test func tlsSecretMustExist() {
        let yaml = services + """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: t}
        spec:
          tls: [{hosts: [t.test], secretName: nowhere}]
          rules: [{host: t.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}}]
        """
        var o = RoutingOptions()
        o.certsDirectory = "/nonexistent-certs"
        let c = compile(yaml, options: o)
        #expect(c.errors.map(\.description).contains { $0.hasSuffix("Ingress default/t: spec.tls.secretName: TLS secret default/nowhere not found: no Secret manifest of type kubernetes.io/tls and no /nonexistent-certs/nowhere/tls.crt + tls.key") })
    }

    @Test func pemMustDecodeToDER() {
        #expect(Validation.pemError(certificate: "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
                                    key: "-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n") == nil)
        #expect(Validation.pemError(certificate: "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                                    key: "-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n") == "tls.crt: certificate 1 is not valid base64 DER")
        #expect(Validation.pemError(certificate: "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
                                    key: "garbage") == "tls.key is not a PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY expected)")
        // A truncated DER (length says more than there is).
        #expect(Validation.pemError(certificate: "-----BEGIN CERTIFICATE-----\nMAQCAQE=\n-----END CERTIFICATE-----\n",
                                    key: "-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n") != nil)
    }

    @Test func tlsSecretManifestSuppliesTheCertificate() {
        let yaml = services + """
        apiVersion: v1
        kind: Secret
        metadata: {name: site-tls, namespace: default}
        type: kubernetes.io/tls
        data:
          tls.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1BTUNBUUU9Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K
          tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1BTUNBUUU9Ci0tLS0tRU5EIFBSSVZBVEUgS0VZLS0tLS0K
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: t}
        spec:
          tls: [{hosts: [t.test], secretName: site-tls}]
          rules: [{host: t.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}}]
        """
        var o = RoutingOptions()
        o.certsDirectory = "/nonexistent-certs"
        let c = compile(yaml, options: o)
        #expect(c.errors.isEmpty, "\(c.errors)")
        #expect(c.certificates.count == 1)
        #expect(c.certificates.first?.hosts == ["t.test"])
        #expect(c.certificates.first?.object == "Secret default/site-tls")
        #expect(c.certificates.first?.certificatePEM.contains("BEGIN CERTIFICATE") == true)
        // An Opaque secret is skipped with a warning, and the reference then fails.
        let opaque = compile(yaml.replacingOccurrences(of: "type: kubernetes.io/tls", with: "type: Opaque"), options: o)
        #expect(opaque.problems.contains { $0.description.contains("Secret of type Opaque is not used by Sluice; skipped") })
        #expect(opaque.errors.contains { $0.message.contains("TLS secret default/site-tls not found") })
    }
}
