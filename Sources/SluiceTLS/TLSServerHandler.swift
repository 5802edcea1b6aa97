import NIOCore
import SluiceIO

/// Sent up the pipeline once a handshake completes.
public struct TLSHandshakeCompleted: Sendable {
    public var serverName: String?
    public var alpn: String?
    public var version: String
    public var resumed: Bool
    /// Identifies the certificate (context) chosen for this connection.
    public var certificate: ObjectIdentifier?
}

/// Sent up the pipeline when a handshake is refused or breaks (before the connection closes).
public struct TLSHandshakeFailed: Sendable {
    public init() {}
}

/// An outbound user event: end the connection once everything written before it is sent. The
/// plaintext not yet encrypted and close_notify leave in one write, and the socket closes when
/// that write completes (a `close` instead sends close_notify and closes at once).
///
/// `linger`: the client may still be sending (a request body the proxy answered before reading
/// it all), so the close lingers (`LingeringClose`): the write side is shut after close_notify,
/// input is read and dropped, and the socket closes when the client closes its side, has sent
/// nothing for `lingerTimeout`, or `lingerTime` after the shutdown.
public struct TLSCloseAfterFlush: Sendable {
    public var linger: Bool
    public var lingerTimeout: TimeAmount
    public var lingerTime: TimeAmount
    public init(linger: Bool = false, lingerTimeout: TimeAmount = .seconds(5), lingerTime: TimeAmount = .seconds(30)) {
        self.linger = linger
        self.lingerTimeout = lingerTimeout
        self.lingerTime = lingerTime
    }
}

