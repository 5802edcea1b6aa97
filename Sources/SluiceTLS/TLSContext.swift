import COpenSSL
import Synchronization

/// Why OpenSSL refused something, with its error queue rendered once.
public struct TLSError: Error, Sendable, CustomStringConvertible {
    public let description: String

    init(_ what: String) {
        var parts: [String] = []
        while true {
            let e = ERR_get_error()
            if e == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(e, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        description = parts.isEmpty ? what : "\(what): \(parts.joined(separator: "; "))"
    }
}

/// One certificate and key in an `SSL_CTX` (the one Swift type that owns it). Immutable once
/// built, so it is shared by every event loop.
public final class TLSContext: @unchecked Sendable {
    // @unchecked: an SSL_CTX is safe to use from many threads once configured, and it is not
    // changed after init.
    let ctx: OpaquePointer
    /// The certificate's subject common name, for logs and `routes`.
    public let subject: String

    /// Parses PEM `certificate` (chain included) and `privateKey` (RSA or EC), and checks they fit.
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError("SSL_CTX_new") }
        self.ctx = ctx
        Self.applyPolicy(ctx)
        // Certificate chain: the first PEM block is the leaf, the rest go to the chain.
        var certs: [OpaquePointer] = []
        let certBytes = Array(certificatePEM.utf8)
        certBytes.withUnsafeBytes { b in
            let bio = BIO_new_mem_buf(b.baseAddress, Int32(b.count))
            defer { BIO_free(bio) }
            while let x = PEM_read_bio_X509(bio, nil, nil, nil) { certs.append(x) }
        }
        ERR_clear_error()
        guard let leaf = certs.first else {
            SSL_CTX_free(ctx)
            throw TLSError("tls.crt holds no PEM certificate")
        }
        defer { for c in certs { X509_free(c) } }
        guard SSL_CTX_use_certificate(ctx, leaf) == 1 else {
            SSL_CTX_free(ctx)
            throw TLSError("the certificate was refused")
        }
        for extra in certs.dropFirst() {
            // The chain takes ownership of one reference.
            X509_up_ref(extra)
            if sluice_SSL_CTX_add_extra_chain_cert(ctx, extra) != 1 { X509_free(extra) }
        }
        let keyBytes = Array(privateKeyPEM.utf8)
        let key: OpaquePointer? = keyBytes.withUnsafeBytes { b in
            let bio = BIO_new_mem_buf(b.baseAddress, Int32(b.count))
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let key else {
            SSL_CTX_free(ctx)
            throw TLSError("tls.key holds no PEM private key")
        }
        defer { EVP_PKEY_free(key) }
        guard SSL_CTX_use_PrivateKey(ctx, key) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            SSL_CTX_free(ctx)
            throw TLSError("tls.key does not match the certificate")
        }
        var cn = [CChar](repeating: 0, count: 256)
        if let name = X509_get_subject_name(leaf) {
            X509_NAME_get_text_by_NID(name, NID_commonName, &cn, Int32(cn.count))
        }
        subject = String(decoding: cn.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A context without a certificate: the one a connection starts on when there is no default
    /// certificate (SNI must then name one).
    init(front ticketRotation: Double) throws {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError("SSL_CTX_new") }
        self.ctx = ctx
        subject = "(front)"
        Self.applyPolicy(ctx)
        TicketKeyRing.shared.withLock { $0 = TicketKeyRing(rotation: ticketRotation) }
    }

    deinit {
        SSL_CTX_free(ctx)
    }

    /// Whether clients may resume sessions (tickets, and the session cache for TLS 1.2 ids).
    /// Process-wide, set before the first context is built (`--tls-session-resumption`): off,
    /// every connection is a full handshake, as nginx's `ssl_session_tickets off` with no
    /// `ssl_session_cache`.
    public static let sessionResumption = Atomic<Bool>(true)

    /// TLS 1.2 and 1.3 only; ECDHE + AEAD suites for 1.2 in server order; no compression, no
    /// renegotiation.
    static func applyPolicy(_ ctx: OpaquePointer) {
        _ = sluice_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
        SSL_CTX_set_options(ctx, sluice_server_options())
        SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
        _ = sluice_SSL_CTX_set_session_id_context_default(ctx)
        _ = sluice_SSL_CTX_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS))
        // ALPN is answered from the context SNI switched to, so every context carries it.
        SSL_CTX_set_alpn_select_cb(ctx, sluiceALPNCallback, nil)
        // A connection starts on the default certificate's context (or the front one) and keeps
        // that context's session cache whatever SNI picks, so every context can be the first:
        // each has a cache, the SNI callback and the process's ticket keys. Starting on the
        // default certificate spares the handshakes without SNI (or for the default) the
        // SSL_set_SSL_CTX switch, which copies the certificate state of the connection.
        _ = sluice_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_SERVER))
        _ = sluice_SSL_CTX_sess_set_cache_size(ctx, 20_000)
        _ = sluice_SSL_CTX_set_tlsext_servername_callback(ctx, sluiceServerNameCallback)
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, sluiceTicketKeyCallback)
        // TLS 1.3 tickets: OpenSSL's default of two after a full handshake (and one after each
        // resumption). A client uses each ticket once; with a single ticket, a client that
        // reconnects in a loop (wrk with `Connection: close`) resumed only every other time.
        if !sessionResumption.load(ordering: .relaxed) {
            // No ticket of either kind (TLS 1.3 would otherwise issue stateful ones from the
            // cache) and no cache for TLS 1.2 session ids.
            SSL_CTX_set_options(ctx, sluice_option_no_ticket())
            _ = SSL_CTX_set_num_tickets(ctx, 0)
            _ = sluice_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
        }
    }
}

