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
    /// Parsed documents by their text (lines relative to the document), so that editing one
    /// object in a big multi-document file re-parses only that document.
    private var documents: [String: ManifestSet] = [:]

    public init() {}

    /// Files whose current version has errors and which serve their last good version instead.
    public private(set) var filesOnLastGood: Set<String> = []

    /// The rule files of the last load, sorted.
    public var files: [String] { entries.keys.sorted() }

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
            var docsUsed = Set<String>()
            let parsed = loadByDocument(file, used: &docsUsed)
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
        if documents.count > 4 * max(1, set.ingresses.count + set.services.count + set.endpoints.count + 64) {
            // Old versions of edited documents pile up; start afresh now and then.
            documents.removeAll()
        }
        filesOnLastGood = onLastGood
        return set
    }

    /// Parses a file document by document, reusing documents whose text did not change. Falls back
    /// to one parse of the whole file when its document markers are not plain `---` lines.
    func loadByDocument(_ file: String, used: inout Set<String>) -> ManifestSet {
        guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
            return ManifestLoader.load(file: file, displayName: file)
        }
        guard let chunks = Self.splitDocuments(text) else {
            return ManifestLoader.load(text: text, file: file)
        }
        var set = ManifestSet()
        set.files = [file]
        for (chunk, firstLine) in chunks {
            let parsed: ManifestSet
            if let cached = documents[chunk] {
                parsed = cached
            } else {
                parsed = ManifestLoader.load(text: chunk, file: file)
                documents[chunk] = parsed
            }
            used.insert(chunk)
            var shifted = parsed.shiftingLines(by: firstLine - 1, file: file)
            shifted.files = []
            set.merge(shifted)
        }
        return set
    }

    /// Documents as (text, first line), split at plain `---` lines; nil when the file uses
    /// directives, `...` ends or content on a `---` line (then only a whole parse is right).
    static func splitDocuments(_ text: String) -> [(String, Int)]? {
        var chunks: [(String, Int)] = []
        var current: [Substring] = []
        var start = 1
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.hasPrefix("%") || line.hasPrefix("...") { return nil }
            if line.hasPrefix("---") {
                let rest = line.dropFirst(3).drop { $0 == " " || $0 == "\t" || $0 == "\r" }
                if !rest.isEmpty && !rest.hasPrefix("#") { return nil }
                if !current.isEmpty { chunks.append((current.joined(separator: "\n"), start)) }
                current = []
                start = lineNumber + 1
                continue
            }
            current.append(line)
        }
        if !current.isEmpty { chunks.append((current.joined(separator: "\n"), start)) }
        return chunks
    }

    static func signature(_ path: String) -> Signature? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Signature(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                         mtimeSec: Int(st.st_mtim.tv_sec), mtimeNsec: Int(st.st_mtim.tv_nsec))
    }
}
