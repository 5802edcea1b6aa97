import Foundation

/// Settings of the compile step that do not come from the manifests.
public struct RoutingOptions: Sendable {
    /// The IngressClass name Sluice serves (`spec.ingressClassName`).
    public var className = "sluice"
    /// The controller value an IngressClass names to hand its Ingresses to Sluice.
    public var controllerName = "sluice.io/ingress-controller"
    /// Serve Ingresses that name no class.
    public var watchIngressWithoutClass = true
    /// Where `certs/<secretName>/tls.crt` and `tls.key` are looked up.
    public var certsDirectory: String? = nil
    /// ExternalName answers on loopback, link-local or unspecified addresses are refused unless set.
    public var allowLocalExternalNames = false
    /// Resolves an ExternalName to addresses (injectable for tests).
    public var resolve: @Sendable (String) -> [String] = RoutingOptions.systemResolve

    public init() {}

    public static let systemResolve: @Sendable (String) -> [String] = { name in
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(name, nil, &hints, &res) == 0, let first = res else { return [] }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let a = p {
            var buf = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(a.pointee.ai_addr, a.pointee.ai_addrlen, &buf, socklen_t(buf.count), nil, 0, NI_NUMERICHOST) == 0 {
                let s = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !out.contains(s) { out.append(s) }
            }
            p = a.pointee.ai_next
        }
        return out
    }
}

/// The outcome of compiling a manifest set.
public struct CompiledRoutes: Sendable {
    public var table: RouteTable
    public var problems: [ConfigProblem]
    /// Ingresses left to another controller, with the reason.
    public var ignored: [String]
    /// TLS hosts → secret, for `routes`.
    public var tlsHosts: [(host: String, secret: String)]
    /// The certificates `spec.tls` entries name, with their PEM, oldest Ingress first.
    public var certificates: [TLSCertificateSource]
    /// Some route goes to an ExternalName service: its addresses must be resolved again now and then.
    public var usesExternalNames: Bool
    /// `namespace/name` of every Ingress Sluice serves (its class, or none).
    public var served: Set<String>

    public var errors: [ConfigProblem] { problems.filter { $0.severity == .error } }
}

/// Builds the immutable `RouteTable` from manifests, with DESIGN.md's semantics.
public enum RouteCompiler {
    public static func compile(_ set: ManifestSet, options: RoutingOptions = RoutingOptions()) -> CompiledRoutes {
        var b = Builder(set: set, options: options)
        b.run()
        return CompiledRoutes(table: b.table, problems: set.problems + b.problems, ignored: b.ignored, tlsHosts: b.tlsHosts,
                              certificates: b.certificates, usesExternalNames: b.usesExternalNames, served: b.served)
    }

    struct Builder {
        let set: ManifestSet
        let options: RoutingOptions
        var table = RouteTable()
        var problems: [ConfigProblem] = []
        var ignored: [String] = []
        var tlsHosts: [(host: String, secret: String)] = []
        var certificates: [TLSCertificateSource] = []
        var usesExternalNames = false
        var served = Set<String>()
        /// One backend per Service port and policy: two Ingresses that balance the same Service
        /// differently get two pools (over the same endpoints).
        struct BackendKey: Hashable {
            var name: String
            var policy: BackendPolicy
        }
        var backendIndex: [BackendKey: Int] = [:]
        /// The policy `resolve` is working with (set per call).
        var currentPolicy = BackendPolicy()
        var hostEntries: [String: Int32] = [:]
        var services: [String: Service] = [:]
        var endpointSets: [String: [EndpointSet]] = [:]

        init(set: ManifestSet, options: RoutingOptions) {
            self.set = set
            self.options = options
            for s in set.services { services[s.meta.key] = s }
            for e in set.endpoints { endpointSets["\(e.meta.namespace)/\(e.serviceName)", default: []].append(e) }
        }

