import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// TLS termination through the system OpenSSL, checked with openssl s_client and curl.
@Suite("TLS", .serialized)
struct TLSTests {
    final class Fixture: @unchecked Sendable {
        let stack: Stack
        let rules: String
        let certs: String
        var proxy: ChildProcess!
        var http = 0
        var https = 0

        init(extra: [String] = []) throws {
            stack = try Stack(backends: ["shop", "apps"], defaultBackend: false)
            stack.proxy.stop()
            certs = emptyDirectory()
            _ = try run(Paths.repo.appendingPathComponent("scripts/dev-certs.sh").path, [certs])
            rules = emptyDirectory()
            var yaml = stack.servicesYAML
            yaml += """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata:
              name: shop
              annotations: {sluice.io/hsts: "max-age=600; includeSubDomains"}
            spec:
              tls: [{hosts: [shop.local], secretName: shop-tls}]
              rules: [{host: shop.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}}]
            ---
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata:
              name: apps
              annotations: {sluice.io/ssl-redirect: "false"}
            spec:
              tls: [{hosts: ["*.apps.local"], secretName: wildcard-apps-tls}]
              rules: [{host: "*.apps.local", http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: apps, port: {number: 80}}}}]}}]
            ---
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata:
              name: upload
              annotations: {sluice.io/max-body-size: "1m"}
            spec:
              rules: [{host: upload.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}}]
            """
            try yaml.writeWhole(toFile: rules + "/site.yaml")
            proxy = try ChildProcess(Paths.sluice, ["serve", "--admin", "127.0.0.1:0", "--rules", rules, "--certs", certs, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"] + extra)
            http = Int(try proxy.waitFor(#"serving http on \S*:(\d+)"#))!
            https = Int(try proxy.waitFor(#"serving https on \S*:(\d+)"#))!
        }

        /// `openssl s_client` output for one handshake (stdin closes after a short pause, so TLS 1.3
        /// tickets arrive before it exits).
        func sClient(_ args: [String]) throws -> String {
            let cmd = "(sleep 0.3; echo) | openssl s_client -connect 127.0.0.1:\(https) " + args.joined(separator: " ") + " 2>&1"
            return try run("/bin/sh", ["-c", cmd], timeout: 20).stdout
        }

        deinit {
            proxy?.stop()
            stack.stop()
        }
    }

    @Test func sniPicksTheCertificate() throws {
        let f = try Fixture()
        #expect(try f.sClient(["-servername", "shop.local"]).contains("subject=CN = shop.local"))
        #expect(try f.sClient(["-servername", "blog.apps.local"]).contains("subject=CN = *.apps.local"))
        #expect(try f.sClient(["-servername", "a.b.apps.local"]).contains("subject=CN = localhost"), "a wildcard covers one label")
        #expect(try f.sClient(["-servername", "unknown.test"]).contains("subject=CN = localhost"))
        #expect(try f.sClient(["-noservername"]).contains("subject=CN = localhost"))
    }

    @Test func protocolsCiphersAndALPN() throws {
        let f = try Fixture()
        let alpn = try f.sClient(["-servername", "shop.local", "-alpn", "http/1.1"])
        #expect(alpn.contains("ALPN protocol: http/1.1"), "\(alpn)")
        #expect(try f.sClient(["-servername", "shop.local", "-alpn", "spdy/3"]).contains("No ALPN negotiated"))
        let tls12 = try f.sClient(["-servername", "shop.local", "-tls1_2"])
        #expect(tls12.contains("Protocol  : TLSv1.2"))
        #expect(tls12.contains("Cipher    : ECDHE-"), "\(tls12)")
        #expect(tls12.contains("Compression: NONE"))
        for old in ["-tls1_1", "-tls1"] {
            let r = try f.sClient(["-servername", "shop.local", old])
            #expect(!r.contains("Cipher is ECDHE") && !r.contains("subject=CN"), "\(old) accepted: \(r)")
        }
        let weak = try f.sClient(["-servername", "shop.local", "-tls1_2", "-cipher", "AES128-SHA"])
        #expect(!weak.contains("subject=CN"), "a non-ECDHE, non-AEAD suite was accepted")
    }

    @Test func sessionsResume() throws {
        let f = try Fixture()
        let sess = scratchPath("sluice-sess")
        defer { try? FileManager.default.removeItem(atPath: sess) }
        for version in ["-tls1_2", "-tls1_3"] {
            let first = try f.sClient(["-servername", "shop.local", version, "-sess_out", sess])
            #expect(first.contains("New, "), "\(version): \(first)")
            let second = try f.sClient(["-servername", "shop.local", version, "-sess_in", sess])
            #expect(second.contains("Reused, "), "\(version) not resumed: \(second)")
        }
    }

    /// A TLS 1.3 ticket is used once; each resumption must hand out a new one, or a client that
    /// reconnects in a loop (wrk with `Connection: close`) resumes only every other time.
    @Test func everyTLS13ResumptionGetsAFreshTicket() throws {
        let f = try Fixture()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-chain-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try f.sClient(["-servername", "shop.local", "-tls1_3", "-sess_out", dir + "/0"]).contains("New, "))
        for i in 1...3 {
            // Each connection resumes with the ticket the previous one (itself resumed) received.
            let out = try f.sClient(["-servername", "shop.local", "-tls1_3", "-sess_in", dir + "/\(i - 1)", "-sess_out", dir + "/\(i)"])
            #expect(out.contains("Reused, "), "resumption \(i) was a full handshake: \(out.prefix(400))")
            #expect(out.contains("New Session Ticket arrived"), "resumption \(i) got no new ticket")
        }
    }

    /// `--tls-session-resumption off`: no ticket of either TLS version and no TLS 1.2 session-id
    /// cache, so every connection is a full handshake (the benchmark's full-handshake scenario).
    @Test func resumptionOffMakesEveryHandshakeFull() throws {
        let f = try Fixture(extra: ["--tls-session-resumption", "off"])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-noresume-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for version in ["-tls1_3", "-tls1_2"] {
            let session = dir + "/s" + version
            let first = try f.sClient(["-servername", "shop.local", version, "-sess_out", session])
            #expect(first.contains("New, "), "\(version): \(first.prefix(400))")
            #expect(!first.contains("New Session Ticket arrived"), "\(version): a ticket was issued")
            // s_client writes no session when the server gave nothing resumable (no ticket, an
            // empty session id); if it wrote one, offering it must still end in a full handshake.
            if FileManager.default.fileExists(atPath: session) {
                let again = try f.sClient(["-servername", "shop.local", version, "-sess_in", session])
                #expect(again.contains("New, ") && !again.contains("Reused, "), "\(version) resumed: \(again.prefix(400))")
            }
        }
        // The same requests do resume by default (the check above can tell).
        let on = try Fixture()
        _ = try on.sClient(["-servername", "shop.local", "-tls1_2", "-sess_out", dir + "/t"])
        #expect(try on.sClient(["-servername", "shop.local", "-tls1_2", "-sess_in", dir + "/t"]).contains("Reused, "))
    }

    @Test func ticketKeysRotateAndThePreviousKeyStillResumes() throws {
        let f = try Fixture(extra: ["--tls-ticket-rotation", "1.5"])
        let sess = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-ticket-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: sess) }
        // TLS 1.3 resumes with tickets only (no server-side cache lookup by id).
        let first = try f.sClient(["-servername", "shop.local", "-tls1_3", "-sess_out", sess])
        #expect(first.contains("New, "))
        usleep(1_700_000)  // one rotation: the ticket's key is now the previous one
        #expect(try f.sClient(["-servername", "shop.local", "-tls1_3", "-sess_in", sess]).contains("Reused, "))
        usleep(3_200_000)  // two more rotations: the key is gone
        #expect(try f.sClient(["-servername", "shop.local", "-tls1_3", "-sess_in", sess]).contains("New, "))
    }

    @Test func proxiesOverHTTPSRedirectsAndRefusesMisdirected() throws {
        let f = try Fixture()
        let ca = f.certs + "/dev-ca/ca.crt"
        let r = try curl(["--cacert", ca, "--resolve", "shop.local:\(f.https):127.0.0.1", "https://shop.local:\(f.https)/cart?x=1"])
        #expect(r.stdout.contains("\"backend\":\"shop\""), "\(r.stdout) \(r.stderr)")
        #expect(r.stdout.contains("\"x-forwarded-proto\":\"https\""))
        #expect(r.stdout.contains("\"path\":\"/cart?x=1\""))
        let head = try curl(["-sI", "--cacert", ca, "--resolve", "shop.local:\(f.https):127.0.0.1", "https://shop.local:\(f.https)/"])
        #expect(head.stdout.contains("strict-transport-security: max-age=600; includeSubDomains"), "\(head.stdout)")
        let noHSTS = try curl(["-sI", "--cacert", ca, "--resolve", "blog.apps.local:\(f.https):127.0.0.1", "https://blog.apps.local:\(f.https)/"])
        #expect(!noHSTS.stdout.lowercased().contains("strict-transport-security"), "HSTS only where asked")
        // Plain HTTP to a host with TLS: 308 to the same host, path and query.
        let plain = try curl(["-i", "-H", "Host: shop.local", "http://127.0.0.1:\(f.http)/cart?x=1"])
        #expect(plain.stdout.hasPrefix("HTTP/1.1 308"))
        #expect(plain.stdout.contains("location: https://shop.local:\(f.https)/cart?x=1"), "\(plain.stdout)")
        // ssl-redirect "false": plain HTTP is served.
        let apps = try curl(["-H", "Host: blog.apps.local", "http://127.0.0.1:\(f.http)/"])
        #expect(apps.stdout.contains("\"backend\":\"apps\""))
        // SNI shop.local, Host of a name the wildcard certificate serves: 421.
        let mis = try curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca, "--resolve", "shop.local:\(f.https):127.0.0.1",
                            "-H", "Host: blog.apps.local", "https://shop.local:\(f.https)/"])
        #expect(mis.stdout == "421")
    }

