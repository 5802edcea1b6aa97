import Testing
@testable import SluiceHTTP2

/// The free lists behind nghttp2's allocations: what malloc, calloc, realloc and free promise,
/// plus reuse, the cap per class and the trim an idle connection gets.
struct HTTP2MemoryPoolTests {
    @Test func aFreedBlockIsTheNextOneOfItsClass() {
        let pool = HTTP2MemoryPool()
        let a = pool.allocate(100)!
        pool.free(a)
        #expect(pool.cachedBlocks == 1)
        #expect(pool.allocate(120) == a, "same class (128): taken back from the list")
        #expect(pool.cachedBlocks == 0)
        let other = pool.allocate(40)!  // class 64: not the freed 128-byte block
        #expect(other != a)
        pool.free(a)
        pool.free(other)
    }

    @Test func blocksAreAlignedAndAsLargeAsAsked() {
        let pool = HTTP2MemoryPool()
        var blocks: [UnsafeMutableRawPointer] = []
        for size in [1, 64, 65, 200, 511, 1024, 1025, 40_000] {
            let b = pool.allocate(size)!
            #expect(Int(bitPattern: b) % 16 == 0)
            #expect(HTTP2MemoryPool.usableSize(of: b) >= size)
            b.initializeMemory(as: UInt8.self, repeating: 0xAB, count: size)  // ASan checks the bounds
            blocks.append(b)
        }
        for b in blocks { pool.free(b) }
        #expect(pool.cachedBlocks == 6, "the two blocks above 1 KiB went back to malloc")
    }

    @Test func zeroedBlocksAreZeroEvenWhenReused() {
        let pool = HTTP2MemoryPool()
        let dirty = pool.allocate(256)!
        dirty.initializeMemory(as: UInt8.self, repeating: 0xFF, count: 256)
        pool.free(dirty)
        let clean = pool.allocateZeroed(count: 8, size: 32)!
        #expect(clean == dirty)
        #expect(UnsafeRawBufferPointer(start: clean, count: 256).allSatisfy { $0 == 0 })
        pool.free(clean)
        #expect(pool.allocateZeroed(count: Int.max, size: 2) == nil, "an overflowing size fails as calloc does")
    }

    @Test func reallocationKeepsTheBytes() {
        let pool = HTTP2MemoryPool()
        let small = pool.allocate(10)!
        for i in 0..<10 { small.storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
        #expect(pool.reallocate(small, 60) == small, "still fits its 64-byte class")
        let big = pool.reallocate(small, 5000)!
        #expect(big != small)
        #expect((0..<10).allSatisfy { big.load(fromByteOffset: $0, as: UInt8.self) == UInt8($0) })
        #expect(pool.cachedBlocks == 1, "the old block was freed")
        let fresh = pool.reallocate(nil, 30)!  // realloc(NULL) is malloc
        pool.free(fresh)
        pool.free(big)
        pool.free(nil)
    }

    @Test func eachClassKeepsABoundedNumberAndTrimEmptiesThem() {
        let pool = HTTP2MemoryPool()
        let blocks = (0..<(pool.keepPerClass + 10)).map { _ in pool.allocate(300)! }
        for b in blocks { pool.free(b) }
        #expect(pool.cachedBlocks == pool.keepPerClass)
        pool.trim()
        #expect(pool.cachedBlocks == 0)
    }

    /// Answers every request 204, and sends the preface and a first request (stream 1).
    private static func answerFirstStream(_ h: Harness) {
        h.delegate.onHeaders = { [unowned h] s in  // the harness holds the delegate
            var head = HTTP2HeaderBlock()
            head.add(":status", "204")
            h.session.respond(s, headers: head, hasBody: false)
        }
        var w = FrameWriter()
        w.start()
        w.headers(stream: 1, get, endStream: true)
        h.feed(w)
        _ = h.output()
    }

    /// A session allocates through its pool and gives its blocks back when streams close; an
    /// idle connection's `releaseSpares` empties the lists.
    @Test func aSessionReusesItsBlocksAcrossStreams() {
        let h = Harness()
        Self.answerFirstStream(h)
        #expect(h.session.openStreams == 0)
        let cached = h.session.cachedMemoryBlocks
        #expect(cached > 0, "a closed stream's blocks wait for the next")
        for id in stride(from: UInt32(3), through: 41, by: 2) {
            var next = FrameWriter()
            next.headers(stream: id, get, endStream: true)
            h.feed(next)
            let out = h.output()
            #expect(out.contains { $0.type == 1 && $0.stream == id })
        }
        #expect(h.delegate.heads.count == 21)
        #expect(h.session.cachedMemoryBlocks == cached, "each stream took its blocks back from the lists")
        h.session.releaseSpares()
        #expect(h.session.cachedMemoryBlocks == 0)
    }

    /// The proxy's sessions share their loop's pool: one connection going idle does not empty
    /// it, and the loop's sweep does once no session has allocated for a whole period.
    @Test func aLoopsSessionsShareOnePoolThatOnlyTheSweepEmpties() {
        let shared = HTTP2MemoryPool(keepPerClass: 1024)
        let a = Harness(memory: shared), b = Harness(memory: shared)
        for h in [a, b] { Self.answerFirstStream(h) }
        #expect(a.delegate.heads.count == 1 && b.delegate.heads.count == 1)
        let cached = shared.cachedBlocks
        #expect(cached > 0)
        #expect(a.session.cachedMemoryBlocks == cached, "a session reports the pool it allocates from")
        a.session.releaseSpares()
        #expect(shared.cachedBlocks == cached, "an idle connection leaves the loop's blocks alone")
        shared.sweep()  // allocations since the start: kept
        #expect(shared.cachedBlocks == cached)
        shared.sweep()  // a whole period without one: the loop is idle
        #expect(shared.cachedBlocks == 0)
    }
}
