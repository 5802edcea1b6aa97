import Logging
import NIOCore
import SluiceHTTP2
import SluiceUpstream

/// The proxy side of one HTTP/2 client connection: each stream becomes an `HTTP2Exchange`
/// forwarded over the event loop's HTTP/1.1 upstream pool, many in parallel.
final class HTTP2ProxyConnection: HTTP2ConnectionDelegate, DrainableConnection {
    let loop: EventLoopContext
    let tls: Bool
    /// The certificate SNI chose, to refuse a host another certificate serves (421): browsers
    /// coalesce h2 connections across the hosts a certificate names.
    let sniCertificate: ObjectIdentifier?
    private(set) var client: ClientInfo
    /// Strong (the handler holds this connection too) and dropped when the connection closes:
    /// weak references would put every retain of both objects on the side-table slow path.
    private(set) var handler: HTTP2ServerHandler?
    private(set) var context: ChannelHandlerContext?
    /// Open exchanges, in no order. Each knows its position (`HTTP2Exchange.slot`), so adding
    /// and removing one hashes nothing: a dictionary by stream id cost two SipHash passes and a
    /// few hundred instructions per stream.
    private var exchanges: [HTTP2Exchange] = []

    private func add(_ ex: HTTP2Exchange) {
        ex.slot = exchanges.count
        exchanges.append(ex)
    }

    /// Removes `ex`; false when it was not open here.
    private func remove(_ ex: HTTP2Exchange) -> Bool {
        let i = ex.slot
        guard i >= 0, i < exchanges.count, exchanges[i] === ex else { return false }
        let last = exchanges.removeLast()
        if i < exchanges.count {
            exchanges[i] = last
            last.slot = i
        }
        ex.slot = -1
        return true
    }
    /// Exchanges that wrote to their upstream during the current read from the client.
    private var upstreamsToFlush: [HTTP2Exchange] = []
    private var lastActivity = NIODeadline.now()
    /// Shared by the connection's streams (browsers coalesce hosts, so it can change).
    var hostPolicyMemo = HostPolicyMemo()
    private var closed = false
    private var outputScheduled = false

    init(loop: EventLoopContext, tls: Bool, sniCertificate: ObjectIdentifier?) {
        self.loop = loop
        self.tls = tls
        self.sniCertificate = sniCertificate
        self.client = ClientInfo.placeholder(tls: tls)
    }

    var session: HTTP2Session? { handler?.session }
    var settings: ProxySettings { loop.settings }

    // MARK: - Reused head buffers

    /// Upstream request heads come from the loop's pool and go back once their stream no longer
    /// needs them for a retry (`BufferPool`): no allocation per stream, and warm memory.
    func headBuffer(capacity: Int) -> ByteBuffer {
        loop.buffers.take(minimumCapacity: capacity)
    }

    func recycle(_ head: ByteBuffer) {
        loop.buffers.give(head)
    }

    /// One response field block, emptied and filled for each response: nghttp2 copies the
    /// fields when the response is submitted, so the block is free again right after.
    private var spareBlock: HTTP2HeaderBlock? = nil

    func takeHeaderBlock() -> HTTP2HeaderBlock {
        guard var b = spareBlock else { return HTTP2HeaderBlock(capacity: 512) }
        spareBlock = nil
        b.removeAll()
        return b
    }

    func returnHeaderBlock(_ block: HTTP2HeaderBlock) {
        if block.capacity <= 4096 { spareBlock = block }
    }

    // MARK: - Connection events

    func http2ConnectionStarted(_ handler: HTTP2ServerHandler, context: ChannelHandlerContext) {
        self.handler = handler
        self.context = context
        client = ClientInfo(remote: context.channel.remoteAddress, local: loop.localParts(context.channel.localAddress), tls: tls)
        loop.registry.add(self)
        if loop.settings.metricsEnabled { loop.metrics.h2Connection() }
    }

