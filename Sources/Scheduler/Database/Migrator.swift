import FlowKit
import Foundation
public import PostgresClient

/// A numbered, forward-only SQL migration.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String
    public var checksum: String { SHA256.hex(sql) }

    /// The migrations built into this binary (from `migrations/`), in order.
    public static let bundled: [Migration] = EmbeddedMigrations.files.compactMap { file in
        guard let v = Int(file.name.prefix { $0.isNumber }) else { return nil }
        return Migration(version: v, name: file.name, sql: file.sql)
    }.sorted { $0.version < $1.version }
}

/// Why the schema cannot be used or migrated.
public struct MigrationError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Applies pending migrations in order under an advisory lock, recording each one's checksum.
public enum Migrator {
    static let lockKey = AdvisoryLock.migrations

    /// Applies what is pending; returns the names applied.
    @discardableResult
    public static func migrate(_ given: PGConnection, migrations: [Migration] = Migration.bundled) async throws -> [String] {
        // The lock is a session lock, and DDL wants no pooler: the session endpoint, when pooled.
        let db = PGEndpoint.isPooled(given.conninfo) ? PGConnection(PGEndpoint.session(given.conninfo), label: "migrate") : given
        return try await db.run { s in
            try s.query("SELECT pg_advisory_lock($1)", [lockKey])
            defer { _ = try? s.query("SELECT pg_advisory_unlock($1)", [lockKey]) }
            try s.execute("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let applied = try appliedMigrations(s)
            try checkChecksums(applied: applied, migrations: migrations)
            var done: [String] = []
            for m in migrations where applied[m.version] == nil {
                try s.transaction {
                    try s.execute(m.sql)
                    try s.query("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                [m.version, m.name, m.checksum])
                }
                done.append(m.name)
            }
            return done
        }
    }

    /// Throws, saying what to run, unless every bundled migration is applied unchanged.
    public static func checkCurrent(_ db: PGConnection, migrations: [Migration] = Migration.bundled) async throws {
        try await db.run { s in
            let exists = try s.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS e").first?.boolOrNull("e") ?? false
            guard exists else {
                throw MigrationError(message: "the database has no FlowKit schema yet: run `flowctl migrate`")
            }
            let applied = try appliedMigrations(s)
            try checkChecksums(applied: applied, migrations: migrations)
            let pending = migrations.filter { applied[$0.version] == nil }.map(\.name)
            if !pending.isEmpty {
                throw MigrationError(message: "the database schema is behind this binary (pending: \(pending.joined(separator: ", "))): run `flowctl migrate`")
            }
            let known = Set(migrations.map(\.version))
            if let newer = applied.keys.filter({ !known.contains($0) }).max() {
                throw MigrationError(message: "the database has migration \(newer), newer than this binary knows: upgrade flowctl")
            }
        }
    }

    static func appliedMigrations(_ s: PGSession) throws -> [Int: (name: String, checksum: String)] {
        var out: [Int: (String, String)] = [:]
        for r in try s.query("SELECT version, name, checksum FROM schema_migrations").all {
            out[try r.int("version")] = (try r.string("name"), try r.string("checksum"))
        }
        return out
    }

    static func checkChecksums(applied: [Int: (name: String, checksum: String)], migrations: [Migration]) throws {
        for m in migrations {
            if let a = applied[m.version], a.checksum != m.checksum {
                throw MigrationError(message: "migration \(m.name) was changed after it was applied (checksum \(a.checksum.prefix(12)) in the database, \(m.checksum.prefix(12)) now); migrations are forward-only: restore the file and add a new one")
            }
        }
    }
}
