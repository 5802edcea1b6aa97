import NIOCore

/// A client connection a shutdown can drain (HTTP/1.1 or HTTP/2).
protocol DrainableConnection: AnyObject {
    /// Idle: close now. Busy: finish what is in flight, accept nothing new, then close.
    func beginDrain()
    func forceClose()
}

/// The live client connections of one event loop, so that a shutdown can drain them.
final class ConnectionRegistry: @unchecked Sendable {
    // @unchecked: touched only on `eventLoop`.
    let eventLoop: EventLoop
    private var handlers: [ObjectIdentifier: DrainableConnection] = [:]
    private(set) var draining = false

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    var count: Int { handlers.count }

    func add(_ h: DrainableConnection) {
        handlers[ObjectIdentifier(h)] = h
        if draining { h.beginDrain() }
    }

    func remove(_ h: DrainableConnection) {
        handlers[ObjectIdentifier(h)] = nil
    }

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
