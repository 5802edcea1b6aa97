import NIOCore
import NIOEmbedded
import Testing

@testable import SluiceIO

/// The write queue of a socket channel, without a socket: the test plays the kernel.
@Suite struct PendingWritesTests {
    static func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

    /// Pops every buffer written whole and succeeds its promise, as the channel will.
    static func complete(_ q: inout PendingWrites) -> Int {
        var n = 0
        while let promise = q.popWritten() {
            promise?.succeed(())
            n += 1
        }
        return n
    }

    @Test func writabilityFollowsTheWaterMarks() {
        var q = PendingWrites(waterMarks: .init(low: 4, high: 8))
        #expect(q.append(Self.buffer(Array(repeating: 1, count: 8)), promise: nil) == nil, "at the mark, not past it")
        #expect(q.append(Self.buffer([2]), promise: nil) == .becameUnwritable)
        #expect(q.append(Self.buffer([3]), promise: nil) == nil, "told once")
        #expect(!q.isWritable)
        q.markFlushed()
        // 10 queued; writing 5 leaves 5, above the low mark.
        var r = q.didWrite(5)
        #expect(r.finished == 0 && r.change == nil)
        r = q.didWrite(1)
        #expect(r.finished == 0 && r.change == .becameWritable)
        #expect(q.bytes == 4 && q.isWritable)
        r = q.didWrite(4)
        #expect(r.finished == 3 && r.change == nil)
        #expect(Self.complete(&q) == 3)
        #expect(q.isEmpty)
    }

    @Test func onlyFlushedBuffersAreWrittenAndPromisesCompleteInOrder() throws {
        let loop = EmbeddedEventLoop()
        var q = PendingWrites()
        let first = loop.makePromise(of: Void.self)
        let second = loop.makePromise(of: Void.self)
        let third = loop.makePromise(of: Void.self)
        let order = EpollEventLoopTests.Log()
        first.futureResult.whenSuccess { order.add(1) }
        second.futureResult.whenSuccess { order.add(2) }
        third.futureResult.whenSuccess { order.add(3) }
        _ = q.append(Self.buffer([1, 2, 3]), promise: first)
        _ = q.append(Self.buffer([4, 5]), promise: second)
        q.markFlushed()
        _ = q.append(Self.buffer([6]), promise: third)
        #expect(q.flushedBuffers.map(\.count) == [3, 2])
        // A short write: the first buffer's rest is what comes next.
        var r = q.didWrite(2)
        #expect(r.finished == 0)
        #expect(q.flushedBuffers.first == [3])
        r = q.didWrite(3)
        #expect(r.finished == 2)
        #expect(!q.hasFlushed, "the third buffer was not flushed")
        #expect(Self.complete(&q) == 2)
        #expect(order.all == [1, 2])
        q.markFlushed()
        #expect(q.flushedBuffers.first == [6])
        r = q.didWrite(1)
        #expect(r.finished == 1)
        #expect(Self.complete(&q) == 1)
        #expect(order.all == [1, 2, 3])
        try loop.syncShutdownGracefully()
    }

    @Test func anEmptyBufferCompletesWithoutBytes() throws {
        let loop = EmbeddedEventLoop()
        var q = PendingWrites()
        let promise = loop.makePromise(of: Void.self)
        _ = q.append(ByteBuffer(), promise: promise)
        q.markFlushed()
        #expect(q.hasFlushed)
        #expect(q.didWrite(0).finished == 1)
        #expect(Self.complete(&q) == 1)
        try promise.futureResult.wait()
        try loop.syncShutdownGracefully()
    }

    @Test func closingHandsBackEveryPromiseInOrder() throws {
        let loop = EmbeddedEventLoop()
        var q = PendingWrites(waterMarks: .init(low: 1, high: 2))
        let promises = (0..<3).map { _ in loop.makePromise(of: Void.self) }
        for p in promises { _ = q.append(Self.buffer([0, 0]), promise: p) }
        q.markFlushed()
        _ = q.append(Self.buffer([0]), promise: nil)
        let failed = q.removeAll()
        #expect(failed.map { $0.futureResult } == promises.map { $0.futureResult })
        for p in failed { p.fail(ChannelError.ioOnClosedChannel) }
        #expect(q.isEmpty && q.bytes == 0 && q.isWritable && !q.hasFlushed)
        try loop.syncShutdownGracefully()
    }

    /// Random buffers, flushes and short writes: what the "kernel" took, in order, is exactly the
    /// flushed buffers' bytes, and every buffer completes once.
    @Test func randomShortWritesDeliverTheFlushedBytesInOrder() {
        struct Random {
            var state: UInt64
            mutating func next(_ n: Int) -> Int {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                return Int(state % UInt64(n))
            }
        }
        var r = Random(state: 0x2545_F491_4F6C_DD1D)
        var q = PendingWrites(waterMarks: .init(low: 50, high: 100))
        var sent: [UInt8] = []
        var taken: [UInt8] = []
        var appended = 0
        var completed = 0
        var next: UInt8 = 0
        for _ in 0..<5_000 {
            switch r.next(3) {
            case 0:
                let size = r.next(40)
                let bytes = (0..<size).map { _ in next &+= 1; return next }
                sent += bytes
                _ = q.append(Self.buffer(bytes), promise: nil)
                appended += 1
            case 1:
                q.markFlushed()
            default:
                guard let first = q.flushedBuffers.first else { continue }
                // Up to a little more than the first buffer: a write may span buffers.
                let all = q.flushedBuffers.flatMap { $0 }
                let count = r.next(min(all.count, first.count + 20) + 1)
                taken += all.prefix(count)
                _ = q.didWrite(count)
                completed += Self.complete(&q)
            }
            #expect(!(q.isWritable && q.bytes > 100), "unwritable past the high mark")
            #expect(!(!q.isWritable && q.bytes <= 50), "writable again at the low mark")
        }
        q.markFlushed()
        while q.hasFlushed {
            let all = q.flushedBuffers.flatMap { $0 }
            taken += all
            _ = q.didWrite(all.count)
            completed += Self.complete(&q)
        }
        #expect(taken == sent)
        #expect(completed == appended)
        #expect(q.isEmpty && q.bytes == 0)
    }
}

extension PendingWrites {
    /// The flushed bytes still to write, buffer by buffer.
    fileprivate var flushedBuffers: [[UInt8]] {
        (0..<flushedCount).map { Array(flushedBuffer($0).readableBytesView) }
    }
}
