import FlowKit
import Foundation
import ProcessSupport
#if canImport(Glibc)
import Glibc
#endif

/// The private PostgreSQL and redis-server that `flowctl standalone` runs under `.flowkit/`
/// when no URLs are configured; data survives restarts.
///
/// PostgreSQL refuses to run as root, so as root its files belong to, and its server runs as,
/// the `postgres` user (Debian's package creates it).
struct LocalServers {
    let home: URL
    var pgPort = 54329
    var redisPort = 63799

    var pgData: URL { home.appendingPathComponent("postgres") }
    var redisDir: URL { home.appendingPathComponent("redis") }
    var databaseURL: String { "postgres://flowkit@127.0.0.1:\(pgPort)/flowkit" }
    var redisURL: String { "redis://127.0.0.1:\(redisPort)/0" }

    static func binary(_ name: String) throws -> String {
        let fm = FileManager.default
        if let versions = try? fm.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
            for v in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
                let p = "/usr/lib/postgresql/\(v)/bin/\(name)"
                if fm.isExecutableFile(atPath: p) { return p }
            }
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if fm.isExecutableFile(atPath: p) { return p }
        }
        throw CLIError("`\(name)` is not installed: run `make deps` (apt-get install postgresql redis-server) or set FLOWKIT_DATABASE_URL and FLOWKIT_REDIS_URL")
    }

    var runAsRoot: Bool { geteuid() == 0 }

    /// argv that runs `command` as the unprivileged `postgres` user when we are root.
    func asPostgres(_ command: [String]) -> [String] {
        runAsRoot ? ["runuser", "-u", "postgres", "--"] + command : command
    }

    func start(log: (String) -> Void) throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        try startPostgres(log: log)
        try startRedis(log: log)
    }

    func startPostgres(log: (String) -> Void) throws {
        let initdb = try Self.binary("initdb"), pgctl = try Self.binary("pg_ctl")
        let data = pgData.path
        if !FileManager.default.fileExists(atPath: pgData.appendingPathComponent("PG_VERSION").path) {
            log("initialising a private PostgreSQL in \(data)")
            try FileManager.default.createDirectory(at: pgData, withIntermediateDirectories: true)
            if runAsRoot {
                try sh(["chown", "-R", "postgres:postgres", data])
                try sh(["chmod", "700", data])
                // postgres must be able to reach the folder.
                var dir = pgData.deletingLastPathComponent()
                while dir.path != "/" {
                    _ = try? sh(["chmod", "o+x", dir.path])
                    dir = dir.deletingLastPathComponent()
                }
            }
            try sh(asPostgres([initdb, "-D", data, "-U", "flowkit", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]), quiet: true)
        }
        if (try? sh(asPostgres([pgctl, "-D", data, "status"]), quiet: true)) != nil {
            log("private PostgreSQL already running on port \(pgPort)")
        } else {
            try sh(asPostgres([pgctl, "-D", data, "-l", "\(data)/server.log", "-w", "-t", "60", "-o",
                               "-p \(pgPort) -k \(data) -c listen_addresses=127.0.0.1 -c fsync=on", "start"]), quiet: true)
            log("private PostgreSQL started on 127.0.0.1:\(pgPort)")
        }
        let psql = try Self.binary("psql")
        let exists = try sh([psql, "-h", "127.0.0.1", "-p", String(pgPort), "-U", "flowkit", "-d", "postgres", "-tAc",
                             "SELECT 1 FROM pg_database WHERE datname = 'flowkit'"], quiet: true)
        if exists.trimmingCharacters(in: .whitespacesAndNewlines) != "1" {
            try sh([psql, "-h", "127.0.0.1", "-p", String(pgPort), "-U", "flowkit", "-d", "postgres", "-c", "CREATE DATABASE flowkit"], quiet: true)
        }
    }

    func startRedis(log: (String) -> Void) throws {
        let server = try Self.binary("redis-server")
        try FileManager.default.createDirectory(at: redisDir, withIntermediateDirectories: true)
        let pidfile = redisDir.appendingPathComponent("redis.pid").path
        if let pid = try? String(contentsOfFile: pidfile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
           let p = Int32(pid), kill(p, 0) == 0 {
            log("private Redis already running on port \(redisPort)")
            return
        }
        try sh([server, "--port", String(redisPort), "--bind", "127.0.0.1", "--dir", redisDir.path, "--appendonly", "yes",
                "--daemonize", "yes", "--pidfile", pidfile, "--logfile", redisDir.appendingPathComponent("redis.log").path,
                "--save", ""], quiet: true)
        // Wait until it answers.
        for _ in 0..<100 {
            if (try? sh(["redis-cli", "-p", String(redisPort), "ping"], quiet: true))?.contains("PONG") == true { break }
            usleep(50_000)
        }
        log("private Redis started on 127.0.0.1:\(redisPort)")
    }

    func stop(log: (String) -> Void) {
        if let pgctl = try? Self.binary("pg_ctl") {
            _ = try? sh(asPostgres([pgctl, "-D", pgData.path, "-m", "fast", "-w", "stop"]), quiet: true)
        }
        let pidfile = redisDir.appendingPathComponent("redis.pid").path
        if let pid = try? String(contentsOfFile: pidfile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
           let p = Int32(pid) {
            kill(p, SIGTERM)
            for _ in 0..<100 where kill(p, 0) == 0 { usleep(50_000) }
        }
        log("private PostgreSQL and Redis stopped")
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
