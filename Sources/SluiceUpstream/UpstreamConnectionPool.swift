import NIOCore
import SluiceIO
import SluiceHTTP1

/// Idle keep-alive connections to backends, owned by one event loop: taking and returning a
/// connection is a dictionary lookup with no lock, no future and no hop between threads.
public final class UpstreamConnectionPool: @unchecked Sendable {
    // @unchecked: every stored property is touched only on `eventLoop` (checked in debug builds).
    public let eventLoop: EventLoop
    public var connectTimeout: TimeAmount
    public var idleTimeout: TimeAmount
    /// Idle connections kept per endpoint on this loop; a connection returned above it is
    /// closed. At 1,024 it churned under many requests in flight: a burst of responses left more
    /// idle than the cap, the extra ones were closed, and the next burst of requests opened them
    /// again, hundreds at once, enough to overflow a backend's accept queue (nginx listens with
    /// a backlog of 511). The dropped SYNs were retried after a second: h2 with 2,560 streams in
    /// flight had a p99 of 0.3–1.2 s against haproxy's 0.16 s (haproxy keeps idle connections
    /// until they time out). Idle connections close after `idleTimeout` in any case: the cap
    /// only bounds the worst case.
    public var maxIdlePerEndpoint: Int
    public var responseLimits: HTTP1Limits
    /// A class per endpoint, so that taking and returning mutate one array in place (a
    /// dictionary value copied out and stored back would copy the whole list every time).
    private final class IdleStack {
        var connections: [UpstreamConnection] = []
    }

    private var idle: [Endpoint: IdleStack] = [:]
    /// The stack used last: most traffic goes to few endpoints, and comparing an endpoint's key
    /// is cheaper than hashing the endpoint (twice per request).
    private var recentKey = Endpoint.Key()
    private var recentStack: IdleStack? = nil
    private var sweeper: RepeatedTask?
    private var closed = false
    /// Upstream connections of this loop that are open (idle or busy).
    public private(set) var openConnections = 0

    public init(eventLoop: EventLoop, connectTimeout: TimeAmount = .seconds(5), idleTimeout: TimeAmount = .seconds(30),
                maxIdlePerEndpoint: Int = 8192, responseLimits: HTTP1Limits = .default) {
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
        guard let stack = stack(for: endpoint, create: false) else { return nil }
        return take(from: stack)
    }

    /// The same for endpoint `i` of `pool`. When it is the endpoint this loop used last (most
    /// traffic goes to few endpoints), only its key is compared: the endpoint is not copied,
    /// and a copy retains the address box that every event loop shares.
    public func acquire(from pool: BackendPool, _ i: Int) -> UpstreamConnection? {
        eventLoop.assertInEventLoop()
        let key = pool.endpointKeys[i]
        if key.exact && key == recentKey, let recentStack { return take(from: recentStack) }
        return acquire(pool.endpoints[i])
    }

    private func take(from stack: IdleStack) -> UpstreamConnection? {
        while let c = stack.connections.popLast() {
            if c.isUsable { return c }
            c.close()
        }
        return nil
    }

    /// Returns a connection after a complete exchange; closes it when it cannot be reused.
    public func release(_ connection: UpstreamConnection, now: NIODeadline = .now()) {
        eventLoop.assertInEventLoop()
        connection.detach()
        guard !closed, connection.isUsable else {
            connection.close()
            return
        }
        connection.idleSince = now
        // The key first, as in `acquire(from:_:)`: passing the endpoint on copies it.
        let key = connection.endpoint.key
        let stack: IdleStack
        if key.exact && key == recentKey, let recent = recentStack {
            stack = recent
        } else {
            stack = self.stack(for: connection.endpoint, create: true)!
        }
        if stack.connections.count >= maxIdlePerEndpoint {
            connection.close()
            return
        }
        stack.connections.append(connection)
    }

    private func stack(for endpoint: Endpoint, create: Bool) -> IdleStack? {
        if endpoint.key.exact && endpoint.key == recentKey, let recentStack { return recentStack }
        var stack = idle[endpoint]
        if stack == nil && create {
            stack = IdleStack()
            idle[endpoint] = stack
        }
        if let stack {
            recentKey = endpoint.key
            recentStack = stack
        }
        return stack
    }

