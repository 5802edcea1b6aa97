import NIOCore
import Testing

@testable import SluiceProxy

/// The timeout rules both protocols share, on a manual clock: `t(s)` is `s` seconds after an
/// arbitrary origin, and nothing reads the real clock.
@Suite struct ExchangeDeadlinesTests {
    static let limits = ExchangeDeadlines.Limits(
        head: .seconds(10), keepAlive: .seconds(75), clientBody: .seconds(60), upstreamRead: .seconds(30), upstreamSend: .seconds(5))

    static func t(_ seconds: Double) -> NIODeadline {
        .uptimeNanoseconds(1_000_000_000_000 + UInt64(seconds * 1e9))
    }

    func expired(_ d: ExchangeDeadlines, at s: Double, upstream: Double? = nil, requestDone: Bool = false) -> ExchangeDeadlines.Expiry? {
        d.expired(at: Self.t(s), upstreamActivity: upstream.map(Self.t), requestDone: requestDone, limits: Self.limits)
    }

    @Test func aConnectionThatNeverSendsGetsTheHeadLimitThenKeepAliveAfterARequest() {
        var d = ExchangeDeadlines(now: Self.t(0))
        #expect(expired(d, at: 9.9) == nil)
        #expect(expired(d, at: 10) == .idleConnection)

        d.requestStarted()
        d.enter(.connecting, at: Self.t(1))
        d.enter(.idle, at: Self.t(2))
        #expect(expired(d, at: 12) == nil)
        #expect(expired(d, at: 76.9) == nil)
        #expect(expired(d, at: 77) == .idleConnection)
    }

    @Test func aHeadMustCompleteWithinTheHeadLimitOfItsFirstByte() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.readingHead, at: Self.t(3))
        #expect(expired(d, at: 12.9) == nil)
        #expect(expired(d, at: 13) == .head)
    }

    @Test func theClientBodyLimitRunsBetweenBodyBytesUntilTheBodyEnds() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.requestStarted()
        d.enter(.sendingRequest, at: Self.t(0))
        d.clientBytes(at: Self.t(50))
        // The upstream is quiet too, but the client is the one owing bytes.
        #expect(expired(d, at: 109, upstream: 0) == .upstreamRead)
        #expect(expired(d, at: 110, upstream: 100) == .clientBody)
        #expect(expired(d, at: 110, upstream: 100, requestDone: true) == nil)
    }

    @Test func waitingForAConnectionOnlyTheClientBodyCanExpire() {
        var d = ExchangeDeadlines(stage: .connecting, now: Self.t(0))
        d.upstreamWritability(false, at: Self.t(0))
        #expect(expired(d, at: 59, upstream: nil) == nil)
        #expect(expired(d, at: 60) == .clientBody)
        #expect(expired(d, at: 600, requestDone: true) == nil)
    }

    @Test func anUpstreamThatStopsTakingTheRequestHitsTheSendLimit() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.sendingRequest, at: Self.t(0))
        d.upstreamWritability(false, at: Self.t(1))
        d.upstreamWritability(false, at: Self.t(3))  // still blocked: the first time counts
        d.clientBytes(at: Self.t(5.9))
        #expect(expired(d, at: 5.9, upstream: 5.9) == nil)
        #expect(expired(d, at: 6, upstream: 5.9) == .upstreamSend)

        d.upstreamWritability(true, at: Self.t(6))
        #expect(expired(d, at: 7, upstream: 5.9) == nil)

        // Queued whole but not sent: the send limit still holds after the body ended.
        d.upstreamWritability(false, at: Self.t(8))
        d.enter(.awaitingResponse, at: Self.t(9))
        #expect(expired(d, at: 13, upstream: 8, requestDone: true) == .upstreamSend)
    }

    @Test func aNewAttemptStartsWithAWritableUpstream() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.sendingRequest, at: Self.t(0))
        d.upstreamWritability(false, at: Self.t(0))
        d.enter(.sendingRequest, at: Self.t(4))  // a retry on another connection
        d.clientBytes(at: Self.t(4))
        #expect(expired(d, at: 8, upstream: 4) == nil)
    }

    @Test func theReadLimitCountsFromTheLaterOfUpstreamAndClientWhileSending() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.sendingRequest, at: Self.t(0))
        d.clientBytes(at: Self.t(20))
        #expect(expired(d, at: 49, upstream: 0) == nil)
        #expect(expired(d, at: 50, upstream: 0) == .upstreamRead)
        #expect(expired(d, at: 50, upstream: 25) == nil)
    }

    /// The upstream's time to answer starts when the request was sent whole: a 70 s upload to an
    /// upstream that answers 1 s after it is not a read timeout (it was, counted from the attach).
    @Test func aSlowUploadDoesNotUseUpTheUpstreamsTimeToAnswer() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.sendingRequest, at: Self.t(0))
        for s in stride(from: 1.0, through: 70, by: 1) { d.clientBytes(at: Self.t(s)) }
        d.enter(.awaitingResponse, at: Self.t(70))
        #expect(expired(d, at: 71, upstream: 0, requestDone: true) == nil)
        #expect(expired(d, at: 99.9, upstream: 0, requestDone: true) == nil)
        #expect(expired(d, at: 100, upstream: 0, requestDone: true) == .upstreamRead)
        // Each response byte starts the clock again.
        #expect(expired(d, at: 100, upstream: 80, requestDone: true) == nil)
    }

    @Test func aTunnelOrAFinishedExchangeNeverTimesOutHere() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.upstreamWritability(false, at: Self.t(0))
        d.enter(.unbounded, at: Self.t(0))
        #expect(expired(d, at: 1_000_000, upstream: 0) == nil)
    }
}
