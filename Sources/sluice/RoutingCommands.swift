import ArgumentParser
import SluiceRouting

/// Options every command that reads the rules folder shares.
struct RulesOptions: ParsableArguments {
    @Option(help: "Folder of Kubernetes manifests.")
    var rules: String = "ingress-rules"

    @Option(help: "Folder of certificates: <secretName>/tls.crt and tls.key.")
    var certs: String = "certs"

    @Option(name: .customLong("ingress-class"), help: "The IngressClass name Sluice serves.")
    var ingressClass: String = "sluice"

    @Flag(name: .customLong("ignore-classless"), help: "Do not serve Ingresses without ingressClassName.")
    var ignoreClassless = false

    @Flag(name: .customLong("allow-local-external-names"), help: "Allow ExternalName services that resolve to loopback or link-local addresses.")
    var allowLocalExternalNames = false

    var routingOptions: RoutingOptions {
        var o = RoutingOptions()
        o.className = ingressClass
        o.watchIngressWithoutClass = !ignoreClassless
        o.certsDirectory = certs
        o.allowLocalExternalNames = allowLocalExternalNames
        return o
    }

    func compile() -> CompiledRoutes {
        RouteCompiler.compile(ManifestLoader.load(directory: rules), options: routingOptions)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate the rules folder; exit 0 only when nothing is wrong.")

    @OptionGroup var options: RulesOptions

    func run() throws {
        let c = options.compile()
        for p in c.problems { print(p) }
        for i in c.ignored { print("ignored: \(i)") }
        let errors = c.errors.count, warnings = c.problems.count - errors
        print("\(c.table.routes.count) route(s), \(c.table.backends.count) backend(s); \(errors) error(s), \(warnings) warning(s)")
        if errors > 0 { throw ExitCode(1) }
    }
}

struct Routes: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the compiled route table in match order.")

    @OptionGroup var options: RulesOptions

    func run() throws {
        let c = options.compile()
        for (host, routes) in c.table.listing {
            for r in routes {
                let b = c.table.backends[r.backend]
                let eps = b.addresses.isEmpty ? "(none: \(b.problem ?? "no endpoints"))" : b.addresses.map { "\($0.ip):\($0.port)" }.joined(separator: ", ")
                let policy = b.policy.isDefault ? "" : "\t{\(b.policy)}"
                print("\(host)\t\(r.path)\t\(r.pathType.rawValue)\t→ \(b.name) → \(eps)\t[Ingress \(r.ingress)]\(policy)")
            }
        }
        for (host, secret) in c.tlsHosts { print("tls\t\(host)\t→ secret \(secret)") }
        if !c.errors.isEmpty { print("(\(c.errors.count) error(s): run `sluice check` for details)") }
    }
}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show how a URL would be routed, and why.")

    @OptionGroup var options: RulesOptions

    @Option(name: .customLong("default-backend"), help: "As for serve.")
    var defaultBackend: String?

    @Argument(help: "The URL, e.g. http://shop.local/api/v1")
    var url: String

    func run() throws {
        let c = options.compile()
        for line in RouteExplainer.explain(url: url, table: c.table, fallback: defaultBackend) { print(line) }
    }
}
