import Logging
import NIOCore
import SluiceIO
import SluiceTLS
import SluiceUpstream
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The listeners and event loops of one running proxy.
public final class ProxyServer: Sendable {
    public let group: EpollEventLoopGroup
    public let config: ConfigStore
    public let settings: ProxySettings
    let loops: [EventLoopContext]
    let logger: Logger
    private let channels = Mutex<[TCPListener]>([])
    let listeners = ListenerInfo()
    /// Client connections open now, and whether accepting is paused at `--max-connections`.
    let openConnections = Atomic<Int>(0)
    private let acceptPaused = Atomic<Bool>(false)

    public init(workers: Int, config: ConfigStore, settings: ProxySettings, logger: Logger) {
        self.group = EpollEventLoopGroup(threads: max(1, workers))
        self.config = config
        self.settings = settings
        self.logger = logger
        var loops: [EventLoopContext] = []
        let listeners = self.listeners
        for (i, el) in group.eventLoops.enumerated() {
            // Built on its own loop, so that its objects come from that thread's malloc arena:
            // built here one after the other, the loops' state sat side by side in memory, and
            // what one loop writes on every request could share a cache line with the other's.
            loops.append(try! el.submit {
                EventLoopContext(eventLoop: el, index: i, config: config, settings: settings, logger: logger, listeners: listeners)
            }.wait())
        }
        self.loops = loops
        self.healthChecker = HealthChecker(group: group) { health, healthy in
            if healthy {
                logger.info("endpoint healthy again", metadata: ["service": "\(health.service)", "endpoint": "\(health.endpoint)"])
            } else {
                logger.warning("endpoint failed its health checks", metadata: ["service": "\(health.service)", "endpoint": "\(health.endpoint)"])
            }
        }
        for l in loops {
            l.upstreams.start()
            l.registry.start()
            l.startAccounting()
        }
    }

    private func context(for el: EventLoop) -> EventLoopContext {
        for l in loops where l.eventLoop === el { return l }
        preconditionFailure("event loop not of this server")
    }

    /// Opens a plain-HTTP listener. One listening socket per event loop (SO_REUSEPORT), so that
    /// accepting never hops threads and the kernel spreads connections over the workers.
    @discardableResult
    public func listenHTTP(host: String, port: Int) async throws -> SocketAddress {
        try await listen(host: host, port: port, tls: nil)
    }

    /// Opens the HTTPS listener: TLS (SNI picks the certificate) in front of the same proxy handler.
    @discardableResult
    public func listenHTTPS(host: String, port: Int, front: TLSFrontContext) async throws -> SocketAddress {
        let bound = try await listen(host: host, port: port, tls: front)
        // Redirects name the port actually bound (it may have been 0).
        listeners.httpsPort.store(bound.port ?? port, ordering: .relaxed)
        return bound
    }

    private func listen(host: String, port: Int, tls: TLSFrontContext?) async throws -> SocketAddress {
        var bound: SocketAddress? = nil
        var boundPort = port
        for (l, el) in zip(loops, group.eventLoops) {
            let ctx = l
            let address = try SocketAddress.makeAddressResolvingHost(host, port: boundPort)
            let listener = try await TCPListener.bind(
                to: address, on: el, backlog: 4096, reusePort: true,
                onError: { [logger] error in logger.warning("accept failed", metadata: ["error": "\(error)"]) }
            ) { [self] channel in
                self.countConnection(channel)
                channel.allowRemoteHalfClosure = true
                channel.maxMessagesPerRead = 16
                if let tls {
                    let handler = TLSServerHandler(front: tls, buffers: ctx.buffers)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    handler.outputDirectly(to: channel)  // first in the pipeline
                }
                let handler = ProxyConnectionHandler(loop: ctx, tls: tls != nil)
                try channel.pipeline.syncOperations.addHandler(handler)
                if tls == nil { handler.outputDirectly(to: channel) }  // first in the pipeline
            }.get()
            if bound == nil {
                bound = listener.localAddress
                // With port 0 the first bind picks a port; the other loops join it.
                boundPort = listener.localAddress.port ?? port
            }
            channels.withLock { $0.append(listener) }
        }
        return bound!
    }

