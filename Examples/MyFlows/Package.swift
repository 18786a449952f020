// swift-tools-version:6.0
// A template for your own flows: copy this folder, point the FlowKit dependency at a tagged
// release — `.package(url: "https://github.com/your-org/flowkit.git", exact: "0.2.0")` — add
// flows to MyFlows, and build your own `flowctl` with them (README.md).
import PackageDescription

let package = Package(
    name: "MyFlows",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "FlowKit", path: "../.."),
    ],
    targets: [
        .target(name: "MyFlows", dependencies: [.product(name: "FlowKit", package: "FlowKit")]),
        .executableTarget(name: "myflowctl", dependencies: [
            "MyFlows",
            .product(name: "FlowCommands", package: "FlowKit"),
        ]),
        // Flows run in-process by `swift test` (FlowTestRun): no servers needed.
        .testTarget(name: "MyFlowsTests", dependencies: [
            "MyFlows",
            .product(name: "FlowKit", package: "FlowKit"),
            .product(name: "FlowKitTesting", package: "FlowKit"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
