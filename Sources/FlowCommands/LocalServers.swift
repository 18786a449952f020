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
    /// With `createSecrets` (standalone), the passwords are made on first use; without (the
    /// tools that only look for a running standalone), a home that has none has empty ones.
    init(home: URL, createSecrets: Bool = true) throws {
        self.home = home.standardizedFileURL
        // Loaded once, and a failure stops the start: servers must never come up without passwords.
        secrets = try Secrets.load(home: self.home, create: createSecrets) ?? Secrets(pg: "", redis: "")
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
    var databaseURL: String { "postgres://flowkit:\(secrets.pg)@127.0.0.1:\(pgPort)/flowkit" }
    var redisURL: String { "redis://:\(secrets.redis)@127.0.0.1:\(redisPort)/0" }
    /// Where the servers are, without their passwords: what messages show.
    var databaseLabel: String { "postgres://flowkit@127.0.0.1:\(pgPort)/flowkit" }

    /// The servers' generated passwords, in `FLOWKIT_HOME/secrets` (mode 0600), so that no
    /// other local user can log in to either server.
    let secrets: Secrets

    struct Secrets {
        let pg: String, redis: String
        static func file(_ home: URL) -> URL { home.appendingPathComponent("secrets") }

        static func load(home: URL, create: Bool) throws -> Secrets? {
            let file = file(home)
            if let text = try? String(contentsOf: file, encoding: .utf8) {
                var kv: [String: String] = [:]
                for line in text.split(separator: "\n") {
                    let p = line.split(separator: "=", maxSplits: 1)
                    if p.count == 2 { kv[String(p[0])] = String(p[1]) }
                }
                if let pg = kv["pg_password"], let redis = kv["redis_password"], !pg.isEmpty, !redis.isEmpty { return Secrets(pg: pg, redis: redis) }
            } else if FileManager.default.fileExists(atPath: file.path) {
                throw CLIError("cannot read \(file.path), the private servers' passwords (it belongs to the user who started them)")
            }
            guard create else { return nil }
            try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
            let made = Secrets(pg: randomSecret(), redis: randomSecret())
            let fd = open(file.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            guard fd >= 0 else { throw CLIError("cannot write \(file.path): \(String(cString: strerror(errno)))") }
            fchmod(fd, 0o600)
            let text = "pg_password=\(made.pg)\nredis_password=\(made.redis)\n"
            _ = text.withCString { write(fd, $0, strlen($0)) }
            close(fd)
            return made
        }
    }

    /// The script's environment for this home: ports, data, passwords (never on a command line).
    func scriptEnvironment() -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        let s = secrets
        precondition(!s.pg.isEmpty && !s.redis.isEmpty, "the private servers are never started without passwords")
        env.merge(["FLOWKIT_TEST_HOME": home.path, "FLOWKIT_TEST_PG_PORT": String(pgPort), "FLOWKIT_TEST_REDIS_PORT": String(redisPort),
                   "FLOWKIT_TEST_PG_DURABLE": "1", "FLOWKIT_SERVICES_PG_DIR": pgData.path, "FLOWKIT_SERVICES_DATABASE": "flowkit",
                   "FLOWKIT_SERVICES_PG_PASSWORD": s.pg, "FLOWKIT_SERVICES_REDIS_PASSWORD": s.redis]) { _, new in new }
        return env
    }

    func scriptFile() throws -> URL {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let file = home.appendingPathComponent("services.sh")
        try EmbeddedServicesScript.text.write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    /// Runs the services script with `command`, for this home and these ports.
    func script(_ command: String) throws {
        let file = try scriptFile()
        let (status, text) = try ProcessRunner.runToCompletion(["/bin/sh", file.path, command], environment: scriptEnvironment())
        guard status == 0 else { throw CLIError("the private servers' script (\(command)) failed (status \(status)): \(text.suffix(800))") }
    }

    func start(log: (String) -> Void) throws {
        try script("start")
        log("private PostgreSQL on 127.0.0.1:\(pgPort) and Redis on 127.0.0.1:\(redisPort) (password-protected), data in \(home.path)")
    }

    func stop(log: (String) -> Void) {
        do { try script("stop"); log("private PostgreSQL and Redis stopped") } catch { log("stopping the private servers: \(error)") }
    }

    /// Whether this home's servers are running now (PostgreSQL's pid file names a live process,
    /// or Redis's does).
    func running() -> [String] {
        var found: [String] = []
        if let pid = Self.pid(in: pgData.appendingPathComponent("postmaster.pid")), Self.alive(pid) { found.append("PostgreSQL (pid \(pid))") }
        if let pid = Self.pid(in: home.appendingPathComponent("redis/redis.pid")), Self.alive(pid) { found.append("redis-server (pid \(pid))") }
        return found
    }

    /// A process that runs: not gone, and not a zombie its (reparented) parent has yet to reap.
    static func alive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !(stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? false)
    }

    static func pid(in file: URL) -> pid_t? {
        (try? String(contentsOf: file, encoding: .utf8))?.split(separator: "\n").first.flatMap { pid_t($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// Takes this home for one standalone: an exclusive lock on `standalone.lock`, held until the
    /// process ends (the kernel lets go of it however the process ends). Another standalone of the
    /// same home is refused, naming its pid; servers left running by one that died are stopped.
    func takeHome(log: (String) -> Void) throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let path = home.appendingPathComponent("standalone.lock").path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CLIError("cannot open \(path): \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            close(fd)
            throw CLIError("another flowctl standalone (pid \(holder)) runs with FLOWKIT_HOME \(home.path); stop it, or set another FLOWKIT_HOME")
        }
        ftruncate(fd, 0)
        let me = "\(getpid())\n"
        _ = me.withCString { write(fd, $0, strlen($0)) }
        // Left open on purpose: the lock lives as long as this process.
        let leftovers = running()
        if !leftovers.isEmpty {
            log("stopping what an earlier standalone of \(home.path) left running: \(leftovers.joined(separator: ", "))")
            try script("stop")
        }
    }

    /// Starts the watchdog: `services.sh watch`, in a process group of its own, reading a pipe
    /// whose write end only this process holds (close-on-exec, so no child inherits it). When
    /// this process ends, however it ends, the pipe closes and the watchdog stops the servers.
    func startWatchdog() throws {
        let file = try scriptFile()
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw CLIError("pipe failed: \(String(cString: strerror(errno)))") }
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        defer { close(fds[0]) }
        do {
            _ = try ProcessRunner.spawn(["/bin/sh", file.path, "watch"], environment: scriptEnvironment(), stdinFD: fds[0], ownProcessGroup: true)
        } catch {
            close(fds[1])
            throw CLIError("cannot start the servers' watchdog: \(error)")
        }
        // fds[1] stays open, unused, for the life of this process: its closing is the signal.
    }
}

/// 32 characters of [a-z0-9] from the system's random source: safe in URLs and SQL literals.
func randomSecret() -> String {
    var g = SystemRandomNumberGenerator()
    let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
    return String((0..<32).map { _ in alphabet[Int(g.next() % UInt64(alphabet.count))] })
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
