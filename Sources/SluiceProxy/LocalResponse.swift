import NIOCore

/// Responses the proxy makes itself (errors, redirects, 100 Continue).
enum LocalResponse {
    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 417: return "Expectation Failed"
        case 421: return "Misdirected Request"
        case 431: return "Request Header Fields Too Large"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Error"
        }
    }

    /// A complete response with a short plain-text body naming the status and the reason.
    static func make(status: Int, detail: String, close: Bool, headRequest: Bool, server: String,
                     extraFields: String = "", allocator: ByteBufferAllocator) -> ByteBuffer {
        let phrase = reasonPhrase(status)
        let body = "\(status) \(phrase): \(detail)\n"
        var head = "HTTP/1.1 \(status) \(phrase)\r\nserver: \(server)\r\ncontent-type: text/plain; charset=utf-8\r\n"
        head += "content-length: \(body.utf8.count)\r\n"
        if status == 405 { head += "allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE\r\n" }
        head += extraFields
        head += close ? "connection: close\r\n\r\n" : "\r\n"
        var out = allocator.buffer(capacity: head.utf8.count + body.utf8.count)
        out.writeString(head)
        if !headRequest { out.writeString(body) }
        return out
    }

    static let continue100: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"
}
