/// One event loop's hold on a configuration snapshot: the loop keeps one while the snapshot is
/// current, and each request it routes keeps the one it was routed by until it ends (so its
/// pool stays alive across a reload).
///
/// The object belongs to one loop, so retaining it per request writes a cache line only that
/// loop's core uses. The snapshot inside is shared by every loop and is read without retaining.
final class LoopSnapshot {
    /// `ConfigStore.version` when this was loaded.
    let version: Int
    private let snapshot: ConfigSnapshot
    private let ref: Unmanaged<ConfigSnapshot>

    init(_ snapshot: ConfigSnapshot, version: Int) {
        self.version = version
        self.snapshot = snapshot
        self.ref = .passUnretained(snapshot)
    }

    /// Runs `body` with the snapshot, unretained (this object keeps it alive).
    @inline(__always)
    func read<T>(_ body: (ConfigSnapshot) throws -> T) rethrows -> T {
        try ref._withUnsafeGuaranteedRef(body)
    }
}
