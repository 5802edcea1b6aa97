import NIOCore
import NIOEmbedded
import SluiceHTTP1
import Testing

@testable import SluiceUpstream

/// A response whose client went away after its request was sent: read to its end for nobody,
/// and the connection pooled again, unless the rest is too long or too slow.
@Suite struct ResponseDrainTests {
    typealias Recorder = UpstreamConnectionTests.Recorder

    /// A connection half-way through a response with `contentLength` bytes of body, 5 of them
    /// received, and a pool on the same loop.
    static func midResponse(contentLength: Int = 10) throws -> (EmbeddedChannel, UpstreamConnection, UpstreamConnectionPool) {
        let (channel, connection, _) = try UpstreamConnectionTests.connected()
        let pool = UpstreamConnectionPool(eventLoop: channel.embeddedEventLoop)
        connection.attach(Recorder(), requestIsHead: false)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: \(contentLength)\r\n\r\n01234"))
        return (channel, connection, pool)
    }

    /// Ends the channel, closed by the drain or not: a close from inside a read completes on the
    /// embedded loop's next run, and until then the pipeline and its handler hold each other
    /// (LeakSanitizer reports them).
    static func finish(_ channel: EmbeddedChannel) {
        channel.embeddedEventLoop.run()
        _ = try? channel.finish()
        channel.embeddedEventLoop.run()
    }

    @Test func theRestIsReadAndTheConnectionPooled() throws {
        let (channel, connection, pool) = try Self.midResponse()
        defer { Self.finish(channel) }
        pool.drain(connection, finalHeadSeen: true, timeout: .seconds(5))
        #expect(pool.acquire(connection.endpoint) == nil, "not pooled before the response ends")
        try channel.writeInbound(ByteBuffer(string: "56789"))
        #expect(pool.acquire(connection.endpoint) === connection)
        #expect(channel.isActive)
    }

    @Test func aRestLongerThanTheLimitClosesTheConnection() throws {
        let (channel, connection, pool) = try Self.midResponse(contentLength: 100_000)
        defer { Self.finish(channel) }
        pool.drain(connection, finalHeadSeen: true, byteLimit: 1000, timeout: .seconds(5))
        try channel.writeInbound(ByteBuffer(string: String(repeating: "x", count: 2000)))
        #expect(!channel.isActive)
        #expect(pool.acquire(connection.endpoint) == nil)
    }

    @Test func aRestThatDoesNotEndInTimeClosesTheConnection() throws {
        let (channel, connection, pool) = try Self.midResponse()
        defer { Self.finish(channel) }
        pool.drain(connection, finalHeadSeen: true, timeout: .seconds(5))
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(pool.acquire(connection.endpoint) == nil)
    }

    /// Handed over before the final head: an interim response's end is not the end.
    @Test func anInterimResponseIsNotTheEnd() throws {
        let (channel, connection, _) = try UpstreamConnectionTests.connected()
        defer { Self.finish(channel) }
        let pool = UpstreamConnectionPool(eventLoop: channel.embeddedEventLoop)
        connection.attach(Recorder(), requestIsHead: false)
        pool.drain(connection, finalHeadSeen: false, timeout: .seconds(5))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"))
        #expect(pool.acquire(connection.endpoint) == nil)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 204 No Content\r\n\r\n"))
        #expect(pool.acquire(connection.endpoint) === connection)
    }

    /// Reading had been paused for the client that left: the drain resumes it.
    @Test func aPausedConnectionReadsAgain() throws {
        let (channel, connection, counter) = try UpstreamConnectionTests.pausedWhile(receiving: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        defer { Self.finish(channel) }
        let pool = UpstreamConnectionPool(eventLoop: channel.embeddedEventLoop)
        let before = counter.reads
        pool.drain(connection, finalHeadSeen: true, timeout: .seconds(5))
        #expect(counter.reads == before + 1)
        try channel.writeInbound(ByteBuffer(string: "56789"))
        #expect(pool.acquire(connection.endpoint) === connection)
    }
}