    /// Opens a new connection to `endpoint` on this pool's event loop. Sockets exist only on
    /// SluiceIO's loops: a pool on another loop (an embedded one, in unit tests) refuses.
    public func connect(_ endpoint: Endpoint, timeout: TimeAmount? = nil) -> EventLoopFuture<UpstreamConnection> {
        let limits = responseLimits
        guard let loop = eventLoop as? EpollEventLoop else {
            return eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
        }
        // UpstreamConnection asks for each read: no auto-read.
        return SocketChannel.connect(to: endpoint.address, on: loop, timeout: timeout ?? connectTimeout, autoRead: false) { channel in
            let conn = UpstreamConnection(endpoint: endpoint, limits: limits)
            try channel.pipeline.syncOperations.addHandler(conn)
            conn.outputDirectly(to: channel)  // the pipeline's only handler
        }
            .flatMapThrowing { channel in
                let conn = try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
                self.openConnections += 1
                conn.onClose = { self.openConnections -= 1 }
                return conn
            }
    }

    /// Closes every idle connection to endpoints not in `keep` (after a configuration change).
    public func closeIdle(notIn keep: Set<Endpoint>) {
        eventLoop.assertInEventLoop()
        for (endpoint, stack) in idle where !keep.contains(endpoint) {
            for c in stack.connections { c.close() }
            idle[endpoint] = nil
        }
        forgetRecent()
    }

    public func closeAll() {
        eventLoop.assertInEventLoop()
        closed = true
        sweeper?.cancel()
        for stack in idle.values { for c in stack.connections { c.close() } }
        idle.removeAll()
        forgetRecent()
    }

    private func forgetRecent() {
        recentKey = Endpoint.Key()
        recentStack = nil
    }

    public var idleCount: Int { idle.values.reduce(0) { $0 + $1.connections.count } }

    private func sweep() {
        let cutoff = NIODeadline.now() - idleTimeout
        for (endpoint, stack) in idle {
            stack.connections.removeAll { c in
                if c.isUsable && c.idleSince > cutoff { return false }
                c.close()
                return true
            }
            if stack.connections.isEmpty { idle[endpoint] = nil }
        }
        forgetRecent()
    }
}

// MARK: - Draining a response nobody waits for

extension UpstreamConnectionPool {
    /// The client of the response in progress on `connection` went away after its request was
    /// sent whole. Closing the connection would cost a later request a new one, and a burst of
    /// such closes (a load generator stopping, many streams cancelled at once) a burst of
    /// connects that can overflow the backend's accept queue (benchmarks/RESULTS.md, session
    /// 19). So the rest of the response is read and dropped, and the connection comes back to
    /// the pool; it is closed instead when the rest is longer than `byteLimit` bytes or does not
    /// end within `timeout`. `finalHeadSeen`: the final (non-1xx) head has already arrived.
    public func drain(_ connection: UpstreamConnection, finalHeadSeen: Bool, byteLimit: Int = 64 * 1024, timeout: TimeAmount) {
        eventLoop.assertInEventLoop()
        let drain = ResponseDrain(pool: self, connection: connection, finalHeadSeen: finalHeadSeen, byteLimit: byteLimit)
        drain.timer = eventLoop.scheduleTask(in: timeout) { drain.finish(reuse: false) }
        connection.handOver(to: drain)
    }
}

/// Reads a response to its end for nobody (`UpstreamConnectionPool.drain`).
final class ResponseDrain: UpstreamResponseDelegate, @unchecked Sendable {
    // @unchecked: used on the pool's event loop only, as the connection is.
    private let pool: UpstreamConnectionPool
    /// Let go at the end: the timer's closure, queued until its deadline, holds this object.
    private var connection: UpstreamConnection?
    private var finalHeadSeen: Bool
    private var bytesLeft: Int
    var timer: Scheduled<Void>? = nil

    init(pool: UpstreamConnectionPool, connection: UpstreamConnection, finalHeadSeen: Bool, byteLimit: Int) {
        self.pool = pool
        self.connection = connection
        self.finalHeadSeen = finalHeadSeen
        self.bytesLeft = byteLimit
    }

    func finish(reuse: Bool) {
        guard let connection else { return }
        self.connection = nil
        timer?.cancel()
        timer = nil
        if reuse { pool.release(connection) } else { connection.close() }
    }

    func upstreamResponseHead(_ head: HTTP1Head, buffer: ByteBuffer) {
        // A switch of protocols has no end to wait for.
        if head.status == 101 { finish(reuse: false); return }
        if !head.isInformational { finalHeadSeen = true }
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        bytesLeft -= body.readableBytes
        if bytesLeft < 0 { finish(reuse: false) }
    }

    func upstreamResponseEnd(trailers: ByteBuffer?) {
        // The end of a 1xx is not the end of the response.
        if finalHeadSeen { finish(reuse: true) }
    }

    func upstreamTunnelData(_ data: ByteBuffer) { finish(reuse: false) }
    func upstreamFailed(_ error: UpstreamError) { finish(reuse: false) }
    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}
}
