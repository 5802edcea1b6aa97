import NIOCore

/// The decisions of a lingering close (RFC 9112 §9.6), without a channel.
///
/// A server that closes while the client may still be sending (a request body it answered before
/// reading, or requests pipelined after a `Connection: close` answer) must not close at once: the
/// kernel answers the client's unread bytes with a reset, and a reset can destroy the answer
/// before the client reads it. Instead, once the last response byte is out, only the write side
/// is shut and what still arrives is read and dropped. The socket closes when the client closes
/// its side, when it has sent nothing for `timeout`, or `maxTime` after the shutdown whatever it
/// does (nginx's `lingering_timeout` and `lingering_time`): a client still uploading when the
/// answer came keeps the connection as long as it keeps sending, within the cap.
///
/// The handler that owns the socket carries out the actions: the plain HTTP/1.1 handler, or the
/// TLS handler, which sends close_notify first. It lives here, below both.
public struct LingeringClose: Sendable {
    public enum Action: Equatable, Sendable {
        /// Nothing to do yet.
        case wait
        /// Close the socket.
        case close
        /// Shut the write side, keep reading, and report `deadlineReached` at `until`.
        case shutOutput(until: NIODeadline)
        /// The deadline moved (the client sent more): report `deadlineReached` again at `until`.
        case waitUntil(NIODeadline)
    }

    private enum State: Equatable {
        /// The last response bytes are being written.
        case flushing
        /// Our side is shut; the client's close or a deadline is awaited.
        case lingering(since: NIODeadline)
        case closed
    }

    private var state = State.flushing
    private var peerClosed = false
    private var lastInput: NIODeadline? = nil
    /// False for a close that needs no lingering: the client sends nothing more (a head that never
    /// completed gets no more time than its timeout gave it).
    public let linger: Bool
    public let timeout: TimeAmount
    public let maxTime: TimeAmount

    public init(linger: Bool, timeout: TimeAmount, maxTime: TimeAmount) {
        self.linger = linger
        self.timeout = timeout
        self.maxTime = max(maxTime, timeout)
    }

    /// Our side is shut and the client's close is awaited.
    public var isLingering: Bool {
        if case .lingering = state { return true }
        return false
    }

    /// The write of the last response bytes completed (`succeeded`), or failed.
    public mutating func lastWriteDone(succeeded: Bool, now: NIODeadline) -> Action {
        guard state == .flushing else { return .wait }
        guard linger, succeeded, !peerClosed else {
            state = .closed
            return .close
        }
        state = .lingering(since: now)
        lastInput = nil
        return .shutOutput(until: now + timeout)
    }

    /// The client sent more (dropped unread): it is still sending, so the quiet timeout restarts.
    public mutating func inputArrived(now: NIODeadline) {
        if isLingering { lastInput = now }
    }

    /// The client closed its side: nothing more will come. Before the last write completes, that
    /// is remembered and the completion closes.
    public mutating func peerClosedInput() -> Action {
        peerClosed = true
        guard isLingering else { return .wait }
        state = .closed
        return .close
    }

    /// The timer armed by `shutOutput` or `waitUntil` fired.
    public mutating func deadlineReached(now: NIODeadline) -> Action {
        guard case .lingering(let since) = state else { return .wait }
        let next = min((lastInput ?? since) + timeout, since + maxTime)
        guard now >= next else { return .waitUntil(next) }
        state = .closed
        return .close
    }
}

// MARK: - Carrying it out

extension LingeringClose.Action {
    /// Does this on `context`'s channel. A timer armed here asks `atDeadline` (the owner's
    /// `deadlineReached`) what to do when it fires, and does that in turn.
    public func carryOut(on context: ChannelHandlerContext, atDeadline: @escaping () -> LingeringClose.Action) {
        switch self {
        case .wait:
            break
        case .close:
            context.close(promise: nil)
        case .shutOutput(let until):
            context.close(mode: .output, promise: nil)
            LingeringClose.Action.waitUntil(until).carryOut(on: context, atDeadline: atDeadline)
        case .waitUntil(let until):
            context.eventLoop.assumeIsolated().scheduleTask(deadline: until) {
                atDeadline().carryOut(on: context, atDeadline: atDeadline)
            }
        }
    }
}
