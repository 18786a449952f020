import Foundation

/// Where a Redis server is: `redis://[user:password@]host[:port][/db]` or
/// `unix:///path/to/redis.sock[?db=N&password=…]`.
public struct RedisConfig: Sendable, Equatable {
    public var host: String = "127.0.0.1"
    public var port: Int = 6379
    public var unixSocket: String?
    public var username: String?
    public var password: String?
    public var database: Int = 0

    public init(host: String = "127.0.0.1", port: Int = 6379) { self.host = host; self.port = port }

    public init(url: String) throws {
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
        unixSocket.map { "unix://\($0)" } ?? "redis://\(host):\(port)/\(database)"
    }
}
