// MARK: - Compiled routes

/// Where matched requests go: the ready endpoints of one Service port.
public struct BackendTarget: Sendable, Equatable {
    public struct Address: Sendable, Hashable {
        public var ip: String
        public var port: Int

        public init(ip: String, port: Int) {
            self.ip = ip
            self.port = port
        }
    }

    /// `namespace/service:port`
    public var name: String
    public var addresses: [Address]
    /// Why there are no addresses (a missing Service or no ready endpoint): the proxy answers 503.
    public var problem: String?
    /// Load balancing, health checks, retries, timeouts and limits for this backend.
    public var policy = BackendPolicy()
}

/// One (host, path, type) rule of one Ingress.
public struct Route: Sendable, Equatable {
    public var host: String?
    public var path: String
    public var pathType: PathType
    /// Index into `RouteTable.backends`.
    public var backend: Int
    /// `namespace/name` of the Ingress, or a description for the default backend.
    public var ingress: String
    public var file: String
    public var line: Int
    public var field: String
    /// Length compared for precedence: the path without its trailing '/'.
    public var matchLength: Int
}

/// The routes of one host pattern: exact paths by hash, prefix paths in a segment trie.
struct HostRoutes: Sendable {
    var exact: HashIndex = HashIndex()
    var exactPaths: [[UInt8]] = []
    var exactRoutes: [Int32] = []
    var trie = SegmentTrie()
    /// Every route of this host (for listing and explaining), indices into `RouteTable.routes`.
    var all: [Int32] = []

    func match(_ path: UnsafeRawBufferPointer) -> Int32 {
        let h = fnv1a(path)
        var i = exact.first(h)
        while i >= 0 {
            if bytesEqual(exactPaths[Int(i)], path) { return exactRoutes[Int(i)] }
            i = exact.next(i)
        }
        return trie.longestPrefix(path)
    }
}

/// The compiled, immutable routing table of one configuration. Lookups take normalised host and
/// path bytes, cost O(length of the path) and allocate nothing.
public struct RouteTable: Sendable {
    public internal(set) var routes: [Route] = []
    public internal(set) var backends: [BackendTarget] = []
    var hosts: [HostRoutes] = []
    var hostNames: [[UInt8]] = []
    var exactHostIndex = HashIndex()
    var wildcardIndex = HashIndex()
    /// Index into `hosts` of the rules without a host, or -1.
    var anyHost: Int32 = -1
    /// Index into `routes` of the default backend, or -1.
    public internal(set) var defaultRoute: Int32 = -1
    var hostKinds: [HostKind] = []

    enum HostKind: Sendable { case exact, wildcard, any }

    public init() {}

    /// The route for a request, or nil for 404. `host`: lower-case, without port or trailing dot.
    /// `path`: normalised, without the query.
    @inlinable
    public func lookup(host: UnsafeRawBufferPointer, path: UnsafeRawBufferPointer) -> Int? {
        let r = lookupIndex(host: host, path: path)
        return r < 0 ? nil : Int(r)
    }

    @usableFromInline
    func lookupIndex(host: UnsafeRawBufferPointer, path: UnsafeRawBufferPointer) -> Int32 {
        if host.count > 0 {
            let h = exactHostEntry(host)
            if h >= 0 {
                let r = hosts[Int(h)].match(path)
                if r >= 0 { return r }
            }
            let w = wildcardHostEntry(host)
            if w >= 0 {
                let r = hosts[Int(w)].match(path)
                if r >= 0 { return r }
            }
        }
        if anyHost >= 0 {
            let r = hosts[Int(anyHost)].match(path)
            if r >= 0 { return r }
        }
        return defaultRoute
    }

    func exactHostEntry(_ host: UnsafeRawBufferPointer) -> Int32 {
        var i = exactHostIndex.first(fnv1a(host))
        while i >= 0 {
            if bytesEqual(hostNames[Int(i)], host) && hostKinds[Int(i)] == .exact { return i }
            i = exactHostIndex.next(i)
        }
        return -1
    }

    /// `*.example.com` covers exactly one more label: look up the name without its first label.
    func wildcardHostEntry(_ host: UnsafeRawBufferPointer) -> Int32 {
        guard let dot = host.firstIndex(of: UInt8(ascii: ".")), dot > 0, dot + 1 < host.count else { return -1 }
        let suffix = UnsafeRawBufferPointer(rebasing: host[(dot + 1)...])
        var i = wildcardIndex.first(fnv1a(suffix))
        while i >= 0 {
            if bytesEqual(hostNames[Int(i)], suffix) && hostKinds[Int(i)] == .wildcard { return i }
            i = wildcardIndex.next(i)
        }
        return -1
    }

