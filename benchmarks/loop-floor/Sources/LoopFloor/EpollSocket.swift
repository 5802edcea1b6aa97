import CLinuxIO
import Glibc
import NIOCore

/// A connected (or connecting) TCP socket as a NIOCore `Channel`: reads with `recv` into one
/// reused buffer, writes with `send`/`writev` at the flush, registered once for input and output,
/// edge-triggered. Like NIOPosix's channel it reads only when asked (`read()`, or auto-read after
/// each burst) and hands unwritten bytes to the next writable edge.
final class EpollSocket: Channel, ChannelCore, EpollSelectable, @unchecked Sendable {
    enum State { case connecting, active, closed }

    let fd: Int32
    private let loop: EpollLoop
    private(set) var state: State
    private var _pipeline: ChannelPipeline! = nil
    private let closePromise: EventLoopPromise<Void>
    private var connectPromise: EventLoopPromise<Void>? = nil
    private var autoRead = true
    private var readRequested = false
    /// The last readable edge was not read to its end: the next read starts at once.
    private var unread = false
    private var readBuffer: ByteBuffer
    /// What the next read asks for: doubled after a read that filled the buffer, up to 64 KiB, as
    /// NIOPosix's adaptive allocator grows (a 64 KiB body in 2 KiB reads took 32 of them).
    private var readSize = 2048
    private var pending: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var flushed = 0
    private var waitingForWritable = false

    let allocator = ByteBufferAllocator()

    /// An accepted socket, active from the start.
    init(accepted fd: Int32, loop: EpollLoop) {
        self.fd = fd
        self.loop = loop
        self.state = .active
        self.closePromise = loop.makePromise()
        self.readBuffer = allocator.buffer(capacity: 2048)
        self._pipeline = ChannelPipeline(channel: self)
    }

    /// A non-blocking connect to 127.0.0.1:`port`; `promise` completes when it does.
    init(connectingTo port: UInt16, loop: EpollLoop, promise: EventLoopPromise<Void>) {
        self.fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.loop = loop
        self.state = .connecting
        self.closePromise = loop.makePromise()
        self.readBuffer = allocator.buffer(capacity: 2048)
        self.connectPromise = promise
        self._pipeline = ChannelPipeline(channel: self)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r == 0 { state = .active }
    }

    /// Adds the socket to the loop and tells the pipeline (after its handlers are in place).
    func start() {
        loop.register(self, fd: fd, events: CLinuxIOEpollIn | CLinuxIOEpollOut | CLinuxIOEpollRdHup | CLinuxIOEpollEdge)
        pipeline.syncOperations.fireChannelRegistered()
        if state == .active {
            connectPromise.take()?.succeed(())
            becameActive()
        }
    }

    private func becameActive() {
        pipeline.syncOperations.fireChannelActive()
        if autoRead { pipeline.syncOperations.read() }
    }

    // MARK: - Readiness

    func ready(_ events: UInt32) {
        if state == .connecting {
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 || events & (CLinuxIOEpollErr | CLinuxIOEpollHup) != 0 {
                connectPromise.take()?.fail(IOError(errnoCode: err, reason: "connect"))
                close0(error: ChannelError.ioOnClosedChannel, mode: .all, promise: nil)
                return
            }
            state = .active
            connectPromise.take()?.succeed(())
            becameActive()
        }
        if events & CLinuxIOEpollOut != 0 && waitingForWritable {
            waitingForWritable = false
            flushNow()
        }
        if events & (CLinuxIOEpollIn | CLinuxIOEpollRdHup | CLinuxIOEpollHup | CLinuxIOEpollErr) != 0 {
            unread = true
            if readRequested { readNow() }
        }
    }

