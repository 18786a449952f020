import CeleryProtocol
import ArgumentParser
import FlowKit
import FlowServer
import Foundation
import Hummingbird
import Logging
import PostgresClient
import Prometheus
import RedisClient
import Scheduler
import ServiceLifecycle
import WorkerRuntime

struct WorkerOptions: ParsableArguments {
    @Option(help: "Queues to consume, comma-separated (default: FLOWKIT_WORKER_QUEUES, else default).") var queues: String?
    @Option(help: "Tasks run at once (default: FLOWKIT_WORKER_CONCURRENCY, else 2).") var concurrency: Int?
    @Option(help: "Host name this worker reports.") var hostname: String = ProcessInfo.processInfo.hostName
    @Option(help: "Seconds between heartbeats.") var heartbeatInterval: Double = 2
    @Option(help: "Seconds after which a claimed, unacknowledged message is delivered again.") var visibilityTimeout: Double = 300
    @Option(help: "Seconds running tasks get to finish on shutdown.") var shutdownGrace: Double = 30
    @Option(help: "Task messages larger than this many bytes are refused before decoding (dead-lettered).")
    var maxMessageBytes: Int = KombuLayout.defaultMaxMessageBytes

    func config(name: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> WorkerConfig {
        let queues = self.queues ?? environment["FLOWKIT_WORKER_QUEUES"] ?? "default"
        var concurrency = 2
        if let c = self.concurrency { concurrency = c } else if let v = environment["FLOWKIT_WORKER_CONCURRENCY"] {
            guard let n = Int(v.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("FLOWKIT_WORKER_CONCURRENCY must be a whole number, got `\(v)`")
            }
            concurrency = n
        }
        let qs = queues.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !qs.isEmpty else { throw ValidationError("--queues needs at least one queue name") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard maxMessageBytes >= 1024 else { throw ValidationError("--max-message-bytes must be at least 1024") }
        guard heartbeatInterval > 0, visibilityTimeout > 0, shutdownGrace >= 0 else {
            throw ValidationError("--heartbeat-interval and --visibility-timeout must be positive, --shutdown-grace not negative")
        }
        // A key that is set but unusable stops the worker here, not at its first sealed task.
        _ = try SecretKeyring.fromEnvironment(environment)
        var c = WorkerConfig(name: name, hostname: hostname, queues: qs, concurrency: concurrency)
        c.environment = environment
        c.heartbeatInterval = heartbeatInterval
        c.visibilityTimeout = visibilityTimeout
        c.shutdownGrace = shutdownGrace
        c.maxMessageBytes = maxMessageBytes
        return c
    }
}

struct SchedulerOptions: ParsableArguments {
    @Option(help: "Seconds without a heartbeat after which a running task is a zombie.") var zombieThreshold: Double = 30
    @Option(help: "Delete finished runs this long after they end, hourly, e.g. 90d (default: FLOWKIT_RETENTION, else keep them).")
    var retention: String?

    func config(visibilityTimeout: Double = 300, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> SchedulerConfig {
        var c = SchedulerConfig()
        c.zombieThreshold = zombieThreshold
        c.visibilityTimeout = visibilityTimeout
        c.lostMessageAfter = max(5, zombieThreshold)
        if let r = retention ?? environment["FLOWKIT_RETENTION"].flatMap({ $0.isEmpty ? nil : $0 }) {
            do { c.retention = try parseDuration(r) } catch {
                throw ValidationError("\(retention == nil ? "FLOWKIT_RETENTION" : "--retention"): `\(r)` is not a duration such as 30d or 12h")
            }
        }
        return c
    }
}

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Apply pending database migrations.")
    func run() async throws {
        let settings = try Settings.fromEnvironment()
        let db = PGConnection(try settings.databaseOrLocal(), label: "migrate")
        let applied = try await Migrator.migrate(db)
        print(applied.isEmpty ? "schema is up to date (\(Migration.bundled.count) migrations)" : "applied: \(applied.joined(separator: ", "))")
    }
}

struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "scheduler", abstract: "Run a scheduler (any number may share one database).")
    @OptionGroup var options: SchedulerOptions
    @Option(help: "Seconds after which a claimed, unacknowledged message is delivered again.") var visibilityTimeout: Double = 300
    @Option(help: "Serve this scheduler's Prometheus histograms on /metrics at this port (0: off).") var metricsPort: Int = 0
    func run() async throws {
        let settings = try Settings.fromEnvironment()
        let logger = makeLogger("flowkit.scheduler")
        let registry = PrometheusCollectorRegistry()
        let admitted = FlowCatalog.admitted()
        let daemon = SchedulerDaemon(databaseURL: try settings.requireDatabase(), redis: try RedisConfig(url: try settings.requireRedis()),
                                     flows: admitted.flows, config: try options.config(visibilityTimeout: visibilityTimeout),
                                     metrics: .prometheus(registry), notifiers: FlowCatalog.notifiers, importErrors: admitted.importErrors)
        try await daemon.prepare()
        var services: [any Service] = daemon.services()
        if metricsPort > 0 {
            let router = Router()
            router.get("/metrics") { _, _ in
                Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                         body: .init(byteBuffer: ByteBuffer(string: registry.emitToString())))
            }
            services.append(Application(router: router, configuration: .init(address: .hostname("0.0.0.0", port: metricsPort)), logger: logger))
        }
        try await runServices(services, logger: logger)
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "worker", abstract: "Run a worker (needs Redis only).")
    @OptionGroup var options: WorkerOptions
    @Option(help: "Worker name (default worker@HOST-PID).") var name: String?
    func run() async throws {
        let settings = try Settings.fromEnvironment()
        let logger = makeLogger("flowkit.worker")
        let admitted = FlowCatalog.admitted()
        let worker = Worker(redis: try RedisConfig(url: try settings.requireRedis()), flows: admitted.flows,
                            config: try options.config(name: name), importErrors: admitted.importErrors)
        try await runServices([WorkerService(worker: worker)], logger: logger)
    }
}

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "server", abstract: "Run the HTTP API.")
    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int = 8080
    func run() async throws {
        let settings = try Settings.fromEnvironment()
        let logger = makeLogger("flowkit.api")
        let db = try settings.requireDatabase()
        try await Migrator.checkCurrent(PGConnection(db, label: "check"))
        let api = makeAPI(settings: settings, databaseURL: db, redisURL: try settings.requireRedis(), tokens: settings.apiTokens,
                          openReads: settings.openReads ?? false, logger: logger)
        await api.store.connectAll()
        if settings.apiTokens.isEmpty { logger.warning("FLOWKIT_API_TOKENS is empty: only tokens made with `flowctl tokens create` are accepted") }
        try ensureCanListen(host: host, port: port)
        try await runServices([api.application(host: host, port: port)], logger: logger)
    }
}

