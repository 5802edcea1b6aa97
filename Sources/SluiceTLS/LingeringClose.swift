import NIOCore

/// The decisions of a lingering close (RFC 9112 §9.6), without a channel.
///
/// A server that closes while the client may still be sending (a request body it answered before
/// reading, or requests pipelined after a `Connection: close` answer) must not close at once: the
/// kernel answers the client's unread bytes with a reset, and a reset can destroy the answer
/// before the client reads it. Instead, once the last response byte is out, only the write side
/// is shut; what still arrives is read and dropped; the socket closes when the client closes its
/// side, or at a deadline (nginx's `lingering_timeout`), whichever comes first.
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
    }

    private enum State: Equatable {
        /// The last response bytes are being written.
        case flushing
        /// Our side is shut; the client's close or the deadline is awaited.
        case lingering(until: NIODeadline)
        case closed
    }

    private var state = State.flushing
    private var peerClosed = false
    /// False for a close that needs no lingering: the client sends nothing more (a head that never
    /// completed gets no more time than its timeout gave it).
    public let linger: Bool
    public let timeout: TimeAmount

    public init(linger: Bool, timeout: TimeAmount) {
        self.linger = linger
        self.timeout = timeout
    }

    /// Whether what the client still sends is read (and dropped) rather than left unread, which
    /// would both stall the client and, at the close, reset the connection.
    public var readsInput: Bool { linger && state != .closed }

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
        let until = now + timeout
        state = .lingering(until: until)
        return .shutOutput(until: until)
    }

    /// The client closed its side: nothing more will come. Before the last write completes, that
    /// is remembered and the completion closes.
    public mutating func peerClosedInput() -> Action {
        peerClosed = true
        guard isLingering else { return .wait }
        state = .closed
        return .close
    }

    /// The timer armed by `shutOutput` fired.
    public mutating func deadlineReached(now: NIODeadline) -> Action {
        guard case .lingering(let until) = state, now >= until else { return .wait }
        state = .closed
        return .close
    }
}
