import NIOCore
import SluiceTLS
import Testing

/// The lingering close's decisions, on a manual clock.
@Suite struct LingeringCloseTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let timeout = TimeAmount.seconds(5)

    @Test func withoutLingerTheLastWriteCloses() {
        var c = LingeringClose(linger: false, timeout: timeout)
        #expect(!c.readsInput)
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .close)
        #expect(c.peerClosedInput() == .wait)
    }

    @Test func lingeringShutsOutputThenClosesWhenThePeerDoes() {
        var c = LingeringClose(linger: true, timeout: timeout)
        #expect(c.readsInput)
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .shutOutput(until: t0 + timeout))
        #expect(c.isLingering)
        #expect(c.readsInput, "input is read and dropped while lingering")
        #expect(c.peerClosedInput() == .close)
        #expect(!c.isLingering)
        #expect(!c.readsInput)
        // The timer armed earlier finds nothing left to do.
        #expect(c.deadlineReached(now: t0 + timeout) == .wait)
    }

    @Test func thePeerClosingBeforeTheLastWriteClosesAtItsCompletion() {
        var c = LingeringClose(linger: true, timeout: timeout)
        #expect(c.peerClosedInput() == .wait, "the answer's last bytes are still being written")
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .close)
    }

    @Test func aFailedLastWriteClosesAtOnce() {
        var c = LingeringClose(linger: true, timeout: timeout)
        #expect(c.lastWriteDone(succeeded: false, now: t0) == .close)
    }

    @Test func theDeadlineClosesAPeerThatNeverCloses() {
        var c = LingeringClose(linger: true, timeout: timeout)
        guard case .shutOutput(let until) = c.lastWriteDone(succeeded: true, now: t0) else {
            Issue.record("expected the write side to be shut")
            return
        }
        #expect(c.deadlineReached(now: until - .milliseconds(1)) == .wait, "a timer that fires early changes nothing")
        #expect(c.deadlineReached(now: until) == .close)
        #expect(c.peerClosedInput() == .wait, "already closed")
    }

    @Test func eventsAfterTheCloseAreIgnored() {
        var c = LingeringClose(linger: true, timeout: timeout)
        #expect(c.lastWriteDone(succeeded: true, now: t0) != .close)
        #expect(c.peerClosedInput() == .close)
        #expect(c.lastWriteDone(succeeded: true, now: t0) == .wait)
        #expect(c.deadlineReached(now: t0 + .seconds(60)) == .wait)
    }
}
