import NIOCore

/// The timers of one event loop: a binary min-heap ordered by deadline, then by the order they
/// were added (two timers for the same instant fire in the order they were scheduled).
///
/// Cancelling only marks a timer; the heap drops it when it reaches the top. Sluice's timers are
/// per-loop ticks and per-connection connect and probe timeouts, so a cancelled timer waits out
/// at most a few seconds there, and cancelling is a set update instead of a search of the heap.
/// A value without a clock: the loop asks it with the time it read, and the tests with any time.
struct TimerQueue<Payload> {
    struct Handle: Hashable {
        fileprivate let sequence: UInt64
    }

    private struct Entry {
        var deadline: NIODeadline
        var sequence: UInt64
        var payload: Payload

        func precedes(_ other: Entry) -> Bool {
            deadline < other.deadline || (deadline == other.deadline && sequence < other.sequence)
        }
    }

    private var heap: [Entry] = []
    private var nextSequence: UInt64 = 0
    /// Timers in the heap that have been neither cancelled nor taken out.
    private var live: Set<UInt64> = []
    /// Timers cancelled while still in the heap.
    private var cancelled: Set<UInt64> = []

    var count: Int { live.count }

    var isEmpty: Bool { count == 0 }

    mutating func schedule(at deadline: NIODeadline, _ payload: Payload) -> Handle {
        let entry = Entry(deadline: deadline, sequence: nextSequence, payload: payload)
        nextSequence += 1
        heap.append(entry)
        siftUp(heap.count - 1)
        live.insert(entry.sequence)
        return Handle(sequence: entry.sequence)
    }

    /// True when the timer had neither fired nor been cancelled: it never will now.
    mutating func cancel(_ handle: Handle) -> Bool {
        guard live.remove(handle.sequence) != nil else { return false }
        cancelled.insert(handle.sequence)
        return true
    }

    /// When the earliest live timer is due.
    mutating func nextDeadline() -> NIODeadline? {
        dropCancelledTop()
        return heap.first?.deadline
    }

    /// The earliest timer due at or before `now`, taken out of the queue.
    mutating func popDue(now: NIODeadline) -> Payload? {
        dropCancelledTop()
        guard let top = heap.first, top.deadline <= now else { return nil }
        removeTop()
        live.remove(top.sequence)
        return top.payload
    }

    /// Every live timer, taken out (a loop that shuts down fails them).
    mutating func removeAll() -> [Payload] {
        let remaining = heap.filter { !cancelled.contains($0.sequence) }.map(\.payload)
        heap.removeAll()
        live.removeAll()
        cancelled.removeAll()
        return remaining
    }

    // MARK: - Heap

    private mutating func dropCancelledTop() {
        while let top = heap.first, cancelled.remove(top.sequence) != nil {
            removeTop()
        }
    }

    private mutating func removeTop() {
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            siftDown(0)
        }
    }

    private mutating func siftUp(_ start: Int) {
        var i = start
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].precedes(heap[parent]) else { return }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let left = 2 * i + 1
            guard left < heap.count else { return }
            var least = left
            if left + 1 < heap.count && heap[left + 1].precedes(heap[left]) { least = left + 1 }
            guard heap[least].precedes(heap[i]) else { return }
            heap.swapAt(i, least)
            i = least
        }
    }
}
