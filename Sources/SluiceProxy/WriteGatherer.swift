import NIOCore

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
    /// The buffer handed out last, written over by the next gathering once NIO has let go of it.
    private var spare: ByteBuffer? = nil

    var gatheredBytes: Int { gathered?.readableBytes ?? 0 }

    /// Lets the spare buffer go (an idle connection); the next gathering allocates.
    mutating func releaseSpare() {
        spare = nil
    }

    /// Appends what `write` writes to what is gathered, starting from the spare buffer (with at
    /// least `capacity` bytes of room) when nothing is.
    mutating func gather(capacity: Int, _ write: (inout ByteBuffer) -> Void) {
        if gathered == nil {
            gathered = ByteBuffer.takeKept(&spare, capacity: capacity)
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
        guard let out = gathered else { return nil }
        gathered = nil
        out.keep(in: &spare)
        return out
    }
}

// MARK: - Buffers kept to be written over

extension ByteBuffer {
    /// The kept buffer, emptied, with room for `capacity` bytes (a new one when none is kept).
    /// Once NIO has sent it, its storage is referenced only by the keeper and `clear` reuses it:
    /// no allocation. One still queued (a pipelined burst, a slow client) makes `clear` copy, as
    /// it must. The buffer is moved out of the keeper, which would otherwise hold a second
    /// reference; leaving `ByteBuffer()` there instead retained NIO's one shared empty buffer,
    /// whose reference count every event loop then wrote.
    static func takeKept(_ kept: inout ByteBuffer?, capacity: Int) -> ByteBuffer {
        guard var b = kept.take() else { return ByteBufferAllocator().buffer(capacity: capacity) }
        b.clear(minimumCapacity: capacity)
        return b
    }

    /// Keeps this buffer to be written over unless it is unusually large: an idle connection
    /// should not hold on to a 64 KiB head.
    func keep(in kept: inout ByteBuffer?) {
        kept = capacity <= 4096 ? self : nil
    }
}
