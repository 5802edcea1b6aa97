import SluiceTLS
import SluiceUpstream

/// What a backend's policy reads from a request to choose an endpoint: the consistent-hash key
/// and the affinity cookie. Fields are offered by the caller as (name, value) byte views, so
/// HTTP/1.1 heads and HTTP/2 field lists share one implementation.
enum RequestKeys {
    typealias Fields = ((UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Bool) -> Void

    static func equalsIgnoringCase(_ p: UnsafeRawBufferPointer, _ s: String) -> Bool {
        guard p.count == s.utf8.count else { return false }
        for (a, b) in zip(p, s.utf8) where (a | 0x20) != (b | 0x20) { return false }
        return true
    }

    /// The first value of a field (case-insensitive name).
    static func field(_ name: String, in fields: Fields) -> [UInt8]? {
        var found: [UInt8]? = nil
        fields { n, v in
            if equalsIgnoringCase(n, name) {
                found = Array(v)
                return false
            }
            return true
        }
        return found
    }

    /// A cookie's value: every Cookie field, split at `;`.
    static func cookie(_ name: String, in fields: Fields) -> [UInt8]? {
        var found: [UInt8]? = nil
        let nameBytes = Array(name.utf8)
        fields { n, v in
            guard equalsIgnoringCase(n, "cookie") else { return true }
            var i = 0
            while i < v.count {
                while i < v.count && (v[i] == 0x20 || v[i] == 0x3B) { i += 1 }
                var e = i
                while e < v.count && v[e] != 0x3B { e += 1 }
                let pair = UnsafeRawBufferPointer(rebasing: v[i..<e])
                if pair.count > nameBytes.count, pair[nameBytes.count] == UInt8(ascii: "="),
                   pair.prefix(nameBytes.count).elementsEqual(nameBytes) {
                    found = Array(pair[(nameBytes.count + 1)...])
                    return false
                }
                i = e + 1
            }
            return true
        }
        return found
    }

    /// The consistent-hash key of a request (0 when the policy does not hash).
    static func hash(_ policy: PoolPolicy, clientIP: [UInt8], fields: Fields) -> UInt64 {
        guard policy.balance == .consistentHash, let key = policy.hashKey else { return 0 }
        switch key {
        case .clientIP: return BackendPool.fnv1a(clientIP)
        case .header(let name): return field(name, in: fields).map { BackendPool.fnv1a($0) } ?? 0
        case .cookie(let name): return cookie(name, in: fields).map { BackendPool.fnv1a($0) } ?? 0
        }
    }

    // MARK: Affinity

    /// `ENDPOINT-TAG`: the endpoint's hash and an HMAC over the pool's name and that hash, so a
    /// client cannot name an endpoint of its choosing.
    static func affinityValue(pool: BackendPool, index: Int) -> String {
        let id = endpointHash(pool, index)
        let tag = signature(pool, id)
        return hex(id) + "-" + tag.map { hex2($0) }.joined()
    }

    /// The endpoint a valid affinity cookie names, if it is still in the pool.
    static func affinityTarget(pool: BackendPool, cookieValue v: [UInt8]) -> Int? {
        guard v.count == 16 + 1 + 24, v[16] == UInt8(ascii: "-") else { return nil }
        guard let id = UInt64(String(decoding: v.prefix(16), as: UTF8.self), radix: 16) else { return nil }
        let expected = signature(pool, id).map { hex2($0) }.joined()
        guard String(decoding: v.suffix(24), as: UTF8.self) == expected else { return nil }
        for i in pool.endpoints.indices where endpointHash(pool, i) == id { return i }
        return nil
    }

    static func endpointHash(_ pool: BackendPool, _ i: Int) -> UInt64 {
        BackendPool.fnv1a(Array((pool.name + "|" + pool.endpoints[i].description).utf8))
    }

    static func signature(_ pool: BackendPool, _ id: UInt64) -> [UInt8] {
        let text = Array((pool.name + "|" + hex(id)).utf8)
        return text.withUnsafeBytes { MessageAuthentication.shared.tag($0, length: 12) }
    }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    static func hex2(_ b: UInt8) -> String {
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }
}