    /// A response that ends its connection (`Connection: close`, or an error the proxy answers
    /// with a close) arrives whole and is followed by close_notify: Python's ssl module, told
    /// not to forgive, raises on an end without one.
    @Test func responsesThatCloseEndWithCloseNotify() throws {
        let f = try Fixture()
        let script = """
        import socket, ssl, sys, time
        port = int(sys.argv[1])
        def exchange(request, slow=False):
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            raw = socket.socket()
            if slow: raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(('127.0.0.1', port))
            s = ctx.wrap_socket(raw, server_hostname='shop.local', suppress_ragged_eofs=False)
            s.sendall(request)
            if slow: time.sleep(1)
            s.settimeout(10)
            data = b''
            try:
                while True:
                    b = s.recv(65536)
                    if not b: return data, 'close_notify'
                    data += b
            except ssl.SSLEOFError: return data, 'no close_notify'
            except Exception as e: return data, type(e).__name__
        for size in (13, 100000, 3000000):
            data, end = exchange(b'GET /big?bytes=%d HTTP/1.1\\r\\nHost: shop.local\\r\\nConnection: close\\r\\n\\r\\n' % size)
            body = data.split(b'\\r\\n\\r\\n', 1)[-1]
            print('size', size, len(body), end)
        # A client slower than the proxy: the end of the response is still queued in the proxy
        # when the close begins, and must be sent before the socket closes.
        for size in (1000000, 2000000, 3000000, 4000000):
            data, end = exchange(b'GET /big?bytes=%d HTTP/1.1\\r\\nHost: shop.local\\r\\nConnection: close\\r\\n\\r\\n' % size, slow=True)
            body = data.split(b'\\r\\n\\r\\n', 1)[-1]
            print('slow', size, len(body) == size, end)
        data, end = exchange(b'GET / HTTP/1.1\\r\\nHost: shop.local\\r\\n\\r\\nGET /second HTTP/1.1\\r\\nHost: shop.local\\r\\nConnection: close\\r\\n\\r\\n')
        print('pipelined', data.count(b'HTTP/1.1 200'), end)
        data, end = exchange(b'GET / HTTP/1.1\\r\\nHost: shop.local\\r\\nContent-Length: 1\\r\\nContent-Length: 2\\r\\n\\r\\n')
        print('refused', data.split(b'\\r\\n', 1)[0].decode(), end)
        """
        let r = try run("python3", ["-c", script, String(f.https)], timeout: 60)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("size 13 13 close_notify"), "\(r.stdout) \(r.stderr)")
        #expect(lines.contains("size 100000 100000 close_notify"), "\(r.stdout)")
        #expect(lines.contains("size 3000000 3000000 close_notify"), "\(r.stdout)")
        for size in [1_000_000, 2_000_000, 3_000_000, 4_000_000] {
            #expect(lines.contains("slow \(size) True close_notify"), "\(r.stdout)")
        }
        #expect(lines.contains("pipelined 2 close_notify"), "\(r.stdout)")
        #expect(lines.contains("refused HTTP/1.1 400 Bad Request close_notify"), "\(r.stdout)")
    }

