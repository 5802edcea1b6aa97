#if canImport(Glibc)
import Glibc
#endif
import SluiceHTTP1

/// libFuzzer entry: the first byte picks request or response and where the input is split; the
/// rest is parsed in two pieces the way a channel handler feeds the parser. Every event must stay
/// inside the buffer and the parser must make progress.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 1 else { return 0 }
    let control = data[0]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    var parser = HTTP1Parser(kind: control & 1 == 0 ? .request : .response,
                             limits: HTTP1Limits(maxLineLength: 512, maxHeadLength: 2048, maxFieldCount: 20))
    parser.responseToHead = control & 2 != 0
    let split = bytes.isEmpty ? 0 : Int(control >> 2) % (bytes.count + 1)
    var pending: [UInt8] = []
    for piece in [bytes[..<split], bytes[split...]] {
        pending += piece
        var steps = 0
        loop: while true {
            steps += 1
            precondition(steps < 100_000, "no progress")
            let n = pending.count
            let event = pending.withUnsafeBytes { parser.parse($0) }
            switch event {
            case .needMore(let c):
                precondition(c >= 0 && c <= n)
                pending.removeFirst(c)
                break loop
            case .head(let c):
                precondition(c > 0 && c <= n)
                let h = parser.head
                for f in h.fields { precondition(f.line.upperBound <= c && f.name.lowerBound <= f.value.lowerBound) }
                precondition(h.startLine.upperBound <= c)
                pending.removeFirst(c)
            case .body(let r, let c):
                precondition(r.lowerBound >= 0 && r.upperBound <= c && c <= n && c > 0)
                pending.removeFirst(c)
            case .end(let t, let c):
                precondition(t.upperBound <= c && c <= n)
                pending.removeFirst(c)
            case .error:
                return 0
            }
        }
    }
    _ = parser.finish()
    return 0
}

#if !FUZZING
/// Without libFuzzer (a plain `swift build`), replay the files named on the command line.
@main
struct Replay {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let f = fopen(path, "rb") else { continue }
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = fread(&buf, 1, buf.count, f)
                if n <= 0 { break }
                bytes += buf[0..<n]
            }
            fclose(f)
            _ = bytes.withUnsafeBufferPointer { fuzz($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
        }
    }
}
#endif
