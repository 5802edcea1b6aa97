#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An incremental HTTP/1.1 parser for requests or responses (RFC 9112), strict by design.
///
/// The parser is a pure state machine over bytes. The caller keeps the bytes it has not yet been
/// told were consumed and presents them again, with whatever arrived since, on the next call: every
/// event says how many bytes from the front of the buffer it consumed. A head (and a trailer
/// section) is consumed only once it is complete, so its `HTTP1Head` offsets point into the buffer
/// of the call that returned `.head`; body bytes are handed out as ranges as soon as they arrive.
/// Nothing is copied and no per-field `String` is built.
public struct HTTP1Parser: Sendable {
    public enum Kind: Sendable { case request, response }

    public enum Event: Sendable, Equatable {
        /// More bytes are needed. `consumed` bytes (chunk framing) may be dropped; the rest must be
        /// presented again.
        case needMore(consumed: Int)
        /// A complete head is in `head`; `consumed` is its length.
        case head(consumed: Int)
        /// Body bytes at `range` of the buffer; `consumed` runs to the end of the range.
        case body(Range<Int>, consumed: Int)
        /// The message is complete. `trailers` holds the trailer field lines (CRLFs included,
        /// empty when there were none).
        case end(trailers: Range<Int>, consumed: Int)
        /// The message cannot be parsed; the connection must not be used for HTTP again.
        case error(HTTP1ParseError)
    }

    @usableFromInline
    enum State: Sendable {
        case head
        case noBody
        case contentLength(remaining: Int64)
        case chunkSize
        case chunkExtension
        case chunkSizeLF
        case chunkData(remaining: Int64)
        case chunkDataCR
        case chunkDataLF
        case trailers
        case closeDelimited
        /// After a message that asked to close the connection: nothing more may follow.
        case closed
        case failed(HTTP1ParseError)
    }

    @usableFromInline
    enum ChunkExtensionState: Sendable {
        case afterSemicolon, name, afterEquals, tokenValue, quotedValue, quotedEscape, afterQuoted
    }

    public let kind: Kind
    public var limits: HTTP1Limits {
        didSet { limits.maxHeadLength = min(limits.maxHeadLength, Self.maxOffset) }
    }
    /// The byte-class table, fetched once per parser: `ByteClass.pointer` is a lazy global, and
    /// reading it in every scanner cost a `swift_once` call per field line.
    @usableFromInline let classes = ByteClass.Table()
    /// The last head parsed. Valid until the next call to `parse`.
    public private(set) var head = HTTP1Head()

    /// Field offsets are kept as `Int32`: no head may be longer, whatever `limits` asks for
    /// (`limits.maxHeadLength` is held below it).
    @usableFromInline static let maxOffset = Int(Int32.max)

    @usableFromInline var state: State = .head
    // Line scanning (heads and trailers): offsets into the presented buffer.
    @usableFromInline var lineStart = 0
    @usableFromInline var scanFrom = 0
    @usableFromInline var sawStartLine = false
    @usableFromInline var trailerFieldCount = 0
    // Field facts gathered while scanning, folded into `head` at the end of the head.
    @usableFromInline var contentLength: Int64? = nil
    @usableFromInline var transferEncodingSeen = false
    @usableFromInline var chunkedSeen = false
    @usableFromInline var chunkedIsLast = false
    @usableFromInline var connectionClose = false
    @usableFromInline var connectionKeepAlive = false
    // Chunk size parsing.
    @usableFromInline var chunkValue: UInt64 = 0
    @usableFromInline var chunkDigits = 0
    @usableFromInline var chunkExt: ChunkExtensionState = .afterSemicolon
    /// Responses: the request this response answers was HEAD (no body whatever the fields say).
    public var responseToHead = false
    /// Responses: the request this response answers was CONNECT (a 2xx has no body; a tunnel follows).
    public var responseToConnect = false
    /// Requests: HTTP/1.1 requires exactly one valid Host (RFC 9112 §3.2). Only corpus tests that
    /// compare syntax with parsers that leave Host to the application turn this off.
    public var requireHost = true
    /// Bytes of an unfinished head seen in the last call, to tell a clean close from a truncated one.
    @usableFromInline var partialHeadBytes = 0

    public init(kind: Kind, limits: HTTP1Limits = .default) {
        self.kind = kind
        var limits = limits
        limits.maxHeadLength = min(limits.maxHeadLength, Self.maxOffset)
        self.limits = limits
    }

