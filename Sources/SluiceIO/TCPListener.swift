import CLinuxIO
import Glibc
import NIOCore

/// A listening TCP socket on one `EpollEventLoop`: every connection it accepts becomes a
/// `SocketChannel` on the same loop, set up by `initializer` before it is registered. With
/// `reusePort` each loop can have its own listener on the same port, and the kernel spreads the
/// connections over them, so accepting never hops threads.
public final class TCPListener: EpollSelectable, @unchecked Sendable {
    // @unchecked: the mutable state is touched only on `loop`.

    public let localAddress: SocketAddress
    public let eventLoop: EpollEventLoop
    private let descriptor: Int32
    private let initializer: (SocketChannel) throws -> Void
    private let onError: (Error) -> Void
    /// Given to accepted channels as their local address, unless the listener is bound to the
    /// any-address (then each asks its socket).
    private let childLocal: SocketAddress?
    private var accepting = true
    private var closed = false
    /// An input edge came while accepting was paused, or a burst was cut short.
    private var waiting = false
    private var retry: Scheduled<Void>? = nil

    /// Connections accepted per turn before the loop's other work runs.
    private static let burst = 64

    private init(descriptor: Int32, address: SocketAddress, on loop: EpollEventLoop,
                 initializer: @escaping (SocketChannel) throws -> Void, onError: @escaping (Error) -> Void) {
        self.descriptor = descriptor
        self.localAddress = address
        self.eventLoop = loop
        self.initializer = initializer
        self.onError = onError
        self.childLocal = Socket.isWildcard(address) ? nil : address
    }

    /// Binds `address` and listens, on `loop`. Accepted sockets inherit `TCP_NODELAY` from the
    /// listener (Linux), which saves a `setsockopt` per connection. `onError` hears of accept
    /// failures such as running out of descriptors (accepting resumes after 100 ms).
    public static func bind(
        to address: SocketAddress, on loop: EpollEventLoop, backlog: Int32 = 4096, reusePort: Bool = false,
        onError: @escaping (Error) -> Void = { _ in },
        initializer: @escaping (SocketChannel) throws -> Void
    ) -> EventLoopFuture<TCPListener> {
        let setup = UncheckedBox((initializer, onError))
        return loop.submit {
            let family: Int32
            switch address {
            case .v4: family = AF_INET
            case .v6: family = AF_INET6
            case .unixDomainSocket: throw ChannelError.operationUnsupported
            }
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
            do {
                Socket.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
                if reusePort { Socket.setOption(fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1) }
                Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
                if address.withSockAddr({ Glibc.bind(fd, $0, socklen_t($1)) }) != 0 {
                    throw IOError(errnoCode: errno, reason: "bind(\(address))")
                }
                if Glibc.listen(fd, backlog) != 0 { throw IOError(errnoCode: errno, reason: "listen") }
                let bound = Socket.localAddress(fd) ?? address
                let listener = TCPListener(descriptor: fd, address: bound, on: loop,
                                           initializer: setup.value.0, onError: setup.value.1)
                try loop.register(listener, descriptor: fd, events: CLinuxIOEpollIn | CLinuxIOEpollEdge)
                return listener
            } catch {
                Glibc.close(fd)
                throw error
            }
        }
    }

    func ready(_ events: UInt32) {
        waiting = true
        if accepting { acceptWaiting() }
    }

    private func acceptWaiting() {
        var storage = sockaddr_storage()
        for _ in 0..<Self.burst {
            guard accepting && !closed else { return }
            var length = UInt32(MemoryLayout<sockaddr_storage>.size)
            let fd = c_linux_accept(descriptor, &storage, &length)
            if fd < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK:
                    waiting = false
                    return
                case EINTR, ECONNABORTED, EPROTO:
                    continue
                default:
                    // Out of descriptors or memory: the connection stays in the backlog, and no
                    // new edge may come for it, so try again shortly.
                    onError(IOError(errnoCode: errno, reason: "accept"))
                    retry = eventLoop.scheduleTask(in: .milliseconds(100)) { [self] in
                        retry = nil
                        if accepting && !closed { acceptWaiting() }
                    }
                    return
                }
            }
            let channel = SocketChannel(accepted: fd, on: eventLoop, remote: Socket.address(storage), local: childLocal)
            do {
                try initializer(channel)
                try channel.start()
            } catch {
                onError(error)
                channel.close(promise: nil)
            }
        }
        // A full burst: the rest after the loop's other work.
        eventLoop.execute { [self] in if waiting && accepting && !closed { acceptWaiting() } }
    }

    /// Pauses or resumes accepting (the kernel's backlog holds new connections meanwhile).
    /// From any thread.
    public func setAccepting(_ on: Bool) {
        eventLoop.execute { [self] in
            guard !closed, accepting != on else { return }
            accepting = on
            // Resumed: what queued up meanwhile had its edge already.
            if on { acceptWaiting() }
        }
    }

    /// Stops listening. From any thread.
    public func close() -> EventLoopFuture<Void> {
        eventLoop.submit { [self] in close0() }
    }

    func loopStopping() { close0() }

    private func close0() {
        guard !closed else { return }
        closed = true
        retry?.cancel()
        eventLoop.deregister(descriptor: descriptor)
        Glibc.close(descriptor)
    }
}
