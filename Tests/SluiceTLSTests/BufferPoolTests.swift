import NIOCore
import SluiceTLS
import Testing

/// The loop's shared buffers: handed out last-returned first, never written over while another
/// holder still reads them, and never kept when large.
struct BufferPoolTests {
    private func address(_ b: ByteBuffer) -> UInt {
        b.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
    }

    @Test func theBufferReturnedLastIsTheNextHandedOut() {
        let pool = BufferPool()
        var a = pool.take(minimumCapacity: 100)
        var b = pool.take(minimumCapacity: 100)
        a.writeString("a")
        b.writeString("b")
        let first = address(a), second = address(b)
        pool.give(a)
        pool.give(b)
        a = ByteBuffer()
        b = ByteBuffer()
        // Returned last, taken first: the memory most recently written, still in cache.
        let next = pool.take(minimumCapacity: 100)
        #expect(address(next) == second)
        #expect(next.readableBytes == 0)
        #expect(address(pool.take(minimumCapacity: 100)) == first)
        #expect(pool.count == 0)
    }

    @Test func aBufferStillHeldIsNotWrittenOver() {
        let pool = BufferPool()
        var queued = pool.take(minimumCapacity: 64)
        queued.writeString("still queued")
        pool.give(queued)  // given back while the channel still holds it
        var next = pool.take(minimumCapacity: 64)
        next.writeString("next")
        #expect(String(buffer: queued) == "still queued")
        #expect(String(buffer: next) == "next")
        #expect(address(next) != address(queued))
    }

    @Test func largeBuffersAndBuffersPastTheLimitAreLetGo() {
        let pool = BufferPool(smallLimit: 2, largeLimit: 1)
        pool.give(ByteBufferAllocator().buffer(capacity: 64 * 1024))
        #expect(pool.count == 0)
        for _ in 0..<3 { pool.give(ByteBufferAllocator().buffer(capacity: 1024)) }
        #expect(pool.count == 2)
        for _ in 0..<2 { pool.give(ByteBufferAllocator().buffer(capacity: 16 * 1024)) }
        #expect(pool.count == 3)
        pool.trim()
        #expect(pool.count == 0)
    }

    @Test func aRecordWriterIsNotHandedAHeadBuffer() {
        let pool = BufferPool()
        var head = ByteBufferAllocator().buffer(capacity: 1024)
        var record = ByteBufferAllocator().buffer(capacity: 16 * 1024)
        head.writeString("h")
        record.writeString("r")
        let headAddress = address(head), recordAddress = address(record)
        pool.give(record)
        pool.give(head)  // returned last, but too small for a record
        head = ByteBuffer()
        record = ByteBuffer()
        let forRecord = pool.take(minimumCapacity: 16 * 1024)
        #expect(address(forRecord) == recordAddress)
        #expect(forRecord.writableBytes >= 16 * 1024)
        #expect(address(pool.take(minimumCapacity: 300)) == headAddress)
    }

    @Test func aTakenBufferHasTheRoomAskedFor() {
        let pool = BufferPool()
        pool.give(ByteBufferAllocator().buffer(capacity: 1024))
        let b = pool.take(minimumCapacity: 4000)
        #expect(b.writableBytes >= 4000)
    }

    @Test func aRequestLargerThanAnyKeptBufferLeavesTheKeptOnesAlone() {
        let pool = BufferPool()
        pool.give(ByteBufferAllocator().buffer(capacity: 16 * 1024))
        let big = pool.take(minimumCapacity: 66 * 1024)
        #expect(big.writableBytes >= 66 * 1024)
        #expect(pool.count == 1)
    }

    @Test func anIdleLoopLetsItsBuffersGoAtTheSecondSweep() {
        let pool = BufferPool()
        pool.give(pool.take(minimumCapacity: 100))
        pool.sweep()  // something was taken since the start: kept
        #expect(pool.count == 1)
        pool.sweep()  // nothing taken for a whole period: idle
        #expect(pool.count == 0)
    }
}
