import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Locating things

enum Paths {
    static let repo: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The `sluice` binary under test: $SLUICE_BIN, else the newest of the release and debug builds.
    static let sluice: String = {
        if let p = ProcessInfo.processInfo.environment["SLUICE_BIN"] { return p }
        let candidates = [".build/release/sluice", ".build/debug/sluice"].map { repo.appendingPathComponent($0).path }
        let existing = candidates.filter { FileManager.default.isExecutableFile(atPath: $0) }
        func mtime(_ p: String) -> Date {
            ((try? FileManager.default.attributesOfItem(atPath: p))?[.modificationDate] as? Date) ?? .distantPast
        }
        return existing.max { mtime($0) < mtime($1) } ?? candidates[0]
    }()

    static func tool(_ name: String) -> String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"] {
            let p = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}

// MARK: - Processes

/// A child process whose output is collected, ended by PID when the test is done.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let out = Pipe()
    private let lock = NSLock()
    private var collected = Data()
    /// The pipe reached end of file: everything the child (and its children) wrote is in `collected`.
    private var drained = false

    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardOutput = out
        process.standardError = out
        out.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self else { return }
            self.lock.lock()
            if d.isEmpty { self.drained = true } else { self.collected.append(d) }
            self.lock.unlock()
            // At end of file the handler would be called again and again.
            if d.isEmpty { h.readabilityHandler = nil }
        }
        try process.run()
    }

    var output: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: collected, as: UTF8.self)
    }

    private var isDrained: Bool {
        lock.lock()
        defer { lock.unlock() }
        return drained
    }

    var pid: Int32 { process.processIdentifier }

    /// Whether `text` shows up in the output within `timeout` seconds. The output arrives through a
    /// pipe read on another thread, so a line the child wrote before the test's own observation
    /// may not be here yet; a single look at `output` races it. Keeps looking after the child
    /// exits too: what it wrote last may still be in the pipe.
    func shows(_ text: String, within timeout: Double = 5) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if output.contains(text) { return true }
            if Date() >= deadline { return false }
            usleep(20_000)
        }
    }

    /// Waits until the output matches `pattern` and returns the first capture group.
    func waitFor(_ pattern: String, timeout: Double = 20) throws -> String {
        let regex = try NSRegularExpression(pattern: pattern)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let text = output
            if let m = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) {
                if m.numberOfRanges > 1, let r = Range(m.range(at: 1), in: text) { return String(text[r]) }
                return String(text[Range(m.range, in: text)!])
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        throw TestFailure("'\(pattern)' not seen in output of \(process.executableURL!.lastPathComponent): \(output)")
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits for exit; returns the status, or nil on timeout.
    func waitForExit(timeout: Double = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { return nil }
        // What the child wrote last may still be in the pipe; callers read `output` next.
        while !isDrained && Date() < deadline.addingTimeInterval(2) { usleep(5_000) }
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        out.fileHandleForReading.readabilityHandler = nil
    }

    deinit { stop() }

    /// Peak resident memory of the process in KiB (VmHWM), or current RSS with `peak: false`.
    func memoryKiB(peak: Bool = true) -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        let key = peak ? "VmHWM:" : "VmRSS:"
        for line in s.split(separator: "\n") where line.hasPrefix(key) {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

// MARK: - A proxy with echo backends

/// `sluice echo` backends and a `sluice serve` in front of them, on free loopback ports.
final class Stack: @unchecked Sendable {
    var backends: [(name: String, port: Int, process: ChildProcess)] = []
    var proxy: ChildProcess!
    var port = 0

    /// Starts `names.count` echo backends; with `defaultBackend`, the proxy forwards everything to the first.
    init(backends names: [String] = ["a"], proxyArguments: [String] = [], defaultBackend: Bool = true, logRequests: Bool = false) throws {
        for n in names { try startBackend(n, logRequests: logRequests) }
        var args = ["serve", "--admin", "127.0.0.1:0", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--workers", "2", "--rules", emptyDirectory(), "--drain-timeout", "10"]
        if defaultBackend, let first = backends.first { args += ["--default-backend", "127.0.0.1:\(first.port)"] }
        args += proxyArguments
        proxy = try ChildProcess(Paths.sluice, args)
        port = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
    }

    func startBackend(_ name: String, port: Int = 0, logRequests: Bool = false) throws {
        let p = try ChildProcess(Paths.sluice, ["echo", "--listen", "127.0.0.1:\(port)", "--name", name] + (logRequests ? ["--log-requests"] : []))
        let bound = Int(try p.waitFor(#"listening on \S*:(\d+)"#))!
        backends.append((name, bound, p))
    }

    var base: String { "http://127.0.0.1:\(port)" }

    /// A Service and an EndpointSlice (default namespace) for each echo backend, for rules folders.
    var servicesYAML: String {
        backends.map { b in
            """
            apiVersion: v1
            kind: Service
            metadata: {name: \(b.name)}
            spec: {ports: [{port: 80, targetPort: \(b.port)}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: \(b.name)-1, labels: {kubernetes.io/service-name: \(b.name)}}
            addressType: IPv4
            ports: [{port: \(b.port)}]
            endpoints: [{addresses: [127.0.0.1]}]
            ---

            """
        }.joined()
    }

    func stop() {
        proxy?.stop()
        for b in backends { b.process.stop() }
    }

    deinit { stop() }
}

func emptyDirectory() -> String {
    let dir = scratchPath("sluice-empty")
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

// MARK: - Scratch files

/// Paths the tests made under the temporary directory, removed when the test process exits
/// (runs used to leave thousands of them in /tmp).
private let scratchPaths = Mutex<[String]>([])
private let removeScratchAtExit: Void = {
    atexit {
        for p in scratchPaths.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: p) }
    }
}()

/// A fresh path under the temporary directory (nothing is created), removed at exit.
func scratchPath(_ prefix: String, suffix: String = "") -> String {
    _ = removeScratchAtExit
    let p = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)\(suffix)").path
    scratchPaths.withLock { $0.append(p) }
    return p
}

extension String {
    /// Writes the file whole, as an editor or `kubectl` would: a temporary file beside it, then
    /// rename(2), so a watcher never reads half of it. (Foundation's `atomically: true` does the
    /// same through a `/tmp/TemporaryDirectory.*` that it never removes.)
    func writeWhole(toFile path: String) throws {
        let url = URL(fileURLWithPath: path)
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp").path
        try write(toFile: tmp, atomically: false, encoding: .utf8)
        guard rename(tmp, path) == 0 else {
            let e = errno
            try? FileManager.default.removeItem(atPath: tmp)
            throw TestFailure("rename \(tmp) -> \(path): errno \(e)")
        }
    }
}

// MARK: - Clients

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a real client (curl, python3, wrk …) to completion, bounded by `timeout`.
@discardableResult
func run(_ executable: String, _ arguments: [String], input: Data? = nil, timeout: Double = 60) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : (Paths.tool(executable) ?? executable))
    p.arguments = arguments
    let tmp = FileManager.default.temporaryDirectory
    let outURL = tmp.appendingPathComponent("sluice-test-out-\(UUID())")
    let errURL = tmp.appendingPathComponent("sluice-test-err-\(UUID())")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    let outHandle = try FileHandle(forWritingTo: outURL)
    let errHandle = try FileHandle(forWritingTo: errURL)
    p.standardOutput = outHandle
    p.standardError = errHandle
    let i = Pipe()
    p.standardInput = i
    try p.run()
    if let input { i.fileHandleForWriting.write(input) }
    try? i.fileHandleForWriting.close()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning {
        p.terminate()
    }
    p.waitUntilExit()
    try? outHandle.close()
    try? errHandle.close()
    let out = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
    let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    return CommandResult(status: p.terminationStatus, stdout: out, stderr: err)
}

func curl(_ args: [String], timeout: Double = 60) throws -> CommandResult {
    try run("curl", ["-sS", "--max-time", String(Int(timeout))] + args, timeout: timeout + 5)
}

/// A blocking TCP client for byte-exact requests.
final class RawClient {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if r != 0 { throw TestFailure("connect to \(port) failed: errno \(errno)") }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    @discardableResult func send(_ s: String) -> Bool { send(Array(s.utf8)) }

    /// False when the connection refused the bytes (reset, or closed for writing).
    @discardableResult func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the peer closes, `until` appears, or the timeout passes.
    func receive(until marker: String? = nil, timeout: Double = 5) -> (text: String, closed: Bool) {
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (String(decoding: data, as: UTF8.self), true) }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { continue }
                return (String(decoding: data, as: UTF8.self), true)
            }
            data += buf[0..<n]
            if let marker, String(decoding: data, as: UTF8.self).contains(marker) { break }
        }
        return (String(decoding: data, as: UTF8.self), false)
    }

    /// Reads raw bytes until `done` says they are enough, the peer closes, or the timeout passes.
    func receiveBytes(timeout: Double = 5, until done: ([UInt8]) -> Bool) -> (bytes: [UInt8], closed: Bool) {
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (data, true) }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { continue }
                return (data, true)
            }
            data += buf[0..<n]
            if done(data) { break }
        }
        return (data, false)
    }

    /// Reads until the peer closes (or the timeout): whether it closed, and everything received.
    func receiveUntilClosed(timeout: Double = 5) -> (text: String, closed: Bool) {
        receive(until: nil, timeout: timeout)
    }
}

