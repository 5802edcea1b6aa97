import SluiceHTTP1
import Testing

@testable import SluiceProxy

/// RFC 9112 §6 as the proxy applies it between an upstream's response and the client.
@Suite struct ResponseFramingTests {
    func plan(_ upstream: HTTP1BodyFraming, head: Bool = false, http11: Bool = true, done: Bool = true, closing: Bool = false) -> ResponseFraming {
        ResponseFraming(upstream: upstream, headRequest: head, clientHTTP11: http11, requestDone: done, closeRequested: closing)
    }

    @Test func aKnownLengthPassesThroughOnAKeptConnection() {
        let p = plan(.contentLength(13))
        #expect(p == ResponseFraming(upstream: .contentLength(13), headRequest: false, clientHTTP11: true, requestDone: true, closeRequested: false))
        #expect(p.keepContentLength && !p.chunked && !p.close && p.directive == .none)
    }

    @Test func anUnknownLengthIsChunkedForHTTP11() {
        for upstream in [HTTP1BodyFraming.chunked, .closeDelimited] {
            let p = plan(upstream)
            #expect(p.chunked && !p.keepContentLength && !p.close, "\(upstream)")
        }
    }

    /// HTTP/1.0 has no chunked coding: the body ends when the connection does.
    @Test func anUnknownLengthClosesAnHTTP10Connection() {
        for upstream in [HTTP1BodyFraming.chunked, .closeDelimited] {
            let p = plan(upstream, http11: false)
            #expect(!p.chunked && p.close && p.directive == .close, "\(upstream)")
        }
        let kept = plan(.contentLength(5), http11: false)
        #expect(!kept.close && kept.directive == .keepAlive)
    }

    @Test func aHeadResponseKeepsItsLengthAndIsNeverChunked() {
        let p = plan(.chunked, head: true)
        #expect(p.keepContentLength && !p.chunked && !p.close)
        #expect(plan(.contentLength(1 << 20), head: true).keepContentLength)
    }

    /// The rest of an unread request body cannot be told from a next request.
    @Test func anUnfinishedRequestBodyClosesTheConnection() {
        let p = plan(.contentLength(2), done: false)
        #expect(p.close && p.directive == .close && p.keepContentLength)
    }

    @Test func aClosingConnectionSaysSo() {
        #expect(plan(.none, closing: true).directive == .close)
        #expect(plan(.chunked, closing: true).chunked)
        #expect(plan(.none).directive == .none)
    }
}
