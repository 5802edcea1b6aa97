import CLinuxIO
import Dispatch
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// What an event loop hands readiness to: a socket channel or a listener registered under its
/// descriptor.
protocol EpollSelectable: AnyObject {
    /// `events`: the epoll bits that fired (`CLinuxIOEpollIn`, …). Called on the loop's thread.
    func ready(_ events: UInt32)
    /// The loop is stopping with this still registered: close it, as NIOPosix closes the
    /// channels of a loop that shuts down (their promises are failed, not leaked).
    func loopStopping()
}

/// An `EventLoop` on one thread and one epoll instance: tasks run in the order they were
/// submitted, timers in deadline order, and readiness goes to the object registered under each
/// descriptor. NIOCore's futures, promises and `ChannelPipeline` run on it unchanged.
///
/// It exists because NIOPosix's socket layer was most of the cost of a proxied request
/// (benchmarks/RESULTS.md, sessions 16 and 17: a blind pipe cost 11,478 instructions per request
/// on NIOPosix and 4,391 under the same pipeline on an epoll loop of this kind).
///
/// Made by `EpollEventLoopGroup`, on the thread it then runs on: `threadID` is fixed before any
/// other thread can see the loop.
public final class EpollEventLoop: EventLoop, @unchecked Sendable {
    // MARK: - State of the loop's own thread

    private var tasks = CircularBuffer<() -> Void>(initialCapacity: 64)
    private var timers = TimerQueue<LoopTimer>()
    /// Registered objects by descriptor: one array load per event.
    private var selectables: [EpollSelectable?] = []
    private var readyDescriptors = [Int32](repeating: 0, count: 64)
    private var readyEvents = [UInt32](repeating: 0, count: 64)

    // MARK: - Shared

    private struct Shared {
        var tasks: [@Sendable () -> Void] = []
        var state = RunState.running
        /// The wake-up eventfd has been written and not read yet: later submissions skip the
        /// system call.
        var wakePending = false
        /// Told once `run()` returns.
        var stopCallbacks: [(DispatchQueue, @Sendable (Error?) -> Void)] = []
    }

    private enum RunState { case running, stopping, stopped }

    /// A pthread mutex (NIOLock), which ThreadSanitizer follows: it cannot see into the
    /// standard library's `Mutex` and reported its critical sections as races.
    private let shared = NIOLockedValueBox(Shared())
    /// Set after a task is submitted from another thread (or the state changes), so that a turn
    /// with nothing submitted takes no lock.
    private let submitted = Atomic<Bool>(false)
    private let epfd: Int32
    private let wakeFD: Int32
    private let threadID: pthread_t

    /// Only on the thread that will call `run()`.
    init() {
        threadID = pthread_self()
        epfd = c_linux_epoll_create()
        wakeFD = c_linux_eventfd()
        precondition(epfd >= 0 && wakeFD >= 0, "epoll or eventfd: errno \(errno)")
        _ = c_linux_epoll_add(epfd, wakeFD, CLinuxIOEpollIn)
    }

    /// The descriptors live as long as the loop object: another thread that submitted a task
    /// just before the loop stopped may still write to the eventfd, and a number closed earlier
    /// could by then belong to someone else.
    deinit {
        Glibc.close(epfd)
        Glibc.close(wakeFD)
    }

    // MARK: - Registration (on the loop)

    func register(_ selectable: EpollSelectable, descriptor fd: Int32, events: UInt32) throws {
        assert(inEventLoop)
        if c_linux_epoll_add(epfd, fd, events) != 0 { throw IOError(errnoCode: errno, reason: "epoll_ctl(ADD)") }
        if selectables.count <= Int(fd) {
            selectables.append(contentsOf: repeatElement(nil, count: Int(fd) + 1 - selectables.count))
        }
        selectables[Int(fd)] = selectable
    }

    func modify(descriptor fd: Int32, events: UInt32) throws {
        assert(inEventLoop)
        if c_linux_epoll_modify(epfd, fd, events) != 0 { throw IOError(errnoCode: errno, reason: "epoll_ctl(MOD)") }
    }

    /// Before the descriptor is closed: once its number is reused, readiness for the new owner
    /// must never reach the old one.
    func deregister(descriptor fd: Int32) {
        assert(inEventLoop)
        _ = c_linux_epoll_delete(epfd, fd)
        if Int(fd) < selectables.count { selectables[Int(fd)] = nil }
    }

    // MARK: - The loop

