import SluiceRouting
import SluiceUpstream

/// Reads a rules folder and compiles it into a snapshot (off the event loops).
public struct ConfigLoader: Sendable {
    public var rulesDirectory: String
    public var options: RoutingOptions
    public var fallback: BackendPool?

    public init(rulesDirectory: String, options: RoutingOptions, fallback: BackendPool?) {
        self.rulesDirectory = rulesDirectory
        self.options = options
        self.fallback = fallback
    }

    public func load(generation: Int) -> (snapshot: ConfigSnapshot, compiled: CompiledRoutes) {
        let manifests = ManifestLoader.load(directory: rulesDirectory)
        let compiled = RouteCompiler.compile(manifests, options: options)
        return (ConfigSnapshot(generation: generation, table: compiled.table, fallback: fallback, problems: compiled.problems), compiled)
    }
}
