// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "FlowKit",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "FlowKit", targets: ["FlowKit"]),
        .library(name: "FlowCommands", targets: ["FlowCommands"]),
        .library(name: "Scheduler", targets: ["Scheduler"]),
        .library(name: "WorkerRuntime", targets: ["WorkerRuntime"]),
        .library(name: "FlowServer", targets: ["FlowServer"]),
        // `FlowTestRun`: a flow run in-process in a user's own `swift test` (and real servers for integration tests).
        .library(name: "FlowKitTesting", targets: ["FlowKitTesting"]),
        .executable(name: "flowctl", targets: ["flowctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        // Already in the graph through Hummingbird; named for the API's connection guard.
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.24.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        // Already in the graph through Hummingbird (swift-certificates): HMAC-SHA256, SHA-256 and MD5 for S3's SigV4.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
    ],
    targets: [
        // C bindings (Debian's libpq-dev and libhiredis-dev).
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis",
                       providers: [.apt(["libhiredis-dev"])]),
        // libcurl for the SMTP notifier (STARTTLS and auth); Foundation's URLSession links it already.
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),

        // Small focused modules below the ones DESIGN.md names.
        .target(name: "ConnectionThread"),
        .target(name: "CivilTime"),
        .target(name: "PostgresClient", dependencies: ["CLibPQ", "ConnectionThread", "CivilTime"]),
        .target(name: "RedisClient", dependencies: ["CHiredis", "ConnectionThread"]),
        // JSON, instants and SHA-256: what the authoring API and the wire codec share.
        .target(name: "FlowJSON", dependencies: ["CivilTime"]),
        // S3-compatible object storage: SigV4 signing, an S3 client that streams, key globs.
        .target(name: "ObjectStorage", dependencies: [
            "FlowJSON", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "FlowKit", dependencies: ["FlowJSON", "CivilTime", "ObjectStorage", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "CeleryProtocol", dependencies: ["FlowJSON", "RedisClient"]),
        // What runs processes and returns heap memory (Glibc): kept out of FlowKit, which is Foundation only.
        .target(name: "ProcessSupport", dependencies: ["FlowKit"]),

        .target(name: "Scheduler", dependencies: [
            "FlowKit", "PostgresClient", "RedisClient", "CeleryProtocol", "ProcessSupport", "CCurl",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        .target(name: "WorkerRuntime", dependencies: [
            "FlowKit", "RedisClient", "CeleryProtocol", "ProcessSupport", "PostgresClient",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "FlowServer", dependencies: [
            "Scheduler", "FlowKit",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], exclude: ["UI"], resources: [.copy("openapi.json")]),
        .target(name: "FlowCommands", dependencies: [
            "FlowKit", "Scheduler", "WorkerRuntime", "FlowServer", "PostgresClient", "RedisClient", "CeleryProtocol", "ProcessSupport", "ConnectionThread",
            "FlowKitTesting",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .target(name: "Flows", dependencies: ["FlowKit"], path: "Flows",
                exclude: ["README.md"], resources: [.copy("Resources")]),
        .executableTarget(name: "flowctl", dependencies: ["FlowCommands", "Flows"]),
        // make faults' upgrade scenario: two binaries that differ in one task's code.
        .target(name: "UpgradeFixtureFlows", dependencies: ["FlowKit"]),
        .executableTarget(name: "upgrade-fixture-v1", dependencies: ["FlowCommands", "FlowKit", "UpgradeFixtureFlows"]),
        .executableTarget(name: "upgrade-fixture-v2", dependencies: ["FlowCommands", "FlowKit", "UpgradeFixtureFlows"]),

        .testTarget(name: "FlowKitTests", dependencies: ["FlowKit", "FlowJSON", "Flows", "CivilTime", "PostgresClient"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "ObjectStorageTests", dependencies: [
            "ObjectStorage", "FlowKitTesting", "FlowJSON", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "ProcessSupportTests", dependencies: ["ProcessSupport", "FlowKit"]),
        // What the integration tests share (and what users' own tests can use): real servers.
        .target(name: "FlowKitTesting", dependencies: ["FlowKit", "PostgresClient", "RedisClient", "Scheduler", "ProcessSupport", "WorkerRuntime"]),
        .testTarget(name: "SchedulerTests", dependencies: [
            "Scheduler", "FlowKit", "PostgresClient", "RedisClient", "CeleryProtocol", "FlowKitTesting", "Flows",
        ]),
        .testTarget(name: "WorkerRuntimeTests", dependencies: [
            "WorkerRuntime", "Scheduler", "FlowKit", "RedisClient", "CeleryProtocol", "FlowKitTesting", "Flows", "ProcessSupport",
        ]),
        // A test target per module below: the C bindings and the wire codec on their own.
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "FlowKitTesting"]),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "FlowKitTesting"]),
        .testTarget(name: "CeleryProtocolTests", dependencies: ["CeleryProtocol", "FlowKit", "RedisClient", "FlowKitTesting"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FlowServerTests", dependencies: [
            "FlowServer", "Scheduler", "WorkerRuntime", "FlowKit", "FlowKitTesting", "Flows", "PostgresClient", "FlowCommands", "ProcessSupport",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)

// Imports are part of the design: the compiler checks them in every target.
for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .enableUpcomingFeature("ExistentialAny"),
        .enableUpcomingFeature("InternalImportsByDefault"),
        .enableUpcomingFeature("MemberImportVisibility"),
    ]
}
