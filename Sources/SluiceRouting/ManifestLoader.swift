import Foundation
import Yams

/// Reads every `*.yaml`, `*.yml` and `*.json` under a folder (recursively, multi-document,
/// `kind: List` too) into typed objects. Structural and API-server validation happen here, where
/// the line of every field is still known; an object that fails is reported and left out.
public enum ManifestLoader {
    public static let extensions: Set<String> = ["yaml", "yml", "json"]

    /// The manifest files under `directory`, sorted, following symlinked files and folders.
    public static func files(in directory: String) -> [String] {
        let fm = FileManager.default
        var out: [String] = []
        var seen = Set<String>()
        func walk(_ dir: String) {
            let real = (try? fm.destinationOfSymbolicLink(atPath: dir)).map { URL(fileURLWithPath: $0, relativeTo: URL(fileURLWithPath: dir).deletingLastPathComponent()).path } ?? dir
            guard seen.insert(URL(fileURLWithPath: real).standardizedFileURL.path).inserted else { return }
            guard let entries = try? fm.contentsOfDirectory(atPath: dir) else { return }
            for e in entries.sorted() where !e.hasPrefix(".") {
                let p = dir + "/" + e
                var isDir: ObjCBool = false
                guard fm.fileExists(atPath: p, isDirectory: &isDir) else { continue }
                if isDir.boolValue {
                    walk(p)
                } else if extensions.contains((e as NSString).pathExtension.lowercased()) {
                    out.append(p)
                }
            }
        }
        walk(directory)
        return out
    }

    public static func load(directory: String) -> ManifestSet {
        var set = ManifestSet()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            set.problems.append(ConfigProblem(.error, file: directory, line: 0, object: "", field: "", message: "rules folder does not exist"))
            return set
        }
        for f in files(in: directory) { set.merge(load(file: f, displayName: f)) }
        return set
    }

    public static func load(file: String, displayName: String) -> ManifestSet {
        guard let bytes = readFile(file), let text = String(validating: bytes, as: UTF8.self) else {
            var set = ManifestSet()
            set.files = [displayName]
            set.problems.append(ConfigProblem(.error, file: displayName, line: 0, object: "", field: "", message: "cannot read the file as UTF-8"))
            return set
        }
        return load(text: text, file: displayName)
    }

    public static func load(text: String, file: String) -> ManifestSet {
        var decoder = ManifestDecoder(file: file)
        decoder.set.files = [file]
        do {
            // The parser, not compose_all's sequence, so that an error midway is thrown, not dropped.
            let parser = try Parser(yaml: text, resolver: .basic, encoding: .utf8)  // the default reads the environment on every call
            while let doc = try parser.nextRoot() {
                decoder.document(doc)
            }
        } catch {
            decoder.set.problems.append(ConfigProblem(.error, file: file, line: yamlErrorLine(error), object: "", field: "",
                                                      message: "not valid YAML: \(yamlProblem(error))"))
        }
        return decoder.set
    }

    static func yamlErrorLine(_ error: Error) -> Int {
        guard let e = error as? YamlError else { return 0 }
        switch e {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        case .duplicatedKeysInMapping(_, let context):
            return context.mark.line
        default:
            return 0
        }
    }

    static func yamlProblem(_ error: Error) -> String {
        guard let e = error as? YamlError else { return "\(error)" }
        switch e {
        case .scanner(let c, let p, _, _), .parser(let c, let p, _, _), .composer(let c, let p, _, _):
            return [c?.text, p].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ", ")
        case .duplicatedKeysInMapping(let d, _):
            return "duplicated keys \(d.joined(separator: ", "))"
        default:
            return "\(error)".components(separatedBy: "\n").first ?? "\(error)"
        }
    }
}

// MARK: - Decoding one file

struct ManifestDecoder {
    let file: String
    var set = ManifestSet()
    /// The object being decoded, for messages.
    var object = ""
    var objectHasError = false

    init(file: String) {
        self.file = file
    }

