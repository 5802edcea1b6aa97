import Glibc
import NIOCore

// LoopFloor LISTEN_PORT BACKEND_PORT: a blind pipe from 127.0.0.1:LISTEN_PORT to
// 127.0.0.1:BACKEND_PORT, one upstream connection per client connection, on one thread.

/// One side of a pipe, as `sluice bench-pipe`'s: what it reads goes to its partner, flushed once
/// per read burst; closing either side closes both.
final class PipeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    var partner: PipeHandler?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
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

    func close() { context?.close(promise: nil) }
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let listenPort = UInt16(arguments[1]), let backendPort = UInt16(arguments[2]) else {
    print("usage: LoopFloor LISTEN_PORT BACKEND_PORT")
    exit(2)
}
signal(SIGPIPE, SIG_IGN)
let loop = EpollLoop()
let listener = EpollListener(port: listenPort, loop: loop) { fd in
    let client = EpollSocket(accepted: fd, loop: loop)
    let clientSide = PipeHandler()
    // Nothing is read from the client until its upstream connection is up.
    _ = client.setOption(.autoRead, value: false)
    try! client.pipeline.syncOperations.addHandler(clientSide)
    client.start()
    let connected = loop.makePromise(of: Void.self)
    let upstream = EpollSocket(connectingTo: backendPort, loop: loop, promise: connected)
    let upstreamSide = PipeHandler()
    try! upstream.pipeline.syncOperations.addHandler(upstreamSide)
    let bound = NIOLoopBound((client, clientSide, upstreamSide), eventLoop: loop)
    connected.futureResult.whenComplete { result in
        let (client, clientSide, upstreamSide) = bound.value
        guard case .success = result, client.isActive else {
            clientSide.close()
            upstreamSide.close()
            return
        }
        clientSide.partner = upstreamSide
        upstreamSide.partner = clientSide
        _ = client.setOption(.autoRead, value: true)
    }
    upstream.start()
}
let banner = "LoopFloor listening on 127.0.0.1:\(listenPort), piping to 127.0.0.1:\(backendPort)\n"
_ = banner.withCString { write(1, $0, strlen($0)) }
withExtendedLifetime(listener) { loop.run() }
