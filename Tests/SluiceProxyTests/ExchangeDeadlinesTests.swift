import NIOCore
import Testing

@testable import SluiceProxy

/// The timeout rules both protocols share, on a manual clock: `t(s)` is `s` seconds after an
/// arbitrary origin, and nothing reads the real clock.
@Suite struct ExchangeDeadlinesTests {
    static let limits = ExchangeDeadlines.Limits(
        head: .seconds(10), keepAlive: .seconds(75), clientBody: .seconds(60), upstreamRead: .seconds(30), upstreamSend: .seconds(5),
        clientSend: .seconds(20))

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

    // MARK: A client that stops reading

    /// The client's socket holds the response back and its backlog never goes down: cut after
    /// the send limit, and the upstream (paused for the client) is never blamed meanwhile.
    @Test func aClientThatTakesNothingIsCutAndTheUpstreamIsNotBlamed() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.awaitingResponse, at: Self.t(0))
        d.clientWritability(false, at: Self.t(1))
        for s in stride(from: 1.5, through: 20.5, by: 0.5) {
            d.clientBacklog(65_536, at: Self.t(s))
            // The upstream's last byte was at 1 s: 30 s later it would owe one, were it not paused.
            #expect(expired(d, at: s, upstream: 1, requestDone: true) == nil)
        }
        #expect(expired(d, at: 21.4, upstream: 1, requestDone: true) == nil)
        #expect(expired(d, at: 21.5, upstream: 1, requestDone: true) == .clientSend, "20 s since the backlog was first seen")
        #expect(expired(d, at: 40, upstream: 1, requestDone: true) == .clientSend)
    }

    @Test func aSlowReaderIsNotAStalledOne() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.awaitingResponse, at: Self.t(0))
        d.clientWritability(false, at: Self.t(0))
        var backlog = 100_000
        for s in stride(from: 0.5, through: 120, by: 0.5) {
            if Int(s * 2) % 30 == 0 { backlog -= 100 }  // a hundred bytes every 15 s
            d.clientBacklog(backlog, at: Self.t(s))
            #expect(expired(d, at: s, upstream: 0, requestDone: true) == nil)
        }
    }

    /// Once the client takes enough to unblock, the upstream owes bytes again, counted from then:
    /// the time it sat paused is not held against it.
    @Test func theUpstreamsReadTimeRestartsWhenTheClientUnblocks() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.awaitingResponse, at: Self.t(0))
        d.clientWritability(false, at: Self.t(2))
        d.clientBacklog(70_000, at: Self.t(2.5))
        d.clientBacklog(60_000, at: Self.t(15))
        d.clientWritability(true, at: Self.t(18))
        #expect(expired(d, at: 47.9, upstream: 2, requestDone: true) == nil)
        #expect(expired(d, at: 48, upstream: 2, requestDone: true) == .upstreamRead)

        // Blocking again starts a fresh watch: the old progress time does not carry over.
        d.clientWritability(false, at: Self.t(50))
        d.clientBacklog(65_000, at: Self.t(50.5))
        #expect(expired(d, at: 70.4, upstream: 49, requestDone: true) == nil)
        #expect(expired(d, at: 70.5, upstream: 49, requestDone: true) == .clientSend)
    }

    @Test func aResponseQueuedWholeForAClientThatStoppedReadingIsCutToo() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.requestStarted()
        d.clientWritability(false, at: Self.t(1))
        d.enter(.idle, at: Self.t(2))  // the response ended; its last 80 KiB wait for the client
        d.clientBacklog(80_000, at: Self.t(2))
        #expect(expired(d, at: 21.9) == nil)
        #expect(expired(d, at: 22) == .clientSend, "long before the keep-alive limit")
    }

    @Test func aFinishedExchangeOrAClosingConnectionNeverTimesOutHere() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.upstreamWritability(false, at: Self.t(0))
        d.clientWritability(false, at: Self.t(0))
        d.enter(.unbounded, at: Self.t(0))
        #expect(expired(d, at: 1_000_000, upstream: 0) == nil)
    }

    /// A tunnel lives while either side sends; silent both ways for the upstream read limit, it
    /// ends (nginx's `proxy_read_timeout` on a WebSocket).
    @Test func aTunnelEndsWhenNeitherSideHasSentForTheReadLimit() {
        var d = ExchangeDeadlines(now: Self.t(0))
        d.enter(.tunnel, at: Self.t(10))
        #expect(expired(d, at: 39.9, upstream: 5) == nil, "counted from the 101, not the upstream's last byte before it")
        #expect(expired(d, at: 40, upstream: 5) == .tunnelIdle)
        #expect(expired(d, at: 60, upstream: 35) == nil, "the upstream sent at 35 s")
        d.clientBytes(at: Self.t(50))
        #expect(expired(d, at: 79.9, upstream: 35) == nil, "the client sent at 50 s")
        #expect(expired(d, at: 80, upstream: 35) == .tunnelIdle)
        // A client that stops reading what the upstream pushes is cut at the send limit first.
        d.clientWritability(false, at: Self.t(60))
        d.clientBacklog(70_000, at: Self.t(60))
        #expect(expired(d, at: 80, upstream: 79) == .clientSend)
    }
}
