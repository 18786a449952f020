import FlowKit
import Foundation
import ProcessSupport
#if canImport(Glibc)
import Glibc
#endif

/// The private PostgreSQL and redis-server that `flowctl standalone` runs under `.flowkit/`
/// when no URLs are configured; data survives restarts.
///
/// Started and stopped by `scripts/services.sh` — the script the tests, `make faults`, `make
/// stress` and `make bench` use — carried inside the binary (`EmbeddedServicesScript`) and
/// written under `home` to run. Durable (fsync on), unlike the tests' servers.
struct LocalServers {
    let home: URL
    var pgPort = 54329
    var redisPort = 63799

    /// The servers of this home, on its own ports: chosen once (the first home on a machine gets
    /// 54329 and 63799, another the next free pair) and kept in `ports`, so that data and URLs
    /// survive restarts and two homes never share a server. Each port is claimed in
    /// `/tmp/flowkit-ports/`, so that a taken port names the FlowKit home that holds it.
    init(home: URL) throws {
        self.home = home.standardizedFileURL
        let file = self.home.appendingPathComponent("ports")
        if let text = try? String(contentsOf: file, encoding: .utf8) {
            let kv = Dictionary(text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { part -> (String, Int)? in
                let p = part.split(separator: "=", maxSplits: 1)
                guard p.count == 2, let n = Int(p[1]) else { return nil }
                return (String(p[0]), n)
            }, uniquingKeysWith: { a, _ in a })
            if let pg = kv["pg"], let redis = kv["redis"] {
                pgPort = pg
                redisPort = redis
                try checkHeld()
                return
            }
        }
        pgPort = try Self.pick(from: 54329, home: self.home)
        redisPort = try Self.pick(from: 63799, home: self.home)
        try FileManager.default.createDirectory(at: self.home, withIntermediateDirectories: true)
        try "pg=\(pgPort) redis=\(redisPort)\n".write(to: file, atomically: true, encoding: .utf8)
        for p in [pgPort, redisPort] { Self.claim(p, home: self.home) }
    }

    static let claims = URL(fileURLWithPath: "/tmp/flowkit-ports")

    /// The FlowKit home that claimed a port, if one did and still exists.
    static func holder(of port: Int) -> String? {
        guard let h = try? String(contentsOf: claims.appendingPathComponent(String(port)), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines), !h.isEmpty,
              FileManager.default.fileExists(atPath: h + "/ports") else { return nil }
        return h
    }

    static func claim(_ port: Int, home: URL) {
        try? FileManager.default.createDirectory(at: claims, withIntermediateDirectories: true)
        chmod(claims.path, 0o1777)
        try? (home.path + "\n").write(to: claims.appendingPathComponent(String(port)), atomically: true, encoding: .utf8)
    }

    /// The first port from `start` that nothing listens on and no other home claimed.
    static func pick(from start: Int, home: URL) throws -> Int {
        for port in start..<(start + 200) {
            if let h = holder(of: port), h != home.path { continue }
            if canListen(port) { return port }
        }
        throw CLIError("no free port in \(start)–\(start + 199) for the private servers of \(home.path)")
    }

    /// Both ports are free, or held by this home's own servers (still running from before);
    /// else the error names who holds them.
    func checkHeld() throws {
        for (what, port) in [("PostgreSQL", pgPort), ("Redis", redisPort)] where !Self.canListen(port) {
            let holder = Self.holder(of: port)
            if holder == home.path { continue }  // this home's server, left running: the services script reuses it
            let who = holder.map { "the FlowKit home \($0)" } ?? "another program"
            throw CLIError("the private \(what) of \(home.path) uses port \(port), which \(who) holds now; stop that, or delete \(home.path)/ports to pick new ports")
        }
        for p in [pgPort, redisPort] where Self.holder(of: p) == nil { Self.claim(p, home: home) }
    }

    static func canListen(_ port: Int) -> Bool { (try? ensureCanListen(host: "127.0.0.1", port: port)) != nil }

    var pgData: URL { home.appendingPathComponent("postgres") }
    var databaseURL: String { "postgres://flowkit@127.0.0.1:\(pgPort)/flowkit" }
    var redisURL: String { "redis://127.0.0.1:\(redisPort)/0" }

    /// Runs the services script with `command`, for this home and these ports.
    func script(_ command: String) throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let file = home.appendingPathComponent("services.sh")
        try EmbeddedServicesScript.text.write(to: file, atomically: true, encoding: .utf8)
        try sh(["/usr/bin/env", "FLOWKIT_TEST_HOME=\(home.path)", "FLOWKIT_TEST_PG_PORT=\(pgPort)", "FLOWKIT_TEST_REDIS_PORT=\(redisPort)",
                "FLOWKIT_TEST_PG_DURABLE=1", "FLOWKIT_SERVICES_PG_DIR=\(pgData.path)", "FLOWKIT_SERVICES_DATABASE=flowkit",
                "/bin/sh", file.path, command], quiet: true)
    }

    func start(log: (String) -> Void) throws {
        try script("start")
        log("private PostgreSQL on 127.0.0.1:\(pgPort) and Redis on 127.0.0.1:\(redisPort), data in \(home.path)")
    }

    func stop(log: (String) -> Void) {
        do { try script("stop"); log("private PostgreSQL and Redis stopped") } catch { log("stopping the private servers: \(error)") }
    }
}

/// Runs a command to completion; throws with its output when it fails.
@discardableResult
func sh(_ argv: [String], quiet: Bool = false) throws -> String {
    let (status, text) = try ProcessRunner.runToCompletion(argv)
    guard status == 0 else {
        throw CLIError("`\(argv.joined(separator: " "))` failed (status \(status)): \(text.suffix(800))")
    }
    return text
}
