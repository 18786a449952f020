import FlowServer
import Foundation
import Yams

/// The optional YAML configuration file (`--config flowkit.yaml`, or `FLOWKIT_CONFIG`), with
/// profiles (`--profile prod`, or `FLOWKIT_PROFILE`; default `dev`). Environment variables
/// override what the file says.
///
/// ```yaml
/// profiles:
///   dev:
///     database_url: postgres://flowkit@127.0.0.1:5432/flowkit
///     redis_url: redis://127.0.0.1:6379/0
///     api: { open_reads: true }
///   prod:
///     database_url: "host=db1,db2 dbname=flowkit user=flowkit target_session_attrs=read-write"
///     redis_url: redis://:secret@redis.internal:6379/0
///     api: { tokens: ["admin:…", "read:…"], open_reads: false, cors_origin: https://dash.example.com }
///     worker: { queues: [default, etl], concurrency: 4 }   # FLOWKIT_WORKER_QUEUES, FLOWKIT_WORKER_CONCURRENCY
///   ha:
///     # Redis behind Sentinel, spelled out (the same as redis_url: redis+sentinel://…):
///     redis: { sentinels: ["s1:26379", "s2:26379", "s3:26379"], master: flowkit, db: 0, password: …, sentinel_password: … }
/// ```
struct ConfigFile {
    /// Keys the file may set, as `FLOWKIT_…` variables (the same names and forms as the environment).
    static let keys: [String: (variable: String, form: String)] = [
        "database_url": ("FLOWKIT_DATABASE_URL", "a postgres:// URL or a libpq keyword string"),
        "database_direct_url": ("FLOWKIT_DATABASE_DIRECT_URL", "PostgreSQL itself, when database_url is a transaction pooler (PgBouncer)"),
        "redis_url": ("FLOWKIT_REDIS_URL", "a redis://, redis+sentinel:// or unix:// URL"),
        "redis": ("FLOWKIT_REDIS_URL", "a mapping {sentinels: [host:port, …], master: NAME, db:, username:, password:, sentinel_password:}"),
        "api_url": ("FLOWKIT_API_URL", "an http(s) URL"),
        "api_token": ("FLOWKIT_API_TOKEN", "a token"),
        "home": ("FLOWKIT_HOME", "a directory"),
        "data_dir": ("FLOWKIT_DATA_DIR", "a directory"),
        "log_level": ("FLOWKIT_LOG_LEVEL", "trace, debug, info, notice, warning, error or critical"),
        "api.tokens": ("FLOWKIT_API_TOKENS", "a list of `admin:TOKEN` / `read:TOKEN`"),
        "api.open_reads": ("FLOWKIT_API_OPEN_READS", "true or false"),
        "api.cors_origin": ("FLOWKIT_CORS_ORIGINS", "one origin, or *"),
        "api.airflow_users": ("FLOWKIT_AIRFLOW_USERS", "a list of `NAME:admin:PASSWORD` / `NAME:read:PASSWORD`"),
        "connections": ("FLOWKIT_CONN_", "a map of connection name to URL"),
        "worker.queues": ("FLOWKIT_WORKER_QUEUES", "a list of queue names"),
        "worker.concurrency": ("FLOWKIT_WORKER_CONCURRENCY", "a whole number of tasks run at once"),
    ]

