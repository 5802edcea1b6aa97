import CLinuxIO
import Dispatch
import Glibc
import NIOCore
import Synchronization

/// What the loop dispatches a readiness event to.
protocol EpollSelectable: AnyObject {
    func ready(_ events: UInt32)
}

/// A single-threaded `EventLoop` on edge-triggered epoll: it runs on the thread that calls
/// `run()`, dispatches readiness to the registered sockets by descriptor, and runs tasks and
/// timers between waits. Enough of an `EventLoop` for NIOCore's pipeline and futures.
final class EpollLoop: EventLoop, @unchecked Sendable {
    let epfd: Int32
    private let wakeFD: Int32
    private var threadID: pthread_t? = nil
    /// Registered sockets by descriptor: one array load per event.
    private var selectables: [EpollSelectable?] = []
    /// Tasks from the loop's own thread; `remote` holds the others' until the next turn.
    private var tasks: [() -> Void] = []
    private let remote = Mutex<[@Sendable () -> Void]>([])
    private struct Timer {
        var deadline: NIODeadline
        var id: Int
        var task: () -> Void
    }
    /// Few and short-lived here: kept sorted by deadline.
    private var timers: [Timer] = []
    private var nextTimerID = 0
    private var stopped = false

    init() {
        epfd = c_linux_epoll_create()
        wakeFD = c_linux_eventfd()
        _ = c_linux_epoll_add(epfd, wakeFD, CLinuxIOEpollIn)
    }

    // MARK: - Registration

    func register(_ s: EpollSelectable, fd: Int32, events: UInt32) {
        if selectables.count <= Int(fd) { selectables += Array(repeating: nil, count: Int(fd) + 1 - selectables.count) }
        selectables[Int(fd)] = s
        _ = c_linux_epoll_add(epfd, fd, events)
    }

    /// Before the descriptor is closed, so that a reused number never reaches the old owner.
    func deregister(fd: Int32) {
        _ = c_linux_epoll_delete(epfd, fd)
        selectables[Int(fd)] = nil
    }

    /// Runs `task` at the start of the next turn (a read the edge will not announce again).
    func soon(_ task: @escaping () -> Void) {
        tasks.append(task)
    }

    // MARK: - The loop

    func run() {
        threadID = pthread_self()
        var fds = [Int32](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        while !stopped {
            runTasks()
            var timeout: Int32 = -1
            if !tasks.isEmpty {
                timeout = 0
            } else if let first = timers.first {
                let ns = first.deadline.uptimeNanoseconds &- NIODeadline.now().uptimeNanoseconds
                timeout = ns <= 0 ? 0 : Int32(min((ns + 999_999) / 1_000_000, 60_000))
            }
            let n = fds.withUnsafeMutableBufferPointer { f in
                events.withUnsafeMutableBufferPointer { e in c_linux_epoll_wait(epfd, f.baseAddress, e.baseAddress, 64, timeout) }
            }
            if n < 0 { continue }  // EINTR
            for i in 0..<Int(n) {
                let fd = fds[i]
                if fd == wakeFD {
                    var v: UInt64 = 0
                    _ = read(wakeFD, &v, 8)
                    continue
                }
                if Int(fd) < selectables.count, let s = selectables[Int(fd)] {
                    s.ready(events[i])
                }
            }
            runTimers()
        }
    }

    private func runTasks() {
        let others = remote.withLock { r -> [@Sendable () -> Void] in
            let taken = r
            r.removeAll()
            return taken
        }
        for t in others { t() }
        while !tasks.isEmpty {
            let now = tasks
            tasks.removeAll(keepingCapacity: true)
            for t in now { t() }
        }
    }

    private func runTimers() {
        guard !timers.isEmpty else { return }
        let now = NIODeadline.now()
        while let first = timers.first, first.deadline <= now {
            timers.removeFirst()
            first.task()
        }
    }

    // MARK: - EventLoop

    var inEventLoop: Bool {
        guard let threadID else { return false }
        return pthread_equal(threadID, pthread_self()) != 0
    }

    func execute(_ task: @escaping @Sendable () -> Void) {
        if inEventLoop {
            tasks.append(task)
        } else {
            remote.withLock { $0.append(task) }
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise = makePromise(of: T.self)
        let add = { [self] in
            nextTimerID += 1
            let id = nextTimerID
            let timer = Timer(deadline: deadline, id: id) {
                do { promise.assumeIsolated().succeed(try task()) } catch { promise.fail(error) }
            }
            let at = timers.firstIndex { $0.deadline > deadline } ?? timers.endIndex
            timers.insert(timer, at: at)
            return id
        }
        let id = TimerIDBox()
        if inEventLoop {
            id.value = add()
        } else {
            let box = UnsafeTransfer(add)
            execute { id.value = box.value() }
        }
        return Scheduled(promise: promise) { [self] in
            execute { [self] in
                timers.removeAll { $0.id == id.value }
                promise.fail(EventLoopError.cancelled)
            }
        }
    }

    func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable (Error?) -> Void) {
        execute { [self] in
            stopped = true
            queue.async { callback(nil) }
        }
    }
}

/// A timer's number, set on the loop and read there when the timer is cancelled.
final class TimerIDBox: @unchecked Sendable {
    var value = 0
}

/// A value handed to the loop's own thread.
struct UnsafeTransfer<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
