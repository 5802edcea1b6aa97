import NIOCore
import NIOPosix
import SluiceHTTP1

/// Idle keep-alive connections to backends, owned by one event loop: taking and returning a
/// connection is a dictionary lookup with no lock, no future and no hop between threads.
public final class UpstreamConnectionPool: @unchecked Sendable {
    // @unchecked: every stored property is touched only on `eventLoop` (checked in debug builds).
    public let eventLoop: EventLoop
    public var connectTimeout: TimeAmount
    public var idleTimeout: TimeAmount
    public var maxIdlePerEndpoint: Int
    public var responseLimits: HTTP1Limits
    private var idle: [Endpoint: [UpstreamConnection]] = [:]
    private var sweeper: RepeatedTask?
    private var closed = false

    public init(eventLoop: EventLoop, connectTimeout: TimeAmount = .seconds(5), idleTimeout: TimeAmount = .seconds(30),
                maxIdlePerEndpoint: Int = 256, responseLimits: HTTP1Limits = .default) {
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxIdlePerEndpoint = maxIdlePerEndpoint
        self.responseLimits = responseLimits
    }

    /// Starts closing connections idle for longer than `idleTimeout`.
    public func start() {
        eventLoop.execute {
            let period = TimeAmount.nanoseconds(max(self.idleTimeout.nanoseconds / 6, 100_000_000))
            self.sweeper = self.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
                self.sweep()
            }
        }
    }

    /// The most recently used idle connection to `endpoint`, if one is still usable.
    public func acquire(_ endpoint: Endpoint) -> UpstreamConnection? {
        eventLoop.assertInEventLoop()
        guard var list = idle[endpoint], !list.isEmpty else { return nil }
        defer { idle[endpoint] = list }
        while let c = list.popLast() {
            if c.isUsable { return c }
            c.close()
        }
        return nil
    }

    /// Returns a connection after a complete exchange; closes it when it cannot be reused.
    public func release(_ connection: UpstreamConnection) {
        eventLoop.assertInEventLoop()
        connection.detach()
        guard !closed, connection.isUsable else {
            connection.close()
            return
        }
        connection.idleSince = .now()
        var list = idle[connection.endpoint] ?? []
        if list.count >= maxIdlePerEndpoint {
            connection.close()
            return
        }
        list.append(connection)
        idle[connection.endpoint] = list
    }

    /// Opens a new connection to `endpoint` on this pool's event loop.
    public func connect(_ endpoint: Endpoint) -> EventLoopFuture<UpstreamConnection> {
        let limits = responseLimits
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UpstreamConnection(endpoint: endpoint, limits: limits))
                }
            }
            .connect(to: endpoint.address)
            .flatMapThrowing { channel in
                try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
            }
    }

    /// Closes every idle connection to endpoints not in `keep` (after a configuration change).
    public func closeIdle(notIn keep: Set<Endpoint>) {
        eventLoop.assertInEventLoop()
        for (endpoint, list) in idle where !keep.contains(endpoint) {
            for c in list { c.close() }
            idle[endpoint] = nil
        }
    }

    public func closeAll() {
        eventLoop.assertInEventLoop()
        closed = true
        sweeper?.cancel()
        for list in idle.values { for c in list { c.close() } }
        idle.removeAll()
    }

    public var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }

    private func sweep() {
        let cutoff = NIODeadline.now() - idleTimeout
        for (endpoint, list) in idle {
            let keep = list.filter { c in
                if c.isUsable && c.idleSince > cutoff { return true }
                c.close()
                return false
            }
            idle[endpoint] = keep.isEmpty ? nil : keep
        }
    }
}
