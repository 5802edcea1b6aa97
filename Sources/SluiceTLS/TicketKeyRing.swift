import COpenSSL
import Foundation
import Synchronization

/// Session ticket keys held in memory only: a current key that encrypts new tickets and the
/// previous one that still decrypts (its tickets are renewed). Keys rotate every `rotation`
/// seconds; they belong to the process, so tickets survive configuration reloads.
final class TicketKeyRing: Sendable {
    struct Key: Sendable {
        var name: [UInt8]
        var aes: [UInt8]
        var hmac: [UInt8]
        var created: Double
    }

    let rotation: Double
    private let keys: Mutex<(current: Key, previous: Key?)>

    init(rotation: Double) {
        self.rotation = rotation
        keys = Mutex((Self.newKey(), nil))
    }

    static func newKey() -> Key {
        func random(_ n: Int) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: n)
            _ = RAND_bytes(&b, Int32(n))
            return b
        }
        return Key(name: random(16), aes: random(32), hmac: random(32), created: ProcessInfo.processInfo.systemUptime)
    }

    /// The key for new tickets (rotating first when it is due).
    var current: Key {
        keys.withLock { k in
            if ProcessInfo.processInfo.systemUptime - k.current.created >= rotation {
                k = (Self.newKey(), k.current)
            }
            return k.current
        }
    }

    /// The key a ticket names, and whether it is the current one.
    func key(named name: UnsafePointer<UInt8>) -> (Key, current: Bool)? {
        let wanted = Array(UnsafeBufferPointer(start: name, count: 16))
        return keys.withLock { k in
            if ProcessInfo.processInfo.systemUptime - k.current.created >= rotation {
                k = (Self.newKey(), k.current)
            }
            if k.current.name == wanted { return (k.current, true) }
            if let p = k.previous, p.name == wanted { return (p, false) }
            return nil
        }
    }

    /// The one ring of the process (the front context installs it).
    static let shared = Mutex<TicketKeyRing?>(nil)
}

// MARK: - C callback

nonisolated(unsafe) private let keyParam = strdup("key")!
nonisolated(unsafe) private let digestParam = strdup("digest")!
nonisolated(unsafe) private let sha256 = strdup("SHA256")!

private func setMAC(_ hctx: OpaquePointer?, _ key: [UInt8]) -> Bool {
    var k = key
    return k.withUnsafeMutableBytes { kb in
        var params = [
            OSSL_PARAM_construct_octet_string(keyParam, kb.baseAddress, kb.count),
            OSSL_PARAM_construct_utf8_string(digestParam, sha256, 0),
            OSSL_PARAM_construct_end(),
        ]
        return EVP_MAC_CTX_set_params(hctx, &params) == 1
    }
}

/// Encrypts new tickets with the current key; decrypts with the current or the previous one;
/// 0 for unknown keys (a full handshake). Returns 2 (OpenSSL then issues a fresh ticket) for the
/// previous key, and always with TLS 1.3: a client uses a TLS 1.3 ticket once, so without a new
/// one a client that reconnects in a loop resumed only every other connection.
let sluiceTicketKeyCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt8>?, OpaquePointer?, OpaquePointer?, Int32) -> Int32 = { ssl, name, iv, cctx, hctx, enc in
    guard let name, let iv, let ring = TicketKeyRing.shared.withLock({ $0 }) else { return -1 }
    if enc == 1 {
        let k = ring.current
        guard RAND_bytes(iv, 16) == 1 else { return -1 }
        for i in 0..<16 { name[i] = k.name[i] }
        guard EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nil, k.aes, iv) == 1, setMAC(hctx, k.hmac) else { return -1 }
        return 1
    }
    guard let (k, isCurrent) = ring.key(named: name) else { return 0 }
    guard EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nil, k.aes, iv) == 1, setMAC(hctx, k.hmac) else { return -1 }
    return isCurrent && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2
}