    // MARK: - Strings, for the CLI and tests (not the hot path)

    public func lookup(host: String, path: String) -> Route? {
        var h = Array(host.utf8)
        var p = Array(path.utf8)
        let r = h.withUnsafeMutableBytes { hb in p.withUnsafeMutableBytes { pb in
            lookupIndex(host: UnsafeRawBufferPointer(hb), path: UnsafeRawBufferPointer(pb))
        } }
        return r < 0 ? nil : routes[Int(r)]
    }

    /// Every host pattern in match order, each with its routes in match order.
    public var listing: [(host: String, routes: [Route])] {
        var out: [(String, [Route])] = []
        let order = hosts.indices.sorted { a, b in
            let ka = rank(hostKinds[a]), kb = rank(hostKinds[b])
            if ka != kb { return ka < kb }
            return String(decoding: hostNames[a], as: UTF8.self) < String(decoding: hostNames[b], as: UTF8.self)
        }
        for i in order {
            let name: String
            switch hostKinds[i] {
            case .exact: name = String(decoding: hostNames[i], as: UTF8.self)
            case .wildcard: name = "*." + String(decoding: hostNames[i], as: UTF8.self)
            case .any: name = "*"
            }
            out.append((name, hosts[i].all.map { routes[Int($0)] }.sorted(by: Self.matchOrder)))
        }
        if defaultRoute >= 0 { out.append(("(default backend)", [routes[Int(defaultRoute)]])) }
        return out
    }

    private func rank(_ k: HostKind) -> Int {
        switch k {
        case .exact: return 0
        case .wildcard: return 1
        case .any: return 2
        }
    }

    /// Exact before Prefix at equal length; longer before shorter.
    static func matchOrder(_ a: Route, _ b: Route) -> Bool {
        if a.matchLength != b.matchLength { return a.matchLength > b.matchLength }
        if (a.pathType == .exact) != (b.pathType == .exact) { return a.pathType == .exact }
        return false
    }

    /// The host entries a request for `host` consults, in order (for `sluice explain`).
    public func candidates(host: String) -> [(pattern: String, routes: [Route])] {
        var out: [(String, [Route])] = []
        let hb = Array(host.utf8)
        hb.withUnsafeBytes { h in
            let e = exactHostEntry(h)
            if e >= 0 { out.append((host, hosts[Int(e)].all.map { routes[Int($0)] }.sorted(by: Self.matchOrder))) }
            let w = wildcardHostEntry(h)
            if w >= 0 { out.append(("*." + String(decoding: hostNames[Int(w)], as: UTF8.self), hosts[Int(w)].all.map { routes[Int($0)] }.sorted(by: Self.matchOrder))) }
        }
        if anyHost >= 0 { out.append(("* (rules without host)", hosts[Int(anyHost)].all.map { routes[Int($0)] }.sorted(by: Self.matchOrder))) }
        return out
    }
}

// MARK: - Building blocks

/// FNV-1a over bytes: cheap, good enough to spread keys that are then compared byte for byte.
@inlinable
func fnv1a(_ p: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in p {
        h ^= UInt64(b)
        h = h &* 0x100_0000_01b3
    }
    return h
}

@inlinable
func bytesEqual(_ a: [UInt8], _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    return a.withUnsafeBytes { ab in
        ab.count == 0 || memcmp(ab.baseAddress!, b.baseAddress!, ab.count) == 0
    }
}

/// Hash → entries with chaining, so that a lookup never builds a key object. An open table of
/// chain heads indexed by the top bits of the hash: a Swift Dictionary keyed by the hash re-hashed
/// it with SipHash on every lookup, about 100 instructions each, three or four times per request.
struct HashIndex: Sendable {
    /// Bucket → the newest entry whose hash falls in it, or -1. Empty until the first insert.
    private var buckets: [Int32] = []
    /// By entry: the next older entry of the same bucket, or -1.
    private var chain: [Int32] = []
    /// By entry: its hash (entries of one bucket may have other hashes).
    private var hashes: [UInt64] = []
    /// Entries in the order they came, to rebuild the buckets when the table grows.
    private var members: [Int32] = []
    private var shift: UInt64 = 64

