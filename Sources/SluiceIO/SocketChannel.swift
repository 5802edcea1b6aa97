import CLinuxIO
import Glibc
import NIOCore
import Synchronization

/// A TCP connection as a NIOCore `Channel`, on an `EpollEventLoop`: the proxy's handlers, TLS
/// and HTTP/2 run in its `ChannelPipeline` as they did on NIOPosix.
///
/// Registered once, edge-triggered, for input, output and the peer's half-close: no `epoll_ctl`
/// per read pause or per short write. Because an edge is reported only once, the channel
/// remembers input it has not read (`unread`) and output it could not write
/// (`waitingForWritable`). It reads only when asked (`read()`, or after each burst with auto-read),
/// at most `maxMessagesPerRead` times per burst, into a buffer of its own that it reuses once
/// the handlers let go of it, sized as NIOPosix's adaptive allocator sizes them. Writes queue in
/// `PendingWrites` and go out at the flush with `send`, or `writev` when several are flushed.
///
/// Half-closure follows NIOPosix: with `allowRemoteHalfClosure` the peer's end of input fires
/// `ChannelEvent.inputClosed`; `close(mode: .output)` shuts the write side once the queued
/// bytes are out and fires `ChannelEvent.outputClosed`; either with the other side already shut
/// becomes a full close.
public final class SocketChannel: Channel, ChannelCore, EpollSelectable, @unchecked Sendable {
    // @unchecked: the mutable state is touched only on `loop`; what other threads read
    // (`isActive`, `isWritable`) is atomic.

    // MARK: - State

    private enum Phase { case connecting, active, closed }

    let descriptor: Int32
    private let loop: EpollEventLoop
    private var phase: Phase
    private var inputShut = false
    private var outputShut = false
    /// `close(mode: .output)` waits for the queued bytes: its promise, until they are written.
    private var outputClosePending: EventLoopPromise<Void>?? = nil
    private var _pipeline: ChannelPipeline! = nil
    private let closePromise: EventLoopPromise<Void>
    private var connectPromise: EventLoopPromise<Void>? = nil
    private var connectTimer: Scheduled<Void>? = nil
    private var connectTimeoutTarget: ConnectTimeoutTarget? = nil

    /// A read was asked for and has not happened yet.
    private var readRequested = false
    /// The last input edge was not read to its end: a requested read starts at once.
    private var unread = false
    /// The peer has finished sending (or reset): input ends with the bytes queued now, and no
    /// later edge will say so again, so reads go on past a short one to meet the end.
    private var peerDone = false
    /// What the next `recv` asks for: doubled after a read that filled it, up to 64 KiB, halved
    /// after two that used less than half (NIOPosix's adaptive allocator, 2 KiB to start).
    private var readSize = 2048
    private var smallReads = 0
    /// The buffer reads go into, kept for the next read. It was shared by the event loop's
    /// channels at first, so that an idle connection held none, but with 50 requests in flight
    /// every read found all of a small pool still held by handlers and allocated (3.4
    /// allocations per request instead of 0.02): a request's bytes live until its exchange
    /// ends, and only the same connection's next read comes after that.
    private var readBuffer: ByteBuffer? = nil

    /// The handler next to the head, when the code that built the pipeline handed it over:
    /// reads reach it without the pipeline's walk and the `NIOAny` around each buffer.
    private var reader: SocketChannelReader? = nil

    private var writes = PendingWrites()
    /// A short write left bytes behind: the next output edge writes them.
    private var waitingForWritable = false
    /// Inside `writeFlushed`: a promise callback that flushes again only extends the queue.
    private var writing = false

    private let activeFlag = Atomic<Bool>(false)
    private let writableFlag = Atomic<Bool>(true)

    // MARK: - Options (the NIOPosix ones the proxy sets)

    /// Set on the loop (typed, for an initializer: `syncOptions` does the same through casts).
    public var autoRead = true
    public var allowRemoteHalfClosure = false
    public var maxMessagesPerRead = 4

    private var cachedLocal: SocketAddress?
    private var cachedRemote: SocketAddress?

    public let allocator = ByteBufferAllocator()

    // MARK: - Making one

    /// An accepted connection. `remote` and `local` are what accept and the listener know, so
    /// that neither costs a system call (nil: asked of the socket when first wanted).
    init(accepted fd: Int32, on loop: EpollEventLoop, remote: SocketAddress?, local: SocketAddress?) {
        descriptor = fd
        self.loop = loop
        phase = .active
        cachedRemote = remote
        cachedLocal = local
        closePromise = loop.makePromise()
        _pipeline = ChannelPipeline(channel: self)
    }

