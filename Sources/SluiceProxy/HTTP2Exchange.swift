import Logging
import NIOCore
import SluiceHTTP1
import SluiceHTTP2
import SluiceRouting
import SluiceUpstream

/// One HTTP/2 stream forwarded as an HTTP/1.1 exchange on a pooled upstream connection.
///
/// Flow control follows the bytes: request DATA is acknowledged to the client (window update)
/// only once written to a writable upstream, and the upstream is paused while the stream holds
/// more response bytes than its high-water mark.
final class HTTP2Exchange: UpstreamResponseDelegate {
    enum State {
        /// Waiting for an upstream connection.
        case connecting
        /// Head sent; the body (if any) and the response flow.
        case forwarding
        /// The response is complete or the proxy answered itself; request bytes are dropped.
        case done
    }

    /// Strong: the connection holds its exchanges only until their streams close (or it closes
    /// and abandons them), which ends the cycle. An unowned reference cost an unowned-retain
    /// check on every use.
    private let connection: HTTP2ProxyConnection
    private let loop: EventLoopContext
    private let stream: HTTP2Stream
    /// Position in the connection's list of open exchanges (-1: not in it).
    var slot = -1
    private var state = State.connecting
    /// Classified once: comparing the bytes for each question cost a memcmp each.
    private var method = HTTP1Method.other
    private var isHead: Bool { method == .head }
    private var idempotent: Bool { method.isIdempotent }
    private var framing = HTTP1BodyFraming.none
    private var requestHead: ByteBuffer? = nil
    /// Body bytes that arrived before the upstream connection did.
    private var earlyBody: ByteBuffer? = nil
    private var earlyEnd = false
    private var owedWindow = 0
    private var upstream: UpstreamConnection? = nil
    /// The endpoint of the attempt in progress, as an index into the pool's list: storing the
    /// `Endpoint` itself cost reference counting on every request, for a value only logs read.
    private var endpointIndex = -1
    private var endpoint: Endpoint? {
        guard let pool = pool, endpointIndex >= 0, endpointIndex < pool.endpoints.count else { return nil }
        return pool.endpoints[endpointIndex]
    }
    private var reused = false
    private var retried = false
    private var tries = UpstreamAttempts()
    private var pool: BackendPool? { tries.pool }
    private var setCookie: String? = nil
    private var bodyLimit: Int64? = nil
    private var bodyBytes: Int64 = 0
    private var bodySent = false
    private var requestDone = false
    /// The client sent `expect: 100-continue` and holds its body back until told to go on (or
    /// until its own timeout, a second for curl). `expect` itself is not forwarded.
    private var expectsContinue = false
    private var continueSent = false
    private var responseStarted = false
    private var responseHasBody = false
    private var hsts: [UInt8]? = nil
    /// Client body, upstream send and upstream read timeouts, as over HTTP/1.1.
    private var deadlines: ExchangeDeadlines
    private var record = ExchangeRecord()
    private var responseStatus = 0
    private var logFields: AccessLogFields? = nil

    init(connection: HTTP2ProxyConnection, stream: HTTP2Stream) {
        self.connection = connection
        self.loop = connection.loop
        self.stream = stream
        self.deadlines = ExchangeDeadlines(stage: .connecting, now: connection.loop.now)
    }
    private var session: HTTP2Session? { connection.session }

    // MARK: - Request

