import CNGHTTP2
import NIOCore

/// The bounds a server session enforces on one client connection.
public struct HTTP2Limits: Sendable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond it are refused by nghttp2.
    public var maxConcurrentStreams = 128
    /// Bytes of request fields (name + value + 32 each, as RFC 9113 counts); beyond it, 431.
    public var maxHeaderListSize = 64 * 1024
    /// Request fields (pseudo-fields included); beyond it, 431.
    public var maxHeaderFields = 100
    /// Request-body window per stream, and for the whole connection: what a client may send
    /// before the proxy has passed it on (the bound on buffered request bytes).
    public var initialStreamWindow = 256 * 1024
    public var connectionWindow = 1024 * 1024
    /// PING, SETTINGS, PRIORITY, RST_STREAM and empty DATA frames a client may send per second
    /// before the connection ends with ENHANCE_YOUR_CALM (floods cost CPU, not bandwidth).
    public var maxControlFramesPerSecond = 1000
    /// nghttp2's own token bucket for streams reset by the client (rapid reset).
    public var resetBurst = 200
    public var resetRatePerSecond = 100
    /// Response bytes queued per stream before the application should stop reading its source.
    public var streamHighWater = 64 * 1024

    public init() {}
}

/// What the session reports about request streams. Calls arrive while nghttp2 is on the stack:
/// an implementation may submit responses, data and resets (nghttp2 allows it) but must not
/// ask the session to receive or produce bytes.
public protocol HTTP2SessionDelegate: AnyObject {
    /// The request head is complete (fields validated); `endStream` when it has no body.
    func http2StreamHeaders(_ stream: HTTP2Stream, endStream: Bool)
    /// Request body bytes, valid only during the call. The application calls `consume` once it
    /// has passed them on: that is what reopens the client's flow-control window.
    func http2StreamData(_ stream: HTTP2Stream, _ data: UnsafeRawBufferPointer)
    /// The client ended the request body.
    func http2StreamEnd(_ stream: HTTP2Stream)
    /// The stream is gone (completed, reset by either side, or the connection ended).
    func http2StreamClosed(_ stream: HTTP2Stream, errorCode: UInt32)
    /// The response bytes queued on the stream fell below half the high-water mark.
    func http2StreamDrained(_ stream: HTTP2Stream)
}

/// Owns one server-side `nghttp2_session`. Bytes go in through `receive`, frames come out of
/// `produce`; nghttp2's callbacks are small free functions that land in the methods below.
public final class HTTP2Session {
    private var session: OpaquePointer? = nil
    /// Strong, and dropped by the server handler when the channel goes: a weak reference would
    /// give the delegate a side table and put every retain of it on the slow path.
    public var delegate: HTTP2SessionDelegate?
    public let limits: HTTP2Limits
    private var streams = StreamTable()
    /// The stream whose header block is being read. Its fields arrive one callback each, and a
    /// dictionary lookup (hash, retain, release) per field added up; `streams` owns it, and
    /// `streamClosed` forgets it before letting it go.
    private var headerStreamID: Int32 = -1
    private var headerStream: Unmanaged<HTTP2Stream>? = nil
    /// Buffers of closed streams, handed to new ones (a few allocations less per stream). At most
    /// `spareLimit`; `releaseSpares` lets them go when the connection has gone idle.
    private var spareStorage: [HTTP2Stream.Storage] = []
    /// What a stream holds once its storage has moved on (see `HTTP2Stream.takeStorage`).
    private let noPending = CircularBuffer<ByteBuffer>(initialCapacity: 1)
    private static let spareLimit = 16
    /// Where nghttp2 allocates; released after the session (a stored property outlives `deinit`).
    private let memory: HTTP2MemoryPool
    /// The pool is the session's own (not its loop's), so an idle session empties it.
    private let ownsMemory: Bool
    private let clock: () -> NIODeadline
    private var windowStart: NIODeadline
    private var controlFrames = 0
    private var flooded = false
    /// Why the connection is ending, when it ends because of the client.
    public private(set) var failure: String? = nil

