import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceHTTP1
import SluiceProxy

/// The admin listener: health, readiness, Prometheus metrics, the configuration as JSON and a
/// status page. It runs on its own event loop so that a scrape never competes with a worker's
/// requests, and reads the data plane's counters by asking each worker loop for a copy.
public final class AdminServer: Sendable {
    let server: ProxyServer
    let reloader: ReloadCoordinator
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    public init(server: ProxyServer, reloader: ReloadCoordinator) {
        self.server = server
        self.reloader = reloader
    }

    /// Binds `host:port`. Only loopback addresses unless `allowPublic`: the admin interface shows
    /// the whole configuration and has no authentication.
    public func start(host: String, port: Int, allowPublic: Bool) async throws -> SocketAddress {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        if !allowPublic && !Self.isLoopback(address) {
            throw AdminError("refusing to serve the admin interface on \(host): not a loopback address (add --admin-public to allow it)")
        }
        let endpoints = AdminEndpoints(server: server, reloader: reloader)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AdminConnectionHandler(endpoints: endpoints))
                }
            }
            .bind(to: address).get()
        return channel.localAddress!
    }

    static func isLoopback(_ a: SocketAddress) -> Bool {
        guard let ip = a.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }
}

public struct AdminError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// One admin connection: HTTP/1.1 requests parsed with the proxy's own parser, answered one at a
/// time (keep-alive), each answer computed asynchronously and written back on the channel.
final class AdminConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let endpoints: AdminEndpoints
    private var parser = HTTP1Parser(kind: .request, limits: .default)
    private var inbound = ByteBuffer()
    private var busy = false

    init(endpoints: AdminEndpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbound.receive(unwrapInboundIn(data))
        process(context: context)
    }

    private func process(context: ChannelHandlerContext) {
        while !busy {
            let event = inbound.withUnsafeReadableBytes { parser.parse($0) }
            switch event {
            case .needMore(let consumed):
                inbound.moveReaderIndex(forwardBy: consumed)
                return
            case .head(let consumed):
                let head = parser.head
                let (method, target) = inbound.withUnsafeReadableBytes { p in
                    (String(decoding: p[head.methodRange], as: UTF8.self), String(decoding: p[head.target], as: UTF8.self))
                }
                inbound.moveReaderIndex(forwardBy: consumed)
                let keepAlive = !head.wantsClose && head.isHTTP11OrLater
                busy = true
                let loop = context.eventLoop
                let ctx = context
                let endpoints = self.endpoints
                let promise = loop.makePromise(of: AdminResponse.self)
                promise.completeWithTask { await endpoints.respond(method: method, target: target) }
                promise.futureResult.assumeIsolated().whenSuccess { response in
                    var out = ctx.channel.allocator.buffer(capacity: response.body.count + 256)
                    out.writeString("HTTP/1.1 \(response.status) \(response.status == 200 ? "OK" : response.status == 404 ? "Not Found" : response.status == 503 ? "Service Unavailable" : "Error")\r\n")
                    out.writeString("content-type: \(response.contentType)\r\ncontent-length: \(response.body.count)\r\ncache-control: no-store\r\n")
                    out.writeString("server: sluice-admin\r\n")
                    if !keepAlive { out.writeString("connection: close\r\n") }
                    out.writeString("\r\n")
                    if method != "HEAD" { out.writeBytes(response.body) }
                    ctx.writeAndFlush(NIOAny(out), promise: nil)
                    self.busy = false
                    if keepAlive { self.process(context: ctx) } else { ctx.close(promise: nil) }
                }
                return
            case .body(_, let consumed), .end(_, let consumed):
                inbound.moveReaderIndex(forwardBy: consumed)  // request bodies are read and ignored
            case .error:
                var out = context.channel.allocator.buffer(capacity: 64)
                out.writeString("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                context.writeAndFlush(NIOAny(out), promise: nil)
                context.close(promise: nil)
                return
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

struct AdminResponse: Sendable {
    var status: Int
    var contentType: String
    var body: [UInt8]

    static func json<T: Encodable>(_ value: T) -> AdminResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return AdminResponse(status: 200, contentType: "application/json", body: Array(data))
    }

    static func text(_ status: Int, _ s: String, type: String = "text/plain; charset=utf-8") -> AdminResponse {
        AdminResponse(status: status, contentType: type, body: Array(s.utf8))
    }
}
