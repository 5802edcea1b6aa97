import Atomics
import Foundation
import Logging
import SluiceRouting
import SluiceTLS
import SluiceUpstream
import Synchronization

/// Reads a rules folder and compiles it into a snapshot, off the event loops. Files that did not
/// change are not parsed again (`ManifestCache`).
public final class ConfigLoader: Sendable {
    public let rulesDirectory: String
    public let options: RoutingOptions
    public let fallback: BackendPool?
    private let cache: Mutex<ManifestCache> = {
        let c = ManifestCache()
        c.settleTime = 0.05
        return Mutex(c)
    }()
    /// Contexts by certificate + key text, reused across reloads.
    private let contexts = Mutex<[String: TLSContext]>([:])

    public init(rulesDirectory: String, options: RoutingOptions, fallback: BackendPool?) {
        self.rulesDirectory = rulesDirectory
        self.options = options
        self.fallback = fallback
    }

    public func load(generation: Int) -> (snapshot: ConfigSnapshot, compiled: CompiledRoutes, filesOnLastGood: Set<String>) {
        let t0 = ContinuousClock.now
        let (manifests, lastGood, unsettled) = cache.withLock { c in
            (c.load(directory: rulesDirectory), c.filesOnLastGood, c.unsettledFiles)
        }
        unsettledFiles.withLock { $0 = unsettled }
        let t1 = ContinuousClock.now
        var compiled = RouteCompiler.compile(manifests, options: options)
        let t2 = ContinuousClock.now
        var problems = compiled.problems
        let (certificates, redirects, hsts) = buildCertificates(compiled, manifests: manifests, problems: &problems)
        compiled.problems = problems
        let snapshot = ConfigSnapshot(generation: generation, table: compiled.table, fallback: fallback, problems: problems,
                                      certificates: certificates, redirectHosts: redirects, hstsHosts: hsts)
        let t3 = ContinuousClock.now
        lastTimings.withLock { $0 = (t1 - t0, t2 - t1, t3 - t2) }
        return (snapshot, compiled, lastGood)
    }

    /// The certificate store (default certificate from `certs/default/`, then each Ingress's
    /// `spec.tls`), and the hosts whose plain-HTTP requests redirect to https.
    func buildCertificates(_ compiled: CompiledRoutes, manifests: ManifestSet, problems: inout [ConfigProblem])
        -> (CertificateStore, Set<String>, [String: [UInt8]]) {
        var store = CertificateStore()
        var used: [String: TLSContext] = [:]
        func context(_ cert: String, _ key: String) throws -> TLSContext {
            let k = cert + "\u{0}" + key
            if let c = used[k] ?? contexts.withLock({ $0[k] }) {
                used[k] = c
                return c
            }
            let c = try TLSContext(certificatePEM: cert, privateKeyPEM: key)
            used[k] = c
            return c
        }
        if let dir = options.certsDirectory,
           let c = try? String(contentsOfFile: dir + "/default/tls.crt", encoding: .utf8),
           let k = try? String(contentsOfFile: dir + "/default/tls.key", encoding: .utf8) {
            do {
                store.defaultContext = try context(c, k)
            } catch {
                problems.append(ConfigProblem(.error, file: dir + "/default/tls.key", line: 1, object: "", field: "tls.key", message: "\(error)"))
            }
        }
        for src in compiled.certificates {
            do {
                let ctx = try context(src.certificatePEM, src.keyPEM)
                for h in src.hosts { store.add(name: h, ctx) }
            } catch {
                problems.append(ConfigProblem(.error, file: src.file, line: src.line, object: src.object, field: src.field,
                                              message: "\(src.secret): \(error)"))
            }
        }
        contexts.withLock { $0 = used }
        // Plain HTTP to a host with TLS redirects unless its Ingress says otherwise.
        // HSTS only when an Ingress asks: `sluice.io/hsts: "true"` or the header's value.
        var redirects = Set<String>()
        var hsts: [String: [UInt8]] = [:]
        // Only Ingresses with TLS or annotations can add anything; copying the others (every
        // string and array in them) cost milliseconds per reload at 10,000 Ingresses.
        for i in manifests.ingresses.indices
        where !(manifests.ingresses[i].tls.isEmpty && manifests.ingresses[i].meta.annotations.isEmpty)
            && compiled.served.contains(manifests.ingresses[i].meta.key) {
            let ing = manifests.ingresses[i]
            let a = ing.meta.annotations
            let off = a["sluice.io/ssl-redirect"] == "false" || a["nginx.ingress.kubernetes.io/ssl-redirect"] == "false"
            var hstsValue: String? = nil
            if let v = a["sluice.io/hsts"]?.trimmingCharacters(in: .whitespaces), !v.isEmpty, v != "false" {
                if v == "true" {
                    hstsValue = "max-age=31536000"
                } else if v.hasPrefix("max-age="), v.allSatisfy({ $0.isASCII && !$0.isNewline }) {
                    hstsValue = v
                } else {
                    problems.append(ConfigProblem(.error, file: ing.meta.location.file, line: ing.meta.location.line, object: ing.label,
                                                  field: "metadata.annotations[sluice.io/hsts]",
                                                  message: "'\(v)' is not \"true\", \"false\" or a Strict-Transport-Security value starting with max-age="))
                }
            }
            for t in ing.tls {
                for h in t.hosts where store.context(for: h.hasPrefix("*.") ? "x" + h.dropFirst(1) : h) != nil {
                    let key = h.hasPrefix("*.") ? String(h.dropFirst(1)) : h
                    if !off { redirects.insert(key) }
                    if let hstsValue { hsts[key] = Array("strict-transport-security: \(hstsValue)\r\n".utf8) }
                }
            }
        }
        return (store, redirects, hsts)
    }

    /// The rule files of the last load, and those serving their last good version.
    public var files: (all: [String], onLastGood: Set<String>) {
        cache.withLock { ($0.files, $0.filesOnLastGood) }
    }

    /// Files the last load left at their previous version because they had only just changed
    /// (possibly mid-write); another load picks them up once they settle.
    public let unsettledFiles = Mutex<Set<String>>([])

    /// Durations of the last load: files, compile, snapshot (for the reload log line).
    public let lastTimings = Mutex<(Duration, Duration, Duration)>((.zero, .zero, .zero))
}
