import Atomics
import NIOCore
import SluiceUpstream

/// One immutable configuration: built off the event loops, swapped whole, read once per request.
public final class ConfigSnapshot: Sendable, AtomicReference {
    public let generation: Int
    /// Serves every request no rule matches; nil means such requests get 404.
    public let defaultBackend: BackendPool?

    public init(generation: Int, defaultBackend: BackendPool?) {
        self.generation = generation
        self.defaultBackend = defaultBackend
    }

    /// Where a request for `host` and `path` goes. Hosts are already normalised by the caller.
    @inlinable
    public func backend(host: UnsafeRawBufferPointer, path: UnsafeRawBufferPointer) -> BackendPool? {
        defaultBackend
    }

    /// Every endpoint this configuration can send to (idle connections to others are closed).
    public var endpoints: Set<Endpoint> {
        Set(defaultBackend?.endpoints ?? [])
    }
}

/// The reference to the current snapshot. A reload stores a new one; requests in flight keep
/// the snapshot they loaded.
public final class ConfigStore: Sendable {
    private let current: ManagedAtomic<ConfigSnapshot>

    public init(_ initial: ConfigSnapshot) {
        current = ManagedAtomic(initial)
    }

    @inlinable
    public var snapshot: ConfigSnapshot { load() }

    @usableFromInline
    func load() -> ConfigSnapshot { current.load(ordering: .acquiring) }

    public func store(_ next: ConfigSnapshot) {
        current.store(next, ordering: .releasing)
    }
}
