import Foundation

/// Where a Redis server is: `redis://[user:password@]host[:port][/db]`,
/// `unix:///path/to/redis.sock[?db=N&password=…]`, or — a master that Redis Sentinel fails over —
/// `redis+sentinel://[user:password@]host1:26379,host2:26379/MASTER_NAME[/db][?sentinel_password=…]`,
/// where the credentials are the master's and each connection asks the sentinels where the
/// master is (`RedisConnection`).
public struct RedisConfig: Sendable, Equatable {
    public var host: String = "127.0.0.1"
    public var port: Int = 6379
    public var unixSocket: String?
    public var username: String?
    public var password: String?
    public var database: Int = 0
    /// With Sentinel: the sentinels to ask, and the name they know the master by.
    public var sentinels: [RedisAddress] = []
    public var masterName: String?
    /// The sentinels' own password (`requirepass` in sentinel.conf), if they have one.
    public var sentinelPassword: String?
    /// With Sentinel: how many replicas must have each call's writes before it returns, and how
    /// long to wait for them (`?wait_replicas=1&wait_ms=1000`; off by default).
    public var waitReplicas: ReplicaWait?

    public struct ReplicaWait: Sendable, Equatable {
        public var count: Int
        public var millis: Int
    }

    public struct RedisAddress: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) { self.host = host; self.port = port }
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public init(host: String = "127.0.0.1", port: Int = 6379) { self.host = host; self.port = port }

    public init(url: String) throws {
        if url.hasPrefix("redis+sentinel://") { self = try Self.sentinel(url); return }
        guard let comps = URLComponents(string: url), let scheme = comps.scheme else {
            throw RedisError(.connection, "`\(url)` is not a redis:// or unix:// URL")
        }
        let query = Dictionary((comps.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        switch scheme {
        case "redis":
            host = comps.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
            port = comps.port ?? 6379
            let path = comps.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let db = Int(path) else { throw RedisError(.connection, "`\(url)`: database `\(path)` is not a number") }
                database = db
            }
        case "unix":
            guard !comps.path.isEmpty else { throw RedisError(.connection, "`\(url)`: no socket path") }
            unixSocket = comps.path
        default:
            throw RedisError(.connection, "`\(url)`: unsupported scheme `\(scheme)` (use redis:// or unix://)")
        }
        if let db = query["db"] { database = Int(db) ?? database }
        if let u = comps.user, !u.isEmpty { username = u.removingPercentEncoding ?? u }
        if let p = comps.password { password = p.removingPercentEncoding ?? p } else if let p = query["password"] { password = p }
    }

    public var displayName: String {
        if let masterName { return "redis+sentinel://\(sentinels.map(\.description).joined(separator: ","))/\(masterName)/\(database)" }
        return unixSocket.map { "unix://\($0)" } ?? "redis://\(host):\(port)/\(database)"
    }

    /// `redis+sentinel://[user:password@]h1:26379,h2:26379/MASTER[/db][?sentinel_password=…]`:
    /// several hosts do not fit URLComponents, so the parts are taken apart here.
    private static func sentinel(_ url: String) throws -> RedisConfig {
        var c = RedisConfig()
        func bad(_ why: String) -> RedisError {
            RedisError(.connection, "`\(url)`: \(why); write redis+sentinel://[user:password@]host1:26379,host2:26379/MASTER_NAME[/db]")
        }
        var rest = String(url.dropFirst("redis+sentinel://".count))
        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for item in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
                query[kv[0]] = kv.count > 1 ? (kv[1].removingPercentEncoding ?? kv[1]) : ""
            }
            rest = String(rest[..<q])
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        var authority = String(rest[..<slash])
        let path = rest[slash...].split(separator: "/").map(String.init)
        if let at = authority.lastIndex(of: "@") {
            let userinfo = authority[..<at]
            authority = String(authority[authority.index(after: at)...])
            let parts = userinfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map { String($0).removingPercentEncoding ?? String($0) }
            if parts.count == 2 { c.password = parts[1]; if !parts[0].isEmpty { c.username = parts[0] } } else if !parts[0].isEmpty { c.password = parts[0] }
        }
        for h in authority.split(separator: ",") {
            let text = String(h)
            var hostPart = text, port = 26379
            if let colon = text.lastIndex(of: ":"), !text.hasSuffix("]") {
                guard let p = Int(text[text.index(after: colon)...]), (1...65535).contains(p) else { throw bad("sentinel `\(text)` has no valid port") }
                port = p
                hostPart = String(text[..<colon])
            }
            hostPart = hostPart.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            guard !hostPart.isEmpty else { throw bad("an empty sentinel host") }
            c.sentinels.append(RedisAddress(host: hostPart, port: port))
        }
        guard !c.sentinels.isEmpty else { throw bad("no sentinel") }
        guard let name = path.first, !name.isEmpty else { throw bad("no master name") }
        c.masterName = name.removingPercentEncoding ?? name
        if path.count > 1 {
            guard let db = Int(path[1]), db >= 0 else { throw bad("database `\(path[1])` is not a number") }
            c.database = db
        }
        guard path.count <= 2 else { throw bad("too many path parts") }
        c.sentinelPassword = query["sentinel_password"]
        // Off unless asked: under load on a small machine a replica's acknowledgement can take
        // over a second, and a call failed for it then costs more than it saves (session 16's
        // `make faults` figures, docs/deploying.md).
        let replicas = try query["wait_replicas"].map { v -> Int in guard let n = Int(v), n >= 0 else { throw bad("wait_replicas `\(v)` is not a count") }; return n } ?? 0
        let millis = try query["wait_ms"].map { v -> Int in guard let n = Int(v), n > 0 else { throw bad("wait_ms `\(v)` is not a positive number") }; return n } ?? 1000
        c.waitReplicas = replicas == 0 ? nil : ReplicaWait(count: replicas, millis: millis)
        if let p = query["password"], c.password == nil { c.password = p }
        c.host = c.sentinels[0].host; c.port = c.sentinels[0].port  // replaced by the master's address on each connection
        return c
    }
}
