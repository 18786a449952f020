// swift-tools-version:6.0
// A template for your own flows: copy this folder anywhere, add flows to MyFlows, and build your
// own `flowctl` with them (README.md). FlowKit comes from, in this order:
//   1. FLOWKIT_PATH=/path/to/a/flowkit/checkout        (developing against a local FlowKit);
//   2. the FlowKit checkout around this folder          (Examples/MyFlows as shipped);
//   3. the release this template was made with:
//      .package(url: "https://github.com/your-org/flowkit.git", exact: "0.2.0")
//      (FLOWKIT_URL overrides the URL, e.g. your organisation's mirror).
import Foundation
import PackageDescription

let flowkit: Package.Dependency = {
    if let path = Context.environment["FLOWKIT_PATH"], !path.isEmpty {
        return .package(name: "FlowKit", path: path)
    }
    let around = URL(fileURLWithPath: Context.packageDirectory).appendingPathComponent("../..").standardized.path
    if FileManager.default.fileExists(atPath: around + "/Sources/FlowKit/Exports.swift") {
        return .package(name: "FlowKit", path: around)
    }
    return .package(url: Context.environment["FLOWKIT_URL"] ?? "https://github.com/your-org/flowkit.git", exact: "0.2.0")
}()

let package = Package(
    name: "MyFlows",
    platforms: [.macOS(.v14)],
    dependencies: [flowkit],
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
