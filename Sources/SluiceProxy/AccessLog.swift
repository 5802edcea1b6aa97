import Dispatch
import NIOCore
import SluiceUpstream
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public enum AccessLogFormat: String, Sendable {
    case json, combined
}

/// Where access log lines go: standard output or a file (reopened on SIGUSR1 for logrotate).
/// Lines arrive in batches from the event loops and are written on one background queue, so a
/// slow disk never blocks a request.
public final class AccessLogWriter: Sendable {
    public let path: String?
    public let format: AccessLogFormat
    private let queue = DispatchQueue(label: "sluice.access-log")
    private let fd = Mutex<Int32>(-1)

    /// `path` nil writes to standard output.
    public init(path: String?, format: AccessLogFormat) throws {
        self.path = path
        self.format = format
        if let path {
            let f = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard f >= 0 else { throw AccessLogError(path: path, errno: errno) }
            fd.withLock { $0 = f }
        } else {
            fd.withLock { $0 = STDOUT_FILENO }
        }
    }

    func submit(_ batch: [UInt8]) {
        queue.async {
            self.fd.withLock { f in
                batch.withUnsafeBytes { p in
                    var off = 0
                    while off < p.count {
                        let n = write(f, p.baseAddress! + off, p.count - off)
                        if n <= 0 {
                            if n < 0 && errno == EINTR { continue }
                            return
                        }
                        off += n
                    }
                }
            }
        }
    }

    /// After logrotate moved the file: open the path again (lines already queued go first).
    public func reopen() {
        guard let path else { return }
        queue.async {
            let f = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard f >= 0 else { return }
            self.fd.withLock { old in
                close(old)
                old = f
            }
        }
    }

    /// Waits until every submitted batch is written (shutdown, tests).
    public func sync() {
        queue.sync {}
    }
}

public struct AccessLogError: Error, CustomStringConvertible {
    var path: String
    var errno: Int32
    public var description: String { "cannot open access log \(path): \(String(cString: strerror(errno)))" }
}

/// What a request contributes to its access log line, captured from the head while its bytes
/// are still in the receive buffer (into storage the connection reuses).
struct AccessLogFields {
    var bytes: [UInt8] = []
    var method = 0..<0
    var host = 0..<0
    var path = 0..<0
    var userAgent = 0..<0
    var referer = 0..<0
    var requestID = 0..<0
    var proto: StaticString = "HTTP/1.1"

    init() { bytes.reserveCapacity(256) }

    mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        method = 0..<0
        host = 0..<0
        path = 0..<0
        userAgent = 0..<0
        referer = 0..<0
        requestID = 0..<0
    }

    mutating func keep(_ p: UnsafeRawBufferPointer) -> Range<Int> {
        let s = bytes.count
        bytes.append(contentsOf: p)
        return s..<bytes.count
    }

    mutating func keepHex(_ id: (UInt64, UInt64)) -> Range<Int> {
        let s = bytes.count
        let hex = HeadWriter.hexDigits.utf8Start
        for v in [id.0, id.1] {
            for k in stride(from: 15, through: 0, by: -1) { bytes.append(hex[Int((v >> (4 * UInt64(k))) & 0xF)]) }
        }
        return s..<bytes.count
    }
}

/// The accounting of one request, filled in as it goes and handed to `EventLoopContext.finish`.
struct ExchangeRecord {
    var open = false
    var start = NIODeadline.uptimeNanoseconds(0)
    var stat: Int32 = StatRegistry.unrouted
    var endpoint: Endpoint? = nil
    var endpointID: Int32 = -1
    var upstreamStart: NIODeadline? = nil
    var upstreamNanos: Int64 = -1
    var upstreamStatus = 0
    var upstreamFailed = false
    var bytesIn = 0
    var bytesOut = 0
    var retried = false

    mutating func begin(now: NIODeadline, bytesIn: Int) {
        self = ExchangeRecord()
        open = true
        start = now
        self.bytesIn = bytesIn
    }

    mutating func upstreamDone(now: NIODeadline) {
        if let s = upstreamStart, upstreamNanos < 0 { upstreamNanos = (now - s).nanoseconds }
    }
}

/// One event loop's access log lines, handed to the writer in batches (every 32 KiB, and at
/// least every 200 ms).
final class AccessLogBuffer {
    let writer: AccessLogWriter
    private var lines: [UInt8] = []
    private var second: Int64 = -1
    private var stamp: [UInt8] = []

    init(writer: AccessLogWriter) {
        self.writer = writer
        lines.reserveCapacity(40 * 1024)
    }

    func flush() {
        guard !lines.isEmpty else { return }
        writer.submit(lines)
        lines.removeAll(keepingCapacity: true)
    }

    /// The formatted time, rebuilt once a second.
    private func timestamp() -> [UInt8] {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        if Int64(ts.tv_sec) == second { return stamp }
        second = Int64(ts.tv_sec)
        var t = time_t(ts.tv_sec)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        var buf = [Int8](repeating: 0, count: 64)
        let fmt = writer.format == .json ? "%Y-%m-%dT%H:%M:%SZ" : "%d/%b/%Y:%H:%M:%S +0000"
        let n = strftime(&buf, buf.count, fmt, &tmv)
        stamp = buf[0..<n].map { UInt8(bitPattern: $0) }
        return stamp
    }

