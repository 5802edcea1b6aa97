import Foundation
import Testing

/// A backend that answers with whatever bytes a test asks for, to check that responses are parsed
/// as strictly as requests.
let badBackendScript = #"""
import socket, sys, threading
RESPONSES = {
    b"/cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
    b"/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
    b"/nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
    b"/huge-head": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 700) for i in range(99)) + b"Content-Length: 2\r\n\r\nhi",
    b"/bad-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"/short": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"/reset": b"",
    b"/good": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood",
}
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d: return c.close()
        data += d
    path = data.split(b" ")[1]
    c.sendall(RESPONSES.get(path, RESPONSES[b"/good"]))
    if path != b"/good":
        c.close()
        return
    serve(c)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(64)
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""#

@Suite("upstream faults", .serialized)
struct UpstreamFaultTests {
    @Test func malformedResponsesBecome502() throws {
        let script = scratchPath("sluice-bad-backend") + ".py"
        try badBackendScript.writeWhole(toFile: script)
        defer { try? FileManager.default.removeItem(atPath: script) }
        let backend = try ChildProcess(Paths.tool("python3") ?? "/usr/bin/python3", [script])
        defer { backend.stop() }
        let port = Int(try backend.waitFor(#"listening on \S*:(\d+)"#))!
        let proxy = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--https", "127.0.0.1:0", "--rules", emptyDirectory(), "--http", "127.0.0.1:0",
                                                    "--default-backend", "127.0.0.1:\(port)"])
        defer { proxy.stop() }
        let p = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
        for path in ["/cl-and-te", "/bare-lf", "/nul", "/huge-head", "/bad-status", "/reset"] {
            let r = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(p)\(path)"])
            #expect(r.stdout == "502", "\(path): \(r.stdout)")
        }
        #expect(proxy.output.contains("upstream sent an invalid response"))
        // A response cut short after its head: the client sees a truncated body and a closed
        // connection (curl error 18), never a complete-looking response.
        let short = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(p)/short"])
        #expect(short.status == 18, "curl exit \(short.status)")
        // The proxy still serves afterwards.
        let good = try curl(["http://127.0.0.1:\(p)/good"])
        #expect(good.stdout == "good")
    }
}
