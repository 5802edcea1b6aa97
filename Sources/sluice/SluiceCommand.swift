import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceAdmin
import SluiceProxy
import SluiceRouting
import SluiceTLS
import SluiceUpstream
#if canImport(Glibc)
import Glibc
#endif

@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "An HTTP ingress controller and reverse proxy driven by Kubernetes Ingress manifests.",
        subcommands: [Serve.self, Check.self, Routes.self, Explain.self, Echo.self, BenchRoutes.self, BenchPipe.self]
    )
}

/// `HOST:PORT` as a command-line value.
struct ListenAddress: ExpressibleByArgument, CustomStringConvertible {
    var host: String
    var port: Int

    init?(argument: String) {
        guard let colon = argument.lastIndex(of: ":"), let port = Int(argument[argument.index(after: colon)...]),
              port >= 0, port < 65536 else { return nil }
        var host = String(argument[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { return nil }
        self.host = host
        self.port = port
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Writes a status line to stdout at once, even when stdout is a pipe (scripts wait for it).
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if n <= 0 { return }
        off += n
    }
}

func bootstrapLogging(level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = level
        return h
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the Ingress rules in --rules.")

    @OptionGroup var rules: RulesOptions

    @Option(help: "Plain HTTP listener.")
    var http: ListenAddress = ListenAddress(argument: "127.0.0.1:8080")!

    @Option(help: "HTTPS listener (TLS 1.2/1.3; SNI picks the certificate).")
    var https: ListenAddress = ListenAddress(argument: "127.0.0.1:8443")!

    @Option(help: "Admin listener: /healthz, /readyz, /metrics, /routes, /upstreams, /config and a status page at /.")
    var admin: ListenAddress = ListenAddress(argument: "127.0.0.1:9901")!

    @Flag(help: "Allow --admin on a non-loopback address (it has no authentication).")
    var adminPublic = false

    @Option(help: "Access log: stdout, off, or a file path (reopened on SIGUSR1).")
    var accessLog: String = "off"

    @Option(help: "Access log format: json or combined.")
    var accessLogFormat: String = "json"

    @Option(help: "Per-request metrics: on or off (off only to measure what they cost).")
    var metrics: String = "on"

    @Option(help: "Event loops (worker threads); default: one per core.")
    var workers: Int = System.coreCount

    @Option(name: .customLong("default-backend"), help: "HOST:PORT that serves every request no rule matches.")
    var defaultBackend: String?

    @Option(help: "Seconds a graceful shutdown waits for requests in flight.")
    var drainTimeout: Double = 30

    @Option(help: "Milliseconds of quiet after a change in --rules or --certs before reloading.")
    var reloadDebounce: Double = 100

    @Option(help: "Seconds between re-resolutions of ExternalName services.")
    var externalNameRefresh: Double = 30

    @Option(help: "Seconds between TLS session ticket key rotations (keys live in memory only).")
    var tlsTicketRotation: Double = 43200

    @Option(help: "TLS session resumption (tickets and the session cache): on or off (off: every connection is a full handshake).")
    var tlsSessionResumption: String = "on"

    @Option(help: "Seconds a client has to send a whole request head (408).")
    var headTimeout: Double = 10

    @Option(help: "Seconds an idle keep-alive client connection stays open.")
    var keepaliveTimeout: Double = 75

    @Option(help: "Seconds a client may pause inside a request body (408, or the connection or stream closed once the response has started).")
    var clientBodyTimeout: Double = 60

    @Option(help: "Seconds a connection that closes after its response waits for the client to take any of the rest before it is cut.")
    var clientSendTimeout: Double = 60

    @Option(help: "Seconds to connect to an upstream (504).")
    var upstreamConnectTimeout: Double = 5

    @Option(help: "Seconds without a byte from the upstream while a response is due (504).")
    var upstreamReadTimeout: Double = 60

    @Option(name: .customLong("h2-max-concurrent-streams"), help: "HTTP/2 streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).")
    var h2MaxConcurrentStreams: Int = 128

    @Option(name: .customLong("h2-max-control-frames"), help: "HTTP/2 PING/SETTINGS/PRIORITY/RST_STREAM/empty DATA frames per second before ENHANCE_YOUR_CALM.")
    var h2MaxControlFrames: Int = 1000

    @Option(help: "Client connections open at once; at the limit accepting pauses (0: no limit).")
    var maxConnections: Int = 0

    @Option(help: "Largest request body (413 beyond) for backends without sluice.io/max-body-size: 0 (no limit), 512k, 10m, 1g.")
    var maxBodySize: String = "0"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    /// Durations become timers and millisecond counts: `nan`, an infinity, a negative value or
    /// more than a year is refused here with the flag's name (converting it later traps).
    func validate() throws {
        let year = 365.0 * 86_400
        let seconds: [(flag: String, value: Double, zeroAllowed: Bool)] = [
            ("drain-timeout", drainTimeout, true), ("head-timeout", headTimeout, true),
            ("keepalive-timeout", keepaliveTimeout, true), ("client-body-timeout", clientBodyTimeout, true),
            ("client-send-timeout", clientSendTimeout, true), ("upstream-connect-timeout", upstreamConnectTimeout, true),
            ("upstream-read-timeout", upstreamReadTimeout, true), ("reload-debounce", reloadDebounce / 1000, true),
            ("external-name-refresh", externalNameRefresh, false), ("tls-ticket-rotation", tlsTicketRotation, false),
        ]
        for d in seconds where !(d.value.isFinite && d.value <= year && (d.zeroAllowed ? d.value >= 0 : d.value > 0)) {
            let unit = d.flag == "reload-debounce" ? "milliseconds" : "seconds"
            throw ValidationError("--\(d.flag): not a duration (\(unit), \(d.zeroAllowed ? "0" : "more than 0") up to a year)")
        }
    }

    mutating func run() async throws {
        bootstrapLogging(level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "sluice")
        var settings = ProxySettings()
        func amount(_ seconds: Double) -> TimeAmount { .milliseconds(Int64(seconds * 1000)) }
        settings.drainTimeout = amount(drainTimeout)
        settings.headTimeout = amount(headTimeout)
        settings.keepAliveTimeout = amount(keepaliveTimeout)
        settings.clientBodyTimeout = amount(clientBodyTimeout)
        settings.clientSendTimeout = amount(clientSendTimeout)
        settings.upstreamConnectTimeout = amount(upstreamConnectTimeout)
        settings.upstreamReadTimeout = amount(upstreamReadTimeout)
        guard h2MaxConcurrentStreams > 0, h2MaxControlFrames > 0 else {
            throw ValidationError("--h2-max-concurrent-streams and --h2-max-control-frames must be positive")
        }
        guard let format = AccessLogFormat(rawValue: accessLogFormat) else {
            throw ValidationError("--access-log-format must be json or combined")
        }
        guard metrics == "on" || metrics == "off" else { throw ValidationError("--metrics must be on or off") }
        guard tlsSessionResumption == "on" || tlsSessionResumption == "off" else {
            throw ValidationError("--tls-session-resumption must be on or off")
        }
        // Before the first certificate is loaded: every context reads it when it is built.
        TLSContext.sessionResumption.store(tlsSessionResumption == "on", ordering: .relaxed)
        settings.metricsEnabled = metrics == "on"
        var logWriter: AccessLogWriter? = nil
        switch accessLog {
        case "off": break
        case "stdout": logWriter = try AccessLogWriter(path: nil, format: format)
        default:
            do { logWriter = try AccessLogWriter(path: accessLog, format: format) } catch { throw ValidationError("\(error)") }
        }
        settings.accessLog = logWriter
        guard maxConnections >= 0 else { throw ValidationError("--max-connections must be 0 or more") }
        settings.maxConnections = maxConnections > 0 ? maxConnections : nil
        guard let bodyLimit = PolicyOverrides.parseSize(maxBodySize) else {
            throw ValidationError("--max-body-size: '\(maxBodySize)' is not a size such as 0, 512k, 10m or 1g")
        }
        settings.maxBodySize = bodyLimit > 0 ? bodyLimit : nil
        settings.http2.maxConcurrentStreams = h2MaxConcurrentStreams
        settings.http2.maxControlFramesPerSecond = h2MaxControlFrames
        // The HTTP/1.1 head limits bound HTTP/2 field sections too (431).
        settings.http2.maxHeaderListSize = settings.requestLimits.maxHeadLength
        settings.http2.maxHeaderFields = settings.requestLimits.maxFieldCount
        var fallback: BackendPool? = nil
        if let spec = defaultBackend {
            do {
                fallback = BackendPool(name: "default-backend", endpoints: [try Endpoint(parsing: spec)])
            } catch {
                throw ValidationError("--default-backend: \(error)")
            }
        }
        // Watched from before the first read, so that nothing saved from here on is missed; what
        // changes before the coordinator exists is applied when it does (`ReloadTrigger`).
        let trigger = ReloadTrigger()
        let watcher = DirectoryWatcher(roots: [rules.rules, rules.certs].filter { FileManager.default.fileExists(atPath: $0) },
                                       debounce: reloadDebounce / 1000) {
            trigger.filesChanged()
        }
        do {
            try watcher.start()
        } catch {
            logger.warning("cannot watch the rules folder; SIGHUP still reloads", metadata: ["error": "\(error)"])
        }
        let loader = ConfigLoader(rulesDirectory: rules.rules, options: rules.routingOptions, fallback: fallback)
        let (initial, compiled) = ReloadCoordinator.initial(loader, logger: logger)
        logger.info("configuration loaded", metadata: [
            "generation": "1", "routes": "\(compiled.table.routes.count)", "backends": "\(compiled.table.backends.count)",
            "errors": "\(compiled.errors.count)",
        ])
        let store = ConfigStore(initial)
        let server = ProxyServer(workers: workers, config: store, settings: settings, logger: logger)
        let bound = try await server.listenHTTP(host: http.host, port: http.port)
        logger.info("listening", metadata: ["http": "\(bound)", "workers": "\(workers)"])
        // The TLS front context lives for the whole process: sessions and tickets survive reloads.
        let front = try TLSFrontContext(store: initial.certificates, ticketRotation: tlsTicketRotation)
        let boundTLS = try await server.listenHTTPS(host: https.host, port: https.port, front: front)
        if initial.certificates.isEmpty {
            logger.warning("no certificate yet (certs/default/ or spec.tls): TLS handshakes fail until one is added")
        }
        say("sluice serving http on \(bound) with \(workers) worker(s)")
        say("sluice serving https on \(boundTLS)")

        server.applyHealthChecks()
        let reloader = ReloadCoordinator(loader: loader, store: store, logger: logger) {
            server.pruneUpstreams()
            server.applyHealthChecks()
            front.store.replace(store.snapshot.certificates)
        }
        let adminServer = AdminServer(server: server, reloader: reloader)
        do {
            let boundAdmin = try await adminServer.start(host: admin.host, port: admin.port, allowPublic: adminPublic)
            say("sluice admin on \(boundAdmin)")
        } catch let e as AdminError {
            throw ValidationError(e.description)
        }
        ProcessMetrics.shared.ready.store(true, ordering: .relaxed)
        if let logWriter {
            let usr1 = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
            signal(SIGUSR1, SIG_IGN)
            usr1.setEventHandler {
                logWriter.reopen()
                logger.info("access log reopened", metadata: ["path": "\(logWriter.path ?? "stdout")"])
            }
            usr1.resume()
            SignalSources.keep(usr1)
        }
        reloader.noteInitial(compiled)
        trigger.attach(reloader)
        // The system resolver gives no TTL: ExternalName services are resolved again on a fixed
        // period, and a changed answer applies like any reload.
        let refresh = DispatchSource.makeTimerSource(queue: .global())
        refresh.schedule(deadline: .now() + externalNameRefresh, repeating: externalNameRefresh)
        refresh.setEventHandler { reloader.refreshExternalNames() }
        refresh.resume()
        SignalSources.keepTimer(refresh)

        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        signal(SIGHUP, SIG_IGN)
        hup.setEventHandler { reloader.reload(reason: "SIGHUP") }
        hup.resume()
        SignalSources.keep(hup)

        let stop = AsyncStream<Int32> { continuation in
            for sig in [SIGTERM, SIGINT] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { continuation.yield(sig) }
                source.resume()
                SignalSources.keep(source)
            }
        }
        for await sig in stop {
            logger.info("signal received: draining", metadata: ["signal": "\(sig)"])
            watcher.stop()
            await server.shutdown()
            logWriter?.sync()
            logger.info("stopped")
            return
        }
    }
}

/// Keeps signal sources alive for the life of the process.
enum SignalSources {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []
    static func keep(_ s: DispatchSourceSignal) { sources.append(s) }
    nonisolated(unsafe) static var timers: [DispatchSourceTimer] = []
    static func keepTimer(_ t: DispatchSourceTimer) { timers.append(t) }
}

struct Echo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A small HTTP/1.1 echo backend for demos, tests and benchmarks.")

    @Option(help: "Address to listen on.")
    var listen: ListenAddress = ListenAddress(argument: "127.0.0.1:9000")!

    @Option(help: "The name reported in every response.")
    var name: String = "echo"

    @Flag(help: "Print each request line received (for tests).")
    var logRequests = false

    mutating func run() async throws {
        try await EchoServer.run(host: listen.host, port: listen.port, name: name, logRequests: logRequests)
    }
}
