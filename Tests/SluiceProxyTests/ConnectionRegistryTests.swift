import NIOCore
import NIOEmbedded
import SluiceTLS
import Testing

@testable import SluiceProxy

/// A connection that records what the registry asked of it.
final class RecordingConnection: DrainableConnection {
    let name: String
    var checks = 0
    var drains = 0
    var closes = 0
    var onCheck: (() -> Void)? = nil

    init(_ name: String) { self.name = name }

    func beginDrain() { drains += 1 }
    func forceClose() { closes += 1 }
    func checkTimeouts(now: NIODeadline) {
        checks += 1
        onCheck?()
    }
}

/// One timeout sweep per event loop, on an embedded loop whose clock only moves when told.
@Suite struct ConnectionRegistryTests {
    func started() -> (EmbeddedEventLoop, ConnectionRegistry) {
        let loop = EmbeddedEventLoop()
        let registry = ConnectionRegistry(eventLoop: loop, buffers: BufferPool())
        registry.start()
        loop.run()
        return (loop, registry)
    }

    @Test func everyConnectionIsCheckedOncePerTick() {
        let (loop, registry) = started()
        let a = RecordingConnection("a"), b = RecordingConnection("b")
        registry.add(a)
        registry.add(b)
        loop.advanceTime(by: ConnectionRegistry.tick - .milliseconds(1))
        #expect(a.checks == 0 && b.checks == 0)
        loop.advanceTime(by: .milliseconds(1))
        #expect(a.checks == 1 && b.checks == 1)
        loop.advanceTime(by: ConnectionRegistry.tick * 3)
        #expect(a.checks == 4 && b.checks == 4)

        registry.remove(a)
        loop.advanceTime(by: ConnectionRegistry.tick)
        #expect(a.checks == 4, "a removed connection is not checked again")
        #expect(b.checks == 5)

        registry.stop()
        loop.advanceTime(by: ConnectionRegistry.tick * 4)
        #expect(b.checks == 5)
    }

    /// A timeout closes connections, and a closed connection leaves the registry: during the
    /// sweep that found it. The sweep goes on over the connections it started with.
    @Test func connectionsLeavingDuringTheSweepDoNotDisturbIt() {
        let (loop, registry) = started()
        let all = (0..<50).map { RecordingConnection("c\($0)") }
        for c in all { registry.add(c) }
        // Every tenth connection times out and closes, taking its neighbour with it.
        for (i, c) in all.enumerated() where i % 10 == 0 {
            c.onCheck = { [unowned registry] in
                registry.remove(c)
                registry.remove(all[i + 1])
            }
        }
        loop.advanceTime(by: ConnectionRegistry.tick)
        #expect(all.allSatisfy { $0.checks == 1 })
        #expect(registry.count == 40)
        // Still holding them all: make sure the next sweep sees only those left.
        for c in all { c.onCheck = nil }
        loop.advanceTime(by: ConnectionRegistry.tick)
        #expect(all.filter { $0.checks == 2 }.count == 40)
        registry.stop()
    }

    @Test func drainReachesConnectionsRegisteredBeforeAndAfter() {
        let (loop, registry) = started()
        let early = RecordingConnection("early")
        registry.add(early)
        registry.drain()
        let late = RecordingConnection("late")
        registry.add(late)
        #expect(early.drains == 1 && late.drains == 1)
        registry.closeAll()
        #expect(early.closes == 1 && late.closes == 1)
        registry.stop()
        _ = loop
    }
}
