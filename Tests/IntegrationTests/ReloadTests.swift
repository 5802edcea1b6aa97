import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live reload: files change under a running proxy while traffic flows.
@Suite("live reload", .serialized)
struct ReloadTests {
    /// Two echo backends `blue` and `green`, and a rules folder routing `app.test` to `target`.
    final class Fixture: @unchecked Sendable {
        let stack: Stack
        let dir: String
        var proxy: ChildProcess!
        var port = 0

        /// `whileStarting`: routed to this target as soon as the proxy has read its rules, before
        /// it serves.
        init(whileStarting: String? = nil) throws {
            stack = try Stack(backends: ["blue", "green"], defaultBackend: false)
            stack.proxy.stop()
            dir = emptyDirectory()
            try write(target: "blue")
            try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
            try services().write(toFile: dir + "/sub/services.yaml", atomically: false, encoding: .utf8)
            proxy = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--https", "127.0.0.1:0", "--rules", dir, "--http", "127.0.0.1:0", "--workers", "2", "--log-level", "info"])
            if let whileStarting {
                _ = try proxy.waitFor("configuration loaded")
                try write(target: whileStarting)
            }
            port = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
        }

        func services() -> String { stack.servicesYAML }

        func ingress(_ target: String, path: String = "/") -> String {
            """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: app}
            spec:
              rules:
                - host: app.test
                  http:
                    paths: [{path: "\(path)", pathType: Prefix, backend: {service: {name: \(target), port: {number: 80}}}}]
            """
        }

        /// Writes the route file in place, or as an editor does (temp file renamed over it).
        func write(target: String, renameOver: Bool = false, path: String = "/") throws {
            let file = dir + "/app.yaml"
            if renameOver {
                let tmp = dir + "/.app.yaml.swp"
                try ingress(target, path: path).write(toFile: tmp, atomically: false, encoding: .utf8)
                rename(tmp, file)
            } else {
                try ingress(target, path: path).write(toFile: file, atomically: false, encoding: .utf8)
            }
        }

        func backend() throws -> String {
            let r = try curl(["-H", "Host: app.test", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)/"])
            return r.stdout.firstMatch(of: /"backend":"([^"]+)"/).map { String($0.1) } ?? String(r.stdout.split(separator: "\n").last ?? "")
        }

        func waitFor(backend want: String, timeout: Double = 2) throws -> Double {
            let start = Date()
            while Date().timeIntervalSince(start) < timeout {
                if try backend() == want { return Date().timeIntervalSince(start) }
                usleep(20_000)
            }
            throw TestFailure("\(want) not reached within \(timeout)s; last: \(try backend())")
        }

        deinit {
            proxy?.stop()
            stack.stop()
        }
    }

    /// An in-place save truncates the file and writes it after: a reload in between must not
    /// read the empty file (the routes would vanish until the next reload).
    @Test func aFileOpenForWritingIsNotReadHalfWritten() throws {
        let f = try Fixture()
        #expect(try f.backend() == "blue")
        let file = f.dir + "/app.yaml"
        guard let h = FileHandle(forWritingAtPath: file) else { throw TestFailure("cannot open \(file)") }
        try h.truncate(atOffset: 0)  // IN_MODIFY; the writer has not closed the file yet
        // Well past the 100 ms debounce, within the 2 s a write in progress may hold a reload.
        for _ in 0..<10 {
            usleep(100_000)
            #expect(try f.backend() == "blue", "the route changed while its file was being written")
        }
        try h.write(contentsOf: Data(f.ingress("green").utf8))
        try h.close()
        _ = try f.waitFor(backend: "green", timeout: 2.0)
    }