    // MARK: - Connection limit

    /// Counts a new client connection; at the limit the listeners stop accepting (the kernel's
    /// backlog holds new connections) until one closes.
    private func countConnection(_ channel: Channel) {
        // Counted only under a limit (without one nothing reads it, and it was never decremented).
        guard let max = settings.maxConnections else { return }
        let n = openConnections.wrappingAdd(1, ordering: .relaxed).newValue
        if n >= max { setAccepting(false) }
        channel.closeFuture.whenComplete { _ in
            let left = self.openConnections.wrappingSubtract(1, ordering: .relaxed).newValue
            if left < max { self.setAccepting(true) }
        }
    }

    private func setAccepting(_ on: Bool) {
        guard acceptPaused.compareExchange(expected: on, desired: !on, ordering: .relaxed).exchanged else { return }
        if !on {
            logger.warning("connection limit reached: accepting paused", metadata: ["max": "\(settings.maxConnections ?? 0)"])
        }
        for listener in channels.withLock({ $0 }) { listener.setAccepting(on) }
    }

    /// Every loop's counters, summed (each loop copies its own, on the loop).
    public func collectCounters() async -> LoopMetrics.Counters {
        var total = LoopMetrics.Counters()
        for l in loops {
            let c = try? await l.eventLoop.submit { () -> LoopMetrics.Counters in
                var c = l.metrics.counters
                c.downstreamConnections = l.registry.count
                c.upstreamConnections = l.upstreams.openConnections
                return c
            }.get()
            if let c { total.add(c) }
        }
        return total
    }

    /// Graceful stop: close listeners, let requests in flight finish (bounded), close the rest.
    public func shutdown() async {
        ProcessMetrics.shared.ready.store(false, ordering: .relaxed)
        let listeners = channels.withLock { c in
            let all = c
            c = []
            return all
        }
        for listener in listeners { try? await listener.close().get() }
        for l in loops { l.eventLoop.execute { l.registry.drain() } }
        let deadline = NIODeadline.now() + settings.drainTimeout
        while NIODeadline.now() < deadline {
            var open = 0
            for l in loops {
                open += (try? await l.eventLoop.submit { l.registry.count }.get()) ?? 0
            }
            if open == 0 { break }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        for l in loops {
            try? await l.eventLoop.submit {
                l.registry.closeAll()
                l.registry.stop()
                l.upstreams.closeAll()
                l.accessLog?.flush()
            }.get()
        }
        try? await group.shutdownGracefully()
    }

    /// Active health checks, reconciled with the configuration after every reload.
    public let healthChecker: HealthChecker

    /// Starts and stops health checks to match the current configuration.
    public func applyHealthChecks() {
        let wanted = config.snapshot.healthChecks.map { (h, c) in
            (h, HealthChecker.Config(path: c.path, interval: .nanoseconds(Int64(c.interval * 1e9)), timeout: .nanoseconds(Int64(c.timeout * 1e9)),
                                     healthyThreshold: c.healthyThreshold, unhealthyThreshold: c.unhealthyThreshold,
                                     host: h.service.split(separator: ":").first.map { String($0.split(separator: "/").last ?? "") } ?? "localhost"))
        }
        healthChecker.reconcile(wanted)
    }

    /// After a reload: each loop takes the new snapshot now (dropping its hold on the old one
    /// rather than at its next request), and closes idle upstream connections to endpoints the
    /// configuration no longer uses.
    public func pruneUpstreams() {
        let keep = config.snapshot.endpoints
        for l in loops {
            l.eventLoop.execute {
                _ = l.snapshot
                l.upstreams.closeIdle(notIn: keep)
            }
        }
    }
}

/// Facts about the listeners that handlers need after binding.
final class ListenerInfo: Sendable {
    let httpsPort = Atomic<Int>(443)
}
