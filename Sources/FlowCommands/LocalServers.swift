import FlowKit
import Foundation
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
///
/// Spawned directly with its output in a file: Foundation's `Process` can hang in
/// `waitUntilExit` off the main thread, and daemons the command starts (pg_ctl start) would
/// hold a pipe open forever.
@discardableResult
func sh(_ argv: [String], quiet: Bool = false) throws -> String {
    let outPath = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-sh-\(UUID().uuidString)").path
    defer { unlink(outPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let args: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { args.forEach { free($0) } }
    // Signal handling of this process (ignored SIGTERM/SIGINT for graceful shutdown) must not
    // leak into servers it starts: ignored signals survive exec.
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var all = sigset_t(); sigfillset(&all)
    var none = sigset_t(); sigemptyset(&none)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setsigmask(&attr, &none)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, &attr, args, environ)
    guard rc == 0 else { throw CLIError("cannot run `\(argv[0])`: \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let exited = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    guard exited == 0 else {
        throw CLIError("`\(argv.joined(separator: " "))` failed (status \(exited)): \(text.suffix(800))")
    }
    return text
}
