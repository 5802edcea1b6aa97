import CLinuxIO
import Dispatch
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// A fixed set of `EpollEventLoop`s, one thread each. `next()` hands them out in turn.
public final class EpollEventLoopGroup: EventLoopGroup, Sendable {
    private let loops: [EpollEventLoop]
    private let threads: [pthread_t]
    private let turn = Atomic<Int>(0)
    private let shutDown = Atomic<Bool>(false)

    /// Starts `threads` loops and returns once each runs on its thread.
    public init(threads count: Int) {
        precondition(count > 0, "an event loop group needs a thread")
        var loops: [EpollEventLoop] = []
        var threads: [pthread_t] = []
        for index in 0..<count {
            let start = LoopStart(name: "sluice-loop-\(index)")
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let start = Unmanaged<LoopStart>.fromOpaque(raw!).takeRetainedValue()
                start.name.withCString { c_linux_set_thread_name($0) }
                let loop = EpollEventLoop()
                start.made.lock()
                start.loop = loop
                start.made.unlock(withValue: true)
                loop.run()
                return nil
            }, Unmanaged.passRetained(start).toOpaque())
            precondition(rc == 0, "pthread_create: \(rc)")
            start.made.lock(whenValue: true)
            loops.append(start.loop!)
            start.made.unlock()
            threads.append(thread)
        }
        self.loops = loops
        self.threads = threads
    }

    public func next() -> EventLoop { nextLoop() }

    /// `next()`, typed: for callers that open sockets on the loop.
    public func nextLoop() -> EpollEventLoop {
        let i = turn.add(1, ordering: .relaxed).newValue
        return loops[(i &- 1) % loops.count]
    }

    public func any() -> EventLoop {
        if let current = loops.first(where: { $0.inEventLoop }) { return current }
        return next()
    }

    public func makeIterator() -> EventLoopIterator {
        EventLoopIterator(loops)
    }

    /// Every loop, for callers that set each one up (a listener per loop).
    public var eventLoops: [EpollEventLoop] { loops }

    /// Shuts every loop down, waits for their threads to end, then calls back on `queue`.
    public func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable (Error?) -> Void) {
        if shutDown.exchange(true, ordering: .acquiringAndReleasing) {
            queue.async { callback(EventLoopError.shutdown) }
            return
        }
        let group = DispatchGroup()
        for loop in loops {
            group.enter()
            loop.shutdownGracefully(queue: queue) { _ in group.leave() }
        }
        let threads = self.threads
        group.notify(queue: DispatchQueue.global()) {
            for thread in threads { pthread_join(thread, nil) }
            queue.async { callback(nil) }
        }
    }
}

/// What a new loop thread hands back to the group that started it.
private final class LoopStart: @unchecked Sendable {
    let name: String
    /// True once the new loop is made (a pthread condition, which ThreadSanitizer follows).
    let made = ConditionLock(value: false)
    /// Written by the new thread and read by the group, both under `made`.
    var loop: EpollEventLoop? = nil

    init(name: String) {
        self.name = name
    }
}
