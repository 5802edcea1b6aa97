import COpenSSL

/// HMAC-SHA256 through OpenSSL, for values the proxy hands to clients and must recognise again
/// (the affinity cookie). The key is random per process: a restart invalidates every value.
public struct MessageAuthentication: Sendable {
    private let key: [UInt8]

    public init() {
        var k = [UInt8](repeating: 0, count: 32)
        _ = RAND_bytes(&k, 32)
        key = k
    }

    /// The first `length` bytes of HMAC-SHA256(key, data).
    public func tag(_ data: UnsafeRawBufferPointer, length: Int = 12) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: UInt32 = 0
        key.withUnsafeBytes { k in
            _ = HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
                     &out, &outLength)
        }
        return Array(out.prefix(length))
    }

    public static let shared = MessageAuthentication()
}
