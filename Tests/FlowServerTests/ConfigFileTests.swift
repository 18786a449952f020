import ArgumentParser
import FlowServer
import Foundation
import Scheduler
import PostgresClient
import RedisClient
import Testing
import WorkerRuntime
@testable import FlowCommands

@Suite("Configuration file")
struct ConfigFileTests {
    func write(_ yaml: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-\(UUID().uuidString).yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let sample = """
        profiles:
          dev:
            database_url: postgres://flowkit@127.0.0.1:5432/flowkit
            redis_url: redis://127.0.0.1:6379/0
            api: { open_reads: true }
          prod:
            database_url: "host=db1,db2 dbname=flowkit user=flowkit target_session_attrs=read-write"
            redis_url: redis://:secret@redis.internal:6379/0
            api:
              tokens: ["admin:a-long-secret", "read:another"]
              open_reads: false
              cors_origin: https://dash.example.com
            connections:
              warehouse: postgres://etl@dwh.internal/warehouse
        """

    @Test("a profile becomes the FLOWKIT_ variables it stands for")
    func profiles() throws {
        let path = try write(Self.sample)
        let dev = try ConfigFile.load(path: path, profile: "dev")
        #expect(dev == ["FLOWKIT_DATABASE_URL": "postgres://flowkit@127.0.0.1:5432/flowkit", "FLOWKIT_REDIS_URL": "redis://127.0.0.1:6379/0",
                        "FLOWKIT_API_OPEN_READS": "true"])
        let prod = try ConfigFile.load(path: path, profile: "prod")
        #expect(prod["FLOWKIT_API_TOKENS"] == "admin:a-long-secret,read:another")
        #expect(prod["FLOWKIT_CONN_WAREHOUSE"] == "postgres://etl@dwh.internal/warehouse")
        #expect(prod["FLOWKIT_CORS_ORIGINS"] == "https://dash.example.com")
        let settings = try Settings.from(prod)
        #expect(settings.openReads == false)
        #expect(settings.apiTokens.map(\.role) == [.admin, .read])
    }

    @Test("bad keys, bad values and unknown profiles are named", arguments: [
        ("profiles:\n  dev:\n    databse_url: x\n", "profiles.dev.databse_url: unknown key"),
        ("profiles:\n  dev:\n    api: { open_reads: maybe }\n", "profiles.dev.api.open_reads: expected true or false"),
        ("profiles:\n  dev:\n    api: { tokens: admin }\n", "profiles.dev.api.tokens: expected a list"),
        ("profiles:\n  staging: {}\n", "no profile `dev` (profiles: staging)"),
        ("profile: dev\n", "unknown top-level key `profile`"),
        ("profiles: [\n", "is not valid YAML"),
    ])
    func errors(_ yaml: String, _ message: String) throws {
        let path = try write(yaml)
        do {
            _ = try ConfigFile.load(path: path, profile: "dev")
            Issue.record("accepted \(yaml)")
        } catch let e as ConfigError {
            #expect(e.message.contains(message), "\(e.message)")
        }
    }

    @Test("the structured `redis:` block is the redis+sentinel:// URL it stands for, and the Redis client reads it back; its mistakes are named")
    func sentinelBlock() throws {
        let path = try write("""
            profiles:
              dev:
                redis: { sentinels: ["s1:26379", "s2:26380"], master: flow-kit, db: 2, password: "p@ss/word", sentinel_password: s3cret }
            """)
        let env = try ConfigFile.load(path: path, profile: "dev")
        let url = try #require(env["FLOWKIT_REDIS_URL"])
        let c = try RedisConfig(url: url)
        #expect(c.sentinels.map(\.description) == ["s1:26379", "s2:26380"])
        #expect(c.masterName == "flow-kit" && c.database == 2 && c.password == "p@ss/word" && c.username == nil && c.sentinelPassword == "s3cret")
        for (yaml, message) in [
            ("redis: { master: m }", "redis.sentinels: expected a list of host:port"),
            ("redis: { sentinels: [\"a:1\"] }", "redis.master: expected the name"),
            ("redis: { sentinels: [\"a:1\"], master: m, mastr: x }", "redis.mastr: unknown key"),
            ("redis: { sentinels: [\"a:1\"], master: m, username: u }", "a username needs a password"),
            ("redis: { sentinels: [\"a:1\"], master: m }\n    redis_url: redis://x", "both `redis` and `redis_url`"),
        ] {
            let p = try write("profiles:\n  dev:\n    \(yaml)\n")
            #expect(throws: ConfigError.self) { try ConfigFile.load(path: p, profile: "dev") }
            do { _ = try ConfigFile.load(path: p, profile: "dev") } catch let e as ConfigError { #expect(e.message.contains(message), "\(e.message)") }
        }
    }

    @Test("values the environment checks are checked when they come from the file too")
    func validatedLikeTheEnvironment() throws {
        let path = try write("profiles:\n  dev:\n    redis_url: http://redis\n")
        let env = try ConfigFile.load(path: path, profile: "dev")
        #expect(throws: ConfigError.self) { try Settings.from(env) }
    }

    @Test("database_direct_url (FLOWKIT_DATABASE_DIRECT_URL) makes the database URL a transaction pooler whose sessions go direct; alone, or malformed, it is named")
    func directDatabaseURL() throws {
        let path = try write("""
            profiles:
              prod:
                database_url: postgres://app@pgbouncer:6432/flowkit
                database_direct_url: postgres://app@db-host:5432/flowkit
            """)
        let env = try ConfigFile.load(path: path, profile: "prod")
        #expect(env["FLOWKIT_DATABASE_DIRECT_URL"] == "postgres://app@db-host:5432/flowkit")
        let db = try #require(try Settings.from(env).databaseURL)
        #expect(PGEndpoint.isPooled(db) && PGEndpoint.session(db) == "postgres://app@db-host:5432/flowkit")
        // Without a direct URL, nothing changes.
        #expect(try Settings.from(["FLOWKIT_DATABASE_URL": "postgres://app@db/flowkit"]).databaseURL == "postgres://app@db/flowkit")
        let alone = #expect(throws: ConfigError.self) { try Settings.from(["FLOWKIT_DATABASE_DIRECT_URL": "postgres://app@db/flowkit"]) }
        #expect(alone?.description.contains("FLOWKIT_DATABASE_URL is not") == true, "\(String(describing: alone))")
        let bad = #expect(throws: ConfigError.self) {
            try Settings.from(["FLOWKIT_DATABASE_URL": "postgres://a@b/c", "FLOWKIT_DATABASE_DIRECT_URL": "db-host:5432"])
        }
        #expect(bad?.description.contains("FLOWKIT_DATABASE_DIRECT_URL: `db-host:5432`") == true, "\(String(describing: bad))")
    }

    @Test("worker settings: `worker: {queues, concurrency}` in the file reach a worker started without flags; flags win; bad values are named")
    func workerSettings() throws {
        let path = try write("""
            profiles:
              dev:
                worker: { queues: [default, etl], concurrency: 4 }
            """)
        let env = try ConfigFile.load(path: path, profile: "dev")
        #expect(env == ["FLOWKIT_WORKER_QUEUES": "default,etl", "FLOWKIT_WORKER_CONCURRENCY": "4"])
        let fromFile = try WorkerOptions.parse([]).config(name: "w", environment: env)
        #expect(fromFile.queues == ["default", "etl"] && fromFile.concurrency == 4)
        let flags = try WorkerOptions.parse(["--queues", "x", "--concurrency", "1"]).config(name: "w", environment: env)
        #expect(flags.queues == ["x"] && flags.concurrency == 1)
        let plain = try WorkerOptions.parse([]).config(name: "w", environment: [:])
        #expect(plain.queues == ["default"] && plain.concurrency == 2)
        #expect(throws: (any Error).self) { try WorkerOptions.parse([]).config(name: "w", environment: ["FLOWKIT_WORKER_CONCURRENCY": "many"]) }
        let bad = try write("profiles:\n  dev:\n    worker: { concurrency: 0 }\n")
        #expect(throws: (any Error).self) { try ConfigFile.load(path: bad, profile: "dev") }
    }

    @Test("FLOWKIT_RETENTION and --retention set the retention policy; a bad one names where it came from")
    func retention() throws {
        #expect(try SchedulerOptions.parse([]).config(environment: ["FLOWKIT_RETENTION": "30d"]).retention == 30 * 86400)
        #expect(try SchedulerOptions.parse(["--retention", "12h"]).config(environment: ["FLOWKIT_RETENTION": "30d"]).retention == 12 * 3600)
        #expect(try SchedulerOptions.parse([]).config(environment: [:]).retention == nil)
        do { _ = try SchedulerOptions.parse([]).config(environment: ["FLOWKIT_RETENTION": "forever"]); Issue.record("expected an error") } catch {
            #expect("\(error)".contains("FLOWKIT_RETENTION: `forever` is not a duration"))
        }
    }

    @Test("standalone's banner suggests one of the binary's own flows")
    func banner() {
        #expect(StandaloneCommand.suggestedFlow(["example_retry", "catalunya_data_pipeline"]) == "catalunya_data_pipeline")
        #expect(StandaloneCommand.suggestedFlow(["example_retry", "daily_report"]) == "daily_report")
        #expect(StandaloneCommand.suggestedFlow(["example_b", "example_a"]) == "example_a")
        #expect(StandaloneCommand.suggestedFlow([]) == nil)
    }
}