        mutating func run() {
            let servedKeyed = servedIngresses()
            let servedOrder = servedKeyed.map(\.index)
            let ingresses = set.ingresses
            self.served = Set(servedKeyed.map(\.key))
            let served = servedOrder.lazy.map { ingresses[$0] }
            // Reached through `set.ingresses[i]…` projections rather than `for ing in`: a copy of
            // an Ingress retains every string and array in it, and 10,000 of them made up a
            // large part of each reload.
            var routesOfIngress: [Route] = []
            for (i, key) in servedKeyed {
                routesOfIngress.removeAll(keepingCapacity: true)
                let file = set.ingresses[i].meta.location.file
                let plainPolicy = set.ingresses[i].policy == PolicyOverrides()
                for r in set.ingresses[i].rules.indices {
                    let host = set.ingresses[i].rules[r].host
                    for p in set.ingresses[i].rules[r].paths.indices {
                        let backend = resolve(set.ingresses[i].rules[r].paths[p].backend, ingress: i, plainPolicy: plainPolicy)
                        let path = set.ingresses[i].rules[r].paths[p].path
                        let n = path.utf8.count
                        let length = n > 1 && path.utf8.last == UInt8(ascii: "/") ? n - 1 : (n == 1 && path == "/" ? 0 : n)
                        routesOfIngress.append(Route(host: host, path: path, pathType: set.ingresses[i].rules[r].paths[p].pathType,
                                                     backend: backend, ingress: key, file: file,
                                                     line: set.ingresses[i].rules[r].paths[p].line,
                                                     field: set.ingresses[i].rules[r].paths[p].field, matchLength: length))
                    }
                }
                for r in routesOfIngress { add(r, ingress: i) }
                for t in set.ingresses[i].tls.indices { checkTLS(set.ingresses[i].tls[t], set.ingresses[i]) }
            }
            if let ing = served.first(where: { $0.defaultBackend != nil }), let db = ing.defaultBackend {
                let backend = resolve(db, ingress: servedOrder.first { ingresses[$0].defaultBackend != nil }!, plainPolicy: false)
                table.routes.append(Route(host: nil, path: "/", pathType: .prefix, backend: backend, ingress: ing.meta.key,
                                          file: ing.meta.location.file, line: db.line, field: db.field, matchLength: 0))
                table.defaultRoute = Int32(table.routes.count - 1)
                for other in served.dropFirst() where other.defaultBackend != nil && other.meta.key != ing.meta.key {
                    problems.append(ConfigProblem(.warning, file: other.meta.location.file, line: other.defaultBackend!.line,
                                                  object: other.label, field: "spec.defaultBackend",
                                                  message: "ignored: the default backend of the older Ingress \(ing.meta.key) is used"))
                }
            }
        }

        /// Ingresses of our class, oldest first (creationTimestamp, then namespace/name), as
        /// positions in `set.ingresses` (sorting the large structs themselves copied each one
        /// many times).
        mutating func servedIngresses() -> [(index: Int, key: String)] {
            var classes: [String: IngressClass] = [:]
            for c in set.ingressClasses { classes[c.meta.name] = c }
            let defaultClass = set.ingressClasses.first { $0.isDefault }
            var out: [Int] = []
            for (index, ing) in set.ingresses.enumerated() {
                if let cls = ing.ingressClassName {
                    if cls == options.className || classes[cls]?.controller == options.controllerName {
                        out.append(index)
                    } else {
                        ignored.append("\(ing.label) (\(ing.meta.location.file):\(ing.meta.location.line)): class '\(cls)' is not served by Sluice")
                    }
                } else if let d = defaultClass, d.controller != options.controllerName, d.meta.name != options.className {
                    ignored.append("\(ing.label): no class, and the default IngressClass '\(d.meta.name)' belongs to \(d.controller)")
                } else if options.watchIngressWithoutClass {
                    out.append(index)
                } else {
                    ignored.append("\(ing.label): no ingressClassName (serving class-less Ingresses is turned off)")
                }
            }
            // Sort keys are taken out once: comparing through the Ingresses themselves copied
            // their metadata on every comparison.
            let keys = out.map { (set.ingresses[$0].meta.creationTimestamp, set.ingresses[$0].meta.key, $0) }
            return keys.sorted { a, b in
                if a.0 != b.0 { return a.0 < b.0 }
                return a.1 < b.1
            }.map { (index: $0.2, key: $0.1) }
        }

        mutating func hostEntry(_ host: String?) -> Int32 {
            let key = host ?? ""
            if let i = hostEntries[key] { return i }
            table.hosts.append(HostRoutes())
            let i = Int32(table.hosts.count - 1)
            hostEntries[key] = i
            if let host, host.hasPrefix("*.") {
                let suffix = Array(host.dropFirst(2).utf8)
                table.hostNames.append(suffix)
                table.hostKinds.append(.wildcard)
                suffix.withUnsafeBytes { table.wildcardIndex.insert(fnv1a($0), i) }
            } else if let host {
                let name = Array(host.utf8)
                table.hostNames.append(name)
                table.hostKinds.append(.exact)
                name.withUnsafeBytes { table.exactHostIndex.insert(fnv1a($0), i) }
            } else {
                table.hostNames.append([])
                table.hostKinds.append(.any)
                table.anyHost = i
            }
            return i
        }

