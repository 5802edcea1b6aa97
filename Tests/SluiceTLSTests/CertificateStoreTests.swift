import Foundation
import SluiceTLS
import Testing

/// Certificate selection by server name, with real OpenSSL contexts from generated certificates.
struct CertificateStoreTests {
    static func makeContext(_ cn: String) throws -> TLSContext {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-tls-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj '/CN=\(cn)' -keyout \(dir)/k -out \(dir)/c 2>/dev/null"]
        try p.run()
        p.waitUntilExit()
        return try TLSContext(certificatePEM: String(contentsOfFile: dir + "/c", encoding: .utf8),
                              privateKeyPEM: String(contentsOfFile: dir + "/k", encoding: .utf8))
    }

    @Test func exactThenWildcardThenDefault() throws {
        let dflt = try Self.makeContext("default"), exact = try Self.makeContext("a.test"), wild = try Self.makeContext("*.b.test")
        var store = CertificateStore(defaultContext: dflt)
        store.add(name: "a.test", exact)
        store.add(name: "*.b.test", wild)
        #expect(store.context(for: "a.test")?.subject == "a.test")
        #expect(store.context(for: "A.TEST.")?.subject == "a.test")
        #expect(store.context(for: "x.b.test")?.subject == "*.b.test")
        #expect(store.context(for: "y.x.b.test")?.subject == "default")
        #expect(store.context(for: "b.test")?.subject == "default")
        #expect(store.context(for: nil)?.subject == "default")
    }

    @Test func mismatchedKeyIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-tls-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "cd \(dir) && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=one -keyout k1 -out c1 2>/dev/null && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out k2 2>/dev/null"]
        try p.run()
        p.waitUntilExit()
        let cert = try String(contentsOfFile: dir + "/c1", encoding: .utf8)
        #expect(try TLSContext(certificatePEM: cert, privateKeyPEM: String(contentsOfFile: dir + "/k1", encoding: .utf8)).subject == "one")
        #expect(throws: TLSError.self) {
            _ = try TLSContext(certificatePEM: cert, privateKeyPEM: String(contentsOfFile: dir + "/k2", encoding: .utf8))
        }
    }
}
