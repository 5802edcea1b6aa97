import Foundation
import Testing

/// Request smuggling and desync, table-driven against the running proxy and an echo backend
/// that logs every request head it receives. Each case ends in one of two ways: a 4xx (or 501/505)
/// and a closed connection with nothing at the backend, or exactly the one legitimate request at
/// the backend, re-framed by the proxy, and never the smuggled one.
@Suite("desync and smuggling", .serialized)
struct DesyncTests {
    /// (name, request bytes). `PATH` is replaced by the case's legitimate path, `SMUGGLED` by a
    /// path that must never reach the backend.
    static let cases: [(String, String)] = [
        // CL + TE in every order and spelling.
        ("CL then TE", "POST PATH HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("TE then CL", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("TE upper case with CL", "POST PATH HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: CHUNKED\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        // Transfer-Encoding variants.
        ("TE chunked, gzip", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("TE xchunked", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("TE quoted", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"),
        ("TE leading comma", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("TE trailing comma", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("TE vertical tab", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\u{0B}\r\n\r\n0\r\n\r\n"),
        ("TE control byte before", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \u{01}chunked\r\n\r\n0\r\n\r\n"),
        ("TE high byte", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\u{FF}\r\n\r\n0\r\n\r\n"),
        ("TE twice", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE on HTTP/1.0", "POST PATH HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"),
        // Content-Length forms.
        ("CL twice, different", "POST PATH HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc"),
        ("CL list", "POST PATH HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc"),
        ("CL with sign", "POST PATH HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"),
        ("CL with space inside", "POST PATH HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\nabc"),
        ("CL empty", "POST PATH HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"),
        ("CL hex", "POST PATH HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc"),
        // Chunk-size abuse.
        ("chunk size signed", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\na\r\n0\r\n\r\n"),
        ("chunk size 0x", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\na\r\n0\r\n\r\n"),
        ("chunk size underscore", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\naaaaaaaaaaaaaaaa\r\n0\r\n\r\n"),
        ("chunk size space", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 1\r\na\r\n0\r\n\r\n"),
        ("chunk size 17 digits", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\na\r\n0\r\n\r\n"),
        ("chunk data longer", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n"),
        ("chunk data shorter", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nab\r\n0\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("missing last chunk", "POST PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n"),
        // Field-name faults and values.
        ("space before colon", "GET PATH HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("tab before colon", "GET PATH HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n"),
        ("empty field name", "GET PATH HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"),
        ("non-token name", "GET PATH HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n"),
        ("line without colon", "GET PATH HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n"),
        ("CR in value", "GET PATH HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"),
        ("NUL in value", "GET PATH HTTP/1.1\r\nHost: a\r\nX-A: b\u{0}c\r\n\r\n"),
        ("bare CR line end", "GET PATH HTTP/1.1\rHost: a\r\n\r\n"),
        ("bare LF line ends", "GET PATH HTTP/1.1\nHost: a\n\nGET SMUGGLED HTTP/1.1\nHost: a\n\n"),
        // Request-line faults.
        ("lower-case version", "GET PATH http/1.1\r\nHost: a\r\n\r\n"),
        ("version 1.10", "GET PATH HTTP/1.10\r\nHost: a\r\n\r\n"),
        ("version 0.9 style", "GET PATH\r\n\r\n"),
        ("space in target", "GET PATH x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("control byte in target", "GET PATH\u{01} HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("two spaces after method", "GET  PATH HTTP/1.1\r\nHost: a\r\n\r\n"),
        // Host faults.
        ("no Host", "GET PATH HTTP/1.1\r\n\r\n"),
        ("two Hosts", "GET PATH HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("Host with userinfo", "GET PATH HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        ("Host with NUL", "GET PATH HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n"),
        ("Host with path", "GET PATH HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        // Bodies and pipelining.
        ("GET with body", "GET PATH HTTP/1.1\r\nHost: a\r\nContent-Length: AUTO\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\nX: 1234\r\n\r\n"),
        ("pipelined after close", "GET PATH HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("absolute form", "GET http://a.example/x HTTP/1.1\r\nHost: other\r\n\r\n"),
    ]

    @Test func everyCaseIsRefusedOrForwardedUnambiguously() throws {
        let s = try Stack(logRequests: true)
        let backend = s.backends[0].process
        var refused = 0, forwarded = 0
        for (i, (name, template)) in Self.cases.enumerated() {
            let path = "/case\(i)", smuggled = "/smuggled\(i)"
            var request = template.replacingOccurrences(of: "SMUGGLED", with: smuggled).replacingOccurrences(of: "PATH", with: path)
            if let end = request.range(of: "\r\n\r\n") {
                // `AUTO`: a Content-Length that covers exactly what follows the head.
                request = request.replacingOccurrences(of: "Content-Length: AUTO", with: "Content-Length: \(request[end.upperBound...].utf8.count)")
            }
            let c = try RawClient(port: s.port)
            c.send(Array(request.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) }))
            c.shutdownWrite()
            let (text, closed) = c.receiveUntilClosed(timeout: 5)
            usleep(50_000)
            let log = backend.output
            #expect(!log.contains("received GET \(smuggled) "), "\(name): the smuggled request reached the backend")
            let statuses = statusLines(text)
            let first = statuses.first.flatMap { Int($0.dropFirst(9).prefix(3)) } ?? 0
            if statuses.isEmpty {
                // Closed without an answer (the body never completed): nothing may have been
                // forwarded as a complete request.
                refused += 1
                #expect(closed, "\(name): no answer and the connection stayed open")
            } else if first >= 400 {
                refused += 1
                #expect(closed, "\(name): refused but the connection stayed open")
                #expect(!log.contains(" \(path) "), "\(name): refused, yet something reached the backend")
                #expect([400, 404, 405, 411, 413, 414, 417, 431, 501, 505].contains(first), "\(name): \(first)")
            } else {
                forwarded += 1
                print("desync case forwarded unambiguously: \(name)")
                let reached = log.components(separatedBy: "\n").filter { $0.contains("received ") && ($0.contains(" \(path) ") || $0.contains(" /x ")) }
                #expect(reached.count == 1, "\(name): \(reached.count) requests reached the backend: \(reached)")
                #expect(statuses.count == 1, "\(name): \(statuses)")
            }
        }
        #expect(refused > 35 && forwarded >= 3, "refused \(refused), forwarded \(forwarded)")
    }

    @Test func routingUsesTheNormalisedPathAndForwardsTheClients() throws {
        let stack = try Stack(backends: ["admin", "site"], defaultBackend: false)
        stack.proxy.stop()
        let rules = emptyDirectory()
        try (stack.servicesYAML + """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: p}
        spec:
          rules:
          - host: p.local
            http:
              paths:
              - {path: /admin, pathType: Prefix, backend: {service: {name: admin, port: {number: 80}}}}
              - {path: /, pathType: Prefix, backend: {service: {name: site, port: {number: 80}}}}
        """).writeWhole(toFile: rules + "/p.yaml")
        let proxy = try ChildProcess(Paths.sluice, ["serve", "--rules", rules, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        defer { proxy.stop() }
        let port = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
        // (path as sent, backend expected; nil: refused)
        let cases: [(String, String?)] = [
            ("/admin/x", "admin"), ("/public/../admin", "admin"), ("/%61dmin", "admin"), ("/./admin", "admin"),
            ("/admin/../public", "site"), ("/admin%2Fx", "site"), ("/adminx", "site"), ("/%2e%2e/admin", nil),
        ]
        for (path, expected) in cases {
            let c = try RawClient(port: port)
            c.send("GET \(path) HTTP/1.1\r\nHost: p.local\r\nConnection: close\r\n\r\n")
            let text = c.receiveUntilClosed().text
            if let expected {
                #expect(text.contains("\"backend\":\"\(expected)\""), "\(path) should reach \(expected): \(text.prefix(200))")
                // The upstream gets the client's path, not the normalised one.
                #expect(text.contains("\"path\":\"\(path)\""), "\(path) was rewritten: \(text.prefix(300))")
            } else {
                #expect(text.hasPrefix("HTTP/1.1 400 "), "\(path): \(text.prefix(120))")
            }
        }
    }
}
