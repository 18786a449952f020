import FlowKit
import FlowServer
import Foundation
import Logging
import PostgresClient
import RedisClient

/// FlowKit's configuration from the environment, checked once with messages naming the key.
///
/// | variable | meaning |
/// | --- | --- |
/// | `FLOWKIT_DATABASE_URL` | PostgreSQL (URL or libpq keyword string); unset in standalone: a private server |
/// | `FLOWKIT_DATABASE_DIRECT_URL` | PostgreSQL itself when `FLOWKIT_DATABASE_URL` is a transaction pooler (PgBouncer): LISTEN, the leader's lock and migrations go here |
/// | `FLOWKIT_REDIS_URL` | Redis (`redis://…` or `unix://…`); unset in standalone: a private server |
/// | `FLOWKIT_API_URL` / `FLOWKIT_API_TOKEN` | where client commands find the API, and their token |
/// | `FLOWKIT_API_TOKENS` | tokens the API accepts: `admin:SECRET,read:OTHER` |
/// | `FLOWKIT_AIRFLOW_USERS` | users of Airflow's API who log in at `POST /auth/token`: `NAME:admin:PASSWORD,NAME:read:PASSWORD` |
/// | `FLOWKIT_API_OPEN_READS` | `true`/`false`: GET endpoints without a token |
/// | `FLOWKIT_CORS_ORIGINS` | comma-separated origins allowed from browsers (`*` for any) |
/// | `FLOWKIT_HOME` | where standalone keeps its private servers and data (default `.flowkit`) |
/// | `FLOWKIT_FLOWS_VERSION` | the code version of every flow that declares none (image tag, git commit): runs stay on the workers that carry it |
/// | `FLOWKIT_CONN_<NAME>` | named connections tasks use, e.g. `FLOWKIT_CONN_WAREHOUSE` |
/// | `FLOWKIT_VAR_<NAME>` | a worker's own value of a variable (wins over the store's) |
/// | `FLOWKIT_SECRET_KEY` | keys sealing stored connections and variables (API, workers, `flowctl secret-key rotate`) |
struct Settings {
    var databaseURL: String?
    var redisURL: String?
    var apiURL: String
    var apiToken: String?
    var apiTokens: [(role: APIConfig.Role, token: String)]
    var airflowUsers: [(name: String, role: APIConfig.Role, password: String)] = []
    var openReads: Bool?
    var corsOrigins: [String]
    var home: URL

    /// The settings from the environment (which holds the configuration file's profile too,
    /// once `ConfigFile.export` has run).
    static func fromEnvironment() throws -> Settings {
        try from(ProcessInfo.processInfo.environment)
    }

