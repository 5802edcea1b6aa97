import Logging
import NIOEmbedded
import SluiceUpstream
import Testing
@testable import SluiceProxy

@Suite("Loop snapshot")
struct LoopSnapshotTests {
    private func context(_ store: ConfigStore) -> EventLoopContext {
        EventLoopContext(eventLoop: EmbeddedEventLoop(), config: store, settings: ProxySettings(),
                         logger: Logger(label: "test"), listeners: ListenerInfo())
    }

    private func pool() -> BackendPool {
        let e = try! Endpoint(host: "127.0.0.1", port: 9)
        return BackendPool(name: "loop-snapshot-test", endpoints: [e])
    }

    @Test func aLoopTakesAStoredSnapshotAtItsNextRead() {
        let first = ConfigSnapshot(generation: 1)
        let store = ConfigStore(first)
        let loop = context(store)
        let held = loop.snapshot
        #expect(loop.snapshot === held)
        #expect(held.read { $0 === first })
        let version = store.version
        // Even a snapshot with the same generation number (only tests build those) is taken.
        let second = ConfigSnapshot(generation: 1)
        store.store(second)
        #expect(store.version != version)
        #expect(loop.snapshot !== held)
        #expect(loop.snapshot.read { $0 === second })
        #expect(held.read { $0 === first })
    }

    /// A request keeps the snapshot it was routed by, and so its pool, after a reload; the
    /// snapshot goes when the loop and the request have both let go.
    @Test func aRequestKeepsItsSnapshotAcrossAReload() {
        weak var oldSnapshot: ConfigSnapshot?
        weak var oldPool: BackendPool?
        let store: ConfigStore
        var request: LoopSnapshot?
        let loop: EventLoopContext
        do {
            let p = pool()
            let s = ConfigSnapshot(generation: 1, fallback: p)
            oldSnapshot = s
            oldPool = p
            store = ConfigStore(s)
            loop = context(store)
            request = loop.snapshot
        }
        store.store(ConfigSnapshot(generation: 2))
        _ = loop.snapshot  // the loop moves on
        #expect(oldSnapshot != nil)
        #expect(oldPool != nil)
        #expect(request?.read { $0.fallback?.name } == "loop-snapshot-test")
        request = nil
        #expect(oldSnapshot == nil)
        #expect(oldPool == nil)
    }
}