    private func bucket(_ hash: UInt64) -> Int {
        // Fibonacci hashing: the top bits of the product depend on every bit of the hash.
        Int(truncatingIfNeeded: (hash &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// Registers entry `index` (entries are numbered from 0, not all in one index) under `hash`.
    mutating func insert(_ hash: UInt64, _ index: Int32) {
        let i = Int(index)
        if chain.count <= i {
            chain.append(contentsOf: repeatElement(-1, count: i + 1 - chain.count))
            hashes.append(contentsOf: repeatElement(0, count: i + 1 - hashes.count))
        }
        hashes[i] = hash
        members.append(index)
        if members.count * 2 > buckets.count {
            // At most half full, so chains stay short; rebuilt oldest first, so newest first again.
            var capacity = 16
            while capacity < members.count * 2 { capacity *= 2 }
            buckets = Array(repeating: -1, count: capacity)
            shift = UInt64(64 - capacity.trailingZeroBitCount)
            for m in members { link(m) }
        } else {
            link(index)
        }
    }

    private mutating func link(_ index: Int32) {
        let b = bucket(hashes[Int(index)])
        chain[Int(index)] = buckets[b]
        buckets[b] = index
    }

    /// The newest entry registered under `hash`, or -1.
    func first(_ hash: UInt64) -> Int32 {
        guard !buckets.isEmpty else { return -1 }
        var i = buckets[bucket(hash)]
        while i >= 0 && hashes[Int(i)] != hash { i = chain[Int(i)] }
        return i
    }

    /// The next older entry registered under the same hash as `index`, or -1.
    func next(_ index: Int32) -> Int32 {
        let hash = hashes[Int(index)]
        var i = chain[Int(index)]
        while i >= 0 && hashes[Int(i)] != hash { i = chain[Int(i)] }
        return i
    }
}

/// Prefix paths as a trie of `/`-separated segments, compared whole (so `/v1` never matches `/v11`).
struct SegmentTrie: Sendable {
    struct Node: Sendable {
        var segment: [UInt8]
        var parent: Int32
        var route: Int32 = -1
    }

    var nodes: [Node] = [Node(segment: [], parent: -1)]
    private var children = HashIndex()
    private var childCount: Int32 = 0
    private var childNodes: [Int32] = []

    private static func key(_ parent: Int32, _ segment: UnsafeRawBufferPointer) -> UInt64 {
        fnv1a(segment) &* 31 &+ UInt64(UInt32(bitPattern: parent))
    }

    private func child(of parent: Int32, _ segment: UnsafeRawBufferPointer) -> Int32 {
        var i = children.first(Self.key(parent, segment))
        while i >= 0 {
            let n = childNodes[Int(i)]
            if nodes[Int(n)].parent == parent && bytesEqual(nodes[Int(n)].segment, segment) { return n }
            i = children.next(i)
        }
        return -1
    }

    /// Adds a Prefix path; returns the route already there (an older Ingress) if any.
    mutating func insert(path: [UInt8], route: Int32) -> Int32? {
        var node: Int32 = 0
        path.withUnsafeBytes { p in
            forEachSegment(p) { seg in
                let c = child(of: node, seg)
                if c >= 0 {
                    node = c
                } else {
                    nodes.append(Node(segment: Array(seg), parent: node))
                    let n = Int32(nodes.count - 1)
                    childNodes.append(n)
                    children.insert(Self.key(node, seg), childCount)
                    childCount += 1
                    node = n
                }
                return true
            }
        }
        if nodes[Int(node)].route >= 0 { return nodes[Int(node)].route }
        nodes[Int(node)].route = route
        return nil
    }

    func longestPrefix(_ path: UnsafeRawBufferPointer) -> Int32 {
        var node: Int32 = 0
        var best = nodes[0].route
        forEachSegment(path) { seg in
            let c = child(of: node, seg)
            if c < 0 { return false }
            node = c
            let r = nodes[Int(c)].route
            if r >= 0 { best = r }
            return true
        }
        return best
    }
}

/// Calls `body` with each segment of an absolute path; stops at an empty segment (a trailing `/`
/// or `//`) or when `body` returns false.
@inlinable
func forEachSegment(_ path: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Bool) {
    var i = 0
    let n = path.count
    if i < n && path[i] == UInt8(ascii: "/") { i += 1 }
    while i < n {
        var j = i
        while j < n && path[j] != UInt8(ascii: "/") { j += 1 }
        if j == i { return }
        if !body(UnsafeRawBufferPointer(rebasing: path[i..<j])) { return }
        i = j + 1
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