func makeAPI(settings: Settings, databaseURL: String, redisURL: String, tokens: [(role: APIConfig.Role, token: String)],
             openReads: Bool, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), logger: Logger) -> FlowAPI {
    // API requests get a statement timeout: a request stuck behind a lock answers 503 in
    // seconds instead of holding a pool connection (and the requests queued on it) for minutes.
    // A request waits up to 30 s for a session rather than failing on one connect timeout: on
    // an overloaded machine the server can take longer than that to accept a connection.
    let store = SchedulerStore(db: PGPool(databaseURL, size: 8, label: "api-pg",
                                          options: PGOptions(statementTimeout: 10, replyTimeout: 25), waitForConnection: 30))
    let broker = SchedulerBroker(config: (try? RedisConfig(url: redisURL)) ?? RedisConfig(), consumer: "api")
    var config = APIConfig(tokens: tokens, openReads: openReads, corsOrigins: settings.corsOrigins)
    config.airflowUsers = settings.airflowUsers
    config.version = flowKitVersion
    do { config.secretKeyring = .success(try SecretKeyring.fromEnvironment()) } catch {
        logger.error("connections and variables are unavailable: \(error)")
        config.secretKeyring = .failure(error as? SecretError ?? SecretError("\(error)"))
    }
    return FlowAPI(store: store, broker: broker, config: config, registry: registry, logger: logger)
}

