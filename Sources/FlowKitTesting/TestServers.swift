import FlowKit
import Foundation
import ProcessSupport
import PostgresClient
public import RedisClient
import Scheduler

/// Real PostgreSQL and Redis for integration tests, as `scripts/services.sh start` provides them
/// (`make test` runs it): `FLOWKIT_TEST_DATABASE_URL` and `FLOWKIT_TEST_REDIS_URL`.
///
/// A missing server is an error, never a silent skip.
public enum TestServers {
    public struct Missing: Error, CustomStringConvertible {
        public let variable: String
        public init(variable: String) { self.variable = variable }
        public var description: String {
            "\(variable) is not set: integration tests need the real PostgreSQL and Redis that `make test` starts (scripts/services.sh start)"
        }
    }

    public static func env(_ name: String) throws -> String {
        guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else { throw Missing(variable: name) }
        return v
    }

    /// A new, empty, migrated database; its URL.
    public static func freshDatabase() async throws -> String {
        let admin = try env("FLOWKIT_TEST_DATABASE_URL")
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        let conn = PGConnection(admin, label: "test-admin")
        try await conn.run { s in _ = try s.execute("CREATE DATABASE \(name)") }
        conn.close()
        guard var comps = URLComponents(string: admin) else { throw Missing(variable: "FLOWKIT_TEST_DATABASE_URL (not a URL)") }
        comps.path = "/" + name
        let url = comps.string!
        let db = PGConnection(url, label: "test-migrate")
        try await Migrator.migrate(db)
        db.close()
        // FLOWKIT_TEST_VIA_PGBOUNCER=1: the database through scripts/pgbouncer.sh's PgBouncer in
        // transaction mode, its sessions (LISTEN, the leader's lock, migrations) direct.
        if ProcessInfo.processInfo.environment["FLOWKIT_TEST_VIA_PGBOUNCER"] == "1" {
            guard var bouncer = URLComponents(string: try env("FLOWKIT_TEST_PGBOUNCER_URL")) else {
                throw Missing(variable: "FLOWKIT_TEST_PGBOUNCER_URL (not a URL)")
            }
            bouncer.path = "/" + name
            return PGEndpoint.pooled(bouncer.string!, session: url)
        }
        return url
    }

    /// The test Redis, emptied.
    public static func freshRedis() async throws -> RedisConfig {
        let config = try RedisConfig(url: try env("FLOWKIT_TEST_REDIS_URL"))
        let r = RedisConnection(config, label: "test-flush")
        try await r.run { s in try s.command(["FLUSHALL"]).orThrow() }
        r.close()
        return config
    }

    /// The test Redis as it is (not emptied): for a second client beside the first.
    public static func redis() throws -> RedisConfig { try RedisConfig(url: try env("FLOWKIT_TEST_REDIS_URL")) }

    public static var redisPort: Int { Int(ProcessInfo.processInfo.environment["FLOWKIT_TEST_REDIS_PORT"] ?? "") ?? 26390 }
    public static var redisDir: String? { ProcessInfo.processInfo.environment["FLOWKIT_TEST_REDIS_DIR"] }

    /// The repository's root: the directory above this file's `Sources`.
    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// The `flowctl` built beside the tests (`.build/debug/flowctl`).
    public static func flowctlPath() throws -> String {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/" {
            dir = dir.deletingLastPathComponent()
            let candidate = dir.appendingPathComponent(".build/debug/flowctl").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw Missing(variable: "a built flowctl (.build/debug/flowctl; run `swift build`)")
    }
}

/// Polls `condition` until it holds or `timeout` seconds pass; throws naming `what` on timeout.
public func eventually(_ what: String, timeout: Double = 20, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    struct Timeout: Error, CustomStringConvertible { let description: String }
    throw Timeout(description: "timed out after \(timeout)s waiting for: \(what)")
}

extension TestServers {
    /// Runs `scripts/services.sh ARGS` (restarting a server mid-test, for fault tests).
    public static func services(_ args: String...) throws {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/" {
            dir = dir.deletingLastPathComponent()
            let script = dir.appendingPathComponent("scripts/services.sh")
            if FileManager.default.fileExists(atPath: script.path) {
                let (status, output) = try ProcessRunner.runToCompletion(["/bin/sh", script.path] + args)
                if status != 0 { throw Missing(variable: "scripts/services.sh \(args.joined(separator: " ")) failed: \(output)") }
                return
            }
        }
        throw Missing(variable: "scripts/services.sh")
    }
}

/// Fails unless `body` finishes within `seconds`: a liveness bound, generous on purpose — it
/// tells a wait of seconds from one that never ends, and measures nothing.
public func within<T: Sendable>(_ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { g in
        g.addTask { try await body() }
        g.addTask { try await Task.sleep(for: .seconds(seconds)); return nil }
        defer { g.cancelAll() }
        guard let first = try await g.next(), let value = first else {
            throw LivenessFailure(message: "\(what) did not finish within \(seconds)s")
        }
        return value
    }
}

public struct LivenessFailure: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// A count several tasks add to.
public final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    public init() {}
    public func add() { lock.withLock { n += 1 } }
    public var value: Int { lock.withLock { n } }
}

/// A TCP port nothing listens on right now.
/// A loopback port with something listening on it (the returned descriptor; close it to free
/// the port): for tests of what a busy port does.
public func listeningPort() throws -> (port: Int, fd: Int32) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = loopback(port: 0)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    listen(fd, 1)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return (Int(UInt16(bigEndian: addr.sin_port)), fd)
}

/// True when something accepts connections on the loopback port.
public func isListening(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = loopback(port: port)
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

func loopback(port: Int) -> sockaddr_in {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return addr
}

public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = loopback(port: 0)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}