    func start(endStream: Bool) {
        requestDone = endStream
        // Read once: every `stream.headerBytes` is a retain, a release and an exclusivity check.
        let bytes = stream.headerBytes
        record.begin(now: deadlines.stageSince, bytesIn: bytes.count)
        if loop.accessLog != nil { captureLogFields() }
        if stream.headersTooLarge {
            respondLocal(status: 431, detail: "request header fields too large")
            return
        }
        guard let methodRange = stream.method else {
            respondLocal(status: 400, detail: "missing :method")
            return
        }
        let checked = bytes.withUnsafeBytes { p -> (status: Int, detail: String)? in
            let method = UnsafeRawBufferPointer(rebasing: p[methodRange])
            self.method = HTTP1Method(bytes: method)
            if self.method == .connect { return (405, "CONNECT is not served by this proxy") }
            if self.method == .other && !HTTP1Syntax.isToken(method) { return (400, "invalid method") }
            guard let path = stream.path else { return (400, "missing :path") }
            if HTTP2Stream.same(UnsafeRawBufferPointer(rebasing: p[path]), "*") { return (400, "asterisk-form target is not proxied") }
            if path.count > loop.settings.requestLimits.maxLineLength { return (414, "the path is longer than the request-line limit") }
            if let problem = HTTP1Syntax.originTargetProblem(UnsafeRawBufferPointer(rebasing: p[path])) { return (400, "\(problem)") }
            return nil
        }
        if let checked {
            respondLocal(status: checked.status, detail: checked.detail)
            return
        }
        guard let authority = resolveAuthority(bytes) else { return }
        let path = stream.path!

        let held = loop.snapshot
        let policy = bytes.withUnsafeBytes { p in
            held.read { snapshot in
                loop.hostPolicy(snapshot, tls: connection.tls, sni: connection.sniCertificate,
                                host: UnsafeRawBufferPointer(rebasing: p[authority]), target: UnsafeRawBufferPointer(rebasing: p[path]),
                                memo: &connection.hostPolicyMemo)
            }
        }
        switch policy {
        case .proceed(let line):
            hsts = line
        case .misdirected(let host):
            respondLocal(status: 421, detail: "host \(host) is served by another certificate than the TLS server name chose")
            return
        case .redirect(let location):
            respondLocal(status: 308, detail: "this host is served over https: \(location)", location: location)
            return
        }
        let decision = bytes.withUnsafeBytes { p in
            held.read { loop.route($0, host: UnsafeRawBufferPointer(rebasing: p[authority]), target: UnsafeRawBufferPointer(rebasing: p[path])) }
        }
        let pool: Unmanaged<BackendPool>
        switch decision {
        case .forward(let p, let stat)?:
            pool = p
            record.stat = stat
        case .unavailable(let why, let stat)?:
            record.stat = stat
            respondLocal(status: 503, detail: why)
            return
        case .noRoute?:
            respondLocal(status: 404, detail: "no route for this host and path")
            return
        case nil:
            respondLocal(status: 400, detail: "the path climbs above the root or is too long")
            return
        }
        let poolPolicy = pool._withUnsafeGuaranteedRef { $0.policy }
        var hashKey: UInt64 = 0
        var affinityPreferred: Int? = nil
        if poolPolicy.balance == .consistentHash || poolPolicy.affinityCookie != nil {
            bytes.withUnsafeBytes { p in
                let fields: RequestKeys.Fields = { visit in
                    for f in self.stream.fields where !visit(UnsafeRawBufferPointer(rebasing: p[f.name]), UnsafeRawBufferPointer(rebasing: p[f.value])) { break }
                }
                hashKey = RequestKeys.hash(poolPolicy, clientIP: connection.client.ip, fields: fields)
                if let name = poolPolicy.affinityCookie {
                    if let v = RequestKeys.cookie(name, in: fields) { affinityPreferred = RequestKeys.affinityTarget(pool: pool.takeUnretainedValue(), cookieValue: v) }
                }
            }
        }
        bodyLimit = poolPolicy.maxBodySize ?? loop.settings.maxBodySize
        framing = requestFraming(bytes)
        expectsContinue = !requestDone && stream.fields.contains { f in
            stream.fieldNamed(f, "expect") && bytes[f.value].elementsEqual("100-continue".utf8) { ($0 | 0x20) == $1 }
        }
        if let limit = bodyLimit, case .contentLength(let n) = framing, n > limit {
            respondLocal(status: 413, detail: "the body (\(n) bytes) is larger than \(limit) bytes")
            return
        }
        var out = connection.headBuffer(capacity: bytes.count + 384)
        ForwardedHeads.writeRequestHead(into: &out, stream: stream, authority: authority, client: connection.client,
                                        framing: framing, ids: &connection.loop.ids)
        if loop.accessLog != nil, logFields?.requestID.isEmpty == true { logFields!.requestID = logFields!.keepHex(connection.loop.ids.last) }
        requestHead = out
        tries.begin(pool, of: held, hash: hashKey, preferred: affinityPreferred, loop: loop)
        startAttempt()
    }

    /// No replay is possible any more: the head goes back to the connection to be written over.
    private func releaseRequestHead() {
        guard let head = requestHead else { return }
        requestHead = nil
        connection.recycle(head)
    }

    // MARK: - Attempts (the choices are `UpstreamAttempts`', shared with ProxyConnectionHandler)

