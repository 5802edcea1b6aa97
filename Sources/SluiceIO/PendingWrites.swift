import NIOCore

/// What a socket channel has been asked to write and has not written yet: buffers in the order
/// they came, each with its promise; how many of them a flush has released to the socket; and
/// the channel's writability against its water marks. A value without a socket: the channel
/// hands the flushed buffers to `send`/`writev` and reports how many bytes the kernel took.
///
/// Promises are never completed in here: `didWrite` says how many buffers went out whole, and
/// the channel takes them with `popWritten()` one at a time and completes each outside any
/// mutation, because a promise's callback may write again.
struct PendingWrites {
    struct WaterMarks: Equatable {
        /// Writable again once no more than this is queued.
        var low: Int
        /// Unwritable once more than this is queued.
        var high: Int

        /// NIO's defaults (`ChannelOptions.writeBufferWaterMark`).
        static let `default` = WaterMarks(low: 32 * 1024, high: 64 * 1024)
    }

    enum WritabilityChange: Equatable {
        case becameWritable
        case becameUnwritable
    }

    private var items = CircularBuffer<(buffer: ByteBuffer, promise: EventLoopPromise<Void>?)>(initialCapacity: 4)
    /// The first `flushed` items may be written.
    private(set) var flushed = 0
    /// Items at the front written whole and not yet popped.
    private var written = 0
    /// Bytes still to write, flushed or not.
    private(set) var bytes = 0
    private(set) var isWritable = true
    var waterMarks: WaterMarks

    init(waterMarks: WaterMarks = .default) {
        self.waterMarks = waterMarks
    }

    var isEmpty: Bool { items.isEmpty }
    /// Flushed items still to be written (the socket has work).
    @inline(__always)
    var hasFlushed: Bool { flushed > written }

    /// Queues `buffer`; `.becameUnwritable` when it takes the queue past the high mark.
    mutating func append(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) -> WritabilityChange? {
        items.append((buffer, promise))
        bytes += buffer.readableBytes
        if isWritable && bytes > waterMarks.high {
            isWritable = false
            return .becameUnwritable
        }
        return nil
    }

    /// Everything queued so far may be written.
    mutating func markFlushed() {
        flushed = items.count
    }

    // The accessors the channel calls on every write are inlined: called on the channel's stored
    // property, they copied the whole value (and retained its storage) each time.

    /// Flushed buffers still to write.
    @inline(__always)
    var flushedCount: Int { flushed - written }

    /// The `k`-th flushed buffer still to write (`k` < `flushedCount`): read in place, so that
    /// one `sendmsg` can take several without building an array.
    @inline(__always)
    func flushedBuffer(_ k: Int) -> ByteBuffer {
        precondition(k < flushedCount, "not a flushed buffer")
        return items[items.index(items.startIndex, offsetBy: written + k)].buffer
    }

    /// The kernel took `count` bytes of the flushed buffers. Returns how many buffers that
    /// finished (pop them with `popWritten`) and the writability change, if any.
    mutating func didWrite(_ count: Int) -> (finished: Int, change: WritabilityChange?) {
        precondition(count >= 0, "a negative write")
        var left = count
        var finished = 0
        while left > 0 || (hasFlushed && firstUnwrittenIsEmpty) {
            precondition(hasFlushed, "more bytes written than were flushed")
            let i = items.index(items.startIndex, offsetBy: written)
            let size = items[i].buffer.readableBytes
            if left >= size {
                left -= size
                bytes -= size
                written += 1
                finished += 1
            } else {
                items[i].buffer.moveReaderIndex(forwardBy: left)
                bytes -= left
                left = 0
            }
        }
        var change: WritabilityChange? = nil
        if !isWritable && bytes <= waterMarks.low {
            isWritable = true
            change = .becameWritable
        }
        return (finished, change)
    }

    private var firstUnwrittenIsEmpty: Bool {
        items[items.index(items.startIndex, offsetBy: written)].buffer.readableBytes == 0
    }

    /// The promise of the oldest buffer written whole (nil inside when it had none); nil when
    /// there is none left to pop.
    mutating func popWritten() -> EventLoopPromise<Void>?? {
        guard written > 0 else { return nil }
        let item = items.removeFirst()
        written -= 1
        flushed -= 1
        return .some(item.promise)
    }

    /// Empties the queue (the channel closes): the promises to fail, in order.
    mutating func removeAll() -> [EventLoopPromise<Void>] {
        let promises = items.compactMap(\.promise)
        items.removeAll()
        flushed = 0
        written = 0
        bytes = 0
        isWritable = true
        return promises
    }
}
