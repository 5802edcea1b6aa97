import Foundation
import Testing

/// The tools the benchmark scripts start, checked here so that a floor they report is a working
/// proxy's floor.
@Suite("benchmark tools", .serialized)
struct BenchmarkToolTests {
    /// `sluice bench-pipe`: every client connection is piped, unparsed, to one connection of its
    /// own to the target, both ways, for as long as the client keeps it.
    @Test func benchPipeIsOneUpstreamConnectionPerClientConnection() throws {
        let backend = try ChildProcess(Paths.sluice, ["echo", "--listen", "127.0.0.1:0", "--name", "floor"])
        let backendPort = try backend.waitFor(#"listening on \S*:(\d+)"#)
        let pipe = try ChildProcess(Paths.sluice, ["bench-pipe", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:\(backendPort)"])
        let port = try pipe.waitFor(#"listening on \S*:(\d+),"#)
        let r = try curl(["http://127.0.0.1:\(port)/one", "http://127.0.0.1:\(port)/two", "-H", "Host: floor.test"])
        let bodies = r.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }
        let answers = try bodies.map { line -> [String: Any] in
            guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { throw TestFailure("not JSON: \(line)") }
            return o
        }
        #expect(answers.map { $0["path"] as? String } == ["/one", "/two"])
        #expect(answers.map { $0["conn_seq"] as? Int } == [1, 2], "both requests on the one upstream connection")
        // Unparsed: the client's head arrives as it was sent, with nothing added.
        #expect(answers.allSatisfy { ($0["headers"] as? [String: String])?["host"] == "floor.test" })
        #expect(answers.allSatisfy { ($0["headers"] as? [String: String])?["x-forwarded-for"] == nil })
        let second = try curl(["http://127.0.0.1:\(port)/three"])
        #expect(second.stdout.contains("\"conn_seq\":1"), "a new client connection gets a new upstream connection")
    }
}
