import CNGHTTP2
#if canImport(Glibc)
import Glibc
#endif

/// nghttp2's allocations, served from free lists: haproxy's per-thread pools. The proxy keeps one
/// per event loop, shared by the loop's sessions, so that a stream takes the blocks another
/// stream on the loop has just freed, still in cache; a session of its own is the default.
///
/// nghttp2 allocates six small blocks per stream (the stream, its outbound items, copies of
/// the response fields) and frees them when the stream closes. With a few hundred streams in
/// flight per loop, glibc's per-thread cache (seven blocks per size) overflowed and every one
/// of them took malloc's slow path: a larger cache cut h2's instructions per request by 3 %.
/// Here a freed block goes on its size class's list and the next stream takes it back.
///
/// Blocks carry a 16-byte header (the class, and the size of an unpooled block), so `free`
/// needs no size and user pointers keep malloc's 16-byte alignment. Used on one event loop only,
/// as its sessions are. It must outlive them: `nghttp2_session_del` frees through it.
public final class HTTP2MemoryPool: @unchecked Sendable {
    static let headerBytes = 16
    static let classSizes = [64, 128, 256, 512, 1024]
    /// Blocks kept per class at most; beyond it a freed block goes back to malloc.
    let keepPerClass: Int
    private static let unpooled = classSizes.count
    private var allocatedSinceSweep = false

    /// The first free block of each class; a free block's first word points to the next.
    private let heads: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let counts: UnsafeMutablePointer<Int>

    /// `keepPerClass`: a session's own pool keeps what its streams use at once (64: ten streams
    /// in flight use about sixty blocks); a loop's, what all of its sessions' streams do.
    public init(keepPerClass: Int = 64) {
        self.keepPerClass = keepPerClass
        heads = .allocate(capacity: Self.classSizes.count)
        heads.initialize(repeating: nil, count: Self.classSizes.count)
        counts = .allocate(capacity: Self.classSizes.count)
        counts.initialize(repeating: 0, count: Self.classSizes.count)
    }

    deinit {
        trim()
        heads.deallocate()
        counts.deallocate()
    }

    /// Blocks on the free lists now (for tests and the idle check).
    var cachedBlocks: Int { (0..<Self.classSizes.count).reduce(0) { $0 + counts[$1] } }

    @inline(__always)
    static func sizeClass(_ size: Int) -> Int {
        if size <= 64 { return 0 }
        if size <= 128 { return 1 }
        if size <= 256 { return 2 }
        if size <= 512 { return 3 }
        if size <= 1024 { return 4 }
        return unpooled
    }

    func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        allocatedSinceSweep = true
        let c = Self.sizeClass(size)
        if c != Self.unpooled, let block = heads[c] {
            heads[c] = block.load(as: UnsafeMutableRawPointer?.self)
            counts[c] -= 1
            return block
        }
        let usable = c == Self.unpooled ? size : Self.classSizes[c]
        guard let raw = malloc(usable + Self.headerBytes) else { return nil }
        raw.storeBytes(of: c, as: Int.self)
        raw.storeBytes(of: usable, toByteOffset: 8, as: Int.self)
        return raw + Self.headerBytes
    }

    func free(_ block: UnsafeMutableRawPointer?) {
        guard let block else { return }
        let c = Self.sizeClass(of: block)
        if c != Self.unpooled && counts[c] < keepPerClass {
            block.storeBytes(of: heads[c], as: UnsafeMutableRawPointer?.self)
            heads[c] = block
            counts[c] += 1
        } else {
            Glibc.free(block - Self.headerBytes)
        }
    }

    func allocateZeroed(count: Int, size: Int) -> UnsafeMutableRawPointer? {
        let (total, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow, let block = allocate(total) else { return nil }
        memset(block, 0, total)
        return block
    }

    func reallocate(_ block: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
        guard let block else { return allocate(size) }
        let usable = Self.usableSize(of: block)
        if size <= usable { return block }
        guard let bigger = allocate(size) else { return nil }  // the old block stays valid, as realloc's
        memcpy(bigger, block, usable)
        free(block)
        return bigger
    }

    /// Called on every timeout sweep (twice a second) for a loop's pool: a loop whose sessions
    /// allocated nothing since the last call is idle, and its blocks go back to malloc.
    public func sweep() {
        if !allocatedSinceSweep { trim() }
        allocatedSinceSweep = false
    }

    /// Gives every cached block back to malloc (an idle connection should hold none).
    func trim() {
        for c in 0..<Self.classSizes.count {
            while let block = heads[c] {
                heads[c] = block.load(as: UnsafeMutableRawPointer?.self)
                Glibc.free(block - Self.headerBytes)
            }
            counts[c] = 0
        }
    }

    private static func sizeClass(of block: UnsafeMutableRawPointer) -> Int {
        (block - headerBytes).load(as: Int.self)
    }

    static func usableSize(of block: UnsafeMutableRawPointer) -> Int {
        (block - headerBytes).load(fromByteOffset: 8, as: Int.self)
    }

    /// The allocator to hand `nghttp2_session_server_new3`; nghttp2 copies it. The pool must
    /// outlive the session (it frees its blocks through it in `nghttp2_session_del`).
    var nghttp2Mem: nghttp2_mem {
        nghttp2_mem(mem_user_data: Unmanaged.passUnretained(self).toOpaque(),
                    malloc: sluiceH2Malloc, free: sluiceH2Free, calloc: sluiceH2Calloc, realloc: sluiceH2Realloc)
    }
}

// MARK: - nghttp2 callbacks

/// The pool behind `user`, without a retain and release per call.
@inline(__always)
private func withPool<R>(_ user: UnsafeMutableRawPointer?, _ body: (HTTP2MemoryPool) -> R) -> R {
    Unmanaged<HTTP2MemoryPool>.fromOpaque(user!)._withUnsafeGuaranteedRef(body)
}

private let sluiceH2Malloc: nghttp2_malloc = { size, user in
    withPool(user) { $0.allocate(size) }
}

private let sluiceH2Free: nghttp2_free = { block, user in
    withPool(user) { $0.free(block) }
}

private let sluiceH2Calloc: nghttp2_calloc = { count, size, user in
    withPool(user) { $0.allocateZeroed(count: count, size: size) }
}

private let sluiceH2Realloc: nghttp2_realloc = { block, size, user in
    withPool(user) { $0.reallocate(block, size) }
}
