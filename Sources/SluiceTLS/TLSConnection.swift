import COpenSSL
import NIOCore

/// One server-side TLS session (the one Swift type that owns its `SSL`), over two memory BIOs:
/// ciphertext goes in with `feed`, comes out with `drainCiphertext`; it never touches a socket.
final class TLSConnection {
    enum Step {
        case done
        case wantRead
        case closed
        case failed(String)
    }

    private let ssl: OpaquePointer
    private let rbio: OpaquePointer
    private let wbio: OpaquePointer

    /// `initial`: the context the handshake starts on; `store`: where the SNI callback looks
    /// (it must outlive the connection).
    init(initial: TLSContext, store: CertificateStoreBox) throws {
        guard let ssl = SSL_new(initial.ctx) else { throw TLSError("SSL_new") }
        _ = sluice_SSL_set_app_data(ssl, Unmanaged.passUnretained(store).toOpaque())
        guard let r = BIO_new(BIO_s_mem()), let w = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError("BIO_new")
        }
        self.ssl = ssl
        rbio = r
        wbio = w
        SSL_set_bio(ssl, r, w)  // the SSL owns both BIOs from here
        SSL_set_accept_state(ssl)
    }

    deinit {
        SSL_free(ssl)
    }

    func feed(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { p in
            var off = 0
            while off < p.count {
                let n = BIO_write(rbio, p.baseAddress! + off, Int32(min(p.count - off, Int(Int32.max))))
                if n <= 0 { return }
                off += Int(n)
            }
        }
    }

    func handshake() -> Step {
        let r = SSL_do_handshake(ssl)
        if r == 1 { return .done }
        return classify(r)
    }

    /// Decrypts what is available into `out`, at most `limit` bytes (one TLS record at most).
    func read(into out: inout ByteBuffer, limit: Int) -> Step {
        var got = 0
        var ok: Int32 = 0
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: limit) { p -> Int in
            ok = SSL_read_ex(ssl, p.baseAddress, p.count, &got)
            return ok == 1 ? got : 0
        }
        if ok == 1 { return .done }
        let e = SSL_get_error(ssl, 0)
        if e == SSL_ERROR_ZERO_RETURN { return .closed }
        return classify(0)
    }

    /// Nothing is left to decrypt: no plaintext or record bytes inside OpenSSL and no ciphertext
    /// fed but not yet read. A further `read` could only answer `.wantRead`, and asking cost a
    /// failed `SSL_read_ex` and its error-queue work on every request.
    var hasNothingToRead: Bool { SSL_has_pending(ssl) == 0 && sluice_BIO_pending(rbio) == 0 }

    func write(_ buffer: ByteBuffer) -> Step {
        var failure: Step? = nil
        buffer.withUnsafeReadableBytes { p in
            var off = 0
            while off < p.count {
                var written = 0
                if SSL_write_ex(ssl, p.baseAddress! + off, p.count - off, &written) != 1 {
                    failure = classify(0)
                    return
                }
                off += written
            }
        }
        return failure ?? .done
    }

    /// How many bytes of ciphertext OpenSSL has ready to send.
    var pendingCiphertext: Int { sluice_BIO_pending(wbio) }

    /// Moves `count` bytes of ciphertext (see `pendingCiphertext`) into `out`.
    func drainCiphertext(into out: inout ByteBuffer, count: Int) {
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { p in
            Int(BIO_read(wbio, p.baseAddress, Int32(count)))
        }
    }

    func shutdown() {
        _ = SSL_shutdown(ssl)
    }

    var negotiatedProtocol: String? {
        var data: UnsafePointer<UInt8>? = nil
        var len: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &len)
        guard let data, len > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(len)), as: UTF8.self)
    }

    var serverName: String? {
        SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) }
    }

    var sessionReused: Bool { sluice_SSL_session_reused(ssl) == 1 }

    var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// The `SSL_CTX` the SNI callback chose, to compare with the one a Host maps to (421).
    var contextIdentity: OpaquePointer? { SSL_get_SSL_CTX(ssl) }

    private func classify(_ r: Int32) -> Step {
        let e = SSL_get_error(ssl, r)
        switch e {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantRead
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        default:
            return .failed(TLSError("TLS error \(e)").description)
        }
    }
}
