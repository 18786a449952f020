public import FlowKit
public import Foundation
import PostgresClient

/// A stored connection as the API shows it: never its secret. `uri` is the URL with its
/// password (and any `password`, `secret`, `token` or `session_token` option) masked.
public struct ConnectionRecord: Codable, Sendable, Equatable {
    public var name: String
    /// The URL's scheme (`postgresql`, `s3`, `https`, …), or `generic` for a value that is not a URL.
    public var type: String
    public var host: String?
    public var port: Int?
    public var login: String?
    public var schema: String?
    public var uri: String
    public var description: String
    public var createdAt: Date
    public var updatedAt: Date
    public var updatedBy: String?

    init(row r: PGRow) throws(PGDecodingError) {
        name = try r.string("name"); type = try r.string("conn_type"); host = try r.stringOrNull("host"); port = try r.intOrNull("port")
        login = try r.stringOrNull("login"); schema = try r.stringOrNull("schema"); uri = try r.string("masked_uri")
        description = try r.string("description"); createdAt = try r.date("created_at"); updatedAt = try r.date("updated_at")
        updatedBy = try r.stringOrNull("updated_by")
    }
    static let columns = "name, conn_type, host, port, login, schema, masked_uri, description, created_at, updated_at, updated_by"
}

/// A stored variable; `value` is opened by whoever holds the keys (the API), masked for readers
/// when its key looks secret (`VariableRecord.isSensitive`).
public struct VariableRecord: Codable, Sendable, Equatable {
    public var key: String
    public var value: String
    public var description: String
    public var createdAt: Date
    public var updatedAt: Date
    public var updatedBy: String?
}

/// What a flow needs from the store, and whether the store has it.
public struct FlowNeeds: Codable, Sendable, Equatable {
    public struct Item: Codable, Sendable, Equatable {
        public var name: String
        /// True when the store holds it (a worker may still have its own `FLOWKIT_CONN_*`).
        public var set: Bool
        public var tasks: [String]
    }
    public var connections: [Item]
    public var variables: [Item]
}

/// The parts of a connection value that are not secret.
public struct ConnectionParts: Sendable, Equatable {
    public var type: String
    public var host: String?
    public var port: Int?
    public var login: String?
    public var schema: String?
    public var masked: String

    /// The parts of `value`: a URL gives its scheme, host, port, user and path; anything else
    /// (a libpq keyword string, a token) is `generic` and shows as `***`.
    public init(_ value: String) {
        guard let c = URLComponents(string: value), let scheme = c.scheme, !scheme.isEmpty, value.contains("://") else {
            type = "generic"; masked = "***"
            return
        }
        type = scheme.lowercased()
        host = c.host.flatMap { $0.isEmpty ? nil : $0 }
        port = c.port
        login = c.user.flatMap { $0.isEmpty ? nil : $0 }
        let path = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        schema = path.isEmpty ? nil : path
        var m = c
        if m.password != nil { m.password = "***" }
        if let items = m.queryItems {
            m.queryItems = items.map { i in
                TaskNeeds.secretURLOptions.contains(i.name.lowercased()) ? URLQueryItem(name: i.name, value: "***") : i
            }
        }
        masked = m.string ?? "\(type)://***"
    }
}

extension VariableRecord {
    /// Keys whose values readers see masked, as Airflow masks them: containing `password`,
    /// `secret`, `passwd`, `authorization`, `api_key`, `apikey`, `access_token` or `private_key`.
    public static func isSensitive(_ key: String) -> Bool { TaskNeeds.isSensitiveVariable(key) }
}

extension SchedulerStore {
    static let maxSecretBytes = 64 * 1024

    static func checkName(_ what: String, _ name: String) throws {
        guard TaskNeeds.isValidName(name) else {
            throw BadRequest("\(what) name `\(name)` is invalid: use 1–250 letters, digits, `_`, `-` and `.`")
        }
    }

    static func checkText(_ what: String, _ text: String, max: Int) throws {
        guard text.utf8.count <= max, !text.utf8.contains(0) else {
            throw BadRequest("\(what) must be at most \(max) bytes, without NUL characters")
        }
    }

