import SluiceHTTP1

/// What one message looked like to a parser, in a form two parsers can be compared by.
struct ParsedMessage: Equatable, CustomStringConvertible {
    var startLine: [String] = []  // method, target, version  or  version, status
    var fields: [[String]] = []
    var body: [UInt8] = []
    var trailers: [[String]] = []
    var complete = false

    var description: String {
        "\(startLine) fields=\(fields) body=\(String(decoding: body, as: UTF8.self).debugDescription) trailers=\(trailers) complete=\(complete)"
    }
}

struct ParseOutcome: Equatable, CustomStringConvertible {
    var messages: [ParsedMessage] = []
    var error: HTTP1ParseError? = nil
    /// The stream switched protocols (Upgrade, 101, CONNECT) and the rest is not HTTP.
    var upgraded = false

    /// Splitting may surface an error earlier with another reason; the status must not change.
    static func == (a: ParseOutcome, b: ParseOutcome) -> Bool {
        a.messages == b.messages && a.error?.kind == b.error?.kind && a.upgraded == b.upgraded
    }

    var description: String {
        "messages=\(messages) error=\(error.map { "\($0)" } ?? "nil") upgraded=\(upgraded)"
    }
}

/// Feeds a parser the way a channel handler does: keeps unconsumed bytes, appends what arrives,
/// and presents them again.
struct ParserDriver {
    var parser: HTTP1Parser
    var pending: [UInt8] = []
    var outcome = ParseOutcome()
    var stopped = false
    let respondingToHead: Bool

    init(kind: HTTP1Parser.Kind, limits: HTTP1Limits = .default, responseToHead: Bool = false, requireHost: Bool = true) {
        parser = HTTP1Parser(kind: kind, limits: limits)
        parser.requireHost = requireHost
        parser.responseToHead = responseToHead
        respondingToHead = responseToHead
    }

    mutating func feed(_ bytes: some Collection<UInt8>) {
        guard !stopped else { return }
        pending.append(contentsOf: bytes)
        run()
    }

    mutating func finish() {
        guard !stopped else { return }
        if let e = parser.finish() { apply(e, pending: []) }
    }

    private mutating func run() {
        while !stopped {
            let buffer = pending
            let event = buffer.withUnsafeBytes { parser.parse($0) }
            let consumed = apply(event, pending: buffer)
            if case .needMore = event {
                pending.removeFirst(consumed)
                return
            }
            pending.removeFirst(consumed)
        }
    }

    @discardableResult
    private mutating func apply(_ event: HTTP1Parser.Event, pending buffer: [UInt8]) -> Int {
        func text(_ r: Range<Int>) -> String { latin1IfNotUTF8(buffer[r]) }
        switch event {
        case .needMore(let c):
            return c
        case .head(let c):
            let h = parser.head
            var m = ParsedMessage()
            if parser.kind == .request {
                m.startLine = [text(h.methodRange), text(h.target), "\(h.versionMajor).\(h.versionMinor)"]
            } else {
                m.startLine = ["\(h.versionMajor).\(h.versionMinor)", "\(h.status)"]
            }
            m.fields = h.fields.map { [text($0.name), text($0.value)] }
            outcome.messages.append(m)
            return c
        case .body(let r, let c):
            outcome.messages[outcome.messages.count - 1].body.append(contentsOf: buffer[r])
            return c
        case .end(let t, let c):
            let i = outcome.messages.count - 1
            outcome.messages[i].complete = true
            outcome.messages[i].trailers = splitFieldLines(Array(buffer[t]))
            let h = parser.head
            let upgrade = parser.kind == .request
                ? (h.hasUpgrade && h.connectionUpgrade) || h.method == .connect
                : h.status == 101
            if respondingToHead { parser.responseToHead = true }
            if upgrade {
                outcome.upgraded = true
                stopped = true
            }
            return c
        case .error(let e):
            outcome.error = e
            stopped = true
            return 0
        }
    }
}

func splitFieldLines(_ bytes: [UInt8]) -> [[String]] {
    var out: [[String]] = []
    var line: [UInt8] = []
    for b in bytes {
        if b == 0x0A {
            if line.last == 0x0D { line.removeLast() }
            if let colon = line.firstIndex(of: 0x3A) {
                let name = String(decoding: line[..<colon], as: UTF8.self)
                let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingSpaces()
                out.append([name, value])
            }
            line = []
        } else {
            line.append(b)
        }
    }
    return out
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

/// Parses `bytes` whole, split at every offset, and one byte at a time; all must agree.
func parseAllWays(_ bytes: [UInt8], kind: HTTP1Parser.Kind, limits: HTTP1Limits = .default,
                  responseToHead: Bool = false, finish: Bool = false, requireHost: Bool = true) -> (whole: ParseOutcome, disagreements: [String]) {
    func run(_ pieces: [ArraySlice<UInt8>]) -> ParseOutcome {
        var d = ParserDriver(kind: kind, limits: limits, responseToHead: responseToHead, requireHost: requireHost)
        for p in pieces { d.feed(p) }
        if finish { d.finish() }
        return d.outcome
    }
    let whole = run([bytes[...]])
    var disagreements: [String] = []
    if bytes.count > 1 {
        for split in 1..<bytes.count {
            let o = run([bytes[..<split], bytes[split...]])
            if o != whole { disagreements.append("split at \(split): \(o)") }
        }
        let o = run(bytes.indices.map { bytes[$0...$0] })
        if o != whole { disagreements.append("byte by byte: \(o)") }
    }
    return (whole, disagreements)
}

/// Bytes as text for comparison: UTF-8 when valid, otherwise one character per byte.
func latin1IfNotUTF8(_ bytes: some Collection<UInt8>) -> String {
    if let s = String(validating: bytes, as: UTF8.self) { return s }
    return String(bytes.map { Character(Unicode.Scalar($0)) })
}
