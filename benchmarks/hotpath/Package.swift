// swift-tools-version:6.1
// Hot-path microbenchmarks with ordo-one/benchmark: time, heap allocations and ARC traffic per
// operation for the parser, the router (10,000 Ingresses) and load-balancer selection.
//   swift package --package-path benchmarks/hotpath benchmark
// and instruction counts of the same operations under callgrind (benchmarks/hotpath/instructions.sh).
// A separate package so that the benchmark framework never enters the product's build.
import PackageDescription

let package = Package(
    name: "SluiceHotPath",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Sluice", path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .target(
            name: "HotPathCases",
            dependencies: [.product(name: "SluiceLibrary", package: "Sluice")],
            path: "Sources/HotPathCases"
        ),
        .executableTarget(
            name: "HotPath",
            dependencies: [
                "HotPathCases",
                .product(name: "SluiceLibrary", package: "Sluice"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/HotPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The same operations for callgrind's instruction counts (instructions.sh).
        .executableTarget(
            name: "HotPathInstructions",
            dependencies: ["HotPathCases", .product(name: "SluiceLibrary", package: "Sluice")],
            path: "Sources/HotPathInstructions"
        ),
    ],
    swiftLanguageModes: [.v6]
)
