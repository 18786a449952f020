import Foundation
import Testing
import WorkerRuntime

@Suite("Releases")
struct ReleaseTests {
    func read(_ relative: String) throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent(relative), encoding: .utf8)
    }

    @Test("flowctl --version, the newest CHANGELOG entry and the version the MyFlows template depends on are one version")
    func versionsAgree() throws {
        let changelog = try read("CHANGELOG.md")
        let newest = changelog.split(separator: "\n").first { $0.hasPrefix("## ") }.map { String($0.dropFirst(3).prefix { $0 != " " }) }
        #expect(newest == flowKitVersion)
        #expect(try read("Examples/MyFlows/README.md").contains(#"exact: "\#(flowKitVersion)""#))
        #expect(try read("Examples/MyFlows/Package.swift").contains(#"exact: "\#(flowKitVersion)""#))
    }
}
