import NIOCore
import SluiceTLS
import Testing

/// The lingering close's decisions, on a manual clock.
@Suite struct LingeringCloseTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let timeout = TimeAmount.seconds(5)
    let maxTime = TimeAmount.seconds(30)

    @Test func withoutLingerTheLastWriteCloses() {
        var c = LingeringClose(linger: false, timeout: timeout, maxTime: maxTime)
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .close)
        #expect(c.peerClosedInput() == .wait)
    }

    @Test func lingeringShutsOutputThenClosesWhenThePeerDoes() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .shutOutput(until: t0 + timeout))
        #expect(c.isLingering)
        #expect(c.peerClosedInput() == .close)
        #expect(!c.isLingering)
        // The timer armed earlier finds nothing left to do.
        #expect(c.deadlineReached(now: t0 + timeout) == .wait)
    }

    @Test func thePeerClosingBeforeTheLastWriteClosesAtItsCompletion() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        #expect(c.peerClosedInput() == .wait, "the answer's last bytes are still being written")
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .close)
    }

    @Test func aFailedLastWriteClosesAtOnce() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        #expect(c.lastWriteDone(succeeded: false, now: t0) == .close)
    }

    @Test func theDeadlineClosesAPeerThatNeverCloses() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        guard case .shutOutput(let until) = c.lastWriteDone(succeeded: true, now: t0) else {
            Issue.record("expected the write side to be shut")
            return
        }
        #expect(c.deadlineReached(now: until - .milliseconds(1)) == .waitUntil(until), "a timer that fires early is armed again")
        #expect(c.deadlineReached(now: until) == .close)
        #expect(c.peerClosedInput() == .wait, "already closed")
    }

    @Test func eventsAfterTheCloseAreIgnored() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        #expect(c.lastWriteDone(succeeded: true, now: t0) != .close)
        #expect(c.peerClosedInput() == .close)
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .wait)
        #expect(c.deadlineReached(now: t0 + .seconds(60)) == .wait)
    }

    @Test func aClientStillSendingKeepsTheConnectionUntilItGoesQuiet() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .shutOutput(until: t0 + timeout))
        c.inputArrived(now: t0 + .seconds(3))
        // The first deadline passes while the client is still sending: wait 5 s from its last bytes.
        #expect(c.deadlineReached(now: t0 + timeout) == .waitUntil(t0 + .seconds(8)))
        c.inputArrived(now: t0 + .seconds(7))
        #expect(c.deadlineReached(now: t0 + .seconds(8)) == .waitUntil(t0 + .seconds(12)))
        // Quiet from 7 s on: closed at 12 s.
        #expect(c.deadlineReached(now: t0 + .seconds(12)) == .close)
    }

    @Test func aClientThatNeverStopsSendingIsClosedAtTheCap() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        _ = c.lastWriteDone(succeeded: true, now: t0)
        var now = t0
        var action = LingeringClose.Action.wait
        for second in 1...40 {
            now = t0 + .seconds(Int64(second))
            c.inputArrived(now: now)
            action = c.deadlineReached(now: now)
            if action == .close { break }
        }
        #expect(action == .close)
        #expect(now == t0 + maxTime, "closed \(now.uptimeNanoseconds / 1_000_000_000 - 1) s after the shutdown")
    }

    @Test func inputBeforeTheShutdownDoesNotCount() {
        var c = LingeringClose(linger: true, timeout: timeout, maxTime: maxTime)
        c.inputArrived(now: t0 + .seconds(100))  // still flushing: not lingering yet
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .shutOutput(until: t0 + timeout))
        #expect(c.deadlineReached(now: t0 + timeout) == .close)
    }
}
