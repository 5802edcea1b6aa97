import Foundation

/// Per-file memory of a rules folder between reloads: unchanged files are not parsed again, and a
/// file that now fails to parse or validate keeps contributing its last good objects.
public final class ManifestCache: @unchecked Sendable {
    // @unchecked: one reload at a time uses it (the reload coordinator serialises them).
    struct Signature: Equatable {
        var device: UInt64, inode: UInt64, size: Int64, mtimeSec: Int, mtimeNsec: Int
    }

    struct Entry {
        var signature: Signature
        /// What the file contributes now (the new objects, or the last good ones).
        var contribution: ManifestSet
        /// The file's own problems as last parsed.
        var problems: [ConfigProblem]
        var lastGood: ManifestSet?
    }

    private var entries: [String: Entry] = [:]

    public init() {}

    /// Files whose current version has errors and which serve their last good version instead.
    public private(set) var filesOnLastGood: Set<String> = []

    public func load(directory: String) -> ManifestSet {
        var set = ManifestSet()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            set.problems.append(ConfigProblem(.error, file: directory, line: 0, object: "", field: "", message: "rules folder does not exist"))
            return set
        }
        var seen = Set<String>()
        var onLastGood = Set<String>()
        for file in ManifestLoader.files(in: directory) {
            seen.insert(file)
            guard let sig = Self.signature(file) else { continue }
            if let e = entries[file], e.signature == sig {
                set.merge(e.contribution)
                set.problems += e.problems
                if e.lastGood != nil && e.problems.contains(where: { $0.severity == .error }) { onLastGood.insert(file) }
                continue
            }
            let parsed = ManifestLoader.load(file: file, displayName: file)
            let failed = parsed.problems.contains { $0.severity == .error }
            var entry = Entry(signature: sig, contribution: parsed, problems: parsed.problems, lastGood: entries[file]?.lastGood)
            entry.contribution.problems = []
            if !failed {
                entry.lastGood = entry.contribution
            } else if let good = entry.lastGood {
                entry.contribution = good
                entry.problems.append(ConfigProblem(.warning, file: file, line: 1, object: "", field: "",
                                                    message: "the file has errors: its last good version keeps serving until it is fixed"))
                onLastGood.insert(file)
            }
            entries[file] = entry
            set.merge(entry.contribution)
            set.problems += entry.problems
        }
        for gone in entries.keys where !seen.contains(gone) { entries[gone] = nil }
        filesOnLastGood = onLastGood
        return set
    }

    static func signature(_ path: String) -> Signature? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Signature(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                         mtimeSec: Int(st.st_mtim.tv_sec), mtimeNsec: Int(st.st_mtim.tv_nsec))
    }
}
