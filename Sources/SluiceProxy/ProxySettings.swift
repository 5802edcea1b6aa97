import NIOCore
import SluiceHTTP1
import SluiceHTTP2

/// Limits and timeouts of the data plane (DESIGN.md's defaults; the README lists them).
public struct ProxySettings: Sendable {
    public var requestLimits = HTTP1Limits.default
    public var responseLimits = HTTP1Limits.default
    /// A client that started a head must finish it within this time (408).
    public var headTimeout: TimeAmount = .seconds(10)
    /// A keep-alive connection with no request in progress is closed after this time.
    public var keepAliveTimeout: TimeAmount = .seconds(75)
    public var upstreamConnectTimeout: TimeAmount = .seconds(5)
    /// No byte from the upstream for this long while a response is awaited or streaming (504).
    public var upstreamReadTimeout: TimeAmount = .seconds(60)
    /// No byte from the client for this long while its body is being forwarded.
    public var clientBodyTimeout: TimeAmount = .seconds(60)
    /// A client whose socket holds a response back (it stopped reading) and that takes none of
    /// it for this long is cut: mid-response, after the response, or while its connection
    /// closes (nginx's send_timeout). Over HTTP/2, the stream whose window stays shut is reset.
    public var clientSendTimeout: TimeAmount = .seconds(60)
    public var upstreamIdleTimeout: TimeAmount = .seconds(30)
    /// Bytes of pipelined requests held while a response is in progress before reading pauses.
    public var maxBufferedPipelineBytes = 64 * 1024
    /// How long a graceful shutdown waits for requests in flight.
    public var drainTimeout: TimeAmount = .seconds(30)
    /// The value of the Server header on responses the proxy makes itself.
    public var serverName = "sluice"
    /// Largest request body for backends without `sluice.io/max-body-size` (413); nil: no limit.
    public var maxBodySize: Int64? = nil
    /// Client connections open at once; at the limit, accepting pauses. nil: no limit.
    public var maxConnections: Int? = nil
    /// Per-request metrics (counters and histograms per route); off only to measure their cost.
    public var metricsEnabled = true
    /// Where access log lines go; nil for none.
    public var accessLog: AccessLogWriter? = nil
    /// HTTP/2 limits (streams, header list, windows, flood bounds).
    public var http2 = HTTP2Limits()

    public init() {}
}
