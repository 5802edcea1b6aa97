import Atomics
import Foundation
import Logging
import SluiceRouting
import SluiceTLS
import SluiceUpstream
import Synchronization

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

// MARK: - Changes before the coordinator exists

/// Lets the rules folder be watched from before the first load, when no coordinator exists yet:
/// a change seen until `attach` is remembered and applied once, by the coordinator, then. A folder
/// watched only once the proxy served lost a change saved in between (until the next one).
public final class ReloadTrigger: Sendable {
    public typealias Reload = @Sendable (_ reason: String) -> Void
    private let state = Mutex<(reload: Reload?, missed: Bool)>((nil, false))

    public init() {}

    /// The files changed: reload now, or once there is a coordinator.
    public func filesChanged() {
        let reload = state.withLock { s -> Reload? in
            if s.reload == nil { s.missed = true }
            return s.reload
        }
        reload?("files changed")
    }

    /// From now on changes go to `coordinator`; one seen before is applied now.
    public func attach(_ coordinator: ReloadCoordinator) {
        attach { coordinator.reload(reason: $0) }
    }

    /// From now on changes call `reload`; one seen before calls it now, once.
    public func attach(_ reload: @escaping Reload) {
        let missed = state.withLock { s -> Bool in
            s.reload = reload
            defer { s.missed = false }
            return s.missed
        }
        if missed { reload("files changed while starting") }
    }
}