    /// The profile's settings as the environment variables they stand for.
    static func load(path: String, profile: String) throws -> [String: String] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError("cannot read the configuration file \(path): \(error.localizedDescription)")
        }
        let root: Any?
        do { root = try Yams.load(yaml: text) } catch {
            throw ConfigError("\(path) is not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any] else { throw ConfigError("\(path): expected a mapping with a `profiles` key") }
        for key in top.keys where key != "profiles" {
            throw ConfigError("\(path): unknown top-level key `\(key)`; expected `profiles`")
        }
        guard let profiles = top["profiles"] as? [String: Any] else { throw ConfigError("\(path): `profiles` must be a mapping of profile names") }
        guard let chosen = profiles[profile] else {
            throw ConfigError("\(path): no profile `\(profile)` (profiles: \(profiles.keys.sorted().joined(separator: ", ")))")
        }
        guard let settings = chosen as? [String: Any] else { throw ConfigError("\(path): profile `\(profile)` must be a mapping") }
        var env: [String: String] = [:]
        try flatten(settings, prefix: "", into: &env, where: "\(path): profiles.\(profile)")
        return env
    }

    private static func flatten(_ map: [String: Any], prefix: String, into env: inout [String: String], where location: String) throws {
        for (k, value) in map.sorted(by: { $0.key < $1.key }) {
            let key = prefix.isEmpty ? k : "\(prefix).\(k)"
            if key == "api" || key == "worker", let sub = value as? [String: Any] {
                try flatten(sub, prefix: key, into: &env, where: location)
                continue
            }
            guard let (variable, form) = keys[key] else {
                let known = keys.keys.sorted().joined(separator: ", ")
                throw ConfigError("\(location).\(key): unknown key; known keys: \(known)")
            }
            func bad() -> ConfigError { ConfigError("\(location).\(key): expected \(form), got `\(value)`") }
            switch key {
            case "redis":
                guard map["redis_url"] == nil else { throw ConfigError("\(location): both `redis` and `redis_url`; keep one") }
                env[variable] = try sentinelURL(value, where: "\(location).redis")
            case "connections":
                guard let conns = value as? [String: Any] else { throw bad() }
                for (name, url) in conns {
                    guard let u = url as? String else { throw ConfigError("\(location).connections.\(name): expected a URL string") }
                    env["FLOWKIT_CONN_\(name.uppercased())"] = u
                }
            case "api.tokens", "api.airflow_users":
                guard let list = value as? [Any], list.allSatisfy({ $0 is String }) else { throw bad() }
                env[variable] = (list as! [String]).joined(separator: ",")
            case "worker.queues":
                if let list = value as? [Any], !list.isEmpty, list.allSatisfy({ $0 is String }) {
                    env[variable] = (list as! [String]).joined(separator: ",")
                } else if let one = value as? String, !one.isEmpty {
                    env[variable] = one
                } else { throw bad() }
            case "worker.concurrency":
                guard let n = value as? Int, n >= 1 else { throw bad() }
                env[variable] = String(n)
            case "api.open_reads":
                guard let b = value as? Bool else { throw bad() }
                env[variable] = b ? "true" : "false"
            default:
                guard let s = value as? String ?? (value as? Int).map(String.init) else { throw bad() }
                env[variable] = s
            }
        }
    }

    /// `redis: {sentinels:, master:, …}` as the `redis+sentinel://` URL it stands for.
    static func sentinelURL(_ value: Any, where location: String) throws -> String {
        guard let m = value as? [String: Any] else { throw ConfigError("\(location): expected a mapping with `sentinels` and `master`") }
        let known: Set = ["sentinels", "master", "db", "username", "password", "sentinel_password"]
        for k in m.keys.sorted() where !known.contains(k) {
            throw ConfigError("\(location).\(k): unknown key; known keys: \(known.sorted().joined(separator: ", "))")
        }
        guard let list = m["sentinels"] as? [Any], !list.isEmpty, list.allSatisfy({ $0 is String }) else {
            throw ConfigError("\(location).sentinels: expected a list of host:port, got `\(m["sentinels"].map { "\($0)" } ?? "nothing")`")
        }
        guard let master = m["master"] as? String, !master.isEmpty else {
            throw ConfigError("\(location).master: expected the name the sentinels know the master by")
        }
        var db = 0
        if let v = m["db"] { guard let n = v as? Int, n >= 0 else { throw ConfigError("\(location).db: expected a database number, got `\(v)`") }; db = n }
        func text(_ k: String) throws -> String? {
            guard let v = m[k] else { return nil }
            guard let s = v as? String ?? (v as? Int).map(String.init) else { throw ConfigError("\(location).\(k): expected a string") }
            return s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s
        }
        var auth = ""
        if let p = try text("password") { auth = "\(try text("username") ?? ""):\(p)@" } else if m["username"] != nil { throw ConfigError("\(location).username: a username needs a password") }
        let query = try text("sentinel_password").map { "?sentinel_password=\($0)" } ?? ""
        let encodedMaster = master.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? master
        return "redis+sentinel://\(auth)\((list as! [String]).joined(separator: ","))/\(encodedMaster)/\(db)\(query)"
    }

    /// Puts the configuration file's profile into the process environment, under what the
    /// environment already sets, so that every part (workers' connections, flows' data
    /// directory, log level) sees one configuration.
    static func export(base: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard let path = base["FLOWKIT_CONFIG"], !path.isEmpty else { return }
        let fromFile = try load(path: path, profile: base["FLOWKIT_PROFILE"].flatMap { $0.isEmpty ? nil : $0 } ?? "dev")
        for (k, v) in fromFile where base[k] == nil { setenv(k, v, 1) }
    }
}
