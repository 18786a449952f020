import FlowKitTesting
import Foundation
import ProcessSupport
import Testing

/// `flowctl standalone` owns its private servers: they end with it however it ends, a second
/// standalone of one home is refused, leftovers of a dead one are stopped, and no other local
/// user can log in to them.
@Suite("Standalone's servers", .serialized)
struct StandaloneLifecycleTests {
    /// A `flowctl standalone` child, spawned and reaped here (not with Foundation's `Process`,
    /// whose wait did not return for a SIGKILLed child in this test process).
    final class Standalone: @unchecked Sendable {
        let pid: pid_t
        let home: String
        let port: Int
        private var status: Int32?
        init(pid: pid_t, home: String, port: Int) { self.pid = pid; self.home = home; self.port = port }
        var log: String { (try? String(contentsOfFile: home + "/test-standalone-\(port).log", encoding: .utf8)) ?? "" }
        /// Reaps the child if it has ended; nil while it runs.
        func exitStatus() -> Int32? {
            if let status { return status }
            var st: Int32 = 0
            if waitpid(pid, &st, WNOHANG) == pid { status = st }
            return status
        }
        var isRunning: Bool { exitStatus() == nil }
        func wait(seconds: Double = 60) async throws -> Int32? {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                if let s = exitStatus() { return s }
                try await Task.sleep(for: .milliseconds(100))
            }
            return nil
        }
    }

    func start(home: String, port: Int) throws -> Standalone {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        var env = ProcessInfo.processInfo.environment
        for k in ["FLOWKIT_DATABASE_URL", "FLOWKIT_REDIS_URL", "FLOWKIT_API_TOKENS"] { env[k] = nil }
        env["FLOWKIT_HOME"] = home
        let pid = try ProcessRunner.spawn([try TestServers.flowctlPath(), "standalone", "--port", String(port), "--workers", "1"],
                                          environment: env, outputPath: home + "/test-standalone-\(port).log")
        return Standalone(pid: pid, home: home, port: port)
    }

    struct TestFailure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    func waitHealthy(_ s: Standalone) async throws {
        for _ in 0..<240 {
            if (try? ProcessRunner.runToCompletion(["curl", "-sf", "http://127.0.0.1:\(s.port)/health"]))?.status == 0 { return }
            if !s.isRunning { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw TestFailure("standalone did not become healthy: \(s.log)")
    }

    func pid(_ file: String) -> Int32? {
        (try? String(contentsOfFile: file, encoding: .utf8))?.split(separator: "\n").first.flatMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// Running, not a zombie waiting for its (reparented) parent to reap it.
    func alive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !(stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? false)
    }

    func servers(_ home: String) -> (pg: Int32?, redis: Int32?) { (pid(home + "/postgres/postmaster.pid"), pid(home + "/redis/redis.pid")) }

    func gone(_ pids: [Int32], within seconds: Double) async throws -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if pids.allSatisfy({ !alive($0) }) { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    func scratchHome() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-sa-\(UUID().uuidString.prefix(8))").path
    }

    /// Whatever a failed test left: PostgreSQL gets SIGQUIT (immediate shutdown), Redis SIGKILL.
    func cleanUp(_ home: String) {
        _ = try? ProcessRunner.runToCompletion(["pkill", "-KILL", "-f", "\(home)/services.sh watch"])
        if let pg = servers(home).pg, alive(pg) { kill(pg, SIGQUIT) }
        if let r = servers(home).redis, alive(r) { kill(r, SIGKILL) }
        try? FileManager.default.removeItem(atPath: home)
    }

    @Test("SIGKILL of standalone leaves no PostgreSQL and no redis-server running")
    func sigkillStopsServers() async throws {
        let home = scratchHome()
        defer { cleanUp(home) }
        let s = try start(home: home, port: try freePort())
        try await waitHealthy(s)
        let (pg, redis) = servers(home)
        let pids = [try #require(pg), try #require(redis)]
        #expect(pids.allSatisfy(alive))
        kill(s.pid, SIGKILL)
        #expect(try await gone(pids, within: 30), "still running after standalone was killed: \(pids.filter(alive))")
    }

    @Test("SIGTERM stops standalone and its servers")
    func sigtermStopsServers() async throws {
        let home = scratchHome()
        defer { cleanUp(home) }
        let s = try start(home: home, port: try freePort())
        try await waitHealthy(s)
        let pids = [servers(home).pg, servers(home).redis].compactMap { $0 }
        #expect(pids.count == 2)
        kill(s.pid, SIGTERM)
        #expect(try await s.wait(seconds: 40) != nil, "standalone did not stop on SIGTERM: \(s.log.suffix(1500))")
        #expect(try await gone(pids, within: 40), "\(s.log.suffix(1500))")
    }

    @Test("a second standalone of one home is refused naming the first; the leftovers of a dead one (its watchdog dead too) are stopped at the next start")
    func oneStandalonePerHomeAndLeftovers() async throws {
        let home = scratchHome()
        defer { cleanUp(home) }
        let first = try start(home: home, port: try freePort())
        try await waitHealthy(first)
        let second = try start(home: home, port: try freePort())
        let refused = try await second.wait()
        #expect(refused != nil && refused != 0)
        #expect(second.log.contains("another flowctl standalone (pid \(first.pid)) runs with FLOWKIT_HOME"), "\(second.log)")

        // Kill the watchdog first, then standalone: the servers are left over, as after a power cut of both.
        let old = [servers(home).pg, servers(home).redis].compactMap { $0 }
        _ = try ProcessRunner.runToCompletion(["pkill", "-KILL", "-f", "\(home)/services.sh watch"])
        kill(first.pid, SIGKILL)
        _ = try await first.wait()
        try await Task.sleep(for: .seconds(1))
        #expect(old.allSatisfy(alive), "the servers should be left over for this test")
        let third = try start(home: home, port: try freePort())
        try await waitHealthy(third)
        #expect(third.log.contains("stopping what an earlier standalone of"), "\(third.log)")
        #expect(old.allSatisfy { !alive($0) })
        kill(third.pid, SIGKILL)
        #expect(try await gone([servers(home).pg, servers(home).redis].compactMap { $0 }, within: 30))
    }

    // Acting as another user needs root (runuser); CI runs as root, and there the test always runs.
    @Test("another local user gets no token and no Redis: the private servers need the passwords in FLOWKIT_HOME/secrets (0600); the owner's flowctl tokens finds them",
          .enabled(if: getuid() == 0 || ProcessInfo.processInfo.environment["CI"] == "true", "needs root to run commands as `nobody`"))
    func otherUsersAreRefused() async throws {
        let home = scratchHome()
        defer { cleanUp(home) }
        let s = try start(home: home, port: try freePort())
        defer { kill(s.pid, SIGKILL) }
        try await waitHealthy(s)
        let ports = try String(contentsOfFile: home + "/ports", encoding: .utf8)
        let pgPort = try #require(ports.split(separator: " ").first { $0.hasPrefix("pg=") }.map { String($0.dropFirst(3)) })
        let redisPort = try #require(ports.split(separator: " ").first { $0.hasPrefix("redis=") }.map { String($0.dropFirst(6)).trimmingCharacters(in: .whitespacesAndNewlines) })
        let attrs = try FileManager.default.attributesOfItem(atPath: home + "/secrets")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)

        // A copy `nobody` can run wherever the checkout is (a home directory may be closed to it):
        // its refusal must come from the servers, not from a path it cannot open.
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-nobody-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: bin) }
        let flowctl = bin + "/flowctl"
        try FileManager.default.copyItem(atPath: try TestServers.flowctlPath(), toPath: flowctl)
        chmod(flowctl, 0o755)
        let version = try ProcessRunner.runToCompletion(["runuser", "-u", "nobody", "--", flowctl, "--version"])
        try #require(version.status == 0, "nobody cannot run \(flowctl): \(version.output)")

        let viaHome = try ProcessRunner.runToCompletion(["runuser", "-u", "nobody", "--", "/usr/bin/env", "FLOWKIT_HOME=\(home)",
                                                         flowctl, "tokens", "create", "intruder", "--role", "admin"])
        #expect(viaHome.status != 0 && viaHome.output.contains("cannot read \(home)/secrets"), "\(viaHome.output)")
        let guessed = try ProcessRunner.runToCompletion(["runuser", "-u", "nobody", "--", "/usr/bin/env",
                                                         "FLOWKIT_DATABASE_URL=postgres://flowkit@127.0.0.1:\(pgPort)/flowkit",
                                                         flowctl, "tokens", "create", "intruder", "--role", "admin"])
        #expect(guessed.status != 0 && guessed.output.contains("password"), "\(guessed.output)")
        let redis = try ProcessRunner.runToCompletion(["runuser", "-u", "nobody", "--", "redis-cli", "-p", redisPort, "ping"])
        #expect(redis.output.contains("NOAUTH"), "\(redis.output)")

        // The owner's flowctl finds the private database in FLOWKIT_HOME, and says which.
        let mine = try ProcessRunner.runToCompletion(["/usr/bin/env", "-u", "FLOWKIT_DATABASE_URL", "FLOWKIT_HOME=\(home)",
                                                      try TestServers.flowctlPath(), "tokens", "create", "mine", "--role", "read"])
        #expect(mine.status == 0 && mine.output.contains("using the private database of the standalone in \(home)"), "\(mine.output)")
    }
}
