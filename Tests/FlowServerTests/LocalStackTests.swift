import FlowJSON
import FlowKit
import FlowKitTesting
import Foundation
import ProcessSupport
import Testing

/// `make start|stop|status|reset` (scripts/local.sh) with the real binary: the stack in the
/// background, its private servers on ports of its own home.
@Suite("Local stack", .serialized)
struct LocalStackTests {
    func local(_ command: String, home: String, port: Int, extra: [String] = []) throws -> (status: Int32, output: String) {
        try ProcessRunner.runToCompletion(["/usr/bin/env", "FLOWCTL=\(try TestServers.flowctlPath())", "FLOWKIT_HOME=\(home)", "PORT=\(port)"]
                                          + extra + [TestServers.repositoryRoot + "/scripts/local.sh", command])
    }

    func client(_ args: [String], home: String, port: Int) throws -> (status: Int32, output: String) {
        let token = try String(contentsOfFile: home + "/admin-token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return try ProcessRunner.runToCompletion(["/usr/bin/env", "FLOWKIT_API_URL=http://127.0.0.1:\(port)", "FLOWKIT_API_TOKEN=\(token)",
                                                  try TestServers.flowctlPath()] + args)
    }

    @Test("start, trigger, stop, start keeps the run; a second home runs beside the first on other ports; a taken port names its home")
    func startStopKeepsRuns() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-local-\(UUID().uuidString.prefix(8))").path
        let a = base + "/a", b = base + "/b", c = base + "/c"
        let pa = try freePort(), pb = try freePort(), pc = try freePort()
        defer {
            for (h, p) in [(a, pa), (b, pb), (c, pc)] { _ = try? local("stop", home: h, port: p) }
            try? FileManager.default.removeItem(atPath: base)
        }
        let started = try local("start", home: a, port: pa)
        #expect(started.status == 0 && started.output.contains("FlowKit is up"), "\(started.output)")
        let run = try client(["trigger", "example_retry", "--wait"], home: a, port: pa)
        #expect(run.status == 0, "\(run.output)")
        let runId = try #require(run.output.split(separator: "\n").last { $0.hasPrefix("run ") }.map { String($0.dropFirst(4)).components(separatedBy: ": ")[0] })
        #expect(try local("start", home: a, port: pa).output.contains("already running"))

        // A second home at once: its own ports, its own data.
        #expect(try local("start", home: b, port: pb).status == 0)
        let portsA = try String(contentsOfFile: a + "/ports", encoding: .utf8), portsB = try String(contentsOfFile: b + "/ports", encoding: .utf8)
        #expect(portsA != portsB)
        #expect(try client(["runs", "list", "--json"], home: b, port: pb).output.contains(runId) == false)

        // A home whose ports another home holds is told which.
        try FileManager.default.createDirectory(atPath: c, withIntermediateDirectories: true)
        try portsA.write(toFile: c + "/ports", atomically: true, encoding: .utf8)
        let refused = try local("start", home: c, port: pc)
        #expect(refused.status == 1 && refused.output.contains("which the FlowKit home \(a) holds now"), "\(refused.output)")

        #expect(try local("stop", home: a, port: pa).status == 0)
        #expect(try local("status", home: a, port: pa).status == 3)
        #expect(try local("start", home: a, port: pa).status == 0)
        let shown = try client(["runs", "show", runId], home: a, port: pa)
        #expect(shown.status == 0 && shown.output.contains("success"), "\(shown.output) [\(runId)]")
        #expect(try local("status", home: a, port: pa).output.contains(#""status":"ok""#))

        // reset asks; FORCE=1 does not; the runs are gone after it.
        #expect(try local("reset", home: b, port: pb).status == 1)
        #expect(try local("reset", home: b, port: pb, extra: ["FORCE=1"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: b + "/postgres"))
    }
}
