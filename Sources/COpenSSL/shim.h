// The parts of OpenSSL 3 that Sluice uses. Macros become static inline functions so that Swift
// can call them; nothing else lives here.
#ifndef SLUICE_COPENSSL_SHIM_H
#define SLUICE_COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static inline int sluice_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

static inline long sluice_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}

static inline long sluice_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}

static inline long sluice_SSL_CTX_sess_set_cache_size(SSL_CTX *ctx, long size) {
    return SSL_CTX_sess_set_cache_size(ctx, size);
}

static inline long sluice_SSL_CTX_set_tlsext_servername_callback(SSL_CTX *ctx, int (*cb)(SSL *, int *, void *)) {
    return SSL_CTX_set_tlsext_servername_callback(ctx, cb);
}

static inline long sluice_SSL_CTX_set_tlsext_servername_arg(SSL_CTX *ctx, void *arg) {
    return SSL_CTX_set_tlsext_servername_arg(ctx, arg);
}

static inline long sluice_SSL_CTX_set_session_id_context_default(SSL_CTX *ctx) {
    static const unsigned char sid[] = "sluice";
    return SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
}

static inline int sluice_SSL_set_app_data(SSL *ssl, void *arg) {
    return SSL_set_app_data(ssl, arg);
}

static inline void *sluice_SSL_get_app_data(const SSL *ssl) {
    return SSL_get_app_data(ssl);
}

static inline size_t sluice_BIO_pending(BIO *b) {
    return (size_t)BIO_pending(b);
}

/// What a BIO's read callback reports when it has nothing yet: "try again once more arrives".
static inline void sluice_BIO_set_retry_read(BIO *b) {
    BIO_set_retry_read(b);
}

static inline void sluice_BIO_clear_retry_flags(BIO *b) {
    BIO_clear_retry_flags(b);
}

static inline long sluice_SSL_session_reused(SSL *ssl) {
    return (long)SSL_session_reused(ssl);
}

static inline long sluice_SSL_CTX_add_extra_chain_cert(SSL_CTX *ctx, X509 *x509) {
    return SSL_CTX_add_extra_chain_cert(ctx, x509);
}

/// The hardening options (their macros are built from SSL_OP_BIT and do not import).
static inline uint64_t sluice_server_options(void) {
    return SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION
        | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
}

static inline uint64_t sluice_option_no_ticket(void) {
    return SSL_OP_NO_TICKET;
}

#endif
