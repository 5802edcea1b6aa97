import NIOCore

/// What the application hears about the connection as a whole.
public protocol HTTP2ConnectionDelegate: HTTP2SessionDelegate {
    /// The handler is in a pipeline of an active channel.
    func http2ConnectionStarted(_ handler: HTTP2ServerHandler, context: ChannelHandlerContext)
    /// A read from the client was processed: a good moment to flush what it caused upstream.
    func http2ReceiveComplete()
    /// The channel closed; every open stream has been reported closed before this.
    func http2ConnectionClosed()
}

/// The server end of an HTTP/2 connection: client bytes in, nghttp2's frames out.
///
/// nghttp2 is never re-entered: bytes are fed only from `channelRead`, and frames are pulled only
/// when no feed is on the stack. Output is pulled while the channel is writable, so a slow client
/// stops the pulling, the streams' queues fill, and their sources are told to pause.
public final class HTTP2ServerHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public let session: HTTP2Session
    private let delegate: HTTP2ConnectionDelegate
    private var context: ChannelHandlerContext? = nil
    private var started = false
    private var receiving = false
    private var producing = false
    private var closing = false
    /// Bytes handed over by the handler that saw the connection first (the preface, or the
    /// first TLS records after ALPN chose h2).
    private var initial: ByteBuffer?
    /// Where output buffers come from, and where each goes once written: the proxy passes its
    /// event loop's pool, so the next connection writes into memory still in cache.
    private let takeBuffer: (_ minimumCapacity: Int) -> ByteBuffer
    private let giveBuffer: (ByteBuffer) -> Void

    /// `memory`: the event loop's pool for nghttp2's allocations (nil: the session's own).
    /// `takeBuffer`, `giveBuffer`: a pool of output buffers (by default none: each round
    /// allocates).
    public init(limits: HTTP2Limits, delegate: HTTP2ConnectionDelegate, initial: ByteBuffer? = nil, memory: HTTP2MemoryPool? = nil,
                takeBuffer: @escaping (_ minimumCapacity: Int) -> ByteBuffer = { ByteBufferAllocator().buffer(capacity: $0) },
                giveBuffer: @escaping (ByteBuffer) -> Void = { _ in }) {
        self.session = HTTP2Session(limits: limits, memory: memory)
        self.delegate = delegate
        self.initial = initial
        self.takeBuffer = takeBuffer
        self.giveBuffer = giveBuffer
        session.delegate = delegate
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        // Break the handler ↔ context cycle (NIO leaves it): a closed connection must not keep
        // its pipeline, session and delegate alive. The session's delegate goes too (the
        // delegate may hold this handler).
        self.context = nil
        session.delegate = nil
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        delegate.http2ConnectionStarted(self, context: context)
        if let first = initial {
            initial = nil
            feed(first, context: context)
        } else {
            produceOutput()
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        feed(unwrapInboundIn(data), context: context)
    }

    private func feed(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        guard !closing else { return }
        receiving = true
        let ok = bytes.withUnsafeReadableBytes { session.receive($0) }
        receiving = false
        delegate.http2ReceiveComplete()
        produceOutput()
        if !ok { closeAfterOutput() }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { produceOutput() }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        closing = true
        delegate.http2ConnectionClosed()
        session.delegate = nil
        context.fireChannelInactive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            // The client will send nothing more; streams it opened can still be answered.
            session.goAway()
            produceOutput()
            if session.openStreams == 0 { closeAfterOutput() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    // MARK: - Output

    /// Pulls frames from nghttp2 and writes them. Called after every feed and by the application
    /// after it queued response bytes from outside a feed.
    public func produceOutput() {
        guard let context, started, !receiving, !closing else { return }
        guard !producing else {
            // Asked again from inside our own flush: on a plain socket the flush writes at once,
            // the channel turns writable again and says so while we are still here. Dropped,
            // that was the only wake-up: the rest of a response waited for the next timeout
            // tick (h2c downloads ran at 128 KiB per half second).
            produceAgain = true
            return
        }
        producing = true
        defer { producing = false }
        repeat {
            produceAgain = false
            var fatal = false
            // Each round's frames are written when the next round has some too; the last
            // round's go with the flush, in one pass down the pipeline.
            var last: ByteBuffer? = nil
            while context.channel.isWritable {
                var out = takeBuffer(16 * 1024)
                if !session.produce(into: &out, limit: 64 * 1024) { fatal = true }
                if out.readableBytes == 0 {
                    giveBuffer(out)
                    break
                }
                // Given back once written, not before: the TLS handler below takes from the same
                // pool for what it gathers, and must not take the buffer it is reading.
                if let previous = last {
                    context.write(wrapOutboundOut(previous), promise: nil)
                    giveBuffer(previous)
                }
                last = out
                // Short of the limit, nghttp2 had nothing more: no second round.
                if fatal || out.readableBytes < 64 * 1024 { break }
            }
            if let last {
                context.writeAndFlush(wrapOutboundOut(last), promise: nil)
                giveBuffer(last)
            }
            if fatal || session.isFinished {
                closeAfterOutput()
                return
            }
        } while produceAgain && !closing && context.channel.isWritable
    }

    /// `produceOutput` was called while it ran.
    private var produceAgain = false

    /// The connection has been idle for a while: let go of every buffer kept for reuse.
    public func releaseSpares() {
        session.releaseSpares()
    }

    /// Graceful shutdown: GOAWAY now, close once open streams are done.
    public func drain() {
        session.goAway()
        produceOutput()
    }

    public func close() {
        context?.close(promise: nil)
    }

    private func closeAfterOutput() {
        guard !closing, let context else { return }
        closing = true
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
