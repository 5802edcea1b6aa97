import Logging
import NIOCore
import SluiceHTTP1
import SluiceHTTP2
import SluiceIO
import SluiceRouting
import SluiceTLS
import SluiceUpstream

/// One client connection: parses requests, forwards each to an upstream connection from the
/// event loop's pool, and streams the response back. Requests are served one at a time in order;
/// pipelined bytes wait in the receive buffer (reading pauses only when they pile up).
final class ProxyConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler, UpstreamResponseDelegate, DrainableConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase {
        /// No request in progress.
        case awaitingHead
        /// A head was parsed; an upstream connection is being opened.
        case connecting
        /// The request body (possibly empty) flows upstream.
        case forwardingBody
        /// The request was sent whole; the response is awaited or streaming.
        case requestComplete
        /// After 101: raw bytes both ways.
        case tunnel
        case closing
    }

    private let loop: EventLoopContext
    private let settings: ProxySettings
    private var context: ChannelHandlerContext!
    /// The client's channel when this handler is next to its head (plain HTTP: the listener's
    /// initializer says so): output goes to the socket without the pipeline's walk.
    private var socket: SocketChannel? = nil
    private var parser: HTTP1Parser
    private var inbound: ByteBuffer
    private var client: ClientInfo
    private var phase = Phase.awaitingHead
    private var deadlines = ExchangeDeadlines(now: .now())
    private var draining = false
    private var needsFlush = false
    private var needsUpstreamFlush = false
    private var readGate = ReadGate()
    private var closeScheduled = false
    private var inProcess = false
    private var clientInputClosed = false
    /// Whether the first bytes of a plain connection were checked for the h2 preface.
    private var prefaceChecked = false
    /// Counts exchanges, so that a late connect callback can tell it belongs to an old one.
    private var exchangeID = 0

    // MARK: The exchange in flight

    private var method = HTTP1Method.get
    private var clientHTTP11 = true
    private var clientKeepAlive = true
    private var upgradeRequested = false
    private var expectsContinue = false
    private var requestFraming = HTTP1BodyFraming.none
    private var requestHead: ByteBuffer? = nil
    /// The endpoint of the attempt in progress, as an index into the pool's list: storing the
    /// `Endpoint` itself cost reference counting on every request, for a value only logs read.
    private var endpointIndex = -1
    private var endpoint: Endpoint? {
        guard let pool = backend, endpointIndex >= 0, endpointIndex < pool.endpoints.count else { return nil }
        return pool.endpoints[endpointIndex]
    }
    private var tries = UpstreamAttempts()
    /// The backend of the exchange in progress.
    private var backend: BackendPool? { tries.pool }
    /// `set-cookie` (and HSTS) lines the response gets from the proxy.
    private var extraResponseLines: [UInt8]? = nil
    private var continueSent = false
    private var bodyLimit: Int64? = nil
    private var bodyBytesForwarded: Int64 = 0
    private var upstream: UpstreamConnection? = nil
    /// The client channel's writability as its events reported it (read once per change, not
    /// through `context.channel` on every request).
    private var clientWritable = true
    private var upstreamReused = false
    private var retried = false
    private var bodyBytesSent = false
    private var requestDone = false
    private var responseStarted = false
    private var responseChunked = false
    private var closeAfterResponse = false
    private var informationalInProgress = false

    /// The connection arrived over TLS (X-Forwarded-Proto https, the 421 check).
    private let tls: Bool
    /// The certificate SNI chose, to refuse a Host that another certificate serves (421).
    private var sniCertificate: ObjectIdentifier? = nil
    /// Strict-Transport-Security for the current exchange (TLS hosts whose Ingress asks for it).
    private var hstsLine: [UInt8]? = nil
    private var hostPolicyMemo = HostPolicyMemo()

    // MARK: Accounting

    private var record = ExchangeRecord()
    /// The status the client is getting (upstream's or the proxy's own).
    private var responseStatus = 0
    /// Present when the access log is on.
    private var logFields: AccessLogFields? = nil
    /// The access log is on (fixed for the connection's life).
    private let logging: Bool

    init(loop: EventLoopContext, tls: Bool = false) {
        self.loop = loop
        self.inbound = loop.emptyBuffer
        self.settings = loop.settings
        self.tls = tls
        self.parser = HTTP1Parser(kind: .request, limits: loop.settings.requestLimits)
        self.client = ClientInfo.placeholder(tls: tls)
        self.output = WriteGatherer(buffers: loop.buffers)
        logging = loop.accessLog != nil
        if logging { logFields = AccessLogFields() }
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientWritable = context.channel.isWritable
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The handler and its context hold each other, and NIO does not break that: without
        // this, every closed connection kept its handler, context and pipeline for good.
        // Nothing reaches `context` afterwards: the phase is `.closing` (the timeout sweep and
        // connect callbacks check it) and the upstream dropped this delegate when it was closed.
        self.context = nil
        socket?.readDirectly(to: nil)
        socket = nil
    }

    /// Called by the code that built the pipeline with this handler first: nothing sits between
    /// it and `channel`'s socket (see `SocketChannel.writeDirect`).
    func outputDirectly(to channel: SocketChannel) {
        assert(context?.channel === channel, "not this handler's channel")
        socket = channel
        channel.readDirectly(to: self)
    }

    private func readClient() {
        if let socket { socket.readDirect() } else { context.read() }
    }

    func channelActive(context: ChannelHandlerContext) {
        client = ClientInfo(remote: context.channel.remoteAddress, local: loop.localParts(context.channel.localAddress), tls: tls)
        loop.registry.add(self)
        deadlines = ExchangeDeadlines(now: .now())
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A client gone before its response completed: 499, as nginx logs it.
        finishRecord(status: responseStarted ? responseStatus : 499)
        closeAttempts()
        loop.registry.remove(self)
        if let upstream {
            // The client is gone: the upstream exchange cannot complete cleanly.
            self.upstream = nil
            upstream.close()
        }
        phase = .closing
        inbound = loop.emptyBuffer
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        // Lingering reads whatever comes: a paused read would keep the client's bytes unread.
        if lingering || readGate.requestRead() { readClient() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received(unwrapInboundIn(data), context: context)
    }

    /// The client's bytes, from the pipeline or straight from the socket (`SocketChannelReader`).
    private func received(_ incoming: ByteBuffer, context: ChannelHandlerContext) {
        let time = NIODeadline.now()
        deadlines.clientBytes(at: time)
        loop.during(time) { arrived(incoming, context: context) }
    }

    private func arrived(_ incoming: ByteBuffer, context: ChannelHandlerContext) {
        switch phase {
        case .tunnel:
            upstream?.write(incoming)
            needsUpstreamFlush = true
            return
        case .closing:
            closer?.inputArrived(now: loop.now)
            return
        default:
            break
        }
        inbound.receive(incoming)
        if exchangeID == 0 && !tls && !prefaceChecked && inbound.readableBytes >= 4 {
            prefaceChecked = true
            if startsWithHTTP2Preface(inbound) {
                let initial = inbound
                inbound = loop.emptyBuffer
                switchToHTTP2(context: context, initial: initial)
                return
            }
        }
        process()
    }

    // MARK: - Accounting

    private func finishRecord(status: Int) {
        guard record.open else { return }
        loop.finish(&record, status: status, fields: &logFields, client: client.ip)
    }

    /// Copies what the log line needs while the head's bytes are still in the receive buffer.
    private func captureLogFields(_ head: HTTP1Head) {
        logFields!.reset()
        logFields!.proto = head.isHTTP11OrLater ? "HTTP/1.1" : "HTTP/1.0"
        inbound.withUnsafeReadableBytes { p in
            func r(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: p[range]) }
            logFields!.method = logFields!.keep(r(head.methodRange))
            if let host = head.targetAuthority ?? head.hostField.map({ head.fields[$0].value }) {
                logFields!.host = logFields!.keep(r(host))
            }
            logFields!.path = logFields!.keep(r(head.targetForm == .absolute ? head.targetPathAndQuery : head.target))
            let combined = loop.accessLog?.writer.format == .combined
            for f in head.fields {
                if f.known == .xRequestID {
                    logFields!.requestID = logFields!.keep(r(f.value))
                } else if combined && f.known == .other {
                    let n = r(f.name)
                    if n.count == 10 && Self.equalsLowercased(n, "user-agent") { logFields!.userAgent = logFields!.keep(r(f.value)) }
                    if n.count == 7 && Self.equalsLowercased(n, "referer") { logFields!.referer = logFields!.keep(r(f.value)) }
                }
            }
        }
    }

    static func equalsLowercased(_ p: UnsafeRawBufferPointer, _ lit: StaticString) -> Bool {
        guard p.count == lit.utf8CodeUnitCount else { return false }
        let l = lit.utf8Start
        for i in 0..<p.count where (p[i] | 0x20) != l[i] { return false }
        return true
    }

    // MARK: - HTTP/2

    /// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", as far as it has arrived (nghttp2 checks the rest).
    private func startsWithHTTP2Preface(_ b: ByteBuffer) -> Bool {
        let preface: StaticString = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        return b.withUnsafeReadableBytes { p in
            let n = min(p.count, preface.utf8CodeUnitCount)
            for k in 0..<n where p[k] != preface.utf8Start[k] { return false }
            return true
        }
    }

    /// Hands the connection to an HTTP/2 handler (ALPN chose h2, or a plain connection opened
    /// with the h2 preface) and leaves the pipeline.
    private func switchToHTTP2(context: ChannelHandlerContext, initial: ByteBuffer?) {
        loop.registry.remove(self)
        phase = .closing
        let connection = HTTP2ProxyConnection(loop: loop, tls: tls, sniCertificate: sniCertificate)
        let buffers = loop.buffers
        let handler = HTTP2ServerHandler(limits: settings.http2, delegate: connection, initial: initial, memory: loop.http2Memory,
                                         takeBuffer: { buffers.take(minimumCapacity: $0) }, giveBuffer: { buffers.give($0) })
        do {
            try context.pipeline.syncOperations.addHandler(handler, position: .after(self))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        // Not passed on: this handler is the last of its pipeline, and the tail does nothing
        // with it (one pipeline hop less per read).
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        clientWritable = context.channel.isWritable
        deadlines.clientWritability(clientWritable, at: loop.now)
        upstream?.setReadPaused(!clientWritable)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Resets and I/O errors: the connection is over.
        forceClose()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSHandshakeFailed {
            if settings.metricsEnabled { loop.metrics.tlsHandshake(failed: true) }
            return
        }
        if let done = event as? TLSHandshakeCompleted {
            if settings.metricsEnabled { loop.metrics.tlsHandshake(failed: false, resumed: done.resumed) }
            sniCertificate = done.certificate
            if done.alpn == "h2" { switchToHTTP2(context: context, initial: nil) }
            return
        }
        if let e = event as? ChannelEvent, e == .inputClosed {
            // Half-closed by the client: answer what it already sent, then close.
            clientInputClosed = true
            switch phase {
            case .awaitingHead:
                process()
                flushIfNeeded()
            case .forwardingBody where !requestDone:
                if responseStarted {
                    // The body can never complete, but the upstream is answering already (an
                    // answer that came before the body): let the answer finish, then close.
                    // The upstream connection is not reused (`finishExchange`: the request
                    // never ended), and the client's idle and send timeouts still bound the wait.
                    closeAfterResponse = true
                } else {
                    // The body can never complete.
                    forceClose()
                }
            case .closing where closer != nil:
                // The client has closed its side: nothing more will come. (Over TLS the TLS
                // handler lingers, and takes this event itself.)
                if closer!.peerClosedInput() == .close { context.close(promise: nil) }
            default:
                break
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: - Requests

    private func process() {
        // Events can arrive while the loop below runs (a write failing synchronously); the
        // outer loop picks up whatever phase they leave behind.
        if inProcess { return }
        inProcess = true
        defer { inProcess = false }
        while true {
            switch phase {
            case .awaitingHead:
                let event = inbound.withUnsafeReadableBytes { parser.parse($0) }
                switch event {
                case .needMore(let consumed):
                    inbound.moveReaderIndex(forwardBy: consumed)
                    if clientInputClosed {
                        closeAfterFlush()
                        return
                    }
                    if inbound.readableBytes > 0 {
                        if deadlines.stage == .idle { deadlines.enter(.readingHead, at: loop.now) }
                    } else if inbound.capacity > 1 {  // 1: already the loop's empty buffer
                        // Between requests: let go of the last read's storage (a few KiB that an
                        // idle keep-alive connection would otherwise hold).
                        inbound = loop.emptyBuffer
                    }
                    return
                case .head(let consumed):
                    startExchange(headLength: consumed)
                case .error(let e):
                    respondLocal(status: e.status, detail: "\(e.reason)", close: true)
                    return
                case .body, .end:
                    respondLocal(status: 400, detail: "unexpected request state", close: true)
                    return
                }
            case .forwardingBody:
                let event = inbound.withUnsafeReadableBytes { parser.parse($0) }
                switch event {
                case .needMore(let consumed):
                    inbound.moveReaderIndex(forwardBy: consumed)
                    if clientInputClosed {
                        // The client half-closed inside its body (it arrived while we were still
                        // connecting): the body can never complete.
                        forceClose()
                        return
                    }
                    // Body bytes that came while the upstream connection was being opened were
                    // held like pipelined requests, and past the bound reading stopped. They
                    // have gone upstream now and the rest of the body is wanted: read again
                    // (nothing else would resume the client, whose body then never came).
                    if readGate.resumePipeline() { readClient() }
                    return
                case .body(let range, let consumed):
                    let slice = inbound.getSlice(at: inbound.readerIndex + range.lowerBound, length: range.count)!
                    inbound.moveReaderIndex(forwardBy: consumed)
                    forwardRequestBody(slice)
                case .end(let trailers, let consumed):
                    if requestFraming == .chunked, let upstream {
                        var last = context.channel.allocator.buffer(capacity: 5 + trailers.count)
                        last.writeStaticString("0\r\n")
                        if !trailers.isEmpty {
                            _ = inbound.withUnsafeReadableBytes { p in last.writeBytes(UnsafeRawBufferPointer(rebasing: p[trailers])) }
                        }
                        last.writeStaticString("\r\n")
                        upstream.write(last)
                    }
                    inbound.moveReaderIndex(forwardBy: consumed)
                    requestDone = true
                    // A request without a body went out whole with `writeAndFlush` in `attach`;
                    // flushing again cost NIO a pass through the pipeline for nothing.
                    if let upstream, requestFraming != .none {
                        upstream.flush()
                        needsUpstreamFlush = false
                    }
                    setPhase(.requestComplete)
                case .error(let e):
                    // The body broke its own framing: nothing more from this client can be trusted.
                    if let upstream {
                        self.upstream = nil
                        upstream.close()
                    }
                    if responseStarted {
                        forceClose()
                    } else {
                        respondLocal(status: e.status, detail: "\(e.reason)", close: true)
                    }
                    return
                case .head:
                    respondLocal(status: 400, detail: "unexpected request state", close: true)
                    return
                }
            case .connecting, .requestComplete:
                // Bytes here are the next (pipelined) request; they wait, within a bound.
                if inbound.readableBytes > settings.maxBufferedPipelineBytes {
                    readGate.pauseForPipeline()
                } else if inbound.readableBytes == 0 && inbound.capacity > 1 {  // 1: the loop's empty buffer
                    // Nothing waits: let go of the read's storage while the response comes. Held,
                    // it kept the TLS handler from writing over its plaintext buffer (one
                    // allocation per HTTPS request) and NIO's receive buffer from its pool.
                    inbound = loop.emptyBuffer
                }
                return
            case .tunnel:
                if inbound.readableBytes > 0, let upstream {
                    upstream.write(inbound)
                    upstream.flush()
                    inbound = loop.emptyBuffer
                }
                return
            case .closing:
                return
            }
        }
    }

    private func setPhase(_ p: Phase) {
        phase = p
        let stage: ExchangeDeadlines.Stage
        switch p {
        case .awaitingHead: stage = .idle
        case .connecting: stage = .connecting
        case .forwardingBody: stage = .sendingRequest
        case .requestComplete: stage = .awaitingResponse
        case .tunnel: stage = .tunnel
        case .closing: stage = .unbounded
        }
        deadlines.enter(stage, at: loop.now)
    }

    private func startExchange(headLength: Int) {
        let head = parser.head
        exchangeID &+= 1
        deadlines.requestStarted()
        record.begin(now: loop.now, bytesIn: headLength)
        responseStatus = 0
        if logging { captureLogFields(head) }
        method = head.method
        clientHTTP11 = head.isHTTP11OrLater
        clientKeepAlive = !head.wantsClose
        requestFraming = head.framing
        expectsContinue = head.expectsContinue && head.framing != .none
        upgradeRequested = head.hasUpgrade && head.connectionUpgrade && clientHTTP11
        requestDone = false
        responseStarted = false
        responseChunked = false
        bodyBytesSent = false
        retried = false
        informationalInProgress = false
        continueSent = false
        extraResponseLines = nil
        closeAfterResponse = draining || !clientKeepAlive

        if method == .connect {
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 405, detail: "CONNECT is not served by this proxy", close: true)
            return
        }
        if head.targetForm == .asterisk {
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 400, detail: "asterisk-form target is not proxied", close: requestFraming != .none)
            return
        }
        let held = loop.snapshot
        // One reference to the receive buffer for the head's bytes, taken once: each
        // `inbound.withUnsafeReadableBytes` below retained and released its storage (`inbound` is
        // a stored property the closure could change). Nothing appends to `inbound` before
        // this returns, so the shared storage is never copied.
        let view = inbound
        if let status = held.read({ checkTLSPolicy($0, head: head, headLength: headLength, view: view) }) {
            _ = status
            return
        }
        let decision = view.withUnsafeReadableBytes { p -> ConfigSnapshot.Decision? in
            let hostRange = head.targetAuthority ?? head.hostField.map { head.fields[$0].value } ?? 0..<0
            let target = head.targetForm == .absolute ? head.targetPathAndQuery : head.target
            return held.read {
                loop.route($0, host: UnsafeRawBufferPointer(rebasing: p[hostRange]), target: UnsafeRawBufferPointer(rebasing: p[target]))
            }
        }
        let pool: Unmanaged<BackendPool>
        switch decision {
        case .forward(let p, let stat)?:
            pool = p
            record.stat = stat
        case .unavailable(let why, let stat)?:
            record.stat = stat
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 503, detail: why, close: requestFraming != .none)
            return
        case .noRoute?:
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 404, detail: "no route for this host and path", close: requestFraming != .none)
            return
        case nil:
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 400, detail: "the path climbs above the root or is too long", close: true)
            return
        }
        let policy = pool._withUnsafeGuaranteedRef { $0.policy }
        bodyLimit = policy.maxBodySize ?? settings.maxBodySize
        if let limit = bodyLimit, case .contentLength(let n) = requestFraming, n > limit {
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 413, detail: "the body (\(n) bytes) is larger than \(limit) bytes", close: true)
            return
        }
        bodyBytesForwarded = 0
        var hashKey: UInt64 = 0
        var affinityPreferred: Int? = nil
        if policy.balance == .consistentHash || policy.affinityCookie != nil {
            view.withUnsafeReadableBytes { p in
                let fields: RequestKeys.Fields = { visit in
                    for f in head.fields where !visit(UnsafeRawBufferPointer(rebasing: p[f.name]), UnsafeRawBufferPointer(rebasing: p[f.value])) { break }
                }
                hashKey = RequestKeys.hash(policy, clientIP: client.ip, fields: fields)
                if let name = policy.affinityCookie {
                    if let v = RequestKeys.cookie(name, in: fields) { affinityPreferred = RequestKeys.affinityTarget(pool: pool.takeUnretainedValue(), cookieValue: v) }
                }
            }
        }
        let forwardFraming: HTTP1BodyFraming
        switch requestFraming {
        case .chunked: forwardFraming = .chunked
        case .contentLength(let n): forwardFraming = .contentLength(n)
        case .none, .closeDelimited: forwardFraming = .none
        }
        var out = loop.buffers.take(minimumCapacity: head.headLength + 320)
        view.withUnsafeReadableBytes { p in
            ForwardedHeads.writeRequestHead(
                into: &out, head: head, bytes: p, client: client, framing: forwardFraming,
                upgrade: upgradeRequested, ids: &loop.ids)
        }
        if logging && logFields!.requestID.isEmpty { logFields!.requestID = logFields!.keepHex(loop.ids.last) }
        inbound.moveReaderIndex(forwardBy: headLength)
        requestHead = out
        endpointIndex = -1
        tries.begin(pool, of: held, hash: hashKey, preferred: affinityPreferred, loop: loop)
        startAttempt()
    }

    // MARK: - Attempts

    /// Chooses an endpoint (skipping those already tried) and sends the request to it.
    private func startAttempt() {
        guard tries.hasPool else { return }
        switch tries.next(loop: loop) {
        case .unavailable(let why):
            if let lastFailure = tries.lastFailure {
                respondUpstreamFailure(lastFailure)
            } else {
                respondLocal(status: 503, detail: why, close: requestFraming != .none)
            }
        case .endpoint(let i):
            endpointIndex = i
            let idle = tries.withPool { pool in
                if logging { record.endpoint = pool.endpoints[i] }  // only the access log reads it
                record.endpointID = pool.endpointIDs[i]
                return loop.upstreams.acquire(from: pool, i)
            } ?? nil
            extraResponseLines = tries.affinityCookie.map { Array("set-cookie: \($0)\r\n".utf8) }
            if let idle {
                attach(idle, reused: true)
            } else if let open = tries.waitForConnection(loop: loop) {
                respondLocal(status: 503, detail: open, close: requestFraming != .none)
            } else if let pool = backend {
                connect(to: pool.endpoints[i])
            }
        }
    }

    private func endAttempt(_ outcome: AttemptOutcome) {
        tries.end(outcome, loop: loop)
    }

    /// After a failed attempt: another endpoint, when `UpstreamAttempts` allows it and nothing of
    /// the request body or the response has passed yet.
    private func retry(after error: UpstreamError, replayable: Bool) -> Bool {
        guard requestHead != nil, !bodyBytesSent, !responseStarted,
              tries.retry(after: error, replayable: replayable, idempotent: method.isIdempotent, loop: loop) else { return false }
        retried = true
        record.retried = true
        record.upstreamFailed = false
        startAttempt()
        return true
    }

    /// The exchange is over: release what it held on the loop.
    private func closeAttempts() {
        tries.close(loop: loop)
    }

    /// 421 when a TLS request's Host belongs to another certificate than SNI chose; 308 to https
    /// for a plain request to a host with TLS. Returns non-nil when it answered the request.
    private func checkTLSPolicy(_ snapshot: ConfigSnapshot, head: HTTP1Head, headLength: Int, view: ByteBuffer) -> Int? {
        let policy = view.withUnsafeReadableBytes { p -> EventLoopContext.HostPolicy in
            let hostRange = head.targetAuthority ?? head.hostField.map { head.fields[$0].value } ?? 0..<0
            let t = head.targetForm == .absolute ? head.targetPathAndQuery : head.target
            return loop.hostPolicy(snapshot, tls: tls, sni: sniCertificate,
                                   host: UnsafeRawBufferPointer(rebasing: p[hostRange]), target: UnsafeRawBufferPointer(rebasing: p[t]),
                                   memo: &hostPolicyMemo)
        }
        switch policy {
        case .proceed(let hsts):
            hstsLine = hsts
            return nil
        case .misdirected(let host):
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 421, detail: "host \(host) is served by another certificate than the TLS server name chose", close: requestFraming != .none)
            return 421
        case .redirect(let location):
            inbound.moveReaderIndex(forwardBy: headLength)
            respondLocal(status: 308, detail: "this host is served over https: \(location)", close: requestFraming != .none,
                         extraFields: "location: \(location)\r\n")
            return 308
        }
    }

    private func connect(to endpoint: Endpoint) {
        setPhase(.connecting)
        let id = exchangeID
        let attempt = tries.count
        loop.upstreams.connect(endpoint, timeout: tries.connectTimeout).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let conn):
                guard self.phase == .connecting, self.exchangeID == id, self.tries.count == attempt else {
                    self.loop.upstreams.release(conn)
                    return
                }
                self.tries.connected()
                self.attach(conn, reused: false)
                self.process()
                self.flushIfNeeded()
            case .failure(let error):
                guard self.phase == .connecting, self.exchangeID == id, self.tries.count == attempt else { return }
                let failure: UpstreamError
                if let ce = error as? ChannelError, case .connectTimeout = ce {
                    failure = .connectTimeout
                } else {
                    failure = .connectFailed("\(error)")
                }
                self.record.upstreamFailed = true
                self.endAttempt(.gatewayFailure)
                self.loop.logger.info("upstream connect failed", metadata: ["upstream": "\(endpoint)", "reason": "\(failure)"])
                if self.retry(after: failure, replayable: true) {
                    self.flushIfNeeded()
                    return
                }
                self.respondUpstreamFailure(failure)
                self.flushIfNeeded()
            }
        }
    }

    private func attach(_ conn: UpstreamConnection, reused: Bool) {
        let now = loop.now
        if record.upstreamStart == nil { record.upstreamStart = now }
        upstream = conn
        upstreamReused = reused
        conn.attach(self, requestIsHead: method == .head, now: now)
        setPhase(.forwardingBody)
        if requestFraming == .none {
            if let requestHead { conn.writeAndFlush(requestHead) } else { conn.flush() }
        } else {
            if let requestHead { conn.write(requestHead) }
            needsUpstreamFlush = true
            if expectsContinue && !continueSent {
                continueSent = true
                // Our own 100 Continue (Expect is not forwarded): the client may send the body now.
                gather(capacity: 25) { $0.writeStaticString(LocalResponse.continue100) }
                flushClient()
            }
        }
        conn.setReadPaused(!clientWritable)
        updateReadPause(upstreamWritable: conn.isWritable)
    }

    private func forwardRequestBody(_ slice: ByteBuffer) {
        guard let upstream, slice.readableBytes > 0 else { return }
        bodyBytesForwarded += Int64(slice.readableBytes)
        if let limit = bodyLimit, bodyBytesForwarded > limit {
            // A chunked body grew past the limit: the upstream never sees its end.
            self.upstream = nil
            upstream.close()
            endAttempt(.abandoned)
            if responseStarted {
                forceClose()
            } else {
                respondLocal(status: 413, detail: "the body is larger than \(limit) bytes", close: true)
            }
            return
        }
        record.bytesIn += slice.readableBytes
        bodyBytesSent = true
        dropRequestHead()
        if requestFraming == .chunked {
            var h = context.channel.allocator.buffer(capacity: 18)
            ForwardedHeads.writeChunkHeader(&h, size: slice.readableBytes)
            upstream.write(h)
            upstream.write(slice)
            var crlf = context.channel.allocator.buffer(capacity: 2)
            crlf.writeStaticString("\r\n")
            upstream.write(crlf)
        } else {
            upstream.write(slice)
        }
        needsUpstreamFlush = true
    }

    // MARK: - Upstream events

    func upstreamResponseHead(_ head: HTTP1Head, buffer: ByteBuffer) {
        loop.during(upstreamEventTime) { responseHead(head, buffer: buffer) }
    }

    /// The upstream connection's callbacks come from its read (or its end): that event's time.
    private var upstreamEventTime: NIODeadline { upstream?.lastUpstreamActivity ?? .now() }

    private func responseHead(_ head: HTTP1Head, buffer: ByteBuffer) {
        if head.isInformational {
            informationalInProgress = true
            if head.status == 101 {
                guard upgradeRequested else {
                    upstreamFailed(.invalidResponse(HTTP1ParseError(.malformed, "101 without an upgrade request")))
                    return
                }
                writeResponseHead(head, buffer: buffer, keepCL: false, chunked: false, connection: .upgrade)
                responseStarted = true
                record.upstreamStatus = 101
                finishRecord(status: 101)
                dropRequestHead()
                setPhase(.tunnel)
                flushClient()
                upstream?.enterTunnel()
                process()
                return
            }
            if head.status == 100 || !clientHTTP11 { return }
            writeResponseHead(head, buffer: buffer, keepCL: false, chunked: false, connection: .none)
            needsFlush = true
            return
        }
        informationalInProgress = false
        if (head.status == 502 || head.status == 503 || head.status == 504), let conn = upstream, requestHead != nil, !bodyBytesSent,
           requestDone, tries.mayRetry(replayable: false, idempotent: method.isIdempotent, loop: loop) {
            // The upstream's own gateway error, and the policy (and the loop's retry budget)
            // allows another endpoint: this response is dropped (its connection closed) and the
            // request goes elsewhere. Decided before closing: once the connection is closed, the
            // rest of this response can no longer be relayed.
            upstream = nil
            conn.close()
            endAttempt(.serverError)
            record.upstreamStatus = head.status
            if !retry(after: .gatewayStatus(head.status), replayable: false) {
                respondUpstreamFailure(.gatewayStatus(head.status))
            }
            return
        }
        dropRequestHead()
        record.upstreamStatus = head.status
        record.upstreamDone(now: loop.now)
        responseStatus = head.status
        let framing = ResponseFraming(upstream: head.framing, headRequest: method == .head, clientHTTP11: clientHTTP11,
                                      requestDone: requestDone, closeRequested: closeAfterResponse)
        closeAfterResponse = framing.close
        responseChunked = framing.chunked
        responseStarted = true
        writeResponseHead(head, buffer: buffer, keepCL: framing.keepContentLength, chunked: framing.chunked, connection: framing.directive)
        needsFlush = true
    }

    private func writeResponseHead(_ head: HTTP1Head, buffer: ByteBuffer, keepCL: Bool, chunked: Bool, connection: ConnectionDirective) {
        // Room for a body short enough to be gathered behind the head.
        var room = head.headLength + 64
        if case .contentLength(let n) = head.framing, n <= WriteGatherer.pieceLimit { room += Int(n) }
        let extra = head.isInformational ? nil : responseExtra
        let before = output.gatheredBytes
        gather(capacity: room) { out in
            buffer.withUnsafeReadableBytes { p in
                ForwardedHeads.writeResponseHead(into: &out, head: head, bytes: p, keepContentLength: keepCL, chunked: chunked,
                                                 connection: connection, extra: extra)
            }
        }
        record.bytesOut += output.gatheredBytes - before
    }

    // MARK: - Output to the client

    private var output: WriteGatherer

    private func gather(capacity: Int, _ write: (inout ByteBuffer) -> Void) {
        output.gather(capacity: capacity, write)
    }

    /// Writes `buffer` to the client after what is gathered; a small one joins it instead.
    private func send(_ buffer: ByteBuffer) {
        if output.join(buffer) { return }
        writeGathered()
        if let socket { socket.writeDirect(buffer) } else { context.write(wrapOutboundOut(buffer), promise: nil) }
    }

    private func writeGathered() {
        if let out = output.take() {
            if let socket { socket.writeDirect(out) } else { context.write(wrapOutboundOut(out), promise: nil) }
            output.written(out)
        }
    }

    private func flushClient() {
        if let out = output.take() {
            if let socket {
                socket.writeDirect(out)
                socket.flushDirect()
            } else {
                context.writeAndFlush(wrapOutboundOut(out), promise: nil)  // one pass down the pipeline, not two
            }
            output.written(out)
        } else if let socket {
            socket.flushDirect()
        } else {
            context.flush()
        }
    }

    // MARK: - Head buffers

    /// The request head is no longer needed for a retry: its buffer, sent long ago, goes back to
    /// the loop's pool. (Given back when written, it would be shared until now, and every
    /// connection that took it meanwhile would have had to allocate.)
    private func dropRequestHead() {
        if let head = requestHead.take() { loop.buffers.give(head) }
    }

    /// The proxy's own response lines: HSTS and the affinity cookie.
    private var responseExtra: [UInt8]? {
        switch (hstsLine, extraResponseLines) {
        case (nil, nil): return nil
        case (let h?, nil): return h
        case (nil, let e?): return e
        case (let h?, let e?): return h + e
        }
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        record.bytesOut += body.readableBytes
        if responseChunked {
            gather(capacity: 20 + min(body.readableBytes, WriteGatherer.pieceLimit)) { ForwardedHeads.writeChunkHeader(&$0, size: body.readableBytes) }
            send(body)
            gather(capacity: 2) { $0.writeStaticString("\r\n") }
        } else {
            send(body)
        }
        needsFlush = true
    }

    func upstreamResponseEnd(trailers: ByteBuffer?) {
        loop.during(upstreamEventTime) { responseEnd(trailers: trailers) }
    }

    private func responseEnd(trailers: ByteBuffer?) {
        if informationalInProgress {
            informationalInProgress = false
            return
        }
        if responseChunked {
            gather(capacity: 5 + (trailers?.readableBytes ?? 0)) { last in
                last.writeStaticString("0\r\n")
                if var t = trailers { last.writeBuffer(&t) }
                last.writeStaticString("\r\n")
            }
        }
        needsFlush = true
        endAttempt(responseStatus >= 500 ? .serverError : .success)
        finishRecord(status: responseStatus)
        finishExchange()
    }

    func upstreamTunnelData(_ data: ByteBuffer) {
        send(data)
        needsFlush = true
    }

    func upstreamReadComplete() {
        flushIfNeeded()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        deadlines.upstreamWritability(isWritable, at: loop.now)
        updateReadPause(upstreamWritable: isWritable)
    }

    func upstreamFailed(_ error: UpstreamError) {
        if phase == .tunnel {
            upstream = nil
            closeAfterFlush()
            return
        }
        guard let conn = upstream else { return }
        upstream = nil
        conn.close()
        record.upstreamFailed = true
        endAttempt(.gatewayFailure)
        if responseStarted {
            // A truncated response must not look complete: close without ending it.
            loop.logger.warning("response truncated", metadata: ["reason": "\(error)", "upstream": "\(conn.endpoint)"])
            forceClose()
            return
        }
        if case .closedBeforeResponse = error, method.isIdempotent {
            // Closed or reset before any response byte (the keep-alive race, or a backend that
            // died): safe to replay on another endpoint when the method is idempotent.
            if retry(after: error, replayable: true) { return }
        }
        respondUpstreamFailure(error)
    }

    private func respondUpstreamFailure(_ error: UpstreamError) {
        upstream?.close()
        upstream = nil
        record.upstreamFailed = true
        loop.logger.warning("upstream failure", metadata: [
            "status": "\(error.status)", "reason": "\(error)", "upstream": "\(endpoint?.description ?? "-")",
        ])
        respondLocal(status: error.status, detail: error.description, close: false, logged: true)
    }

    // MARK: - Ending exchanges

    private func finishExchange() {
        closeAttempts()
        if let conn = upstream {
            upstream = nil
            if requestDone { loop.upstreams.release(conn, now: loop.now) } else { conn.close() }
        }
        dropRequestHead()
        if closeAfterResponse {
            closeAfterFlush()
            return
        }
        setPhase(.awaitingHead)
        if readGate.resumePipeline() { readClient() }
        // A client that half-closed is answered, then closed, once nothing of it is left.
        if inbound.readableBytes > 0 || clientInputClosed { process() }
        flushIfNeeded()
    }

    /// Answers the current request from the proxy itself. The connection stays open only when
    /// the request's framing is certain and no body of it is left unread.
    private func respondLocal(status: Int, detail: String, close: Bool, logged: Bool = false, extraFields: String = "") {
        if !logged {
            let meta: Logger.Metadata = ["status": "\(status)", "reason": "\(detail)", "client": "\(String(decoding: client.ip, as: UTF8.self))"]
            if status >= 500 {
                loop.logger.warning("request failed", metadata: meta)
            } else {
                loop.logger.info("request refused", metadata: meta)
            }
        }
        let closing = close || closeAfterResponse || draining || (!requestDone && requestFraming != .none)
        let buf = LocalResponse.make(status: status, detail: detail, close: closing, headRequest: method == .head,
                                     server: settings.serverName, extraFields: extraFields, allocator: context.channel.allocator)
        if !record.open {
            // Refused before a head was complete (a parse error): still one request to count.
            record.begin(now: deadlines.stage == .readingHead ? deadlines.stageSince : loop.now, bytesIn: 0)
            logFields?.reset()
        }
        record.bytesOut += buf.readableBytes
        finishRecord(status: status)
        closeAttempts()
        send(buf)
        needsFlush = true
        dropRequestHead()
        if let upstream {
            self.upstream = nil
            upstream.close()
        }
        if closing {
            closeAfterFlush()
            return
        }
        if !requestDone {
            // The body-less request's end is still in the parser.
            let event = inbound.withUnsafeReadableBytes { parser.parse($0) }
            guard case .end(_, let consumed) = event else {
                closeAfterFlush()
                return
            }
            inbound.moveReaderIndex(forwardBy: consumed)
        }
        setPhase(.awaitingHead)
        if readGate.resumePipeline() { readClient() }
        process()
        flushIfNeeded()
    }

    private func closeAfterFlush() {
        guard !closeScheduled else { return }
        closeScheduled = true
        // The client may still be sending: a body the answer came before (the upstream's or our
        // own 413), or requests pipelined after this one. A close with its bytes unread would
        // reset the connection and could destroy the answer before the client reads it (RFC 9112
        // §9.6): shut the write side instead, drop what arrives, and close when the client does
        // or after a few seconds. Not for a head that never completed (a 408 or a 400): that
        // client gets no more time than the timeout already gave it.
        let bodyInFlight = requestFraming != .none && !requestDone
        let linger = !clientInputClosed && (bodyInFlight || phase != .awaitingHead && inbound.readableBytes > 0)
        if let upstream {
            self.upstream = nil
            upstream.close()
        }
        phase = .closing
        needsFlush = false
        writeGathered()
        let ctx = context!
        closeProgress = SendProgress(now: loop.now)
        if linger {
            lingering = true
            ctx.read()  // reading may have been paused for backpressure
        }
        if tls {
            // The response's last bytes and close_notify in one write, not one each.
            ctx.triggerUserOutboundEvent(TLSCloseAfterFlush(linger: linger, lingerTimeout: Self.lingerTimeout, lingerTime: Self.lingerTime), promise: nil)
        } else {
            closer = LingeringClose(linger: linger, timeout: Self.lingerTimeout, maxTime: Self.lingerTime)
            ctx.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { result in
                self.closer!.lastWriteDone(succeeded: (try? result.get()) != nil, now: .now())
                    .carryOut(on: ctx) { self.closer!.deadlineReached(now: .now()) }
            }
        }
    }

    private var closeProgress: SendProgress? = nil
    /// Closing, with the client's input read and dropped until it closes (see `closeAfterFlush`).
    private var lingering = false
    /// The lingering close of a plain connection (over TLS the TLS handler runs it).
    private var closer: LingeringClose?
    /// nginx's `lingering_timeout`: a lingering client that sends nothing for this long is closed.
    static let lingerTimeout = TimeAmount.seconds(5)
    /// nginx's `lingering_time`: the most a lingering close waits, however the client sends.
    static let lingerTime = TimeAmount.seconds(30)

    private func checkClosing(now: NIODeadline) {
        guard closeProgress != nil, let ctx = context else { return }
        let buffered = clientBacklog
        guard closeProgress!.stalled(buffered: buffered, at: now, timeout: settings.clientSendTimeout) else { return }
        closeProgress = nil
        loop.logger.info("client took none of the response's end in time; closing", metadata: [
            "client": "\(String(decoding: client.ip, as: UTF8.self))", "unsent": "\(buffered)"])
        ctx.close(promise: nil)
    }

    func forceClose() {
        finishRecord(status: responseStarted ? responseStatus : 499)
        closeAttempts()
        if let upstream {
            self.upstream = nil
            upstream.close()
        }
        phase = .closing
        context?.close(promise: nil)
    }

    func beginDrain() {
        draining = true
        if phase == .awaitingHead && inbound.readableBytes == 0 {
            closeAfterFlush()
        } else {
            closeAfterResponse = true
        }
    }

    /// Flushes what was written for the client, and for the upstream too: outside a client read
    /// (an upstream connection that just opened, an upstream event) no `channelReadComplete`
    /// follows to flush the request bytes written meanwhile.
    private func flushIfNeeded() {
        if needsUpstreamFlush {
            needsUpstreamFlush = false
            upstream?.flush()
        }
        if needsFlush {
            needsFlush = false
            flushClient()
        }
    }

    // MARK: - Backpressure

    private func updateReadPause(upstreamWritable: Bool) {
        if readGate.upstream(writable: upstreamWritable, forwarding: phase == .forwardingBody || phase == .tunnel) {
            readClient()
        }
    }

    // MARK: - Timeouts

    /// Called by the loop's timeout sweep (`ConnectionRegistry`), for registered connections only.
    func checkTimeouts(now: NIODeadline) {
        guard context != nil else { return }
        if phase == .closing {
            checkClosing(now: now)
            return
        }
        if deadlines.clientBlockedSince != nil {
            deadlines.clientBacklog(clientBacklog, at: now)
        }
        let limits = ExchangeDeadlines.Limits(
            head: settings.headTimeout, keepAlive: settings.keepAliveTimeout, clientBody: settings.clientBodyTimeout,
            upstreamRead: readTimeout, upstreamSend: tries.sendTimeout ?? settings.upstreamReadTimeout,
            clientSend: settings.clientSendTimeout)
        switch deadlines.expired(at: now, upstreamActivity: upstream?.lastUpstreamActivity, requestDone: requestDone, limits: limits) {
        case nil:
            break
        case .idleConnection?:
            forceClose()
        case .head?:
            respondLocal(status: 408, detail: "request head not received in time", close: true)
        case .clientBody?:
            loop.logger.info("client body timeout", metadata: ["client": "\(String(decoding: client.ip, as: UTF8.self))"])
            if responseStarted { forceClose() } else { respondLocal(status: 408, detail: "request body not received in time", close: true) }
        case .upstreamSend?:
            loop.logger.info("upstream send timeout", metadata: ["upstream": "\(endpoint?.description ?? "-")"])
            upstreamTimedOut()
        case .upstreamRead?:
            upstreamTimedOut()
        case .tunnelIdle?:
            loop.logger.info("tunnel idle; closing", metadata: [
                "client": "\(String(decoding: client.ip, as: UTF8.self))", "upstream": "\(endpoint?.description ?? "-")"])
            forceClose()
        case .clientSend?:
            // The client stopped reading mid-response. Its upstream is not at fault: it was
            // paused for the client, and its attempt ends as abandoned, not failed.
            loop.logger.info("client took none of the response in time; closing", metadata: [
                "client": "\(String(decoding: client.ip, as: UTF8.self))", "unsent": "\(clientBacklog)"])
            forceClose()
        }
    }

    /// Response bytes NIO holds for the client's socket (ciphertext, under TLS).
    private var clientBacklog: Int {
        (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
    }

    private var readTimeout: TimeAmount { tries.readTimeout ?? settings.upstreamReadTimeout }

    private func upstreamTimedOut() {
        guard let conn = upstream else { return }
        upstream = nil
        conn.close()
        record.upstreamFailed = true
        endAttempt(.gatewayFailure)
        if !responseStarted && retry(after: .readTimeout, replayable: false) {
            flushIfNeeded()
            return
        }
        if responseStarted {
            loop.logger.warning("upstream timed out mid-response", metadata: ["upstream": "\(conn.endpoint)"])
            forceClose()
        } else {
            respondUpstreamFailure(.readTimeout)
        }
    }
}

// MARK: - Direct reads (plain HTTP: first in the pipeline)

extension ProxyConnectionHandler: SocketChannelReader {
    func socketChannelRead(_ buffer: ByteBuffer) {
        guard let context else { return }
        received(buffer, context: context)
    }

    func socketChannelReadComplete() {
        flushIfNeeded()
    }
}
