import Foundation
import SluiceHTTP1
import Testing

// MARK: - The llhttp corpus

/// One case of the llhttp markdown corpus: raw bytes and the events llhttp logged for them.
struct CorpusCase: CustomTestStringConvertible, Sendable {
    var file: String
    var title: String
    var type: String
    var raw: [UInt8]
    var log: [String]

    var testDescription: String { "\(file): \(title)" }
    var kind: HTTP1Parser.Kind { type.hasPrefix("response") ? .response : .request }
    var isLenient: Bool { type.contains("lenient") }
}

enum LLHTTPCorpus {
    static let directory: String = {
        if let env = ProcessInfo.processInfo.environment["SLUICE_LLHTTP_CORPUS"] { return env }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return repo.appendingPathComponent("../shared/corpora/llhttp").standardizedFileURL.path
    }()

    static var isPresent: Bool { FileManager.default.fileExists(atPath: directory + "/request") }

    static let cases: [CorpusCase] = {
        guard isPresent else { return [] }
        var out: [CorpusCase] = []
        for sub in ["request", "response"] {
            let dir = directory + "/" + sub
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir).sorted()) ?? []
            for f in files where f.hasSuffix(".md") {
                guard let text = try? String(contentsOfFile: dir + "/" + f, encoding: .utf8) else { continue }
                out += parse(markdown: text, file: sub + "/" + f)
            }
        }
        return out
    }()

    /// Splits a corpus file into cases: a `## title`, a `<!-- meta -->` comment, an `http` block, a `log` block.
    static func parse(markdown: String, file: String) -> [CorpusCase] {
        let lines = markdown.components(separatedBy: "\n")
        var out: [CorpusCase] = []
        var title = ""
        var i = 0
        while i < lines.count {
            let line = lines[i]
            if let h = line.firstMatch(of: /^#{2,} (.*)$/) { title = String(h.1) }
            if line.hasPrefix("<!-- meta=") {
                let type = line.firstMatch(of: /"type"\s*:\s*"([^"]+)"/).map { String($0.1) } ?? "request"
                var http: [String] = []
                var log: [String] = []
                var j = i + 1
                while j < lines.count && !lines[j].hasPrefix("```http") { j += 1 }
                j += 1
                while j < lines.count && lines[j] != "```" { http.append(lines[j]); j += 1 }
                j += 1
                while j < lines.count && !lines[j].hasPrefix("```log") { j += 1 }
                j += 1
                while j < lines.count && lines[j] != "```" { log.append(lines[j]); j += 1 }
                out.append(CorpusCase(file: file, title: title, type: type, raw: decode(http.joined(separator: "\n")), log: log))
                i = j
            }
            i += 1
        }
        return out
    }

    /// The escapes of llhttp's test harness: newlines become CRLF, `\` at a line end joins lines,
    /// then `\r`, `\n`, `\t`, `\0` and `\xHH` are spelled-out bytes.
    static func decode(_ block: String) -> [UInt8] {
        var s = block.replacingOccurrences(of: "\r\n", with: "\n")
        s = s.replacingOccurrences(of: "\\\n", with: "")
        s = s.replacingOccurrences(of: "\n", with: "\r\n")
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == 0x5C, i + 1 < u.count {
                switch u[i + 1] {
                case UInt8(ascii: "r"): out.append(0x0D); i += 2; continue
                case UInt8(ascii: "n"): out.append(0x0A); i += 2; continue
                case UInt8(ascii: "t"): out.append(0x09); i += 2; continue
                case UInt8(ascii: "f"): out.append(0x0C); i += 2; continue
                case UInt8(ascii: "0"): out.append(0x00); i += 2; continue
                case UInt8(ascii: "x") where i + 3 < u.count:
                    if let v = UInt8(String(decoding: u[(i + 2)...(i + 3)], as: UTF8.self), radix: 16) {
                        out.append(v)
                        i += 4
                        continue
                    }
                default: break
                }
            }
            out.append(u[i])
            i += 1
        }
        return out
    }

    /// Rebuilds from llhttp's event log what our parser should report.
    static func expected(from log: [String], kind: HTTP1Parser.Kind) -> (messages: [ParsedMessage], error: Bool, upgraded: Bool) {
        var messages: [ParsedMessage] = []
        var cur: ParsedMessage? = nil
        var field = "", value = "", method = "", url = "", version = "", status = ""
        var headersDone = false
        var error = false
        var upgraded = false
        for line in log {
            guard let m = line.firstMatch(of: /^off=\S+ (.*)$/) else { continue }
            let ev = String(m.1)
            if ev == "message begin" {
                cur = ParsedMessage()
                field = ""; value = ""; method = ""; url = ""; version = ""; status = ""
                headersDone = false
            } else if let s = ev.firstMatch(of: /^len=\d+ span\[(\w+)\]=(.*)$/) {
                // Spans are quoted text, or the bare words cr, lf, crlf for line ends.
                let spelled = String(s.2)
                let text: String
                switch spelled {
                case "cr": text = "\r"
                case "lf": text = "\n"
                case "crlf": text = "\r\n"
                default: text = unescape(String(spelled.dropFirst().dropLast()))
                }
                switch s.1 {
                case "method": method += text
                case "url": url += text
                case "version": version += text
                case "status": status += text
                case "header_field": field += text
                case "header_value": value += text
                case "body": cur?.body += Array(text.utf8)
                default: break
                }
            } else if ev == "header_value complete" {
                if headersDone {
                    cur?.trailers.append([field, value.trimmingSpaces()])
                } else {
                    cur?.fields.append([field, value.trimmingSpaces()])
                }
                field = ""; value = ""
            } else if ev.hasPrefix("headers complete") {
                headersDone = true
                if kind == .request {
                    cur?.startLine = [method, url, version]
                } else {
                    let code = ev.firstMatch(of: /status=(\d+)/).map { String($0.1) } ?? status
                    cur?.startLine = [version, code]
                }
            } else if ev == "message complete" {
                cur?.complete = true
                if let c = cur { messages.append(c) }
                cur = nil
            } else if ev.hasPrefix("error code=22") || ev.hasPrefix("error code=23") {
                upgraded = true
            } else if ev.hasPrefix("error") {
                error = true
            } else if let f = ev.firstMatch(of: /^finish=(\d+)/) {
                // 0: clean end; 1: llhttp completed the message at EOF (its pause code); else an error.
                if f.1 == "1", var c = cur, headersDone {
                    c.complete = true
                    messages.append(c)
                    cur = nil
                } else if f.1 != "0" && f.1 != "1" {
                    error = true
                }
            }
        }
        if let c = cur, headersDone { messages.append(c) }
        return (messages, error, upgraded)
    }

    /// The log spells control bytes as `\r`, `\n`, `\t`, `\f`, `\0`; other backslashes are literal.
    static func unescape(_ s: String) -> String {
        var out = ""
        var pendingBackslash = false
        for ch in s {
            if pendingBackslash {
                pendingBackslash = false
                switch ch {
                case "r": out.append("\r"); continue
                case "n": out.append("\n"); continue
                case "t": out.append("\t"); continue
                case "f": out.append("\u{0C}"); continue
                case "0": out.append("\u{0}"); continue
                default: out.append("\\")
                }
            }
            if ch == "\\" { pendingBackslash = true } else { out.append(ch) }
        }
        if pendingBackslash { out.append("\\") }
        return out
    }
}

