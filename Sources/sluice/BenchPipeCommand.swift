import ArgumentParser
import NIOCore
import NIOPosix

/// `sluice bench-pipe`: a blind TCP pipe on NIOPosix, built with Sluice's flags, for
/// benchmarks/callgrind/run.sh (`PROXY=pipe`). Every accepted connection gets its own upstream
/// connection on the same event loop and the bytes go through unparsed in both directions. What
/// it costs per request is the floor of any proxy whose sockets are NIOPosix channels. Sluice's
/// own sockets left NIOPosix for SluiceIO in session 18; the pipe stays as the reference that
/// measured why. Not part of the stable CLI.
struct BenchPipe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-pipe", abstract: "A blind TCP pipe on NIOPosix (the I/O floor, for benchmarks).",
        shouldDisplay: false)

    @Option(help: "Address to listen on.")
    var listen: ListenAddress = ListenAddress(argument: "127.0.0.1:9100")!

    @Option(help: "Address every connection is piped to.")
    var to: ListenAddress = ListenAddress(argument: "127.0.0.1:9000")!

    @Option(help: "Event loop threads.")
    var threads = 1

    mutating func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let target = try SocketAddress(ipAddress: to.host, port: to.port)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Nothing is read from the client until its upstream connection is up.
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PipeHandler(target: target))
                }
            }
            .bind(host: listen.host, port: listen.port).get()
        say("sluice bench-pipe listening on \(channel.localAddress.map { "\($0)" } ?? "?"), piping to \(target)")
        try await channel.closeFuture.get()
    }
}

/// One side of a pipe. It writes what it reads into its partner and flushes once per read burst,
/// as a proxy that forwards without parsing would; closing either side closes both.
final class PipeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let target: SocketAddress?
    private var context: ChannelHandlerContext?
    private var partner: PipeHandler?

    /// `target`: the address to connect to when this is the client side; nil on the upstream side.
    init(target: SocketAddress?) {
        self.target = target
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        guard let target else { return }
        // Both handlers live on this loop; the bootstrap's closures only run on it too.
        let upstream = NIOLoopBound(PipeHandler(target: nil), eventLoop: context.eventLoop)
        let client = NIOLoopBound(self, eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(upstream.value)
                }
            }
            .connect(to: target)
            .whenComplete { result in
                let me = client.value
                guard case .success = result, let context = me.context else {
                    // Either side may be gone: the client before its upstream came up, or the
                    // upstream that could not connect.
                    me.context?.close(promise: nil)
                    upstream.value.context?.close(promise: nil)
                    return
                }
                me.partner = upstream.value
                upstream.value.partner = me
                // Turning auto-read on starts reading (NIO issues the first read itself).
                try? context.channel.syncOptions?.setOption(.autoRead, value: true)
            }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.context?.close(promise: nil)
        partner = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