/// Server-side TLS for one connection: ciphertext below, plaintext above.
///
/// States: handshaking → active → closing → closed. Plaintext written before the handshake ends
/// waits; `close` sends close_notify before closing the socket; a peer's close_notify or an
/// unclean end both end in `closed`.
public final class TLSServerHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    enum State {
        case handshaking
        case active
        case closing
        case closed
    }

    private let front: TLSContext
    private let store: CertificateStoreBox
    private var connection: TLSConnection?
    private var state = State.handshaking
    private var pendingWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var firedRead = false
    private var fedBytes = 0
    /// The `TLSCloseAfterFlush` in progress, if any.
    private var closer: LingeringClose?
    /// Plaintext and ciphertext buffers come from here and go back as soon as they are passed on
    /// (`BufferPool`); one pool per event loop.
    private let buffers: BufferPool
    /// The connection's channel when this handler is first in its pipeline (the listener's
    /// initializer says so): ciphertext and read requests go to the socket without NIO's
    /// head-handler walk (see `SocketChannel.writeDirect`).
    private var socket: SocketChannel? = nil

    /// `buffers`: the event loop's pool (the default, a pool of the connection's own, is for
    /// tests).
    public init(front: TLSFrontContext, buffers: BufferPool = BufferPool()) {
        self.front = front.context
        self.store = front.store
        self.buffers = buffers
    }

    /// Called by the code that added this handler first to `channel`'s pipeline.
    public func outputDirectly(to channel: SocketChannel) {
        socket = channel
        directContext = context(of: channel)
        channel.readDirectly(to: self)
    }

    private func context(of channel: SocketChannel) -> ChannelHandlerContext? {
        try? channel.pipeline.syncOperations.context(handler: self)
    }

    /// This handler's context while it takes the socket's reads directly (they come without one).
    private var directContext: ChannelHandlerContext? = nil

    public func handlerRemoved(context: ChannelHandlerContext) {
        socket?.readDirectly(to: nil)
        socket = nil
        directContext = nil
    }

    public func read(context: ChannelHandlerContext) {
        if let socket { socket.readDirect() } else { context.read() }
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        connection = try? TLSConnection(initial: store.current.defaultContext ?? front, store: store, buffers: buffers)
        if connection == nil { context.close(promise: nil) }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received(unwrapInboundIn(data), context: context)
    }

    /// Ciphertext from the pipeline or straight from the socket (`SocketChannelReader`).
    private func received(_ ciphertext: ByteBuffer, context: ChannelHandlerContext) {
        guard let connection, state != .closed else {
            // Dropped unread; while lingering, it shows the client is still sending.
            closer?.inputArrived(now: .now())
            return
        }
        // Plaintext is never longer than the ciphertext that carried it: size reads by it, so a
        // small request does not cost a 16 KiB allocation.
        fedBytes = ciphertext.readableBytes
        connection.feed(ciphertext)
        if state == .handshaking {
            switch connection.handshake() {
            case .done:
                state = .active
                flushCiphertext(context: context)
                let chosen = connection.contextIdentity
                let identity = chosen.flatMap { c in store.current.identity(of: c) }
                context.fireUserInboundEventTriggered(TLSHandshakeCompleted(
                    serverName: connection.serverName, alpn: connection.negotiatedProtocol,
                    version: connection.protocolVersion, resumed: connection.sessionReused, certificate: identity))
                let queued = pendingWrites
                pendingWrites = []
                for (b, p) in queued { write(context: context, data: wrapOutboundOut(b), promise: p) }
                flush(context: context)
            case .wantRead:
                flushCiphertext(context: context)
                return
            case .closed, .failed:
                // A refused or broken handshake: send the alert OpenSSL prepared, then close.
                flushCiphertext(context: context)
                state = .closed
                context.fireUserInboundEventTriggered(TLSHandshakeFailed())
                context.close(promise: nil)
                return
            }
        }
        readPlaintext(context: context)
    }

    /// Decrypts every complete record into one buffer and passes it on once. The buffer comes
    /// from the pool and goes back to it: the handler above consumes it before the next read
    /// (the usual case), so a request costs no allocation here.
    private func readPlaintext(context: ChannelHandlerContext) {
        guard let connection else { return }
        var out = buffers.take(minimumCapacity: max(512, min(16 * 1024, fedBytes)))
        defer { buffers.give(out) }
        while state == .active || state == .closing {
            let limit = max(512, min(16 * 1024, fedBytes))
            switch connection.read(into: &out, limit: limit) {
            case .done:
                // Pass on what there is before it grows past a few records.
                if out.readableBytes >= 64 * 1024 {
                    firedRead = true
                    context.fireChannelRead(wrapInboundOut(out))
                    out = context.channel.allocator.buffer(capacity: limit)
                }
                guard connection.hasNothingToRead else { continue }
                passOn(&out, context: context)
                flushCiphertext(context: context)
                return
            case .wantRead:
                passOn(&out, context: context)
                // TLS 1.3 tickets and key updates produce output while reading.
                flushCiphertext(context: context)
                return
            case .closed:
                passOn(&out, context: context)
                // close_notify from the peer: the plaintext stream ended.
                flushCiphertext(context: context)
                context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
                return
            case .failed:
                state = .closed
                context.close(promise: nil)
                return
            }
        }
    }

    private func passOn(_ out: inout ByteBuffer, context: ChannelHandlerContext) {
        guard out.readableBytes > 0 else { return }
        firedRead = true
        context.fireChannelRead(wrapInboundOut(out))
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        if firedRead {
            firedRead = false
        }
        context.fireChannelReadComplete()
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plaintext = unwrapOutboundIn(data)
        if plaintext.readableBytes == 0 {
            // An empty write is a flush barrier (close after flush): it must never wait for a
            // handshake that may never finish, and it must come after what was encrypted.
            if encryptGathered(context: context), let cipher = connection?.takeCiphertext() {
                context.write(wrapOutboundOut(cipher), promise: nil)
            }
            context.write(wrapOutboundOut(plaintext), promise: promise)
            return
        }
        switch state {
        case .handshaking:
            pendingWrites.append((plaintext, promise))
        case .active:
            // Small writes are gathered and encrypted together at flush: a response head and
            // body written apart become one record, and each SSL_write costs OpenSSL several
            // allocations. Large ones go straight in (after what was gathered, in order).
            if promise == nil && plaintext.readableBytes < Self.gatherLimit {
                if gathered == nil { gathered = buffers.take(minimumCapacity: plaintext.readableBytes) }
                gathered!.writeImmutableBuffer(plaintext)
                if gathered!.readableBytes >= Self.gatherLimit { _ = encryptGathered(context: context) }
                return
            }
            guard encryptGathered(context: context), let connection else {
                promise?.fail(ChannelError.ioOnClosedChannel)
                return
            }
            switch connection.write(plaintext) {
            case .done, .wantRead:
                // Sent at flush; a write that wants its promise sends what is pending with it.
                if let promise {
                    if let cipher = connection.takeCiphertext() {
                        context.write(wrapOutboundOut(cipher), promise: promise)
                    } else {
                        promise.succeed(())
                    }
                }
            case .closed, .failed:
                promise?.fail(ChannelError.ioOnClosedChannel)
                state = .closed
                context.close(promise: nil)
            }
        case .closing, .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    /// Plaintext written since the last flush, not yet encrypted; nil when none is. Its buffer
    /// goes back to the pool once encrypted (SSL_write copies).
    private var gathered: ByteBuffer? = nil
    private static let gatherLimit = 16 * 1024

    /// Encrypts what was gathered; false when the connection failed (and is closing).
    private func encryptGathered(context: ChannelHandlerContext) -> Bool {
        guard let plaintext = gathered.take() else { return state == .active }
        defer { buffers.give(plaintext) }
        guard state == .active, let connection else { return false }
        let result = connection.write(plaintext)
        switch result {
        case .done, .wantRead:
            return true
        case .closed, .failed:
            state = .closed
            context.close(promise: nil)
            return false
        }
    }

    public func flush(context: ChannelHandlerContext) {
        _ = encryptGathered(context: context)
        // One pass down the pipeline for the records and the flush, not one for each.
        if state == .active, let cipher = connection?.takeCiphertext() {
            if let socket {
                socket.writeDirect(cipher)
                socket.flushDirect()
            } else {
                context.writeAndFlush(wrapOutboundOut(cipher), promise: nil)
            }
        } else if let socket {
            socket.flushDirect()
        } else {
            context.flush()
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed, state == .handshaking {
            // The peer gave up before the handshake ended: nothing can follow.
            state = .closed
            failPendingWrites()
            context.close(promise: nil)
            return
        }
        if let e = event as? ChannelEvent, e == .inputClosed, closer?.linger == true {
            // The client has closed its side: close now if our last bytes are out, else as soon
            // as they are.
            if closer!.peerClosedInput() == .close { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func failPendingWrites() {
        let queued = pendingWrites
        pendingWrites = []
        for (_, p) in queued { p?.fail(ChannelError.ioOnClosedChannel) }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, state == .active, let connection else {
            if mode == .all { failPendingWrites() }
            state = .closed
            context.close(mode: mode, promise: promise)
            return
        }
        _ = encryptGathered(context: context)
        state = .closing
        connection.shutdown()
        if let notify = connection.takeCiphertext() {
            context.writeAndFlush(wrapOutboundOut(notify), promise: nil)
        }
        state = .closed
        context.close(mode: mode, promise: promise)
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let closing = event as? TLSCloseAfterFlush else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        guard state == .active, let connection, encryptGathered(context: context) else {
            // Handshaking (nothing was sent), or already ending: close as `close` does.
            close(context: context, mode: .all, promise: promise)
            return
        }
        state = .closing
        closer = LingeringClose(linger: closing.linger, timeout: closing.lingerTimeout, maxTime: closing.lingerTime)
        connection.shutdown()
        // Writes complete in order: when this one has, so has everything before it.
        let sent = context.eventLoop.makePromise(of: Void.self)
        if let last = connection.takeCiphertext() {
            context.write(wrapOutboundOut(last), promise: sent)
        } else {
            sent.succeed(())
        }
        context.flush()
        // A `close` meanwhile (a timeout) closes at once, which fails `sent`: nothing waits longer.
        sent.futureResult.assumeIsolated().whenComplete { result in
            self.state = .closed  // from here, input is dropped unread
            let action = self.closer!.lastWriteDone(succeeded: (try? result.get()) != nil, now: .now())
            if action == .close {
                context.close(promise: promise)
                return
            }
            // The client's close (`inputClosed` above) or a deadline ends it.
            action.carryOut(on: context) { self.closer!.deadlineReached(now: .now()) }
            promise?.succeed(())
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        state = .closed
        failPendingWrites()
        context.fireChannelInactive()
    }

    private func flushCiphertext(context: ChannelHandlerContext) {
        guard let out = connection?.takeCiphertext() else { return }
        if let socket {
            socket.writeDirect(out)
            socket.flushDirect()
        } else {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
    }
}

/// The front context and the certificate store it consults, built once per process.
public final class TLSFrontContext: Sendable {
    public let store: CertificateStoreBox
    let context: TLSContext

    /// `ticketRotation`: seconds between session ticket key rotations (the previous key still
    /// decrypts for one more period).
    public init(store: CertificateStore, ticketRotation: Double = 12 * 3600) throws {
        let box = CertificateStoreBox(store)
        self.store = box
        self.context = try TLSContext(front: ticketRotation)
    }
}

extension CertificateStore {
    /// Which context of this store an `SSL_CTX` is.
    func identity(of ctx: OpaquePointer) -> ObjectIdentifier? {
        if let d = defaultContext, d.ctx == ctx { return ObjectIdentifier(d) }
        for c in exact.values where c.ctx == ctx { return ObjectIdentifier(c) }
        for c in wildcard.values where c.ctx == ctx { return ObjectIdentifier(c) }
        return nil
    }

    /// The identity of the context a Host would get by SNI.
    public func identity(forHost host: String) -> ObjectIdentifier? {
        context(for: host).map { ObjectIdentifier($0) }
    }
}

// MARK: - Direct reads (first in the pipeline)

extension TLSServerHandler: SocketChannelReader {
    public func socketChannelRead(_ buffer: ByteBuffer) {
        guard let directContext else { return }
        received(buffer, context: directContext)
    }

    public func socketChannelReadComplete() {
        guard let directContext else { return }
        channelReadComplete(context: directContext)
    }
}