    private var sparesReleased = true

    func http2ReceiveComplete() {
        sparesReleased = false
        lastActivity = currentReceiveTime ?? .now()
        currentReceiveTime = nil
        if upstreamsToFlush.isEmpty { return }
        for ex in upstreamsToFlush { ex.flushUpstream() }
        upstreamsToFlush.removeAll(keepingCapacity: true)
    }

    func http2ConnectionClosed() {
        closed = true
        loop.registry.remove(self)
        let open = exchanges
        exchanges = []
        for ex in open {
            ex.slot = -1
            ex.abandon()
        }
        // The context holds the session handler, which holds this connection as its delegate.
        context = nil
        handler = nil
    }

    // MARK: - Stream events

    func http2StreamHeaders(_ stream: HTTP2Stream, endStream: Bool) {
        loop.during(receiveTime) {
            let ex = HTTP2Exchange(connection: self, stream: stream)
            stream.context = ex
            add(ex)
            ex.start(endStream: endStream)
        }
    }

    func http2StreamData(_ stream: HTTP2Stream, _ data: UnsafeRawBufferPointer) {
        guard let ex = exchange(stream) else {
            session?.consume(stream, data.count)
            return
        }
        loop.during(receiveTime) { ex.requestData(data) }
    }

    /// The time of the client read being processed: read once per read, not once per stream.
    private var receiveTime: NIODeadline {
        if let t = currentReceiveTime { return t }
        let t = NIODeadline.now()
        currentReceiveTime = t
        return t
    }
    private var currentReceiveTime: NIODeadline? = nil

    func http2StreamEnd(_ stream: HTTP2Stream) {
        exchange(stream)?.requestEnd()
    }

    func http2StreamClosed(_ stream: HTTP2Stream, errorCode: UInt32) {
        guard let ex = exchange(stream), remove(ex) else { return }
        ex.streamClosed(errorCode: errorCode)
    }

    func http2StreamDrained(_ stream: HTTP2Stream) {
        exchange(stream)?.responseDrained()
    }

    /// Only `http2StreamHeaders` sets a stream's context, always to an exchange: no dynamic cast.
    private func exchange(_ stream: HTTP2Stream) -> HTTP2Exchange? {
        stream.context.map { unsafeDowncast($0, to: HTTP2Exchange.self) }
    }

    // MARK: - Called by exchanges

    func needsUpstreamFlush(_ ex: HTTP2Exchange) {
        upstreamsToFlush.append(ex)
    }

    /// Frames the exchanges queued from outside a client read go out once the event loop has
    /// handled the I/O of this cycle: responses finishing on many upstream connections at once
    /// leave in one write (one TLS record, one syscall) instead of one each.
    func produceOutput() {
        guard !outputScheduled, let context else { return }
        outputScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.outputScheduled = false
            self.handler?.produceOutput()
        }
    }

    // MARK: - Drain

    func beginDrain() {
        handler?.drain()
    }

    func forceClose() {
        handler?.close()
    }

    // MARK: - Timeouts

    /// Called by the loop's timeout sweep (`ConnectionRegistry`): upstream and client-body
    /// timeouts of every stream, and the idle timeout of the connection.
    func checkTimeouts(now: NIODeadline) {
        guard !closed else { return }
        if exchanges.isEmpty {
            if now - lastActivity >= .seconds(1), !sparesReleased {
                // Idle for a second: the buffers kept for the next streams go (they are kept
                // across the moments between bursts, when no stream is open, not across idleness).
                sparesReleased = true
                spareBlock = nil
                handler?.releaseSpares()
            }
            if now - lastActivity >= settings.keepAliveTimeout {
                handler?.drain()
                if session?.openStreams == 0 { handler?.close() }
            }
            return
        }
        for ex in exchanges { ex.checkTimeouts(now: now) }  // a copy: a check may end an exchange
        produceOutput()
    }
}