struct StandaloneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "standalone",
        abstract: "API, scheduler and two workers in one process; private PostgreSQL and Redis unless configured.")
    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int = 8080
    @Option(help: "Workers to run in this process.") var workers: Int = 2
    @OptionGroup var workerOptions: WorkerOptions
    @OptionGroup var schedulerOptions: SchedulerOptions

    func run() async throws {
        let settings = try Settings.fromEnvironment()
        let logger = makeLogger("flowkit.standalone")
        try ensureCanListen(host: host, port: port)
        let admitted = FlowCatalog.admitted()
        let flows = admitted.flows
        var local: LocalServers?
        var db = settings.databaseURL, redis = settings.redisURL
        if db == nil || redis == nil {
            let l = try LocalServers(home: settings.home)
            try l.takeHome { logger.info("\($0)") }
            // Started before the servers: whatever ends this process, SIGKILL included, stops them.
            try l.startWatchdog()
            try l.start { logger.info("\($0)") }
            local = l
            db = db ?? l.databaseURL
            redis = redis ?? l.redisURL
        }
        defer { local?.stop { logger.info("\($0)") } }
        guard let db, let redis else { return }
        if ProcessInfo.processInfo.environment["FLOWKIT_CONN_WAREHOUSE"] == nil { setenv("FLOWKIT_CONN_WAREHOUSE", db, 1) }
        if ProcessInfo.processInfo.environment[SecretKeyring.variable] == nil {
            // The local stack seals its connections and variables with a key of its own, kept
            // beside its admin token so that what was stored opens after a restart.
            setenv(SecretKeyring.variable, try Self.persistentSecret(home: settings.home, file: "secret-key") { SecretKeyring.newKey() }, 1)
        }
        if ProcessInfo.processInfo.environment["FLOWKIT_DATA_DIR"] == nil {
            setenv("FLOWKIT_DATA_DIR", settings.home.appendingPathComponent("data").path, 1)
        }
        let applied = try await Migrator.migrate(PGConnection(db, label: "migrate"))
        if !applied.isEmpty { logger.info("applied migrations: \(applied.joined(separator: ", "))") }

        var tokens = settings.apiTokens
        var adminToken = tokens.first { $0.role == .admin }?.token
        if adminToken == nil {
            adminToken = try Self.persistentAdminToken(home: settings.home)
            tokens.append((.admin, adminToken!))
        }
        let registry = PrometheusCollectorRegistry()  // the API serves the scheduler's histograms too
        let api = makeAPI(settings: settings, databaseURL: db, redisURL: redis, tokens: tokens, openReads: settings.openReads ?? true,
                          registry: registry, logger: logger)
        await api.store.connectAll()
        let redisConfig = try RedisConfig(url: redis)
        let daemon = SchedulerDaemon(databaseURL: db, redis: redisConfig, flows: flows, config: try schedulerOptions.config(visibilityTimeout: workerOptions.visibilityTimeout),
                                     metrics: .prometheus(registry), notifiers: FlowCatalog.notifiers,
                                     importErrors: admitted.importErrors)
        try await daemon.prepare()
        var services: [any Service] = [api.application(host: host, port: port)] + daemon.services()
        for i in 0..<max(0, workers) {
            let name = "worker\(i + 1)@\(workerOptions.hostname)-\(ProcessInfo.processInfo.processIdentifier)"
            services.append(WorkerService(worker: Worker(redis: redisConfig, flows: flows, config: try workerOptions.config(name: name),
                                                         importErrors: admitted.importErrors)))
        }
        print("FlowKit standalone: API on http://\(host):\(port)  (admin token: \(adminToken!))")
        print("  export FLOWKIT_API_URL=http://\(host):\(port) FLOWKIT_API_TOKEN=\(adminToken!)")
        if let example = Self.suggestedFlow(flows.map(\.id)) {
            let me = CommandLine.arguments.first.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "flowctl"
            print("  then: \(me) trigger \(example) --wait      (Ctrl-C stops everything)")
        }
        flushStdout()
        try await runServices(services, logger: logger)
    }

    /// The flow the banner suggests triggering: this binary's own (a user's flowctl suggests one
    /// of theirs), `catalunya_data_pipeline` when it is built in; nil when there is none.
    static func suggestedFlow(_ ids: [String]) -> String? {
        ids.contains("catalunya_data_pipeline") ? "catalunya_data_pipeline" : ids.first { !$0.hasPrefix("example_") } ?? ids.sorted().first
    }

    /// The admin token standalone prints, kept in `.flowkit/admin-token` so it survives restarts.
    static func persistentAdminToken(home: URL) throws -> String {
        try persistentSecret(home: home, file: "admin-token") { (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined() }
    }

    /// A secret kept in `home/file` (mode 0600), made by `make` the first time.
    static func persistentSecret(home: URL, file name: String, make: () -> String) throws -> String {
        let file = home.appendingPathComponent(name)
        if let t = try? String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty { return t }
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let t = make()
        try t.write(to: file, atomically: true, encoding: .utf8)
        chmod(file.path, 0o600)
        return t
    }
}