// MARK: - Where we are stricter than llhttp's strict mode, on purpose

/// Case title → why Sluice rejects what llhttp accepts (or reports differently).
let deliberateDifferences: [String: String] = [
    "No HTTP version": "HTTP/0.9 requests are not served (RFC 9112 has no 0.9)",
    "HTTP version 0.9": "HTTP/0.9 responses have no head to check; an upstream sending one is broken",
    "PRI request HTTP2": "the HTTP/2 preface is recognised before the HTTP/1 parser; to it, HTTP/2.0 is 505",
    "RTSP response": "only HTTP is proxied, not RTSP",
    "ICE response": "only HTTP is proxied, not ICE",
    "SOURCE request with ICE": "only HTTP is proxied, not ICE",
    "OPTIONS request with RTSP": "only HTTP is proxied, not RTSP",
    "ANNOUNCE request with RTSP": "only HTTP is proxied, not RTSP",
    "M-SEARCH request": "the asterisk-form target is only valid for OPTIONS (RFC 9112 §3.2.4)",
    "Fragment in URI": "a request-target never carries a fragment (RFC 9112 §3.2); a client sending one is broken",
    "`host:port` and basic auth": "userinfo in a target is an error for a recipient (RFC 9110 §4.2.4)",
    "POST with `chunked` as last transfer-encoding": "request codings other than chunked are 501: the body could not be re-framed faithfully",
    "POST with `chunked` as last transfer-encoding (multiple headers)": "request codings other than chunked are 501",
    "Invalid HTTP version": "the input ends mid-line: llhttp refuses at the first wrong byte, we at the line end",
]

