import NIOCore
import NIOEmbedded
import SluiceHTTP1
import Testing

@testable import SluiceUpstream

/// When an upstream connection asks to read. Its channel does not read by itself (auto-read is
/// off): a connection that forgets to ask stops receiving, one that asks while paused lets a
/// slow client's response pile up in memory.
@Suite struct UpstreamConnectionTests {
    /// Counts the read requests that pass on their way to the socket.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    final class Recorder: UpstreamResponseDelegate {
        var events: [String] = []
        func upstreamResponseHead(_ head: HTTP1Head, buffer: ByteBuffer) { events.append("head \(head.status)") }
        func upstreamResponseBody(_ body: ByteBuffer) { events.append("body \(body.readableBytes)") }
        func upstreamResponseEnd(trailers: ByteBuffer?) { events.append("end") }
        func upstreamTunnelData(_ data: ByteBuffer) { events.append("tunnel") }
        func upstreamFailed(_ error: UpstreamError) { events.append("failed") }
        func upstreamReadComplete() { events.append("complete") }
        func upstreamWritabilityChanged(isWritable: Bool) {}
    }

    /// An active connection to a made-up endpoint, with a read counter below it. The caller
    /// finishes the channel (an open one keeps its pipeline alive: LeakSanitizer reports it).
    static func connected() throws -> (EmbeddedChannel, UpstreamConnection, ReadCounter) {
        let counter = ReadCounter()
        let connection = UpstreamConnection(endpoint: try Endpoint(host: "192.0.2.1", port: 8080))
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.1", port: 8080)).wait()
        return (channel, connection, counter)
    }

    static func response(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    /// A connection whose client stopped taking bytes (reading paused) when `text` arrived.
    static func pausedWhile(receiving text: String) throws -> (EmbeddedChannel, UpstreamConnection, ReadCounter) {
        let (channel, connection, counter) = try connected()
        connection.attach(Recorder(), requestIsHead: false)
        connection.setReadPaused(true)
        try channel.writeInbound(response(text))
        return (channel, connection, counter)
    }

    @Test func asksForTheFirstReadOnceConnectedAndTheNextAfterEachRead() throws {
        let (channel, connection, counter) = try Self.connected()
        defer { _ = try? channel.finish() }
        #expect(counter.reads == 1)
        let recorder = Recorder()
        connection.attach(recorder, requestIsHead: false)
        try channel.writeInbound(Self.response("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab"))
        #expect(counter.reads == 2)
        try channel.writeInbound(Self.response("cd"))
        #expect(counter.reads == 3, "the response ended: idle, the connection still reads")
        #expect(recorder.events == ["head 200", "body 2", "complete", "body 2", "end"])
        #expect(connection.isUsable)
    }

    @Test func aPausedConnectionOwesItsReadUntilResumed() throws {
        let (channel, connection, counter) = try Self.pausedWhile(receiving: "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
        defer { _ = try? channel.finish() }
        #expect(counter.reads == 1, "no read while the client cannot take more")
        connection.setReadPaused(true)
        #expect(counter.reads == 1)
        connection.setReadPaused(false)
        #expect(counter.reads == 2, "the owed read, once")
        connection.setReadPaused(false)
        #expect(counter.reads == 2)
        #expect(channel.isActive, "pausing is not closing")
    }

    @Test func detachingReleasesAnOwedRead() throws {
        let (channel, connection, counter) = try Self.pausedWhile(receiving: "HTTP/1.1 204 No Content\r\n\r\n")
        defer { _ = try? channel.finish() }
        #expect(counter.reads == 1)
        connection.detach()
        #expect(counter.reads == 2, "an idle connection keeps reading, to see the upstream close")
        #expect(channel.isActive && connection.isUsable)
    }
}
