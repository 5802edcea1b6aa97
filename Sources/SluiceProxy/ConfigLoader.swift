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

/// Applies reloads one at a time: load, compile, swap the snapshot with one atomic store, close
/// idle upstream connections that nothing routes to any more, and log what changed.
public final class ReloadCoordinator: Sendable {
    private let loaderRef: ConfigLoader
    private let store: ConfigStore
    private let logger: Logger
    private let state = Mutex<(generation: Int, reported: Set<String>)>((1, []))
    private let afterSwap: @Sendable () -> Void
    private let externalNames = Mutex(false)

    public init(loader: ConfigLoader, store: ConfigStore, logger: Logger, afterSwap: @escaping @Sendable () -> Void) {
        self.loaderRef = loader
        self.store = store
        self.logger = logger
        self.afterSwap = afterSwap
    }

    /// The initial load (generation 1), logging every problem.
    public static func initial(_ loader: ConfigLoader, logger: Logger) -> (ConfigSnapshot, CompiledRoutes) {
        let (snapshot, compiled, _) = loader.load(generation: 1)
        // (The coordinator learns about ExternalName services from its own first reload or from
        // `noteInitial`.)
        for p in compiled.problems {
            if p.severity == .error { logger.error("\(p)") } else { logger.warning("\(p)") }
        }
        return (snapshot, compiled)
    }

    public func reload(reason: String) {
        state.withLock { st in
            let started = ContinuousClock.now
            let old = store.snapshot
            let next = st.generation + 1
            let (snapshot, compiled, lastGood) = loaderRef.load(generation: next)
            externalNames.withLock { $0 = compiled.usesExternalNames }
            // Each problem is logged once, until it goes away.
            let now = Set(compiled.problems.map(\.description))
            for p in compiled.problems where !st.reported.contains(p.description) {
                if p.severity == .error { logger.error("\(p)") } else { logger.warning("\(p)") }
            }
            for gone in st.reported.subtracting(now) { logger.info("resolved: \(gone)") }
            st.reported = now
            // Swap first: the summary below is for the log and must not delay the new routes.
            store.store(snapshot)
            st.generation = next
            ProcessMetrics.shared.reloads.wrappingIncrement(ordering: .relaxed)
            ProcessMetrics.shared.generation.store(next, ordering: .relaxed)
            if !compiled.errors.isEmpty { ProcessMetrics.shared.reloadFailures.wrappingIncrement(ordering: .relaxed) }
            afterSwap()
            if !loaderRef.unsettledFiles.withLock({ $0.isEmpty }) {
                // Files that had just changed kept their previous version: look again once
                // they have settled.
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(60)) { [self] in
                    reload(reason: "files settling")
                }
            }
            let swapped = ContinuousClock.now
            let summary = Self.diff(old.table, snapshot.table)
            let (tl, tc, ts) = loaderRef.lastTimings.withLock { $0 }
            if summary.isEmpty {
                logger.debug("reload: no route changed", metadata: ["reason": "\(reason)", "generation": "\(next)"])
                return
            }
            let elapsed = (swapped - started).components
            let ms = elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000
            logger.info("reload applied", metadata: [
                "generation": "\(next)", "reason": "\(reason)", "changes": "\(summary.isEmpty ? "none" : summary)",
                "errors": "\(compiled.errors.count)", "files_on_last_good": "\(lastGood.count)", "ms": "\(ms)",
                "phases": "load \(tl) compile \(tc) snapshot \(ts)",
            ])
        }
    }

    public var generation: Int { state.withLock { $0.generation } }

    public var loader: ConfigLoader { loaderRef }

    /// Whether the configuration routes to ExternalName services (then `refreshExternalNames`
    /// should run periodically: the system resolver gives no TTL).
    public var usesExternalNames: Bool { externalNames.withLock { $0 } }

    /// Records what the initial load found.
    public func noteInitial(_ compiled: CompiledRoutes) {
        externalNames.withLock { $0 = compiled.usesExternalNames }
    }

    /// Resolves ExternalName services again; applies a new snapshot only if an answer changed.
    public func refreshExternalNames() {
        guard usesExternalNames else { return }
        reload(reason: "ExternalName refresh")
    }

    /// `hosts +1 -0, routes +2 -1 ~0, backends +0 -0 ~1` (empty when nothing changed).
    static func diff(_ a: RouteTable, _ b: RouteTable) -> String {
        func routes(_ t: RouteTable) -> [String: String] {
            var m: [String: String] = [:]
            m.reserveCapacity(t.routes.count)
            for r in t.routes { m["\(r.host ?? "*") \(r.pathType.rawValue) \(r.path)"] = t.backends[r.backend].name }
            return m
        }
        func backends(_ t: RouteTable) -> [String: String] {
            var m: [String: String] = [:]
            for b in t.backends { m[b.name] = b.addresses.map { "\($0.ip):\($0.port)" }.joined(separator: ",") + (b.problem ?? "") }
            return m
        }
        let ra = routes(a), rb = routes(b)
        let ha = Set(ra.keys.map { String($0.split(separator: " ")[0]) }), hb = Set(rb.keys.map { String($0.split(separator: " ")[0]) })
        let ba = backends(a), bb = backends(b)
        let rAdded = rb.keys.filter { ra[$0] == nil }.count, rRemoved = ra.keys.filter { rb[$0] == nil }.count
        let rChanged = rb.keys.filter { ra[$0] != nil && ra[$0] != rb[$0] }.count
        let bAdded = bb.keys.filter { ba[$0] == nil }.count, bRemoved = ba.keys.filter { bb[$0] == nil }.count
        let bChanged = bb.keys.filter { ba[$0] != nil && ba[$0] != bb[$0] }.count
        let hAdded = hb.subtracting(ha).count, hRemoved = ha.subtracting(hb).count
        if rAdded + rRemoved + rChanged + bAdded + bRemoved + bChanged + hAdded + hRemoved == 0 { return "" }
        return "hosts +\(hAdded) -\(hRemoved), routes +\(rAdded) -\(rRemoved) ~\(rChanged), backends +\(bAdded) -\(bRemoved) ~\(bChanged)"
    }
}
