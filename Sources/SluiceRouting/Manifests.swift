// MARK: - The Kubernetes objects Sluice reads

/// Where an object came from, for error messages.
public struct SourceLocation: Sendable, Equatable {
    public var file: String
    public var line: Int
}

public struct ObjectMeta: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var creationTimestamp: String
    public var annotations: [String: String]
    public var labels: [String: String]
    public var location: SourceLocation

    public var key: String { "\(namespace)/\(name)" }
}

public enum ServicePortRef: Sendable, Hashable, CustomStringConvertible {
    case number(Int)
    case name(String)

    public var description: String {
        switch self {
        case .number(let n): return "\(n)"
        case .name(let s): return s
        }
    }
}

public struct IngressBackendSpec: Sendable, Equatable {
    public var serviceName: String?
    public var servicePort: ServicePortRef?
    public var resource: String?
    /// Field path of this backend in its Ingress, for error messages.
    public var field: String
    public var line: Int
}

public enum PathType: String, Sendable, Equatable {
    case exact = "Exact"
    case prefix = "Prefix"
    case implementationSpecific = "ImplementationSpecific"
}

public struct IngressPath: Sendable, Equatable {
    public var path: String
    public var pathType: PathType
    public var backend: IngressBackendSpec
    public var field: String
    public var line: Int
}

public struct IngressRule: Sendable, Equatable {
    public var host: String?
    public var paths: [IngressPath]
    public var line: Int
}

public struct IngressTLS: Sendable, Equatable {
    public var hosts: [String]
    public var secretName: String?
    public var line: Int
}

public struct Ingress: Sendable, Equatable {
    public var meta: ObjectMeta
    public var ingressClassName: String?
    public var defaultBackend: IngressBackendSpec?
    public var tls: [IngressTLS]
    public var rules: [IngressRule]
    /// What its annotations say about its backends (load balancing, retries, timeouts …).
    public var policy = PolicyOverrides()

    public var label: String { "Ingress \(meta.key)" }
}

public struct IngressClass: Sendable, Equatable {
    public var meta: ObjectMeta
    public var controller: String
    public var isDefault: Bool { meta.annotations["ingressclass.kubernetes.io/is-default-class"] == "true" }
}

public struct ServicePort: Sendable, Equatable {
    public var name: String?
    public var port: Int
    public var targetPort: ServicePortRef?
}

public struct Service: Sendable, Equatable {
    public var meta: ObjectMeta
    public var type: String
    public var ports: [ServicePort]
    public var externalName: String?
    public var policy = PolicyOverrides()

    public var label: String { "Service \(meta.key)" }
}

/// Ready addresses of one service, from an EndpointSlice or an Endpoints object.
public struct EndpointSet: Sendable, Equatable {
    public var meta: ObjectMeta
    public var serviceName: String
    /// Port name (may be empty) → port number.
    public var ports: [(name: String, port: Int)]
    public var readyAddresses: [String]
    public var notReadyAddresses: [String]

    public static func == (a: EndpointSet, b: EndpointSet) -> Bool {
        a.meta == b.meta && a.serviceName == b.serviceName && a.readyAddresses == b.readyAddresses
            && a.notReadyAddresses == b.notReadyAddresses && a.ports.map(\.name) == b.ports.map(\.name)
            && a.ports.map(\.port) == b.ports.map(\.port)
    }
}

public struct TLSSecret: Sendable, Equatable {
    public var meta: ObjectMeta
    public var certificatePEM: String
    public var keyPEM: String
}

/// Everything read from a rules folder.
public struct ManifestSet: Sendable {
    public var ingresses: [Ingress] = []
    public var ingressClasses: [IngressClass] = []
    public var services: [Service] = []
    public var endpoints: [EndpointSet] = []
    public var secrets: [TLSSecret] = []
    public var problems: [ConfigProblem] = []
    public var files: [String] = []

    public init() {}

    /// No objects of any kind.
    var isEmpty: Bool {
        ingresses.isEmpty && ingressClasses.isEmpty && services.isEmpty && endpoints.isEmpty && secrets.isEmpty
    }

    /// The same objects with every line number moved by `delta` (a document parsed on its own).
    func shiftingLines(by delta: Int, file: String) -> ManifestSet {
        if delta == 0 { return self }
        var s = self
        func meta(_ m: inout ObjectMeta) { m.location.line += delta }
        func backend(_ b: inout IngressBackendSpec) { b.line += delta }
        for i in s.ingresses.indices {
            meta(&s.ingresses[i].meta)
            if s.ingresses[i].defaultBackend != nil { backend(&s.ingresses[i].defaultBackend!) }
            for t in s.ingresses[i].tls.indices { s.ingresses[i].tls[t].line += delta }
            for r in s.ingresses[i].rules.indices {
                s.ingresses[i].rules[r].line += delta
                for p in s.ingresses[i].rules[r].paths.indices {
                    s.ingresses[i].rules[r].paths[p].line += delta
                    backend(&s.ingresses[i].rules[r].paths[p].backend)
                }
            }
        }
        for i in s.ingressClasses.indices { meta(&s.ingressClasses[i].meta) }
        for i in s.services.indices { meta(&s.services[i].meta) }
        for i in s.endpoints.indices { meta(&s.endpoints[i].meta) }
        for i in s.secrets.indices { meta(&s.secrets[i].meta) }
        for i in s.problems.indices where s.problems[i].line > 0 { s.problems[i].line += delta }
        return s
    }

    /// Appends many sets with one allocation per kind (call it once, not in a loop: exact
    /// reservations defeat the array's geometric growth).
    mutating func merge(_ others: [ManifestSet]) {
        var counts = (0, 0, 0, 0, 0)
        for o in others {
            counts.0 += o.ingresses.count
            counts.1 += o.services.count
            counts.2 += o.endpoints.count
            counts.3 += o.secrets.count
            counts.4 += o.ingressClasses.count
        }
        ingresses.reserveCapacity(ingresses.count + counts.0)
        services.reserveCapacity(services.count + counts.1)
        endpoints.reserveCapacity(endpoints.count + counts.2)
        secrets.reserveCapacity(secrets.count + counts.3)
        ingressClasses.reserveCapacity(ingressClasses.count + counts.4)
        for o in others { merge(o) }
    }

    public mutating func merge(_ other: ManifestSet) {
        ingresses += other.ingresses
        ingressClasses += other.ingressClasses
        services += other.services
        endpoints += other.endpoints
        secrets += other.secrets
        problems += other.problems
        files += other.files
    }
}