// MARK: - Raw HTTP/2 frames

/// Just enough HTTP/2 to stall a request body, which no real client can be made to do: frames
/// are built by hand, and header blocks use only HPACK's static table and literal strings.
enum RawH2 {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    struct Frame {
        var type: UInt8
        var flags: UInt8
        var stream: UInt32
        var payload: [UInt8]
    }

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// POST `path` to `authority` over http: a HEADERS frame without END_STREAM (a body follows).
    static func postHeaders(stream: UInt32, path: String, authority: String) -> [UInt8] {
        func literal(nameIndex: UInt8, _ value: String) -> [UInt8] {
            [nameIndex, UInt8(value.utf8.count)] + Array(value.utf8)  // literal without indexing, raw string (< 127 bytes)
        }
        let block: [UInt8] = [0x83, 0x86] + literal(nameIndex: 0x04, path) + literal(nameIndex: 0x01, authority)
        return frame(type: 1, flags: 0x4, stream: stream, block)  // END_HEADERS
    }

    /// The complete frames at the start of `bytes`.
    static func frames(_ bytes: [UInt8]) -> [Frame] {
        var out: [Frame] = []
        var i = 0
        while bytes.count - i >= 9 {
            let n = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            guard bytes.count - i - 9 >= n else { break }
            let id = UInt32(bytes[i + 5] & 0x7F) << 24 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 8 | UInt32(bytes[i + 8])
            out.append(Frame(type: bytes[i + 3], flags: bytes[i + 4], stream: id, payload: Array(bytes[(i + 9)..<(i + 9 + n)])))
            i += 9 + n
        }
        return out
    }
}

