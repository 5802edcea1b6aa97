import NIOCore
import SluiceHTTP1

/// Receives what an upstream connection parsed for the request currently attached to it. All calls
/// arrive on the connection's event loop, which is also the delegate's.
public protocol UpstreamResponseDelegate: AnyObject {
    /// A response head; its offsets are relative to `buffer.readerIndex`. Informational (1xx)
    /// heads arrive here too, each followed by `upstreamResponseEnd`.
    func upstreamResponseHead(_ head: HTTP1Head, buffer: ByteBuffer)
    func upstreamResponseBody(_ body: ByteBuffer)
    /// The response is complete; `trailers` holds the trailer field lines when there were any.
    func upstreamResponseEnd(trailers: ByteBuffer?)
    /// Raw bytes after a 101 response.
    func upstreamTunnelData(_ data: ByteBuffer)
    func upstreamFailed(_ error: UpstreamError)
    /// A batch of reads ended: the moment to flush what was written downstream.
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
}
