// swift-tools-version:6.1
import PackageDescription

// The module graph follows DESIGN.md: data flows one way, nothing below calls up.
// Hot-path modules are built with exclusivity checks off in release; see benchmarks/RESULTS.md.
// The Makefile's release build turns them off in every module, swift-nio's included, where
// callgrind found most of them (RESULTS.md, session 8).
let hotPathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
]

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        // For benchmarks/micro (a separate package) only.
        .library(name: "SluiceLibrary", targets: ["SluiceHTTP1", "SluiceRouting", "SluiceUpstream", "SluiceProxy"]),
        // For benchmarks/loop-floor (a separate package) only.
        .library(name: "CLinuxIO", targets: ["CLinuxIO"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "SluiceTLS",
            dependencies: ["COpenSSL", "SluiceIO", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: hotPathSettings
        ),
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        .target(
            name: "SluiceHTTP2",
            dependencies: ["CNGHTTP2", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "SluiceHTTP1",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: hotPathSettings
        ),
        // epoll and eventfd, which Glibc's Swift module leaves out.
        .target(name: "CLinuxIO"),
        // Event loops, TCP channels and listeners on epoll under NIOCore's pipeline: NIOPosix's
        // socket layer was most of a proxied request's cost (RESULTS.md, sessions 16-17).
        .target(
            name: "SluiceIO",
            dependencies: [
                "CLinuxIO", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "SluiceRouting",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "SluiceUpstream",
            dependencies: [
                "SluiceHTTP1",
                "SluiceIO",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "SluiceProxy",
            dependencies: [
                "SluiceHTTP1",
                "SluiceTLS",
                "SluiceHTTP2",
                "SluiceRouting",
                "SluiceUpstream",
                "SluiceIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "SluiceAdmin",
            dependencies: [
                "SluiceProxy",
                "SluiceUpstream",
                "SluiceHTTP1",
                "SluiceRouting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceAdmin",
                "SluiceHTTP1",
                "SluiceTLS",
                "SluiceRouting",
                "SluiceUpstream",
                "SluiceProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libFuzzer targets (`make fuzz`): built only with --sanitize fuzzer.
        .executableTarget(
            name: "FuzzHTTP1Parser",
            dependencies: ["SluiceHTTP1"],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "FuzzManifestLoader",
            dependencies: ["SluiceRouting"],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .testTarget(
            name: "SluiceHTTP1Tests",
            dependencies: ["SluiceHTTP1", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "SluiceTLSTests",
            dependencies: ["SluiceTLS", "COpenSSL", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "SluiceHTTP2Tests",
            dependencies: ["SluiceHTTP2", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "SluiceUpstreamTests",
            dependencies: [
                "SluiceUpstream", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SluiceIOTests",
            dependencies: [
                "SluiceIO", "CLinuxIO", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SluiceRoutingTests",
            dependencies: ["SluiceRouting"]
        ),
        .testTarget(
            name: "SluiceProxyTests",
            dependencies: [
                "SluiceProxy", "SluiceUpstream", "SluiceHTTP1",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
