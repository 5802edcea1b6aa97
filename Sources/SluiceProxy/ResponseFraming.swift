import SluiceHTTP1

/// How an upstream's response is framed for the client (RFC 9112 §6), decided from the two
/// heads alone so that the rules are tested without a connection (`ResponseFramingTests`).
struct ResponseFraming: Equatable {
    /// The upstream's Content-Length (or its absence) goes to the client as it is.
    var keepContentLength: Bool
    /// The proxy chunks the body itself (the upstream's length is unknown, the client speaks 1.1).
    var chunked: Bool
    /// The client's connection ends after this response.
    var close: Bool
    var directive: ConnectionDirective

    /// - Parameters:
    ///   - upstream: the response body's framing as the upstream sent it.
    ///   - headRequest: the request was HEAD: no body follows whatever the head says.
    ///   - clientHTTP11: the client speaks HTTP/1.1 (else 1.0: no chunked coding, keep-alive
    ///     only when asked for and said back).
    ///   - requestDone: the client's request body has been read whole; if not, the rest of it
    ///     cannot be told from a next request, so the connection closes.
    ///   - closeRequested: already closing (the client asked, or the proxy is draining).
    init(upstream: HTTP1BodyFraming, headRequest: Bool, clientHTTP11: Bool, requestDone: Bool, closeRequested: Bool) {
        var close = closeRequested || !requestDone
        var keep = false
        var chunked = false
        switch upstream {
        case .contentLength, .none:
            keep = true
        case .chunked, .closeDelimited:
            // A 1.0 client cannot take chunks: the body ends with the connection instead.
            if clientHTTP11 { chunked = true } else { close = true }
        }
        if upstream != .none && headRequest {
            // The head describes a body that is not sent: its length is passed on, never chunked.
            keep = true
            chunked = false
        }
        self.keepContentLength = keep
        self.chunked = chunked
        self.close = close
        self.directive = close ? .close : (clientHTTP11 ? .none : .keepAlive)
    }
}