/// Cases about llhttp features with no equivalent here; only whole/split agreement is checked.
let notApplicable: [String: String] = [
    "CONNECT with body": "CONNECT content has no defined semantics (RFC 9110 §9.3.6); the proxy answers CONNECT with 405",
    "HTTP protocol and ANNOUNCE method": "methods are tokens (RFC 9110 §9.1): extension methods are forwarded, not refused",
    "Invalid method": "`MKCOLA` is a valid token, so a valid extension method",
]



// MARK: - Tests

@Suite("llhttp corpus", .enabled(if: LLHTTPCorpus.isPresent, "llhttp corpus not found at \(LLHTTPCorpus.directory); skipped"))
struct LLHTTPCorpusTests {
    @Test("corpus case", arguments: LLHTTPCorpus.cases)
    func corpusCase(_ c: CorpusCase) {
        let finish = c.type.hasSuffix("finish")
        let skipBody = c.log.contains { $0.contains("skip body") }
        let (ours, disagreements) = parseAllWays(c.raw, kind: c.kind, responseToHead: skipBody, finish: finish, requireHost: false)
        #expect(disagreements.isEmpty, "whole vs split parses differ: \(disagreements.prefix(3))")

        if c.isLenient {
            // llhttp accepts these only with a lenient flag; a strict parser must refuse them.
            #expect(ours.error != nil, "lenient-only input accepted: \(ours)")
            return
        }
        let want = LLHTTPCorpus.expected(from: c.log, kind: c.kind)
        if notApplicable[c.title] != nil || (c.kind == .request && skipBody) { return }
        if c.title == "Invalid HTTP version" {
            // The input ends mid-line; completing the line must make us refuse it too.
            let (done, _) = parseAllWays(c.raw + Array("\r\n\r\n".utf8), kind: c.kind, requireHost: false)
            #expect(done.error != nil, "\(done)")
            return
        }
        if let why = deliberateDifferences[c.title] {
            // Documented difference: we must reject, whatever llhttp did.
            #expect(ours.error != nil, "\(why): \(ours)")
            return
        }
        #expect((ours.error != nil) == want.error, "llhttp error=\(want.error), ours: \(ours)")
        let completeOurs = ours.messages.filter(\.complete)
        let completeTheirs = want.messages.filter(\.complete)
        #expect(completeOurs == completeTheirs, "messages differ\n ours:   \(completeOurs)\n llhttp: \(completeTheirs)")
        if !want.error {
            #expect(ours.upgraded == want.upgraded, "upgrade: llhttp \(want.upgraded), ours \(ours.upgraded)")
        }
    }

    @Test func corpusIsNotEmpty() {
        #expect(LLHTTPCorpus.cases.count > 250)
    }
}
