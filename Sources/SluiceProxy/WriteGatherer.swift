import NIOCore
import SluiceTLS

/// What goes to a client is gathered while it is small: a response head, a short body behind
/// it, a chunk's size line, the chunk and its CRLF leave as one buffer. It is handed out when
/// a piece too large to copy follows, when a piece would take it past `bufferLimit`, or at
/// the flush. Each channel write costs NIO a pass through its open-channel checks and a
/// pending-write entry, and an HTTP/1.1 response was two to four of them.
///
/// A value without a channel: the handler writes what `take()` hands out and what `join`
/// refuses, in that order.
struct WriteGatherer {
    /// Pieces up to this size are copied behind what is gathered rather than written apart.
    static let pieceLimit = 2048
    /// What is gathered is handed out once it reaches this: a read full of small chunks is not
    /// copied into one ever-growing buffer.
    static let bufferLimit = 16 * 1024

    private var gathered: ByteBuffer? = nil
    /// Where gathering buffers come from, and where each goes back once handed out: the next
    /// gathering on the loop writes over it once NIO has let go of it.
    private let buffers: BufferPool

    /// `buffers`: the event loop's pool.
    init(buffers: BufferPool) {
        self.buffers = buffers
    }

    var gatheredBytes: Int { gathered?.readableBytes ?? 0 }

    /// Appends what `write` writes to what is gathered, starting from a pooled buffer (with at
    /// least `capacity` bytes of room) when nothing is.
    mutating func gather(capacity: Int, _ write: (inout ByteBuffer) -> Void) {
        if gathered == nil {
            gathered = buffers.take(minimumCapacity: capacity)
        }
        write(&gathered!)
    }

    /// Copies `buffer` behind what is gathered when it is small and something is being
    /// gathered. False when it must be written apart: after what `take()` returns, not copied.
    mutating func join(_ buffer: ByteBuffer) -> Bool {
        // The size is read in place: a copy of `gathered` bound here lived on past the write and
        // made it copy the whole buffer (two allocations per response).
        guard let gatheredBytes = gathered?.readableBytes, buffer.readableBytes <= Self.pieceLimit,
              gatheredBytes + buffer.readableBytes <= Self.bufferLimit else { return false }
        gathered!.writeImmutableBuffer(buffer)
        return true
    }

    /// What was gathered, to be written now; nil when nothing was.
    mutating func take() -> ByteBuffer? {
        gathered.take()
    }

    /// A buffer `take()` handed out has been written: it goes back to the pool. Not before, or
    /// a handler below that takes from the pool too (TLS, gathering what it encrypts) would
    /// take this very buffer while it still reads it, and have to allocate.
    func written(_ out: ByteBuffer) {
        buffers.give(out)
    }
}