    /// Whether the parser sits between messages with nothing of the next one seen yet.
    public var isIdle: Bool {
        if case .head = state { return partialHeadBytes == 0 }
        return false
    }

    /// Forget any message in progress and start afresh (for a connection that is reused).
    public mutating func reset() {
        state = .head
        resetScan()
        partialHeadBytes = 0
        responseToHead = false
        responseToConnect = false
    }

    // MARK: - Entry points

    /// Parses from the front of `buffer`. Call again after acting on the event, with the bytes
    /// after `consumed` (and any that arrived since), until it answers `.needMore`.
    public mutating func parse(_ buffer: UnsafeRawBufferPointer) -> Event {
        switch state {
        case .head:
            return parseHead(buffer)
        case .noBody:
            finishMessage()
            return .end(trailers: 0..<0, consumed: 0)
        case .contentLength(let remaining):
            if buffer.count == 0 { return .needMore(consumed: 0) }
            let n = Int(min(Int64(buffer.count), remaining))
            if remaining - Int64(n) == 0 {
                state = .noBody
            } else {
                state = .contentLength(remaining: remaining - Int64(n))
            }
            return .body(0..<n, consumed: n)
        case .closeDelimited:
            if buffer.count == 0 { return .needMore(consumed: 0) }
            return .body(0..<buffer.count, consumed: buffer.count)
        case .chunkSize, .chunkExtension, .chunkSizeLF, .chunkData, .chunkDataCR, .chunkDataLF:
            return parseChunked(buffer)
        case .trailers:
            return parseTrailers(buffer)
        case .closed:
            if buffer.count == 0 { return .needMore(consumed: 0) }
            return fail(.malformed, "Data after `Connection: close`")
        case .failed(let e):
            return .error(e)
        }
    }

    /// The connection reached end of file. Returns `.end` when that completes a close-delimited
    /// body, `nil` at a clean message boundary, `.error(truncated)` otherwise.
    public mutating func finish() -> Event? {
        switch state {
        case .closeDelimited:
            finishMessage()
            return .end(trailers: 0..<0, consumed: 0)
        case .head:
            if partialHeadBytes == 0 { return nil }
            return fail(.truncated, "Connection closed inside a head")
        case .noBody:
            finishMessage()
            return .end(trailers: 0..<0, consumed: 0)
        case .closed:
            return nil
        case .failed(let e):
            return .error(e)
        default:
            return fail(.truncated, "Connection closed inside a body")
        }
    }

    @usableFromInline
    mutating func fail(_ kind: HTTP1ParseError.Kind, _ reason: StaticString) -> Event {
        let e = HTTP1ParseError(kind, reason)
        state = .failed(e)
        return .error(e)
    }

    mutating func resetScan() {
        lineStart = 0
        scanFrom = 0
        sawStartLine = false
        trailerFieldCount = 0
        contentLength = nil
        transferEncodingSeen = false
        chunkedSeen = false
        chunkedIsLast = false
        connectionClose = false
        connectionKeepAlive = false
    }

    mutating func finishMessage() {
        let closing = head.wantsClose && !(kind == .response && head.isInformational)
        state = closing ? .closed : .head
        resetScan()
        partialHeadBytes = 0
        if kind == .response && !head.isInformational {
            responseToHead = false
            responseToConnect = false
        }
    }

    // MARK: - Head

