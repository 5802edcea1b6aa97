import COpenSSL
import NIOCore

/// One server-side TLS session (the one Swift type that owns its `SSL`). It never touches a
/// socket: ciphertext goes in with `feed` and comes out with `takeCiphertext`, through a BIO of
/// its own (see `SluiceBIO` below) that reads from and writes into `ByteBuffer`s.
final class TLSConnection {
    enum Step {
        case done
        case wantRead
        case closed
        case failed(String)
    }

    private let ssl: OpaquePointer

    /// Ciphertext fed and not yet read by OpenSSL; nil when there is none, so that the receive
    /// buffer it came in goes back to NIO's pool as soon as it is consumed.
    fileprivate var inbound: ByteBuffer? = nil
    /// Ciphertext OpenSSL has written and the handler has not taken yet.
    fileprivate var outbound: ByteBuffer? = nil
    /// Where ciphertext buffers come from and go back to once handed to the channel, so that
    /// sending costs no allocation and writes into memory another connection just used.
    private let buffers: BufferPool

    /// `initial`: the context the handshake starts on; `store`: where the SNI callback looks
    /// (it must outlive the connection); `buffers`: the event loop's pool.
    init(initial: TLSContext, store: CertificateStoreBox, buffers: BufferPool) throws {
        self.buffers = buffers
        guard let ssl = SSL_new(initial.ctx) else { throw TLSError("SSL_new") }
        _ = sluice_SSL_set_app_data(ssl, Unmanaged.passUnretained(store).toOpaque())
        guard let bio = BIO_new(SluiceBIO.method) else {
            SSL_free(ssl)
            throw TLSError("BIO_new")
        }
        self.ssl = ssl
        // Unretained: the connection owns the SSL, which owns the BIO, and OpenSSL calls the BIO
        // only from inside this connection's own calls.
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
        BIO_set_init(bio, 1)
        SSL_set_bio(ssl, bio, bio)  // one BIO both ways; the SSL owns it from here
        SSL_set_accept_state(ssl)
    }

    deinit {
        SSL_free(ssl)
    }

    func feed(_ buffer: ByteBuffer) {
        guard buffer.readableBytes > 0 else { return }
        if inbound == nil {
            inbound = buffer
        } else {
            // Part of a record was left from the last read: rare, and the only copy on this side.
            var more = buffer
            inbound!.writeBuffer(&more)
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
    var hasNothingToRead: Bool { SSL_has_pending(ssl) == 0 && inbound == nil }

    func write(_ buffer: ByteBuffer) -> Step {
        reserveCiphertext(forPlaintext: buffer.readableBytes)
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

    /// Makes room for the records of `n` plaintext bytes at once. Grown record by record, the
    /// ciphertext buffer of a 64 KiB body was reallocated (and copied) three times.
    private func reserveCiphertext(forPlaintext n: Int) {
        // A record carries at most 16 KiB of plaintext and adds its header, nonce and tag (29
        // bytes with AES-GCM over TLS 1.2, 22 over 1.3); 64 leaves room to spare.
        let room = n + (n / (16 * 1024) + 1) * 64
        if outbound == nil {
            outbound = buffers.take(minimumCapacity: room)
        } else {
            outbound!.reserveCapacity(minimumWritableBytes: room)
        }
    }

    /// The ciphertext OpenSSL has written since the last call, if any. Its buffer goes back to
    /// the pool at once: the channel usually sends it before anyone takes it again.
    func takeCiphertext() -> ByteBuffer? {
        guard let out = outbound.take() else { return nil }
        buffers.give(out)
        // Room reserved for a write that produced nothing (it failed) is not sent.
        return out.readableBytes > 0 ? out : nil
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

    // MARK: - The BIO's side

    fileprivate func bioRead(into p: UnsafeMutableRawBufferPointer, bio: OpaquePointer) -> Int32 {
        guard inbound != nil else {
            sluice_BIO_set_retry_read(bio)
            return -1
        }
        let n = min(p.count, inbound!.readableBytes)
        inbound!.readWithUnsafeReadableBytes { src in
            p.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: n)
            return n
        }
        if inbound!.readableBytes == 0 { inbound = nil }
        return Int32(n)
    }

    fileprivate func bioWrite(_ p: UnsafeRawBufferPointer) -> Int32 {
        if outbound == nil { outbound = buffers.take(minimumCapacity: p.count) }
        outbound!.writeBytes(p)
        return Int32(p.count)
    }
}

// MARK: - SluiceBIO

/// A source/sink BIO over `TLSConnection`'s buffers. Two memory BIOs cost a copy into and out
/// of each, and every `BIO_pending`-style control call OpenSSL makes (about sixteen per request)
/// went through the memory BIO's control function; here those are a few comparisons.
private enum SluiceBIO {
    /// Made once; OpenSSL keeps only a pointer to it in each BIO.
    nonisolated(unsafe) static let method: OpaquePointer = {
        let m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sluice")!
        _ = BIO_meth_set_read(m, sluiceBIORead)
        _ = BIO_meth_set_write(m, sluiceBIOWrite)
        _ = BIO_meth_set_ctrl(m, sluiceBIOCtrl)
        return m
    }()
}

private func connection(of bio: OpaquePointer) -> Unmanaged<TLSConnection>? {
    BIO_get_data(bio).map { Unmanaged<TLSConnection>.fromOpaque($0) }
}

private func sluiceBIORead(_ bio: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ len: Int32) -> Int32 {
    guard let bio else { return -1 }
    sluice_BIO_clear_retry_flags(bio)
    guard let buf, len > 0, let c = connection(of: bio) else { return 0 }
    return c._withUnsafeGuaranteedRef { $0.bioRead(into: UnsafeMutableRawBufferPointer(start: buf, count: Int(len)), bio: bio) }
}

private func sluiceBIOWrite(_ bio: OpaquePointer?, _ buf: UnsafePointer<CChar>?, _ len: Int32) -> Int32 {
    guard let bio else { return -1 }
    sluice_BIO_clear_retry_flags(bio)
    guard let buf, len > 0, let c = connection(of: bio) else { return 0 }
    return c._withUnsafeGuaranteedRef { $0.bioWrite(UnsafeRawBufferPointer(start: buf, count: Int(len))) }
}

private func sluiceBIOCtrl(_ bio: OpaquePointer?, _ cmd: Int32, _ larg: Int, _ parg: UnsafeMutableRawPointer?) -> Int {
    guard let bio else { return 0 }
    switch cmd {
    case BIO_CTRL_FLUSH:
        return 1  // nothing is buffered between OpenSSL and `outbound`
    case BIO_CTRL_PENDING:
        return connection(of: bio).map { $0._withUnsafeGuaranteedRef { $0.inbound?.readableBytes ?? 0 } } ?? 0
    case BIO_CTRL_WPENDING:
        return connection(of: bio).map { $0._withUnsafeGuaranteedRef { $0.outbound?.readableBytes ?? 0 } } ?? 0
    case BIO_CTRL_GET_CLOSE:
        return Int(BIO_get_shutdown(bio))
    case BIO_CTRL_SET_CLOSE:
        BIO_set_shutdown(bio, Int32(larg))
        return 1
    default:
        return 0  // not supported: kTLS, duplication and the like
    }
}