    private func readNow() {
        readRequested = false
        var reads = 0
        while state == .active {
            readBuffer.clear(minimumCapacity: readSize)
            let n = readBuffer.withUnsafeMutableWritableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                let capacity = readBuffer.writableBytes
                readBuffer.moveWriterIndex(forwardBy: n)
                pipeline.syncOperations.fireChannelRead(NIOAny(readBuffer))
                reads += 1
                // A short read emptied the socket (more data brings a new edge); after four
                // full ones the rest waits for the next turn, as NIOPosix's maxMessagesPerRead.
                if n < capacity { unread = false; break }
                readSize = min(readSize * 2, 65536)
                if reads == 4 { break }
            } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                close0(error: ChannelError.eof, mode: .all, promise: nil)
                return
            } else {
                unread = false
                break
            }
        }
        guard state == .active else { return }
        pipeline.syncOperations.fireChannelReadComplete()
        if autoRead && state == .active { pipeline.syncOperations.read() }
    }

    private func flushNow() {
        while flushed > 0 && state == .active {
            var written: Int
            if flushed == 1 {
                written = pending[0].0.withUnsafeReadableBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            } else {
                let count = min(flushed, 16)
                var iov = [iovec](repeating: iovec(), count: count)
                for k in 0..<count {
                    pending[k].0.withUnsafeReadableBytes { iov[k] = iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
                }
                written = withExtendedLifetime(pending) { writev(fd, iov, Int32(count)) }
            }
            if written < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { waitingForWritable = true; return }
                close0(error: IOError(errnoCode: errno, reason: "send"), mode: .all, promise: nil)
                return
            }
            var k = 0
            while k < flushed && written >= pending[k].0.readableBytes {
                written -= pending[k].0.readableBytes
                k += 1
            }
            // Promises are completed after the queue is settled: their callbacks may write.
            var done: [EventLoopPromise<Void>] = []
            for j in 0..<k { if let p = pending[j].1 { done.append(p) } }
            pending.removeFirst(k)
            flushed -= k
            if flushed > 0 && written > 0 { pending[0].0.moveReaderIndex(forwardBy: written) }
            for p in done { p.succeed(()) }
            if flushed > 0 { waitingForWritable = true; return }  // a short write: the socket is full
        }
    }

    // MARK: - Channel

    var eventLoop: EventLoop { loop }
    var pipeline: ChannelPipeline { _pipeline }
    var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    var _channelCore: ChannelCore { self }
    var parent: Channel? { nil }
    var localAddress: SocketAddress? { nil }
    var remoteAddress: SocketAddress? { nil }
    var isWritable: Bool { true }
    var isActive: Bool { state == .active }

    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if let value = value as? Bool, option is ChannelOptions.Types.AutoReadOption {
            autoRead = value
            if value && state == .active { read0() }
        }
        return loop.makeSucceededVoidFuture()
    }

    func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if option is ChannelOptions.Types.AutoReadOption, let v = autoRead as? Option.Value {
            return loop.makeSucceededFuture(v)
        }
        return loop.makeFailedFuture(ChannelError.operationUnsupported)
    }

    // MARK: - ChannelCore

    func localAddress0() throws -> SocketAddress { throw ChannelError.operationUnsupported }
    func remoteAddress0() throws -> SocketAddress { throw ChannelError.operationUnsupported }
    func register0(promise: EventLoopPromise<Void>?) { promise?.succeed(()) }
    func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) { promise?.succeed(()) }
    func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }

    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        pending.append((unwrapData(data, as: ByteBuffer.self), promise))
    }

    func flush0() {
        flushed = pending.count
        if !waitingForWritable && state == .active { flushNow() }
    }

    func read0() {
        guard state == .active else { return }
        readRequested = true
        if unread {
            loop.soon { [self] in if readRequested { readNow() } }
        }
    }

    func close0(error: Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        state = .closed
        loop.deregister(fd: fd)
        Glibc.close(fd)
        let failed = pending
        pending.removeAll()
        flushed = 0
        for (_, p) in failed { p?.fail(ChannelError.ioOnClosedChannel) }
        connectPromise.take()?.fail(error)
        promise?.succeed(())
        pipeline.syncOperations.fireChannelInactive()
        pipeline.syncOperations.fireChannelUnregistered()
        loop.soon { [self] in
            removeHandlers(pipeline: pipeline)
            closePromise.succeed(())
        }
    }

    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func channelRead0(_ data: NIOAny) {}
    func errorCaught0(error: Error) {}
}

/// A listening socket on 127.0.0.1 that hands each accepted descriptor to `accepted`.
final class EpollListener: EpollSelectable {
    let fd: Int32
    private let accepted: (Int32) -> Void

    init(port: UInt16, loop: EpollLoop, accepted: @escaping (Int32) -> Void) {
        self.accepted = accepted
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(r == 0 && listen(fd, 4096) == 0, "cannot listen on 127.0.0.1:\(port)")
        loop.register(self, fd: fd, events: CLinuxIOEpollIn)
    }

    func ready(_ events: UInt32) {
        while true {
            let c = c_linux_accept(fd, nil, nil)
            if c < 0 { return }
            var one: Int32 = 1
            setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            accepted(c)
        }
    }
}

extension Optional {
    /// The value, leaving nil behind.
    fileprivate mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}
