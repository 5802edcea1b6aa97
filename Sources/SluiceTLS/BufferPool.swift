import NIOCore

/// Buffers shared by the connections of one event loop, handed out most recently returned first.
///
/// A buffer each connection kept for itself was cold by the time that connection wrote into it
/// again: with hundreds of connections on a loop their buffers outgrew the CPU caches, and every
/// record encrypted and every head written missed them. A buffer goes back here once it has been
/// handed to the channel or consumed, and the next connection that needs one, usually a moment
/// later, gets it while it is still in cache. One the channel still holds (a slow client) makes
/// `clear` give the taker fresh storage, so a buffer is never written under a reader.
///
/// Two sizes: heads and small responses (up to `smallest`), and TLS records and HTTP/2 output
/// rounds (up to `largest`). One stack for both handed small buffers to record writers, which
/// then had to grow them. A loop that has taken nothing between two `sweep`s lets its buffers go.
///
/// Used only on its event loop (every connection holding it lives there).
public final class BufferPool: @unchecked Sendable {
    /// The small size class: buffers up to this capacity.
    public static let smallest = 4 * 1024
    /// The large size class: buffers up to this capacity (a TLS record and its overhead); larger
    /// ones are not kept, so one large body does not pin its buffer.
    public static let largest = 17 * 1024

    private var small: Stack
    private var large: Stack
    private var takenSinceSweep = false

    /// `smallLimit`, `largeLimit`: how many buffers of each size are kept at most. The defaults
    /// cover what a busy loop has out at once (a request head per connection waiting for its
    /// response; a record or an output round per connection being written), at most 1 MiB.
    public init(smallLimit: Int = 128, largeLimit: Int = 32) {
        small = Stack(limit: smallLimit)
        large = Stack(limit: largeLimit)
    }

    deinit {
        small.release()
        large.release()
    }

    /// Buffers waiting to be taken (for tests).
    public var count: Int { small.count + large.count }

    /// An empty buffer with room for `minimumCapacity` bytes: the last one returned of its size,
    /// or a new one.
    public func take(minimumCapacity: Int) -> ByteBuffer {
        takenSinceSweep = true
        let isSmall = minimumCapacity <= Self.smallest
        // Larger than any kept buffer: a new one, rather than a kept one thrown away to grow.
        guard minimumCapacity <= Self.largest, var b = isSmall ? small.pop() : large.pop() else {
            return ByteBufferAllocator().buffer(capacity: isSmall ? max(minimumCapacity, 1024) : minimumCapacity)
        }
        b.clear(minimumCapacity: minimumCapacity)
        return b
    }

    /// Returns a buffer for the next taker. The caller may still hand its copy to the channel.
    public func give(_ buffer: ByteBuffer) {
        let capacity = buffer.capacity
        if capacity <= Self.smallest {
            small.push(buffer)
        } else if capacity <= Self.largest {
            large.push(buffer)
        }
    }

    /// Called on every timeout sweep (twice a second): a loop that took nothing since the last
    /// call is idle, and its buffers go.
    public func sweep() {
        if !takenSinceSweep { trim() }
        takenSinceSweep = false
    }

    /// Lets every kept buffer go.
    public func trim() {
        small.removeAll()
        large.removeAll()
    }

    /// Plain memory rather than an array, whose uniqueness and bounds checks were most of what
    /// taking and giving cost.
    private struct Stack {
        let limit: Int
        private let slots: UnsafeMutablePointer<ByteBuffer>
        private(set) var count = 0

        init(limit: Int) {
            self.limit = limit
            slots = .allocate(capacity: limit)
        }

        mutating func pop() -> ByteBuffer? {
            guard count > 0 else { return nil }
            count -= 1
            return (slots + count).move()
        }

        mutating func push(_ b: ByteBuffer) {
            guard count < limit else { return }
            (slots + count).initialize(to: b)
            count += 1
        }

        mutating func removeAll() {
            slots.deinitialize(count: count)
            count = 0
        }

        mutating func release() {
            removeAll()
            slots.deallocate()
        }
    }
}
