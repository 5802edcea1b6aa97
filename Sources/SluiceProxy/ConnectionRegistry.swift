import NIOCore
import SluiceHTTP2
import SluiceTLS

/// A client connection a shutdown can drain (HTTP/1.1 or HTTP/2).
protocol DrainableConnection: AnyObject {
    /// Idle: close now. Busy: finish what is in flight, accept nothing new, then close.
    func beginDrain()
    func forceClose()
    /// Acts on whatever timed out by `now` (head, body, upstream and idle timeouts).
    func checkTimeouts(now: NIODeadline)
}

/// The live client connections of one event loop: one timer checks all their timeouts, and a
/// shutdown drains them.
final class ConnectionRegistry: @unchecked Sendable {
    // @unchecked: touched only on `eventLoop`.
    let eventLoop: EventLoop
    /// The loop's pools, swept with the connections (an idle loop lets their memory go).
    private let buffers: BufferPool
    private let http2Memory: HTTP2MemoryPool?
    private var handlers: [ObjectIdentifier: DrainableConnection] = [:]
    private(set) var draining = false
    private var sweeper: RepeatedTask? = nil

    /// How often timeouts are checked, and so how late past its deadline one may fire.
    static let tick = TimeAmount.milliseconds(500)

    init(eventLoop: EventLoop, buffers: BufferPool, http2Memory: HTTP2MemoryPool? = nil) {
        self.eventLoop = eventLoop
        self.buffers = buffers
        self.http2Memory = http2Memory
    }

    var count: Int { handlers.count }

    func add(_ h: DrainableConnection) {
        handlers[ObjectIdentifier(h)] = h
        if draining { h.beginDrain() }
    }

    func remove(_ h: DrainableConnection) {
        handlers[ObjectIdentifier(h)] = nil
    }

    // MARK: - Timeouts

    /// Starts the loop's timeout sweep. A timer per connection instead cost three allocations
    /// and a heap insertion and removal on every accept, and one re-arm per connection per tick
    /// while idle; the sweep is one task per loop, whatever the number of connections.
    func start() {
        eventLoop.execute {
            guard self.sweeper == nil else { return }
            self.sweeper = self.eventLoop.scheduleRepeatedTask(initialDelay: Self.tick, delay: Self.tick) { _ in
                self.sweep(now: .now())
            }
        }
    }

    /// Checks every connection once. A connection that closes meanwhile removes itself; the
    /// loop walks the dictionary as it was when the sweep began.
    func sweep(now: NIODeadline) {
        eventLoop.assertInEventLoop()
        for h in handlers.values { h.checkTimeouts(now: now) }
        buffers.sweep()
        http2Memory?.sweep()
    }

    func stop() {
        sweeper?.cancel()
        sweeper = nil
    }

    // MARK: - Shutdown

    /// Idle connections close now; busy ones after their current response.
    func drain() {
        eventLoop.assertInEventLoop()
        draining = true
        for h in Array(handlers.values) { h.beginDrain() }
    }

    func closeAll() {
        for h in Array(handlers.values) { h.forceClose() }
    }
}