    private func startAttempt() {
        guard tries.hasPool else { return }
        switch tries.next(loop: loop) {
        case .unavailable(let why):
            if let lastFailure = tries.lastFailure { respondUpstreamFailure(lastFailure) } else { respondLocal(status: 503, detail: why) }
        case .endpoint(let i):
            endpointIndex = i
            let idle = tries.withPool { pool in
                if loop.accessLog != nil { record.endpoint = pool.endpoints[i] }  // only the access log reads it
                record.endpointID = pool.endpointIDs[i]
                return loop.upstreams.acquire(from: pool, i)
            } ?? nil
            setCookie = tries.affinityCookie
            if let idle {
                attach(idle, reused: true)
            } else if let open = tries.waitForConnection(loop: loop) {
                respondLocal(status: 503, detail: open)
            } else if let pool {
                connect(to: pool.endpoints[i])
            }
        }
    }

    private func endAttempt(_ outcome: AttemptOutcome) {
        tries.end(outcome, loop: loop)
    }

    private func retry(after error: UpstreamError, replayable: Bool) -> Bool {
        guard requestHead != nil, !bodySent, !responseStarted, state != .done,
              tries.retry(after: error, replayable: replayable, idempotent: idempotent, loop: loop) else { return false }
        retried = true
        record.retried = true
        record.upstreamFailed = false
        startAttempt()
        return true
    }

    private func closeAttempts() {
        tries.close(loop: loop)
    }

    /// `:authority`, or Host when the client sent none; both must agree (RFC 9113 §8.3.1).
    private func resolveAuthority(_ bytes: PackedBytes) -> Range<Int>? {
        var host: Range<Int>? = nil
        var hosts = 0
        for f in stream.fields where stream.fieldNamed(f, "host") {
            host = f.value
            hosts += 1
        }
        let problem: String? = bytes.withUnsafeBytes { p in
            if hosts > 1 { return "more than one Host field" }
            if let a = stream.authority, let h = host,
               !p[a].elementsEqual(p[h], by: { ($0 | 0x20) == ($1 | 0x20) }) {
                return ":authority and Host disagree"
            }
            guard let r = stream.authority ?? host else { return "missing :authority and Host" }
            if let bad = HTTP1Syntax.hostProblem(UnsafeRawBufferPointer(start: p.baseAddress, count: p.count), r.lowerBound, r.upperBound) {
                return "\(bad)"
            }
            return nil
        }
        if let problem {
            respondLocal(status: 400, detail: problem)
            return nil
        }
        return stream.authority ?? host
    }

    private func requestFraming(_ bytes: PackedBytes) -> HTTP1BodyFraming {
        var declared: Int64? = nil
        for f in stream.fields where stream.fieldNamed(f, "content-length") {
            // nghttp2 has checked the value and will check it against the DATA received.
            declared = bytes[f.value].reduce(Int64(0)) { $0 &* 10 &+ Int64($1 &- 0x30) }
        }
        if requestDone {
            // No body. Methods that define one still tell the upstream it is empty.
            let definesBody = method == .post || method == .put || method == .patch
            return definesBody || (declared ?? 0) > 0 ? .contentLength(0) : .none
        }
        if let declared { return .contentLength(declared) }
        return .chunked
    }