    mutating func parseHead(_ b: UnsafeRawBufferPointer) -> Event {
        if !sawStartLine && lineStart == 0 && scanFrom == 0 { head.reset() }
        let count = b.count
        partialHeadBytes = count
        guard let base = b.baseAddress else { return .needMore(consumed: 0) }
        while true {
            // Find the next LF from where the last search stopped.
            let searchFrom = max(scanFrom, lineStart)
            guard searchFrom < count,
                  let hit = memchr(base + searchFrom, 0x0A, count - searchFrom)
            else {
                // Refuse what can never become valid without waiting for the line to end.
                if let r = checkPartialLine(b, from: searchFrom) { return r }
                scanFrom = count
                let lineLength = count - lineStart
                if lineLength > limits.maxLineLength + 1 {
                    if !sawStartLine && kind == .request { return fail(.uriTooLong, "Request line too long") }
                    return fail(.headerFieldsTooLarge, "Header line too long")
                }
                if count > limits.maxHeadLength { return fail(.headerFieldsTooLarge, "Head too large") }
                return .needMore(consumed: 0)
            }
            let lf = UnsafeRawPointer(hit) - base
            scanFrom = lf + 1
            if lf == lineStart || b[lf - 1] != 0x0D {
                return fail(.malformed, "Bare LF line ending")
            }
            let end = lf - 1  // content excludes CRLF
            if end - lineStart > limits.maxLineLength {
                if !sawStartLine && kind == .request { return fail(.uriTooLong, "Request line too long") }
                return fail(.headerFieldsTooLarge, "Header line too long")
            }
            if lf + 1 > limits.maxHeadLength { return fail(.headerFieldsTooLarge, "Head too large") }

            if !sawStartLine {
                if end == lineStart {
                    // RFC 9112 §2.2: ignore a few empty lines before a start line (robustness).
                    if lineStart < 8 {
                        lineStart = lf + 1
                        continue
                    }
                    return fail(.malformed, "Empty start line")
                }
                let r = kind == .request ? parseRequestLine(b, lineStart, end) : parseStatusLine(b, lineStart, end)
                if let r { return r }
                head.startLine = lineStart..<(lf + 1)
                sawStartLine = true
            } else if end == lineStart {
                // The empty line: the head is complete.
                head.headLength = lf + 1
                if let r = finishHead(b) { return r }
                partialHeadBytes = 0
                return .head(consumed: lf + 1)
            } else {
                if head.fields.count >= limits.maxFieldCount {
                    return fail(.headerFieldsTooLarge, "Too many header fields")
                }
                if let r = parseFieldLine(b, lineStart, end, lf + 1, isTrailer: false) { return r }
            }
            lineStart = lf + 1
        }
    }

    /// A CR must be followed by LF, and a field line may not start with whitespace (obs-fold).
    mutating func checkPartialLine(_ b: UnsafeRawBufferPointer, from: Int) -> Event? {
        let count = b.count
        if sawStartLine && lineStart < count && (b[lineStart] == 0x20 || b[lineStart] == 0x09) {
            return fail(.malformed, "Obsolete line folding")
        }
        var i = max(from - 1, lineStart)
        while i < count - 1 {
            if b[i] == 0x0D { return fail(.malformed, "Bare CR in head") }
            i += 1
        }
        return nil
    }