    private init(connecting fd: Int32, on loop: EpollEventLoop, to remote: SocketAddress) {
        descriptor = fd
        self.loop = loop
        phase = .connecting
        cachedRemote = remote
        closePromise = loop.makePromise()
        _pipeline = ChannelPipeline(channel: self)
    }

    /// Connects to `address` from `loop`, with `TCP_NODELAY`. `initialize` adds the handlers
    /// before the channel is registered; the future completes once connected, with
    /// `ChannelError.connectTimeout` when `timeout` passes first, or the connect's `IOError`.
    public static func connect(
        to address: SocketAddress, on loop: EpollEventLoop, timeout: TimeAmount, autoRead: Bool = true,
        initialize: @escaping (SocketChannel) throws -> Void
    ) -> EventLoopFuture<SocketChannel> {
        if !loop.inEventLoop {
            let initializer = UncheckedBox(initialize)
            return loop.flatSubmit {
                connect(to: address, on: loop, timeout: timeout, autoRead: autoRead, initialize: initializer.value)
            }
        }
        let family: Int32
        switch address {
        case .v4: family = AF_INET
        case .v6: family = AF_INET6
        case .unixDomainSocket: family = AF_UNIX
        }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return loop.makeFailedFuture(IOError(errnoCode: errno, reason: "socket")) }
        if family != AF_UNIX { Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1) }
        let channel = SocketChannel(connecting: fd, on: loop, to: address)
        channel.autoRead = autoRead
        let promise = loop.makePromise(of: Void.self)
        channel.connectPromise = promise
        do {
            try initialize(channel)
            let rc = address.withSockAddr { Glibc.connect(fd, $0, socklen_t($1)) }
            if rc != 0 && errno != EINPROGRESS { throw IOError(errnoCode: errno, reason: "connect") }
            try channel.register()
            if rc == 0 {
                channel.becameActive()
            } else {
                let target = ConnectTimeoutTarget(channel)
                channel.connectTimeoutTarget = target
                channel.connectTimer = loop.scheduleTask(in: timeout) {
                    target.channel?.close0(error: ChannelError.connectTimeout(timeout), mode: .all, promise: nil)
                }
            }
        } catch {
            channel.close0(error: error, mode: .all, promise: nil)
        }
        return promise.futureResult.map { channel }
    }

    /// Adds the socket to the loop and tells the pipeline, once its handlers are in place; an
    /// accepted channel is active at once.
    func start() throws {
        try register()
        if phase == .active { becameActive() }
    }

    /// A cancelled timer's closure stays queued until its deadline: the target lets go of the
    /// channel now.
    private func cancelConnectTimer() {
        connectTimer?.cancel()
        connectTimer = nil
        connectTimeoutTarget?.channel = nil
        connectTimeoutTarget = nil
    }

    private func register() throws {
        try loop.register(self, descriptor: descriptor,
                          events: CLinuxIOEpollIn | CLinuxIOEpollOut | CLinuxIOEpollRdHup | CLinuxIOEpollEdge)
        pipeline.syncOperations.fireChannelRegistered()
    }

    private func becameActive() {
        phase = .active
        activeFlag.store(true, ordering: .relaxed)
        cancelConnectTimer()
        connectPromise.take()?.succeed(())
        guard phase == .active else { return }
        pipeline.syncOperations.fireChannelActive()
        // Flushed while connecting: the output edge that ended the connect is spent.
        if writes.hasFlushed && phase == .active { writeFlushed() }
        if autoRead && phase == .active { pipeline.syncOperations.read() }
    }

    // MARK: - Readiness

    func ready(_ events: UInt32) {
        if phase == .connecting {
            let error = Socket.pendingError(descriptor)
            if error != 0 || events & (CLinuxIOEpollErr | CLinuxIOEpollHup) != 0 {
                close0(error: IOError(errnoCode: error != 0 ? error : ECONNREFUSED, reason: "connect"), mode: .all, promise: nil)
                return
            }
            if events & CLinuxIOEpollOut == 0 { return }
            becameActive()
        }
        guard phase == .active else { return }
        if events & (CLinuxIOEpollErr | CLinuxIOEpollHup) != 0 {
            reset()
            return
        }
        if events & CLinuxIOEpollOut != 0 && waitingForWritable {
            waitingForWritable = false
            writeFlushed()
        }
        if phase == .active && !inputShut && events & (CLinuxIOEpollIn | CLinuxIOEpollRdHup | CLinuxIOEpollHup | CLinuxIOEpollErr) != 0 {
            if events & CLinuxIOEpollRdHup != 0 { peerDone = true }
            unread = true
            if readRequested { readNow() }
        }
    }

    /// A reset, or both directions shut: what the peer sent before is still queued (an early
    /// answer, say, before it reset the upload it did not read), so it goes up the pipeline
    /// first, then the channel closes with the socket's error.
    private func reset() {
        drainThenFail {
            let error = Socket.pendingError(self.descriptor)
            return IOError(errnoCode: error != 0 ? error : ECONNRESET, reason: "connection reset")
        }
    }

    /// The connection is over: delivers the input still queued, whether or not a read was asked
    /// for (as NIOPosix does after a reset or a failed write), then closes with `error` unless
    /// reading ended it already.
    private func drainThenFail(_ error: () -> Error) {
        peerDone = true
        while phase == .active && !inputShut {
            unread = true
            readNow()
            if !unread { break }
        }
        if phase != .closed { fail(error()) }
    }

    func loopStopping() {
        if phase != .closed { close0(error: EventLoopError.shutdown, mode: .all, promise: nil) }
    }

    // MARK: - Reading

    private func readNow() {
        // Taken once: each `pipeline` read is a retain and a release, three per read otherwise.
        let pipeline = _pipeline.syncOperations
        var reads = 0
        var delivered = false
        var ended: Error? = nil
        while phase == .active && !inputShut {
            let asked = readSize
            // The channel's own buffer, taken out so that this is its only reference here:
            // `clear` reuses its storage when the handlers have let go of the last read's
            // bytes (the usual case by the next read) and allocates new storage otherwise.
            var buffer = readBuffer ?? allocator.buffer(capacity: asked)
            readBuffer = nil
            buffer.clear(minimumCapacity: asked)
            // The storage from its start, which after `clear` is where writing starts: NIO's
            // `withUnsafeMutableWritableBytes` gets there through an unspecialised `dropFirst`
            // (55 instructions a read).
            let result = buffer.withVeryUnsafeMutableBytes { recv(descriptor, $0.baseAddress, asked, 0) }
            if result > 0 { buffer.moveWriterIndex(forwardBy: result) }
            readBuffer = buffer
            if result > 0 {
                // The request is served only by bytes: an input edge can be stale (its bytes
                // were read with an earlier edge's), and a read that finds nothing must leave
                // the request standing, or a channel without auto-read waits for ever. (It did:
                // a 1 GiB download stalled under load until the 60 s read timeout.)
                readRequested = false
                adapt(readSize: result, asked: asked)
                delivered = true
                // Looked up for each read: a handler may leave the pipeline inside its read.
                if let reader { reader.socketChannelRead(buffer) } else { pipeline.fireChannelRead(NIOAny(buffer)) }
                reads += 1
                // A short read emptied the socket (more input brings a new edge); after
                // `maxMessagesPerRead` full ones the rest waits for the next turn.
                if result < asked && !peerDone {
                    unread = false
                    break
                }
                if reads >= maxMessagesPerRead { break }
            } else if result == 0 {
                ended = ChannelError.eof
                break
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                unread = false
                break
            } else if errno != EINTR {
                ended = IOError(errnoCode: errno, reason: "recv")
                break
            }
        }
        if delivered && phase == .active {
            if let reader { reader.socketChannelReadComplete() } else { pipeline.fireChannelReadComplete() }
        }
        if let ended {
            unread = false
            if case ChannelError.eof = ended {
                if phase == .active { inputEnded() }
            } else {
                fail(ended)
            }
            return
        }
        if delivered && autoRead && phase == .active && !inputShut { pipeline.read() }
    }

    private func adapt(readSize got: Int, asked: Int) {
        if got == asked {
            readSize = min(asked * 2, 65536)
            smallReads = 0
        } else if got <= asked / 2 && asked > 2048 {
            smallReads += 1
            if smallReads >= 2 {
                readSize = asked / 2
                smallReads = 0
                // A buffer grown for a burst is not kept at four times what reads now need.
                if let b = readBuffer, b.capacity > 4 * readSize { readBuffer = nil }
            }
        } else {
            smallReads = 0
        }
    }

    /// The peer finished sending.
    private func inputEnded() {
        if allowRemoteHalfClosure && !outputShut {
            inputShut = true
            pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        } else {
            close0(error: ChannelError.eof, mode: .all, promise: nil)
        }
    }

    /// An I/O error: the pipeline hears of it, then the channel closes.
    private func fail(_ error: Error) {
        pipeline.syncOperations.fireErrorCaught(error)
        if phase != .closed { close0(error: error, mode: .all, promise: nil) }
    }

    // MARK: - Writing

    /// Writes what was flushed until it is all out or the socket is full.
    private func writeFlushed() {
        guard !writing else { return }
        writing = true
        defer { writing = false }
        while writes.hasFlushed && phase == .active {
            let (attempted, n) = writeOnce()
            if n < 0 {
                let code = errno
                if code == EAGAIN || code == EWOULDBLOCK {
                    waitingForWritable = true
                    return
                }
                if code == EINTR { continue }
                // The peer may have answered before it reset (an early 413 to an upload).
                drainThenFail { IOError(errnoCode: code, reason: "send") }
                return
            }
            let (finished, change) = writes.didWrite(n)
            for _ in 0..<finished {
                if let popped = writes.popWritten(), let promise = popped { promise.succeed(()) }
            }
            if let change { writabilityChanged(change) }
            if n < attempted {
                // The kernel took part of it: the socket is full until the next output edge.
                waitingForWritable = true
                return
            }
        }
        if !writes.hasFlushed, phase == .active, let pending = outputClosePending {
            outputClosePending = nil
            shutOutput(promise: pending)
        }
    }

    /// One `send` (one buffer) or `sendmsg` (up to 64): the bytes offered and the bytes the
    /// kernel took, or -1 and errno. `sendmsg` rather than `writev` for MSG_NOSIGNAL: a peer
    /// gone must be an EPIPE, not a signal.
    private func writeOnce() -> (attempted: Int, written: Int) {
        let count = min(writes.flushedCount, 64)
        if count == 1 {
            let buffer = writes.flushedBuffer(0)
            let size = buffer.readableBytes
            if size == 0 { return (0, 0) }
            return (size, buffer.withUnsafeReadableBytes { send(descriptor, $0.baseAddress, size, Int32(MSG_NOSIGNAL)) })
        }
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { vectors in
            var attempted = 0
            for k in 0..<count {
                // The queue holds each buffer (and so its storage) until `didWrite` below.
                writes.flushedBuffer(k).withUnsafeReadableBytes {
                    vectors[k] = iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count)
                    attempted += $0.count
                }
            }
            if attempted == 0 { return (0, 0) }
            var message = msghdr()
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = count
            return (attempted, sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL)))
        }
    }

    private func writabilityChanged(_ change: PendingWrites.WritabilityChange) {
        writableFlag.store(change == .becameWritable, ordering: .relaxed)
        pipeline.syncOperations.fireChannelWritabilityChanged()
    }

    // MARK: - Channel

    public var eventLoop: EventLoop { loop }
    public var pipeline: ChannelPipeline { _pipeline }
    public var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    public var _channelCore: ChannelCore { self }
    public var parent: Channel? { nil }
    public var isWritable: Bool { writableFlag.load(ordering: .relaxed) }
    public var isActive: Bool { activeFlag.load(ordering: .relaxed) }

    public var localAddress: SocketAddress? {
        if let cachedLocal { return cachedLocal }
        guard loop.inEventLoop, phase != .closed else { return nil }
        cachedLocal = Socket.localAddress(descriptor)
        return cachedLocal
    }

    public var remoteAddress: SocketAddress? { cachedRemote }

    public var syncOptions: NIOSynchronousChannelOptions? { SyncOptions(channel: self) }

    public func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if loop.inEventLoop {
            return loop.makeCompletedFuture { try setOption0(option, value: value) }
        }
        let box = UncheckedBox((option, value))
        return loop.submit { try self.setOption0(box.value.0, value: box.value.1) }
    }

    public func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if loop.inEventLoop {
            return loop.makeCompletedFuture { try getOption0(option) }
        }
        let box = UncheckedBox(option)
        return loop.submit { UncheckedBox(try self.getOption0(box.value)) }.map { $0.value }
    }

    fileprivate func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        switch option {
        case is ChannelOptions.Types.AutoReadOption:
            let on = value as! Bool
            let was = autoRead
            autoRead = on
            if on && !was && phase == .active { pipeline.syncOperations.read() }
        case is ChannelOptions.Types.AllowRemoteHalfClosureOption:
            allowRemoteHalfClosure = value as! Bool
        case is ChannelOptions.Types.MaxMessagesPerReadOption:
            maxMessagesPerRead = max(1, Int(value as! UInt))
        case is ChannelOptions.Types.WriteBufferWaterMarkOption:
            let marks = value as! ChannelOptions.Types.WriteBufferWaterMark
            writes.waterMarks = .init(low: marks.low, high: marks.high)
        case let socketOption as ChannelOptions.Types.SocketOption:
            guard phase != .closed else { throw ChannelError.ioOnClosedChannel }
            if Socket.setOption(descriptor, level: socketOption.optionLevel.rawValue, name: socketOption.optionName.rawValue,
                                value: Int32(truncatingIfNeeded: value as! SocketOptionValue)) != 0 {
                throw IOError(errnoCode: errno, reason: "setsockopt")
            }
        default:
            throw ChannelError.operationUnsupported
        }
    }

    fileprivate func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        switch option {
        case is ChannelOptions.Types.AutoReadOption: return autoRead as! Option.Value
        case is ChannelOptions.Types.AllowRemoteHalfClosureOption: return allowRemoteHalfClosure as! Option.Value
        case is ChannelOptions.Types.MaxMessagesPerReadOption: return UInt(maxMessagesPerRead) as! Option.Value
        case is ChannelOptions.Types.BufferedWritableBytesOption: return writes.bytes as! Option.Value
        case is ChannelOptions.Types.WriteBufferWaterMarkOption:
            let marks = writes.waterMarks
            return ChannelOptions.Types.WriteBufferWaterMark(low: marks.low, high: marks.high) as! Option.Value
        case let socketOption as ChannelOptions.Types.SocketOption:
            guard phase != .closed else { throw ChannelError.ioOnClosedChannel }
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(descriptor, socketOption.optionLevel.rawValue, socketOption.optionName.rawValue, &value, &length) != 0 {
                throw IOError(errnoCode: errno, reason: "getsockopt")
            }
            return SocketOptionValue(value) as! Option.Value
        default:
            throw ChannelError.operationUnsupported
        }
    }

    // MARK: - ChannelCore

    public func localAddress0() throws -> SocketAddress {
        guard let address = localAddress else { throw ChannelError.ioOnClosedChannel }
        return address
    }

    public func remoteAddress0() throws -> SocketAddress {
        guard let address = cachedRemote else { throw ChannelError.ioOnClosedChannel }
        return address
    }

    public func register0(promise: EventLoopPromise<Void>?) { promise?.succeed(()) }
    public func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) { promise?.succeed(()) }
    public func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    public func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }

    public func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard phase != .closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard !outputShut && outputClosePending == nil else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        enqueue(unwrapData(data, as: ByteBuffer.self), promise: promise)
    }

    @inline(__always)
    private func enqueue(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        if let change = writes.append(buffer, promise: promise) {
            writabilityChanged(change)
        }
    }

    public func flush0() {
        writes.markFlushed()
        if phase == .active && !waitingForWritable { writeFlushed() }
    }

    public func read0() {
        guard phase != .closed && !inputShut else { return }
        readRequested = true
        // Input that arrived before the request has had its edge: read it on the next turn
        // (not now, inside the handler that asked).
        if unread && phase == .active {
            loop.execute { [self] in
                if readRequested && unread && phase == .active { readNow() }
            }
        }
    }

    // MARK: - Direct output

    // Write, flush and read for the one handler next to the pipeline's head, called by it
    // without the walk down the pipeline. NIO's head handler reaches the channel through
    // `context.channel._channelCore`, retaining and releasing the channel and the pipeline on
    // every operation: about 700 instructions per proxied request on the upstream side alone.
    // Only the code that built the pipeline knows that no handler sits in between, so it is
    // the one that hands the channel to the handler. On the channel's loop only.

    /// Reads go to `reader` (nil: down the pipeline again), which must be the pipeline's first
    /// handler and must hand itself back with nil when it leaves the pipeline.
    public func readDirectly(to reader: SocketChannelReader?) {
        assert(loop.inEventLoop)
        self.reader = reader
    }

    /// `write0` of a buffer, without a promise.
    public func writeDirect(_ buffer: ByteBuffer) {
        assert(loop.inEventLoop)
        guard phase != .closed, !outputShut, outputClosePending == nil else { return }
        enqueue(buffer, promise: nil)
    }

    /// `flush0`.
    public func flushDirect() {
        assert(loop.inEventLoop)
        flush0()
    }

    /// `read0`.
    public func readDirect() {
        assert(loop.inEventLoop)
        read0()
    }

    public func close0(error: Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard phase != .closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        switch mode {
        case .output:
            if outputShut || outputClosePending != nil {
                promise?.fail(ChannelError.outputClosed)
            } else if inputShut {
                close0(error: error, mode: .all, promise: promise)
            } else if writes.isEmpty || phase != .active {
                shutOutput(promise: promise)
            } else {
                // What was written before the close goes out first.
                outputClosePending = .some(promise)
                writes.markFlushed()
                if !waitingForWritable { writeFlushed() }
            }
        case .input:
            if inputShut {
                promise?.fail(ChannelError.inputClosed)
            } else if outputShut {
                close0(error: error, mode: .all, promise: promise)
            } else {
                inputShut = true
                unread = false
                _ = Glibc.shutdown(descriptor, Int32(SHUT_RD))
                promise?.succeed(())
                pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            }
        case .all:
            closeAll(error: error, promise: promise)
        }
    }

    private func shutOutput(promise: EventLoopPromise<Void>?) {
        if inputShut {
            closeAll(error: ChannelError.outputClosed, promise: promise)
            return
        }
        outputShut = true
        _ = Glibc.shutdown(descriptor, Int32(SHUT_WR))
        promise?.succeed(())
        pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.outputClosed)
    }

    private func closeAll(error: Error, promise: EventLoopPromise<Void>?) {
        let wasActive = phase == .active
        phase = .closed
        activeFlag.store(false, ordering: .relaxed)
        cancelConnectTimer()
        loop.deregister(descriptor: descriptor)
        Glibc.close(descriptor)
        var failed = writes.removeAll()
        if let pending = outputClosePending, let p = pending { failed.append(p) }
        outputClosePending = nil
        // The close's own promise first: a handler waiting on it sees the channel closed.
        promise?.succeed(())
        for p in failed { p.fail(error) }
        connectPromise.take()?.fail(error)
        if wasActive { pipeline.syncOperations.fireChannelInactive() }
        pipeline.syncOperations.fireChannelUnregistered()
        // NIOPosix also removes the handlers and completes `closeFuture` a turn later, after
        // the events above have run their course.
        loop.execute { [self] in
            removeHandlers(pipeline: pipeline)
            closePromise.succeed(())
        }
    }

    public func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func channelRead0(_ data: NIOAny) {}
    public func errorCaught0(error: Error) {}
}

