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

    @Test("a copy of the MyFlows template anywhere resolves FlowKit: FLOWKIT_PATH names a checkout, else the release tag at FLOWKIT_URL")
    func templateResolvesAsItIs() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("myflows-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: root.appendingPathComponent("Examples/MyFlows"), to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        /// The template's one dependency, as SwiftPM reads the manifest (no resolution, no network).
        func dependency(_ env: [String: String]) throws -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            var e = ProcessInfo.processInfo.environment
            e.removeValue(forKey: "FLOWKIT_PATH"); e.removeValue(forKey: "FLOWKIT_URL")
            for (k, v) in env { e[k] = v }
            p.environment = e
            p.arguments = ["swift", "package", "--package-path", copy.path, "dump-package"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            let deps = json?["dependencies"] as? [[String: Any]] ?? []
            return String(describing: deps.first ?? [:])
        }
        let local = try dependency(["FLOWKIT_PATH": root.path])
        #expect(local.contains("fileSystem") && local.contains(root.path), "\(local)")
        let release = try dependency([:])
        #expect(release.contains("sourceControl") && release.contains("https://github.com/your-org/flowkit.git") && release.contains(flowKitVersion),
                "\(release)")
        let mirror = try dependency(["FLOWKIT_URL": "https://git.example.com/data/flowkit.git"])
        #expect(mirror.contains("https://git.example.com/data/flowkit.git"), "\(mirror)")
    }
}
