import NIOCore
import SluiceHTTP1
import SluiceIO

/// One keep-alive connection to a backend, and the handler at the end of its pipeline.
///
/// It parses responses with `HTTP1Parser` and hands heads, body slices and the end to the
/// delegate attached for the current request; between requests it sits in its event loop's
/// `UpstreamConnectionPool`. Everything happens on that one event loop.
///
/// The channel does not read by itself (`autoRead` off): the handler asks for the next read at
/// the end of each one, unless the downstream has paused it. With auto-read, NIO asked through
/// the whole pipeline after every read and this handler passed the request on (or held it):
/// the same decision, one pipeline pass fewer per response.
public final class UpstreamConnection: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    enum Mode {
        case http
        case tunnel
        case closed
    }

    public let endpoint: Endpoint
    private var context: ChannelHandlerContext?
    /// The channel, when this handler is the only one on it (the pool builds it so): writes,
    /// flushes and reads go to the socket directly instead of down the pipeline.
    private var socket: SocketChannel? = nil
    private var parser: HTTP1Parser
    private var inbound: ByteBuffer
    private var mode: Mode = .http
    private var delegate: UpstreamResponseDelegate?
    /// Any byte of the current response seen (a reset before that may be retried).
    public private(set) var sawResponseBytes = false
    /// The upstream said it will close, or framing was in doubt: never reuse.
    public private(set) var mustClose = false
    public private(set) var requestsSent = 0
    var idleSince = NIODeadline.now()
    var lastActivity = NIODeadline.now()
    private var readPaused = false
    /// A read is owed: the last one ended while reading was paused.
    private var pendingRead = false
    /// The channel's state as its events reported it: reading `context.channel` on every
    /// request copied an existential and dispatched through it (a few ARC operations each).
    /// A connection reaches its user only after its connect succeeded, so it is open until
    /// `channelInactive`.
    private var inactive = false
    private var writable = true
    /// Told once when the connection closes (the pool's count of open connections).
    var onClose: (() -> Void)? = nil

    public init(endpoint: Endpoint, limits: HTTP1Limits = .default) {
        self.endpoint = endpoint
        self.parser = HTTP1Parser(kind: .response, limits: limits)
        self.inbound = ByteBuffer()
    }

    public var isUsable: Bool {
        mode == .http && !mustClose && !inactive && context != nil && inbound.readableBytes == 0 && parser.isIdle
    }

    public var isWritable: Bool { writable && !inactive && context != nil }
    public var channel: Channel? { context?.channel }
    /// When the connection last saw a byte (or the end) from the upstream: during the delegate's
    /// response callbacks, the time of the event that caused them.
    public var lastUpstreamActivity: NIODeadline { lastActivity }

    // MARK: - Request side (called by the proxy)

    /// Makes `delegate` the receiver of the next response.
    public func attach(_ delegate: UpstreamResponseDelegate, requestIsHead: Bool, now: NIODeadline = .now()) {
        self.delegate = delegate
        sawResponseBytes = false
        requestsSent += 1
        lastActivity = now
        parser.responseToHead = requestIsHead
    }

    /// Hands the response in progress to `delegate` (its client went away and the rest is read
    /// and dropped: `UpstreamConnectionPool.drain`). Unlike `attach`, nothing about the request
    /// changes; reading resumes if the client had paused it.
    func handOver(to delegate: UpstreamResponseDelegate) {
        self.delegate = delegate
        setReadPaused(false)
    }

    /// Forgets the delegate; the connection is idle (or about to be closed).
    public func detach() {
        delegate = nil
        readPaused = false
        if pendingRead, let context {
            pendingRead = false
            requestRead(context)
        }
    }

    public func write(_ buffer: ByteBuffer) {
        if let socket {
            socket.writeDirect(buffer)
        } else {
            context?.write(wrapOutboundOut(buffer), promise: nil)
        }
    }

    /// One pass down the pipeline instead of two.
    public func writeAndFlush(_ buffer: ByteBuffer) {
        if let socket {
            socket.writeDirect(buffer)
            socket.flushDirect()
        } else {
            context?.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
    }

    public func flush() {
        if let socket { socket.flushDirect() } else { context?.flush() }
    }

    private func requestRead(_ context: ChannelHandlerContext) {
        if let socket { socket.readDirect() } else { context.read() }
    }

    /// Called by the code that added this handler alone to `channel`'s pipeline (the pool):
    /// nothing sits between it and the socket, so the pipeline's walk is skipped.
    func outputDirectly(to channel: SocketChannel) {
        assert(context?.channel === channel, "not this handler's channel")
        socket = channel
        channel.readDirectly(to: self)
    }

    /// Stops (or resumes) reading from the upstream while the downstream cannot take more.
    public func setReadPaused(_ paused: Bool) {
        readPaused = paused
        if !paused && pendingRead, let context {
            pendingRead = false
            requestRead(context)
        }
    }

    /// After a 101: every further byte is forwarded raw in both directions.
    public func enterTunnel() {
        mode = .tunnel
        mustClose = true
        if inbound.readableBytes > 0 {
            let rest = inbound
            inbound = ByteBuffer()
            delegate?.upstreamTunnelData(rest)
        }
    }

    public func close() {
        mustClose = true
        delegate = nil
        guard let context, mode != .closed else { return }
        mode = .closed
        context.close(promise: nil)
    }

    /// The request could not be completed: the connection's framing is in doubt.
    public func markUnreusable() {
        mustClose = true
    }

    // MARK: - ChannelHandler

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        writable = context.channel.isWritable
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        socket?.readDirectly(to: nil)
        socket = nil
    }

    public func channelActive(context: ChannelHandlerContext) {
        requestRead(context)
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received(unwrapInboundIn(data))
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        readComplete(context)
    }

    private func received(_ incoming: ByteBuffer) {
        lastActivity = .now()
        switch mode {
        case .closed:
            return
        case .tunnel:
            delegate?.upstreamTunnelData(incoming)
            return
        case .http:
            break
        }
        guard delegate != nil else {
            // Bytes on an idle connection belong to no request: the framing is broken.
            mustClose = true
            close()
            return
        }
        sawResponseBytes = true
        inbound.receive(incoming)
        process()
    }

    private func process() {
        // Bound once, not on every turn: binding `self.delegate` in the loop's condition retained
        // and released it for each event of a response (head, body, end).
        guard var delegate else { return }
        while mode == .http {
            if self.delegate !== delegate {
                guard let current = self.delegate else { return }
                delegate = current
            }
            let event = inbound.withUnsafeReadableBytes { parser.parse($0) }
            switch event {
            case .needMore(let consumed):
                inbound.moveReaderIndex(forwardBy: consumed)
                return
            case .head(let consumed):
                let head = parser.head
                if head.wantsClose { mustClose = true }
                let view = inbound
                inbound.moveReaderIndex(forwardBy: consumed)
                delegate.upstreamResponseHead(head, buffer: view)
                if head.status == 101 || parser.responseToConnect {
                    // The delegate decides whether to tunnel; nothing here is HTTP any more.
                    return
                }
            case .body(let range, let consumed):
                let slice = inbound.getSlice(at: inbound.readerIndex + range.lowerBound, length: range.count)!
                inbound.moveReaderIndex(forwardBy: consumed)
                delegate.upstreamResponseBody(slice)
            case .end(let trailers, let consumed):
                let t = trailers.isEmpty ? nil : inbound.getSlice(at: inbound.readerIndex + trailers.lowerBound, length: trailers.count)
                inbound.moveReaderIndex(forwardBy: consumed)
                let informational = parser.head.isInformational
                if !informational { self.delegate = nil }
                delegate.upstreamResponseEnd(trailers: t)
                if !informational {
                    if inbound.readableBytes > 0 {
                        // More bytes than the response held: the upstream is out of sync.
                        mustClose = true
                    } else {
                        // Let go of the read's storage: the channel reads the next response
                        // into the same buffer, which it can reuse only when nobody holds it
                        // (held, it cost an allocation per request).
                        inbound = ByteBuffer()
                    }
                    return
                }
            case .error(let e):
                mustClose = true
                self.delegate = nil
                delegate.upstreamFailed(.invalidResponse(e))
                close()
                return
            }
        }
    }

    private func readComplete(_ context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
        // Asked for here, before NIO looks: a channel that has no read pending when this returns
        // stops polling its socket.
        if readPaused {
            pendingRead = true
        } else {
            requestRead(context)
        }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        delegate?.upstreamWritabilityChanged(isWritable: writable)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        // The end of a close-delimited response is timed here.
        lastActivity = .now()
        if let onClose {
            self.onClose = nil
            onClose()
        }
        let wasTunnel = mode == .tunnel
        mode = .closed
        mustClose = true
        guard let delegate else { return }
        self.delegate = nil
        if wasTunnel {
            delegate.upstreamFailed(.closedMidResponse)
            return
        }
        if let event = parser.finish() {
            if case .end = event {
                delegate.upstreamResponseEnd(trailers: nil)
                return
            }
        }
        delegate.upstreamFailed(sawResponseBytes ? .closedMidResponse : .closedBeforeResponse)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A reset or I/O error: channelInactive follows and reports it to the delegate.
        mustClose = true
        context.close(promise: nil)
    }
}

// MARK: - Direct reads

extension UpstreamConnection: SocketChannelReader {
    public func socketChannelRead(_ buffer: ByteBuffer) {
        received(buffer)
    }

    public func socketChannelReadComplete() {
        if let context { readComplete(context) }
    }
}
