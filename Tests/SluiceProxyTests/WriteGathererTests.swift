import NIOCore
import SluiceTLS
import Testing
@testable import SluiceProxy

/// The gathering of small response pieces into one write, without a channel: `written` is what
/// the handler would pass to `context.write`, in order.
struct WriteGathererTests {
    struct Output {
        var gatherer = WriteGatherer(buffers: BufferPool())
        var written: [String] = []

        mutating func gather(_ s: String) {
            gatherer.gather(capacity: s.utf8.count) { $0.writeString(s) }
        }

        mutating func send(_ s: String) {
            let b = ByteBuffer(string: s)
            if gatherer.join(b) { return }
            flush()
            written.append(String(buffer: b))
        }

        mutating func flush() {
            if let out = gatherer.take() {
                written.append(String(buffer: out))
                gatherer.written(out)
            }
        }
    }

    @Test func aHeadAndAShortBodyLeaveAsOneWrite() {
        var o = Output()
        o.gather("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        o.send("hello")
        o.flush()
        #expect(o.written == ["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"])
        o.flush()
        #expect(o.written.count == 1, "nothing is written twice")
    }

    @Test func aLargeBodyIsWrittenApartAfterWhatWasGathered() {
        var o = Output()
        let big = String(repeating: "b", count: WriteGatherer.pieceLimit + 1)
        o.gather("head\r\n\r\n")
        o.send(big)
        #expect(o.written == ["head\r\n\r\n", big])
        #expect(o.gatherer.gatheredBytes == 0)
        o.gather("0\r\n\r\n")  // what follows is gathered again
        o.flush()
        #expect(o.written.last == "0\r\n\r\n")
    }

    @Test func aBodyWithNothingGatheredIsWrittenAsIs() {
        var o = Output()
        o.send("x")
        #expect(o.written == ["x"])
    }

    @Test func manySmallChunksAreWrittenInOrderAndNeverAsOneHugeBuffer() {
        var o = Output()
        var expected = ""
        for i in 0..<100 {
            let size = String(1000, radix: 16) + "\r\n"
            let data = String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: 1000)
            o.gather(size)
            o.send(data)
            o.gather("\r\n")
            expected += size + data + "\r\n"
        }
        o.flush()
        #expect(o.written.joined() == expected)
        #expect(o.written.count > 1)
        #expect(o.written.allSatisfy { $0.utf8.count <= WriteGatherer.bufferLimit })
    }

    @Test func theBufferWrittenLastIsWrittenOverOnceReleased() {
        var g = WriteGatherer(buffers: BufferPool())
        g.gather(capacity: 64) { $0.writeString("first") }
        var out = g.take()!
        let storage = out.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        g.written(out)
        out = ByteBuffer()  // NIO has written it and let go
        _ = out
        g.gather(capacity: 64) { $0.writeString("second") }
        let again = g.take()!
        #expect(again.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) } == storage)
        #expect(String(buffer: again) == "second")
    }

    @Test func aJoinedBodyIsCopiedIntoTheGatheredBufferItself() {
        var g = WriteGatherer(buffers: BufferPool())
        var storage: UInt = 0
        g.gather(capacity: 64) { b in
            storage = b.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
            b.writeString("HTTP/1.1 200 OK\r\n\r\n")
        }
        let joined = g.join(ByteBuffer(string: "hello"))
        #expect(joined)
        let out = g.take()!
        #expect(String(buffer: out) == "HTTP/1.1 200 OK\r\n\r\nhello")
        #expect(out.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) } == storage, "the body went into a copy")
    }

    @Test func aBufferStillQueuedIsNotWrittenOver() {
        var g = WriteGatherer(buffers: BufferPool())
        g.gather(capacity: 64) { $0.writeString("queued") }
        let queued = g.take()!  // still held, as by NIO's pending writes
        g.written(queued)
        g.gather(capacity: 64) { $0.writeString("next") }
        let next = g.take()!
        #expect(String(buffer: queued) == "queued")
        #expect(String(buffer: next) == "next")
    }
}