        mutating func add(_ route: Route, ingress: Int) {
            let h = Int(hostEntry(route.host))
            table.routes.append(route)
            let ri = Int32(table.routes.count - 1)
            var existing: Int32? = nil
            let bytes = Array(route.path.utf8)
            if route.pathType == .exact {
                // In place: a local copy of the host's entry would make each append copy its arrays.
                let found = bytes.withUnsafeBytes { p -> Int32? in
                    var i = table.hosts[h].exact.first(fnv1a(p))
                    while i >= 0 {
                        if bytesEqual(table.hosts[h].exactPaths[Int(i)], p) { return table.hosts[h].exactRoutes[Int(i)] }
                        i = table.hosts[h].exact.next(i)
                    }
                    return nil
                }
                if let found {
                    existing = found
                } else {
                    table.hosts[h].exactPaths.append(bytes)
                    table.hosts[h].exactRoutes.append(ri)
                    let slot = Int32(table.hosts[h].exactPaths.count - 1)
                    bytes.withUnsafeBytes { table.hosts[h].exact.insert(fnv1a($0), slot) }
                }
            } else {
                existing = table.hosts[h].trie.insert(path: bytes, route: ri)
            }
            table.hosts[h].all.append(ri)
            if let existing {
                let winner = table.routes[Int(existing)]
                problems.append(ConfigProblem(
                    .warning, file: route.file, line: route.line, object: set.ingresses[ingress].label, field: route.field + ".path",
                    message: "\(route.pathType.rawValue) \(route.path) on host \(route.host ?? "*") ties with Ingress \(winner.ingress) (\(winner.file):\(winner.line)); the older Ingress \(winner.ingress) wins"))
            }
        }

        /// A Service backend of an Ingress without policy annotations resolves the same way every
        /// time: remembered by namespace, name and port, without building its key strings again.
        struct PlainBackend: Hashable {
            var namespace: String
            var service: String
            var port: ServicePortRef
        }
        var plainBackends: [PlainBackend: Int] = [:]

        mutating func resolve(_ b: IngressBackendSpec, ingress i: Int, plainPolicy: Bool) -> Int {
            guard plainPolicy, b.resource == nil, let svc = b.serviceName, let port = b.servicePort else {
                return resolve(b, in: set.ingresses[i])
            }
            let k = PlainBackend(namespace: set.ingresses[i].meta.namespace, service: svc, port: port)
            if let known = plainBackends[k] { return known }
            let r = resolve(b, in: set.ingresses[i])
            plainBackends[k] = r
            return r
        }

        /// Service → port → targetPort → ready endpoints; shared per `namespace/service:port`.
        mutating func resolve(_ b: IngressBackendSpec, in ing: Ingress) -> Int {
            let ns = ing.meta.namespace
            if let resource = b.resource {
                return addBackend(key: "resource \(ns)/\(resource)", addresses: [],
                                  problem: "resource backends (\(resource)) are not served by Sluice", report: (ing, b, .error))
            }
            let svcName = b.serviceName ?? ""
            let portRef = b.servicePort ?? .number(0)
            let key = "\(ns)/\(svcName):\(portRef)"
            currentPolicy = PolicyOverrides.effective(service: services["\(ns)/\(svcName)"]?.policy, ingress: ing.policy)
            if let i = backendIndex[BackendKey(name: key, policy: currentPolicy)] { return i }
            guard let svc = services["\(ns)/\(svcName)"] else {
                return addBackend(key: key, addresses: [], problem: "Service \(ns)/\(svcName) not found", report: (ing, b, .error))
            }
            let port: ServicePort?
            switch portRef {
            case .number(let n): port = svc.ports.first { $0.port == n }
            case .name(let s): port = svc.ports.first { $0.name == s }
            }
            guard let port else {
                let known = svc.ports.map { p in p.name.map { "\($0)/\(p.port)" } ?? "\(p.port)" }.joined(separator: ", ")
                return addBackend(key: key, addresses: [], problem: "Service \(ns)/\(svcName) has no port \(portRef) (it has: \(known.isEmpty ? "none" : known))", report: (ing, b, .error))
            }
            if svc.type == "ExternalName", let name = svc.externalName {
                usesExternalNames = true
                let target: Int
                if case .number(let n)? = port.targetPort { target = n } else { target = port.port }
                var addrs = options.resolve(name)
                let refused = addrs.filter(Self.isLocal)
                if !options.allowLocalExternalNames { addrs.removeAll(where: Self.isLocal) }
                if addrs.isEmpty {
                    let why = refused.isEmpty ? "ExternalName \(name) did not resolve" : "ExternalName \(name) resolves to local addresses only (\(refused.joined(separator: ", "))); refused"
                    return addBackend(key: key, addresses: [], problem: why, report: (ing, b, .warning))
                }
                return addBackend(key: key, addresses: addrs.map { .init(ip: $0, port: target) }, problem: nil, report: nil)
            }
            let sets = endpointSets["\(ns)/\(svcName)"] ?? []
            var addresses: [BackendTarget.Address] = []
            for s in sets {
                // EndpointSlice ports carry the Service port's name and the target port number.
                var number: Int? = s.ports.first { $0.name == (port.name ?? "") }?.port
                if number == nil, s.ports.count == 1, svc.ports.count == 1 { number = s.ports[0].port }
                if number == nil {
                    switch port.targetPort {
                    case .number(let n)?: number = n
                    case .name(let n)?: number = s.ports.first { $0.name == n }?.port
                    case nil: number = port.port
                    }
                }
                guard let n = number else { continue }
                for a in s.readyAddresses {
                    let addr = BackendTarget.Address(ip: a, port: n)
                    if !addresses.contains(addr) { addresses.append(addr) }
                }
            }
            if addresses.isEmpty {
                let why = sets.isEmpty ? "Service \(ns)/\(svcName) has no endpoints (no EndpointSlice labelled kubernetes.io/service-name: \(svcName))"
                    : "Service \(ns)/\(svcName) has no ready endpoint for port \(portRef)"
                return addBackend(key: key, addresses: [], problem: why, report: (ing, b, .warning))
            }
            return addBackend(key: key, addresses: addresses, problem: nil, report: nil)
        }

