import FlowKit
public import Foundation
import PostgresClient

/// An API token made with `flowctl tokens create`, as listed (never with its secret).
public struct APITokenRecord: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var role: String
    public var createdAt: Date
    public var expiresAt: Date?
    public var revokedAt: Date?
    public var lastUsedAt: Date?

    /// Usable at `now`: not revoked and not expired.
    public func isLive(at now: Date) -> Bool { revokedAt == nil && (expiresAt.map { $0 > now } ?? true) }
}

/// What checking a token's secret needs: its salt and the HMAC of the secret.
public struct APITokenCredential: Sendable {
    public var record: APITokenRecord
    public var salt: String
    public var secretHash: String
}

extension SchedulerStore {
    /// Stores a new token; `name` must not belong to another live token.
    public func createAPIToken(id: String, name: String, role: String, salt: String, secretHash: String,
                               expiresAt: Date?, now: Date) async throws -> APITokenRecord {
        return try await audited { s, actor in
            if try !s.query("SELECT 1 FROM api_tokens WHERE name = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
                            [name, now]).isEmpty {
                throw StateConflict("a live token is already named `\(name)`: revoke it first, or choose another name")
            }
            // An expired token keeps its name only until a new one takes it.
            try s.query("UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL", [name, now])
            let row = try s.query("""
                INSERT INTO api_tokens (token_id, name, role, salt, secret_hash, created_at, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING \(Self.tokenColumns)
                """, [id, name, role, salt, secretHash, now, expiresAt]).single()
            try self.audit(s, actor, "token_create", "token:\(name)", ["id": .string(id), "role": .string(role)], now: now)
            return try Self.tokenRecord(row)
        }
    }

    /// Deletes the tokens `POST /auth/token` made (`airflow-USER-ID`, one per login) that expired
    /// before `cutoff`; returns how many. A CI job that logs in every minute would otherwise
    /// leave half a million rows a year. Each login stays in the audit log.
    public func deleteExpiredLoginTokens(before cutoff: Date) async throws -> Int {
        try await db.run { s in
            try s.query("DELETE FROM api_tokens WHERE name LIKE 'airflow-%-%' AND expires_at < $1 RETURNING 1", [cutoff]).all.count
        }
    }

    /// Every token, newest first; revoked and expired ones only when `all` is set.
    public func apiTokens(all: Bool, now: Date) async throws -> [APITokenRecord] {
        try await db.run { s in
            try s.query("""
                SELECT \(Self.tokenColumns) FROM api_tokens
                WHERE $1 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2))
                ORDER BY created_at DESC, token_id
                """, [all, now]).all.map { try Self.tokenRecord($0) }
        }
    }

    /// The token with this id, with what checking its secret needs; nil when there is none.
    public func apiTokenCredential(id: String) async throws -> APITokenCredential? {
        try await db.run { s in
            try s.query("SELECT \(Self.tokenColumns), salt, secret_hash FROM api_tokens WHERE token_id = $1", [id]).first.map {
                APITokenCredential(record: try Self.tokenRecord($0), salt: try $0.string("salt"), secretHash: try $0.string("secret_hash"))
            }
        }
    }

    /// Revokes the live token with this id or name.
    public func revokeAPIToken(_ idOrName: String, now: Date) async throws -> APITokenRecord {
        return try await audited { s, actor in
            let rows = try s.query("""
                SELECT \(Self.tokenColumns) FROM api_tokens WHERE token_id = $1 OR (name = $1 AND revoked_at IS NULL)
                FOR NO KEY UPDATE
                """, [idOrName]).all.map { try Self.tokenRecord($0) }
            guard let t = rows.first else { throw NotFound("no token has the id or name `\(idOrName)` (flowctl tokens list shows them)") }
            if let at = t.revokedAt { throw StateConflict("token `\(t.id)` (\(t.name)) was already revoked at \(Instant.format(at, fractionDigits: 0))") }
            let row = try s.query("UPDATE api_tokens SET revoked_at = $2 WHERE token_id = $1 RETURNING \(Self.tokenColumns)",
                                  [t.id, now]).single()
            try self.audit(s, actor, "token_revoke", "token:\(t.name)", ["id": .string(t.id)], now: now)
            return try Self.tokenRecord(row)
        }
    }

    /// Records that a token was used (the API does it at most once a minute per token).
    public func noteAPITokenUsed(id: String, now: Date) async throws {
        try await db.run { s in _ = try s.query("UPDATE api_tokens SET last_used_at = $2 WHERE token_id = $1", [id, now]) }
    }

    static let tokenColumns = "token_id, name, role, created_at, expires_at, revoked_at, last_used_at"

    static func tokenRecord(_ r: PGRow) throws(PGDecodingError) -> APITokenRecord {
        APITokenRecord(id: try r.string("token_id"), name: try r.string("name"), role: try r.string("role"), createdAt: try r.date("created_at"),
                       expiresAt: try r.dateOrNull("expires_at"), revokedAt: try r.dateOrNull("revoked_at"), lastUsedAt: try r.dateOrNull("last_used_at"))
    }
}
