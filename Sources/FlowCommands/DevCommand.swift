import ArgumentParser
import FlowKit
import Foundation
import PostgresClient
import ProcessSupport
import Scheduler
#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `flowctl dev` (`make dev` in a flows package): the edit loop. PostgreSQL and Redis run in
/// processes of their own for as long as `dev` runs; the package's sources are watched; each
/// change is built incrementally and the API, scheduler and worker are replaced by the new
/// binary, while the previous worker stays until the runs it started have finished (each run
/// keeps the flow version it started with). A failed build is printed once, in full, and the
/// running version goes on. The time from the save to the new version answering is printed.
struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Watch a flows package, rebuild on every change and swap the local stack onto the new binary.",
        discussion: """
            Run it in a package made from Examples/MyFlows (`make dev` does). The private PostgreSQL and Redis live under \
            the package's .flowkit/ and survive rebuilds; the API listens on --port with the admin token in \
            .flowkit/admin-token. Each generation's logs are in .flowkit/dev/gen-N/.
            """)

    @Option(help: "The flows package to watch and build.") var packagePath: String = "."
    @Option(help: "The executable product to build (default: the package's only executable).") var product: String?
    @Option(help: "SwiftPM's build directory (swift build --scratch-path).") var scratchPath: String?
    @Option(help: "Port of the API.") var port: Int = 8080
    @Option(help: "Tasks the worker runs at once.") var concurrency: Int = 4
    @Option(help: "Seconds between looks at the sources.") var poll: Double = 0.3
    @Option(help: "Stop after this many successful rebuilds (for scripts and benchmarks; default: run until Ctrl-C).")
    var maxRebuilds: Int?

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1–65535") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard poll > 0 else { throw ValidationError("--poll must be positive") }
    }

    func run() async throws {
        let package = URL(fileURLWithPath: packagePath).standardizedFileURL
        guard FileManager.default.fileExists(atPath: package.appendingPathComponent("Package.swift").path) else {
            throw CLIError("\(package.path) has no Package.swift: run `flowctl dev` in a flows package (cp -r Examples/MyFlows …)", code: 2)
        }
        let env = ProcessInfo.processInfo.environment
        let home = URL(fileURLWithPath: env["FLOWKIT_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? package.appendingPathComponent(".flowkit").path)
        try ensureCanListen(host: "127.0.0.1", port: port)
        let product = try self.product ?? Self.executableProduct(package)
        let stopping = DevSignals.install()

        let servers = try LocalServers(home: home)
        try servers.takeHome { say($0) }
        try servers.startWatchdog()
        try servers.start { say($0) }
        defer { servers.stop { say($0) } }
        let token = try StandaloneCommand.persistentAdminToken(home: home)
        let key = try StandaloneCommand.persistentSecret(home: home, file: "secret-key") { SecretKeyring.newKey() }
        var childEnv = env
        childEnv["FLOWKIT_DATABASE_URL"] = servers.databaseURL
        childEnv["FLOWKIT_REDIS_URL"] = servers.redisURL
        childEnv["FLOWKIT_API_TOKENS"] = "admin:\(token)"
        childEnv["FLOWKIT_API_OPEN_READS"] = "true"
        childEnv["FLOWKIT_HOME"] = home.path
        childEnv[SecretKeyring.variable] = env[SecretKeyring.variable] ?? key
        if env["FLOWKIT_DATA_DIR"] == nil { childEnv["FLOWKIT_DATA_DIR"] = home.appendingPathComponent("data").path }
        if env["FLOWKIT_CONN_WAREHOUSE"] == nil { childEnv["FLOWKIT_CONN_WAREHOUSE"] = servers.databaseURL }

        let watcher = SourceWatcher(package: package)
        var stack = DevStack(home: home, product: product, port: port, concurrency: concurrency, environment: childEnv,
                             databaseURL: servers.databaseURL)
        defer { stack.stopAll() }
        say("dev: building \(product) in \(package.path)")
        var generation = 0
        var rebuilds = 0
        var pending: Date? = Date()   // the first build
        var lastSeen = watcher.snapshot()
        var reported = false
        while !stopping.requested {
            if let savedAt = pending {
                pending = nil
                let buildStart = Date()
                let build = try buildProduct(package: package, product: product)
                let builtIn = Date().timeIntervalSince(buildStart)
                // Changes made during the build are built next.
                let now = watcher.snapshot()
                if now != lastSeen { lastSeen = now; pending = now.newest ?? Date() }
                guard build.ok else {
                    say("dev: the build failed (\(String(format: "%.1f", builtIn)) s)\(generation > 0 ? "; version \(generation) keeps running" : "") — fix it and save:\n\(build.output)")
                    continue
                }
                generation += 1
                try stack.start(generation: generation, binary: build.binary)
                try await stack.waitUntilServing(token: token)
                let total = Date().timeIntervalSince(savedAt)
                if generation == 1 {
                    say("dev: version 1 running: API http://127.0.0.1:\(port) (admin token in \(home.path)/admin-token), built in \(String(format: "%.1f", builtIn)) s; logs in \(stack.directory(1).path)")
                    say("dev: export FLOWKIT_API_URL=http://127.0.0.1:\(port) FLOWKIT_API_TOKEN=\(token)")
                } else {
                    rebuilds += 1
                    say("dev: version \(generation) running \(String(format: "%.1f", total)) s after the save (build \(String(format: "%.1f", builtIn)) s, swap \(String(format: "%.1f", total - builtIn - max(0, buildStart.timeIntervalSince(savedAt)))) s)")
                }
                if let maxRebuilds, rebuilds >= maxRebuilds { break }
                reported = false
                continue
            }
            try? await Task.sleep(for: .milliseconds(Int(poll * 1000)))
            await stack.retireDrainedWorkers()
            if let dead = stack.deadProcess(), !reported {
                say("dev: \(dead) of version \(generation) exited; its log is in \(stack.directory(generation).path) — save a change to start again")
                reported = true
            }
            let now = watcher.snapshot()
            if now != lastSeen {
                say("dev: \(now.changed(from: lastSeen).first ?? "the sources") changed; rebuilding")
                lastSeen = now
                pending = now.newest ?? Date()
            }
        }
        say("dev: stopping")
    }

    /// `swift build` of the product; the binary copied out of the build directory so that the
    /// next build can relink while this one runs.
    func buildProduct(package: URL, product: String) throws -> (ok: Bool, output: String, binary: URL) {
        var argv = ["swift", "build", "--package-path", package.path, "--product", product]
        if let scratchPath { argv += ["--scratch-path", scratchPath] }
        let r = try ProcessRunner.runToCompletion(argv)
        guard r.status == 0 else { return (false, r.output, URL(fileURLWithPath: "/")) }
        let binDir = try ProcessRunner.runToCompletion(argv + ["--show-bin-path"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        return (true, r.output, URL(fileURLWithPath: binDir).appendingPathComponent(product))
    }

    /// The package's only executable product, from `swift package describe`.
    static func executableProduct(_ package: URL) throws -> String {
        let r = try ProcessRunner.runToCompletion(["swift", "package", "--package-path", package.path, "describe", "--type", "json"])
        guard r.status == 0, let start = r.output.firstIndex(of: "{"), let json = try? JSONValue.parse(String(r.output[start...])) else {
            throw CLIError("cannot read \(package.path)/Package.swift: \(r.output.suffix(2000))", code: 2)
        }
        let executables = (json["products"]?.arrayValue ?? []).filter { $0["type"]?["executable"] != nil }.compactMap { $0["name"]?.stringValue }
        guard executables.count == 1 else {
            throw CLIError("\(package.path) has \(executables.count) executable products (\(executables.joined(separator: ", "))): name one with --product", code: 2)
        }
        return executables[0]
    }
}

func say(_ line: String) {
    print(line)
    flushStdout()
}

/// SIGINT and SIGTERM ask the loop to stop (it then stops the stack and the servers).
final class DevSignals: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    private var sources: [any DispatchSourceSignal] = []
    var requested: Bool { lock.withLock { flag } }

    static func install() -> DevSignals {
        let s = DevSignals()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { s.lock.withLock { s.flag = true } }
            src.resume()
            s.sources.append(src)
        }
        return s
    }
}

/// The package's watched files (Sources/, Package.swift and its resources), by modification time.
struct SourceWatcher {
    let package: URL

    struct Snapshot: Equatable {
        var files: [String: Date]
        var newest: Date? { files.values.max() }
        func changed(from old: Snapshot) -> [String] {
            files.filter { old.files[$0.key] != $0.value }.map(\.key).sorted() + old.files.keys.filter { files[$0] == nil }.sorted()
        }
    }

    func snapshot() -> Snapshot {
        var files: [String: Date] = [:]
        let fm = FileManager.default
        for top in ["Package.swift", "Sources", "Resources", "Flows"] {
            let url = package.appendingPathComponent(top)
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else { continue }
            if !isDir.boolValue {
                files[top] = (try? fm.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date
                continue
            }
            guard let e = fm.enumerator(at: url, includingPropertiesForKeys: [.contentModificationDateKey, .isRegularFileKey],
                                        options: [.skipsHiddenFiles]) else { continue }
            for case let f as URL in e {
                guard let v = try? f.resourceValues(forKeys: [.contentModificationDateKey, .isRegularFileKey]), v.isRegularFile == true else { continue }
                files[String(f.path.dropFirst(package.path.count + 1))] = v.contentModificationDate
            }
        }
        return Snapshot(files: files)
    }
}

/// The processes of each generation: scheduler, API and worker of one binary. A new generation
/// replaces the scheduler and API at once; the old worker stays until no unfinished run is on a
/// flow version other than the current one (the runs it may still have to execute).
struct DevStack {
    let home: URL
    let product: String
    let port: Int
    let concurrency: Int
    let environment: [String: String]
    let databaseURL: String
    /// One session for the loop's own queries (a connection per look would pile up threads).
    let db: PGConnection
    var front: [(name: String, pid: pid_t)] = []
    var workers: [(generation: Int, pid: pid_t)] = []

    init(home: URL, product: String, port: Int, concurrency: Int, environment: [String: String], databaseURL: String) {
        self.home = home; self.product = product; self.port = port; self.concurrency = concurrency
        self.environment = environment; self.databaseURL = databaseURL
        db = PGConnection(databaseURL, label: "dev")
    }

    func directory(_ generation: Int) -> URL { home.appendingPathComponent("dev/gen-\(generation)") }

    mutating func start(generation: Int, binary: URL) throws {
        let dir = directory(generation)
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let bin = dir.appendingPathComponent(product)
        try FileManager.default.copyItem(at: binary, to: bin)
        // Every build is a new code version of every flow (that declares no `version:` of its
        // own): a flow's content hash covers its shape, not the code inside a Swift task, so a
        // changed return value alone would make no new version, and the old and new workers
        // would share the runs. With it, each run stays on the workers of the build it started on.
        var environment = self.environment
        environment["FLOWKIT_FLOWS_VERSION"] = "dev-\(generation)-\(Int(Date().timeIntervalSince1970))"
        let migrate = try ProcessRunner.runToCompletion([bin.path, "migrate"], environment: environment)
        guard migrate.status == 0 else { throw CLIError("`\(product) migrate` failed: \(migrate.output)") }
        // The old scheduler and API go first: the new API takes the port, the new scheduler
        // registers the new versions and makes them current.
        for p in front { Self.stop(p.pid) }
        front = []
        func spawn(_ name: String, _ args: [String]) throws -> pid_t {
            try ProcessRunner.spawn([bin.path] + args, environment: environment, outputPath: dir.appendingPathComponent("\(name).log").path,
                                    ownProcessGroup: true)
        }
        front.append(("scheduler", try spawn("scheduler", ["scheduler"])))
        front.append(("API", try spawn("server", ["server", "--port", String(port)])))
        workers.append((generation, try spawn("worker", ["worker", "--concurrency", String(concurrency),
                                                         "--hostname", "dev-gen\(generation)"])))
    }

    /// Waits for the new scheduler to have registered this binary's flows (its row in
    /// `schedulers`, named after its pid) and for the API to answer.
    func waitUntilServing(token: String) async throws {
        let deadline = Date().addingTimeInterval(120)
        let scheduler = front.first { $0.name == "scheduler" }!.pid
        var registered = false
        while Date() < deadline {
            if let dead = deadProcess() { throw CLIError("the \(dead) exited at start; see \(directory(workers.last?.generation ?? 0).path)") }
            if !registered {
                registered = (try? await db.run { s in
                    try s.query("SELECT 1 FROM schedulers WHERE name LIKE $1", ["%-\(scheduler)"]).first != nil
                }) ?? false
            }
            if registered, let (status, _) = try? await Self.get("http://127.0.0.1:\(port)/health", token: token), status == 200 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CLIError("the new scheduler and API were not serving on port \(port) within 120 s; see \(directory(workers.last?.generation ?? 0).path)")
    }

    static func get(_ url: String, token: String) async throws -> (Int, Data) {
        var req = URLRequest(url: URL(string: url)!, timeoutInterval: 2)
        req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        let (data, resp) = try await URLSession.shared.data(for: req)
        return ((resp as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    /// The name of a current process that has exited, if one has.
    func deadProcess() -> String? {
        for p in front where Self.exited(p.pid) { return p.name }
        if let w = workers.last, Self.exited(w.pid) { return "worker" }
        return nil
    }

    static func exited(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == pid || (kill(pid, 0) != 0 && errno == ESRCH)
    }

    /// Stops the workers of older generations once no unfinished run is on a non-current flow version.
    mutating func retireDrainedWorkers() async {
        guard workers.count > 1 else { return }
        let old = (try? await db.run { s in
            try s.query("""
                SELECT count(*) AS n FROM runs r JOIN flows f ON f.flow_id = r.flow_id
                WHERE r.state IN ('queued', 'running') AND r.flow_version <> f.current_version
                """).first?.intOrNull("n") ?? 0
        }) ?? 1
        guard old == 0 else { return }
        let retired = workers.dropLast()
        for w in retired { Self.stop(w.pid) }
        say("dev: the worker\(retired.count == 1 ? "" : "s") of version \(retired.map { String($0.generation) }.joined(separator: ", ")) stopped: no unfinished run is left on an older flow version")
        workers = [workers.last!]
    }

    mutating func stopAll() {
        db.close()
        for p in front { Self.stop(p.pid) }
        for w in workers { Self.stop(w.pid) }
        front = []; workers = []
    }

    /// SIGTERM, then SIGKILL after 15 s; reaped.
    static func stop(_ pid: pid_t) {
        kill(pid, SIGTERM)
        for _ in 0..<150 {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid || (kill(pid, 0) != 0 && errno == ESRCH) { return }
            usleep(100_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}
