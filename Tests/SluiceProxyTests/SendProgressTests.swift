import NIOCore
import Testing

@testable import SluiceProxy

/// The send timeout of a connection closing after its response, on a manual clock.
@Suite struct SendProgressTests {
    /// Looks at `buffered` bytes held `seconds` after an arbitrary origin; true: cut.
    struct Watch {
        var progress = SendProgress(now: Watch.t(0))
        let timeout: TimeAmount

        static func t(_ seconds: Double) -> NIODeadline {
            .uptimeNanoseconds(1_000_000_000_000 + UInt64(seconds * 1e9))
        }

        mutating func look(_ buffered: Int, at seconds: Double) -> Bool {
            progress.stalled(buffered: buffered, at: Self.t(seconds), timeout: timeout)
        }
    }

    @Test func aClientThatTakesNothingIsCutAtTheTimeout() {
        var w = Watch(timeout: .seconds(60))
        // The first look sees 50,000 bytes held: that is where waiting starts.
        let looks = [w.look(50_000, at: 0.5), w.look(50_000, at: 60.4), w.look(50_000, at: 60.5)]
        #expect(looks == [false, false, true])
    }

    @Test func anyProgressRestartsTheWait() {
        var w = Watch(timeout: .seconds(10))
        var cut = w.look(50_000, at: 0.5)
        // A slow reader: a little at a time, never 10 s without any.
        var at = 0.5
        for held in stride(from: 49_000, to: 0, by: -1_000) {
            at += 9.5
            cut = cut || w.look(held, at: at)
        }
        #expect(!cut)
        // Then it stops reading.
        let looks = [w.look(1_000, at: at + 9.9), w.look(1_000, at: at + 10)]
        #expect(looks == [false, true])
    }

    @Test func moreHeldThanBeforeIsNoProgress() {
        // Bytes still being queued (a last chunk, close_notify) do not count as taken.
        var w = Watch(timeout: .seconds(5))
        let looks = [w.look(10, at: 1), w.look(400, at: 3), w.look(400, at: 6)]
        #expect(looks == [false, false, true])
    }
}
