import NIOCore

/// Whether a client still takes what it is sent.
///
/// A connection waiting for its client to take bytes (a response its socket holds back, or the
/// last bytes of one closing after its response) would wait for ever on a client that stopped
/// reading. Progress is the number of bytes NIO still holds for the socket going down between
/// two looks; once it has not gone down for the send timeout, the client is cut (nginx's
/// `send_timeout` measures the same between writes). Bytes added meanwhile are not progress.
struct SendProgress {
    /// When the held bytes last went down (or the watch began).
    private(set) var since: NIODeadline
    private var buffered = Int.max

    init(now: NIODeadline) {
        since = now
    }

    /// One look, with what NIO holds now. True when less is held than at any look before.
    @discardableResult
    mutating func observe(buffered now: Int, at time: NIODeadline) -> Bool {
        guard now < buffered else { return false }
        buffered = now
        since = time
        return true
    }

    /// Nothing was taken for `timeout`.
    func stalled(at time: NIODeadline, timeout: TimeAmount) -> Bool {
        time - since >= timeout
    }

    /// One look, then the verdict. True: nothing was taken for `timeout`; cut.
    mutating func stalled(buffered now: Int, at time: NIODeadline, timeout: TimeAmount) -> Bool {
        if observe(buffered: now, at: time) { return false }
        return stalled(at: time, timeout: timeout)
    }
}