// MARK: - Synchronous options

extension SocketChannel {
    /// `channel.syncOptions`, on the loop: a custom channel without it would leave every
    /// `try? channel.syncOptions?.setOption(…)` silently undone.
    struct SyncOptions: NIOSynchronousChannelOptions {
        let channel: SocketChannel

        func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
            channel.loop.preconditionInEventLoop()
            try channel.setOption0(option, value: value)
        }

        func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
            channel.loop.preconditionInEventLoop()
            return try channel.getOption0(option)
        }
    }
}

/// Carries a value that is only used on the loop it is sent to.
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

extension Optional {
    /// The value, leaving nil behind.
    fileprivate mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}

/// How a connect timeout reaches its channel. A weak capture would do the same, but a weak
/// reference gives the object a side table, and every retain and release of the channel then
/// takes the runtime's slow path for the rest of its life (an upstream connection lives for many
/// requests: 7 slow retains per h2 request in callgrind's count). Touched on the loop only.
private final class ConnectTimeoutTarget: @unchecked Sendable {
    var channel: SocketChannel?
    init(_ channel: SocketChannel) { self.channel = channel }
}

/// The first handler of a `SocketChannel`'s pipeline, taking its reads directly
/// (`SocketChannel.readDirectly(to:)`): `channelRead` and `channelReadComplete` without the walk
/// through the pipeline. Every other event still goes through the pipeline.
public protocol SocketChannelReader: AnyObject {
    func socketChannelRead(_ buffer: ByteBuffer)
    func socketChannelReadComplete()
}