    func append(_ r: ExchangeRecord, fields f: AccessLogFields, status: Int, client: [UInt8], route: [UInt8], now: NIODeadline) {
        let duration = (now - r.start).nanoseconds
        f.bytes.withUnsafeBytes { p in
            func field(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: p[range]) }
            switch writer.format {
            case .json:
                lines += #"{"time":""#.utf8
                lines += timestamp()
                lines += #"","client":""#.utf8
                lines += client
                lines += #"","method":""#.utf8
                json(field(f.method))
                lines += #"","host":""#.utf8
                json(field(f.host))
                lines += #"","path":""#.utf8
                json(field(f.path))
                lines += #"","protocol":""#.utf8
                lines += UnsafeRawBufferPointer(start: f.proto.utf8Start, count: f.proto.utf8CodeUnitCount)
                lines += #"","status":"#.utf8
                decimal(status)
                lines += #","bytes":"#.utf8
                decimal(r.bytesOut)
                lines += #","duration_ms":"#.utf8
                millis(duration)
                lines += #","upstream":"#.utf8
                if let e = r.endpoint {
                    lines.append(UInt8(ascii: "\""))
                    lines += e.description.utf8
                    lines.append(UInt8(ascii: "\""))
                    lines += #","upstream_status":"#.utf8
                    if r.upstreamStatus > 0 { decimal(r.upstreamStatus) } else { lines += "null".utf8 }
                    lines += #","upstream_ms":"#.utf8
                    if r.upstreamNanos >= 0 { millis(r.upstreamNanos) } else { lines += "null".utf8 }
                } else {
                    lines += #"null,"upstream_status":null,"upstream_ms":null"#.utf8
                }
                lines += #","request_id":""#.utf8
                json(field(f.requestID))
                lines += #"","route":""#.utf8
                lines += route
                lines += "\"}\n".utf8
            case .combined:
                // nginx's "combined", then the fields it lacks as key=value pairs.
                lines += client
                lines += " - - [".utf8
                lines += timestamp()
                lines += "] \"".utf8
                if f.method.isEmpty {
                    // Refused before a request line was understood.
                    lines.append(UInt8(ascii: "-"))
                } else {
                    quoted(field(f.method))
                    lines.append(UInt8(ascii: " "))
                    quoted(field(f.path))
                    lines.append(UInt8(ascii: " "))
                    lines += UnsafeRawBufferPointer(start: f.proto.utf8Start, count: f.proto.utf8CodeUnitCount)
                }
                lines += "\" ".utf8
                decimal(status)
                lines.append(UInt8(ascii: " "))
                decimal(r.bytesOut)
                lines += " \"".utf8
                quoted(field(f.referer))
                lines += "\" \"".utf8
                quoted(field(f.userAgent))
                lines += "\" host=".utf8
                lines += f.host.isEmpty ? Array("-".utf8)[...] : f.bytes[f.host]
                lines += " rt=".utf8
                seconds(duration)
                lines += " upstream=".utf8
                if let e = r.endpoint { lines += e.description.utf8 } else { lines.append(UInt8(ascii: "-")) }
                lines += " us=".utf8
                if r.upstreamStatus > 0 { decimal(r.upstreamStatus) } else { lines.append(UInt8(ascii: "-")) }
                lines += " urt=".utf8
                if r.upstreamNanos >= 0 { seconds(r.upstreamNanos) } else { lines.append(UInt8(ascii: "-")) }
                lines += " rid=".utf8
                lines += f.requestID.isEmpty ? Array("-".utf8)[...] : f.bytes[f.requestID]
                lines += " route=\"".utf8
                lines += route
                lines += "\"\n".utf8
            }
        }
        if lines.count >= 32 * 1024 { flush() }
    }

    // MARK: Formatting

    private func decimal(_ v: Int) {
        if v < 0 {
            lines.append(UInt8(ascii: "-"))
            decimal(-v)
            return
        }
        if v >= 10 { decimal(v / 10) }
        lines.append(UInt8(truncatingIfNeeded: 0x30 + v % 10))
    }

    private func millis(_ nanos: Int64) { thousandths(Int(nanos / 1000)) }

    private func seconds(_ nanos: Int64) { thousandths(Int(nanos / 1_000_000)) }

    /// `n / 1000` with three decimals.
    private func thousandths(_ n: Int) {
        decimal(n / 1000)
        lines.append(UInt8(ascii: "."))
        let frac = n % 1000
        lines.append(UInt8(truncatingIfNeeded: 0x30 + frac / 100))
        lines.append(UInt8(truncatingIfNeeded: 0x30 + (frac / 10) % 10))
        lines.append(UInt8(truncatingIfNeeded: 0x30 + frac % 10))
    }

    /// JSON string content: the head bytes are visible ASCII, but `"` and `\` need escaping and
    /// anything else (obs-text in a User-Agent, say) is written as \u00XX.
    private func json(_ p: UnsafeRawBufferPointer) {
        for b in p {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                lines.append(UInt8(ascii: "\\"))
                lines.append(b)
            case 0x20..<0x7F:
                lines.append(b)
            default:
                let hex = HeadWriter.hexDigits.utf8Start
                lines += "\\u00".utf8
                lines.append(hex[Int(b >> 4)])
                lines.append(hex[Int(b & 0xF)])
            }
        }
    }

    /// Inside a quoted field of the combined format: `"` and `\` escaped as nginx does (\x22).
    private func quoted(_ p: UnsafeRawBufferPointer) {
        if p.isEmpty {
            lines.append(UInt8(ascii: "-"))
            return
        }
        for b in p {
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b < 0x20 || b >= 0x7F {
                let hex = HeadWriter.hexDigits.utf8Start
                lines += "\\x".utf8
                lines.append(hex[Int(b >> 4)])
                lines.append(hex[Int(b & 0xF)])
            } else {
                lines.append(b)
            }
        }
    }
}