        static func isLocal(_ ip: String) -> Bool {
            ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("169.254.") || ip.lowercased().hasPrefix("fe80:")
                || ip == "0.0.0.0" || ip == "::"
        }

        mutating func addBackend(key: String, addresses: [BackendTarget.Address], problem: String?,
                                 report: (Ingress, IngressBackendSpec, ConfigProblem.Severity)?) -> Int {
            let policy = currentPolicy
            currentPolicy = BackendPolicy()
            if let (ing, b, severity) = report, let problem {
                problems.append(ConfigProblem(severity, file: ing.meta.location.file, line: b.line, object: ing.label,
                                              field: b.field + (b.resource == nil ? ".service" : ".resource"), message: problem))
            }
            let k = BackendKey(name: key, policy: policy)
            if let i = backendIndex[k] { return i }
            table.backends.append(BackendTarget(name: key, addresses: addresses, problem: problem, policy: policy))
            backendIndex[k] = table.backends.count - 1
            return table.backends.count - 1
        }

        mutating func checkTLS(_ t: IngressTLS, _ ing: Ingress) {
            guard let secret = t.secretName, !secret.isEmpty else {
                for h in t.hosts { tlsHosts.append((h, "(default certificate)")) }
                return
            }
            var found = false
            if let s = set.secrets.first(where: { $0.meta.namespace == ing.meta.namespace && $0.meta.name == secret }) {
                found = true
                certificates.append(TLSCertificateSource(hosts: t.hosts, secret: "\(ing.meta.namespace)/\(secret)", certificatePEM: s.certificatePEM,
                                                         keyPEM: s.keyPEM, file: s.meta.location.file, line: s.meta.location.line,
                                                         object: "Secret \(s.meta.key)", field: "data"))
            }
            if !found, let dir = options.certsDirectory {
                let crt = dir + "/" + secret + "/tls.crt", key = dir + "/" + secret + "/tls.key"
                if let c = try? String(contentsOfFile: crt, encoding: .utf8), let k = try? String(contentsOfFile: key, encoding: .utf8) {
                    if let err = Validation.pemError(certificate: c, key: k) {
                        problems.append(ConfigProblem(.error, file: ing.meta.location.file, line: t.line, object: ing.label,
                                                      field: "spec.tls.secretName", message: "\(dir)/\(secret): \(err)"))
                    } else {
                        certificates.append(TLSCertificateSource(hosts: t.hosts, secret: "\(ing.meta.namespace)/\(secret)", certificatePEM: c,
                                                                 keyPEM: k, file: crt, line: 1, object: "", field: "tls.key"))
                    }
                    found = true
                }
            }
            if !found {
                problems.append(ConfigProblem(.error, file: ing.meta.location.file, line: t.line, object: ing.label, field: "spec.tls.secretName",
                                              message: "TLS secret \(ing.meta.namespace)/\(secret) not found: no Secret manifest of type kubernetes.io/tls and no \(options.certsDirectory ?? "certs")/\(secret)/tls.crt + tls.key"))
            }
            let ruleHosts = Set(ing.rules.compactMap(\.host))
            for h in t.hosts {
                tlsHosts.append((h, "\(ing.meta.namespace)/\(secret)"))
                if !ruleHosts.contains(h) {
                    problems.append(ConfigProblem(.warning, file: ing.meta.location.file, line: t.line, object: ing.label, field: "spec.tls.hosts",
                                                  message: "\(h) has TLS but no rule in this Ingress; TLS applies to hosts in both"))
                }
            }
        }
    }
}

/// A certificate an Ingress asks for, and where it came from (for errors such as a key that does
/// not match its certificate).
public struct TLSCertificateSource: Sendable {
    public var hosts: [String]
    public var secret: String
    public var certificatePEM: String
    public var keyPEM: String
    public var file: String
    public var line: Int
    public var object: String
    public var field: String
}
