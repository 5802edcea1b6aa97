import Testing

@testable import SluiceProxy

/// When the HTTP/1.1 handler lets NIO's reads through, holds them, and releases them. Each step
/// returns whether a read goes out now.
@Suite struct ReadGateTests {
    @Test func readsPassWhileNothingHoldsThem() {
        var g = ReadGate()
        let reads = [g.requestRead(), g.requestRead()]
        #expect(reads == [true, true])
        #expect(!g.held)
    }

    @Test func anUpstreamThatCannotTakeTheBodyHoldsTheReadUntilItCan() {
        var g = ReadGate()
        let steps = [
            g.upstream(writable: false, forwarding: true),
            g.requestRead(),  // held while the upstream is full
            g.upstream(writable: true, forwarding: true),  // the owed read goes, once
            g.upstream(writable: true, forwarding: true),
            g.requestRead(),
        ]
        #expect(steps == [false, false, true, false, true])
        #expect(!g.held)
    }

    @Test func anUnwritableUpstreamHoldsNothingWhenNoClientBytesGoToIt() {
        // Waiting for a response (no body to forward): the next pipelined request may be read.
        var g = ReadGate()
        let steps = [g.upstream(writable: false, forwarding: false), g.requestRead()]
        #expect(steps == [false, true])
    }

    @Test func noReadIsReleasedThatWasNotAskedFor() {
        var g = ReadGate()
        g.pauseForPipeline()
        let resumed = g.resumePipeline()
        #expect(!resumed, "paused, but NIO asked for nothing meanwhile")
        #expect(g.isOpen)

        var h = ReadGate()
        let steps = [h.upstream(writable: false, forwarding: true), h.upstream(writable: true, forwarding: true)]
        #expect(steps == [false, false], "nothing was held")
    }

    @Test func bothPausesMustClearBeforeTheHeldReadGoes() {
        var g = ReadGate()
        g.pauseForPipeline()
        let first = [
            g.upstream(writable: false, forwarding: true),
            g.requestRead(),
            g.resumePipeline(),  // the upstream still holds it
            g.upstream(writable: true, forwarding: true),
        ]
        #expect(first == [false, false, false, true])
        #expect(g.isOpen && !g.held)

        // The other order.
        var h = ReadGate()
        h.pauseForPipeline()
        let second = [
            h.upstream(writable: false, forwarding: true),
            h.requestRead(),
            h.upstream(writable: true, forwarding: true),  // the pipeline bound still holds it
            h.resumePipeline(),
        ]
        #expect(second == [false, false, false, true])
    }

    @Test func resumingAPipelineThatWasNotPausedDoesNothing() {
        var g = ReadGate()
        let steps = [g.resumePipeline(), g.requestRead()]
        #expect(steps == [false, true])
    }
}
