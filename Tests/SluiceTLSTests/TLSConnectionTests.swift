import COpenSSL
import NIOCore
import Testing
@testable import SluiceTLS

/// `TLSConnection` against a real OpenSSL client over memory: what `hasNothingToRead` promises,
/// which lets the handler skip the `SSL_read_ex` that could only say "want read".
struct TLSConnectionTests {
    /// A TLS client on two memory BIOs: what it writes is taken with `drain`, what the server
    /// sends is given to it with `feed`.
    final class Client {
        let ctx: OpaquePointer
        let ssl: OpaquePointer
        let rbio: OpaquePointer
        let wbio: OpaquePointer

        init() {
            ctx = SSL_CTX_new(TLS_client_method())!
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
            ssl = SSL_new(ctx)!
            rbio = BIO_new(BIO_s_mem())!
            wbio = BIO_new(BIO_s_mem())!
            SSL_set_bio(ssl, rbio, wbio)
            SSL_set_connect_state(ssl)
        }

        deinit {
            SSL_free(ssl)
            SSL_CTX_free(ctx)
        }

        func drain() -> ByteBuffer {
            var out = ByteBuffer()
            let n = sluice_BIO_pending(wbio)
            if n > 0 {
                out.writeWithUnsafeMutableBytes(minimumWritableBytes: n) { Int(BIO_read(wbio, $0.baseAddress, Int32(n))) }
            }
            return out
        }

        func feed(_ b: ByteBuffer) {
            guard b.readableBytes > 0 else { return }
            b.withUnsafeReadableBytes { _ = BIO_write(rbio, $0.baseAddress, Int32($0.count)) }
        }

        func write(_ s: String) {
            var written = 0
            _ = Array(s.utf8).withUnsafeBytes { SSL_write_ex(ssl, $0.baseAddress, $0.count, &written) }
        }
    }

    /// Client and server driven to the end of the handshake (and the server's tickets read).
    /// As the server builds it (the front context also installs the session ticket keys). It
    /// must outlive the connections: the SNI callback holds its store unretained.
    static let front = Result {
        try TLSFrontContext(store: CertificateStore(defaultContext: CertificateStoreTests.makeContext("tls.test")))
    }

    static func connected() throws -> (Client, TLSConnection) {
        let front = try front.get()
        let server = try TLSConnection(initial: front.context, store: front.store, buffers: BufferPool())
        let client = Client()
        for _ in 0..<10 {
            _ = SSL_do_handshake(client.ssl)
            server.feed(client.drain())
            _ = server.handshake()
            client.feed(server.takeCiphertext() ?? ByteBuffer())
            if SSL_is_init_finished(client.ssl) == 1 && server.handshake().isDone { break }
        }
        var scratch = [UInt8](repeating: 0, count: 16)
        var got = 0
        _ = SSL_read_ex(client.ssl, &scratch, scratch.count, &got)  // takes the session tickets
        try #require(SSL_is_init_finished(client.ssl) == 1, "handshake")
        return (client, server)
    }

    @Test func twoRecordsFedAtOnceAreBothRead() throws {
        let (client, server) = try Self.connected()
        #expect(server.hasNothingToRead)
        client.write("GET /one HTTP/1.1\r\n\r\n")
        client.write("GET /two HTTP/1.1\r\n\r\n")
        server.feed(client.drain())  // two records in one read from the socket
        #expect(!server.hasNothingToRead)

        var plaintext = ByteBuffer()
        #expect(server.read(into: &plaintext, limit: 16 * 1024).isDone)
        #expect(String(buffer: plaintext) == "GET /one HTTP/1.1\r\n\r\n")
        #expect(!server.hasNothingToRead, "the second record still waits")
        #expect(server.read(into: &plaintext, limit: 16 * 1024).isDone)
        #expect(String(buffer: plaintext) == "GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n")
        #expect(server.hasNothingToRead)
        #expect(server.read(into: &plaintext, limit: 16 * 1024).isWantRead, "what hasNothingToRead said")
    }

    /// Ciphertext fed twice before OpenSSL reads any (the BIO appends the second piece to the
    /// first) is read as one stream.
    @Test func piecesFedBeforeAReadAreReadInOrder() throws {
        let (client, server) = try Self.connected()
        client.write("GET /a HTTP/1.1\r\n\r\n")
        client.write("GET /b HTTP/1.1\r\n\r\n")
        var records = client.drain()
        let first = records.readSlice(length: records.readableBytes / 2 + 3)!
        server.feed(first)
        server.feed(records)
        var plaintext = ByteBuffer()
        while !server.hasNothingToRead {
            #expect(server.read(into: &plaintext, limit: 16 * 1024).isDone)
        }
        #expect(String(buffer: plaintext) == "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    }

    @Test func aPartialRecordIsNotNothing() throws {
        let (client, server) = try Self.connected()
        client.write("GET / HTTP/1.1\r\n\r\n")
        var record = client.drain()
        let head = record.readSlice(length: 10)!
        server.feed(head)
        #expect(!server.hasNothingToRead, "ten bytes of a record are fed")
        var plaintext = ByteBuffer()
        #expect(server.read(into: &plaintext, limit: 16 * 1024).isWantRead)
        #expect(!server.hasNothingToRead, "OpenSSL holds the partial record")
        server.feed(record)
        #expect(server.read(into: &plaintext, limit: 16 * 1024).isDone)
        #expect(String(buffer: plaintext) == "GET / HTTP/1.1\r\n\r\n")
        #expect(server.hasNothingToRead)
    }
}

extension TLSConnection.Step {
    var isDone: Bool { if case .done = self { true } else { false } }
    var isWantRead: Bool { if case .wantRead = self { true } else { false } }
}
