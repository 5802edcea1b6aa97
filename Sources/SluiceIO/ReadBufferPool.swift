import NIOCore

/// Receive buffers shared by the channels of one event loop. Reads on a loop happen one at a
/// time, so an idle connection holds no receive buffer at all (NIOPosix keeps one per
/// channel). A buffer is reused only once nobody else holds its storage; a handler that keeps a
/// read's bytes keeps that storage, and the pool lends another.
struct ReadBufferPool {
    private var buffers: [ByteBuffer] = []
    private var last = 0
    private let allocator = ByteBufferAllocator()
    /// Buffers kept; more readers holding on at once get buffers of their own.
    static let capacity = 8

    /// A cleared buffer with room for `capacity` bytes, filled by `fill` and returned.
    mutating func buffer(capacity size: Int, _ fill: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var i = last
        for _ in 0..<buffers.count {
            let reused: Void? = buffers[i].modifyIfUniquelyOwned { buffer in
                buffer.clear(minimumCapacity: size)
                fill(&buffer)
            }
            if reused != nil {
                last = i
                return buffers[i]
            }
            i = i + 1 == buffers.count ? 0 : i + 1
        }
        var fresh = allocator.buffer(capacity: size)
        fill(&fresh)
        if buffers.count < Self.capacity {
            buffers.append(fresh)
            last = buffers.count - 1
        }
        return fresh
    }
}