    /// Sets connection `name` to `uri`, sealed with the keyring's first key; audited
    /// (`connection_set`, with its type and host, never its secret).
    public func setConnection(name: String, uri: String, description: String?, keyring: SecretKeyring, now: Date) async throws -> ConnectionRecord {
        try Self.checkName("connection", name)
        guard !uri.isEmpty else { throw BadRequest("connection `\(name)`: `uri` is empty") }
        try Self.checkText("connection `\(name)`'s URI", uri, max: Self.maxSecretBytes)
        if let description { try Self.checkText("`description`", description, max: 1000) }
        let parts = ConnectionParts(uri)
        let sealed = try keyring.seal(uri, context: "connection:\(name)")
        return try await audited { s, actor in
            let r = try s.query("""
                INSERT INTO connections (name, conn_type, host, port, login, schema, masked_uri, description, secret, key_id, created_at, updated_at, updated_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, ''), $9, $10, $11, $11, $12)
                ON CONFLICT (name) DO UPDATE SET conn_type = EXCLUDED.conn_type, host = EXCLUDED.host, port = EXCLUDED.port,
                    login = EXCLUDED.login, schema = EXCLUDED.schema, masked_uri = EXCLUDED.masked_uri,
                    description = COALESCE($8, connections.description), secret = EXCLUDED.secret, key_id = EXCLUDED.key_id,
                    updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
                RETURNING \(ConnectionRecord.columns)
                """, [name, parts.type, parts.host, parts.port, parts.login, parts.schema, parts.masked, description, sealed,
                      keyring.primaryKeyId, now, actor]).single()
            var detail: [String: JSONValue] = ["type": .string(parts.type)]
            if let h = parts.host { detail["host"] = .string(h) }
            try self.audit(s, actor, "connection_set", name, .object(detail), now: now)
            return try ConnectionRecord(row: r)
        }
    }

    /// Every stored connection, by name.
    public func connections() async throws -> [ConnectionRecord] {
        try await db.run { s in try s.query("SELECT \(ConnectionRecord.columns) FROM connections ORDER BY name").decode(ConnectionRecord.self) }
    }

    public func connection(_ name: String) async throws -> ConnectionRecord {
        try await db.run { s in
            guard let r = try s.query("SELECT \(ConnectionRecord.columns) FROM connections WHERE name = $1", [name]).first else {
                throw NotFound("no connection named `\(name)`: `flowctl connections set \(name) --uri URL` sets it")
            }
            return try ConnectionRecord(row: r)
        }
    }

    /// Deletes a connection; audited (`connection_delete`). Runs already sent keep what they got.
    public func deleteConnection(_ name: String, now: Date) async throws {
        try await audited { s, actor in
            guard try s.query("DELETE FROM connections WHERE name = $1 RETURNING name", [name]).first != nil else {
                throw NotFound("no connection named `\(name)`")
            }
            try self.audit(s, actor, "connection_delete", name, now: now)
        }
    }

    /// Sets variable `key`; audited (`variable_set`, without its value).
    public func setVariable(key: String, value: String, description: String?, keyring: SecretKeyring, now: Date) async throws -> VariableRecord {
        try Self.checkName("variable", key)
        try Self.checkText("variable `\(key)`'s value", value, max: Self.maxSecretBytes)
        if let description { try Self.checkText("`description`", description, max: 1000) }
        let sealed = try keyring.seal(value, context: "variable:\(key)")
        return try await audited { s, actor in
            let r = try s.query("""
                INSERT INTO variables (key, description, secret, key_id, created_at, updated_at, updated_by)
                VALUES ($1, COALESCE($2, ''), $3, $4, $5, $5, $6)
                ON CONFLICT (key) DO UPDATE SET description = COALESCE($2, variables.description), secret = EXCLUDED.secret,
                    key_id = EXCLUDED.key_id, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
                RETURNING key, description, created_at, updated_at, updated_by
                """, [key, description, sealed, keyring.primaryKeyId, now, actor]).single()
            try self.audit(s, actor, "variable_set", key, now: now)
            return VariableRecord(key: key, value: value, description: try r.string("description"), createdAt: try r.date("created_at"),
                                  updatedAt: try r.date("updated_at"), updatedBy: try r.stringOrNull("updated_by"))
        }
    }