    /// RFC 9112 §9.6 over TLS: the proxy's 413 comes before the body it refuses, while the client
    /// is still sending. The proxy sends the answer and close_notify, shuts only its write side and
    /// reads what still arrives for as long as the client keeps sending; a full close would reset
    /// the connection under the client, whose next send then fails and whose unread answer is
    /// lost (as a Python client saw before the lingering close: "EOF occurred in violation of
    /// protocol").
    @Test func aClientStillSendingAfterAnEarlyAnswerIsNotReset() throws {
        let f = try Fixture()
        let script = """
        import socket, ssl, sys, time
        port = int(sys.argv[1])
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='upload.local', suppress_ragged_eofs=False)
        s.sendall(b'PUT /up HTTP/1.1\\r\\nHost: upload.local\\r\\nContent-Length: 5000000\\r\\n\\r\\n')
        chunk = b'z' * 65536
        s.sendall(chunk)
        time.sleep(0.5)  # the 413 arrives; the client does not read it yet
        sent = 0
        try:
            for _ in range(8):
                s.sendall(chunk); sent += 1; time.sleep(0.05)
            # Then slowly, past the 5 s that a quiet client gets: still sending, still served.
            for _ in range(7):
                time.sleep(1); s.sendall(b'z' * 1000); sent += 1
        except Exception as e:
            print('send failed', type(e).__name__)
        print('sent', sent)
        s.settimeout(10)
        data, end = b'', '?'
        try:
            while True:
                b = s.recv(65536)
                if not b: end = 'close_notify'; break
                data += b
        except ssl.SSLEOFError: end = 'no close_notify'
        except Exception as e: end = type(e).__name__
        print('answer', data.split(b'\\r\\n', 1)[0].decode(), end)
        """
        let r = try run("python3", ["-c", script, String(f.https)], timeout: 60)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("sent 15"), "\(r.stdout) \(r.stderr)")
        #expect(lines.contains("answer HTTP/1.1 413 Content Too Large close_notify"), "\(r.stdout) \(r.stderr)")
    }

    @Test func shutdownDoesNotWaitForUnfinishedHandshakes() throws {
        let f = try Fixture()
        // A client that connects to the TLS port and never says hello, and one that gives up
        // half-way (half-closes): neither may hold the drain.
        let silent = try RawClient(port: f.https)
        let quitter = try RawClient(port: f.https)
        quitter.send([0x16, 0x03, 0x01, 0x00, 0x10])
        quitter.shutdownWrite()
        usleep(200_000)
        let start = Date()
        f.proxy.signal(SIGTERM)
        #expect(f.proxy.waitForExit(timeout: 10) == 0)
        #expect(Date().timeIntervalSince(start) < 5, "drain waited \(Date().timeIntervalSince(start)) s")
        _ = silent
    }

    @Test func certificateChangesApplyOnReload() throws {
        let f = try Fixture()
        #expect(try f.sClient(["-servername", "shop.local"]).contains("subject=CN = shop.local"))
        // Replace the shop certificate by a new one with another subject.
        let dir = f.certs + "/shop-tls"
        _ = try run("/bin/sh", ["-c", "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=shop-renewed -keyout \(dir)/tls.key.new -out \(dir)/tls.crt.new 2>/dev/null && mv \(dir)/tls.key.new \(dir)/tls.key && mv \(dir)/tls.crt.new \(dir)/tls.crt"])
        let start = Date()
        var out = ""
        while Date().timeIntervalSince(start) < 3 {
            out = try f.sClient(["-servername", "shop.local"])
            if out.contains("CN = shop-renewed") { break }
            usleep(100_000)
        }
        #expect(out.contains("subject=CN = shop-renewed"))
        // A key that does not match its certificate is reported with its file.
        try String(contentsOfFile: f.certs + "/default/tls.key", encoding: .utf8).writeWhole(toFile: dir + "/tls.key")
        _ = try f.proxy.waitFor("shop-tls/tls.crt:1: tls.key: default/shop-tls: tls.key does not match the certificate", timeout: 3)
    }
}
