import Testing
@testable import SluiceProxy

@Suite("Host policy memo")
struct HostPolicyMemoTests {
    private func lookup(_ memo: HostPolicyMemo, _ snapshot: ConfigSnapshot, _ host: String) -> [UInt8]?? {
        Array(host.utf8).withUnsafeBytes { memo.lookup(snapshot, host: $0) }
    }

    @Test func remembersTheLastHostUnderTheSameSnapshot() {
        let snapshot = ConfigSnapshot(generation: 7)
        var memo = HostPolicyMemo()
        #expect(lookup(memo, snapshot, "a.example") == nil)
        let line = Array("strict-transport-security: max-age=60\r\n".utf8)
        Array("a.example".utf8).withUnsafeBytes { memo.store(snapshot, host: $0, hsts: line) }
        #expect(lookup(memo, snapshot, "a.example") == .some(line))
        // Another host, or the same letters in another case, are decided again.
        #expect(lookup(memo, snapshot, "b.example") == nil)
        #expect(lookup(memo, snapshot, "A.example") == nil)
        #expect(lookup(memo, snapshot, "a.example.") == nil)
        // "No HSTS" is remembered as such, not as a miss.
        Array("b.example".utf8).withUnsafeBytes { memo.store(snapshot, host: $0, hsts: nil) }
        #expect(lookup(memo, snapshot, "b.example") == .some(nil))
    }

    @Test func aReloadForgetsIt() {
        let first = ConfigSnapshot(generation: 1)
        var memo = HostPolicyMemo()
        Array("a.example".utf8).withUnsafeBytes { memo.store(first, host: $0, hsts: nil) }
        let second = ConfigSnapshot(generation: 2)
        #expect(lookup(memo, second, "a.example") == nil)
        // The same generation in another object (only tests build those) is not trusted either.
        let twin = ConfigSnapshot(generation: 1)
        #expect(lookup(memo, twin, "a.example") == nil)
        #expect(lookup(memo, first, "a.example") == .some(nil))
    }
}
