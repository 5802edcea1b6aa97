import Synchronization
import Testing

@testable import SluiceProxy

/// Changes seen by the folder watcher before the reload coordinator exists are applied once it
/// does, and only once.
struct ReloadTriggerTests {
    final class Calls: Sendable {
        let reasons = Mutex<[String]>([])
        var all: [String] { reasons.withLock { $0 } }
    }

    @Test func aChangeBeforeAttachingIsAppliedOnceAtAttach() {
        let trigger = ReloadTrigger(), calls = Calls()
        trigger.filesChanged()
        trigger.filesChanged()  // two events of one early burst: one reload covers both
        #expect(calls.all.isEmpty)
        trigger.attach { reason in calls.reasons.withLock { $0.append(reason) } }
        #expect(calls.all == ["files changed while starting"])
        trigger.filesChanged()
        #expect(calls.all == ["files changed while starting", "files changed"])
    }

    @Test func withNoEarlyChangeAttachingReloadsNothing() {
        let trigger = ReloadTrigger(), calls = Calls()
        trigger.attach { reason in calls.reasons.withLock { $0.append(reason) } }
        #expect(calls.all.isEmpty)
        trigger.filesChanged()
        #expect(calls.all == ["files changed"])
    }
}
