import NIOCore

/// Whether a connection that closes after its response still makes progress sending the rest.
///
/// Such a connection waits for its last bytes to be sent before the socket closes, and a client
/// that stopped reading would make it wait for ever. Progress is the number of bytes NIO still
/// holds for the socket going down between two looks; once it has not gone down for the send
/// timeout, the connection is cut (nginx's `send_timeout` measures the same between writes).
struct ClosingProgress {
    private var since: NIODeadline
    private var buffered = Int.max

    init(now: NIODeadline) {
        since = now
    }

    /// One look, with what NIO holds now. True: nothing was taken for `timeout`; cut.
    mutating func stalled(buffered now: Int, at time: NIODeadline, timeout: TimeAmount) -> Bool {
        if now < buffered {
            buffered = now
            since = time
            return false
        }
        return time - since >= timeout
    }
}