    mutating func problem(_ node: Node?, _ field: String, _ message: String, line: Int? = nil, severity: ConfigProblem.Severity = .error) {
        if severity == .error { objectHasError = true }
        set.problems.append(ConfigProblem(severity, file: file, line: line ?? node?.mark?.line ?? 0, object: object, field: field, message: message))
    }

    mutating func document(_ doc: Node) {
        guard let m = doc.mapping else {
            if case .scalar(let s) = doc, s.string.isEmpty || s.string == "null" || s.string == "~" { return }
            object = ""
            problem(doc, "", "a document must be a mapping (a Kubernetes object)")
            return
        }
        let kind = m["kind"]?.string ?? ""
        let apiVersion = m["apiVersion"]?.string ?? ""
        if kind == "List" || kind.hasSuffix("List") && m["items"] != nil {
            for item in m["items"]?.sequence ?? [] { document(item) }
            return
        }
        let meta = m["metadata"]?.mapping
        let name = meta?["name"]?.string ?? ""
        let namespace = meta?["namespace"]?.string ?? "default"
        object = "\(kind.isEmpty ? "object" : kind) \(namespace)/\(name)"
        objectHasError = false
        if kind.isEmpty {
            problem(doc, "kind", "missing kind")
            return
        }
        switch (apiVersion, kind) {
        case ("networking.k8s.io/v1", "Ingress"), ("networking.k8s.io/v1", "IngressClass"), ("v1", "Service"),
             ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "Endpoints"), ("v1", "Secret"):
            break
        case (_, "Ingress"), (_, "IngressClass"), (_, "Service"), (_, "EndpointSlice"), (_, "Endpoints"), (_, "Secret"):
            problem(m["apiVersion"] ?? doc, "apiVersion", "\(kind) must be \(expectedVersion(kind)), not '\(apiVersion)'")
            return
        default:
            problem(doc, "kind", "kind \(kind) (\(apiVersion)) is not used by Sluice; skipped", severity: .warning)
            return
        }
        guard let objMeta = decodeMeta(doc, m) else { return }
        switch kind {
        case "Ingress":
            if var i = decodeIngress(m, objMeta) {
                i.policy = decodePolicy(m, isIngress: true)
                if !objectHasError { set.ingresses.append(i) }
            }
        case "IngressClass":
            let controller = m["spec"]?.mapping?["controller"]?.string ?? ""
            set.ingressClasses.append(IngressClass(meta: objMeta, controller: controller))
        case "Service":
            if var s = decodeService(m, objMeta) {
                s.policy = decodePolicy(m, isIngress: false)
                if !objectHasError { set.services.append(s) }
            }
        case "EndpointSlice":
            if let e = decodeEndpointSlice(m, objMeta), !objectHasError { set.endpoints.append(e) }
        case "Endpoints":
            set.endpoints += decodeEndpoints(m, objMeta)
        case "Secret":
            if let s = decodeSecret(m, objMeta), !objectHasError { set.secrets.append(s) }
        default:
            break
        }
    }

    /// The load-balancing, health, retry, timeout and circuit-breaking annotations, typed; a bad
    /// value is an error on its own line.
    mutating func decodePolicy(_ m: Node.Mapping, isIngress: Bool) -> PolicyOverrides {
        guard let annotations = m["metadata"]?.mapping?["annotations"]?.mapping else { return PolicyOverrides() }
        var list: [(key: String, value: String, line: Int)] = []
        for (k, v) in annotations {
            guard let key = k.string else { continue }
            list.append((key, v.string ?? "", k.mark?.line ?? 0))
        }
        var found: [(Int, String, String)] = []
        let o = PolicyOverrides.parse(list, isIngress: isIngress) { found.append(($0, $1, $2)) }
        for (line, field, message) in found { problem(nil, field, message, line: line) }
        return o
    }

    func expectedVersion(_ kind: String) -> String {
        switch kind {
        case "Ingress", "IngressClass": return "networking.k8s.io/v1"
        case "EndpointSlice": return "discovery.k8s.io/v1"
        default: return "v1"
        }
    }

    mutating func decodeMeta(_ doc: Node, _ m: Node.Mapping) -> ObjectMeta? {
        guard let meta = m["metadata"]?.mapping else {
            problem(doc, "metadata", "missing metadata")
            return nil
        }
        let name = meta["name"]?.string ?? ""
        if name.isEmpty {
            problem(m["metadata"], "metadata.name", "missing name")
            return nil
        }
        let namespace = meta["namespace"]?.string ?? "default"
        if !Validation.isDNS1123Label(namespace) {
            problem(meta["namespace"], "metadata.namespace", "'\(namespace)' is not a valid namespace (lower-case DNS-1123 label)")
        }
        func strings(_ key: String) -> [String: String] {
            var out: [String: String] = [:]
            for (k, v) in meta[key]?.mapping ?? [:] {
                if let ks = k.string { out[ks] = v.string ?? "" }
            }
            return out
        }
        return ObjectMeta(namespace: namespace, name: name, creationTimestamp: meta["creationTimestamp"]?.string ?? "",
                          annotations: strings("annotations"), labels: strings("labels"),
                          location: SourceLocation(file: file, line: doc.mark?.line ?? 0))
    }

    // MARK: Ingress

    mutating func decodeIngress(_ m: Node.Mapping, _ meta: ObjectMeta) -> Ingress? {
        let spec = m["spec"]?.mapping ?? [:]
        var ingress = Ingress(meta: meta, ingressClassName: spec["ingressClassName"]?.string
                                  ?? meta.annotations["kubernetes.io/ingress.class"],
                              defaultBackend: nil, tls: [], rules: [])
        if let db = spec["defaultBackend"] {
            ingress.defaultBackend = decodeBackend(db, field: "spec.defaultBackend")
        }
        for (ti, t) in (spec["tls"]?.sequence ?? []).enumerated() {
            let tm = t.mapping ?? [:]
            var hosts: [String] = []
            for (hi, h) in (tm["hosts"]?.sequence ?? []).enumerated() {
                let host = h.string ?? ""
                if let err = Validation.hostError(host) {
                    problem(h, "spec.tls[\(ti)].hosts[\(hi)]", err)
                }
                hosts.append(host.lowercased())
            }
            ingress.tls.append(IngressTLS(hosts: hosts, secretName: tm["secretName"]?.string, line: t.mark?.line ?? 0))
        }
        let rules = spec["rules"]?.sequence ?? []
        if rules.isEmpty && spec["defaultBackend"] == nil {
            problem(m["spec"], "spec", "an Ingress needs rules or a defaultBackend", line: m["spec"]?.mark?.line ?? meta.location.line)
        }
        for (ri, r) in rules.enumerated() {
            let rm = r.mapping ?? [:]
            var rule = IngressRule(host: nil, paths: [], line: r.mark?.line ?? 0)
            if let hn = rm["host"] {
                let host = hn.string ?? ""
                if let err = Validation.hostError(host) {
                    problem(hn, "spec.rules[\(ri)].host", err)
                }
                rule.host = host.lowercased()
            }
            let http = rm["http"]?.mapping
            let paths = http?["paths"]?.sequence ?? []
            if rm["http"] != nil && paths.isEmpty {
                problem(rm["http"], "spec.rules[\(ri)].http.paths", "must list at least one path")
            }
            for (pi, p) in paths.enumerated() {
                let field = "spec.rules[\(ri)].http.paths[\(pi)]"
                let pm = p.mapping ?? [:]
                let path = pm["path"]?.string ?? ""
                guard let ptNode = pm["pathType"], let pt = PathType(rawValue: ptNode.string ?? "") else {
                    problem(pm["pathType"] ?? p, field + ".pathType",
                            pm["pathType"] == nil ? "required: Exact, Prefix or ImplementationSpecific"
                                : "'\(pm["pathType"]?.string ?? "")' is not one of Exact, Prefix, ImplementationSpecific")
                    continue
                }
                if let err = Validation.pathError(path, type: pt) {
                    problem(pm["path"] ?? p, field + ".path", err)
                }
                guard let bn = pm["backend"] else {
                    problem(p, field + ".backend", "required")
                    continue
                }
                guard let backend = decodeBackend(bn, field: field + ".backend") else { continue }
                rule.paths.append(IngressPath(path: path.isEmpty ? "/" : path, pathType: pt, backend: backend,
                                              field: field, line: p.mark?.line ?? 0))
            }
            ingress.rules.append(rule)
        }
        return ingress
    }

    mutating func decodeBackend(_ node: Node, field: String) -> IngressBackendSpec? {
        let bm = node.mapping ?? [:]
        let service = bm["service"]?.mapping
        let resource = bm["resource"]?.mapping
        if service != nil && resource != nil {
            problem(node, field, "exactly one of service or resource may be set, not both")
            return nil
        }
        if let resource {
            let kind = resource["kind"]?.string ?? "?"
            return IngressBackendSpec(serviceName: nil, servicePort: nil, resource: "\(kind)/\(resource["name"]?.string ?? "?")",
                                      field: field, line: node.mark?.line ?? 0)
        }
        guard let service else {
            problem(node, field, "exactly one of service or resource must be set")
            return nil
        }
        let name = service["name"]?.string ?? ""
        if !Validation.isDNS1035Label(name) {
            problem(bm["service"], field + ".service.name", name.isEmpty ? "required" : "'\(name)' is not a valid Service name (DNS-1035 label)")
        }
        let port = service["port"]?.mapping
        var ref: ServicePortRef? = nil
        if let n = port?["number"] {
            if let v = n.int, v > 0, v < 65536 { ref = .number(v) } else { problem(n, field + ".service.port.number", "must be 1-65535") }
            if port?["name"] != nil { problem(n, field + ".service.port", "set number or name, not both") }
        } else if let n = port?["name"]?.string, !n.isEmpty {
            ref = .name(n)
        } else {
            problem(bm["service"], field + ".service.port", "required: number or name")
        }
        return IngressBackendSpec(serviceName: name, servicePort: ref, resource: nil, field: field, line: node.mark?.line ?? 0)
    }

    // MARK: Service and endpoints

    mutating func decodeService(_ m: Node.Mapping, _ meta: ObjectMeta) -> Service? {
        let spec = m["spec"]?.mapping ?? [:]
        let type = spec["type"]?.string ?? "ClusterIP"
        guard ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(type) else {
            problem(spec["type"], "spec.type", "'\(type)' is not one of ClusterIP, NodePort, LoadBalancer, ExternalName")
            return nil
        }
        var ports: [ServicePort] = []
        for (i, p) in (spec["ports"]?.sequence ?? []).enumerated() {
            let pm = p.mapping ?? [:]
            guard let port = pm["port"]?.int, port > 0, port < 65536 else {
                problem(p, "spec.ports[\(i)].port", "must be 1-65535")
                continue
            }
            var target: ServicePortRef? = nil
            if let t = pm["targetPort"] {
                if let n = t.int { target = .number(n) } else if let s = t.string { target = .name(s) }
            }
            ports.append(ServicePort(name: pm["name"]?.string, port: port, targetPort: target))
        }
        let externalName = spec["externalName"]?.string
        if type == "ExternalName" && (externalName ?? "").isEmpty {
            problem(m["spec"], "spec.externalName", "required for type ExternalName")
        }
        return Service(meta: meta, type: type, ports: ports, externalName: externalName)
    }

    mutating func decodeEndpointSlice(_ m: Node.Mapping, _ meta: ObjectMeta) -> EndpointSet? {
        guard let service = meta.labels["kubernetes.io/service-name"], !service.isEmpty else {
            problem(m["metadata"], "metadata.labels", "an EndpointSlice needs the label kubernetes.io/service-name", severity: .warning)
            return nil
        }
        let addressType = m["addressType"]?.string ?? "IPv4"
        guard addressType == "IPv4" || addressType == "IPv6" else {
            problem(m["addressType"], "addressType", "\(addressType) addresses are not supported (IPv4, IPv6)", severity: .warning)
            return nil
        }
        var ports: [(String, Int)] = []
        for p in m["ports"]?.sequence ?? [] {
            if let n = p.mapping?["port"]?.int { ports.append((p.mapping?["name"]?.string ?? "", n)) }
        }
        var ready: [String] = [], notReady: [String] = []
        for (i, e) in (m["endpoints"]?.sequence ?? []).enumerated() {
            let em = e.mapping ?? [:]
            // ready defaults to true when unset (EndpointConditions docs).
            let isReady = em["conditions"]?.mapping?["ready"]?.bool ?? true
            for a in em["addresses"]?.sequence ?? [] {
                guard let s = a.string, Validation.isIPAddress(s) else {
                    problem(a, "endpoints[\(i)].addresses", "'\(a.string ?? "")' is not an IP address")
                    continue
                }
                if isReady { ready.append(s) } else { notReady.append(s) }
            }
        }
        return EndpointSet(meta: meta, serviceName: service, ports: ports, readyAddresses: ready, notReadyAddresses: notReady)
    }

    mutating func decodeEndpoints(_ m: Node.Mapping, _ meta: ObjectMeta) -> [EndpointSet] {
        var out: [EndpointSet] = []
        for s in m["subsets"]?.sequence ?? [] {
            let sm = s.mapping ?? [:]
            var ports: [(String, Int)] = []
            for p in sm["ports"]?.sequence ?? [] {
                if let n = p.mapping?["port"]?.int { ports.append((p.mapping?["name"]?.string ?? "", n)) }
            }
            let ready = (sm["addresses"]?.sequence ?? []).compactMap { $0.mapping?["ip"]?.string }
            let notReady = (sm["notReadyAddresses"]?.sequence ?? []).compactMap { $0.mapping?["ip"]?.string }
            out.append(EndpointSet(meta: meta, serviceName: meta.name, ports: ports, readyAddresses: ready, notReadyAddresses: notReady))
        }
        return out
    }

    mutating func decodeSecret(_ m: Node.Mapping, _ meta: ObjectMeta) -> TLSSecret? {
        let type = m["type"]?.string ?? "Opaque"
        guard type == "kubernetes.io/tls" else {
            problem(m["type"], "type", "Secret of type \(type) is not used by Sluice; skipped", severity: .warning)
            return nil
        }
        let data = m["data"]?.mapping
        let stringData = m["stringData"]?.mapping
        func value(_ key: String) -> String? {
            if let s = stringData?[key]?.string { return s }
            guard let b64 = data?[key]?.string else { return nil }
            guard let d = Data(base64Encoded: b64.filter { !$0.isWhitespace }) else {
                problem(data?[key], "data.\(key)", "not valid base64")
                return nil
            }
            return String(decoding: d, as: UTF8.self)
        }
        guard let crt = value("tls.crt") else {
            problem(m["data"], "data.tls.crt", "required for a kubernetes.io/tls Secret")
            return nil
        }
        guard let key = value("tls.key") else {
            problem(m["data"], "data.tls.key", "required for a kubernetes.io/tls Secret")
            return nil
        }
        if let err = Validation.pemError(certificate: crt, key: key) {
            problem(m["data"], "data", err)
            return nil
        }
        return TLSSecret(meta: meta, certificatePEM: crt, keyPEM: key)
    }
}

/// The bytes of a file, read with POSIX calls. (FoundationEssentials' `FileManager.contents`
/// leaks a 4 KiB buffer for every empty file it reads, which LeakSanitizer reports; an emptied
/// rules file is read on every reload until it is filled again.)
func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    var out: [UInt8] = []
    if fstat(fd, &st) == 0, st.st_size > 0 { out.reserveCapacity(Int(st.st_size) + 1) }
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if n == 0 { return out }
        out.append(contentsOf: chunk[0..<n])
    }
}