/// The number of complete HTTP responses in a byte stream (status lines).
func statusLines(_ s: String) -> [String] {
    s.utf8.split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }.filter { $0.hasPrefix("HTTP/1.1 ") }
}

/// One HTTP/1.1 response read from raw bytes: 1xx heads, then the final head and its body
/// (Content-Length or chunked, decoded). `complete` is false until all of it is there.
struct HTTPResponseBytes {
    var interim: [String] = []
    var status = 0
    var body: [UInt8] = []
    var trailers: [String] = []
    var rest: [UInt8] = []
    var complete = false

    init?(_ bytes: [UInt8]) {
        var i = 0
        func line() -> String? {
            guard let end = (i..<max(i, bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }) else { return nil }
            defer { i = end + 2 }
            return String(decoding: bytes[i..<end], as: UTF8.self)
        }
        while true {
            guard let statusLine = line() else { return }
            var fields: [String] = []
            while let f = line(), !f.isEmpty { fields.append(f.lowercased()) }
            guard i <= bytes.count, bytes[..<i].suffix(4).elementsEqual("\r\n\r\n".utf8) else { return }
            let code = Int(statusLine.split(separator: " ")[1]) ?? 0
            if code < 200 {
                interim.append(statusLine)
                continue
            }
            status = code
            if let cl = fields.first(where: { $0.hasPrefix("content-length:") }) {
                let n = Int(cl.dropFirst(15).trimmingCharacters(in: .whitespaces))!
                guard bytes.count - i >= n else { return }
                body = Array(bytes[i..<i + n])
                i += n
            } else if fields.contains("transfer-encoding: chunked") {
                while true {
                    guard let sizeLine = line(), let size = Int(sizeLine, radix: 16) else { return }
                    if size == 0 { break }
                    guard bytes.count - i >= size + 2 else { return }
                    body += bytes[i..<i + size]
                    i += size
                    guard line() == "" else { return }
                }
                while true {
                    guard let t = line() else { return }
                    if t.isEmpty { break }
                    trailers.append(t.lowercased())
                }
            }
            rest = Array(bytes[i...])
            complete = true
            return
        }
    }
}
