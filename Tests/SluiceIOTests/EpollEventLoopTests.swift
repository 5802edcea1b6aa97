import CLinuxIO
import Dispatch
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import SluiceIO

/// The epoll event loop on real threads: tasks, timers, readiness and shutdown. Nothing here
/// measures time: a timer is only checked not to fire before its deadline.
@Suite struct EpollEventLoopTests {
    /// Collects values from the loop's thread.
    final class Log: Sendable {
        let values = NIOLockedValueBox<[Int]>([])
        func add(_ v: Int) { values.withLockedValue { $0.append(v) } }
        var all: [Int] { values.withLockedValue { $0 } }
    }

    /// Runs `body` with a group of `threads` loops, shut down afterwards however `body` ends.
    func withGroup(threads: Int, _ body: (EpollEventLoopGroup) async throws -> Void) async throws {
        let group = EpollEventLoopGroup(threads: threads)
        do {
            try await body(group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    @Test func tasksFromAnotherThreadRunOnTheLoopInOrder() async throws {
        try await withGroup(threads: 1) { group in
            let loop = group.next()
            #expect(!loop.inEventLoop)
            let log = Log()
            for i in 0..<100 {
                loop.execute {
                    precondition(loop.inEventLoop)
                    log.add(i)
                }
            }
            let onLoop = try await loop.submit { loop.inEventLoop }.get()
            #expect(onLoop)
            #expect(log.all == Array(0..<100))
        }
    }

    @Test func tasksSubmittedByTasksRunToo() async throws {
        try await withGroup(threads: 1) { group in
            let loop = group.next()
            let promise = loop.makePromise(of: Int.self)
            loop.execute {
                loop.execute {
                    loop.execute { promise.succeed(3) }
                }
            }
            let value = try await promise.futureResult.get()
            #expect(value == 3)
        }
    }

    @Test func futuresChainOnTheLoop() async throws {
        try await withGroup(threads: 2) { group in
            let loop = group.next()
            let value = try await loop.submit { 20 }
                .flatMap { v in loop.submit { v + 1 } }
                .map { $0 * 2 }
                .get()
            #expect(value == 42)
        }
    }

    @Test func timersFireInDeadlineOrderAndNotEarly() async throws {
        try await withGroup(threads: 1) { group in
            let loop = group.next()
            let log = Log()
            let start = NIODeadline.now()
            let late = loop.scheduleTask(in: .milliseconds(30)) { log.add(2); return NIODeadline.now() }
            let early = loop.scheduleTask(in: .milliseconds(10)) { log.add(1); return NIODeadline.now() }
            let firedEarly = try await early.futureResult.get()
            let firedLate = try await late.futureResult.get()
            #expect(log.all == [1, 2])
            #expect(firedEarly >= start + .milliseconds(10))
            #expect(firedLate >= start + .milliseconds(30))
        }
    }

    @Test func aTimerScheduledOnTheLoopFires() async throws {
        try await withGroup(threads: 1) { group in
            let loop = group.next()
            let value = try await loop.flatSubmit {
                loop.scheduleTask(in: .milliseconds(1)) { 7 }.futureResult
            }.get()
            #expect(value == 7)
        }
    }

    @Test func aCancelledTimerNeverRuns() async throws {
        try await withGroup(threads: 1) { group in
            let loop = group.next()
            let log = Log()
            let cancelled = loop.scheduleTask(in: .milliseconds(20)) { log.add(1) }
            cancelled.cancel()
            await #expect(throws: EventLoopError.cancelled) { try await cancelled.futureResult.get() }
            // A later timer fires after the cancelled one's deadline: it did not run.
            try await loop.scheduleTask(in: .milliseconds(40)) {}.futureResult.get()
            #expect(log.all.isEmpty)
        }
    }

    @Test func readinessReachesTheRegisteredObjectOnTheLoop() async throws {
        final class PipeReader: EpollSelectable, @unchecked Sendable {
            let fd: Int32
            let received: EventLoopPromise<UInt8>
            let loop: EventLoop
            init(fd: Int32, received: EventLoopPromise<UInt8>, loop: EventLoop) {
                self.fd = fd
                self.received = received
                self.loop = loop
            }
            func loopStopping() {}
            func ready(_ events: UInt32) {
                precondition(loop.inEventLoop)
                var byte: UInt8 = 0
                if events & CLinuxIOEpollIn != 0 && read(fd, &byte, 1) == 1 { received.succeed(byte) }
            }
        }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        try await withGroup(threads: 1) { group in
            let loop = group.eventLoops[0]
            let received = loop.makePromise(of: UInt8.self)
            let reader = PipeReader(fd: readEnd, received: received, loop: loop)
            try await loop.submit { try loop.register(reader, descriptor: readEnd, events: CLinuxIOEpollIn) }.get()
            var byte: UInt8 = 0x2A
            #expect(write(writeEnd, &byte, 1) == 1)
            let got = try await received.futureResult.get()
            #expect(got == 0x2A)
            try await loop.submit { loop.deregister(descriptor: readEnd) }.get()
        }
    }

    @Test func shutdownRunsQueuedTasksAndFailsPendingTimers() throws {
        let group = EpollEventLoopGroup(threads: 2)
        let loop = group.next()
        let log = Log()
        // Callbacks are attached while the loop runs: a future's callbacks are added on its loop,
        // and a loop that has stopped takes no more tasks (as NIOPosix's).
        let pending = loop.scheduleTask(in: .hours(1)) {}
        pending.futureResult.whenFailure { error in
            if error as? EventLoopError == .shutdown { log.add(1) }
        }
        loop.execute { log.add(2) }
        try group.syncShutdownGracefully()
        #expect(log.all.sorted() == [1, 2])
        #expect(throws: EventLoopError.shutdown) { try group.syncShutdownGracefully() }
    }

    @Test func aLoopStopsEvenWhileItsTasksKeepSubmittingTasks() throws {
        let group = EpollEventLoopGroup(threads: 1)
        let loop = group.next()
        let log = Log()
        // A chain of tasks, each submitting the next from the loop, still running when the
        // shutdown arrives: the loop runs the chain out, then stops.
        @Sendable func step(_ n: Int) {
            log.add(n)
            if n < 1_000 { loop.execute { step(n + 1) } }
        }
        loop.execute { step(1) }
        try group.syncShutdownGracefully()
        #expect(log.all.last == 1_000)
    }

    @Test func nextHandsOutEveryLoopInTurn() throws {
        let group = EpollEventLoopGroup(threads: 3)
        defer { try? group.syncShutdownGracefully() }
        let picked = (0..<6).map { _ in ObjectIdentifier(group.next()) }
        let loops = group.eventLoops.map { ObjectIdentifier($0) }
        #expect(Set(loops).count == 3)
        #expect(picked == loops + loops)
        #expect(group.makeIterator().map { ObjectIdentifier($0) } == loops)
    }
}
