import CLinuxIO
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import SluiceIO

/// `TCPListener` and `SocketChannel` on real loopback sockets: data both ways, a full socket
/// and writability, half-closure in each direction, refused connects, paused accepting and the
/// options the proxy sets.
@Suite struct SocketChannelTests {
    /// What a channel saw, readable from the test's thread.
    final class Seen: Sendable {
        struct State {
            var bytes: [UInt8] = []
            var events: [String] = []
            var writabilityChanges: [Bool] = []
        }
        let state = NIOLockedValueBox(State())
        var bytes: [UInt8] { state.withLockedValue { $0.bytes } }
        var events: [String] { state.withLockedValue { $0.events } }
        var writabilityChanges: [Bool] { state.withLockedValue { $0.writabilityChanges } }
    }

    /// Records reads and events; answers `reply` once the input has ended, then closes, when
    /// asked to.
    final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let seen: Seen
        let replyAtInputEnd: [UInt8]?
        let inactive: EventLoopPromise<Void>?

        init(_ seen: Seen, replyAtInputEnd: [UInt8]? = nil, inactive: EventLoopPromise<Void>? = nil) {
            self.seen = seen
            self.replyAtInputEnd = replyAtInputEnd
            self.inactive = inactive
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            seen.state.withLockedValue { $0.bytes += bytes }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            guard let e = event as? ChannelEvent else { return }
            seen.state.withLockedValue { $0.events.append(e == .inputClosed ? "inputClosed" : "outputClosed") }
            if e == .inputClosed, let reply = replyAtInputEnd {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: reply))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            }
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            let writable = context.channel.isWritable
            seen.state.withLockedValue { $0.writabilityChanges.append(writable) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            seen.state.withLockedValue { $0.events.append("inactive") }
            inactive?.succeed(())
        }
    }

    /// Echoes what it reads.
    final class Echo: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
        func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    }

    /// Answers the first bytes it reads, then closes with SO_LINGER 0: a reset, not a FIN.
    final class AnswerThenReset: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            let fd = (context.channel as! SocketChannel).descriptor
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: Array("answer".utf8)))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    func withLoop(_ body: (EpollEventLoop) async throws -> Void) async throws {
        let group = EpollEventLoopGroup(threads: 1)
        do {
            try await body(group.eventLoops[0])
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    static func localhost(_ port: Int = 0) -> SocketAddress { try! SocketAddress(ipAddress: "127.0.0.1", port: port) }

    /// A listener on loopback, a client connected to it (set up by `client`) and the server's
    /// side of that connection, once accepted (set up by `server`).
    func connectedPair(_ loop: EpollEventLoop, clientAutoRead: Bool = true,
                       server: @escaping (SocketChannel) throws -> Void = { _ in },
                       client: @escaping (SocketChannel) throws -> Void) async throws
        -> (listener: TCPListener, client: SocketChannel, server: SocketChannel) {
        let accepted = NIOLockedValueBox<SocketChannel?>(nil)
        let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
            try server(channel)
            accepted.withLockedValue { $0 = channel }
        }.get()
        let connected = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5),
                                                        autoRead: clientAutoRead, initialize: client).get()
        let ok = await Self.eventually { accepted.withLockedValue { $0 } != nil }
        try #require(ok, "the listener never accepted the connection")
        return (listener, connected, accepted.withLockedValue { $0 }!)
    }

    /// Waits (bounded) until `condition` holds; false if it never did.
    static func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return condition()
    }

    @Test func bytesGoBothWaysAndAddressesAreKnown() async throws {
        try await withLoop { loop in
            let serverSeen = NIOLockedValueBox<SocketAddress?>(nil)
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
                serverSeen.withLockedValue { $0 = channel.remoteAddress }
                try channel.pipeline.syncOperations.addHandler(Echo())
            }.get()
            #expect(listener.localAddress.port != 0)
            let seen = Seen()
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(seen))
            }.get()
            let message = Array("hello, loop".utf8)
            try await client.writeAndFlush(ByteBuffer(bytes: message)).get()
            #expect(await Self.eventually { seen.bytes == message })
            #expect(client.remoteAddress == listener.localAddress)
            let local = try await loop.submit { client.localAddress }.get()
            #expect(local?.ipAddress == "127.0.0.1")
            #expect(serverSeen.withLockedValue { $0 } == local, "the accepted side knows the client's address")
            try await client.close().get()
            try await listener.close().get()
        }
    }

    /// Bytes written and flushed before the connect completes go out once it does.
    @Test func writesFlushedWhileConnectingGoOutOnceConnected() async throws {
        try await withLoop { loop in
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
                try channel.pipeline.syncOperations.addHandler(Echo())
            }.get()
            let seen = Seen()
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(seen))
                channel.writeAndFlush(ByteBuffer(bytes: Array("early".utf8)), promise: nil)
            }.get()
            #expect(await Self.eventually { seen.bytes == Array("early".utf8) })
            try await client.close().get()
            try await listener.close().get()
        }
    }

    /// The direct operations of the handler next to the head: a read happens only when asked
    /// for, written bytes wait for the flush and keep their order with pipeline writes, and a
    /// write after the close is dropped.
    @Test func directOutputReadsWritesAndFlushesLikeThePipeline() async throws {
        try await withLoop { loop in
            let serverSeen = Seen()
            let seen = Seen()
            let (listener, client, server) = try await connectedPair(loop, clientAutoRead: false, server: { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(serverSeen))
            }, client: { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(seen))
            })
            try await loop.submit {
                client.writeDirect(ByteBuffer(bytes: Array("one ".utf8)))
                client.write(ByteBuffer(bytes: Array("two ".utf8)), promise: nil)
                client.writeDirect(ByteBuffer(bytes: Array("three".utf8)))
            }.get()
            try await Task.sleep(nanoseconds: 50_000_000)
            #expect(serverSeen.bytes.isEmpty, "nothing goes out before the flush")
            try await loop.submit { client.flushDirect() }.get()
            #expect(await Self.eventually { serverSeen.bytes == Array("one two three".utf8) })

            try await server.writeAndFlush(ByteBuffer(bytes: [7, 7])).get()
            try await Task.sleep(nanoseconds: 50_000_000)
            #expect(seen.bytes.isEmpty, "no auto-read: nothing is read until asked")
            try await loop.submit { client.readDirect() }.get()
            #expect(await Self.eventually { seen.bytes == [7, 7] })

            try await client.close().get()
            try await loop.submit {
                client.writeDirect(ByteBuffer(bytes: [1]))
                client.flushDirect()
                client.readDirect()
            }.get()
            try await listener.close().get()
        }
    }

    /// Reads handed to a `SocketChannelReader` skip the pipeline; handed back (nil), they go
    /// down the pipeline again.
    @Test func aDirectReaderTakesTheReadsUntilItHandsThemBack() async throws {
        final class Direct: SocketChannelReader, @unchecked Sendable {
            let seen = Seen()
            func socketChannelRead(_ buffer: ByteBuffer) {
                seen.state.withLockedValue { $0.bytes += Array(buffer.readableBytesView) }
            }
            func socketChannelReadComplete() {
                seen.state.withLockedValue { $0.events.append("complete") }
            }
        }
        try await withLoop { loop in
            let viaPipeline = Seen()
            let direct = Direct()
            let (listener, client, server) = try await connectedPair(loop) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(viaPipeline))
                channel.readDirectly(to: direct)
            }
            try await server.writeAndFlush(ByteBuffer(bytes: [1, 2, 3])).get()
            #expect(await Self.eventually { direct.seen.bytes == [1, 2, 3] && direct.seen.events.contains("complete") })
            #expect(viaPipeline.bytes.isEmpty)
            try await loop.submit { client.readDirectly(to: nil) }.get()
            try await server.writeAndFlush(ByteBuffer(bytes: [4])).get()
            #expect(await Self.eventually { viaPipeline.bytes == [4] })
            #expect(direct.seen.bytes == [1, 2, 3])
            try await client.close().get()
            try await listener.close().get()
        }
    }

    /// An input edge whose bytes were already read with an earlier one finds nothing: the read
    /// that was asked for must still be pending when bytes do come. Before, the empty read
    /// consumed it, and a channel without auto-read (an upstream connection) stalled.
    @Test func aStaleInputEdgeLeavesTheRequestedReadPending() async throws {
        try await withLoop { loop in
            let seen = Seen()
            let (listener, client, server) = try await connectedPair(loop, clientAutoRead: false) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(seen))
            }
            try await loop.submit {
                client.read()
                client.ready(CLinuxIOEpollIn)  // nothing to read: EAGAIN
            }.get()
            try await server.writeAndFlush(ByteBuffer(bytes: [4, 2])).get()
            #expect(await Self.eventually { seen.bytes == [4, 2] }, "the read asked for before the stale edge delivers these")
            try await client.close().get()
            try await listener.close().get()
        }
    }

    @Test func aFullSocketMakesTheChannelUnwritableUntilThePeerReads() async throws {
        try await withLoop { loop in
            let serverChannel = NIOLockedValueBox<SocketChannel?>(nil)
            let serverSeen = Seen()
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
                channel.autoRead = false
                serverChannel.withLockedValue { $0 = channel }
                try channel.pipeline.syncOperations.addHandler(Recorder(serverSeen))
            }.get()
            let seen = Seen()
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(seen))
            }.get()
            // 8 MiB, more than both socket buffers hold while the server does not read.
            let chunk = [UInt8]((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let all = try await loop.submit { () -> EventLoopFuture<Void> in
                var writes: [EventLoopFuture<Void>] = []
                for _ in 0..<128 { writes.append(client.write(ByteBuffer(bytes: chunk))) }
                client.flush()
                return EventLoopFuture.andAllSucceed(writes, on: loop)
            }.get()
            #expect(await Self.eventually { seen.writabilityChanges == [false] })
            #expect(!client.isWritable)
            let buffered = try await client.getOption(.bufferedWritableBytes).get()
            #expect(buffered > 0 && buffered < 128 * 65536)
            // The server starts reading: everything arrives, in order, and the client is
            // writable again.
            try await serverChannel.withLockedValue { $0 }!.setOption(.autoRead, value: true).get()
            try await all.get()
            #expect(await Self.eventually { serverSeen.bytes.count == 128 * 65536 })
            #expect(serverSeen.bytes == Array([[UInt8]](repeating: chunk, count: 128).joined()))
            #expect(seen.writabilityChanges == [false, true])
            #expect(client.isWritable)
            try await client.close().get()
            try await listener.close().get()
        }
    }

    @Test func theClientsHalfCloseReachesTheServerWhichStillAnswers() async throws {
        try await withLoop { loop in
            let serverSeen = Seen()
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
                channel.allowRemoteHalfClosure = true
                try channel.pipeline.syncOperations.addHandler(Recorder(serverSeen, replyAtInputEnd: Array("bye".utf8)))
            }.get()
            let seen = Seen()
            let inactive = loop.makePromise(of: Void.self)
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { channel in
                channel.allowRemoteHalfClosure = true
                try channel.pipeline.syncOperations.addHandler(Recorder(seen, inactive: inactive))
            }.get()
            // A large write, then the half-close at once: the close waits for the bytes.
            let body = [UInt8](repeating: 0x61, count: 1 << 20)
            client.writeAndFlush(ByteBuffer(bytes: body), promise: nil)
            try await client.close(mode: .output).get()
            try await inactive.futureResult.get()
            #expect(serverSeen.bytes.count == body.count)
            #expect(serverSeen.events.prefix(1) == ["inputClosed"])
            #expect(seen.bytes == Array("bye".utf8))
            // The client's output was shut, so the server's end of input closed it whole.
            #expect(seen.events == ["outputClosed", "inactive"])
            try await listener.close().get()
        }
    }

    @Test func withoutHalfClosureThePeersEndClosesTheChannel() async throws {
        try await withLoop { loop in
            let inactive = loop.makePromise(of: Void.self)
            let serverSeen = Seen()
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(serverSeen, inactive: inactive))
            }.get()
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { _ in }.get()
            try await client.writeAndFlush(ByteBuffer(bytes: [1, 2, 3])).get()
            try await client.close(mode: .output).get()
            try await inactive.futureResult.get()
            #expect(serverSeen.bytes == [1, 2, 3])
            #expect(serverSeen.events == ["inactive"])
            // The server's full close is the client's end of input: it closes too.
            try await client.closeFuture.get()
            try await listener.close().get()
        }
    }

    /// An upstream that answers early and resets the upload it did not read: the answer is
    /// still queued when the reset comes, and it must reach the handler even though no read was
    /// asked for.
    @Test func bytesQueuedBeforeAResetAreDeliveredThenTheChannelCloses() async throws {
        try await withLoop { loop in
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
                try channel.pipeline.syncOperations.addHandler(AnswerThenReset())
            }.get()
            let seen = Seen()
            let inactive = loop.makePromise(of: Void.self)
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5), autoRead: false) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(seen, inactive: inactive))
            }.get()
            client.writeAndFlush(ByteBuffer(bytes: Array("question".utf8)), promise: nil)
            try await inactive.futureResult.get()
            #expect(seen.bytes == Array("answer".utf8))
            #expect(!client.isActive)
            try await listener.close().get()
        }
    }

    /// As NIOPosix: a loop that shuts down closes what is still open on it, so no promise of
    /// theirs is left unfulfilled (a debug build traps on one) and no descriptor leaks.
    @Test func shuttingTheLoopDownClosesItsChannelsAndListeners() async throws {
        let group = EpollEventLoopGroup(threads: 1)
        let loop = group.eventLoops[0]
        let accepted = NIOLockedValueBox<SocketChannel?>(nil)
        let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
            accepted.withLockedValue { $0 = channel }
        }.get()
        let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { _ in }.get()
        #expect(await Self.eventually { accepted.withLockedValue { $0 } != nil })
        let server = accepted.withLockedValue { $0 }!
        // Callbacks added now (a stopped loop takes no more tasks, so no future of its can be
        // waited on afterwards).
        let closed = NIOLockedValueBox(0)
        client.closeFuture.whenComplete { _ in closed.withLockedValue { $0 += 1 } }
        server.closeFuture.whenComplete { _ in closed.withLockedValue { $0 += 1 } }
        try await group.shutdownGracefully()
        #expect(!client.isActive && !server.isActive)
        #expect(closed.withLockedValue { $0 } == 2, "both close futures completed as the loop drained its last tasks")
        // The listener's port is free again.
        let again = EpollEventLoopGroup(threads: 1)
        let rebound = try await TCPListener.bind(to: listener.localAddress, on: again.eventLoops[0]) { _ in }.get()
        try await rebound.close().get()
        try await again.shutdownGracefully()
    }

    /// A listener whose accept queue is full drops new handshakes (Linux), so a connect to it
    /// can only end by its timeout: `ChannelError.connectTimeout`, which the proxy maps to 504.
    @Test func aConnectThatNeverCompletesEndsAtItsTimeout() async throws {
        try await withLoop { loop in
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop, backlog: 1) { _ in }.get()
            listener.setAccepting(false)
            try await loop.submit {}.get()
            var connected: [SocketChannel] = []
            var timedOut = false
            for _ in 0..<8 where !timedOut {
                let attempt = SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .milliseconds(300)) { _ in }
                do {
                    connected.append(try await attempt.get())
                } catch ChannelError.connectTimeout(let amount) {
                    #expect(amount == .milliseconds(300))
                    timedOut = true
                }
            }
            #expect(timedOut, "the queue holds a few connections, then handshakes wait")
            #expect(!connected.isEmpty && connected.count < 8)
            for c in connected { try await c.close().get() }
            try await listener.close().get()
        }
    }

    @Test func aRefusedConnectFailsWithTheSystemsError() async throws {
        try await withLoop { loop in
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { _ in }.get()
            let address = listener.localAddress
            try await listener.close().get()
            let connect = SocketChannel.connect(to: address, on: loop, timeout: .seconds(5)) { _ in }
            do {
                _ = try await connect.get()
                Issue.record("a connect to a closed port succeeded")
            } catch let error as IOError {
                #expect(error.errnoCode == ECONNREFUSED)
            }
        }
    }

    @Test func pausedAcceptingLeavesConnectionsInTheBacklogUntilResumed() async throws {
        try await withLoop { loop in
            let accepted = NIOLockedValueBox(0)
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { channel in
                accepted.withLockedValue { $0 += 1 }
                try channel.pipeline.syncOperations.addHandler(Echo())
            }.get()
            listener.setAccepting(false)
            try await loop.submit {}.get()
            var clients: [SocketChannel] = []
            for _ in 0..<5 {
                // The kernel completes the handshake from the backlog: the connect succeeds.
                let c = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { _ in }.get()
                clients.append(c)
            }
            try await loop.submit {}.get()
            #expect(accepted.withLockedValue { $0 } == 0)
            listener.setAccepting(true)
            #expect(await Self.eventually { accepted.withLockedValue { $0 } == 5 })
            for c in clients { try await c.close().get() }
            try await listener.close().get()
        }
    }

    @Test func theOptionsTheProxySetsAreHonoured() async throws {
        try await withLoop { loop in
            let listener = try await TCPListener.bind(to: Self.localhost(), on: loop) { _ in }.get()
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5), autoRead: false) { _ in }.get()
            let values = try await loop.submit { () -> (Bool, Bool, UInt, Int, SocketOptionValue, Bool) in
                let options = client.syncOptions!
                let autoRead = try options.getOption(.autoRead)
                try options.setOption(.allowRemoteHalfClosure, value: true)
                try options.setOption(.maxMessagesPerRead, value: 16)
                let noDelay = try options.getOption(.tcpOption(.tcp_nodelay))
                var unsupported = false
                do { _ = try options.getOption(.datagramVectorReadMessageCount) } catch { unsupported = true }
                return (autoRead, try options.getOption(.allowRemoteHalfClosure), try options.getOption(.maxMessagesPerRead),
                        try options.getOption(.bufferedWritableBytes), noDelay, unsupported)
            }.get()
            #expect(values.0 == false)
            #expect(values.1 == true)
            #expect(values.2 == 16)
            #expect(values.3 == 0)
            #expect(values.4 != 0, "TCP_NODELAY is on")
            #expect(values.5, "an option the channel does not have is an error, not silently ignored")
            try await client.close().get()
            try await listener.close().get()
        }
    }

    @Test func ipv6LoopbackWorksWhereTheHostHasIt() async throws {
        guard let address = try? SocketAddress(ipAddress: "::1", port: 0) else { return }
        try await withLoop { loop in
            let bound = TCPListener.bind(to: address, on: loop) { channel in
                try channel.pipeline.syncOperations.addHandler(Echo())
            }
            guard let listener = try? await bound.get() else { return }  // no IPv6 on this host
            let seen = Seen()
            let client = try await SocketChannel.connect(to: listener.localAddress, on: loop, timeout: .seconds(5)) { channel in
                try channel.pipeline.syncOperations.addHandler(Recorder(seen))
            }.get()
            try await client.writeAndFlush(ByteBuffer(bytes: [9, 8, 7])).get()
            #expect(await Self.eventually { seen.bytes == [9, 8, 7] })
            #expect(client.remoteAddress?.protocol == .inet6)
            try await client.close().get()
            try await listener.close().get()
        }
    }
}