    private func connect(to endpoint: Endpoint) {
        state = .connecting
        deadlines.enter(.connecting, at: loop.now)
        let attempt = tries.count
        loop.upstreams.connect(endpoint, timeout: tries.connectTimeout).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let conn):
                guard self.state == .connecting, self.tries.count == attempt else {
                    self.loop.upstreams.release(conn)
                    return
                }
                self.tries.connected()
                self.attach(conn, reused: false)
                self.connection.produceOutput()
            case .failure(let error):
                guard self.state == .connecting, self.tries.count == attempt else { return }
                let failure: UpstreamError
                if let ce = error as? ChannelError, case .connectTimeout = ce {
                    failure = .connectTimeout
                } else {
                    failure = .connectFailed("\(error)")
                }
                self.record.upstreamFailed = true
                self.endAttempt(.gatewayFailure)
                if self.retry(after: failure, replayable: true) {
                    self.connection.produceOutput()
                    return
                }
                self.respondUpstreamFailure(failure)
                self.connection.produceOutput()
            }
        }
    }

    private func attach(_ conn: UpstreamConnection, reused: Bool) {
        let now = loop.now
        if record.upstreamStart == nil { record.upstreamStart = now }
        upstream = conn
        self.reused = reused
        state = .forwarding
        deadlines.enter(.sendingRequest, at: now)
        conn.attach(self, requestIsHead: isHead, now: now)
        if expectsContinue && !continueSent && !requestDone {
            // Our own 100, as over HTTP/1.1: the request was accepted and has an upstream.
            continueSent = true
            session?.sendContinue(stream)
        }
        let endNow = earlyEnd || (requestDone && framing == .chunked)
        if let requestHead, earlyBody == nil, !endNow {
            conn.writeAndFlush(requestHead)  // the usual case: one pass down the pipeline
        } else {
            if let requestHead { conn.write(requestHead) }
            if let early = earlyBody {
                earlyBody = nil
                writeBody(early)
            }
            if endNow {
                earlyEnd = false
                writeEnd()
            }
            conn.flush()
        }
        if requestDone { deadlines.enter(.awaitingResponse, at: now) }
        if conn.isWritable { releaseWindow() } else { deadlines.upstreamWritability(false, at: now) }
    }

    func requestData(_ data: UnsafeRawBufferPointer) {
        deadlines.clientBytes(at: loop.now)
        record.bytesIn += data.count
        bodyBytes += Int64(data.count)
        if let limit = bodyLimit, bodyBytes > limit, state != .done {
            session?.consume(stream, data.count)
            if let upstream {
                self.upstream = nil
                upstream.close()
            }
            endAttempt(.abandoned)
            if responseStarted { abortStream() } else { respondLocal(status: 413, detail: "the body is larger than \(limit) bytes") }
            return
        }
        switch state {
        case .done:
            session?.consume(stream, data.count)
        case .connecting:
            if earlyBody == nil { earlyBody = ByteBufferAllocator().buffer(capacity: data.count) }
            earlyBody!.writeBytes(data)
            owedWindow += data.count
        case .forwarding:
            var b = ByteBufferAllocator().buffer(capacity: data.count)
            b.writeBytes(data)
            owedWindow += data.count
            writeBody(b)
            connection.needsUpstreamFlush(self)
            if upstream?.isWritable ?? false { releaseWindow() }
        }
    }

    private func writeBody(_ b: ByteBuffer) {
        guard let upstream, b.readableBytes > 0 else { return }
        bodySent = true
        releaseRequestHead()
        if framing == .chunked {
            var h = ByteBufferAllocator().buffer(capacity: 20)
            ForwardedHeads.writeChunkHeader(&h, size: b.readableBytes)
            upstream.write(h)
            upstream.write(b)
            var crlf = ByteBufferAllocator().buffer(capacity: 2)
            crlf.writeStaticString("\r\n")
            upstream.write(crlf)
        } else {
            upstream.write(b)
        }
    }

    /// The last chunk, with the request's trailers when it had any. (With a declared length the
    /// upstream body is not chunked and there is no place for them: they are dropped, as nginx
    /// does.)
    private func writeEnd() {
        guard let upstream, framing == .chunked else { return }
        let trailers = stream.trailerLines
        var last = ByteBufferAllocator().buffer(capacity: 5 + trailers.count)
        last.writeStaticString("0\r\n")
        last.writeBytes(trailers)
        last.writeStaticString("\r\n")
        upstream.write(last)
    }

    func requestEnd() {
        requestDone = true
        switch state {
        case .connecting:
            earlyEnd = framing == .chunked
        case .forwarding:
            writeEnd()
            connection.needsUpstreamFlush(self)
            deadlines.enter(.awaitingResponse, at: loop.now)
        case .done:
            break
        }
    }

    func flushUpstream() {
        upstream?.flush()
    }

    /// Gives the client back the window for bytes now written to the upstream.
    private func releaseWindow() {
        guard owedWindow > 0 else { return }
        session?.consume(stream, owedWindow)
        owedWindow = 0
    }

    // MARK: - Upstream events

    func upstreamResponseHead(_ head: HTTP1Head, buffer: ByteBuffer) {
        loop.during(upstreamEventTime) { responseHead(head, buffer: buffer) }
    }

    /// The upstream connection's callbacks come from its read (or its end): that event's time.
    private var upstreamEventTime: NIODeadline { upstream?.lastUpstreamActivity ?? .now() }

    private func responseHead(_ head: HTTP1Head, buffer: ByteBuffer) {
        if head.isInformational {
            if head.status == 101 {
                upstreamFailed(.invalidResponse(HTTP1ParseError(.malformed, "101 without an upgrade request")))
                return
            }
            // Interim heads such as 103 (Early Hints) are relayed, hop-by-hop fields removed. The
            // upstream's 100 is not: the proxy answers `expect` itself.
            if head.status != 100, state == .forwarding, let session {
                var block = connection.takeHeaderBlock()
                buffer.withUnsafeReadableBytes { p in
                    ForwardedHeads.responseFields(into: &block, head: head, bytes: p, keepContentLength: false, extra: nil)
                }
                session.sendInformational(stream, headers: block)
                connection.returnHeaderBlock(block)
                connection.produceOutput()
            }
            return
        }
        if (head.status == 502 || head.status == 503 || head.status == 504), let conn = upstream, requestHead != nil,
           !bodySent, requestDone, tries.mayRetry(replayable: false, idempotent: idempotent, loop: loop) {
            // Decided before closing (see ProxyConnectionHandler): a closed connection's response
            // cannot be relayed any more.
            upstream = nil
            conn.close()
            endAttempt(.serverError)
            record.upstreamStatus = head.status
            if !retry(after: .gatewayStatus(head.status), replayable: false) {
                respondUpstreamFailure(.gatewayStatus(head.status))
            }
            return
        }
        releaseRequestHead()
        record.upstreamStatus = head.status
        record.upstreamDone(now: loop.now)
        responseStatus = head.status
        record.bytesOut += head.headLength
        var keepCL = false
        switch head.framing {
        case .contentLength(let n):
            keepCL = true
            responseHasBody = n > 0 && !isHead
        case .none:
            keepCL = true
            responseHasBody = false
        case .chunked, .closeDelimited:
            responseHasBody = !isHead
        }
        var block = connection.takeHeaderBlock()
        buffer.withUnsafeReadableBytes { p in
            ForwardedHeads.responseFields(into: &block, head: head, bytes: p, keepContentLength: keepCL, extra: hsts)
        }
        if let setCookie { block.add("set-cookie", setCookie) }
        responseStarted = true
        session?.respond(stream, headers: block, hasBody: responseHasBody)
        connection.returnHeaderBlock(block)
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        guard responseHasBody, let session else { return }
        record.bytesOut += body.readableBytes
        if session.send(stream, body) {
            // The stream holds more than its high-water mark: the client (its window, or the
            // connection's socket) is holding the response back.
            upstream?.setReadPaused(true)
            deadlines.clientWritability(false, at: loop.now)
        }
    }

    func upstreamResponseEnd(trailers: ByteBuffer?) {
        loop.during(upstreamEventTime) { responseEnd(trailers: trailers) }
    }

    private func responseEnd(trailers: ByteBuffer?) {
        guard responseStarted else { return }  // the end of a 1xx
        if responseHasBody {
            session?.end(stream, trailers: trailers.map { ForwardedHeads.trailerFields($0) })
        }
        endAttempt(responseStatus >= 500 ? .serverError : .success)
        finishUpstream()
        state = .done
        finishRecord(status: responseStatus)
        closeAttempts()
        releaseWindowForDroppedBody()
        // The upstream forgot this exchange with its response: its read-complete will not reach us.
        connection.produceOutput()
    }

    func upstreamTunnelData(_ data: ByteBuffer) {}

    func upstreamReadComplete() {
        connection.produceOutput()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        deadlines.upstreamWritability(isWritable, at: loop.now)
        if isWritable {
            releaseWindow()
            connection.produceOutput()
        }
    }

    func upstreamFailed(_ error: UpstreamError) {
        guard let conn = upstream else { return }
        upstream = nil
        conn.close()
        record.upstreamFailed = true
        endAttempt(.gatewayFailure)
        if responseStarted {
            // A truncated response must not look complete: the stream is reset, not ended.
            finishRecord(status: responseStatus)
            loop.logger.warning("response truncated", metadata: ["reason": "\(error)", "upstream": "\(conn.endpoint)"])
            state = .done
            session?.reset(stream, code: 2)  // INTERNAL_ERROR
            connection.produceOutput()
            return
        }
        if case .closedBeforeResponse = error, idempotent {
            // The keep-alive race (a reused connection closed under us): safe to replay when
            // idempotent; otherwise only what the policy's retries allow.
            if retry(after: error, replayable: true) { return }
        }
        respondUpstreamFailure(error)
        connection.produceOutput()
    }

    private func respondUpstreamFailure(_ error: UpstreamError) {
        record.upstreamFailed = true
        loop.logger.warning("upstream failure", metadata: [
            "status": "\(error.status)", "reason": "\(error)", "upstream": "\(endpoint?.description ?? "-")",
        ])
        respondLocal(status: error.status, detail: error.description, logged: true)
    }

    func responseDrained() {
        upstream?.setReadPaused(false)
        deadlines.clientWritability(true, at: loop.now)
    }

    // MARK: - Ending

    private func finishUpstream() {
        guard let conn = upstream else { return }
        upstream = nil
        if requestDone && state == .forwarding { loop.upstreams.release(conn, now: loop.now) } else { conn.close() }
    }

    /// Request bytes still to come are read and dropped; their window is given back at once.
    private func releaseWindowForDroppedBody() {
        if let early = earlyBody {
            owedWindow = max(owedWindow, early.readableBytes)
            earlyBody = nil
        }
        releaseWindow()
    }

    /// The client reset the stream, or it completed.
    func streamClosed(errorCode: UInt32) {
        defer { closeAttempts() }
        // Reset before the response completed: 499, as nginx logs a client that went away.
        finishRecord(status: responseStarted ? responseStatus : 499)
        if let conn = upstream {
            upstream = nil
            if requestDone && state == .forwarding {
                // The request went out whole: the rest of the response is read and dropped, and
                // the connection kept (closing it, a later request would open another).
                loop.upstreams.drain(conn, finalHeadSeen: responseStarted, timeout: tries.readTimeout ?? loop.settings.upstreamReadTimeout)
            } else {
                // The request itself is incomplete: the upstream exchange cannot finish cleanly.
                conn.close()
            }
        }
        state = .done
    }

    /// The connection is gone.
    func abandon() {
        streamClosed(errorCode: 0)
    }

    func checkTimeouts(now: NIODeadline) {
        guard state != .done else {
            checkUnsent(now: now)
            return
        }
        if deadlines.clientBlockedSince != nil {
            deadlines.clientBacklog(stream.pendingBytes, at: now)
        }
        let limits = ExchangeDeadlines.Limits(
            head: loop.settings.headTimeout, keepAlive: loop.settings.keepAliveTimeout, clientBody: loop.settings.clientBodyTimeout,
            upstreamRead: tries.readTimeout ?? loop.settings.upstreamReadTimeout,
            upstreamSend: tries.sendTimeout ?? loop.settings.upstreamReadTimeout,
            clientSend: loop.settings.clientSendTimeout)
        switch deadlines.expired(at: now, upstreamActivity: upstream?.lastUpstreamActivity, requestDone: requestDone, limits: limits) {
        case nil, .idleConnection?, .head?, .tunnelIdle?:
            return  // the connection's own timeouts are HTTP2ProxyConnection's; h2 has no tunnels
        case .clientBody?:
            if responseStarted {
                abortStream()
            } else {
                respondLocal(status: 408, detail: "request body not received in time")
            }
        case .upstreamSend?:
            loop.logger.info("upstream send timeout", metadata: ["upstream": "\(endpoint?.description ?? "-")", "protocol": "h2"])
            upstreamTimedOut()
        case .upstreamRead?:
            upstreamTimedOut()
        case .clientSend?:
            // The client took none of this stream's response (its window stayed shut, or it
            // stopped reading the connection). The upstream, paused for it, is not at fault.
            logStalledClient()
            abortStream()
            // That reset waits behind what the client did not take, as `checkUnsent`'s own
            // would: from here that watch only closes the connection if even the reset stays.
            unsentResetAt = now
        }
    }

    /// The response ended on our side, but the stream stays open while its last bytes wait for
    /// the client's window: a client that never opens it would hold the stream (and the
    /// connection, which is not idle while it has one) for ever.
    ///
    /// The reset itself waits for the connection's socket: a client that reads nothing at all
    /// would keep even that from going, so the connection is closed one send timeout later.
    private func checkUnsent(now: NIODeadline) {
        guard stream.pendingBytes > 0, let session else { return }
        let limit = loop.settings.clientSendTimeout
        if let resetAt = unsentResetAt {
            if now - resetAt >= limit {
                loop.logger.info("client read nothing; closing the connection", metadata: [
                    "unsent": "\(stream.pendingBytes)", "protocol": "h2"])
                connection.forceClose()
            }
            return
        }
        deadlines.clientWritability(false, at: now)  // from the first look, if not blocked before
        deadlines.clientBacklog(stream.pendingBytes, at: now)
        guard deadlines.clientStalled(at: now, limit: limit) else { return }
        logStalledClient()
        unsentResetAt = now
        session.reset(stream, code: 8)  // CANCEL
        connection.produceOutput()
    }

    /// When `checkUnsent` reset the stream.
    private var unsentResetAt: NIODeadline? = nil

    private func logStalledClient() {
        loop.logger.info("client took none of the response in time; resetting the stream", metadata: [
            "unsent": "\(stream.pendingBytes)", "protocol": "h2"])
    }

    private func upstreamTimedOut() {
        guard let upstream else { return }
        self.upstream = nil
        upstream.close()
        record.upstreamFailed = true
        endAttempt(.gatewayFailure)
        if !responseStarted && retry(after: .readTimeout, replayable: false) { return }
        if responseStarted {
            loop.logger.warning("upstream timed out mid-response", metadata: ["upstream": "\(upstream.endpoint)"])
            abortStream()
        } else {
            respondUpstreamFailure(.readTimeout)
        }
    }

    private func abortStream() {
        finishRecord(status: responseStarted ? responseStatus : 499)
        if let upstream {
            self.upstream = nil
            upstream.close()
        }
        state = .done
        session?.reset(stream, code: 2)
    }

    // MARK: - Accounting

    private func finishRecord(status: Int) {
        guard record.open else { return }
        loop.finish(&record, status: status, fields: &logFields, client: connection.client.ip)
    }

    private func captureLogFields() {
        var f = AccessLogFields()
        f.proto = "HTTP/2.0"
        stream.headerBytes.withUnsafeBytes { p in
            func r(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: p[range]) }
            if let m = stream.method { f.method = f.keep(r(m)) }
            if let a = stream.authority { f.host = f.keep(r(a)) }
            if let path = stream.path { f.path = f.keep(r(path)) }
            for field in stream.fields {
                if f.host.isEmpty && stream.fieldNamed(field, "host") { f.host = f.keep(r(field.value)) }
                if stream.fieldNamed(field, "x-request-id") { f.requestID = f.keep(r(field.value)) }
                if stream.fieldNamed(field, "user-agent") { f.userAgent = f.keep(r(field.value)) }
                if stream.fieldNamed(field, "referer") { f.referer = f.keep(r(field.value)) }
            }
        }
        logFields = f
    }

    /// Answers the stream from the proxy itself.
    private func respondLocal(status: Int, detail: String, logged: Bool = false, location: String? = nil) {
        defer { closeAttempts() }
        if !logged {
            let meta: Logger.Metadata = ["status": "\(status)", "reason": "\(detail)", "client": "\(String(decoding: connection.client.ip, as: UTF8.self))", "protocol": "h2"]
            if status >= 500 { loop.logger.warning("request failed", metadata: meta) } else { loop.logger.info("request refused", metadata: meta) }
        }
        if let upstream {
            self.upstream = nil
            upstream.close()
        }
        state = .done
        releaseRequestHead()
        releaseWindowForDroppedBody()
        guard let session else { return }
        let phrase = LocalResponse.reasonPhrase(status)
        let body = "\(status) \(phrase): \(detail)\n"
        record.bytesOut += isHead ? 0 : body.utf8.count
        finishRecord(status: status)
        var block = HTTP2HeaderBlock()
        block.add(":status", String(status))
        block.add("server", loop.settings.serverName)
        block.add("content-type", "text/plain; charset=utf-8")
        block.add("content-length", String(body.utf8.count))
        if let location { block.add("location", location) }
        if let hsts { ForwardedHeads.addFieldLine(&block, hsts) }
        responseStarted = true
        if isHead {
            session.respond(stream, headers: block, hasBody: false)
            return
        }
        session.respond(stream, headers: block, hasBody: true)
        var b = ByteBufferAllocator().buffer(capacity: body.utf8.count)
        b.writeString(body)
        session.send(stream, b)
        session.end(stream)
    }
}
