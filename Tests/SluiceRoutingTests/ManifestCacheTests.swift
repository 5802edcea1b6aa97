import Foundation
import SluiceRouting
import Testing

/// Document-by-document loading must see exactly what one whole parse sees, lines included.
struct ManifestCacheTests {
    func folder(_ files: [String: String]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-cache-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (n, t) in files { try t.write(toFile: dir + "/" + n, atomically: false, encoding: .utf8) }
        return dir
    }

    @Test func sameObjectsAndLinesAsAWholeParse() throws {
        let broken = onePathIngress("/a//b")
        let dir = try folder([
            "a.yaml": "# leading comment\n---\n" + services + ingress("x", paths: [("x.test", "/", "Prefix", "a")]) + "--- # marker with a comment\n" + broken,
            "b.yml": "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Service\n    metadata: {name: l}\n    spec: {ports: [{port: 1}]}\n",
            "c.json": #"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j"}, "spec": {"ports": [{"port": 2}]}}"#,
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let whole = ManifestLoader.load(directory: dir)
        let cache = ManifestCache()
        let byDoc = cache.load(directory: dir)
        #expect(byDoc.problems.map(\.description) == whole.problems.map(\.description))
        #expect(byDoc.ingresses == whole.ingresses)
        #expect(byDoc.services == whole.services)
        #expect(byDoc.endpoints == whole.endpoints)
        #expect(!whole.problems.isEmpty)
        // Again from the cache, after an edit that shifts every later document down two lines.
        let a = dir + "/a.yaml"
        try ("# one more\n# and another\n" + String(contentsOfFile: a, encoding: .utf8)).write(toFile: a, atomically: false, encoding: .utf8)
        let whole2 = ManifestLoader.load(directory: dir)
        let byDoc2 = cache.load(directory: dir)
        #expect(byDoc2.problems.map(\.description) == whole2.problems.map(\.description))
        #expect(byDoc2.ingresses == whole2.ingresses)
    }

    /// Documents reused in place, moved by an insertion, and dropped by a deletion must all come
    /// out as a whole parse of the new text sees them.
    @Test func editsInsertionsAndDeletionsMatchAWholeParse() throws {
        func doc(_ n: Int, _ backend: String) -> String {
            ingress("i\(n)", paths: [("h\(n).test", "/p\(n)", "Prefix", backend)])
        }
        let versions: [[String]] = [
            (0..<6).map { doc($0, "a") },
            (0..<6).map { doc($0, $0 == 3 ? "b" : "a") },                      // one edited in place
            [doc(9, "a")] + (0..<6).map { doc($0, $0 == 3 ? "b" : "a") },      // one inserted before all
            [doc(9, "a")] + (0..<6).filter { $0 != 2 }.map { doc($0, "a") },    // one removed, one reverted
            [doc(9, "a")] + (0..<6).filter { $0 != 2 }.map { doc($0, "a") } + [onePathIngress("/x/../y")],
        ]
        let dir = try folder([:])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cache = ManifestCache()
        for (round, docs) in versions.enumerated() {
            try (services + docs.joined()).write(toFile: dir + "/r.yaml", atomically: false, encoding: .utf8)
            let whole = ManifestLoader.load(directory: dir)
            let cached = cache.load(directory: dir)
            #expect(cached.ingresses == whole.ingresses, "round \(round)")
            #expect(cached.ingresses.map(\.meta.location.line) == whole.ingresses.map(\.meta.location.line), "round \(round)")
            #expect(cached.services == whole.services, "round \(round)")
            // The last version is broken: the cache serves the previous one, a whole parse cannot.
            if round < versions.count - 1 {
                #expect(cached.problems.map(\.description) == whole.problems.map(\.description), "round \(round)")
            } else {
                #expect(cached.problems.contains { $0.severity == .error && $0.line > 1 })
                #expect(cached.ingresses.count == docs.count - 1)
            }
        }
    }

    /// An in-place save truncates before it writes: a load that lands in between must keep the
    /// file's objects (and say so), and only a file that stays empty is believed.
    @Test func aFileSeenEmptyKeepsItsObjectsUntilItStaysEmpty() throws {
        let dir = try folder(["r.yaml": services + ingress("one", paths: [("one.test", "/", "Prefix", "a")])])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cache = ManifestCache()
        cache.settleTime = 0.05
        #expect(cache.load(directory: dir).ingresses.count == 1)
        try "".write(toFile: dir + "/r.yaml", atomically: false, encoding: .utf8)
        let during = cache.load(directory: dir)
        #expect(during.ingresses.count == 1, "a just-emptied file was believed at once")
        #expect(cache.unsettledFiles == [dir + "/r.yaml"])
        usleep(150_000)
        let after = cache.load(directory: dir)
        #expect(after.ingresses.isEmpty && after.services.isEmpty, "a file that stayed empty must be applied")
        #expect(cache.unsettledFiles.isEmpty)
    }
}