    mutating func parseRequestLine(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Event? {
        let table = classes.pointer
        var i = start
        while i < end && table[Int(b[i])] & ByteClass.token != 0 { i += 1 }
        if i == start { return fail(.malformed, "Invalid method") }
        if i == end || b[i] != 0x20 { return fail(.malformed, "Expected space after method") }
        head.methodRange = start..<i
        head.method = Self.classifyMethod(b, start, i)
        i += 1
        let targetStart = i
        i = SWAR.plainPrefix(b, i, end, SWAR.isPlainTarget)
        var fragment = false
        while i < end {
            let c = b[i]
            if table[Int(c)] & ByteClass.target == 0 { break }
            // A fragment is never part of a request target (RFC 9112 §3.2).
            if c == 0x23 { fragment = true }
            i += 1
        }
        if i == targetStart { return fail(.malformed, "Empty request target") }
        if i == end || b[i] != 0x20 { return fail(.malformed, "Invalid character in request target") }
        if fragment { return fail(.malformed, "Fragment in request target") }
        head.target = targetStart..<i
        if let r = classifyTarget(b, targetStart, i) { return r }
        i += 1
        return parseVersion(b, i, end, requireEnd: true)
    }

    /// Parses `HTTP/d.d` at `i`. For a request line the version must end the line.
    mutating func parseVersion(_ b: UnsafeRawBufferPointer, _ i: Int, _ end: Int, requireEnd: Bool) -> Event? {
        guard end - i >= 8, b[i] == 0x48, b[i + 1] == 0x54, b[i + 2] == 0x54, b[i + 3] == 0x50, b[i + 4] == 0x2F else {
            return fail(.malformed, "Invalid HTTP version")
        }
        let major = b[i + 5], dot = b[i + 6], minor = b[i + 7]
        guard major >= 0x30 && major <= 0x39, dot == 0x2E, minor >= 0x30 && minor <= 0x39 else {
            return fail(.malformed, "Invalid HTTP version")
        }
        if requireEnd && end != i + 8 { return fail(.malformed, "Expected CRLF after version") }
        head.versionMajor = major - 0x30
        head.versionMinor = minor - 0x30
        if head.versionMajor != 1 {
            if kind == .request && head.versionMajor > 1 { return fail(.versionNotSupported, "HTTP version not supported") }
            return fail(.malformed, "Invalid HTTP version")
        }
        return nil
    }

    mutating func parseStatusLine(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Event? {
        if let r = parseVersion(b, start, end, requireEnd: false) { return r }
        var i = start + 8
        guard i < end, b[i] == 0x20 else { return fail(.malformed, "Expected space after version") }
        i += 1
        guard end - i >= 3 else { return fail(.malformed, "Invalid status code") }
        var status = 0
        for k in 0..<3 {
            let c = b[i + k]
            guard c >= 0x30 && c <= 0x39 else { return fail(.malformed, "Invalid status code") }
            status = status * 10 + Int(c - 0x30)
        }
        guard status >= 100 else { return fail(.malformed, "Invalid status code") }
        head.status = status
        i += 3
        if i == end {
            head.reason = i..<i
            return nil
        }
        guard b[i] == 0x20 else { return fail(.malformed, "Invalid status code") }
        i += 1
        let table = classes.pointer
        let reasonStart = i
        while i < end {
            if table[Int(b[i])] & ByteClass.reason == 0 { return fail(.malformed, "Invalid character in reason phrase") }
            i += 1
        }
        head.reason = reasonStart..<end
        return nil
    }

    static func classifyMethod(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> HTTP1Method {
        // Methods are case-sensitive (RFC 9110 §9.1).
        switch e - s {
        case 3:
            if b[s] == 0x47 && b[s + 1] == 0x45 && b[s + 2] == 0x54 { return .get }
            if b[s] == 0x50 && b[s + 1] == 0x55 && b[s + 2] == 0x54 { return .put }
        case 4:
            if b[s] == 0x48 && b[s + 1] == 0x45 && b[s + 2] == 0x41 && b[s + 3] == 0x44 { return .head }
            if b[s] == 0x50 && b[s + 1] == 0x4F && b[s + 2] == 0x53 && b[s + 3] == 0x54 { return .post }
        case 5:
            if matches(b, s, "PATCH") { return .patch }
            if matches(b, s, "TRACE") { return .trace }
        case 6:
            if matches(b, s, "DELETE") { return .delete }
        case 7:
            if matches(b, s, "OPTIONS") { return .options }
            if matches(b, s, "CONNECT") { return .connect }
        default:
            break
        }
        return .other
    }

    static func matches(_ b: UnsafeRawBufferPointer, _ s: Int, _ literal: StaticString) -> Bool {
        let p = literal.utf8Start
        for k in 0..<literal.utf8CodeUnitCount where b[s + k] != p[k] { return false }
        return true
    }

    mutating func classifyTarget(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> Event? {
        if head.method == .connect {
            if let r = validateHost(b, s, e, what: "authority") { return r }
            head.targetForm = .authority
            head.targetAuthority = s..<e
            return nil
        }
        if b[s] == 0x2F {
            head.targetForm = .origin
            return nil
        }
        if e - s == 1 && b[s] == 0x2A {
            guard head.method == .options else { return fail(.malformed, "Asterisk target outside OPTIONS") }
            head.targetForm = .asterisk
            return nil
        }
        // absolute-form: http:// or https:// (the only schemes a reverse proxy serves).
        var p = s
        if e - s > 7 && equalsLowercased(b, s, s + 7, "http://") {
            p = s + 7
        } else if e - s > 8 && equalsLowercased(b, s, s + 8, "https://") {
            p = s + 8
        } else {
            return fail(.malformed, "Invalid request target")
        }
        let authStart = p
        while p < e && b[p] != 0x2F && b[p] != 0x3F { p += 1 }
        if p == authStart { return fail(.malformed, "Empty authority in request target") }
        if let r = validateHost(b, authStart, p, what: "authority") { return r }
        head.targetForm = .absolute
        head.targetAuthority = authStart..<p
        head.targetPathAndQuery = p..<e
        return nil
    }

    /// uri-host [ ":" port ] with no userinfo, path or whitespace.
    mutating func validateHost(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int, what: StaticString) -> Event? {
        if let problem = HTTP1Syntax.hostProblem(b, s, e, table: classes.pointer) { return fail(.malformed, problem) }
        return nil
    }

    // MARK: - Fields

    /// Parses `name ":" OWS value OWS` in `[start, end)`; `lineEnd` is past the CRLF.
    mutating func parseFieldLine(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ lineEnd: Int, isTrailer: Bool) -> Event? {
        let table = classes.pointer
        let first = b[start]
        if first == 0x20 || first == 0x09 { return fail(.malformed, "Obsolete line folding") }
        var i = start
        while i < end && table[Int(b[i])] & ByteClass.token != 0 { i += 1 }
        if i == end { return fail(.malformed, "Header line without colon") }
        if b[i] != 0x3A {
            if b[i] == 0x20 || b[i] == 0x09 { return fail(.malformed, "Whitespace before colon") }
            return fail(.malformed, "Invalid header token")
        }
        if i == start { return fail(.malformed, "Empty header name") }
        let nameEnd = i
        i += 1
        while i < end && (b[i] == 0x20 || b[i] == 0x09) { i += 1 }
        let valueStart = i
        i = SWAR.plainPrefix(b, i, end, SWAR.isPlainFieldValue)
        // Fewer than eight bytes left: the line's last eight bytes, overlapping bytes already
        // accepted (the name, ":" and OWS qualify too, but HTAB), usually settle them in one test
        // instead of a table look-up each.
        if i < end && i + 8 > end && end - 8 >= start && SWAR.isPlainFieldValue(SWAR.word(b.baseAddress!, end - 8)) {
            i = end
        }
        while i < end {
            let c = b[i]
            if table[Int(c)] & ByteClass.fieldValue == 0 {
                if c == 0x0D { return fail(.malformed, "Bare CR in header") }
                return fail(.malformed, "Invalid header value char")
            }
            i += 1
        }
        // Trailing OWS is not part of the value.
        var valueEnd = end
        while valueEnd > valueStart && (b[valueEnd - 1] == 0x20 || b[valueEnd - 1] == 0x09) { valueEnd -= 1 }
        if isTrailer {
            // Trailers may not carry framing, routing or connection control (RFC 9110 §6.5.1).
            let known = Self.classifyField(b, start, nameEnd)
            switch known {
            case .contentLength, .transferEncoding, .host, .connection, .keepAlive, .te, .upgrade, .trailer, .proxyConnection, .expect:
                return fail(.malformed, "Forbidden field in trailer section")
            default:
                return nil
            }
        }
        let known = Self.classifyField(b, start, nameEnd)
        head.fields.append(HTTP1Field(
            // Below `maxOffset`: `parseHead` refuses a longer head before its lines are parsed.
            lineStart: Int32(truncatingIfNeeded: start), nameEnd: Int32(truncatingIfNeeded: nameEnd),
            valueStart: Int32(truncatingIfNeeded: valueStart), valueEnd: Int32(truncatingIfNeeded: valueEnd),
            lineEnd: Int32(truncatingIfNeeded: lineEnd), known: known))
        switch known {
        case .contentLength:
            return parseContentLength(b, valueStart, valueEnd)
        case .transferEncoding:
            return parseTransferEncoding(b, valueStart, valueEnd)
        case .host:
            if head.hostField != nil { return fail(.malformed, "Duplicate Host") }
            head.hostField = head.fields.count - 1
        case .connection:
            return parseConnection(b, valueStart, valueEnd)
        case .upgrade:
            head.hasUpgrade = true
        case .expect:
            if kind == .request {
                if equalsLowercased(b, valueStart, valueEnd, "100-continue") {
                    head.expectsContinue = true
                } else {
                    return fail(.expectationFailed, "Unsupported expectation")
                }
            }
        default:
            break
        }
        return nil
    }

    mutating func parseContentLength(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> Event? {
        if contentLength != nil { return fail(.malformed, "Duplicate Content-Length") }
        if s == e { return fail(.malformed, "Empty Content-Length") }
        if e - s > 18 { return fail(.malformed, "Content-Length overflow") }
        var v: Int64 = 0
        for k in s..<e {
            let c = b[k]
            guard c >= 0x30 && c <= 0x39 else { return fail(.malformed, "Invalid character in Content-Length") }
            v = v * 10 + Int64(c - 0x30)
        }
        contentLength = v
        return nil
    }

    mutating func parseTransferEncoding(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> Event? {
        transferEncodingSeen = true
        let table = classes.pointer
        var i = s
        if i == e { return fail(.malformed, "Empty Transfer-Encoding") }
        while true {
            // One coding: token [ OWS ";" OWS param ]*; we only need the token.
            let tokStart = i
            while i < e && table[Int(b[i])] & ByteClass.token != 0 { i += 1 }
            if i == tokStart { return fail(.malformed, "Invalid `Transfer-Encoding` header value") }
            let isChunked = tokenIs(b, tokStart, i, "chunked")
            if chunkedSeen && kind == .request {
                // Anything after chunked (or chunked twice) makes a request's framing ambiguous.
                return fail(.malformed, "Invalid `Transfer-Encoding` header value")
            }
            if isChunked {
                chunkedSeen = true
                chunkedIsLast = true
            } else {
                chunkedIsLast = false
                head.hasOtherTransferCodings = true
            }
            // Parameters are only legal on codings other than chunked.
            while i < e && (b[i] == 0x20 || b[i] == 0x09) { i += 1 }
            if i < e && b[i] == 0x3B {
                if isChunked { return fail(.malformed, "Invalid `Transfer-Encoding` header value") }
                while i < e && b[i] != 0x2C {
                    if table[Int(b[i])] & ByteClass.fieldValue == 0 { return fail(.malformed, "Invalid `Transfer-Encoding` header value") }
                    i += 1
                }
            }
            if i == e { return nil }
            guard b[i] == 0x2C else { return fail(.malformed, "Invalid `Transfer-Encoding` header value") }
            i += 1
            while i < e && (b[i] == 0x20 || b[i] == 0x09) { i += 1 }
            if i == e { return fail(.malformed, "Invalid `Transfer-Encoding` header value") }
        }
    }

    mutating func parseConnection(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> Event? {
        let table = classes.pointer
        var i = s
        while i < e {
            let tokStart = i
            while i < e && table[Int(b[i])] & ByteClass.token != 0 { i += 1 }
            let tokEnd = i
            if tokEnd > tokStart {
                if tokenIs(b, tokStart, tokEnd, "close") {
                    connectionClose = true
                } else if tokenIs(b, tokStart, tokEnd, "keep-alive") {
                    connectionKeepAlive = true
                } else if tokenIs(b, tokStart, tokEnd, "upgrade") {
                    head.connectionUpgrade = true
                } else {
                    head.connectionNamesOtherFields = true
                }
            }
            while i < e && (b[i] == 0x20 || b[i] == 0x09) { i += 1 }
            if i < e {
                guard b[i] == 0x2C else { return fail(.malformed, "Invalid Connection header value") }
                i += 1
                while i < e && (b[i] == 0x20 || b[i] == 0x09) { i += 1 }
            }
        }
        return nil
    }

    /// `[s, e)` must be a field name already checked to be a token (see `sameToken`).
    static func classifyField(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> HTTP1KnownField {
        guard let base = b.baseAddress else { return .other }
        let p = base + s
        switch e - s {
        case 2: if sameToken(p, "te") { return .te }
        case 4: if sameToken(p, "host") { return .host }
        case 6: if sameToken(p, "expect") { return .expect }
        case 7:
            if sameToken(p, "upgrade") { return .upgrade }
            if sameToken(p, "trailer") { return .trailer }
        case 9:
            if sameToken(p, "x-real-ip") { return .xRealIP }
            if sameToken(p, "forwarded") { return .forwarded }
        case 10:
            if sameToken(p, "connection") { return .connection }
            if sameToken(p, "keep-alive") { return .keepAlive }
        case 12: if sameToken(p, "x-request-id") { return .xRequestID }
        case 14: if sameToken(p, "content-length") { return .contentLength }
        case 15:
            if sameToken(p, "x-forwarded-for") { return .xForwardedFor }
        case 16:
            if sameToken(p, "x-forwarded-host") { return .xForwardedHost }
            if sameToken(p, "x-forwarded-port") { return .xForwardedPort }
            if sameToken(p, "proxy-connection") { return .proxyConnection }
        case 17:
            if sameToken(p, "transfer-encoding") { return .transferEncoding }
            if sameToken(p, "x-forwarded-proto") { return .xForwardedProto }
        default: break
        }
        return .other
    }

    // MARK: - Framing

    /// Folds the field facts into the head and decides how the body is delimited (RFC 9112 §6).
    mutating func finishHead(_ b: UnsafeRawBufferPointer) -> Event? {
        let http11 = head.isHTTP11OrLater
        head.wantsClose = connectionClose || (!http11 && !connectionKeepAlive)
        head.keepAliveRequested = !http11 && connectionKeepAlive && !connectionClose
        if kind == .request {
            if http11 && requireHost {
                guard let h = head.hostField else { return fail(.malformed, "Missing Host") }
                let f = head.fields[h]
                if let r = validateHost(b, Int(f.valueStart), Int(f.valueEnd), what: "Host") { return r }
            } else if let h = head.hostField {
                let f = head.fields[h]
                if let r = validateHost(b, Int(f.valueStart), Int(f.valueEnd), what: "Host") { return r }
            }
            if !http11 { head.expectsContinue = false }
            if transferEncodingSeen {
                if !http11 { return fail(.malformed, "Transfer-Encoding on HTTP/1.0") }
                if contentLength != nil { return fail(.malformed, "Transfer-Encoding can't be present with Content-Length") }
                if !chunkedIsLast { return fail(.malformed, "Request has invalid `Transfer-Encoding`") }
                // Only chunked is implemented: a coded body could not be re-framed faithfully.
                if head.hasOtherTransferCodings { return fail(.notImplemented, "Unsupported transfer coding") }
                head.framing = .chunked
                state = .chunkSize
                chunkValue = 0
                chunkDigits = 0
            } else if let n = contentLength, n > 0 {
                head.framing = .contentLength(n)
                state = .contentLength(remaining: n)
            } else {
                head.framing = .none
                state = .noBody
            }
            return nil
        }
        // Responses.
        let s = head.status
        if transferEncodingSeen && contentLength != nil {
            return fail(.malformed, "Transfer-Encoding can't be present with Content-Length")
        }
        if responseToHead || (s >= 100 && s < 200) || s == 204 || s == 304 || (responseToConnect && s >= 200 && s < 300) {
            if s == 101 || (responseToConnect && s >= 200 && s < 300) { head.wantsClose = false }
            head.framing = .none
            state = .noBody
        } else if transferEncodingSeen {
            if chunkedIsLast {
                head.framing = .chunked
                state = .chunkSize
                chunkValue = 0
                chunkDigits = 0
            } else {
                head.framing = .closeDelimited
                head.wantsClose = true
                state = .closeDelimited
            }
        } else if let n = contentLength {
            head.framing = n > 0 ? .contentLength(n) : .none
            state = n > 0 ? .contentLength(remaining: n) : .noBody
        } else {
            head.framing = .closeDelimited
            head.wantsClose = true
            state = .closeDelimited
        }
        return nil
    }

    // MARK: - Chunked body

    mutating func parseChunked(_ b: UnsafeRawBufferPointer) -> Event {
        let table = classes.pointer
        let count = b.count
        var i = 0
        while i < count {
            let c = b[i]
            switch state {
            case .chunkSize:
                if table[Int(c)] & ByteClass.hex != 0 {
                    chunkDigits += 1
                    if chunkDigits > 16 || chunkValue > (UInt64(Int64.max) >> 4) {
                        return fail(.malformed, "Chunk size overflow")
                    }
                    let d: UInt8 = c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10
                    chunkValue = chunkValue << 4 | UInt64(d)
                } else if chunkDigits == 0 {
                    return fail(.malformed, "Invalid character in chunk size")
                } else if c == 0x0D {
                    state = .chunkSizeLF
                } else if c == 0x3B {
                    state = .chunkExtension
                    chunkExt = .afterSemicolon
                } else {
                    return fail(.malformed, "Invalid character in chunk size")
                }
                i += 1
            case .chunkExtension:
                if let r = stepChunkExtension(c, table) { return r }
                i += 1
            case .chunkSizeLF:
                guard c == 0x0A else { return fail(.malformed, "Expected LF after chunk size") }
                i += 1
                if chunkValue == 0 {
                    state = .trailers
                    lineStart = 0
                    scanFrom = 0
                    trailerFieldCount = 0
                    let r = parseTrailers(UnsafeRawBufferPointer(rebasing: b[i...]))
                    return Self.shift(r, by: i)
                }
                state = .chunkData(remaining: Int64(chunkValue))
            case .chunkData(let remaining):
                let n = Int(min(Int64(count - i), remaining))
                let left = remaining - Int64(n)
                state = left == 0 ? .chunkDataCR : .chunkData(remaining: left)
                return .body(i..<(i + n), consumed: i + n)
            case .chunkDataCR:
                guard c == 0x0D else { return fail(.malformed, "Expected CRLF after chunk data") }
                state = .chunkDataLF
                i += 1
            case .chunkDataLF:
                guard c == 0x0A else { return fail(.malformed, "Expected LF after chunk data") }
                state = .chunkSize
                chunkValue = 0
                chunkDigits = 0
                i += 1
            default:
                preconditionFailure("parseChunked outside a chunked body")
            }
        }
        return .needMore(consumed: i)
    }

    /// chunk-ext = *( ";" name [ "=" ( token / quoted-string ) ] ), without whitespace.
    mutating func stepChunkExtension(_ c: UInt8, _ table: UnsafePointer<UInt8>) -> Event? {
        let isToken = table[Int(c)] & ByteClass.token != 0
        switch chunkExt {
        case .afterSemicolon:
            guard isToken else { return fail(.malformed, "Invalid character in chunk extensions") }
            chunkExt = .name
        case .name, .tokenValue, .afterQuoted:
            if c == 0x0D {
                state = .chunkSizeLF
            } else if c == 0x3B {
                chunkExt = .afterSemicolon
            } else if c == 0x3D && chunkExt == .name {
                chunkExt = .afterEquals
            } else if !isToken || chunkExt == .afterQuoted {
                return fail(.malformed, "Invalid character in chunk extensions")
            }
        case .afterEquals:
            if c == 0x22 {
                chunkExt = .quotedValue
            } else if isToken {
                chunkExt = .tokenValue
            } else {
                return fail(.malformed, "Invalid character in chunk extensions")
            }
        case .quotedValue:
            if c == 0x22 {
                chunkExt = .afterQuoted
            } else if c == 0x5C {
                chunkExt = .quotedEscape
            } else if table[Int(c)] & ByteClass.qdtext == 0 {
                return fail(.malformed, "Invalid character in chunk extensions quoted value")
            }
        case .quotedEscape:
            guard c == 0x09 || (c >= 0x20 && c != 0x7F) else {
                return fail(.malformed, "Invalid character in chunk extensions quoted value")
            }
            chunkExt = .quotedValue
        }
        return nil
    }

    /// Moves an event computed on a suffix of the buffer back to the buffer's own offsets.
    static func shift(_ e: Event, by k: Int) -> Event {
        switch e {
        case .needMore(let c): return .needMore(consumed: c + k)
        case .end(let t, let c): return .end(trailers: (t.lowerBound + k)..<(t.upperBound + k), consumed: c + k)
        case .body(let r, let c): return .body((r.lowerBound + k)..<(r.upperBound + k), consumed: c + k)
        case .head(let c): return .head(consumed: c + k)
        case .error: return e
        }
    }

    // MARK: - Trailers

    mutating func parseTrailers(_ b: UnsafeRawBufferPointer) -> Event {
        let count = b.count
        guard let base = b.baseAddress else { return .needMore(consumed: 0) }
        while true {
            let searchFrom = max(scanFrom, lineStart)
            guard searchFrom < count, let hit = memchr(base + searchFrom, 0x0A, count - searchFrom) else {
                scanFrom = count
                if count - lineStart > limits.maxLineLength + 1 || count > limits.maxHeadLength {
                    return fail(.headerFieldsTooLarge, "Trailer section too large")
                }
                return .needMore(consumed: 0)
            }
            let lf = UnsafeRawPointer(hit) - base
            scanFrom = lf + 1
            if lf == lineStart || b[lf - 1] != 0x0D { return fail(.malformed, "Bare LF line ending") }
            let end = lf - 1
            if end == lineStart {
                let trailers = 0..<lineStart
                finishMessage()
                return .end(trailers: trailers, consumed: lf + 1)
            }
            trailerFieldCount += 1
            if trailerFieldCount > limits.maxFieldCount { return fail(.headerFieldsTooLarge, "Too many trailer fields") }
            if let r = parseFieldLine(b, lineStart, end, lf + 1, isTrailer: true) { return r }
            lineStart = lf + 1
        }
    }
}
