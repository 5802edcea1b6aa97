import Synchronization

/// Certificates by server name: exact names, then wildcard certificates (`*.example.com` covers
/// one label), then the default. Immutable; a reload builds a new one.
public struct CertificateStore: Sendable {
    public private(set) var exact: [String: TLSContext] = [:]
    public private(set) var wildcard: [String: TLSContext] = [:]
    public var defaultContext: TLSContext?

    public init(defaultContext: TLSContext? = nil) {
        self.defaultContext = defaultContext
    }

    /// Serves `name` (`*.example.com` for a wildcard) with `context`; the first one added wins.
    public mutating func add(name: String, _ context: TLSContext) {
        let n = name.lowercased()
        if n.hasPrefix("*.") {
            if wildcard[String(n.dropFirst(2))] == nil { wildcard[String(n.dropFirst(2))] = context }
        } else if exact[n] == nil {
            exact[n] = context
        }
    }

    /// The context for an SNI name (nil name: no SNI).
    public func context(for serverName: String?) -> TLSContext? {
        guard var name = serverName?.lowercased(), !name.isEmpty else { return defaultContext }
        if name.hasSuffix(".") { name.removeLast() }
        if let c = exact[name] { return c }
        if let dot = name.firstIndex(of: "."), let c = wildcard[String(name[name.index(after: dot)...])] { return c }
        return defaultContext
    }

    public var isEmpty: Bool { exact.isEmpty && wildcard.isEmpty && defaultContext == nil }
}

/// The current store, read by the SNI callback on every handshake and replaced by reloads.
public final class CertificateStoreBox: Sendable {
    private let store: Mutex<CertificateStore>

    public init(_ initial: CertificateStore) {
        store = Mutex(initial)
    }

    public var current: CertificateStore {
        get { store.withLock { $0 } }
    }

    public func replace(_ next: CertificateStore) {
        store.withLock { $0 = next }
    }
}