    /// Runs until the loop is shut down, then fails the timers still pending.
    func run() {
        precondition(inEventLoop)
        // The state is read only with submitted tasks: once seen stopping, it stays so here.
        var stopping = false
        while true {
            if runTasks() == .stopping { stopping = true }
            if stopping && tasks.isEmpty { break }
            let n = readyDescriptors.withUnsafeMutableBufferPointer { fds in
                readyEvents.withUnsafeMutableBufferPointer { events in
                    c_linux_epoll_wait(epfd, fds.baseAddress, events.baseAddress, 64, waitTimeout())
                }
            }
            if n > 0 {
                for i in 0..<Int(n) {
                    let fd = readyDescriptors[i]
                    if fd == wakeFD {
                        var value: UInt64 = 0
                        shared.withLockedValue { s in
                            _ = read(wakeFD, &value, 8)
                            s.wakePending = false
                        }
                    } else if Int(fd) < selectables.count, let s = selectables[Int(fd)] {
                        s.ready(readyEvents[i])
                    }
                }
            }
            runDueTimers()
        }
        for selectable in selectables { selectable?.loopStopping() }
        for fd in selectables.indices where selectables[fd] != nil { _ = c_linux_epoll_delete(epfd, Int32(fd)) }
        selectables.removeAll()
        // The closes above queue their last steps as tasks: they run below, after the timers
        // are failed.
        for timer in timers.removeAll() { timer.fail(EventLoopError.shutdown) }
        // Tasks submitted after the last turn still run (a promise of theirs may be waited on);
        // from now on `execute` refuses.
        let (late, callbacks) = shared.withLockedValue { s in
            s.state = .stopped
            defer {
                s.tasks.removeAll()
                s.stopCallbacks.removeAll()
            }
            return (s.tasks, s.stopCallbacks)
        }
        for task in late { task() }
        while let task = tasks.popFirst() { task() }
        for (queue, callback) in callbacks { queue.async { callback(nil) } }
    }

    /// 0 while tasks wait, until the next timer otherwise, or for ever.
    private func waitTimeout() -> Int32 {
        if !tasks.isEmpty { return 0 }
        guard let next = timers.nextDeadline() else { return -1 }
        let now = NIODeadline.now()
        if next <= now { return 0 }
        let ms = (next.uptimeNanoseconds - now.uptimeNanoseconds + 999_999) / 1_000_000
        return Int32(min(ms, 60_000))
    }

    /// Runs a batch of tasks; returns the loop's state as of taking the submitted ones.
    private func runTasks() -> RunState {
        var state = RunState.running
        if submitted.load(ordering: .acquiring) {
            let taken = shared.withLockedValue { s -> [@Sendable () -> Void] in
                submitted.store(false, ordering: .relaxed)
                state = s.state
                defer { s.tasks.removeAll(keepingCapacity: true) }
                return s.tasks
            }
            for task in taken { tasks.append(task) }
        }
        // Tasks added by these tasks run in this turn too, but after the events of none: a
        // bounded batch keeps a task that re-submits itself from starving the sockets.
        var budget = tasks.count
        while budget > 0, let task = tasks.popFirst() {
            task()
            budget -= 1
        }
        return state
    }

    private func runDueTimers() {
        guard !timers.isEmpty else { return }
        let now = NIODeadline.now()
        while let timer = timers.popDue(now: now) { timer.run() }
    }

    // MARK: - EventLoop

    public var inEventLoop: Bool { pthread_equal(threadID, pthread_self()) != 0 }

    public func execute(_ task: @escaping @Sendable () -> Void) {
        _ = enqueue(task)
    }

    /// False when the loop has stopped and the task will never run.
    private func enqueue(_ task: @escaping @Sendable () -> Void) -> Bool {
        if inEventLoop {
            tasks.append(task)
            return true
        }
        let (accepted, wake) = shared.withLockedValue { s -> (Bool, Bool) in
            guard s.state != .stopped else { return (false, false) }
            s.tasks.append(task)
            submitted.store(true, ordering: .releasing)
            if s.wakePending { return (true, false) }
            s.wakePending = true
            return (true, true)
        }
        if wake { wakeUp() }
        return accepted
    }

    public func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise: EventLoopPromise<T> = makePromise()
        let handle = TimerHandleBox()
        let add: @Sendable () -> Void = { [self] in
            let timer = LoopTimer(
                run: { do { promise.assumeIsolated().succeed(try task()) } catch { promise.fail(error) } },
                fail: { promise.fail($0) })
            if shared.withLockedValue({ $0.state }) == .running {
                handle.value = timers.schedule(at: deadline, timer)
            } else {
                promise.fail(EventLoopError.shutdown)
            }
        }
        if inEventLoop {
            add()
        } else if !enqueue(add) {
            promise.fail(EventLoopError.shutdown)
        }
        return Scheduled(promise: promise) { [self] in
            execute { [self] in
                if let h = handle.value, timers.cancel(h) { promise.fail(EventLoopError.cancelled) }
            }
        }
    }

    public func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    /// Stops taking timers, runs what is queued, then leaves `run()`; `callback` on `queue` once
    /// the loop has stopped.
    public func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable (Error?) -> Void) {
        let (previous, wake) = shared.withLockedValue { s -> (RunState, Bool) in
            let previous = s.state
            if previous != .stopped { s.stopCallbacks.append((queue, callback)) }
            guard previous == .running else { return (previous, false) }
            s.state = .stopping
            // The loop reads the state when it takes submitted tasks.
            submitted.store(true, ordering: .releasing)
            if s.wakePending { return (previous, false) }
            s.wakePending = true
            return (previous, true)
        }
        if wake { wakeUp() }
        if previous == .stopped { queue.async { callback(nil) } }
    }

    /// Makes the loop's epoll wait return (the eventfd stays readable until the loop reads it).
    private func wakeUp() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }
}

/// A scheduled task as the loop's timer queue holds it.
private struct LoopTimer {
    var run: () -> Void
    var fail: (Error) -> Void
}

/// A timer's handle, set on the loop and read there when the timer is cancelled.
private final class TimerHandleBox: @unchecked Sendable {
    var value: TimerQueue<LoopTimer>.Handle? = nil
}
