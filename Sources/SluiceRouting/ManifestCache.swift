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
        /// What the file contributes now (the new objects, or the last good ones), document by
        /// document and without problems: merged once for the whole folder, not per file first.
        var contribution: [ManifestSet]
        /// The file's own problems as last parsed.
        var problems: [ConfigProblem]
        var lastGood: [ManifestSet]?
    }

    private var entries: [String: Entry] = [:]
    /// Parsed documents by their text (lines relative to the document), so that editing one
    /// object in a big multi-document file re-parses only that document.
    private var documents: [String: ManifestSet] = [:]
    /// Each file's documents as last split (text, first line, objects with file lines): an edit
    /// usually leaves most documents where they were, and those are then reused without hashing
    /// their text or moving their line numbers again.
    private var placed: [String: [PlacedDocument]] = [:]

    struct PlacedDocument {
        var text: String
        var firstLine: Int
        var objects: ManifestSet
        var problems: [ConfigProblem]
    }

    public init() {}

    /// A file whose modification time is younger than this may be in the middle of a write (an
    /// in-place save truncates, then writes): it keeps its previous version for now, and the
    /// caller loads again shortly (`unsettledFiles`). A reload after the usual debounce never
    /// waits for it; reloads forced in the middle of a stream of writes do. 0 (the default)
    /// turns it off; the live server sets it.
    public var settleTime = 0.0
    /// Files left at their previous version by the last load because they had just changed.
    public private(set) var unsettledFiles: Set<String> = []
    private var loadedOnce = false
    /// When a file that had objects was first seen empty (monotonic seconds). An in-place save
    /// truncates before it writes, and a writer can be descheduled in between for longer than
    /// `settleTime`: an emptied file is believed only once it has stayed empty for a while.
    private var emptySince: [String: Double] = [:]

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
        var documentsInOrder: [ManifestSet] = []
        var unsettled = Set<String>()
        let now = Self.wallClock()
        defer {
            unsettledFiles = unsettled
            loadedOnce = true
        }
        for file in ManifestLoader.files(in: directory) {
            seen.insert(file)
            guard let sig = Self.signature(file) else { continue }
            let age = now - (Double(sig.mtimeSec) + Double(sig.mtimeNsec) / 1e9)
            var justEmptied = false
            if sig.size == 0, let e = entries[file], e.signature != sig, e.contribution.contains(where: { !$0.isEmpty }) {
                let t = Self.monotonic()
                let since = emptySince[file] ?? t
                emptySince[file] = since
                justEmptied = t - since < 2 * settleTime
            } else if sig.size > 0 {
                emptySince[file] = nil
            }
            if loadedOnce, entries[file]?.signature != sig, justEmptied || (age >= 0 && age < settleTime) {
                unsettled.insert(file)
                if let e = entries[file] {
                    set.files.append(file)
                    documentsInOrder += e.contribution
                    set.problems += e.problems
                    if e.lastGood != nil && e.problems.contains(where: { $0.severity == .error }) { onLastGood.insert(file) }
                }
                continue
            }
            set.files.append(file)
            if let e = entries[file], e.signature == sig {
                documentsInOrder += e.contribution
                set.problems += e.problems
                if e.lastGood != nil && e.problems.contains(where: { $0.severity == .error }) { onLastGood.insert(file) }
                continue
            }
            let (documents, problems) = loadByDocument(file)
            let failed = problems.contains { $0.severity == .error }
            var entry = Entry(signature: sig, contribution: documents, problems: problems, lastGood: entries[file]?.lastGood)
            if !failed {
                entry.lastGood = entry.contribution
            } else if let good = entry.lastGood {
                entry.contribution = good
                entry.problems.append(ConfigProblem(.warning, file: file, line: 1, object: "", field: "",
                                                    message: "the file has errors: its last good version keeps serving until it is fixed"))
                onLastGood.insert(file)
            }
            entries[file] = entry
            documentsInOrder += entry.contribution
            set.problems += entry.problems
        }
        set.merge(documentsInOrder)
        for gone in entries.keys where !seen.contains(gone) {
            entries[gone] = nil
            emptySince[gone] = nil
            placed[gone] = nil
        }
        if documents.count > 4 * max(1, set.ingresses.count + set.services.count + set.endpoints.count + 64) {
            // Old versions of edited documents pile up; start afresh now and then.
            documents.removeAll()
        }
        filesOnLastGood = onLastGood
        return set
    }

    /// Parses a file document by document, reusing documents whose text did not change. Falls back
    /// to one parse of the whole file when its document markers are not plain `---` lines.
    func loadByDocument(_ file: String) -> (documents: [ManifestSet], problems: [ConfigProblem]) {
        func whole(_ set: ManifestSet) -> ([ManifestSet], [ConfigProblem]) {
            var objects = set
            objects.problems = []
            objects.files = []
            return ([objects], set.problems)
        }
        guard let bytes = readFile(file), let text = String(validating: bytes, as: UTF8.self) else {
            placed[file] = nil
            return whole(ManifestLoader.load(file: file, displayName: file))
        }
        guard let chunks = Self.splitDocuments(text) else {
            placed[file] = nil
            return whole(ManifestLoader.load(text: text, file: file))
        }
        let before = placed[file] ?? []
        var now: [PlacedDocument] = []
        now.reserveCapacity(chunks.count)
        var problems: [ConfigProblem] = []
        for (position, (chunk, firstLine)) in chunks.enumerated() {
            if position < before.count, before[position].firstLine == firstLine, before[position].text == chunk {
                now.append(before[position])
            } else {
                let parsed: ManifestSet
                if let cached = documents[chunk] {
                    parsed = cached
                } else {
                    parsed = ManifestLoader.load(text: chunk, file: file)
                    documents[chunk] = parsed
                }
                var shifted = parsed.shiftingLines(by: firstLine - 1, file: file)
                shifted.files = []
                let docProblems = shifted.problems
                shifted.problems = []
                now.append(PlacedDocument(text: chunk, firstLine: firstLine, objects: shifted, problems: docProblems))
            }
            problems += now[now.count - 1].problems
        }
        placed[file] = now
        return (now.map(\.objects), problems)
    }

    /// Documents as (text, first line), split at plain `---` lines; nil when the file uses
    /// directives, `...` ends or content on a `---` line (then only a whole parse is right).
    static func splitDocuments(_ text: String) -> [(String, Int)]? {
        // On UTF-8 bytes: a Character-wise split of a 5 MiB file cost more than the YAML it saved.
        var text = text
        return text.withUTF8 { b -> [(String, Int)]? in
            var chunks: [(String, Int)] = []
            var docStart = 0
            var docFirstLine = 1
            var docLines = 0
            var lineNumber = 0
            var i = 0
            while i < b.count {
                var e = i
                while e < b.count && b[e] != 0x0A { e += 1 }
                lineNumber += 1
                let len = e - i
                if len > 0 && b[i] == UInt8(ascii: "%") { return nil }
                if len >= 3 && b[i] == UInt8(ascii: ".") && b[i + 1] == UInt8(ascii: ".") && b[i + 2] == UInt8(ascii: ".") { return nil }
                if len >= 3 && b[i] == UInt8(ascii: "-") && b[i + 1] == UInt8(ascii: "-") && b[i + 2] == UInt8(ascii: "-") {
                    var k = i + 3
                    while k < e && (b[k] == 0x20 || b[k] == 0x09 || b[k] == 0x0D) { k += 1 }
                    if k < e && b[k] != UInt8(ascii: "#") { return nil }
                    if docLines > 0 {
                        chunks.append((String(decoding: UnsafeBufferPointer(rebasing: b[docStart..<(i - 1)]), as: UTF8.self), docFirstLine))
                    }
                    docLines = 0
                    docStart = e + 1
                    docFirstLine = lineNumber + 1
                    i = e + 1
                    continue
                }
                docLines += 1
                i = e + 1
            }
            if docLines > 0 && docStart < b.count {
                chunks.append((String(decoding: UnsafeBufferPointer(rebasing: b[docStart..<b.count]), as: UTF8.self), docFirstLine))
            }
            return chunks
        }
    }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func wallClock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func signature(_ path: String) -> Signature? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Signature(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                         mtimeSec: Int(st.st_mtim.tv_sec), mtimeNsec: Int(st.st_mtim.tv_nsec))
    }
}