    @Test func rewritesUnderLoadLoseNothing() throws {
        guard let wrk = Paths.tool("wrk") else {
            Issue.record("wrk is not installed (make test installs it)")
            return
        }
        let f = try Fixture()
        #expect(try f.backend() == "blue")
        let load = try ChildProcess(wrk, ["-t1", "-c50", "-d10s", "-H", "Host: app.test", "http://127.0.0.1:\(f.port)/"])
        defer { load.stop() }
        usleep(300_000)
        for i in 0..<100 {
            try f.write(target: i % 2 == 0 ? "green" : "blue", renameOver: i % 2 == 1)
            usleep(90_000)
        }
        try f.write(target: "green", renameOver: true)
        let visible = try f.waitFor(backend: "green", timeout: 1.0)
        for _ in 0..<20 { #expect(try f.backend() == "green") }
        #expect(load.waitForExit(timeout: 20) == 0)
        let out = load.output
        #expect(out.contains("Requests/sec"), "\(out)")
        #expect(!out.contains("Non-2xx"), "\(out)")
        #expect(!out.contains("Socket errors"), "\(out)")
        #expect(visible <= 1.0)
        let reloads = f.proxy.output.components(separatedBy: "reload applied").count - 1
        // Writes every 90 ms never leave 100 ms of quiet: the 1 s cap applies, so about one reload a second.
        #expect(reloads >= 5, "debounced reloads: \(reloads)")
    }

    /// A change saved while the proxy starts, after it has read the rules and before it serves,
    /// applies: the folder is watched from before the first read. (It used to be watched only
    /// once the admin listener was up, and a change in between was lost until the next one.)
    @Test func aChangeSavedWhileStartingIsNotLost() throws {
        let f = try Fixture(whileStarting: "green")
        _ = try f.waitFor(backend: "green", timeout: 2.0)
    }

    @Test func brokenFileKeepsServingAndRecovers() throws {
        let f = try Fixture()
        try f.write(target: "green")
        _ = try f.waitFor(backend: "green")
        try "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: app}\nspec: [oops\n".write(toFile: f.dir + "/app.yaml", atomically: false, encoding: .utf8)
        _ = try f.proxy.waitFor("app.yaml:\\d+: not valid YAML", timeout: 3)
        #expect(try f.backend() == "green", "the last good version still serves")
        // An invalid path in the same file: still the last good version.
        try f.write(target: "blue", path: "/a//b")
        _ = try f.proxy.waitFor("must not contain '//'", timeout: 3)
        #expect(try f.backend() == "green")
        let check = try run(Paths.sluice, ["check", "--rules", f.dir])
        #expect(check.status == 1)
        #expect(check.stdout.contains("app.yaml:8: Ingress default/app: spec.rules[0].http.paths[0].path: must not contain '//'"), "\(check.stdout)")
        // Fixed: the new version applies and the error is cleared.
        try f.write(target: "blue", renameOver: true)
        _ = try f.waitFor(backend: "blue")
        _ = try f.proxy.waitFor("resolved: .*must not contain", timeout: 3)
    }

    @Test func newFilesFoldersAndDeletionsApply() throws {
        let f = try Fixture()
        try FileManager.default.createDirectory(atPath: f.dir + "/new/deeper", withIntermediateDirectories: true)
        usleep(200_000)
        try f.ingress("green", path: "/extra").replacingOccurrences(of: "name: app}", with: "name: extra}")
            .writeWhole(toFile: f.dir + "/new/deeper/extra.yaml")
        let start = Date()
        var got = ""
        while Date().timeIntervalSince(start) < 2 {
            got = try curl(["-H", "Host: app.test", "http://127.0.0.1:\(f.port)/extra"]).stdout
            if got.contains("\"backend\":\"green\"") { break }
            usleep(20_000)
        }
        #expect(got.contains("\"backend\":\"green\""), "a file in a new subfolder applies")
        try FileManager.default.removeItem(atPath: f.dir + "/new")
        usleep(600_000)
        let after = try curl(["-H", "Host: app.test", "http://127.0.0.1:\(f.port)/extra"]).stdout
        #expect(after.contains("\"backend\":\"blue\""), "deleting the file removes its route")
    }

    @Test func symlinkSwapLikeAConfigMap() throws {
        let f = try Fixture()
        // ConfigMap layout: ..data → ..v1/, app.yaml → ..data/app.yaml
        let v1 = f.dir + "/..v1", v2 = f.dir + "/..v2"
        try FileManager.default.createDirectory(atPath: v1, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: v2, withIntermediateDirectories: true)
        try f.ingress("blue", path: "/cm").replacingOccurrences(of: "name: app}", with: "name: cm}").writeWhole(toFile: v1 + "/cm.yaml")
        try f.ingress("green", path: "/cm").replacingOccurrences(of: "name: app}", with: "name: cm}").writeWhole(toFile: v2 + "/cm.yaml")
        symlink("..v1", f.dir + "/..data")
        symlink("..data/cm.yaml", f.dir + "/cm.yaml")
        usleep(500_000)
        #expect(try curl(["-H", "Host: app.test", "http://127.0.0.1:\(f.port)/cm"]).stdout.contains("\"backend\":\"blue\""))
        symlink("..v2", f.dir + "/..data_tmp")
        rename(f.dir + "/..data_tmp", f.dir + "/..data")
        let start = Date()
        var got = ""
        while Date().timeIntervalSince(start) < 2 {
            got = try curl(["-H", "Host: app.test", "http://127.0.0.1:\(f.port)/cm"]).stdout
            if got.contains("\"backend\":\"green\"") { break }
            usleep(20_000)
        }
        #expect(got.contains("\"backend\":\"green\""))
    }

    @Test func websocketSurvivesReloads() throws {
        let f = try Fixture()
        let c = try RawClient(port: f.port)
        c.send("GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        #expect(c.receive(until: "\r\n\r\n").text.hasPrefix("HTTP/1.1 101"))
        for i in 0..<10 {
            try f.write(target: i % 2 == 0 ? "green" : "blue", renameOver: true)
            _ = try f.waitFor(backend: i % 2 == 0 ? "green" : "blue")
            let msg = "after reload \(i)"
            let payload = Array(msg.utf8)
            let mask: [UInt8] = [9, 8, 7, 6]
            c.send([0x81, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
            #expect(c.receive(until: msg).text.hasSuffix(msg))
        }
        #expect(f.proxy.output.components(separatedBy: "reload applied").count - 1 >= 10)
    }
}
