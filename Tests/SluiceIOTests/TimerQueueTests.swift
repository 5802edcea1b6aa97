import NIOCore
import Testing

@testable import SluiceIO

/// The timer queue without a loop or a clock: deadlines are whatever the test says.
@Suite struct TimerQueueTests {
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    static let zero = NIODeadline.uptimeNanoseconds(1_000)

    @Test func timersComeOutByDeadlineThenByTheOrderTheyWereScheduled() {
        var r = Random(state: 0x2545_F491_4F6C_DD1D)
        var q = TimerQueue<Int>()
        var expected: [(deadline: Int64, index: Int)] = []
        for index in 0..<2_000 {
            // Few distinct deadlines, so that many tie.
            let at = Int64(r.next() % 50)
            _ = q.schedule(at: Self.zero + .nanoseconds(at), index)
            expected.append((at, index))
        }
        expected.sort { ($0.deadline, $0.index) < ($1.deadline, $1.index) }
        #expect(q.count == 2_000)
        var out: [Int] = []
        while let i = q.popDue(now: Self.zero + .nanoseconds(100)) { out.append(i) }
        #expect(out == expected.map(\.index))
        #expect(q.isEmpty)
        let next = q.nextDeadline()
        #expect(next == nil)
    }

    @Test func onlyTimersThatAreDueComeOut() {
        var q = TimerQueue<String>()
        _ = q.schedule(at: Self.zero + .seconds(2), "two")
        _ = q.schedule(at: Self.zero + .seconds(1), "one")
        let first = q.nextDeadline()
        #expect(first == Self.zero + .seconds(1))
        let early = q.popDue(now: Self.zero)
        #expect(early == nil)
        let one = q.popDue(now: Self.zero + .seconds(1))
        #expect(one == "one")
        let again = q.popDue(now: Self.zero + .seconds(1))
        #expect(again == nil)
        let second = q.nextDeadline()
        #expect(second == Self.zero + .seconds(2))
        let two = q.popDue(now: Self.zero + .seconds(5))
        #expect(two == "two")
    }

    @Test func aCancelledTimerNeverComesOut() {
        var q = TimerQueue<String>()
        let first = q.schedule(at: Self.zero + .seconds(1), "first")
        let second = q.schedule(at: Self.zero + .seconds(2), "second")
        _ = q.schedule(at: Self.zero + .seconds(3), "third")
        let cancelled = q.cancel(first)
        #expect(cancelled)
        let cancelledAgain = q.cancel(first)
        #expect(!cancelledAgain, "a second cancel finds nothing")
        #expect(q.count == 2)
        // The cancelled timer was the earliest: the next deadline is the one after it.
        let next = q.nextDeadline()
        #expect(next == Self.zero + .seconds(2))
        let popped = q.popDue(now: Self.zero + .seconds(2))
        #expect(popped == "second")
        let cancelledAfterFiring = q.cancel(second)
        #expect(!cancelledAfterFiring, "a timer that fired cannot be cancelled")
        let rest = q.removeAll()
        #expect(rest == ["third"])
        #expect(q.isEmpty)
    }

    @Test func cancellingAtRandomLeavesExactlyTheOthersInOrder() {
        var r = Random(state: 0x9E37_79B9_7F4A_7C15)
        var q = TimerQueue<Int>()
        var handles: [TimerQueue<Int>.Handle] = []
        var deadlines: [Int64] = []
        for index in 0..<1_000 {
            let at = Int64(r.next() % 10_000)
            handles.append(q.schedule(at: Self.zero + .nanoseconds(at), index))
            deadlines.append(at)
        }
        var kept = Set(0..<1_000)
        for index in 0..<1_000 where r.next() % 3 == 0 {
            let cancelled = q.cancel(handles[index])
            #expect(cancelled)
            kept.remove(index)
        }
        #expect(q.count == kept.count)
        var out: [Int] = []
        while let i = q.popDue(now: Self.zero + .seconds(1)) { out.append(i) }
        #expect(out == kept.sorted { (deadlines[$0], $0) < (deadlines[$1], $1) })
    }
}
