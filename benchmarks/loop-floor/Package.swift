// swift-tools-version:6.1
// The floor of an event loop of our own under NIOCore's pipeline: `LoopFloor LISTEN BACKEND` is
// the blind pipe of `sluice bench-pipe`, with the same handler, on an edge-triggered epoll loop
// and a socket `Channel` written here instead of NIOPosix's. callgrind counts it beside the
// NIOPosix pipe (benchmarks/callgrind/run.sh, PROXY=loop-floor), which says what replacing
// NIOPosix's socket layer could save a proxied request. A measuring tool, not a socket layer:
// one thread, IPv4, no half-closure, no timers beyond what the pipe needs. Its epoll and eventfd
// calls are Sluice's own shims (`CLinuxIO`), the ones the socket layer in Sources/SluiceIO uses.
import PackageDescription

let package = Package(
    name: "LoopFloor",
    dependencies: [
        .package(name: "Sluice", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "LoopFloor",
            dependencies: [
                .product(name: "CLinuxIO", package: "Sluice"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Sources/LoopFloor"
        ),
    ],
    swiftLanguageModes: [.v6]
)
