import Synchronization

/// A count that every event loop adds to, kept as one atomic per loop, each on its own cache
/// line; readers sum them.
///
/// One atomic that both loops add to on every request moves its cache line between the cores
/// twice per request: replacing the endpoints' in-flight atomic with this raised h2 at two
/// workers by 4–7 % (alternated runs, RESULTS.md session 9). Here a loop only ever writes its own
/// line, and a reader (circuit breaking, the admin page) pays for reading the lines in use.
public final class LoopCounter: @unchecked Sendable {
    // @unchecked: the slots are atomics; the raw memory is owned here and freed in deinit.
    static let slots = 64
    static let lineBytes = 64
    private let base: UnsafeMutableRawPointer
    /// Slots written so far are all below this: the sum reads only those.
    private let slotsInUse = Atomic<Int>(0)

    public init() {
        base = .allocate(byteCount: Self.slots * Self.lineBytes, alignment: Self.lineBytes)
        for i in 0..<Self.slots { slot(i).initialize(to: Atomic(0)) }
    }

    deinit {
        for i in 0..<Self.slots { _ = slot(i).deinitialize(count: 1) }
        base.deallocate()
    }

    private func slot(_ i: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        (base + i * Self.lineBytes).assumingMemoryBound(to: Atomic<Int>.self)
    }

    /// Adds `delta` on behalf of event loop `loop` (0-based). Loops beyond the slot count share
    /// slots; the adds stay atomic, so the sum stays exact.
    public func add(_ delta: Int, loop: Int) {
        let i = loop % Self.slots
        if i >= slotsInUse.load(ordering: .relaxed) { markInUse(i) }
        slot(i).pointee.wrappingAdd(delta, ordering: .relaxed)
    }

    private func markInUse(_ i: Int) {
        var seen = slotsInUse.load(ordering: .relaxed)
        while seen <= i {
            let (exchanged, now) = slotsInUse.compareExchange(expected: seen, desired: i + 1, ordering: .relaxed)
            if exchanged { return }
            seen = now
        }
    }

    /// The sum over every loop. Each slot is read atomically; the sum is a snapshot that may mix
    /// moments, as any count read while loops run.
    public var total: Int {
        var sum = 0
        for i in 0..<slotsInUse.load(ordering: .relaxed) { sum &+= slot(i).pointee.load(ordering: .relaxed) }
        return sum
    }
}
