import NIOCore

/// Which timeout of a client exchange has run out, decided from timestamps alone.
///
/// The HTTP/1.1 handler and the HTTP/2 exchange report what happens (a stage change, client
/// bytes, the upstream's and the client's writability), each with the time of its event, and ask
/// `expired` on their 500 ms tick. Nothing here reads a clock, so the rules are tested with a manual one
/// (`ExchangeDeadlinesTests`), and both protocols time out the same way.
struct ExchangeDeadlines {
    struct Limits: Equatable {
        /// From the first byte of a request head to its end (408).
        var head: TimeAmount
        /// A connection with no request in progress, after its first request (closed quietly).
        /// Before the first, `head` applies: a connection that never sends a byte is not idle
        /// keep-alive, it is a slow (or absent) client.
        var keepAlive: TimeAmount
        /// Between two pieces of the request body (408, or the connection closed once the
        /// response has started).
        var clientBody: TimeAmount
        /// Between two reads from the upstream while it owes the response (504). The clock
        /// starts again whenever the client sends body bytes (the upstream may wait for them)
        /// and when the request has been sent whole.
        var upstreamRead: TimeAmount
        /// The upstream not taking request bytes (its socket stays unwritable) (504).
        var upstreamSend: TimeAmount
        /// The client taking none of the response while its socket holds it back (the
        /// connection is cut; nginx's `send_timeout`).
        var clientSend: TimeAmount = .seconds(60)
    }

    enum Stage: Equatable {
        /// No request in progress.
        case idle
        /// Part of a request head has arrived.
        case readingHead
        /// A request waits for an upstream connection (the connect timeout answers for it).
        case connecting
        /// The request (head, then body if any) goes upstream; the response may be arriving.
        case sendingRequest
        /// The request was sent whole; the response is awaited or streaming.
        case awaitingResponse
        /// After a 101: raw bytes both ways, until neither side has sent one for the upstream
        /// read limit (nginx's `proxy_read_timeout` ends an idle WebSocket the same way).
        case tunnel
        /// Nothing times out (a finished exchange, a closing connection).
        case unbounded
    }

    enum Expiry: Equatable {
        case idleConnection
        case head
        case clientBody
        case upstreamSend
        case upstreamRead
        case clientSend
        case tunnelIdle
    }

    private(set) var stage: Stage
    private(set) var stageSince: NIODeadline
    private(set) var lastClientBytes: NIODeadline
    private(set) var upstreamBlockedSince: NIODeadline? = nil
    /// A request head has completed on this connection (the idle limit becomes `keepAlive`).
    private(set) var servedRequest = false
    /// Since when the client's socket has been holding the response back (unwritable, so the
    /// proxy stopped reading the upstream for it); nil while the client takes what it is sent.
    private(set) var clientBlockedSince: NIODeadline? = nil
    /// What the client has taken since it blocked.
    private var clientProgress: SendProgress
    /// When the client last stopped holding the response back: the upstream, paused for it
    /// until then, gets its read time afresh.
    private var clientUnblockedAt: NIODeadline

    init(stage: Stage = .idle, now: NIODeadline) {
        self.stage = stage
        self.stageSince = now
        self.lastClientBytes = now
        self.clientProgress = SendProgress(now: now)
        self.clientUnblockedAt = now
    }

    // MARK: Events

    mutating func enter(_ stage: Stage, at now: NIODeadline) {
        if stage == .sendingRequest {
            // Entered when a request is attached to an upstream connection (a retry included):
            // that connection's writability starts afresh.
            upstreamBlockedSince = nil
        }
        self.stage = stage
        stageSince = now
    }

    /// A request head was complete: from now on, the connection's idle limit is `keepAlive`.
    mutating func requestStarted() {
        servedRequest = true
    }

    /// Request body bytes arrived (on HTTP/1.1, any bytes from the client).
    mutating func clientBytes(at now: NIODeadline) {
        lastClientBytes = now
    }

    mutating func upstreamWritability(_ writable: Bool, at now: NIODeadline) {
        if writable {
            upstreamBlockedSince = nil
        } else if upstreamBlockedSince == nil {
            upstreamBlockedSince = now
        }
    }

    /// The client's socket became unwritable (it holds back the response) or writable again
    /// (it took enough of it).
    mutating func clientWritability(_ writable: Bool, at now: NIODeadline) {
        if writable {
            if clientBlockedSince != nil { clientUnblockedAt = now }
            clientBlockedSince = nil
        } else if clientBlockedSince == nil {
            clientBlockedSince = now
            clientProgress = SendProgress(now: now)
        }
    }

    /// The bytes still queued for the client, seen on a tick while it is blocked. Less than ever
    /// since it blocked means it took some: a slow reader is not a stalled one. (While blocked,
    /// the proxy adds next to nothing: it reads no more from the upstream.)
    mutating func clientBacklog(_ bytes: Int, at now: NIODeadline) {
        guard clientBlockedSince != nil else { return }
        clientProgress.observe(buffered: bytes, at: now)
    }

    // MARK: The decision

    /// The client has held the response back and taken none of it for `limit`.
    func clientStalled(at now: NIODeadline, limit: TimeAmount) -> Bool {
        clientBlockedSince != nil && clientProgress.stalled(at: now, timeout: limit)
    }

    /// The timeout that has run out at `now`, if any. `upstreamActivity` is the attached upstream
    /// connection's last read (or its attach time); nil when none is attached.
    func expired(at now: NIODeadline, upstreamActivity: NIODeadline?, requestDone: Bool, limits: Limits) -> Expiry? {
        if stage != .unbounded && clientStalled(at: now, limit: limits.clientSend) {
            return .clientSend
        }
        // While the client holds the response back, the upstream is paused for it and owes
        // nothing: its read time runs again from when the client unblocks.
        let upstreamOwes = clientBlockedSince == nil
        switch stage {
        case .idle:
            return now - stageSince >= (servedRequest ? limits.keepAlive : limits.head) ? .idleConnection : nil
        case .readingHead:
            return now - stageSince >= limits.head ? .head : nil
        case .connecting:
            return !requestDone && now - lastClientBytes >= limits.clientBody ? .clientBody : nil
        case .sendingRequest:
            if !requestDone && now - lastClientBytes >= limits.clientBody { return .clientBody }
            if let since = upstreamBlockedSince, now - since >= limits.upstreamSend { return .upstreamSend }
            if upstreamOwes, let upstreamActivity,
               now - max(upstreamActivity, lastClientBytes, clientUnblockedAt) >= limits.upstreamRead { return .upstreamRead }
            return nil
        case .awaitingResponse:
            // Sent whole means queued whole: while the upstream's socket stays unwritable, part
            // of the request has not reached it.
            if let since = upstreamBlockedSince, now - since >= limits.upstreamSend { return .upstreamSend }
            // Counted from the later of the upstream's last byte and the end of the request: a
            // slow upload must not use up the upstream's time to answer.
            if upstreamOwes, let upstreamActivity,
               now - max(upstreamActivity, stageSince, clientUnblockedAt) >= limits.upstreamRead { return .upstreamRead }
            return nil
        case .tunnel:
            return now - max(lastClientBytes, upstreamActivity ?? stageSince, stageSince) >= limits.upstreamRead ? .tunnelIdle : nil
        case .unbounded:
            return nil
        }
    }
}