// MARK: - C callbacks

/// SNI: move the connection to the certificate for its server name (exact, then wildcard, then
/// the default); refuse the handshake when there is none.
private let sluiceServerNameCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?) -> Int32 = { ssl, alert, arg in
    // The store comes with the connection (its app data), not the context: contexts are shared
    // by every listener and outlive reloads.
    guard let ssl, let data = sluice_SSL_get_app_data(ssl) else { return SSL_TLSEXT_ERR_ALERT_FATAL }
    let box = Unmanaged<CertificateStoreBox>.fromOpaque(data).takeUnretainedValue()
    let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) }
    guard let chosen = box.current.context(for: name) else {
        alert?.pointee = SSL_AD_UNRECOGNIZED_NAME
        return SSL_TLSEXT_ERR_ALERT_FATAL
    }
    // Kept alive until OpenSSL holds its own reference: a reload may drop the store's, and the
    // release build ends lifetimes at the last use (Makefile, LIFETIME_FLAGS).
    withExtendedLifetime(chosen) {
        if SSL_get_SSL_CTX(ssl) != chosen.ctx { SSL_set_SSL_CTX(ssl, chosen.ctx) }
    }
    return SSL_TLSEXT_ERR_OK
}

/// The protocols offered by ALPN, in preference order (length-prefixed).
nonisolated(unsafe) private let alpnServerList: UnsafeMutableBufferPointer<UInt8> = {
    let bytes: [UInt8] = [2] + Array("h2".utf8) + [8] + Array("http/1.1".utf8)
    let p = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
    _ = p.initialize(from: bytes)
    return p
}()

private let sluiceALPNCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?, UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?) -> Int32 = { _, out, outlen, input, inlen, _ in
    var selected: UnsafeMutablePointer<UInt8>? = nil
    var selectedLength: UInt8 = 0
    let r = SSL_select_next_proto(&selected, &selectedLength, alpnServerList.baseAddress, UInt32(alpnServerList.count), input, inlen)
    guard r == OPENSSL_NPN_NEGOTIATED, let selected else { return SSL_TLSEXT_ERR_NOACK }
    out?.pointee = UnsafePointer(selected)
    outlen?.pointee = selectedLength
    return SSL_TLSEXT_ERR_OK
}