    /// Every variable, opened with `keyring` (or one, by key).
    public func variables(keyring: SecretKeyring, key: String? = nil) async throws -> [VariableRecord] {
        let rows = try await db.run { s in
            try s.query("""
                SELECT key, description, secret, created_at, updated_at, updated_by FROM variables
                WHERE $1::text IS NULL OR key = $1 ORDER BY key
                """, [key]).all
        }
        if let key, rows.isEmpty { throw NotFound("no variable `\(key)`: `flowctl variables set \(key) VALUE` sets it") }
        return try rows.map { r in
            let k = try r.string("key")
            return VariableRecord(key: k, value: try keyring.open(r.string("secret"), context: "variable:\(k)"),
                                  description: try r.string("description"), createdAt: try r.date("created_at"),
                                  updatedAt: try r.date("updated_at"), updatedBy: try r.stringOrNull("updated_by"))
        }
    }

    public func deleteVariable(_ key: String, now: Date) async throws {
        try await audited { s, actor in
            guard try s.query("DELETE FROM variables WHERE key = $1 RETURNING key", [key]).first != nil else {
                throw NotFound("no variable `\(key)`")
            }
            try self.audit(s, actor, "variable_delete", key, now: now)
        }
    }

    /// Seals every stored value again with the keyring's first key (after a new key was put
    /// first in `FLOWKIT_SECRET_KEY`): what `flowctl secret-key rotate` does. Row by row, each in
    /// its own transaction, locked, so that concurrent writes are neither lost nor undone.
    public func resealSecrets(keyring: SecretKeyring, now: Date) async throws -> (connections: Int, variables: Int) {
        var counts = (connections: 0, variables: 0)
        for (table, column, kind) in [("connections", "name", "connection"), ("variables", "key", "variable")] {
            let names = try await db.run { s in
                try s.query("SELECT \(column) AS name FROM \(table) WHERE key_id <> $1 ORDER BY 1", [keyring.primaryKeyId]).all.map { try $0.string("name") }
            }
            for name in names {
                let done = try await audited { s, actor -> Bool in
                    guard let r = try s.query("SELECT secret, key_id FROM \(table) WHERE \(column) = $1 FOR UPDATE", [name]).first,
                          try r.stringOrNull("key_id") != keyring.primaryKeyId else { return false }
                    let plain = try keyring.open(r.string("secret"), context: "\(kind):\(name)")
                    try s.query("UPDATE \(table) SET secret = $2, key_id = $3 WHERE \(column) = $1",
                                [name, try keyring.seal(plain, context: "\(kind):\(name)"), keyring.primaryKeyId])
                    try self.audit(s, actor, "\(kind)_reseal", name, ["keyId": .string(keyring.primaryKeyId)], now: now)
                    return true
                }
                if done { if kind == "connection" { counts.connections += 1 } else { counts.variables += 1 } }
            }
        }
        return counts
    }

    /// What `definition` needs from the store, and whether each is set.
    func needs(_ s: PGSession, of definition: FlowDefinition) throws -> FlowNeeds? {
        let (c, v) = definition.needs
        guard !c.isEmpty || !v.isEmpty else { return nil }
        var have: Set<String> = []
        for r in try s.query("""
            SELECT 'c:' || name AS n FROM connections WHERE name = ANY($1::text[])
            UNION ALL SELECT 'v:' || key FROM variables WHERE key = ANY($2::text[])
            """, [Array(c.keys), Array(v.keys)]).all { have.insert(try r.string("n")) }
        return FlowNeeds(connections: c.keys.sorted().map { .init(name: $0, set: have.contains("c:\($0)"), tasks: c[$0]!) },
                         variables: v.keys.sorted().map { .init(name: $0, set: have.contains("v:\($0)"), tasks: v[$0]!) })
    }
}
