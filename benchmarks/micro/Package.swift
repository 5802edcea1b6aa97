// swift-tools-version:6.1
// Microbenchmarks beside the root package (`swift run -c release --package-path benchmarks/micro`).
// A separate package so that its extra dependency (swift-prometheus, measured against Sluice's
// own counters) never enters the product's build.
import PackageDescription

let package = Package(
    name: "SluiceMicro",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Sluice", path: "../.."),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .executableTarget(
            name: "micro",
            dependencies: [
                .product(name: "SluiceLibrary", package: "Sluice"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
