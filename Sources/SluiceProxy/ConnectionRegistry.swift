import NIOCore

/// The live client connections of one event loop, so that a shutdown can drain them.
final class ConnectionRegistry: @unchecked Sendable {
    // @unchecked: touched only on `eventLoop`.
    let eventLoop: EventLoop
    private var handlers: [ObjectIdentifier: ProxyConnectionHandler] = [:]
    private(set) var draining = false

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    var count: Int { handlers.count }

    func add(_ h: ProxyConnectionHandler) {
        handlers[ObjectIdentifier(h)] = h
        if draining { h.beginDrain() }
    }

    func remove(_ h: ProxyConnectionHandler) {
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
