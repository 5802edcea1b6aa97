import NIOCore
import SluiceIO
import SluiceHTTP1
import Synchronization

/// Active health checks: each checked endpoint is probed on one of the event loops every
/// interval (±10 % jitter, so checks of many endpoints do not fall in step), by an HTTP GET or a
/// TCP connect, with a timeout. Results go to the endpoint's `EndpointHealth`, which flips only
/// after the configured number of consecutive results. Probes never block a loop.
public final class HealthChecker: Sendable {
    public struct Config: Sendable, Hashable {
        /// HTTP GET of this path; nil: a TCP connect.
        public var path: String?
        public var interval: TimeAmount
        public var timeout: TimeAmount
        public var healthyThreshold: Int
        public var unhealthyThreshold: Int
        /// The Host of probe requests.
        public var host: String

        public init(path: String?, interval: TimeAmount, timeout: TimeAmount, healthyThreshold: Int, unhealthyThreshold: Int, host: String) {
            self.path = path
            self.interval = interval
            self.timeout = timeout
            self.healthyThreshold = healthyThreshold
            self.unhealthyThreshold = unhealthyThreshold
            self.host = host
        }
    }

    final class Check: @unchecked Sendable {
        // @unchecked: `task` and `running` are touched only on `loop`.
        let health: EndpointHealth
        let config: Config
        let loop: EpollEventLoop
        var task: Scheduled<Void>? = nil
        var stopped = false

        init(health: EndpointHealth, config: Config, loop: EpollEventLoop) {
            self.health = health
            self.config = config
            self.loop = loop
        }
    }

    private let group: EpollEventLoopGroup
    private let checks = Mutex<[ObjectIdentifier: Check]>([:])
    /// Told when an endpoint's verdict flips (for the log).
    private let onChange: @Sendable (EndpointHealth, Bool) -> Void

    public init(group: EpollEventLoopGroup, onChange: @escaping @Sendable (EndpointHealth, Bool) -> Void) {
        self.group = group
        self.onChange = onChange
    }

    /// Makes the running checks exactly `wanted`: new ones start, removed or changed ones stop.
    /// An endpoint no longer checked counts as healthy again (only its own checks may say not).
    public func reconcile(_ wanted: [(EndpointHealth, Config)]) {
        var start: [Check] = []
        var stop: [Check] = []
        checks.withLock { current in
            var next: [ObjectIdentifier: Check] = [:]
            for (h, config) in wanted {
                let id = ObjectIdentifier(h)
                if let c = current[id], c.config == config {
                    next[id] = c
                    current[id] = nil
                } else {
                    let c = Check(health: h, config: config, loop: group.nextLoop())
                    next[id] = c
                    start.append(c)
                }
            }
            stop = Array(current.values)
            current = next
        }
        for c in stop {
            c.loop.execute {
                c.stopped = true
                c.task?.cancel()
                if !(self.checks.withLock { $0[ObjectIdentifier(c.health)] != nil }) {
                    c.health.activeHealthy.store(true, ordering: .relaxed)
                }
            }
        }
        for c in start { c.loop.execute { self.schedule(c, first: true) } }
    }

    public var count: Int { checks.withLock { $0.count } }

    private func schedule(_ c: Check, first: Bool) {
        guard !c.stopped else { return }
        let base = c.config.interval.nanoseconds
        let jitter = Int64.random(in: -(base / 10)...(base / 10))
        let delay: TimeAmount = first ? .nanoseconds(Int64.random(in: 0...max(1, base / 10))) : .nanoseconds(base + jitter)
        c.task = c.loop.scheduleTask(in: delay) {
            self.probe(c)
        }
    }

    private func probe(_ c: Check) {
        guard !c.stopped else { return }
        let done = ProbeResult(c.loop.makePromise(of: Bool.self))
        let config = c.config
        let timeout = c.loop.scheduleTask(in: config.timeout) { done.succeed(false) }
        let connecting = SocketChannel.connect(to: c.health.endpoint.address, on: c.loop, timeout: config.timeout) { channel in
            if let path = config.path {
                try channel.pipeline.syncOperations.addHandler(HealthProbeHandler(path: path, host: config.host, done: done))
            }
        }
        connecting.whenComplete { result in
            switch result {
            case .success(let channel):
                if config.path == nil { done.succeed(true) }
                done.promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure:
                done.succeed(false)
            }
        }
        done.promise.futureResult.whenSuccess { ok in
            timeout.cancel()
            if let flipped = c.health.recordCheck(success: ok, healthyThreshold: config.healthyThreshold, unhealthyThreshold: config.unhealthyThreshold) {
                self.onChange(c.health, flipped)
            }
            self.schedule(c, first: false)
        }
    }
}

/// A probe's verdict: the first of connect, response, close or timeout decides.
final class ProbeResult: @unchecked Sendable {
    // @unchecked: used only on the probe's event loop.
    let promise: EventLoopPromise<Bool>
    private var decided = false

    init(_ promise: EventLoopPromise<Bool>) { self.promise = promise }

    func succeed(_ ok: Bool) {
        guard !decided else { return }
        decided = true
        promise.succeed(ok)
    }
}

/// Sends one GET and reads the status of the response.
final class HealthProbeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let path: String
    private let host: String
    private let done: ProbeResult
    private var parser = HTTP1Parser(kind: .response)
    private var inbound = ByteBuffer()

    init(path: String, host: String, done: ProbeResult) {
        self.path = path
        self.host = host
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        var b = context.channel.allocator.buffer(capacity: 128)
        b.writeString("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n")
        context.writeAndFlush(NIOAny(b), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbound.receive(unwrapInboundIn(data))
        let event = inbound.withUnsafeReadableBytes { parser.parse($0) }
        switch event {
        case .head:
            let status = parser.head.status
            if status >= 100 && status < 200 { return }
            done.succeed(status >= 200 && status < 400)
        case .error:
            done.succeed(false)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.succeed(false)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.succeed(false)
        context.close(promise: nil)
    }
}
