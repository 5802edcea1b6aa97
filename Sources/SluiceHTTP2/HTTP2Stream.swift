import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// A request field as offsets into `HTTP2Stream.headerBytes`.
public struct HTTP2Field: Sendable {
    public var name: Range<Int>
    public var value: Range<Int>
}

/// One request stream of a server session: the request head as it arrived (bytes plus offsets,
/// validated by nghttp2 and by the session), and the response bytes waiting for nghttp2 to pull.
public final class HTTP2Stream {
    public let id: Int32

    // MARK: Request

    /// Names and values back to back; `fields` and the pseudo-header ranges index into it.
    public private(set) var headerBytes: PackedBytes
    public private(set) var fields: [HTTP2Field] = []
    public private(set) var method: Range<Int>? = nil
    public private(set) var scheme: Range<Int>? = nil
    public private(set) var authority: Range<Int>? = nil
    public private(set) var path: Range<Int>? = nil
    /// The request's field section outgrew the limit; the fields kept are incomplete.
    public internal(set) var headersTooLarge = false
    /// The client ended its side (END_STREAM seen).
    public internal(set) var requestEnded = false
    var headerListSize = 0
    var headerCount = 0
    /// HEADERS after the request head are trailers; they end the request.
    var receivingTrailers = false
    /// The request's trailer fields as HTTP/1.1 lines (`name: value\r\n`), ready for the last
    /// chunk of a chunked upstream body. Fields that must not be trailers (framing, routing,
    /// connection-specific ones) are left out.
    public private(set) var trailerLines: [UInt8] = []

    func appendTrailer(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        if Self.neverATrailer(name) { return }
        trailerLines.append(contentsOf: name)
        trailerLines.append(contentsOf: ": ".utf8)
        trailerLines.append(contentsOf: value)
        trailerLines.append(contentsOf: "\r\n".utf8)
    }

    /// RFC 9110 §6.5.1: fields about framing, routing or the connection are not trailers.
    static func neverATrailer(_ name: UnsafeRawBufferPointer) -> Bool {
        if name.first == UInt8(ascii: ":") { return true }
        for n in ["content-length", "transfer-encoding", "host", "te", "trailer", "connection", "keep-alive",
                  "proxy-connection", "upgrade", "expect", "content-type", "content-encoding", "content-range", "authorization",
                  "cookie", "set-cookie", "cache-control", "max-forwards", "range", "if-match", "if-none-match",
                  "if-modified-since", "if-unmodified-since", "if-range"] where name.elementsEqual(n.utf8) {
            return true
        }
        return false
    }

    /// What the application attaches to the stream (the proxy's exchange).
    public var context: AnyObject? = nil

    // MARK: Response

    var pending: CircularBuffer<ByteBuffer>
    /// Response bytes handed to the session and not yet pulled into frames.
    public internal(set) var pendingBytes = 0
    var responseEnded = false
    var trailers: HTTP2HeaderBlock? = nil
    var deferred = false
    var aboveHighWater = false
    public internal(set) var responseSubmitted = false

    init(id: Int32, reusing storage: Storage? = nil) {
        self.id = id
        if let storage {
            headerBytes = storage.headerBytes
            fields = storage.fields
            pending = storage.pending
        } else {
            headerBytes = PackedBytes(capacity: 512)
            fields.reserveCapacity(16)
            pending = CircularBuffer(initialCapacity: 4)
        }
    }

    // MARK: Storage reuse

    /// The growable buffers of a closed stream, emptied, for the next stream of the session: a
    /// stream is a fresh object every time (no state carries over), only capacity does.
    struct Storage {
        var headerBytes: PackedBytes
        var fields: [HTTP2Field]
        var pending: CircularBuffer<ByteBuffer>
    }

    /// Empties the buffers and hands them over (the stream must not be used afterwards).
    /// `placeholder` is what the stream holds instead of its queue: the session's own (creating
    /// one allocates). It was once a process-wide one, and its reference count, written when a
    /// stream gave its storage away and again when the stream went, moved between the cores of
    /// two event loops on every stream.
    func takeStorage(placeholder: CircularBuffer<ByteBuffer>) -> Storage {
        headerBytes.removeAll()
        fields.removeAll(keepingCapacity: true)
        pending.removeAll(keepingCapacity: true)  // already empty when the session closed the stream
        let s = Storage(headerBytes: headerBytes, fields: fields, pending: pending)
        headerBytes = PackedBytes(capacity: 0)
        fields = []
        pending = placeholder
        return s
    }

    func append(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let nameRange = headerBytes.append(name)
        let valueRange = headerBytes.append(value)
        if name.first == UInt8(ascii: ":") {
            // nghttp2 has checked that pseudo-fields come first, once each, and are known.
            switch name.count {
            case 5 where Self.same(name, ":path"): path = valueRange
            case 7 where Self.same(name, ":method"): method = valueRange
            case 7 where Self.same(name, ":scheme"): scheme = valueRange
            case 10 where Self.same(name, ":authority"): authority = valueRange
            default: break
            }
            return
        }
        fields.append(HTTP2Field(name: nameRange, value: valueRange))
    }

    /// Compared with memcmp: `elementsEqual` against a String's UTF-8 view iterates it.
    public static func same(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        same(bytes, UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    public static func same(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }

    /// True when field `f`'s name equals `name` (lower-case ASCII; h2 names are lower-case).
    public func fieldNamed(_ f: HTTP2Field, _ name: StaticString) -> Bool {
        guard f.name.count == name.utf8CodeUnitCount else { return false }
        // One access to the array, not one per byte (each is an exclusivity check).
        return headerBytes.withUnsafeBytes { Self.same(UnsafeRawBufferPointer(rebasing: $0[f.name]), name) }
    }
}