    /// `memory`: the event loop's pool for nghttp2's allocations (nil: one of the session's own).
    public init(limits: HTTP2Limits = HTTP2Limits(), memory: HTTP2MemoryPool? = nil,
                clock: @escaping () -> NIODeadline = { NIODeadline.now() }) {
        self.limits = limits
        self.memory = memory ?? HTTP2MemoryPool()
        self.ownsMemory = memory == nil
        self.clock = clock
        self.windowStart = clock()

        var callbacks: OpaquePointer? = nil
        nghttp2_session_callbacks_new(&callbacks)
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, sluiceH2BeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, sluiceH2Header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, sluiceH2FrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, sluiceH2DataChunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, sluiceH2StreamClose)
        var options: OpaquePointer? = nil
        nghttp2_option_new(&options)
        // Window updates follow what the proxy has passed on, not what nghttp2 has parsed.
        nghttp2_option_set_no_auto_window_update(options, 1)
        nghttp2_option_set_stream_reset_rate_limit(options, UInt64(limits.resetBurst), UInt64(limits.resetRatePerSecond))
        nghttp2_option_set_max_settings(options, 32)
        nghttp2_option_set_max_outbound_ack(options, 1000)
        var mem = self.memory.nghttp2Mem
        nghttp2_session_server_new3(&session, callbacks, Unmanaged.passUnretained(self).toOpaque(), options, &mem)
        nghttp2_option_del(options)
        nghttp2_session_callbacks_del(callbacks)

        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: UInt32(limits.maxConcurrentStreams)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32(limits.initialStreamWindow)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(limits.maxHeaderListSize)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            // RFC 9218 instead of RFC 7540's dependency tree, which RFC 9113 deprecated: nghttp2
            // then keeps no tree, no closed or idle streams for it, and schedules by urgency.
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue), value: 1),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(limits.connectionWindow))
    }

    deinit {
        nghttp2_session_del(session)
    }

    // MARK: - Bytes in and out

    /// Feeds bytes from the client. Returns false when the connection must end; a GOAWAY saying
    /// why is queued for `produce`.
    public func receive(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return true }
        let rv = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if rv < 0 {
            if flooded {
                failure = failure ?? "control frame flood"
                nghttp2_session_terminate_session(session, UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue))
            } else {
                failure = failure ?? String(cString: nghttp2_strerror(Int32(rv)))
                nghttp2_session_terminate_session(session, UInt32(NGHTTP2_PROTOCOL_ERROR.rawValue))
            }
            return false
        }
        return true
    }

    /// Appends serialised frames to `out` until nghttp2 has nothing to send (flow control and
    /// deferred streams decide) or `limit` bytes were written. Returns false on a fatal error.
    @discardableResult
    public func produce(into out: inout ByteBuffer, limit: Int) -> Bool {
        while out.readableBytes < limit {
            var p: UnsafePointer<UInt8>? = nil
            let n = nghttp2_session_mem_send(session, &p)
            if n < 0 {
                failure = failure ?? String(cString: nghttp2_strerror(Int32(n)))
                return false
            }
            guard n > 0, let p else { break }
            out.writeBytes(UnsafeRawBufferPointer(start: p, count: n))
        }
        return true
    }

    /// Nothing more will be read or written: the connection can close.
    public var isFinished: Bool {
        nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0
    }

    public var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    /// Drops the buffers kept for new streams (an idle connection should hold none).
    public func releaseSpares() {
        spareStorage = []
        if ownsMemory { memory.trim() }
    }
    public var openStreams: Int { streams.count }
    /// Blocks nghttp2 freed that wait for its next allocations.
    var cachedMemoryBlocks: Int { memory.cachedBlocks }

    // MARK: - Responses

    /// Submits the response head; with `hasBody` the body follows through `send`/`end`.
    public func respond(_ stream: HTTP2Stream, headers: HTTP2HeaderBlock, hasBody: Bool) {
        stream.responseSubmitted = true
        let rv: Int32 = headers.withNV { nv, n in
            if hasBody {
                var provider = sluice_nghttp2_data_provider(sluiceH2ReadData)
                return nghttp2_submit_response(session, stream.id, nv, n, &provider)
            }
            return nghttp2_submit_response(session, stream.id, nv, n, nil)
        }
        if !hasBody { stream.responseEnded = true }
        if rv != 0 { reset(stream, code: UInt32(NGHTTP2_INTERNAL_ERROR.rawValue)) }
    }

    /// An interim 100 (Continue): the client may send the body it holds back for it (RFC 9110
    /// §10.1.1). nghttp2 sends non-final heads with `submit_headers`.
    public func sendContinue(_ stream: HTTP2Stream) {
        var block = HTTP2HeaderBlock(capacity: 16)
        block.add(":status", "100")
        sendInformational(stream, headers: block)
    }

    /// Another interim (1xx) head before the final response, such as 103 (Early Hints).
    public func sendInformational(_ stream: HTTP2Stream, headers: HTTP2HeaderBlock) {
        guard !stream.responseSubmitted else { return }
        _ = headers.withNV { nv, n in nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, nil, nv, n, nil) }
    }

    /// Queues response body bytes. Returns true when the stream holds more than the high-water
    /// mark: the caller should stop reading its source until `http2StreamDrained`.
    @discardableResult
    public func send(_ stream: HTTP2Stream, _ data: ByteBuffer) -> Bool {
        guard data.readableBytes > 0 else { return stream.aboveHighWater }
        stream.pending.append(data)
        stream.pendingBytes += data.readableBytes
        if stream.pendingBytes > limits.streamHighWater { stream.aboveHighWater = true }
        resume(stream)
        return stream.aboveHighWater
    }

    /// Ends the response body, with trailers when the source had them.
    public func end(_ stream: HTTP2Stream, trailers: HTTP2HeaderBlock? = nil) {
        stream.responseEnded = true
        if let trailers, trailers.count > 0 { stream.trailers = trailers }
        resume(stream)
    }

    private func resume(_ stream: HTTP2Stream) {
        if stream.deferred {
            stream.deferred = false
            nghttp2_session_resume_data(session, stream.id)
        }
    }

    public func reset(_ stream: HTTP2Stream, code: UInt32) {
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, code)
    }

    /// Reopens the client's window by `count` request-body bytes the application passed on.
    public func consume(_ stream: HTTP2Stream, _ count: Int) {
        guard count > 0 else { return }
        if nghttp2_session_consume(session, stream.id, count) != 0 {
            nghttp2_session_consume_connection(session, count)
        }
    }

    /// Graceful end: no new streams; the open ones finish.
    public func goAway() {
        let last = nghttp2_session_get_last_proc_stream_id(session)
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
    }

    /// Immediate end with `code`.
    public func terminate(code: UInt32) {
        nghttp2_session_terminate_session(session, code)
    }

    // MARK: - Callbacks (called by the free functions below)

    fileprivate func beginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let id = sluice_nghttp2_frame_stream_id(frame)
        let stream: HTTP2Stream
        if sluice_nghttp2_headers_category(frame) == Int32(NGHTTP2_HCAT_REQUEST.rawValue) {
            stream = HTTP2Stream(id: id, reusing: spareStorage.popLast())
            streams[id] = stream
        } else if let s = streams[id] {
            s.receivingTrailers = true
            stream = s
        } else {
            return 0
        }
        headerStreamID = id
        headerStream = Unmanaged.passUnretained(stream)
        return 0
    }

    fileprivate func header(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Int32 {
        let id = sluice_nghttp2_frame_stream_id(frame)
        if id == headerStreamID, let headerStream {
            return headerStream._withUnsafeGuaranteedRef { accept(header: name, value: value, on: $0) }
        }
        guard let s = streams[id] else { return 0 }
        return accept(header: name, value: value, on: s)
    }

    private func accept(header name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, on s: HTTP2Stream) -> Int32 {
        s.headerListSize += name.count + value.count + 32
        s.headerCount += 1
        if s.headerListSize > limits.maxHeaderListSize || s.headerCount > limits.maxHeaderFields {
            // Keep reading the block (HPACK state must stay in step) but keep nothing more.
            s.headersTooLarge = true
            return 0
        }
        if !HTTP2Session.isAcceptable(name: name, value: value) {
            return Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        if s.receivingTrailers {
            // Counted against the same limits as the head (the list size and field count).
            s.appendTrailer(name: name, value: value)
        } else {
            s.append(name: name, value: value)
        }
        return 0
    }

    /// RFC 9113 §8.2.1, checked again here so that nothing the proxy forwards depends on how
    /// a given nghttp2 version validates: lower-case token names, no CR/LF/NUL in values, no
    /// leading or trailing whitespace.
    static func isAcceptable(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Bool {
        guard let n = name.baseAddress, !name.isEmpty else { return false }
        // A pseudo-field's leading ":" is the only one allowed.
        var i = n.load(as: UInt8.self) == UInt8(ascii: ":") ? 1 : 0
        // Eight bytes at a time while they are plain (visible ASCII, no upper case, no ":"); any
        // other word, and the last few bytes, byte by byte.
        while i + 8 <= name.count {
            let w = n.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            if w & WordBytes.highs != 0 || WordBytes.upperCase(w) != 0 || WordBytes.hasLess(w, 0x21)
                || WordBytes.hasByte(w, 0x7F) || WordBytes.hasByte(w, 0x3A) { break }
            i += 8
        }
        while i < name.count {
            let b = n.load(fromByteOffset: i, as: UInt8.self)
            if b <= 0x20 || b >= 0x7F || b == UInt8(ascii: ":") || (b >= 0x41 && b <= 0x5A) { return false }
            i += 1
        }
        guard let v = value.baseAddress, !value.isEmpty else { return true }
        let first = v.load(as: UInt8.self), last = v.load(fromByteOffset: value.count - 1, as: UInt8.self)
        if first == 0x20 || first == 0x09 || last == 0x20 || last == 0x09 { return false }
        // No NUL, LF or CR: a word with no byte below 0x0E has none.
        var k = 0
        while k + 8 <= value.count && !WordBytes.hasLess(v.loadUnaligned(fromByteOffset: k, as: UInt64.self), 0x0E) { k += 8 }
        while k < value.count {
            let b = v.load(fromByteOffset: k, as: UInt8.self)
            if b == 0 || b == 0x0A || b == 0x0D { return false }
            k += 1
        }
        return true
    }

    fileprivate func frameReceived(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let type = UInt32(sluice_nghttp2_frame_type(frame))
        let flags = UInt32(sluice_nghttp2_frame_flags(frame))
        let id = sluice_nghttp2_frame_stream_id(frame)
        let endStream = flags & UInt32(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch type {
        case NGHTTP2_HEADERS.rawValue:
            guard let s = streams[id] else { return 0 }
            if s.receivingTrailers {
                s.receivingTrailers = false
                if endStream { return finishRequest(s) }
                return 0
            }
            if endStream { s.requestEnded = true }
            delegate?.http2StreamHeaders(s, endStream: endStream)
        case NGHTTP2_DATA.rawValue:
            if sluice_nghttp2_frame_length(frame) == 0 && !endStream {
                return countControlFrame()
            }
            if endStream, let s = streams[id] { return finishRequest(s) }
        case NGHTTP2_PING.rawValue, NGHTTP2_SETTINGS.rawValue, NGHTTP2_PRIORITY.rawValue, NGHTTP2_RST_STREAM.rawValue:
            if flags & UInt32(NGHTTP2_FLAG_ACK.rawValue) == 0 { return countControlFrame() }
        default:
            break
        }
        return 0
    }

    private func finishRequest(_ s: HTTP2Stream) -> Int32 {
        guard !s.requestEnded else { return 0 }
        s.requestEnded = true
        delegate?.http2StreamEnd(s)
        return 0
    }

    private func countControlFrame() -> Int32 {
        let now = clock()
        if now - windowStart >= .seconds(1) {
            windowStart = now
            controlFrames = 0
        }
        controlFrames += 1
        if controlFrames > limits.maxControlFramesPerSecond {
            flooded = true
            failure = "more than \(limits.maxControlFramesPerSecond) control frames in a second"
            return Int32(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue)
        }
        return 0
    }

    fileprivate func dataChunk(streamID: Int32, _ data: UnsafeRawBufferPointer) -> Int32 {
        if let s = streams[streamID], let delegate {
            delegate.http2StreamData(s, data)
        } else {
            // Data for a stream the application no longer follows: give the window back.
            nghttp2_session_consume(session, streamID, data.count)
        }
        return 0
    }

    fileprivate func streamClosed(_ id: Int32, errorCode: UInt32) -> Int32 {
        if id == headerStreamID {
            headerStreamID = -1
            headerStream = nil
        }
        guard var s = streams.removeValue(forKey: id) else { return 0 }
        // Keeping the capacity: without it CircularBuffer frees its storage and allocates a
        // one-slot one, and the queue handed to the next stream would start from nothing.
        s.pending.removeAll(keepingCapacity: true)
        s.pendingBytes = 0
        delegate?.http2StreamClosed(s, errorCode: errorCode)
        s.context = nil
        if spareStorage.count < Self.spareLimit, isKnownUniquelyReferenced(&s), s.headerBytes.capacity <= 4096 {
            // Nobody else holds the stream (the application let go of it), so its buffers can
            // move on; a stream that received an unusually large head keeps its storage to itself.
            spareStorage.append(s.takeStorage(placeholder: noPending))
        }
        return 0
    }

    fileprivate func readData(streamID: Int32, into buf: UnsafeMutablePointer<UInt8>, length: Int,
                              flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let s = streams[streamID] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        var written = 0
        while written < length, !s.pending.isEmpty {
            let i = s.pending.startIndex
            let n = min(length - written, s.pending[i].readableBytes)
            s.pending[i].withUnsafeReadableBytes { src in
                (buf + written).update(from: src.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n)
            }
            s.pending[i].moveReaderIndex(forwardBy: n)
            if s.pending[i].readableBytes == 0 { s.pending.removeFirst() }
            written += n
        }
        s.pendingBytes -= written
        if s.pending.isEmpty && s.responseEnded {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            if let t = s.trailers {
                s.trailers = nil
                flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                _ = t.withNV { nv, n in nghttp2_submit_trailer(session, streamID, nv, n) }
            }
        } else if written == 0 {
            s.deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        if s.aboveHighWater && s.pendingBytes <= limits.streamHighWater / 2 {
            s.aboveHighWater = false
            delegate?.http2StreamDrained(s)
        }
        return written
    }
}

// MARK: - nghttp2 callbacks

/// Runs `body` with the session behind `userData` without retaining it: nghttp2 calls back only
/// from inside a call the session itself made, so it is alive throughout. (A retain and a
/// release per callback were about 20 atomic operations per request.)
@inline(__always)
private func withSession<R>(_ userData: UnsafeMutableRawPointer?, _ body: (HTTP2Session) -> R) -> R {
    Unmanaged<HTTP2Session>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
}

private let sluiceH2BeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
    withSession(userData) { $0.beginHeaders(frame!) }
}

private let sluiceH2Header: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
    withSession(userData) {
        $0.header(frame!, name: UnsafeRawBufferPointer(start: name, count: nameLength),
                  value: UnsafeRawBufferPointer(start: value, count: valueLength))
    }
}

private let sluiceH2FrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
    withSession(userData) { $0.frameReceived(frame!) }
}

private let sluiceH2DataChunk: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, length, userData in
    withSession(userData) { $0.dataChunk(streamID: streamID, UnsafeRawBufferPointer(start: data, count: length)) }
}

private let sluiceH2StreamClose: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
    withSession(userData) { $0.streamClosed(streamID, errorCode: errorCode) }
}

private let sluiceH2ReadData: nghttp2_data_source_read_callback = { _, streamID, buf, length, flags, _, userData in
    withSession(userData) { $0.readData(streamID: streamID, into: buf!, length: length, flags: flags!) }
}
