public import FlowKit
public import Foundation
import PostgresClient

/// Who makes the writes of the current task (`token:alice`, `config:admin#1`, `webhook:FLOW`):
/// the API sets it for each request. A store write made with an actor records its audit entry
/// in its own transaction — the change and the entry commit together, or neither — and the
/// history rows it writes name the actor in their source (`api:token:alice`).
public enum WriteActor {
    @TaskLocal public static var current: String?
}

/// The audit log: who changed what through the API or flowctl's database tools.
extension SchedulerStore {
    /// A write: one transaction, with the calling task's `WriteActor` handed to `body` for its
    /// audit entry and history rows — read here, because task locals do not reach the
    /// connection's thread the statements run on.
    func audited<T: Sendable>(_ body: @escaping @Sendable (PGSession, String?) throws -> T) async throws -> T {
        let actor = WriteActor.current
        return try await db.run { s in try s.transaction { try body(s, actor) } }
    }

    /// Records an entry for `actor` (the `WriteActor` of the write, read before the session's
    /// closure: task locals do not reach the connection's thread), inside the caller's
    /// transaction; nothing without an actor (the schedulers' own writes are not audited).
    func audit(_ s: PGSession, _ actor: String?, _ action: String, _ target: String, _ detail: JSONValue = [:], now: Date) throws {
        guard let actor else { return }
        try s.query("INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5::jsonb)",
                    [now, actor, action, target, detail.jsonbText])
    }

    /// The `source` of history rows a write through the API adds: `api`, with its actor.
    func apiSource(_ actor: String?) -> String { actor.map { "api:\($0)" } ?? "api" }

    /// An entry on its own (`flowctl db clean`, whose deletions are many transactions).
    public func recordAudit(actor: String, action: String, target: String, detail: JSONValue = [:], now: Date) async throws {
        try await db.run { s in try self.audit(s, actor, action, target, detail, now: now) }
    }

    /// The newest entries first; `before` is the id cursor of the previous page.
    public func auditLog(actor: String? = nil, action: String? = nil, before: Int? = nil, limit: Int = 100) async throws -> [AuditRecord] {
        try await db.run { s in
            try s.query("""
                SELECT id, at, actor, action, target, detail::text AS detail FROM audit_log
                WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2) AND ($3::bigint IS NULL OR id < $3)
                ORDER BY id DESC LIMIT $4
                """, [actor, action, before, limit]).all.map { r in
                AuditRecord(id: try r.int("id"), at: try r.date("at"), actor: try r.string("actor"), action: try r.string("action"),
                            target: try r.string("target"), detail: try r.json("detail"))
            }
        }
    }
}

public struct AuditRecord: Codable, Sendable {
    public var id: Int
    public var at: Date
    /// `token:NAME`, `config:ROLE#N`, `webhook:FLOW` or `flowctl@HOST`.
    public var actor: String
    /// trigger, backfill, cancel, clear, mark, pause, unpause, pool_set, pool_delete, asset_event, webhook_run, token_create, token_revoke, db_clean.
    public var action: String
    public var target: String
    public var detail: JSONValue
}