    static func from(_ env: [String: String]) throws -> Settings {
        func nonEmpty(_ k: String) -> String? { env[k].flatMap { $0.isEmpty ? nil : $0 } }
        let api = nonEmpty("FLOWKIT_API_URL") ?? "http://127.0.0.1:8080"
        guard let u = URL(string: api), u.scheme == "http" || u.scheme == "https", u.host != nil else {
            throw ConfigError("FLOWKIT_API_URL: `\(api)` is not an http(s) URL such as http://127.0.0.1:8080")
        }
        var openReads: Bool?
        if let v = nonEmpty("FLOWKIT_API_OPEN_READS") {
            guard let b = ["true": true, "1": true, "yes": true, "false": false, "0": false, "no": false][v.lowercased()] else {
                throw ConfigError("FLOWKIT_API_OPEN_READS: `\(v)` is not true or false")
            }
            openReads = b
        }
        if let r = nonEmpty("FLOWKIT_REDIS_URL") {
            guard r.hasPrefix("redis://") || r.hasPrefix("unix://") || r.hasPrefix("redis+sentinel://") else {
                throw ConfigError("FLOWKIT_REDIS_URL: `\(r)` must start with redis://, unix:// or redis+sentinel://")
            }
            do { _ = try RedisConfig(url: r) } catch let e as RedisError { throw ConfigError("FLOWKIT_REDIS_URL: \(e.message)") }
        }
        if let d = nonEmpty("FLOWKIT_DATABASE_URL"), !(d.hasPrefix("postgres://") || d.hasPrefix("postgresql://") || d.contains("=") || PGEndpoint.isPooled(d)) {
            throw ConfigError("FLOWKIT_DATABASE_URL: `\(d)` must be a postgres:// URL or a libpq keyword string (host=… dbname=…)")
        }
        var database = nonEmpty("FLOWKIT_DATABASE_URL")
        if let direct = nonEmpty("FLOWKIT_DATABASE_DIRECT_URL") {
            guard direct.hasPrefix("postgres://") || direct.hasPrefix("postgresql://") || direct.contains("=") else {
                throw ConfigError("FLOWKIT_DATABASE_DIRECT_URL: `\(direct)` must be a postgres:// URL or a libpq keyword string (host=… dbname=…)")
            }
            guard let pooler = database else {
                throw ConfigError("FLOWKIT_DATABASE_DIRECT_URL is set but FLOWKIT_DATABASE_URL is not: the direct URL is PostgreSQL behind the pooler FLOWKIT_DATABASE_URL names")
            }
            // Everything goes through the pooler in transaction mode; what needs a session, direct.
            database = pooler == direct ? pooler : PGEndpoint.pooled(pooler, session: direct)
        }
        if let l = nonEmpty("FLOWKIT_LOG_LEVEL"), Logger.Level(rawValue: l) == nil {
            throw ConfigError("FLOWKIT_LOG_LEVEL: `\(l)` is not a log level; use one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let cors = nonEmpty("FLOWKIT_CORS_ORIGINS")?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } ?? []
        if cors.count > 1 {
            throw ConfigError("FLOWKIT_CORS_ORIGINS: give one origin (https://dash.example.com) or *, not \(cors.count)")
        }
        let home = URL(fileURLWithPath: nonEmpty("FLOWKIT_HOME") ?? ".flowkit",
                       relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL
        return Settings(databaseURL: database, redisURL: nonEmpty("FLOWKIT_REDIS_URL"), apiURL: api,
                        apiToken: nonEmpty("FLOWKIT_API_TOKEN"),
                        apiTokens: try nonEmpty("FLOWKIT_API_TOKENS").map(APIConfig.parseTokens) ?? [],
                        airflowUsers: try nonEmpty("FLOWKIT_AIRFLOW_USERS").map(APIConfig.parseAirflowUsers) ?? [],
                        openReads: openReads,
                        corsOrigins: cors,
                        home: home)
    }

    func requireDatabase() throws -> String {
        guard let d = databaseURL else { throw CLIError("FLOWKIT_DATABASE_URL is not set (e.g. postgres://flowkit@127.0.0.1:5432/flowkit)", code: 2) }
        return d
    }

    /// `FLOWKIT_DATABASE_URL`, or else the private database of the standalone whose state is in
    /// `FLOWKIT_HOME` (default `.flowkit/`), with the password it keeps there; says on stderr
    /// which database it chose. For the tools a user runs beside a local standalone (`tokens`,
    /// `db`, `migrate`).
    func databaseOrLocal() throws -> String {
        if let d = databaseURL { return d }
        guard FileManager.default.fileExists(atPath: home.appendingPathComponent("ports").path) else { return try requireDatabase() }
        let local = try LocalServers(home: home, createSecrets: false)
        guard !local.secrets.pg.isEmpty else {
            throw CLIError("FLOWKIT_DATABASE_URL is not set, and the standalone in \(home.path) has not made its database's password yet: start it once with `flowctl standalone`", code: 2)
        }
        guard !local.running().isEmpty else {
            throw CLIError("FLOWKIT_DATABASE_URL is not set, and the private database of \(home.path) is not running: start `flowctl standalone` (or `make start`) first", code: 2)
        }
        FileHandle.standardError.write(Data("using the private database of the standalone in \(home.path): \(local.databaseLabel)\n".utf8))
        return local.databaseURL
    }

    func requireRedis() throws -> String {
        guard let r = redisURL else { throw CLIError("FLOWKIT_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)", code: 2) }
        return r
    }
}
